//! The reliability issue's promises, written from its text alone (the names, error
//! kinds and messages it gives), for what the other test files do not pin down. Cases
//! that abort, crash or change process-wide limits run in a child process.

mod common;
use common::{
    child_finished, child_signalled, describe_child, in_child, in_child_with, panic_message,
    recurse, runtime, stack_mappings, vm_size_kib, with_watchdog,
};
use futures::FutureExt;
use greenrt::Cancelled;
use std::io::ErrorKind;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

const WATCHDOG: Duration = Duration::from_secs(60);

/// Sends on `tx` when dropped: proves a destructor ran.
struct DropSignal(mpsc::Sender<&'static str>, &'static str);
impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

/// Counts drops.
struct DropCount(Arc<AtomicUsize>);
impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn is_cancelled(result: &std::thread::Result<impl std::fmt::Debug>) -> bool {
    matches!(result, Err(payload) if payload.downcast_ref::<Cancelled>().is_some())
}

// ---------------------------------------------------------------------------------
// 1. Stack overflow.
// ---------------------------------------------------------------------------------

/// "installed once": after several runtimes came and went, an overflow is still
/// reported, and exactly once (a handler chained to itself would print it again or loop).
#[test]
fn overflow_is_reported_exactly_once_after_several_runtimes() {
    let output = in_child(
        "overflow_is_reported_exactly_once_after_several_runtimes",
        "several",
        || {
            for _ in 0..3 {
                let rt = runtime(1);
                assert_eq!(rt.run(|| greenrt::spawn(|| 1).join().unwrap()), 1);
            }
            runtime(1).run(|| {
                greenrt::Builder::new()
                    .name("after-three-runtimes".into())
                    .stack_size(64 * 1024)
                    .spawn(|| recurse(0))
                    .unwrap()
                    .join()
                    .ok();
            });
        },
    );
    let stderr = child_signalled(&output, libc::SIGABRT);
    let report = "green thread 'after-three-runtimes' has overflowed its stack (64 KiB)";
    assert_eq!(stderr.matches(report).count(), 1, "{stderr}");
}

/// `<size>` is the stack size the runtime's builder set, for a named green thread
/// spawned with `greenrt::Builder` without its own size.
#[test]
fn overflow_reports_the_runtime_builder_stack_size() {
    let output = in_child(
        "overflow_reports_the_runtime_builder_stack_size",
        "rt-size",
        || {
            let rt = greenrt::runtime::Builder::new()
                .worker_threads(1)
                .stack_size(128 * 1024)
                .build()
                .unwrap();
            rt.run(|| {
                greenrt::Builder::new()
                    .name("rt-default-size".into())
                    .spawn(|| recurse(0))
                    .unwrap()
                    .join()
                    .ok();
            });
        },
    );
    let stderr = child_signalled(&output, libc::SIGABRT);
    assert!(
        stderr.contains("green thread 'rt-default-size' has overflowed its stack (128 KiB)"),
        "{stderr}"
    );
}

/// An overflow in a destructor that runs while a cancel unwinds is still an overflow of
/// that green thread, reported as such.
#[test]
fn overflow_during_a_cancel_unwind_is_reported() {
    let output = in_child(
        "overflow_during_a_cancel_unwind_is_reported",
        "unwind",
        || {
            struct RecursesOnDrop;
            impl Drop for RecursesOnDrop {
                fn drop(&mut self) {
                    recurse(0);
                }
            }
            runtime(2).run(|| {
                let (tx, rx) = futures::channel::oneshot::channel();
                let victim = greenrt::Builder::new()
                    .name("deep-destructor".into())
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        let _guard = RecursesOnDrop;
                        tx.send(()).unwrap();
                        greenrt::sleep(Duration::from_secs(3600));
                    })
                    .unwrap();
                greenrt::block_on(rx).unwrap();
                victim.abort();
                victim.join().ok();
            });
        },
    );
    let stderr = child_signalled(&output, libc::SIGABRT);
    assert!(
        stderr.contains("green thread 'deep-destructor' has overflowed its stack (64 KiB)"),
        "{stderr}"
    );
}

