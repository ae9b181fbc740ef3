//! `Handle`: a clonable way to spawn onto a runtime from any thread.

use super::{context, Shared};
use crate::green::{Body, Cancelled, Green, GreenThread, Start};
use crate::join::{JoinHandle, Outcome, Packet, Target};
use crate::task::{FutureTask, Task, TaskCell};
use std::cell::UnsafeCell;
use std::future::Future;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// A reference to a runtime, for spawning from anywhere (`Clone + Send + Sync`).
///
/// ```
/// let rt = greenrt::runtime::Runtime::new().unwrap();
/// let handle = rt.handle().clone();
/// let from_thread = std::thread::spawn(move || handle.spawn(|| 5).join().unwrap());
/// assert_eq!(from_thread.join().unwrap(), 5);
/// ```
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("worker_threads", &self.shared.config.worker_threads)
            .field("stack_size", &self.shared.config.stack_size)
            .finish()
    }
}

impl Handle {
    /// The handle of the runtime the current thread is in (a worker, a green thread or
    /// task, or inside `Runtime::run`/`Runtime::block_on`).
    ///
    /// # Panics
    /// Outside any runtime; use [`Handle::try_current`] to check.
    pub fn current() -> Handle {
        super::current_or_panic("Handle::current()")
    }

    /// The current runtime's handle, or `None` outside any runtime.
    ///
    /// ```
    /// assert!(greenrt::runtime::Handle::try_current().is_none());
    /// let rt = greenrt::runtime::Runtime::new().unwrap();
    /// assert!(rt.run(|| greenrt::runtime::Handle::try_current().is_some()));
    /// ```
    pub fn try_current() -> Option<Handle> {
        context::current_handle()
    }

    /// Spawns a green thread on this runtime. See [`crate::spawn`].
    ///
    /// # Panics
    /// When no more green threads fit (see [`crate::Builder::spawn`], which returns the
    /// error instead).
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self.spawn_green(None, None, f) {
            Ok(handle) => handle,
            // The same message as the error `crate::Builder::spawn` returns (the
            // error already says that spawning failed, and why).
            Err(error) => panic!("{error}"),
        }
    }

    /// Runs `f` on this runtime's blocking pool, from any thread. See
    /// [`crate::spawn_blocking`].
    ///
    /// ```
    /// let rt = greenrt::runtime::Runtime::new().unwrap();
    /// let handle = rt.handle().clone();
    /// let job = std::thread::spawn(move || handle.spawn_blocking(|| 6 * 7))
    ///     .join()
    ///     .unwrap();
    /// assert_eq!(job.join().unwrap(), 42);
    /// ```
    pub fn spawn_blocking<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        crate::blocking::spawn_blocking_on(self, f)
    }

    /// Spawns a future task on this runtime. See [`crate::spawn_async`].
    pub fn spawn_async<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if self.shared.is_shutdown() {
            return cancelled_handle(future);
        }
        // One allocation for the future and its outcome, shared by the task and the
        // JoinHandle.
        let cell = Arc::new(TaskCell::new(future));
        let task = Arc::new(FutureTask::new(self.shared.clone(), cell.clone()));
        let identity = task.identity.clone();
        task.register();
        self.shared.schedule(Task::Future(task.clone()));
        JoinHandle::new(cell, Target::Task(task), identity)
    }

    /// Spawns a green thread with an optional name and stack size (already validated).
    pub(crate) fn spawn_green<F, T>(
        &self,
        name: Option<String>,
        stack_size: Option<usize>,
        f: F,
    ) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if self.shared.is_shutdown() {
            return Ok(cancelled_handle(f));
        }
        let reservation = reserve_place(&self.shared)?;
        let identity = Green::new(name);
        let body = SpawnCell {
            packet: Packet::new(),
            closure: UnsafeCell::new(Some(f)),
        };
        let stack_size = stack_size.unwrap_or(self.shared.config.stack_size);
        let cell = match recycled::<SpawnCell<F, T>>() {
            // A finished green thread's block of the same type, kept by this worker:
            // no allocation (see runtime/recycle.rs).
            Some(mut cell) => {
                *Arc::get_mut(&mut cell).expect("a recycled control block is unique") =
                    GreenThread::new(identity.clone(), stack_size, body, Some(reservation));
                cell
            }
            None => {
                // One allocation: the control block with the closure and the outcome,
                // which the JoinHandle reads through the same Arc. Allocated first and
                // written in place: built on the stack and then moved, its ~350 bytes
                // cost two memcpys.
                let mut cell = Arc::<GreenThread<SpawnCell<F, T>>>::new_uninit();
                Arc::get_mut(&mut cell)
                    .expect("a new Arc is unique")
                    .write(GreenThread::new(
                        identity.clone(),
                        stack_size,
                        body,
                        Some(reservation),
                    ));
                // SAFETY: `write` above initialised the whole value through the only
                // reference to this fresh allocation; nothing has read it uninitialised.
                unsafe { cell.assume_init() }
            }
        };
        let green: Arc<GreenThread> = cell.clone();
        self.shared.schedule(Task::Green(green));
        // After queueing it: a subscriber that panics here leaves a green thread that
        // runs, detached, rather than one lost before it was queued.
        #[cfg(feature = "tracing")]
        crate::trace::sched_event("spawn", identity.id());
        Ok(JoinHandle::new(cell, Target::Green, identity))
    }
}

