//! Tracing around switches: a span per green thread, user spans kept per green thread,
//! and scheduler events.
//!
//! This module owns everything greenrt tells `tracing`. It uses only tracing's public
//! `Dispatch` API and must stay near free when nobody listens: with no dispatcher ever
//! set, a switch costs one relaxed load here.
//!
//! # The protocol (design.md, section 7)
//! Each green thread has a span (DEBUG, target `greenrt::green`, fields `id` and `name`),
//! a child of the spawner's current span at spawn, and it remembers the dispatcher that
//! was the default where it was spawned.
//!
//! The parent is captured at spawn; the span itself is created at the green thread's
//! first slice, on its home worker. A subscriber such as tracing-subscriber's
//! `Registry` keeps a span in a slot of a slab shard owned by the thread that created
//! it, and touches that slot's state word with an atomic on every enter and exit.
//! Created by the spawner, consecutive green threads' spans sit in neighbouring slots of
//! the spawner's shard while they run on different workers, so every switch on one
//! worker invalidated the cache line that the other worker's switches used (false
//! sharing: with every span recorded, yield_many on two workers ran slower than on
//! one). Created where it runs, a span shares its worker's shard. The only visible
//! difference is when the span's `new_span` is reported, and that a green thread
//! cancelled before it ever ran has no span.
//!
//! Whether the span is enabled is asked at spawn with `span_enabled!` (same target,
//! level and field names), so that nothing is captured for a span that is filtered out.
//! A filter that selects it by the span's *name* alone is not seen by that question; such
//! a filter should also match the target `greenrt::green`.
//!
//! - Switch in ([`enter_slice`], on the resumer's stack): if that dispatcher was a
//!   scoped one (`set_default`), make it the default for this slice (on a worker it is
//!   left installed for the next slices that use the same one, since `set_default`
//!   costs a contended atomic; the worker restores its own default when it goes idle
//!   or runs a green thread spawned under the global one). Note the current
//!   span (the *base*) when the green thread's own span is disabled and this is not a
//!   worker (worker threads never enter spans themselves, so their base is "none"). Enter
//!   the green thread's span, then re-enter, outermost first, the user spans it had
//!   entered when it last switched out.
//! - Switch out ([`exit_slice`]): exit every span above the green thread's own
//!   span (or above the base when its own span is disabled), saving them, then exit its
//!   own span and restore the previous default.
//!
//! So a user span entered in a green thread stays current for that green thread across
//! switches and never shows up as the current span of another green thread on the same
//! worker.
//!
//! Both halves run on the resumer's stack with no green thread current (`resume` marks
//! the green thread current only around the switch itself), so a subscriber callback
//! that tries to suspend "the current green thread" there cannot switch off the
//! resumer's stack: it panics instead, and any panic from a subscriber in a half aborts
//! the process with a message saying so ([`SUBSCRIBER_PANICKED`]).
//!
//! Saving and restoring user spans needs a subscriber that reports its current span
//! (`current_span`), as tracing-subscriber's `Registry` does; with others only the green
//! thread's own span is entered and exited.

use crate::green::{AbortOnUnwind, Green, GreenId};
use std::cell::UnsafeCell;
use tracing::dispatcher::{self, Dispatch};
use tracing::span::Id;
use tracing::subscriber::NoSubscriber;

/// A green thread's tracing state: nothing (a null pointer) for a green thread that has
/// never had a listener, so spawning while nobody listens costs one store here;
/// otherwise its [`Traced`] state, boxed.
pub(crate) struct GreenTrace {
    traced: UnsafeCell<Option<Box<Traced>>>,
}

