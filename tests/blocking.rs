//! The blocking pool: `unblock` and `spawn_blocking` run on pool threads that see
//! their runtime; nested and plain-thread `unblock` run inline; idle pool threads exit
//! after the keep-alive, also under a light steady load; misuse in a task names the
//! API to use instead.

mod common;

use common::{
    child_finished, describe_child, in_child, in_child_with, panic_message, runtime, with_watchdog,
};
use greenrt::runtime::Builder;
use std::panic::catch_unwind;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Threads of this process whose name starts with `prefix` (blocking-pool threads are
/// named `<thread_name>-blocking`, of which Linux keeps the first 15 bytes).
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).ok())
        .filter(|name| name.trim().starts_with(prefix))
        .count()
}

/// In a green thread: `n` green threads at once, each running a `ms` ms sleep on the
/// blocking pool, so the pool starts up to `n` threads.
fn burst_of_blocking_sleeps(n: usize, ms: u64) {
    let handles: Vec<_> = (0..n)
        .map(|_| {
            greenrt::spawn(move || {
                greenrt::unblock(move || std::thread::sleep(Duration::from_millis(ms)))
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
}

/// Code running on the runtime's own blocking pool should see its runtime (as in tokio,
/// whose blocking threads enter the runtime's context): `greenrt::spawn`,
/// `Handle::current()` and greenrt timers inside an `unblock` job panic "outside a
/// greenrt runtime" today.
#[test]
fn blocking_pool_jobs_see_their_runtime() {
    with_watchdog(
        "blocking_pool_jobs_see_their_runtime",
        Duration::from_secs(30),
        || {
            let rt = Builder::new().worker_threads(2).build().unwrap();
            let seen =
                rt.run(|| greenrt::unblock(|| greenrt::runtime::Handle::try_current().is_some()));
            assert!(
                seen,
                "Handle::try_current() is None inside greenrt::unblock"
            );
            let out = rt.run(|| {
                greenrt::unblock(|| {
                    catch_unwind(|| greenrt::spawn(|| 5).join().unwrap())
                        .map_err(|p| panic_message(&*p))
                })
            });
            assert_eq!(out, Ok(5), "greenrt::spawn inside greenrt::unblock");
        },
    );
}

/// `unblock` in a future task: the panic should point to `spawn_blocking`, the API the
/// docs of `unblock` say to use there.
#[test]
fn unblock_in_a_task_panic_names_spawn_blocking() {
    with_watchdog("unblock_in_a_task", Duration::from_secs(30), || {
        let rt = Builder::new().worker_threads(1).build().unwrap();
        let err = rt
            .block_on(rt.spawn_async(async { greenrt::unblock(|| 1) }))
            .unwrap_err();
        let msg = panic_message(&*err);
        assert!(msg.contains("spawn_blocking"), "message: {msg}");
    });
}

/// Idle pool threads must exit after the keep-alive (10 s).
#[test]
fn idle_blocking_threads_exit_after_keep_alive() {
    with_watchdog("keep-alive", Duration::from_secs(60), || {
        let rt = Builder::new()
            .worker_threads(1)
            .thread_name("kaprobe")
            .build()
            .unwrap();
        rt.run(|| {
            burst_of_blocking_sleeps(4, 50);
        });
        let count = || threads_named("kaprobe-b");
        assert!(count() >= 1);
        let start = Instant::now();
        while count() > 0 && start.elapsed() < Duration::from_secs(40) {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(
            count(),
            0,
            "blocking threads still alive long after keep-alive"
        );
        drop(rt);
    });
}

/// Nested unblock, unblock from a plain thread and from the host.
#[test]
fn unblock_nested_and_plain() {
    with_watchdog("unblock nested", Duration::from_secs(30), || {
        assert_eq!(greenrt::unblock(|| 3), 3);
        let rt = Builder::new()
            .worker_threads(1)
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let v = rt.run(|| greenrt::unblock(|| greenrt::unblock(|| greenrt::unblock(|| 9))));
        assert_eq!(v, 9);
        let v = rt.block_on(async {
            greenrt::spawn_blocking(|| greenrt::unblock(|| 4))
                .await
                .unwrap()
        });
        assert_eq!(v, 4);
        let hs: Vec<_> = (0..20)
            .map(|i| rt.spawn(move || greenrt::unblock(move || i)))
            .collect();
        let s: i32 = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(s, 190);
    });
}

/// After a burst started 32 pool threads, a light steady load (one tiny job every 50 ms,
/// which one thread handles easily) keeps all 32 alive forever: every job notifies the
/// longest-waiting idle thread, which restarts its 10 s keep-alive, so no thread ever
/// stays idle for 10 s.
#[test]
fn excess_blocking_threads_exit_under_light_steady_load() {
    with_watchdog(
        "keep-alive under light load",
        Duration::from_secs(90),
        || {
            let rt = Builder::new()
                .worker_threads(1)
                .thread_name("ldprobe")
                .build()
                .unwrap();
            let count = || threads_named("ldprobe-b");
            rt.run(|| {
                burst_of_blocking_sleeps(32, 200);
            });
            let peak = count();
            assert!(peak >= 16, "burst started only {peak} threads");
            let start = Instant::now();
            rt.run(|| {
                while start.elapsed() < Duration::from_secs(25) {
                    greenrt::unblock(|| ());
                    greenrt::sleep(Duration::from_millis(50));
                }
            });
            let left = count();
            assert!(
                left <= peak / 2,
                "{left} of {peak} blocking threads still alive after 25 s of one job at a time"
            );
        },
    );
}

/// When the blocking pool cannot start a thread (pids.max / RLIMIT_NPROC reached; here
/// RUST_MIN_STACK makes every default-sized std thread fail to start), `execute` runs
/// the job inline on the caller: for `unblock`, the green thread itself, on its worker.
/// The job now enters a `Local::blocking_pool` context over the worker's, so while `f`
/// suspends the green thread, the worker loop runs with LOCAL pointing at the job's
/// Local on that green stack: a sleep registers in the job's timer heap, which no one
/// fires, so the green thread never wakes. (With two such green threads the guards are
/// restored out of order and LOCAL is left dangling.)
#[test]
fn a_pool_job_run_inline_on_a_worker_keeps_the_worker_context() {
    let output = in_child_with(
        "a_pool_job_run_inline_on_a_worker_keeps_the_worker_context",
        "inline",
        |command| {
            command.env("RUST_MIN_STACK", (1u64 << 50).to_string());
        },
        || {
            let rt = runtime(1);
            let value = rt
                .spawn(|| {
                    greenrt::unblock(|| {
                        greenrt::sleep(Duration::from_millis(20));
                        7
                    })
                })
                .join()
                .unwrap();
            assert_eq!(value, 7);
        },
    );
    assert!(child_finished(&output), "{}", describe_child(&output));
}

/// The same fallback with two green threads whose inline jobs interleave (A enters its
/// job context, B enters over it, A leaves, B leaves): B's guard restores LOCAL to A's
/// job `Local`, which lived in A's finished frame. The worker then reads a dangling
/// `Local` (here after a new green thread reused A's pooled stack): use after free.
#[test]
fn interleaved_inline_pool_jobs_leave_no_dangling_context() {
    let output = in_child_with(
        "interleaved_inline_pool_jobs_leave_no_dangling_context",
        "dangling",
        |command| {
            command.env("RUST_MIN_STACK", (1u64 << 50).to_string());
        },
        || {
            let rt = runtime(1);
            static B_IN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            let a = rt.spawn(|| {
                greenrt::unblock(|| {
                    // Until B's job has entered its context over ours.
                    while !B_IN.load(Ordering::SeqCst) {
                        greenrt::yield_now();
                    }
                    1
                })
            });
            let b = rt.spawn(|| {
                let v = greenrt::unblock(|| {
                    B_IN.store(true, Ordering::SeqCst);
                    for _ in 0..3 {
                        greenrt::yield_now();
                    }
                    2
                });
                // A new green thread takes A's pooled stack and scribbles over it.
                greenrt::spawn(|| {
                    let mut buf = [0xA5u8; 32 * 1024];
                    std::hint::black_box(&mut buf);
                })
                .join()
                .unwrap();
                let seen = greenrt::runtime::Handle::try_current().is_some();
                v + usize::from(seen) * 10
            });
            assert_eq!(a.join().unwrap() + b.join().unwrap(), 13);
        },
    );
    assert!(child_finished(&output), "{}", describe_child(&output));
}

/// A pool job's timer heap is fired only by greenrt's own `block_on` waiting on the
/// thread. A greenrt sleep that another executor polls there must not register in it
/// (nothing would fire it: a silent hang); it panics, saying so.
#[test]
fn a_greenrt_sleep_polled_by_another_executor_in_a_pool_job_panics_instead_of_hanging() {
    let output = in_child(
        "a_greenrt_sleep_polled_by_another_executor_in_a_pool_job_panics_instead_of_hanging",
        "foreign-executor",
        || {
            let rt = runtime(1);
            let outcome = rt.run(|| {
                greenrt::unblock(|| {
                    std::panic::catch_unwind(|| {
                        futures::executor::block_on(greenrt::time::sleep(Duration::from_millis(20)))
                    })
                    .is_ok()
                })
            });
            assert!(!outcome, "the sleep panicked, saying what fires its timer");
        },
    );
    assert!(child_finished(&output), "{}", describe_child(&output));
}

/// greenrt's own `block_on` in a pool job fires the job's timers.
#[test]
fn a_pool_job_sleeps_with_greenrt_block_on() {
    with_watchdog("pool job block_on sleep", Duration::from_secs(30), || {
        let rt = runtime(1);
        let slept = rt.run(|| {
            greenrt::unblock(|| {
                let start = std::time::Instant::now();
                greenrt::block_on(greenrt::time::sleep(Duration::from_millis(20)));
                start.elapsed() >= Duration::from_millis(20)
            })
        });
        assert!(slept);
    });
}