/// A control block kept by this thread's worker for a body of type `B`, if any.
fn recycled<B: Body>() -> Option<Arc<GreenThread<B>>> {
    context::with_local(|local| local.worker.as_ref()?.recycler.take::<B>()).flatten()
}

/// A spawned green thread's closure, until it first runs, and its outcome: the
/// [`Body`] of its control block, which its JoinHandle holds as its [`Outcome`].
pub(crate) struct SpawnCell<F, T> {
    packet: Packet<T>,
    /// Taken by the holder of the green thread RUNNING, at its first run.
    closure: UnsafeCell<Option<F>>,
}

impl<F, T> Body for SpawnCell<F, T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    unsafe fn start(&self, start: Start) {
        // SAFETY: the caller holds the green thread RUNNING (see the Sync impl).
        let Some(f) = (unsafe { (*self.closure.get()).take() }) else {
            return;
        };
        let result = match start {
            Start::Run => {
                let result = catch_unwind(AssertUnwindSafe(f));
                if self.packet.is_detached() {
                    // Nobody will take it: drop it here, in the green thread, where its
                    // destructor may wait (join a child, flush a socket) as green code
                    // does, rather than on the worker at publish, where it may not.
                    // Panicking there aborts, as it would at publish.
                    if crate::green::panics(move || drop(result)) {
                        crate::green::abort_with(
                            "a green thread's or task's result panicked while being dropped",
                        );
                    }
                    return;
                }
                result
            }
            Start::Cancel => Err(dropped_closure_payload(f, Box::new(Cancelled))),
            Start::Fail(error) => Err(dropped_closure_payload(f, Box::new(error))),
        };
        // SAFETY: holding it RUNNING makes us the packet's only producer.
        unsafe { self.packet.store(result) };
    }

    fn publish(&self) {
        self.packet.publish()
    }

    unsafe fn publish_cancelled(&self) {
        // SAFETY: forwarded from the caller (the only producer).
        unsafe { self.packet.publish_cancelled() }
    }

    fn reusable(&self) -> bool {
        true
    }

    fn vacate(&mut self) {
        *self = SpawnCell {
            packet: Packet::new(),
            closure: UnsafeCell::new(None),
        };
    }
}

