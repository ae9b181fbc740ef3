//! The I/O reactor: one `mio::Poll` (epoll on Linux) per runtime, driven by the workers.
//!
//! This module owns the poll instance, the registrations (a slab of [`ScheduledIo`],
//! keyed by mio `Token`) and the dispatch of readiness to wakers. There is no reactor
//! thread (tokio's model):
//! - A worker about to park takes the poll lock with `try_lock`. If it gets it, it
//!   becomes the *driver*: it blocks in `epoll_wait` with its next timer deadline as the
//!   timeout instead of in `thread::park`, then dispatches readiness. Other parking
//!   workers park as before.
//! - A busy worker polls without blocking every `GLOBAL_INTERVAL` ticks (when nobody is
//!   driving), so readiness is seen while every worker is busy.
//! - Hand-off: a worker that found the poll lock taken parks in `thread::park`, and
//!   nothing but work for it would wake it to try again. So whoever releases the lock
//!   to go back to running work (the driver leaving `epoll_wait` with work to run, or a
//!   busy worker after its non-blocking poll) unparks one sleeping worker
//!   (`Shared::hand_off_reactor`; not counted as searching: it is not woken for queued
//!   work), which loops, finds no work, parks and takes the free lock. Without this, a
//!   long-running green thread on the former driver stalled every socket of the runtime
//!   although another worker was idle, and deadlocked it if that green thread blocked
//!   its OS thread waiting for I/O. No missed hand-off: a parker registers as a sleeper
//!   (then a SeqCst fence) before its `try_lock`; the releaser unlocks, fences, then
//!   reads the sleepers. A `try_lock` that failed read the lock before the release, so
//!   the releaser's read comes after that registration and sees it.
//! - Waking the driver: [`Reactor::unpark`] is called for every worker unpark; when that
//!   worker is the driver, it writes the `mio::Waker` (an eventfd). The eventfd stays
//!   readable until the next poll consumes it, so a wake that lands before the driver
//!   enters `epoll_wait` is not lost (like `thread::unpark`'s token). See
//!   [`Reactor::park`] for why the driver index is published before the last check for
//!   work.
//!
//! Readiness is edge-triggered. Each registration keeps readiness bits and a tick that
//! every event advances ([`ScheduledIo`]). An I/O attempt snapshots them before its
//! syscall. On `WouldBlock` it clears the bits it waited on only if no event arrived
//! since the snapshot, else it retries the syscall, so an event that raced with the
//! failed attempt is never lost. A read or write that moved fewer bytes than asked
//! clears the readable/writable bit the same way, and an attempt that finds its
//! direction not ready waits without a syscall: one `recv` per request on a keep-alive
//! connection instead of three. Waiters are woken all at once (several green threads
//! may accept on one listener); each retries its own syscall. No lost wake-up: a waiter
//! registers under its direction's lock, then sets that direction's *waiting* bit in the
//! word with one read-modify-write that also reads the readiness; a dispatch updates the
//! word with one read-modify-write too, clearing the waiting bit, and locks and takes the
//! waiters only if the bit was set. Both steps are on one word, so one comes first:
//! either the waiter sees the event's bits, or the dispatch sees the waiter's bit and
//! takes its waker ([`ScheduledIo::poll_ready`]). An event on a connection that nobody
//! waits to write to thus leaves the writers alone.
//!
//! Waiters, per direction: one *slot* for `AsyncRead`/`AsyncWrite` (each poll replaces
//! the waker, like tokio: only the last poller of a direction is woken) and *keyed*
//! entries for everything else (green threads in `do_io`, the accept/recv/connect
//! futures). A dispatch frees the keyed entries it takes; an owner that stops waiting
//! for any other reason frees its own ([`WaiterKey`] says how it tells, without the
//! lock in the common case). So a wait that is abandoned (a timeout, a dropped future,
//! a cancelled green thread or task) drops its waker, and what that waker keeps alive,
//! at once rather than at the next event.
//!
//! Nothing here runs user code except wakers, and those are woken after every lock of
//! this module is released, each through [`crate::wake::wake_catching_panics`]: one
//! panicking waker neither kills the worker nor stops the others being woken.

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::task::{Context, Poll as TaskPoll, Waker};
use std::time::Duration;

const WAKER_TOKEN: Token = Token(usize::MAX);
const NO_DRIVER: usize = usize::MAX;

pub(crate) const READABLE: u8 = 1;
pub(crate) const WRITABLE: u8 = 2;
const READ_CLOSED: u8 = 4;
const WRITE_CLOSED: u8 = 8;
const ERROR: u8 = 16;
/// Set on every registration when the reactor closes, and never cleared: both
/// directions then count as ready, so each waiter retries its syscall and, on
/// `WouldBlock`, finds the reactor closed and returns that error instead of waiting
/// for events that nobody will dispatch any more.
const SHUTDOWN: u8 = 32;
/// Set by a waiter of the direction once it has registered, cleared by the dispatch
/// that takes that direction's waiters: a dispatch that finds its direction's bit clear
/// has no waiter to take and leaves that direction's lock, and its cache line, alone.
/// (An event reports every direction that is ready, so without these bits each event
/// on a connection would lock its writers too, though a response never waits.)
const READ_WAITING: u8 = 64;
const WRITE_WAITING: u8 = 128;

/// Which side of a socket an operation waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Read,
    Write,
}

impl Direction {
    fn mask(self) -> u8 {
        match self {
            Direction::Read => READABLE | READ_CLOSED | ERROR | SHUTDOWN,
            Direction::Write => WRITABLE | WRITE_CLOSED | ERROR | SHUTDOWN,
        }
    }

