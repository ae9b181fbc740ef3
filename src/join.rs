//! `JoinHandle`: how a green thread's or task's outcome reaches whoever waits for it.
//!
//! This module owns the [`Packet`], the one place an outcome is stored, and the handle
//! that reads it. It never runs or schedules anything: `join()` waits through
//! [`block_on`](crate::block_on) (which suspends a green caller and parks a plain
//! thread), and `.await` polls the same packet.

use crate::green::Green;
use crate::task::FutureTask;
use futures::task::AtomicWaker;
use std::cell::UnsafeCell;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Where an outcome waits for its JoinHandle.
///
/// One producer stores the outcome (the holder of the green thread or task RUNNING:
/// the state word admits one at a time and orders their accesses), then [`publish`]
/// sets FINISHED (Release). The one consumer, the JoinHandle, reads the outcome only
/// after it saw FINISHED (Acquire). So the two never touch `result` at once, and no lock
/// is needed.
///
/// An outcome nobody takes is dropped as soon as both are done with the packet, not
/// with the allocation (which wakers may keep alive anywhere): by the JoinHandle's drop
/// when it comes after the publish (on the user's thread, as if it took the outcome),
/// else by the publish after it saw DETACHED, where a panicking destructor aborts rather
/// than unwind into the worker. One atomic word decides which of the two does it.
///
/// [`publish`]: Packet::publish
pub(crate) struct Packet<T> {
    /// FINISHED | DETACHED.
    state: AtomicU8,
    result: UnsafeCell<Option<std::thread::Result<T>>>,
    waiter: AtomicWaker,
}

// SAFETY: `result` is written only by the producer before FINISHED is set, and read
// only after FINISHED by the consumer, or by the publisher after it saw DETACHED (the
// consumer gone), never both (see the type's docs); everything else is atomic. The
// outcome moves from the producer's thread to the consumer's, so `T: Send`.
unsafe impl<T: Send> Sync for Packet<T> {}

impl<T> Packet<T> {
    pub(crate) fn new() -> Packet<T> {
        Packet {
            state: AtomicU8::new(0),
            result: UnsafeCell::new(None),
            waiter: AtomicWaker::new(),
        }
    }

    /// Stores the outcome and wakes the waiter. The first outcome wins.
    ///
    /// # Safety
    /// As for [`Packet::store`].
    pub(crate) unsafe fn complete(&self, result: std::thread::Result<T>) {
        // SAFETY: forwarded from the caller.
        unsafe { self.store(result) };
        self.publish();
    }

    /// Stores the outcome without telling anyone yet (see [`Packet::publish`]). The first
    /// outcome wins.
    ///
    /// # Safety
    /// The caller is the producer: it holds the green thread or task RUNNING (or owns
    /// the packet alone), so no other thread stores at the same time.
    pub(crate) unsafe fn store(&self, result: std::thread::Result<T>) {
        // Relaxed: only producers set it, and they are ordered by the state word.
        if self.state.load(Ordering::Relaxed) & FINISHED != 0 {
            return;
        }
        // SAFETY: we are the producer and it is not published, so the consumer does not
        // read `result` yet.
        let slot = unsafe { &mut *self.result.get() };
        if slot.is_none() {
            *slot = Some(result);
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.state.load(Ordering::Acquire) & FINISHED != 0
    }

    /// Whether the JoinHandle is gone (nobody will take the outcome).
    pub(crate) fn is_detached(&self) -> bool {
        self.state.load(Ordering::Acquire) & DETACHED != 0
    }

    /// Takes the outcome once it is published.
    ///
    /// # Safety
    /// The caller is the consumer: its JoinHandle, polled through `&mut`, so one poll at
    /// a time.
    unsafe fn poll(&self, cx: &mut Context<'_>) -> Poll<std::thread::Result<T>> {
        if !self.is_finished() {
            self.waiter.register(cx.waker());
            // A publish between the first check and the registration took no waker (or
            // an old one): look again.
            if !self.is_finished() {
                return Poll::Pending;
            }
        }
        // SAFETY: published, so the producer is done with `result` (its writes happen
        // before our Acquire load), and we are the only consumer.
        match unsafe { (*self.result.get()).take() } {
            Some(result) => Poll::Ready(result),
            None => panic!("JoinHandle polled after it returned its result"),
        }
    }
}

impl<T> Packet<T> {
    /// Makes a stored outcome visible: `is_finished()` turns true and the waiter wakes
    /// (or, when the JoinHandle is gone, the outcome is dropped).
    ///
    /// A green thread stores its outcome on its own stack but is *published* by its
    /// worker only after its last switch out, so that when `join()` returns the green
    /// thread has completely finished: its tracing slice exited, its stack given back.
    pub(crate) fn publish(&self) {
        let prev = self.state.fetch_or(FINISHED, Ordering::AcqRel);
        if prev & FINISHED != 0 {
            return;
        }
        if prev & DETACHED != 0 {
            // Nobody will take it: drop it now. User code, which must not unwind into
            // the worker that published.
            // SAFETY: DETACHED: the consumer is gone and will not read it (see the type's
            // docs); we are the producer that stored it.
            let result = unsafe { (*self.result.get()).take() };
            if crate::green::panics(move || drop(result)) {
                crate::green::abort_with(
                    "a green thread's or task's result panicked while being dropped",
                );
            }
            return;
        }
        if let Some(waiter) = self.waiter.take() {
            // Often a user's waker (an executor awaiting the handle); it must not
            // unwind into the worker that published.
            crate::wake::wake_catching_panics(waiter);
        }
    }

