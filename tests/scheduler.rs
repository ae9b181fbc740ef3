//! Scheduling: a started green thread never changes OS thread, unstarted work is
//! stolen, a yield loop starves nothing, and work from outside the runtime runs while
//! the workers are busy.

mod common;
use common::{runtime, with_watchdog};
use futures::channel::oneshot;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// The tests here are about which worker runs what; run concurrently they would fight
/// for the machine's few cores and mostly measure each other. One at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The OS thread running the caller. Not inlined, so the thread-local behind
/// `thread::current()` is looked up afresh at every call: a compiler that cached its
/// address across a suspension could hide a migration from the test.
#[inline(never)]
fn os_thread() -> ThreadId {
    std::hint::black_box(std::thread::current().id())
}

/// Returns Pending once after waking itself: the async counterpart of `yield_now`.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn yield_task() -> YieldOnce {
    YieldOnce(false)
}

fn spin_for(duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        std::hint::spin_loop();
    }
}

#[test]
fn started_green_thread_never_runs_on_another_os_thread() {
    let _serial = serial();
    with_watchdog("the no-migration test", Duration::from_secs(60), || {
        let rt = runtime(4);
        let stop = Arc::new(AtomicBool::new(false));

        // Load, so that idle workers steal and queues are never empty: green threads
        // that yield in a loop (some spinning between yields), and future tasks that
        // yield in a loop (tasks may move between workers at every poll).
        let mut load = Vec::new();
        for i in 0..8 {
            let stop = stop.clone();
            load.push(rt.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if i % 2 == 0 {
                        spin_for(Duration::from_micros(200));
                    }
                    greenrt::yield_now();
                }
            }));
        }
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let stop = stop.clone();
            tasks.push(rt.spawn_async(async move {
                while !stop.load(Ordering::Relaxed) {
                    yield_task().await;
                }
            }));
        }

        // A foreign OS thread that completes the oneshots the observers block on, so
        // their wakes come from outside the runtime.
        let (wake_tx, wake_rx) = mpsc::channel::<oneshot::Sender<()>>();
        let foreign = std::thread::spawn(move || {
            for (n, sender) in wake_rx.into_iter().enumerate() {
                if n % 3 == 0 {
                    std::thread::yield_now();
                }
                let _ = sender.send(());
            }
        });

        let observers: Vec<_> = (0..16)
            .map(|i| {
                let wake_tx = wake_tx.clone();
                rt.spawn(move || {
                    // Busy for a moment first, so that idle workers steal some of the
                    // observers before they start and they spread over the workers.
                    spin_for(Duration::from_micros(500));
                    let home = os_thread();
                    let mut moved = Vec::new();
                    let mut check = |what: &str, n: usize| {
                        let now = os_thread();
                        if now != home {
                            moved.push(format!(
                                "observer {i} moved from {home:?} to {now:?} after {what} #{n}"
                            ));
                        }
                    };
                    for n in 0..200 {
                        greenrt::yield_now();
                        check("yield_now", n);
                    }
                    for n in 0..5 {
                        greenrt::sleep(Duration::from_millis(2));
                        check("greenrt::sleep", n);
                    }
                    for n in 0..20 {
                        let (tx, rx) = oneshot::channel();
                        wake_tx.send(tx).unwrap();
                        greenrt::block_on(rx).unwrap();
                        check("block_on woken by a foreign thread", n);
                    }
                    for n in 0..5 {
                        greenrt::block_on(greenrt::time::sleep(Duration::from_millis(1)));
                        check("block_on(time::sleep)", n);
                        let child = greenrt::spawn(greenrt::yield_now);
                        child.join().unwrap();
                        check("JoinHandle::join", n);
                    }
                    (home, moved)
                })
            })
            .collect();
        drop(wake_tx);

        let mut homes = HashSet::new();
        let mut moved = Vec::new();
        for observer in observers {
            let (home, m) = observer.join().unwrap();
            homes.insert(home);
            moved.extend(m);
        }
        stop.store(true, Ordering::Relaxed);
        for h in load {
            h.join().unwrap();
        }
        for t in tasks {
            t.join().unwrap();
        }
        foreign.join().unwrap();
        println!(
            "16 observers started on {} distinct worker threads",
            homes.len()
        );
        assert!(
            moved.is_empty(),
            "started green threads migrated:\n{}",
            moved.join("\n")
        );
    });
}