// `Send + Sync` (Outcome's supertraits) come from GreenThread's impls: the closure is
// touched only by the RUNNING holder (`Body::start`), and the JoinHandle reaches only
// the packet, which is `Sync` for `T: Send`.
impl<F, T> Outcome<T> for GreenThread<SpawnCell<F, T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    fn packet(&self) -> &Packet<T> {
        &self.body.packet
    }

    fn cancel_green(self: Arc<Self>) {
        let green: Arc<GreenThread> = self;
        crate::green::cancel(&green);
    }

    fn control_block(&self) -> Option<&GreenThread> {
        Some(self)
    }
}

/// Drops a closure that will never run; the payload to report is `payload`, unless the
/// closure's destructor panicked, whose payload then wins (nothing is lost silently).
fn dropped_closure_payload<F>(
    f: F,
    payload: Box<dyn std::any::Any + Send>,
) -> Box<dyn std::any::Any + Send> {
    match catch_unwind(AssertUnwindSafe(move || drop(f))) {
        Ok(()) => payload,
        Err(drop_panic) => drop_panic,
    }
}

/// A handle for work spawned after shutdown began: it never runs.
fn cancelled_handle<T: Send + 'static, W>(work: W) -> JoinHandle<T> {
    let packet = Arc::new(Packet::new());
    // SAFETY: nobody else has the packet yet.
    unsafe { packet.complete(Err(dropped_closure_payload(work, Box::new(Cancelled)))) };
    JoinHandle::new(packet, Target::None, Green::new(None))
}

/// Reserves a live-budget place for a new green thread. When the budget is exhausted
/// while green threads are still finishing, waits for them (yielding) rather than fail:
/// spawning a million short green threads in a row must work. It fails only when no
/// green thread has finished for [`PATIENCE`], i.e. the budget is really held, or at
/// once where waiting would block a worker (in a future task). The
/// patience is long enough that a loaded machine (workers preempted for tens of
/// milliseconds) does not turn a burst of short green threads into an error.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

fn reserve_place(shared: &Shared) -> io::Result<crate::stack::Reservation> {
    let cap = shared
        .config
        .max_green_threads
        .map(|cap| (cap, &shared.live_greens));
    // On a worker (of any runtime: the budget is the process's), from its spare places.
    let reserve = || {
        context::with_local(|local| {
            let spares = local.worker.as_ref().map(|core| &core.spare_places);
            crate::stack::reserve(cap, spares)
        })
        .unwrap_or_else(|| crate::stack::reserve(cap, None))
    };
    let mut error = match reserve() {
        Ok(reservation) => return Ok(reservation),
        Err(error) => error,
    };
    let can_yield = crate::green::current_ptr().is_some() && !std::thread::panicking();
    if !can_yield && context::on_worker() {
        // A future task (or a destructor the worker runs, or an unwinding green thread)
        // could wait only by blocking its worker, which also holds back the green
        // threads whose finishing would make room. Fail now, saying what to do instead.
        return Err(error.into_error_on_worker());
    }
    // Progress is a place freed where this spawn needs one: in this runtime when its
    // own cap is what ran out (places freed in other runtimes do not help it), in the
    // process otherwise.
    let progress = |error: &crate::stack::Exhausted| match error {
        crate::stack::Exhausted::Runtime(_) => shared
            .live_greens
            .load(std::sync::atomic::Ordering::Relaxed),
        crate::stack::Exhausted::Process(_) => crate::stack::finished_count(),
    };
    let mut finished = progress(&error);
    let mut progress_at = std::time::Instant::now();
    while progress_at.elapsed() < PATIENCE {
        if can_yield {
            crate::yield_now();
        } else {
            // A plain thread cannot help; let the workers run instead of spinning.
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        match reserve() {
            Ok(reservation) => return Ok(reservation),
            Err(exhausted) => error = exhausted,
        }
        let now_finished = progress(&error);
        if now_finished != finished {
            finished = now_finished;
            progress_at = std::time::Instant::now();
        }
    }
    Err(error.into_error())
}
