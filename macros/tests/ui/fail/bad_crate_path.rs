#[greenrt_macros::main(crate = greenrt)]
fn main() {}

#[greenrt_macros::test(crate = "not a path")]
fn a_test() {}