/// The tracing state of a green thread that has (or had) a listener.
struct Traced {
    /// Keeps the span open for the green thread's life, once created (see `parent`).
    _span: tracing::Span,
    /// The span's id; None when it is disabled (filtered out), not created yet, or for a
    /// green thread that adopted a subscriber set after it was spawned (it has no span).
    own: Option<Id>,
    /// Until the first slice creates the span: the spawner's current span at spawn
    /// (kept open), its parent. None once created, or when it will not be created.
    parent: Option<tracing::Span>,
    /// The dispatcher current where it was spawned, or the one it adopted.
    dispatch: Dispatch,
    /// Whether `dispatch` was the global default or a scoped one (which each slice must
    /// make current).
    kind: Kind,
    /// User spans entered when it last switched out, outermost first.
    saved: Vec<Id>,
}

// SAFETY: `traced` is touched only in `enter_slice`, `exit_slice` and `wants_slice`,
// whose contract is that they run on the thread resuming the green thread, and only one
// thread resumes a green thread at a time (the state machine in state.rs; see
// GreenThread's Sync impl); the `Send` parts inside (`Span`, `Dispatch`, `Id`s) move
// with it as its control block does.
unsafe impl Sync for GreenTrace {}

impl GreenTrace {
    /// Drops its tracing state (closing its span), for a control block being reused.
    pub(crate) fn clear(&mut self) {
        *self.traced.get_mut() = None;
    }

    #[inline]
    pub(crate) fn new() -> GreenTrace {
        let traced = if dispatcher::has_been_set() {
            Traced::new()
        } else {
            None
        };
        GreenTrace {
            traced: UnsafeCell::new(traced),
        }
    }

    /// Whether a slice of this green thread has tracing work to do; asked by its
    /// resumer once [`listening`] is true. False for a green thread spawned while nobody
    /// listened as long as nobody listens where it is resumed, so such green threads
    /// skip the slice machinery; the answer is not cached, so a subscriber set later is
    /// still adopted (see `enter_slice`).
    ///
    /// # Safety
    /// As for [`enter_slice`]: the caller is the green thread's resumer.
    #[inline]
    pub(crate) unsafe fn wants_slice(&self) -> bool {
        // SAFETY: the caller is the resumer (the contract), the only thread that touches
        // `traced` (see the Sync impl).
        if unsafe { (*self.traced.get()).is_some() } {
            return true;
        }
        !dispatcher::get_default(|d| d.is::<NoSubscriber>())
    }
}

impl Traced {
    /// The state of a green thread spawned here and now, or None when nobody listens
    /// here (a dispatcher existed once, e.g. a scoped one since dropped).
    #[cold]
    fn new() -> Option<Box<Traced>> {
        let dispatch = dispatcher::get_default(Dispatch::clone);
        if dispatch.is::<NoSubscriber>() {
            return None;
        }
        // Only the parent now; the span at the first slice (see the module docs).
        let enabled =
            tracing::span_enabled!(target: "greenrt::green", tracing::Level::DEBUG, id, name);
        let kind = kind_of(&dispatch);
        Some(Box::new(Traced {
            _span: tracing::Span::none(),
            own: None,
            parent: enabled.then(tracing::Span::current),
            dispatch,
            kind,
            saved: Vec::new(),
        }))
    }

    /// Whether a slice of it here has nothing to tell the subscriber as it begins: its
    /// own span is filtered out (or it has none) and created, it left no user span
    /// entered, this is a worker (whose base is "none") and its dispatcher is already
    /// the current one here. The common case under a filter that drops greenrt's spans
    /// (a `fmt` subscriber at INFO): [`enter_slice`] then skips its full path.
    #[inline(always)]
    fn quiet_on_this_worker(&self) -> bool {
        self.own.is_none()
            && self.parent.is_none()
            && self.saved.is_empty()
            && match self.kind {
                Kind::Scoped(key) => INSTALLED_KEY.get() == key,
                Kind::Global => INSTALLED_KEY.get() == 0,
                Kind::ScopedUnknown => false,
            }
            && crate::runtime::context::on_worker()
    }

