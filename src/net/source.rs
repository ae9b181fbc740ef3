//! A non-blocking socket and its (lazy) reactor registration: the one place that turns
//! `WouldBlock` into the right kind of waiting for the caller.

use crate::bridge::{self, Caller};
use crate::green::GreenThread;
use crate::reactor::{Direction, Registration, Snapshot, Waiter, WaiterKey};
use crate::runtime::context;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A non-blocking socket `S`, registered with a reactor the first time something waits
/// on it inside a runtime.
pub(crate) struct Source<S: AsRawFd> {
    // Dropped before `io`: deregistration needs the fd still open.
    registration: OnceLock<Registration>,
    register_lock: Mutex<()>,
    /// Shared by the handles `try_clone` made of one socket (`dup`s of one open file
    /// description, so one `O_NONBLOCK` flag): see [`Source::has_clones`]. Set at the
    /// first `try_clone`, so a socket never cloned allocates nothing for it.
    clones: OnceLock<Arc<()>>,
    pub(crate) io: S,
}

/// Whether blocking-style calls should suspend a green thread (else: block the thread).
pub(crate) fn in_green(what: &str) -> bool {
    matches!(bridge::caller(what), Caller::Green(_)) && !std::thread::panicking()
}

pub(crate) fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "operation timed out")
}

fn no_runtime() -> io::Error {
    io::Error::other(
        "greenrt socket polled from async code outside a greenrt runtime: there is no \
         reactor to wake it; await it inside a runtime (Runtime::block_on, spawn_async)",
    )
}

impl<S: AsRawFd> Source<S> {
    /// `io` must already be in non-blocking mode.
    pub(crate) fn new(io: S) -> Source<S> {
        Source {
            registration: OnceLock::new(),
            register_lock: Mutex::new(()),
            clones: OnceLock::new(),
            io,
        }
    }

    /// A source for `io`, a `dup` of this one's fd (`try_clone`).
    pub(crate) fn sibling<T: AsRawFd>(&self, io: T) -> Source<T> {
        Source {
            registration: OnceLock::new(),
            register_lock: Mutex::new(()),
            clones: OnceLock::from(self.clones.get_or_init(|| Arc::new(())).clone()),
            io,
        }
    }

    /// Whether another greenrt handle made by `try_clone` shares this socket's open
    /// file, and so its `O_NONBLOCK` flag: `into_std` must then leave the socket
    /// non-blocking, or that handle's green threads would block their worker in the
    /// syscall (and ignore their timeouts).
    pub(crate) fn has_clones(&self) -> bool {
        self.clones
            .get()
            .is_some_and(|clones| Arc::strong_count(clones) > 1)
    }

    pub(crate) fn into_inner(self) -> S {
        let Source {
            registration, io, ..
        } = self;
        drop(registration);
        io
    }

    /// The registration, made with the current runtime's reactor if there is none yet.
    /// A socket stays with the reactor it first registered with; once that runtime has
    /// shut down, nothing would ever report its readiness, so waiting is an error.
    fn registration(&self) -> io::Result<&Registration> {
        if let Some(registration) = self.registration.get() {
            if registration.io.reactor_closed() {
                return Err(io::Error::other(
                    "this greenrt socket was first used in a runtime that has since shut \
                     down, and nothing polls that runtime's reactor any more: create the \
                     socket in the runtime that uses it, or move it with into_std() and \
                     from_std() (or From) before using it in another runtime",
                ));
            }
            return Ok(registration);
        }
        let handle = context::current_handle().ok_or_else(no_runtime)?;
        let _guard = self.register_lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(registration) = self.registration.get() {
            return Ok(registration);
        }
        let registration = handle.shared.reactor.register(self.io.as_raw_fd())?;
        Ok(self.registration.get_or_init(|| registration))
    }

    /// Runs the non-blocking `f` until it does not return `WouldBlock`, waiting for
    /// `direction` in between: a green thread suspends, a plain thread polls the fd.
    /// Past `timeout`, returns `TimedOut`.
    pub(crate) fn do_io<R>(
        &self,
        direction: Direction,
        timeout: Option<Duration>,
        what: &str,
        f: impl FnMut(&S) -> io::Result<R>,
    ) -> io::Result<R> {
        self.do_io_with(direction, timeout, what, f, |_| false)
    }

