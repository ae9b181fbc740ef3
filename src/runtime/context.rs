//! What the current OS thread is to greenrt: a worker, a host (inside `Runtime::run` or
//! `Runtime::block_on`), or a plain thread; and whether a future task is being polled.
//!
//! This module owns the thread-locals that answer those questions. They hold raw
//! pointers to state that lives on the worker's or host's own stack frame for as long
//! as the pointer is set ([`enter`] restores the previous value when that frame ends),
//! and they are only ever read on the thread that set them: a green thread never
//! migrates, so green code reading them sees its home thread's values.

use super::worker::Core;
use super::{Handle, Shared};
use crate::time::Timers;
use std::cell::{Cell, RefCell};
use std::ptr;
use std::sync::Arc;
use std::time::Instant;

/// Per-thread state of a thread that runs greenrt work.
pub(crate) struct Local {
    pub(crate) handle: Handle,
    pub(crate) timers: RefCell<Timers>,
    /// Present on worker threads only.
    pub(crate) worker: Option<Core>,
    /// A blocking-pool thread running a job: it sees its runtime (to spawn, to use
    /// timers), but is not "inside" it, since blocking there is what the pool is for
    /// (`Runtime::run` and `block_on` are allowed, as on a plain thread).
    pub(crate) blocking_pool: bool,
}

impl Local {
    pub(crate) fn host(handle: Handle) -> Local {
        Local {
            handle,
            timers: RefCell::default(),
            worker: None,
            blocking_pool: false,
        }
    }

    /// For a job on `handle`'s blocking pool (see `blocking_pool`).
    pub(crate) fn blocking_pool(handle: Handle) -> Local {
        Local {
            blocking_pool: true,
            ..Local::host(handle)
        }
    }

    /// This thread's worker core, if it is a worker of `shared`'s runtime.
    pub(crate) fn worker_of(&self, shared: &Arc<Shared>) -> Option<&Core> {
        self.worker
            .as_ref()
            .filter(|_| Arc::ptr_eq(&self.handle.shared, shared))
    }
}

thread_local! {
    static LOCAL: Cell<*const Local> = const { Cell::new(ptr::null()) };
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

/// Restores the previous thread-local value when dropped.
pub(crate) struct EnterGuard {
    previous: *const Local,
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        LOCAL.set(self.previous);
    }
}

/// Makes `local` this thread's runtime state until the guard drops. The guard must be
/// dropped before `local`; callers keep both in the same frame.
pub(crate) fn enter(local: &Local) -> EnterGuard {
    EnterGuard {
        previous: LOCAL.replace(local),
    }
}

/// Runs `f` with this thread's runtime state, if it has one.
///
/// `f` may switch green threads (a spawn waiting for room yields, for one) and keep the
/// borrow across the switch: the `Local` lives in the frame of this thread's worker
/// loop or `Runtime::run`, which outlives every green thread that runs on this thread
/// while it is set (a worker unwinds its green threads before it returns; `run` drives
/// its host green thread to completion), and a started green thread runs on no other
/// thread.
pub(crate) fn with_local<R>(f: impl FnOnce(&Local) -> R) -> Option<R> {
    let local = LOCAL.get();
    if local.is_null() {
        return None;
    }
    // SAFETY: a non-null LOCAL points to a `Local` whose frame outlives the EnterGuard
    // that set it (see `enter`) and every green thread run under it (see above), and
    // we are on the thread that set it.
    Some(f(unsafe { &*local }))
}

/// Runs `f` with this thread's timer heap, if it is a runtime thread.
pub(crate) fn with_timers<R>(f: impl FnOnce(&RefCell<Timers>) -> R) -> Option<R> {
    with_local(|local| f(&local.timers))
}

thread_local! {
    /// How many greenrt `block_on`s wait on this thread (they fire its timers).
    static DRIVING_TIMERS: Cell<u32> = const { Cell::new(0) };
}

/// Marks "greenrt's `block_on` waits on this thread, firing its timers" until dropped.
pub(crate) struct DrivingTimers(());

impl Drop for DrivingTimers {
    fn drop(&mut self) {
        DRIVING_TIMERS.set(DRIVING_TIMERS.get() - 1);
    }
}

pub(crate) fn driving_timers() -> DrivingTimers {
    DRIVING_TIMERS.set(DRIVING_TIMERS.get() + 1);
    DrivingTimers(())
}

/// Runs `f` with the timer heap a sleep polled here may register with: one that this
/// thread fires. A blocking-pool job's heap is fired only while greenrt's own
/// `block_on` waits on the thread; polled by another executor there, a sleep would
/// register where nothing fires it.
pub(crate) fn with_timers_for_sleep<R>(f: impl FnOnce(&RefCell<Timers>) -> R) -> Option<R> {
    with_local(|local| (!local.blocking_pool || DRIVING_TIMERS.get() > 0).then(|| f(&local.timers)))
        .flatten()
}

/// The runtime this thread belongs to, if any.
pub(crate) fn current_handle() -> Option<Handle> {
    with_local(|local| local.handle.clone())
}

/// Whether this thread is a worker of, or hosts, any greenrt runtime, or is running a
/// green thread (a blocking-pool job is not: it may block).
pub(crate) fn in_runtime_thread() -> bool {
    with_local(|local| !local.blocking_pool).unwrap_or(false)
        || crate::green::current_ptr().is_some()
}

/// Whether this thread is a worker of any greenrt runtime.
pub(crate) fn on_worker() -> bool {
    with_local(|local| local.worker.is_some()).unwrap_or(false)
}

/// Whether this thread is a worker of `shared`'s runtime.
pub(crate) fn is_worker_of(shared: &Arc<Shared>) -> bool {
    with_local(|local| local.worker_of(shared).is_some()).unwrap_or(false)
}

/// Marks "a future task is being polled" until dropped.
pub(crate) struct TaskGuard(bool);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        IN_TASK.set(self.0);
    }
}

pub(crate) fn enter_task() -> TaskGuard {
    TaskGuard(IN_TASK.replace(true))
}

pub(crate) fn in_task() -> bool {
    IN_TASK.get()
}

/// Parks the current thread until unparked. A runtime thread fires its due timers first
/// and parks no longer than its next deadline, so sleeps it owns keep completing.
pub(crate) fn park_current_thread() {
    let deadline = with_timers(|timers| {
        crate::time::fire_due(timers);
        timers.borrow_mut().next_deadline()
    })
    .flatten();
    match deadline {
        Some(deadline) => {
            let now = Instant::now();
            if deadline > now {
                std::thread::park_timeout(deadline - now);
            }
        }
        None => std::thread::park(),
    }
}
