//! Green thread stacks: mapping, guard pages, the per-worker pool and the live budget.
//!
//! This module owns every `mmap`/`munmap` of a stack. It must never free a stack that a
//! green thread might still return to: callers hand a stack back (to [`StackPool::put`]
//! or by dropping it) only after its green thread has finished or unwound.
//!
//! - A [`Stack`] is one `mmap(MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)`; its lowest
//!   page is `PROT_NONE`, so running off the end faults instead of corrupting memory, and
//!   `MADV_NOHUGEPAGE` keeps a transparent huge page (2 MiB of real memory) from ever
//!   backing it. Pages are committed only when touched. One more page on top holds the
//!   stack's colour: where in that page the green thread's stack begins, so the hot
//!   frames of thousands of green threads spread over all of the CPU caches' sets
//!   instead of piling into the few that one in-page offset selects.
//! - The [`StackPool`] keeps a bounded number of finished stacks per worker, with the
//!   pages they touched, so a short green thread costs no system call. It follows
//!   demand down as well as up: of the stacks that sat unused in the pool for a whole
//!   [`POOL_DECAY_PERIOD`], half of those above a small floor are unmapped each period
//!   ([`StackPool::trim_if_due`]), so the memory a burst of green threads needed goes
//!   back to the system within about 40 seconds of the burst (a full pool), instead of
//!   staying at the process's all-time peak. The stacks kept at the floor give back
//!   their pages instead, all but the top 16 KiB, once they sat unused for a period:
//!   a deep green thread's pages do not stay resident for the runtime's life.
//! - Each stack is two kernel mappings and `vm.max_map_count` bounds mappings per
//!   process. Stacks are mapped lazily, at first run, so `spawn` reserves a place in a
//!   live budget instead ([`Reservation`]): running out is an `io::Error` at spawn, never
//!   a crash at first run.
//! - Every mapped stack is registered with valgrind (`valgrind.rs`) so memcheck takes a
//!   switch onto it for a stack switch; the registration lives exactly as long as the
//!   mapping (pooled stacks stay registered) and is a no-op outside valgrind.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Default usable size of a green stack (virtual: only touched pages cost memory).
pub(crate) const DEFAULT_STACK_SIZE: usize = 256 * 1024;
/// Smallest usable stack size accepted by the builders.
pub(crate) const MIN_STACK_SIZE: usize = 16 * 1024;
/// Largest usable stack size accepted by the builders.
pub(crate) const MAX_STACK_SIZE: usize = 1024 * 1024 * 1024;
/// Finished stacks kept per worker for reuse. Sized for bursts: a workload with a
/// thousand green threads blocked at once per worker needs a thousand stacks again
/// right after they finish (benches: ping_pong), and mapping one costs four system
/// calls and a page fault.
pub(crate) const POOL_CAPACITY: usize = 1024;
/// Finished stacks kept by all pools of the process together; their mappings are set
/// aside from the live budget.
pub(crate) const POOL_TOTAL_CAPACITY: usize = 4096;

/// How long a pooled stack may sit unused before its pool may unmap it.
pub(crate) const POOL_DECAY_PERIOD: Duration = Duration::from_secs(1);
/// Stacks a pool keeps however long they sit unused: enough that a worker coming back
/// from a quiet spell spawns its first green threads without a system call.
const POOL_FLOOR: usize = 16;
/// Most stacks one trim unmaps. An `munmap` costs the worker microseconds (the kernel
/// flushes the other CPUs' TLBs of this address space), and a trim can run in the
/// middle of a busy worker's loop: this bounds the pause to about a tenth of a
/// millisecond.
const TRIM_BATCH: usize = 32;

/// Stacks currently held by all pools.
static POOLED: AtomicUsize = AtomicUsize::new(0);

/// The system page size.
pub(crate) fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            page as usize
        } else {
            4096
        }
    })
}

/// Checks a user-supplied stack size and rounds it up to whole pages. `setting` names the
/// builder setting in the error message. (Small stacks are fine for panics too: the
/// panic hook of a green thread runs on another stack, see `panic_hook.rs`.)
pub(crate) fn validate_stack_size(bytes: usize, setting: &str) -> io::Result<usize> {
    if !(MIN_STACK_SIZE..=MAX_STACK_SIZE).contains(&bytes) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{setting}({bytes}) is out of range: a green thread stack must be between \
                 16 KiB ({MIN_STACK_SIZE}) and 1 GiB ({MAX_STACK_SIZE}) bytes"
            ),
        ));
    }
    let page = page_size();
    Ok(bytes.div_ceil(page) * page)
}

/// One mapped green stack: a guard page at the bottom, `usable` bytes above it, and a
/// colour page on top, of which the green thread uses only the part below its colour.
///
/// The colour staggers where each stack's frames fall within a page. CPU caches pick a
/// line's set from its address bits, the in-page offset among them. Without colours
/// every green thread's hot frames (the wait it sleeps in, its loop's locals) sit at
/// the same in-page offsets, so the hot lines of all of them compete for the same few
/// sets while the rest of the cache stays empty: under callgrind's model of this
/// EPYC's 1 MiB L2, `http_hello` at 300 connections missed it 13.6 times per request
/// plain and 0.5 times coloured. Async tasks get the same spread from the allocator.
pub(crate) struct Stack {
    base: *mut u8,
    mapped: usize,
    /// The usable range's valgrind stack id (0 outside valgrind).
    valgrind_id: usize,
}

