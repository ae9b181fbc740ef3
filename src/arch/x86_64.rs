//! x86_64 System V context switch.
//!
//! # What is saved
//! The SysV ABI makes rbx, rbp, r12-r15 and rsp callee-saved; everything else (rax, rcx,
//! rdx, rsi, rdi, r8-r11, xmm0-15, the flags) may be clobbered by any call. [`switch`]
//! is inline `asm!` that pushes rbx and rbp by hand (LLVM reserves them, so they cannot
//! be asm operands) and declares r12-r15 and every caller-saved register clobbered
//! (`clobber_abi("sysv64")`), so the compiler saves only the registers it actually has
//! live at each switch site: often none at all.
//!
//! Not saved: MXCSR and the x87 control word. They are callee-saved too, but changing
//! them is rare and saving them costs two extra instructions on every switch; green code
//! must restore them before it can next be switched out (README, CAVEATS).
//!
//! # Layout of a suspended context
//! ```text
//!   higher addresses
//!   | rbp              |
//!   | rbx              |
//!   | resume address   |  <- saved StackPointer (label `2:` inside its switch)
//!   lower addresses
//! ```
//! A fresh stack from [`init_stack`] holds, from the saved pointer up: the trampoline's
//! address (the "resume address"), the entry's argument and the entry function.
//!
//! # Why inline asm and `jmp`, not a naked function and `ret`
//! Both were measured (`RawSwitch` in `bench.rs`, same run, this 2-core VM): a naked
//! `switch` function (push six registers, swap rsp, pop six, `ret`) took 15.1 ns per
//! round trip, this inline version 2.3 ns, corosensei 2.5 ns. The naked version's `ret`
//! always returns to the *other* context's call site, which the CPU's return-stack
//! predictor never expects: one misprediction per switch. Here the resume is an
//! indirect `jmp`, predicted by the branch target buffer, and no call/ret pair is
//! broken. The naked version is kept below as the measured alternative.
//!
//! # Unwinding and backtraces
//! Unwinding never crosses a switch: the green entry function catches every panic
//! (green.rs). Backtraces walk the green stack frame by frame and must stop at its
//! first frame instead of reading past the top of the mapping. The trampoline's CFI says
//! `.cfi_undefined rip`, which is how DWARF marks the outermost frame (glibc's `_start`
//! and `clone` do the same), and it zeroes rbp for frame-pointer walkers such as perf.
//! The switch itself needs no CFI: no backtrace is ever taken while inside it.

use super::{EntryFn, StackPointer};
use core::arch::naked_asm;

/// Saves the current context (rbx, rbp and a resume address on its stack; everything
/// else through the clobber list), stores its stack pointer in `*from`, and resumes the
/// context saved at `to`. Returns when some other context switches back to the pointer
/// stored in `*from`.
///
/// # Safety
/// - `from` must be valid for a write of one pointer.
/// - `to` must come from [`init_stack`] or from a previous `switch` that stored it, and
///   that context must not be running on any thread, nor be resumed by anyone else,
///   until it switches away again.
/// - The caller must be on the OS thread that last ran `to` (if `to` has ever run):
///   thread-local addresses may be cached in its saved frames (design.md, section 2).
#[inline(always)]
pub(crate) unsafe fn switch(from: *mut StackPointer, to: StackPointer) {
    // SAFETY: forwarded from the caller; the asm preserves every register the ABI
    // requires across it (rbx and rbp by hand, the rest through the clobber list) and
    // leaves rsp as it found it when this context resumes.
    unsafe {
        core::arch::asm!(
            // rbx and rbp cannot be declared clobbered: save them on our stack.
            "push rbp",
            "push rbx",
            // Where this context resumes: label 2 below.
            "lea rax, [rip + 2f]",
            "push rax",
            // Publish our stack pointer (rdi = from) and adopt the other's (rsi = to).
            "mov [rdi], rsp",
            "mov rsp, rsi",
            // Jump (not ret) to the other context's resume address.
            "pop rax",
            "jmp rax",
            // Resumed: restore what we pushed.
            "2:",
            "pop rbx",
            "pop rbp",
            in("rdi") from,
            in("rsi") to,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            clobber_abi("sysv64"),
        )
    }
}

