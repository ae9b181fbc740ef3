//! `block_on`: waiting on a future from green or plain code.
//!
//! This module owns the one loop that turns "wait for this future" into the right kind
//! of blocking for where it runs:
//! - in a green thread: poll on the green stack with a waker that reschedules this green
//!   thread; on Pending, suspend only the green thread;
//! - on a plain OS thread: park the thread until the waker unparks it;
//! - in a future task: refuse (it would block a worker), telling the caller to `.await`.
//!
//! It must never switch a green thread out while it is unwinding: std counts panics per
//! OS thread, so another green thread on the same worker would see
//! `std::thread::panicking()`. There it blocks the worker thread instead, and says so.

use crate::green::{self, GreenThread, Suspend};
use crate::runtime::context;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Where a green-blocking call was made.
pub(crate) enum Caller<'a> {
    Green(&'a GreenThread),
    Thread,
}

/// Classifies the current call site. `what` names the API for the future-task panic.
pub(crate) fn caller(what: &str) -> Caller<'static> {
    if let Some(green) = green::current_ptr() {
        // SAFETY: CURRENT is set only while that green thread runs on this thread, and
        // its resumer holds an Arc to it for at least as long.
        let green = unsafe { green.as_ref() };
        return Caller::Green(green);
    }
    if context::in_task() {
        panic!(
            "{what} called inside a future task: it would block the worker thread that \
             polls the task. Use `.await` instead (for example `handle.await` for a \
             JoinHandle, `greenrt::time::sleep(d).await` for a sleep)"
        );
    }
    Caller::Thread
}

/// Runs `fut` to completion, blocking only what may be blocked here. See
/// [`crate::block_on`].
#[inline]
pub(crate) fn block_on_named<F: Future>(fut: F, what: &str) -> F::Output {
    match caller(what) {
        Caller::Green(green) if !std::thread::panicking() => block_on_green(green, fut),
        Caller::Green(green) => {
            warn_blocking_while_unwinding(green, what);
            // What waits in this worker's LIFO slot (often what the wait is for: a
            // green thread or task spawned just before) is taken by no other worker:
            // make it stealable before the worker blocks.
            context::with_local(|local| {
                if let Some(core) = &local.worker {
                    core.release_lifo();
                }
            });
            block_on_thread(fut)
        }
        Caller::Thread => {
            refuse_on_worker(what);
            block_on_thread(fut)
        }
    }
}

/// Panics when the caller is a worker thread outside any green thread or task: user
/// code the scheduler runs itself (a destructor of a detached result or of a cancelled
/// task's future, a waker). Parking there blocks the worker, and the green threads and
/// timers at home on it, which are often what the wait is for: a silent deadlock.
#[inline(never)]
fn refuse_on_worker(what: &str) {
    let on_worker = context::with_local(|local| local.worker.is_some()).unwrap_or(false);
    if on_worker {
        panic!(
            "{what} called on a greenrt worker thread outside any green thread or task (in \
             a destructor or waker that the scheduler runs, such as the drop of a detached \
             green thread's result or of a cancelled task's future): waiting there would \
             block the worker and could deadlock it. Wait in a green thread instead \
             (`greenrt::spawn`), or keep the JoinHandle and drop the value where waiting \
             is allowed"
        );
    }
}

pub(crate) fn warn_blocking_while_unwinding(green: &GreenThread, what: &str) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        target: "greenrt::green",
        id = %green.identity.id(),
        name = green.identity.name().unwrap_or(""),
        "{what} called while green thread {} is unwinding: blocking its worker thread \
         instead of switching (a switch would leak the panic state to other green threads)",
        green.identity.id(),
    );
    #[cfg(not(feature = "tracing"))]
    let _ = (green, what);
}

/// Runs `fut` to completion on the running green thread `green`, suspending it while
/// `fut` is pending. The caller checked that it is not unwinding.
#[inline]
pub(crate) fn block_on_green<F: Future>(green: &GreenThread, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    // SAFETY: `green` is the running green thread; its resumer holds an Arc to it for
    // as long as it runs, which covers this whole call.
    let waker = unsafe { green::waker_ref(green) };
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = fut.as_mut().poll(&mut cx) {
            return output;
        }
        green::suspend(green, Suspend::Park);
    }
}

/// Wakes a parked plain thread.
struct ThreadWaker {
    thread: std::thread::Thread,
    notified: AtomicBool,
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.notified.swap(true, Ordering::Release) {
            self.thread.unpark();
        }
    }
}

/// A waker that unparks the current thread, and the flag it sets.
pub(crate) fn thread_waker() -> (Waker, Arc<ThreadWakerFlag>) {
    let inner = Arc::new(ThreadWaker {
        thread: std::thread::current(),
        notified: AtomicBool::new(false),
    });
    (Waker::from(inner.clone()), Arc::new(ThreadWakerFlag(inner)))
}

/// The "was I woken" side of [`thread_waker`].
pub(crate) struct ThreadWakerFlag(Arc<ThreadWaker>);

impl ThreadWakerFlag {
    /// Consumes a wake, if one arrived since the last call.
    pub(crate) fn take(&self) -> bool {
        self.0.notified.swap(false, Ordering::Acquire)
    }
}

/// Polls `fut` on this thread, parking it between wakes (and firing this thread's
/// timers, when it is a runtime thread, so sleeps inside `fut` complete).
pub(crate) fn block_on_thread<F: Future>(fut: F) -> F::Output {
    // This loop fires the thread's timers (so a pool job's sleeps may register here).
    let _driving = context::driving_timers();
    let mut fut = pin!(fut);
    let (waker, woken) = thread_waker();
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = fut.as_mut().poll(&mut cx) {
            return output;
        }
        if woken.take() {
            // Woken while it was polled, so it does not park, which is where timers
            // fire: fire them here, or a future that keeps waking itself while waiting
            // for a sleep would never see the sleep end.
            context::with_timers(crate::time::fire_due);
            continue;
        }
        while !woken.take() {
            context::park_current_thread();
        }
    }
}
