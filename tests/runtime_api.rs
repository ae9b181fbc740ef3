//! The core runtime issue's promises as a new user reads them, written from its text
//! alone: every named API, error and panic it promises, and the edges a tokio or Go
//! user would try next.

mod common;
use common::{
    child_finished, describe_child, in_child, in_child_with, panic_message, with_watchdog,
};
use futures::channel::oneshot;
use futures::StreamExt;
use std::collections::HashSet;
use std::io::ErrorKind;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenrt::runtime::{Handle, Runtime};

const WD: Duration = Duration::from_secs(120);

/// Keeps `r`'s only worker busy spinning in a green thread (so nothing else can start
/// there) until the returned flag is set; returns once the spinner runs.
fn hold_the_only_worker(r: &Runtime) -> (Arc<AtomicBool>, greenrt::JoinHandle<()>) {
    let release = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicBool::new(false));
    let (rel, run) = (release.clone(), running.clone());
    let spinner = r.spawn(move || {
        run.store(true, Ordering::SeqCst);
        while !rel.load(Ordering::SeqCst) {
            std::hint::spin_loop();
        }
    });
    while !running.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    (release, spinner)
}

fn rt(n: usize) -> Runtime {
    greenrt::runtime::Builder::new()
        .worker_threads(n)
        .build()
        .unwrap()
}

fn panics_with<R>(f: impl FnOnce() -> R) -> String {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(_) => panic!("expected a panic"),
        Err(p) => panic_message(&*p),
    }
}

fn assert_send_sync<T: Send + Sync>() {}
fn assert_clone<T: Clone>() {}
fn assert_debug<T: std::fmt::Debug>() {}

// ---------------------------------------------------------------- static API shape

#[test]
fn api_shape_compiles_as_the_issue_names_it() {
    fn is_join_future<
        T,
        H: std::future::Future<Output = std::thread::Result<T>> + Unpin + std::fmt::Debug,
    >() {
    }
    is_join_future::<u8, greenrt::JoinHandle<u8>>();
    fn copy_eq_hash<T: Copy + Eq + std::hash::Hash + std::fmt::Debug + std::fmt::Display>() {}
    copy_eq_hash::<greenrt::GreenId>();
    assert_clone::<greenrt::Green>();
    assert_debug::<greenrt::Green>();
    assert_clone::<Handle>();
    assert_send_sync::<Handle>();
    fn is_send<T: Send>(_: &T) {}
    is_send(&greenrt::time::sleep(Duration::from_millis(1)));
    // Function signatures.
    let _: fn() -> Option<greenrt::Green> = greenrt::current;
    let _: fn() = greenrt::yield_now;
    let _: fn(Duration) = greenrt::sleep;
    let _: fn() -> std::io::Result<Runtime> = Runtime::new;
    let _: fn() -> Handle = Handle::current;
    let _: fn() -> Option<Handle> = Handle::try_current;
    let _ = greenrt::Builder::new()
        .name(String::from("x"))
        .stack_size(64 * 1024);
}

#[test]
fn non_send_futures_in_block_on_and_debug_without_t_debug() {
    struct NoDebug;
    fn dbg<T: std::fmt::Debug>() {}
    dbg::<greenrt::JoinHandle<NoDebug>>();
    let r = rt(1);
    let local = std::rc::Rc::new(5);
    let v = r.block_on(async {
        let rc = local.clone();
        greenrt::time::sleep(Duration::from_millis(1)).await;
        *rc
    });
    assert_eq!(v, 5);
    let v = r.run(|| {
        greenrt::spawn(|| {
            greenrt::block_on(async {
                let rc = std::rc::Rc::new(6);
                greenrt::time::sleep(Duration::from_millis(1)).await;
                *rc
            })
        })
        .join()
        .unwrap()
    });
    assert_eq!(v, 6);
    let _ = NoDebug;
}

#[test]
fn join_handle_is_send_for_send_output() {
    // Not promised in so many words, but a tokio/std user moves handles across threads.
    fn is_send<T: Send>() {}
    is_send::<greenrt::JoinHandle<u32>>();
}

// ---------------------------------------------------------------- greenrt::spawn

#[test]
fn spawn_outside_runtime_panics_naming_fix() {
    let msg = panics_with(|| greenrt::spawn(|| 1));
    println!("{msg}");
    assert!(msg.to_lowercase().contains("runtime"), "{msg}");
    assert!(
        msg.contains("Runtime::spawn") || msg.contains("greenrt::main"),
        "names the fix: {msg}"
    );
}

#[test]
fn spawn_async_outside_runtime_panics() {
    let msg = panics_with(|| greenrt::spawn_async(async { 1 }));
    assert!(msg.to_lowercase().contains("runtime"), "{msg}");
}

#[test]
fn spawn_and_join_from_run_and_from_plain_thread() {
    let rt = rt(2);
    assert_eq!(rt.run(|| greenrt::spawn(|| 41 + 1).join().unwrap()), 42);
    assert_eq!(rt.spawn(|| "x").join().unwrap(), "x");
    assert_eq!(rt.spawn_async(async { 7 }).join().unwrap(), 7);
    assert_eq!(rt.handle().spawn(|| 8).join().unwrap(), 8);
    assert_eq!(rt.handle().spawn_async(async { 9 }).join().unwrap(), 9);
}

#[test]
fn spawn_inside_future_task_and_green_inside_green() {
    let rt = rt(2);
    let v = rt.block_on(async {
        greenrt::spawn_async(async {
            greenrt::spawn(|| greenrt::spawn(|| 3).join().unwrap() + 1)
                .await
                .unwrap()
        })
        .await
        .unwrap()
    });
    assert_eq!(v, 4);
}

// ---------------------------------------------------------------- block_on

#[test]
fn block_on_on_plain_thread_parks_and_returns() {
    assert_eq!(greenrt::block_on(async { 5 }), 5);
    let (tx, rx) = oneshot::channel();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        tx.send(6).unwrap();
    });
    assert_eq!(greenrt::block_on(rx).unwrap(), 6);
    t.join().unwrap();
}

#[test]
fn block_on_in_green_suspends_only_that_green_thread_one_worker() {
    with_watchdog("block_on one worker", WD, || {
        let rt = rt(1);
        rt.run(|| {
            let (tx, rx) = oneshot::channel::<u32>();
            let waiter = greenrt::spawn(move || greenrt::block_on(rx).unwrap());
            // Spawned after, on the same single worker: only runs if the waiter suspends.
            let sender = greenrt::spawn(move || {
                greenrt::yield_now();
                tx.send(11).unwrap();
            });
            sender.join().unwrap();
            assert_eq!(waiter.join().unwrap(), 11);
        });
    });
}

#[test]
fn block_on_in_future_task_panics_saying_await() {
    let rt = rt(1);
    let err = rt
        .spawn_async(async { greenrt::block_on(async { 1 }) })
        .join()
        .unwrap_err();
    let msg = panic_message(&*err);
    assert!(msg.contains(".await"), "{msg}");
}

#[test]
fn yield_sleep_join_in_future_task_panic_saying_await() {
    let rt = rt(1);
    let m1 = panic_message(
        &*rt.spawn_async(async { greenrt::yield_now() })
            .join()
            .unwrap_err(),
    );
    let m2 = panic_message(
        &*rt.spawn_async(async { greenrt::sleep(Duration::from_millis(1)) })
            .join()
            .unwrap_err(),
    );
    let h = rt.handle().clone();
    let m3 = panic_message(
        &*rt.spawn_async(async move { h.spawn(|| 1).join() })
            .join()
            .unwrap_err(),
    );
    for m in [&m1, &m2, &m3] {
        assert!(m.contains(".await"), "{m}");
    }
    // The worker carries on.
    assert_eq!(rt.spawn_async(async { 1 }).join().unwrap(), 1);
    assert_eq!(rt.spawn(|| 2).join().unwrap(), 2);
}

#[test]
fn probe_greenrt_block_on_inside_runtime_block_on_does_not_hang() {
    // rt.block_on's future runs on the caller thread, not a worker: nested greenrt::block_on
    // there is a plain-thread park. Only assert it does not hang.
    let rt = rt(1);
    with_watchdog("block_on inside Runtime::block_on", WD, move || {
        let r = catch_unwind(AssertUnwindSafe(|| {
            rt.block_on(async { greenrt::block_on(async { 3 }) })
        }));
        println!(
            "greenrt::block_on inside Runtime::block_on -> {:?}",
            r.as_ref().map_err(|p| panic_message(&**p))
        );
    });
}

// ---------------------------------------------------------------- yield_now / sleep

#[test]
fn yield_and_sleep_fall_back_on_plain_thread() {
    greenrt::yield_now();
    let t = Instant::now();
    greenrt::sleep(Duration::from_millis(10));
    assert!(t.elapsed() >= Duration::from_millis(10));
    greenrt::sleep(Duration::ZERO);
}

