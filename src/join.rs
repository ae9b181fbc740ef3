//! `JoinHandle`: how a green thread's or task's outcome reaches whoever waits for it.
//!
//! This module owns the [`Packet`], the one place an outcome is stored, and the handle
//! that reads it. It never runs or schedules anything: `join()` waits through
//! [`block_on`](crate::block_on) (which suspends a green caller and parks a plain
//! thread), and `.await` polls the same packet.

use crate::green::{Green, GreenThread};
use crate::task::FutureTask;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Where an outcome waits for its JoinHandle.
pub(crate) struct Packet<T> {
    finished: AtomicBool,
    inner: Mutex<PacketInner<T>>,
}

struct PacketInner<T> {
    result: Option<std::thread::Result<T>>,
    waiter: Option<Waker>,
}

impl<T> Packet<T> {
    pub(crate) fn new() -> Packet<T> {
        Packet {
            finished: AtomicBool::new(false),
            inner: Mutex::new(PacketInner {
                result: None,
                waiter: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PacketInner<T>> {
        // No user code runs under this lock, so poisoning cannot leave it inconsistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores the outcome and wakes the waiter. The first outcome wins.
    pub(crate) fn complete(&self, result: std::thread::Result<T>) {
        self.store(result);
        self.publish();
    }

    /// Stores the outcome without telling anyone yet (see [`Publish`]). The first
    /// outcome wins.
    pub(crate) fn store(&self, result: std::thread::Result<T>) {
        let mut inner = self.lock();
        if inner.result.is_none() && !self.finished.load(Ordering::Relaxed) {
            inner.result = Some(result);
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<std::thread::Result<T>> {
        let mut inner = self.lock();
        if let Some(result) = inner.result.take() {
            return Poll::Ready(result);
        }
        assert!(
            !self.finished.load(Ordering::Relaxed),
            "JoinHandle polled after it returned its result"
        );
        match &inner.waiter {
            Some(waiter) if waiter.will_wake(cx.waker()) => {}
            _ => inner.waiter = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// Makes a stored outcome visible: `is_finished()` turns true and the waiter wakes.
///
/// A green thread stores its outcome on its own stack but is *published* by its worker
/// only after its last switch out, so that when `join()` returns the green thread has
/// completely finished: its tracing slice exited, its stack given back.
pub(crate) trait Publish: Send + Sync {
    fn publish(&self);
    /// For a green thread that will never finish (leaked at shutdown): its outcome is
    /// [`Cancelled`](crate::Cancelled).
    fn publish_cancelled(&self);
}

impl<T: Send> Publish for Packet<T> {
    fn publish(&self) {
        Packet::publish(self)
    }
    fn publish_cancelled(&self) {
        self.store(Err(Box::new(crate::Cancelled)));
        Packet::publish(self)
    }
}

impl<T> Packet<T> {
    fn publish(&self) {
        let waiter = {
            let mut inner = self.lock();
            if self.finished.swap(true, Ordering::AcqRel) {
                return;
            }
            inner.waiter.take()
        };
        if let Some(waiter) = waiter {
            // Often a user's waker (an executor awaiting the handle); it must not
            // unwind into the worker that published.
            crate::wake::wake_catching_panics(waiter);
        }
    }
}

/// What a JoinHandle can cancel.
pub(crate) enum Target {
    Green(Arc<GreenThread>),
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
/// - Dropping the handle detaches: the green thread runs on, its result is dropped.
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
    packet: Arc<Packet<T>>,
    target: Target,
    green: Green,
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(packet: Arc<Packet<T>>, target: Target, green: Green) -> JoinHandle<T> {
        JoinHandle {
            packet,
            target,
            green,
        }
    }

    /// Waits for the green thread or task to finish and returns its result.
    ///
    /// In a green thread this suspends only the caller; on a plain thread it parks the
    /// thread. Inside a future task it panics: `.await` the handle there instead.
    ///
    /// ```
    /// # greenrt::runtime::Runtime::new().unwrap().run(|| {
    /// let h = greenrt::spawn(|| "done");
    /// assert_eq!(h.join().unwrap(), "done");
    /// # });
    /// ```
    pub fn join(self) -> std::thread::Result<T> {
        crate::bridge::block_on_named(self, "JoinHandle::join")
    }

    /// Whether the green thread or task has finished (its result is ready).
    pub fn is_finished(&self) -> bool {
        self.packet.is_finished()
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
            Target::Green(green) => {
                #[cfg(feature = "tracing")]
                crate::trace::sched_event("cancel", green.identity.id());
                crate::green::cancel(green)
            }
            Target::Task(task) => task.cancel(),
            Target::None => {}
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = std::thread::Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.packet.poll(cx)
    }
}

impl<T> Unpin for JoinHandle<T> {}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.green.id())
            .field("name", &self.green.name())
            .field("finished", &self.is_finished())
            .finish()
    }
}
