//! Green threads and async code calling each other on the same workers.
//!
//! ```text
//! cargo run --release --example bridge
//! ```

use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, StreamExt};
use std::time::Duration;

#[greenrt::main(worker_threads = 2)]
async fn main() {
    // Async code awaits a green thread's JoinHandle.
    let green = greenrt::spawn(|| {
        greenrt::sleep(Duration::from_millis(10)); // blocking style, suspends only itself
        "computed in a green thread"
    });
    println!("async got: {}", green.await.unwrap());

    // A green thread waits on a future that a future task completes.
    let (tx, rx) = oneshot::channel::<u32>();
    let waiter = greenrt::spawn(move || greenrt::block_on(rx).unwrap() + 1);
    greenrt::spawn_async(async move {
        greenrt::time::sleep(Duration::from_millis(5)).await;
        tx.send(41).unwrap();
    });
    println!("green thread got: {}", waiter.await.unwrap());

    // A pipeline: an async producer feeds a green consumer through a channel.
    let (mut sender, mut receiver) = mpsc::channel::<u64>(16);
    let consumer = greenrt::spawn(move || {
        let mut total = 0;
        while let Some(value) = greenrt::block_on(receiver.next()) {
            total += value;
        }
        total
    });
    for value in 1..=100 {
        sender.send(value).await.unwrap();
    }
    drop(sender);
    println!("green consumer summed: {}", consumer.await.unwrap());
}