/// A null-pointer write in green code faults outside any guard page: an ordinary
/// SIGSEGV, never reported as an overflow.
#[test]
fn null_write_in_a_green_thread_is_a_plain_sigsegv() {
    let output = in_child_with(
        "null_write_in_a_green_thread_is_a_plain_sigsegv",
        "null",
        |command| {
            // No core dump for the intended crash.
            command.env("RUST_BACKTRACE", "0");
        },
        || {
            runtime(1).run(|| {
                greenrt::Builder::new()
                    .name("null-writer".into())
                    .spawn(|| {
                        let p = std::hint::black_box(std::ptr::null_mut::<u64>());
                        // SAFETY: not safe at all: the point is to fault.
                        unsafe { p.write_volatile(1) };
                    })
                    .unwrap()
                    .join()
                    .ok();
            });
        },
    );
    let stderr = child_signalled(&output, libc::SIGSEGV);
    assert!(!stderr.contains("overflowed its stack"), "{stderr}");
}

// ---------------------------------------------------------------------------------
// 2. Running out of stacks.
// ---------------------------------------------------------------------------------

/// "`greenrt::spawn` panics with the same message" as `greenrt::Builder::spawn`'s error,
/// which "says what ran out and what to change".
#[test]
fn spawn_at_the_cap_panics_with_the_same_message_as_builder_spawn() {
    with_watchdog("spawn at the cap", WATCHDOG, || {
        let rt = greenrt::runtime::Builder::new()
            .worker_threads(1)
            .max_green_threads(1)
            .build()
            .unwrap();
        let (error, panic) = rt.run(|| {
            let (release, gate) = futures::channel::oneshot::channel::<()>();
            let held = greenrt::spawn(move || {
                let _ = greenrt::block_on(gate);
            });
            let error = greenrt::Builder::new().spawn(|| ()).unwrap_err();
            let panic = catch_unwind(AssertUnwindSafe(|| greenrt::spawn(|| ())))
                .map(|_| ())
                .unwrap_err();
            release.send(()).unwrap();
            held.join().unwrap();
            (error, panic_message(&*panic))
        });
        println!("error: {error}\npanic: {panic}");
        assert_eq!(error.kind(), ErrorKind::OutOfMemory, "{error}");
        let text = error.to_string();
        assert!(text.contains("max_green_threads"), "what ran out: {text}");
        assert!(text.contains("raise"), "what to change: {text}");
        assert!(panic.contains(&text), "{panic}");
        assert_eq!(panic, text, "greenrt::spawn panics with the same message");
    });
}

