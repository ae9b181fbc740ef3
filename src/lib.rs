//! # greenrt
//!
//! Green threads (stackful coroutines) and futures on one multi-worker, work-stealing
//! runtime. Green code is plain blocking-style Rust; "blocking" suspends only the green
//! thread, never the OS worker it runs on.
//!
//! ```
//! use std::time::Duration;
//!
//! #[greenrt::main(worker_threads = 2)]
//! fn main() {
//!     let handles: Vec<_> = (0..1000)
//!         .map(|i| {
//!             greenrt::spawn(move || {
//!                 greenrt::sleep(Duration::from_millis(10)); // suspends this green thread only
//!                 greenrt::yield_now();
//!                 let doubled = greenrt::block_on(async move { i * 2 }); // wait on a future
//!                 doubled
//!             })
//!         })
//!         .collect();
//!     let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
//!     assert_eq!(sum, 999 * 1000);
//! }
//! ```
//!
//! ## Pieces
//! - [`spawn`], [`Builder`]: green threads; [`JoinHandle`]: their results (`join()` or
//!   `.await`); [`current`], [`Green`], [`GreenId`]: their identity.
//! - [`spawn_async`]: future tasks on the same workers.
//! - [`block_on`], [`yield_now`], [`sleep`]: green-blocking calls; [`time::sleep`] for
//!   async code.
//! - [`runtime`]: [`Runtime`](runtime::Runtime), its [`Builder`](runtime::Builder) and
//!   [`Handle`](runtime::Handle); [`main`] and [`test`] attributes.
//!
//! ## Soundness rules the API rests on
//! - A started green thread never runs on another OS thread, so thread-locals behave in
//!   green code as they do in single-threaded code (only unstarted work is stolen).
//! - A stack is freed only after its green thread finished or unwound; cancelling a
//!   suspended green thread unwinds it with [`Cancelled`].
//! - Green threads never switch while unwinding: green-blocking calls made during a
//!   panic block the worker thread instead.
//!
//! See README.md's CAVEATS for what this means for user code.

mod arch;
#[doc(hidden)]
pub mod bench;
mod blocking;
mod bridge;
mod green;
mod join;
pub mod net;
mod overflow;
mod panic_hook;
mod reactor;
pub mod runtime;
mod stack;
mod state;
mod task;
pub mod time;
#[cfg(feature = "tracing")]
mod trace;
mod valgrind;
mod wake;

pub use blocking::{spawn_blocking, unblock};
pub use green::{Cancelled, Green, GreenId};
pub use join::JoinHandle;

/// Runs the annotated `fn main` (or `async fn main`) on a new greenrt runtime.
///
/// A plain `fn main` runs as a green thread on the main thread ([`runtime::Runtime::run`]);
/// an `async fn main` is driven by [`runtime::Runtime::block_on`]. Settings:
/// `worker_threads = N`, `stack_size = BYTES`, `crate = "path"`. Return types such as
/// `Result<(), E>` pass through.
///
/// ```
/// #[greenrt::main(worker_threads = 2)]
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let answer = greenrt::spawn(|| "42".parse::<u32>()).join().unwrap()?;
///     assert_eq!(answer, 42);
///     Ok(())
/// }
/// ```
pub use greenrt_macros::main;

/// Like [`main`], for `#[test]` functions: each test gets its own runtime.
///
/// ```no_run
/// #[greenrt::test(worker_threads = 2)]
/// fn spawns_and_joins() {
///     assert_eq!(greenrt::spawn(|| 1).join().unwrap(), 1);
/// }
/// ```
pub use greenrt_macros::test;

use std::future::Future;
use std::io;
use std::time::Duration;

/// Spawns a green thread on the current runtime and returns its [`JoinHandle`].
///
/// The closure runs on its own stack (256 KiB virtual by default) and may call blocking
/// style functions ([`sleep`], [`block_on`], [`JoinHandle::join`], [`yield_now`]) that
/// suspend only this green thread. A panic is caught and returned by `join()`.
///
/// # Panics
/// Outside a runtime (use [`runtime::Runtime::spawn`] or `#[greenrt::main]`), or when
/// the process cannot hold another green thread ([`Builder::spawn`] returns that error
/// instead).
///
/// ```
/// # greenrt::runtime::Runtime::new().unwrap().run(|| {
/// let handle = greenrt::spawn(|| {
///     greenrt::yield_now();
///     "hello from a green thread"
/// });
/// assert_eq!(handle.join().unwrap(), "hello from a green thread");
/// # });
/// ```
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    runtime::with_current_or_panic("greenrt::spawn", |handle| handle.spawn(f))
}

/// Spawns a future as a task on the current runtime's workers.
///
/// # Panics
/// Outside a runtime (use [`runtime::Runtime::spawn_async`]).
///
/// ```
/// let rt = greenrt::runtime::Runtime::new().unwrap();
/// let out = rt.block_on(async {
///     greenrt::spawn_async(async { 1 + 2 }).await.unwrap()
/// });
/// assert_eq!(out, 3);
/// ```
pub fn spawn_async<Fut>(future: Fut) -> JoinHandle<Fut::Output>
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    runtime::with_current_or_panic("greenrt::spawn_async", |handle| handle.spawn_async(future))
}

