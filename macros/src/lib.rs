//! Attribute macros for [greenrt]: `#[greenrt::main]` and `#[greenrt::test]`.
//!
//! This crate owns only the code generation. Both macros rewrite a function so its body
//! runs inside a freshly built greenrt runtime; the runtime itself lives in the `greenrt`
//! crate, which re-exports these macros as `greenrt::main` and `greenrt::test`. Depend on
//! `greenrt`, not on this crate.
//!
//! # What the expansion looks like
//!
//! ```ignore
//! #[greenrt::main(worker_threads = 4)]
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let config = std::fs::read_to_string("app.toml")?;
//!     serve(config)
//! }
//! ```
//!
//! becomes, in essence:
//!
//! ```ignore
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let __greenrt_rt = ::greenrt::runtime::Builder::new()
//!         .worker_threads(4)
//!         .build()
//!         .expect("greenrt: failed to build the runtime");
//!     __greenrt_rt.run(move || -> Result<(), Box<dyn std::error::Error>> {
//!         let config = std::fs::read_to_string("app.toml")?;
//!         serve(config)
//!     })
//! }
//! ```
//!
//! The body becomes a closure with the function's declared return type, so `return` and
//! `?` keep meaning what they meant in the original function. An `async fn` loses its
//! `async` and its body is driven by `Runtime::block_on` instead of `Runtime::run`. The
//! runtime variable is hygienic: the body cannot name it by accident.
//!
//! # Settings
//!
//! Both macros accept the same comma-separated settings, each at most once:
//!
//! | setting              | meaning                                                     |
//! |----------------------|-------------------------------------------------------------|
//! | `worker_threads = N` | integer literal, 1 to 1024: `Builder::worker_threads(N)`   |
//! | `stack_size = N`     | integer literal in bytes: `Builder::stack_size(N)`; the runtime checks the range |
//! | `crate = "path"`     | where to find greenrt, for re-exports; default `::greenrt`  |
//!
//! A setting that is left out is not passed to the builder, so the runtime's own default
//! applies (for the worker count: the environment variable `GREENRT_WORKER_THREADS` when
//! it is set, else one worker per CPU).
//!
//! # Errors
//!
//! Misuse is reported with `compile_error!` pointing at the offending tokens, and every
//! message starts with the attribute's name. Alongside the error the macro emits the
//! function exactly as written, so that one mistake in the attribute does not turn into
//! a second wave of "cannot find function" errors and IDEs still see the function.
//!
//! [greenrt]: https://docs.rs/greenrt

mod expand;

use proc_macro::TokenStream;

/// Runs the function's body on a greenrt runtime built for the occasion.
///
/// Meant for `fn main`, but works on any function, whose arguments are moved into the
/// body. The runtime is built on every call and dropped when the function returns, so
/// such a function must not be called from code that already runs on greenrt: the
/// runtime refuses to be entered from inside another one. See the [crate docs](crate) for
/// the expansion and the settings.
///
/// Examples are `ignore`d here because this crate cannot depend on greenrt: they are
/// tested in greenrt, through the re-export. This crate's own tests run the same shapes
/// against a mock of the runtime API.
///
/// ```ignore
/// use std::error::Error;
///
/// #[greenrt::main(worker_threads = 2)]
/// fn main() -> Result<(), Box<dyn Error>> {
///     let port: u16 = std::env::var("PORT")?.parse()?;
///     if port == 0 {
///         return Err("PORT must not be 0".into());
///     }
///     println!("would listen on {port}");
///     Ok(())
/// }
/// ```
///
/// An `async fn` has its body driven to completion with `Runtime::block_on`:
///
/// ```ignore
/// #[greenrt::main(stack_size = 262_144)]
/// async fn main() {
///     let answer = std::future::ready(21).await * 2;
///     assert_eq!(answer, 42);
/// }
/// ```
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(expand::Attr::Main, args.into(), item.into()).into()
}

/// Turns the function into a `#[test]` whose body runs on its own greenrt runtime.
///
/// Each test builds a fresh runtime, so tests do not share green threads. Other attributes
/// such as `#[should_panic]` or `#[ignore]` are kept; the function must not take
/// arguments, like any `#[test]`. The settings are the same as for [`macro@main`].
///
/// Examples are `ignore`d here because this crate cannot depend on greenrt: they are
/// tested in greenrt, through the re-export. This crate's own tests run the same shapes
/// against a mock of the runtime API.
///
/// ```ignore
/// #[greenrt::test(worker_threads = 1)]
/// fn parses_the_answer() -> Result<(), std::num::ParseIntError> {
///     assert_eq!("42".parse::<u32>()?, 42);
///     Ok(())
/// }
///
/// #[greenrt::test]
/// #[should_panic(expected = "boom")]
/// async fn panics_reach_the_harness() {
///     std::future::ready(()).await;
///     panic!("boom");
/// }
/// ```
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(expand::Attr::Test, args.into(), item.into()).into()
}
