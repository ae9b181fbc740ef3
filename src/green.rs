//! A green thread: its control block, identity, entry, suspend/resume and waker.
//!
//! This module owns the unsafe core of a green thread's life. It must never decide
//! *when* a green thread runs (that is the scheduler's job, in `runtime/`), and it must
//! never let a green thread run on a thread other than its home (design.md, section 2).
//!
//! # Life of a green thread
//! 1. `spawn` builds a [`GreenThread`] in state SCHEDULED holding its type-erased entry
//!    closure, and queues it. No stack yet: it is stealable by any worker.
//! 2. A worker pops it, moves it to RUNNING and, at first run, maps (or reuses) a stack,
//!    records itself as the green thread's [`Home`] and calls [`resume`]. From now on
//!    only that worker may resume it.
//! 3. The green thread runs until it calls [`suspend`] (yield, park) or finishes; either
//!    way it switches back to the worker, which applies the state transition (see
//!    `state.rs`) on its own stack, never on the green thread's.
//! 4. A wake ([`wake`]) that finds it idle marks it SCHEDULED and hands it to its home,
//!    which queues it on that worker (an inbox push and unpark from other threads).
//! 5. When the entry returns, the worker marks it COMPLETE and takes its stack back.
//!
//! Cancellation sets CANCELLED and wakes it: at its next suspension point it unwinds
//! with the payload [`Cancelled`], so the destructors on its stack run before the stack
//! is freed. A green thread that never finishes keeps its stack forever (leaked, never
//! unmapped): code on a suspended stack may have lent pointers into it.

use crate::arch::{self, StackPointer};
use crate::stack::{Reservation, Stack};
use crate::state::State;
use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::io;
use std::num::NonZeroU64;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{RawWaker, RawWakerVTable, Waker};

/// How many cache lines above a suspended green thread's saved stack pointer
/// [`GreenThread::prefetch_stack`] asks for: the saved context and the frames of the
/// wait it returns through (`switch_out`, `block_on_green`, the I/O call).
const RESUME_PREFETCH_LINES: usize = 8;
/// How many cache lines below the saved stack pointer it asks for too, for a green
/// thread that parked: where the calls it makes right after its wait ends (the `recv`
/// that the readiness was for, the request parser's helpers, the next registration) put
/// their frames, lines last written a whole round of other green threads ago. Not for
/// one that yielded: a `yield_now` loop goes straight back into the same frames above,
/// and in `yield_many` the extra lines made each switch about 15% slower.
const RESUME_PREFETCH_LINES_BELOW: usize = 4;

/// The payload of a green thread or task that was cancelled (by
/// [`JoinHandle::abort`](crate::JoinHandle::abort) or by dropping its runtime).
///
/// A cancelled green thread unwinds from its suspension point with this payload, so its
/// destructors run; `join()` then returns `Err` holding it. Code that catches unwinds
/// should let it through:
///
/// ```
/// use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
///
/// let outcome = catch_unwind(AssertUnwindSafe(|| {
///     // ... green-blocking work that may be cancelled ...
/// }));
/// if let Err(payload) = outcome {
///     if payload.is::<greenrt::Cancelled>() {
///         resume_unwind(payload); // let the cancellation finish the green thread
///     }
///     // handle a real panic here
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("green thread or task was cancelled")
    }
}

impl std::error::Error for Cancelled {}

/// A green thread's or task's identifier: unique for the life of the process. Ids are
/// handed out in blocks per thread, so they do not follow spawn order across threads.
///
/// ```
/// # greenrt::runtime::Runtime::new().unwrap().run(|| {
/// let a = greenrt::spawn(|| ());
/// let b = greenrt::spawn(|| ());
/// assert_ne!(a.green().id(), b.green().id());
/// # });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GreenId(NonZeroU64);

impl GreenId {
    pub(crate) fn next() -> GreenId {
        /// Ids a thread takes from the process-wide counter at a time. Spawning is
        /// hot on every worker at once, and one shared counter bumped per spawn is a
        /// cache line the workers would pass back and forth.
        const BLOCK: u64 = 1024;
        static NEXT: AtomicU64 = AtomicU64::new(1);
        thread_local! {
            /// This thread's unused ids: `next..end`.
            static IDS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
        }
        let id = IDS
            .try_with(|ids| {
                let (mut next, mut end) = ids.get();
                if next == end {
                    next = NEXT.fetch_add(BLOCK, Ordering::Relaxed);
                    end = next + BLOCK;
                }
                ids.set((next + 1, end));
                next
            })
            // This thread's locals are being destroyed: take a single id.
            .unwrap_or_else(|_| NEXT.fetch_add(1, Ordering::Relaxed));
        GreenId(NonZeroU64::new(id).expect("GreenId counter wrapped"))
    }

