//! Cancellation and shutdown: `abort()` before start and at each kind of suspension
//! point, of future tasks too; dropping a runtime unwinds its suspended green threads
//! (their destructors run) and cancels queued work; `Runtime::run` hands back borrowed,
//! non-Send values and resumes a panic on its caller.

mod common;
use common::{runtime, with_watchdog};
use futures::future::pending;
use greenrt::runtime::Runtime;
use greenrt::Cancelled;
use std::cell::Cell;
use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Sets its flag when dropped: proves a destructor ran (an unwind, or a closure that
/// was dropped without running).
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Like [`DropFlag`], but its destructor takes a while (as one that flushes a file or
/// joins a thread might) before setting the flag. Whoever sees the cancellation
/// outcome must already see the flag: the outcome is only delivered after the
/// destructors of the cancelled work have run, however long they take.
struct SlowDropFlag(Arc<AtomicBool>);

impl Drop for SlowDropFlag {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(50));
        self.0.store(true, Ordering::SeqCst);
    }
}

fn flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

fn assert_cancelled<T: std::fmt::Debug>(result: std::thread::Result<T>, what: &str) {
    match result {
        Ok(value) => panic!("{what}: finished with {value:?} instead of being cancelled"),
        Err(payload) => assert!(
            payload.is::<Cancelled>(),
            "{what}: the payload is not greenrt::Cancelled"
        ),
    }
}

/// On a one-worker runtime whose green thread signalled it is about to block: once a
/// green thread spawned now has run to completion, the signalling one (which held the
/// only worker) must have switched out at its blocking call, and is suspended there.
fn wait_until_suspended(rt: &Runtime) {
    rt.spawn(|| ()).join().unwrap();
}

#[test]
fn abort_before_start_never_runs() {
    with_watchdog("abort before start", Duration::from_secs(30), || {
        let rt = runtime(1);
        // Keep the only worker busy (spinning, never suspending) so the target stays
        // queued, unstarted, while it is aborted.
        let release = flag();
        let (started_tx, started_rx) = mpsc::channel();
        let blocker = {
            let release = release.clone();
            rt.spawn(move || {
                started_tx.send(()).unwrap();
                while !release.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
            })
        };
        started_rx.recv().unwrap();

        let ran = flag();
        let closure_dropped = flag();
        let target = {
            let ran = ran.clone();
            let guard = DropFlag(closure_dropped.clone());
            rt.spawn(move || {
                let _guard = guard;
                ran.store(true, Ordering::SeqCst);
            })
        };
        target.abort();
        release.store(true, Ordering::SeqCst);
        blocker.join().unwrap();
        assert_cancelled(target.join(), "aborted before start");
        assert!(!ran.load(Ordering::SeqCst), "an aborted green thread ran");
        assert!(
            closure_dropped.load(Ordering::SeqCst),
            "its closure was dropped"
        );
    });
}

/// Spawns a green thread that sets a Drop guard on its stack, then blocks in `block`;
/// aborts it while it is suspended there and checks it unwound.
fn abort_while_blocked(what: &str, block: impl FnOnce() + Send + 'static) {
    let rt = runtime(1);
    let unwound = flag();
    let after = flag();
    let (started_tx, started_rx) = mpsc::channel();
    let handle = {
        let guard = SlowDropFlag(unwound.clone());
        let after = after.clone();
        rt.spawn(move || {
            let _guard = guard;
            started_tx.send(()).unwrap();
            block();
            after.store(true, Ordering::SeqCst);
        })
    };
    started_rx.recv().unwrap();
    wait_until_suspended(&rt);
    assert!(!handle.is_finished(), "{what}: still blocked before abort");
    handle.abort();
    assert_cancelled(handle.join(), what);
    assert!(
        unwound.load(Ordering::SeqCst),
        "{what}: the Drop guard on its stack ran before join() returned"
    );
    assert!(
        !after.load(Ordering::SeqCst),
        "{what}: the code after the blocking call ran"
    );
    // The worker carries on.
    assert_eq!(rt.spawn(|| 1).join().unwrap(), 1);
}

