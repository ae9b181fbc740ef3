//! greenrt against tokio on the workloads of tokio's own `benches/rt_multi_threaded.rs`
//! (same parameters), plus greenrt-only costs: the switch, spawn + join, the block_on
//! bridge, runtime entry and tracing.
//!
//! Every workload group compares, in the same run:
//! - `green`: greenrt green threads (spawned with `greenrt::spawn` / `Runtime::spawn`),
//! - `async`: greenrt future tasks (`greenrt::spawn_async` / `Runtime::spawn_async`),
//! - `tokio_2w`: a tokio multi-thread runtime with 2 workers,
//! - `tokio_default`: a tokio multi-thread runtime with its default worker count (the
//!   available parallelism, which is also 2 on the 2-core bench machine).
//!
//! The greenrt runtime has 2 workers too. Runtimes are built once per group, outside the
//! measured loop, and each is dropped before the next one is measured so idle workers
//! of other runtimes stay off the CPUs.
//!
//! ```text
//! cargo bench --bench runtime                      # everything (a few minutes)
//! cargo bench --bench runtime -- --test            # each benchmark once
//! cargo bench --bench runtime --no-default-features -- tracing_cost   # tracing feature off
//! python3 benches/table.py                         # Markdown table of the medians
//! ```

mod common;

use common::{greenrt_rt, group, tokio_default_rt, tokio_rt, yield_async, WORKERS};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use futures::channel::{mpsc as fmpsc, oneshot};
use futures::StreamExt;
use greenrt::runtime::Runtime;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// tokio's parameters (rt_multi_threaded.rs).
const NUM_SPAWN: usize = 10_000;
const NUM_YIELD: usize = 1_000;
const TASKS: usize = 200;
const NUM_PINGS: usize = 1_000;
const ITER: usize = 1_000;

/// Builds a tokio runtime.
type TokioBuild = fn() -> tokio::runtime::Runtime;