    /// The id as a number, e.g. for logs and metrics.
    pub fn as_u64(&self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for GreenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The identity of a green thread (or future task): its id and optional name.
///
/// Obtained from [`greenrt::current`](crate::current) inside a green thread, or from
/// [`JoinHandle::green`](crate::JoinHandle::green).
///
/// ```
/// # greenrt::runtime::Runtime::new().unwrap().run(|| {
/// let handle = greenrt::Builder::new()
///     .name("worker-1".to_string())
///     .spawn(|| greenrt::current().unwrap().name().map(str::to_owned))
///     .unwrap();
/// assert_eq!(handle.green().name(), Some("worker-1"));
/// assert_eq!(handle.join().unwrap().as_deref(), Some("worker-1"));
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct Green {
    id: GreenId,
    name: Option<Arc<str>>,
}

impl Green {
    pub(crate) fn new(name: Option<String>) -> Green {
        Green {
            id: GreenId::next(),
            name: name.map(Arc::from),
        }
    }

    /// This green thread's unique id.
    pub fn id(&self) -> GreenId {
        self.id
    }

    /// The name given with [`Builder::name`](crate::Builder::name), if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

/// How the entry closure is to be run: the worker decides at first run.
pub(crate) enum Start {
    /// Run the user's closure (on the green stack).
    Run,
    /// Cancelled before it started: drop the closure, report [`Cancelled`].
    Cancel,
    /// No stack could be mapped: drop the closure, report this error.
    Fail(io::Error),
}

/// The type-erased body of a green thread: the user's closure, until it runs, and where
/// its outcome goes. For a spawned green thread this is the same allocation its
/// JoinHandle reads the outcome from (`runtime::handle::SpawnCell`).
pub(crate) trait Body: std::any::Any {
    /// Runs (or, for [`Start::Cancel`] and [`Start::Fail`], drops) the closure and
    /// stores the outcome without publishing it. Does nothing the second time.
    ///
    /// # Safety
    /// The caller holds the green thread RUNNING (for `Start::Run`: it is that green
    /// thread, on its stack).
    unsafe fn start(&self, start: Start);

    /// Makes the stored outcome visible to the JoinHandle (see
    /// [`Packet::publish`](crate::join::Packet::publish)).
    fn publish(&self);

    /// For a green thread that will never finish (leaked at shutdown): publishes
    /// [`Cancelled`] as its outcome.
    ///
    /// # Safety
    /// As for [`Body::start`].
    unsafe fn publish_cancelled(&self);

    /// Whether a finished green thread's control block with this body may be reused
    /// for a spawn of the same body type (`runtime::recycle`).
    fn reusable(&self) -> bool;

    /// Called only with the last reference to a finished green thread's control block
    /// whose body is [`Body::reusable`]: drops what is left of its closure and outcome
    /// (and the joiner's waker), leaving it as a fresh body would drop.
    fn vacate(&mut self);
}

/// The host green thread's entry (`Runtime::run`): not `Send`, it borrows from its
/// caller's stack (erased to `'static`, see host.rs) and never leaves that thread.
pub(crate) type Entry = Box<dyn FnOnce(Start)>;

/// A body that is only a closure taking the [`Start`], with nowhere to publish (the
/// host green thread of `Runtime::run`, whose caller reads the outcome itself).
struct FnBody<F>(UnsafeCell<Option<F>>);

impl<F: FnOnce(Start) + 'static> Body for FnBody<F> {
    unsafe fn start(&self, start: Start) {
        // SAFETY: the caller holds the green thread RUNNING, so nobody else touches the
        // closure slot.
        if let Some(f) = unsafe { (*self.0.get()).take() } {
            f(start)
        }
    }
    fn publish(&self) {}
    unsafe fn publish_cancelled(&self) {}
    fn reusable(&self) -> bool {
        // The host green thread's block is made once per `Runtime::run`.
        false
    }
    fn vacate(&mut self) {}
}

/// Why a green thread switched back to its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Suspend {
    /// `yield_now`: requeue at the back.
    Yield,
    /// Waiting for a wake (a future returned Pending).
    Park,
    /// The entry returned; never resume it again.
    Complete,
}

/// Who queues a green thread when it is woken: fixed at its first run.
pub(crate) enum Home {
    /// A worker of a runtime.
    Worker(Arc<crate::runtime::worker::WorkerHome>),
    /// The thread running `Runtime::run`, which parks until its one green thread is
    /// scheduled.
    Host(std::thread::Thread),
}

/// Fields only the thread that currently runs the green thread may touch: the worker
/// that popped it (before it has a home), then its home thread.
///
/// In declaration order (`repr(C)`): the fields every switch uses first, right after
/// the control block's other hot fields (see [`GreenThread`]).
#[repr(C)]
struct RunState {
    /// The green thread's saved stack pointer while it is not running.
    sp: StackPointer,
    /// The resumer's saved stack pointer while the green thread runs.
    caller_sp: StackPointer,
    why: Suspend,
    /// Index in the home worker's table of live green threads.
    slot: usize,
    stack: Option<Stack>,
    reservation: Option<Reservation>,
}

impl RunState {
    /// Forgets the stack of a green thread that will never finish, so nothing unmaps
    /// memory its suspended frames may still point into, and keeps its place in the
    /// process's live budget taken for good: its two mappings stay, and the budget
    /// counts mappings against `vm.max_map_count`. No-op without a stack.
    fn leak_stack(&mut self) {
        if let Some(stack) = self.stack.take() {
            std::mem::forget(stack);
            if let Some(reservation) = self.reservation.take() {
                reservation.leak();
            }
        }
    }
}

/// What a completed green thread leaves to its worker ([`GreenThread::take_finished`]).
pub(crate) struct Finished {
    /// Its stack, for the pool (`None` for a stack it never had).
    pub(crate) stack: Option<Stack>,
    /// Its index in the worker's live slots.
    pub(crate) slot: usize,
    /// Its place in the live budget (`None` for the host green thread).
    pub(crate) reservation: Option<Reservation>,
}

/// A green thread's control block, shared by its queues, wakers and JoinHandle, with
/// its [`Body`] (closure and outcome) in the same allocation: `Arc<GreenThread>` is
/// `Arc<GreenThread<dyn Body>>`, made from an `Arc<GreenThread<B>>` of the body's type.
///
/// Laid out in declaration order (`repr(C)`), hottest first: a resume and a wake of a
/// green thread that waits on a socket touch the Arc's counts (just before `state`),
/// `state`, the tracing check, the waker vtable, `home` and the saved stack pointers.
/// Together these are 73 bytes, so they take two cache lines wherever the (16-byte
/// aligned) allocation starts. With the compiler's own order they were spread over
/// three or four lines, one more cold line per request for each of a thousand
/// connections.
#[repr(C)]
pub(crate) struct GreenThread<B: ?Sized = dyn Body> {
    pub(crate) state: State,
    #[cfg(feature = "tracing")]
    pub(crate) trace: crate::trace::GreenTrace,
    /// `waker_vtable_of::<B>()`: its wakers' vtable, which knows `B`.
    waker_vtable: &'static RawWakerVTable,
    /// Set once, by [`GreenThread::prepare`] before its first switch in; read by wakers
    /// only after they moved it from idle to SCHEDULED, which it can be only after its
    /// first run (the state word's AcqRel transitions order the write before the read).
    home: UnsafeCell<Option<Home>>,
    run: UnsafeCell<RunState>,
    /// `green_main::<B>`: the first Rust function on its stack, which knows `B`.
    entry: arch::EntryFn,
    pub(crate) identity: Green,
    pub(crate) stack_size: usize,
    /// Its closure (until it first runs) and where its outcome goes. `start` is called
    /// only by the RUNNING holder; the rest of it is `Sync` by its own bounds.
    pub(crate) body: B,
}

// SAFETY: `state`, `identity` and `stack_size` are immutable or atomic; `home` is
// written once before the green thread first runs and read only after a state
// transition that orders that write before the read (see the field).
// `run` is touched only by the thread that holds the green thread RUNNING: the state
// machine (state.rs) admits one such holder at a time, and its AcqRel transitions order
// one holder's writes before the next holder's reads. Before the first run that holder
// may be any worker; the entry closure moving with it is `Send` for every spawned green
// thread (public bounds). The host green thread's entry is not `Send`, and its control
// block can reach other threads (its wakers, woken and dropped anywhere), but the entry
// is gone by then: `Runtime::run` resumes it on the creating thread before anything
// else can see the control block, and that first resume moves the entry out of the
// body onto the green stack, where it runs (`FnBody`), before any waker can exist;
// its result goes to `run`'s frame, not to the body. After the first run, only the home
// thread holds it, so a started green thread and its stack never move between OS
// threads.
// The body's closure is used only by that holder too (`Body::start`), and a spawned
// green thread's closure and result are `Send` by the public bounds; `entry` and
// `waker_vtable` are immutable.
unsafe impl<B: ?Sized> Send for GreenThread<B> {}
// SAFETY: as above; shared access from other threads goes through `state` and `home`,
// and, in the body, its packet (synchronised by its own protocol, join.rs).
unsafe impl<B: ?Sized> Sync for GreenThread<B> {}

impl<B: Body + 'static> GreenThread<B> {
    #[inline]
    pub(crate) fn new(
        identity: Green,
        stack_size: usize,
        body: B,
        reservation: Option<Reservation>,
    ) -> GreenThread<B> {
        GreenThread {
            state: State::new_scheduled(),
            #[cfg(feature = "tracing")]
            trace: crate::trace::GreenTrace::new(),
            identity,
            stack_size,
            home: UnsafeCell::new(None),
            run: UnsafeCell::new(RunState {
                stack: None,
                sp: ptr::null_mut(),
                caller_sp: ptr::null_mut(),
                why: Suspend::Park,
                reservation,
                slot: usize::MAX,
            }),
            entry: green_main::<B>,
            waker_vtable: waker_vtable_of::<B>(),
            body,
        }
    }
}

