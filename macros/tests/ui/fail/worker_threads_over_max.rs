#[greenrt_macros::main(worker_threads = 5000)]
fn main() {}