/// Waits for a future to complete and returns its output.
///
/// - In a green thread: suspends only that green thread until the future is ready.
/// - On a plain OS thread: parks the thread.
/// - Inside a future task: panics, since it would block the worker; `.await` instead.
///
/// ```
/// # greenrt::runtime::Runtime::new().unwrap().run(|| {
/// let (tx, rx) = futures::channel::oneshot::channel();
/// greenrt::spawn(move || tx.send("ping").unwrap());
/// assert_eq!(greenrt::block_on(rx).unwrap(), "ping");
/// # });
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    bridge::block_on_named(future, "greenrt::block_on")
}

/// Lets other green threads on this worker run, then continues.
///
/// On a plain thread: [`std::thread::yield_now`]. Inside a future task: panics (yield
/// by returning `Pending` after waking yourself, or `.await` something).
pub fn yield_now() {
    match bridge::caller("greenrt::yield_now") {
        bridge::Caller::Green(green) if !std::thread::panicking() => {
            green::suspend(green, green::Suspend::Yield)
        }
        _ => std::thread::yield_now(),
    }
}

/// Sleeps for `duration`, suspending only the calling green thread.
///
/// On a plain thread: [`std::thread::sleep`]. Inside a future task: panics; use
/// [`time::sleep`]`(d).await`.
///
/// ```
/// # greenrt::runtime::Runtime::new().unwrap().run(|| {
/// let start = std::time::Instant::now();
/// greenrt::sleep(std::time::Duration::from_millis(5));
/// assert!(start.elapsed() >= std::time::Duration::from_millis(5));
/// # });
/// ```
pub fn sleep(duration: Duration) {
    match bridge::caller("greenrt::sleep") {
        bridge::Caller::Green(green) if !std::thread::panicking() => {
            bridge::block_on_named(time::sleep(duration), "greenrt::sleep");
            let _ = green;
        }
        bridge::Caller::Green(green) => {
            bridge::warn_blocking_while_unwinding(green, "greenrt::sleep");
            std::thread::sleep(duration)
        }
        _ => std::thread::sleep(duration),
    }
}

/// The identity of the calling green thread, or `None` outside green threads.
///
/// ```
/// assert!(greenrt::current().is_none());
/// # greenrt::runtime::Runtime::new().unwrap().run(|| {
/// let me = greenrt::current().unwrap();
/// println!("running as green thread {}", me.id());
/// # });
/// ```
pub fn current() -> Option<Green> {
    let green = green::current_ptr()?;
    // SAFETY: set only while that green thread runs on this thread, and its resumer
    // holds an Arc to it.
    Some(unsafe { green.as_ref() }.identity.clone())
}

/// Configures one green thread before spawning it, like `std::thread::Builder`.
///
/// ```
/// # greenrt::runtime::Runtime::new().unwrap().run(|| {
/// let handle = greenrt::Builder::new()
///     .name("parser".to_string())
///     .stack_size(1024 * 1024)
///     .spawn(|| greenrt::current().unwrap().name().unwrap().to_string())?;
/// assert_eq!(handle.join().unwrap(), "parser");
/// # Ok::<(), std::io::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Default)]
#[must_use = "a Builder does nothing until spawn is called"]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
}

impl Builder {
    /// A builder with the runtime's defaults (no name, the runtime's stack size).
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the green thread (shown by [`Green::name`], tracing and panic messages).
    pub fn name(mut self, name: String) -> Builder {
        self.name = Some(name);
        self
    }

    /// Usable stack size in bytes: 16 KiB to 1 GiB, rounded up to whole pages (checked
    /// by [`spawn`](Builder::spawn)). See
    /// [`runtime::Builder::stack_size`](crate::runtime::Builder::stack_size).
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = Some(bytes);
        self
    }

    /// Spawns the green thread on the current runtime.
    ///
    /// Stacks are mapped at first run, so this reserves a place in a live budget
    /// (derived from `vm.max_map_count`, or the runtime's `max_green_threads`) and
    /// returns the error here when none is left, after waiting briefly for running
    /// green threads to finish. If the stack still cannot be mapped at first run, the
    /// green thread ends with that `io::Error` as its `join()` error payload.
    ///
    /// # Errors
    /// `InvalidInput` for a stack size out of range; `OutOfMemory` when the budget is
    /// exhausted.
    ///
    /// # Panics
    /// Outside a runtime.
    pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let stack_size = self
            .stack_size
            .map(|bytes| stack::validate_stack_size(bytes, "Builder::stack_size"))
            .transpose()?;
        runtime::with_current_or_panic("greenrt::Builder::spawn", |handle| {
            handle.spawn_green(self.name, stack_size, f)
        })
    }
}