/// Address space limited in a child (`setrlimit(RLIMIT_AS)`): green threads whose stack
/// cannot be mapped at first run end with that `io::Error` as their `join()` payload,
/// the others run to completion, and the runtime stays healthy afterwards.
#[test]
fn out_of_address_space_fails_only_the_green_threads_that_cannot_map_a_stack() {
    let output = in_child(
        "out_of_address_space_fails_only_the_green_threads_that_cannot_map_a_stack",
        "rlimit",
        || {
            let rt = runtime(1);
            rt.run(|| {
                // Warm up the worker (its allocator arena, its pool).
                for _ in 0..4 {
                    greenrt::spawn(greenrt::yield_now).join().unwrap();
                }
                greenrt::block_on(greenrt::spawn_async(async { 1 })).unwrap();
                let mut handles = Vec::with_capacity(400);
                let started = Arc::new(AtomicUsize::new(0));
                let (release, gate) = futures::channel::oneshot::channel::<()>();
                let gate = gate.shared();
                let limit = vm_size_kib() * 1024 + 24 * 1024 * 1024;
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: libc::RLIM_INFINITY,
                };
                // SAFETY: lowers only our own soft limit.
                assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlimit) }, 0);
                for i in 0..400usize {
                    let gate = gate.clone();
                    let started = started.clone();
                    handles.push(
                        greenrt::Builder::new()
                            .spawn(move || {
                                started.fetch_add(1, Ordering::SeqCst);
                                let _ = greenrt::block_on(gate);
                                i
                            })
                            .expect("spawn reserves; mapping happens at first run"),
                    );
                }
                // Wait until each has either started or failed.
                while started.load(Ordering::SeqCst)
                    + handles.iter().filter(|h| h.is_finished()).count()
                    < handles.len()
                {
                    greenrt::yield_now();
                }
                release.send(()).unwrap();
                let (mut ok, mut failed) = (0, 0);
                for (i, handle) in handles.into_iter().enumerate() {
                    match handle.join() {
                        Ok(value) => {
                            assert_eq!(value, i);
                            ok += 1;
                        }
                        Err(payload) => {
                            let error = payload
                                .downcast_ref::<std::io::Error>()
                                .expect("the payload is the io::Error");
                            if failed == 0 {
                                println!("JOIN-ERROR: {error}");
                            }
                            failed += 1;
                        }
                    }
                }
                println!("OK={ok} FAILED={failed}");
                assert!(ok > 0 && failed > 0, "ok {ok}, failed {failed}");
                assert_eq!(started.load(Ordering::SeqCst), ok);
                // Healthy: it runs what fits, from its pool.
                let again: Vec<_> = (0..ok.min(20)).map(|i| greenrt::spawn(move || i)).collect();
                for (i, handle) in again.into_iter().enumerate() {
                    assert_eq!(handle.join().unwrap(), i);
                }
            });
        },
    );
    assert!(child_finished(&output), "{}", describe_child(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("JOIN-ERROR:"))
        .map(|(_, e)| e.to_string())
        .expect("an error printed");
    assert!(line.contains("256 KiB"), "what ran out: {line}");
    assert!(
        line.contains("lower the stack size") || line.contains("vm.max_map_count"),
        "what to change: {line}"
    );
}

// ---------------------------------------------------------------------------------
// 3. Cancellation.
// ---------------------------------------------------------------------------------

/// The README's rethrow pattern: code that catches unwinds recognises `Cancelled` and
/// rethrows it; the green thread then ends cancelled, every destructor having run.
#[test]
fn the_rethrow_pattern_lets_a_cancel_finish_the_green_thread() {
    with_watchdog("rethrow", WATCHDOG, || {
        let rt = runtime(2);
        let (tx, rx) = mpsc::channel();
        let (started_tx, started_rx) = futures::channel::oneshot::channel();
        let handle = rt.spawn(move || {
            let _outer = DropSignal(tx.clone(), "outer");
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let _inner = DropSignal(tx.clone(), "inner");
                started_tx.send(()).unwrap();
                greenrt::block_on(futures::future::pending::<()>());
            }));
            if let Err(payload) = outcome {
                let _ = tx.send(if payload.is::<Cancelled>() {
                    "recognised"
                } else {
                    "other"
                });
                if payload.is::<Cancelled>() {
                    resume_unwind(payload);
                }
            }
            "not cancelled"
        });
        futures::executor::block_on(started_rx).unwrap();
        handle.abort();
        let result = handle.join();
        assert!(is_cancelled(&result), "{result:?}");
        let seen: Vec<_> = rx.try_iter().collect();
        assert_eq!(seen, ["inner", "recognised", "outer"]);
    });
}

/// A green thread whose only suspension points are `yield_now` is cancelled there by
/// `abort()` and by dropping its runtime.
#[test]
fn a_green_thread_that_only_yields_is_cancelled_at_a_yield() {
    with_watchdog("yield cancel", WATCHDOG, || {
        let rt = runtime(1);
        let drops = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let spin = |drops: Arc<AtomicUsize>| {
            let started = started.clone();
            move || {
                let _guard = DropCount(drops);
                started.fetch_add(1, Ordering::SeqCst);
                loop {
                    greenrt::yield_now();
                }
            }
        };
        let aborted = rt.spawn(spin(drops.clone()));
        let _dropped = rt.spawn(spin(drops.clone()));
        // Both are running (yielding) before we cancel.
        while started.load(Ordering::SeqCst) < 2 {
            std::thread::yield_now();
        }
        aborted.abort();
        let result = aborted.join();
        assert!(is_cancelled(&result), "{result:?}");
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        drop(rt);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            2,
            "dropping the runtime unwinds it"
        );
    });
}

