//! Control blocks of finished green threads, kept by their worker for the next spawn of
//! the same closure type.
//!
//! A spawn allocates one control block (`Arc<GreenThread<SpawnCell<F, T>>>`, a few
//! hundred bytes) and its last owner frees it. When a thousand green threads are in
//! flight, as in `ping_pong`, those blocks miss glibc's per-thread cache: the `malloc`
//! and `free` go through the arena's bins, about 600 instructions and several cache
//! misses per pair of green threads. A worker that holds the last reference to a
//! finished green thread therefore keeps the block here, and a spawn on that worker of a
//! green thread with the same body type (the same closure and result types) writes the
//! new control block over it instead of allocating.
//!
//! This module owns that cache and its limits. It must never keep a block that anybody
//! else can reach: a block enters only while the worker's `Arc` is the only reference
//! (`Arc::get_mut`), so no JoinHandle, waker or queue can see it again, and only after
//! [`GreenThread::vacate`] dropped everything its green thread left behind (its name,
//! home, tracing span, any leftover outcome), at the moment the last `Arc` would have
//! dropped it before. A block leaves only for a spawn of exactly its body type
//! ([`GreenThread::downcast`] checks), which overwrites the whole value.
//!
//! What it keeps follows demand:
//! - Only while spawns on this worker outnumber the green threads that finished here
//!   (`Recycler::wanted`). A worker fed from the injector (green threads spawned by
//!   `Runtime::run` or plain threads), or whose spawns are joined (their blocks are
//!   still referenced when they finish), keeps nothing.
//! - At most about [`MAX_BYTES`] per worker, blocks of at most [`MAX_BLOCK`] bytes, of
//!   at most [`MAX_KINDS`] body types.
//! - Blocks nobody took for a whole period ([`PERIOD`], the stack pool's) are freed, half
//!   of them per period, at most [`TRIM_BATCH`] at a time ([`Recycler::trim_if_due`],
//!   from the worker's loop and before it parks): the cache empties within a few tens
//!   of seconds of a burst, and a body type nobody spawns any more gives its room back.
//!
//! The rest is freed with the worker.

