//! The body cannot reach the macro's runtime variable.

#[path = "../mock_rt.rs"]
mod mock_rt;

#[greenrt_macros::main(crate = "crate::mock_rt")]
fn main() {
    __greenrt_rt.run(|| ());
}