    /// [`do_io`](Source::do_io) for a stream read or write of `len` bytes: moving fewer
    /// means the socket buffer is drained (or full), so the readiness is cleared and the
    /// next call waits for an event instead of making a syscall that would fail.
    pub(crate) fn do_transfer(
        &self,
        direction: Direction,
        timeout: Option<Duration>,
        what: &str,
        len: usize,
        f: impl FnMut(&S) -> io::Result<usize>,
    ) -> io::Result<usize> {
        self.do_io_with(direction, timeout, what, f, |&n| n > 0 && n < len)
    }

    fn do_io_with<R>(
        &self,
        direction: Direction,
        timeout: Option<Duration>,
        what: &str,
        mut f: impl FnMut(&S) -> io::Result<R>,
        drained: impl Fn(&R) -> bool,
    ) -> io::Result<R> {
        // A green thread that is unwinding must not switch (see `crate::bridge`): it
        // waits like a plain thread, and says so.
        let (green, unwinding) = match bridge::caller(what) {
            Caller::Green(green) if !std::thread::panicking() => (Some(green), false),
            Caller::Green(green) => {
                bridge::warn_blocking_while_unwinding(green, what);
                (None, true)
            }
            Caller::Thread => (None, false),
        };
        let deadline = timeout.map(crate::time::deadline_after);
        let Some(green) = green else {
            // A plain thread waits with poll(2) and leaves the reactor's bits alone.
            let fd = self.io.as_raw_fd();
            loop {
                match f(&self.io) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    result => return result,
                }
                let ready = if unwinding {
                    poll_fd_unless_shutdown(fd, direction, deadline, what)?
                } else {
                    poll_fd(fd, direction, deadline)?
                };
                if !ready {
                    return Err(timed_out());
                }
            }
        };
        loop {
            let seen = self.registration.get().map(|r| r.io.snapshot());
            // Known not ready (no event since a clear): skip the syscall, just wait.
            if seen.is_none_or(|seen| seen.is_ready(direction)) {
                match f(&self.io) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    result => {
                        if let (Ok(value), Some(seen)) = (&result, seen) {
                            if drained(value) {
                                self.registered().io.clear_drained(seen, direction);
                            }
                        }
                        return result;
                    }
                }
            }
            let registration = self.registration()?;
            if !may_wait(registration, seen, direction) {
                continue;
            }
            match deadline {
                // Inlined: this frame is on every waiting connection's stack, so the
                // future that waits without a deadline carries no timer.
                None => bridge::block_on_green(green, WaitReady::new(registration, direction)),
                Some(deadline) => {
                    if !wait_ready_until(green, registration, direction, deadline) {
                        return Err(timed_out());
                    }
                }
            }
        }
    }

    /// The async form of [`Source::do_transfer`] (`AsyncRead`/`AsyncWrite`). One-shot
    /// async operations use [`Source::io_async`].
    pub(crate) fn poll_transfer(
        &self,
        direction: Direction,
        cx: &mut Context<'_>,
        len: usize,
        f: impl FnMut(&S) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        self.poll_io_with(direction, cx, f, |&n| n > 0 && n < len)
    }

    fn poll_io_with<R>(
        &self,
        direction: Direction,
        cx: &mut Context<'_>,
        mut f: impl FnMut(&S) -> io::Result<R>,
        drained: impl Fn(&R) -> bool,
    ) -> Poll<io::Result<R>> {
        loop {
            let seen = self.registration.get().map(|r| r.io.snapshot());
            if seen.is_none_or(|seen| seen.is_ready(direction)) {
                match f(&self.io) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    result => {
                        if let (Ok(value), Some(seen)) = (&result, seen) {
                            if drained(value) {
                                self.registered().io.clear_drained(seen, direction);
                            }
                        }
                        return Poll::Ready(result);
                    }
                }
            }
            let registration = match self.registration() {
                Ok(registration) => registration,
                Err(error) => return Poll::Ready(Err(error)),
            };
            if !may_wait(registration, seen, direction) {
                continue;
            }
            // The AsyncRead/AsyncWrite slot: an abandoned poll leaves only this one
            // waker, replaced by the next poll.
            if registration
                .io
                .poll_ready(direction, Waiter::Slot, cx)
                .is_pending()
            {
                return Poll::Pending;
            }
        }
    }

    /// A future that runs `f` until it does not return `WouldBlock` (`accept_async` and
    /// the like). It waits as a keyed waiter, removed when the future is dropped, so
    /// several such futures can wait on one socket and an abandoned one leaves nothing
    /// behind.
    pub(crate) fn io_async<R, F: FnMut(&S) -> io::Result<R>>(
        &self,
        direction: Direction,
        f: F,
    ) -> IoAsync<'_, S, F> {
        IoAsync {
            source: self,
            direction,
            f,
            key: WaiterKey::default(),
        }
    }

    /// The registration, known to exist (a snapshot was taken from it).
    fn registered(&self) -> &Registration {
        self.registration
            .get()
            .expect("a snapshot implies a registration")
    }
}

