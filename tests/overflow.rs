//! Stack overflow in a green thread is reported like std reports it for OS threads:
//! a message naming the green thread, then abort. Other faults are not swallowed, a
//! signal handler of the user's keeps working, and the alternate signal stacks greenrt
//! maps go away with their threads. Each case crashes on purpose, so it runs in a child
//! process (`common::in_child`).

mod common;
use common::{
    child_finished, child_signalled, describe_child, in_child, in_child_with, recurse, runtime,
    vm_size_kib,
};

/// From inside a runtime: spawns a green thread named `name` with a `kib` KiB stack
/// that recurses until it overflows, and joins it (the process aborts first).
fn overflow_named(name: &str, kib: usize) {
    greenrt::Builder::new()
        .name(name.into())
        .stack_size(kib * 1024)
        .spawn(|| recurse(0))
        .unwrap()
        .join()
        .ok();
}

/// Asserts that the child aborted with `report` (std's wording) on stderr.
fn assert_overflow_reported(output: &std::process::Output, report: &str) {
    let stderr = child_signalled(output, libc::SIGABRT);
    assert!(stderr.contains(report), "{stderr}");
}

#[test]
fn overflow_in_named_green_thread_is_reported_and_aborts() {
    let output = in_child(
        "overflow_in_named_green_thread_is_reported_and_aborts",
        "named",
        || {
            runtime(2).run(|| {
                overflow_named("deep-recursion", 64);
            })
        },
    );
    assert_overflow_reported(
        &output,
        "green thread 'deep-recursion' has overflowed its stack (64 KiB)",
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("CHILD-FINISHED"));
}

#[test]
fn overflow_in_unnamed_green_thread_names_its_id() {
    let output = in_child(
        "overflow_in_unnamed_green_thread_names_its_id",
        "unnamed",
        || {
            runtime(2).run(|| {
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
            })
        },
    );
    let stderr = child_signalled(&output, libc::SIGABRT);
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
    let output = in_child(
        "ordinary_null_fault_still_crashes_with_sigsegv",
        "null",
        || {
            let _rt = runtime(2);
            // An ordinary fault, not in any guard page, after the handler is installed.
            let null = std::hint::black_box(std::ptr::null::<u64>());
            // SAFETY: not safe at all: this test wants the fault.
            let value = unsafe { std::ptr::read_volatile(null) };
            println!("read {value}");
        },
    );
    let stderr = child_signalled(&output, libc::SIGSEGV);
    assert!(!stderr.contains("overflowed"), "{stderr}");
}

extern "C" fn user_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let msg = b"USER-HANDLER\n";
    // SAFETY: write(2) and _exit(2) are async-signal-safe.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(42);
    }
}

/// The start of the guard page below the green stack that holds `addr`.
fn guard_below(addr: usize) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut previous: Option<(usize, usize, String)> = None;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (lo, hi) = fields.next().unwrap().split_once('-').unwrap();
        let (lo, hi) = (
            usize::from_str_radix(lo, 16).unwrap(),
            usize::from_str_radix(hi, 16).unwrap(),
        );
        let perms = fields.next().unwrap().to_string();
        if (lo..hi).contains(&addr) {
            let (plo, phi, pperms) = previous.expect("a mapping below");
            assert_eq!(
                (phi, pperms.as_str()),
                (lo, "---p"),
                "no guard below the stack"
            );
            return plo;
        }
        previous = Some((lo, hi, perms));
    }
    panic!("address not mapped")
}

#[test]
fn overflow_is_still_reported_when_sigsegv_was_inherited_ignored() {
    let output = in_child_with(
        "overflow_is_still_reported_when_sigsegv_was_inherited_ignored",
        "overflow-ign",
        |command| {
            use std::os::unix::process::CommandExt;
            // SAFETY: as above.
            unsafe {
                command.pre_exec(|| {
                    libc::signal(libc::SIGSEGV, libc::SIG_IGN);
                    Ok(())
                });
            }
        },
        || {
            let rt = runtime(1);
            rt.run(|| {
                overflow_named("deep", 64);
            });
        },
    );
    assert_overflow_reported(
        &output,
        "green thread 'deep' has overflowed its stack (64 KiB)",
    );
}

