//! The runtime: workers, their shared queues, and the ways into it.
//!
//! - [`Runtime`] owns the worker threads; dropping it shuts them down.
//! - [`Builder`] configures and starts one.
//! - [`Handle`] is a cheap, clonable reference for spawning from anywhere.
//!
//! Files, one concept each: `worker.rs` (a worker's queues and loop), `idle.rs`
//! (parking and waking workers), `host.rs` (`Runtime::run` and `Runtime::block_on` on
//! the caller's thread), `context.rs` (what the current thread is to greenrt),
//! `builder.rs`, `handle.rs`.

mod builder;
pub(crate) mod context;
mod handle;
mod host;
mod idle;
mod recycle;
pub(crate) mod worker;

pub use builder::{Builder, WORKER_THREADS_ENV};
pub use handle::Handle;

use crate::green::GreenThread;
use crate::state::{RUNNING, SCHEDULED};
use crate::task::{FutureTask, Task};
use crossbeam_deque::Injector;
use std::future::Future;
use std::io;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Settings fixed when the runtime starts.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) worker_threads: usize,
    /// Usable bytes per green stack, page-rounded.
    pub(crate) stack_size: usize,
    pub(crate) thread_name: String,
    pub(crate) max_green_threads: Option<usize>,
    pub(crate) max_blocking_threads: usize,
}

/// Everything the workers, handles and wakers of one runtime share.
pub(crate) struct Shared {
    pub(crate) injector: Injector<Task>,
    pub(crate) workers: Box<[worker::WorkerShared]>,
    pub(crate) idle: idle::Idle,
    shutdown: AtomicBool,
    pub(crate) config: Config,
    /// Unfinished green threads, against `config.max_green_threads`.
    pub(crate) live_greens: Arc<AtomicUsize>,
    pub(crate) tasks: TaskList,
    /// Stacks of finished `Runtime::run` green threads, kept for the next call.
    pub(crate) host_stacks: Mutex<Vec<crate::stack::Stack>>,
    /// The I/O reactor, driven by parking workers (see `crate::reactor`).
    pub(crate) reactor: Arc<crate::reactor::Reactor>,
    /// Threads for `unblock` / `spawn_blocking`.
    pub(crate) blocking: crate::blocking::Pool,
    /// Who runs the final sweep (see [`Shared::final_sweep`]): the count of worker
    /// threads still running, plus [`OWNER_LEFT`] once the runtime's owner stopped
    /// waiting for them.
    sweeper: AtomicUsize,
    /// Where worker-level tracing events go (see `crate::trace::RuntimeDispatch`).
    #[cfg(feature = "tracing")]
    pub(crate) trace_dispatch: crate::trace::RuntimeDispatch,
}

/// In `Shared::sweeper`: the owner gave up waiting for the workers
/// (`shutdown_timeout` ran out, or the runtime was dropped on one of its workers), so
/// the last worker to exit runs the final sweep.
const OWNER_LEFT: usize = 1 << (usize::BITS - 1);

impl Shared {
    pub(crate) fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// Queues a new or woken task: on this thread's own deque when it is one of our
    /// workers (cheap, and stealable by idle ones), else on the injector.
    pub(crate) fn schedule(self: &Arc<Self>, task: Task) {
        let mut task = Some(task);
        let mut displaced = true;
        context::with_local(|local| {
            if let Some(core) = local.worker_of(self) {
                let task = task.take().expect("task");
                displaced = core.push_lifo(worker::Next::Task(task));
            }
        });
        if let Some(task) = task {
            self.injector.push(task);
        }
        // A unit that only took the LIFO slot runs next on this worker: waking another
        // one for it would cost a system call and usually lose the race anyway. A unit
        // that went to a shared-visible queue is worth a thief.
        if displaced {
            self.notify_one();
        }
        if self.is_shutdown() {
            // Shutdown may have drained the injector before our push landed.
            self.drain_injector();
        }
    }

    /// Queues a started green thread, woken on a thread other than its home worker
    /// `index`, in that worker's inbox. (On the home worker itself,
    /// `Core::schedule_started_here` queues it directly.)
    pub(crate) fn send_home(&self, index: usize, green: Arc<GreenThread>) {
        self.workers[index].inbox.push(green);
        self.unpark_worker(index);
    }

