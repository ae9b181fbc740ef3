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
use crate::join::Packet;
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

/// The erased future a task polls: the user's future plus where its output goes.
trait TaskBody: Send {
    /// Polls the user's future; on completion or panic delivers the outcome and
    /// returns Ready.
    fn poll_body(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
}

struct Body<F: Future> {
    /// Dropped by hand in `Drop`, before the outcome is published.
    future: ManuallyDrop<F>,
    packet: Arc<Packet<F::Output>>,
}

impl<F> TaskBody for Body<F>
where
    F: Future + Send,
    F::Output: Send,
{
    fn poll_body(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: `future` is structurally pinned: Body is only ever used behind
        // Pin<Box<..>> and we never move `future` out; `packet` is not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above.
        let future = unsafe { Pin::new_unchecked(&mut *this.future) };
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            // SAFETY (both): the poller holds the task RUNNING, which makes it the
            // packet's only producer.
            Ok(Poll::Ready(output)) => {
                unsafe { this.packet.complete(Ok(output)) };
                Poll::Ready(())
            }
            Err(payload) => {
                unsafe { this.packet.complete(Err(payload)) };
                Poll::Ready(())
            }
        }
    }
}

impl<F: Future> Drop for Body<F> {
    fn drop(&mut self) {
        // The future first, so that whoever learns of the cancellation can rely on its
        // destructors having run.
        // SAFETY: dropped exactly once, here; dropping in place keeps the pin promise.
        unsafe { ManuallyDrop::drop(&mut self.future) };
        // Dropped before completing: it was cancelled. (After completion this is a
        // no-op: the first outcome wins.)
        // SAFETY: the body is dropped by the holder of the task RUNNING (`finish`), or
        // with the last reference to the task; either way by the packet's only producer.
        unsafe { self.packet.complete(Err(Box::new(Cancelled))) };
    }
}

/// A spawned future and its scheduling state.
pub(crate) struct FutureTask {
    pub(crate) state: State,
    pub(crate) identity: Green,
    shared: Arc<Shared>,
    body: UnsafeCell<Option<Pin<Box<dyn TaskBody>>>>,
    /// Its key in the runtime's task list, set right after spawning.
    key: AtomicUsize,
}

// SAFETY: `body` is touched only by the holder of the RUNNING state (state.rs admits
// one at a time, with AcqRel ordering between holders), and the body is `Send`.
unsafe impl Send for FutureTask {}
// SAFETY: as above.
unsafe impl Sync for FutureTask {}

impl FutureTask {
    pub(crate) fn new<F>(
        shared: Arc<Shared>,
        future: F,
        packet: Arc<Packet<F::Output>>,
    ) -> FutureTask
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        FutureTask {
            state: State::new_scheduled(),
            identity: Green::new(None),
            shared,
            body: UnsafeCell::new(Some(Box::pin(Body {
                future: ManuallyDrop::new(future),
                packet,
            }))),
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
        let ready = match body.as_mut() {
            Some(body) => {
                let _in_task = crate::runtime::context::enter_task();
                body.as_mut().poll_body(&mut cx).is_ready()
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
        if catch_unwind(AssertUnwindSafe(move || drop(body))).is_err() {
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

    /// At shutdown, once no worker runs: drops the body of a task nobody will poll.
    pub(crate) fn cancel_at_shutdown(&self) {
        if self.state.claim_for_shutdown() {
            self.finish();
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