use crate::green::{Body, GreenThread};
use std::any::TypeId;
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes of control blocks one worker keeps (as `size_of_val` counts them: allocator
/// overhead comes on top): some 2,500 blocks of a small closure, sized like the stack
/// pool ([`crate::stack::POOL_CAPACITY`]) for a thousand green threads in flight per
/// worker, and small beside the pages of the stacks that pool keeps. (`ping_pong` with
/// 256 KiB here kept too few: 0.70x of tokio against 0.49–0.56x.)
pub(crate) const MAX_BYTES: usize = 1024 * 1024;
/// Larger blocks (closures that capture big values by value) are freed as usual.
pub(crate) const MAX_BLOCK: usize = 4096;
/// Distinct body types kept at once; a kind whose shelf is empty gives its place up.
pub(crate) const MAX_KINDS: usize = 8;
/// How long a block may sit unused before a trim may free it.
pub(crate) const PERIOD: Duration = crate::stack::POOL_DECAY_PERIOD;
/// Most blocks one trim frees: a few tens of microseconds of `free`.
pub(crate) const TRIM_BATCH: usize = 256;

/// One worker's cache of vacated control blocks.
#[derive(Default)]
pub(crate) struct Recycler {
    /// Bytes of the blocks on the shelves (outside the `RefCell`: a full cache turns a
    /// block away with one read).
    bytes: Cell<usize>,
    /// Spawns on this worker, less the green threads that finished here since (each
    /// finish counts, kept or not); never below zero. A block is kept only while this
    /// is positive.
    wanted: Cell<usize>,
    /// When the current trim period ends; `None` while the cache is empty.
    period_end: Cell<Option<Instant>>,
    /// Borrowed only briefly, and never while dropping anything: the spawn that takes a
    /// block and the worker that keeps one may be re-entered by user code only outside
    /// the borrow. A failed `try_borrow_mut` just skips the cache.
    shelves: RefCell<Vec<Shelf>>,
}

/// The blocks of one body type, oldest first.
struct Shelf {
    body_type: TypeId,
    /// `size_of_val` of each block (the same for one body type).
    size: usize,
    blocks: Vec<Arc<GreenThread>>,
    /// The fewest blocks this shelf held since the current trim period began: the
    /// oldest `low_water` blocks sat unused for all of it.
    low_water: usize,
}

impl Recycler {
    /// Keeps the control block of a green thread that finished on this worker if there
    /// is demand, the caller's `Arc` is the last reference and there is room; otherwise
    /// drops it here, as the caller would.
    pub(crate) fn keep(&self, mut green: Arc<GreenThread>) {
        // Checked first, so a worker that nobody spawns on, or whose cache is full,
        // pays only these reads on top of the usual free.
        let wanted = self.wanted.get();
        if wanted == 0 {
            return;
        }
        self.wanted.set(wanted - 1);
        let size = std::mem::size_of_val::<GreenThread>(&green);
        if size > MAX_BLOCK || self.bytes.get() + size > MAX_BYTES {
            return;
        }
        let Some(block) = Arc::get_mut(&mut green) else {
            return;
        };
        let Some(body_type) = block.vacate() else {
            return;
        };
        // A block that finds no shelf comes back out and is dropped after the borrow
        // ends (it holds nothing of the user's any more, but freeing needs no borrow).
        let _refused = self.shelve(body_type, size, green);
    }

    fn shelve(
        &self,
        body_type: TypeId,
        size: usize,
        green: Arc<GreenThread>,
    ) -> Option<Arc<GreenThread>> {
        let Ok(mut shelves) = self.shelves.try_borrow_mut() else {
            return Some(green);
        };
        let index = match shelves.iter().position(|s| s.body_type == body_type) {
            Some(index) => index,
            None if shelves.len() < MAX_KINDS => {
                shelves.push(Shelf::new(body_type, size));
                shelves.len() - 1
            }
            None => match shelves.iter().position(|s| s.blocks.is_empty()) {
                Some(index) => {
                    shelves[index] = Shelf::new(body_type, size);
                    index
                }
                None => return Some(green),
            },
        };
        shelves[index].blocks.push(green);
        self.bytes.set(self.bytes.get() + size);
        None
    }

    /// Counts a green thread that finished here whose block its joiner still holds
    /// (`Core::run_child_inline`): it used up its spawn's demand without a `keep`.
    pub(crate) fn finished_held(&self) {
        self.wanted.set(self.wanted.get().saturating_sub(1));
    }

    /// A vacated control block whose body type is `B`, if this worker keeps one.
    pub(crate) fn take<B: Body>(&self) -> Option<Arc<GreenThread<B>>> {
        self.wanted.set(self.wanted.get() + 1);
        let body_type = TypeId::of::<B>();
        let mut shelves = self.shelves.try_borrow_mut().ok()?;
        let shelf = shelves.iter_mut().find(|s| s.body_type == body_type)?;
        let block = shelf.blocks.pop()?;
        shelf.low_water = shelf.low_water.min(shelf.blocks.len());
        self.bytes.set(self.bytes.get() - shelf.size);
        drop(shelves);
        // Shelved by its own body type: the check inside cannot fail.
        GreenThread::downcast(block).ok()
    }

    /// When a period has ended, frees half of each shelf's blocks that sat unused for
    /// all of it (rounded up; at most [`TRIM_BATCH`] in all) and starts the next.
    /// Reads the clock only when the cache holds something. Returns when the caller
    /// should call again, `None` while the cache is empty: a worker about to park
    /// sleeps no later than that.
    pub(crate) fn trim_if_due(&self, now: impl FnOnce() -> Instant) -> Option<Instant> {
        if self.bytes.get() == 0 {
            self.period_end.set(None);
            return None;
        }
        let now = now();
        match self.period_end.get() {
            Some(end) if now < end => return Some(end),
            Some(_) => self.trim_unused(),
            None => {}
        }
        if self.bytes.get() == 0 {
            self.period_end.set(None);
            return None;
        }
        if let Ok(mut shelves) = self.shelves.try_borrow_mut() {
            for shelf in shelves.iter_mut() {
                shelf.low_water = shelf.blocks.len();
            }
        }
        let end = now + PERIOD;
        self.period_end.set(Some(end));
        Some(end)
    }

    fn trim_unused(&self) {
        let mut freed = Vec::new();
        if let Ok(mut shelves) = self.shelves.try_borrow_mut() {
            for shelf in shelves.iter_mut() {
                let unused = shelf.low_water.min(shelf.blocks.len());
                let free = unused.div_ceil(2).min(TRIM_BATCH - freed.len());
                self.bytes.set(self.bytes.get() - free * shelf.size);
                freed.extend(shelf.blocks.drain(..free));
            }
        }
        // Dropped here, after the borrow: freeing a vacated block runs no user code,
        // but nothing is dropped under the borrow on principle.
        drop(freed);
    }

    /// How many blocks are kept, of any type.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shelves.borrow().iter().map(|s| s.blocks.len()).sum()
    }
}

