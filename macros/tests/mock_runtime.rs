//! Runs `#[greenrt::test]` expansions for real, against the mock runtime in
//! `ui/mock_rt.rs`: the trybuild cases can only compile `#[test]` functions, not run them.

#[path = "ui/mock_rt.rs"]
mod mock_rt;

use mock_rt::runtime::{current, Config};

#[greenrt_macros::test(crate = "crate::mock_rt")]
fn body_runs_inside_the_runtime() {
    assert_eq!(current(), Some(Config::default()));
}

#[greenrt_macros::test(crate = "crate::mock_rt", worker_threads = 3, stack_size = 65_536)]
fn settings_reach_the_builder() {
    assert_eq!(
        current(),
        Some(Config {
            worker_threads: Some(3),
            stack_size: Some(65_536),
        })
    );
}

#[greenrt_macros::test(crate = "crate::mock_rt")]
fn question_mark_and_return() -> Result<(), std::num::ParseIntError> {
    let n: u32 = "7".parse()?;
    if n == 7 {
        return Ok(());
    }
    panic!("unreachable: n is 7");
}

#[greenrt_macros::test(crate = "crate::mock_rt")]
#[should_panic(expected = "boom")]
fn panics_reach_the_harness() {
    panic!("boom");
}

#[greenrt_macros::test(crate = "crate::mock_rt", worker_threads = 1)]
async fn async_body_is_driven_by_block_on() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = std::future::ready("42").await.parse()?;
    assert_eq!(n, 42);
    assert_eq!(current().and_then(|config| config.worker_threads), Some(1));
    Ok(())
}

#[greenrt_macros::test(crate = "crate::mock_rt")]
#[should_panic(expected = "async boom")]
async fn async_panics_reach_the_harness() {
    std::future::ready(()).await;
    panic!("async boom");
}

/// `#[greenrt::main]` also works on ordinary functions, arguments and all.
#[greenrt_macros::main(crate = "crate::mock_rt", worker_threads = 2)]
fn add_in_runtime(a: u32, b: String) -> (u32, Option<Config>) {
    (a + b.len() as u32, current())
}

#[test]
fn main_on_a_helper_function() {
    let (sum, config) = add_in_runtime(1, String::from("four"));
    assert_eq!(sum, 5);
    assert_eq!(config.and_then(|config| config.worker_threads), Some(2));
    // The runtime only exists while the function runs.
    assert_eq!(current(), None);
}
