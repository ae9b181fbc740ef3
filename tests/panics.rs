//! Panics: payloads reach `join()` and `.await`, the runtime carries on, and a
//! destructor that blocks while its green thread unwinds neither switches nor leaks the
//! panic state to the other green threads of its worker.
//!
//! (The warning that blocking while unwinding emits is checked in tests/tracing.rs.)

mod common;
use common::{runtime, with_watchdog};
use futures::channel::oneshot;
use std::any::Any;
use std::future::Future;
use std::panic::panic_any;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};
use std::time::Duration;

fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<not a string>".to_string()
    }
}

/// A payload type of our own, to check it arrives as is (not stringified).
#[derive(Debug, PartialEq)]
struct Payload(u32);

#[test]
fn green_panic_payload_comes_back_from_join() {
    let rt = runtime(2);
    rt.run(|| {
        let err = greenrt::spawn(|| -> u32 { panic!("boom {}", 7) })
            .join()
            .unwrap_err();
        assert_eq!(message(&*err), "boom 7");

        let err = greenrt::spawn(|| {
            greenrt::yield_now(); // panic after a suspension, too
            panic_any(Payload(42))
        })
        .join()
        .unwrap_err();
        assert_eq!(err.downcast_ref::<Payload>(), Some(&Payload(42)));
    });
    // Joined from a plain thread.
    let err = rt.spawn(|| panic!("plain")).join().unwrap_err();
    assert_eq!(message(&*err), "plain");
}

#[test]
fn green_panic_payload_comes_back_from_await() {
    let rt = runtime(2);
    let (a, b) = rt.block_on(async {
        let a = greenrt::spawn(|| -> () { panic!("awaited boom") }).await;
        let b = greenrt::spawn(|| {
            greenrt::sleep(Duration::from_millis(1));
            panic_any(Payload(5))
        })
        .await;
        (a, b)
    });
    assert_eq!(message(&*a.unwrap_err()), "awaited boom");
    assert_eq!(b.unwrap_err().downcast_ref::<Payload>(), Some(&Payload(5)));
}

#[test]
fn runtime_keeps_running_after_panics() {
    // One worker: the very worker that caught the panics must carry on.
    let rt = runtime(1);
    rt.run(|| {
        let panicked: Vec<_> = (0..20)
            .map(|i| {
                greenrt::spawn(move || {
                    if i % 2 == 0 {
                        greenrt::yield_now();
                    }
                    panic!("panic {i}")
                })
            })
            .collect();
        for (i, h) in panicked.into_iter().enumerate() {
            assert_eq!(message(&*h.join().unwrap_err()), format!("panic {i}"));
        }
        let fine: Vec<_> = (0..100)
            .map(|i| {
                greenrt::spawn(move || {
                    greenrt::yield_now();
                    greenrt::sleep(Duration::from_millis(1));
                    assert!(!std::thread::panicking());
                    i
                })
            })
            .collect();
        let sum: i32 = fine.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum, 99 * 100 / 2);
        let task = greenrt::spawn_async(async { 5 });
        assert_eq!(greenrt::block_on(task).unwrap(), 5);
    });
}

/// Pending once after waking itself.
struct YieldOnce(bool);
impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

async fn fail(msg: &'static str) {
    panic!("{msg}")
}

#[test]
fn future_task_panic_payload_comes_back() {
    let rt = runtime(1);
    let awaited = rt.block_on(async {
        greenrt::spawn_async(async {
            YieldOnce(false).await;
            panic_any(Payload(9))
        })
        .await
    });
    assert_eq!(
        awaited.unwrap_err().downcast_ref::<Payload>(),
        Some(&Payload(9))
    );
    // join() from a green thread and from a plain thread.
    let joined = rt.run(|| greenrt::spawn_async(fail("task boom")).join().unwrap_err());
    assert_eq!(message(&*joined), "task boom");
    let joined = rt.spawn_async(fail("task boom 2")).join().unwrap_err();
    assert_eq!(message(&*joined), "task boom 2");
    // And the runtime still runs tasks and green threads.
    assert_eq!(rt.spawn_async(async { 1 }).join().unwrap(), 1);
    assert_eq!(rt.spawn(|| 2).join().unwrap(), 2);
}

/// A destructor that makes every green-blocking call. Run while its green thread
/// unwinds, each call must block the worker thread (not switch) and return.
struct BlockingDrop {
    foreign: mpsc::Sender<oneshot::Sender<u8>>,
    saw_panicking: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
}