impl Shelf {
    fn new(body_type: TypeId, size: usize) -> Shelf {
        Shelf {
            body_type,
            size,
            blocks: Vec::new(),
            low_water: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Recycler, MAX_BYTES, MAX_KINDS, PERIOD, TRIM_BATCH};
    use crate::green::{test_block, GreenThread, TestBody};
    use crate::runtime::{context, Builder, Runtime};
    use std::future::poll_fn;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
    use std::sync::{Arc, Mutex};
    use std::task::{Poll, Waker};
    use std::time::Instant;

    fn one_worker() -> Runtime {
        Builder::new().worker_threads(1).build().unwrap()
    }

    /// Runs `f` in a green thread on the runtime's one worker, whose cache it inspects.
    fn on_the_worker(f: impl FnOnce() + Send + 'static) {
        one_worker().run(|| crate::spawn(f).join().unwrap());
    }

    /// Blocks kept by the worker this green thread runs on.
    fn kept_here() -> usize {
        context::with_local(|local| local.worker.as_ref().map(|core| core.recycler.len()))
            .flatten()
            .expect("called in a green thread on a worker")
    }

    /// Yields until the worker keeps `n` blocks; panics rather than spin forever.
    fn yield_until_kept(n: usize) {
        for _ in 0..10_000 {
            if kept_here() == n {
                return;
            }
            crate::yield_now();
        }
        panic!(
            "the worker never kept {n} blocks (it keeps {})",
            kept_here()
        );
    }

    /// Every call returns a closure of the same type, so its green threads share a body
    /// type and may reuse each other's blocks.
    fn store(n: u32, out: Arc<AtomicU32>) -> impl FnOnce() -> u32 + Send + 'static {
        move || {
            out.store(n, SeqCst);
            n
        }
    }

    #[test]
    fn a_finished_detached_green_threads_block_is_reused_by_the_next_spawn_of_its_type() {
        on_the_worker(|| {
            let out = Arc::new(AtomicU32::new(0));
            drop(crate::spawn(store(1, out.clone())));
            yield_until_kept(1);
            assert_eq!(out.load(SeqCst), 1);
            let second = crate::spawn(store(2, out.clone()));
            assert_eq!(kept_here(), 0, "the spawn took the kept block");
            assert_eq!(second.join().unwrap(), 2);
            assert_eq!(out.load(SeqCst), 2);
        });
    }

    #[test]
    fn a_block_whose_join_handle_lives_is_not_reused() {
        on_the_worker(|| {
            let out = Arc::new(AtomicU32::new(0));
            let first = crate::spawn(store(1, out.clone()));
            while !first.is_finished() {
                crate::yield_now();
            }
            crate::yield_now();
            assert_eq!(kept_here(), 0, "its JoinHandle still reads the block");
            let second = crate::spawn(store(2, out.clone()));
            assert_eq!(second.join().unwrap(), 2);
            assert_eq!(first.join().unwrap(), 1, "the first outcome survived");
        });
    }

