//! The stack pools give memory back: after a burst of green threads, the stacks the
//! burst needed are unmapped once they have sat unused in the pool for a while, on a
//! worker with nothing else to do (it wakes up to trim) and on a busy one. Its own test
//! binary, and each test uses its own stack size, so nothing else maps or frees stacks
//! of that size in the process meanwhile.

mod common;
use common::{stack_mappings, with_watchdog};
use futures::channel::oneshot;
use greenrt::runtime::{Builder, Runtime};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Green threads suspended at once in a burst.
const BURST: usize = 400;
/// Stacks a pool must have unmapped for a test to pass: two trims' worth.
const TRIMMED: u64 = 64;

/// A one-worker runtime whose green stacks have `stack_kib` usable KiB.
fn runtime(stack_kib: u64) -> Runtime {
    Builder::new()
        .worker_threads(1)
        .stack_size(stack_kib as usize * 1024)
        .build()
        .unwrap()
}

/// Runs a burst on `rt`: [`BURST`] green threads, all started (so all on their own
/// stacks) before any finishes; returns once they all have. Their stacks are then in
/// the worker's pool. Returns how many stacks of this size are mapped at that point.
fn burst(rt: &Runtime, stack_kib: u64) -> u64 {
    let (release, waits): (Vec<_>, Vec<_>) = (0..BURST).map(|_| oneshot::channel::<()>()).unzip();
    let greens: Vec<_> = waits
        .into_iter()
        .map(|wait| rt.spawn(move || greenrt::block_on(wait).unwrap()))
        .collect();
    while stack_mappings(stack_kib).count < BURST as u64 {
        std::thread::sleep(Duration::from_millis(10));
    }
    for release in release {
        release.send(()).unwrap();
    }
    for green in greens {
        green.join().unwrap();
    }
    let after = stack_mappings(stack_kib).count;
    assert!(
        after >= BURST as u64 / 2,
        "only {after} of {BURST} stacks were kept for reuse right after the burst"
    );
    after
}

/// Waits (up to a minute) until [`TRIMMED`] of the `after` stacks are unmapped.
fn wait_for_trim(stack_kib: u64, after: u64, which_worker: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut mapped = after;
    while mapped + TRIMMED > after {
        assert!(
            Instant::now() < deadline,
            "{which_worker} worker's pool still holds {mapped} of the {after} stacks a \
             burst left a minute ago: it never trims"
        );
        std::thread::sleep(Duration::from_millis(100));
        mapped = stack_mappings(stack_kib).count;
    }
}

#[test]
fn an_idle_worker_unmaps_the_stacks_a_burst_left_in_its_pool() {
    const STACK_KIB: u64 = 200;
    with_watchdog("the idle trim", Duration::from_secs(120), || {
        let rt = runtime(STACK_KIB);
        let after = burst(&rt, STACK_KIB);
        // Nothing runs now; the worker is parked. Its pool must shrink anyway.
        wait_for_trim(STACK_KIB, after, "an idle");
        // And the pool still serves the next green thread.
        assert_eq!(rt.spawn(|| 7).join().unwrap(), 7);
    });
}

#[test]
fn a_busy_worker_trims_its_pool_too() {
    const STACK_KIB: u64 = 208;
    with_watchdog("the busy trim", Duration::from_secs(120), || {
        let rt = runtime(STACK_KIB);
        // The worker never parks from here on: one green thread yields until told to
        // stop, so only the busy loop's periodic trim can shrink the pool.
        let stop = Arc::new(AtomicBool::new(false));
        let busy = {
            let stop = stop.clone();
            rt.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    greenrt::yield_now();
                }
            })
        };
        let after = burst(&rt, STACK_KIB);
        wait_for_trim(STACK_KIB, after, "a busy");
        stop.store(true, Ordering::Relaxed);
        busy.join().unwrap();
    });
}

/// Touches about `kib` KiB of stack below the caller, a KiB per frame.
#[inline(never)]
fn touch_stack(kib: usize) -> u64 {
    let frame = [kib as u64; 128];
    std::hint::black_box(&frame);
    if kib == 0 {
        return 0;
    }
    touch_stack(kib - 1) + std::hint::black_box(frame[1])
}

#[test]
fn the_pages_a_deep_green_thread_touched_go_back_though_its_stack_stays_pooled() {
    // 9 MiB and 12 KiB: a size nothing else maps.
    const STACK_KIB: u64 = 9 * 1024 + 12;
    let rt = runtime(STACK_KIB);
    rt.spawn(|| touch_stack(8 * 1024)).join().unwrap();
    let after_run = stack_mappings(STACK_KIB);
    assert_eq!(after_run.count, 1, "the stack is pooled, not unmapped");
    assert!(after_run.rss_kib >= 8 * 1024, "{after_run:?}");
    // A pool keeps its last few stacks however long they sit unused; those must still
    // give their pages back. The worker is idle, so it wakes up to do it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = stack_mappings(STACK_KIB);
        assert_eq!(now.count, 1, "the stack stays pooled");
        if now.rss_kib <= 64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "8 MiB of a finished green thread's stack is still resident a minute later: \
             {now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