#[test]
fn sleep_zero_and_huge_values_in_green() {
    let rt = rt(1);
    rt.run(|| {
        greenrt::sleep(Duration::ZERO);
        // A huge sleep must not overflow (Instant + Duration::MAX); the green thread is
        // parked and then cancelled at shutdown.
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let h = rt.spawn(move || {
        tx.send(()).unwrap();
        greenrt::sleep(Duration::MAX);
    });
    rx.recv().unwrap();
    assert!(!h.is_finished());
    with_watchdog("drop with Duration::MAX sleeper", WD, move || drop(rt));
    let r = with_watchdog("join after drop", WD, move || h.join().is_err());
    assert!(r, "a green thread unwound at shutdown joins as Err");
}

// ---------------------------------------------------------------- time::sleep

#[test]
fn time_sleep_works_in_async_contexts() {
    let rt = rt(2);
    rt.block_on(async {
        let t = Instant::now();
        greenrt::time::sleep(Duration::from_millis(20)).await;
        assert!(t.elapsed() >= Duration::from_millis(20));
        greenrt::spawn_async(async { greenrt::time::sleep(Duration::from_millis(5)).await })
            .await
            .unwrap();
    });
    rt.run(|| greenrt::block_on(greenrt::time::sleep(Duration::from_millis(5))));
    // Created outside, polled inside.
    let s = greenrt::time::sleep(Duration::from_millis(5));
    rt.block_on(s);
}

#[test]
fn time_sleep_polled_without_runtime_panics_naming_fix() {
    let msg =
        panics_with(|| futures::executor::block_on(greenrt::time::sleep(Duration::from_millis(1))));
    println!("{msg}");
    assert!(msg.to_lowercase().contains("runtime"), "{msg}");
    let msg2 = panics_with(|| greenrt::block_on(greenrt::time::sleep(Duration::from_millis(1))));
    assert!(msg2.to_lowercase().contains("runtime"), "{msg2}");
}

// ---------------------------------------------------------------- JoinHandle

#[test]
fn join_handle_is_finished_await_debug_and_detach() {
    let rt = rt(2);
    let (tx, rx) = oneshot::channel::<()>();
    let h = rt.spawn(move || {
        greenrt::block_on(rx).unwrap();
        5
    });
    assert!(!h.is_finished());
    println!("{h:?}");
    assert!(!format!("{h:?}").is_empty());
    tx.send(()).unwrap();
    while !h.is_finished() {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(h.join().unwrap(), 5);

    // await from a future task and from Runtime::block_on
    let g = rt.spawn(|| 6);
    assert_eq!(rt.block_on(g).unwrap(), 6);
    let g = rt.spawn(|| 7);
    assert_eq!(
        rt.spawn_async(async move { g.await.unwrap() })
            .join()
            .unwrap(),
        7
    );

    // Dropping detaches: the green thread still runs to the end.
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    drop(rt.spawn(move || {
        greenrt::sleep(Duration::from_millis(20));
        d.store(true, Ordering::SeqCst);
        tx.send(()).unwrap();
    }));
    rx.recv_timeout(WD).unwrap();
    assert!(done.load(Ordering::SeqCst));
    // Dropping a future task's handle detaches too.
    let (tx, rx) = std::sync::mpsc::channel();
    drop(rt.spawn_async(async move {
        greenrt::time::sleep(Duration::from_millis(5)).await;
        tx.send(()).unwrap();
    }));
    rx.recv_timeout(WD).unwrap();
}

#[test]
fn join_handle_polled_then_joined() {
    // Poll once (Pending) via a future, then join blocking: must not lose the result.
    let rt = rt(1);
    let (tx, rx) = oneshot::channel::<()>();
    let mut h = rt.spawn(move || {
        greenrt::block_on(rx).unwrap();
        9
    });
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(std::pin::Pin::new(&mut h).poll(&mut cx).is_pending());
    tx.send(()).unwrap();
    assert_eq!(
        with_watchdog("join after poll", WD, move || h.join().unwrap()),
        9
    );
}
use std::future::Future;

// ---------------------------------------------------------------- greenrt::Builder

#[test]
fn green_builder_name_and_stack_size() {
    let rt = rt(2);
    rt.run(|| {
        let h = greenrt::Builder::new()
            .name("parser".to_string())
            .stack_size(1024 * 1024)
            .spawn(|| greenrt::current().unwrap().name().map(str::to_owned))
            .unwrap();
        assert_eq!(h.green().name(), Some("parser"));
        assert_eq!(h.join().unwrap().as_deref(), Some("parser"));
        let h = greenrt::Builder::new()
            .spawn(|| greenrt::current().unwrap().name().is_none())
            .unwrap();
        assert!(h.green().name().is_none());
        assert!(h.join().unwrap());
        // Empty name is still a name.
        let h = greenrt::Builder::new()
            .name(String::new())
            .spawn(|| 1)
            .unwrap();
        assert_eq!(h.green().name(), Some(""));
        h.join().unwrap();
        // Exactly the bounds are allowed.
        for ok in [16 * 1024, 1 << 30, 16 * 1024 + 1] {
            let h = greenrt::Builder::new().stack_size(ok).spawn(|| 1).unwrap();
            assert_eq!(h.join().unwrap(), 1, "stack_size {ok}");
        }
    });
}

#[test]
fn green_builder_stack_size_out_of_range_is_invalid_input() {
    let rt = rt(1);
    rt.run(|| {
        for bad in [0usize, 1, 16 * 1024 - 1, (1 << 30) + 1, usize::MAX] {
            let e = greenrt::Builder::new()
                .stack_size(bad)
                .spawn(|| ())
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}: {e}");
            let m = e.to_string();
            assert!(m.contains("stack_size"), "names the setting: {m}");
            assert!(
                m.contains("16") && (m.contains("GiB") || m.contains("1073741824")),
                "range: {m}"
            );
        }
    });
}

// ---------------------------------------------------------------- current / Green / GreenId

#[test]
fn current_is_none_outside_green_threads() {
    assert!(greenrt::current().is_none());
    let rt = rt(1);
    assert!(rt.block_on(async { greenrt::current().is_none() }));
    assert!(rt
        .spawn_async(async { greenrt::current().is_none() })
        .join()
        .unwrap());
    assert!(rt.run(|| greenrt::current().is_some()));
    assert!(rt.spawn(|| greenrt::current().is_some()).join().unwrap());
}

#[test]
fn green_ids_match_and_are_unique_for_process_life() {
    let mut seen = HashSet::new();
    for _ in 0..2 {
        let rt = rt(2);
        let ids = rt.run(|| {
            let hs: Vec<_> = (0..2000)
                .map(|_| greenrt::spawn(|| greenrt::current().unwrap().id()))
                .collect();
            hs.into_iter()
                .map(|h| {
                    let outer = h.green().id();
                    let g2 = h.green().clone();
                    let inner = h.join().unwrap();
                    assert_eq!(outer, inner);
                    assert_eq!(g2.id(), inner);
                    inner
                })
                .collect::<Vec<_>>()
        });
        for id in ids {
            assert!(!id.to_string().is_empty());
            assert!(!format!("{id:?}").is_empty());
            assert!(seen.insert(id), "duplicate id {id}");
        }
        let run_id = rt.run(|| greenrt::current().unwrap().id());
        assert!(seen.insert(run_id));
    }
}

// ---------------------------------------------------------------- runtime::Builder

#[test]
fn runtime_builder_invalid_settings() {
    use greenrt::runtime::Builder;
    for n in [0usize, 1025, usize::MAX] {
        let e = Builder::new()
            .worker_threads(n)
            .build()
            .err()
            .unwrap_or_else(|| panic!("must fail"));
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let m = e.to_string();
        assert!(m.contains("worker_threads") && m.contains("1024"), "{m}");
    }
    for s in [0usize, 16 * 1024 - 1, (1 << 30) + 1, usize::MAX] {
        let e = Builder::new()
            .stack_size(s)
            .build()
            .err()
            .unwrap_or_else(|| panic!("must fail"));
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{s}");
        let m = e.to_string();
        assert!(m.contains("stack_size") && m.contains("16"), "{m}");
    }
    // Full chain as written in the issue.
    let r = Builder::new()
        .worker_threads(2)
        .stack_size(16 * 1024)
        .thread_name("c2-chain")
        .build()
        .unwrap();
    assert_eq!(r.spawn(|| 1).join().unwrap(), 1);
    let r = Builder::new()
        .stack_size(1 << 30)
        .worker_threads(1)
        .build()
        .unwrap();
    assert_eq!(r.spawn(|| 1).join().unwrap(), 1);
}

#[test]
fn runtime_builder_1024_workers_allowed() {
    let r = greenrt::runtime::Builder::new()
        .worker_threads(1024)
        .build()
        .unwrap();
    assert_eq!(r.spawn(|| 1).join().unwrap(), 1);
    with_watchdog("drop 1024 workers", WD, move || drop(r));
}

fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|c| c.trim().starts_with(prefix))
        .count()
}

/// Threads set their own name when they start: wait (bounded) until `want` show up.
fn settled_threads_named(prefix: &str, want: usize) -> usize {
    let t = Instant::now();
    loop {
        let n = threads_named(prefix);
        if n >= want || t.elapsed() > Duration::from_secs(10) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn thread_name_names_workers_and_drop_joins_them() {
    let r = greenrt::runtime::Builder::new()
        .worker_threads(3)
        .thread_name("c2wk")
        .build()
        .unwrap();
    let name = r
        .spawn(|| std::thread::current().name().map(str::to_owned))
        .join()
        .unwrap()
        .unwrap();
    assert!(name.starts_with("c2wk"), "{name}");
    assert_eq!(settled_threads_named("c2wk", 3), 3);
    // Joined means finished, thread-local destructors included, before drop returns.
    static REGISTERED: AtomicUsize = AtomicUsize::new(0);
    static DROPPED: AtomicUsize = AtomicUsize::new(0);
    struct Tls;
    impl Drop for Tls {
        fn drop(&mut self) {
            std::thread::sleep(Duration::from_millis(20));
            DROPPED.fetch_add(1, Ordering::SeqCst);
        }
    }
    thread_local! {
        static GUARD: std::cell::OnceCell<Tls> = const { std::cell::OnceCell::new() };
    }
    let hs: Vec<_> = (0..30)
        .map(|_| {
            r.spawn(|| {
                GUARD.with(|g| {
                    g.get_or_init(|| {
                        REGISTERED.fetch_add(1, Ordering::SeqCst);
                        Tls
                    });
                });
                greenrt::yield_now();
            })
        })
        .collect();
    hs.into_iter().for_each(|h| h.join().unwrap());
    drop(r);
    let (reg, dropped) = (
        REGISTERED.load(Ordering::SeqCst),
        DROPPED.load(Ordering::SeqCst),
    );
    assert!(reg >= 1);
    assert_eq!(
        dropped, reg,
        "workers joined on drop (their TLS destructors ran)"
    );
    assert_eq!(settled_threads_gone("c2wk"), 0, "worker threads gone");
}

fn settled_threads_gone(prefix: &str) -> usize {
    let t = Instant::now();
    loop {
        let n = threads_named(prefix);
        if n == 0 || t.elapsed() > Duration::from_secs(10) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn runtime_new_works() {
    let r = Runtime::new().unwrap();
    assert_eq!(r.run(|| greenrt::spawn(|| 2).join().unwrap()), 2);
}

// ---------------------------------------------------------------- stacks (smaps)

struct Mapping {
    size_kib: u64,
    perms: String,
    anon: bool,
    flags: String,
}

fn mappings() -> Vec<Mapping> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut out: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let head = f.next().unwrap_or("");
        if let Some((lo, hi)) = head.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) {
                let perms = f.next().unwrap_or("").to_string();
                let anon = f.nth(3).is_none();
                out.push(Mapping {
                    size_kib: (hi - lo) / 1024,
                    perms,
                    anon,
                    flags: String::new(),
                });
                continue;
            }
        }
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some(m) = out.last_mut() {
                m.flags = flags.to_string();
            }
        }
    }
    out
}

/// Stacks of `kib` usable KiB: rw anon mapping of that and a 4 KiB colour page on top,
/// right after a 4 KiB ---p guard.
fn stacks_of(kib: u64) -> Vec<String> {
    let ms = mappings();
    ms.windows(2)
        .filter(|w| {
            w[0].perms == "---p"
                && w[0].size_kib == 4
                && w[1].perms == "rw-p"
                && w[1].anon
                && w[1].size_kib == kib + 4
        })
        .map(|w| w[1].flags.clone())
        .collect()
}

