//! A callgrind harness for the scheduler's hot paths: runs one workload `n` times so
//! that the instruction count per unit is `(count(2n) - count(n)) / n`.
//!
//! ```text
//! cargo build --release --example sched_profile
//! valgrind --tool=callgrind --dump-instr=no target/release/examples/sched_profile yield 100000
//! valgrind --tool=callgrind --dump-instr=no target/release/examples/sched_profile yield 200000
//! ```
//!
//! Workloads (1 worker, so callgrind's serialisation of threads does not matter):
//! - `yield N`: one green thread calls `yield_now` N times.
//! - `spawn N`: a green thread spawns N empty green threads, then joins them.
//! - `spawnjoin N`: a green thread spawns an empty green thread and joins it, N times
//!   (spawn_join/green_on_worker_1w in benches/runtime.rs).
//! - `pingpong N`: N round trips between two green threads over oneshot channels.
//! - `spawnmany N [W]`, `async-spawnmany N [W]`, `tokio-spawnmany N [W]`: spawn_many
//!   (as in benches/runtime.rs) with green threads, future tasks or tokio tasks, on
//!   `W` workers; `ROUNDS=1` for callgrind.
//! - `pingpongmany N [W]`, `tokio-pingpongmany N [W]`: ping_pong as in the bench (`N`
//!   pairs) with green threads or tokio tasks on `W` workers; `ROUNDS` times.
//! - `chained N [W]`, `tokio-chained N [W]`: chained_spawn (each spawns the next, `N`
//!   deep) with green threads or tokio tasks on `W` workers; `ROUNDS` times.