impl GreenThread {
    /// Whether it has a stack (has been started).
    ///
    /// # Safety
    /// The caller holds it RUNNING (see the `Sync` impl).
    pub(crate) unsafe fn is_started(&self) -> bool {
        // SAFETY: forwarded from the caller.
        unsafe { (*self.run.get()).stack.is_some() }
    }

    /// Starts the cache misses its next resume will take on its control block: the
    /// state word the worker moves to RUNNING, the saved stack pointer and the suspend
    /// reason. A hint with no effect on behaviour; see [`GreenThread::prefetch_stack`]
    /// for the next step.
    #[inline]
    pub(crate) fn prefetch_control_block(&self) {
        arch::prefetch(ptr::addr_of!(self.state).cast());
        // SAFETY: only an address is computed, inside `self`; nothing is read.
        let (sp, why) = unsafe {
            let run = self.run.get();
            (ptr::addr_of!((*run).sp), ptr::addr_of!((*run).why))
        };
        arch::prefetch(sp.cast());
        // Usually the same line; `prefetch_stack` reads both.
        arch::prefetch(why.cast());
    }

    /// Starts the cache misses its next resume will take on its stack: the saved
    /// registers and resume address, the innermost frames above them, which its code
    /// touches first once back, and for a green thread that parked the frames its next
    /// calls will write below them. Best issued one turn ahead, after
    /// [`GreenThread::prefetch_control_block`] has brought in the saved pointer.
    ///
    /// # Safety
    /// It is started and at home on the calling thread, and not running (it is queued
    /// here): its saved stack pointer and suspend reason are then written only by this
    /// thread (when it switches out), so the reads race with nothing.
    #[inline]
    pub(crate) unsafe fn prefetch_stack(&self) {
        // SAFETY: see the contract; raw reads, and no reference to `run` is live on
        // this thread (its last switch out wrote `why` and `sp` through a raw pointer).
        let (sp, why) = unsafe { ((*self.run.get()).sp, (*self.run.get()).why) };
        for line in 0..RESUME_PREFETCH_LINES {
            arch::prefetch(sp.wrapping_add(line * 64).cast_const());
        }
        if why == Suspend::Park {
            for line in 1..=RESUME_PREFETCH_LINES_BELOW {
                arch::prefetch(sp.wrapping_sub(line * 64).cast_const());
            }
        }
    }

