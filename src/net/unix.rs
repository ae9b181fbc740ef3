//! Unix domain sockets: [`UnixListener`] and [`UnixStream`].

use super::source::{in_green, Source, Timeout};
use crate::reactor::Direction;
use futures::io::{AsyncRead, AsyncWrite};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A Unix domain listening socket. See the [module docs](crate::net).
pub struct UnixListener {
    inner: Source<mio::net::UnixListener>,
}

/// A Unix domain stream; like [`TcpStream`](super::TcpStream) for green, async and
/// plain callers.
// One cache line, aligned: a connection's green thread keeps its stream on its own
// stack, and every read and write reads the timeout, the registration and the fd.
#[repr(align(64))]
pub struct UnixStream {
    inner: Source<mio::net::UnixStream>,
    read_timeout: Timeout,
    write_timeout: Timeout,
}

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixListener")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

impl fmt::Debug for UnixStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixStream")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

impl UnixListener {
    /// Binds to the socket file `path`.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixListener> {
        Ok(UnixListener {
            inner: Source::new(mio::net::UnixListener::bind(path)?),
        })
    }

    /// Accepts a connection (suspends a green caller, blocks a plain thread).
    pub fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        self.inner
            .do_io(Direction::Read, None, "UnixListener::accept", |l| {
                l.accept()
            })
            .map(|(io, addr)| (UnixStream::from_mio(io), addr))
    }

    /// Accepts a connection, for async code.
    pub async fn accept_async(&self) -> io::Result<(UnixStream, SocketAddr)> {
        self.inner
            .io_async(Direction::Read, |l| l.accept())
            .await
            .map(|(io, addr)| (UnixStream::from_mio(io), addr))
    }

    /// An endless iterator of accepted connections.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.io.local_addr()
    }

    /// A second handle to the same listening socket (`dup`), like std's `try_clone`.
    pub fn try_clone(&self) -> io::Result<UnixListener> {
        let fd = self.as_fd().try_clone_to_owned()?;
        // The duplicate shares the file's non-blocking flag.
        Ok(UnixListener {
            inner: self
                .inner
                .sibling(mio::net::UnixListener::from_std(fd.into())),
        })
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.io.take_error()
    }

    /// Wraps a std listener (switching it to non-blocking mode).
    pub fn from_std(listener: std::os::unix::net::UnixListener) -> io::Result<UnixListener> {
        listener.set_nonblocking(true)?;
        Ok(UnixListener {
            inner: Source::new(mio::net::UnixListener::from_std(listener)),
        })
    }

    /// The std listener, back in blocking mode (left non-blocking while a `try_clone`
    /// of it is still alive: the flag is shared, and the clone's waits need it).
    pub fn into_std(self) -> io::Result<std::os::unix::net::UnixListener> {
        let shared = self.inner.has_clones();
        let listener = std::os::unix::net::UnixListener::from(std::os::fd::OwnedFd::from(
            self.inner.into_inner(),
        ));
        if !shared {
            listener.set_nonblocking(false)?;
        }
        Ok(listener)
    }
}

/// Iterator over [`UnixListener::accept`]; never ends.
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a UnixListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<UnixStream>;
    fn next(&mut self) -> Option<io::Result<UnixStream>> {
        Some(self.listener.accept().map(|(stream, _)| stream))
    }
}

impl UnixStream {
    fn from_mio(io: mio::net::UnixStream) -> UnixStream {
        UnixStream {
            inner: Source::new(io),
            read_timeout: Timeout::default(),
            write_timeout: Timeout::default(),
        }
    }

    /// Connects to the socket file `path`. While the listener's backlog is full, a
    /// green caller waits suspended (a plain thread blocks, as with std).
    pub fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        if !in_green("UnixStream::connect") {
            let stream = std::os::unix::net::UnixStream::connect(path)?;
            return UnixStream::from_std(stream);
        }
        let mut backoff = BacklogBackoff::default();
        loop {
            match mio::net::UnixStream::connect(path.as_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => crate::sleep(backoff.next()),
                result => return result.map(UnixStream::from_mio),
            }
        }
    }

    /// A connected pair.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = mio::net::UnixStream::pair()?;
        Ok((UnixStream::from_mio(a), UnixStream::from_mio(b)))
    }

    /// Connects to the socket file `path`, for async code. While the listener's backlog
    /// is full, it waits (without blocking the worker).
    pub async fn connect_async<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        if crate::runtime::context::current_handle().is_none() {
            // No runtime to time the retries: wait as std does.
            return UnixStream::from_std(std::os::unix::net::UnixStream::connect(path)?);
        }
        let mut backoff = BacklogBackoff::default();
        loop {
            match mio::net::UnixStream::connect(path.as_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    crate::time::sleep(backoff.next()).await
                }
                result => return result.map(UnixStream::from_mio),
            }
        }
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.io.local_addr()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.io.peer_addr()
    }

    /// Shuts down the read half, the write half or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.io.shutdown(how)
    }

    /// Reads longer than this fail with `ErrorKind::TimedOut` (green and plain alike).
    /// `None` (the default) waits forever; a zero duration is an `InvalidInput` error.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.read_timeout.set(timeout)
    }

    /// Writes longer than this fail with `ErrorKind::TimedOut`.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.write_timeout.set(timeout)
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.read_timeout.get())
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.write_timeout.get())
    }

    /// A second handle to the same connection (`dup`), like std's `try_clone`. The
    /// clone starts with this handle's timeouts; after that each handle keeps its own.
    pub fn try_clone(&self) -> io::Result<UnixStream> {
        let fd = self.as_fd().try_clone_to_owned()?;
        // The duplicate shares the file's non-blocking flag.
        Ok(UnixStream {
            inner: self
                .inner
                .sibling(mio::net::UnixStream::from_std(fd.into())),
            read_timeout: self.read_timeout.copy(),
            write_timeout: self.write_timeout.copy(),
        })
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.io.take_error()
    }

    /// Wraps a std stream (switching it to non-blocking mode). Its read and write
    /// timeouts carry over.
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> io::Result<UnixStream> {
        let (read, write) = (stream.read_timeout()?, stream.write_timeout()?);
        stream.set_nonblocking(true)?;
        let stream = UnixStream::from_mio(mio::net::UnixStream::from_std(stream));
        stream.read_timeout.set(read)?;
        stream.write_timeout.set(write)?;
        Ok(stream)
    }

    /// The std stream, back in blocking mode (left non-blocking while a `try_clone`
    /// of it is still alive: the flag is shared, and the clone's waits need it), with
    /// this stream's read and write timeouts.
    pub fn into_std(self) -> io::Result<std::os::unix::net::UnixStream> {
        let (read, write) = (self.read_timeout.get(), self.write_timeout.get());
        let shared = self.inner.has_clones();
        let stream = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(
            self.inner.into_inner(),
        ));
        if !shared {
            stream.set_nonblocking(false)?;
        }
        stream.set_read_timeout(read)?;
        stream.set_write_timeout(write)?;
        Ok(stream)
    }
}