    /// At the first slice, with the green thread's dispatcher current: creates its span
    /// as a child of the parent captured at spawn.
    #[cold]
    #[inline(never)]
    fn create_span(&mut self, identity: &Green) {
        let Some(parent) = self.parent.take() else {
            return;
        };
        let span = tracing::debug_span!(
            target: "greenrt::green",
            parent: &parent,
            "green",
            id = identity.id().as_u64(),
            name = identity.name().unwrap_or(""),
        );
        self.own = span.id();
        self._span = span;
    }
}

/// Which kind of default a captured dispatcher was.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// The global default: already current on every thread without scoped ones.
    Global,
    /// A scoped default (`set_default`), with the address of its subscriber, which
    /// identifies it while it lives (we hold a clone, so it cannot be reused).
    Scoped(usize),
    /// A scoped default we could not identify: made current for every slice.
    ScopedUnknown,
}

/// Whether `dispatch` is the global default or a scoped one, and which. tracing has no
/// public API for this; `Dispatch`'s `Debug` output names the kind and the subscriber's
/// address (`Dispatch::Scoped(0x..)`). If that format ever changes we answer
/// `ScopedUnknown`, which is always correct (the dispatcher is made current for every
/// slice), only slower.
fn kind_of(dispatch: &Dispatch) -> Kind {
    struct Text {
        bytes: [u8; 48],
        len: usize,
    }
    impl std::fmt::Write for Text {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let take = s.len().min(self.bytes.len() - self.len);
            self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
            self.len += take;
            if self.len == self.bytes.len() {
                Err(std::fmt::Error) // enough: stop formatting
            } else {
                Ok(())
            }
        }
    }
    let mut text = Text {
        bytes: [0; 48],
        len: 0,
    };
    let _ = std::fmt::write(&mut text, format_args!("{dispatch:?}"));
    let text = std::str::from_utf8(&text.bytes[..text.len]).unwrap_or("");
    if text.starts_with("Dispatch::Global") {
        return Kind::Global;
    }
    text.strip_prefix("Dispatch::Scoped(0x")
        .and_then(|rest| rest.split(')').next())
        .and_then(|hex| usize::from_str_radix(hex, 16).ok())
        .filter(|&address| address != 0)
        .map_or(Kind::ScopedUnknown, Kind::Scoped)
}