    /// Runs the entry without a stack, on the caller's stack, for [`Start::Cancel`] and
    /// [`Start::Fail`]: the closure is dropped and the JoinHandle gets the outcome.
    ///
    /// # Safety
    /// The caller holds it RUNNING and it was never started.
    pub(crate) unsafe fn finish_unstarted(&self, start: Start) {
        // SAFETY: forwarded from the caller.
        let run = unsafe { &mut *self.run.get() };
        debug_assert!(run.stack.is_none());
        // The closure's destructor and the result's are user code: never let a panic
        // from them unwind into the scheduler.
        // SAFETY: the caller holds it RUNNING.
        if panics(|| unsafe { self.body.start(start) }) {
            abort_with("a green thread's closure or result panicked while being dropped");
        }
        drop(run.reservation.take());
        self.body.publish();
    }

    /// Gives a fresh green thread its stack and home, ready for its first [`resume`].
    ///
    /// # Safety
    /// The caller holds `this` RUNNING, it was never started, and the caller's thread is
    /// `home`'s thread: every later resume must happen there.
    pub(crate) unsafe fn prepare(this: &Arc<GreenThread>, stack: Stack, home: Home, slot: usize) {
        // SAFETY: forwarded from the caller.
        let run = unsafe { &mut *this.run.get() };
        debug_assert!(run.stack.is_none());
        // SAFETY: `top` is the 16-byte-aligned highest address of a stack with at least
        // 16 KiB below it that nothing else uses. The entry is `green_main::<B>` for the
        // body type `B` this control block was made with, and the argument the control
        // block's address, which stays valid while the green thread runs because its
        // resumer holds an Arc.
        run.sp = unsafe {
            arch::init_stack(
                stack.top(),
                this.entry,
                Arc::as_ptr(this) as *const u8 as *mut u8,
            )
        };
        run.stack = Some(stack);
        run.slot = slot;
        // SAFETY: no waker reads `home` before the green thread has run (see the field),
        // and this is its first run, by the only holder.
        let slot = unsafe { &mut *this.home.get() };
        if slot.is_some() {
            panic!("greenrt bug: a green thread was given a home twice");
        }
        *slot = Some(home);
    }

    /// After it completed: its stack (to pool or unmap), its slot, and its budget place
    /// released.
    ///
    /// # Safety
    /// The caller holds it and it has switched out with [`Suspend::Complete`].
    pub(crate) unsafe fn take_finished(&self) -> Finished {
        // SAFETY: forwarded from the caller.
        let run = unsafe { &mut *self.run.get() };
        Finished {
            stack: run.stack.take(),
            slot: run.slot,
            reservation: run.reservation.take(),
        }
    }

    /// Tells its JoinHandle it has finished. Called by its worker after its last switch
    /// out (and after the stack is back in the pool), so `join()` never returns while
    /// any of its code still runs.
    ///
    /// # Safety
    /// The caller holds it and it has finished (completed or never started).
    pub(crate) unsafe fn publish_outcome(&self) {
        self.body.publish();
    }

    /// Forgets the stack of a green thread that will never finish, so nothing unmaps
    /// memory its suspended frames may still point into.
    ///
    /// # Safety
    /// The caller is its home thread and will never resume it again.
    pub(crate) unsafe fn leak(&self) {
        // SAFETY: forwarded from the caller.
        let run = unsafe { &mut *self.run.get() };
        run.leak_stack();
        // Its joiner must not wait forever: it ends, as far as anyone can see, cancelled.
        // (Its closure was moved onto the leaked stack when it started: it is never
        // dropped. The body's closure slot is empty.)
        // SAFETY: the caller is its home thread and holds it; it will never run again.
        unsafe { self.body.publish_cancelled() };
    }
}