impl Read for &UnixStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let timeout = self.read_timeout.get();
        self.inner.do_transfer(
            Direction::Read,
            timeout,
            "UnixStream::read",
            buf.len(),
            |mut s| s.read(buf),
        )
    }
}

impl Write for &UnixStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let timeout = self.write_timeout.get();
        self.inner.do_transfer(
            Direction::Write,
            timeout,
            "UnixStream::write",
            buf.len(),
            |mut s| s.write(buf),
        )
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for UnixStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for UnixStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for &UnixStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let len = buf.len();
        self.inner
            .poll_transfer(Direction::Read, cx, len, |mut s| s.read(buf))
    }
}

impl AsyncWrite for &UnixStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.inner
            .poll_transfer(Direction::Write, cx, buf.len(), |mut s| s.write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown(Shutdown::Write))
    }
}

impl AsyncRead for UnixStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut this: &UnixStream = self.get_mut();
        Pin::new(&mut this).poll_read(cx, buf)
    }
}

impl AsyncWrite for UnixStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut this: &UnixStream = self.get_mut();
        Pin::new(&mut this).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown(Shutdown::Write))
    }
}

impl AsRawFd for UnixStream {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.io.as_raw_fd()
    }
}

impl AsFd for UnixStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.io.as_fd()
    }
}

impl AsRawFd for UnixListener {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.io.as_raw_fd()
    }
}

impl AsFd for UnixListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.io.as_fd()
    }
}

/// Wraps a std stream: [`UnixStream::from_std`].
///
/// # Panics
/// If the socket cannot be switched to non-blocking mode; use `from_std` to get that
/// as an error instead.
impl From<std::os::unix::net::UnixStream> for UnixStream {
    fn from(stream: std::os::unix::net::UnixStream) -> UnixStream {
        UnixStream::from_std(stream)
            .expect("UnixStream::from(std::os::unix::net::UnixStream): cannot make the socket non-blocking; use UnixStream::from_std to handle the error")
    }
}

/// The std stream, in blocking mode again: [`UnixStream::into_std`].
///
/// # Panics
/// If the socket cannot be switched back to blocking mode; use `into_std` to get that
/// as an error instead.
impl From<UnixStream> for std::os::unix::net::UnixStream {
    fn from(stream: UnixStream) -> std::os::unix::net::UnixStream {
        stream
            .into_std()
            .expect("std::os::unix::net::UnixStream::from(greenrt::net::UnixStream): cannot make the socket blocking; use UnixStream::into_std to handle the error")
    }
}

/// Wraps a std listener: [`UnixListener::from_std`].
///
/// # Panics
/// If the socket cannot be switched to non-blocking mode; use `from_std` to get that
/// as an error instead.
impl From<std::os::unix::net::UnixListener> for UnixListener {
    fn from(listener: std::os::unix::net::UnixListener) -> UnixListener {
        UnixListener::from_std(listener)
            .expect("UnixListener::from(std::os::unix::net::UnixListener): cannot make the socket non-blocking; use UnixListener::from_std to handle the error")
    }
}

/// The std listener, in blocking mode again: [`UnixListener::into_std`].
///
/// # Panics
/// If the socket cannot be switched back to blocking mode; use `into_std` to get that
/// as an error instead.
impl From<UnixListener> for std::os::unix::net::UnixListener {
    fn from(listener: UnixListener) -> std::os::unix::net::UnixListener {
        listener
            .into_std()
            .expect("std::os::unix::net::UnixListener::from(greenrt::net::UnixListener): cannot make the socket blocking; use UnixListener::into_std to handle the error")
    }
}

/// How long a connect waits before trying again while the listener's backlog is full. A
/// non-blocking Unix connect then fails with `EAGAIN` and leaves nothing to poll (no
/// connection in progress, unlike TCP), so the only way to wait without blocking the
/// worker is to retry: soon at first, then at most every 10 ms.
#[derive(Default)]
struct BacklogBackoff(u32);

impl BacklogBackoff {
    fn next(&mut self) -> Duration {
        let delay = Duration::from_micros(100 << self.0.min(7)).min(Duration::from_millis(10));
        self.0 += 1;
        delay
    }
}

raw_fd_conversions!(UnixStream, std::os::unix::net::UnixStream);
raw_fd_conversions!(UnixListener, std::os::unix::net::UnixListener);
