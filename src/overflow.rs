//! Reporting green stack overflows, like std does for OS threads.
//!
//! This module owns the process's SIGSEGV and SIGBUS handlers while a greenrt runtime
//! exists. On a fault it asks one question: is the faulting address inside the guard
//! page of the green thread running on this OS thread? If so it writes
//!
//! ```text
//! green thread '<name>' has overflowed its stack (<size> KiB)
//! ```
//!
//! (the id when unnamed) to stderr and aborts. Anything else is handed to the handler
//! that was installed before ours (std's own overflow check, a sanitizer, or the default
//! action, which re-runs the fault and kills the process as if we were not there).
//!
//! It must stay async-signal-safe: no allocation, no locks, no tracing, no panics; only
//! reads of memory the faulting thread owns, `write(2)`, `sigaction(2)` and `abort(3)`.
//! The handler runs on the alternate signal stack ([`ensure_alt_stack`]), since the
//! faulting stack is exactly the one that has no room left.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::Once;

/// The handlers that were installed before ours, for SIGSEGV and SIGBUS. Written once,
/// before our handlers are installed, then only read.
struct Previous(UnsafeCell<[MaybeUninit<libc::sigaction>; 2]>);

// SAFETY: written exactly once inside `INSTALL.call_once`, before any of our handlers
// can run (they are installed after the write); read-only afterwards.
unsafe impl Sync for Previous {}

static PREVIOUS: Previous = Previous(UnsafeCell::new([
    MaybeUninit::uninit(),
    MaybeUninit::uninit(),
]));
static INSTALL: Once = Once::new();

const SIGNALS: [libc::c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];

/// Installs the handlers (once per process).
pub(crate) fn install() {
    INSTALL.call_once(|| {
        for (slot, &signal) in SIGNALS.iter().enumerate() {
            // SAFETY: sigaction with a null new action only reads the current one into
            // our static, which nothing else accesses yet (see `Previous`).
            unsafe {
                let previous = (*PREVIOUS.0.get())[slot].as_mut_ptr();
                libc::sigaction(signal, std::ptr::null(), previous);
            }
            // SAFETY: a zeroed sigaction is a valid starting point; we fill the fields
            // the kernel reads. The handler upholds the async-signal-safety contract.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = handler as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
        }
    });
}

/// An alternate signal stack this module mapped for the calling thread: disabled and
/// unmapped when the thread's locals are destroyed, so a foreign thread that called
/// `Runtime::run` does not leave its mapping behind when it exits.
struct AltStack {
    memory: *mut libc::c_void,
    size: usize,
}

impl Drop for AltStack {
    fn drop(&mut self) {
        // SAFETY: querying with a null new stack only writes `current`.
        let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::sigaltstack(std::ptr::null(), &mut current) } != 0 {
            return; // cannot tell whether it is still installed: leak it
        }
        if current.ss_sp == self.memory {
            if current.ss_flags & libc::SS_ONSTACK != 0 {
                return; // running on it (cannot happen from a thread-local destructor)
            }
            let disable = libc::stack_t {
                ss_sp: std::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            // SAFETY: disabling this thread's alternate stack, which is ours.
            if unsafe { libc::sigaltstack(&disable, std::ptr::null_mut()) } != 0 {
                return;
            }
        }
        // SAFETY: our mapping, no longer installed as any signal stack of this thread
        // (alternate stacks are per thread), so no signal can be delivered on it.
        unsafe { libc::munmap(self.memory, self.size) };
    }
}

thread_local! {
    static OWN_ALT_STACK: std::cell::Cell<Option<AltStack>> = const { std::cell::Cell::new(None) };
}

