//! A sync `main` returning `Result<(), Box<dyn Error>>`: `?` converts into the boxed error
//! and `return` leaves `main`, because the body runs in a closure with the same return type.
//! Also finds the runtime through a re-export, as a crate wrapping greenrt would.

use std::error::Error;

#[path = "../mock_rt.rs"]
mod mock_rt;

mod reexport {
    pub(crate) use crate::mock_rt as greenrt;
}

#[greenrt_macros::main(
    worker_threads = 2,
    stack_size = 1_048_576,
    crate = "crate::reexport::greenrt"
)]
fn main() -> Result<(), Box<dyn Error>> {
    let config = mock_rt::runtime::current().ok_or("not inside the runtime")?;
    assert_eq!(config.worker_threads, Some(2));
    assert_eq!(config.stack_size, Some(1_048_576));

    let n: u32 = "42".parse()?;
    if n == 42 {
        return Ok(());
    }
    Err("unreachable".into())
}