impl GreenThread {
    /// Readies the control block of a finished green thread, of which the caller holds
    /// the only reference, for reuse (`runtime::recycle`): drops what its green thread
    /// left (name, home, tracing span, outcome remnants), as dropping the block would
    /// have. Returns its body's type when a spawn of that type may reuse it.
    pub(crate) fn vacate(&mut self) -> Option<std::any::TypeId> {
        debug_assert!(self.run.get_mut().stack.is_none());
        // Bodies that are never reused say so without side effects; the rest is dropped
        // in field order, as dropping the block would.
        if !self.body.reusable() {
            return None;
        }
        self.identity.name = None;
        *self.home.get_mut() = None;
        #[cfg(feature = "tracing")]
        self.trace.clear();
        self.body.vacate();
        Some(self.body_type())
    }

    /// The type of its body, through `Any`'s vtable entry for the body's own type
    /// (`Body: Any`), so no implementation of `Body` can misreport it.
    pub(crate) fn body_type(&self) -> std::any::TypeId {
        let body: &dyn std::any::Any = &self.body;
        body.type_id()
    }

    /// This control block as the `GreenThread<B>` it was made as, if its body is a `B`
    /// (for reuse by a spawn of the same body type, `runtime::recycle`).
    pub(crate) fn downcast<B: Body>(
        this: Arc<GreenThread>,
    ) -> Result<Arc<GreenThread<B>>, Arc<GreenThread>> {
        if this.body_type() != std::any::TypeId::of::<B>() {
            return Err(this);
        }
        let raw = Arc::into_raw(this) as *const GreenThread<B>;
        // SAFETY: every `Arc<GreenThread>` is an `Arc<GreenThread<X>>` unsized to
        // `Arc<GreenThread<dyn Body>>`, where `X` is the type `body_type` reports,
        // checked above to be `B`. Dropping the metadata gives the pointer that
        // `Arc<GreenThread<B>>::into_raw` would have returned, which is what `from_raw`
        // requires (its docs allow exactly this unsizing round trip).
        Ok(unsafe { Arc::from_raw(raw) })
    }
}

impl<B: ?Sized> Drop for GreenThread<B> {
    fn drop(&mut self) {
        // A stack still here belongs to a green thread that never finished: leak it
        // rather than unmap memory its frames may point into (design.md, section 2).
        self.run.get_mut().leak_stack();
    }
}

/// Creates the host green thread of `Runtime::run`: started on its own stack, at home
/// on the calling thread, already RUNNING.
pub(crate) fn new_host(entry: Entry, stack: Stack) -> Arc<GreenThread> {
    let body = FnBody(UnsafeCell::new(Some(entry)));
    let mut green = GreenThread::new(Green::new(None), stack.usable(), body, None);
    green.state = State::new_running();
    let green: Arc<GreenThread> = Arc::new(green);
    // SAFETY: it is RUNNING with no other holder, never started, and its home is this
    // thread, where `Runtime::run` resumes it.
    unsafe {
        GreenThread::prepare(
            &green,
            stack,
            Home::Host(std::thread::current()),
            usize::MAX,
        )
    };
    green
}

// ---------------------------------------------------------------------------------
// Switching.
// ---------------------------------------------------------------------------------

thread_local! {
    /// The green thread running on this OS thread, or null in scheduler / plain code.
    static CURRENT: Cell<Option<NonNull<GreenThread>>> = const { Cell::new(None) };
}

/// The green thread running on this thread, if any.
#[inline]
pub(crate) fn current_ptr() -> Option<NonNull<GreenThread>> {
    CURRENT.get()
}

/// Called from the fault handler (overflow.rs): whether `address` lies in the guard
/// page of the green thread running on this thread. Async-signal-safe: a const
/// thread-local read and plain loads from that green thread's own control block.
pub(crate) fn overflow_at(address: usize) -> Option<crate::overflow::Overflow> {
    let green = CURRENT.get()?;
    // SAFETY: CURRENT is non-null only while that green thread runs on this thread (and
    // the fault interrupted it), and its resumer holds an Arc to it. The green thread
    // touches its RunState only inside `switch_out`, which never faults on the guard
    // page, so reading it here races with nothing.
    let green = unsafe { green.as_ref() };
    // SAFETY: as above.
    let stack = unsafe { (*green.run.get()).stack.as_ref()? };
    let hook = crate::panic_hook::hook_stack_overflow_at(address);
    if !hook && !stack.guard().contains(&address) {
        return None;
    }
    Some(crate::overflow::Overflow {
        name: green.identity.name().map(|name| name as *const str),
        id: green.identity.id().as_u64(),
        stack_kib: if hook {
            crate::panic_hook::HOOK_STACK_SIZE
        } else {
            stack.usable()
        } / 1024,
        in_hook: hook,
    })
}

