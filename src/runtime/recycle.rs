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
//! (compared by `TypeId`), which overwrites the whole value.
//!
//! A worker keeps only as many blocks as spawns on it asked for (`Recycler::wanted`):
//! green threads spawned from outside the workers (`Runtime::run`, plain threads) go
//! through the injector, and their blocks are freed as usual.
//!
//! The cache is bounded ([`MAX_BYTES`] per worker, blocks of at most [`MAX_BLOCK`]
//! bytes, [`MAX_KINDS`] body types) and dropped with its worker. Spawns from outside the
//! workers always allocate.

use crate::green::{Body, GreenThread};
use std::any::TypeId;
use std::cell::{Cell, RefCell};
use std::sync::Arc;

/// Bytes of control blocks one worker keeps: some 2,500 blocks of a small closure, sized
/// like the stack pool ([`crate::stack::POOL_CAPACITY`]) for a thousand green threads
/// in flight per worker, and small beside the pages of the stacks that pool keeps.
/// (`ping_pong` with 256 KiB here kept too few: 0.70x of tokio against 0.56x.)
pub(crate) const MAX_BYTES: usize = 1024 * 1024;
/// Larger blocks (closures that capture big values by value) are freed as usual.
pub(crate) const MAX_BLOCK: usize = 4096;
/// Most blocks one [`Recycler::halve`] frees: a few tens of microseconds of `free`.
pub(crate) const TRIM_BATCH: usize = 256;
/// Demand remembered at most (see `Recycler::wanted`): more than the blocks that fit.
const MAX_WANTED: usize = MAX_BYTES / 64;
/// Distinct body types kept at once; a kind whose shelf is empty gives its place up.
pub(crate) const MAX_KINDS: usize = 8;

/// One worker's cache of vacated control blocks.
#[derive(Default)]
pub(crate) struct Recycler {
    /// Bytes of the blocks on the shelves (outside the `RefCell`: a full cache turns a
    /// block away with one read).
    bytes: Cell<usize>,
    /// Spawns on this worker that asked for a block, less the blocks kept since: a
    /// block is kept only while this is positive, so a worker whose green threads were
    /// all spawned from elsewhere (the injector) keeps nothing it would never reuse,
    /// and turns each block away with one read.
    wanted: Cell<usize>,
    /// Borrowed only briefly, and never while dropping anything: the spawn that takes a
    /// block and the worker that keeps one may be re-entered by user code only outside
    /// the borrow. A failed `try_borrow_mut` just skips the cache.
    shelves: RefCell<Shelves>,
}

#[derive(Default)]
struct Shelves {
    kinds: Vec<Shelf>,
}

/// The blocks of one body type.
struct Shelf {
    body_type: TypeId,
    /// `size_of_val` of each block (the same for one body type).
    size: usize,
    blocks: Vec<Arc<GreenThread>>,
}

impl Recycler {
    /// Keeps the control block of a finished green thread if the caller's `Arc` is the
    /// last reference and there is room; otherwise drops it here, as the caller would.
    pub(crate) fn keep(&self, mut green: Arc<GreenThread>) {
        // Checked first, so a worker that nobody spawns on, or whose cache is full,
        // pays only these reads on top of the usual free.
        if self.wanted.get() == 0 {
            return;
        }
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
        let shelves = &mut *shelves;
        let index = match shelves.kinds.iter().position(|s| s.body_type == body_type) {
            Some(index) => index,
            None if shelves.kinds.len() < MAX_KINDS => {
                shelves.kinds.push(Shelf::new(body_type, size));
                shelves.kinds.len() - 1
            }
            None => match shelves.kinds.iter().position(|s| s.blocks.is_empty()) {
                Some(index) => {
                    shelves.kinds[index] = Shelf::new(body_type, size);
                    index
                }
                None => return Some(green),
            },
        };
        shelves.kinds[index].blocks.push(green);
        self.bytes.set(self.bytes.get() + size);
        self.wanted.set(self.wanted.get() - 1);
        None
    }

    /// A vacated control block whose body type is `B`, if this worker keeps one.
    pub(crate) fn take<B: Body>(&self) -> Option<Arc<GreenThread<B>>> {
        self.wanted.set((self.wanted.get() + 1).min(MAX_WANTED));
        let body_type = TypeId::of::<B>();
        let mut shelves = self.shelves.try_borrow_mut().ok()?;
        let shelf = shelves
            .kinds
            .iter_mut()
            .find(|s| s.body_type == body_type)?;
        let block = shelf.blocks.pop()?;
        self.bytes.set(self.bytes.get() - shelf.size);
        drop(shelves);
        // Shelved by its own body type: the check inside cannot fail.
        GreenThread::downcast(block).ok()
    }