#[test]
fn stacks_round_to_pages_have_guard_and_no_hugepage() {
    // 100 KiB + 1 byte rounds to 104 KiB (unusual size nothing else maps).
    let r = greenrt::runtime::Builder::new()
        .worker_threads(2)
        .stack_size(100 * 1024 + 1)
        .build()
        .unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let rx = futures::future::FutureExt::shared(rx);
    let hs: Vec<_> = (0..5)
        .map(|_| {
            let rx = rx.clone();
            let s = s.clone();
            r.spawn(move || {
                s.fetch_add(1, Ordering::SeqCst);
                let _ = greenrt::block_on(rx);
            })
        })
        .collect();
    while started.load(Ordering::SeqCst) < 5 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let st = stacks_of(104);
    assert!(
        st.len() >= 5,
        "found {} 104 KiB stacks with guard",
        st.len()
    );
    for flags in &st {
        assert!(
            flags.split_whitespace().any(|f| f == "nh"),
            "MADV_NOHUGEPAGE missing: {flags}"
        );
    }
    tx.send(()).unwrap();
    for h in hs {
        h.join().unwrap();
    }
}

#[test]
fn green_builder_stack_size_rounds_to_pages_only() {
    // "Stack sizes round up to whole pages" (issue) — 20 KiB - 100 B should map 20 KiB.
    let r = rt(1);
    r.run(|| {
        let (tx, rx) = oneshot::channel::<()>();
        let (stx, srx) = oneshot::channel::<()>();
        let h = greenrt::Builder::new()
            .stack_size(20 * 1024 - 100)
            .spawn(move || {
                stx.send(()).unwrap();
                greenrt::block_on(rx).unwrap();
            })
            .unwrap();
        greenrt::block_on(srx).unwrap();
        let n = stacks_of(20).len();
        tx.send(()).unwrap();
        h.join().unwrap();
        assert!(n >= 1, "no 20 KiB stack+guard mapping found");
    });
}

#[test]
fn default_green_stack_is_256_kib() {
    let r = rt(2);
    let (tx, rx) = oneshot::channel::<()>();
    let rx = futures::future::FutureExt::shared(rx);
    let started = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..20)
        .map(|_| {
            let rx = rx.clone();
            let s = started.clone();
            r.spawn(move || {
                s.fetch_add(1, Ordering::SeqCst);
                let _ = greenrt::block_on(rx);
            })
        })
        .collect();
    while started.load(Ordering::SeqCst) < 20 {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(stacks_of(256).len() >= 20);
    tx.send(()).unwrap();
    hs.into_iter().for_each(|h| h.join().unwrap());
}

#[test]
fn stacks_are_lazy_not_mapped_at_spawn() {
    // One worker held by a spinning green thread: 300 spawned green threads cannot start.
    let r = greenrt::runtime::Builder::new()
        .worker_threads(1)
        .stack_size(88 * 1024)
        .build()
        .unwrap();
    let (release, spinner) = hold_the_only_worker(&r);
    let hs: Vec<_> = (0..300).map(|i| r.spawn(move || i)).collect();
    let mapped = stacks_of(88).len();
    release.store(true, Ordering::SeqCst);
    spinner.join().unwrap();
    let sum: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(sum, 299 * 300 / 2);
    assert!(
        mapped <= 4,
        "{mapped} stacks mapped for 300 unstarted green threads"
    );
}

#[test]
fn ten_thousand_suspended_at_once() {
    with_watchdog("10k suspended", WD, || {
        let r = rt(2);
        r.run(|| {
            let (tx, rx) = oneshot::channel::<()>();
            let rx = futures::future::FutureExt::shared(rx);
            let parked = Arc::new(AtomicUsize::new(0));
            let hs: Vec<_> = (0..10_000)
                .map(|i| {
                    let rx = rx.clone();
                    let p = parked.clone();
                    greenrt::spawn(move || {
                        p.fetch_add(1, Ordering::SeqCst);
                        let _ = greenrt::block_on(rx);
                        i
                    })
                })
                .collect();
            while parked.load(Ordering::SeqCst) < 10_000 {
                greenrt::sleep(Duration::from_millis(5));
            }
            tx.send(()).unwrap();
            let s: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
            assert_eq!(s, 9_999 * 10_000 / 2);
        });
    });
}