#[test]
fn overflow_of_the_host_green_thread_is_reported() {
    let output = in_child(
        "overflow_of_the_host_green_thread_is_reported",
        "host",
        || {
            let rt = runtime(1);
            rt.run(|| recurse(0));
        },
    );
    assert_overflow_reported(&output, "has overflowed its stack (2048 KiB)");
}

#[test]
fn overflow_of_a_plain_thread_is_still_reported_by_std() {
    let output = in_child(
        "overflow_of_a_plain_thread_is_still_reported_by_std",
        "plain",
        || {
            let _rt = runtime(1);
            std::thread::Builder::new()
                .name("plain-deep".into())
                .stack_size(128 * 1024)
                .spawn(|| recurse(0))
                .unwrap()
                .join()
                .ok();
        },
    );
    let stderr = child_signalled(&output, libc::SIGABRT);
    assert!(
        stderr.contains("thread 'plain-deep'") && stderr.contains("has overflowed its stack"),
        "{stderr}"
    );
    assert!(!stderr.contains("green thread"), "{stderr}");
}

#[test]
fn overflow_of_a_future_task_on_a_worker_is_reported_by_std() {
    let output = in_child(
        "overflow_of_a_future_task_on_a_worker_is_reported_by_std",
        "task",
        || {
            let rt = runtime(1);
            rt.spawn_async(async { recurse(0) }).join().ok();
        },
    );
    let stderr = child_signalled(&output, libc::SIGABRT);
    assert!(stderr.contains("has overflowed its stack"), "{stderr}");
    assert!(!stderr.contains("green thread"), "{stderr}");
}

#[test]
fn a_user_handler_installed_before_the_runtime_gets_other_faults_on_green_threads() {
    let output = in_child(
        "a_user_handler_installed_before_the_runtime_gets_other_faults_on_green_threads",
        "user-before",
        || {
            // SAFETY: installing a handler with a valid sigaction.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = user_handler as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(libc::SIGSEGV, &action, std::ptr::null_mut());
            }
            let rt = runtime(1);
            rt.spawn(|| {
                let null = std::hint::black_box(std::ptr::null::<u64>());
                // SAFETY: not safe: this test wants the fault.
                unsafe { std::ptr::read_volatile(null) }
            })
            .join()
            .ok();
        },
    );
    assert_eq!(
        output.status.code(),
        Some(42),
        "{}",
        describe_child(&output)
    );
}

#[test]
fn a_user_handler_installed_before_the_runtime_does_not_see_green_overflows() {
    let output = in_child(
        "a_user_handler_installed_before_the_runtime_does_not_see_green_overflows",
        "user-before-overflow",
        || {
            // SAFETY: as above.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = user_handler as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(libc::SIGSEGV, &action, std::ptr::null_mut());
            }
            let rt = runtime(1);
            rt.spawn(|| recurse(0)).join().ok();
        },
    );
    child_signalled(&output, libc::SIGABRT);
}

#[test]
fn a_fault_on_another_green_threads_guard_page_is_a_plain_sigsegv() {
    let output = in_child(
        "a_fault_on_another_green_threads_guard_page_is_a_plain_sigsegv",
        "other-guard",
        || {
            let rt = runtime(1);
            rt.run(|| {
                let (tx, rx) = std::sync::mpsc::channel();
                let (release_tx, release_rx) = futures::channel::oneshot::channel::<()>();
                let b = greenrt::Builder::new()
                    .name("victim".into())
                    .spawn(move || {
                        let local = 0u8;
                        tx.send(guard_below(&local as *const u8 as usize)).unwrap();
                        greenrt::block_on(release_rx).ok();
                    })
                    .unwrap();
                let guard = rx.recv().unwrap();
                greenrt::Builder::new()
                    .name("reader".into())
                    .spawn(move || {
                        // SAFETY: not safe: this test wants the fault.
                        unsafe { std::ptr::read_volatile(guard as *const u8) }
                    })
                    .unwrap()
                    .join()
                    .ok();
                drop(release_tx);
                b.join().ok();
            });
        },
    );
    let stderr = child_signalled(&output, libc::SIGSEGV);
    assert!(!stderr.contains("overflowed"), "{stderr}");
}

