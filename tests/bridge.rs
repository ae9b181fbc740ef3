//! The bridge between green and async code: green threads `block_on` futures completed
//! by green threads, future tasks and foreign OS threads; async code awaits green
//! `JoinHandle`s; green threads and tasks interleave on one worker; `greenrt::block_on`
//! works on a plain thread.

mod common;
use common::{runtime, with_watchdog};
use futures::channel::{mpsc as fmpsc, oneshot};
use futures::{SinkExt, StreamExt};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn green_block_on_futures_completed_by_other_green_threads() {
    with_watchdog("green/green", Duration::from_secs(30), || {
        let rt = runtime(2);
        rt.run(|| {
            // oneshot: the receiver blocks first, the sender runs later.
            let (tx, rx) = oneshot::channel();
            let sender = greenrt::spawn(move || {
                greenrt::yield_now();
                tx.send(41).unwrap();
            });
            assert_eq!(greenrt::block_on(rx).unwrap(), 41);
            sender.join().unwrap();

            // mpsc: a stream of values from a producer green thread, consumed by
            // another green thread that blocks on each `next()`.
            let (mut tx, mut rx) = fmpsc::channel::<u32>(4);
            let producer = greenrt::spawn(move || {
                for i in 0..500 {
                    greenrt::block_on(tx.send(i)).unwrap();
                }
            });
            let consumer = greenrt::spawn(move || {
                let mut sum = 0u32;
                while let Some(i) = greenrt::block_on(rx.next()) {
                    sum += i;
                }
                sum
            });
            producer.join().unwrap();
            assert_eq!(consumer.join().unwrap(), 499 * 500 / 2);
        });
    });
}

#[test]
fn green_block_on_futures_completed_by_future_tasks() {
    with_watchdog("green/task", Duration::from_secs(30), || {
        let rt = runtime(2);
        rt.run(|| {
            let (tx, rx) = oneshot::channel();
            let task = greenrt::spawn_async(async move {
                greenrt::time::sleep(Duration::from_millis(2)).await;
                tx.send("from a task").unwrap();
            });
            assert_eq!(greenrt::block_on(rx).unwrap(), "from a task");
            greenrt::block_on(task).unwrap();

            let (mut tx, mut rx) = fmpsc::channel::<u32>(1);
            let producer = greenrt::spawn_async(async move {
                for i in 0..500 {
                    tx.send(i).await.unwrap();
                }
            });
            let consumer = greenrt::spawn(move || {
                let mut count = 0;
                while let Some(i) = greenrt::block_on(rx.next()) {
                    assert_eq!(i, count);
                    count += 1;
                }
                count
            });
            assert_eq!(consumer.join().unwrap(), 500);
            // A green thread joins a task with join(), too.
            producer.join().unwrap();
        });
    });
}

#[test]
fn green_block_on_futures_completed_by_foreign_threads() {
    with_watchdog("green/foreign", Duration::from_secs(30), || {
        let rt = runtime(2);
        let (senders_tx, senders_rx) = mpsc::channel::<oneshot::Sender<usize>>();
        // A plain OS thread, no runtime: it completes each oneshot it is handed.
        let foreign = std::thread::spawn(move || {
            for (i, tx) in senders_rx.into_iter().enumerate() {
                tx.send(i).unwrap();
            }
        });
        let greens: Vec<_> = (0..50)
            .map(|_| {
                let senders_tx = senders_tx.clone();
                rt.spawn(move || {
                    let mut seen = Vec::new();
                    for _ in 0..20 {
                        let (tx, rx) = oneshot::channel();
                        senders_tx.send(tx).unwrap();
                        seen.push(greenrt::block_on(rx).unwrap());
                    }
                    seen
                })
            })
            .collect();
        drop(senders_tx);
        let mut all: Vec<usize> = greens.into_iter().flat_map(|h| h.join().unwrap()).collect();
        foreign.join().unwrap();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());

        // And a foreign thread that feeds an mpsc stream.
        let (mut tx, mut rx) = fmpsc::unbounded::<u32>();
        let feeder = std::thread::spawn(move || {
            for i in 0..300 {
                tx.start_send(i).unwrap();
                if i % 50 == 0 {
                    std::thread::yield_now();
                }
            }
        });
        let sum = rt
            .spawn(move || {
                let mut sum = 0;
                while let Some(i) = greenrt::block_on(rx.next()) {
                    sum += i;
                }
                sum
            })
            .join()
            .unwrap();
        feeder.join().unwrap();
        assert_eq!(sum, 299 * 300 / 2);
    });
}

