#[greenrt_macros::main(worker_threads = 1)]
const fn answer() -> u32 {
    42
}

fn main() {
    let _ = answer();
}
