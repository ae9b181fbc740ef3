//! Tracing around switches: a span per green thread, user spans kept per green thread,
//! and scheduler events.
//!
//! This module owns everything greenrt tells `tracing`. It uses only tracing's public
//! `Dispatch` API and must stay near free when nobody listens: with no dispatcher ever
//! set, a switch costs one relaxed load here.
//!
//! # The protocol (design.md, section 7)
//! Each green thread has a span (DEBUG, target `greenrt::green`, fields `id` and `name`)
//! created at spawn as a child of the spawner's current span, and it remembers the
//! dispatcher that was the default where it was spawned.
//!
//! - Switch in ([`Slice::enter`], on the resumer's stack): if that dispatcher was a
//!   scoped one (`set_default`), make it the default for this slice. Note the current
//!   span (the *base*) when the green thread's own span is disabled and this is not a
//!   worker (worker threads never enter spans themselves, so their base is "none"). Enter
//!   the green thread's span, then re-enter, outermost first, the user spans it had
//!   entered when it last switched out.
//! - Switch out (dropping the [`Slice`]): exit every span above the green thread's own
//!   span (or above the base when its own span is disabled), saving them, then exit its
//!   own span and restore the previous default.
//!
//! So a user span entered in a green thread stays current for that green thread across
//! switches and never shows up as the current span of another green thread on the same
//! worker. This needs a subscriber that reports its current span (`current_span`), as
//! tracing-subscriber's `Registry` does; with others only the green thread's own span
//! is entered and exited.

use crate::green::{Green, GreenId};
use std::cell::UnsafeCell;
use tracing::dispatcher::{self, Dispatch};
use tracing::span::Id;
use tracing::subscriber::NoSubscriber;

/// A green thread's tracing state.
pub(crate) struct GreenTrace {
    /// Keeps the span open for the green thread's life.
    _span: tracing::Span,
    /// The span's id; None when it is disabled (filtered out) or nobody listens.
    own: Option<Id>,
    /// The dispatcher current where it was spawned, once any dispatcher exists.
    dispatch: UnsafeCell<Option<Dispatch>>,
    /// Whether `dispatch` was a scoped default (so each slice must make it current).
    scoped: UnsafeCell<bool>,
    /// User spans entered when it last switched out, outermost first.
    saved: UnsafeCell<Vec<Id>>,
}

// SAFETY: the UnsafeCell fields are touched only in `Slice::enter` and `Slice`'s drop,
// which run on the thread resuming the green thread, and only one thread resumes a green
// thread at a time (the state machine in state.rs; see GreenThread's Sync impl).
unsafe impl Sync for GreenTrace {}

impl GreenTrace {
    fn silent() -> GreenTrace {
        GreenTrace {
            _span: tracing::Span::none(),
            own: None,
            dispatch: UnsafeCell::new(None),
            scoped: UnsafeCell::new(false),
            saved: UnsafeCell::new(Vec::new()),
        }
    }

    pub(crate) fn new(identity: &Green) -> GreenTrace {
        if !dispatcher::has_been_set() {
            return GreenTrace::silent();
        }
        let dispatch = dispatcher::get_default(Dispatch::clone);
        if dispatch.is::<NoSubscriber>() {
            // A dispatcher existed once (e.g. a scoped one, since dropped), but nobody
            // listens here now.
            return GreenTrace::silent();
        }
        let span = tracing::debug_span!(
            target: "greenrt::green",
            "green",
            id = identity.id().as_u64(),
            name = identity.name().unwrap_or(""),
        );
        let scoped = !is_global(&dispatch);
        GreenTrace {
            own: span.id(),
            _span: span,
            dispatch: UnsafeCell::new(Some(dispatch)),
            scoped: UnsafeCell::new(scoped),
            saved: UnsafeCell::new(Vec::new()),
        }
    }
}

