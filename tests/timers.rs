//! Timers: many sleeping green threads share the workers; `greenrt::time::sleep` works
//! in future tasks and `Runtime::block_on`; polled outside any runtime it panics with a
//! message that says so.

mod common;
use common::{runtime, with_watchdog};
use greenrt::runtime::Builder;
use std::future::Future;
use std::panic::catch_unwind;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

#[test]
fn two_thousand_sleeping_green_threads_sleep_concurrently() {
    const N: usize = 2_000;
    const NAP: Duration = Duration::from_millis(100);
    with_watchdog("2,000 sleepers", Duration::from_secs(60), || {
        let rt = runtime(2);
        let start = Instant::now();
        let slept: Vec<Duration> = rt.run(|| {
            let handles: Vec<_> = (0..N)
                .map(|_| {
                    greenrt::spawn(|| {
                        let t = Instant::now();
                        greenrt::sleep(NAP);
                        t.elapsed()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let elapsed = start.elapsed();
        println!("{N} green threads slept {NAP:?} each; all done in {elapsed:?}");
        // Each really slept its full time...
        let shortest = slept.iter().min().unwrap();
        assert!(*shortest >= NAP, "a sleep returned early: {shortest:?}");
        // ...and they slept at the same time: one after the other would take 200 s (100
        // s on two workers). The bound is 100x the expected ~100 ms, for noisy machines.
        assert!(
            elapsed < Duration::from_secs(10),
            "{N} sleeps of {NAP:?} took {elapsed:?}: they did not overlap"
        );
    });
}

#[test]
fn time_sleep_awaited_in_a_future_task() {
    with_watchdog("time::sleep in a task", Duration::from_secs(30), || {
        let rt = runtime(2);
        let handles: Vec<_> = (0..50u64)
            .map(|i| {
                rt.spawn_async(async move {
                    let nap = Duration::from_millis(5 + i % 10);
                    let t = Instant::now();
                    greenrt::time::sleep(nap).await;
                    (t.elapsed(), nap)
                })
            })
            .collect();
        for handle in handles {
            let (slept, nap) = handle.join().unwrap();
            assert!(slept >= nap, "slept {slept:?}, asked for {nap:?}");
        }
        // sleep_until too.
        let deadline = Instant::now() + Duration::from_millis(10);
        rt.spawn_async(greenrt::time::sleep_until(deadline))
            .join()
            .unwrap();
        assert!(Instant::now() >= deadline);
    });
}

#[test]
fn time_sleep_awaited_in_runtime_block_on() {
    with_watchdog("time::sleep in block_on", Duration::from_secs(30), || {
        let rt = runtime(1);
        let start = Instant::now();
        rt.block_on(greenrt::time::sleep(Duration::from_millis(20)));
        assert!(start.elapsed() >= Duration::from_millis(20));

        // Several at once inside one block_on, interleaved with a green thread's sleep.
        let start = Instant::now();
        let out = rt.block_on(async {
            let green = greenrt::spawn(|| {
                greenrt::sleep(Duration::from_millis(15));
                1
            });
            greenrt::time::sleep(Duration::from_millis(10)).await;
            greenrt::time::sleep_until(Instant::now() + Duration::from_millis(10)).await;
            green.await.unwrap() + 1
        });
        assert_eq!(out, 2);
        assert!(start.elapsed() >= Duration::from_millis(20));
    });
}

#[test]
fn time_sleep_polled_outside_a_runtime_panics_mentioning_a_runtime() {
    // A plain thread with a foreign executor: no greenrt timer can ever wake it.
    let payload = std::thread::spawn(|| {
        catch_unwind(|| {
            futures::executor::block_on(greenrt::time::sleep(Duration::from_secs(1)));
        })
    })
    .join()
    .unwrap()
    .expect_err("polling time::sleep outside a runtime must panic");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap();
    println!("message: {message}");
    assert!(
        message.to_lowercase().contains("runtime"),
        "the message should say a runtime is needed: {message}"
    );
}

#[test]
fn timeout_and_interval_in_async_and_green_code() {
    let rt = runtime(2);
    rt.block_on(async {
        let slow = greenrt::time::sleep(Duration::from_secs(30));
        let err = greenrt::time::timeout(Duration::from_millis(10), slow)
            .await
            .unwrap_err();
        assert_eq!(
            std::io::Error::from(err).kind(),
            std::io::ErrorKind::TimedOut
        );
        let fast = greenrt::time::timeout(Duration::from_secs(5), async { 7 }).await;
        assert_eq!(fast, Ok(7));
    });
    rt.run(|| {
        let start = Instant::now();
        let mut every = greenrt::time::interval(Duration::from_millis(5));
        let first = greenrt::block_on(every.tick());
        for i in 1..4u32 {
            let at = greenrt::block_on(every.tick());
            assert_eq!(at, first + every.period() * i);
        }
        assert!(start.elapsed() >= Duration::from_millis(15));
    });
}

#[test]
fn a_sleep_first_polled_in_block_on_completes_when_awaited_later_in_a_task() {
    with_watchdog(
        "sleep moved out of block_on",
        Duration::from_secs(30),
        || {
            let rt = runtime(2);
            // Registered with the block_on thread's timers, which stop firing when
            // block_on returns: the sleep must register again where it is polled next.
            let mut sleep = Box::pin(greenrt::time::sleep(Duration::from_millis(20)));
            let first = rt.block_on(futures::future::poll_fn(|cx| {
                std::task::Poll::Ready(sleep.as_mut().poll(cx))
            }));
            assert!(first.is_pending());
            let deadline = sleep.deadline();
            rt.spawn_async(sleep).join().unwrap();
            assert!(Instant::now() >= deadline);
        },
    );
}

/// Waits for a 20 ms sleep while another future keeps waking itself until the sleep is
/// over: whoever drives it is always woken, never parks, and must still fire its
/// timers.
async fn sleep_beside_a_self_waking_future() {
    use futures::stream::{FuturesUnordered, StreamExt};
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::task::Poll;
    let slept = Arc::new(AtomicBool::new(false));
    let (set_slept, seen_slept) = (slept.clone(), slept);
    let mut both: FuturesUnordered<Pin<Box<dyn Future<Output = ()> + Send>>> =
        FuturesUnordered::new();
    both.push(Box::pin(async move {
        greenrt::time::sleep(Duration::from_millis(20)).await;
        set_slept.store(true, Ordering::SeqCst);
    }));
    both.push(Box::pin(std::future::poll_fn(move |cx| {
        if seen_slept.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })));
    while both.next().await.is_some() {}
}

#[test]
fn timers_fire_on_the_calling_thread_while_wakes_keep_coming() {
    with_watchdog("block_on in Runtime::run", Duration::from_secs(30), || {
        let rt = runtime(1);
        rt.run(|| greenrt::block_on(sleep_beside_a_self_waking_future()));
    });
    with_watchdog("Runtime::block_on", Duration::from_secs(30), || {
        let rt = runtime(1);
        rt.block_on(sleep_beside_a_self_waking_future());
    });
}

/// A timer never completes before its deadline, in a task, in block_on and in green code.
#[test]
fn timers_never_fire_early() {
    with_watchdog("never early", Duration::from_secs(60), || {
        let rt = Builder::new().worker_threads(2).build().unwrap();
        let hs: Vec<_> = (0..200u64)
            .map(|i| {
                rt.spawn_async(async move {
                    let d = Duration::from_micros(i * 97 % 3000);
                    let s = greenrt::time::sleep(d);
                    let deadline = s.deadline();
                    s.await;
                    Instant::now() >= deadline
                })
            })
            .collect();
        for h in hs {
            assert!(rt.block_on(h).unwrap());
        }
        let ok = rt.run(|| {
            (0..100u64).all(|i| {
                let d = Duration::from_micros(i * 131 % 2000);
                let start = Instant::now();
                greenrt::sleep(d);
                start.elapsed() >= d
            })
        });
        assert!(ok);
    });
}

/// tokio's Burst: after missing ticks, each tick returns its scheduled instant,
/// `first + k * period`, with no skipping and no drift.
#[test]
fn interval_bursts_with_scheduled_instants() {
    with_watchdog("interval burst", Duration::from_secs(30), || {
        let rt = Builder::new().worker_threads(1).build().unwrap();
        rt.block_on(async {
            let p = Duration::from_millis(20);
            let mut iv = greenrt::time::interval(p);
            let first = iv.tick().await;
            std::thread::sleep(p * 7 / 2);
            for k in 1..=6u32 {
                let t = iv.tick().await;
                assert_eq!(t, first + p * k);
                assert!(Instant::now() >= t);
            }
        });
    });
}

/// A future woken from a plain std thread inside `timeout`: completes with Ok.
struct Flag {
    done: AtomicBool,
    waker: Mutex<Option<Waker>>,
}
struct WaitFlag(Arc<Flag>);
impl Future for WaitFlag {
    type Output = u8;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u8> {
        *self.0.waker.lock().unwrap() = Some(cx.waker().clone());
        if self.0.done.load(Ordering::SeqCst) {
            Poll::Ready(7)
        } else {
            Poll::Pending
        }
    }
}

#[test]
fn timeout_around_future_woken_from_plain_thread() {
    with_watchdog("timeout cross-thread", Duration::from_secs(30), || {
        let rt = Builder::new().worker_threads(2).build().unwrap();
        for mode in 0..3 {
            let flag = Arc::new(Flag {
                done: AtomicBool::new(false),
                waker: Mutex::new(None),
            });
            let f2 = flag.clone();
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                f2.done.store(true, Ordering::SeqCst);
                if let Some(w) = f2.waker.lock().unwrap().take() {
                    w.wake();
                }
            });
            let fut = greenrt::time::timeout(Duration::from_secs(20), WaitFlag(flag));
            let r = match mode {
                0 => rt.block_on(fut),
                1 => rt.block_on(rt.spawn_async(fut)).unwrap(),
                _ => rt.spawn(move || greenrt::block_on(fut)).join().unwrap(),
            };
            assert_eq!(r, Ok(7), "mode {mode}");
            t.join().unwrap();
        }
    });
}

/// Dropping the runtime while green threads, tasks and the host sleep far out returns.
#[test]
fn shutdown_with_long_sleepers_returns() {
    with_watchdog("shutdown with sleepers", Duration::from_secs(30), || {
        let rt = Builder::new().worker_threads(2).build().unwrap();
        let mut hs = Vec::new();
        for _ in 0..50 {
            hs.push(rt.spawn(|| greenrt::sleep(Duration::from_secs(3600))));
            hs.push(rt.spawn_async(greenrt::time::sleep(Duration::MAX)));
            hs.push(rt.spawn(|| {
                let mut iv = greenrt::time::interval(Duration::from_secs(3600));
                greenrt::block_on(iv.tick());
                greenrt::block_on(iv.tick());
            }));
        }
        std::thread::sleep(Duration::from_millis(50));
        drop(rt);
        for h in hs {
            let _ = h.join();
        }
    });
}
