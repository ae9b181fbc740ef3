#[greenrt_macros::main]
pub struct Config {
    workers: usize,
}

fn main() {}
