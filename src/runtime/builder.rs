//! `runtime::Builder`: validated settings for a new runtime.

use super::{Config, Runtime};
use crate::stack;
use std::io;

/// Configures and starts a [`Runtime`].
///
/// Invalid settings are reported by [`build`](Builder::build) as an
/// `io::ErrorKind::InvalidInput` error that names the setting and its allowed range.
///
/// ```
/// use greenrt::runtime::Builder;
///
/// let rt = Builder::new()
///     .worker_threads(2)
///     .stack_size(64 * 1024)
///     .thread_name("my-worker")
///     .build()?;
/// assert_eq!(rt.run(|| greenrt::spawn(|| 7).join().unwrap()), 7);
///
/// let err = Builder::new().worker_threads(0).build().unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    worker_threads: Option<usize>,
    stack_size: usize,
    thread_name: String,
    max_green_threads: Option<usize>,
    max_blocking_threads: usize,
}

/// The most worker threads a runtime accepts.
pub const MAX_WORKER_THREADS: usize = 1024;

/// The environment variable that sets the worker count of runtimes whose builder was
/// not given one ([`Builder::worker_threads`] wins over it). It lets whoever runs a
/// program size it without rebuilding: several processes sharing a machine each take a
/// few cores. Read by [`Builder::build`]; an invalid value is a build error.
///
/// ```
/// assert_eq!(greenrt::runtime::WORKER_THREADS_ENV, "GREENRT_WORKER_THREADS");
/// ```
pub const WORKER_THREADS_ENV: &str = "GREENRT_WORKER_THREADS";

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// Default settings: one worker per available CPU (or as many as
    /// [`GREENRT_WORKER_THREADS`](WORKER_THREADS_ENV) says), 256 KiB green stacks,
    /// workers named `greenrt-worker-N`.
    pub fn new() -> Builder {
        Builder {
            worker_threads: None,
            stack_size: stack::DEFAULT_STACK_SIZE,
            thread_name: "greenrt-worker".to_string(),
            max_green_threads: None,
            max_blocking_threads: crate::blocking::DEFAULT_MAX_BLOCKING_THREADS,
        }
    }

    /// Number of worker threads, 1 to 1024. Default: the value of the environment
    /// variable [`GREENRT_WORKER_THREADS`](WORKER_THREADS_ENV) when it is set, else the
    /// available parallelism.
    pub fn worker_threads(&mut self, n: usize) -> &mut Builder {
        self.worker_threads = Some(n);
        self
    }

    /// Default usable stack size of green threads, in bytes: 16 KiB to 1 GiB, rounded
    /// up to whole pages; a guard page comes on top. Default 256 KiB. Stacks are
    /// virtual: a green thread costs only the pages it touches. (A panic's hook, which
    /// may print a backtrace, runs on a separate stack, so even the smallest stack can
    /// panic.)
    pub fn stack_size(&mut self, bytes: usize) -> &mut Builder {
        self.stack_size = bytes;
        self
    }

    /// Name prefix of the worker threads (`<name>-<index>`); it must not contain a NUL
    /// byte. Linux shows the first 15 bytes of a thread's name.
    pub fn thread_name(&mut self, name: impl Into<String>) -> &mut Builder {
        self.thread_name = name.into();
        self
    }

    /// At most this many unfinished green threads in this runtime (at least 1); beyond
    /// it, [`greenrt::Builder::spawn`](crate::Builder::spawn) returns an error (and
    /// [`greenrt::spawn`](crate::spawn) panics with it). Default: only the process-wide
    /// limit derived from `vm.max_map_count`.
    ///
    /// A spawn at the cap first waits for green threads to finish, as long as some keep
    /// finishing: in a green thread by yielding, on a plain thread by sleeping. In a
    /// future task it fails at once, since waiting would block the task's worker.
    pub fn max_green_threads(&mut self, n: usize) -> &mut Builder {
        self.max_green_threads = Some(n);
        self
    }

    /// At most this many threads in the blocking pool that runs
    /// [`greenrt::unblock`](crate::unblock) and [`greenrt::spawn_blocking`](crate::spawn_blocking)
    /// jobs (at least 1); more jobs wait in a queue. Idle pool threads exit after 10 s.
    /// Default 512. With every pool thread busy, a job that waits for another queued job
    /// waits forever: keep jobs independent of each other, or the bound high enough.
    ///
    /// ```
    /// let err = greenrt::runtime::Builder::new().max_blocking_threads(0).build().unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    /// assert!(err.to_string().contains("max_blocking_threads"));
    /// ```
    pub fn max_blocking_threads(&mut self, n: usize) -> &mut Builder {
        self.max_blocking_threads = n;
        self
    }

    /// Validates the settings and starts the workers.
    pub fn build(&mut self) -> io::Result<Runtime> {
        let worker_threads = match self.worker_threads {
            Some(n) => n,
            None => match worker_threads_from_env()? {
                Some(n) => n,
                None => std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1),
            },
        };
        if !(1..=MAX_WORKER_THREADS).contains(&worker_threads) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "worker_threads({worker_threads}) is out of range: a runtime needs between \
                     1 and {MAX_WORKER_THREADS} worker threads"
                ),
            ));
        }
        let stack_size = stack::validate_stack_size(self.stack_size, "stack_size")?;
        if self.thread_name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "thread_name({:?}) contains a NUL byte, which OS thread names cannot \
                     hold: remove it",
                    self.thread_name
                ),
            ));
        }
        if self.max_green_threads == Some(0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "max_green_threads(0) is out of range: it must be at least 1",
            ));
        }
        if self.max_blocking_threads == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "max_blocking_threads(0) is out of range: it must be at least 1",
            ));
        }
        Runtime::start(Config {
            worker_threads,
            stack_size,
            thread_name: self.thread_name.clone(),
            max_green_threads: self.max_green_threads,
            max_blocking_threads: self.max_blocking_threads,
        })
    }
}

/// The worker count [`WORKER_THREADS_ENV`] asks for, if it is set; an error that says
/// what to change when it is not a count from 1 to [`MAX_WORKER_THREADS`].
fn worker_threads_from_env() -> io::Result<Option<usize>> {
    let Some(value) = std::env::var_os(WORKER_THREADS_ENV) else {
        return Ok(None);
    };
    let text = value.to_string_lossy();
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_WORKER_THREADS).contains(&n) => Ok(Some(n)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{WORKER_THREADS_ENV}={text:?} is not a worker count: set it to a whole \
                 number from 1 to {MAX_WORKER_THREADS}, or unset it to use one worker per CPU"
            ),
        )),
    }
}
