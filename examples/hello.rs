//! The README demo: 10,000 green threads that sleep, yield, wait on a future and
//! return, on two worker threads.
//!
//! ```text
//! cargo run --release --example hello
//! ```

use std::time::{Duration, Instant};

const GREEN_THREADS: u64 = 10_000;

#[greenrt::main(worker_threads = 2)]
fn main() {
    let start = Instant::now();
    let handles: Vec<_> = (0..GREEN_THREADS)
        .map(|i| {
            greenrt::spawn(move || {
                // Blocking-style calls suspend only this green thread.
                greenrt::sleep(Duration::from_millis(50));
                greenrt::yield_now();
                // Wait on any future: here, one a future task completes.
                let doubled =
                    greenrt::block_on(greenrt::spawn_async(async move { i * 2 })).unwrap();
                (doubled, std::thread::current().id())
            })
        })
        .collect();

    let mut sum = 0;
    let mut workers = std::collections::HashSet::new();
    for handle in handles {
        let (doubled, worker) = handle.join().expect("green thread panicked");
        sum += doubled;
        workers.insert(worker);
    }
    let elapsed = start.elapsed();

    assert_eq!(sum, GREEN_THREADS * (GREEN_THREADS - 1));
    println!(
        "{GREEN_THREADS} green threads each slept 50 ms, yielded and awaited a future task \
         in {elapsed:.1?} on {} worker threads (a thread per sleep, serially, would take {:?})",
        workers.len(),
        Duration::from_millis(50) * GREEN_THREADS as u32,
    );
    println!("sum of results: {sum}");
}
