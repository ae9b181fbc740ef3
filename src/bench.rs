//! Support for benchmarks and checking tools that need greenrt internals (hidden from
//! the docs).
//!
//! It owns nothing the runtime uses. [`RawSwitch`] measures the bare context switch,
//! without the scheduler, so it can be compared with other coroutine libraries.
//! [`TimerHeap`] drives one thread's timer structure directly, so its cost per
//! operation can be measured at any number of pending timers.
//! [`valgrind_stack_probe`] lets `examples/memcheck.rs` check that valgrind answers the
//! client requests green stacks are registered with.

use crate::arch::{self, StackPointer};
use crate::stack::{Stack, DEFAULT_STACK_SIZE};
use std::marker::PhantomData;

/// Which implementation of the switch to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// A naked function (the measured alternative).
    Naked,
    /// Inline `asm!` with `clobber_abi` (what the runtime uses).
    InlineAsm,
}

struct Inner {
    sp: StackPointer,
    caller_sp: StackPointer,
    variant: Variant,
}

/// A coroutine that does nothing but switch back: `round_trip` resumes it and it
/// suspends at once, so one call is one resume plus one suspend.
///
/// Not `Send`: a context is only ever resumed on the thread that created it.
pub struct RawSwitch {
    inner: Box<Inner>,
    _stack: Stack,
    _not_send: PhantomData<*const ()>,
}

unsafe extern "sysv64" fn bounce(arg: *mut u8) -> ! {
    let inner = arg as *mut Inner;
    loop {
        // SAFETY: `inner` outlives the coroutine (RawSwitch owns both and never resumes
        // it after drop); `caller_sp` was stored by the round_trip that resumed us.
        unsafe {
            match (*inner).variant {
                Variant::Naked => {
                    arch::switch_naked(std::ptr::addr_of_mut!((*inner).sp), (*inner).caller_sp)
                }
                Variant::InlineAsm => {
                    arch::switch(std::ptr::addr_of_mut!((*inner).sp), (*inner).caller_sp)
                }
            }
        }
    }
}

impl RawSwitch {
    /// A new coroutine on a fresh greenrt stack.
    pub fn new(variant: Variant) -> RawSwitch {
        let stack = Stack::new(DEFAULT_STACK_SIZE).expect("map a stack");
        let mut inner = Box::new(Inner {
            sp: std::ptr::null_mut(),
            caller_sp: std::ptr::null_mut(),
            variant,
        });
        let arg = &mut *inner as *mut Inner as *mut u8;
        // SAFETY: the stack is fresh, ours and 16-byte aligned at the top; `arg` points
        // to the boxed Inner, which does not move and lives as long as the stack.
        inner.sp = unsafe {
            match variant {
                Variant::Naked => arch::init_stack_naked(stack.top(), bounce, arg),
                Variant::InlineAsm => arch::init_stack(stack.top(), bounce, arg),
            }
        };
        RawSwitch {
            inner,
            _stack: stack,
            _not_send: PhantomData,
        }
    }

    /// Resumes the coroutine, which switches straight back.
    #[inline]
    pub fn round_trip(&mut self) {
        let inner = &mut *self.inner as *mut Inner;
        // SAFETY: the coroutine is suspended (fresh or in `bounce`), was created on this
        // thread (RawSwitch is !Send), and its stack lives in self.
        unsafe {
            match (*inner).variant {
                Variant::Naked => {
                    arch::switch_naked(std::ptr::addr_of_mut!((*inner).caller_sp), (*inner).sp)
                }
                Variant::InlineAsm => {
                    arch::switch(std::ptr::addr_of_mut!((*inner).caller_sp), (*inner).sp)
                }
            }
        }
    }
}

/// Maps one green stack the way the runtime does and reports what valgrind said:
/// whether the process runs under valgrind, and the id valgrind gave the stack's
/// registration (0 outside valgrind; under it, nonzero, since valgrind registers the
/// main thread's stack first as id 0).
pub fn valgrind_stack_probe() -> std::io::Result<(bool, usize)> {
    let stack = Stack::new(DEFAULT_STACK_SIZE)?;
    Ok((crate::valgrind::running_on_valgrind(), stack.valgrind_id()))
}

/// One runtime thread's timer structure (the one every `sleep` registers with), driven
/// directly: the same insert, cancel and fire code a `Sleep` runs, minus the
/// thread-local lookup and the `Instant::now()` calls.
///
/// Not `Send`, like the per-thread structure it wraps.
pub struct TimerHeap {
    timers: crate::time::Timers,
    waker: std::task::Waker,
    _not_send: PhantomData<*const ()>,
}

/// A pending timer of a [`TimerHeap`]; give it to [`TimerHeap::cancel`] or let it fire.
pub struct TimerEntry(std::sync::Arc<crate::time::Entry>);

impl Default for TimerHeap {
    fn default() -> Self {
        TimerHeap::new()
    }
}

impl TimerHeap {
    /// An empty structure whose timers wake a no-op waker.
    pub fn new() -> TimerHeap {
        TimerHeap {
            timers: crate::time::Timers::default(),
            waker: futures::task::noop_waker(),
            _not_send: PhantomData,
        }
    }

    /// Registers a timer for `deadline`, as the first poll of a `Sleep` does.
    pub fn insert(&mut self, deadline: std::time::Instant) -> TimerEntry {
        let entry = self.timers.new_entry(self.waker.clone());
        self.timers.insert(deadline, entry.clone());
        TimerEntry(entry)
    }

    /// Cancels a timer, as dropping its `Sleep` does.
    pub fn cancel(&mut self, entry: TimerEntry) {
        crate::time::cancel(&entry.0);
    }

    /// Fires every timer due at `now`, as a worker does between slices; returns how
    /// many fired.
    pub fn fire_due(&mut self, now: std::time::Instant) -> usize {
        let due = self.timers.take_due(now);
        let fired = due.len();
        for waker in due {
            waker.wake();
        }
        fired
    }

    /// The earliest live deadline (discards cancelled entries on top), as a parking
    /// worker asks.
    pub fn next_deadline(&mut self) -> Option<std::time::Instant> {
        self.timers.next_deadline()
    }

    /// Entries held, cancelled ones not yet discarded included.
    pub fn len(&self) -> usize {
        self.timers.len()
    }

    /// Whether it holds no entry at all.
    pub fn is_empty(&self) -> bool {
        self.timers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_variants_round_trip_and_preserve_caller_state() {
        for variant in [Variant::Naked, Variant::InlineAsm] {
            let mut raw = RawSwitch::new(variant);
            // Values live across the switches sit in callee-saved registers or on our
            // stack; both must survive.
            let mut acc = 0u64;
            for i in 0..10_000u64 {
                raw.round_trip();
                acc = acc.wrapping_mul(31).wrapping_add(i);
            }
            let expected = (0..10_000u64).fold(0u64, |a, i| a.wrapping_mul(31).wrapping_add(i));
            assert_eq!(acc, expected, "{variant:?}");
        }
    }

    #[test]
    fn timer_heap_fires_due_timers_and_skips_cancelled_ones() {
        let base = std::time::Instant::now();
        let at = |ms| base + std::time::Duration::from_millis(ms);
        let mut heap = TimerHeap::new();
        let _late = heap.insert(at(100));
        let early = heap.insert(at(10));
        let _mid = heap.insert(at(50));
        heap.cancel(early);
        assert_eq!(heap.next_deadline(), Some(at(50)));
        assert_eq!(heap.fire_due(at(60)), 1);
        assert_eq!(heap.len(), 1);
        assert_eq!(heap.fire_due(at(100)), 1);
        assert!(heap.is_empty());
    }
}
