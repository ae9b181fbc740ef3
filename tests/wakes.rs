//! The state machine under stress: wakes from foreign OS threads racing with the
//! suspension of the green thread (or the end of the task's poll) they wake.
//!
//! Each green thread or task drives a [`Racy`] future that returns Pending `STEPS`
//! times. At each step it hands a clone of its waker to a foreign OS thread, which
//! marks the step done and wakes it in one of several ways at a random moment: at once
//! (often while the green thread is still running, before it has switched out), after
//! a random spin, twice, by `wake_by_ref` then drop, or while the future actively waits
//! for the wake to have happened before returning Pending (always a wake-while-running).
//!
//! What must hold: every one completes (a lost wake would hang it: a watchdog turns that
//! into a failure); the future is never polled after Ready or by two threads at once;
//! and it is polled exactly once per step plus once more, except that each double wake
//! may cost at most one extra (spurious) poll.

mod common;
use common::runtime;
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

const STEPS: usize = 40;
const FOREIGN_THREADS: usize = 3;

/// Runs `body` on its own thread and fails the test with a message if it does not
/// finish within `limit`: a lost wake must fail the test, not hang it.
fn with_watchdog<T: Send + 'static>(
    what: &str,
    limit: Duration,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(body)));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(payload)) => resume_unwind(payload),
        Err(_) => panic!(
            "watchdog: {what} did not finish within {limit:?}: a wake was lost (or a \
             green thread or task is stuck)"
        ),
    }
}

/// xorshift64: no rand crate among the dependencies, and this is plenty.
fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

fn seed() -> u64 {
    static SEED: AtomicU64 = AtomicU64::new(0x2545_F491_4F6C_DD1D);
    SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) | 1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `wake()` as soon as the foreign thread gets it.
    Now,
    /// `wake()` after spinning a random while.
    Later,
    /// Two wakes of the same step (from a clone): at most one spurious poll.
    Twice,
    /// `wake_by_ref()`, then drop the waker.
    ByRefThenDrop,
    /// The future waits until this wake has happened before returning Pending: the wake
    /// always lands while the green thread or task is still running.
    BeforePending,
}

impl Mode {
    fn pick(random: u64) -> Mode {
        match random % 5 {
            0 => Mode::Now,
            1 => Mode::Later,
            2 => Mode::Twice,
            3 => Mode::ByRefThenDrop,
            _ => Mode::BeforePending,
        }
    }
}

/// One wake request for a foreign thread.
struct Job {
    waker: Waker,
    mode: Mode,
    /// Set (Release) before waking: the future only advances once it is set.
    fired: Arc<AtomicBool>,
    /// Set after the wake call returned (for [`Mode::BeforePending`]).
    woke: Arc<AtomicBool>,
    spin: u32,
}

fn foreign_thread(jobs: mpsc::Receiver<Job>) {
    for job in jobs {
        for _ in 0..job.spin {
            std::hint::spin_loop();
        }
        job.fired.store(true, Ordering::Release);
        match job.mode {
            Mode::Now | Mode::Later | Mode::BeforePending => job.waker.wake(),
            Mode::Twice => {
                let again = job.waker.clone();
                job.waker.wake();
                if job.spin % 2 == 0 {
                    std::thread::yield_now();
                }
                again.wake();
            }
            Mode::ByRefThenDrop => {
                job.waker.wake_by_ref();
                drop(job.waker);
            }
        }
        job.woke.store(true, Ordering::Release);
    }
}