    /// Wakes one parked worker if nobody is searching for work.
    pub(crate) fn notify_one(&self) {
        if let Some(index) = self.idle.worker_to_notify() {
            self.unpark_worker(index);
        }
    }

    /// Wakes worker `index` whether it parks on its thread or blocks in the reactor's
    /// `epoll_wait`. The caller has made the work it is waking it for visible.
    pub(crate) fn unpark_worker(&self, index: usize) {
        self.workers[index].unpark();
        self.reactor.unpark(index);
    }

    /// Called after this thread released the reactor's poll lock to go back to work:
    /// unparks a sleeping worker, which takes the lock when it parks again (the reactor
    /// hand-off, see `crate::reactor`).
    pub(crate) fn hand_off_reactor(&self) {
        // Pairs with the fence in `Idle::register_sleeper`: a worker whose `try_lock`
        // failed registered before it, so it is seen here.
        fence(Ordering::SeqCst);
        if let Some(index) = self.idle.sleeper_to_drive() {
            self.workers[index].unpark();
        }
    }

    fn begin_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.reactor.close();
        fence(Ordering::SeqCst);
        for index in 0..self.workers.len() {
            self.unpark_worker(index);
        }
        self.blocking.shutdown();
    }

    /// Once every worker has stopped: cancels what no worker will ever take, the unstarted
    /// work left in the injector and the idle future tasks (whose list otherwise keeps
    /// them, and through them this `Shared`, alive forever). Run exactly once, by the
    /// owner after it joined the workers, or by the last worker out when the owner did
    /// not wait (see `sweeper`).
    fn final_sweep(&self) {
        self.drain_injector();
        for task in self.tasks.drain() {
            task.cancel_at_shutdown();
        }
    }

    /// The owner stops waiting for the workers: the last one to exit sweeps, or the owner
    /// now if they all have already.
    fn owner_leaves(&self) {
        let before = self.sweeper.fetch_or(OWNER_LEFT, Ordering::AcqRel);
        if before == 0 {
            self.final_sweep();
        }
    }

    /// A worker thread is done with its core and leaving; the last one sweeps if the
    /// owner left without waiting.
    pub(crate) fn worker_exited(&self) {
        let before = self.sweeper.fetch_sub(1, Ordering::AcqRel);
        if before == OWNER_LEFT | 1 {
            self.final_sweep();
        }
    }

    /// Cancels whatever sits in the injector (only after shutdown began).
    pub(crate) fn drain_injector(&self) {
        while let Some(task) = worker::steal_one(|| self.injector.steal()) {
            cancel_queued(task);
        }
    }
}

/// Cancels a task taken from a queue during shutdown: it never runs.
pub(crate) fn cancel_queued(task: Task) {
    match task {
        Task::Green(green) => {
            // Only unstarted green threads sit in deques and the injector; a racing
            // shutdown claim may have taken it already.
            if green.state.load() & (SCHEDULED | RUNNING) != SCHEDULED {
                return;
            }
            green.state.start_run();
            // SAFETY: we hold it RUNNING; queued ones in deques/injector never started.
            unsafe { green.finish_unstarted(crate::green::Start::Cancel) };
            green.state.complete();
        }
        Task::Future(task) => task.cancel_at_shutdown(),
    }
}

/// The live future tasks of a runtime, so shutdown can drop the ones nobody will poll.
/// Sharded slabs: a task's key (shard and index) is stored in the task, so insert and
/// remove are a short lock, a Vec slot and no hashing; shards keep workers spawning at
/// once off each other's lock.
pub(crate) struct TaskList {
    shards: Box<[Mutex<TaskSlab>]>,
}

#[derive(Default)]
struct TaskSlab {
    slots: Vec<Option<Arc<FutureTask>>>,
    free: Vec<usize>,
}

const TASK_SHARDS: usize = 16;

