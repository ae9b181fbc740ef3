//! `GREENRT_WORKER_THREADS`: the worker count of runtimes whose builder was not given
//! one. Each case runs in a child process (this test binary re-run with the variable
//! set), so no test changes the environment of a process with other threads in it.

use greenrt::runtime::{Builder, WORKER_THREADS_ENV};
use std::io;
use std::process::Command;

/// Set in the child, so it knows to run the case instead of spawning again.
const CHILD_ENV: &str = "GREENRT_WORKER_ENV_CHILD";

/// In the parent: re-runs only `test` in a child with `GREENRT_WORKER_THREADS=value`
/// and asserts that it ran `child` to the end. In the child: runs `child` and exits.
fn in_child(test: &str, value: &str, child: impl FnOnce()) {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        println!("CHILD-FINISHED");
        std::process::exit(0);
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env(WORKER_THREADS_ENV, value)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("CHILD-FINISHED"),
        "child with {WORKER_THREADS_ENV}={value:?} failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// How many threads of this process are named `<prefix>-<index>`, once `expected` are
/// or 10 s have passed: a new thread names itself once it runs, so the count can lag
/// behind `build` for a moment.
fn threads_named(prefix: &str, expected: usize) -> usize {
    let prefix = format!("{prefix}-");
    let count = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.starts_with(&prefix))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while count() != expected && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    count()
}

#[test]
fn the_variable_sets_the_worker_count_unless_the_builder_does() {
    in_child(
        "the_variable_sets_the_worker_count_unless_the_builder_does",
        "3",
        || {
            let rt = Builder::new().thread_name("envw").build().unwrap();
            assert_eq!(
                threads_named("envw", 3),
                3,
                "workers started from the variable"
            );
            assert_eq!(rt.run(|| greenrt::spawn(|| 5).join().unwrap()), 5);
            drop(rt);

            let rt = Builder::new()
                .worker_threads(1)
                .thread_name("explicit")
                .build()
                .unwrap();
            assert_eq!(threads_named("explicit", 1), 1, "the builder's count wins");
            drop(rt);
        },
    );
}

#[test]
fn an_invalid_value_is_a_build_error_naming_the_variable() {
    for value in ["0", "many", "1025"] {
        // The child runs the closure once, with its own value, and exits.
        in_child(
            "an_invalid_value_is_a_build_error_naming_the_variable",
            value,
            || {
                let value = std::env::var(WORKER_THREADS_ENV).unwrap();
                let err = Builder::new().build().unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
                let message = err.to_string();
                assert!(
                    message.contains(&format!("{WORKER_THREADS_ENV}=\"{value}\""))
                        && message.contains("from 1 to 1024"),
                    "the error says what to change: {message}"
                );
                let err = greenrt::runtime::Runtime::new().unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
                // An explicit count does not read the variable at all.
                drop(Builder::new().worker_threads(1).build().unwrap());
            },
        );
    }
}
