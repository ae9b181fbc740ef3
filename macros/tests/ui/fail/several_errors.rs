#[greenrt_macros::main(workers = 1, worker_threads = 0, worker_threads = 2)]
fn main(args: Vec<String>) {
    let _ = args;
}
