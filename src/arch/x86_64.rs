//! x86_64 System V context switch.
//!
//! # What is saved
//! The SysV ABI makes rbx, rbp, r12, r13, r14, r15 and rsp callee-saved; everything
//! else (rax, rcx, rdx, rsi, rdi, r8-r11, xmm0-15, the flags) may be clobbered by any
//! call, so the compiler already keeps nothing live in them across our `call switch`.
//! [`switch`] therefore pushes exactly six registers, swaps stack pointers and pops six.
//!
//! Not saved: MXCSR and the x87 control word. They are callee-saved too, but changing
//! them is rare and saving them costs two extra instructions on every switch; green code
//! must restore them before it can next be switched out (README, CAVEATS).
//!
//! # Layout of a suspended context
//! ```text
//!   higher addresses
//!   | return address   |  <- where `switch` returns when this context resumes
//!   | rbp              |
//!   | rbx              |
//!   | r12              |
//!   | r13              |
//!   | r14              |
//!   | r15              |  <- saved StackPointer
//!   lower addresses
//! ```
//! A fresh stack from [`init_stack`] looks the same, with the trampoline as the return
//! address, the entry function in r12 and its argument in rbx.
//!
//! # Unwinding and backtraces
//! Unwinding never crosses a switch: the green entry function catches every panic
//! (green.rs). Backtraces walk the green stack frame by frame and must stop at its
//! first frame instead of reading past the top of the mapping. The trampoline's CFI says
//! `.cfi_undefined rip`, which is how DWARF marks the outermost frame (glibc's `_start`
//! and `clone` do the same), and it starts with rbp = 0 for frame-pointer walkers such
//! as perf. `switch` itself needs no CFI: no backtrace is ever taken while inside it.

use super::{EntryFn, StackPointer};
use core::arch::naked_asm;

/// Saves the current context's callee-saved registers on its stack, stores its stack
/// pointer in `*from`, then restores the context saved at `to` and returns into it.
/// From the caller's point of view, the call returns when some other context switches
/// back to the pointer stored in `*from`.
///
/// # Safety
/// - `from` must be valid for a write of one pointer.
/// - `to` must come from [`init_stack`] or from a previous `switch` that stored it, and
///   that context must not be running on any thread, nor be resumed by anyone else,
///   until it switches away again.
/// - The caller must be on the OS thread that last ran `to` (if `to` has ever run):
///   thread-local addresses may be cached in its saved frames (design.md, section 2).
#[unsafe(naked)]
pub(crate) unsafe extern "sysv64" fn switch(from: *mut StackPointer, to: StackPointer) {
    naked_asm!(
        // The `call` that brought us here pushed the return address. Save the six
        // callee-saved registers below it; this is the layout documented above.
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        // Publish where this context's registers are (rdi = from).
        "mov [rdi], rsp",
        // Adopt the other context's stack (rsi = to) ...
        "mov rsp, rsi",
        // ... restore its registers in the reverse order of the pushes ...
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        // ... and return to where it called `switch` (or into the trampoline, for a
        // stack laid out by `init_stack`).
        "ret",
    )
}

/// First code run on a fresh stack: `switch` returns here with the entry function in
/// r12 and its argument in rbx (placed there by [`init_stack`]).
#[unsafe(naked)]
unsafe extern "sysv64" fn trampoline() -> ! {
    naked_asm!(
        ".cfi_startproc",
        // The return address of this frame is undefined: unwinders and backtraces stop
        // here instead of walking off the top of the stack.
        ".cfi_undefined rip",
        // rsp is 16-byte aligned here (see init_stack), as the call below requires.
        "mov rdi, rbx",
        "call r12",
        // The entry function never returns; trap if it ever does.
        "ud2",
        ".cfi_endproc",
    )
}

/// Lays out a fresh stack whose highest usable address is `top` so that the first
/// [`switch`] to the returned pointer calls `entry(arg)` on that stack.
///
/// # Safety
/// `top` must be the 16-byte-aligned end of a writable region with at least 128 bytes
/// below it, not used by anything else while the context lives.
pub(crate) unsafe fn init_stack(top: *mut u8, entry: EntryFn, arg: *mut u8) -> StackPointer {
    debug_assert_eq!(top as usize % 16, 0, "stack top must be 16-byte aligned");
    // Slots from the saved stack pointer upwards: r15 r14 r13 r12 rbx rbp, then the
    // return address. After `switch` pops those seven words, rsp = sp + 56; the
    // trampoline's `call` needs rsp 16-byte aligned, so sp + 56 = top - 16 (keeping
    // one spare, zeroed 16-byte slot at the very top).
    let sp = top.sub(72) as *mut usize;
    let slots: [usize; 9] = [
        0,                                // r15
        0,                                // r14
        0,                                // r13
        entry as *const () as usize,      // r12: called by the trampoline
        arg as usize,                     // rbx: becomes the entry's first argument
        0,                                // rbp: 0 ends frame-pointer walks
        trampoline as *const () as usize, // return address of the first switch
        0,                                // spare
        0,                                // spare
    ];
    // SAFETY: the caller guarantees [top - 128, top) is writable and ours; we write
    // 72 bytes below `top`, 8-byte aligned since top is 16-byte aligned.
    unsafe { core::ptr::copy_nonoverlapping(slots.as_ptr(), sp, slots.len()) };
    sp as StackPointer
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    // Each context's saved stack pointer lives in a thread-local cell, so the other
    // context can find it. The test never leaves this thread.
    thread_local! {
        static MAIN_SP: Cell<StackPointer> = const { Cell::new(core::ptr::null_mut()) };
        static CO_SP: Cell<StackPointer> = const { Cell::new(core::ptr::null_mut()) };
    }

    /// The coroutine adds its loop index to `*sum` and switches back, `rounds` times.
    /// Keeping `i`, `sum` and `rounds` live across the switch puts them in callee-saved
    /// registers, which the switch must preserve.
    unsafe extern "sysv64" fn co_entry(arg: *mut u8) -> ! {
        let sum = arg as *mut u64;
        for i in 0..100u64 {
            // SAFETY: `sum` points to main's local, alive until main has seen 100 rounds.
            unsafe { *sum += i };
            // SAFETY: main is suspended in `switch` and stored its sp in MAIN_SP.
            unsafe { switch(CO_SP.with(Cell::as_ptr), MAIN_SP.get()) };
        }
        // Main never resumes us after the 100th round.
        std::process::abort()
    }

    #[test]
    fn switch_round_trips_preserve_state() {
        let mut stack = vec![0u128; 4096]; // 64 KiB, 16-byte aligned
                                           // SAFETY: the end of a Vec<u128> is 16-byte aligned and the Vec is ours.
        let top = unsafe { (stack.as_mut_ptr() as *mut u8).add(stack.len() * 16) };
        let mut sum = 0u64;
        // SAFETY: `top` is the aligned end of a 64 KiB region alive for the whole test.
        let sp = unsafe { init_stack(top, co_entry, &mut sum as *mut u64 as *mut u8) };
        CO_SP.set(sp);
        let mut expected = 0u64;
        for i in 0..100u64 {
            // SAFETY: the coroutine is suspended (or fresh) and runs only on this thread.
            unsafe { switch(MAIN_SP.with(Cell::as_ptr), CO_SP.get()) };
            expected += i;
            // SAFETY: the coroutine is suspended, so nobody else touches `sum`.
            assert_eq!(unsafe { core::ptr::read_volatile(&sum) }, expected);
        }
        assert_eq!(expected, 4950);
        drop(stack);
    }
}