/// The foreign OS threads that wake the futures.
struct Wakers {
    senders: Vec<mpsc::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Wakers {
    fn start() -> Wakers {
        let (senders, threads) = (0..FOREIGN_THREADS)
            .map(|_| {
                let (tx, rx) = mpsc::channel();
                (tx, std::thread::spawn(move || foreign_thread(rx)))
            })
            .unzip();
        Wakers { senders, threads }
    }

    fn stop(self) {
        drop(self.senders);
        for thread in self.threads {
            thread.join().unwrap();
        }
    }
}

/// What one [`Racy`] future saw.
#[derive(Debug, Default)]
struct Report {
    polls: usize,
    double_wakes: usize,
    /// Contract violations seen (polled after Ready, polled concurrently).
    violations: Vec<String>,
}

struct Racy {
    step: usize,
    senders: Vec<mpsc::Sender<Job>>,
    rng: u64,
    /// The current step's flag, set by the foreign thread before it wakes.
    fired: Option<Arc<AtomicBool>>,
    done: bool,
    /// Detects two polls at once (only possible if it ran on two threads at once).
    in_poll: Arc<AtomicUsize>,
    report: Report,
}

impl Racy {
    fn new(senders: Vec<mpsc::Sender<Job>>) -> Racy {
        Racy {
            step: 0,
            senders,
            rng: seed(),
            fired: None,
            done: false,
            in_poll: Arc::new(AtomicUsize::new(0)),
            report: Report::default(),
        }
    }
}

impl Future for Racy {
    type Output = Report;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Report> {
        let this = &mut *self;
        if this.in_poll.fetch_add(1, Ordering::AcqRel) != 0 {
            this.report
                .violations
                .push(format!("polled concurrently at step {}", this.step));
        }
        let result = this.poll_inner(cx);
        this.in_poll.fetch_sub(1, Ordering::AcqRel);
        result
    }
}

impl Racy {
    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Report> {
        self.report.polls += 1;
        if self.done {
            self.report.violations.push("polled after Ready".into());
            return Poll::Pending;
        }
        if let Some(fired) = &self.fired {
            if !fired.load(Ordering::Acquire) {
                // Spurious: woken by a stale (double) wake; this step's wake is still
                // to come, and it holds a clone of the same waker.
                return Poll::Pending;
            }
            self.fired = None;
            self.step += 1;
        }
        if self.step == STEPS {
            self.done = true;
            return Poll::Ready(std::mem::take(&mut self.report));
        }
        let random = next_random(&mut self.rng);
        let mode = Mode::pick(random);
        if mode == Mode::Twice {
            self.report.double_wakes += 1;
        }
        let fired = Arc::new(AtomicBool::new(false));
        let woke = Arc::new(AtomicBool::new(false));
        let spin = match mode {
            Mode::Later => (random >> 8) as u32 % 20_000,
            Mode::Twice => (random >> 8) as u32 % 2_000,
            _ => 0,
        };
        let target = (random >> 32) as usize % self.senders.len();
        self.senders[target]
            .send(Job {
                waker: cx.waker().clone(),
                mode,
                fired: fired.clone(),
                woke: woke.clone(),
                spin,
            })
            .unwrap();
        if mode == Mode::BeforePending {
            while !woke.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
        }
        self.fired = Some(fired);
        Poll::Pending
    }
}

fn check(reports: Vec<Report>) {
    let mut failures = Vec::new();
    let mut spurious = 0;
    for (i, report) in reports.iter().enumerate() {
        for v in &report.violations {
            failures.push(format!("#{i}: {v}"));
        }
        // STEPS Pending polls that made progress, plus the final Ready one; a double
        // wake may add one spurious poll, nothing else may.
        let expected = STEPS + 1;
        let extra = report.polls.saturating_sub(expected);
        if report.polls < expected || extra > report.double_wakes {
            failures.push(format!(
                "#{i}: polled {} times for {STEPS} steps with {} double wakes",
                report.polls, report.double_wakes
            ));
        }
        spurious += extra;
    }
    println!(
        "{} futures x {STEPS} steps: {spurious} spurious polls from double wakes",
        reports.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn green_threads_survive_foreign_wakes_racing_with_suspends() {
    with_watchdog(
        "green threads woken from foreign threads",
        Duration::from_secs(60),
        || {
            let rt = runtime(2);
            let wakers = Wakers::start();
            let handles: Vec<_> = (0..200)
                .map(|_| {
                    let racy = Racy::new(wakers.senders.clone());
                    rt.spawn(move || greenrt::block_on(racy))
                })
                .collect();
            let reports = handles.into_iter().map(|h| h.join().unwrap()).collect();
            wakers.stop();
            check(reports);
        },
    );
}

#[test]
fn green_threads_on_many_workers_survive_foreign_wakes() {
    // More workers than cores: preemption in the middle of a switch becomes likely.
    with_watchdog(
        "green threads on 4 workers",
        Duration::from_secs(60),
        || {
            let rt = runtime(4);
            let wakers = Wakers::start();
            let handles: Vec<_> = (0..200)
                .map(|_| {
                    let racy = Racy::new(wakers.senders.clone());
                    rt.spawn(move || {
                        let report = greenrt::block_on(racy);
                        // And a yield after it, so stale wakes meet a green thread in yet
                        // another state.
                        greenrt::yield_now();
                        report
                    })
                })
                .collect();
            let reports = handles.into_iter().map(|h| h.join().unwrap()).collect();
            wakers.stop();
            check(reports);
        },
    );
}

#[test]
fn future_tasks_survive_foreign_wakes_racing_with_polls() {
    with_watchdog(
        "future tasks woken from foreign threads",
        Duration::from_secs(60),
        || {
            let rt = runtime(2);
            let wakers = Wakers::start();
            let handles: Vec<_> = (0..200)
                .map(|_| rt.spawn_async(Racy::new(wakers.senders.clone())))
                .collect();
            let reports = rt.block_on(async {
                let mut reports = Vec::new();
                for handle in handles {
                    reports.push(handle.await.unwrap());
                }
                reports
            });
            wakers.stop();
            check(reports);
        },
    );
}
