//! An `async fn main` returning `Result<(), Box<dyn Error>>`: the body's future is driven
//! by `block_on`, and `?` still converts into the function's error type.

use std::error::Error;

#[path = "../mock_rt.rs"]
mod mock_rt;

async fn parse(text: &str) -> Result<u32, std::num::ParseIntError> {
    text.parse()
}

#[greenrt_macros::main(crate = "crate::mock_rt", worker_threads = 1)]
async fn main() -> Result<(), Box<dyn Error>> {
    let config = mock_rt::runtime::current().ok_or("not inside the runtime")?;
    assert_eq!(config.worker_threads, Some(1));

    let n = parse("42").await?;
    if n == 42 {
        return Ok(());
    }
    Err("unreachable".into())
}