// SAFETY: a Stack is an owned memory mapping, like a Box<[u8]>; nothing about it is tied
// to the thread that mapped it.
unsafe impl Send for Stack {}

impl Stack {
    /// Maps a stack with `usable` bytes (a multiple of the page size) above a guard page.
    pub(crate) fn new(usable: usize) -> io::Result<Stack> {
        let page = page_size();
        debug_assert_eq!(usable % page, 0);
        // Guard page, usable range, colour page.
        let mapped = usable + 2 * page;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing
        // touches no existing memory.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            let err = io::Error::last_os_error();
            return Err(io::Error::new(
                err.kind(),
                format!(
                    "greenrt could not map a {} KiB green thread stack: {err}; lower the \
                     stack size, raise `vm.max_map_count` or free memory",
                    usable / 1024
                ),
            ));
        }
        let base = base as *mut u8;
        // The usable range only: the guard page is never a valid stack pointer, and
        // memcheck then reports a read of it as what it is.
        // SAFETY: the first page of our own mapping.
        let usable_start = unsafe { base.add(page) };
        // SAFETY: one past the end of our own mapping.
        let end = unsafe { base.add(mapped) };
        // Registered before anything can fail, so Drop always has the id to deregister.
        let valgrind_id = crate::valgrind::stack_register(usable_start, end);
        let stack = Stack {
            base,
            mapped,
            valgrind_id,
        };
        // Advise before protecting the guard: the advice applies to one mapping, and
        // mprotect then splits it into exactly two (guard + usable).
        // SAFETY: [base, base + mapped) is the mapping we just created.
        let advised = unsafe { libc::madvise(base.cast(), mapped, libc::MADV_NOHUGEPAGE) };
        // SAFETY: the first page of our own mapping; nothing lives there yet.
        let guarded = unsafe { libc::mprotect(base.cast(), page, libc::PROT_NONE) };
        if advised != 0 || guarded != 0 {
            let err = io::Error::last_os_error();
            // Splitting the mapping in two fails with ENOMEM at the map-count limit.
            let hint = if err.raw_os_error() == Some(libc::ENOMEM) {
                "; raise `vm.max_map_count` (sysctl -w vm.max_map_count=262144) or let some \
                 green threads finish"
            } else {
                ""
            };
            return Err(io::Error::new(
                err.kind(),
                format!("greenrt could not set up a green thread stack's guard page: {err}{hint}"),
            ));
        }
        Ok(stack)
    }

    /// Where the green thread's stack begins (exclusive, 64-byte aligned): its colour
    /// ([`color_of`] the end of the mapping) below that end. Stacks grow down from here,
    /// through the rest of the colour page and the whole usable range.
    pub(crate) fn top(&self) -> *mut u8 {
        let end = self.base as usize + self.mapped;
        let color = color_of(end, page_size());
        // SAFETY: a colour is less than a page, so this lies inside our own mapping.
        unsafe { self.base.add(self.mapped - color) }
    }

    /// The usable size in bytes the stack was asked for, excluding the guard and colour
    /// pages: at least this much lies between [`Stack::top`] and the guard page.
    pub(crate) fn usable(&self) -> usize {
        self.mapped - 2 * page_size()
    }

    /// The id valgrind gave this stack's registration (0 outside valgrind).
    pub(crate) fn valgrind_id(&self) -> usize {
        self.valgrind_id
    }

    /// The guard page's address range: a fault in it is a stack overflow.
    pub(crate) fn guard(&self) -> std::ops::Range<usize> {
        self.base as usize..self.base as usize + page_size()
    }

    /// Gives the pages of a pooled stack back to the system, all but the top
    /// [`KEEP_RESIDENT`] bytes (where a shallow green thread runs): a stack that a deep
    /// green thread used keeps every page it touched until then. The range reads as
    /// zeros when next touched. Only for stacks nobody runs on.
    fn release_pages(&self) {
        let usable = self.usable();
        if usable <= KEEP_RESIDENT {
            return;
        }
        let start = self.guard().end as *mut libc::c_void;
        // SAFETY: [start, start + usable - KEEP_RESIDENT) lies inside the usable range of
        // our own private anonymous mapping, and the pool holds this stack, so no green
        // thread runs on it: discarding its contents loses nothing anyone will read.
        unsafe { libc::madvise(start, usable - KEEP_RESIDENT, libc::MADV_DONTNEED) };
    }
}

/// What [`Stack::release_pages`] leaves resident at the top of a pooled stack's usable
/// range (the colour page above it stays too).
const KEEP_RESIDENT: usize = 16 * 1024;