use futures::channel::oneshot;
use greenrt::runtime::Builder;
use tracing_subscriber::util::SubscriberInitExt;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "yield".to_string());
    let n: usize = args.next().map_or(100_000, |s| s.parse().expect("a count"));
    let workers: usize = args
        .next()
        .map_or(1, |s| s.parse().expect("a worker count"));
    let rt = Builder::new()
        .worker_threads(workers)
        .build()
        .expect("runtime");
    // Tracing variants of `yield`: "yield-after-scoped" (a scoped subscriber was set and
    // dropped before: nobody listens, but tracing's has_been_set() stays true),
    // "yield-fmt-info" (a scoped fmt subscriber at INFO: greenrt's spans filtered out),
    // "yield-registry" (a scoped bare registry: every span recorded).
    // PROFILE_TRACE=fmt-info|registry: the same subscribers as below, scoped to the
    // whole run, for the multi-thread modes (e.g. yieldmany, as in tracing_cost).
    let _trace_guard = match std::env::var("PROFILE_TRACE").as_deref() {
        Ok("fmt-info") => Some(
            tracing_subscriber::fmt()
                .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
                .with_writer(std::io::sink)
                .finish()
                .set_default(),
        ),
        Ok("registry") => Some(tracing_subscriber::registry().set_default()),
        _ => None,
    };
    let mode = match mode.as_str() {
        "yield-after-scoped" => {
            drop(tracing_subscriber::fmt().finish().set_default());
            "yield".to_string()
        }
        "yield-fmt-info" | "yield-registry" => {
            let guard = if mode == "yield-fmt-info" {
                tracing_subscriber::fmt()
                    .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
                    .with_writer(std::io::sink)
                    .finish()
                    .set_default()
            } else {
                tracing_subscriber::registry().set_default()
            };
            rt.spawn(move || {
                for _ in 0..n {
                    greenrt::yield_now();
                }
            })
            .join()
            .unwrap();
            drop(guard);
            return;
        }
        _ => mode,
    };
    match mode.as_str() {
        "yield" => rt
            .spawn(move || {
                for _ in 0..n {
                    greenrt::yield_now();
                }
            })
            .join()
            .unwrap(),
        "spawn" => rt
            .spawn(move || {
                let handles: Vec<_> = (0..n).map(|_| greenrt::spawn(|| {})).collect();
                for handle in handles {
                    handle.join().unwrap();
                }
            })
            .join()
            .unwrap(),
        "spawnjoin" => rt
            .spawn(move || {
                for _ in 0..n {
                    greenrt::spawn(|| {}).join().unwrap();
                }
            })
            .join()
            .unwrap(),
        "pingpong" => rt
            .spawn(move || {
                for _ in 0..n {
                    let (tx1, rx1) = oneshot::channel::<()>();
                    let (tx2, rx2) = oneshot::channel::<()>();
                    let peer = greenrt::spawn(move || {
                        greenrt::block_on(rx1).unwrap();
                        tx2.send(()).unwrap();
                    });
                    tx1.send(()).unwrap();
                    greenrt::block_on(rx2).unwrap();
                    peer.join().unwrap();
                }
            })
            .join()
            .unwrap(),
        // yield_many as in benches/runtime.rs (200 green threads spawned from outside,
        // `n` yields each), repeated 20 times; prints how many ran on each worker and
        // the time per round.
        "yieldmany" => {
            for _ in 0..rounds() {
                let start = std::time::Instant::now();
                let handles: Vec<_> = (0..200)
                    .map(|_| {
                        rt.spawn(move || {
                            for _ in 0..n {
                                greenrt::yield_now();
                            }
                            std::thread::current().name().map(str::to_owned)
                        })
                    })
                    .collect();
                let mut per_worker = std::collections::BTreeMap::new();
                for handle in handles {
                    *per_worker.entry(handle.join().unwrap()).or_insert(0) += 1;
                }
                println!("{:?} {:?}", start.elapsed(), per_worker);
            }
        }
        // spawn_many as in benches/runtime.rs: `n` spawns from the green thread that
        // `Runtime::run` hosts on this thread, the last one signals; ROUNDS times.
        "spawnmany" => {
            let rounds = rounds();
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1000);
            let rem = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            for _ in 0..rounds {
                let start = std::time::Instant::now();
                rem.store(n, std::sync::atomic::Ordering::Relaxed);
                rt.run(|| {
                    for _ in 0..n {
                        let tx = tx.clone();
                        let rem = rem.clone();
                        greenrt::spawn(move || {
                            if rem.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) == 1 {
                                tx.send(()).unwrap();
                            }
                        });
                    }
                    rx.recv().unwrap();
                });
                println!("{:?}", start.elapsed());
            }
        }
        // The same as "spawnmany" with future tasks (`spawn_async`).
        "async-spawnmany" => {
            let rounds = rounds();
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1000);
            let rem = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            for _ in 0..rounds {
                let start = std::time::Instant::now();
                rem.store(n, std::sync::atomic::Ordering::Relaxed);
                rt.run(|| {
                    for _ in 0..n {
                        let tx = tx.clone();
                        let rem = rem.clone();
                        greenrt::spawn_async(async move {
                            if rem.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) == 1 {
                                tx.send(()).unwrap();
                            }
                        });
                    }
                    rx.recv().unwrap();
                });
                println!("{:?}", start.elapsed());
            }
        }
        // The same as "spawnmany" on a tokio multi-thread runtime, for an instruction
        // count to compare with.
        "tokio-spawnmany" => {
            let rounds = rounds();
            let tokio = tokio_runtime(workers);
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1000);
            let rem = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            for _ in 0..rounds {
                let start = std::time::Instant::now();
                rem.store(n, std::sync::atomic::Ordering::Relaxed);
                tokio.block_on(async {
                    for _ in 0..n {
                        let tx = tx.clone();
                        let rem = rem.clone();
                        tokio::spawn(async move {
                            if rem.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) == 1 {
                                tx.send(()).unwrap();
                            }
                        });
                    }
                    rx.recv().unwrap();
                });
                println!("{:?}", start.elapsed());
            }
        }
        // chained_spawn as in benches/runtime.rs: each green thread spawns the next, `n`
        // deep, started from the green thread `Runtime::run` hosts; ROUNDS times.
        "chained" => {
            let rounds = rounds();
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
            for _ in 0..rounds {
                let start = std::time::Instant::now();
                let tx = tx.clone();
                rt.run(|| {
                    greenrt::spawn(move || green_chain(tx, n));
                    rx.recv().unwrap();
                });
                println!("{:?}", start.elapsed());
            }
        }
        // The same as "chained" on a tokio multi-thread runtime.
        "tokio-chained" => {
            let rounds = rounds();
            let tokio = tokio_runtime(workers);
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
            for _ in 0..rounds {
                let start = std::time::Instant::now();
                let tx = tx.clone();
                tokio.block_on(async {
                    tokio::spawn(async move { tokio_chain(tx, n) });
                    rx.recv().unwrap();
                });
                println!("{:?}", start.elapsed());
            }
        }
        // ping_pong as in benches/runtime.rs: `n` pairs spawned from one green thread,
        // each pair exchanging one message each way; ROUNDS times.
        "pingpongmany" => {
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
            for _ in 0..rounds() {
                let start = std::time::Instant::now();
                let rem = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(n));
                let tx = tx.clone();
                rt.run(|| {
                    greenrt::spawn(move || {
                        for _ in 0..n {
                            let (rem, tx) = (rem.clone(), tx.clone());
                            greenrt::spawn(move || {
                                let (tx1, rx1) = oneshot::channel::<()>();
                                let (tx2, rx2) = oneshot::channel::<()>();
                                greenrt::spawn(move || {
                                    greenrt::block_on(rx1).unwrap();
                                    tx2.send(()).unwrap();
                                });
                                tx1.send(()).unwrap();
                                greenrt::block_on(rx2).unwrap();
                                pair_done(&rem, &tx);
                            });
                        }
                    });
                    rx.recv().unwrap();
                });
                println!("{:?}", start.elapsed());
            }
        }
        // The same as "pingpongmany" on a tokio multi-thread runtime.
        "tokio-pingpongmany" => {
            let tokio = tokio_runtime(workers);
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
            for _ in 0..rounds() {
                let start = std::time::Instant::now();
                let rem = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(n));
                let tx = tx.clone();
                tokio.block_on(async {
                    tokio::spawn(async move {
                        for _ in 0..n {
                            let (rem, tx) = (rem.clone(), tx.clone());
                            tokio::spawn(async move {
                                let (tx1, rx1) = tokio::sync::oneshot::channel::<()>();
                                let (tx2, rx2) = tokio::sync::oneshot::channel::<()>();
                                tokio::spawn(async move {
                                    rx1.await.unwrap();
                                    tx2.send(()).unwrap();
                                });
                                tx1.send(()).unwrap();
                                rx2.await.unwrap();
                                pair_done(&rem, &tx);
                            });
                        }
                    });
                    rx.recv().unwrap();
                });
                println!("{:?}", start.elapsed());
            }
        }
        other => panic!(
            "unknown workload {other}: yield, spawn, spawnjoin, pingpong, yieldmany, spawnmany, \
             async-spawnmany, tokio-spawnmany, chained, tokio-chained, pingpongmany or \
             tokio-pingpongmany"
        ),
    }
}

/// The end of one ping_pong pair: the last one signals the round's end.
fn pair_done(rem: &std::sync::atomic::AtomicUsize, done: &std::sync::mpsc::SyncSender<()>) {
    if rem.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) == 1 {
        done.send(()).unwrap();
    }
}

fn green_chain(done: std::sync::mpsc::SyncSender<()>, n: usize) {
    if n == 0 {
        done.send(()).unwrap();
    } else {
        greenrt::spawn(move || green_chain(done, n - 1));
    }
}

fn tokio_chain(done: std::sync::mpsc::SyncSender<()>, n: usize) {
    if n == 0 {
        done.send(()).unwrap();
    } else {
        tokio::spawn(async move { tokio_chain(done, n - 1) });
    }
}

/// A tokio multi-thread runtime with `workers` workers, for the tokio- modes.
fn tokio_runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// How many rounds the repeated modes run: `$ROUNDS`, default 20.
fn rounds() -> usize {
    std::env::var("ROUNDS").map_or(20, |s| s.parse().expect("ROUNDS: a count"))
}
