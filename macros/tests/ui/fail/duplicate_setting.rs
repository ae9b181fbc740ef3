#[greenrt_macros::main(worker_threads = 2, stack_size = 65536, worker_threads = 4)]
fn main() {}