/// After an attempt that started at `seen` (`None`: before the fd was registered) found
/// nothing to do: whether to wait for an event (true), or retry the syscall because
/// readiness arrived that the attempt may not have seen.
fn may_wait(registration: &Registration, seen: Option<Snapshot>, direction: Direction) -> bool {
    match seen {
        // Nothing to clear (the attempt was skipped): an event since the snapshot shows
        // in the bits, which the wait checks before and after it registers.
        Some(seen) if !seen.is_ready(direction) => true,
        Some(seen) => registration.io.clear_would_block(seen, direction),
        // Registered after the attempt: epoll reports the fd's current state as a first
        // event, so readiness now may be newer than the attempt.
        None => !registration.io.snapshot().is_ready(direction),
    }
}

/// See [`Source::io_async`].
pub(crate) struct IoAsync<'a, S: AsRawFd, F> {
    source: &'a Source<S>,
    direction: Direction,
    f: F,
    /// Our keyed waiter entry in the registration, once we waited.
    key: WaiterKey,
}

impl<S: AsRawFd, F> Drop for IoAsync<'_, S, F> {
    fn drop(&mut self) {
        if self.key.holds_entry() {
            // A key implies the registration it was taken from.
            self.source
                .registered()
                .io
                .release_waiter(self.direction, &mut self.key);
        }
    }
}

// Nothing is structurally pinned: `f` and the key are only used through `&mut`.
impl<S: AsRawFd, F> Unpin for IoAsync<'_, S, F> {}

impl<S: AsRawFd, R, F: FnMut(&S) -> io::Result<R>> Future for IoAsync<'_, S, F> {
    type Output = io::Result<R>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let this = &mut *self;
        let source = this.source;
        loop {
            // As in `Source::poll_io_with`.
            let seen = source.registration.get().map(|r| r.io.snapshot());
            if seen.is_none_or(|seen| seen.is_ready(this.direction)) {
                match (this.f)(&source.io) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    result => return Poll::Ready(result),
                }
            }
            let registration = match source.registration() {
                Ok(registration) => registration,
                Err(error) => return Poll::Ready(Err(error)),
            };
            if !may_wait(registration, seen, this.direction) {
                continue;
            }
            let waiter = Waiter::Keyed(&mut this.key);
            if registration
                .io
                .poll_ready(this.direction, waiter, cx)
                .is_pending()
            {
                return Poll::Pending;
            }
        }
    }
}

/// Readiness of one direction. A keyed waiter: dropping it (the wait ended, or its
/// green thread was cancelled and unwound) frees its entry and waker.
struct WaitReady<'a> {
    registration: &'a Registration,
    direction: Direction,
    key: WaiterKey,
}

impl<'a> WaitReady<'a> {
    fn new(registration: &'a Registration, direction: Direction) -> WaitReady<'a> {
        WaitReady {
            registration,
            direction,
            key: WaiterKey::default(),
        }
    }
}

impl Drop for WaitReady<'_> {
    fn drop(&mut self) {
        self.registration
            .io
            .release_waiter(self.direction, &mut self.key);
    }
}

impl Future for WaitReady<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.registration
            .io
            .poll_ready(this.direction, Waiter::Keyed(&mut this.key), cx)
    }
}

/// Suspends the green thread `green` until `direction` is ready (true) or `deadline`
/// passes (false). Out of line and cold: a read or write timeout is the rare case, and
/// its timer would otherwise sit in the I/O loop's frame on every waiting stack.
#[cold]
#[inline(never)]
fn wait_ready_until(
    green: &GreenThread,
    registration: &Registration,
    direction: Direction,
    deadline: Instant,
) -> bool {
    let mut ready = WaitReady::new(registration, direction);
    let mut sleep = crate::time::sleep_until(deadline);
    bridge::block_on_green(
        green,
        std::future::poll_fn(|cx| {
            if Pin::new(&mut ready).poll(cx).is_ready() {
                Poll::Ready(true)
            } else if Pin::new(&mut sleep).poll(cx).is_ready() {
                Poll::Ready(false)
            } else {
                Poll::Pending
            }
        }),
    )
}