/// Runs `green` on this thread until it suspends or finishes, and says which.
///
/// # Safety
/// The caller holds `green` RUNNING (it popped it, or is its host), keeps it alive until
/// this returns, has prepared it, and is on its home thread.
#[inline]
pub(crate) unsafe fn resume(green: &GreenThread) -> Suspend {
    debug_assert!(green.state.load() & crate::state::RUNNING != 0);
    #[cfg(feature = "tracing")]
    // SAFETY: `wants_slice` wants its resumer; the caller holds it RUNNING on its home
    // thread, so that is us.
    if crate::trace::listening() && unsafe { green.trace.wants_slice() } {
        // SAFETY: forwarded from the caller.
        unsafe { switch_in_traced(green) };
    } else {
        // SAFETY: forwarded from the caller.
        unsafe { switch_in_as_current(green) };
    }
    #[cfg(not(feature = "tracing"))]
    // SAFETY: forwarded from the caller.
    unsafe {
        switch_in_as_current(green)
    };
    // SAFETY: the green thread wrote `why` before switching back; it is suspended now.
    unsafe { (*green.run.get()).why }
}

/// The switch of [`resume`] inside the green thread's tracing slice. The slice's two
/// halves are calls that return before and after the switch, so the switch itself is
/// at the same call depth as the untraced one (see [`crate::trace::enter_slice`]).
///
/// The halves run subscriber callbacks (new_span, enter, exit, close) on the resumer's
/// stack, before the green thread is marked current and after it is unmarked: a
/// callback that suspends "the current green thread" (a yield, a pending `block_on`)
/// must never switch out of the resumer's stack.
///
/// # Safety
/// As for [`resume`].
#[cfg(feature = "tracing")]
#[inline(always)]
unsafe fn switch_in_traced(green: &GreenThread) {
    // SAFETY: the caller holds it RUNNING on its home thread (resume's contract): we
    // are its resumer, about to switch in.
    let slice = unsafe { crate::trace::enter_slice(&green.trace, &green.identity) };
    // SAFETY: forwarded from the caller.
    unsafe { switch_in_as_current(green) };
    if let Some(slice) = slice {
        // SAFETY: the same resumer, switched back to, ending the slice it began.
        unsafe { crate::trace::exit_slice(&green.trace, slice) };
    }
}

/// [`switch_in`], with `green` marked as this thread's current green thread for exactly
/// as long as it runs.
///
/// # Safety
/// As for [`resume`].
#[inline(always)]
unsafe fn switch_in_as_current(green: &GreenThread) {
    let outer = CURRENT.replace(Some(NonNull::from(green)));
    // SAFETY: forwarded from the caller.
    unsafe { switch_in(green) };
    CURRENT.set(outer);
}

/// Switches from the resumer into `green` until it switches back.
///
/// # Safety
/// As for [`resume`].
#[inline(always)]
unsafe fn switch_in(green: &GreenThread) {
    let run = green.run.get();
    // SAFETY: `sp` is the green thread's saved context (from init_stack or its last
    // switch out); the caller guarantees it is not running anywhere, that this is its
    // home thread, and that the control block outlives the call. `caller_sp` is where
    // the green thread will find our context when it switches back.
    unsafe { arch::switch(ptr::addr_of_mut!((*run).caller_sp), (*run).sp) };
}

/// Switches the running green thread back to its resumer; returns when resumed.
/// Does not check for cancellation: see [`suspend`].
fn switch_out<B: ?Sized>(green: &GreenThread<B>, why: Suspend) {
    let run = green.run.get();
    // SAFETY: we are that green thread, running on its stack, so we are the only
    // user of `run`; `caller_sp` was stored by the `resume` that is running us and that
    // context is suspended in `switch` on this same OS thread.
    unsafe {
        (*run).why = why;
        arch::switch(ptr::addr_of_mut!((*run).sp), (*run).caller_sp);
    }
}

/// Suspends the current green thread (`why` is Yield or Park). Returns when it is
/// resumed; unwinds with [`Cancelled`] if it was cancelled by then.
///
/// Cancellation is checked only after the switch: a cancel that arrived while running
/// set NOTIFIED too, so the worker resumes it at once and it unwinds here. A green thread
/// that caught [`Cancelled`] and suspends again therefore really suspends, and at
/// shutdown is leaked rather than spun (design.md, section 2).
pub(crate) fn suspend(green: &GreenThread, why: Suspend) {
    debug_assert!(why != Suspend::Complete);
    switch_out(green, why);
    check_cancelled(green);
}

/// Unwinds with [`Cancelled`] when cancellation was requested, unless already
/// unwinding (a second unwind would abort).
pub(crate) fn check_cancelled(green: &GreenThread) {
    if green.state.is_cancelled() && !std::thread::panicking() {
        if cfg!(panic = "abort") {
            cancelled_without_unwinding(green);
        }
        std::panic::resume_unwind(Box::new(Cancelled));
    }
}