#[test]
fn abort_while_sleeping_unwinds() {
    with_watchdog("abort in sleep", Duration::from_secs(30), || {
        abort_while_blocked("sleep", || greenrt::sleep(Duration::from_secs(3600)));
    });
}

#[test]
fn abort_while_in_block_on_unwinds() {
    with_watchdog("abort in block_on", Duration::from_secs(30), || {
        abort_while_blocked("block_on", || greenrt::block_on(pending::<()>()));
    });
}

#[test]
fn abort_while_in_join_unwinds() {
    with_watchdog("abort in join", Duration::from_secs(30), || {
        let inner_unwound = flag();
        let guard = DropFlag(inner_unwound.clone());
        abort_while_blocked("join", move || {
            // Joins a green thread that never finishes.
            let inner = greenrt::spawn(move || {
                let _guard = guard;
                greenrt::block_on(pending::<()>())
            });
            inner.join().unwrap();
        });
        // Cancelling the joiner detached the joined one, which stayed blocked until the
        // runtime (dropped inside abort_while_blocked) unwound it.
        assert!(
            inner_unwound.load(Ordering::SeqCst),
            "the joined green thread was unwound at runtime shutdown"
        );
    });
}

#[test]
fn abort_of_a_future_task_drops_its_future_before_join_returns() {
    with_watchdog("abort a task", Duration::from_secs(30), || {
        let rt = runtime(2);
        let dropped = flag();
        let (polled_tx, polled_rx) = mpsc::channel();
        let task = {
            let guard = SlowDropFlag(dropped.clone());
            rt.spawn_async(async move {
                let _guard = guard;
                polled_tx.send(()).unwrap();
                pending::<()>().await;
            })
        };
        polled_rx.recv().unwrap();
        task.abort();
        let result = rt.block_on(task);
        assert_cancelled(result, "aborted task");
        assert!(
            dropped.load(Ordering::SeqCst),
            "the aborted task's future must be dropped (its destructors run) before its \
             JoinHandle reports Cancelled"
        );

        // Aborting a finished one changes nothing.
        let done = rt.spawn_async(async { 5 });
        while !done.is_finished() {
            std::thread::yield_now();
        }
        done.abort();
        assert_eq!(done.join().unwrap(), 5);
        let green = rt.spawn(|| 6);
        while !green.is_finished() {
            std::thread::yield_now();
        }
        green.abort();
        assert_eq!(green.join().unwrap(), 6);
    });
}