    /// Frees half of the blocks of each body type (rounded up), at most [`TRIM_BATCH`]
    /// in all: called each time the worker's stack pool trims, so the cache empties
    /// within about a minute of a burst, and a trim in the middle of a busy worker's
    /// loop frees a bounded number of blocks.
    pub(crate) fn halve(&self) {
        let mut freed = Vec::new();
        if let Ok(mut shelves) = self.shelves.try_borrow_mut() {
            for shelf in &mut shelves.kinds {
                let len = shelf.blocks.len();
                let keep = len - (len - len / 2).min(TRIM_BATCH - freed.len());
                self.bytes.set(self.bytes.get() - (len - keep) * shelf.size);
                freed.extend(shelf.blocks.drain(keep..));
            }
        }
        // Dropped here, after the borrow: freeing a vacated block runs no user code,
        // but nothing is dropped under the borrow on principle.
        drop(freed);
    }

    /// How many blocks are kept, of any type.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shelves
            .borrow()
            .kinds
            .iter()
            .map(|s| s.blocks.len())
            .sum()
    }
}

impl Shelf {
    fn new(body_type: TypeId, size: usize) -> Shelf {
        Shelf {
            body_type,
            size,
            blocks: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_BYTES, TRIM_BATCH};
    use crate::runtime::{context, Builder, Runtime};
    use std::future::poll_fn;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
    use std::sync::{Arc, Mutex};
    use std::task::{Poll, Waker};

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
            crate::spawn(report(seen.clone())).join().unwrap();
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

    #[test]
    fn a_worker_keeps_no_blocks_of_green_threads_spawned_from_outside_it() {
        let rt = one_worker();
        rt.run(|| {
            let ran = Arc::new(AtomicU32::new(0));
            for n in 0..100 {
                // From the host thread: no worker's cache was asked.
                drop(crate::spawn(store(n, ran.clone())));
            }
            let done = Arc::new(AtomicU32::new(0));
            for _ in 0..100 {
                let done = done.clone();
                drop(crate::spawn(move || {
                    done.fetch_add(1, SeqCst);
                }));
            }
            while done.load(SeqCst) < 100 {
                crate::yield_now();
            }
            // The worker reclaimed the last of them before it could run this one.
            let kept = crate::spawn(kept_here).join().unwrap();
            assert_eq!(kept, 0);
        });
    }

    #[test]
    fn the_cache_is_bounded_and_halves_when_the_stack_pool_trims() {
        on_the_worker(|| {
            fn count(ran: Arc<AtomicU32>) -> impl FnOnce() + Send {
                move || {
                    ran.fetch_add(1, SeqCst);
                }
            }
            let ran = Arc::new(AtomicU32::new(0));
            drop(crate::spawn(count(ran.clone())));
            yield_until_kept(1);
            let block =
                context::with_local(|local| local.worker.as_ref().unwrap().recycler.bytes.get())
                    .unwrap();
            let fits = MAX_BYTES / block;
            let spawned = fits + 100;
            for _ in 0..spawned {
                drop(crate::spawn(count(ran.clone())));
            }
            // None of them blocks, so they finish one after another on one stack.
            for _ in 0..100_000 {
                if ran.load(SeqCst) == spawned as u32 + 1 && kept_here() == fits {
                    break;
                }
                crate::yield_now();
            }
            assert_eq!(ran.load(SeqCst), spawned as u32 + 1);
            assert_eq!(kept_here(), fits, "no more than {MAX_BYTES} bytes kept");
            context::with_local(|local| local.worker.as_ref().unwrap().recycler.halve());
            assert_eq!(
                kept_here(),
                fits - TRIM_BATCH,
                "one trim frees a bounded batch"
            );
            while kept_here() > 3 {
                context::with_local(|local| local.worker.as_ref().unwrap().recycler.halve());
            }
            context::with_local(|local| local.worker.as_ref().unwrap().recycler.halve());
            assert_eq!(kept_here(), 1, "half of 2 or 3, rounded up, freed");
        });
    }
}