/// How often a worker blocked in I/O for an unwinding green thread looks whether its
/// runtime is shutting down.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(50);

/// [`poll_fd`] for a green thread that waits on its worker's OS thread because it is
/// unwinding (a destructor doing I/O: a `BufWriter` flushing, a goodbye message). When
/// its runtime shuts down meanwhile (the unwind may be that shutdown's cancel), the
/// shutdown waits for this worker, and the peer may never make the socket ready: so
/// this gives up with an error once the runtime is shutting down, looking at least
/// every [`SHUTDOWN_CHECK`].
fn poll_fd_unless_shutdown(
    fd: RawFd,
    direction: Direction,
    deadline: Option<Instant>,
    what: &str,
) -> io::Result<bool> {
    loop {
        let shutting_down = context::with_local(|local| local.handle.shared.is_shutdown());
        if shutting_down == Some(true) {
            return Err(io::Error::other(format!(
                "{what} gave up: it was waiting while its green thread unwound, and the \
                 runtime is shutting down (nothing may block the shutdown). I/O in \
                 destructors of green threads that may be cancelled should not wait, or \
                 should be done before the runtime is dropped"
            )));
        }
        let check_at = Instant::now() + SHUTDOWN_CHECK;
        let until = deadline.map_or(check_at, |deadline| deadline.min(check_at));
        if poll_fd(fd, direction, Some(until))? {
            return Ok(true);
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Ok(false);
        }
    }
}

/// Waits for `direction` on `fd` with `poll(2)` (plain threads). False on timeout.
fn poll_fd(fd: RawFd, direction: Direction, deadline: Option<Instant>) -> io::Result<bool> {
    let events = match direction {
        Direction::Read => libc::POLLIN,
        Direction::Write => libc::POLLOUT,
    };
    loop {
        let timeout_ms = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                // Round up so we never wake before the deadline and spin.
                left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
            }
        };
        let mut pollfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: `pollfd` is a valid, initialised pollfd that outlives the call, and
        // we pass nfds = 1 for this one entry.
        let n = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
        if n < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        if n > 0 {
            return Ok(true);
        }
    }
}

/// The most bytes one `readv`/`writev` can move for these buffer lengths, for
/// [`Source::do_transfer`]'s "moved fewer: drained (or full)" test: std passes at most
/// `UIO_MAXIOV` (1024) buffers per call, so a vectored transfer that filled the first
/// 1024 of 2000 buffers moved everything it could, whatever the socket holds.
pub(crate) fn vectored_len(lens: impl Iterator<Item = usize>) -> usize {
    lens.take(libc::UIO_MAXIOV as usize)
        .fold(0, usize::saturating_add)
}

/// A read or write timeout: `None`, or a non-zero duration, in one atomic.
#[derive(Default)]
pub(crate) struct Timeout(AtomicU64);

impl Timeout {
    /// Sets it; a zero duration is an `InvalidInput` error, like std.
    pub(crate) fn set(&self, timeout: Option<Duration>) -> io::Result<()> {
        let nanos = match timeout {
            None => 0,
            Some(d) if d.is_zero() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "cannot set a 0 duration timeout",
                ))
            }
            Some(d) => u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
        };
        self.0.store(nanos, Ordering::Relaxed);
        Ok(())
    }

    /// A new timeout with the same value (for `try_clone`).
    pub(crate) fn copy(&self) -> Timeout {
        Timeout(AtomicU64::new(self.0.load(Ordering::Relaxed)))
    }

    pub(crate) fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }
}

#[cfg(test)]
mod tests {
    /// A stream's hot state (the registration, the fd, the timeouts) fits one cache line.
    #[test]
    fn a_stream_is_one_cache_line() {
        use std::mem::{align_of, size_of};
        use std::os::fd::RawFd;
        // mio's sockets carry a selector id in debug builds (16 bytes, not 4): what we
        // add around the socket must leave a release build's stream within one line.
        let mio_debug = size_of::<mio::net::TcpStream>() - size_of::<RawFd>();
        let source = size_of::<super::Source<mio::net::TcpStream>>();
        assert!(source - mio_debug <= 48, "Source is {source} bytes");
        assert_eq!(align_of::<crate::net::TcpStream>(), 64);
        assert_eq!(align_of::<crate::net::UnixStream>(), 64);
        if mio_debug == 0 {
            assert_eq!(size_of::<crate::net::TcpStream>(), 64);
            assert_eq!(size_of::<crate::net::UnixStream>(), 64);
        }
    }
}
