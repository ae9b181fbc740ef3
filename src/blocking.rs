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
use crate::JoinHandle;
use std::collections::VecDeque;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long an idle pool thread waits for a job before it exits.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The default bound on blocking threads per runtime.
pub const DEFAULT_MAX_BLOCKING_THREADS: usize = 512;

type Job = Box<dyn FnOnce() + Send + 'static>;

struct State {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
    shutdown: bool,
}

struct Inner {
    state: Mutex<State>,
    condvar: Condvar,
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
                    idle: 0,
                    shutdown: false,
                }),
                condvar: Condvar::new(),
                max_threads,
                thread_name,
            }),
        }
    }

    /// Queues `job`, starting a thread for it when none is idle and the bound allows.
    pub(crate) fn execute(&self, job: Job) {
        let mut state = self.inner.lock();
        state.queue.push_back(job);
        if state.idle > 0 {
            state.idle -= 1;
            drop(state);
            self.inner.condvar.notify_one();
            return;
        }
        if state.threads >= self.inner.max_threads {
            // A busy thread takes it when done (or an idle one we miscounted).
            drop(state);
            self.inner.condvar.notify_one();
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
        self.inner.lock().shutdown = true;
        self.inner.condvar.notify_all();
    }
}

fn run(inner: Arc<Inner>) {
    let mut state = inner.lock();
    loop {
        if let Some(job) = state.queue.pop_front() {
            drop(state);
            // The job catches its own panics (see `unblock`); this is a backstop.
            let _ = catch_unwind(AssertUnwindSafe(job));
            state = inner.lock();
            continue;
        }
        if state.shutdown {
            break;
        }
        state.idle += 1;
        let (next, timeout) = inner
            .condvar
            .wait_timeout(state, KEEP_ALIVE)
            .unwrap_or_else(|e| e.into_inner());
        state = next;
        if timeout.timed_out() && state.queue.is_empty() {
            // Still counted idle unless a producer claimed us just now.
            state.idle = state.idle.saturating_sub(1);
            break;
        }
        // Woken by `execute` (which took us off `idle`) or by shutdown/spuriously.
        if state.queue.is_empty() && !state.shutdown {
            // Spurious: we are still counted idle; take ourselves off before looping.
            state.idle = state.idle.saturating_sub(1);
        }
    }
    state.threads -= 1;
}

/// Runs `f` on the current runtime's blocking pool, sending its outcome to `tx`.
fn submit<F, T>(f: F) -> futures::channel::oneshot::Receiver<std::thread::Result<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let handle = crate::runtime::current_or_panic("greenrt::unblock/spawn_blocking");
    let (tx, rx) = futures::channel::oneshot::channel();
    handle.shared.blocking.execute(Box::new(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
    }));
    rx
}

/// Runs blocking code without blocking the worker: in a green thread, `f` runs on a
/// thread of the runtime's blocking pool while only the calling green thread waits (its
/// worker keeps running other green threads). On a plain thread (or a `Runtime::run`
/// host thread's own code outside green threads) `f` simply runs inline. A panic in `f`
/// resumes in the caller.
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
    match bridge::caller("greenrt::unblock") {
        Caller::Green(_) if !std::thread::panicking() => {
            let rx = submit(f);
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
    let rx = submit(f);
    let handle = crate::runtime::current_or_panic("greenrt::spawn_blocking");
    handle.spawn_async(async move {
        match rx.await {
            Ok(Ok(value)) => value,
            Ok(Err(payload)) => resume_unwind(payload),
            Err(_) => panic!("greenrt::spawn_blocking: the blocking pool dropped the job"),
        }
    })
}