impl TaskList {
    fn new() -> TaskList {
        TaskList {
            shards: (0..TASK_SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, shard: usize) -> std::sync::MutexGuard<'_, TaskSlab> {
        self.shards[shard].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a task; returns the key to remove it with.
    pub(crate) fn insert(&self, task: Arc<FutureTask>) -> usize {
        let shard = task.identity.id().as_u64() as usize % TASK_SHARDS;
        let mut slab = self.shard(shard);
        let index = match slab.free.pop() {
            Some(index) => {
                slab.slots[index] = Some(task);
                index
            }
            None => {
                slab.slots.push(Some(task));
                slab.slots.len() - 1
            }
        };
        index * TASK_SHARDS + shard
    }

    pub(crate) fn remove(&self, key: usize) {
        let removed = {
            let mut slab = self.shard(key % TASK_SHARDS);
            let index = key / TASK_SHARDS;
            let removed = slab.slots.get_mut(index).and_then(Option::take);
            if removed.is_some() {
                slab.free.push(index);
            }
            removed
        };
        // Dropped outside the lock: it may be the last reference.
        drop(removed);
    }

    fn drain(&self) -> Vec<Arc<FutureTask>> {
        let mut all = Vec::new();
        for shard in 0..TASK_SHARDS {
            let mut slab = self.shard(shard);
            slab.free.clear();
            all.extend(slab.slots.drain(..).flatten());
        }
        all
    }
}

/// A greenrt runtime: worker threads running green threads and future tasks.
///
/// Create one with [`Runtime::new`] or [`Builder`]; enter it with [`Runtime::run`] (a
/// green thread on the calling thread) or [`Runtime::block_on`] (a future); spawn onto it
/// from anywhere with [`Runtime::spawn`] / [`Handle`]. Dropping it shuts it down:
/// no new work starts, suspended green threads are unwound with
/// [`Cancelled`](crate::Cancelled) so their destructors run, and the workers are joined.
///
/// ```
/// use greenrt::runtime::Runtime;
///
/// let rt = Runtime::new()?;
/// let total = rt.run(|| {
///     let handles: Vec<_> = (0..10).map(|i| greenrt::spawn(move || i * 2)).collect();
///     handles.into_iter().map(|h| h.join().unwrap()).sum::<i32>()
/// });
/// assert_eq!(total, 90);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Runtime {
    handle: Handle,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("handle", &self.handle)
            .finish()
    }
}

impl Runtime {
    /// A runtime with one worker per available CPU (or as many as the environment
    /// variable [`GREENRT_WORKER_THREADS`](WORKER_THREADS_ENV) says) and default settings.
    pub fn new() -> io::Result<Runtime> {
        Builder::new().build()
    }

    fn start(config: Config) -> io::Result<Runtime> {
        crate::overflow::install();
        crate::panic_hook::install();
        let deques: Vec<_> = (0..config.worker_threads)
            .map(|_| crossbeam_deque::Worker::new_fifo())
            .collect();
        let shared = Arc::new(Shared {
            injector: Injector::new(),
            workers: deques
                .iter()
                .map(|d| worker::WorkerShared::new(d.stealer()))
                .collect(),
            idle: idle::Idle::new(config.worker_threads),
            shutdown: AtomicBool::new(false),
            sweeper: AtomicUsize::new(config.worker_threads),
            #[cfg(feature = "tracing")]
            trace_dispatch: crate::trace::RuntimeDispatch::capture(),
            live_greens: Arc::new(AtomicUsize::new(0)),
            tasks: TaskList::new(),
            host_stacks: Mutex::new(Vec::new()),
            reactor: Arc::new(crate::reactor::Reactor::new()?),
            blocking: crate::blocking::Pool::new(
                config.max_blocking_threads,
                config.thread_name.clone(),
            ),
            config,
        });
        let mut runtime = Runtime {
            handle: Handle {
                shared: shared.clone(),
            },
            threads: Vec::new(),
        };
        for (index, deque) in deques.into_iter().enumerate() {
            let shared = shared.clone();
            let name = format!("{}-{index}", shared.config.thread_name);
            // Workers run only scheduler code on their own stack; green threads have
            // their own stacks, so the OS thread's can stay small.
            let thread = std::thread::Builder::new()
                .name(name)
                .stack_size(256 * 1024)
                .spawn(move || worker::run(shared, index, deque))?;
            // On error, `runtime` drops here and shuts down the workers already started.
            runtime.threads.push(thread);
        }
        Ok(runtime)
    }

