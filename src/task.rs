//! Future tasks, and [`Task`], the one type the scheduler queues.
//!
//! A future task holds no stack, so unlike a started green thread it may run on any
//! worker at every poll: its wakes go to the waking worker's own deque or to the
//! injector, and idle workers steal it freely. It shares the state word of green threads
//! (`state.rs`): RUNNING while polled, NOTIFIED when woken during its poll.
//!
//! This module must never block: a poll runs user code on a worker, and a future task
//! that calls a green-blocking function gets a panic telling it to `.await` instead.

use crate::green::{Cancelled, Green, GreenThread};
use crate::join::{Outcome, Packet};
use crate::runtime::Shared;
use crate::state::{AfterRun, State, Wake, CANCELLED};
use std::cell::UnsafeCell;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Work in a run queue: an unstarted or woken green thread, or a future task.
pub(crate) enum Task {
    Green(Arc<GreenThread>),
    Future(Arc<FutureTask>),
}

/// The erased future a task polls, and where its output goes.
trait TaskBody: Send + Sync {
    /// Polls the user's future; on completion or panic delivers the outcome and
    /// returns Ready (also when the future is already gone).
    ///
    /// # Safety
    /// The caller holds the task RUNNING.
    unsafe fn poll_body(&self, cx: &mut Context<'_>) -> Poll<()>;

    /// Drops the future (if still there), then delivers [`Cancelled`] unless an outcome
    /// was delivered already.
    ///
    /// # Safety
    /// The caller holds the task RUNNING, or holds its last reference.
    unsafe fn finish(&self);
}

/// A future task's future and its outcome: one allocation that the task holds as its
/// body and its JoinHandle as its [`Outcome`].
pub(crate) struct TaskCell<F: Future> {
    packet: Packet<F::Output>,
    /// Pinned: it never moves out of this allocation, and is dropped in place.
    future: UnsafeCell<ManuallyDrop<F>>,
    /// Whether `future` has not been dropped yet.
    live: UnsafeCell<bool>,
}

// SAFETY: `future` and `live` are touched only by the holder of the task RUNNING (one at
// a time, state.rs, with AcqRel transitions between holders), or by the last owner
// (drop); the JoinHandle reaches only `packet`, which is `Sync` for `Output: Send`. The
// future is polled on any worker, hence `F: Send`.
unsafe impl<F> Sync for TaskCell<F>
where
    F: Future + Send,
    F::Output: Send,
{
}

impl<F: Future> TaskCell<F> {
    pub(crate) fn new(future: F) -> TaskCell<F> {
        TaskCell {
            packet: Packet::new(),
            future: UnsafeCell::new(ManuallyDrop::new(future)),
            live: UnsafeCell::new(true),
        }
    }

    /// Drops the future in place, once.
    ///
    /// # Safety
    /// As for [`TaskBody::finish`].
    unsafe fn drop_future(&self) {
        // SAFETY: forwarded from the caller: nobody else touches `live` or `future`.
        unsafe {
            if *self.live.get() {
                // Cleared first: if the destructor panics, the rest is leaked, never
                // dropped twice.
                *self.live.get() = false;
                ManuallyDrop::drop(&mut *self.future.get());
            }
        }
    }
}

impl<F> TaskBody for TaskCell<F>
where
    F: Future + Send,
    F::Output: Send,
{
    unsafe fn poll_body(&self, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: the caller holds the task RUNNING: nobody else touches the future.
        if !unsafe { *self.live.get() } {
            return Poll::Ready(());
        }
        // SAFETY: as above; the future lives in this (reference-counted, never moved)
        // allocation until it is dropped in place, so it is pinned.
        let future = unsafe { Pin::new_unchecked(&mut **self.future.get()) };
        let outcome = match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(output)) => Ok(output),
            Err(payload) => Err(payload),
        };
        // SAFETY: holding the task RUNNING makes us the packet's only producer.
        unsafe { self.packet.complete(outcome) };
        Poll::Ready(())
    }

    unsafe fn finish(&self) {
        // The future first, so that whoever learns of the cancellation can rely on its
        // destructors having run.
        // SAFETY: forwarded from the caller.
        unsafe { self.drop_future() };
        // Dropped before completing: it was cancelled. (After completion this is a
        // no-op: the first outcome wins.)
        // SAFETY: forwarded from the caller: we are the packet's only producer.
        unsafe { self.packet.complete(Err(Box::new(Cancelled))) };
    }
}