#[test]
fn million_short_green_threads_spawned_in_a_row_detached() {
    // In a child process: the spawner outruns the workers and holds the process's
    // live-stack budget at its limit for most of the run, and a future task in another
    // test of this binary, which cannot wait for room, would fail to spawn meanwhile.
    let out = in_child(
        "million_short_green_threads_spawned_in_a_row_detached",
        "1M",
        || {
            with_watchdog("1M detached", Duration::from_secs(300), || {
                let r = rt(2);
                let n = 1_000_000;
                let done = Arc::new(AtomicUsize::new(0));
                r.run(|| {
                    for _ in 0..n {
                        let d = done.clone();
                        greenrt::spawn(move || {
                            d.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                    while done.load(Ordering::Relaxed) < n {
                        greenrt::sleep(Duration::from_millis(5));
                    }
                });
            });
        },
    );
    assert!(child_finished(&out), "{}", describe_child(&out));
}

// ---------------------------------------------------------------- Runtime::run / block_on

#[test]
fn run_hosts_on_calling_thread_no_send_no_static() {
    let r = rt(2);
    let me = std::thread::current().id();
    let local = std::rc::Rc::new(String::from("local"));
    let mut v = Vec::new();
    let out: std::rc::Rc<usize> = r.run(|| {
        assert_eq!(std::thread::current().id(), me);
        v.push(local.len());
        assert!(Handle::try_current().is_some());
        let _h = Handle::current();
        let a = greenrt::spawn(|| 1).join().unwrap();
        let b = greenrt::block_on(greenrt::spawn_async(async { 2 })).unwrap();
        greenrt::sleep(Duration::from_millis(1));
        greenrt::yield_now();
        std::rc::Rc::new(a + b)
    });
    assert_eq!(*out, 3);
    assert_eq!(v, vec![5]);
    // Returning a borrow (no bound on T).
    let s = String::from("abc");
    let r2: &str = r.run(|| &s[..2]);
    assert_eq!(r2, "ab");
    // Reusable, many times.
    for i in 0..50 {
        assert_eq!(r.run(|| i), i);
    }
}

#[test]
fn run_resumes_panic_on_caller_and_runtime_carries_on() {
    let r = rt(2);
    let err = catch_unwind(AssertUnwindSafe(|| {
        r.run(|| -> () { panic!("boom-in-run") })
    }))
    .unwrap_err();
    assert_eq!(panic_message(&*err), "boom-in-run");
    // Non-string payload preserved.
    let err =
        catch_unwind(AssertUnwindSafe(|| r.run(|| std::panic::panic_any(42u32)))).unwrap_err();
    assert_eq!(err.downcast_ref::<u32>(), Some(&42));
    assert_eq!(r.run(|| greenrt::spawn(|| 1).join().unwrap()), 1);
    let err = catch_unwind(AssertUnwindSafe(|| {
        r.block_on(async { panic!("boom-in-block_on") })
    }))
    .unwrap_err();
    assert_eq!(panic_message(&*err), "boom-in-block_on");
    assert_eq!(r.block_on(async { 3 }), 3);
}

#[test]
fn block_on_on_calling_thread_enters_context() {
    let r = rt(2);
    let me = std::thread::current().id();
    let v = r.block_on(async {
        assert_eq!(std::thread::current().id(), me);
        let h = Handle::current();
        let a = greenrt::spawn(|| 1).await.unwrap();
        let b = greenrt::spawn_async(async { 2 }).await.unwrap();
        let c = h.spawn(|| 3).await.unwrap();
        a + b + c
    });
    assert_eq!(v, 6);
    assert!(
        Handle::try_current().is_none(),
        "context left after block_on"
    );
}

#[test]
fn run_and_block_on_from_green_or_worker_panic_naming_fix() {
    let r = Arc::new(rt(2));
    let r2 = Arc::new(rt(1));
    // From Runtime::run's green thread, same runtime and another.
    let m1 = panics_with(|| r.run(|| r.run(|| 1)));
    let m2 = panics_with(|| r.run(|| r2.block_on(async { 1 })));
    // From a green thread on a worker.
    let rr = r2.clone();
    let m3 = panic_message(&*r.spawn(move || rr.run(|| 1)).join().unwrap_err());
    let rr = r2.clone();
    let m4 = panic_message(
        &*r.spawn(move || rr.block_on(async { 1 }))
            .join()
            .unwrap_err(),
    );
    // From a future task on a worker.
    let rr = r2.clone();
    let m5 = panic_message(
        &*r.spawn_async(async move { rr.run(|| 1) })
            .join()
            .unwrap_err(),
    );
    let rr = r.clone();
    let m6 = panic_message(
        &*r.spawn_async(async move { rr.block_on(async { 1 }) })
            .join()
            .unwrap_err(),
    );
    for m in [&m1, &m2, &m3, &m4, &m5, &m6] {
        println!("{m}");
        assert!(!m.is_empty());
        assert!(
            m.contains("spawn")
                || m.contains("block_on")
                || m.contains(".await")
                || m.contains("join"),
            "names a fix: {m}"
        );
    }
    // Both runtimes still work.
    assert_eq!(r.run(|| 1), 1);
    assert_eq!(r2.block_on(async { 2 }), 2);
}

#[test]
fn handle_current_and_try_current() {
    assert!(Handle::try_current().is_none());
    let m = panics_with(Handle::current);
    assert!(m.to_lowercase().contains("runtime"), "{m}");
    let r = rt(2);
    let h: &Handle = r.handle();
    let h2 = h.clone();
    assert!(r.spawn(|| Handle::try_current().is_some()).join().unwrap());
    assert!(r
        .spawn_async(async { Handle::try_current().is_some() })
        .join()
        .unwrap());
    // From a foreign thread with a cloned handle.
    let v = std::thread::spawn(move || {
        assert!(Handle::try_current().is_none());
        h2.spawn(|| Handle::current().spawn(|| 4).join().unwrap())
            .join()
            .unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(v, 4);
}

// ---------------------------------------------------------------- shutdown

struct SetOnDrop(Arc<AtomicBool>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn dropping_runtime_unwinds_suspended_green_threads() {
    with_watchdog("shutdown unwinds", WD, || {
        let r = rt(2);
        let flags: Vec<_> = (0..4).map(|_| Arc::new(AtomicBool::new(false))).collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut hs = Vec::new();
        for (i, f) in flags.iter().enumerate() {
            let f = f.clone();
            let tx = tx.clone();
            hs.push(r.spawn(move || {
                let _g = SetOnDrop(f);
                tx.send(()).unwrap();
                match i {
                    0 => greenrt::block_on(futures::future::pending::<()>()),
                    1 => greenrt::sleep(Duration::from_secs(3600)),
                    2 => {
                        let never =
                            greenrt::spawn(|| greenrt::block_on(futures::future::pending::<()>()));
                        never.join().unwrap();
                    }
                    _ => loop {
                        greenrt::yield_now();
                    },
                }
            }));
        }
        for _ in 0..4 {
            rx.recv().unwrap();
        }
        // A future task pending forever: tokio drops it at shutdown.
        let tflag = Arc::new(AtomicBool::new(false));
        let tf = tflag.clone();
        let th = r.spawn_async(async move {
            let _g = SetOnDrop(tf);
            futures::future::pending::<()>().await
        });
        std::thread::sleep(Duration::from_millis(20));
        drop(r);
        for (i, f) in flags.iter().enumerate() {
            assert!(
                f.load(Ordering::SeqCst),
                "destructor of green {i} did not run"
            );
        }
        for h in hs {
            assert!(h.join().is_err());
        }
        assert!(
            tflag.load(Ordering::SeqCst),
            "pending future task not dropped at shutdown"
        );
        assert!(th.join().is_err());
    });
}

#[test]
fn spawn_via_handle_after_runtime_dropped_does_not_hang() {
    let r = rt(1);
    let h = r.handle().clone();
    drop(r);
    let res = with_watchdog("spawn after drop", WD, move || {
        let r1 = catch_unwind(AssertUnwindSafe(|| h.spawn(|| 1).join()));
        let r2 = catch_unwind(AssertUnwindSafe(|| h.spawn_async(async { 1 }).join()));
        (r1.map(|j| j.is_ok()).ok(), r2.map(|j| j.is_ok()).ok())
    });
    println!(
        "after drop: spawn -> {:?}, spawn_async -> {:?}",
        res.0, res.1
    );
    assert_ne!(res.0, Some(true), "no new work after shutdown");
    assert_ne!(res.1, Some(true), "no new work after shutdown");
}

#[test]
fn dropping_runtime_inside_its_own_green_thread_does_not_hang() {
    let out = in_child(
        "dropping_runtime_inside_its_own_green_thread_does_not_hang",
        "1",
        || {
            let r = Arc::new(rt(2));
            let r2 = r.clone();
            let h = r.spawn(move || {
                greenrt::sleep(Duration::from_millis(50));
                drop(r2); // last reference, once the test thread dropped its own
            });
            drop(r);
            let res = h.join();
            println!("join -> is_ok {}", res.is_ok());
        },
    );
    println!("{}", describe_child(&out));
    assert!(
        out.status.code().is_some(),
        "child crashed: {}",
        describe_child(&out)
    );
}

// ---------------------------------------------------------------- scheduler

#[test]
fn started_green_thread_never_changes_os_thread() {
    with_watchdog("pinning", WD, || {
        let r = rt(4);
        r.run(|| {
            let stop = Arc::new(AtomicBool::new(false));
            let load: Vec<_> = (0..8)
                .map(|_| {
                    let s = stop.clone();
                    greenrt::spawn(move || {
                        while !s.load(Ordering::Relaxed) {
                            for _ in 0..1000 {
                                std::hint::spin_loop();
                            }
                            greenrt::yield_now();
                        }
                    })
                })
                .collect();
            let checkers: Vec<_> = (0..40)
                .map(|_| {
                    greenrt::spawn(|| {
                        let first = std::thread::current().id();
                        for i in 0..200 {
                            if i % 7 == 0 {
                                greenrt::sleep(Duration::from_micros(50));
                            } else {
                                greenrt::yield_now();
                            }
                            assert_eq!(std::thread::current().id(), first);
                        }
                    })
                })
                .collect();
            for c in checkers {
                c.join().unwrap();
            }
            stop.store(true, Ordering::Relaxed);
            load.into_iter().for_each(|h| h.join().unwrap());
        });
    });
}

#[test]
fn unstarted_work_is_stolen_by_idle_workers() {
    with_watchdog("stealing", WD, || {
        let r = rt(4);
        let threads = r
            .spawn(|| {
                let started = Arc::new(AtomicUsize::new(0));
                let hs: Vec<_> = (0..8)
                    .map(|_| {
                        let s = started.clone();
                        greenrt::spawn(move || {
                            s.fetch_add(1, Ordering::SeqCst);
                            let t = Instant::now();
                            // Busy, not yielding: holds its worker.
                            while s.load(Ordering::SeqCst) < 8
                                && t.elapsed() < Duration::from_secs(3)
                            {
                                std::hint::spin_loop();
                            }
                            std::thread::current().id()
                        })
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<HashSet<_>>()
            })
            .join()
            .unwrap();
        assert!(threads.len() > 1, "all ran on one worker");
    });
}

#[test]
fn yielding_loop_does_not_starve_others_one_worker() {
    with_watchdog("fairness", WD, || {
        let r = rt(1);
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let spinner = r.spawn(move || {
            while !f.load(Ordering::SeqCst) {
                greenrt::yield_now();
            }
        });
        std::thread::sleep(Duration::from_millis(10));
        // From a foreign thread: goes through the injector.
        let f = flag.clone();
        r.spawn(move || f.store(true, Ordering::SeqCst))
            .join()
            .unwrap();
        spinner.join().unwrap();
        // And a future task spawned from outside is not starved either.
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let spinner = r.spawn(move || {
            while !f.load(Ordering::SeqCst) {
                greenrt::yield_now();
            }
        });
        let f = flag.clone();
        r.spawn_async(async move { f.store(true, Ordering::SeqCst) })
            .join()
            .unwrap();
        spinner.join().unwrap();
        // Spawned from the yielding green thread itself (local queue).
        r.spawn(|| {
            let flag = Arc::new(AtomicBool::new(false));
            let f = flag.clone();
            let _h = greenrt::spawn(move || f.store(true, Ordering::SeqCst));
            while !flag.load(Ordering::SeqCst) {
                greenrt::yield_now();
            }
        })
        .join()
        .unwrap();
    });
}

#[test]
fn wakes_from_foreign_threads_stress() {
    with_watchdog("foreign wakes", Duration::from_secs(240), || {
        let r = rt(2);
        for round in 0..20 {
            let mut senders = Vec::new();
            let hs: Vec<_> = (0..100)
                .map(|i| {
                    let (tx, rx) = oneshot::channel::<usize>();
                    senders.push(tx);
                    r.spawn(move || {
                        if i % 2 == 0 {
                            greenrt::yield_now();
                        }
                        greenrt::block_on(rx).unwrap()
                    })
                })
                .collect();
            let t = std::thread::spawn(move || {
                for (i, tx) in senders.into_iter().enumerate() {
                    if i % 10 == round % 10 {
                        std::thread::yield_now();
                    }
                    tx.send(i).unwrap();
                }
            });
            for (i, h) in hs.into_iter().enumerate() {
                assert_eq!(h.join().unwrap(), i);
            }
            t.join().unwrap();
        }
    });
}

// ---------------------------------------------------------------- bridge

#[test]
fn bridge_all_directions() {
    with_watchdog("bridge", WD, || {
        let r = rt(2);
        r.run(|| {
            // green block_on woken by another green thread
            let (tx, rx) = oneshot::channel();
            greenrt::spawn(move || tx.send(1).unwrap());
            let a = greenrt::spawn(move || greenrt::block_on(rx).unwrap())
                .join()
                .unwrap();
            // woken by a future task
            let (tx, rx) = oneshot::channel();
            greenrt::spawn_async(async move {
                greenrt::time::sleep(Duration::from_millis(2)).await;
                tx.send(2).unwrap()
            });
            let b = greenrt::spawn(move || greenrt::block_on(rx).unwrap())
                .join()
                .unwrap();
            // woken by a foreign OS thread
            let (tx, rx) = oneshot::channel();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(2));
                tx.send(3).unwrap()
            });
            let c = greenrt::spawn(move || greenrt::block_on(rx).unwrap())
                .join()
                .unwrap();
            // async awaits green; green joins async
            let d = greenrt::spawn_async(async { greenrt::spawn(|| 4).await.unwrap() })
                .join()
                .unwrap();
            let e = greenrt::spawn(|| greenrt::spawn_async(async { 5 }).join().unwrap())
                .join()
                .unwrap();
            // nested: block_on of a future that awaits a green handle
            let f = greenrt::block_on(async { greenrt::spawn(|| 6).await.unwrap() });
            assert_eq!((a, b, c, d, e, f), (1, 2, 3, 4, 5, 6));
        });
    });
}

#[test]
fn tasks_and_greens_interleave_on_one_worker() {
    with_watchdog("ping-pong one worker", WD, || {
        let r = rt(1);
        let (to_task, mut task_rx) = futures::channel::mpsc::unbounded::<u32>();
        let (to_green, mut green_rx) = futures::channel::mpsc::unbounded::<u32>();
        let task = r.spawn_async(async move {
            while let Some(v) = task_rx.next().await {
                to_green.unbounded_send(v + 1).unwrap();
            }
        });
        let g = r.spawn(move || {
            let mut v = 0;
            for _ in 0..500 {
                to_task.unbounded_send(v).unwrap();
                v = greenrt::block_on(green_rx.next()).unwrap();
            }
            v
        });
        assert_eq!(g.join().unwrap(), 500);
        task.join().unwrap();
    });
}

// ---------------------------------------------------------------- panics

#[test]
fn panic_payload_returned_and_runtime_carries_on() {
    let r = rt(1);
    for i in 0..50 {
        let e = r
            .spawn(move || -> () { panic!("green-panic-{i}") })
            .join()
            .unwrap_err();
        assert_eq!(panic_message(&*e), format!("green-panic-{i}"));
    }
    let e = r
        .block_on(r.spawn(|| std::panic::panic_any(7i64)))
        .unwrap_err();
    assert_eq!(e.downcast_ref::<i64>(), Some(&7));
    let e = r
        .spawn_async(async { panic!("task-panic") })
        .join()
        .unwrap_err();
    assert_eq!(panic_message(&*e), "task-panic");
    assert_eq!(r.spawn(|| 1).join().unwrap(), 1);
    assert_eq!(r.spawn_async(async { 1 }).join().unwrap(), 1);
}

#[test]
fn panic_with_backtrace_prints_and_does_not_crash() {
    let out = in_child_with(
        "panic_with_backtrace_prints_and_does_not_crash",
        "bt",
        |c| {
            c.env("RUST_BACKTRACE", "1");
        },
        || {
            let r = rt(2);
            let e = r
                .spawn(|| {
                    greenrt::yield_now();
                    panic!("bt-panic")
                })
                .join();
            assert!(e.is_err());
            let e = r.run(|| greenrt::spawn(|| -> () { panic!("bt-panic-2") }).join());
            assert!(e.is_err());
        },
    );
    assert!(child_finished(&out), "{}", describe_child(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stack backtrace"), "{err}");
    assert!(err.contains("bt-panic"), "{err}");
    // Ends cleanly at the first green frame: no unknown frames after it.
    assert!(
        err.contains("trampoline") || err.contains("green_main"),
        "{err}"
    );
    assert!(!err.contains("<unknown>"), "{err}");
}

// ---------------------------------------------------------------- timers

#[test]
fn two_thousand_sleepers_in_parallel() {
    with_watchdog("2000 sleepers", WD, || {
        let r = rt(2);
        let t = Instant::now();
        r.run(|| {
            let hs: Vec<_> = (0..2000)
                .map(|_| greenrt::spawn(|| greenrt::sleep(Duration::from_millis(100))))
                .collect();
            hs.into_iter().for_each(|h| h.join().unwrap());
        });
        let e = t.elapsed();
        println!("2000 x 100ms sleeps took {e:?}");
        assert!(e >= Duration::from_millis(100));
        assert!(e < Duration::from_secs(20), "{e:?}");
    });
}

// ---------------------------------------------------------------- live-stack budget

#[test]
fn budget_exhaustion_is_an_error_not_a_panic() {
    let out = in_child(
        "budget_exhaustion_is_an_error_not_a_panic",
        "budget",
        || {
            let r = rt(1);
            let (release, spinner) = hold_the_only_worker(&r);
            let (hs, err) = r.block_on(async {
                let mut hs = Vec::new();
                let mut err = None;
                for _ in 0..200_000 {
                    match greenrt::Builder::new().spawn(|| 1u8) {
                        Ok(h) => hs.push(h),
                        Err(e) => {
                            err = Some(e);
                            break;
                        }
                    }
                }
                (hs, err)
            });
            let err = err.expect("budget never ran out in 200k spawns");
            println!("BUDGET after {} spawns: {:?} {}", hs.len(), err.kind(), err);
            release.store(true, Ordering::SeqCst);
            spinner.join().unwrap();
            let n = hs.len();
            let ok = hs
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|v| *v == 1)
                .count();
            assert_eq!(ok, n);
            // Budget lifts again.
            assert_eq!(r.spawn(|| 3).join().unwrap(), 3);
        },
    );
    println!("{}", describe_child(&out));
    assert!(child_finished(&out), "{}", describe_child(&out));
}

#[test]
fn mapping_failure_at_first_run_is_join_error_payload() {
    let out = in_child(
        "mapping_failure_at_first_run_is_join_error_payload",
        "mapfail",
        || {
            let r = greenrt::runtime::Builder::new()
                .worker_threads(1)
                .stack_size(72 * 1024)
                .build()
                .unwrap();
            let (release, spinner) = hold_the_only_worker(&r);
            let hs: Vec<_> = r.block_on(async {
                (0..20)
                    .map(|_| {
                        greenrt::Builder::new()
                            .stack_size(80 * 1024)
                            .spawn(|| 1u8)
                            .unwrap()
                    })
                    .collect()
            });
            // Exhaust the map count behind greenrt's back.
            let page = 4096;
            let mut maps = Vec::new();
            loop {
                let prot = if maps.len() % 2 == 0 {
                    libc::PROT_READ
                } else {
                    libc::PROT_NONE
                };
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        page,
                        prot,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                if p == libc::MAP_FAILED {
                    break;
                }
                maps.push(p as usize);
            }
            release.store(true, Ordering::SeqCst);
            let results: Vec<_> = hs.into_iter().map(|h| h.join()).collect();
            for p in maps {
                unsafe { libc::munmap(p as *mut _, page) };
            }
            spinner.join().unwrap();
            let mut io_errs = 0;
            for res in &results {
                if let Err(p) = res {
                    let e = p
                        .downcast_ref::<std::io::Error>()
                        .expect("Err payload is io::Error");
                    println!("first-run mapping error: {e}");
                    io_errs += 1;
                }
            }
            println!("IO-ERRS {io_errs} of {}", results.len());
            assert!(
                io_errs > 0,
                "no green thread failed although maps were exhausted"
            );
            assert_eq!(r.spawn(|| 3).join().unwrap(), 3);
        },
    );
    println!("{}", describe_child(&out));
    assert!(child_finished(&out), "{}", describe_child(&out));
}

// ---------------------------------------------------------------- macros

mod main_sync {
    #[greenrt::main(worker_threads = 2, stack_size = 131072)]
    pub fn main() -> Result<(), Box<dyn std::error::Error>> {
        assert!(greenrt::current().is_some(), "body is a green thread");
        let n: u32 = greenrt::spawn(|| "41".parse::<u32>()).join().unwrap()?;
        assert_eq!(n + 1, 42);
        Ok(())
    }
}

mod main_async {
    #[greenrt::main(crate = "greenrt")]
    pub async fn main() -> Result<u8, String> {
        assert!(greenrt::current().is_none());
        greenrt::time::sleep(std::time::Duration::from_millis(1)).await;
        Ok(greenrt::spawn(|| 5u8).await.unwrap())
    }
}

mod main_err {
    #[greenrt::main]
    pub fn main() -> Result<(), std::io::Error> {
        Err(std::io::Error::other("passes through"))
    }
}

#[test]
fn main_macro_runs_and_passes_return_types() {
    main_sync::main().unwrap();
    assert_eq!(main_async::main(), Ok(5));
    assert_eq!(main_err::main().unwrap_err().to_string(), "passes through");
}

#[greenrt::test]
fn test_macro_sync_is_green() {
    assert!(greenrt::current().is_some());
    assert_eq!(greenrt::spawn(|| 1).join().unwrap(), 1);
}

#[greenrt::test(worker_threads = 3, stack_size = 65536)]
async fn test_macro_async_with_settings() {
    assert!(greenrt::current().is_none());
    assert_eq!(greenrt::spawn_async(async { 2 }).await.unwrap(), 2);
}

#[greenrt::test]
fn test_macro_result_return() -> Result<(), String> {
    greenrt::sleep(Duration::from_millis(1));
    Ok(())
}

#[greenrt::test]
#[should_panic(expected = "expected-in-test")]
fn test_macro_should_panic() {
    greenrt::yield_now();
    panic!("expected-in-test");
}

mod renamed {
    use ::greenrt as gr;
    #[gr::test(crate = "gr", worker_threads = 1)]
    fn renamed_crate_path_works() {
        assert_eq!(gr::spawn(|| 1).join().unwrap(), 1);
    }
}

// ---------------------------------------------------------------- more edges

#[test]
fn run_and_block_on_from_many_os_threads_at_once() {
    let r = Arc::new(rt(2));
    with_watchdog("concurrent run/block_on", WD, move || {
        let ts: Vec<_> = (0..4)
            .map(|i| {
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut acc = 0;
                    for _ in 0..50 {
                        acc += if i % 2 == 0 {
                            r.run(|| greenrt::spawn(|| 1).join().unwrap())
                        } else {
                            r.block_on(async { greenrt::spawn(|| 1).await.unwrap() })
                        };
                    }
                    acc
                })
            })
            .collect();
        for t in ts {
            assert_eq!(t.join().unwrap(), 50);
        }
    });
}

#[test]
fn cross_runtime_spawn_and_join() {
    let r1 = rt(1);
    let r2 = rt(1);
    let h2 = r2.handle().clone();
    with_watchdog("cross runtime", WD, move || {
        let v = r1.run(move || {
            let other = h2.spawn(|| {
                greenrt::sleep(Duration::from_millis(5));
                Handle::current().spawn(|| 20).join().unwrap()
            });
            let t = h2.spawn_async(async { 1 });
            other.join().unwrap() + greenrt::block_on(t).unwrap()
        });
        assert_eq!(v, 21);
        drop(r2);
    });
}

/// Wakes itself during poll, and from another thread, and keeps waking after it
/// finished: neither lost wakes nor stray ones may break the green thread.
struct Racy {
    polls: usize,
    tx: std::sync::mpsc::Sender<std::task::Waker>,
}
impl Future for Racy {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.polls += 1;
        if self.polls > 20 {
            return std::task::Poll::Ready(());
        }
        match self.polls % 3 {
            0 => cx.waker().wake_by_ref(),
            1 => {
                let _ = self.tx.send(cx.waker().clone());
            }
            _ => {
                #[allow(clippy::waker_clone_wake)] // consuming wake on purpose
                cx.waker().clone().wake();
                let _ = self.tx.send(cx.waker().clone());
            }
        }
        std::task::Poll::Pending
    }
}

#[test]
fn racy_and_stray_wakes_never_lose_or_double_resume() {
    with_watchdog("racy wakes", Duration::from_secs(240), || {
        let r = rt(2);
        let (tx, rx) = std::sync::mpsc::channel::<std::task::Waker>();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let waker_thread = std::thread::spawn(move || {
            let mut kept = Vec::new();
            while !st.load(Ordering::SeqCst) {
                while let Ok(w) = rx.try_recv() {
                    w.wake_by_ref();
                    kept.push(w);
                }
                // Stray wakes for already-finished waits.
                for w in kept.iter().rev().take(8) {
                    w.wake_by_ref();
                }
                if kept.len() > 64 {
                    kept.drain(..32);
                }
                std::thread::yield_now();
            }
        });
        let hs: Vec<_> = (0..200)
            .map(|i| {
                let tx = tx.clone();
                r.spawn(move || {
                    for _ in 0..10 {
                        greenrt::block_on(Racy {
                            polls: 0,
                            tx: tx.clone(),
                        });
                        if i % 2 == 0 {
                            greenrt::yield_now();
                        } else {
                            greenrt::sleep(Duration::from_micros(100));
                        }
                    }
                    i
                })
            })
            .collect();
        for (i, h) in hs.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), i);
        }
        stop.store(true, Ordering::SeqCst);
        waker_thread.join().unwrap();
    });
}