#[test]
fn async_code_awaits_green_join_handles() {
    with_watchdog("async/green", Duration::from_secs(30), || {
        let rt = runtime(2);
        // From Runtime::block_on.
        let out = rt.block_on(async {
            let quick = greenrt::spawn(|| 20);
            let slow = greenrt::spawn(|| {
                greenrt::sleep(Duration::from_millis(5));
                greenrt::yield_now();
                22
            });
            quick.await.unwrap() + slow.await.unwrap()
        });
        assert_eq!(out, 42);

        // From future tasks: each awaits green threads that block on things.
        let tasks: Vec<_> = (0..20u64)
            .map(|i| {
                rt.spawn_async(async move {
                    let (tx, rx) = oneshot::channel();
                    let green = greenrt::spawn(move || greenrt::block_on(rx).unwrap() * 2);
                    let feeder = greenrt::spawn(move || {
                        greenrt::yield_now();
                        tx.send(i).unwrap();
                    });
                    feeder.await.unwrap();
                    green.await.unwrap()
                })
            })
            .collect();
        let total: u64 = rt.block_on(async {
            let mut total = 0;
            for t in tasks {
                total += t.await.unwrap();
            }
            total
        });
        assert_eq!(total, 2 * (19 * 20 / 2));
    });
}

#[test]
fn green_thread_and_task_ping_pong_on_one_worker() {
    const ROUNDS: u64 = 1000;
    with_watchdog("ping-pong", Duration::from_secs(30), || {
        // One worker: the green thread and the task must take turns on it, each
        // suspending (not blocking the worker) while it waits for the other.
        let rt = runtime(1);
        let (mut ping_tx, mut ping_rx) = fmpsc::channel::<u64>(0);
        let (mut pong_tx, mut pong_rx) = fmpsc::channel::<u64>(0);
        let task = rt.spawn_async(async move {
            let mut thread = None;
            while let Some(n) = ping_rx.next().await {
                let here = std::thread::current().id();
                assert_eq!(*thread.get_or_insert(here), here);
                pong_tx.send(n + 1).await.unwrap();
            }
            thread
        });
        let green = rt.spawn(move || {
            let mut n = 0;
            for _ in 0..ROUNDS {
                greenrt::block_on(ping_tx.send(n)).unwrap();
                n = greenrt::block_on(pong_rx.next()).unwrap();
            }
            (n, std::thread::current().id())
        });
        let (n, green_thread) = green.join().unwrap();
        assert_eq!(n, ROUNDS, "every ping got its pong");
        let task_thread = task.join().unwrap();
        assert_eq!(
            task_thread,
            Some(green_thread),
            "both ran on the one worker thread"
        );
    });
}

#[test]
fn green_thread_and_task_ping_pong_across_workers() {
    const ROUNDS: u64 = 1000;
    with_watchdog("ping-pong on 2 workers", Duration::from_secs(30), || {
        let rt = runtime(2);
        let (mut ping_tx, mut ping_rx) = fmpsc::channel::<u64>(0);
        let (mut pong_tx, mut pong_rx) = fmpsc::channel::<u64>(0);
        let task = rt.spawn_async(async move {
            while let Some(n) = ping_rx.next().await {
                pong_tx.send(n + 1).await.unwrap();
            }
        });
        let n = rt
            .spawn(move || {
                let mut n = 0;
                for _ in 0..ROUNDS {
                    greenrt::block_on(ping_tx.send(n)).unwrap();
                    n = greenrt::block_on(pong_rx.next()).unwrap();
                }
                n
            })
            .join()
            .unwrap();
        assert_eq!(n, ROUNDS);
        task.join().unwrap();
    });
}

#[test]
fn block_on_works_on_a_plain_thread_without_runtime() {
    with_watchdog("plain block_on", Duration::from_secs(30), || {
        // A ready future.
        assert_eq!(greenrt::block_on(async { 6 * 7 }), 42);
        // A future woken later by another plain thread: the caller parks meanwhile.
        let (tx, rx) = oneshot::channel();
        let other = std::thread::spawn(move || {
            std::thread::yield_now();
            tx.send("woken").unwrap();
        });
        assert_eq!(greenrt::block_on(rx).unwrap(), "woken");
        other.join().unwrap();
        // Nested async that awaits several things.
        let (tx1, rx1) = oneshot::channel::<u8>();
        let (tx2, rx2) = oneshot::channel::<u8>();
        let other = std::thread::spawn(move || {
            tx2.send(2).unwrap();
            tx1.send(1).unwrap();
        });
        let sum = greenrt::block_on(async move { rx1.await.unwrap() + rx2.await.unwrap() });
        assert_eq!(sum, 3);
        other.join().unwrap();
    });
}
