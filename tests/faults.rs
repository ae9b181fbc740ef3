//! Faults that must be reported, never silent: a stack that cannot be mapped at first
//! run, a destructor panicking during a cancellation unwind, dropping a runtime on its
//! own worker. Cases that change process-wide limits or abort run in a child process
//! (this test binary re-run with the case in an environment variable).

mod common;
use common::{child_finished, child_signalled, describe_child, in_child, runtime, vm_size_kib};
use std::time::Duration;

#[test]
fn stack_that_cannot_be_mapped_at_first_run_is_the_join_error() {
    let output = in_child(
        "stack_that_cannot_be_mapped_at_first_run_is_the_join_error",
        "map",
        || {
            let rt = runtime(1);
            rt.run(|| {
                // Warm up so the worker and allocator have what they need, then cap the
                // address space 64 MiB above current use: a 512 MiB stack cannot be mapped.
                greenrt::spawn(|| ()).join().unwrap();
                let limit = vm_size_kib() * 1024 + 64 * 1024 * 1024;
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: libc::RLIM_INFINITY,
                };
                // SAFETY: setrlimit with a valid struct; it only lowers our own soft limit.
                assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlimit) }, 0);

                let handle = greenrt::Builder::new()
                    .name("too-big".into())
                    .stack_size(512 * 1024 * 1024)
                    .spawn(|| "must not run")
                    .expect("the spawn itself succeeds: stacks are mapped at first run");
                let payload = handle.join().expect_err("the green thread could not start");
                let error = payload
                    .downcast_ref::<std::io::Error>()
                    .expect("the payload is the io::Error");
                println!("JOIN-ERROR: {error}");

                // The runtime stays healthy and runs what fits.
                assert_eq!(greenrt::spawn(|| 7).join().unwrap(), 7);
            });
        },
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{:?}\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("CHILD-FINISHED"), "{stdout}\n{stderr}");
    // libtest may print the test's name on the same line first.
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("JOIN-ERROR:"))
        .map(|(_, e)| e)
        .expect("error printed");
    assert!(
        line.contains("could not map a 524288 KiB green thread stack"),
        "{line}"
    );
    assert!(
        line.contains("lower the stack size"),
        "the message says what to change: {line}"
    );
}

#[test]
fn destructor_panicking_during_a_cancel_unwind_aborts_saying_why() {
    let output = in_child(
        "destructor_panicking_during_a_cancel_unwind_aborts_saying_why",
        "drop",
        || {
            struct PanicsOnDrop;
            impl Drop for PanicsOnDrop {
                fn drop(&mut self) {
                    panic!("destructor panicked while the green thread was being cancelled");
                }
            }
            let rt = runtime(1);
            rt.run(|| {
                let (started_tx, started_rx) = futures::channel::oneshot::channel();
                let victim = greenrt::spawn(move || {
                    let _guard = PanicsOnDrop;
                    started_tx.send(()).unwrap();
                    greenrt::sleep(Duration::from_secs(3600));
                });
                greenrt::block_on(started_rx).unwrap();
                victim.abort();
                let _ = victim.join();
            });
        },
    );
    let stderr = child_signalled(&output, libc::SIGABRT);
    assert!(
        stderr.contains("destructor panicked while the green thread was being cancelled"),
        "{stderr}"
    );
    // Rust's own explanation for aborting: a panic while unwinding.
    assert!(
        stderr.contains("panic in a destructor during cleanup"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("CHILD-FINISHED"));
}

#[test]
fn dropping_a_runtime_on_its_own_worker_panics_naming_the_fix() {
    let rt = greenrt::runtime::Builder::new()
        .worker_threads(1)
        .thread_name("own-drop")
        .build()
        .unwrap();
    let slot = std::sync::Arc::new(std::sync::Mutex::new(None::<greenrt::runtime::Runtime>));
    let handle = rt.handle().clone();
    *slot.lock().unwrap() = Some(rt);
    let inside = slot.clone();
    let joined = handle
        .spawn(move || {
            let rt = inside.lock().unwrap().take().unwrap();
            drop(rt);
        })
        .join();
    let payload = joined.expect_err("dropping must panic, not deadlock");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap();
    assert!(message.contains("own worker"), "{message}");
    assert!(
        message.contains("Drop it from the thread that created it"),
        "{message}"
    );
    // And the runtime does stop: its worker exits rather than running on unowned.
    let workers_left = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.starts_with("own-drop-"))
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while workers_left() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(workers_left(), 0, "the dropped runtime's worker still runs");
}

