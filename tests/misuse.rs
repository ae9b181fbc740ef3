//! Misuse and errors: calls in the wrong place panic with a message that names the
//! problem and the fix; invalid settings are `InvalidInput` errors naming the setting;
//! the `max_green_threads` cap is an error (or a panic from `spawn`) that says what to
//! change, and lifts once green threads finish.

mod common;
use common::{runtime, with_watchdog};
use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};
use greenrt::runtime::{Builder, Runtime};
use std::any::Any;
use std::io::ErrorKind;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        panic!("panic payload is not a string")
    }
}

/// The message of the panic `f` raises.
fn panic_message<R>(f: impl FnOnce() -> R) -> String {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(_) => panic!("expected a panic"),
        Err(payload) => message(&*payload),
    }
}

#[test]
fn spawn_outside_a_runtime_panics_naming_the_fix() {
    let msg = panic_message(|| greenrt::spawn(|| ()));
    println!("{msg}");
    assert!(msg.contains("outside"), "says where it was called: {msg}");
    assert!(
        msg.contains("Runtime::spawn") || msg.contains("#[greenrt::main]"),
        "names the fix: {msg}"
    );
    // The same for spawn_async and the green Builder, from a plain thread.
    let msg = std::thread::spawn(|| panic_message(|| greenrt::spawn_async(async {})))
        .join()
        .unwrap();
    assert!(msg.contains("outside"), "{msg}");
    let msg = panic_message(|| greenrt::Builder::new().spawn(|| ()));
    assert!(msg.contains("outside"), "{msg}");
}

/// Runs `f` inside a future task and returns its panic message.
fn panic_in_task(rt: &Runtime, f: impl FnOnce() + Send + 'static) -> String {
    let payload = rt
        .spawn_async(async move { f() })
        .join()
        .expect_err("the call must panic inside a future task");
    message(&*payload)
}

#[test]
fn green_blocking_calls_in_a_future_task_panic_saying_await() {
    let rt = runtime(2);
    type Call = Box<dyn FnOnce() + Send>;
    let cases: Vec<(&str, Call)> = vec![
        (
            "greenrt::block_on",
            Box::new(|| greenrt::block_on(async {})),
        ),
        ("greenrt::yield_now", Box::new(greenrt::yield_now)),
        (
            "greenrt::sleep",
            Box::new(|| greenrt::sleep(Duration::from_millis(1))),
        ),
        (
            "JoinHandle::join",
            Box::new(|| {
                let _ = greenrt::spawn(|| 1).join();
            }),
        ),
    ];
    for (what, call) in cases {
        let msg = panic_in_task(&rt, call);
        println!("{what}: {msg}");
        assert!(
            msg.contains(".await"),
            "{what}: should say to .await: {msg}"
        );
        assert!(msg.contains(what), "{what}: should name the call: {msg}");
    }
    // The worker that polled them is fine afterwards.
    assert_eq!(rt.spawn_async(async { 1 }).join().unwrap(), 1);
}

#[test]
fn run_and_block_on_inside_a_green_thread_panic() {
    let rt = Arc::new(runtime(2));
    let other = Arc::new(runtime(1));

    // In the green thread of Runtime::run: the same runtime, and another one.
    let messages = rt.run(|| {
        vec![
            panic_message(|| rt.run(|| ())),
            panic_message(|| rt.block_on(async {})),
            panic_message(|| other.run(|| ())),
            panic_message(|| other.block_on(async {})),
        ]
    });
    // In a spawned green thread on a worker.
    let spawned = {
        let other = other.clone();
        rt.spawn(move || {
            vec![
                panic_message(|| other.run(|| ())),
                panic_message(|| other.block_on(async {})),
            ]
        })
        .join()
        .unwrap()
    };
    for (i, msg) in messages.iter().chain(&spawned).enumerate() {
        println!("{i}: {msg}");
        let what = if i % 2 == 0 {
            "Runtime::run"
        } else {
            "Runtime::block_on"
        };
        assert!(msg.contains(what), "names the call: {msg}");
        assert!(msg.contains("inside"), "says it is inside a runtime: {msg}");
        assert!(msg.contains("spawn"), "suggests spawning instead: {msg}");
    }
    // Both runtimes still work from the outside.
    assert_eq!(rt.run(|| 1), 1);
    assert_eq!(other.block_on(async { 2 }), 2);
}

#[test]
fn runtime_builder_rejects_out_of_range_settings() {
    let cases: Vec<(&str, Builder)> = vec![
        ("worker_threads", {
            let mut b = Builder::new();
            b.worker_threads(0);
            b
        }),
        ("worker_threads", {
            let mut b = Builder::new();
            b.worker_threads(1025);
            b
        }),
        ("stack_size", {
            let mut b = Builder::new();
            b.stack_size(16 * 1024 - 1);
            b
        }),
        ("stack_size", {
            let mut b = Builder::new();
            b.stack_size(1024 * 1024 * 1024 + 1);
            b
        }),
        ("max_green_threads", {
            let mut b = Builder::new();
            b.max_green_threads(0);
            b
        }),
        ("thread_name", {
            let mut b = Builder::new();
            b.thread_name("bad\0name");
            b
        }),
    ];
    for (setting, mut builder) in cases {
        let err = builder.build().expect_err(setting);
        println!("{err}");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{setting}: {err}");
        assert!(err.to_string().contains(setting), "names {setting}: {err}");
    }
    // The limits themselves are accepted (stacks are mapped lazily: nothing is spent).
    let rt = Builder::new()
        .worker_threads(1)
        .stack_size(16 * 1024)
        .build()
        .unwrap();
    assert_eq!(rt.run(|| greenrt::spawn(|| 1).join().unwrap()), 1);
    Builder::new()
        .worker_threads(1)
        .stack_size(1024 * 1024 * 1024)
        .build()
        .unwrap();
}

