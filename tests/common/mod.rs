//! Helpers shared by the integration tests.
// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]

use greenrt::runtime::{Builder, Runtime};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Duration;

/// A runtime with `workers` worker threads and default settings.
pub fn runtime(workers: usize) -> Runtime {
    Builder::new().worker_threads(workers).build().unwrap()
}

/// Runs `body` on its own thread and fails the test with a message if it does not
/// finish within `limit` (a lost wake would otherwise hang the binary). Panics pass
/// through.
pub fn with_watchdog<T: Send + 'static>(
    what: &str,
    limit: Duration,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(body)));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(payload)) => resume_unwind(payload),
        Err(_) => panic!("watchdog: {what} did not finish within {limit:?}"),
    }
}

/// Green thread stacks of one usable size mapped in this process right now.
#[derive(Clone, Copy, Debug, Default)]
pub struct StackMappings {
    /// How many are mapped (running, suspended or pooled).
    pub count: u64,
    /// Their resident memory, KiB.
    pub rss_kib: u64,
}

/// Reads /proc/self/smaps for green stacks of `usable_kib`: a private anonymous
/// read-write mapping of that size plus one page (the colour page on top, see
/// `src/stack.rs`) right above a one-page `PROT_NONE` guard. Choose a size nothing
/// else in the process maps (OS thread stacks are megabytes; allocator arenas bigger
/// still).
pub fn stack_mappings(usable_kib: u64) -> StackMappings {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
    let mut found = StackMappings::default();
    // (start, end, perms, has a path) of the mapping being read, and of the one before.
    let mut current: Option<(u64, u64, String, bool)> = None;
    let mut previous: Option<(u64, u64, String, bool)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let head = fields.next().unwrap_or("");
        if let Some((lo, hi)) = head.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) {
                let perms = fields.next().unwrap_or("").to_string();
                let has_path = fields.nth(3).is_some();
                previous = current.replace((lo, hi, perms, has_path));
                continue;
            }
        }
        let Some(rss) = line.strip_prefix("Rss:") else {
            continue;
        };
        let (Some((lo, hi, perms, has_path)), Some((guard_lo, guard_hi, guard_perms, _))) =
            (&current, &previous)
        else {
            continue;
        };
        let is_stack = perms == "rw-p"
            && !has_path
            && hi - lo == usable_kib * 1024 + 4096
            && guard_perms == "---p"
            && *guard_hi == *lo
            && guard_hi - guard_lo == 4096;
        if is_stack {
            found.count += 1;
            found.rss_kib += rss
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .expect("Rss");
        }
    }
    found
}

/// The environment variable that tells a test binary it runs as [`in_child`]'s child.
const CHILD_CASE_ENV: &str = "GREENRT_TEST_CHILD_CASE";

/// How long a child of [`in_child`] may run before it counts as hung.
pub const CHILD_WATCHDOG: Duration = Duration::from_secs(60);

/// For cases that abort, crash, hang or change process-wide state: in the parent,
/// re-runs this test binary with only `test` selected and `case` in the environment,
/// lets `setup` adjust the command (environment, signal dispositions), and returns the
/// child's output; a child still running after [`CHILD_WATCHDOG`] is killed and the
/// test fails, printing its stderr. In the child, runs `child`, prints `CHILD-FINISHED`
/// and exits 0 (see [`child_finished`]).
pub fn in_child_with(
    test: &str,
    case: &str,
    setup: impl FnOnce(&mut std::process::Command),
    child: impl FnOnce(),
) -> std::process::Output {
    use std::process::{Command, Stdio};
    if std::env::var_os(CHILD_CASE_ENV).is_some() {
        child();
        println!("CHILD-FINISHED");
        std::process::exit(0);
    }
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_CASE_ENV, case)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    setup(&mut command);
    let mut process = command.spawn().unwrap();
    // Drained while it runs: a child that writes more than a pipe holds (64 KiB, e.g.
    // many panics with backtraces) would otherwise block and look hung.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(process.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(process.stderr.take().map(|p| Box::new(p) as _));
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = process.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > CHILD_WATCHDOG {
            process.kill().unwrap();
            process.wait().unwrap();
            panic!(
                "the child hung (killed after {CHILD_WATCHDOG:?}); its stderr:\n{}",
                String::from_utf8_lossy(&stderr.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// [`in_child_with`] with the command as it is.
pub fn in_child(test: &str, case: &str, child: impl FnOnce()) -> std::process::Output {
    in_child_with(test, case, |_| {}, child)
}

/// Whether the child ran its case to the end and exited 0.
pub fn child_finished(output: &std::process::Output) -> bool {
    output.status.success() && String::from_utf8_lossy(&output.stdout).contains("CHILD-FINISHED")
}

/// The child's status and both its outputs, for assertion messages.
pub fn describe_child(output: &std::process::Output) -> String {
    format!(
        "{:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts that the child was killed by `signal`; returns what it wrote to stderr.
pub fn child_signalled(output: &std::process::Output, signal: i32) -> String {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        output.status.signal(),
        Some(signal),
        "{}",
        describe_child(output)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// This process's virtual memory size, KiB (`VmSize` in /proc/self/status).
pub fn vm_size_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|line| line.strip_prefix("VmSize:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("a VmSize line")
}

/// The text of a panic payload (`&str` or `String`), or "" for any other payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Recurses until the stack overflows, 512 bytes of frame per call that the compiler
/// cannot remove.
#[inline(never)]
pub fn recurse(depth: u64) -> u64 {
    // Never true in practice (the stack overflows first); keeps the recursion
    // conditional for the compiler.
    if depth == u64::MAX {
        return 0;
    }
    let frame = [depth; 64];
    std::hint::black_box(&frame);
    recurse(depth + 1) + std::hint::black_box(frame[3])
}