/// Makes sure the calling thread has an alternate signal stack, so the handler can run
/// when its green stack is exhausted. std gives its threads one already; this covers
/// threads std did not set up (e.g. a foreign thread calling `Runtime::run`). The stack
/// is unmapped with the thread's locals ([`AltStack`]); leaked when it is mapped while
/// they are being destroyed.
pub(crate) fn ensure_alt_stack() {
    // SAFETY: querying with a null new stack only writes `current`.
    let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::sigaltstack(std::ptr::null(), &mut current) } != 0 {
        return;
    }
    if current.ss_flags & libc::SS_DISABLE == 0 {
        return;
    }
    const SIZE: usize = 64 * 1024;
    // SAFETY: a fresh anonymous mapping touches no existing memory.
    let memory = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if memory == libc::MAP_FAILED {
        return;
    }
    let stack = libc::stack_t {
        ss_sp: memory,
        ss_flags: 0,
        ss_size: SIZE,
    };
    // SAFETY: `stack` describes the mapping above, which is unmapped only after it has
    // been disabled again (`AltStack`).
    if unsafe { libc::sigaltstack(&stack, std::ptr::null_mut()) } != 0 {
        // SAFETY: our fresh mapping, installed nowhere.
        unsafe { libc::munmap(memory, SIZE) };
        return;
    }
    let mut owned = Some(AltStack { memory, size: SIZE });
    let _ = OWN_ALT_STACK.try_with(|slot| slot.set(owned.take()));
    // This thread's locals are being destroyed: keep it installed and mapped for good.
    std::mem::forget(owned);
}

extern "C" fn handler(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let address = unsafe { (*info).si_addr() } as usize;
    if let Some(overflow) = crate::green::overflow_at(address) {
        report(&overflow);
        // SAFETY: abort is async-signal-safe.
        unsafe { libc::abort() };
    }
    // SAFETY: forwarded arguments from the kernel; see `chain`.
    unsafe { chain(signal, info, context) };
}

/// What [`crate::green::overflow_at`] knows about the green thread whose guard page was
/// hit. The name points into its control block, alive while it runs.
pub(crate) struct Overflow {
    pub(crate) name: Option<*const str>,
    pub(crate) id: u64,
    pub(crate) stack_kib: usize,
    /// The overflow is on the green thread's panic-hook stack (panic_hook.rs).
    pub(crate) in_hook: bool,
}

fn report(overflow: &Overflow) {
    let mut buffer = [0u8; 512];
    let mut out = Writer {
        buffer: &mut buffer,
        len: 0,
    };
    out.push(b"\ngreen thread '");
    match overflow.name {
        // SAFETY: the name lives in the control block of the green thread that is
        // running on this thread (it faulted), so it outlives this handler.
        Some(name) => out.push(unsafe { &*name }.as_bytes()),
        None => out.push_number(overflow.id as usize),
    }
    if overflow.in_hook {
        out.push(b"' overflowed its panic hook's stack (");
    } else {
        out.push(b"' has overflowed its stack (");
    }
    out.push_number(overflow.stack_kib);
    out.push(b" KiB)\nfatal runtime error: green thread stack overflow, aborting\n");
    let len = out.len;
    // SAFETY: write(2) is async-signal-safe; the buffer is ours.
    unsafe { libc::write(libc::STDERR_FILENO, buffer.as_ptr().cast(), len) };
}

/// A fixed buffer to format the message without allocating.
struct Writer<'a> {
    buffer: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn push(&mut self, bytes: &[u8]) {
        let take = bytes.len().min(self.buffer.len() - self.len);
        self.buffer[self.len..self.len + take].copy_from_slice(&bytes[..take]);
        self.len += take;
    }

    fn push_number(&mut self, mut n: usize) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

/// Hands a fault that is not a green stack overflow to whoever handled it before us.
///
/// # Safety
/// Called from the signal handler with the kernel's arguments.
unsafe fn chain(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let slot = if signal == libc::SIGSEGV { 0 } else { 1 };
    // SAFETY: written before our handler was installed; read-only since.
    let previous = unsafe { (*PREVIOUS.0.get())[slot].assume_init_ref() };
    let action = previous.sa_sigaction;
    if action == libc::SIG_DFL || action == libc::SIG_IGN {
        // Restore the default action and return: the faulting instruction runs again
        // and the kernel kills the process with this signal, as without greenrt.
        // SAFETY: a zeroed sigaction with SIG_DFL is valid.
        unsafe {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(signal, &default, std::ptr::null_mut());
        }
    } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous owner installed this as an SA_SIGINFO handler.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(action) };
        f(signal, info, context);
    } else {
        // SAFETY: the previous owner installed this as a plain handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(action) };
        f(signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_format_without_allocation() {
        let mut buffer = [0u8; 32];
        let mut out = Writer {
            buffer: &mut buffer,
            len: 0,
        };
        out.push_number(0);
        out.push(b" ");
        out.push_number(262_144);
        out.push(b" ");
        out.push_number(usize::MAX);
        let len = out.len;
        assert_eq!(
            &buffer[..len],
            format!("0 262144 {}", usize::MAX).as_bytes()
        );
    }
}
