//! Measures what a suspended green thread costs: resident memory and kernel mappings
//! per green thread, with N green threads blocked at once.
//!
//! ```text
//! cargo run --release --example footprint -- 10000
//! ```

use futures::channel::oneshot;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let rt = greenrt::runtime::Builder::new()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.run(|| {
        // Warm up: let the workers, allocator and pools reach their steady state.
        for _ in 0..1000 {
            greenrt::spawn(|| ()).join().unwrap();
        }
        let (rss_before, maps_before) = (rss_kib(), mappings());
        let mut releases = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        for _ in 0..n {
            let (tx, rx) = oneshot::channel::<()>();
            releases.push(tx);
            let started = started_tx.clone();
            handles.push(greenrt::spawn(move || {
                started.send(()).unwrap();
                greenrt::block_on(rx).ok();
            }));
        }
        for _ in 0..n {
            while started_rx.try_recv().is_err() {
                greenrt::yield_now();
            }
        }
        let (rss_after, maps_after) = (rss_kib(), mappings());
        println!(
            "{n} suspended green threads: +{} KiB resident ({:.1} KiB each), +{} mappings ({:.2} each)",
            rss_after - rss_before,
            (rss_after - rss_before) as f64 / n as f64,
            maps_after - maps_before,
            (maps_after - maps_before) as f64 / n as f64,
        );
        for tx in releases {
            tx.send(()).ok();
        }
        for h in handles {
            h.join().unwrap();
        }
    });
}