impl Drop for BlockingDrop {
    fn drop(&mut self) {
        self.saw_panicking
            .store(std::thread::panicking(), Ordering::SeqCst);
        greenrt::sleep(Duration::from_millis(3));
        greenrt::yield_now();
        // A future only a foreign OS thread completes: no green thread needs to run.
        let (tx, rx) = oneshot::channel();
        self.foreign.send(tx).unwrap();
        let from_foreign = greenrt::block_on(rx).unwrap();
        greenrt::block_on(greenrt::time::sleep(Duration::from_millis(2)));
        greenrt::yield_now();
        self.finished.store(from_foreign == 9, Ordering::SeqCst);
    }
}

/// A plain thread that answers every oneshot it is sent with 9.
fn foreign_answerer() -> (
    mpsc::Sender<oneshot::Sender<u8>>,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel::<oneshot::Sender<u8>>();
    let thread = std::thread::spawn(move || {
        for reply in rx {
            let _ = reply.send(9);
        }
    });
    (tx, thread)
}

#[test]
fn destructor_blocking_while_unwinding_completes() {
    with_watchdog(
        "a blocking destructor during unwinding",
        Duration::from_secs(30),
        || {
            let rt = runtime(1);
            let (foreign, answerer) = foreign_answerer();
            let saw_panicking = Arc::new(AtomicBool::new(false));
            let finished = Arc::new(AtomicBool::new(false));
            let guard = BlockingDrop {
                foreign: foreign.clone(),
                saw_panicking: saw_panicking.clone(),
                finished: finished.clone(),
            };
            let err = rt
                .spawn(move || {
                    let _guard = guard;
                    greenrt::yield_now();
                    panic!("unwinding through a blocking destructor");
                })
                .join()
                .unwrap_err();
            assert_eq!(message(&*err), "unwinding through a blocking destructor");
            assert!(
                saw_panicking.load(Ordering::SeqCst),
                "the destructor ran during the unwind"
            );
            assert!(
                finished.load(Ordering::SeqCst),
                "every blocking call in the destructor returned"
            );
            // The worker is fine afterwards.
            assert_eq!(rt.spawn(|| 3).join().unwrap(), 3);
            drop(foreign);
            answerer.join().unwrap();
        },
    );
}

/// Polls forever (until stopped), checking `panicking()` at every poll.
struct PanickingWatcher {
    stop: Arc<AtomicBool>,
    saw: Arc<AtomicBool>,
    polls: Arc<AtomicUsize>,
}

impl Future for PanickingWatcher {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if std::thread::panicking() {
            self.saw.store(true, Ordering::SeqCst);
        }
        self.polls.fetch_add(1, Ordering::SeqCst);
        if self.stop.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[test]
fn other_green_threads_never_see_panicking_while_one_unwinds() {
    with_watchdog("panicking() isolation", Duration::from_secs(30), || {
        // One worker: every green thread and task shares the OS thread whose panic
        // count the unwinding green thread raises.
        let rt = runtime(1);
        let (foreign, answerer) = foreign_answerer();
        let stop = Arc::new(AtomicBool::new(false));
        let saw = Arc::new(AtomicBool::new(false));
        let (started_tx, started_rx) = mpsc::channel();
        let observers: Vec<_> = (0..4)
            .map(|_| {
                let stop = stop.clone();
                let saw = saw.clone();
                let started_tx = started_tx.clone();
                rt.spawn(move || {
                    started_tx.send(()).unwrap();
                    let mut turns = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        if std::thread::panicking() {
                            saw.store(true, Ordering::SeqCst);
                        }
                        turns += 1;
                        greenrt::yield_now();
                    }
                    turns
                })
            })
            .collect();
        let task_polls = Arc::new(AtomicUsize::new(0));
        let task = rt.spawn_async(PanickingWatcher {
            stop: stop.clone(),
            saw: saw.clone(),
            polls: task_polls.clone(),
        });
        // All observers run (and are runnable) before anything panics.
        for _ in 0..4 {
            started_rx.recv().unwrap();
        }

        // Several panickers in a row, each blocking repeatedly in a destructor; if any
        // of those calls switched, the observers would run on this worker with its panic
        // count raised.
        let mut finished_all = Vec::new();
        for round in 0..5 {
            let saw_panicking = Arc::new(AtomicBool::new(false));
            let finished = Arc::new(AtomicBool::new(false));
            let guard = BlockingDrop {
                foreign: foreign.clone(),
                saw_panicking: saw_panicking.clone(),
                finished: finished.clone(),
            };
            let err = rt
                .spawn(move || {
                    let _guard = guard;
                    greenrt::yield_now();
                    panic!("round {round}");
                })
                .join()
                .unwrap_err();
            assert_eq!(message(&*err), format!("round {round}"));
            assert!(saw_panicking.load(Ordering::SeqCst));
            finished_all.push(finished.load(Ordering::SeqCst));
        }
        stop.store(true, Ordering::SeqCst);
        let turns: Vec<u64> = observers.into_iter().map(|h| h.join().unwrap()).collect();
        task.join().unwrap();
        drop(foreign);
        answerer.join().unwrap();

        assert!(finished_all.iter().all(|&f| f), "destructors completed");
        assert!(turns.iter().all(|&t| t > 0), "observers ran: {turns:?}");
        assert!(
            task_polls.load(Ordering::SeqCst) > 0,
            "the task observer ran"
        );
        assert!(
            !saw.load(Ordering::SeqCst),
            "another green thread or task saw std::thread::panicking() == true"
        );
    });
}

