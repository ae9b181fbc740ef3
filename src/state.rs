//! The scheduling state of a green thread or future task: one atomic word.
//!
//! This module owns the transitions and nothing else; it never queues or resumes
//! anything. Its callers act on what each transition returns.
//!
//! ```text
//!  bit        meaning
//!  SCHEDULED  in exactly one run queue, waiting to run
//!  RUNNING    a worker is running it (a green thread: resumed; a task: being polled)
//!  NOTIFIED   woken while RUNNING: when it stops it goes straight back to a queue
//!  COMPLETE   finished; nothing will run it again
//!  CANCELLED  cancel requested: it unwinds at its next suspension point
//!
//!            spawn                 worker pops             suspends (Park)
//!  (new) ──────────► SCHEDULED ───────────────► RUNNING ─────────────────► idle
//!                        ▲        start_run        │  │ NOTIFIED set:               │
//!                        │                         │  └────► SCHEDULED (requeue)    │
//!                        └─────────────────────────┼────────────────────────────────┘
//!                                   wake           │             wake (idle → SCHEDULED)
//!                                                  ▼ finishes
//!                                               COMPLETE
//! ```
//!
//! The rules that make wakes never lost and queueing never doubled:
//! - only a waker that moves the word from idle to SCHEDULED pushes it on a queue;
//! - a wake while RUNNING only sets NOTIFIED; the worker, after the green thread has
//!   switched back to it (so it is no longer on its stack), turns RUNNING into idle, or,
//!   when NOTIFIED is set, into SCHEDULED and requeues it itself;
//! - only a worker holding it from a queue (SCHEDULED) may start running it;
//! - a green thread that *yields* stays RUNNING: it waits in its worker's private queue,
//!   which no other thread can reach, so nobody needs to learn it is off the CPU, and a
//!   yield costs no atomic operation. A wake meanwhile sets NOTIFIED, which at worst
//!   causes one spurious poll later.

use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) const SCHEDULED: usize = 1;
pub(crate) const RUNNING: usize = 1 << 1;
pub(crate) const NOTIFIED: usize = 1 << 2;
pub(crate) const COMPLETE: usize = 1 << 3;
pub(crate) const CANCELLED: usize = 1 << 4;

/// What a waker must do after [`State::wake`] or [`State::cancel`].
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum Wake {
    /// The caller moved it from idle to SCHEDULED and must queue it.
    Schedule,
    /// Nothing: it is queued, running (now NOTIFIED) or finished.
    Nothing,
}

/// What the worker must do after the green thread or task stopped running.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum AfterRun {
    /// Idle: a future wake will queue it.
    Idle,
    /// A wake arrived while it ran: the worker moved it to SCHEDULED and must requeue it.
    Requeue,
}

#[derive(Debug)]
pub(crate) struct State(AtomicUsize);

impl State {
    /// A new green thread or task, about to be pushed on a queue.
    pub(crate) fn new_scheduled() -> State {
        State(AtomicUsize::new(SCHEDULED))
    }

    /// A new green thread that its creator runs at once (the host green thread).
    pub(crate) fn new_running() -> State {
        State(AtomicUsize::new(RUNNING))
    }

    pub(crate) fn load(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.load() & CANCELLED != 0
    }

    /// SCHEDULED → RUNNING, by the worker that popped it from a queue. Returns the
    /// previous word so the caller can see CANCELLED.
    pub(crate) fn start_run(&self) -> usize {
        let prev = self.0.fetch_xor(SCHEDULED | RUNNING, Ordering::AcqRel);
        assert!(
            prev & (SCHEDULED | RUNNING | COMPLETE) == SCHEDULED,
            "greenrt bug: started a green thread or task that was not queued (state {prev:#b})"
        );
        prev
    }

    /// A wake from any thread.
    pub(crate) fn wake(&self) -> Wake {
        self.transition_wake(0)
    }

    /// Requests cancellation, then wakes so it reaches a suspension point.
    pub(crate) fn cancel(&self) -> Wake {
        self.transition_wake(CANCELLED)
    }