/// The tokio runtimes each workload group compares against, built when measured.
fn tokio_variants() -> [(&'static str, TokioBuild); 2] {
    [
        ("tokio_2w", || tokio_rt(WORKERS)),
        ("tokio_default", tokio_default_rt),
    ]
}

// ---------------------------------------------------------------------------------------
// spawn_many: 10,000 spawns from inside the runtime; each decrements a counter and the
// last one signals the waiting thread over a std channel (as in tokio's bench).

fn spawn_many(c: &mut Criterion) {
    let mut g = group(c, "spawn_many");
    let (tx, rx) = mpsc::sync_channel::<()>(1000);
    let rem = Arc::new(AtomicUsize::new(0));

    let rt = greenrt_rt(WORKERS);
    g.bench_function("green", |b| {
        b.iter(|| {
            rem.store(NUM_SPAWN, Relaxed);
            rt.run(|| {
                for _ in 0..NUM_SPAWN {
                    let tx = tx.clone();
                    let rem = rem.clone();
                    greenrt::spawn(move || {
                        if rem.fetch_sub(1, Relaxed) == 1 {
                            tx.send(()).unwrap();
                        }
                    });
                }
                rx.recv().unwrap();
            })
        })
    });
    g.bench_function("async", |b| {
        b.iter(|| {
            rem.store(NUM_SPAWN, Relaxed);
            rt.block_on(async {
                for _ in 0..NUM_SPAWN {
                    let tx = tx.clone();
                    let rem = rem.clone();
                    greenrt::spawn_async(async move {
                        if rem.fetch_sub(1, Relaxed) == 1 {
                            tx.send(()).unwrap();
                        }
                    });
                }
                rx.recv().unwrap();
            })
        })
    });
    drop(rt);

    for (name, build) in tokio_variants() {
        let rt = build();
        g.bench_function(name, |b| {
            b.iter(|| {
                rem.store(NUM_SPAWN, Relaxed);
                rt.block_on(async {
                    for _ in 0..NUM_SPAWN {
                        let tx = tx.clone();
                        let rem = rem.clone();
                        tokio::spawn(async move {
                            if rem.fetch_sub(1, Relaxed) == 1 {
                                tx.send(()).unwrap();
                            }
                        });
                    }
                    rx.recv().unwrap();
                })
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------
// spawn_many_remote: 10,000 spawns from the bench thread (outside the runtime), then
// all joined from inside the runtime (tokio's spawn_many_remote_idle).

fn spawn_many_remote(c: &mut Criterion) {
    let mut g = group(c, "spawn_many_remote");

    let rt = greenrt_rt(WORKERS);
    let mut handles = Vec::with_capacity(NUM_SPAWN);
    g.bench_function("green", |b| {
        b.iter(|| {
            for _ in 0..NUM_SPAWN {
                handles.push(rt.spawn(|| {}));
            }
            rt.run(|| {
                for handle in handles.drain(..) {
                    handle.join().unwrap();
                }
            })
        })
    });
    let mut handles = Vec::with_capacity(NUM_SPAWN);
    g.bench_function("async", |b| {
        b.iter(|| {
            for _ in 0..NUM_SPAWN {
                handles.push(rt.spawn_async(async {}));
            }
            rt.block_on(async {
                for handle in handles.drain(..) {
                    handle.await.unwrap();
                }
            })
        })
    });
    drop(rt);

    for (name, build) in tokio_variants() {
        let rt = build();
        let mut handles = Vec::with_capacity(NUM_SPAWN);
        g.bench_function(name, |b| {
            b.iter(|| {
                for _ in 0..NUM_SPAWN {
                    handles.push(rt.spawn(async {}));
                }
                rt.block_on(async {
                    for handle in handles.drain(..) {
                        handle.await.unwrap();
                    }
                })
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------
// yield_many: 200 tasks spawned from the bench thread, each yields 1,000 times, then
// signals over a std channel; the bench thread waits for all 200.

/// One iteration of yield_many on greenrt green threads (also used by tracing_cost).
fn green_yield_many(rt: &Runtime, tx: &mpsc::SyncSender<()>, rx: &mpsc::Receiver<()>) {
    for _ in 0..TASKS {
        let tx = tx.clone();
        rt.spawn(move || {
            for _ in 0..NUM_YIELD {
                greenrt::yield_now();
            }
            tx.send(()).unwrap();
        });
    }
    for _ in 0..TASKS {
        rx.recv().unwrap();
    }
}

fn yield_many(c: &mut Criterion) {
    let mut g = group(c, "yield_many");
    let (tx, rx) = mpsc::sync_channel::<()>(TASKS);

    let rt = greenrt_rt(WORKERS);
    g.bench_function("green", |b| b.iter(|| green_yield_many(&rt, &tx, &rx)));
    g.bench_function("async", |b| {
        b.iter(|| {
            for _ in 0..TASKS {
                let tx = tx.clone();
                rt.spawn_async(async move {
                    for _ in 0..NUM_YIELD {
                        yield_async().await;
                    }
                    tx.send(()).unwrap();
                });
            }
            for _ in 0..TASKS {
                rx.recv().unwrap();
            }
        })
    });
    drop(rt);

    for (name, build) in tokio_variants() {
        let rt = build();
        g.bench_function(name, |b| {
            b.iter(|| {
                for _ in 0..TASKS {
                    let tx = tx.clone();
                    rt.spawn(async move {
                        for _ in 0..NUM_YIELD {
                            tokio::task::yield_now().await;
                        }
                        tx.send(()).unwrap();
                    });
                }
                for _ in 0..TASKS {
                    rx.recv().unwrap();
                }
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------
// ping_pong: one task spawns 1,000 pairs; in each pair one side sends a message over a
// oneshot and waits for the reply over another. greenrt uses futures' oneshot (green
// threads wait with greenrt::block_on), tokio its own, as in tokio's bench.

fn ping_pong(c: &mut Criterion) {
    let mut g = group(c, "ping_pong");
    let (done_tx, done_rx) = mpsc::sync_channel::<()>(1000);
    let rem = Arc::new(AtomicUsize::new(0));

    let rt = greenrt_rt(WORKERS);
    g.bench_function("green", |b| {
        b.iter(|| {
            let done_tx = done_tx.clone();
            let rem = rem.clone();
            rem.store(NUM_PINGS, Relaxed);
            rt.run(|| {
                greenrt::spawn(move || {
                    for _ in 0..NUM_PINGS {
                        let rem = rem.clone();
                        let done_tx = done_tx.clone();
                        greenrt::spawn(move || {
                            let (tx1, rx1) = oneshot::channel::<()>();
                            let (tx2, rx2) = oneshot::channel::<()>();
                            greenrt::spawn(move || {
                                greenrt::block_on(rx1).unwrap();
                                tx2.send(()).unwrap();
                            });
                            tx1.send(()).unwrap();
                            greenrt::block_on(rx2).unwrap();
                            if rem.fetch_sub(1, Relaxed) == 1 {
                                done_tx.send(()).unwrap();
                            }
                        });
                    }
                });
                done_rx.recv().unwrap();
            })
        })
    });
    g.bench_function("async", |b| {
        b.iter(|| {
            let done_tx = done_tx.clone();
            let rem = rem.clone();
            rem.store(NUM_PINGS, Relaxed);
            rt.block_on(async {
                greenrt::spawn_async(async move {
                    for _ in 0..NUM_PINGS {
                        let rem = rem.clone();
                        let done_tx = done_tx.clone();
                        greenrt::spawn_async(async move {
                            let (tx1, rx1) = oneshot::channel::<()>();
                            let (tx2, rx2) = oneshot::channel::<()>();
                            greenrt::spawn_async(async move {
                                rx1.await.unwrap();
                                tx2.send(()).unwrap();
                            });
                            tx1.send(()).unwrap();
                            rx2.await.unwrap();
                            if rem.fetch_sub(1, Relaxed) == 1 {
                                done_tx.send(()).unwrap();
                            }
                        });
                    }
                });
                done_rx.recv().unwrap();
            })
        })
    });
    drop(rt);

    for (name, build) in tokio_variants() {
        let rt = build();
        g.bench_function(name, |b| {
            b.iter(|| {
                let done_tx = done_tx.clone();
                let rem = rem.clone();
                rem.store(NUM_PINGS, Relaxed);
                rt.block_on(async {
                    tokio::spawn(async move {
                        for _ in 0..NUM_PINGS {
                            let rem = rem.clone();
                            let done_tx = done_tx.clone();
                            tokio::spawn(async move {
                                let (tx1, rx1) = tokio::sync::oneshot::channel::<()>();
                                let (tx2, rx2) = tokio::sync::oneshot::channel::<()>();
                                tokio::spawn(async move {
                                    rx1.await.unwrap();
                                    tx2.send(()).unwrap();
                                });
                                tx1.send(()).unwrap();
                                rx2.await.unwrap();
                                if rem.fetch_sub(1, Relaxed) == 1 {
                                    done_tx.send(()).unwrap();
                                }
                            });
                        }
                    });
                    done_rx.recv().unwrap();
                })
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------
// chained_spawn: each task spawns the next, 1,000 deep; the last signals.

fn green_chain(done_tx: mpsc::SyncSender<()>, n: usize) {
    if n == 0 {
        done_tx.send(()).unwrap();
    } else {
        greenrt::spawn(move || green_chain(done_tx, n - 1));
    }
}

fn async_chain(done_tx: mpsc::SyncSender<()>, n: usize) {
    if n == 0 {
        done_tx.send(()).unwrap();
    } else {
        greenrt::spawn_async(async move { async_chain(done_tx, n - 1) });
    }
}

fn tokio_chain(done_tx: mpsc::SyncSender<()>, n: usize) {
    if n == 0 {
        done_tx.send(()).unwrap();
    } else {
        tokio::spawn(async move { tokio_chain(done_tx, n - 1) });
    }
}

fn chained_spawn(c: &mut Criterion) {
    let mut g = group(c, "chained_spawn");
    let (done_tx, done_rx) = mpsc::sync_channel::<()>(1000);

    let rt = greenrt_rt(WORKERS);
    g.bench_function("green", |b| {
        b.iter(|| {
            let done_tx = done_tx.clone();
            rt.run(|| {
                greenrt::spawn(move || green_chain(done_tx, ITER));
                done_rx.recv().unwrap();
            })
        })
    });
    g.bench_function("async", |b| {
        b.iter(|| {
            let done_tx = done_tx.clone();
            rt.block_on(async {
                greenrt::spawn_async(async move { async_chain(done_tx, ITER) });
                done_rx.recv().unwrap();
            })
        })
    });
    drop(rt);

    for (name, build) in tokio_variants() {
        let rt = build();
        g.bench_function(name, |b| {
            b.iter(|| {
                let done_tx = done_tx.clone();
                rt.block_on(async {
                    tokio::spawn(async move { tokio_chain(done_tx, ITER) });
                    done_rx.recv().unwrap();
                })
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------
// switch: one round trip into a coroutine and back.
// - corosensei_resume_suspend: corosensei's raw resume + suspend.
// - greenrt_raw_switch_inline_asm: greenrt's context switch alone (the one the runtime
//   uses), through the doc-hidden `greenrt::bench::RawSwitch`: resume + suspend.
// - greenrt_raw_switch_naked: the naked-function variant, measured and rejected.
// - greenrt_yield_1worker: yield_now() in a loop by the only green thread of a
//   1-worker runtime: a round trip through the scheduler (switch out, requeue, pick,
//   switch in), not just the two switches.
// - greenrt_yield_run_host: the same in the green thread hosted by Runtime::run on the
//   bench thread (its one-green-thread scheduler loop).
// - greenrt_async_yield_1worker / tokio_yield_1worker: a future task yielding (waking
//   itself and returning Pending) on a 1-worker runtime, for scale.

fn switch(c: &mut Criterion) {
    let mut g = group(c, "switch");
    g.sampling_mode(criterion::SamplingMode::Auto);

    {
        use corosensei::{Coroutine, Yielder};
        let mut coroutine = Coroutine::new(|yielder: &Yielder<(), ()>, ()| -> () {
            loop {
                yielder.suspend(());
            }
        });
        g.bench_function("corosensei_resume_suspend", |b| {
            b.iter(|| black_box(coroutine.resume(())))
        });
    }
    for (name, variant) in [
        (
            "greenrt_raw_switch_inline_asm",
            greenrt::bench::Variant::InlineAsm,
        ),
        ("greenrt_raw_switch_naked", greenrt::bench::Variant::Naked),
    ] {
        let mut raw = greenrt::bench::RawSwitch::new(variant);
        g.bench_function(name, |b| b.iter(|| raw.round_trip()));
    }

    let rt = greenrt_rt(1);
    g.bench_function("greenrt_yield_1worker", |b| {
        b.iter_custom(|iters| {
            rt.spawn(move || {
                let start = Instant::now();
                for _ in 0..iters {
                    greenrt::yield_now();
                }
                start.elapsed()
            })
            .join()
            .unwrap()
        })
    });
    g.bench_function("greenrt_yield_run_host", |b| {
        b.iter_custom(|iters| {
            rt.run(|| {
                let start = Instant::now();
                for _ in 0..iters {
                    greenrt::yield_now();
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("greenrt_async_yield_1worker", |b| {
        b.iter_custom(|iters| {
            rt.spawn_async(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    yield_async().await;
                }
                start.elapsed()
            })
            .join()
            .unwrap()
        })
    });
    drop(rt);

    let rt = tokio_rt(1);
    g.bench_function("tokio_yield_1worker", |b| {
        b.iter_custom(|iters| {
            rt.block_on(rt.spawn(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    tokio::task::yield_now().await;
                }
                start.elapsed()
            }))
            .unwrap()
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------
// enter: the cost of entering a runtime from a plain thread with nothing to do, which
// every iteration of the workloads above pays once (Runtime::run maps and unmaps a
// 2 MiB green stack for its host green thread).

fn enter(c: &mut Criterion) {
    let mut g = group(c, "enter");
    g.sampling_mode(criterion::SamplingMode::Auto);

    let rt = greenrt_rt(WORKERS);
    g.bench_function("green_run_empty", |b| b.iter(|| rt.run(|| black_box(1))));
    g.bench_function("async_block_on_empty", |b| {
        b.iter(|| rt.block_on(async { black_box(1) }))
    });
    drop(rt);

    let rt = tokio_rt(WORKERS);
    g.bench_function("tokio_2w_block_on_empty", |b| {
        b.iter(|| rt.block_on(async { black_box(1) }))
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------
// spawn_join: spawn one green thread (or task, or OS thread) that does nothing and wait
// for it.

fn spawn_join(c: &mut Criterion) {
    let mut g = group(c, "spawn_join");
    g.sampling_mode(criterion::SamplingMode::Auto);

    // The issue's case: a green thread on a worker spawns a short green thread and joins
    // it. The child lands in the worker's LIFO slot and join switches straight to it;
    // its stack comes from the worker's pool. On 1 worker nobody else can take it; on 2
    // the idle worker may be woken to look.
    for workers in [1, WORKERS] {
        let rt = greenrt_rt(workers);
        g.bench_function(format!("green_on_worker_{workers}w"), |b| {
            b.iter_custom(|iters| {
                rt.spawn(move || {
                    let start = Instant::now();
                    for _ in 0..iters {
                        greenrt::spawn(|| black_box(1)).join().unwrap();
                    }
                    start.elapsed()
                })
                .join()
                .unwrap()
            })
        });
    }

    let rt = greenrt_rt(WORKERS);
    // From the green thread `Runtime::run` hosts on the calling (non-worker) thread: the
    // child goes to a worker, so each join waits for a cross-thread wake.
    g.bench_function("green_from_run_host", |b| {
        b.iter_custom(|iters| {
            rt.run(|| {
                let start = Instant::now();
                for _ in 0..iters {
                    greenrt::spawn(|| black_box(1)).join().unwrap();
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("green_from_plain_thread", |b| {
        b.iter(|| rt.spawn(|| black_box(1)).join().unwrap())
    });
    g.bench_function("async_in_block_on", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    greenrt::spawn_async(async { black_box(1) }).await.unwrap();
                }
                start.elapsed()
            })
        })
    });
    drop(rt);

    let rt = tokio_rt(WORKERS);
    g.bench_function("tokio_2w_in_block_on", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    tokio::spawn(async { black_box(1) }).await.unwrap();
                }
                start.elapsed()
            })
        })
    });
    drop(rt);

    g.bench_function("std_thread", |b| {
        b.iter(|| std::thread::spawn(|| black_box(1)).join().unwrap())
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------
// bridge: a client sends a oneshot sender to a server over a futures mpsc channel and
// waits for the server to complete it: one round trip, two wakes. Green threads wait
// with greenrt::block_on; tasks .await. The same futures channels everywhere, so only
// the runtimes differ.

type Request = oneshot::Sender<()>;

fn green_round_trips(rt: &Runtime, iters: u64, client_on_host: bool) -> Duration {
    let (req_tx, mut req_rx) = fmpsc::unbounded::<Request>();
    let server = rt.spawn(move || {
        while let Some(reply) = greenrt::block_on(req_rx.next()) {
            reply.send(()).unwrap();
        }
    });
    let client = move || {
        let start = Instant::now();
        for _ in 0..iters {
            let (tx, rx) = oneshot::channel();
            req_tx.unbounded_send(tx).unwrap();
            greenrt::block_on(rx).unwrap();
        }
        start.elapsed()
        // req_tx drops here: the server's stream ends.
    };
    let elapsed = if client_on_host {
        rt.run(client)
    } else {
        rt.spawn(client).join().unwrap()
    };
    server.join().unwrap();
    elapsed
}

async fn serve(mut req_rx: fmpsc::UnboundedReceiver<Request>) {
    while let Some(reply) = req_rx.next().await {
        reply.send(()).unwrap();
    }
}

async fn request_round_trips(req_tx: fmpsc::UnboundedSender<Request>, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let (tx, rx) = oneshot::channel();
        req_tx.unbounded_send(tx).unwrap();
        rx.await.unwrap();
    }
    start.elapsed()
}

fn bridge(c: &mut Criterion) {
    let mut g = group(c, "bridge");
    g.sampling_mode(criterion::SamplingMode::Auto);

    let rt = greenrt_rt(1);
    g.bench_function("green_1worker", |b| {
        b.iter_custom(|iters| green_round_trips(&rt, iters, false))
    });
    drop(rt);

    let rt = greenrt_rt(WORKERS);
    g.bench_function("green_2w", |b| {
        b.iter_custom(|iters| green_round_trips(&rt, iters, false))
    });
    g.bench_function("green_run_host_client", |b| {
        b.iter_custom(|iters| green_round_trips(&rt, iters, true))
    });
    g.bench_function("async_2w", |b| {
        b.iter_custom(|iters| {
            let (req_tx, req_rx) = fmpsc::unbounded::<Request>();
            let server = rt.spawn_async(serve(req_rx));
            let elapsed = rt
                .spawn_async(request_round_trips(req_tx, iters))
                .join()
                .unwrap();
            server.join().unwrap();
            elapsed
        })
    });
    drop(rt);

    let rt = tokio_rt(WORKERS);
    g.bench_function("tokio_2w", |b| {
        b.iter_custom(|iters| {
            let (req_tx, req_rx) = fmpsc::unbounded::<Request>();
            let server = rt.spawn(serve(req_rx));
            let elapsed = rt
                .block_on(rt.spawn(request_round_trips(req_tx, iters)))
                .unwrap();
            rt.block_on(server).unwrap();
            elapsed
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------
// tracing_cost: yield_many on green threads under different subscribers, each scoped
// with set_default on the bench thread (green threads run with the dispatcher that was
// the default where they were spawned).
//
// This group must run last: once any dispatcher has been set (even a scoped one that is
// gone again), tracing's `has_been_set` stays true and greenrt's switch takes its slower
// path for the rest of the process. `none_never_set` runs first and `none_after_scoped`
// last to show that difference. With `--no-default-features` only `feature_off` runs.

fn tracing_cost(c: &mut Criterion) {
    let mut g = group(c, "tracing_cost");
    let (tx, rx) = mpsc::sync_channel::<()>(TASKS);
    let rt = greenrt_rt(WORKERS);

    #[cfg(not(feature = "tracing"))]
    g.bench_function("feature_off", |b| {
        b.iter(|| green_yield_many(&rt, &tx, &rx))
    });

    #[cfg(feature = "tracing")]
    {
        if tracing::dispatcher::has_been_set() {
            eprintln!("tracing_cost: a dispatcher was set before none_never_set ran");
        }
        g.bench_function("none_never_set", |b| {
            b.iter(|| green_yield_many(&rt, &tx, &rx))
        });

        {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::INFO)
                .with_writer(std::io::sink)
                .finish();
            let _default = tracing::subscriber::set_default(subscriber);
            g.bench_function("fmt_info_sink", |b| {
                b.iter(|| green_yield_many(&rt, &tx, &rx))
            });
        }

        {
            // A bare registry enables and records every span, greenrt's per green thread
            // included (entered and exited at every switch). No counting layer on top:
            // shared counters bumped at every enter and exit from both workers would
            // measure their own cache-line contention, not greenrt.
            let _default = tracing::subscriber::set_default(tracing_subscriber::registry());
            g.bench_function("registry_all_spans", |b| {
                b.iter(|| green_yield_many(&rt, &tx, &rx))
            });
            // What was measured did record greenrt's spans: a green thread's current
            // span is its own `green` span.
            let current = rt
                .spawn(|| tracing::Span::current().metadata().map(|m| m.name()))
                .join()
                .unwrap();
            assert_eq!(
                current,
                Some("green"),
                "the registry did not see green spans"
            );
        }

        {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(std::io::sink)
                .finish();
            let _default = tracing::subscriber::set_default(subscriber);
            g.bench_function("fmt_trace_sink", |b| {
                b.iter(|| green_yield_many(&rt, &tx, &rx))
            });
        }

        g.bench_function("none_after_scoped", |b| {
            b.iter(|| green_yield_many(&rt, &tx, &rx))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    spawn_many,
    spawn_many_remote,
    yield_many,
    ping_pong,
    chained_spawn,
    switch,
    enter,
    spawn_join,
    bridge,
    // Last: it sets tracing dispatchers (see above).
    tracing_cost,
);
criterion_main!(benches);