/// A started green thread was cancelled (`JoinHandle::abort`) in a program built with
/// `panic = "abort"`: it cannot unwind, and `resume_unwind` would abort with no word of
/// why. Say why, then abort.
#[cold]
fn cancelled_without_unwinding(green: &GreenThread) -> ! {
    abort_with(&format!(
        "green thread {} was cancelled (JoinHandle::abort) after it started, but this \
         program is built with panic = \"abort\", so it cannot unwind. Cancel only green \
         threads that have not started, or build with panic = \"unwind\"",
        green.identity.id()
    ));
}

/// The first Rust frame on every green stack, called by the arch trampoline.
///
/// # Safety
/// `arg` is the address of a `GreenThread<B>` (`prepare` passes the control block's
/// address with `B`'s entry), held RUNNING by its resumer, which holds an Arc to it.
unsafe extern "sysv64" fn green_main<B: Body>(arg: *mut u8) -> ! {
    // SAFETY: see the function's contract.
    let green = unsafe { &*(arg as *const GreenThread<B>) };
    // The body catches the closure's panic itself; what can still escape is a panic
    // from dropping the result or payload. Unwinding must never reach the trampoline.
    // SAFETY: we are the green thread, running on our stack, so we hold it RUNNING.
    if panics(|| unsafe { green.body.start(Start::Run) }) {
        abort_with("a green thread's result panicked while being dropped");
    }
    switch_out(green, Suspend::Complete);
    abort_with("greenrt bug: a finished green thread was resumed")
}

/// Runs `f` and says whether it panicked. The panic's payload is forgotten, never
/// dropped: its destructor is user code that may panic in turn, and that panic would
/// escape (`catch_unwind(..).is_err()` drops the payload outside the catch).
pub(crate) fn panics(f: impl FnOnce()) -> bool {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => false,
        Err(payload) => {
            std::mem::forget(payload);
            true
        }
    }
}

pub(crate) fn abort_with(msg: &str) -> ! {
    eprintln!("greenrt: fatal: {msg}; aborting");
    std::process::abort()
}

/// Aborts the process, saying `why`, if dropped while armed: it guards code that must
/// not unwind, because unwinding would strand a green thread (a scheduler loop, a
/// tracing slice around a switch). The panic's own message is printed by the panic hook
/// before the drop runs. [`disarm`](AbortOnUnwind::disarm) it on the normal way out.
pub(crate) struct AbortOnUnwind(&'static str);

impl AbortOnUnwind {
    #[inline(always)]
    pub(crate) fn new(why: &'static str) -> AbortOnUnwind {
        AbortOnUnwind(why)
    }

    #[inline(always)]
    pub(crate) fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        abort_with(self.0);
    }
}

// ---------------------------------------------------------------------------------
// Waking.
// ---------------------------------------------------------------------------------

/// Wakes a green thread: queues it on its home when it was idle.
pub(crate) fn wake(green: Arc<GreenThread>) {
    if green.state.wake() == crate::state::Wake::Schedule {
        schedule_woken(green);
    }
}

/// Requests cancellation (see [`Cancelled`]).
pub(crate) fn cancel(green: &Arc<GreenThread>) {
    if green.state.cancel() == crate::state::Wake::Schedule {
        schedule_woken(green.clone());
    }
}

/// Queues a green thread that this caller moved from idle to SCHEDULED.
fn schedule_woken(green: Arc<GreenThread>) {
    // The event goes out once the green thread is queued, so that a subscriber that
    // panics cannot leave it SCHEDULED in no queue (never to run again).
    #[cfg(feature = "tracing")]
    let _event = crate::trace::SchedEventOnDrop::new("wake", || green.identity.id());
    // An idle green thread has run, so its home is set (prepare happened before its
    // first switch out, and the state transition orders that write before our read).
    // SAFETY: see the field: the transition to SCHEDULED that made us the scheduler
    // orders `prepare`'s write before this read, and nobody writes it again.
    match unsafe { &*green.home.get() } {
        Some(Home::Worker(home)) => {
            // On its home worker (a wake from a green thread or task that shares the
            // worker, the common case), the running worker keeps the runtime alive.
            let mut green = Some(green);
            crate::runtime::context::with_local(|local| {
                let at_home = local
                    .worker
                    .as_ref()
                    .filter(|core| Arc::ptr_eq(&core.home, home));
                if let Some(core) = at_home {
                    core.schedule_started_here(green.take().expect("taken only here"));
                }
            });
            if let Some(green) = green {
                // Elsewhere the clone keeps the runtime alive until the push and the
                // unpark are done, even if the green thread runs and is freed (and its
                // runtime dropped) before `send_home` returns. It is a count of this
                // one worker's, not the runtime's, which every worker would touch.
                let home = home.clone();
                home.shared.send_home(home.index, green);
            }
        }
        Some(Home::Host(thread)) => thread.unpark(),
        None => unreachable!("greenrt bug: an idle green thread has no home"),
    }
}

/// The waker vtable for control blocks with a `B` body. A green thread's waker holds
/// the address of its `GreenThread<B>` (thin) and this vtable, which knows `B`.
fn waker_vtable_of<B: Body + 'static>() -> &'static RawWakerVTable {
    &RawWakerVTable::new(
        clone_raw::<B>,
        wake_raw::<B>,
        wake_by_ref_raw::<B>,
        drop_raw::<B>,
    )
}