    /// For a green thread that will never finish (leaked at shutdown): its outcome is
    /// [`Cancelled`](crate::Cancelled).
    ///
    /// # Safety
    /// As for [`Packet::store`].
    pub(crate) unsafe fn publish_cancelled(&self) {
        // SAFETY: forwarded from the caller.
        unsafe { self.store(Err(Box::new(crate::Cancelled))) };
        self.publish();
    }
}

/// What a JoinHandle reads its outcome from: a packet, or an allocation holding one (a
/// spawned green thread's control block, a future task's cell).
pub(crate) trait Outcome<T>: Send + Sync {
    fn packet(&self) -> &Packet<T>;

    /// Cancels the green thread whose control block this is (see
    /// [`JoinHandle::abort`]); other outcomes have nothing to cancel here. Takes an Arc
    /// so that the JoinHandle of a green thread needs no second Arc to its control
    /// block just to cancel it.
    fn cancel_green(self: Arc<Self>) {}

    /// The green thread whose control block this is, if it is one (see
    /// [`crate::runtime::run_child_before_join`]).
    fn control_block(&self) -> Option<&crate::green::GreenThread> {
        None
    }
}

impl<T> Packet<T> {
    /// The JoinHandle is gone: drops the outcome if it was published (it will not be
    /// taken), or lets the publisher drop it. `polled`: the handle was polled, so a
    /// waker of its may be registered; it is dropped here too, on the handle's thread,
    /// rather than with the allocation wherever that goes.
    ///
    /// # Safety
    /// As for [`Packet::poll`], and the caller never polls again.
    unsafe fn detach(&self, polled: bool) {
        if self.state.fetch_or(DETACHED, Ordering::AcqRel) & FINISHED != 0 {
            // SAFETY: published, so the producer is done with it, and we are the consumer.
            drop(unsafe { (*self.result.get()).take() });
        }
        if polled {
            drop(self.waiter.take());
        }
    }
}

const FINISHED: u8 = 1;
const DETACHED: u8 = 2;

impl<T: Send> Outcome<T> for Packet<T> {
    fn packet(&self) -> &Packet<T> {
        self
    }
}

/// What a JoinHandle can cancel.
pub(crate) enum Target {
    /// A green thread: its control block is the handle's outcome
    /// ([`Outcome::cancel_green`]).
    Green,
    Task(Arc<FutureTask>),
    /// Spawned after shutdown: already finished as cancelled.
    None,
}

/// An owned permission to wait for a green thread or future task and take its result.
///
/// - [`join`](JoinHandle::join) waits like `std::thread::JoinHandle::join`: in a green
///   thread it suspends only that green thread, on a plain thread it parks the thread.
/// - In async code, `.await` the handle itself: it is a
///   `Future<Output = std::thread::Result<T>>`.
/// - The result is `Err(payload)` when the green thread panicked (the panic's payload)
///   or was cancelled (payload [`Cancelled`](crate::Cancelled)).
/// - Dropping the handle detaches: the green thread runs on, its result is dropped
///   where it is produced (a green thread's in that green thread, when the handle was
///   already gone; otherwise by the worker). A detached result whose destructor panics
///   aborts the process, since there is nobody to report the panic to; a destructor
///   that would wait (`join`, `block_on`) where the worker drops it panics, and so
///   aborts, rather than block the worker.
/// - `join()` in a green thread that is unwinding (a destructor run by a panic or a
///   cancel) cannot suspend it, so it blocks the worker thread; when the joined green
///   thread could then never finish (it can run only on this worker, or the runtime is
///   shutting down) the join gives up at once with an `Err` that says so (during
///   shutdown: [`Cancelled`](crate::Cancelled)), and the joined green thread runs on,
///   detached.
///
/// ```
/// # greenrt::runtime::Runtime::new().unwrap().run(|| {
/// let handle = greenrt::spawn(|| 6 * 7);
/// assert_eq!(handle.join().unwrap(), 42);
///
/// let failing = greenrt::spawn(|| panic!("boom"));
/// let payload = failing.join().unwrap_err();
/// assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
/// # });
/// ```
pub struct JoinHandle<T> {
    outcome: Arc<dyn Outcome<T>>,
    target: Target,
    green: Green,
    /// `Send` and `Sync` exactly when `T: Send`, as when this held an `Arc<Packet<T>>`
    /// (`outcome` is `Send + Sync` whatever `T`).
    _output: PhantomData<Arc<Packet<T>>>,
    /// Whether it was ever polled (so a waker may be registered in the packet).
    polled: bool,
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(outcome: Arc<dyn Outcome<T>>, target: Target, green: Green) -> JoinHandle<T> {
        JoinHandle {
            outcome,
            target,
            green,
            _output: PhantomData,
            polled: false,
        }
    }