/// Asks the CPU to bring the cache line holding `addr` towards L1, without waiting.
///
/// A hint only: `prefetcht0` reads nothing architecturally and never faults, so any
/// address (null, unmapped, dangling) is fine. The scheduler uses it to start the cache
/// misses of the green thread it will run next while the current one still runs.
#[inline(always)]
pub(crate) fn prefetch(addr: *const u8) {
    // SAFETY: `prefetcht0` has no architectural effect (no load, no fault, no register
    // or flag written), so it is sound for every address; `nostack`, `readonly` and
    // `preserves_flags` say exactly that to the compiler.
    unsafe {
        core::arch::asm!(
            "prefetcht0 [{addr}]",
            addr = in(reg) addr,
            options(nostack, readonly, preserves_flags),
        )
    }
}

/// First code run on a fresh stack: the first [`switch`] jumps here with the entry's
/// argument and the entry function on top of the stack (placed by [`init_stack`]).
#[unsafe(naked)]
unsafe extern "sysv64" fn trampoline() -> ! {
    naked_asm!(
        ".cfi_startproc",
        // The return address of this frame is undefined: unwinders and backtraces stop
        // here instead of walking off the top of the stack.
        ".cfi_undefined rip",
        "pop rdi", // the entry's argument
        "pop rax", // the entry function
        // rbp = 0 ends frame-pointer walks.
        "xor ebp, ebp",
        // Enter it as a call would, but without `call`: the entry never returns, so a
        // `call` would leave an entry on the return-stack predictor that nothing pops,
        // and the resumer's next `ret` (and each one after it, shifted by one) would
        // mispredict, twice per spawn + join. Push the return address a call would have
        // pushed (label 2, inside this frame, so backtraces still end here), then jump.
        // rsp is 16-byte aligned before the push (see init_stack), as at a call.
        "lea rcx, [rip + 2f]",
        "push rcx",
        "jmp rax",
        // The entry function never returns; trap if it ever does.
        "2:",
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
    // The switch pops the resume address and jumps; the trampoline pops arg and entry,
    // leaving rsp = sp + 24, which must be 16-byte aligned as at a call: sp = top - 40.
    let sp = top.wrapping_sub(40) as *mut usize;
    let slots: [usize; 3] = [
        trampoline as *const () as usize,
        arg as usize,
        entry as *const () as usize,
    ];
    // SAFETY: the caller guarantees the 40 bytes below `top` are ours to write; `sp` is
    // 8-byte aligned because `top` is 16-byte aligned.
    unsafe { core::ptr::copy_nonoverlapping(slots.as_ptr(), sp, slots.len()) };
    sp as StackPointer
}

/// Calls `f(arg)` with the stack pointer at `top`, on another stack, and returns when it
/// returns, back on the caller's stack. A plain call and return, so the return-stack
/// predictor stays in step.
///
/// Backtraces taken inside `f` walk back through this frame to the caller's stack: its
/// CFI computes the frame's address from rbp, which holds the caller's stack pointer
/// for the whole call (a frame-pointer frame, as compilers emit for `alloca`).
///
/// # Safety
/// - `top` must be the 16-byte-aligned end of a writable region, unused by anything
///   else, deep enough for `f`.
/// - `f` must not unwind (a `sysv64` function cannot), and must not switch contexts in
///   a way that leaves this frame suspended while something else uses that region.
#[unsafe(naked)]
pub(crate) unsafe extern "sysv64" fn call_on_stack(
    arg: *mut u8,
    f: unsafe extern "sysv64" fn(*mut u8),
    top: *mut u8,
) {
    naked_asm!(
        ".cfi_startproc",
        // A frame-pointer frame: the caller's rbp saved below the return address...
        "push rbp",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_rel_offset rbp, 0",
        // ...and rbp = our stack pointer on the caller's stack. From here on the frame
        // is found from rbp (CFA = rbp + 16), wherever rsp points.
        "mov rbp, rsp",
        ".cfi_def_cfa_register rbp",
        // The other stack. `top` is 16-byte aligned, so `f` starts with rsp + 8 aligned,
        // as after any call.
        "mov rsp, rdx",
        "call rsi", // f(arg): arg is already in rdi
        // Back to the caller's stack (rbp is callee-saved, so f kept it).
        "mov rsp, rbp",
        ".cfi_def_cfa_register rsp",
        "pop rbp",
        ".cfi_adjust_cfa_offset -8",
        ".cfi_restore rbp",
        "ret",
        ".cfi_endproc",
    )
}

// ---------------------------------------------------------------------------------
// The measured alternative: a naked function (benches only, see the module docs).
// ---------------------------------------------------------------------------------

/// [`switch`] as a naked function: push the six callee-saved registers, swap stack
/// pointers, pop six, `ret`. Suspended layout, from the saved pointer up: r15 r14 r13
/// r12 rbx rbp, return address.
///
/// # Safety
/// As for [`switch`], with `to` from this function or [`init_stack_naked`].
#[unsafe(naked)]
pub(crate) unsafe extern "sysv64" fn switch_naked(from: *mut StackPointer, to: StackPointer) {
    naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "mov [rdi], rsp",
        "mov rsp, rsi",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        // Returns to the *other* context's call site: the return-stack predictor
        // mispredicts this every time.
        "ret",
    )
}