/// The colour of the stack whose mapping ends at `end`: a whole number of cache lines
/// below one page, drawn from the address (Fibonacci hashing of the page number, whose
/// top bits are the best mixed), so neighbouring stacks get unrelated colours without a
/// shared counter.
fn color_of(end: usize, page: usize) -> usize {
    const LINE: usize = 64;
    let lines_per_page = page / LINE;
    let mixed = (end / page).wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as usize);
    (mixed >> (usize::BITS - lines_per_page.trailing_zeros())) * LINE
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Before the unmap: the range may be mapped again at once (by another thread) and
        // registered as a new stack, which must not overlap a stale registration.
        crate::valgrind::stack_deregister(self.valgrind_id);
        // SAFETY: we own the mapping and, by this module's contract, no green thread can
        // run on it any more.
        unsafe { libc::munmap(self.base.cast(), self.mapped) };
    }
}

/// Places in [`POOL_TOTAL_CAPACITY`] a pool takes from (or gives back to) the shared
/// count at a time. Stacks go in and out of pools at every spawn and finish on every
/// worker at once; one shared count bumped for each would be a cache line the workers
/// pass back and forth.
const POOL_PLACES_BATCH: usize = 32;

/// A worker's cache of finished stacks of the runtime's default size.
///
/// Kept last in, first out: the stack on top was used last, so its pages are the
/// likeliest to be in cache, and the bottom entries are the ones that sat unused
/// longest. `low_water` tracks how deep takes reached since the current decay period
/// began; everything below it has not been touched for that whole period.
pub(crate) struct StackPool {
    size: usize,
    stacks: Vec<Stack>,
    /// Places this pool holds in [`POOLED`] with no stack in them yet: `POOLED` is the
    /// sum over all pools of `stacks.len() + spare`, so it bounds what they can hold.
    spare: usize,
    /// The fewest stacks the pool held since the current decay period began: the
    /// bottom `low_water` stacks sat unused for all of it.
    low_water: usize,
    /// When the current decay period ends; `None` while there is nothing to trim (the
    /// pool at or below its floor, and every stack in it already released), so an idle
    /// worker need not wake up for it.
    period_end: Option<Instant>,
    /// The bottom `released` stacks sat unused for a whole period and had their pages
    /// given back ([`Stack::release_pages`]); they stay so until taken. This is how the
    /// floor's stacks, which are never unmapped, give back what a deep green thread
    /// touched.
    released: usize,
}

impl StackPool {
    pub(crate) fn new(size: usize) -> StackPool {
        StackPool {
            size,
            stacks: Vec::new(),
            spare: 0,
            low_water: 0,
            period_end: None,
            released: 0,
        }
    }

    /// A stack of `usable` bytes: from the pool when it has one of that size.
    pub(crate) fn take(&mut self, usable: usize) -> io::Result<Stack> {
        if usable == self.size {
            if let Some(stack) = self.stacks.pop() {
                self.low_water = self.low_water.min(self.stacks.len());
                self.released = self.released.min(self.stacks.len());
                self.spare += 1;
                self.give_back_spare_places();
                return Ok(stack);
            }
        }
        Stack::new(usable)
    }

    /// Returns a batch of spare places to [`POOLED`] when more than two piled up.
    fn give_back_spare_places(&mut self) {
        while self.spare > 2 * POOL_PLACES_BATCH {
            POOLED.fetch_sub(POOL_PLACES_BATCH, Ordering::Relaxed);
            self.spare -= POOL_PLACES_BATCH;
        }
    }

    /// Unmaps half of the stacks above [`POOL_FLOOR`] that sat unused for the whole
    /// decay period just ended (rounded up, at most [`TRIM_BATCH`]) and starts the
    /// next period. Halving rather than unmapping them all keeps a cushion
    /// for load that comes back in waves, and still brings a full pool (1,024) down to
    /// its floor within some 36 periods of the load going away (30 capped trims, then
    /// six halvings).
    ///
    /// Cheap when nothing is due (no clock read when the pool is at its floor with every
    /// stack released). Returns when the caller should call again, `None` while there is
    /// nothing to trim: a worker about to park sleeps no later than that.
    pub(crate) fn trim_if_due(&mut self, now: impl FnOnce() -> Instant) -> Option<Instant> {
        if self.has_trim_work() {
            let now = now();
            match self.period_end {
                Some(end) if now < end => return Some(end),
                Some(_) => self.trim_unused(),
                None => {}
            }
            if self.has_trim_work() {
                return Some(self.start_period(now));
            }
        }
        self.period_end = None;
        None
    }

    /// Whether a trim may still have something to do: stacks above the floor to unmap,
    /// or stacks whose pages were not released yet.
    fn has_trim_work(&self) -> bool {
        self.stacks.len() > POOL_FLOOR || self.released < self.stacks.len()
    }

    /// The trim itself, of the stacks that sat unused all period (the bottom
    /// `low_water`): unmaps half of those above the floor, and releases the pages of
    /// those that stay and were not released yet.
    fn trim_unused(&mut self) {
        let unused = self.low_water.min(self.stacks.len());
        let unmap = unused
            .saturating_sub(POOL_FLOOR)
            .div_ceil(2)
            .min(TRIM_BATCH);
        drop(self.stacks.drain(..unmap));
        self.spare += unmap;
        self.give_back_spare_places();
        self.released = self.released.saturating_sub(unmap);
        let still_unused = unused - unmap;
        // At most a batch per trim, as for unmapping (each is a system call).
        let release_end = still_unused.min(self.released + TRIM_BATCH);
        for stack in self
            .stacks
            .get(self.released..release_end)
            .unwrap_or_default()
        {
            stack.release_pages();
        }
        self.released = self.released.max(release_end);
    }