impl<F: Future> Drop for TaskCell<F> {
    fn drop(&mut self) {
        // SAFETY: we are the last owner.
        unsafe { self.drop_future() };
    }
}

impl<F> Outcome<F::Output> for TaskCell<F>
where
    F: Future + Send,
    F::Output: Send,
{
    fn packet(&self) -> &Packet<F::Output> {
        &self.packet
    }
}

/// A spawned future and its scheduling state.
pub(crate) struct FutureTask {
    pub(crate) state: State,
    pub(crate) identity: Green,
    shared: Arc<Shared>,
    /// Its future and outcome, shared with its JoinHandle; let go once it finished.
    body: UnsafeCell<Option<Arc<dyn TaskBody>>>,
    /// Its key in the runtime's task list, set right after spawning.
    key: AtomicUsize,
}

// SAFETY: `body` is touched only by the holder of the RUNNING state (state.rs admits
// one at a time, with AcqRel ordering between holders), and the body is `Send + Sync`.
unsafe impl Send for FutureTask {}
// SAFETY: as above.
unsafe impl Sync for FutureTask {}

impl FutureTask {
    pub(crate) fn new<F>(shared: Arc<Shared>, cell: Arc<TaskCell<F>>) -> FutureTask
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        FutureTask {
            state: State::new_scheduled(),
            identity: Green::new(None),
            shared,
            body: UnsafeCell::new(Some(cell)),
            key: AtomicUsize::new(usize::MAX),
        }
    }

    /// Polls the task once on this worker and requeues it if it was woken meanwhile.
    /// Returns true when it finished (completed, panicked or was cancelled).
    pub(crate) fn run(self: &Arc<Self>, requeue: impl FnOnce(Arc<FutureTask>)) -> bool {
        let prev = self.state.start_run();
        if prev & CANCELLED != 0 {
            self.finish();
            return true;
        }
        let waker = futures::task::waker_ref(self);
        let mut cx = Context::from_waker(&waker);
        // SAFETY: we hold it RUNNING (start_run), so we are the body's only user.
        let body = unsafe { &mut *self.body.get() };
        let ready = match body.as_ref() {
            Some(body) => {
                let _in_task = crate::runtime::context::enter_task();
                // SAFETY: we hold it RUNNING.
                unsafe { body.poll_body(&mut cx) }.is_ready()
            }
            None => true,
        };
        if ready {
            self.finish();
            return true;
        }
        if self.state.stop_running() == AfterRun::Requeue {
            requeue(self.clone());
        }
        false
    }

    /// Drops the body (delivering Cancelled if it had not completed) and completes.
    /// The caller holds it RUNNING.
    fn finish(&self) {
        // SAFETY: the caller holds it RUNNING.
        let body = unsafe { (*self.body.get()).take() };
        let drop_body = move || {
            if let Some(body) = body {
                // SAFETY: the caller holds it RUNNING.
                unsafe { body.finish() };
            }
        };
        if crate::green::panics(drop_body) {
            crate::green::abort_with(
                "a future task's future or output panicked while being dropped",
            );
        }
        self.state.complete();
        self.shared.tasks.remove(self.key.load(Ordering::Acquire));
    }

    /// Registers it with its runtime's task list (before it is first queued).
    pub(crate) fn register(self: &Arc<Self>) {
        let key = self.shared.tasks.insert(self.clone());
        self.key.store(key, Ordering::Release);
    }

    /// Cancels from a JoinHandle: dropped at its next poll.
    pub(crate) fn cancel(self: &Arc<Self>) {
        if self.state.cancel() == Wake::Schedule {
            self.shared.schedule(Task::Future(self.clone()));
        }
    }

    /// At shutdown: drops the body of a task nobody will poll, unless another thread
    /// holds it (and so finishes it).
    pub(crate) fn cancel_at_shutdown(&self) {
        if self.state.claim_idle_for_shutdown() {
            self.finish();
        }
    }
}

impl Drop for FutureTask {
    fn drop(&mut self) {
        // Dropped without finishing (its body was never let go): as when the body itself
        // was dropped here, drop the future and tell the JoinHandle it was cancelled.
        if let Some(body) = self.body.get_mut().take() {
            // SAFETY: we hold the last reference to the task.
            unsafe { body.finish() };
        }
    }
}

impl futures::task::ArcWake for FutureTask {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        if arc_self.state.wake() == Wake::Schedule {
            arc_self.shared.schedule(Task::Future(arc_self.clone()));
        }
    }
}