    #[test]
    fn a_reused_block_starts_with_a_fresh_identity() {
        on_the_worker(|| {
            type Seen = Arc<Mutex<Vec<(u64, Option<String>)>>>;
            fn report(seen: Seen) -> impl FnOnce() + Send {
                move || {
                    let me = crate::current().unwrap();
                    let name = me.name().map(str::to_owned);
                    seen.lock().unwrap().push((me.id().as_u64(), name));
                }
            }
            let seen = Arc::new(Mutex::new(Vec::new()));
            let named = crate::Builder::new()
                .name("first".to_string())
                .spawn(report(seen.clone()))
                .unwrap();
            drop(named);
            yield_until_kept(1);
            let second = crate::spawn(report(seen.clone()));
            assert_eq!(kept_here(), 0, "the second took the first's block");
            second.join().unwrap();
            let seen = seen.lock().unwrap();
            assert_eq!(seen[0].1.as_deref(), Some("first"));
            assert_eq!(seen[1].1, None, "the name went with the first green thread");
            assert_ne!(seen[0].0, seen[1].0, "each green thread has its own id");
        });
    }

    #[test]
    fn a_block_whose_waker_is_still_held_is_not_reused() {
        on_the_worker(|| {
            fn keep_waker(
                slot: Arc<Mutex<Option<Waker>>>,
                done: Arc<AtomicBool>,
            ) -> impl FnOnce() + Send {
                move || {
                    crate::block_on(poll_fn(|cx| {
                        *slot.lock().unwrap() = Some(cx.waker().clone());
                        Poll::Ready(())
                    }));
                    done.store(true, SeqCst);
                }
            }
            let slot = Arc::new(Mutex::new(None));
            let done = Arc::new(AtomicBool::new(false));
            drop(crate::spawn(keep_waker(slot.clone(), done.clone())));
            while !done.load(SeqCst) {
                crate::yield_now();
            }
            crate::yield_now();
            assert_eq!(kept_here(), 0, "a waker still points at the block");
            let other = Arc::new(Mutex::new(None));
            crate::spawn(keep_waker(other, Arc::new(AtomicBool::new(false))))
                .join()
                .unwrap();
            // Waking the finished green thread does nothing, and dropping the last
            // reference frees its block as usual.
            slot.lock().unwrap().take().unwrap().wake();
        });
    }

    /// From the host thread of `Runtime::run` on a one-worker runtime: spawns 100
    /// detached green threads through the injector (no worker's cache is asked), waits
    /// until they ran, and returns how many blocks the worker then keeps.
    fn kept_after_injector_work() -> usize {
        let done = Arc::new(AtomicU32::new(0));
        for n in 0..50 {
            drop(crate::spawn(store(n, Arc::new(AtomicU32::new(0)))));
        }
        for _ in 0..50 {
            let done = done.clone();
            drop(crate::spawn(move || {
                done.fetch_add(1, SeqCst);
            }));
        }
        while done.load(SeqCst) < 50 {
            crate::yield_now();
        }
        // Every counting green thread has run, and the one worker reclaimed the last of
        // them (offering its block to the cache) before it could run this one.
        crate::spawn(kept_here).join().unwrap()
    }

    #[test]
    fn a_worker_keeps_no_blocks_of_green_threads_spawned_from_outside_it() {
        one_worker().run(|| assert_eq!(kept_after_injector_work(), 0));
    }

    #[test]
    fn a_worker_whose_spawns_are_joined_keeps_nothing_for_later_injector_work() {
        one_worker().run(|| {
            // A hundred spawn + join on the worker: asked for, but never kept (each
            // JoinHandle still holds its block when its green thread finishes).
            crate::spawn(|| {
                for n in 0..100 {
                    let out = Arc::new(AtomicU32::new(0));
                    assert_eq!(crate::spawn(store(n, out)).join().unwrap(), n);
                }
            })
            .join()
            .unwrap();
            assert_eq!(
                kept_after_injector_work(),
                0,
                "the joined spawns' demand was used up as they finished"
            );
        });
    }

