//! Type errors in the body point at the user's code, not at the attribute.

#[path = "../mock_rt.rs"]
mod mock_rt;

#[greenrt_macros::main(crate = "crate::mock_rt")]
fn sync_helper() -> u32 {
    "not a number"
}

#[greenrt_macros::main(crate = "crate::mock_rt")]
async fn async_helper() -> Result<(), std::num::ParseIntError> {
    let n: u32 = "4".parse()?;
    n
}

#[greenrt_macros::main(crate = "crate::mock_rt")]
async fn main() {
    5
}
