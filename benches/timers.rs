//! The timer structure's cost per operation with few and with many pending timers.
//!
//! Each runtime thread keeps its pending sleeps in a binary min-heap
//! (`src/time.rs`): insert and fire are O(log n); a cancel only marks the entry and the
//! heap compacts itself when half of it is cancelled (amortised O(1)). The issue asks
//! for O(log n) or better with a million pending timers. Each group measures one
//! operation pair against a heap already holding 1,000, 32,000 and 1,000,000 timers (deadlines
//! spread over the next hour, so none fires):
//!
//! - `insert_cancel`: register a timeout at a random deadline among the pending ones,
//!   then drop it before it fires, the fate of most timeouts. Compactions are part of
//!   the measured cost.
//! - `insert_fire`: register a timer due before every pending one, so the insert sifts
//!   to the top (the O(log n) worst case), then fire it (the pop sifts down: O(log n)).
//!
//! O(log n) means the 1M figure is about log(1M)/log(1k) = 2x the 1k figure at most
//! (plus cache misses: a 1M heap does not fit in cache, a 1k heap does).
//!
//! ```text
//! cargo bench --bench timers                 # a few seconds per group
//! cargo bench --bench timers -- --test       # each benchmark once (CI)
//! ```

// The runtime bench's helpers; this bench uses only `group`.
#[allow(dead_code)]
mod common;

use common::group;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use greenrt::bench::TimerHeap;
use std::time::{Duration, Instant};

const PENDING: [usize; 3] = [1_000, 32_000, 1_000_000];
const SPREAD_NANOS: u64 = 3_600_000_000_000; // one hour

/// A small deterministic generator (xorshift), so every run inserts the same deadlines.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A deadline in the hour after `base + 1 s`.
    fn deadline(&mut self, base: Instant) -> Instant {
        base + Duration::from_secs(1) + Duration::from_nanos(self.next() % SPREAD_NANOS)
    }
}

/// A heap with `n` pending timers, all due in the hour after `base + 1 s`.
fn filled(n: usize, base: Instant, rng: &mut Rng) -> (TimerHeap, Vec<greenrt::bench::TimerEntry>) {
    let mut heap = TimerHeap::new();
    let entries = (0..n).map(|_| heap.insert(rng.deadline(base))).collect();
    (heap, entries)
}

fn insert_cancel(c: &mut Criterion) {
    let mut g = group(c, "timers/insert_cancel");
    for pending in PENDING {
        let base = Instant::now();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut heap, _keep) = filled(pending, base, &mut rng);
        g.bench_with_input(BenchmarkId::from_parameter(pending), &pending, |b, _| {
            b.iter(|| {
                let entry = heap.insert(rng.deadline(base));
                heap.cancel(black_box(entry));
            })
        });
        // Still every pending timer (cancelled ones are compacted away, never the rest).
        assert!(heap.len() >= pending);
    }
    g.finish();
}

fn insert_fire(c: &mut Criterion) {
    let mut g = group(c, "timers/insert_fire");
    for pending in PENDING {
        let base = Instant::now();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let (mut heap, _keep) = filled(pending, base, &mut rng);
        g.bench_with_input(BenchmarkId::from_parameter(pending), &pending, |b, _| {
            b.iter(|| {
                // Due before every pending timer: sifts to the top, then pops.
                let _entry = heap.insert(base);
                let fired = heap.fire_due(black_box(base));
                debug_assert_eq!(fired, 1);
                fired
            })
        });
        assert_eq!(heap.len(), pending);
    }
    g.finish();
}

criterion_group!(benches, insert_cancel, insert_fire);
criterion_main!(benches);
