//! Which workers are parked or searching, and waking exactly one when work appears.
//!
//! This module owns the protocol that makes wake-ups neither lost nor wasted:
//! - A worker that runs out of local work becomes *searching* (counted) while it looks
//!   at the injector and steals. When a searcher finds work and it was the last
//!   searcher, it wakes another worker, which takes over the search for whatever else
//!   is queued.
//! - Pushing work calls [`Shared::notify_one`](super::Shared::notify_one): if somebody
//!   is already searching, they will find it; otherwise one parked worker is woken and
//!   counted as searching. Never more than one, so no thundering herd.
//! - A worker about to park first registers as a sleeper, then (after a SeqCst fence)
//!   checks every queue once more. A pusher does push, fence, then reads the counters.
//!   Either the pusher sees the sleeper, or the sleeper sees the work: no lost wake-up.
//! - With the I/O reactor, the one parked worker holding the poll lock blocks in
//!   `epoll_wait` instead of `thread::park`. Unparking a worker
//!   (`Shared::unpark_worker`) therefore also writes the reactor's `mio::Waker` when that
//!   worker is the driver. The driver publishes its index *before* its last check for
//!   work (store, SeqCst fence, check), and the unparker reads it *after* making the
//!   work visible (push, fence, load): the same Dekker pairing as above, so either the
//!   driver sees the work or the unparker sees the driver. The waker is an eventfd that
//!   stays readable until the next poll, so a wake that lands before `epoll_wait` is
//!   not lost either (like `thread::unpark`'s token). Readiness itself is not work in
//!   these queues: the driver dispatches it to wakers, which push onto queues and
//!   notify through this module like any other wake.
//! - Reactor hand-off: a worker that stops holding the poll lock and goes back to work
//!   unparks one sleeper ([`Idle::sleeper_to_drive`]) so it takes over `epoll_wait`;
//!   that one is not popped or counted as searching (see `crate::reactor`).
//! - A sleeper that a notifier picked never blocks ([`Idle::may_block`]), even when the
//!   work it was picked for is gone (another worker took it). The notifier counted it
//!   as searching, and while anyone is searching nobody else is notified: blocking
//!   would leave a phantom searcher that silences every later notify. The pick must be
//!   seen because the unpark can miss a worker about to drive the reactor: the
//!   notifier reads the reactor's driver word after picking, and the worker may
//!   publish itself as the driver just after that read (then `thread::unpark`'s token
//!   is no use: the driver blocks in `epoll_wait`). It publishes itself before
//!   checking for the pick, so it either sees the pick or the notifier sees it as the
//!   driver and writes the eventfd. (The soak test hung this way before: a worker in
//!   `epoll_wait` with no timeout, counted as searching, with thousands of units in
//!   the injector.)
//!
//! It never touches queues itself.

use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::Mutex;

pub(crate) struct Idle {
    searching: AtomicUsize,
    sleeping: AtomicUsize,
    sleepers: Mutex<Vec<usize>>,
}

impl Idle {
    pub(crate) fn new(workers: usize) -> Idle {
        Idle {
            searching: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            sleepers: Mutex::new(Vec::with_capacity(workers)),
        }
    }

    fn sleepers(&self) -> std::sync::MutexGuard<'_, Vec<usize>> {
        self.sleepers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After new work was pushed: returns the index of a parked worker to unpark, if
    /// one is needed. The caller unparks it.
    pub(crate) fn worker_to_notify(&self) -> Option<usize> {
        fence(Ordering::SeqCst);
        if self.searching.load(Ordering::SeqCst) != 0 || self.sleeping.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let mut sleepers = self.sleepers();
        if self.searching.load(Ordering::SeqCst) != 0 {
            return None;
        }
        let index = sleepers.pop()?;
        self.sleeping.fetch_sub(1, Ordering::SeqCst);
        // The woken worker starts out searching; it stops like any other searcher.
        self.searching.fetch_add(1, Ordering::SeqCst);
        Some(index)
    }

    /// A parked worker to hand the reactor to (see `crate::reactor`), left registered
    /// and not counted as searching: it wakes, finds no work and parks again, taking
    /// the free poll lock. The caller fenced after releasing the poll lock.
    pub(crate) fn sleeper_to_drive(&self) -> Option<usize> {
        if self.sleeping.load(Ordering::SeqCst) == 0 {
            return None;
        }
        self.sleepers().last().copied()
    }

    pub(crate) fn start_searching(&self) {
        self.searching.fetch_add(1, Ordering::SeqCst);
    }

    /// Returns true when this was the last searcher.
    pub(crate) fn stop_searching(&self) -> bool {
        self.searching.fetch_sub(1, Ordering::SeqCst) == 1
    }

    /// Registers `index` as parked. The caller must re-check all queues afterwards and
    /// call [`Idle::unregister`] whether or not it actually parked.
    pub(crate) fn register_sleeper(&self, index: usize) {
        let mut sleepers = self.sleepers();
        sleepers.push(index);
        self.sleeping.fetch_add(1, Ordering::SeqCst);
        drop(sleepers);
        fence(Ordering::SeqCst);
    }

    /// After [`register_sleeper`](Idle::register_sleeper) (and, for the reactor's
    /// driver, after publishing itself as the driver): whether worker `index` may block.
    /// Not when a notifier picked it since it registered, and not when `has_work` sees
    /// something to run.
    pub(crate) fn may_block(&self, index: usize, has_work: impl FnOnce() -> bool) -> bool {
        let picked = !self.sleepers().contains(&index);
        !picked && !has_work()
    }

    /// Removes `index` from the sleepers. Returns true when a notifier had already
    /// removed it, in which case it now counts as searching.
    pub(crate) fn unregister(&self, index: usize) -> bool {
        let mut sleepers = self.sleepers();
        match sleepers.iter().position(|&i| i == index) {
            Some(pos) => {
                sleepers.swap_remove(pos);
                self.sleeping.fetch_sub(1, Ordering::SeqCst);
                false
            }
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The soak-test hang: worker 0 registers to park, a push picks it (counting it as
    /// searching), another worker takes the pushed work, and worker 0, about to drive
    /// the reactor, missed the unpark. If it blocked now, `searching` would stay 1 with
    /// nobody searching, and no later push would wake anyone.
    #[test]
    fn a_picked_sleeper_never_blocks_even_when_its_work_is_gone() {
        let idle = Idle::new(2);
        idle.register_sleeper(0);
        assert!(
            idle.may_block(0, || false),
            "nothing to do, nobody picked it"
        );
        assert!(!idle.may_block(0, || true), "work is visible");
        assert_eq!(idle.worker_to_notify(), Some(0), "a push picks the sleeper");
        assert_eq!(idle.worker_to_notify(), None, "it counts as searching");
        // The work is gone (stolen by the other worker): it must still not block.
        assert!(
            !idle.may_block(0, || false),
            "a picked worker blocked: a phantom searcher silences every later notify"
        );
        assert!(idle.unregister(0), "it learns it was picked");
        assert!(
            idle.stop_searching(),
            "and stops searching like any searcher"
        );
        idle.register_sleeper(0);
        assert_eq!(idle.worker_to_notify(), Some(0), "notifies work again");
    }
}