#[test]
fn dropping_the_runtime_unwinds_suspended_green_threads() {
    with_watchdog(
        "shutdown with suspended green threads",
        Duration::from_secs(30),
        || {
            let rt = runtime(2);
            let unwound = Arc::new(AtomicUsize::new(0));
            let (started_tx, started_rx) = mpsc::channel();

            struct Count(Arc<AtomicUsize>);
            impl Drop for Count {
                fn drop(&mut self) {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }

            let mut greens = Vec::new();
            for i in 0..12 {
                let guard = Count(unwound.clone());
                let started_tx = started_tx.clone();
                greens.push(rt.spawn(move || {
                    let _guard = guard;
                    // Spawned before saying "started", so it is a real green thread
                    // when shutdown begins.
                    let never =
                        (i % 4 == 2).then(|| greenrt::spawn(|| greenrt::block_on(pending::<()>())));
                    started_tx.send(()).unwrap();
                    match (i % 4, never) {
                        (0, _) => greenrt::sleep(Duration::from_secs(3600)),
                        (1, _) => greenrt::block_on(pending::<()>()),
                        // Shutdown may cancel `never` before this join starts (from
                        // another worker): join then returns its Cancelled at once, and
                        // re-raising it ends this one cancelled too, as a caller that
                        // passes a child's cancellation on should.
                        (_, Some(never)) => {
                            if let Err(payload) = never.join() {
                                std::panic::resume_unwind(payload)
                            }
                        }
                        _ => loop {
                            greenrt::yield_now();
                        },
                    }
                }));
            }
            let task_dropped = flag();
            let task = {
                let guard = DropFlag(task_dropped.clone());
                let started_tx = started_tx.clone();
                rt.spawn_async(async move {
                    let _guard = guard;
                    started_tx.send(()).unwrap();
                    pending::<()>().await;
                })
            };
            for _ in 0..13 {
                started_rx.recv().unwrap();
            }

            drop(rt);

            assert_eq!(
                unwound.load(Ordering::SeqCst),
                12,
                "every suspended green thread's destructors ran"
            );
            assert!(
                task_dropped.load(Ordering::SeqCst),
                "the pending task was dropped"
            );
            for (i, g) in greens.into_iter().enumerate() {
                assert_cancelled(g.join(), &format!("green thread {i}"));
            }
            assert_cancelled(task.join(), "pending task");
        },
    );
}

#[test]
fn dropping_the_runtime_cancels_queued_green_threads() {
    with_watchdog(
        "shutdown with queued green threads",
        Duration::from_secs(30),
        || {
            let rt = runtime(1);
            let handle = rt.handle().clone();
            // The only worker spins until shutdown has begun, so what is queued behind it
            // is still queued (never started) when the runtime shuts down.
            let release = flag();
            let (started_tx, started_rx) = mpsc::channel();
            let blocker = {
                let release = release.clone();
                rt.spawn(move || {
                    started_tx.send(()).unwrap();
                    while !release.load(Ordering::SeqCst) {
                        std::hint::spin_loop();
                    }
                })
            };
            started_rx.recv().unwrap();
            let ran = flag();
            let dropped = flag();
            let queued = {
                let ran = ran.clone();
                let guard = DropFlag(dropped.clone());
                rt.spawn(move || {
                    let _guard = guard;
                    ran.store(true, Ordering::SeqCst);
                })
            };
            let dropper = std::thread::spawn(move || drop(rt));
            // Once shutdown has begun, a spawn returns an already-cancelled handle.
            loop {
                let probe = handle.spawn_async(async {});
                if probe.is_finished() {
                    assert_cancelled(probe.join(), "spawned after shutdown began");
                    break;
                }
                std::thread::yield_now();
            }
            release.store(true, Ordering::SeqCst);
            dropper.join().unwrap();
            blocker.join().unwrap();
            assert_cancelled(queued.join(), "queued at shutdown");
            assert!(!ran.load(Ordering::SeqCst), "a queued green thread ran");
            assert!(dropped.load(Ordering::SeqCst), "its closure was dropped");
        },
    );
}

#[test]
fn run_returns_borrowed_non_send_values() {
    let rt = runtime(2);
    let local = String::from("lives on the caller's stack");
    let mut pushed = Vec::new();
    let (rc, borrowed): (Rc<Cell<u32>>, &String) = rt.run(|| {
        // Non-Send state across green-blocking calls: it never leaves this thread.
        let rc = Rc::new(Cell::new(1));
        greenrt::yield_now();
        rc.set(greenrt::spawn(|| 41).join().unwrap() + rc.get());
        pushed.push(rc.get());
        (rc, &local)
    });
    assert_eq!(rc.get(), 42);
    assert!(
        std::ptr::eq(borrowed, &local),
        "the very same borrow came back"
    );
    assert_eq!(pushed, [42], "a mutable borrow of the caller's local");
}

#[derive(Debug, PartialEq)]
struct Payload(&'static str);

#[test]
fn run_resumes_a_panic_on_the_caller() {
    let rt = runtime(2);
    let err = catch_unwind(AssertUnwindSafe(|| {
        rt.run(|| {
            greenrt::sleep(Duration::from_millis(1));
            panic_any(Payload("from run"))
        })
    }))
    .expect_err("the panic reaches the caller");
    assert_eq!(err.downcast_ref::<Payload>(), Some(&Payload("from run")));
    // The runtime is still usable, on this thread too.
    assert_eq!(rt.run(|| greenrt::spawn(|| 3).join().unwrap()), 3);
}

#[test]
fn a_task_woken_during_shutdown_is_dropped_by_one_thread_only() {
    // Drops a future task's future slowly, and counts how often it is dropped.
    struct SlowDrop(Arc<AtomicUsize>);
    impl Drop for SlowDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    // Tells when shutdown has begun: the worker is unwinding the green thread holding it.
    struct Signal(mpsc::Sender<()>);
    impl Drop for Signal {
        fn drop(&mut self) {
            let _ = self.0.send(());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let woken_ok = with_watchdog("shutdown with a racing wake", Duration::from_secs(30), {
        let drops = drops.clone();
        move || {
            let rt = runtime(1);
            let (wake_tx, wake_rx) = futures::channel::oneshot::channel::<()>();
            let _task = rt.spawn_async(async move {
                let _slow = SlowDrop(drops);
                let _ = wake_rx.await;
            });
            let (shutdown_tx, shutdown_rx) = mpsc::channel();
            let _green = rt.spawn(move || {
                let _signal = Signal(shutdown_tx);
                greenrt::sleep(Duration::from_secs(3600));
            });
            std::thread::sleep(Duration::from_millis(100)); // both suspended
                                                            // Wakes the task once shutdown began: the waking thread then cancels it
                                                            // itself (nothing will poll it), while the runtime's drop sweeps the same
                                                            // task list. Exactly one of them may drop its future.
            let waker = std::thread::spawn(move || {
                shutdown_rx.recv().unwrap();
                catch_unwind(AssertUnwindSafe(|| {
                    let _ = wake_tx.send(());
                }))
                .is_ok()
            });
            drop(rt);
            waker.join().unwrap()
        }
    });
    assert!(woken_ok, "the waking thread panicked");
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the future was dropped once"
    );
}

/// Joins its green thread when dropped (a scoped-spawn guard), and reports how.
struct JoinOnDrop(
    Option<greenrt::JoinHandle<()>>,
    Option<mpsc::Sender<String>>,
);

impl Drop for JoinOnDrop {
    fn drop(&mut self) {
        let outcome = match self.0.take().unwrap().join() {
            Ok(()) => "joined".to_string(),
            Err(payload) if payload.is::<Cancelled>() => "cancelled".to_string(),
            Err(payload) => payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "another payload".to_string()),
        };
        if let Some(report) = self.1.take() {
            let _ = report.send(outcome);
        }
    }
}

#[test]
fn a_detached_result_that_joins_when_dropped_waits_in_its_green_thread() {
    with_watchdog("detached result's drop", Duration::from_secs(30), || {
        let rt = runtime(1);
        let (report_tx, report_rx) = mpsc::channel();
        rt.run(|| {
            let (go_tx, go_rx) = futures::channel::oneshot::channel::<()>();
            let parent = greenrt::spawn(move || {
                let child = greenrt::spawn(|| greenrt::sleep(Duration::from_millis(1)));
                let _ = greenrt::block_on(go_rx);
                JoinOnDrop(Some(child), Some(report_tx))
            });
            drop(parent); // detached: nobody takes the result, which joins when dropped
            go_tx.send(()).unwrap();
            greenrt::sleep(Duration::from_millis(50));
            assert_eq!(
                greenrt::spawn(|| 7).join().unwrap(),
                7,
                "the worker runs on"
            );
        });
        assert_eq!(report_rx.recv().unwrap(), "joined");
    });
}

#[test]
fn a_cancelled_green_thread_whose_guard_joins_a_sibling_does_not_deadlock() {
    with_watchdog(
        "abort + join in a destructor",
        Duration::from_secs(30),
        || {
            let rt = runtime(1);
            let (report_tx, report_rx) = mpsc::channel();
            rt.run(|| {
                let (started_tx, started_rx) = futures::channel::oneshot::channel::<()>();
                let parent = greenrt::spawn(move || {
                    let child = greenrt::spawn(|| greenrt::sleep(Duration::from_millis(10)));
                    let _guard = JoinOnDrop(Some(child), Some(report_tx));
                    started_tx.send(()).unwrap();
                    greenrt::sleep(Duration::from_secs(3600));
                });
                let _ = greenrt::block_on(started_rx);
                greenrt::yield_now(); // the child starts on this worker, then sleeps
                parent.abort();
                assert_cancelled(parent.join(), "the parent");
                assert_eq!(
                    greenrt::spawn(|| 7).join().unwrap(),
                    7,
                    "the worker runs on"
                );
            });
            // The child can only run on this worker, which the unwinding parent cannot give
            // up: the guard's join gives up rather than block the worker forever.
            let outcome = report_rx.recv().unwrap();
            assert!(outcome.contains("the join gave up"), "{outcome}");
        },
    );
}

#[test]
fn dropping_the_runtime_returns_when_a_cancelled_guard_joins_a_sibling() {
    with_watchdog(
        "runtime drop + join in a destructor",
        Duration::from_secs(30),
        || {
            let rt = runtime(1);
            let (report_tx, report_rx) = mpsc::channel();
            rt.run(|| {
                let (started_tx, started_rx) = futures::channel::oneshot::channel::<()>();
                greenrt::spawn(move || {
                    let child = greenrt::spawn(|| greenrt::sleep(Duration::from_secs(3600)));
                    let _guard = JoinOnDrop(Some(child), Some(report_tx));
                    started_tx.send(()).unwrap();
                    greenrt::sleep(Duration::from_secs(3600));
                });
                let _ = greenrt::block_on(started_rx);
                greenrt::sleep(Duration::from_millis(20));
            });
            drop(rt); // cancels both; the parent's guard must not wait for the child
            assert_eq!(report_rx.recv().unwrap(), "cancelled");
        },
    );
}

#[test]
fn a_panicking_green_thread_can_wait_in_a_destructor_for_work_it_just_spawned() {
    with_watchdog("waits while unwinding", Duration::from_secs(30), || {
        let rt = runtime(2);
        // A future task spawned just before the panic sits in this worker's LIFO slot;
        // the destructor's join blocks the worker (no switch while unwinding), so the
        // task must be made stealable for the other worker to run it.
        struct JoinTaskOnDrop(Option<greenrt::JoinHandle<u32>>, mpsc::Sender<u32>);
        impl Drop for JoinTaskOnDrop {
            fn drop(&mut self) {
                let _ = self.1.send(self.0.take().unwrap().join().unwrap());
            }
        }
        let (tx, rx) = mpsc::channel();
        let h = rt.spawn(move || {
            let _guard = JoinTaskOnDrop(Some(greenrt::spawn_async(async { 7 })), tx);
            panic!("boom");
        });
        assert!(h.join().is_err());
        assert_eq!(rx.recv().unwrap(), 7);
    });
}

#[test]
fn on_one_worker_an_unwinding_join_of_an_unstarted_child_gives_up() {
    with_watchdog(
        "one worker, unwinding join",
        Duration::from_secs(30),
        || {
            let rt = runtime(1);
            let (report_tx, report_rx) = mpsc::channel();
            let h = rt.spawn(move || {
                let first = greenrt::spawn(|| ());
                let _second = greenrt::spawn(|| ()); // pushes `first` out of the LIFO slot
                let _guard = JoinOnDrop(Some(first), Some(report_tx));
                panic!("boom");
            });
            assert!(h.join().is_err());
            let outcome = report_rx.recv().unwrap();
            assert!(outcome.contains("the join gave up"), "{outcome}");
        },
    );
}

#[test]
fn spawn_blocking_once_shutdown_began_drops_the_job_without_running_it() {
    with_watchdog(
        "spawn_blocking during shutdown",
        Duration::from_secs(30),
        || {
            let rt = runtime(1);
            let ran = flag();
            let job_dropped = flag();
            let (handle_tx, handle_rx) = mpsc::channel();
            let (started_tx, started_rx) = mpsc::channel();

            /// Spawns the blocking job from its destructor, which runs while the
            /// runtime's drop unwinds the green thread holding it.
            struct SpawnOnDrop {
                ran: Arc<AtomicBool>,
                job_dropped: Arc<AtomicBool>,
                handle_tx: mpsc::Sender<greenrt::JoinHandle<()>>,
            }
            impl Drop for SpawnOnDrop {
                fn drop(&mut self) {
                    let ran = self.ran.clone();
                    let guard = DropFlag(self.job_dropped.clone());
                    let handle = greenrt::spawn_blocking(move || {
                        let _guard = guard;
                        ran.store(true, Ordering::SeqCst);
                    });
                    self.handle_tx.send(handle).unwrap();
                }
            }

            let spawner = SpawnOnDrop {
                ran: ran.clone(),
                job_dropped: job_dropped.clone(),
                handle_tx,
            };
            let _sleeper = rt.spawn(move || {
                let _spawner = spawner;
                started_tx.send(()).unwrap();
                greenrt::sleep(Duration::from_secs(3600));
            });
            started_rx.recv().unwrap();
            drop(rt);

            let handle = handle_rx.recv().unwrap();
            assert_cancelled(handle.join(), "spawn_blocking during shutdown");
            // The job is dropped either way (unrun, or after it ran on a pool thread):
            // wait for that, then ask whether it ran.
            while !job_dropped.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(
                !ran.load(Ordering::SeqCst),
                "a job spawned after shutdown began must not run"
            );
        },
    );
}

#[test]
fn after_shutdown_timeout_runs_out_the_last_worker_to_exit_drops_the_idle_tasks() {
    with_watchdog(
        "the final sweep after shutdown_timeout",
        Duration::from_secs(30),
        || {
            let rt = runtime(2);
            let release = flag();
            let (started_tx, started_rx) = mpsc::channel();
            // A green thread that never reaches a suspension point until released, so
            // shutdown_timeout gives up waiting for its worker.
            let _spinner = {
                let release = release.clone();
                let started_tx = started_tx.clone();
                rt.spawn(move || {
                    started_tx.send(()).unwrap();
                    while !release.load(Ordering::SeqCst) {
                        std::hint::spin_loop();
                    }
                })
            };
            // A task that waits forever: only the final sweep drops it.
            let task_dropped = flag();
            let _task = {
                let guard = DropFlag(task_dropped.clone());
                rt.spawn_async(async move {
                    let _guard = guard;
                    started_tx.send(()).unwrap();
                    pending::<()>().await;
                })
            };
            started_rx.recv().unwrap();
            started_rx.recv().unwrap();

            rt.shutdown_timeout(Duration::from_millis(50));
            release.store(true, Ordering::SeqCst);
            // The spinner's worker now exits, last, and sweeps.
            while !task_dropped.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
        },
    );
}

/// Many shutdowns that give up on a busy worker, racing the workers' exit: every idle
/// task is dropped exactly once, by whoever sweeps.
#[test]
fn final_sweep_drops_each_idle_task_exactly_once() {
    with_watchdog("final sweep", Duration::from_secs(120), || {
        struct Count(Arc<AtomicUsize>);
        impl Drop for Count {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        for round in 0..200 {
            let dropped = Arc::new(AtomicUsize::new(0));
            let rt = runtime(2);
            let tasks = 8;
            for _ in 0..tasks {
                let count = Count(dropped.clone());
                drop(rt.spawn_async(async move {
                    let _count = count;
                    std::future::pending::<()>().await;
                }));
            }
            // A green thread busy for a short, varying while.
            let spin = Duration::from_micros((round % 7) * 300);
            drop(rt.spawn(move || {
                let start = std::time::Instant::now();
                while start.elapsed() < spin {
                    std::hint::spin_loop();
                }
            }));
            rt.shutdown_timeout(Duration::from_micros((round % 5) * 200));
            let start = std::time::Instant::now();
            while dropped.load(Ordering::SeqCst) < tasks && start.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(2));
            assert_eq!(dropped.load(Ordering::SeqCst), tasks, "round {round}");
        }
    });
}

/// A Runtime dropped on one of its own workers (it panics, by design) leaves the final
/// sweep to the last worker out, which drops idle tasks.
#[test]
fn a_runtime_dropped_on_its_own_worker_is_swept_by_the_last_worker() {
    with_watchdog("drop on own worker", Duration::from_secs(30), || {
        struct Flag(Arc<AtomicUsize>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicUsize::new(0));
        let rt = runtime(2);
        let flag = Flag(dropped.clone());
        let _idle = rt.spawn_async(async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        });
        let handle = rt.handle().clone();
        let dropper = handle.spawn(move || drop(rt));
        assert!(dropper.join().is_err(), "the drop on its own worker panics");
        let start = std::time::Instant::now();
        while dropped.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    });
}