#[test]
fn run_returns_while_detached_children_keep_running() {
    let r = rt(2);
    let (tx, rx) = std::sync::mpsc::channel();
    r.run(move || {
        greenrt::spawn(move || {
            greenrt::sleep(Duration::from_millis(30));
            tx.send(greenrt::current().is_some()).unwrap();
        });
    });
    assert!(rx.recv_timeout(WD).unwrap());
}

#[test]
fn join_in_progress_on_plain_thread_returns_when_runtime_dropped() {
    let r = rt(1);
    let h = r.spawn(|| greenrt::block_on(futures::future::pending::<u8>()));
    let joiner = std::thread::spawn(move || h.join().is_err());
    std::thread::sleep(Duration::from_millis(30));
    with_watchdog("drop during join", WD, move || drop(r));
    let r = with_watchdog("joiner", WD, move || joiner.join().unwrap());
    assert!(r, "join of a green cancelled at shutdown is Err");
}

#[test]
fn destructor_spawning_during_shutdown_does_not_hang() {
    struct SpawnOnDrop(Arc<AtomicBool>);
    impl Drop for SpawnOnDrop {
        fn drop(&mut self) {
            let r = catch_unwind(AssertUnwindSafe(|| {
                if let Some(h) = Handle::try_current() {
                    drop(h.spawn(|| ()));
                }
                let _ = catch_unwind(|| greenrt::spawn(|| ()));
            }));
            let _ = r;
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let out = in_child(
        "destructor_spawning_during_shutdown_does_not_hang",
        "x",
        || {
            let r = rt(2);
            let flag = Arc::new(AtomicBool::new(false));
            let f = flag.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            let _h = r.spawn(move || {
                let _g = SpawnOnDrop(f);
                tx.send(()).unwrap();
                greenrt::block_on(futures::future::pending::<()>());
            });
            rx.recv().unwrap();
            drop(r);
            assert!(flag.load(Ordering::SeqCst));
        },
    );
    assert!(child_finished(&out), "{}", describe_child(&out));
}

#[test]
fn probe_thread_name_with_nul_and_empty() {
    let r = catch_unwind(|| {
        greenrt::runtime::Builder::new()
            .worker_threads(1)
            .thread_name("a\0b")
            .build()
            .map(drop)
    });
    println!(
        "thread_name with NUL -> {:?}",
        r.as_ref()
            .map(|x| x.as_ref().map_err(|e| e.kind()))
            .map_err(|p| panic_message(&**p))
    );
    assert!(r.is_ok(), "build() panicked instead of returning an error");
    let r = greenrt::runtime::Builder::new()
        .worker_threads(1)
        .thread_name("")
        .build()
        .unwrap();
    assert_eq!(r.spawn(|| 1).join().unwrap(), 1);
}

#[test]
fn probe_green_of_future_task_handle() {
    let r = rt(1);
    let h = r.spawn_async(async { 1 });
    println!("spawn_async handle green: {:?}", h.green());
    assert!(!h.is_finished() || h.is_finished());
    let _ = h.join();
}

// ---------------------------------------------------------------- tracing (feature "tracing")

#[cfg(feature = "tracing")]
mod traced {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    pub(super) struct Capture(pub(super) Arc<Mutex<Vec<(tracing::Level, String, String)>>>);

    pub(super) struct CaptureLayer(pub(super) Capture);

    struct Fields(String);
    impl tracing::field::Visit for Fields {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!("{}={:?} ", field.name(), value));
        }
    }

    impl<S> tracing_subscriber::Layer<S> for CaptureLayer
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut f = Fields(String::new());
            event.record(&mut f);
            if let Some(span) = ctx.event_span(event) {
                f.0.push_str(&format!(" in_span={}", span.name()));
            }
            self.0 .0.lock().unwrap().push((
                *event.metadata().level(),
                event.metadata().target().to_string(),
                f.0,
            ));
        }
    }

    #[test]
    fn blocking_while_unwinding_blocks_worker_warns_and_does_not_abort() {
        let out = in_child_with(
            "traced::blocking_while_unwinding_blocks_worker_warns_and_does_not_abort",
            "unwind",
            |c| {
                c.env(
                    "RUST_BACKTRACE",
                    std::env::var("C2_BT").unwrap_or("0".into()),
                );
            },
            || {
                use tracing_subscriber::prelude::*;
                let cap = Capture::default();
                let _d = tracing::subscriber::set_default(
                    tracing_subscriber::registry().with(CaptureLayer(cap.clone())),
                );
                let r = rt(1);
                struct BlockOnDrop;
                impl Drop for BlockOnDrop {
                    fn drop(&mut self) {
                        assert!(std::thread::panicking());
                        greenrt::sleep(Duration::from_millis(30));
                        greenrt::yield_now();
                        greenrt::block_on(async {});
                    }
                }
                let other = r.spawn(|| {
                    for _ in 0..100 {
                        assert!(
                            !std::thread::panicking(),
                            "saw another green thread's panic"
                        );
                        let _ = catch_unwind(|| panic!("inner-ok"));
                        greenrt::yield_now();
                    }
                });
                let p = greenrt::Builder::new().name("unwinder-xyz".into());
                let p = r.run(move || {
                    p.spawn(|| {
                        let _g = BlockOnDrop;
                        greenrt::yield_now();
                        panic!("outer");
                    })
                    .unwrap()
                });
                assert!(p.join().is_err());
                other.join().unwrap();
                let evs = cap.0.lock().unwrap();
                let warned = evs
                    .iter()
                    .any(|(l, _, f)| *l == tracing::Level::WARN && f.contains("unwinder-xyz"));
                assert!(warned, "no WARN naming the green thread: {evs:?}");
            },
        );
        assert!(child_finished(&out), "{}", describe_child(&out));
    }

    // ---------------------------------------------------------------- tracing

    #[derive(Clone, Default)]
    struct SpanLog(Arc<Mutex<Vec<SpanRec>>>);
    #[derive(Debug, Clone)]
    #[allow(dead_code)]
    struct SpanRec {
        name: String,
        target: String,
        level: tracing::Level,
        fields: String,
        parent: Option<String>,
    }
    struct SpanLayer(SpanLog);
    impl<S> tracing_subscriber::Layer<S> for SpanLayer
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            id: &tracing::span::Id,
            ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut f = Fields(String::new());
            attrs.record(&mut f);
            let names: Vec<_> = attrs.metadata().fields().iter().map(|x| x.name()).collect();
            f.0.push_str(&format!(" meta={names:?}"));
            let parent = ctx
                .span(id)
                .and_then(|s| s.parent())
                .map(|p| p.name().to_string());
            self.0 .0.lock().unwrap().push(SpanRec {
                name: attrs.metadata().name().to_string(),
                target: attrs.metadata().target().to_string(),
                level: *attrs.metadata().level(),
                fields: f.0,
                parent,
            });
        }
    }

    #[test]
    fn green_span_level_target_fields_parent() {
        use tracing_subscriber::prelude::*;
        let log = SpanLog::default();
        let _d = tracing::subscriber::set_default(
            tracing_subscriber::registry().with(SpanLayer(log.clone())),
        );
        let r = rt(2);
        let id = r.run(|| {
            let parent = tracing::info_span!("c2_parent");
            let _e = parent.enter();
            let h = greenrt::Builder::new()
                .name("traced-one".into())
                .spawn(|| 1)
                .unwrap();
            let id = h.green().id();
            h.join().unwrap();
            id
        });
        let spans = log.0.lock().unwrap().clone();
        let g = spans
            .iter()
            .find(|s| s.target == "greenrt::green" && s.fields.contains("traced-one"))
            .unwrap_or_else(|| panic!("no green span: {spans:?}"));
        assert_eq!(g.level, tracing::Level::DEBUG);
        assert!(
            g.fields.contains("id=") && g.fields.contains("name="),
            "{g:?}"
        );
        assert!(g.fields.contains(&id.to_string()), "{g:?} vs {id}");
        // Spawned from a plain thread inside a span: that span is the parent too.
        let (span_id, unnamed) = {
            let outer = tracing::info_span!("c2_plain_parent");
            let _e = outer.enter();
            let h = r.spawn(|| greenrt::current().unwrap().id());
            let id = h.green().id();
            (id, h.join().unwrap())
        };
        assert_eq!(span_id, unnamed);
        let spans = log.0.lock().unwrap().clone();
        let u = spans
            .iter()
            .find(|s| s.target == "greenrt::green" && s.fields.contains(&format!("id={unnamed} ")))
            .unwrap_or_else(|| panic!("no span for unnamed green {unnamed}: {spans:?}"));
        assert!(
            u.fields.contains("\"id\"") && u.fields.contains("\"name\""),
            "fields declared: {u:?}"
        );
        assert_eq!(u.parent.as_deref(), Some("c2_plain_parent"), "{u:?}");
        assert_eq!(g.parent.as_deref(), Some("c2_parent"), "{g:?}");
    }

    #[test]
    fn user_spans_stay_with_their_green_thread_across_switches() {
        let _d = tracing::subscriber::set_default(tracing_subscriber::registry());
        let r = rt(1);
        {
            let a = r.spawn(|| {
                let s = tracing::info_span!("user_a");
                let _e = s.enter();
                for i in 0..100 {
                    match i % 3 {
                        0 => greenrt::yield_now(),
                        1 => greenrt::sleep(Duration::from_micros(200)),
                        _ => greenrt::block_on(greenrt::time::sleep(Duration::from_micros(200))),
                    }
                    let cur = tracing::Span::current();
                    assert_eq!(cur.metadata().map(|m| m.name()), Some("user_a"));
                }
            });
            let b = r.spawn(|| {
                for _ in 0..100 {
                    greenrt::yield_now();
                    let cur = tracing::Span::current();
                    let m = cur.metadata().expect("a current span (the green span)");
                    assert_ne!(m.name(), "user_a");
                    assert_eq!(m.target(), "greenrt::green");
                }
            });
            with_watchdog("span isolation", WD, move || {
                a.join().unwrap();
                b.join().unwrap();
            });
        }
    }

    #[test]
    fn scoped_subscriber_sees_green_events_and_sched_trace() {
        use tracing_subscriber::prelude::*;
        let cap = Capture::default();
        let _d = tracing::subscriber::set_default(
            tracing_subscriber::registry().with(CaptureLayer(cap.clone())),
        );
        let r = rt(2);
        r.spawn(|| tracing::info!(marker = "from-green-c2"))
            .join()
            .unwrap();
        r.run(|| {
            greenrt::spawn(|| {
                greenrt::yield_now();
                tracing::info!(marker = "from-nested-green-c2")
            })
            .join()
            .unwrap()
        });
        let evs = cap.0.lock().unwrap().clone();
        assert!(
            evs.iter().any(|(_, _, f)| f.contains("from-green-c2")),
            "{evs:?}"
        );
        let nested = evs
            .iter()
            .find(|(_, _, f)| f.contains("from-nested-green-c2"))
            .expect("nested event");
        assert!(
            nested.2.contains("in_span="),
            "event has the green span as parent: {nested:?}"
        );
        assert!(
            evs.iter()
                .any(|(l, t, _)| *l == tracing::Level::TRACE && t == "greenrt::sched"),
            "no TRACE greenrt::sched event: {:?}",
            evs.iter().map(|e| &e.1).collect::<HashSet<_>>()
        );
    }

    #[derive(Clone, Default)]
    #[allow(clippy::type_complexity)]
    struct Switches(Arc<Mutex<std::collections::HashMap<u64, (String, usize, usize)>>>);
    struct SwitchLayer(Switches);
    impl<S> tracing_subscriber::Layer<S> for SwitchLayer
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            id: &tracing::span::Id,
            _ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if attrs.metadata().target() == "greenrt::green" {
                let mut f = Fields(String::new());
                attrs.record(&mut f);
                self.0 .0.lock().unwrap().insert(id.into_u64(), (f.0, 0, 0));
            }
        }
        fn on_enter(
            &self,
            id: &tracing::span::Id,
            _ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if let Some(e) = self.0 .0.lock().unwrap().get_mut(&id.into_u64()) {
                e.1 += 1;
            }
        }
        fn on_exit(&self, id: &tracing::span::Id, _ctx: tracing_subscriber::layer::Context<'_, S>) {
            if let Some(e) = self.0 .0.lock().unwrap().get_mut(&id.into_u64()) {
                e.2 += 1;
            }
        }
    }

    #[test]
    fn green_span_entered_and_exited_at_every_switch() {
        use tracing_subscriber::prelude::*;
        let sw = Switches::default();
        let _d = tracing::subscriber::set_default(
            tracing_subscriber::registry().with(SwitchLayer(sw.clone())),
        );
        let r = rt(1);
        r.spawn(|| {
            let h = greenrt::Builder::new()
                .name("switchy-c2".into())
                .spawn(|| {
                    for _ in 0..10 {
                        greenrt::yield_now();
                    }
                    greenrt::sleep(Duration::from_millis(1));
                    greenrt::block_on(greenrt::time::sleep(Duration::from_millis(1)));
                })
                .unwrap();
            h.join().unwrap();
        })
        .join()
        .unwrap();
        let m = sw.0.lock().unwrap();
        let (_, enters, exits) = m
            .values()
            .find(|(f, _, _)| f.contains("switchy-c2"))
            .unwrap_or_else(|| panic!("no green span for switchy-c2: {m:?}"));
        // 1 first run + 10 yields + 2 sleeps = at least 13 slices.
        assert!(*enters >= 13, "entered {enters} times");
        assert_eq!(enters, exits, "every enter has its exit");
    }
}

