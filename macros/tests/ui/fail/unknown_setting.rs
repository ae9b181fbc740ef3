#[greenrt_macros::main(workers = 4)]
fn main() {}