/// `abort()` from a foreign OS thread cancels a green thread blocked in `join`, and a
/// future task's `join()` payload is `Cancelled` too.
#[test]
fn abort_from_a_foreign_thread_and_of_a_future_task_give_cancelled() {
    with_watchdog("foreign abort", WATCHDOG, || {
        let rt = runtime(2);
        let (tx, rx) = mpsc::channel();
        let (started_tx, started_rx) = futures::channel::oneshot::channel();
        let child = rt.spawn(|| greenrt::block_on(futures::future::pending::<u8>()));
        let joiner = rt.spawn(move || {
            let _guard = DropSignal(tx, "joiner unwound");
            started_tx.send(()).unwrap();
            child.join()
        });
        futures::executor::block_on(started_rx).unwrap();
        std::thread::spawn(move || {
            joiner.abort();
            joiner.join()
        })
        .join()
        .map(|result| assert!(is_cancelled(&result), "{result:?}"))
        .unwrap();
        assert_eq!(rx.recv().unwrap(), "joiner unwound");

        let task = rt.spawn_async(futures::future::pending::<u8>());
        task.abort();
        let result = task.join();
        assert!(is_cancelled(&result), "{result:?}");
        let payload = result.unwrap_err();
        let cancelled = payload.downcast_ref::<Cancelled>().unwrap();
        // A public payload type that behaves like an error.
        let as_error: &dyn std::error::Error = cancelled;
        assert!(!as_error.to_string().is_empty());
    });
}

/// `Runtime::shutdown_timeout` returns although a green thread never reaches a
/// suspension point; that green thread is cancelled at its next one.
#[test]
fn shutdown_timeout_returns_while_a_green_thread_never_suspends() {
    with_watchdog("shutdown_timeout", WATCHDOG, || {
        let rt = runtime(1);
        let stop = Arc::new(AtomicBool::new(false));
        let spinning = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let spinner = {
            let (stop, spinning) = (stop.clone(), spinning.clone());
            rt.spawn(move || {
                let _guard = DropSignal(tx, "spinner unwound");
                spinning.store(true, Ordering::SeqCst);
                while !stop.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
                greenrt::yield_now(); // its next suspension point
                "finished normally"
            })
        };
        while !spinning.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        rt.shutdown_timeout(Duration::from_millis(100));
        // It returned; the green thread still runs its loop.
        assert!(!spinner.is_finished());
        stop.store(true, Ordering::SeqCst);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(30)),
            Ok("spinner unwound")
        );
        let result = spinner.join();
        assert!(is_cancelled(&result), "{result:?}");
    });
}

/// With time enough, `shutdown_timeout` cancels like a drop: every suspended green
/// thread (in `sleep`, `block_on`, `join`) has unwound when it returns.
#[test]
fn shutdown_timeout_in_time_unwinds_every_suspended_green_thread() {
    with_watchdog("shutdown_timeout in time", WATCHDOG, || {
        let rt = runtime(2);
        let drops = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for i in 0..30 {
            let (drops, started) = (drops.clone(), started.clone());
            handles.push(rt.spawn(move || {
                let _guard = DropCount(drops);
                started.fetch_add(1, Ordering::SeqCst);
                match i % 3 {
                    0 => greenrt::sleep(Duration::from_secs(3600)),
                    1 => greenrt::block_on(futures::future::pending::<()>()),
                    _ => {
                        let _ =
                            greenrt::spawn(|| greenrt::block_on(futures::future::pending::<()>()))
                                .join();
                    }
                }
            }));
        }
        while started.load(Ordering::SeqCst) < 30 {
            std::thread::yield_now();
        }
        // Suspended children (10 of them, from the `join` cases) count as well.
        rt.shutdown_timeout(Duration::from_secs(30));
        assert_eq!(drops.load(Ordering::SeqCst), 30);
        for handle in handles {
            let result = handle.join();
            assert!(is_cancelled(&result), "{result:?}");
        }
    });
}