    fn transition_wake(&self, extra: usize) -> Wake {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            let (next, action) = if cur & COMPLETE != 0 {
                return Wake::Nothing;
            } else if cur & SCHEDULED != 0 {
                (cur | extra, Wake::Nothing)
            } else if cur & RUNNING != 0 {
                (cur | NOTIFIED | extra, Wake::Nothing)
            } else {
                (cur | SCHEDULED | extra, Wake::Schedule)
            };
            if next == cur {
                return action;
            }
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return action,
                Err(actual) => cur = actual,
            }
        }
    }

    /// RUNNING → idle, or → SCHEDULED when a wake arrived meanwhile. Called by the
    /// worker after the green thread switched back to it (or a poll returned Pending).
    pub(crate) fn stop_running(&self) -> AfterRun {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            debug_assert!(
                cur & RUNNING != 0 && cur & SCHEDULED == 0,
                "greenrt bug: stop_running on a green thread that was not running ({cur:#b})"
            );
            let (next, after) = if cur & NOTIFIED != 0 {
                ((cur & !(RUNNING | NOTIFIED)) | SCHEDULED, AfterRun::Requeue)
            } else {
                (cur & !RUNNING, AfterRun::Idle)
            };
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return after,
                Err(actual) => cur = actual,
            }
        }
    }

    /// RUNNING → COMPLETE.
    pub(crate) fn complete(&self) {
        let prev = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                Some((cur & !(RUNNING | NOTIFIED | SCHEDULED)) | COMPLETE)
            });
        debug_assert!(
            prev.is_ok_and(|p| p & RUNNING != 0),
            "greenrt bug: completed a green thread that was not running"
        );
    }

    /// At shutdown, by the owner worker: takes a suspended or queued green thread to
    /// RUNNING | CANCELLED so the worker can resume it to unwind. Returns false when it
    /// already finished. Wakes that race with this only set NOTIFIED.
    pub(crate) fn claim_for_shutdown(&self) -> bool {
        let prev = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                if cur & COMPLETE != 0 {
                    None
                } else {
                    Some((cur & !(SCHEDULED | NOTIFIED)) | RUNNING | CANCELLED)
                }
            });
        prev.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_while_running_requeues_once() {
        let s = State::new_scheduled();
        s.start_run();
        assert_eq!(s.wake(), Wake::Nothing);
        assert_eq!(s.wake(), Wake::Nothing);
        assert_eq!(s.stop_running(), AfterRun::Requeue);
        assert_eq!(s.load(), SCHEDULED);
        assert_eq!(s.wake(), Wake::Nothing, "already queued");
    }

    #[test]
    fn only_the_first_wake_of_an_idle_one_schedules() {
        let s = State::new_scheduled();
        s.start_run();
        assert_eq!(s.stop_running(), AfterRun::Idle);
        assert_eq!(s.wake(), Wake::Schedule);
        assert_eq!(s.wake(), Wake::Nothing);
        s.start_run();
        s.complete();
        assert_eq!(s.wake(), Wake::Nothing);
        assert_eq!(s.cancel(), Wake::Nothing);
    }

    #[test]
    fn cancel_of_idle_schedules_and_is_visible_at_start() {
        let s = State::new_scheduled();
        s.start_run();
        s.stop_running();
        assert_eq!(s.cancel(), Wake::Schedule);
        assert!(s.start_run() & CANCELLED != 0);
    }

    #[test]
    #[should_panic(expected = "not queued")]
    fn starting_twice_is_caught() {
        let s = State::new_scheduled();
        s.start_run();
        s.start_run();
    }

    #[test]
    fn concurrent_wakes_schedule_exactly_once_per_idle_period() {
        use std::sync::Arc;
        for _ in 0..200 {
            let s = Arc::new(State::new_scheduled());
            s.start_run();
            s.stop_running();
            let scheduled: usize = (0..4)
                .map(|_| {
                    let s = s.clone();
                    std::thread::spawn(move || (s.wake() == Wake::Schedule) as usize)
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap())
                .sum();
            assert_eq!(scheduled, 1);
        }
    }
}