unsafe fn clone_raw<B: Body + 'static>(ptr: *const ()) -> RawWaker {
    // SAFETY: every RawWaker with this vtable holds the data address of an
    // Arc<GreenThread<B>> (the same address whether seen through it or through the
    // Arc<GreenThread> it was unsized to): from Arc::into_raw here, or borrowed from an
    // Arc that outlives it (waker_ref); either way the count is >= 1.
    unsafe { Arc::increment_strong_count(ptr as *const GreenThread<B>) };
    RawWaker::new(ptr, waker_vtable_of::<B>())
}

unsafe fn wake_raw<B: Body + 'static>(ptr: *const ()) {
    // SAFETY: an owned waker: this consumes the count clone_raw added.
    wake(unsafe { Arc::from_raw(ptr as *const GreenThread<B>) });
}

unsafe fn wake_by_ref_raw<B: Body + 'static>(ptr: *const ()) {
    // SAFETY: the count is >= 1 while the waker exists; we add one for the clone.
    unsafe { Arc::increment_strong_count(ptr as *const GreenThread<B>) };
    // SAFETY: consumes the count just added.
    wake(unsafe { Arc::from_raw(ptr as *const GreenThread<B>) });
}

unsafe fn drop_raw<B: Body + 'static>(ptr: *const ()) {
    // SAFETY: an owned waker gives back the count clone_raw added.
    drop(unsafe { Arc::from_raw(ptr as *const GreenThread<B>) });
}

/// A waker for the current green thread, borrowed: it adds no reference count until
/// cloned. `ManuallyDrop` because dropping it must not give back a count it never took.
///
/// # Safety
/// `green` points into an `Arc<GreenThread>` that outlives the returned waker.
pub(crate) unsafe fn waker_ref(green: &GreenThread) -> std::mem::ManuallyDrop<Waker> {
    let raw = RawWaker::new(green as *const GreenThread as *const (), green.waker_vtable);
    // SAFETY: `waker_vtable` is `waker_vtable_of::<B>` for the `B` this control block
    // was made with, whose functions uphold the RawWaker contract for the addresses of
    // Arc<GreenThread<B>>s; the caller guarantees the Arc outlives the waker.
    std::mem::ManuallyDrop::new(unsafe { Waker::from_raw(raw) })
}

/// A body for unit tests of control blocks: it runs nothing and may be reused.
#[cfg(test)]
pub(crate) struct TestBody<const N: usize>;

#[cfg(test)]
impl<const N: usize> Body for TestBody<N> {
    unsafe fn start(&self, _: Start) {}
    fn publish(&self) {}
    unsafe fn publish_cancelled(&self) {}
    fn reusable(&self) -> bool {
        true
    }
    fn vacate(&mut self) {}
}

/// A control block with a `TestBody<N>`, never started, referenced only by the result.
#[cfg(test)]
pub(crate) fn test_block<const N: usize>() -> Arc<GreenThread> {
    Arc::new(GreenThread::new(
        Green::new(None),
        16 * 1024,
        TestBody::<N>,
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downcast_gives_back_the_body_type_the_block_was_made_with_and_nothing_else() {
        let made_as_1 = test_block::<1>();
        let address = Arc::as_ptr(&made_as_1) as *const u8;
        let Err(refused) = GreenThread::downcast::<TestBody<2>>(made_as_1) else {
            panic!("a TestBody<1> block was taken for a TestBody<2>");
        };
        let Ok(typed) = GreenThread::downcast::<TestBody<1>>(refused) else {
            panic!("a TestBody<1> block was refused as a TestBody<1>");
        };
        assert_eq!(Arc::as_ptr(&typed) as *const u8, address, "the same block");
        assert_eq!(Arc::strong_count(&typed), 1);
    }

    #[test]
    fn vacate_reports_the_body_type_and_drops_the_name() {
        let mut green: Arc<GreenThread> = Arc::new(GreenThread::new(
            Green::new(Some("named".to_string())),
            16 * 1024,
            TestBody::<3>,
            None,
        ));
        let block = Arc::get_mut(&mut green).unwrap();
        assert_eq!(block.vacate(), Some(std::any::TypeId::of::<TestBody<3>>()));
        assert_eq!(block.identity.name(), None);
    }

    #[test]
    fn the_fields_a_resume_and_a_wake_touch_come_first() {
        use std::mem::offset_of;
        // Arc's two counts precede the block in its allocation.
        let counts = 2 * std::mem::size_of::<usize>();
        let run = offset_of!(GreenThread<TestBody<0>>, run);
        let hot_end = counts + run + offset_of!(RunState, why) + 1;
        assert!(
            hot_end <= 80,
            "the hot fields end {hot_end} bytes into the allocation: two cache lines \
             from any 16-byte-aligned start need at most 80"
        );
        for hot in [
            offset_of!(GreenThread<TestBody<0>>, state),
            offset_of!(GreenThread<TestBody<0>>, waker_vtable),
            offset_of!(GreenThread<TestBody<0>>, home),
        ] {
            assert!(hot < run, "a hot field lies after `run`");
        }
        assert!(offset_of!(RunState, caller_sp) < offset_of!(RunState, stack));
    }
}
