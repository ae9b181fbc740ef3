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
//! may accept on one listener); each retries its own syscall. No lost wake-up: dispatch
//! updates the word (SeqCst) *before* it locks the waiters, and a waiter registers
//! under that lock *before* it reads the word again ([`ScheduledIo::poll_ready`]).
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
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll as TaskPoll, Waker};
use std::time::Duration;

const WAKER_TOKEN: Token = Token(usize::MAX);
const NO_DRIVER: usize = usize::MAX;

pub(crate) const READABLE: u8 = 1;
pub(crate) const WRITABLE: u8 = 2;
const READ_CLOSED: u8 = 4;
const WRITE_CLOSED: u8 = 8;
const ERROR: u8 = 16;

/// Which side of a socket an operation waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Read,
    Write,
}

impl Direction {
    fn mask(self) -> u8 {
        match self {
            Direction::Read => READABLE | READ_CLOSED | ERROR,
            Direction::Write => WRITABLE | WRITE_CLOSED | ERROR,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Readiness and waiters of one registered file descriptor.
///
/// `readiness` is one word: the readiness bits in the low byte, and above them a tick
/// that every dispatched event advances. An I/O attempt takes a [`Snapshot`] before its
/// syscall; clearing readiness afterwards succeeds only if no event arrived since, so a
/// clear never erases an event the attempt did not see (tokio's scheme).
#[derive(Default)]
pub(crate) struct ScheduledIo {
    readiness: AtomicUsize,
    readers: Mutex<Waiters>,
    writers: Mutex<Waiters>,
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
/// word after that recheck, and that dispatch locks the waiters after our registration
/// and takes our entry (or has taken it). Otherwise the owner locks and frees the entry,
/// if it is still its own: the ticket tells an entry that a dispatch freed and another
/// waiter was given since.
#[derive(Debug, Default)]
pub(crate) struct WaiterKey {
    /// Index and ticket of the entry, once registered.
    entry: Option<(usize, u64)>,
    armed: bool,
}

impl WaiterKey {
    /// Whether it may hold an entry: a registration happened and was not released.
    pub(crate) fn holds_entry(&self) -> bool {
        self.entry.is_some()
    }
}

/// The waiters of one direction.
#[derive(Default)]
struct Waiters {
    slot: Option<Waker>,
    /// Keyed entries: an entry with a waker is allocated (to the key holding its
    /// ticket); one without is free, with its index in `free`.
    keyed: Vec<KeyedEntry>,
    free: Vec<usize>,
    /// The ticket the next allocated entry gets (never reused: a u64 does not wrap).
    next_ticket: u64,
}

#[derive(Default)]
struct KeyedEntry {
    ticket: u64,
    waker: Option<Waker>,
}

impl Waiters {
    /// Registers `waker` as `waiter`; returns the keyed waiter's key, if it was one.
    fn register<'a>(&mut self, waiter: Waiter<'a>, waker: &Waker) -> Option<&'a mut WaiterKey> {
        let (entry, key) = match waiter {
            Waiter::Slot => (&mut self.slot, None),
            Waiter::Keyed(key) => (self.keyed_entry(key), Some(key)),
        };
        match entry {
            Some(old) if old.will_wake(waker) => {}
            _ => *entry = Some(waker.clone()),
        }
        key
    }

    /// The waker of `key`'s entry: the one it holds, or a newly allocated one.
    fn keyed_entry(&mut self, key: &mut WaiterKey) -> &mut Option<Waker> {
        let held = key.entry.filter(|&(index, ticket)| {
            let entry = &self.keyed[index];
            entry.ticket == ticket && entry.waker.is_some()
        });
        let index = match held {
            Some((index, _)) => index,
            None => {
                let index = match self.free.pop() {
                    Some(index) => index,
                    None => {
                        self.keyed.push(KeyedEntry::default());
                        self.keyed.len() - 1
                    }
                };
                self.next_ticket += 1;
                self.keyed[index].ticket = self.next_ticket;
                key.entry = Some((index, self.next_ticket));
                index
            }
        };
        &mut self.keyed[index].waker
    }

    /// Frees `key`'s entry if it still holds it, returning its waker.
    fn remove(&mut self, key: &mut WaiterKey) -> Option<Waker> {
        let (index, ticket) = key.entry.take()?;
        let entry = &mut self.keyed[index];
        if entry.ticket != ticket {
            return None;
        }
        let waker = entry.waker.take()?;
        self.free.push(index);
        Some(waker)
    }

    /// Takes every waker and frees every keyed entry (see [`WaiterKey`]).
    fn take_all(&mut self, wake: &mut Vec<Waker>) {
        wake.extend(self.slot.take());
        for (index, entry) in self.keyed.iter_mut().enumerate() {
            if let Some(waker) = entry.waker.take() {
                wake.push(waker);
                self.free.push(index);
            }
        }
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
    fn waiters(&self, direction: Direction) -> &Mutex<Waiters> {
        match direction {
            Direction::Read => &self.readers,
            Direction::Write => &self.writers,
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot(self.readiness.load(Ordering::SeqCst))
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

    fn clear_if_unchanged(&self, seen: Snapshot, mask: u8) -> bool {
        self.readiness
            .compare_exchange(
                seen.0,
                seen.0 & !(mask as usize),
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    }

    /// Ready when `direction` has readiness; else registers the waker as `waiter`.
    /// Does not clear.
    pub(crate) fn poll_ready(
        &self,
        direction: Direction,
        waiter: Waiter<'_>,
        cx: &mut Context<'_>,
    ) -> TaskPoll<()> {
        if self.snapshot().is_ready(direction) {
            return TaskPoll::Ready(());
        }
        let key = lock(self.waiters(direction)).register(waiter, cx.waker());
        // Dispatch sets the bits before it takes the waiters: either it saw our waker
        // (it locked after us) or we see its bits here.
        let ready = self.snapshot().is_ready(direction);
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
        let waker = lock(self.waiters(direction)).remove(key);
        drop(waker);
    }

    fn set(&self, bits: u8, wake: &mut Vec<Waker>) {
        // Advance the tick even when the bits are already set: an attempt that saw the
        // old word must not clear this event.
        let _ = self
            .readiness
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |word| {
                Some((word & !BITS).wrapping_add(TICK) | (word & BITS) | bits as usize)
            });
        if bits & Direction::Read.mask() != 0 {
            lock(&self.readers).take_all(wake);
        }
        if bits & Direction::Write.mask() != 0 {
            lock(&self.writers).take_all(wake);
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
    /// again. Sockets registered here then refuse to wait instead of hanging.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Whether [`close`](Reactor::close) was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Registers `fd` for read and write readiness (edge-triggered).
    pub(crate) fn register(self: &Arc<Self>, fd: RawFd) -> io::Result<Registration> {
        let io = Arc::new(ScheduledIo::default());
        let token = {
            let mut slab = lock(&self.slab);
            match slab.free.pop() {
                Some(index) => {
                    slab.slots[index] = Some(io.clone());
                    index
                }
                None => {
                    slab.slots.push(Some(io.clone()));
                    slab.slots.len() - 1
                }
            }
        };
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
        Ok(Registration {
            reactor: self.clone(),
            token,
            fd,
            io,
        })
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
        let mut driver = self.driver.try_lock().ok()?;
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
        let mut driver = self.driver.try_lock().ok()?;
        Some(self.poll_locked(&mut driver, Some(Duration::ZERO)))
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

/// A file descriptor registered with a reactor; deregisters on drop.
pub(crate) struct Registration {
    reactor: Arc<Reactor>,
    token: usize,
    fd: RawFd,
    pub(crate) io: Arc<ScheduledIo>,
}

impl Registration {
    /// Whether the runtime this registration belongs to has shut down.
    pub(crate) fn reactor_closed(&self) -> bool {
        self.reactor.is_closed()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // The fd is still open here: its owner drops the registration first.
        let _ = self.reactor.registry.deregister(&mut SourceFd(&self.fd));
        self.reactor.release(self.token);
        self.reactor.registered.fetch_sub(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::AtomicBool;
    use std::task::Wake;

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
            let readers = lock(&io.readers);
            assert!(readers.keyed[first.0].waker.is_none());
            assert_eq!(readers.free, vec![first.0], "the dispatch freed the entry");
        }
        io.release_waiter(Direction::Read, &mut key);
        assert_eq!(lock(&io.readers).free, vec![first.0], "not freed twice");
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