#[test]
fn unstarted_work_spawned_from_one_green_thread_is_stolen() {
    let _serial = serial();
    with_watchdog("the work-stealing test", Duration::from_secs(60), || {
        let rt = runtime(4);
        // Spawned from ONE green thread, the children all land on that worker's own
        // deque; only stealing can put them on other workers. Each spins without
        // yielding, so the spawner's worker cannot run them all quickly by itself.
        let (spawner, ran_on) = rt
            .spawn(|| {
                let spawner = os_thread();
                let children: Vec<_> = (0..32)
                    .map(|_| {
                        greenrt::spawn(|| {
                            spin_for(Duration::from_millis(10));
                            os_thread()
                        })
                    })
                    .collect();
                let ran_on: Vec<ThreadId> =
                    children.into_iter().map(|h| h.join().unwrap()).collect();
                (spawner, ran_on)
            })
            .join()
            .unwrap();
        let distinct: HashSet<ThreadId> = ran_on.iter().copied().collect();
        let off_spawner = ran_on.iter().filter(|&&t| t != spawner).count();
        println!(
            "32 children ran on {} worker threads; {off_spawner} off the spawner's worker",
            distinct.len()
        );
        assert!(
            distinct.len() >= 2,
            "all 32 busy children ran on one worker: nothing was stolen"
        );
    });
}

#[test]
fn unstarted_busy_yielding_work_is_stolen_too() {
    let _serial = serial();
    with_watchdog(
        "the yielding work-stealing test",
        Duration::from_secs(60),
        || {
            let rt = runtime(4);
            // Children that yield a lot (with some work between yields) instead of spinning
            // in one go: once started they stay put, but the ones still queued are taken by
            // idle workers. (Children that only yield start so fast that, on a loaded
            // machine, their worker may start them all before an idle worker wakes up.)
            let ran_on: Vec<ThreadId> = rt
                .spawn(|| {
                    let children: Vec<_> = (0..32)
                        .map(|_| {
                            greenrt::spawn(|| {
                                let home = os_thread();
                                for _ in 0..50 {
                                    spin_for(Duration::from_micros(200));
                                    greenrt::yield_now();
                                }
                                home
                            })
                        })
                        .collect();
                    children.into_iter().map(|h| h.join().unwrap()).collect()
                })
                .join()
                .unwrap();
            let distinct: HashSet<ThreadId> = ran_on.iter().copied().collect();
            println!(
                "32 yielding children ran on {} worker threads",
                distinct.len()
            );
            assert!(
                distinct.len() >= 2,
                "all 32 yielding children ran on one worker: nothing was stolen"
            );
        },
    );
}

#[test]
fn yield_loop_does_not_starve_others_on_one_worker() {
    let _serial = serial();
    with_watchdog("the fairness test", Duration::from_secs(30), || {
        let rt = runtime(1);
        let stop = Arc::new(AtomicBool::new(false));
        let (started_tx, started_rx) = mpsc::channel();
        let (local_tx, local_rx) = mpsc::channel();
        let yielder = {
            let stop = stop.clone();
            rt.spawn(move || {
                started_tx.send(()).unwrap();
                // Spawned from the yielder itself: it sits on the worker's own deque,
                // behind the yielder in the private run queue.
                local_tx
                    .send(greenrt::spawn(|| {
                        let mut sum = 0u64;
                        for i in 0..100 {
                            greenrt::yield_now();
                            sum += i;
                        }
                        sum
                    }))
                    .unwrap();
                let mut yields = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    greenrt::yield_now();
                    yields += 1;
                }
                yields
            })
        };
        // Only once the yielder occupies the one worker does the rest get spawned.
        started_rx.recv().unwrap();

        // From outside (the injector): a green thread that yields and sleeps, and a
        // future task that sleeps and yields.
        let green = rt.spawn(|| {
            let mut sum = 0u64;
            for i in 0..100 {
                greenrt::yield_now();
                sum += i;
            }
            greenrt::sleep(Duration::from_millis(5));
            sum
        });
        let task = rt.spawn_async(async {
            greenrt::time::sleep(Duration::from_millis(5)).await;
            for _ in 0..100 {
                yield_task().await;
            }
            7
        });
        let local = local_rx.recv().unwrap();

        assert_eq!(green.join().unwrap(), 4950, "injected green thread");
        assert_eq!(task.join().unwrap(), 7, "injected future task");
        assert_eq!(local.join().unwrap(), 4950, "locally spawned green thread");
        stop.store(true, Ordering::Relaxed);
        let yields = yielder.join().unwrap();
        assert!(yields > 0);
        println!("the yielder yielded {yields} times meanwhile");
    });
}

