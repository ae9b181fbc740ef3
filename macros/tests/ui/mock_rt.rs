//! A stand-in for greenrt's runtime API, for testing the macros without greenrt.
//!
//! This crate cannot depend on greenrt (greenrt depends on it), so the test crates point
//! the macros here with `crate = "crate::mock_rt"`. The mock offers exactly the API the
//! expansion calls, so a change in the expansion that greenrt could not compile fails
//! here too, and it records how the runtime was configured so that the tests can check
//! the settings really reached the builder.
//!
//! Shared by `tests/mock_runtime.rs` and the trybuild cases in `tests/ui/`, through
//! `#[path]`.

// Each test crate uses a different part of the mock.
#![allow(dead_code)]

pub mod runtime {
    use std::cell::Cell;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    /// What the builder was told.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Config {
        pub worker_threads: Option<usize>,
        pub stack_size: Option<usize>,
    }

    thread_local! {
        static CURRENT: Cell<Option<Config>> = const { Cell::new(None) };
    }

    /// The configuration of the runtime whose `run` or `block_on` is executing on this
    /// thread, or `None` when the code is not running inside one.
    pub fn current() -> Option<Config> {
        CURRENT.get()
    }

    #[derive(Default)]
    pub struct Builder {
        config: Config,
    }

    impl Builder {
        pub fn new() -> Self {
            Builder::default()
        }

        pub fn worker_threads(&mut self, count: usize) -> &mut Self {
            self.config.worker_threads = Some(count);
            self
        }

        pub fn stack_size(&mut self, bytes: usize) -> &mut Self {
            self.config.stack_size = Some(bytes);
            self
        }

        pub fn build(&mut self) -> std::io::Result<Runtime> {
            Ok(Runtime {
                config: self.config,
            })
        }
    }

    pub struct Runtime {
        config: Config,
    }

    impl Runtime {
        /// Same bounds as greenrt's: no `Send`, no `'static`.
        pub fn run<F: FnOnce() -> T, T>(&self, f: F) -> T {
            self.enter(f)
        }

        pub fn block_on<F: Future>(&self, future: F) -> F::Output {
            self.enter(|| {
                let mut future = pin!(future);
                let mut cx = Context::from_waker(Waker::noop());
                loop {
                    if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                        return output;
                    }
                    // Nothing ever wakes us: just poll again.
                    std::thread::yield_now();
                }
            })
        }

        /// Runs `f` with `current()` reporting this runtime. Not restored on panic, which
        /// is fine for tests: the panicking test's thread ends with it.
        fn enter<T>(&self, f: impl FnOnce() -> T) -> T {
            let outer = CURRENT.replace(Some(self.config));
            let output = f();
            CURRENT.set(outer);
            output
        }
    }
}