    /// The runtime's [`Handle`], for spawning from other threads.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Spawns a green thread on this runtime. See [`crate::spawn`].
    ///
    /// ```
    /// let rt = greenrt::runtime::Runtime::new().unwrap();
    /// let handle = rt.spawn(|| 1 + 1);
    /// assert_eq!(handle.join().unwrap(), 2); // parks this plain thread
    /// ```
    pub fn spawn<F, T>(&self, f: F) -> crate::JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.handle.spawn(f)
    }

    /// Spawns a future task on this runtime. See [`crate::spawn_async`].
    pub fn spawn_async<F>(&self, future: F) -> crate::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn_async(future)
    }

    /// Runs `f` on this runtime's blocking pool. See [`crate::spawn_blocking`].
    ///
    /// ```
    /// let rt = greenrt::runtime::Runtime::new().unwrap();
    /// let job = rt.spawn_blocking(|| std::fs::metadata("Cargo.toml").map(|m| m.len()));
    /// assert!(job.join().unwrap()? > 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_blocking<F, T>(&self, f: F) -> crate::JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.handle.spawn_blocking(f)
    }

    /// Runs `f` as a green thread hosted on the calling thread and returns its value.
    ///
    /// The calling thread becomes a one-green-thread scheduler: it runs `f` on a green
    /// stack, and whenever `f` blocks (joining, sleeping, `block_on`) it parks until `f`
    /// is woken. Everything `f` spawns runs on the workers. Because `f` never leaves this
    /// thread, it needs neither `Send` nor `'static`. A panic in `f` resumes here.
    ///
    /// Its green stack is the runtime's stack size, but at least 2 MiB (like a std
    /// thread's), since `main` bodies tend to be deeper than spawned green threads.
    ///
    /// # Panics
    /// When called from a worker or green thread of any greenrt runtime, or inside
    /// another `run`/`block_on`: it would block a worker. Spawn a green thread and join
    /// it instead.
    ///
    /// ```
    /// let rt = greenrt::runtime::Runtime::new().unwrap();
    /// let local = String::from("borrowed, not moved");
    /// let len = rt.run(|| {
    ///     let child = greenrt::spawn(|| 40);
    ///     local.len() + child.join().unwrap()
    /// });
    /// assert_eq!(len, 19 + 40);
    /// ```
    pub fn run<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T,
    {
        host::run(&self.handle, f)
    }

    /// Drives `future` to completion on the calling thread while the workers run
    /// everything else, and returns its output.
    ///
    /// # Panics
    /// Like [`Runtime::run`], when called from inside a greenrt runtime.
    ///
    /// ```
    /// let rt = greenrt::runtime::Runtime::new().unwrap();
    /// let out = rt.block_on(async {
    ///     let green = greenrt::spawn(|| 20);
    ///     let task = greenrt::spawn_async(async { 22 });
    ///     green.await.unwrap() + task.await.unwrap()
    /// });
    /// assert_eq!(out, 42);
    /// ```
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        host::block_on(&self.handle, future)
    }

    /// Shuts the runtime down like dropping it, but waits at most `timeout` for the
    /// workers to finish cancelling; workers still busy then (a green thread that never
    /// reaches a suspension point) are left to finish in the background, and the last
    /// of them to exit drops the idle future tasks and queued work, as the drop would
    /// have.
    pub fn shutdown_timeout(mut self, timeout: Duration) {
        self.shutdown(Some(timeout));
    }

    fn shutdown(&mut self, timeout: Option<Duration>) {
        let shared = self.handle.shared.clone();
        shared.begin_shutdown();
        let deadline = timeout.map(crate::time::deadline_after);
        for thread in self.threads.drain(..) {
            match deadline {
                None => {
                    let _ = thread.join();
                }
                Some(deadline) => {
                    while !thread.is_finished() && std::time::Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    if thread.is_finished() {
                        let _ = thread.join();
                    } else {
                        // Still running user code: detaching is all we can do. The
                        // last worker to exit sweeps.
                        shared.owner_leaves();
                        return;
                    }
                }
            }
        }
        // Every worker that started has exited (any not started never counted down,
        // so no worker sweeps: we do).
        shared.final_sweep();
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        if context::is_worker_of(&self.handle.shared) {
            // Joining the workers from one of them would deadlock. Stop them without
            // waiting (this one once the current green thread or task is done), so the
            // runtime does not run on forever unowned; the last worker to exit sweeps.
            self.handle.shared.begin_shutdown();
            self.handle.shared.owner_leaves();
            if std::thread::panicking() {
                eprintln!(
                    "greenrt: a Runtime was dropped on one of its own workers while \
                     panicking; it shuts down without waiting for its workers"
                );
                return;
            }
            panic!(
                "a greenrt Runtime was dropped on one of its own worker threads: shutting \
                 down joins the workers, so this would deadlock; it shuts down without \
                 waiting for them instead. Drop it from the thread that created it (or \
                 move it to a plain std::thread)"
            );
        }
        self.shutdown(None);
    }
}

