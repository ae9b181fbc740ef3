//! Stacks at scale: 10,000 green threads suspended at once keep their stacks intact and
//! all complete; 1,000,000 short green threads spawned in a row all run.

mod common;
use common::{runtime, with_watchdog};
use futures::channel::oneshot;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A gate every green thread waits on until it is opened once for all. Each waiter
/// reports on `arrived` when it first finds the gate shut (it is about to suspend).
#[derive(Clone)]
struct Gate {
    inner: Arc<GateInner>,
}

struct GateInner {
    open: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            inner: Arc::new(GateInner {
                open: AtomicBool::new(false),
                wakers: Mutex::new(Vec::new()),
            }),
        }
    }

    fn wait(&self, arrived: mpsc::Sender<()>) -> GateWait {
        GateWait {
            gate: self.clone(),
            arrived: Some(arrived),
        }
    }

    fn open(&self) {
        let wakers = {
            let mut wakers = self.inner.wakers.lock().unwrap();
            self.inner.open.store(true, Ordering::Release);
            std::mem::take(&mut *wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

struct GateWait {
    gate: Gate,
    arrived: Option<mpsc::Sender<()>>,
}

impl Future for GateWait {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut wakers = self.gate.inner.wakers.lock().unwrap();
        if self.gate.inner.open.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        wakers.push(cx.waker().clone());
        drop(wakers);
        if let Some(arrived) = self.arrived.take() {
            arrived.send(()).unwrap();
        }
        Poll::Pending
    }
}

#[test]
fn ten_thousand_green_threads_suspended_at_once_all_complete() {
    const N: usize = 10_000;
    with_watchdog(
        "10,000 suspended green threads",
        Duration::from_secs(60),
        || {
            let rt = runtime(2);
            let start = Instant::now();
            let gate = Gate::new();
            let (arrived_tx, arrived_rx) = mpsc::channel();
            let handles: Vec<_> = (0..N)
                .map(|i| {
                    let wait = gate.wait(arrived_tx.clone());
                    rt.spawn(move || {
                        // Something of its own on its stack, to check after the long
                        // suspension that no other green thread's stack overlapped it.
                        let mine: [u64; 64] = std::array::from_fn(|k| (i * 64 + k) as u64);
                        let mine = std::hint::black_box(mine);
                        greenrt::block_on(wait);
                        let intact = mine
                            .iter()
                            .enumerate()
                            .all(|(k, &v)| v == (i * 64 + k) as u64);
                        (i, intact)
                    })
                })
                .collect();
            drop(arrived_tx);
            // Every green thread found the gate shut and suspended: all N are alive, each on
            // its own stack, at the same time.
            for _ in 0..N {
                arrived_rx.recv().unwrap();
            }
            assert!(
                handles.iter().all(|h| !h.is_finished()),
                "none can finish before the gate opens"
            );
            let all_waiting = start.elapsed();
            gate.open();
            let mut sum = 0;
            for handle in handles {
                let (i, intact) = handle.join().unwrap();
                assert!(
                    intact,
                    "green thread {i}'s stack changed while it was suspended"
                );
                sum += i;
            }
            assert_eq!(sum, N * (N - 1) / 2);
            println!(
                "{N} green threads suspended at once after {all_waiting:?}; all done after {:?}",
                start.elapsed()
            );
        },
    );
}

#[test]
fn a_million_short_green_threads_all_run() {
    const N: usize = 1_000_000;
    with_watchdog("1,000,000 green threads", Duration::from_secs(120), || {
        let rt = runtime(2);
        let ran = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let done_tx = Arc::new(Mutex::new(Some(done_tx)));
        let start = Instant::now();
        // Spawned in a row from one green thread and detached: far more than the live
        // budget (about 30,000 stacks) at once, so spawning must wait for finished
        // green threads rather than fail.
        let spawner = {
            let ran = ran.clone();
            rt.spawn(move || {
                for _ in 0..N {
                    let ran = ran.clone();
                    let done_tx = done_tx.clone();
                    drop(greenrt::spawn(move || {
                        if ran.fetch_add(1, Ordering::Relaxed) + 1 == N {
                            let tx = done_tx.lock().unwrap().take().unwrap();
                            tx.send(()).unwrap();
                        }
                    }));
                }
            })
        };
        spawner.join().unwrap();
        let spawned = start.elapsed();
        // The last increment completes the oneshot: this plain thread parks until then.
        greenrt::block_on(done_rx).unwrap();
        let elapsed = start.elapsed();
        assert_eq!(ran.load(Ordering::Relaxed), N);
        println!("1,000,000 green threads: spawned in {spawned:?}, all ran in {elapsed:?}");
    });
}
