//! Results nobody takes: a green thread's result lives in the same allocation as its
//! control block, which its wakers may keep alive anywhere; the result itself is dropped
//! as soon as nobody can take it (by the publish after the handle was dropped, or by
//! the handle's drop after the publish), not when the last waker goes.

mod common;
use common::{runtime, with_watchdog};
use futures::channel::oneshot;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Poll, Waker};
use std::time::Duration;

/// Sets its flag when dropped.
struct Flag(Arc<AtomicBool>);

impl Drop for Flag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The calling green thread's (or task's) own waker.
async fn own_waker() -> Waker {
    std::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await
}

fn wait_for(flag: &AtomicBool) {
    let start = std::time::Instant::now();
    while !flag.load(Ordering::SeqCst) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the result was never dropped"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_detached_result_is_dropped_when_published_while_a_waker_lives() {
    with_watchdog("detached result", Duration::from_secs(20), || {
        let rt = runtime(2);
        let dropped = Arc::new(AtomicBool::new(false));
        let (waker_tx, waker_rx) = mpsc::channel();
        let (go_tx, go_rx) = oneshot::channel::<()>();
        let flag = dropped.clone();
        let handle = rt.spawn(move || {
            waker_tx.send(greenrt::block_on(own_waker())).unwrap();
            greenrt::block_on(go_rx).unwrap();
            Flag(flag)
        });
        let waker = waker_rx.recv().unwrap();
        drop(handle);
        go_tx.send(()).unwrap();
        wait_for(&dropped);
        drop(waker);
    });
}

#[test]
fn a_finished_result_is_dropped_with_its_handle_while_a_waker_lives() {
    with_watchdog("finished result", Duration::from_secs(20), || {
        let rt = runtime(2);
        let dropped = Arc::new(AtomicBool::new(false));
        let (waker_tx, waker_rx) = mpsc::channel();
        let flag = dropped.clone();
        let handle = rt.spawn(move || {
            waker_tx.send(greenrt::block_on(own_waker())).unwrap();
            Flag(flag)
        });
        let waker = waker_rx.recv().unwrap();
        while !handle.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            !dropped.load(Ordering::SeqCst),
            "dropped before anyone could take it"
        );
        drop(handle);
        assert!(
            dropped.load(Ordering::SeqCst),
            "the handle's drop drops the result"
        );
        drop(waker);
    });
}

#[test]
fn a_detached_future_task_output_is_dropped_when_published() {
    with_watchdog("detached task output", Duration::from_secs(20), || {
        let rt = runtime(2);
        let dropped = Arc::new(AtomicBool::new(false));
        let (go_tx, go_rx) = oneshot::channel::<()>();
        let flag = dropped.clone();
        let handle = rt.spawn_async(async move {
            go_rx.await.unwrap();
            Flag(flag)
        });
        drop(handle);
        go_tx.send(()).unwrap();
        wait_for(&dropped);
    });
}
