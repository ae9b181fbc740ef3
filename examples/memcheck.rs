//! A small program for valgrind's memcheck: every kind of switch greenrt makes, in a
//! few seconds under valgrind. It checks its own results and exits non-zero if any is
//! wrong; valgrind's `--error-exitcode=1` does the same for memory errors.
//!
//! ```text
//! cargo build --example memcheck
//! valgrind --error-exitcode=1 --leak-check=full target/debug/examples/memcheck
//! ```
//!
//! It covers: `Runtime::run` (a green thread on the main thread), spawn and join,
//! detached spawns that reuse finished green threads' control blocks, `yield_now`, `sleep`, `block_on` between green threads and future tasks both ways,
//! nested spawns, panics in green threads and tasks caught by `join`, `Runtime::block_on`,
//! and dropping a runtime while green threads are suspended in `sleep`, `block_on` and
//! `join` (cancelled: their destructors run) and a task is pending.

use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, StreamExt};
use greenrt::runtime::Builder;
use greenrt::Cancelled;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PLANNED_PANIC: &str = "memcheck: planned panic";

/// Counts its drops: proves a cancelled green thread's destructors ran.
struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn main() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&PLANNED_PANIC) {
            previous(info);
        }
    }));

    // The client requests reach valgrind: under it, a stack's registration gets an id.
    let (under_valgrind, stack_id) = greenrt::bench::valgrind_stack_probe().unwrap();
    if under_valgrind {
        assert_ne!(stack_id, 0, "valgrind did not answer STACK_REGISTER");
    } else {
        assert_eq!(
            stack_id, 0,
            "outside valgrind a request returns its default"
        );
    }

    let rt = Builder::new().worker_threads(2).build().unwrap();

    let sum = rt.run(|| {
        // Spawn and join, with yields and sleeps, and a nested spawn each.
        let greens: Vec<_> = (0..40u64)
            .map(|i| {
                greenrt::spawn(move || {
                    greenrt::yield_now();
                    if i % 4 == 0 {
                        greenrt::sleep(Duration::from_millis(1));
                    }
                    let child = greenrt::spawn(move || i * 2);
                    greenrt::yield_now();
                    child.join().unwrap()
                })
            })
            .collect();
        let mut sum: u64 = greens.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum, 2 * (0..40).sum::<u64>());

        // Detached green threads of one closure type, spawned from a green thread on a
        // worker, in three waves: the worker keeps the first waves' control blocks and
        // the next waves write over them (runtime/recycle.rs).
        let finished = Arc::new(AtomicUsize::new(0));
        let spawner = finished.clone();
        greenrt::spawn(move || {
            for wave in 1..=3 {
                for _ in 0..50 {
                    let finished = spawner.clone();
                    drop(greenrt::spawn(move || {
                        finished.fetch_add(1, Ordering::SeqCst);
                    }));
                }
                while spawner.load(Ordering::SeqCst) < wave * 50 {
                    greenrt::yield_now();
                }
            }
        })
        .join()
        .unwrap();
        assert_eq!(finished.load(Ordering::SeqCst), 150);

        // A green thread waits on a task (block_on a channel it fills after a sleep).
        let (tx, rx) = oneshot::channel();
        greenrt::spawn_async(async move {
            greenrt::time::sleep(Duration::from_millis(1)).await;
            tx.send(7u64).unwrap();
        });
        sum += greenrt::block_on(rx).unwrap();

        // A task awaits a green thread; the green thread joins the task.
        let green = greenrt::spawn(|| {
            greenrt::yield_now();
            5u64
        });
        let task = greenrt::spawn_async(async move { green.await.unwrap() * 2 });
        sum += task.join().unwrap();

        // Ping-pong between a green thread and a task over bounded channels.
        let (mut ping_tx, mut ping_rx) = mpsc::channel::<u64>(1);
        let (mut pong_tx, mut pong_rx) = mpsc::channel::<u64>(1);
        let echo = greenrt::spawn_async(async move {
            while let Some(v) = ping_rx.next().await {
                pong_tx.send(v + 1).await.unwrap();
            }
        });
        for i in 0..50 {
            greenrt::block_on(ping_tx.send(i)).unwrap();
            assert_eq!(greenrt::block_on(pong_rx.next()), Some(i + 1));
        }
        drop(ping_tx);
        echo.join().unwrap();

        // Panics, caught by join: in a green thread (unwinding its own stack) and a task.
        let green = greenrt::spawn(|| {
            greenrt::yield_now();
            std::panic::panic_any(PLANNED_PANIC)
        });
        let payload = green.join().unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&PLANNED_PANIC));
        let task = greenrt::spawn_async(async { std::panic::panic_any(PLANNED_PANIC) });
        let payload = task.join().unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&PLANNED_PANIC));
        sum
    });
    assert_eq!(sum, 2 * (0..40).sum::<u64>() + 7 + 10);

    // Runtime::block_on: async code on the calling thread awaiting a green thread.
    let doubled = rt.block_on(async { greenrt::spawn(|| 21u64).await.unwrap() * 2 });
    assert_eq!(doubled, 42);

    // Cancellation at runtime drop: green threads suspended in sleep, block_on and join,
    // and a pending task. Each signals once it is about to suspend.
    let dropped = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let mut suspended = Vec::new();
    let mut tasks = Vec::new();
    for kind in 0..3 {
        let (dropped, started) = (dropped.clone(), started_tx.clone());
        suspended.push(rt.spawn(move || {
            let _guard = Guard(dropped);
            started.send(()).unwrap();
            match kind {
                0 => greenrt::sleep(Duration::from_secs(3600)),
                1 => greenrt::block_on(futures::future::pending::<()>()),
                // The child may be cancelled first (it can live on the other worker);
                // its join then returns Cancelled, which is rethrown as README shows.
                _ => match greenrt::spawn(|| greenrt::sleep(Duration::from_secs(3600))).join() {
                    Err(payload) if payload.is::<Cancelled>() => std::panic::resume_unwind(payload),
                    other => other.unwrap(),
                },
            }
        }));
    }
    {
        let (dropped, started) = (dropped.clone(), started_tx.clone());
        tasks.push(rt.spawn_async(async move {
            let _guard = Guard(dropped);
            started.send(()).unwrap();
            futures::future::pending::<()>().await
        }));
    }
    for _ in 0..4 {
        started_rx.recv().unwrap();
    }
    drop(rt);
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        4,
        "a cancelled destructor did not run"
    );
    for handle in suspended {
        assert!(handle.join().unwrap_err().is::<Cancelled>());
    }
    for handle in tasks {
        assert!(handle.join().unwrap_err().is::<Cancelled>());
    }

    println!(
        "memcheck: all checks passed ({}, stack registration id {stack_id})",
        if under_valgrind {
            "under valgrind"
        } else {
            "not under valgrind"
        }
    );
}
