//! The context switch: the only code in greenrt that knows an instruction set.
//!
//! This module owns two operations and nothing else:
//! - [`switch`] saves the running context's callee-saved registers on its own stack,
//!   stores its stack pointer, loads another context's stack pointer and restores that
//!   context's registers. Both contexts are ordinary Rust code paused inside a call to
//!   `switch`, so the compiler has already saved every caller-saved register around
//!   that call.
//! - [`init_stack`] lays out a fresh stack so that the first `switch` to it "returns"
//!   into a trampoline that calls the green thread's entry function.
//!
//! Beside them, [`prefetch`]: a cache hint the scheduler gives for the context it will
//! switch to next; and [`call_on_stack`], a plain call made on another stack (the panic
//! hook of a green thread runs on a roomy stack through it, `panic_hook.rs`).
//!
//! It must never allocate, lock, panic or know what a green thread is: callers pass raw
//! stack pointers and keep every invariant about who may resume what (see `green.rs`).
//!
//! Each ISA is one file. Adding one (aarch64: x19-x29, lr, d8-d15) means writing that
//! file and testing it on real hardware; asm that was never run is not shipped, so other
//! targets fail to compile here rather than at run time.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub(crate) use x86_64::{
    call_on_stack, init_stack, init_stack_naked, prefetch, switch, switch_naked,
};

#[cfg(not(all(target_arch = "x86_64", unix)))]
compile_error!(
    "greenrt supports only x86_64 Unix (Linux) today: its context switch is hand-written \
     assembly and only the x86_64 version has been run and tested. Porting means adding \
     one file to src/arch/ (see src/arch/mod.rs)."
);

/// The saved stack pointer of a context that is not running. Its stack holds the saved
/// callee-saved registers and the address to return to.
pub(crate) type StackPointer = *mut u8;

/// Signature of the function a fresh stack starts in. It receives the pointer given to
/// [`init_stack`] and must never return: a green thread ends by switching away for the
/// last time.
pub(crate) type EntryFn = unsafe extern "sysv64" fn(arg: *mut u8) -> !;
