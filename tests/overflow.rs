//! Stack overflow in a green thread is reported like std reports it for OS threads:
//! a message naming the green thread, then abort. Other faults are not swallowed.
//! Each case crashes on purpose, so it runs in a child process (this test binary,
//! re-run with an environment variable naming the case).

use std::process::Command;

const CASE_ENV: &str = "GREENRT_OVERFLOW_CASE";

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    // Never true in practice (the stack overflows first); keeps the recursion
    // conditional for the compiler.
    if depth == u64::MAX {
        return 0;
    }
    // A frame that cannot be optimised away.
    let frame = [depth; 64];
    std::hint::black_box(&frame);
    recurse(depth + 1) + std::hint::black_box(frame[3])
}

fn run_case(case: &str) {
    let rt = greenrt::runtime::Builder::new()
        .worker_threads(2)
        .build()
        .unwrap();
    match case {
        "named" => rt.run(|| {
            greenrt::Builder::new()
                .name("deep-recursion".into())
                .stack_size(64 * 1024)
                .spawn(|| recurse(0))
                .unwrap()
                .join()
                .ok();
        }),
        "unnamed" => rt.run(|| {
            use std::sync::atomic::{AtomicBool, Ordering};
            use std::sync::Arc;
            // The green thread overflows only after the id line is out, so the two
            // writes to stderr cannot interleave (it may run on the other worker).
            let id_written = Arc::new(AtomicBool::new(false));
            let go = id_written.clone();
            let handle = greenrt::spawn(move || {
                while !go.load(Ordering::Acquire) {
                    greenrt::yield_now();
                }
                recurse(0)
            });
            let line = format!("UNNAMED-ID={}\n", handle.green().id());
            std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes()).unwrap();
            id_written.store(true, Ordering::Release);
            handle.join().ok();
        }),
        "null" => {
            // An ordinary fault, not in any guard page, after the handler is installed.
            let null = std::hint::black_box(std::ptr::null::<u64>());
            // SAFETY: not safe at all: this test wants the fault.
            let value = unsafe { std::ptr::read_volatile(null) };
            println!("read {value}");
        }
        _ => unreachable!(),
    }
    println!("CASE-SURVIVED");
}

/// In the parent: re-runs this test binary with only `test` selected and `case` in the
/// environment, and returns how it ended. In that child, runs the case (which crashes
/// or exits) and never returns.
fn run_child(test: &str, case: &str) -> std::process::Output {
    if std::env::var_os(CASE_ENV).is_some() {
        run_case(case);
        std::process::exit(0);
    }
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CASE_ENV, case)
        .output()
        .unwrap()
}

fn signal_of(output: &std::process::Output) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    output.status.signal()
}

#[test]
fn overflow_in_named_green_thread_is_reported_and_aborts() {
    let output = run_child(
        "overflow_in_named_green_thread_is_reported_and_aborts",
        "named",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        signal_of(&output),
        Some(libc::SIGABRT),
        "{:?}\n{stderr}",
        output.status
    );
    assert!(
        stderr.contains("green thread 'deep-recursion' has overflowed its stack (64 KiB)"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("CASE-SURVIVED"));
}

#[test]
fn overflow_in_unnamed_green_thread_names_its_id() {
    let output = run_child("overflow_in_unnamed_green_thread_names_its_id", "unnamed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        signal_of(&output),
        Some(libc::SIGABRT),
        "{:?}\n{stderr}",
        output.status
    );
    let id = stderr
        .lines()
        .find_map(|l| l.strip_prefix("UNNAMED-ID="))
        .expect("the child printed the id");
    assert!(
        stderr.contains(&format!(
            "green thread '{id}' has overflowed its stack (256 KiB)"
        )),
        "{stderr}"
    );
}

#[test]
fn ordinary_null_fault_still_crashes_with_sigsegv() {
    let output = run_child("ordinary_null_fault_still_crashes_with_sigsegv", "null");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        signal_of(&output),
        Some(libc::SIGSEGV),
        "{:?}\n{stderr}",
        output.status
    );
    assert!(!stderr.contains("overflowed"), "{stderr}");
}