#[test]
fn outside_spawns_run_while_workers_are_busy_yielding() {
    let _serial = serial();
    with_watchdog("the injector test", Duration::from_secs(30), || {
        let rt = runtime(2);
        let stop = Arc::new(AtomicBool::new(false));
        // Occupy every worker with a yield loop: spawn yield loops one at a time until
        // both workers report running one (an idle worker picks up the next one; the
        // busy one may take a few first, when the OS is slow to run the woken idle
        // worker). From then on every worker always has a runnable green thread, so
        // outside work is only found because the injector is checked periodically.
        let (started_tx, started_rx) = mpsc::channel();
        let mut yielders = Vec::new();
        let mut busy = HashSet::new();
        while busy.len() < 2 {
            assert!(
                yielders.len() < 1000,
                "1000 yield loops spawned, still not every worker runs one"
            );
            let stop = stop.clone();
            let started_tx = started_tx.clone();
            yielders.push(rt.spawn(move || {
                started_tx.send(os_thread()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    greenrt::yield_now();
                }
            }));
            busy.insert(started_rx.recv().unwrap());
        }
        println!("{} yield loops occupy both workers", yielders.len());

        let handle = rt.handle().clone();
        let from_thread = std::thread::spawn(move || {
            let mut results = Vec::new();
            for i in 0..20u32 {
                results.push(handle.spawn(move || i * 2).join().unwrap());
                results.push(handle.spawn_async(async move { i * 2 + 1 }).join().unwrap());
            }
            results
        })
        .join()
        .unwrap();
        assert_eq!(from_thread, (0..40).collect::<Vec<u32>>());

        stop.store(true, Ordering::Relaxed);
        for y in yielders {
            y.join().unwrap();
        }
    });
}

/// Spawns and joins a chain `depth` deep: each green thread joins the one it spawned.
fn join_chain(depth: usize) -> usize {
    if depth == 0 {
        return 0;
    }
    greenrt::spawn(move || join_chain(depth - 1))
        .join()
        .unwrap()
        + 1
}

/// `spawn(f).join()` in a green thread runs the just-spawned child straight from the
/// joiner, while it is still in the worker's LIFO slot. Whatever the child does on that
/// first run, the join sees it through: it yields (and stays on its OS thread), waits
/// for another green thread, spawns and joins its own children many levels deep,
/// panics, or was cancelled before it ran. On one worker (the child cannot be stolen)
/// and on two.
#[test]
fn join_of_a_just_spawned_child_sees_everything_the_child_does() {
    let _serial = serial();
    with_watchdog("the spawn-then-join test", Duration::from_secs(60), || {
        for workers in [1, 2] {
            let rt = runtime(workers);
            // On a worker: `Runtime::run`'s own green thread runs on the calling
            // thread, which has no LIFO slot.
            let on_worker = rt.spawn(|| {
                let yielder = greenrt::spawn(|| {
                    let first = os_thread();
                    for _ in 0..3 {
                        greenrt::yield_now();
                        assert_eq!(os_thread(), first, "a started green thread moved");
                    }
                    7
                });
                assert_eq!(yielder.join().unwrap(), 7);

                let (tx, rx) = oneshot::channel::<u32>();
                let sender = greenrt::spawn(move || {
                    greenrt::sleep(Duration::from_millis(5));
                    tx.send(11).unwrap();
                });
                let waiter = greenrt::spawn(move || greenrt::block_on(rx).unwrap());
                assert_eq!(waiter.join().unwrap(), 11);
                sender.join().unwrap();

                assert_eq!(join_chain(300), 300);

                let panicker = greenrt::spawn(|| -> u32 { panic!("child boom") });
                let payload = panicker.join().unwrap_err();
                assert_eq!(payload.downcast_ref::<&str>(), Some(&"child boom"));

                let ran = Arc::new(AtomicBool::new(false));
                let flag = ran.clone();
                let cancelled = greenrt::spawn(move || flag.store(true, Ordering::SeqCst));
                cancelled.abort();
                let payload = cancelled.join().unwrap_err();
                assert!(payload.is::<greenrt::Cancelled>());
                assert!(!ran.load(Ordering::SeqCst), "a cancelled child never runs");
            });
            on_worker.join().unwrap();
        }
    });
}
