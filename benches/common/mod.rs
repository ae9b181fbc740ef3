//! Shared pieces of the runtime benches: runtime constructors, group settings, and a
//! tiny yielding future (greenrt has no public async yield).

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Worker threads of the greenrt runtime and of the `tokio_2w` runtime. The machine has
/// 2 cores, so tokio's default (`tokio_default`: one worker per available CPU) is also 2.
pub const WORKERS: usize = 2;

/// A benchmark group with small samples, so the whole `cargo bench` takes a few minutes.
///
/// Flat sampling: every sample runs the same number of iterations, which keeps the slow
/// workloads (tens of milliseconds per iteration) within the measurement time.
pub fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sampling_mode(SamplingMode::Flat);
    group
}

/// A greenrt runtime with `workers` worker threads.
pub fn greenrt_rt(workers: usize) -> greenrt::runtime::Runtime {
    greenrt::runtime::Builder::new()
        .worker_threads(workers)
        .build()
        .expect("build the greenrt runtime")
}

/// A tokio multi-thread runtime with `workers` worker threads.
pub fn tokio_rt(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("build the tokio runtime")
}

/// A tokio multi-thread runtime with tokio's default worker count (the available
/// parallelism: 2 on the 2-core bench machine, so it matches `tokio_rt(2)` there).
pub fn tokio_default_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime")
}

/// Returns `Pending` once, after waking itself: a task-level yield for greenrt future
/// tasks.
#[derive(Default)]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            Poll::Ready(())
        } else {
            self.yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// `YieldNow::default()`, as a function to read like `tokio::task::yield_now()`.
pub fn yield_async() -> YieldNow {
    YieldNow::default()
}
