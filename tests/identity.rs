//! Identity: `greenrt::current()`, `GreenId` uniqueness, `JoinHandle::green()` and
//! names given with `greenrt::Builder::name`.

mod common;
use common::runtime;
use greenrt::GreenId;
use std::collections::HashSet;
use std::fmt::Display;
use std::hash::Hash;

#[test]
fn current_is_none_outside_green_threads() {
    // The test harness thread, a plain std::thread, async code driven by
    // `Runtime::block_on` and a future task are all outside green threads.
    assert!(greenrt::current().is_none(), "test thread");
    let plain = std::thread::spawn(greenrt::current).join().unwrap();
    assert!(plain.is_none(), "plain std::thread");

    let rt = runtime(2);
    let (in_block_on, in_task) = rt.block_on(async {
        let in_task = greenrt::spawn_async(async { greenrt::current().map(|g| g.id()) })
            .await
            .unwrap();
        (greenrt::current().map(|g| g.id()), in_task)
    });
    assert_eq!(in_block_on, None, "Runtime::block_on is not a green thread");
    assert_eq!(in_task, None, "a future task is not a green thread");
    // And again after a runtime was used on this thread: nothing leaked into it.
    assert!(greenrt::current().is_none(), "test thread after block_on");
}

#[test]
fn current_is_some_inside_green_threads() {
    let rt = runtime(2);
    let (host, spawned) = rt.run(|| {
        let host = greenrt::current().map(|g| g.id());
        let spawned = greenrt::spawn(|| {
            // Still Some after a suspension (it is resumed with the same identity).
            let before = greenrt::current().map(|g| g.id());
            greenrt::yield_now();
            let after = greenrt::current().map(|g| g.id());
            (before, after)
        })
        .join()
        .unwrap();
        (host, spawned)
    });
    assert!(host.is_some(), "the green thread of Runtime::run");
    assert!(spawned.0.is_some(), "a spawned green thread");
    assert_eq!(spawned.0, spawned.1, "identity unchanged across a yield");
    assert_ne!(host, spawned.0);
    // Spawned from outside with Runtime::spawn, too.
    assert!(rt.spawn(greenrt::current).join().unwrap().is_some());
}

#[test]
fn ids_are_unique_across_many_spawns() {
    const N: usize = 5_000;
    let rt = runtime(2);
    let (green_ids, task_ids) = rt.run(|| {
        let greens: Vec<_> = (0..N)
            .map(|_| greenrt::spawn(|| greenrt::current().unwrap().id()))
            .collect();
        let tasks: Vec<_> = (0..N).map(|_| greenrt::spawn_async(async {})).collect();
        let task_ids: Vec<GreenId> = tasks.iter().map(|t| t.green().id()).collect();
        for task in tasks {
            greenrt::block_on(task).unwrap();
        }
        let green_ids: Vec<GreenId> = greens.into_iter().map(|h| h.join().unwrap()).collect();
        (green_ids, task_ids)
    });
    let mut all: HashSet<GreenId> = HashSet::new();
    all.extend(green_ids.iter().copied());
    assert_eq!(all.len(), N, "green thread ids repeated");
    all.extend(task_ids.iter().copied());
    assert_eq!(
        all.len(),
        2 * N,
        "a task id repeated a task's or green thread's"
    );
}

#[test]
fn join_handle_green_id_equals_id_seen_inside() {
    let rt = runtime(2);
    rt.run(|| {
        for _ in 0..100 {
            let handle = greenrt::spawn(|| greenrt::current().unwrap().id());
            let outside = handle.green().id();
            let inside = handle.join().unwrap();
            assert_eq!(outside, inside);
        }
    });
    // Spawned from a plain thread with Runtime::spawn as well.
    let handle = rt.spawn(|| greenrt::current().unwrap().id());
    let outside = handle.green().id();
    assert_eq!(handle.join().unwrap(), outside);
}

#[test]
fn names_come_from_builder() {
    let rt = runtime(2);
    rt.run(|| {
        let named = greenrt::Builder::new()
            .name("parser-7".to_string())
            .spawn(|| greenrt::current().unwrap().name().map(str::to_owned))
            .unwrap();
        assert_eq!(named.green().name(), Some("parser-7"));
        assert_eq!(named.join().unwrap().as_deref(), Some("parser-7"));

        let unnamed = greenrt::spawn(|| greenrt::current().unwrap().name().map(str::to_owned));
        assert_eq!(unnamed.green().name(), None);
        assert_eq!(unnamed.join().unwrap(), None);

        // A Builder without a name gives no name either.
        let built = greenrt::Builder::new()
            .spawn(|| greenrt::current().unwrap().name().map(str::to_owned))
            .unwrap();
        assert_eq!(built.green().name(), None);
        assert_eq!(built.join().unwrap(), None);
    });
}

fn assert_id_traits<T: Copy + Eq + Hash + Display>() {}

#[test]
fn green_id_is_copy_eq_hash_display() {
    // Compile-time half: the bounds.
    assert_id_traits::<GreenId>();

    // Run-time half: the impls mean what they should.
    let rt = runtime(1);
    let (a, b) = rt.run(|| {
        let a = greenrt::spawn(|| ());
        let b = greenrt::spawn(|| ());
        let ids = (a.green().id(), b.green().id());
        a.join().unwrap();
        b.join().unwrap();
        ids
    });
    let a_copy = a; // Copy: `a` stays usable.
    assert_eq!(a, a_copy);
    assert_ne!(a, b);
    let set: HashSet<GreenId> = [a, a_copy, b].into_iter().collect();
    assert_eq!(set.len(), 2, "Hash agrees with Eq");
    let shown = a.to_string();
    assert!(!shown.is_empty());
    assert_eq!(shown, a.as_u64().to_string(), "Display shows the number");
    assert_ne!(a.to_string(), b.to_string());
}