thread_local! {
    /// On a worker thread: the scoped dispatcher greenrt made current for the previous
    /// slice and left in place, so consecutive slices of green threads spawned under the
    /// same scoped subscriber do not pay for `set_default` (a global atomic) each time.
    static INSTALLED: std::cell::RefCell<Option<(usize, dispatcher::DefaultGuard)>> =
        const { std::cell::RefCell::new(None) };
    /// The key in `INSTALLED`, or 0 when none: a plain copy (no destructor, so no lazy
    /// registration on access) that the per-slice check reads instead of `INSTALLED`.
    static INSTALLED_KEY: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A worker going idle or exiting: restore its own default, so a dropped scoped
/// subscriber is not kept alive (or fed scheduler events) by an idle worker.
pub(crate) fn worker_idle() {
    if listening() {
        INSTALLED_KEY.set(0);
        let guard = INSTALLED.with(|installed| installed.borrow_mut().take());
        drop(guard);
    }
}

/// Makes `dispatch` current on this thread for a slice. On workers a scoped one stays
/// installed afterwards (see `INSTALLED`); returns a guard to drop at switch out only
/// where it must not stay (hosts, and scoped dispatchers we cannot identify).
#[inline]
fn make_current(
    dispatch: &Dispatch,
    kind: Kind,
    on_worker: bool,
) -> Option<dispatcher::DefaultGuard> {
    // The common cases, inline: nothing to change.
    match (kind, on_worker) {
        // Still installed from an earlier slice (keys are non-zero addresses).
        (Kind::Scoped(key), true) if INSTALLED_KEY.get() == key => return None,
        // The global default is current where no scoped one is installed.
        (Kind::Global, true) if INSTALLED_KEY.get() == 0 => return None,
        (Kind::Global, false) => return None,
        _ => {}
    }
    make_current_slow(dispatch, kind, on_worker)
}

#[inline(never)]
fn make_current_slow(
    dispatch: &Dispatch,
    kind: Kind,
    on_worker: bool,
) -> Option<dispatcher::DefaultGuard> {
    match (kind, on_worker) {
        (Kind::Global, false) => None,
        (Kind::Global, true) => {
            worker_idle();
            None
        }
        (Kind::Scoped(key), true) => {
            if INSTALLED_KEY.get() == key {
                // Still installed from an earlier slice (keys are non-zero addresses).
                return None;
            }
            INSTALLED.with(|installed| {
                let mut installed = installed.borrow_mut();
                if installed.as_ref().map(|(k, _)| *k) != Some(key) {
                    // Drop the previous guard first: guards must be dropped in reverse
                    // order of creation on a thread.
                    drop(installed.take());
                    *installed = Some((key, dispatcher::set_default(dispatch)));
                }
            });
            INSTALLED_KEY.set(key);
            None
        }
        (Kind::Scoped(_), false) | (Kind::ScopedUnknown, _) => {
            if on_worker {
                worker_idle();
            }
            Some(dispatcher::set_default(dispatch))
        }
    }
}

/// Whether any tracing dispatcher has ever been set: until then greenrt does no tracing
/// work at all on a switch.
#[inline(always)]
pub(crate) fn listening() -> bool {
    dispatcher::has_been_set()
}

/// What a slice's switch out needs from its switch in: the base span and the default
/// to restore.
pub(crate) struct Slice {
    base: Option<Id>,
    restore: Option<dispatcher::DefaultGuard>,
}

/// Switch in: sets up a slice of a green thread's execution in its tracing context, just
/// before the resumer switches into it; [`exit_slice`] ends the slice once it switched
/// back. Called by the resumer once [`listening`] and [`GreenTrace::wants_slice`] said
/// there is tracing work to do. Returns None when there is none after all (spawned
/// while nobody listened, and nobody listens here yet).
///
/// Two calls that each return before the switch, not one function wrapped around it:
/// the switch must happen at the same call depth as an untraced one. A frame around it
/// leaves the return-stack predictor one entry off on both sides (the green thread's
/// `ret` out of `yield_now` would pop the resumer's return address, and the resumer's
/// `ret` the green thread's), two mispredicted returns per slice, which was most of the
/// cost of a `fmt` subscriber on yield_many.
///
/// # Safety
/// The caller is the green thread's resumer: it holds it RUNNING on its home thread
/// (so no other thread resumes it meanwhile) and is about to switch into it.
#[inline(never)]
pub(crate) unsafe fn enter_slice(trace: &GreenTrace, identity: &Green) -> Option<Slice> {
    // SAFETY: the caller is the resumer (the contract), the only thread that touches
    // `traced` (see the Sync impl); this shared borrow ends before the one below.
    if let Some(traced) = unsafe { &*trace.traced.get() } {
        if traced.quiet_on_this_worker() {
            return Some(Slice {
                base: None,
                restore: None,
            });
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { enter_slice_in_full(trace, identity) }
}

/// [`enter_slice`] when the slice has something to tell the subscriber; out of line, so
/// the quiet path above stays a leaf that saves almost no registers.
///
/// # Safety
/// As for [`enter_slice`].
#[inline(never)]
unsafe fn enter_slice_in_full(trace: &GreenTrace, identity: &Green) -> Option<Slice> {
    let guard = AbortOnUnwind::new(SUBSCRIBER_PANICKED);
    // SAFETY: forwarded from the caller.
    let slice = unsafe { enter_slice_unguarded(trace, identity) };
    guard.disarm();
    slice
}

/// Why a slice aborts when a subscriber's callback panics in it.
///
/// The resumer runs the slice's halves around the switch, with the green thread held
/// RUNNING. A panic unwinding from there would leave it held forever (a started green
/// thread never moves to another thread, and nothing would resume it again) and unwind
/// the worker's scheduler loop.
const SUBSCRIBER_PANICKED: &str =
    "a tracing subscriber panicked while greenrt switched a green thread in or out \
     (entering or exiting its spans; see the panic message above): unwinding from there \
     would strand that green thread and its worker";

/// [`enter_slice`]'s work, which it runs under an [`AbortOnUnwind`] guard.
///
/// # Safety
/// As for [`enter_slice`].
#[inline(always)]
unsafe fn enter_slice_unguarded(trace: &GreenTrace, identity: &Green) -> Option<Slice> {
    // SAFETY: the caller is the resumer (the contract), the only thread that touches
    // `traced` (see the Sync impl), and holds no other reference to it.
    let slot = unsafe { &mut *trace.traced.get() };
    let traced = match slot {
        Some(traced) => traced,
        None => {
            // Spawned while nobody listened. If a (global) subscriber has been set
            // since, adopt it now, so user spans entered from here on are still kept
            // per green thread. Asked without cloning first: this runs at every switch
            // of such a green thread for as long as nobody listens.
            let dispatch =
                dispatcher::get_default(|d| (!d.is::<NoSubscriber>()).then(|| d.clone()))?;
            slot.insert(Box::new(Traced {
                _span: tracing::Span::none(),
                own: None,
                parent: None,
                dispatch,
                kind: Kind::Global,
                saved: Vec::new(),
            }))
        }
    };
    let on_worker = crate::runtime::context::on_worker();
    let restore = make_current(&traced.dispatch, traced.kind, on_worker);
    if traced.parent.is_some() {
        // The first slice: create the span here, under the dispatcher just made current.
        traced.create_span(identity);
    }
    let Traced {
        own,
        dispatch,
        saved,
        ..
    } = &**traced;
    // Worker threads never enter spans themselves, so their base is "none".
    let base = if own.is_none() && !on_worker {
        dispatch.current_span().id().cloned()
    } else {
        None
    };
    if let Some(own) = own {
        dispatch.enter(own);
    }
    for id in saved.iter() {
        dispatch.enter(id);
    }
    Some(Slice { base, restore })
}

/// Switch out: ends the slice [`enter_slice`] began, once the green thread switched
/// back. Exits (and saves, innermost first) every span above the green thread's own
/// span, or above the base when its own span is disabled, then its own span, then
/// restores the resumer's default.
///
/// # Safety
/// The caller is the resumer that called [`enter_slice`] for this slice, just switched
/// back to by the green thread.
#[inline(never)]
pub(crate) unsafe fn exit_slice(trace: &GreenTrace, slice: Slice) {
    // The quiet case (see `Traced::quiet_on_this_worker`): with no own span, no base
    // and nothing to restore, the slice ends as it began unless the green thread left a
    // user span entered, which one question to the subscriber tells.
    if slice.base.is_none() && slice.restore.is_none() {
        // SAFETY: the caller is the resumer (the contract), the only thread that touches
        // `traced` (see the Sync impl); this shared borrow ends before the one below.
        if let Some(traced) = unsafe { &*trace.traced.get() } {
            if traced.own.is_none() && traced.saved.is_empty() {
                let guard = AbortOnUnwind::new(SUBSCRIBER_PANICKED);
                let no_user_span = traced.dispatch.current_span().id().is_none();
                guard.disarm();
                if no_user_span {
                    return;
                }
            }
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { exit_slice_in_full(trace, slice) }
}

/// [`exit_slice`] when the slice has something to tell the subscriber.
///
/// # Safety
/// As for [`exit_slice`].
#[inline(never)]
unsafe fn exit_slice_in_full(trace: &GreenTrace, slice: Slice) {
    let guard = AbortOnUnwind::new(SUBSCRIBER_PANICKED);
    // SAFETY: forwarded from the caller.
    unsafe { exit_slice_unguarded(trace, slice) };
    guard.disarm();
}

/// [`exit_slice`]'s work, which it runs under an [`AbortOnUnwind`] guard.
///
/// # Safety
/// As for [`exit_slice`].
#[inline(always)]
unsafe fn exit_slice_unguarded(trace: &GreenTrace, slice: Slice) {
    // SAFETY: the caller is the resumer (the contract), the only thread that touches
    // `traced` (see the Sync impl); the green thread itself never touches its tracing
    // state, so nothing changed it while it ran.
    let Some(traced) = (unsafe { &mut *trace.traced.get() }) else {
        // enter_slice returns a slice only with the state set, and nothing unsets it.
        debug_assert!(false, "a tracing slice ended without its state");
        return;
    };
    let Traced {
        own,
        dispatch,
        saved,
        ..
    } = &mut **traced;
    let own = own.as_ref();
    saved.clear();
    let stop = own.or(slice.base.as_ref());
    loop {
        let current = dispatch.current_span();
        match current.id() {
            Some(id) if Some(id) != stop => {
                let id = id.clone();
                dispatch.exit(&id);
                saved.push(id);
            }
            _ => break,
        }
    }
    saved.reverse();
    if let Some(own) = own {
        dispatch.exit(own);
    }
    // Last, restore the resumer's dispatcher (tested first: usually there is nothing to
    // restore, and this keeps the guard's drop glue off that path).
    if let Some(guard) = slice.restore {
        drop(guard);
    }
}

/// A scheduler event (spawn, steal, wake, cancel) at TRACE, target `greenrt::sched`.
#[inline]
pub(crate) fn sched_event(event: &'static str, id: GreenId) {
    tracing::trace!(target: "greenrt::sched", event, id = id.as_u64());
}

/// A scheduler event sent when this guard is dropped: after the work that follows it in
/// the caller's scope, however that scope ends.
pub(crate) struct SchedEventOnDrop {
    event: &'static str,
    /// `None` when nothing listens at TRACE for the target.
    id: Option<GreenId>,
}

impl SchedEventOnDrop {
    /// `id` is asked only when something listens: a wake is the one event sent on every
    /// request of a server, and the id lies on a cache line of the control block that
    /// nothing else in a wake or a resume touches.
    #[inline]
    pub(crate) fn new(event: &'static str, id: impl FnOnce() -> GreenId) -> SchedEventOnDrop {
        let listening = tracing::enabled!(target: "greenrt::sched", tracing::Level::TRACE);
        SchedEventOnDrop {
            event,
            id: listening.then(id),
        }
    }
}

impl Drop for SchedEventOnDrop {
    #[inline]
    fn drop(&mut self) {
        if let Some(id) = self.id {
            sched_event(self.event, id);
        }
    }
}

/// Where a runtime's worker-level events (park) go: the dispatcher that was the default
/// where the runtime was built, if that was a scoped one (`set_default`), since worker
/// threads see only the global default; green threads' events follow their own
/// dispatcher instead (see the module docs).
/// Held weakly: the runtime must not keep the user's scoped subscriber alive (or feed it
/// events) once nothing else holds it.
pub(crate) struct RuntimeDispatch(Option<dispatcher::WeakDispatch>);

impl RuntimeDispatch {
    /// The current thread's default, kept only if it is a scoped one that listens.
    pub(crate) fn capture() -> RuntimeDispatch {
        if !listening() {
            return RuntimeDispatch(None);
        }
        let dispatch = dispatcher::get_default(Dispatch::clone);
        let scoped = !dispatch.is::<NoSubscriber>() && kind_of(&dispatch) != Kind::Global;
        RuntimeDispatch(scoped.then(|| dispatch.downgrade()))
    }
}

/// A worker about to park (after [`worker_idle`], so no green thread's dispatcher is
/// installed on it).
#[inline]
pub(crate) fn park_event(worker: usize, runtime: &RuntimeDispatch) {
    let event = || tracing::trace!(target: "greenrt::sched", event = "park", worker);
    match &runtime.0 {
        Some(weak) => match weak.upgrade() {
            Some(dispatch) => dispatcher::with_default(&dispatch, event),
            None => event(),
        },
        None => event(),
    }
}