/// A green thread that swallows its cancel and suspends again is leaked at shutdown:
/// the drop returns, and memory on its stack that others were lent stays valid after
/// its handle is gone ("never freed while referenced").
#[test]
fn a_green_thread_that_swallows_its_cancel_is_leaked_not_freed() {
    // A stack size nothing else in this binary uses, to find its mapping.
    const KIB: u64 = 328;
    with_watchdog("swallowed cancel", WATCHDOG, || {
        let rt = runtime(1);
        let lent = Arc::new(AtomicUsize::new(0));
        let handle = {
            let lent = lent.clone();
            rt.run(|| {
                greenrt::Builder::new()
                    .stack_size(KIB as usize * 1024)
                    .spawn(move || {
                        let on_my_stack = [0xA5u8; 256];
                        lent.store(on_my_stack.as_ptr() as usize, Ordering::SeqCst);
                        loop {
                            // Swallows everything, Cancelled included.
                            let _ = catch_unwind(AssertUnwindSafe(|| {
                                greenrt::block_on(futures::future::pending::<()>())
                            }));
                            std::hint::black_box(&on_my_stack);
                        }
                    })
                    .unwrap()
            })
        };
        while lent.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        assert_eq!(stack_mappings(KIB).count, 1);
        drop(rt); // must not hang
        let result = handle.join();
        assert!(is_cancelled(&result), "{result:?}");
        assert_eq!(
            stack_mappings(KIB).count,
            1,
            "the leaked stack stays mapped"
        );
        let lent = lent.load(Ordering::SeqCst) as *const [u8; 256];
        // SAFETY: what this test checks: the leaked stack is never unmapped.
        assert!(unsafe { *lent }.iter().all(|&b| b == 0xA5));
    });
}

/// "With `panic = "abort"` nothing can unwind: suspended green threads are then leaked
/// at shutdown, never freed": a program built with `panic = "abort"` that drops a
/// runtime with a suspended green thread goes on running.
#[test]
fn with_panic_abort_dropping_a_runtime_leaks_suspended_green_threads() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("reliability-panic-abort");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"panic-abort-leak\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
             [dependencies]\ngreenrt = {{ path = {:?} }}\nfutures = \"0.3\"\n\
             [profile.dev]\npanic = \"abort\"\n[workspace]\n",
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("src/main.rs"),
        r#"
fn main() {
    let rt = greenrt::runtime::Builder::new().worker_threads(1).build().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = rt.spawn(move || {
        tx.send(()).unwrap();
        greenrt::block_on(futures::future::pending::<()>());
    });
    rx.recv().unwrap();
    if std::env::args().any(|arg| arg == "cancel") {
        // A started green thread cannot unwind here: this must abort, saying why.
        handle.abort();
        let _ = handle.join();
        println!("JOINED");
        return;
    }
    // Let it reach its suspension point.
    std::thread::sleep(std::time::Duration::from_millis(200));
    drop(rt);
    println!("RUNTIME-DROPPED");
    println!("JOIN={:?}", handle.join().map_err(|p| p.is::<greenrt::Cancelled>()));
}
"#,
    )
    .unwrap();
    let lock = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock");
    std::fs::copy(lock, dir.join("Cargo.lock")).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = std::process::Command::new(cargo)
        .args(["build", "--offline", "--quiet"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", describe_child(&build));
    let run = std::process::Command::new(dir.join("target/debug/panic-abort-leak"))
        .output()
        .unwrap();
    assert!(
        run.status.success()
            && String::from_utf8_lossy(&run.stdout).contains("RUNTIME-DROPPED\nJOIN=Err(true)"),
        "{}",
        describe_child(&run)
    );
    // Cancelling a started green thread cannot unwind either: the process aborts with a
    // message that names the cause and the way out, instead of dying silently.
    let cancel = std::process::Command::new(dir.join("target/debug/panic-abort-leak"))
        .arg("cancel")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&cancel.stderr);
    assert!(
        !cancel.status.success()
            && !String::from_utf8_lossy(&cancel.stdout).contains("JOINED")
            && stderr.contains("cancelled (JoinHandle::abort) after it started")
            && stderr.contains("panic = \"unwind\""),
        "{}",
        describe_child(&cancel)
    );
}