    fn waiting(self) -> u8 {
        match self {
            Direction::Read => READ_WAITING,
            Direction::Write => WRITE_WAITING,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What [`ScheduledIo`] synchronizes with: under the loom model checks (`mod loom_model`
/// below: `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_model`) its readiness
/// word and waiter locks are loom's, so loom explores every interleaving of waits,
/// dispatches and clears; everywhere else, and for the rest of the reactor, std's. The
/// protocol itself is the same code.
mod io_sync {
    #[cfg(not(all(loom, test)))]
    pub(super) use super::lock;
    #[cfg(all(loom, test))]
    pub(super) use loom::sync::{atomic::AtomicUsize, Mutex};
    #[cfg(not(all(loom, test)))]
    pub(super) use std::sync::{atomic::AtomicUsize, Mutex};

    /// [`super::lock`] for loom's mutex.
    #[cfg(all(loom, test))]
    pub(super) fn lock<T>(mutex: &Mutex<T>) -> loom::sync::MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Readiness and waiters of one registered file descriptor.
///
/// `readiness` is one word: the readiness and waiting bits in the low byte, and above
/// them a tick that every dispatched event advances. An I/O attempt takes a
/// [`Snapshot`] before its syscall; clearing readiness afterwards succeeds only if no
/// event arrived since, so a clear never erases an event the attempt did not see
/// (tokio's scheme).
///
/// Laid out for a server with many connections, where each one's registration is cold
/// when its event comes: the word and the readers' waiters fill the first cache line,
/// which is all that a read's wait and its dispatch touch, and the writers' waiters the
/// second (a response that fits the socket buffer never waits), and where it is
/// registered, which only its deregistration reads, the rest. Aligned, so that no other
/// allocation shares those lines, and the dispatch's two prefetches cover the first two.
#[derive(Default)]
#[repr(C, align(64))]
pub(crate) struct ScheduledIo {
    readiness: io_sync::AtomicUsize,
    readers: io_sync::Mutex<Waiters>,
    writers: io_sync::Mutex<Waiters>,
    /// `None` only in unit tests, which use a `ScheduledIo` without a reactor.
    registered_at: Option<RegisteredAt>,
}

/// Where a [`ScheduledIo`] is registered.
struct RegisteredAt {
    reactor: Arc<Reactor>,
    token: usize,
    fd: RawFd,
}

/// How a waiter is registered (see the module docs).
pub(crate) enum Waiter<'a> {
    /// The direction's one `AsyncRead`/`AsyncWrite` slot: each poll replaces it.
    Slot,
    /// A keyed entry, allocated on first use; its owner must call
    /// [`ScheduledIo::release_waiter`] with the key when it stops waiting.
    Keyed(&'a mut WaiterKey),
}

/// A keyed waiter's claim on its entry.
///
/// Who frees the entry: a dispatch frees every keyed entry it takes the waker from, so
/// the owner of a wait that an event ended has nothing left to do; the owner frees it
/// when it stops waiting for any other reason (a timeout, a cancel, a dropped future).
/// The owner tells the two apart without the lock ([`ScheduledIo::release_waiter`]):
/// `armed` says the last registration's recheck found the direction not ready, and only
/// a dispatch sets readiness bits, so bits seen set later mean a dispatch updated the
/// word after that recheck. The first such dispatch found the waiting bit that the
/// recheck set, so it locks the waiters after our registration and takes our entry (or
/// has taken it). Otherwise the owner locks and frees the entry, if it is still its
/// own: the ticket tells an entry that a dispatch freed and another waiter was given
/// since.
#[derive(Debug, Default)]
pub(crate) struct WaiterKey {
    /// Index and ticket of the entry, once registered.
    entry: Option<(u32, u64)>,
    armed: bool,
}

impl WaiterKey {
    /// Whether it may hold an entry: a registration happened and was not released.
    pub(crate) fn holds_entry(&self) -> bool {
        self.entry.is_some()
    }
}

/// The waiters of one direction.
///
/// Keyed entries are indexed from 0: entry 0 lives inline (`first`), the others in
/// [`Extra::more`], and the free ones are chained through their `next`. A connection's
/// green thread waits with one keyed entry at a time, so its every wait touches only
/// this struct, and this struct shares its cache line with the readiness word (see
/// [`ScheduledIo`]): no separate allocation, which at thousands of connections would
/// be one more cold line per wait. Hence 48 bytes, and the `AsyncRead`/`AsyncWrite`
/// slot and the entries past the first behind one pointer.
struct Waiters {
    /// Keyed entry 0.
    first: KeyedEntry,
    /// The ticket the next allocated entry gets (never reused: a u64 does not wrap).
    next_ticket: u64,
    /// How many keyed entries exist (were ever allocated): indices `0..created`.
    created: u32,
    /// The first free entry's index, or [`NO_ENTRY`]; each free entry names the next.
    free_head: u32,
    /// Allocated the first time the slot or a second keyed entry is needed.
    extra: Option<Box<Extra>>,
}

impl Default for Waiters {
    fn default() -> Waiters {
        Waiters {
            first: KeyedEntry::default(),
            next_ticket: 0,
            created: 0,
            free_head: NO_ENTRY,
            extra: None,
        }
    }
}

/// The rarely needed part of [`Waiters`].
#[derive(Default)]
struct Extra {
    /// The `AsyncRead`/`AsyncWrite` slot.
    slot: Option<Waker>,
    /// Keyed entries 1 and up.
    more: Vec<KeyedEntry>,
}

/// The end of a free list.
const NO_ENTRY: u32 = u32::MAX;

/// A keyed entry: 24 bytes (`Free` fits beside `Waker`'s non-null vtable pointer).
enum KeyedEntry {
    /// Allocated to the key holding `ticket`, whose waker it keeps for the next dispatch.
    Held { ticket: u64, waker: Waker },
    /// On the free list, before `next` (or [`NO_ENTRY`]).
    Free { next: u32 },
}

impl Default for KeyedEntry {
    fn default() -> KeyedEntry {
        KeyedEntry::Free { next: NO_ENTRY }
    }
}

impl Waiters {
    /// Registers `waker` as `waiter`; returns the keyed waiter's key, if it was one, and
    /// the waker it replaced, which the caller drops after unlocking (dropping a waker
    /// may run user code).
    #[must_use]
    #[inline]
    fn register<'a>(
        &mut self,
        waiter: Waiter<'a>,
        waker: &Waker,
    ) -> (Option<&'a mut WaiterKey>, Option<Waker>) {
        match waiter {
            Waiter::Slot => {
                let slot = &mut self.extra.get_or_insert_with(Box::default).slot;
                let replaced = match slot {
                    Some(old) if old.will_wake(waker) => None,
                    _ => slot.replace(waker.clone()),
                };
                (None, replaced)
            }
            Waiter::Keyed(key) => {
                let replaced = self.register_keyed(key, waker);
                (Some(key), replaced)
            }
        }
    }

    /// Keyed entry `index`, which exists (`index < created`).
    fn entry(&mut self, index: u32) -> &mut KeyedEntry {
        debug_assert!(index < self.created);
        match index {
            0 => &mut self.first,
            _ => {
                let extra = self.extra.as_mut().expect("entries past the first exist");
                &mut extra.more[index as usize - 1]
            }
        }
    }

    /// Puts `waker` in `key`'s entry: the one it holds, or a newly allocated one.
    #[inline]
    fn register_keyed(&mut self, key: &mut WaiterKey, waker: &Waker) -> Option<Waker> {
        if let Some((index, ticket)) = key.entry {
            if let KeyedEntry::Held {
                ticket: held,
                waker: old,
            } = self.entry(index)
            {
                if *held == ticket {
                    if old.will_wake(waker) {
                        return None;
                    }
                    return Some(std::mem::replace(old, waker.clone()));
                }
            }
        }
        let index = match self.free_head {
            NO_ENTRY => {
                let index = self.created;
                assert!(index < NO_ENTRY, "over 4 billion waiters on one socket");
                if index > 0 {
                    let extra = self.extra.get_or_insert_with(Box::default);
                    extra.more.push(KeyedEntry::default());
                }
                self.created += 1;
                index
            }
            index => {
                let KeyedEntry::Free { next } = *self.entry(index) else {
                    unreachable!("the free list holds only free entries");
                };
                self.free_head = next;
                index
            }
        };
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        *self.entry(index) = KeyedEntry::Held {
            ticket,
            waker: waker.clone(),
        };
        key.entry = Some((index, ticket));
        None
    }

    /// Frees entry `index`, returning its waker, if it is allocated.
    fn free(&mut self, index: u32) -> Option<Waker> {
        if !matches!(self.entry(index), KeyedEntry::Held { .. }) {
            return None;
        }
        let next = self.free_head;
        let KeyedEntry::Held { waker, .. } =
            std::mem::replace(self.entry(index), KeyedEntry::Free { next })
        else {
            unreachable!("checked above");
        };
        self.free_head = index;
        Some(waker)
    }

    /// Frees `key`'s entry if it still holds it, returning its waker.
    fn remove(&mut self, key: &mut WaiterKey) -> Option<Waker> {
        let (index, ticket) = key.entry.take()?;
        match self.entry(index) {
            KeyedEntry::Held { ticket: held, .. } if *held == ticket => self.free(index),
            _ => None,
        }
    }

    /// Takes every waker and frees every keyed entry (see [`WaiterKey`]).
    fn take_all(&mut self, wake: &mut Vec<Waker>) {
        if let Some(extra) = &mut self.extra {
            wake.extend(extra.slot.take());
        }
        for index in 0..self.created {
            wake.extend(self.free(index));
        }
    }

    /// Whether entry `index` is allocated (for tests).
    #[cfg(test)]
    fn is_held(&mut self, index: u32) -> bool {
        matches!(self.entry(index), KeyedEntry::Held { .. })
    }

    /// The free list, head first (for tests: a cycle, a double free, shows as a list
    /// longer than the entries).
    #[cfg(test)]
    fn free_list(&mut self) -> Vec<u32> {
        let mut list = Vec::new();
        let mut next = self.free_head;
        while next != NO_ENTRY {
            list.push(next);
            if list.len() > self.created as usize {
                break;
            }
            next = match *self.entry(next) {
                KeyedEntry::Free { next } => next,
                KeyedEntry::Held { .. } => break,
            };
        }
        list
    }
}

/// The readiness word as an I/O attempt saw it before its syscall.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snapshot(usize);

impl Snapshot {
    /// Whether `direction` had readiness (or a closed/error state) at the snapshot.
    pub(crate) fn is_ready(self, direction: Direction) -> bool {
        self.0 & direction.mask() as usize != 0
    }
}

const BITS: usize = 0xff;
const TICK: usize = 1 << 8;

impl ScheduledIo {
    fn waiters(&self, direction: Direction) -> &io_sync::Mutex<Waiters> {
        match direction {
            Direction::Read => &self.readers,
            Direction::Write => &self.writers,
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot(self.readiness.load(Ordering::SeqCst))
    }

    /// Whether the reactor it is registered with has closed: its runtime shut down
    /// (see [`SHUTDOWN`]), so nothing will report its readiness any more.
    pub(crate) fn reactor_closed(&self) -> bool {
        self.snapshot().0 & SHUTDOWN as usize != 0
    }

    /// After an attempt that started at `seen` returned `WouldBlock`: clears all of
    /// `direction`'s bits. Returns false, clearing nothing, when an event arrived since
    /// `seen` (the caller then retries the syscall instead of waiting).
    pub(crate) fn clear_would_block(&self, seen: Snapshot, direction: Direction) -> bool {
        self.clear_if_unchanged(seen, direction.mask())
    }

    /// After an attempt that started at `seen` moved fewer bytes than asked (the socket
    /// buffer is drained, or full): clears `direction`'s readable/writable bit, so the
    /// next attempt waits for an event instead of making a syscall that would only say
    /// `WouldBlock`. Closed and error bits stay: no further edge would report them.
    pub(crate) fn clear_drained(&self, seen: Snapshot, direction: Direction) {
        let bit = match direction {
            Direction::Read => READABLE,
            Direction::Write => WRITABLE,
        };
        self.clear_if_unchanged(seen, bit);
    }

    /// Clears `mask` unless an event arrived since `seen` (the tick or the readiness
    /// changed). A waiter announcing itself since (its waiting bit) is no event: the
    /// clear goes ahead and keeps that bit.
    fn clear_if_unchanged(&self, seen: Snapshot, mask: u8) -> bool {
        let mask = mask & !SHUTDOWN;
        let waiting = (READ_WAITING | WRITE_WAITING) as usize;
        let mut expected = seen.0;
        loop {
            match self.readiness.compare_exchange(
                expected,
                expected & !(mask as usize),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(now) if now & !waiting == seen.0 & !waiting => expected = now,
                Err(_) => return false,
            }
        }
    }

    /// Ready when `direction` has readiness; else registers the waker as `waiter`.
    /// Does not clear. Inlined: a green thread's wait calls it from the I/O loop, and a
    /// frame of its own was one more stack line per connection.
    #[inline]
    pub(crate) fn poll_ready(
        &self,
        direction: Direction,
        waiter: Waiter<'_>,
        cx: &mut Context<'_>,
    ) -> TaskPoll<()> {
        if self.snapshot().is_ready(direction) {
            return TaskPoll::Ready(());
        }
        let (key, replaced, seen) = {
            let mut waiters = io_sync::lock(self.waiters(direction));
            let (key, replaced) = waiters.register(waiter, cx.waker());
            // Announce the waiter and read the word in one step. The dispatch's step on
            // the word is ordered against it: either the dispatch came first and we see
            // its bits here, or it finds our bit and takes our waker (it locks after we
            // unlock).
            let seen = self
                .readiness
                .fetch_or(direction.waiting() as usize, Ordering::SeqCst);
            (key, replaced, Snapshot(seen))
        };
        drop(replaced);
        let ready = seen.is_ready(direction);
        if let Some(key) = key {
            key.armed = !ready;
        }
        if ready {
            TaskPoll::Ready(())
        } else {
            TaskPoll::Pending
        }
    }

    /// Ends a keyed waiter's wait: frees its entry unless a dispatch does (see
    /// [`WaiterKey`]). A woken waiter whose event is still in the bits (every read or
    /// write that an event ended, before its retry) takes no lock. A waker that is
    /// freed here is dropped outside the lock (dropping a waker may run user code).
    pub(crate) fn release_waiter(&self, direction: Direction, key: &mut WaiterKey) {
        if key.entry.is_none() {
            return;
        }
        if key.armed && self.snapshot().is_ready(direction) {
            key.entry = None;
            return;
        }
        let waker = io_sync::lock(self.waiters(direction)).remove(key);
        drop(waker);
    }

    fn set(&self, bits: u8, wake: &mut Vec<Waker>) {
        // It takes the waiters of each direction the event is for, so it clears their
        // waiting bits, and locks only where a waiter had announced itself.
        let taken = [Direction::Read, Direction::Write]
            .into_iter()
            .filter(|direction| bits & direction.mask() != 0)
            .fold(0, |taken, direction| taken | direction.waiting());
        // Advance the tick even when the bits are already set: an attempt that saw the
        // old word must not clear this event.
        let before = self
            .readiness
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |word| {
                let kept = word & BITS & !(taken as usize);
                Some((word & !BITS).wrapping_add(TICK) | kept | bits as usize)
            })
            .unwrap_or_else(|word| word);
        if before & (taken & READ_WAITING) as usize != 0 {
            io_sync::lock(&self.readers).take_all(wake);
        }
        if before & (taken & WRITE_WAITING) as usize != 0 {
            io_sync::lock(&self.writers).take_all(wake);
        }
    }
}

struct Driver {
    poll: Poll,
    events: Events,
}

#[derive(Default)]
struct Slab {
    slots: Vec<Option<Arc<ScheduledIo>>>,
    free: Vec<usize>,
}

/// One runtime's reactor.
pub(crate) struct Reactor {
    driver: Mutex<Driver>,
    registry: Registry,
    waker: mio::Waker,
    /// Index of the worker blocked (or about to block) in `epoll_wait`, or NO_DRIVER.
    driving: AtomicUsize,
    slab: Mutex<Slab>,
    /// Live registrations: busy workers skip the periodic poll while there are none.
    registered: AtomicUsize,
    /// Set when the runtime shuts down: nobody will drive this reactor again.
    closed: AtomicBool,
}

impl Reactor {
    pub(crate) fn new() -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = mio::Waker::new(poll.registry(), WAKER_TOKEN)?;
        Ok(Reactor {
            driver: Mutex::new(Driver {
                poll,
                events: Events::with_capacity(1024),
            }),
            registry,
            waker,
            driving: AtomicUsize::new(NO_DRIVER),
            slab: Mutex::default(),
            registered: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        })
    }

    /// Marks the reactor dead: its runtime is shutting down and no worker will poll it
    /// again. Sockets registered here then refuse to wait instead of hanging, and those
    /// already waiting (green threads and tasks of other runtimes, plain threads'
    /// futures) are woken to find that out (see [`SHUTDOWN`]).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let registered: Vec<Arc<ScheduledIo>> =
            lock(&self.slab).slots.iter().flatten().cloned().collect();
        let mut wake = Vec::new();
        for io in &registered {
            io.set(SHUTDOWN, &mut wake);
        }
        drop(registered);
        wake_all(wake);
    }

    /// Whether [`close`](Reactor::close) was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Registers `fd` for read and write readiness (edge-triggered).
    pub(crate) fn register(self: &Arc<Self>, fd: RawFd) -> io::Result<Registration> {
        let (token, io) = {
            let mut slab = lock(&self.slab);
            let token = slab.free.pop().unwrap_or(slab.slots.len());
            let io = Arc::new(ScheduledIo {
                registered_at: Some(RegisteredAt {
                    reactor: self.clone(),
                    token,
                    fd,
                }),
                ..ScheduledIo::default()
            });
            match slab.slots.get_mut(token) {
                Some(slot) => *slot = Some(io.clone()),
                None => slab.slots.push(Some(io.clone())),
            }
            (token, io)
        };
        // Registered while the reactor closes: either `close` locked the slab after our
        // insert and marks this one too, or its store of `closed` is seen here.
        if self.is_closed() {
            io.set(SHUTDOWN, &mut Vec::new());
        }
        let result = self.registry.register(
            &mut SourceFd(&fd),
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(error) = result {
            self.release(token);
            return Err(error);
        }
        self.registered.fetch_add(1, Ordering::Relaxed);
        Ok(Registration { io })
    }

    fn release(&self, token: usize) {
        let removed = {
            let mut slab = lock(&self.slab);
            let removed = slab.slots.get_mut(token).and_then(Option::take);
            if removed.is_some() {
                slab.free.push(token);
            }
            removed
        };
        drop(removed);
    }

    pub(crate) fn has_registrations(&self) -> bool {
        self.registered.load(Ordering::Relaxed) != 0
    }

    /// Called by a worker about to park (after it registered as a sleeper). Returns
    /// `None` when another thread holds the poll (the caller parks the usual way).
    /// Otherwise it publishes `index` as the driver, runs `has_work` (the caller's last
    /// check of its queues), and unless that found work, blocks in `epoll_wait` for at
    /// most `timeout` (`None`: no limit). Returns the wakers of ready I/O, to be woken
    /// once the caller is done with its parking bookkeeping.
    ///
    /// No lost wake-up: an unparker makes its work visible, fences, then reads
    /// `driving` ([`Reactor::unpark`]); we store `driving`, fence, then look for work.
    /// Either it sees us and writes the eventfd (which stays readable until our poll),
    /// or we see its work and do not block.
    pub(crate) fn park(
        &self,
        index: usize,
        timeout: Option<Duration>,
        has_work: impl FnOnce() -> bool,
    ) -> Option<Vec<Waker>> {
        let mut driver = self.try_lock_driver()?;
        self.driving.store(index, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let timeout = if has_work() {
            Some(Duration::ZERO)
        } else {
            timeout
        };
        let wakers = self.poll_locked(&mut driver, timeout);
        self.driving.store(NO_DRIVER, Ordering::SeqCst);
        Some(wakers)
    }

    /// Polls without blocking if nobody else holds the poll; returns the ready wakers,
    /// or `None` when somebody else had it (then there is a driver, or one is coming).
    pub(crate) fn poll_now(&self) -> Option<Vec<Waker>> {
        let mut driver = self.try_lock_driver()?;
        Some(self.poll_locked(&mut driver, Some(Duration::ZERO)))
    }

    /// The poll, unless another thread holds it. A panic while it was held (in the
    /// parking worker's last look for work, which may call a tracing subscriber) left
    /// nothing half-done in it, so a poisoned lock is taken as it is: treating it as
    /// held would mean nobody ever polls again.
    fn try_lock_driver(&self) -> Option<MutexGuard<'_, Driver>> {
        match self.driver.try_lock() {
            Ok(driver) => Some(driver),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    fn poll_locked(&self, driver: &mut Driver, timeout: Option<Duration>) -> Vec<Waker> {
        let Driver { poll, events } = driver;
        if let Err(error) = poll.poll(events, timeout) {
            if error.kind() != io::ErrorKind::Interrupted {
                eprintln!("greenrt: epoll_wait failed: {error}");
            }
            return Vec::new();
        }
        if events.is_empty() {
            return Vec::new();
        }
        // One allocation per poll rather than a growth step every few events.
        let mut wake = Vec::with_capacity(events.iter().count());
        let slab = lock(&self.slab);
        // The registrations of a busy poll are mostly cold (one per connection): start
        // all their misses before touching the first, so they overlap.
        for event in events.iter() {
            if let Some(Some(io)) = slab.slots.get(event.token().0) {
                let io: *const u8 = Arc::as_ptr(io).cast();
                crate::arch::prefetch(io);
                crate::arch::prefetch(io.wrapping_add(64));
            }
        }
        for event in events.iter() {
            if event.token() == WAKER_TOKEN {
                continue;
            }
            let Some(Some(io)) = slab.slots.get(event.token().0) else {
                continue;
            };
            let mut bits = 0;
            if event.is_readable() {
                bits |= READABLE;
            }
            if event.is_writable() {
                bits |= WRITABLE;
            }
            if event.is_read_closed() {
                bits |= READ_CLOSED;
            }
            if event.is_write_closed() {
                bits |= WRITE_CLOSED;
            }
            if event.is_error() {
                bits |= ERROR;
            }
            io.set(bits, &mut wake);
        }
        wake
    }

    /// Called whenever worker `index` is unparked: if it is blocked in `epoll_wait`,
    /// wakes it through the eventfd. The caller made its work visible first.
    pub(crate) fn unpark(&self, index: usize) {
        fence(Ordering::SeqCst);
        if self.driving.load(Ordering::SeqCst) == index {
            let _ = self.waker.wake();
        }
    }
}

/// A file descriptor registered with a reactor; deregisters on drop. One pointer: it
/// sits in every socket, on the stack of every connection's green thread.
pub(crate) struct Registration {
    pub(crate) io: Arc<ScheduledIo>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let at = self
            .io
            .registered_at
            .as_ref()
            .expect("a Registration is made only by Reactor::register");
        // The fd is still open here: its owner drops the registration first.
        let _ = at.reactor.registry.deregister(&mut SourceFd(&at.fd));
        at.reactor.release(at.token);
        at.reactor.registered.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Wakes `wakers` (outside every lock of this module). A panic from one waker is
/// contained: it neither unwinds into the worker loop nor stops the rest being woken.
pub(crate) fn wake_all(wakers: Vec<Waker>) {
    // A poll may wake hundreds of green threads or tasks whose control blocks went cold
    // while they waited: ask for all of them first, so the misses overlap instead of
    // each wake waiting for its own in turn.
    for waker in &wakers {
        crate::arch::prefetch(waker.data().cast());
    }
    crate::wake::wake_all_catching_panics(wakers);
}

// Plain unit tests; loom's atomics panic outside `loom::model`, so not under loom.
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::AtomicBool;
    use std::task::Wake;

    /// An event reports every ready direction, but a dispatch locks only the waiters
    /// of a direction somebody waits on: here the writers' lock is held throughout,
    /// and a dispatch that tried to take it would block until the test gave up.
    #[test]
    fn an_event_leaves_a_direction_without_waiters_alone() {
        let io = Arc::new(ScheduledIo::default());
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let waits = |direction, key: &mut WaiterKey| {
            let mut cx = Context::from_waker(&waker);
            io.poll_ready(direction, Waiter::Keyed(key), &mut cx)
                .is_pending()
        };
        let mut key = WaiterKey::default();
        assert!(waits(Direction::Read, &mut key));
        let writers = lock(&io.writers);
        let (done, dispatched) = std::sync::mpsc::channel();
        let dispatcher = {
            let io = io.clone();
            std::thread::spawn(move || {
                let mut wake = Vec::new();
                io.set(READABLE | WRITABLE, &mut wake);
                done.send(wake.len()).unwrap();
            })
        };
        let woken = dispatched
            .recv_timeout(Duration::from_secs(60))
            .expect("the dispatch waited for the writers' lock, though no writer waits");
        assert_eq!(woken, 1, "the reader's waker was taken");
        drop(writers);
        dispatcher.join().unwrap();
        // A writer that waits now is announced, and the next event takes it.
        let mut writer = WaiterKey::default();
        let seen = io.snapshot();
        assert!(io.clear_would_block(seen, Direction::Write));
        assert!(waits(Direction::Write, &mut writer));
        let mut wake = Vec::new();
        io.set(WRITABLE, &mut wake);
        assert_eq!(wake.len(), 1, "the writer's waker was taken");
        io.release_waiter(Direction::Read, &mut key);
        io.release_waiter(Direction::Write, &mut writer);
    }

    /// The layout [`ScheduledIo`]'s docs describe.
    #[test]
    fn a_read_wait_touches_one_cache_line() {
        use std::mem::{offset_of, size_of};
        assert_eq!(size_of::<KeyedEntry>(), 24);
        assert_eq!(size_of::<Waiters>(), 48);
        assert!(
            offset_of!(ScheduledIo, readers) + size_of::<Mutex<Waiters>>() <= 64,
            "the readiness word and the readers' waiters must share the first line"
        );
        assert!(
            offset_of!(ScheduledIo, writers) + size_of::<Mutex<Waiters>>() <= 128,
            "the writers' waiters must fit the second line"
        );
        assert!(offset_of!(ScheduledIo, registered_at) >= offset_of!(ScheduledIo, writers));
    }

    #[test]
    fn a_clear_never_erases_an_event_the_attempt_did_not_see() {
        let io = ScheduledIo::default();
        let mut wake = Vec::new();
        io.set(READABLE, &mut wake);
        let seen = io.snapshot();
        assert!(seen.is_ready(Direction::Read));
        // The same bit again, after the attempt's snapshot: the tick moved.
        io.set(READABLE, &mut wake);
        assert!(!io.clear_would_block(seen, Direction::Read), "must retry");
        assert!(io.snapshot().is_ready(Direction::Read));
        // Nothing new since this snapshot: cleared, and the attempt may wait.
        let seen = io.snapshot();
        assert!(io.clear_would_block(seen, Direction::Read));
        assert!(!io.snapshot().is_ready(Direction::Read));
    }

    #[test]
    fn a_short_transfer_clears_readable_but_keeps_closed_and_error() {
        let io = ScheduledIo::default();
        let mut wake = Vec::new();
        io.set(READABLE | READ_CLOSED | WRITABLE, &mut wake);
        io.clear_drained(io.snapshot(), Direction::Read);
        let now = io.snapshot();
        // The FIN came with the data: the next read must still try (and see EOF).
        assert!(now.is_ready(Direction::Read));
        assert_eq!(now.0 & BITS, (READ_CLOSED | WRITABLE) as usize);
        io.clear_drained(now, Direction::Write);
        assert!(!io.snapshot().is_ready(Direction::Write));
    }

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn would_block<T>(result: io::Result<T>) -> bool {
        result.err().map(|e| e.kind()) == Some(io::ErrorKind::WouldBlock)
    }

    /// The reviewer's replay of two green threads X and Y in `Source::do_io` accepting
    /// on one listener, with one edge for two connections: Y's clear must not erase the
    /// event X's failed attempt did not see, so X retries and gets the second
    /// connection instead of waiting with it in the backlog (no new edge would come).
    #[test]
    fn one_waiters_clear_does_not_swallow_anothers_readiness() {
        let reactor = Arc::new(Reactor::new().unwrap());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let registration = reactor.register(listener.as_raw_fd()).unwrap();
        wake_all(reactor.poll_now().unwrap());
        let io = &registration.io;
        let seen_x = io.snapshot();
        assert!(would_block(listener.accept())); // X's attempt
        let seen_y = io.snapshot();
        assert!(would_block(listener.accept())); // Y's attempt
        let _c1 = std::net::TcpStream::connect(addr).unwrap();
        let _c2 = std::net::TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        wake_all(reactor.poll_now().unwrap()); // one edge for both connections
        assert!(!io.clear_would_block(seen_y, Direction::Read)); // Y: retry
        assert!(listener.accept().is_ok()); // Y gets conn 1
        let must_wait = io.clear_would_block(seen_x, Direction::Read);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut key = WaiterKey::default();
        let pending = must_wait
            && io
                .poll_ready(
                    Direction::Read,
                    Waiter::Keyed(&mut key),
                    &mut Context::from_waker(&waker),
                )
                .is_pending();
        assert!(
            !pending,
            "X waits with a connection pending in the backlog and no edge to come"
        );
        assert!(listener.accept().is_ok()); // X retries and gets conn 2
    }

    /// A keyed waiter that stops waiting frees its entry and drops its waker at once;
    /// the slot keeps only the latest waker; an event takes both kinds.
    #[test]
    fn removed_and_replaced_waiters_release_their_wakers() {
        let io = ScheduledIo::default();
        let flags: Vec<_> = (0..4)
            .map(|_| Arc::new(Flag(AtomicBool::new(false))))
            .collect();
        let wakers: Vec<_> = flags.iter().map(|f| Waker::from(f.clone())).collect();
        let poll = |waiter, waker| {
            io.poll_ready(Direction::Read, waiter, &mut Context::from_waker(waker))
                .is_pending()
        };
        let (mut gone, mut stays) = (WaiterKey::default(), WaiterKey::default());
        assert!(poll(Waiter::Keyed(&mut gone), &wakers[0]));
        assert!(poll(Waiter::Keyed(&mut stays), &wakers[3]));
        assert!(poll(Waiter::Slot, &wakers[1]));
        assert!(poll(Waiter::Slot, &wakers[2]));
        assert_eq!(
            Arc::strong_count(&flags[1]),
            2,
            "a replaced slot waker is dropped"
        );
        assert_eq!(Arc::strong_count(&flags[0]), 3);
        io.release_waiter(Direction::Read, &mut gone);
        assert_eq!(
            Arc::strong_count(&flags[0]),
            2,
            "a removed keyed waker is dropped"
        );
        let mut wake = Vec::new();
        io.set(READABLE, &mut wake);
        assert_eq!(wake.len(), 2);
        wake_all(wake);
        assert!(flags[2].0.load(Ordering::SeqCst) && flags[3].0.load(Ordering::SeqCst));
        io.release_waiter(Direction::Read, &mut stays);
        assert!(!stays.holds_entry());
    }

    /// The owner of a wait that an event ended leaves without touching its entry: the
    /// dispatch freed it, and the next registration gets it back.
    #[test]
    fn an_event_frees_the_keyed_entries_it_wakes() {
        let io = ScheduledIo::default();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut key = WaiterKey::default();
        let mut cx = Context::from_waker(&waker);
        assert!(io
            .poll_ready(Direction::Read, Waiter::Keyed(&mut key), &mut cx)
            .is_pending());
        let first = key.entry.expect("registered");
        let mut wake = Vec::new();
        io.set(READABLE, &mut wake);
        assert_eq!(wake.len(), 1);
        {
            let mut readers = lock(&io.readers);
            assert!(!readers.is_held(first.0));
            assert_eq!(
                readers.free_list(),
                vec![first.0],
                "the dispatch freed the entry"
            );
        }
        io.release_waiter(Direction::Read, &mut key);
        assert_eq!(
            lock(&io.readers).free_list(),
            vec![first.0],
            "not freed twice"
        );
        drop(wake);
        assert_eq!(Arc::strong_count(&flag), 2, "only our own waker is left");
        // The next wait reuses the entry under a new ticket.
        let seen = io.snapshot();
        assert!(io.clear_would_block(seen, Direction::Read));
        assert!(io
            .poll_ready(Direction::Read, Waiter::Keyed(&mut key), &mut cx)
            .is_pending());
        let second = key.entry.expect("registered");
        assert_eq!(second.0, first.0);
        assert_ne!(second.1, first.1);
        io.release_waiter(Direction::Read, &mut key);
        assert_eq!(Arc::strong_count(&flag), 2, "released by its owner");
    }

    /// An owner that could not see the event (the bits were cleared again before it
    /// released) takes the lock, and must not free an entry that the dispatch freed and
    /// another waiter was given since.
    #[test]
    fn a_stale_key_never_frees_another_waiters_entry() {
        let io = ScheduledIo::default();
        let flags: Vec<_> = (0..2)
            .map(|_| Arc::new(Flag(AtomicBool::new(false))))
            .collect();
        let wakers: Vec<_> = flags.iter().map(|f| Waker::from(f.clone())).collect();
        let (mut a, mut b) = (WaiterKey::default(), WaiterKey::default());
        let mut cx_a = Context::from_waker(&wakers[0]);
        assert!(io
            .poll_ready(Direction::Read, Waiter::Keyed(&mut a), &mut cx_a)
            .is_pending());
        let mut wake = Vec::new();
        io.set(READABLE, &mut wake); // takes A and frees its entry
        drop(wake);
        // Another attempt drains the socket and clears the bits; B takes A's old entry.
        assert!(io.clear_would_block(io.snapshot(), Direction::Read));
        let mut cx_b = Context::from_waker(&wakers[1]);
        assert!(io
            .poll_ready(Direction::Read, Waiter::Keyed(&mut b), &mut cx_b)
            .is_pending());
        assert_eq!(a.entry.unwrap().0, b.entry.unwrap().0);
        io.release_waiter(Direction::Read, &mut a); // slow path: bits are clear
        assert_eq!(
            Arc::strong_count(&flags[1]),
            3,
            "B's waker is still registered"
        );
        let mut wake = Vec::new();
        io.set(READABLE, &mut wake);
        wake_all(wake);
        assert!(
            flags[1].0.load(Ordering::SeqCst),
            "B is woken by the next event"
        );
        assert!(!flags[0].0.load(Ordering::SeqCst));
    }
}

/// Model checks of the keyed-waiter protocol with loom, which runs each model under every
/// interleaving of its threads (for the larger models, up to a bound on preemptions):
///
/// ```text
/// RUSTFLAGS="--cfg loom" cargo test --release --lib loom_model
/// ```
///
/// The models play the callers' side: an owner waits as `WaitReady` and `IoAsync` do
/// (`poll_ready` with its key; `release_waiter` when the wait ends, whether an event woke
/// it or it gave up), the driver dispatches events (`set`, then wakes what it took,
/// outside the lock), and an I/O attempt that got `WouldBlock` clears the bits it saw.
/// Each waker counts its wakes and the clones of it that are out; the models check that
/// an owner whose poll returned Pending is woken by the next event (no lost wake-up),
/// that a live registration keeps its waker until its owner releases it (nobody else's
/// release frees it), that an owner never waits with data unread and no event to come
/// (no clear erased an event its attempt missed), and, after every thread is joined,
/// that every entry is free exactly once and no waker leaked.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::atomic::AtomicUsize as LoomUsize;
    use loom::sync::Notify;
    use loom::thread;
    // Bookkeeping of the models, not part of the protocol: std's atomics and mutex, which
    // loom does not interleave (it switches threads only at its own operations), so they
    // read what the execution did so far. They never order anything: a thread learns
    // that another went ahead only through loom's operations (`Signal`, `join`).
    use std::sync::atomic::AtomicUsize as PlainUsize;
    use std::sync::Mutex as PlainMutex;
    use std::task::{RawWaker, RawWakerVTable};

    const SEQ: Ordering = Ordering::SeqCst;

    /// What a thread waits for: a count of raises, and `FINISHED` once whoever raises it
    /// is done. Loom's, so the waiter happens after the raiser (as a woken green thread
    /// or task happens after its waker, through the run queues). Read by
    /// read-modify-write, which always sees the latest value; loom's `Notify` may wake
    /// spuriously, so the waiter reads again after every wait.
    struct Signal {
        raised: LoomUsize,
        notify: Notify,
    }

    const FINISHED: usize = 1 << 16;

    impl Signal {
        fn new() -> Signal {
            Signal {
                raised: LoomUsize::new(0),
                notify: Notify::new(),
            }
        }

        fn raise(&self) {
            self.raised.fetch_add(1, SEQ);
            self.notify.notify();
        }

        fn finish(&self) {
            self.raised.fetch_add(FINISHED, SEQ);
            self.notify.notify();
        }

        fn raises(&self) -> usize {
            self.raised.fetch_add(0, SEQ) % FINISHED
        }

        /// Waits until it was raised `n` times (true) or finished short of that (false).
        fn wait_for(&self, n: usize) -> bool {
            loop {
                let raised = self.raised.fetch_add(0, SEQ);
                if raised % FINISHED >= n {
                    return true;
                }
                if raised >= FINISHED {
                    return false;
                }
                self.notify.wait();
            }
        }
    }

    /// One owner's waker: counts its wakes, raises its signal, and counts its clones
    /// with loom operations (see [`waker`]).
    struct Flag {
        /// Wakers out: one per clone made, less one per clone dropped unwoken (a woken
        /// clone stays counted, so a registration's clone counts once whether it is
        /// still in its entry, in a dispatch's wake list, or woken). Loom's, but only
        /// ever touched by relaxed read-modify-writes: loom then orders every clone and
        /// drop against the owner's checks and explores both orders of each such pair,
        /// without them synchronizing anything.
        out: LoomUsize,
        wakes: PlainUsize,
        /// Raised by each wake; finished by the dispatcher once it has woken everything
        /// it took, so that an owner whose wake was lost goes on and reports it by name
        /// (rather than loom reporting a deadlock).
        signal: Signal,
    }

    impl Flag {
        fn new() -> Arc<Flag> {
            Arc::new(Flag {
                out: LoomUsize::new(0),
                wakes: PlainUsize::new(0),
                signal: Signal::new(),
            })
        }

        fn out(&self) -> usize {
            self.out.fetch_add(0, Ordering::Relaxed)
        }

        fn wakes(&self) -> usize {
            self.wakes.load(SEQ)
        }

        fn woken(&self) {
            self.wakes.fetch_add(1, SEQ);
            self.signal.raise();
        }
    }

    /// A waker for `flag`. Not `Waker::from(Arc<Flag>)`: `std::task::Wake` has no hook
    /// for clone and drop, which are then std refcount updates, invisible to loom. Loom
    /// explores the orders of its own operations only where two of them conflict, so a
    /// registration's waker dropped by another owner's release (under the waiters'
    /// lock) would never be put before the owner's check (a std read): a model of a
    /// release without its ticket check passed. Here every clone and every unwoken
    /// drop is a loom operation on `Flag::out`, which the owner's check reads.
    fn waker(flag: &Arc<Flag>) -> Waker {
        flag.out.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `raw` makes a RawWaker whose data owns one strong count of an
        // `Arc<Flag>` and whose vtable is `VTABLE`, whose functions uphold
        // `RawWakerVTable`'s contract (see them).
        unsafe { Waker::from_raw(raw(Arc::clone(flag))) }
    }

    fn raw(flag: Arc<Flag>) -> RawWaker {
        RawWaker::new(Arc::into_raw(flag).cast(), &VTABLE)
    }

    static VTABLE: RawWakerVTable =
        RawWakerVTable::new(clone_waker, wake_waker, wake_waker_by_ref, drop_waker);

    // In all four: `data` comes from `raw` (the only maker of RawWakers with `VTABLE`) or
    // `clone_waker`, so it is an `Arc<Flag>`'s pointer, and the waker it stands for owns
    // one strong count.

    unsafe fn clone_waker(data: *const ()) -> RawWaker {
        // SAFETY: the waker being cloned owns a count, so the `Flag` is alive and the
        // count may be incremented; the new RawWaker owns the new count.
        unsafe { Arc::increment_strong_count(data.cast::<Flag>()) };
        // SAFETY: alive, as above.
        let flag = unsafe { &*data.cast::<Flag>() };
        flag.out.fetch_add(1, Ordering::Relaxed);
        RawWaker::new(data, &VTABLE)
    }

    unsafe fn wake_waker(data: *const ()) {
        // SAFETY: waking by value consumes the waker: we take over its count, released
        // when `flag` drops. A woken clone stays counted in `out`.
        let flag = unsafe { Arc::from_raw(data.cast::<Flag>()) };
        flag.woken();
    }

    unsafe fn wake_waker_by_ref(data: *const ()) {
        // As `waker.clone().wake()`, so that `out` stays exact. The clone's RawWaker
        // has `data` for its data pointer, and a count of its own.
        // SAFETY: the borrowed waker owns a count, so it may be cloned; the clone is
        // consumed at once by waking it.
        unsafe {
            clone_waker(data);
            wake_waker(data);
        }
    }

    unsafe fn drop_waker(data: *const ()) {
        // SAFETY: the waker is being dropped: we take over its count, released when
        // `flag` drops.
        let flag = unsafe { Arc::from_raw(data.cast::<Flag>()) };
        flag.out.fetch_sub(1, Ordering::Relaxed);
    }

    /// A green thread or future waiting, with one key, for `io` to become readable.
    struct Owner {
        io: Arc<ScheduledIo>,
        flag: Arc<Flag>,
        waker: Waker,
        key: WaiterKey,
        /// Registrations made with a new entry (a new ticket), each with its own clone
        /// of the waker; a poll that keeps its entry clones nothing.
        registrations: usize,
        last_ticket: Option<u64>,
    }

    impl Owner {
        fn new(io: &Arc<ScheduledIo>, flag: &Arc<Flag>) -> Owner {
            Owner {
                io: io.clone(),
                flag: flag.clone(),
                waker: waker(flag),
                key: WaiterKey::default(),
                registrations: 0,
                last_ticket: None,
            }
        }

        /// Every registration's clone of our waker is in its entry, in a dispatch's wake
        /// list, or woken: none was dropped by someone else's release, none is there
        /// twice. `out` counts those and our own waker.
        fn assert_registrations_intact(&self) {
            let out = self.flag.out();
            assert_eq!(
                out,
                1 + self.registrations,
                "a registration lost its waker before its owner released it (freed by \
                 another waiter's release?), or holds it twice (wakers out {out}, \
                 registrations {}, key {:?})",
                self.registrations,
                self.key,
            );
        }

        /// `poll_ready` as the owner's future polls it; true when Pending.
        fn poll(&mut self) -> bool {
            let pending = self
                .io
                .poll_ready(
                    Direction::Read,
                    Waiter::Keyed(&mut self.key),
                    &mut Context::from_waker(&self.waker),
                )
                .is_pending();
            assert!(
                !pending || self.key.holds_entry(),
                "poll_ready returned Pending without registering"
            );
            let ticket = self.key.entry.map(|(_, ticket)| ticket);
            if ticket.is_some() && ticket != self.last_ticket {
                self.registrations += 1;
                self.last_ticket = ticket;
            }
            self.assert_registrations_intact();
            pending
        }

        /// Ends the wait, as the owner's future does when it is dropped.
        fn release(mut self) {
            self.assert_registrations_intact();
            self.io.release_waiter(Direction::Read, &mut self.key);
            assert!(
                !self.key.holds_entry(),
                "release_waiter kept the key's entry"
            );
        }

        /// Polls; when Pending, waits for the next wake (the dispatcher finishing
        /// instead means the wake was lost). Returns whether it was Pending.
        fn poll_and_wait(&mut self) -> bool {
            let before = self.flag.signal.raises();
            let pending = self.poll();
            if pending {
                assert!(
                    self.flag.signal.wait_for(before + 1),
                    "lost wake-up: poll_ready returned Pending and the dispatch that \
                     followed did not wake the owner"
                );
            }
            pending
        }

        /// The owner waits until woken (`WaitReady`): when Pending, it waits for the
        /// wake, polls again and finds the event (nothing clears here), and ends the
        /// wait. Returns whether the first poll was Pending.
        fn wait_until_woken(mut self) -> bool {
            let pending = self.poll_and_wait();
            if pending {
                assert!(!self.poll(), "woken, but the event is not in the bits");
            }
            self.release();
            pending
        }

        /// The owner gives up at once (a timeout, a dropped future, a cancel): polls, and
        /// ends the wait whatever the poll returned.
        fn give_up(mut self) -> bool {
            let pending = self.poll();
            self.release();
            pending
        }
    }

    /// One event makes `io` readable: the driver dispatches it and wakes what it took,
    /// outside the lock.
    fn event(io: &ScheduledIo) {
        let mut wake = Vec::new();
        io.set(READABLE, &mut wake);
        for waker in wake {
            waker.wake();
        }
    }

    /// The driver is done: owners of `flags` still waiting go on (see [`Flag::signal`]).
    fn finish(flags: &[&Arc<Flag>]) {
        for flag in flags {
            flag.signal.finish();
        }
    }

    /// After every thread is joined: every wait ended, so no keyed entry is allocated,
    /// every entry is free exactly once, and no waker is left anywhere: each clone made
    /// was woken or dropped, and nothing holds the flag but the model.
    fn assert_settled(io: &ScheduledIo, flags: &[&Arc<Flag>]) {
        {
            let mut readers = io_sync::lock(&io.readers);
            assert!(
                readers
                    .extra
                    .as_ref()
                    .is_none_or(|extra| extra.slot.is_none()),
                "the slot was never used"
            );
            for index in 0..readers.created {
                assert!(
                    !readers.is_held(index),
                    "entry {index} is still allocated after every wait ended (leaked)"
                );
            }
            let listed = readers.free_list();
            let mut free = listed.clone();
            free.sort_unstable();
            let distinct = free.windows(2).all(|pair| pair[0] != pair[1]);
            assert!(
                distinct && listed.len() <= readers.created as usize,
                "an entry was freed twice: free list = {listed:?}"
            );
            assert_eq!(
                free,
                (0..readers.created).collect::<Vec<_>>(),
                "the free list must hold exactly the indices of the keyed entries"
            );
        }
        assert_eq!(io_sync::lock(&io.writers).created, 0);
        for flag in flags {
            assert_eq!(
                flag.out(),
                flag.wakes(),
                "a waker leaked: a clone neither woken nor dropped"
            );
            assert_eq!(
                Arc::strong_count(flag),
                1,
                "a waker leaked (a clone is left besides the model's own handle)"
            );
        }
    }

    /// The models with three threads: exhaustive would take minutes, so bound the
    /// preemptions per execution, as `state::loom_model` does.
    fn model3(f: impl Fn() + Sync + Send + 'static) {
        model_bounded(3, f);
    }

    /// At most `preemptions` preemptions per execution (tokio's loom tests use 2 to 4);
    /// `LOOM_MAX_PREEMPTIONS` overrides.
    fn model_bounded(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        if builder.preemption_bound.is_none() {
            builder.preemption_bound = Some(preemptions);
        }
        builder.check(f);
    }

    /// (a) An owner that waits until woken, and one event: the wake is never lost, and
    /// the owner ends its wait by the lock-free path (the dispatch freed its entry) or,
    /// when its recheck already saw the event, by the locked one, whether or not the
    /// dispatch took the entry first.
    #[test]
    fn a_dispatch_wakes_a_waiting_owner() {
        loom::model(|| {
            let io = Arc::new(ScheduledIo::default());
            let flag = Flag::new();
            let owner = Owner::new(&io, &flag);
            let waiter = thread::spawn(move || owner.wait_until_woken());
            event(&io);
            finish(&[&flag]);
            let pending = waiter.join().unwrap();
            assert!(!pending || flag.wakes() == 1, "lost wake-up");
            assert!(flag.wakes() <= 1, "one event woke the owner twice");
            assert_settled(&io, &[&flag]);
        });
    }

    /// (a) An owner that gives up at once, racing with one event: its entry is freed
    /// exactly once, by the dispatch (which then wakes it) or by the owner (then the
    /// dispatch finds nothing to take), and its waker is dropped either way.
    #[test]
    fn an_owner_giving_up_races_with_a_dispatch() {
        loom::model(|| {
            let io = Arc::new(ScheduledIo::default());
            let flag = Flag::new();
            let owner = Owner::new(&io, &flag);
            let waiter = thread::spawn(move || owner.give_up());
            event(&io);
            waiter.join().unwrap();
            assert!(flag.wakes() <= 1, "one event woke the owner twice");
            assert_settled(&io, &[&flag]);
        });
    }

    /// (b) Two owners waiting on the same direction for one event: each Pending one is
    /// woken, and an entry freed by one (by the dispatch, or by an owner whose recheck
    /// saw the event) and handed to the other is never freed twice or under it.
    #[test]
    fn two_owners_wait_for_one_event() {
        two_owners_and_one_event(true);
    }

    /// (b) One owner waiting until woken and one giving up at once, with one event: the
    /// one that gives up frees its entry by the locked path while the other's
    /// registration (maybe in the same, reused entry) must stay and be woken.
    #[test]
    fn an_owner_giving_up_beside_a_waiting_one() {
        two_owners_and_one_event(false);
    }

    /// Owner A waits until woken; owner B waits until woken too (`b_waits`) or gives up
    /// at once; the driver dispatches one event.
    fn two_owners_and_one_event(b_waits: bool) {
        model3(move || {
            let io = Arc::new(ScheduledIo::default());
            let (flag_a, flag_b) = (Flag::new(), Flag::new());
            let a = Owner::new(&io, &flag_a);
            let b = Owner::new(&io, &flag_b);
            let a = thread::spawn(move || a.wait_until_woken());
            let b = thread::spawn(move || {
                if b_waits {
                    b.wait_until_woken()
                } else {
                    b.give_up()
                }
            });
            event(&io);
            finish(&[&flag_a, &flag_b]);
            let pending_a = a.join().unwrap();
            let pending_b = b.join().unwrap();
            assert!(!pending_a || flag_a.wakes() == 1, "lost wake-up of A");
            if b_waits {
                assert!(!pending_b || flag_b.wakes() == 1, "lost wake-up of B");
            }
            assert_settled(&io, &[&flag_a, &flag_b]);
        });
    }

    /// What the executions of [`a_clear_forces_the_locked_release`] reached, summed over
    /// all of them: the model checks that the bounded search covered each case.
    static SLOW_AFTER_DISPATCH_TOOK: PlainUsize = PlainUsize::new(0);
    static SLOW_BEFORE_DISPATCH_TOOK: PlainUsize = PlainUsize::new(0);
    static STALE_KEY_ENTRY_REUSED: PlainUsize = PlainUsize::new(0);

    /// (c) Owner A waits; the driver dispatches one event; another attempt C, which took
    /// its snapshot and got `WouldBlock`, clears the bits if it saw them set (as
    /// `may_wait` does), then waits itself as owner B and gives up. A ends its wait only
    /// after C's clear, so when A was armed it cannot see the event and must take the
    /// locked path, while the dispatch may or may not have taken (and freed) A's entry,
    /// and B may have been handed that entry under a new ticket: A must free its entry
    /// exactly when the dispatch did not, and never B's.
    #[test]
    fn a_clear_forces_the_locked_release() {
        for case in [
            &SLOW_AFTER_DISPATCH_TOOK,
            &SLOW_BEFORE_DISPATCH_TOOK,
            &STALE_KEY_ENTRY_REUSED,
        ] {
            case.store(0, SEQ);
        }
        model3(|| {
            let io = Arc::new(ScheduledIo::default());
            let (flag_a, flag_b) = (Flag::new(), Flag::new());
            let cleared = Arc::new(Signal::new());
            // B's registration, published for A's coverage count.
            let b_entry = Arc::new(PlainMutex::new(None));

            let mut a = Owner::new(&io, &flag_a);
            let a = {
                let (cleared, b_entry) = (cleared.clone(), b_entry.clone());
                thread::spawn(move || {
                    let pending = a.poll();
                    assert!(cleared.wait_for(1));
                    if let (Some((index, ticket)), Some((b_index, b_ticket))) =
                        (a.key.entry, *b_entry.lock().unwrap())
                    {
                        if pending && index == b_index && ticket != b_ticket {
                            STALE_KEY_ENTRY_REUSED.fetch_add(1, SEQ);
                        }
                    }
                    a.release();
                    pending
                })
            };

            let mut b = Owner::new(&io, &flag_b);
            let c = {
                let io = io.clone();
                let cleared = cleared.clone();
                thread::spawn(move || {
                    let seen = io.snapshot();
                    let did_clear = seen.is_ready(Direction::Read);
                    if did_clear {
                        // Only the one dispatch writes readiness besides us, and it
                        // already has: no event can have come since `seen` (A's
                        // waiting bit may have, which a clear ignores).
                        assert!(io.clear_would_block(seen, Direction::Read));
                    }
                    cleared.raise();
                    b.poll();
                    *b_entry.lock().unwrap() = b.key.entry;
                    b.release();
                    did_clear
                })
            };

            event(&io);
            let pending_a = a.join().unwrap();
            let did_clear = c.join().unwrap();
            if pending_a && did_clear {
                // A was armed and released after the clear: the locked path.
                if flag_a.wakes() == 1 {
                    SLOW_AFTER_DISPATCH_TOOK.fetch_add(1, SEQ);
                } else {
                    SLOW_BEFORE_DISPATCH_TOOK.fetch_add(1, SEQ);
                }
            }
            assert!(flag_a.wakes() <= 1 && flag_b.wakes() <= 1);
            assert_settled(&io, &[&flag_a, &flag_b]);
        });
        assert_reached(
            "a_clear_forces_the_locked_release",
            &[
                (
                    &SLOW_AFTER_DISPATCH_TOOK,
                    "A's locked release after the dispatch took its entry",
                ),
                (
                    &SLOW_BEFORE_DISPATCH_TOOK,
                    "A's locked release before the dispatch locked (A frees its own entry)",
                ),
                (
                    &STALE_KEY_ENTRY_REUSED,
                    "A releasing a stale key whose entry B was given",
                ),
            ],
        );
    }

    /// What the executions of [`an_owner_retries_and_waits_again_with_its_key`] reached.
    static CLEAR_LOST_TO_AN_EVENT: PlainUsize = PlainUsize::new(0);
    static ENTRY_REUSED_UNDER_A_NEW_TICKET: PlainUsize = PlainUsize::new(0);
    static WOKEN_TWICE: PlainUsize = PlainUsize::new(0);

    /// (d) One owner with one key reading a socket, as `IoAsync` and `do_io` loop: a
    /// snapshot, the attempt (it reads what the socket holds, or gets `WouldBlock`),
    /// after `WouldBlock` the clear unless an event came since the snapshot, a poll with
    /// the same key (which keeps its entry while allocated and gets a new one, maybe the
    /// same index under a new ticket, once a dispatch freed it), and a wait when Pending.
    /// Meanwhile two events, each after data arrived. Each Pending poll that an event
    /// follows is woken (it is owed a wake when the word, read after the poll returned
    /// Pending, does not yet show both events), and the owner never waits with data
    /// unread once no event is to come (no clear erased an event its attempt missed).
    #[test]
    fn an_owner_retries_and_waits_again_with_its_key() {
        const EVENTS: usize = 2;
        for case in [
            &CLEAR_LOST_TO_AN_EVENT,
            &ENTRY_REUSED_UNDER_A_NEW_TICKET,
            &WOKEN_TWICE,
        ] {
            case.store(0, SEQ);
        }
        model_bounded(4, || {
            let io = Arc::new(ScheduledIo::default());
            let flag = Flag::new();
            // The bytes in the socket's receive buffer.
            let socket = Arc::new(LoomUsize::new(0));
            let mut owner = Owner::new(&io, &flag);
            let buffer = socket.clone();
            let waiter = thread::spawn(move || {
                let (mut woken_waits, mut read) = (0, 0);
                for _ in 0..6 * EVENTS {
                    let seen = owner.io.snapshot();
                    // The attempt's syscall.
                    let bytes = buffer.swap(0, SEQ);
                    if bytes > 0 {
                        read += bytes;
                        continue; // and the caller reads again
                    }
                    // `WouldBlock`.
                    if seen.is_ready(Direction::Read)
                        && !owner.io.clear_would_block(seen, Direction::Read)
                    {
                        CLEAR_LOST_TO_AN_EVENT.fetch_add(1, SEQ);
                        continue; // an event since the snapshot: retry
                    }
                    let before = owner.flag.signal.raises();
                    let held = owner.key.entry;
                    let pending = owner.poll();
                    if let (Some((index, ticket)), Some((new_index, new_ticket))) =
                        (held, owner.key.entry)
                    {
                        if index == new_index && ticket != new_ticket {
                            ENTRY_REUSED_UNDER_A_NEW_TICKET.fetch_add(1, SEQ);
                        }
                    }
                    if !pending {
                        continue; // ready: retry
                    }
                    let owed = owner.io.snapshot().0 / TICK < EVENTS;
                    let woken = owner.flag.signal.wait_for(before + 1);
                    assert!(
                        woken || !owed,
                        "lost wake-up: poll_ready returned Pending before an event and \
                         the event's dispatch did not wake the owner"
                    );
                    if !woken {
                        // Nothing more to come, so nothing may be left to read.
                        let unread = buffer.fetch_add(0, SEQ);
                        assert_eq!(
                            unread, 0,
                            "lost readiness: the owner waits with data unread and no \
                             event to come"
                        );
                        assert_eq!(read, EVENTS, "every byte is read once");
                        owner.release(); // give up
                        if woken_waits == 2 {
                            WOKEN_TWICE.fetch_add(1, SEQ);
                        }
                        return;
                    }
                    woken_waits += 1;
                }
                panic!("the owner's retries did not settle");
            });
            for _ in 0..EVENTS {
                socket.fetch_add(1, SEQ);
                event(&io);
            }
            finish(&[&flag]);
            waiter.join().unwrap();
            assert_settled(&io, &[&flag]);
        });
        assert_reached(
            "an_owner_retries_and_waits_again_with_its_key",
            &[
                (
                    &CLEAR_LOST_TO_AN_EVENT,
                    "a clear refused: an event since the snapshot",
                ),
                (
                    &ENTRY_REUSED_UNDER_A_NEW_TICKET,
                    "the key's freed entry given back to it under a new ticket",
                ),
                (&WOKEN_TWICE, "two Pending waits, each woken by its event"),
            ],
        );
    }

    /// Prints how many executions of `model` reached each case, and fails when the
    /// bounded search reached one in none.
    fn assert_reached(model: &str, cases: &[(&PlainUsize, &str)]) {
        for &(case, what) in cases {
            let count = case.load(SEQ);
            eprintln!("{model}: {count} executions with {what}");
            assert!(
                count > 0,
                "the bounded search never reached {what} (raise LOOM_MAX_PREEMPTIONS)"
            );
        }
    }
}