    fn start_period(&mut self, now: Instant) -> Instant {
        let end = now + POOL_DECAY_PERIOD;
        self.low_water = self.stacks.len();
        self.period_end = Some(end);
        end
    }

    /// How many stacks the pool holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.stacks.len()
    }

    /// Returns a stack whose green thread has finished. Unmapped when this pool or all
    /// pools together are full, or the size is not the pooled one.
    pub(crate) fn put(&mut self, stack: Stack) {
        if stack.usable() != self.size || self.stacks.len() >= POOL_CAPACITY {
            return;
        }
        if self.spare == 0 && !self.take_places() {
            return;
        }
        self.spare -= 1;
        self.stacks.push(stack);
    }

    /// Takes places in [`POOLED`] for `spare`: a batch, or a single one when a batch
    /// would pass the process-wide capacity. False when there is no room at all.
    fn take_places(&mut self) -> bool {
        for batch in [POOL_PLACES_BATCH, 1] {
            if POOLED.fetch_add(batch, Ordering::Relaxed) + batch <= POOL_TOTAL_CAPACITY {
                self.spare += batch;
                return true;
            }
            POOLED.fetch_sub(batch, Ordering::Relaxed);
        }
        false
    }
}

impl Drop for StackPool {
    fn drop(&mut self) {
        POOLED.fetch_sub(self.stacks.len() + self.spare, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------
// The live budget.
// ---------------------------------------------------------------------------------

/// Places taken in the process budget: by unfinished green threads, and spare in
/// workers' [`SparePlaces`].
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Places given back while a spawner might be waiting for one (the budget is tight, or
/// the place was also in a runtime's cap): lets a spawner that found the budget full
/// see progress.
static RELEASED: AtomicUsize = AtomicUsize::new(0);

/// Places a worker takes from (and gives back to) the process budget at a time:
/// spawning and finishing are hot on every worker at once, and [`LIVE`] bumped for
/// each would be a cache line the workers pass back and forth.
const SPARE_BATCH: usize = 32;
/// With fewer free places than this, the budget is *tight*: workers keep no spares,
/// and every place is taken and given back one at a time and counted in [`RELEASED`],
/// so spawners waiting for room see each one. Covers the spares of 32 workers.
const TIGHT_HEADROOM: usize = 32 * 2 * SPARE_BATCH;

/// How many budget places have been released so far in this process while the budget
/// was tight or a runtime's cap was in play (the only times a spawner may be waiting).
pub(crate) fn finished_count() -> usize {
    RELEASED.load(Ordering::Relaxed)
}

/// How many unfinished green threads the process can hold before mapping their stacks
/// could exceed `vm.max_map_count`: two mappings per stack, with room left for the
/// pools, the heap, libraries and thread stacks.
fn process_limit() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let max_maps = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(65530);
        let in_use = std::fs::read_to_string("/proc/self/maps")
            .map(|s| s.lines().count())
            .unwrap_or(1000);
        // Headroom for everything else the process maps later (libraries, thread stacks,
        // allocator arenas) and for the stacks the pools keep (two mappings each).
        let headroom = 4096 + in_use + 2 * POOL_TOTAL_CAPACITY;
        max_maps.saturating_sub(headroom) / 2
    })
}

/// A place in the live budget, held by a green thread from spawn until it finishes.
/// Dropping it gives the place back to the process budget; a worker gives a finished
/// green thread's place to its [`SparePlaces`] instead.
#[derive(Debug)]
pub(crate) struct Reservation {
    runtime_live: Option<std::sync::Arc<AtomicUsize>>,
}

impl Reservation {
    /// Gives back the place in the runtime's cap, if it holds one, and returns true if
    /// it did (a spawner may be waiting for it).
    fn release_runtime_place(&mut self) -> bool {
        match self.runtime_live.take() {
            Some(live) => {
                live.fetch_sub(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// For a green thread leaked with its stack: the stack's mappings stay for the
    /// process's life, so its place in the process budget does too (the budget counts
    /// mappings against `vm.max_map_count`). Its place in its runtime's cap goes back:
    /// that cap counts unfinished green threads the runtime still runs.
    pub(crate) fn leak(mut self) {
        self.release_runtime_place();
        std::mem::forget(self);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release_runtime_place();
        LIVE.fetch_sub(1, Ordering::Relaxed);
        RELEASED.fetch_add(1, Ordering::Relaxed);
    }
}

/// A worker's spare places in the process budget, taken from [`LIVE`] in batches of
/// [`SPARE_BATCH`] and given back when more than two batches pile up, when the budget
/// turns tight, or when the worker stops.
#[derive(Debug)]
pub(crate) struct SparePlaces {
    spare: Cell<usize>,
    /// The process limit (a parameter so that tests can make the budget tight).
    limit: usize,
}

impl Default for SparePlaces {
    fn default() -> SparePlaces {
        SparePlaces::with_limit(process_limit())
    }
}

impl SparePlaces {
    fn with_limit(limit: usize) -> SparePlaces {
        SparePlaces {
            spare: Cell::new(0),
            limit,
        }
    }

    /// Whether `live` places taken leave fewer than [`TIGHT_HEADROOM`] free.
    fn tight(&self, live: usize) -> bool {
        live + TIGHT_HEADROOM > self.limit
    }

    /// Takes a place from the spares, refilling them with a batch when empty. False
    /// when the budget is tight: the caller then takes a place on its own.
    fn take(&self) -> bool {
        let spare = self.spare.get();
        if spare > 0 {
            self.spare.set(spare - 1);
            return true;
        }
        // Looked at first, so a tight budget is not overcounted, even for a moment, by a
        // batch taken only to be given back.
        if self.tight(LIVE.load(Ordering::Relaxed) + SPARE_BATCH) {
            return false;
        }
        let after = LIVE.fetch_add(SPARE_BATCH, Ordering::Relaxed) + SPARE_BATCH;
        if self.tight(after) {
            LIVE.fetch_sub(SPARE_BATCH, Ordering::Relaxed);
            return false;
        }
        self.spare.set(SPARE_BATCH - 1);
        true
    }

    /// Takes back a place that [`take`](SparePlaces::take) gave out but nothing used.
    fn untake(&self) {
        self.spare.set(self.spare.get() + 1);
    }

    /// Takes a finished green thread's place (whoever reserved it).
    pub(crate) fn release(&self, mut reservation: Reservation) {
        let waited_for = reservation.release_runtime_place();
        // Its process place is ours now: dropping it would give the place back again.
        std::mem::forget(reservation);
        let spare = self.spare.get() + 1;
        if self.tight(LIVE.load(Ordering::Relaxed)) {
            // Every place counts now: give back all spares, and show the progress.
            self.spare.set(0);
            LIVE.fetch_sub(spare, Ordering::Relaxed);
            RELEASED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if waited_for {
            RELEASED.fetch_add(1, Ordering::Relaxed);
        }
        if spare > 2 * SPARE_BATCH {
            LIVE.fetch_sub(SPARE_BATCH, Ordering::Relaxed);
            self.spare.set(spare - SPARE_BATCH);
        } else {
            self.spare.set(spare);
        }
    }

    /// Gives back every spare place if the budget is tight (a worker about to park,
    /// whose spares nothing would return while it sleeps).
    pub(crate) fn give_back_if_tight(&self) {
        if self.spare.get() > 0 && self.tight(LIVE.load(Ordering::Relaxed)) {
            LIVE.fetch_sub(self.spare.replace(0), Ordering::Relaxed);
        }
    }
}

impl Drop for SparePlaces {
    fn drop(&mut self) {
        LIVE.fetch_sub(self.spare.get(), Ordering::Relaxed);
    }
}

/// Why [`reserve`] found no place. Cheap to make: spawners waiting for room retry
/// often, and only the final failure becomes an `io::Error` ([`Exhausted::into_error`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exhausted {
    /// The process budget (from the memory-map limit), with its size.
    Process(usize),
    /// A runtime's `max_green_threads`, with its value.
    Runtime(usize),
}

impl Exhausted {
    /// The error to report: what ran out and what to change.
    pub(crate) fn into_error(self) -> io::Error {
        let message = match self {
            Exhausted::Process(limit) => format!(
                "greenrt cannot spawn another green thread: {limit} are unfinished, the most \
                 whose stacks fit in this process's memory-map limit; let some finish, or \
                 raise `vm.max_map_count` (sysctl -w vm.max_map_count=262144)"
            ),
            Exhausted::Runtime(cap) => format!(
                "greenrt cannot spawn another green thread: {cap} are unfinished, the \
                 runtime's max_green_threads; let some finish or raise the setting"
            ),
        };
        io::Error::new(io::ErrorKind::OutOfMemory, message)
    }

    /// The error for a spawn on a worker outside a green thread (a future task), which
    /// fails at once rather than block the worker while it waits for room.
    pub(crate) fn into_error_on_worker(self) -> io::Error {
        let error = self.into_error();
        io::Error::new(
            error.kind(),
            format!(
                "{error}. This spawn ran in a future task (or a destructor) on a worker, \
                 which cannot wait for room without blocking the worker: spawn from a \
                 green thread, where spawning waits, or await some of the green threads \
                 already spawned first"
            ),
        )
    }
}

/// Reserves a place for one more unfinished green thread, in the process budget (from
/// `spares` when given and the budget is not tight) and, when `runtime_cap` is given,
/// in a runtime's own cap.
pub(crate) fn reserve(
    runtime_cap: Option<(usize, &std::sync::Arc<AtomicUsize>)>,
    spares: Option<&SparePlaces>,
) -> Result<Reservation, Exhausted> {
    let from_spare = spares.filter(|spares| spares.take());
    if from_spare.is_none() {
        let limit = process_limit();
        if LIVE.fetch_add(1, Ordering::Relaxed) >= limit {
            LIVE.fetch_sub(1, Ordering::Relaxed);
            return Err(Exhausted::Process(limit));
        }
    }
    let mut runtime_live = None;
    if let Some((cap, live)) = runtime_cap {
        if live.fetch_add(1, Ordering::Relaxed) >= cap {
            live.fetch_sub(1, Ordering::Relaxed);
            // Undo the process-wide place by hand: dropping a Reservation would count
            // as a green thread finishing, which spawners waiting for room watch for.
            match from_spare {
                Some(spares) => spares.untake(),
                None => {
                    LIVE.fetch_sub(1, Ordering::Relaxed);
                }
            }
            return Err(Exhausted::Runtime(cap));
        }
        runtime_live = Some(live.clone());
    }
    Ok(Reservation { runtime_live })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_validated_and_rounded() {
        assert!(validate_stack_size(MIN_STACK_SIZE - 1, "stack_size").is_err());
        assert!(validate_stack_size(MAX_STACK_SIZE + 1, "stack_size").is_err());
        let err = validate_stack_size(1, "stack_size").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("stack_size"), "{err}");
        assert_eq!(
            validate_stack_size(MIN_STACK_SIZE + 1, "s").unwrap(),
            MIN_STACK_SIZE + page_size(),
            "rounded up to whole pages"
        );
        assert_eq!(
            validate_stack_size(MIN_STACK_SIZE, "s").unwrap(),
            MIN_STACK_SIZE,
            "the smallest accepted, as is"
        );
    }

    /// The resident size, KiB, of the mapping holding `addr`.
    fn rss_kib_at(addr: usize) -> u64 {
        smaps_entry_for(addr)
            .lines()
            .find_map(|line| line.strip_prefix("Rss:"))
            .and_then(|rss| rss.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("an Rss line")
    }

    #[test]
    fn stacks_kept_at_the_floor_give_back_their_pages_after_a_period_unused() {
        let size = 512 * 1024;
        let mut pool = StackPool::new(size);
        let stack = Stack::new(size).unwrap();
        // Every page touched, as by a green thread that recursed deep.
        // SAFETY: the whole usable range of a stack nobody runs on.
        unsafe { std::ptr::write_bytes(stack.guard().end as *mut u8, 1, size) };
        let inside = stack.top() as usize - 1;
        pool.put(stack);
        assert!(rss_kib_at(inside) >= 512, "{}", smaps_entry_for(inside));

        let mut now = Instant::now();
        let mut trims = 0;
        while let Some(next) = pool.trim_if_due(|| now) {
            now = next;
            trims += 1;
            assert!(trims < 10, "the pool kept asking for trims");
        }
        assert_eq!(pool.len(), 1, "at the floor: kept, not unmapped");
        assert!(
            rss_kib_at(inside) <= (KEEP_RESIDENT / 1024) as u64,
            "only the top stays resident: {}",
            smaps_entry_for(inside)
        );
        assert_eq!(
            pool.trim_if_due(|| unreachable!("clock read with nothing left to trim")),
            None
        );
    }

    /// The mapping backing a stack, as /proc/self/maps lists it, with its smaps fields.
    fn smaps_entry_for(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut out = String::new();
        let mut inside = false;
        for line in smaps.lines() {
            let head = line.split_whitespace().next().unwrap_or("");
            if let Some((lo, hi)) = head.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    inside = (lo..hi).contains(&addr);
                }
            }
            if inside {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// A pool of `count` small stacks, as a worker's would be after a burst, and the
    /// stacks' top addresses, bottom (oldest) first.
    fn pool_after_burst(count: usize) -> (StackPool, Vec<usize>) {
        let mut pool = StackPool::new(MIN_STACK_SIZE);
        let stacks: Vec<Stack> = (0..count)
            .map(|_| Stack::new(MIN_STACK_SIZE).unwrap())
            .collect();
        for stack in stacks {
            pool.put(stack);
        }
        assert_eq!(pool.len(), count, "the process-wide pool capacity was full");
        let tops = tops(&pool);
        (pool, tops)
    }

    /// [`pool_after_burst`] with its first decay period started at the returned time.
    fn pool_watched_from_burst(count: usize) -> (StackPool, Vec<usize>, Instant) {
        let (mut pool, tops) = pool_after_burst(count);
        let t0 = Instant::now();
        pool.trim_if_due(|| t0);
        (pool, tops, t0)
    }

    /// A wave of `n` green threads: takes `n` stacks from the pool, then gives them back.
    fn use_stacks(pool: &mut StackPool, n: usize) {
        let taken: Vec<Stack> = (0..n).map(|_| pool.take(MIN_STACK_SIZE).unwrap()).collect();
        for stack in taken {
            pool.put(stack);
        }
    }

    fn tops(pool: &StackPool) -> Vec<usize> {
        pool.stacks.iter().map(|s| s.top() as usize).collect()
    }

    #[test]
    fn a_pool_unmaps_stacks_left_unused_for_a_whole_period_oldest_first() {
        let (mut pool, before) = pool_after_burst(100);
        let t0 = Instant::now();
        // The first call only starts a period: nothing has been watched yet.
        assert_eq!(pool.trim_if_due(|| t0), Some(t0 + POOL_DECAY_PERIOD));
        assert_eq!(pool.len(), 100);
        // Not yet due.
        let early = t0 + POOL_DECAY_PERIOD / 2;
        assert_eq!(pool.trim_if_due(|| early), Some(t0 + POOL_DECAY_PERIOD));
        assert_eq!(pool.len(), 100);
        // Due, with all 100 unused: half of the 84 above the floor is 42, capped at one
        // batch. The oldest go; the rest keep their order.
        let t1 = t0 + POOL_DECAY_PERIOD;
        assert_eq!(pool.trim_if_due(|| t1), Some(t1 + POOL_DECAY_PERIOD));
        assert_eq!(pool.len(), 100 - TRIM_BATCH);
        assert_eq!(tops(&pool), before[TRIM_BATCH..]);
    }

    #[test]
    fn stacks_used_during_a_period_are_kept() {
        let (mut pool, _, t0) = pool_watched_from_burst(60);
        // A wave of 50 green threads takes stacks and gives them back: only the bottom
        // 10 sat unused all period, and none of them is above the floor.
        use_stacks(&mut pool, 50);
        let kept = tops(&pool);
        let t1 = t0 + POOL_DECAY_PERIOD;
        assert_eq!(pool.trim_if_due(|| t1), Some(t1 + POOL_DECAY_PERIOD));
        assert_eq!(tops(&pool), kept, "a stack used this period was unmapped");
        // The next period sees no takes: (60 - 16) / 2 go.
        let t2 = t1 + POOL_DECAY_PERIOD;
        pool.trim_if_due(|| t2);
        assert_eq!(pool.len(), 60 - 22);
    }

    #[test]
    fn only_stacks_below_the_deepest_take_count_as_unused() {
        let (mut pool, before, t0) = pool_watched_from_burst(60);
        // 20 taken and given back: the bottom 40 sat unused, 24 of them above the
        // floor, so 12 go, all from the bottom.
        use_stacks(&mut pool, 20);
        let recently_used = tops(&pool)[40..].to_vec();
        let t1 = t0 + POOL_DECAY_PERIOD;
        pool.trim_if_due(|| t1);
        assert_eq!(pool.len(), 60 - 12);
        assert_eq!(
            tops(&pool)[..28],
            before[12..40],
            "not the oldest that went"
        );
        assert_eq!(tops(&pool)[28..], recently_used[..]);
        // The unmapped stacks' places went back to the pools' shared count, but for
        // at most two batches kept at hand.
        assert!(pool.spare <= 2 * POOL_PLACES_BATCH, "{} spare", pool.spare);
    }

    #[test]
    fn an_idle_pool_decays_to_its_floor_and_then_asks_for_no_more_trims() {
        let (mut pool, before) = pool_after_burst(200);
        let mut now = Instant::now();
        let mut trims = 0;
        while let Some(next) = pool.trim_if_due(|| now) {
            assert!(next > now, "a trim asked to be called again at once");
            now = next;
            trims += 1;
            assert!(trims < 100, "the pool never reached its floor");
        }
        assert_eq!(pool.len(), POOL_FLOOR);
        assert_eq!(
            tops(&pool),
            before[200 - POOL_FLOOR..],
            "the newest are kept"
        );
        // At the floor the clock is not even read.
        assert_eq!(
            pool.trim_if_due(|| unreachable!("clock read at the floor")),
            None
        );
    }

    #[test]
    fn a_refused_reservation_is_not_counted_as_a_finished_green_thread() {
        let live = std::sync::Arc::new(AtomicUsize::new(0));
        let held = reserve(Some((1, &live)), None).unwrap();
        let finished = finished_count();
        for _ in 0..10 {
            assert!(reserve(Some((1, &live)), None).is_err());
        }
        // Other tests in this process may finish green threads meanwhile, but never ten
        // of ours: the refused attempts must not look like progress.
        assert!(
            finished_count() - finished < 10,
            "refusals were counted as releases"
        );
        assert_eq!(live.load(Ordering::Relaxed), 1);
        drop(held);
        assert_eq!(live.load(Ordering::Relaxed), 0);
        assert!(reserve(Some((1, &live)), None).is_ok());
    }

    #[test]
    fn spare_places_refill_in_batches_and_give_back_the_surplus() {
        let spares = SparePlaces::default();
        let first = reserve(None, Some(&spares)).unwrap();
        assert_eq!(
            spares.spare.get(),
            SPARE_BATCH - 1,
            "a batch taken, one place used"
        );
        spares.release(first);
        assert_eq!(
            spares.spare.get(),
            SPARE_BATCH,
            "a finished place becomes spare"
        );
        // Places reserved elsewhere and finished here pile up; past two batches, one
        // batch goes back to the process budget.
        let elsewhere: Vec<_> = (0..2 * SPARE_BATCH)
            .map(|_| reserve(None, None).unwrap())
            .collect();
        for reservation in elsewhere {
            spares.release(reservation);
        }
        assert!(
            (SPARE_BATCH..=2 * SPARE_BATCH).contains(&spares.spare.get()),
            "{} spare",
            spares.spare.get()
        );
    }

    #[test]
    fn a_tight_budget_keeps_no_spares() {
        // A limit this low makes every amount of places taken tight.
        let spares = SparePlaces::with_limit(0);
        let reservation = reserve(None, Some(&spares)).unwrap();
        assert_eq!(spares.spare.get(), 0, "no batch taken while tight");
        // Spares from before the budget turned tight all go back at the next release.
        LIVE.fetch_add(5, Ordering::Relaxed); // the places those spares stand for
        spares.spare.set(5);
        let released = finished_count();
        spares.release(reservation);
        assert_eq!(spares.spare.get(), 0, "all spares given back");
        assert!(
            finished_count() > released,
            "the release counts as progress"
        );
        // And at a park.
        spares.spare.set(3);
        LIVE.fetch_add(3, Ordering::Relaxed); // the places those spares stand for
        spares.give_back_if_tight();
        assert_eq!(spares.spare.get(), 0);
    }

    #[test]
    fn a_refused_runtime_place_returns_its_spare() {
        let spares = SparePlaces::default();
        let live = std::sync::Arc::new(AtomicUsize::new(0));
        let held = reserve(Some((1, &live)), Some(&spares)).unwrap();
        let spare = spares.spare.get();
        assert_eq!(
            reserve(Some((1, &live)), Some(&spares)).unwrap_err(),
            Exhausted::Runtime(1)
        );
        assert_eq!(
            spares.spare.get(),
            spare,
            "the refused place went back to the spares"
        );
        assert_eq!(live.load(Ordering::Relaxed), 1);
        spares.release(held);
        assert_eq!(
            live.load(Ordering::Relaxed),
            0,
            "the runtime place is given back"
        );
        assert_eq!(spares.spare.get(), spare + 1);
    }

    #[test]
    fn stacks_are_coloured_within_their_top_page_and_keep_their_usable_size() {
        let page = page_size();
        let stacks: Vec<Stack> = (0..64)
            .map(|_| Stack::new(MIN_STACK_SIZE).unwrap())
            .collect();
        let mut colors = std::collections::HashSet::new();
        for stack in &stacks {
            let top = stack.top() as usize;
            let end = stack.base as usize + stack.mapped;
            assert_eq!(top % 64, 0, "a whole number of cache lines");
            assert!(end - top < page, "the colour stays inside the top page");
            assert!(
                top - stack.guard().end >= MIN_STACK_SIZE,
                "the colour comes out of the extra page, not the usable size"
            );
            // The whole promised range is writable, right up to the guard page.
            // SAFETY: [guard end, top) lies inside the stack's read-write mapping and
            // nothing runs on it.
            unsafe {
                std::ptr::write_bytes(stack.guard().end as *mut u8, 1, top - stack.guard().end)
            };
            colors.insert(end - top);
        }
        assert!(
            colors.len() >= 16,
            "64 stacks got only {} colours: {colors:?}",
            colors.len()
        );
    }

    #[test]
    fn stack_has_guard_page_and_no_huge_pages() {
        let stack = Stack::new(DEFAULT_STACK_SIZE).unwrap();
        let guard = smaps_entry_for(stack.guard().start);
        assert!(
            guard.lines().next().unwrap().contains("---p"),
            "guard not PROT_NONE:\n{guard}"
        );
        let usable = smaps_entry_for(stack.top() as usize - 1);
        assert!(usable.lines().next().unwrap().contains("rw-p"), "{usable}");
        assert!(
            usable.contains("VmFlags:") && usable.contains(" nh"),
            "no MADV_NOHUGEPAGE:\n{usable}"
        );
        assert_eq!(stack.usable(), DEFAULT_STACK_SIZE);
    }

    #[test]
    fn pool_reuses_only_matching_sizes_and_is_bounded() {
        let mut pool = StackPool::new(DEFAULT_STACK_SIZE);
        let a = pool.take(DEFAULT_STACK_SIZE).unwrap();
        let a_top = a.top();
        pool.put(a);
        assert_eq!(pool.take(DEFAULT_STACK_SIZE).unwrap().top(), a_top);
        let other = pool.take(MIN_STACK_SIZE).unwrap();
        pool.put(other);
        assert!(
            pool.stacks.is_empty(),
            "a non-default size must not be pooled"
        );
        let extra: Vec<_> = (0..8)
            .map(|_| Stack::new(DEFAULT_STACK_SIZE).unwrap())
            .collect();
        for stack in extra {
            pool.put(stack);
        }
        assert_eq!(pool.stacks.len(), 8);
        // Other tests' pools share POOLED, but none gives back places this one holds.
        assert!(
            POOLED.load(Ordering::Relaxed) >= pool.stacks.len() + pool.spare,
            "pooled stacks are counted"
        );
        // Bounded: a pool already at capacity unmaps what it is given.
        while pool.stacks.len() < POOL_CAPACITY {
            pool.put(Stack::new(DEFAULT_STACK_SIZE).unwrap());
        }
        pool.put(Stack::new(DEFAULT_STACK_SIZE).unwrap());
        assert_eq!(pool.stacks.len(), POOL_CAPACITY);
    }
}
