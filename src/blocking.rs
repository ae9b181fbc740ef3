//! The blocking pool: OS threads for work that would block a worker.
//!
//! This module owns one runtime's pool of blocking threads and the two ways into it,
//! [`unblock`] (green-blocking style) and [`spawn_blocking`] (a [`JoinHandle`]). The pool
//! is bounded (`runtime::Builder::max_blocking_threads`, default 512): jobs beyond it
//! queue. A thread is started only when no idle one is waiting, and an idle thread exits
//! after [`KEEP_ALIVE`]. Jobs run user code on pool threads only, never under the
//! pool's lock.
//!
//! There is no `greenrt::fs`: wrap file system calls in `unblock`.
//!
//! ```
//! let rt = greenrt::runtime::Runtime::new().unwrap();
//! let bytes = rt.run(|| greenrt::unblock(|| std::fs::read("Cargo.toml")))?;
//! assert!(!bytes.is_empty());
//! # Ok::<(), std::io::Error>(())
//! ```

use crate::bridge::{self, Caller};
use crate::runtime::context::{self, Local};
use crate::runtime::Handle;
use crate::JoinHandle;
use std::collections::VecDeque;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long an idle pool thread waits for a job before it exits.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The default bound on blocking threads per runtime.
pub const DEFAULT_MAX_BLOCKING_THREADS: usize = 512;

type Job = Box<dyn FnOnce() + Send + 'static>;

struct State {
    queue: VecDeque<Job>,
    threads: usize,
    /// Idle threads, the most recently idle last. A new job wakes the last one (LIFO):
    /// under a light load the same few threads take every job and the others stay idle
    /// long enough to exit. (Waking any one, as a shared condvar does, let every idle
    /// thread restart its keep-alive in turn, so none ever exited.) A thread is removed
    /// by whoever wakes it, or by itself when it stops waiting.
    sleepers: Vec<Arc<Sleeper>>,
    shutdown: bool,
}

/// One idle pool thread's wake-up.
struct Sleeper {
    /// Set (under the state lock) by whoever took it out of `sleepers` to wake it.
    woken: AtomicBool,
    condvar: Condvar,
}

struct Inner {
    state: Mutex<State>,
    max_threads: usize,
    thread_name: String,
}

/// One runtime's blocking pool.
pub(crate) struct Pool {
    inner: Arc<Inner>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Pool {
    pub(crate) fn new(max_threads: usize, thread_name: String) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    threads: 0,
                    sleepers: Vec::new(),
                    shutdown: false,
                }),
                max_threads,
                thread_name,
            }),
        }
    }

    /// Queues `job`, starting a thread for it when there are more queued jobs than
    /// idle threads to take them and the bound allows.
    pub(crate) fn execute(&self, job: Job) {
        let mut state = self.inner.lock();
        state.queue.push_back(job);
        // Each idle thread is woken for one job, so a job needs a new thread only when
        // none is idle.
        if let Some(sleeper) = state.sleepers.pop() {
            sleeper.woken.store(true, Ordering::Relaxed);
            drop(state);
            sleeper.condvar.notify_one();
            return;
        }
        if state.threads >= self.inner.max_threads {
            // A busy thread (or one woken for an earlier job) takes it when done.
            return;
        }
        state.threads += 1;
        drop(state);
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{}-blocking", self.inner.thread_name))
            .spawn(move || run(inner));
        if let Err(error) = spawned {
            let mut state = self.inner.lock();
            state.threads -= 1;
            if state.threads == 0 {
                // Nobody will run the queued jobs: run this one here rather than lose it.
                let job = state.queue.pop_back();
                drop(state);
                eprintln!("greenrt: could not start a blocking thread ({error}); running inline");
                if let Some(job) = job {
                    job();
                }
            }
        }
    }

    /// Lets idle threads exit now; queued jobs still run.
    pub(crate) fn shutdown(&self) {
        let mut state = self.inner.lock();
        state.shutdown = true;
        let sleepers = std::mem::take(&mut state.sleepers);
        for sleeper in &sleepers {
            sleeper.woken.store(true, Ordering::Relaxed);
        }
        drop(state);
        for sleeper in sleepers {
            sleeper.condvar.notify_one();
        }
    }
}

fn run(inner: Arc<Inner>) {
    let me = Arc::new(Sleeper {
        woken: AtomicBool::new(false),
        condvar: Condvar::new(),
    });
    let mut state = inner.lock();
    loop {
        if let Some(job) = state.queue.pop_front() {
            drop(state);
            // The job catches its own panics (see `unblock`); this is a backstop.
            // Its payload is forgotten, not dropped (that could panic again, here).
            crate::green::panics(job);
            state = inner.lock();
            continue;
        }
        if state.shutdown {
            break;
        }
        me.woken.store(false, Ordering::Relaxed);
        state.sleepers.push(me.clone());
        let deadline = Instant::now() + KEEP_ALIVE;
        let mut expired = false;
        while !me.woken.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= deadline {
                expired = true;
                break;
            }
            state = me
                .condvar
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if !me.woken.load(Ordering::Relaxed) {
            // Nobody took us out: we leave the idle list ourselves, so no job is ever
            // handed to a thread that is gone.
            state.sleepers.retain(|s| !Arc::ptr_eq(s, &me));
        }
        if expired && state.queue.is_empty() {
            break;
        }
    }
    state.threads -= 1;
}

