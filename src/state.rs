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

// Under the loom model checks (`RUSTFLAGS="--cfg loom" cargo test --release --lib state`)
// the word is loom's atomic, so loom explores every interleaving of the transitions
// below; everywhere else it is std's. The transitions themselves are the same code.
#[cfg(all(loom, test))]
use loom::sync::atomic::{AtomicUsize, Ordering};
#[cfg(not(all(loom, test)))]
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

    /// At shutdown, by any thread: takes a future task that nobody holds (idle or
    /// queued) to RUNNING | CANCELLED, so the caller can drop it. Returns false when it
    /// finished or somebody holds it RUNNING: a worker polling it, or another thread
    /// already dropping it at shutdown (a waker that queued it after shutdown began
    /// cancels it itself, while the runtime's drop cancels the rest). The holder
    /// finishes it; two threads must never both do.
    pub(crate) fn claim_idle_for_shutdown(&self) -> bool {
        let prev = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                if cur & (COMPLETE | RUNNING) != 0 {
                    None
                } else {
                    Some((cur & !(SCHEDULED | NOTIFIED)) | RUNNING | CANCELLED)
                }
            });
        prev.is_ok()
    }
}

// Plain unit tests; loom's atomics panic outside `loom::model`, so not under loom.
#[cfg(all(test, not(loom)))]
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
    fn a_task_held_running_is_not_claimed_for_shutdown_twice() {
        // Queued (a waker scheduled it after shutdown began): one thread claims it...
        let s = State::new_scheduled();
        assert!(s.claim_idle_for_shutdown());
        // ...and while that one drops it, the runtime's own sweep must not.
        assert!(!s.claim_idle_for_shutdown());
        s.complete();
        assert!(!s.claim_idle_for_shutdown());
        // Idle (suspended in a poll): claimable once.
        let s = State::new_scheduled();
        s.start_run();
        s.stop_running();
        assert!(s.claim_idle_for_shutdown());
        assert!(!s.claim_idle_for_shutdown());
        // Being polled by a worker: not claimable.
        let s = State::new_scheduled();
        s.start_run();
        assert!(!s.claim_idle_for_shutdown());
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

/// Model checks of the transitions with loom, which runs each model under every
/// interleaving (and every weak-memory outcome it models) of its threads:
///
/// ```text
/// RUSTFLAGS="--cfg loom" cargo test --release --lib state
/// ```
///
/// The models play the scheduler's side of the protocol (design.md, section 2): a
/// worker that ran a green thread (or polled a task) stops it with `stop_running` and
/// requeues it on `Requeue`; a waker that gets `Wake::Schedule` queues it. Here whoever
/// queues it runs it next, on its own thread (as a woken task runs on the waking
/// worker): the `UnsafeCell` standing for the green thread's RunState makes loom check
/// that two threads never hold it at once and that each holder sees the last one's
/// writes. The green thread's body parks until its condition (`ready`, set by the
/// waker before it wakes) holds, so a lost wake leaves it idle and never COMPLETE.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;
    use loom::thread;

    struct Green {
        state: State,
        /// The condition the green thread waits for.
        ready: AtomicBool,
        /// Stands for the RunState only the RUNNING holder may touch: slices run.
        slices: UnsafeCell<usize>,
        /// Places it sits in a run queue: never more than one.
        queued: AtomicUsize,
        /// How many transitions told their caller to queue it.
        schedules: AtomicUsize,
    }

    impl Green {
        /// A green thread that ran once and parked: idle.
        fn idle() -> Arc<Green> {
            let green = Green::running();
            assert_eq!(green.state.stop_running(), AfterRun::Idle);
            green
        }

        /// A green thread a worker popped and is running.
        fn running() -> Arc<Green> {
            let green = Arc::new(Green {
                state: State::new_scheduled(),
                ready: AtomicBool::new(false),
                slices: UnsafeCell::new(0),
                queued: AtomicUsize::new(1),
                schedules: AtomicUsize::new(0),
            });
            green.pop_and_start();
            green
        }

        fn push(&self) {
            self.schedules.fetch_add(1, Ordering::Relaxed);
            let before = self.queued.fetch_add(1, Ordering::Relaxed);
            assert_eq!(before, 0, "queued twice");
        }

        /// Pops it from its queue and takes it to RUNNING; returns the previous word.
        fn pop_and_start(&self) -> usize {
            assert_eq!(self.queued.fetch_sub(1, Ordering::Relaxed), 1);
            self.state.start_run()
        }

        /// The rest of a slice the caller holds RUNNING: the body runs (or unwinds
        /// when `prev` says it was cancelled), then finishes or parks. Whoever queues
        /// it again runs it at once; returns when it is idle or finished.
        fn run_slice(&self, mut prev: usize) {
            loop {
                // SAFETY (model): only the RUNNING holder touches it; loom checks that.
                self.slices.with_mut(|slices| unsafe { *slices += 1 });
                if prev & CANCELLED != 0 || self.ready.load(Ordering::Acquire) {
                    self.state.complete();
                    return;
                }
                // Not ready: it parks; the worker stops it on its own stack.
                match self.state.stop_running() {
                    AfterRun::Idle => return,
                    AfterRun::Requeue => {
                        self.push();
                        prev = self.pop_and_start();
                    }
                }
            }
        }

        /// Acts on what a wake or cancel returned: queue it and run it here.
        fn after_wake(&self, wake: Wake) {
            if wake == Wake::Schedule {
                self.push();
                let prev = self.pop_and_start();
                self.run_slice(prev);
            }
        }

        /// The waker's side: make the condition true, then wake.
        fn make_ready_and_wake(&self) {
            self.ready.store(true, Ordering::Release);
            self.after_wake(self.state.wake());
        }

        fn assert_finished(&self) {
            let word = self.state.load();
            assert_eq!(
                word & (COMPLETE | RUNNING | SCHEDULED | NOTIFIED),
                COMPLETE,
                "a wake was lost or it is still queued (state {word:#b})"
            );
            assert_eq!(self.queued.load(Ordering::Relaxed), 0);
            // SAFETY (model): every thread that ran it has been joined.
            let slices = self.slices.with(|slices| unsafe { *slices });
            assert!(slices >= 1);
        }
    }

    /// Models with three threads: exhaustive takes minutes, so bound the preemptions
    /// per execution (tokio's loom tests use 2 to 4). `LOOM_MAX_PREEMPTIONS` overrides.
    fn model3(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        if builder.preemption_bound.is_none() {
            builder.preemption_bound = Some(3);
        }
        builder.check(f);
    }

    fn spawn(green: &Arc<Green>, f: fn(&Green)) -> thread::JoinHandle<()> {
        let green = green.clone();
        thread::spawn(move || f(&green))
    }

    /// RUNNING → stop_running on the worker vs a wake from another thread: exactly one
    /// of them queues it (the worker on NOTIFIED, the waker on idle), the wake is never
    /// lost and it is never queued twice.
    #[test]
    fn wake_racing_with_suspend() {
        loom::model(|| {
            let green = Green::running();
            let waker = spawn(&green, Green::make_ready_and_wake);
            green.run_slice(0);
            waker.join().unwrap();
            green.assert_finished();
            // At most one requeue: the worker's or the waker's, never both.
            assert!(green.schedules.load(Ordering::Relaxed) <= 1);
        });
    }

    /// Two wakes of an idle green thread from two threads: exactly one schedules it.
    #[test]
    fn double_wake_while_idle() {
        loom::model(|| {
            let green = Green::idle();
            let first = spawn(&green, Green::make_ready_and_wake);
            let second = spawn(&green, Green::make_ready_and_wake);
            first.join().unwrap();
            second.join().unwrap();
            green.assert_finished();
            assert_eq!(green.schedules.load(Ordering::Relaxed), 1);
        });
    }

    /// Two wakes from two threads while it runs and then parks: one requeue in all.
    #[test]
    fn double_wake_racing_with_suspend() {
        model3(|| {
            let green = Green::running();
            let first = spawn(&green, Green::make_ready_and_wake);
            let second = spawn(&green, Green::make_ready_and_wake);
            green.run_slice(0);
            first.join().unwrap();
            second.join().unwrap();
            green.assert_finished();
            assert!(green.schedules.load(Ordering::Relaxed) <= 1);
        });
    }

    /// A cancel and a wake of an idle green thread: exactly one schedules it, and
    /// whichever runs it next either finds it ready or sees CANCELLED (and unwinds).
    #[test]
    fn cancel_racing_with_wake_while_idle() {
        loom::model(|| {
            let green = Green::idle();
            let canceller = spawn(&green, |green| green.after_wake(green.state.cancel()));
            green.make_ready_and_wake();
            canceller.join().unwrap();
            green.assert_finished();
            assert_eq!(green.schedules.load(Ordering::Relaxed), 1);
        });
    }

    /// A cancel and a wake while it runs and then parks: it is requeued at most once,
    /// and the cancel is never lost: it never ends idle.
    #[test]
    fn cancel_racing_with_wake_and_suspend() {
        model3(|| {
            let green = Green::running();
            let canceller = spawn(&green, |green| green.after_wake(green.state.cancel()));
            let waker = spawn(&green, Green::make_ready_and_wake);
            green.run_slice(0);
            canceller.join().unwrap();
            waker.join().unwrap();
            green.assert_finished();
            assert!(green.schedules.load(Ordering::Relaxed) <= 1);
        });
    }

    /// A cancel alone racing with the suspend: the cancel, not a `ready`, must finish
    /// it, so this is the check that CANCELLED is never lost.
    #[test]
    fn cancel_racing_with_suspend() {
        loom::model(|| {
            let green = Green::running();
            let canceller = spawn(&green, |green| green.after_wake(green.state.cancel()));
            green.run_slice(0);
            canceller.join().unwrap();
            green.assert_finished();
            assert!(green.schedules.load(Ordering::Relaxed) <= 1);
        });
    }

    /// A wake or cancel racing with completion never schedules a finished one.
    #[test]
    fn wake_and_cancel_racing_with_complete() {
        model3(|| {
            let green = Green::running();
            green.ready.store(true, Ordering::Relaxed);
            let waker = spawn(&green, |green| green.after_wake(green.state.wake()));
            let canceller = spawn(&green, |green| green.after_wake(green.state.cancel()));
            green.run_slice(0);
            waker.join().unwrap();
            canceller.join().unwrap();
            green.assert_finished();
            assert_eq!(green.schedules.load(Ordering::Relaxed), 0);
        });
    }
}
