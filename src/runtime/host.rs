//! `Runtime::run` and `Runtime::block_on`: the caller's thread as a one-job scheduler.
//!
//! This module owns the loops that run on a thread that is not a worker: it enters the
//! runtime's context (so spawning and timers work there), runs one green thread or
//! future, and parks the thread while it waits. It must refuse to start on a worker or
//! inside a green thread, where parking would stall other work.

use super::context::{self, Local};
use super::Handle;
use crate::green::{self, Entry, Start, Suspend};
use crate::stack::Stack;
use crate::state::{AfterRun, SCHEDULED};
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// The host green thread's minimum stack: like a std thread's default.
const HOST_MIN_STACK: usize = 2 * 1024 * 1024;

fn refuse_nested(what: &str) {
    if context::in_task() {
        panic!(
            "{what} called in a greenrt future task: it would block a worker thread. \
             .await the future instead (or greenrt::spawn_async it and .await its handle)"
        );
    }
    if context::in_runtime_thread() {
        panic!(
            "{what} called from inside a greenrt runtime (a worker, a green thread, or \
             another run/block_on): it would block a worker thread. Spawn the work with \
             greenrt::spawn and join it, or wait with greenrt::block_on, instead"
        );
    }
}

pub(super) fn run<F, T>(handle: &Handle, f: F) -> T
where
    F: FnOnce() -> T,
{
    refuse_nested("Runtime::run");
    crate::overflow::ensure_alt_stack();
    let local = Local::host(handle.clone());
    let _enter = context::enter(&local);

    let mut result: Option<std::thread::Result<T>> = None;
    let out: *mut Option<std::thread::Result<T>> = &mut result;
    let entry: Box<dyn FnOnce(Start) + '_> = Box::new(move |start| {
        debug_assert!(matches!(start, Start::Run));
        let outcome = catch_unwind(AssertUnwindSafe(f));
        // SAFETY: `out` points to `result` in `run`'s frame, which does not return (or
        // unwind) before this green thread has completed; nothing else touches it until
        // then.
        unsafe { *out = Some(outcome) };
    });
    // SAFETY: the entry borrows `f`'s captures and `result` from this frame. It is
    // erased to 'static only to fit the control block; `run` drives the green thread to
    // completion before returning, and aborts rather than unwind past it, so the entry
    // never outlives what it borrows. The entry is not Send and never leaves this thread.
    let entry: Entry = unsafe { std::mem::transmute::<Box<dyn FnOnce(Start) + '_>, Entry>(entry) };

    let green = green::new_host(entry, take_host_stack(handle));

    // From here until the green thread completes, unwinding out of this frame would
    // leave its stack pointing at freed borrows: abort instead. The green thread's own
    // panics are caught on its stack, so what could unwind here is code this loop calls:
    // a tracing subscriber's callback at a switch, or a timer's waker.
    let bomb = green::AbortOnUnwind::new(
        "a panic unwound out of Runtime::run's scheduler loop (see the panic message \
         above: it came from code the loop calls, such as a tracing subscriber's callback \
         at a switch or a timer's waker) while its green thread, which borrows from the \
         caller's frame, was suspended",
    );
    loop {
        // SAFETY: the host green thread is RUNNING, held by this frame (an Arc), was
        // prepared by new_host, and its home is this thread.
        let why = unsafe { green::resume(&green) };
        match why {
            Suspend::Complete => {
                green.state.complete();
                break;
            }
            Suspend::Yield => {
                // Nothing else runs on this thread; let due timers fire, then go on. Like
                // on a worker, a yield leaves it RUNNING.
                crate::time::fire_due(&local.timers);
            }
            Suspend::Park => {
                if green.state.stop_running() == AfterRun::Idle {
                    while green.state.load() & SCHEDULED == 0 {
                        context::park_current_thread();
                    }
                } else {
                    // Woken while it ran: no park, which is where timers fire. Fire
                    // them here, or a green thread that keeps being woken while it
                    // waits for a sleep would never see the sleep end.
                    crate::time::fire_due(&local.timers);
                }
                green.state.start_run();
            }
        }
    }
    bomb.disarm();
    // SAFETY: it completed; we hold it.
    let finished = unsafe { green.take_finished() };
    if let Some(stack) = finished.stack {
        give_back_host_stack(handle, stack);
    }
    match result
        .take()
        .expect("the host green thread stored its result")
    {
        Ok(value) => value,
        Err(payload) => resume_unwind(payload),
    }
}

/// How many finished host stacks a runtime keeps (one per thread calling `run` at once
/// is typical).
const HOST_STACKS_KEPT: usize = 4;

/// A stack for a host green thread: a kept one, or a new mapping. Mapping 2 MiB plus a
/// guard costs far more than the rest of a short `run`.
fn take_host_stack(handle: &Handle) -> Stack {
    let kept = handle
        .shared
        .host_stacks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop();
    kept.unwrap_or_else(|| {
        let size = crate::stack::validate_stack_size(
            handle.shared.config.stack_size.max(HOST_MIN_STACK),
            "stack_size",
        )
        .expect("a validated stack size");
        Stack::new(size)
            .unwrap_or_else(|e| panic!("Runtime::run could not map its green thread's stack: {e}"))
    })
}

fn give_back_host_stack(handle: &Handle, stack: Stack) {
    let mut kept = handle
        .shared
        .host_stacks
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if kept.len() < HOST_STACKS_KEPT {
        kept.push(stack);
    }
}

pub(super) fn block_on<F: Future>(handle: &Handle, future: F) -> F::Output {
    refuse_nested("Runtime::block_on");
    let local = Local::host(handle.clone());
    let _enter = context::enter(&local);
    crate::bridge::block_on_thread(future)
}
