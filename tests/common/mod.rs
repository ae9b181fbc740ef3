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
/// read-write mapping of that size right above a one-page `PROT_NONE` guard. Choose a
/// size nothing else in the process maps (OS thread stacks are megabytes; allocator
/// arenas bigger still).
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
            && hi - lo == usable_kib * 1024
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
