//! Calling wakers that belong to someone else.
//!
//! The scheduler fires wakers it did not make: a timer's, a readiness waiter's, the
//! waiter of a finished green thread's `JoinHandle`. Any of them may be a user's
//! `Waker` whose `wake` panics. Such a panic must not unwind into the worker loop (the
//! worker would die, stranding every green thread homed on it) nor stop the wakers
//! after it from being woken. This module owns that rule; it never decides *what* to
//! wake.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::Waker;

/// Wakes `waker`, containing a panic from it. The panic hook has already reported the
/// panic (with its message and location) by the time this returns; the waker's owner
/// is the one that misbehaved, and the runtime goes on.
pub(crate) fn wake_catching_panics(waker: Waker) {
    // AssertUnwindSafe: the only state the closure touches is the waker it consumes;
    // after a panic nothing of it is used again.
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || waker.wake())) {
        // Dropping the payload runs user code too (a panic payload with a Drop impl).
        // A panic from that is contained too, and its own payload forgotten.
        crate::green::panics(move || drop(payload));
    }
}

/// Wakes every waker in `wakers`, each with [`wake_catching_panics`].
pub(crate) fn wake_all_catching_panics(wakers: impl IntoIterator<Item = Waker>) {
    for waker in wakers {
        wake_catching_panics(waker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Counting(AtomicUsize);
    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Panicking;
    impl Wake for Panicking {
        fn wake(self: Arc<Self>) {
            panic!("a user waker panicked (expected by this test)");
        }
    }

    #[test]
    fn a_panicking_waker_neither_unwinds_nor_stops_the_others() {
        let counting = Arc::new(Counting(AtomicUsize::new(0)));
        let wakers = vec![
            Waker::from(counting.clone()),
            Waker::from(Arc::new(Panicking)),
            Waker::from(counting.clone()),
        ];
        wake_all_catching_panics(wakers);
        assert_eq!(counting.0.load(Ordering::SeqCst), 2);
    }
}
