//! The stack pools give memory back: after a burst of green threads, the stacks the
//! burst needed are unmapped once they have sat unused in the pool for a while, even on
//! a worker with nothing else to do (it wakes up to trim). Its own test binary, so
//! nothing else maps or frees stacks of this size in the process meanwhile.

mod common;
use common::{stack_mappings, with_watchdog};
use futures::channel::oneshot;
use greenrt::runtime::Builder;
use std::time::{Duration, Instant};

/// A stack size nothing else in this process maps, so smaps counts only this
/// runtime's green stacks.
const STACK_KIB: u64 = 200;
const BURST: usize = 400;

#[test]
fn an_idle_worker_unmaps_the_stacks_a_burst_left_in_its_pool() {
    with_watchdog("the burst", Duration::from_secs(120), || {
        let rt = Builder::new()
            .worker_threads(1)
            .stack_size(STACK_KIB as usize * 1024)
            .build()
            .unwrap();
        // A burst: BURST green threads suspended at once, each on its own stack.
        let (release, waits): (Vec<_>, Vec<_>) =
            (0..BURST).map(|_| oneshot::channel::<()>()).unzip();
        let (arrived_tx, arrived) = std::sync::mpsc::channel();
        let greens: Vec<_> = waits
            .into_iter()
            .map(|wait| {
                let arrived_tx = arrived_tx.clone();
                rt.spawn(move || {
                    arrived_tx.send(()).unwrap();
                    greenrt::block_on(wait).unwrap();
                })
            })
            .collect();
        for _ in 0..BURST {
            arrived.recv().unwrap();
        }
        let during = stack_mappings(STACK_KIB).count;
        assert!(
            during >= BURST as u64,
            "{during} stacks mapped while {BURST} green threads wait"
        );
        for release in release {
            release.send(()).unwrap();
        }
        for green in greens {
            green.join().unwrap();
        }
        // Finished: their stacks went to the worker's pool, still mapped.
        let after = stack_mappings(STACK_KIB).count;
        assert!(
            after >= BURST as u64 / 2,
            "only {after} of {BURST} stacks were kept for reuse right after the burst"
        );
        // Nothing runs now; the worker is parked. Its pool must shrink anyway.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut now_mapped = after;
        while now_mapped + 64 > after {
            assert!(
                Instant::now() < deadline,
                "the idle worker's pool still holds {now_mapped} of the {after} stacks \
                 the burst left a minute ago: it never trims"
            );
            std::thread::sleep(Duration::from_millis(100));
            now_mapped = stack_mappings(STACK_KIB).count;
        }
        // And the pool still serves the next green thread.
        assert_eq!(rt.spawn(|| 7).join().unwrap(), 7);
    });
}

#[test]
fn a_busy_worker_trims_its_pool_too() {
    // Another size than the test above, which runs at the same time in this process.
    const BUSY_STACK_KIB: u64 = 208;
    with_watchdog("the busy trim", Duration::from_secs(120), || {
        let rt = Builder::new()
            .worker_threads(1)
            .stack_size(BUSY_STACK_KIB as usize * 1024)
            .build()
            .unwrap();
        // A burst of green threads that are all started (so all have stacks) before
        // any of them finishes.
        let (release, waits): (Vec<_>, Vec<_>) =
            (0..BURST).map(|_| oneshot::channel::<()>()).unzip();
        let greens: Vec<_> = waits
            .into_iter()
            .map(|wait| rt.spawn(move || greenrt::block_on(wait).unwrap()))
            .collect();
        while stack_mappings(BUSY_STACK_KIB).count < BURST as u64 {
            std::thread::sleep(Duration::from_millis(10));
        }
        // The worker never parks from here on: one green thread yields until told to
        // stop, so only the busy loop's periodic trim can shrink the pool.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy = {
            let stop = stop.clone();
            rt.spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    greenrt::yield_now();
                }
            })
        };
        for release in release {
            release.send(()).unwrap();
        }
        for green in greens {
            green.join().unwrap();
        }
        let after = stack_mappings(BUSY_STACK_KIB).count;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut now_mapped = after;
        while now_mapped + 64 > after {
            assert!(
                Instant::now() < deadline,
                "a busy worker's pool still holds {now_mapped} of the {after} stacks a \
                 burst left a minute ago: its loop never trims"
            );
            std::thread::sleep(Duration::from_millis(100));
            now_mapped = stack_mappings(BUSY_STACK_KIB).count;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        busy.join().unwrap();
    });
}