#[test]
fn stack_pool_is_bounded() {
    with_watchdog("bounded pool", WD, || {
        let r = greenrt::runtime::Builder::new()
            .worker_threads(1)
            .stack_size(92 * 1024)
            .build()
            .unwrap();
        let n = 3000;
        r.run(|| {
            let (tx, rx) = oneshot::channel::<()>();
            let rx = futures::future::FutureExt::shared(rx);
            let parked = Arc::new(AtomicUsize::new(0));
            let hs: Vec<_> = (0..n)
                .map(|_| {
                    let rx = rx.clone();
                    let p = parked.clone();
                    greenrt::spawn(move || {
                        p.fetch_add(1, Ordering::SeqCst);
                        let _ = greenrt::block_on(rx);
                    })
                })
                .collect();
            while parked.load(Ordering::SeqCst) < n {
                greenrt::sleep(Duration::from_millis(5));
            }
            let live = stacks_of(92).len();
            assert!(live >= n, "{live}");
            tx.send(()).unwrap();
            hs.into_iter().for_each(|h| h.join().unwrap());
        });
        // Let the worker finish putting stacks back, then count what stays mapped.
        r.spawn(|| greenrt::sleep(Duration::from_millis(50)))
            .join()
            .unwrap();
        let kept = stacks_of(92).len();
        println!("stacks kept after {n} finished: {kept}");
        assert!(
            kept < n,
            "pool not bounded: {kept} of {n} stacks still mapped"
        );
        drop(r);
        let after = stacks_of(92).len();
        println!("after runtime drop: {after}");
        assert_eq!(after, 0, "stacks unmapped when the runtime is dropped");
    });
}