#[test]
fn waiting_in_a_destructor_the_worker_runs_aborts_naming_the_fix() {
    let output = in_child(
        "waiting_in_a_destructor_the_worker_runs_aborts_naming_the_fix",
        "worker-wait",
        || {
            // A future task's future that waits when dropped. Cancelled, it is dropped
            // by the worker itself, outside any green thread or task: parking the worker
            // there could wait forever for work at home on it. It must fail loudly.
            struct WaitsOnDrop(Option<futures::channel::oneshot::Receiver<()>>);
            impl Drop for WaitsOnDrop {
                fn drop(&mut self) {
                    let _ = greenrt::block_on(self.0.take().unwrap());
                }
            }
            let rt = runtime(1);
            // The wait would end after 20 s (the sender dropped), so a regression fails
            // the test (a clean exit) rather than hanging it.
            let (late_tx, late_rx) = futures::channel::oneshot::channel::<()>();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(20));
                drop(late_tx);
            });
            let waits = WaitsOnDrop(Some(late_rx));
            let task = rt.spawn_async(async move {
                let _waits = waits;
                futures::future::pending::<()>().await
            });
            std::thread::sleep(Duration::from_millis(50));
            task.abort();
            let _ = task.join();
        },
    );
    let stderr = child_signalled(&output, libc::SIGABRT);
    assert!(
        stderr.contains("outside any green thread or task") && stderr.contains("greenrt::spawn"),
        "the message says what went wrong and what to do: {stderr}"
    );
}

/// A value whose destructor panics with a payload that is itself a `Bomb` one level
/// lower: dropping `Bomb(n)` starts a chain of `n` panics, each from dropping the
/// payload of the one before. Only safe code.
struct Bomb(u32);

impl Drop for Bomb {
    fn drop(&mut self) {
        if self.0 > 0 {
            std::panic::panic_any(Bomb(self.0 - 1));
        }
    }
}

/// Keeps the expected bomb panics out of the child's stderr.
fn quiet_bomb_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.payload().is::<Bomb>() {
            default(info)
        }
    }));
}

#[test]
fn a_detached_result_whose_payload_panics_when_dropped_aborts_naming_it() {
    let output = in_child(
        "a_detached_result_whose_payload_panics_when_dropped_aborts_naming_it",
        "cancel-bomb",
        || {
            quiet_bomb_hook();
            let rt = runtime(1);
            rt.run(|| {
                greenrt::spawn(|| {
                    let bomb = Bomb(3);
                    // Queued on this worker; cancelled and detached before it starts:
                    // dropping the closure panics, and so does dropping that panic's
                    // payload, which is the detached green thread's result. Nobody can
                    // be told: like any detached result that panics when dropped, it
                    // aborts, saying so (it used to kill the worker and hang).
                    let child = greenrt::spawn(move || drop(bomb));
                    child.abort();
                    drop(child);
                })
                .join()
                .unwrap();
            });
        },
    );
    let stderr = child_signalled(&output, libc::SIGABRT);
    assert!(
        stderr.contains(
            "greenrt: fatal: a green thread's or task's result panicked while being dropped"
        ),
        "{stderr}"
    );
}

#[test]
fn a_join_waker_whose_panic_payload_panics_does_not_kill_the_worker() {
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};

    struct PanickingWaker;
    impl Wake for PanickingWaker {
        fn wake(self: Arc<Self>) {
            std::panic::panic_any(Bomb(2));
        }
    }
    let output = in_child(
        "a_join_waker_whose_panic_payload_panics_does_not_kill_the_worker",
        "waker-bomb",
        || {
            quiet_bomb_hook();
            let rt = runtime(1);
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let mut handle = rt.spawn(move || {
                // Blocks the worker thread briefly: fine for a test.
                rx.recv().unwrap();
            });
            let waker = Waker::from(Arc::new(PanickingWaker));
            let mut cx = Context::from_waker(&waker);
            assert!(std::pin::Pin::new(&mut handle).poll(&mut cx).is_pending());
            tx.send(()).unwrap();
            while !handle.is_finished() {
                std::thread::sleep(Duration::from_millis(5));
            }
            drop(handle);
            assert_eq!(rt.spawn(|| 7).join().unwrap(), 7, "the worker runs on");
        },
    );
    assert!(child_finished(&output), "{}", describe_child(&output));
}