    /// Waits for the green thread or task to finish and returns its result.
    ///
    /// In a green thread this suspends only the caller; on a plain thread it parks the
    /// thread. Inside a future task it panics: `.await` the handle there instead.
    ///
    /// Joining, on a worker, a green thread that the caller has just spawned and that
    /// has not started yet runs it at once, on the same worker, until it first waits or
    /// ends (the caller would only wait for it otherwise), so `spawn(f).join()` of a
    /// short `f` takes no trip through the scheduler.
    ///
    /// ```
    /// # greenrt::runtime::Runtime::new().unwrap().run(|| {
    /// let h = greenrt::spawn(|| "done");
    /// assert_eq!(h.join().unwrap(), "done");
    /// # });
    /// ```
    pub fn join(self) -> std::thread::Result<T> {
        if let Some(child) = self.outcome.control_block() {
            crate::runtime::run_child_before_join(child);
            // Tested first: a global counter, almost always zero.
            if std::thread::panicking() && !self.is_finished() {
                if let Some(payload) = crate::runtime::join_cannot_wait(child) {
                    return Err(payload);
                }
            }
        }
        crate::bridge::block_on_named(self, "JoinHandle::join")
    }

    /// Whether the green thread or task has finished (its result is ready).
    pub fn is_finished(&self) -> bool {
        self.outcome.packet().is_finished()
    }

    /// The identity of the green thread (or future task) this handle waits for.
    pub fn green(&self) -> &Green {
        &self.green
    }

    /// Cancels the green thread or task.
    ///
    /// Not started yet: it never runs. Suspended (blocked in `block_on`, `join`,
    /// `sleep`, `yield_now`): it unwinds from there with the payload
    /// [`Cancelled`](crate::Cancelled), running its destructors. Running: it unwinds at
    /// its next suspension point. A future task is dropped at its next poll. `join()`
    /// then returns `Err` with that payload. Cancelling a finished one does nothing.
    ///
    /// In a program built with `panic = "abort"` a started green thread cannot unwind:
    /// cancelling one aborts the process at its next suspension point, with a message
    /// saying so. Unstarted green threads and future tasks are cancelled as usual.
    ///
    /// ```
    /// # greenrt::runtime::Runtime::new().unwrap().run(|| {
    /// let sleeper = greenrt::spawn(|| greenrt::sleep(std::time::Duration::from_secs(3600)));
    /// sleeper.abort();
    /// let payload = sleeper.join().unwrap_err();
    /// assert!(payload.is::<greenrt::Cancelled>());
    /// # });
    /// ```
    pub fn abort(&self) {
        match &self.target {
            Target::Green => {
                #[cfg(feature = "tracing")]
                crate::trace::sched_event("cancel", self.green.id());
                self.outcome.clone().cancel_green()
            }
            Target::Task(task) => task.cancel(),
            Target::None => {}
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = std::thread::Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.polled = true;
        // SAFETY: the handle is the packet's only consumer, and `&mut self` makes this
        // the only poll.
        unsafe { self.outcome.packet().poll(cx) }
    }
}

impl<T> Unpin for JoinHandle<T> {}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        // SAFETY: the handle is the packet's only consumer, and this is its last use.
        unsafe { self.outcome.packet().detach(self.polled) };
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.green.id())
            .field("name", &self.green.name())
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// `JoinHandle<T>` is `Send` and `Sync` exactly when `T: Send` (like
/// `Arc<Mutex<Option<T>>>`), whatever stores the outcome inside it. Checked at compile
/// time: the negative checks fail to compile (ambiguous impls) when the trait holds.
#[cfg(test)]
mod auto_traits {
    use super::JoinHandle;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::sync::MutexGuard;

    fn send_sync<X: Send + Sync>() {}

    #[test]
    fn send_and_sync_when_the_output_is_send() {
        send_sync::<JoinHandle<i32>>();
        send_sync::<JoinHandle<Cell<i32>>>(); // Send, not Sync
        send_sync::<JoinHandle<Box<dyn std::any::Any + Send>>>();
    }

    trait AmbiguousIfSend<A> {
        fn some_item() {}
    }
    impl<X: ?Sized> AmbiguousIfSend<()> for X {}
    impl<X: ?Sized + Send> AmbiguousIfSend<u8> for X {}

    trait AmbiguousIfSync<A> {
        fn some_item() {}
    }
    impl<X: ?Sized> AmbiguousIfSync<()> for X {}
    impl<X: ?Sized + Sync> AmbiguousIfSync<u8> for X {}

    // Neither Send nor Sync when the output is not Send.
    const _: fn() = || {
        let _ = <JoinHandle<Rc<i32>> as AmbiguousIfSend<_>>::some_item;
        let _ = <JoinHandle<Rc<i32>> as AmbiguousIfSync<_>>::some_item;
        let _ = <JoinHandle<MutexGuard<'static, i32>> as AmbiguousIfSend<_>>::some_item;
        let _ = <JoinHandle<MutexGuard<'static, i32>> as AmbiguousIfSync<_>>::some_item;
    };
}