#[cfg(feature = "tracing")]
mod traced2 {
    use super::traced::{Capture, CaptureLayer};
    use super::*;
    use tracing_subscriber::prelude::*;

    #[test]
    fn each_green_follows_the_default_subscriber_where_it_was_spawned() {
        // Runtime built before any subscriber; two threads with different scoped
        // subscribers spawn onto the same runtime.
        let r = Arc::new(rt(2));
        let run = |tag: &'static str| {
            let r = r.clone();
            std::thread::spawn(move || {
                let cap = Capture::default();
                let _d = tracing::subscriber::set_default(
                    tracing_subscriber::registry().with(CaptureLayer(cap.clone())),
                );
                let span = tracing::info_span!("spawner_span");
                let _e = span.enter();
                let hs: Vec<_> = (0..20)
                    .map(|_| {
                        r.spawn(move || {
                            greenrt::yield_now();
                            tracing::info!(tag);
                            greenrt::spawn(move || tracing::info!(nested = tag))
                                .join()
                                .unwrap();
                        })
                    })
                    .collect();
                hs.into_iter().for_each(|h| h.join().unwrap());
                let evs = cap.0.lock().unwrap().clone();
                evs
            })
        };
        let (a, b) = (run("tag-a"), run("tag-b"));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        let count = |evs: &Vec<(tracing::Level, String, String)>, t: &str| {
            evs.iter().filter(|e| e.2.contains(t)).count()
        };
        assert_eq!(count(&a, "tag-a"), 40, "{a:?}");
        assert_eq!(count(&a, "tag-b"), 0);
        assert_eq!(count(&b, "tag-b"), 40);
        assert_eq!(count(&b, "tag-a"), 0);
    }

    #[test]
    fn sched_trace_events_cover_spawn_steal_park_wake() {
        // Worker-level events (park) have no green thread to follow, so they go to
        // the global default: install one, in a child process.
        let out = in_child(
            "traced2::sched_trace_events_cover_spawn_steal_park_wake",
            "x",
            || {
                let cap = Capture::default();
                tracing::subscriber::set_global_default(
                    tracing_subscriber::registry().with(CaptureLayer(cap.clone())),
                )
                .unwrap();
                let r = rt(2);
                let seen = |cap: &Capture, word: &str| {
                    cap.0.lock().unwrap().iter().any(|e| {
                        e.1 == "greenrt::sched"
                            && e.0 == tracing::Level::TRACE
                            && e.2.to_lowercase().contains(word)
                    })
                };
                // Busy children spawned from a green thread on a worker land in that
                // worker's deque, so the idle worker steals; retry rounds until seen.
                for _ in 0..50 {
                    r.spawn(|| {
                        let hs: Vec<_> = (0..8)
                            .map(|_| {
                                greenrt::spawn(|| {
                                    let t = Instant::now();
                                    while t.elapsed() < Duration::from_millis(2) {
                                        std::hint::spin_loop();
                                    }
                                    greenrt::sleep(Duration::from_millis(1));
                                })
                            })
                            .collect();
                        hs.into_iter().for_each(|h| h.join().unwrap());
                    })
                    .join()
                    .unwrap();
                    std::thread::sleep(Duration::from_millis(10));
                    if ["spawn", "steal", "park", "wake"]
                        .iter()
                        .all(|w| seen(&cap, w))
                    {
                        break;
                    }
                }
                drop(r);
                let evs = cap.0.lock().unwrap();
                let sched: Vec<_> = evs
                    .iter()
                    .filter(|e| e.1 == "greenrt::sched" && e.0 == tracing::Level::TRACE)
                    .map(|e| e.2.to_lowercase())
                    .collect();
                let mut kinds: Vec<_> = sched
                    .iter()
                    .map(|m| m.split(" id=").next().unwrap().to_string())
                    .collect();
                kinds.sort();
                kinds.dedup();
                println!("sched events ({}): {kinds:#?}", sched.len());
                for word in ["spawn", "steal", "park", "wake"] {
                    assert!(
                        sched.iter().any(|m| m.contains(word)),
                        "no TRACE greenrt::sched event about {word}"
                    );
                }
            },
        );
        println!("{}", describe_child(&out));
        assert!(child_finished(&out), "{}", describe_child(&out));
    }

    #[test]
    fn global_default_subscriber_sees_green_events() {
        let out = in_child(
            "traced2::global_default_subscriber_sees_green_events",
            "g",
            || {
                let cap = Capture::default();
                tracing::subscriber::set_global_default(
                    tracing_subscriber::registry().with(CaptureLayer(cap.clone())),
                )
                .unwrap();
                let r = rt(2);
                r.spawn(|| {
                    greenrt::yield_now();
                    tracing::info!("global-from-green");
                })
                .join()
                .unwrap();
                r.run(|| {
                    greenrt::spawn(|| tracing::info!("global-from-run-child"))
                        .join()
                        .unwrap()
                });
                let evs = cap.0.lock().unwrap();
                assert!(
                    evs.iter().any(|e| e.2.contains("global-from-green")),
                    "{evs:?}"
                );
                assert!(
                    evs.iter().any(|e| e.2.contains("global-from-run-child")),
                    "{evs:?}"
                );
            },
        );
        assert!(child_finished(&out), "{}", describe_child(&out));
    }
}

#[test]
fn destructor_joining_unstarted_child_while_unwinding_two_workers() {
    // The unwinding green thread blocks its worker; its unstarted child must be stolen
    // by the other worker (issue: unstarted work is stolen by idle workers).
    let out = in_child_with(
        "destructor_joining_unstarted_child_while_unwinding_two_workers",
        "x",
        |c| {
            c.env("RUST_BACKTRACE", "0");
        },
        || {
            struct JoinOnDrop(Option<greenrt::JoinHandle<u32>>);
            impl Drop for JoinOnDrop {
                fn drop(&mut self) {
                    let v = self.0.take().unwrap().join().unwrap();
                    assert_eq!(v, 5);
                }
            }
            let r = rt(2);
            let h = r.spawn(|| {
                let _g = JoinOnDrop(Some(greenrt::spawn(|| 5)));
                panic!("unwind-and-join");
            });
            assert!(h.join().is_err());
        },
    );
    assert!(child_finished(&out), "{}", describe_child(&out));
}

#[test]
fn runtime_new_uses_available_parallelism() {
    let out = in_child_with(
        "runtime_new_uses_available_parallelism",
        "x",
        |c| {
            c.env_remove("GREENRT_WORKER_THREADS");
        },
        || {
            let before = threads_named("greenrt-w");
            let r = Runtime::new().unwrap();
            let n = std::thread::available_parallelism().unwrap().get();
            let after = settled_threads_named("greenrt-w", before + n);
            println!("WORKERS {} expected {n}", after - before);
            assert_eq!(after - before, n);
            drop(r);
        },
    );
    assert!(child_finished(&out), "{}", describe_child(&out));
}

#[test]
fn join_suspends_green_caller_on_one_worker() {
    with_watchdog("join on one worker", WD, || {
        let r = rt(1);
        let v = r
            .spawn(|| {
                let child = greenrt::spawn(|| {
                    greenrt::yield_now();
                    greenrt::spawn(|| 2).join().unwrap() + 1
                });
                child.join().unwrap() + 1
            })
            .join()
            .unwrap();
        assert_eq!(v, 4);
    });
}

#[test]
fn probe_green_blocking_calls_inside_runtime_block_on() {
    let r = rt(1);
    let res = catch_unwind(AssertUnwindSafe(|| {
        r.block_on(async {
            greenrt::yield_now();
            greenrt::sleep(Duration::from_millis(1));
            greenrt::spawn(|| 1).join().unwrap()
        })
    }));
    println!(
        "green-blocking calls inside Runtime::block_on -> {:?}",
        res.as_ref().map_err(|p| panic_message(&**p))
    );
}

/// Recurses until about `bytes` of stack below the first frame are in use.
#[inline(never)]
fn use_stack(base: usize, bytes: usize) -> usize {
    let buf = std::hint::black_box([7u8; 1024]);
    let here = &buf as *const _ as usize;
    if base.saturating_sub(here) >= bytes {
        buf[0] as usize
    } else {
        use_stack(base, bytes) + std::hint::black_box(buf[9]) as usize
    }
}

fn recurse_kib(kib: usize) -> usize {
    let marker = 0u8;
    use_stack(&marker as *const _ as usize, kib * 1024)
}