#[test]
fn green_builder_rejects_out_of_range_stack_size() {
    let rt = runtime(1);
    rt.run(|| {
        for bytes in [1, 16 * 1024 - 1, 1024 * 1024 * 1024 + 1] {
            let err = greenrt::Builder::new()
                .stack_size(bytes)
                .spawn(|| ())
                .expect_err("out of range");
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bytes}: {err}");
            assert!(err.to_string().contains("stack_size"), "{err}");
        }
        // In range: the smallest stack works.
        let ok = greenrt::Builder::new()
            .stack_size(16 * 1024)
            .spawn(|| 5)
            .unwrap();
        assert_eq!(ok.join().unwrap(), 5);
    });
}

#[test]
fn max_green_threads_cap_is_an_error_then_lifts() {
    with_watchdog(
        "spawning at the max_green_threads cap",
        Duration::from_secs(30),
        || {
            const CAP: usize = 4;
            let rt = Builder::new()
                .worker_threads(2)
                .max_green_threads(CAP)
                .build()
                .unwrap();
            rt.run(|| {
                // CAP green threads that cannot finish until released.
                let (release, gate) = oneshot::channel::<()>();
                let gate: Shared<_> = gate.shared();
                let blocked: Vec<_> = (0..CAP)
                    .map(|_| {
                        let gate = gate.clone();
                        greenrt::spawn(move || {
                            let _ = greenrt::block_on(gate);
                        })
                    })
                    .collect();

                let err = greenrt::Builder::new()
                    .spawn(|| ())
                    .expect_err("the cap is reached");
                println!("{err}");
                assert_eq!(err.kind(), ErrorKind::OutOfMemory, "{err}");
                assert!(
                    err.to_string().contains("max_green_threads"),
                    "says which setting to change: {err}"
                );
                let msg = panic_message(|| greenrt::spawn(|| ()));
                assert!(
                    msg.contains("max_green_threads"),
                    "spawn panics with the same explanation: {msg}"
                );
                // Future tasks are not green threads: the cap does not apply to them.
                assert_eq!(
                    greenrt::block_on(greenrt::spawn_async(async { 1 })).unwrap(),
                    1
                );

                release.send(()).unwrap();
                for handle in blocked {
                    handle.join().unwrap();
                }
                // Room again: CAP more green threads can be spawned and all run.
                let again: Vec<_> = (0..CAP)
                    .map(|i| greenrt::Builder::new().spawn(move || i).unwrap())
                    .collect();
                let sum: usize = again.into_iter().map(|h| h.join().unwrap()).sum();
                assert_eq!(sum, (0..CAP).sum());
            });
        },
    );
}

#[test]
fn spawning_at_the_cap_from_a_future_task_fails_at_once_naming_the_way_out() {
    with_watchdog(
        "spawning at the cap from a future task",
        Duration::from_secs(30),
        || {
            let rt = Builder::new()
                .worker_threads(1)
                .max_green_threads(1)
                .build()
                .unwrap();
            let (release, gate) = oneshot::channel::<()>();
            let holder = rt.spawn(move || {
                let _ = greenrt::block_on(gate);
            });
            // A future task on the only worker: waiting for room there would block the
            // worker, so the error comes at once and says what to do instead.
            let err = rt
                .block_on(rt.spawn_async(async { greenrt::Builder::new().spawn(|| ()).map(drop) }))
                .unwrap()
                .expect_err("the cap is reached");
            assert_eq!(err.kind(), ErrorKind::OutOfMemory, "{err}");
            let text = err.to_string();
            assert!(
                text.contains("max_green_threads")
                    && text.contains("future task")
                    && text.contains("spawn from a green thread"),
                "names the setting, why it did not wait, and the way out: {text}"
            );
            release.send(()).unwrap();
            holder.join().unwrap();
        },
    );
}

#[test]
fn a_full_cap_is_an_error_even_while_another_runtime_churns() {
    with_watchdog(
        "a full cap beside a busy runtime",
        Duration::from_secs(30),
        || {
            let capped = Builder::new()
                .worker_threads(1)
                .max_green_threads(1)
                .build()
                .unwrap();
            let busy = Builder::new()
                .worker_threads(1)
                .max_green_threads(64)
                .build()
                .unwrap();
            // Green threads finishing in another runtime free no place in this one: the
            // spawn below must not keep waiting for them.
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let churn = std::thread::spawn({
                let stop = stop.clone();
                move || {
                    busy.run(|| {
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            greenrt::spawn(|| ()).join().unwrap();
                        }
                    })
                }
            });
            capped.run(|| {
                let (release, gate) = oneshot::channel::<()>();
                let held = greenrt::spawn(move || {
                    let _ = greenrt::block_on(gate);
                });
                let err = greenrt::Builder::new()
                    .spawn(|| ())
                    .expect_err("the cap is reached");
                assert_eq!(err.kind(), ErrorKind::OutOfMemory, "{err}");
                release.send(()).unwrap();
                held.join().unwrap();
            });
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            churn.join().unwrap();
        },
    );
}