/// Whether `dispatch` is the global default. tracing has no public API for this; its
/// `Debug` output names the kind. If that ever changes we answer "scoped", which is
/// always correct (we then make it current for every slice), only slower.
fn is_global(dispatch: &Dispatch) -> bool {
    struct Prefix {
        seen: [u8; 16],
        len: usize,
    }
    impl std::fmt::Write for Prefix {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let take = s.len().min(self.seen.len() - self.len);
            self.seen[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
            self.len += take;
            if self.len == self.seen.len() {
                Err(std::fmt::Error) // stop formatting: we have what we need
            } else {
                Ok(())
            }
        }
    }
    let mut prefix = Prefix {
        seen: [0; 16],
        len: 0,
    };
    let _ = std::fmt::write(&mut prefix, format_args!("{dispatch:?}"));
    &prefix.seen[..prefix.len] == b"Dispatch::Global"
}

/// Whether any tracing dispatcher has ever been set: until then greenrt does no tracing
/// work at all on a switch.
#[inline(always)]
pub(crate) fn listening() -> bool {
    dispatcher::has_been_set()
}

/// One slice of a green thread's execution, from switch in to switch out.
pub(crate) struct Slice<'a> {
    active: Option<Active<'a>>,
}

struct Active<'a> {
    trace: &'a GreenTrace,
    dispatch: &'a Dispatch,
    own: Option<&'a Id>,
    base: Option<Id>,
    _default: Option<dispatcher::DefaultGuard>,
}

impl<'a> Slice<'a> {
    /// Called by the resumer just before switching into the green thread.
    #[inline]
    pub(crate) fn enter(trace: &'a GreenTrace) -> Slice<'a> {
        if !dispatcher::has_been_set() {
            return Slice { active: None };
        }
        Slice {
            active: Self::enter_slow(trace),
        }
    }

    #[inline(never)]
    fn enter_slow(trace: &'a GreenTrace) -> Option<Active<'a>> {
        // SAFETY: we are the resumer (see the Sync impl): nobody else touches these.
        let (dispatch_slot, scoped, saved) = unsafe {
            (
                &mut *trace.dispatch.get(),
                &mut *trace.scoped.get(),
                &*trace.saved.get(),
            )
        };
        if dispatch_slot.is_none() {
            // Spawned while nobody listened. If a (global) subscriber has been set since,
            // adopt it now, so user spans entered from here on are still kept per green
            // thread.
            let current = dispatcher::get_default(Dispatch::clone);
            if current.is::<NoSubscriber>() {
                return None;
            }
            *dispatch_slot = Some(current);
            *scoped = false;
        }
        let dispatch = dispatch_slot.as_ref().expect("set above");
        let default = scoped.then(|| dispatcher::set_default(dispatch));
        let own = trace.own.as_ref();
        let on_worker =
            crate::runtime::context::with_local(|l| l.worker.is_some()).unwrap_or(false);
        let base = if own.is_none() && !on_worker {
            dispatch.current_span().id().cloned()
        } else {
            None
        };
        if let Some(own) = own {
            dispatch.enter(own);
        }
        for id in saved {
            dispatch.enter(id);
        }
        Some(Active {
            trace,
            dispatch,
            own,
            base,
            _default: default,
        })
    }
}

impl Drop for Slice<'_> {
    fn drop(&mut self) {
        if let Some(active) = self.active.take() {
            active.exit();
        }
    }
}

impl Active<'_> {
    fn exit(self) {
        // SAFETY: we are the resumer (see the Sync impl).
        let saved = unsafe { &mut *self.trace.saved.get() };
        saved.clear();
        let stop = self.own.or(self.base.as_ref());
        loop {
            let current = self.dispatch.current_span();
            match current.id() {
                Some(id) if Some(id) != stop => {
                    let id = id.clone();
                    self.dispatch.exit(&id);
                    saved.push(id);
                }
                _ => break,
            }
        }
        saved.reverse();
        if let Some(own) = self.own {
            self.dispatch.exit(own);
        }
        // `_default` drops last, restoring the resumer's dispatcher.
    }
}

/// A scheduler event (spawn, steal, wake, cancel) at TRACE, target `greenrt::sched`.
#[inline]
pub(crate) fn sched_event(event: &'static str, id: GreenId) {
    tracing::trace!(target: "greenrt::sched", event, id = id.as_u64());
}

/// A worker about to park.
#[inline]
pub(crate) fn park_event(worker: usize) {
    tracing::trace!(target: "greenrt::sched", event = "park", worker);
}
