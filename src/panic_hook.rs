//! Running the panic hook of a green thread on a roomy stack.
//!
//! A panic runs the process's panic hook on the panicking thread's stack before it
//! unwinds. With `RUST_BACKTRACE` set, std's default hook captures and prints a
//! backtrace, which takes tens of KiB of stack (symbolizing it more): on a small green
//! stack (the builders accept 16 KiB) the hook itself would overflow the stack, and a
//! panic that `join()` should have returned as an `Err` would end the process as a
//! stack overflow instead.
//!
//! So greenrt wraps the hook that is installed when the first runtime starts. When the
//! panic happens in a green thread, the wrapper calls the previous hook on a separate
//! stack of its OS thread ([`HOOK_STACK_SIZE`], mapped at the first such panic, guard
//! page below, only touched pages cost memory) through
//! [`call_on_stack`](crate::arch::call_on_stack); anywhere else it calls it in place.
//! Backtraces taken in the hook still walk back through the green thread's frames (the
//! switch frame has CFI) and end at its entry.
//!
//! This module owns that wrapper and the per-thread hook stacks. It must never run a
//! hook on a hook stack that is already in use. Neither way to get there happens
//! today: std never nests hooks on a thread (a panic inside a hook aborts), and a hook
//! cannot suspend its green thread (green-blocking calls block in place while the
//! thread is panicking). `IN_USE` still checks, so that neither fact is load-bearing.
//! A hook that overflows its hook stack is reported as such by the fault handler
//! (`overflow.rs`), which reads the guard page's range from [`GUARD`].
//!
//! A hook set with `std::panic::set_hook` after the first runtime started replaces the
//! wrapper: green panics then run that hook on the green stack, as before (README,
//! CAVEATS).

use crate::stack::Stack;
use std::cell::{Cell, RefCell};
use std::panic::PanicHookInfo;
use std::sync::Once;

/// Usable size of a hook stack: far more than std's hook needs to capture, symbolize
/// and print a backtrace (a std thread's default stack is 2 MiB; this is virtual too).
pub(crate) const HOOK_STACK_SIZE: usize = 1024 * 1024;

static INSTALL: Once = Once::new();

/// Wraps the current panic hook (once per process; not while panicking, when std
/// refuses to change hooks: the next runtime to start tries again).
pub(crate) fn install() {
    if std::thread::panicking() {
        return;
    }
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| run_hook(&*previous, info)));
    });
}

thread_local! {
    /// This OS thread's hook stack, once a green thread on it has panicked.
    static HOOK_STACK: RefCell<Option<HookStack>> = const { RefCell::new(None) };
    /// Whether a hook is running on this thread's hook stack right now.
    static IN_USE: Cell<bool> = const { Cell::new(false) };
    /// The guard page of this thread's hook stack (start, end), or (0, 0): a plain
    /// copy the fault handler can read (async-signal-safe, no destructor).
    static GUARD: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// For the fault handler (overflow.rs): whether `address` is in the guard page of this
/// thread's hook stack while a hook runs on it.
pub(crate) fn hook_stack_overflow_at(address: usize) -> bool {
    let (start, end) = GUARD.get();
    IN_USE.get() && (start..end).contains(&address)
}

/// A hook stack; leaked instead of unmapped if its thread exits while a hook's frames
/// are still on it (a hook that suspended a green thread that never resumed).
struct HookStack(Option<Stack>);

impl Drop for HookStack {
    fn drop(&mut self) {
        if IN_USE.try_with(Cell::get).unwrap_or(true) {
            std::mem::forget(self.0.take());
        } else {
            let _ = GUARD.try_with(|guard| guard.set((0, 0)));
        }
    }
}

/// The wrapper: `previous(info)`, on this thread's hook stack when a green thread
/// panicked and the stack is free, else in place.
fn run_hook(previous: &(dyn Fn(&PanicHookInfo<'_>) + Sync + Send), info: &PanicHookInfo<'_>) {
    let in_green = crate::green::current_ptr().is_some();
    let top = if in_green && !IN_USE.get() {
        hook_stack_top()
    } else {
        None
    };
    let Some(top) = top else {
        return previous(info);
    };
    IN_USE.set(true);
    let mut call = || previous(info);
    let mut call: &mut dyn FnMut() = &mut call;
    // SAFETY: `top` is the aligned end of this thread's hook stack, mapped and owned by
    // HOOK_STACK for as long as the thread lives (or leaked, see HookStack), and unused:
    // IN_USE was false and is true until the call returns, so no other hook runs on it
    // meanwhile (and a hook cannot suspend its green thread: see the module docs).
    // `run_on_hook_stack` cannot unwind: a panic inside a panic hook aborts the process
    // before any unwinding, and a `sysv64` function aborts rather than unwind anyway.
    // `arg` points to `call`, which lives in this frame until the call returns.
    unsafe {
        crate::arch::call_on_stack(
            (&mut call as *mut &mut dyn FnMut()).cast(),
            run_on_hook_stack,
            top,
        );
    }
    IN_USE.set(false);
}

/// The first frame on the hook stack: calls the closure `arg` points to.
///
/// # Safety
/// `arg` points to a live `&mut dyn FnMut()`.
unsafe extern "sysv64" fn run_on_hook_stack(arg: *mut u8) {
    // SAFETY: the caller's contract.
    let call = unsafe { &mut *arg.cast::<&mut dyn FnMut()>() };
    call();
}

/// The top of this thread's hook stack, mapped on first use; None if it cannot be
/// mapped (then the hook runs in place, as without greenrt).
fn hook_stack_top() -> Option<*mut u8> {
    HOOK_STACK
        .try_with(|slot| {
            let mut slot = slot.borrow_mut();
            if slot.is_none() {
                let stack = Stack::new(HOOK_STACK_SIZE).ok()?;
                let guard = stack.guard();
                GUARD.set((guard.start, guard.end));
                *slot = Some(HookStack(Some(stack)));
            }
            slot.as_ref()?.0.as_ref().map(Stack::top)
        })
        .ok()
        .flatten()
}