/// A user waker that panics when woken.
struct PanickingWaker(Arc<AtomicUsize>);

impl std::task::Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("a user waker panicked (expected by this test)");
    }
}

/// The worker fires wakers it did not make (a timer's, a JoinHandle waiter's): one
/// that panics must neither kill the worker nor strand what is homed on it.
#[test]
// The task hands its polled-once sleep back on purpose, not to be awaited.
#[allow(clippy::async_yields_async)]
fn a_panicking_waker_fired_by_a_worker_does_not_kill_it() {
    with_watchdog(
        "runtime after a panicking waker",
        Duration::from_secs(30),
        || {
            let rt = runtime(1);
            let woken = Arc::new(AtomicUsize::new(0));

            // A timer registered by the only worker, with a waker that panics when it fires.
            let waker = std::task::Waker::from(Arc::new(PanickingWaker(woken.clone())));
            let sleep = rt
                .spawn_async(async move {
                    let mut sleep = Box::pin(greenrt::time::sleep(Duration::from_millis(10)));
                    let pending = sleep.as_mut().poll(&mut Context::from_waker(&waker));
                    assert!(pending.is_pending());
                    sleep // kept alive, so its timer fires on the worker
                })
                .join()
                .unwrap();

            // A JoinHandle awaited with a waker that panics when the green thread finishes.
            let (go, wait) = oneshot::channel::<()>();
            let mut handle = rt.spawn(move || greenrt::block_on(wait).unwrap());
            let waker = std::task::Waker::from(Arc::new(PanickingWaker(woken.clone())));
            assert!(Pin::new(&mut handle)
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
            go.send(()).unwrap();

            // Both fired (and panicked) on the worker; it still runs what it is given.
            while woken.load(Ordering::SeqCst) < 2 {
                assert_eq!(rt.spawn(|| 5).join().unwrap(), 5);
            }
            assert_eq!(rt.spawn(|| 6).join().unwrap(), 6);
            drop(sleep);
        },
    );
}

/// The smallest stack the builders accept (16 KiB, mapped as such) still reports a
/// panic through `join()`, with and without a backtrace: the panic hook, which needs
/// more stack than that to print a backtrace, runs on the worker's hook stack, and the
/// backtrace it prints still walks back into the green thread's frames.
fn smallest_stack_panics(test: &str, backtrace: &str) {
    let output = common::in_child_with(
        test,
        backtrace,
        |command| {
            command.env("RUST_BACKTRACE", backtrace);
        },
        || {
            let rt = runtime(1);
            rt.run(|| {
                let payload = greenrt::Builder::new()
                    .stack_size(16 * 1024)
                    .spawn(|| panic!("boom on the smallest stack"))
                    .unwrap()
                    .join()
                    .unwrap_err();
                assert_eq!(message(&*payload), "boom on the smallest stack");
            });
        },
    );
    assert!(
        common::child_finished(&output),
        "{}",
        common::describe_child(&output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("boom on the smallest stack"), "{stderr}");
    if backtrace == "full" {
        // The frames of the panicking closure and of greenrt's green entry, found
        // by walking from the hook stack back onto the green stack.
        assert!(
            stderr.contains("smallest_stack_panics") && stderr.contains("green_main"),
            "{stderr}"
        );
    }
}

#[test]
fn the_smallest_stack_survives_a_panic_without_a_backtrace() {
    smallest_stack_panics(
        "the_smallest_stack_survives_a_panic_without_a_backtrace",
        "0",
    );
}

#[test]
fn the_smallest_stack_survives_a_panic_with_a_full_backtrace() {
    smallest_stack_panics(
        "the_smallest_stack_survives_a_panic_with_a_full_backtrace",
        "full",
    );
}

// The panic hook stack (src/panic_hook.rs).

static CAPTURED: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

#[inline(never)]
fn review_marker_fn(n: u32) -> u32 {
    if n == 0 {
        panic!("marker panic");
    }
    review_marker_fn(n - 1) + std::hint::black_box(1)
}

/// A hook set before the first runtime runs on the hook stack for a green thread's panic
/// (16 KiB stack, a child run inline by its joiner): the backtrace it captures walks from
/// the hook stack back through the green frames and ends at the green entry.
#[test]
fn a_hooks_backtrace_walks_from_the_hook_stack_to_the_green_entry() {
    let out = common::in_child(
        "a_hooks_backtrace_walks_from_the_hook_stack_to_the_green_entry",
        "1",
        || {
            std::panic::set_hook(Box::new(|_| {
                let bt = std::backtrace::Backtrace::force_capture();
                *CAPTURED.lock().unwrap() = format!("{bt}");
            }));
            let rt = runtime(1);
            rt.run(|| {
                let r = greenrt::Builder::new()
                    .stack_size(16 * 1024)
                    .spawn(|| review_marker_fn(3))
                    .unwrap()
                    .join();
                assert!(r.is_err());
            });
            println!("BT-BEGIN\n{}\nBT-END", CAPTURED.lock().unwrap());
        },
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        common::child_finished(&out),
        "{}",
        common::describe_child(&out)
    );
    let frames: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .collect();
    eprintln!("{}", frames.join("\n"));
    let pos = |needle: &str| frames.iter().position(|f| f.contains(needle));
    let hook = pos("call_on_stack").expect("call_on_stack frame");
    let marker = pos("review_marker_fn").expect("marker frame");
    let entry = frames
        .iter()
        .rposition(|f| f.contains("green_main"))
        .expect("green_main");
    assert!(hook < marker && marker < entry, "{stdout}");
    assert_eq!(
        frames.len(),
        entry + 2,
        "frames after the green entry:\n{stdout}"
    );
    assert!(frames[entry + 1].contains("trampoline"), "{stdout}");
}

/// A hook that overflows the hook stack is reported as such, naming the green thread
/// (it used to die of a plain SIGSEGV with no word).
#[test]
fn a_hook_that_overflows_the_hook_stack_is_reported() {
    let out = common::in_child(
        "a_hook_that_overflows_the_hook_stack_is_reported",
        "1",
        || {
            std::panic::set_hook(Box::new(|_| {
                common::recurse(0);
            }));
            let rt = runtime(1);
            rt.run(|| {
                let _ = greenrt::Builder::new()
                    .name("overflower".into())
                    .spawn(|| panic!("x"))
                    .unwrap()
                    .join();
            });
        },
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("green thread 'overflower' overflowed its panic hook's stack (1024 KiB)"),
        "{}",
        common::describe_child(&out)
    );
}

/// A hook that calls green-blocking functions and spawns: nothing suspends while
/// panicking (they block in place), the hook finishes and the other green threads run on.
#[test]
fn a_hook_that_yields_blocks_and_spawns_finishes() {
    let out = common::in_child("a_hook_that_yields_blocks_and_spawns_finishes", "1", || {
        std::panic::set_hook(Box::new(|_| {
            greenrt::yield_now();
            let v = greenrt::block_on(async { 7 });
            assert_eq!(v, 7);
            let h = greenrt::spawn(|| 5);
            drop(h);
            println!("HOOK-DONE panicking={}", std::thread::panicking());
        }));
        let rt = runtime(2);
        rt.run(|| {
            let others: Vec<_> = (0..4)
                .map(|_| {
                    greenrt::spawn(|| {
                        for _ in 0..100 {
                            assert!(!std::thread::panicking());
                            greenrt::yield_now();
                        }
                    })
                })
                .collect();
            let r = greenrt::spawn(|| panic!("in hook test")).join();
            assert!(r.is_err());
            for o in others {
                o.join().unwrap();
            }
        });
    });
    assert!(
        common::child_finished(&out),
        "{}",
        common::describe_child(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("HOOK-DONE panicking=true"));
}
