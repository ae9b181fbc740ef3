//! Backtraces inside green threads: a panic with RUST_BACKTRACE=1 prints frames up to
//! the green entry and stops cleanly (no crash walking off the stack), and
//! `Backtrace::force_capture()` works. The panicking cases run in a child process (this
//! test binary, re-run with an environment variable) so a crash would be seen as one.

use std::process::Command;

const CHILD_ENV: &str = "GREENRT_BACKTRACE_CHILD";

fn child_scenario() {
    let rt = greenrt::runtime::Builder::new()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.run(|| {
        // A nested green thread panics several frames deep.
        let outer = greenrt::spawn(|| {
            let inner = greenrt::spawn(|| {
                #[inline(never)]
                fn deep(n: u32) -> u32 {
                    if n == 0 {
                        panic!("panic deep inside a green thread");
                    }
                    deep(n - 1) + 1
                }
                greenrt::yield_now();
                deep(5)
            });
            inner.join()
        });
        let result = outer
            .join()
            .expect("outer green thread returns the inner result");
        assert!(result.is_err(), "the inner panic is returned by join");
    });
    println!("CHILD-DONE");
}

#[test]
fn panic_backtrace_in_nested_green_thread_stops_cleanly() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child_scenario();
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "panic_backtrace_in_nested_green_thread_stops_cleanly",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "child crashed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(stdout.contains("CHILD-DONE"), "{stdout}");
    assert!(
        stderr.contains("panic deep inside a green thread"),
        "{stderr}"
    );
    assert!(
        stderr.contains("stack backtrace:"),
        "a backtrace is printed:\n{stderr}"
    );
    // The walk reaches the green entry and ends there.
    assert!(stderr.contains("greenrt::green::green_main"), "{stderr}");
    assert!(stderr.contains("deep"), "{stderr}");
}

#[test]
fn force_capture_inside_a_green_thread_works() {
    let rt = greenrt::runtime::Builder::new()
        .worker_threads(1)
        .build()
        .unwrap();
    let text = rt.run(|| {
        greenrt::spawn(|| {
            greenrt::yield_now();
            let backtrace = std::backtrace::Backtrace::force_capture();
            assert_eq!(
                backtrace.status(),
                std::backtrace::BacktraceStatus::Captured
            );
            backtrace.to_string()
        })
        .join()
        .unwrap()
    });
    assert!(text.contains("green_main"), "{text}");
    // Nothing beyond the first green frame: no frames of the worker's own stack.
    assert!(!text.contains("greenrt::runtime::worker::run"), "{text}");
}
