//! `#[greenrt::test]` keeps `#[should_panic]` and works on sync and async functions.
//!
//! trybuild builds this as a plain binary, where rustc drops `#[test]` functions before
//! type checking, so this only proves the expansion is well-formed; `tests/mock_runtime.rs`
//! runs the same shapes as real tests.

#[path = "../mock_rt.rs"]
mod mock_rt;

#[greenrt_macros::test(crate = "crate::mock_rt")]
#[should_panic(expected = "boom")]
fn panics() {
    panic!("boom");
}

#[greenrt_macros::test(crate = "crate::mock_rt", worker_threads = 1)]
#[should_panic]
async fn panics_in_async() {
    std::future::ready(()).await;
    panic!("boom");
}

fn main() {}