// ---------------------------------------------------------------------------------
// Task B: a leaked green thread's place in the live budget.
// ---------------------------------------------------------------------------------

/// Leaked green threads keep their stacks mapped forever, so they must keep their places
/// in the live budget too: otherwise the budget (which exists so that running out is an
/// `io::Error` at spawn) lets spawns through whose stacks then cannot be mapped at first
/// run. Leaks 10,000 green threads (20,000 mappings, more than the budget's headroom),
/// then spawns suspended green threads until `Builder::spawn` fails: it must fail at
/// spawn, with no green thread failing at first run.
#[test]
fn leaked_green_threads_keep_their_place_in_the_live_budget() {
    let output = in_child_with(
        "leaked_green_threads_keep_their_place_in_the_live_budget",
        "leak-budget",
        // One line per leaked green thread: more than a pipe holds.
        |command| {
            let log =
                std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance4-leak.stderr");
            command.stderr(std::fs::File::create(log).unwrap());
        },
        || {
            const LEAKED: usize = 10_000;
            let rt = runtime(1);
            let started = Arc::new(AtomicUsize::new(0));
            let handles: Vec<_> = (0..LEAKED)
                .map(|_| {
                    let started = started.clone();
                    rt.spawn(move || {
                        started.fetch_add(1, Ordering::SeqCst);
                        loop {
                            let _ = catch_unwind(AssertUnwindSafe(|| {
                                greenrt::block_on(futures::future::pending::<()>())
                            }));
                        }
                    })
                })
                .collect();
            while started.load(Ordering::SeqCst) < LEAKED {
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(rt);
            for handle in handles {
                assert!(is_cancelled(&handle.join()));
            }
            // Every control block is gone now; the stacks stay mapped.
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            println!("MAPPINGS-AFTER-LEAK={}", maps.lines().count());

            let rt = runtime(1);
            let (spawned, spawn_error, first_run_failures) = rt.run(|| {
                let (_release, gate) = futures::channel::oneshot::channel::<()>();
                let gate = gate.shared();
                let started = Arc::new(AtomicUsize::new(0));
                let mut handles = Vec::new();
                let mut spawn_error = None;
                'spawning: loop {
                    for _ in 0..1000 {
                        let (gate, started) = (gate.clone(), started.clone());
                        match greenrt::Builder::new().spawn(move || {
                            started.fetch_add(1, Ordering::SeqCst);
                            let _ = greenrt::block_on(gate);
                        }) {
                            Ok(handle) => handles.push(handle),
                            Err(error) => {
                                spawn_error = Some(error);
                                break 'spawning;
                            }
                        }
                    }
                    let failed = |handles: &[greenrt::JoinHandle<()>]| {
                        handles.iter().filter(|h| h.is_finished()).count()
                    };
                    while started.load(Ordering::SeqCst) + failed(&handles) < handles.len() {
                        greenrt::yield_now();
                    }
                    if failed(&handles) > 0 {
                        break;
                    }
                }
                while started.load(Ordering::SeqCst)
                    + handles.iter().filter(|h| h.is_finished()).count()
                    < handles.len()
                {
                    greenrt::yield_now();
                }
                let spawned = handles.len();
                let failures: Vec<String> = handles
                    .into_iter()
                    .filter(|h| h.is_finished())
                    .map(|h| match h.join() {
                        Err(payload) => payload
                            .downcast_ref::<std::io::Error>()
                            .map(|e| e.to_string())
                            .unwrap_or_else(|| "a non-io::Error payload".into()),
                        Ok(()) => "finished early".into(),
                    })
                    .collect();
                (spawned, spawn_error, failures)
            });
            println!("SPAWNED={spawned}");
            println!("SPAWN-ERROR={spawn_error:?}");
            println!("FIRST-RUN-FAILURES={}", first_run_failures.len());
            if let Some(first) = first_run_failures.first() {
                println!("FIRST-RUN-ERROR={first}");
            }
            // Exit without cancelling tens of thousands of green threads.
            std::mem::forget(rt);
        },
    );
    assert!(child_finished(&output), "{}", describe_child(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        stdout.contains("FIRST-RUN-FAILURES=0"),
        "stacks failed to map at first run after the budget let their spawns through:\n{stdout}"
    );
    let error_line = stdout
        .lines()
        .find(|l| l.starts_with("SPAWN-ERROR="))
        .unwrap();
    assert!(error_line.contains("OutOfMemory"), "{error_line}");
}

// ---------------------------------------------------------------------------------
// More of items 2, 3, 4 and 5.
// ---------------------------------------------------------------------------------

/// The process budget ("`vm.max_map_count`"): spawning suspended green threads until
/// none fit ends with an `io::Error` from `greenrt::Builder::spawn` that names the limit
/// and how to raise it, `greenrt::spawn` panics saying the same, no green thread fails
/// at first run, and the runtime runs what it has once some finish.
#[test]
fn the_map_count_budget_is_an_error_at_spawn_naming_vm_max_map_count() {
    let output = in_child(
        "the_map_count_budget_is_an_error_at_spawn_naming_vm_max_map_count",
        "map-count",
        || {
            let rt = runtime(2);
            let (error, panic, failed_at_first_run, spawned) = rt.run(|| {
                let (release, gate) = futures::channel::oneshot::channel::<()>();
                let gate = gate.shared();
                let started = Arc::new(AtomicUsize::new(0));
                let mut handles = Vec::new();
                let error = loop {
                    let (gate, started) = (gate.clone(), started.clone());
                    match greenrt::Builder::new().spawn(move || {
                        started.fetch_add(1, Ordering::SeqCst);
                        let _ = greenrt::block_on(gate);
                    }) {
                        Ok(handle) => handles.push(handle),
                        Err(error) => break error,
                    }
                    assert!(handles.len() < 200_000, "no limit was hit");
                };
                let panic = catch_unwind(AssertUnwindSafe(|| greenrt::spawn(|| ())))
                    .map(|_| ())
                    .unwrap_err();
                while started.load(Ordering::SeqCst)
                    + handles.iter().filter(|h| h.is_finished()).count()
                    < handles.len()
                {
                    greenrt::yield_now();
                }
                let failed = handles.iter().filter(|h| h.is_finished()).count();
                let spawned = handles.len();
                release.send(()).unwrap();
                for handle in handles {
                    let _ = handle.join();
                }
                // Healthy again.
                assert_eq!(greenrt::spawn(|| 5).join().unwrap(), 5);
                (error, panic_message(&*panic), failed, spawned)
            });
            println!("SPAWNED={spawned} FAILED-AT-FIRST-RUN={failed_at_first_run}");
            println!("ERROR-KIND={:?}", error.kind());
            println!("ERROR={error}");
            println!("PANIC={panic}");
        },
    );
    assert!(child_finished(&output), "{}", describe_child(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(stdout.contains("FAILED-AT-FIRST-RUN=0"), "{stdout}");
    assert!(stdout.contains("ERROR-KIND=OutOfMemory"), "{stdout}");
    let error = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ERROR="))
        .unwrap();
    assert!(error.contains("vm.max_map_count"), "{error}");
    let panic = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PANIC="))
        .unwrap();
    assert!(panic.contains("vm.max_map_count"), "{panic}");
}

/// A leaked green thread (it swallowed its cancel at shutdown) that is woken later, by a
/// foreign thread, after its runtime is gone, is never run again and nothing crashes.
#[test]
fn waking_a_leaked_green_thread_after_its_runtime_is_gone_is_harmless() {
    with_watchdog("wake after leak", WATCHDOG, || {
        let rt = runtime(1);
        let (wake_tx, wake_rx) = futures::channel::mpsc::unbounded::<u32>();
        let resumed = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicBool::new(false));
        let handle = {
            let (resumed, started) = (resumed.clone(), started.clone());
            rt.spawn(move || {
                let mut wake_rx = wake_rx;
                started.store(true, Ordering::SeqCst);
                loop {
                    let _ = catch_unwind(AssertUnwindSafe(|| {
                        greenrt::block_on(futures::StreamExt::next(&mut wake_rx))
                    }));
                    resumed.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        while !started.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        drop(rt);
        let after_shutdown = resumed.load(Ordering::SeqCst);
        assert_eq!(after_shutdown, 1, "resumed once, by the shutdown's cancel");
        std::thread::spawn(move || {
            for i in 0..100 {
                wake_tx.unbounded_send(i).unwrap();
            }
        })
        .join()
        .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            resumed.load(Ordering::SeqCst),
            after_shutdown,
            "it ran again"
        );
        let result = handle.join();
        assert!(is_cancelled(&result), "{result:?}");
    });
}

/// Item 4, on the runtime's drop rather than `abort()`: a destructor that panics while
/// the shutdown's cancel unwinds aborts the process, saying why.
#[test]
fn destructor_panicking_while_a_runtime_drop_cancels_aborts_saying_why() {
    let output = in_child(
        "destructor_panicking_while_a_runtime_drop_cancels_aborts_saying_why",
        "drop-bomb",
        || {
            struct PanicsOnDrop;
            impl Drop for PanicsOnDrop {
                fn drop(&mut self) {
                    panic!("bomb destructor ran during the shutdown cancel");
                }
            }
            let rt = runtime(1);
            let started = Arc::new(AtomicBool::new(false));
            let flag = started.clone();
            let _handle = rt.spawn(move || {
                let _bomb = PanicsOnDrop;
                flag.store(true, Ordering::SeqCst);
                greenrt::sleep(Duration::from_secs(3600));
            });
            while !started.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            drop(rt);
        },
    );
    let stderr = child_signalled(&output, libc::SIGABRT);
    assert!(
        stderr.contains("bomb destructor ran during the shutdown cancel"),
        "{stderr}"
    );
    assert!(
        stderr.contains("panic in a destructor during cleanup"),
        "{stderr}"
    );
}

/// Item 5: `Runtime::run` and `Runtime::block_on` called from a future task on a worker
/// (not a green thread) panic too, naming the call and the fix; the worker survives.
#[test]
fn run_and_block_on_in_a_future_task_panic_naming_the_fix() {
    with_watchdog("run in a task", WATCHDOG, || {
        let rt = runtime(2);
        let other = Arc::new(runtime(1));
        type Call = Box<dyn FnOnce(&greenrt::runtime::Runtime) + Send>;
        let calls: Vec<(&str, Call)> = vec![
            ("Runtime::run", Box::new(|rt| rt.run(|| ()))),
            ("Runtime::block_on", Box::new(|rt| rt.block_on(async {}))),
        ];
        for (what, call) in calls {
            let other = other.clone();
            let payload = rt
                .spawn_async(async move { call(&other) })
                .join()
                .expect_err("must panic in a future task");
            let msg = panic_message(&*payload);
            println!("{what}: {msg}");
            assert!(msg.contains(what), "names the call: {msg}");
            assert!(msg.contains("spawn"), "names the fix: {msg}");
        }
        assert_eq!(rt.spawn_async(async { 3 }).join().unwrap(), 3);
        assert_eq!(other.run(|| 4), 4);
    });
}

/// Item 5, "a clear panic naming the fix": in a future task the fix is `.await` (the
/// panic for `Runtime::block_on` there names `greenrt::block_on` and `join`, which panic
/// in a future task themselves).
#[test]
fn runtime_block_on_in_a_future_task_names_await_as_the_fix() {
    with_watchdog("block_on in a task", WATCHDOG, || {
        let rt = runtime(1);
        let other = Arc::new(runtime(1));
        let payload = rt
            .spawn_async(async move { other.block_on(async {}) })
            .join()
            .expect_err("must panic in a future task");
        let msg = panic_message(&*payload);
        assert!(msg.contains(".await"), "{msg}");
    });
}