    /// A cache with demand for `wanted` blocks.
    fn wanting(wanted: usize) -> Recycler {
        let recycler = Recycler::default();
        recycler.wanted.set(wanted);
        recycler
    }

    #[test]
    fn nothing_is_kept_without_demand_and_every_finish_uses_demand_up() {
        let recycler = wanting(0);
        recycler.keep(test_block::<1>());
        assert_eq!(recycler.len(), 0);
        let recycler = wanting(2);
        let held = test_block::<1>();
        recycler.keep(held.clone());
        assert_eq!(
            recycler.len(),
            0,
            "still referenced: freed by its last owner"
        );
        recycler.keep(test_block::<1>());
        recycler.keep(test_block::<1>());
        assert_eq!(recycler.len(), 1, "the demand was for two blocks");
        assert!(
            recycler.take::<TestBody<2>>().is_none(),
            "another body type"
        );
        let taken: Arc<GreenThread<TestBody<1>>> = recycler.take::<TestBody<1>>().unwrap();
        assert_eq!(Arc::strong_count(&taken), 1);
        assert_eq!(recycler.len(), 0);
    }

    #[test]
    fn the_cache_holds_at_most_max_bytes_and_max_kinds() {
        let recycler = wanting(usize::MAX);
        let size = std::mem::size_of_val::<GreenThread>(&test_block::<1>());
        for _ in 0..MAX_BYTES / size + 10 {
            recycler.keep(test_block::<1>());
        }
        assert_eq!(recycler.len(), MAX_BYTES / size);
        assert!(recycler.bytes.get() <= MAX_BYTES);

        let recycler = wanting(usize::MAX);
        macro_rules! keep_kinds {
            ($($n:literal)*) => { $( recycler.keep(test_block::<$n>()); )* };
        }
        keep_kinds!(0 1 2 3 4 5 6 7 8);
        assert_eq!(MAX_KINDS, 8);
        assert_eq!(recycler.len(), MAX_KINDS, "a ninth kind finds no shelf");
        assert!(recycler.take::<TestBody<0>>().is_some());
        recycler.keep(test_block::<8>());
        assert!(
            recycler.take::<TestBody<8>>().is_some(),
            "an emptied shelf gives its place up"
        );
    }

    #[test]
    fn blocks_nobody_took_for_a_period_are_freed_half_a_period_in_batches() {
        let recycler = wanting(usize::MAX);
        let kept = 2 * TRIM_BATCH + 100;
        for _ in 0..kept {
            recycler.keep(test_block::<1>());
        }
        let start = Instant::now();
        let end = recycler.trim_if_due(|| start).expect("something to trim");
        assert_eq!(end, start + PERIOD, "the first call starts a period");
        assert_eq!(recycler.trim_if_due(|| start + PERIOD / 2), Some(end));
        assert_eq!(recycler.len(), kept, "nothing freed before the period ends");

        let end = recycler.trim_if_due(|| end).unwrap();
        assert_eq!(
            recycler.len(),
            kept - TRIM_BATCH,
            "at most a batch per trim"
        );
        // Two blocks taken and two kept again during the next period: the two on top
        // were in use, and of the others half is freed when it ends.
        let left = recycler.len();
        drop(recycler.take::<TestBody<1>>());
        drop(recycler.take::<TestBody<1>>());
        recycler.keep(test_block::<1>());
        recycler.keep(test_block::<1>());
        recycler.trim_if_due(|| end);
        let unused = left - 2;
        assert_eq!(recycler.len(), left - unused.div_ceil(2).min(TRIM_BATCH));

        let mut now = end;
        while let Some(next) = recycler.trim_if_due(|| now) {
            assert!(next > now);
            now = next;
        }
        assert_eq!(recycler.len(), 0, "an untouched cache empties");
        assert_eq!(recycler.bytes.get(), 0);
    }
}