/// Runs `f` on the current runtime's blocking pool, sending its outcome to `tx`.
fn submit<F, T>(handle: Handle, f: F) -> futures::channel::oneshot::Receiver<std::thread::Result<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = futures::channel::oneshot::channel();
    let shared = handle.shared.clone();
    shared.blocking.execute(Box::new(move || {
        // The job sees its runtime, as tokio's blocking tasks do: it can spawn, use
        // timers and `Handle::current()`. Its own timer heap goes with the job. Only on
        // a thread with no runtime context (a pool thread): run inline by `execute`
        // (no pool thread could start), the job is on the submitter's thread, often a
        // green thread, whose context must stay current (a pool context entered there
        // would stay current on the worker while `f` suspends the green thread).
        let outcome = if context::with_local(|_| ()).is_none() {
            let local = Local::blocking_pool(handle);
            let _entered = context::enter(&local);
            catch_unwind(AssertUnwindSafe(f))
        } else {
            catch_unwind(AssertUnwindSafe(f))
        };
        let _ = tx.send(outcome);
    }));
    rx
}

/// Runs blocking code without blocking the worker: in a green thread, `f` runs on a
/// thread of the runtime's blocking pool while only the calling green thread waits (its
/// worker keeps running other green threads). On a plain thread (or a `Runtime::run`
/// host thread's own code outside green threads) `f` simply runs inline. A panic in `f`
/// resumes in the caller. On the pool, `f` sees its runtime, as tokio's blocking tasks
/// do: it may spawn, use `greenrt::time` and `Handle::current()`.
///
/// # Panics
/// Inside a future task (it would block the worker): use [`spawn_blocking`] and
/// `.await` it.
///
/// ```
/// let rt = greenrt::runtime::Runtime::new().unwrap();
/// let text = rt.run(|| greenrt::unblock(|| std::fs::read_to_string("Cargo.toml")))?;
/// assert!(text.contains("greenrt"));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn unblock<F, T>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // The name goes into the panic message of a call in a future task: say what to use.
    match bridge::caller(
        "greenrt::unblock (in async code use `greenrt::spawn_blocking(f).await` instead)",
    ) {
        Caller::Green(_) if !std::thread::panicking() => {
            let rx = submit(crate::runtime::current_or_panic("greenrt::unblock"), f);
            match bridge::block_on_named(rx, "greenrt::unblock") {
                Ok(Ok(value)) => value,
                Ok(Err(payload)) => resume_unwind(payload),
                Err(_) => panic!("greenrt::unblock: the blocking pool dropped the job"),
            }
        }
        _ => f(),
    }
}

/// Runs `f` on the current runtime's blocking pool and returns a [`JoinHandle`] for its
/// result (`.await` it in async code, `join()` it elsewhere). A panic in `f` becomes
/// the handle's `Err`.
///
/// Once the runtime has begun shutting down, `f` is dropped without running and the
/// handle's `Err` is [`Cancelled`](crate::Cancelled), as for any spawn then. A job
/// already running when shutdown begins runs to its end on its pool thread, but its
/// handle reports `Cancelled` too: nobody is left to deliver the result.
///
/// # Panics
/// Outside a runtime.
///
/// ```
/// let rt = greenrt::runtime::Runtime::new().unwrap();
/// let n = rt.block_on(async {
///     greenrt::spawn_blocking(|| std::fs::metadata("Cargo.toml").map(|m| m.len()))
///         .await
///         .unwrap()
/// })?;
/// assert!(n > 0);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn spawn_blocking<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    spawn_blocking_on(
        &crate::runtime::current_or_panic("greenrt::spawn_blocking"),
        f,
    )
}

/// [`spawn_blocking`] on `handle`'s runtime (`Handle::spawn_blocking`,
/// `Runtime::spawn_blocking`), from anywhere.
pub(crate) fn spawn_blocking_on<F, T>(handle: &Handle, f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if handle.shared.is_shutdown() {
        // Like any spawn once shutdown began: the job never runs (`spawn_async` drops
        // it unpolled) and the handle reports `Cancelled`.
        return handle.spawn_async(async move { f() });
    }
    let rx = submit(handle.clone(), f);
    handle.spawn_async(async move {
        match rx.await {
            Ok(Ok(value)) => value,
            Ok(Err(payload)) => resume_unwind(payload),
            Err(_) => panic!("greenrt::spawn_blocking: the blocking pool dropped the job"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn wait_until(pool: &Pool, what: &str, done: impl Fn(&State) -> bool) {
        for _ in 0..1000 {
            if done(&pool.inner.lock()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("the pool never reached: {what}");
    }

    /// A thread that shutdown woke while idle exits; a job queued later must still run
    /// (on a new thread), not wait for a notify to the exited one.
    #[test]
    fn a_job_after_idle_threads_left_on_shutdown_still_runs() {
        let pool = Pool::new(4, "test".into());
        pool.execute(Box::new(|| {}));
        wait_until(&pool, "one idle thread", |s| {
            s.sleepers.len() == 1 && s.queue.is_empty()
        });
        pool.shutdown();
        wait_until(&pool, "no thread", |s| s.threads == 0);
        let (tx, rx) = mpsc::channel();
        pool.execute(Box::new(move || tx.send(()).unwrap()));
        assert!(
            rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "the job never ran: the pool counted an exited thread as idle"
        );
    }
}
