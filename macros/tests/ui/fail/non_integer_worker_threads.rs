#[greenrt_macros::main(worker_threads = "4")]
fn main() {}

#[greenrt_macros::main(worker_threads = 2.5)]
fn helper() {}

#[greenrt_macros::test(worker_threads = four)]
fn a_test() {}
