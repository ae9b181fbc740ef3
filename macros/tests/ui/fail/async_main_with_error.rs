//! On a mistake the function is emitted exactly as written, so an `async fn main` stays
//! async and rustc adds its own E0752 to ours. Kept as a snapshot so that this trade-off
//! (untouched function for IDEs versus one extra error) stays visible.

#[greenrt_macros::main(worker_threads = 0)]
async fn main() {}