/// Called by `JoinHandle::join` before it waits: when the caller is a green thread on a
/// worker and `child` is the unstarted green thread in that worker's LIFO slot (spawned
/// by the caller, nothing has run since: `spawn(f).join()`), runs the child right here,
/// from the joiner's stack straight into the child's, until the child first suspends
/// or ends ([`worker::Core::run_child_inline`]). That saves suspending the joiner, a
/// trip through the worker loop to start the child, waking the joiner, and another trip
/// to resume it. Otherwise does nothing, and the join waits as usual.
///
/// Not while tracing is listening: its slice protocol (trace.rs) assumes a green thread
/// is resumed from its worker's own stack, where no span is entered. Not while the
/// caller unwinds: the child would see the OS thread's panic count.
pub(crate) fn run_child_before_join(child: &GreenThread) {
    if crate::green::current_ptr().is_none() || std::thread::panicking() {
        return;
    }
    #[cfg(feature = "tracing")]
    if crate::trace::listening() {
        return;
    }
    context::with_local(|local| {
        if let Some(core) = &local.worker {
            core.run_child_inline(child);
        }
    });
}

/// Called by `JoinHandle::join` before it waits for the unfinished green thread
/// `child`: whether the caller is a green thread that is unwinding on a worker, and so
/// would wait by blocking its worker thread (it cannot switch, see `crate::bridge`),
/// for a child that this cannot let finish. Then the join gives up at once, with the
/// returned payload, and the child runs on, detached:
/// - the runtime is shutting down: it cancels every green thread, the child too, but
///   only once this unwind has ended (payload [`Cancelled`](crate::Cancelled));
/// - the child started on this worker, or the runtime has only this worker, so only
///   this worker can run it, and it is blocked (payload: a message saying so, also
///   written to stderr). (Unstarted work in this worker's LIFO slot is made stealable
///   before the worker blocks, see `crate::bridge`.)
///
/// Both used to deadlock the worker (and the runtime's drop, which joins it), typically
/// through a guard that joins a child when dropped, in a green thread being cancelled.
#[cold]
#[inline(never)]
pub(crate) fn join_cannot_wait(child: &GreenThread) -> Option<Box<dyn std::any::Any + Send>> {
    if !std::thread::panicking() {
        return None;
    }
    let caller = crate::green::current_ptr()?;
    context::with_local(|local| {
        let core = local.worker.as_ref()?;
        if local.handle.shared.is_shutdown() {
            return Some(Box::new(crate::Cancelled) as Box<dyn std::any::Any + Send>);
        }
        // With one worker, every green thread of this runtime runs only here.
        let only_here = local.handle.shared.workers.len() == 1 || core.is_at_home_here(child);
        if !only_here {
            return None;
        }
        // SAFETY: CURRENT is set only while that green thread runs on this thread.
        let caller = unsafe { caller.as_ref() };
        let message = format!(
            "greenrt: join() in green thread {}, while it unwinds, would wait for green \
             thread {}, which only this worker can run, and this worker cannot run it \
             until the unwind is over: the join gave up and that green thread runs on, \
             detached. Join it before a panic or cancel can reach this point, or let it go",
            caller.identity.id(),
            child.identity.id(),
        );
        eprintln!("{message}");
        Some(Box::new(message) as Box<dyn std::any::Any + Send>)
    })
    .flatten()
}

/// The current runtime's `Handle` (a clone), for APIs that keep it; panics outside a
/// runtime, naming `what`.
pub(crate) fn current_or_panic(what: &str) -> Handle {
    with_current_or_panic(what, Handle::clone)
}

/// Runs `f` with the current runtime's `Handle`, borrowed: spawning from a green thread
/// or task then bumps no reference count that every worker shares. Panics outside a
/// runtime, naming `what`.
pub(crate) fn with_current_or_panic<R>(what: &str, f: impl FnOnce(&Handle) -> R) -> R {
    context::with_local(|local| f(&local.handle)).unwrap_or_else(|| {
        panic!(
            "{what} called outside a greenrt runtime. Spawn from inside one (a green thread \
             or task, `Runtime::run`, `Runtime::block_on`, `#[greenrt::main]`), or use \
             `Runtime::spawn` / `Handle::spawn` with an explicit runtime"
        )
    })
}