#[test]
fn a_fault_on_a_plain_thread_with_the_handler_installed_is_a_plain_sigsegv() {
    let output = in_child(
        "a_fault_on_a_plain_thread_with_the_handler_installed_is_a_plain_sigsegv",
        "plain-fault",
        || {
            let _rt = runtime(1);
            std::thread::spawn(|| {
                let null = std::hint::black_box(std::ptr::null::<u64>());
                // SAFETY: not safe: this test wants the fault.
                unsafe { std::ptr::read_volatile(null) }
            })
            .join()
            .ok();
        },
    );
    child_signalled(&output, libc::SIGSEGV);
}

#[test]
fn overflow_of_a_child_run_inline_by_its_joiner_is_reported() {
    let output = in_child(
        "overflow_of_a_child_run_inline_by_its_joiner_is_reported",
        "inline",
        || {
            let rt = runtime(1);
            rt.spawn(|| {
                overflow_named("inline-child", 128);
            })
            .join()
            .ok();
        },
    );
    assert_overflow_reported(
        &output,
        "green thread 'inline-child' has overflowed its stack (128 KiB)",
    );
}

/// Threads std did not create (a C host calling into Rust, a foreign thread pool) get
/// their alternate signal stack from `overflow::ensure_alt_stack` when they call
/// `Runtime::run`; it must go away with the thread.
#[test]
fn alt_stacks_of_foreign_threads_calling_run_are_unmapped_when_they_exit() {
    extern "C" fn foreign_thread(arg: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `arg` is the runtime below, alive until every thread was joined.
        let rt = unsafe { &*(arg as *const greenrt::runtime::Runtime) };
        rt.run(|| greenrt::spawn(|| ()).join().unwrap());
        // Where this thread's alternate signal stack is, for the parent to check.
        // SAFETY: querying only.
        let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
        unsafe { libc::sigaltstack(std::ptr::null(), &mut current) };
        current.ss_sp
    }
    fn is_mapped(addr: usize) -> bool {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .any(|line| {
                let range = line.split_whitespace().next().unwrap();
                let (lo, hi) = range.split_once('-').unwrap();
                (usize::from_str_radix(lo, 16).unwrap()..usize::from_str_radix(hi, 16).unwrap())
                    .contains(&addr)
            })
    }
    let output = in_child(
        "alt_stacks_of_foreign_threads_calling_run_are_unmapped_when_they_exit",
        "foreign",
        || {
            let rt = runtime(1);
            let run_on_foreign_thread = || -> usize {
                // SAFETY: a plain pthread running `foreign_thread`, joined right away.
                unsafe {
                    let mut alt: *mut libc::c_void = std::ptr::null_mut();
                    let mut thread: libc::pthread_t = std::mem::zeroed();
                    let arg = &rt as *const greenrt::runtime::Runtime as *mut libc::c_void;
                    assert_eq!(
                        libc::pthread_create(&mut thread, std::ptr::null(), foreign_thread, arg),
                        0
                    );
                    assert_eq!(libc::pthread_join(thread, &mut alt), 0);
                    alt as usize
                }
            };
            let before = vm_size_kib();
            let alts: Vec<usize> = (0..50).map(|_| run_on_foreign_thread()).collect();
            let after = vm_size_kib();
            let still_mapped = alts.iter().filter(|&&a| a != 0 && is_mapped(a)).count();
            println!("VmSize {before} -> {after} KiB; alt stacks still mapped: {still_mapped}/50");
            assert_eq!(
                still_mapped, 0,
                "50 foreign threads ran Runtime::run and exited; VmSize {before} -> {after} KiB"
            );
        },
    );
    assert!(child_finished(&output), "{}", describe_child(&output));
}
