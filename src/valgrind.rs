//! Valgrind client requests: telling memcheck where green stacks are.
//!
//! Memcheck tracks the stack pointer. When it moves by less than `--max-stackframe`
//! (2 MB by default), memcheck takes it for a call or a return and marks the memory
//! in between as newly allocated (undefined) or dead (no access). A context switch
//! between two green stacks, which are often mapped next to each other, is such a move:
//! without help, memcheck would mark the resumed green thread's saved frames undefined
//! and other live stacks inaccessible, and report errors in correct code. A stack
//! registered with `VALGRIND_STACK_REGISTER` is known: a move into it is a stack switch
//! and marks nothing.
//!
//! This module owns the raw client-request sequence and the requests greenrt makes.
//! `stack.rs` registers every green stack (its usable range, not the guard page) when
//! it maps it and deregisters it just before unmapping it; a pooled stack stays
//! registered while it waits to be reused, since it is still mapped and still a stack.
//!
//! It must never do anything observable outside valgrind: on real hardware the
//! sequence is four rotations of rdi by a total of 128 bits (rdi unchanged) and
//! `xchg rbx, rbx` (rbx unchanged), so only the flags change and the request's default
//! result comes back untouched.

/// `VG_USERREQ__RUNNING_ON_VALGRIND` (valgrind.h): the nesting depth of valgrind, 0 on
/// real hardware.
const RUNNING_ON_VALGRIND: usize = 0x1001;
/// `VG_USERREQ__STACK_REGISTER` (valgrind.h): args start, end; returns the stack's id.
const STACK_REGISTER: usize = 0x1501;
/// `VG_USERREQ__STACK_DEREGISTER` (valgrind.h): arg id.
const STACK_DEREGISTER: usize = 0x1502;

/// Issues one client request (`VALGRIND_DO_CLIENT_REQUEST_EXPR` of valgrind.h for
/// amd64): valgrind reads the request and its five arguments from the array rax points
/// to and leaves its answer in rdx; on real hardware rdx keeps `default`.
///
/// # Safety
/// Under valgrind the request is carried out: the caller must pass a request whose
/// arguments are valid for it. Some requests write through pointer arguments; the two
/// stack requests and `RUNNING_ON_VALGRIND` only update valgrind's own bookkeeping.
#[inline(always)]
unsafe fn client_request(default: usize, request: usize, args: [usize; 5]) -> usize {
    let block: [usize; 6] = [request, args[0], args[1], args[2], args[3], args[4]];
    let result: usize;
    // SAFETY: the sequence is the one valgrind.h emits. On real hardware it changes no
    // register but the flags (which asm! assumes clobbered without `preserves_flags`):
    // rdi is rotated by 3 + 13 + 61 + 51 = 128 bits, twice its width, so it ends as it
    // began, and `xchg rbx, rbx` swaps rbx with itself. rdx is declared in and out, so
    // the compiler expects it changed. Under valgrind the sequence only reads `block`,
    // which outlives the asm, and writes rdx. No stack is touched (`nostack`); memory is
    // not declared untouched, so `block` is in memory before the asm runs.
    unsafe {
        core::arch::asm!(
            // The preamble: a no-op rotation sequence valgrind's JIT recognises; no
            // compiler emits it by chance.
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            // After the preamble, this no-op marks a client request: rdx = request(rax).
            "xchg rbx, rbx",
            in("rax") block.as_ptr(),
            inout("rdx") default => result,
            options(nostack),
        );
    }
    result
}

/// Whether this process runs under valgrind (any tool).
pub(crate) fn running_on_valgrind() -> bool {
    // SAFETY: RUNNING_ON_VALGRIND takes no arguments and writes no client memory.
    unsafe { client_request(0, RUNNING_ON_VALGRIND, [0; 5]) != 0 }
}

/// Tells valgrind that `[start, end)` is a stack; returns the id that
/// [`stack_deregister`] takes. Outside valgrind: does nothing and returns 0.
pub(crate) fn stack_register(start: *const u8, end: *const u8) -> usize {
    // SAFETY: STACK_REGISTER only records the range in valgrind's own table; it reads
    // no client memory and the range need not be anything in particular for that.
    unsafe { client_request(0, STACK_REGISTER, [start as usize, end as usize, 0, 0, 0]) }
}

/// Forgets the stack `id` returned by [`stack_register`]. Outside valgrind: nothing.
pub(crate) fn stack_deregister(id: usize) {
    // SAFETY: STACK_DEREGISTER only removes an entry from valgrind's own table (an
    // unknown id is ignored).
    unsafe { client_request(0, STACK_DEREGISTER, [id, 0, 0, 0, 0]) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outside valgrind every request must be a no-op returning its default, and the
    /// registers the sequence rotates must survive it: a wrong rotation would corrupt
    /// rdi, which holds the first argument of the surrounding calls. (Under valgrind,
    /// `.ci/run` runs `examples/memcheck.rs`, which checks the requests are answered.)
    #[test]
    fn requests_are_no_ops_on_real_hardware() {
        if running_on_valgrind() {
            return;
        }
        // SAFETY: RUNNING_ON_VALGRIND writes no client memory.
        assert_eq!(
            unsafe { client_request(42, RUNNING_ON_VALGRIND, [0; 5]) },
            42
        );
        let stack = [0u8; 64];
        let range = stack.as_ptr_range();
        assert_eq!(stack_register(range.start, range.end), 0);
        stack_deregister(0);
        // rdi across the sequence: pass a value in through it and read it back.
        let mut rdi: usize = 0x0123_4567_89ab_cdef;
        // SAFETY: the same no-op preamble as client_request, without a request; rdi is
        // an in/out operand so the compiler sees whatever the rotations leave in it.
        unsafe {
            core::arch::asm!(
                "rol rdi, 3",
                "rol rdi, 13",
                "rol rdi, 61",
                "rol rdi, 51",
                inout("rdi") rdi,
                options(nostack, nomem),
            );
        }
        assert_eq!(rdi, 0x0123_4567_89ab_cdef);
    }
}