/// First code on a fresh stack for [`switch_naked`]: entry in r12, argument in rbx.
#[unsafe(naked)]
unsafe extern "sysv64" fn trampoline_naked() -> ! {
    naked_asm!(
        ".cfi_startproc",
        ".cfi_undefined rip",
        "mov rdi, rbx",
        "call r12",
        "ud2",
        ".cfi_endproc",
    )
}

/// Lays out a fresh stack for [`switch_naked`].
///
/// # Safety
/// As for [`init_stack`].
pub(crate) unsafe fn init_stack_naked(top: *mut u8, entry: EntryFn, arg: *mut u8) -> StackPointer {
    debug_assert_eq!(top as usize % 16, 0, "stack top must be 16-byte aligned");
    // After the six pops and the ret, rsp = sp + 56, which must be 16-byte aligned for
    // the trampoline's call: sp = top - 72 (one spare 16-byte slot at the top).
    let sp = top.wrapping_sub(72) as *mut usize;
    let slots: [usize; 9] = [
        0,                                      // r15
        0,                                      // r14
        0,                                      // r13
        entry as *const () as usize,            // r12: called by the trampoline
        arg as usize,                           // rbx: the entry's argument
        0,                                      // rbp: 0 ends frame-pointer walks
        trampoline_naked as *const () as usize, // return address of the first switch
        0,
        0,
    ];
    // SAFETY: the caller guarantees the 72 bytes below `top` are ours to write.
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

    /// Records where its frame is and keeps callee-saved state busy.
    unsafe extern "sysv64" fn on_other_stack(arg: *mut u8) {
        let probe = 0u8;
        // SAFETY: `arg` points to the test's `(usize, u64)`, alive for the call.
        let out = unsafe { &mut *(arg as *mut (usize, u64)) };
        out.0 = std::hint::black_box(&probe) as *const u8 as usize;
        out.1 = (1..=10u64).map(std::hint::black_box).product();
    }

    #[test]
    fn call_on_stack_runs_on_the_given_stack_and_returns() {
        let mut stack = vec![0u128; 4096]; // 64 KiB, 16-byte aligned
        let base = stack.as_mut_ptr() as usize;
        // SAFETY: the end of a Vec<u128> is 16-byte aligned and the Vec is ours.
        let top = unsafe { (stack.as_mut_ptr() as *mut u8).add(stack.len() * 16) };
        let mut out = (0usize, 0u64);
        let before = 7u64;
        // SAFETY: `top` is the aligned end of a 64 KiB region used by nothing else, and
        // `on_other_stack` does not unwind.
        unsafe {
            call_on_stack(
                &mut out as *mut (usize, u64) as *mut u8,
                on_other_stack,
                top,
            )
        };
        assert!(
            (base..top as usize).contains(&out.0),
            "the callee's frame lies in the given stack"
        );
        assert_eq!(out.1, 3_628_800, "the callee ran to its end");
        assert_eq!(
            std::hint::black_box(before),
            7,
            "the caller's state survived"
        );
        drop(stack);
    }
}