#[test]
fn stack_sizes_are_usable_as_configured() {
    let r = rt(1);
    // 200 KiB on the default 256 KiB stack.
    r.spawn(|| recurse_kib(200)).join().unwrap();
    // 900 KiB on a 1 MiB stack.
    r.run(|| {
        greenrt::Builder::new()
            .stack_size(1 << 20)
            .spawn(|| recurse_kib(900))
            .unwrap()
            .join()
            .unwrap()
    });
    let big = greenrt::runtime::Builder::new()
        .worker_threads(1)
        .stack_size(4 << 20)
        .build()
        .unwrap();
    big.spawn(|| recurse_kib(3900)).join().unwrap();
}

#[test]
fn nested_block_on_and_panicking_future_in_green() {
    with_watchdog("nested block_on", WD, || {
        let r = rt(1);
        let v = r
            .spawn(|| {
                let (tx, rx) = oneshot::channel();
                greenrt::spawn(move || tx.send(3).unwrap());
                greenrt::block_on(async {
                    greenrt::sleep(Duration::from_millis(1));
                    greenrt::block_on(rx).unwrap() + greenrt::spawn(|| 1).join().unwrap()
                })
            })
            .join()
            .unwrap();
        assert_eq!(v, 4);
        let e = r
            .spawn(|| greenrt::block_on(async { panic!("fut-panic") }))
            .join()
            .unwrap_err();
        assert_eq!(panic_message(&*e), "fut-panic");
        assert_eq!(r.spawn(|| 1).join().unwrap(), 1);
    });
}

#[test]
fn join_handle_polled_with_changing_wakers() {
    with_watchdog("changing wakers", WD, || {
        let r = rt(2);
        let (tx, rx) = oneshot::channel::<()>();
        let mut h = r.spawn(move || {
            greenrt::block_on(rx).unwrap();
            8
        });
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(std::pin::Pin::new(&mut h).poll(&mut cx).is_pending());
        let v = r.block_on(async move {
            let t = greenrt::spawn_async(async move {
                greenrt::time::sleep(Duration::from_millis(10)).await;
                tx.send(()).unwrap();
            });
            let v = h.await.unwrap();
            t.await.unwrap();
            v
        });
        assert_eq!(v, 8);
    });
}

#[test]
fn many_runtimes_alive_and_dropped_out_of_order() {
    with_watchdog("many runtimes", WD, || {
        let mut rts: Vec<_> = (0..12).map(|i| rt(1 + i % 3)).collect();
        let hs: Vec<_> = rts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.spawn(move || {
                    greenrt::sleep(Duration::from_millis(2));
                    i
                })
            })
            .collect();
        for (i, h) in hs.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), i);
        }
        while !rts.is_empty() {
            let k = rts.len() / 2;
            drop(rts.remove(k));
        }
    });
}

#[test]
fn huge_sleeps_do_not_overflow() {
    let r = rt(1);
    let (tx, rx) = std::sync::mpsc::channel();
    let h = r.spawn(move || {
        tx.send(()).unwrap();
        greenrt::sleep(Duration::MAX);
    });
    rx.recv().unwrap();
    // Parked, not panicked: give a panic time to surface, then check.
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !h.is_finished(),
        "greenrt::sleep(Duration::MAX) finished (panicked?)"
    );
    let polled = r.block_on(async {
        let s = greenrt::time::sleep(Duration::MAX);
        futures::pin_mut!(s);
        futures::poll!(s.as_mut()).is_pending()
    });
    assert!(polled);
    let t = r.spawn_async(async {
        greenrt::time::sleep(Duration::from_secs(u64::MAX)).await;
    });
    std::thread::sleep(Duration::from_millis(20));
    assert!(!t.is_finished(), "time::sleep(huge) finished (panicked?)");
    drop(r);
    let e = h.join().unwrap_err();
    assert!(
        !panic_message(&*e).contains("overflow"),
        "{}",
        panic_message(&*e)
    );
}

#[test]
fn context_is_left_after_run_and_block_on_even_on_panic() {
    let r = rt(1);
    r.run(|| ());
    assert!(Handle::try_current().is_none());
    let _ = catch_unwind(AssertUnwindSafe(|| r.run(|| panic!("leave-ctx"))));
    assert!(
        Handle::try_current().is_none(),
        "context leaked after a panic in run"
    );
    assert!(greenrt::current().is_none());
    let _ = catch_unwind(AssertUnwindSafe(|| {
        r.block_on(async { panic!("leave-ctx2") })
    }));
    assert!(
        Handle::try_current().is_none(),
        "context leaked after a panic in block_on"
    );
    // And the thread can host again.
    assert_eq!(r.run(|| greenrt::spawn(|| 1).join().unwrap()), 1);
    let m = panics_with(|| greenrt::spawn(|| 1));
    assert!(m.contains("outside"), "{m}");
}

mod main_bad_stack {
    #[greenrt::main(stack_size = 1024)]
    pub fn main() {}
}

#[test]
fn main_macro_with_out_of_range_settings_fails_naming_the_setting() {
    let m = panics_with(main_bad_stack::main);
    println!("{m}");
    assert!(m.contains("stack_size"), "{m}");
}

#[test]
fn builder_spawn_inside_future_task_and_is_finished_after_panic() {
    let r = rt(2);
    let v = r.block_on(async {
        greenrt::spawn_async(async {
            greenrt::Builder::new()
                .name("from-task".into())
                .spawn(|| greenrt::current().unwrap().name().map(str::to_owned))
                .unwrap()
                .await
                .unwrap()
        })
        .await
        .unwrap()
    });
    assert_eq!(v.as_deref(), Some("from-task"));
    let h = r.spawn(|| -> () { panic!("then-finished") });
    while !h.is_finished() {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(h.join().is_err());
}

#[test]
fn many_detached_spawns_in_a_row_from_a_worker_green_thread() {
    // More unstarted green threads than the live-stack budget (~26k here) from a
    // green thread that never yields on its own: spawn must make room (run or wait for
    // the queued ones) rather than fail.
    for workers in [1, 2] {
        let out = in_child_with(
            "many_detached_spawns_in_a_row_from_a_worker_green_thread",
            "x",
            |c| {
                c.env("C2_WORKERS", workers.to_string());
            },
            || {
                let w: usize = std::env::var("C2_WORKERS").unwrap().parse().unwrap();
                let r = rt(w);
                let n = 200_000;
                let done = Arc::new(AtomicUsize::new(0));
                let d = done.clone();
                r.spawn(move || {
                    for _ in 0..n {
                        let d = d.clone();
                        greenrt::spawn(move || {
                            d.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                })
                .join()
                .unwrap();
                while done.load(Ordering::Relaxed) < n {
                    std::thread::sleep(Duration::from_millis(5));
                }
            },
        );
        assert!(
            child_finished(&out),
            "{workers} workers: {}",
            describe_child(&out)
        );
    }
}

#[test]
fn tiny_sleeps_never_hang() {
    with_watchdog("tiny sleeps", WD, || {
        let r = rt(2);
        r.run(|| {
            let hs: Vec<_> = (0..50)
                .map(|i| {
                    greenrt::spawn(move || {
                        for j in 0..200u64 {
                            greenrt::sleep(Duration::from_nanos((i + j) % 3));
                        }
                        greenrt::block_on(async {
                            for j in 0..100u64 {
                                greenrt::time::sleep(Duration::from_nanos(j % 2)).await;
                            }
                        });
                    })
                })
                .collect();
            hs.into_iter().for_each(|h| h.join().unwrap());
        });
    });
}

#[test]
fn nested_runtime_created_used_and_dropped_inside_green_and_task() {
    with_watchdog("nested runtime", WD, || {
        let r = rt(2);
        let v = r
            .spawn(|| {
                let inner = rt(1);
                let a = inner
                    .spawn(|| greenrt::spawn(|| 20).join().unwrap())
                    .join()
                    .unwrap();
                let b = greenrt::block_on(inner.spawn_async(async { 1 })).unwrap();
                drop(inner);
                a + b
            })
            .join()
            .unwrap();
        assert_eq!(v, 21);
        let v = r
            .spawn_async(async {
                let inner = rt(1);
                let v = inner.spawn(|| 5).await.unwrap();
                drop(inner);
                v
            })
            .join()
            .unwrap();
        assert_eq!(v, 5);
    });
}

#[test]
fn dropping_runtime_while_foreign_threads_spawn() {
    with_watchdog("drop vs spawn race", WD, || {
        for _ in 0..5 {
            let r = rt(2);
            let h = r.handle().clone();
            let spawner = std::thread::spawn(move || {
                let mut handles = Vec::new();
                for i in 0..2000 {
                    match catch_unwind(AssertUnwindSafe(|| {
                        if i % 2 == 0 {
                            h.spawn(move || {
                                greenrt::yield_now();
                                i
                            })
                        } else {
                            h.spawn_async(async move { i })
                        }
                    })) {
                        Ok(jh) => handles.push(jh),
                        Err(_) => break,
                    }
                }
                handles
                    .into_iter()
                    .map(|jh| jh.join().is_ok())
                    .filter(|ok| *ok)
                    .count()
            });
            std::thread::sleep(Duration::from_millis(2));
            drop(r);
            let ok = spawner.join().unwrap();
            let _ = ok;
        }
    });
}

#[test]
fn shutdown_unwind_with_blocking_destructor_and_swallowed_cancel() {
    let out = in_child_with(
        "shutdown_unwind_with_blocking_destructor_and_swallowed_cancel",
        "x",
        |c| {
            c.env("RUST_BACKTRACE", "0");
        },
        || {
            struct SleepOnDrop(Arc<AtomicBool>);
            impl Drop for SleepOnDrop {
                fn drop(&mut self) {
                    greenrt::sleep(Duration::from_millis(10));
                    greenrt::yield_now();
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let r = rt(2);
            let f1 = Arc::new(AtomicBool::new(false));
            let f2 = Arc::new(AtomicBool::new(false));
            let (tx, rx) = std::sync::mpsc::channel();
            let (g1, tx1) = (f1.clone(), tx.clone());
            let _a = r.spawn(move || {
                let _g = SleepOnDrop(g1);
                tx1.send(()).unwrap();
                greenrt::sleep(Duration::from_secs(3600));
            });
            let g2 = f2.clone();
            let _b = r.spawn(move || {
                let _g = SleepOnDrop(g2);
                tx.send(()).unwrap();
                // A user who catches everything swallows the cancellation once...
                let _ = catch_unwind(|| greenrt::sleep(Duration::from_secs(3600)));
                // ...and blocks again: shutdown must still finish.
                greenrt::sleep(Duration::from_secs(3600));
            });
            rx.recv().unwrap();
            rx.recv().unwrap();
            drop(r);
            assert!(f1.load(Ordering::SeqCst));
            // design.md section 2: a green thread that catches the cancel and suspends
            // again is leaked (its destructors never run); drop must still return.
            let _ = f2.load(Ordering::SeqCst);
        },
    );
    assert!(child_finished(&out), "{}", describe_child(&out));
}
