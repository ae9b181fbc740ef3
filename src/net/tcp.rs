//! TCP: [`TcpListener`] and [`TcpStream`].

use super::addr::{each_addr, resolve, resolve_async, ToSocketAddrs};
use super::source::{in_green, vectored_len, Source, Timeout};
use crate::reactor::Direction;
use futures::io::{AsyncRead, AsyncWrite};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A TCP listening socket. See the [module docs](crate::net).
pub struct TcpListener {
    inner: Source<mio::net::TcpListener>,
}

/// A TCP connection. `Read`/`Write` suspend only the calling green thread; they are
/// also implemented for `&TcpStream`, so one green thread can read while another
/// writes. Async code uses its `AsyncRead`/`AsyncWrite` impls.
// One cache line, aligned: a connection's green thread keeps its stream on its own
// stack, and every read and write reads the timeout, the registration and the fd.
#[repr(align(64))]
pub struct TcpStream {
    inner: Source<mio::net::TcpStream>,
    read_timeout: Timeout,
    write_timeout: Timeout,
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("addr", &self.local_addr().ok())
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("addr", &self.local_addr().ok())
            .field("peer", &self.peer_addr().ok())
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

impl TcpListener {
    /// Binds to `addr` (the first address that works). `SO_REUSEADDR` is set and the
    /// backlog is 1024.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        let addrs = resolve(&addr, "TcpListener::bind")?;
        each_addr(addrs, |addr| {
            mio::net::TcpListener::bind(addr).map(|io| TcpListener {
                inner: Source::new(io),
            })
        })
    }

    /// Accepts a connection: suspends a green caller until one arrives, blocks a plain
    /// thread.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        self.inner
            .do_io(Direction::Read, None, "TcpListener::accept", |l| l.accept())
            .map(|(io, addr)| (TcpStream::from_mio(io), addr))
    }

    /// Accepts a connection, for async code.
    pub async fn accept_async(&self) -> io::Result<(TcpStream, SocketAddr)> {
        self.inner
            .io_async(Direction::Read, |l| l.accept())
            .await
            .map(|(io, addr)| (TcpStream::from_mio(io), addr))
    }

    /// An endless iterator of accepted connections.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.io.local_addr()
    }

    /// A second handle to the same listening socket (`dup`), like std's `try_clone`:
    /// green threads on either handle accept from one queue.
    pub fn try_clone(&self) -> io::Result<TcpListener> {
        let fd = self.as_fd().try_clone_to_owned()?;
        // The duplicate shares the file's non-blocking flag.
        Ok(TcpListener {
            inner: self
                .inner
                .sibling(mio::net::TcpListener::from_std(fd.into())),
        })
    }

    ip_options!();

    /// Wraps a std listener (switching it to non-blocking mode).
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        Ok(TcpListener {
            inner: Source::new(mio::net::TcpListener::from_std(listener)),
        })
    }

    /// The std listener, back in blocking mode (left non-blocking while a `try_clone`
    /// of it is still alive: the flag is shared, and the clone's waits need it).
    pub fn into_std(self) -> io::Result<std::net::TcpListener> {
        let shared = self.inner.has_clones();
        let listener = std::net::TcpListener::from(self.inner.into_inner());
        if !shared {
            listener.set_nonblocking(false)?;
        }
        Ok(listener)
    }
}

/// Iterator over [`TcpListener::accept`]; never ends.
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;
    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(stream, _)| stream))
    }
}

impl TcpStream {
    fn from_mio(io: mio::net::TcpStream) -> TcpStream {
        TcpStream {
            inner: Source::new(io),
            read_timeout: Timeout::default(),
            write_timeout: Timeout::default(),
        }
    }

    /// Connects to `addr` (each resolved address in turn). A green caller suspends
    /// while connecting; a plain thread blocks.
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        let addrs = resolve(&addr, "TcpStream::connect")?;
        each_addr(addrs, |addr| TcpStream::connect_one(addr, None))
    }

    /// Connects to one address, failing with `TimedOut` after `timeout`. A zero
    /// timeout is an `InvalidInput` error, as in std.
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        if timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot set a 0 duration timeout",
            ));
        }
        TcpStream::connect_one(*addr, Some(timeout))
    }

    fn connect_one(addr: SocketAddr, timeout: Option<Duration>) -> io::Result<TcpStream> {
        if !in_green("TcpStream::connect") {
            let stream = match timeout {
                Some(timeout) => std::net::TcpStream::connect_timeout(&addr, timeout)?,
                None => std::net::TcpStream::connect(addr)?,
            };
            return TcpStream::from_std(stream);
        }
        let stream = TcpStream::from_mio(mio::net::TcpStream::connect(addr)?);
        stream
            .inner
            .do_io(Direction::Write, timeout, "TcpStream::connect", connected)?;
        Ok(stream)
    }

    /// Connects to `addr`, for async code.
    pub async fn connect_async<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        let mut last = None;
        for addr in resolve_async(&addr).await? {
            match TcpStream::connect_one_async(addr).await {
                Ok(stream) => return Ok(stream),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "could not resolve to any addresses",
            )
        }))
    }

    async fn connect_one_async(addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::from_mio(mio::net::TcpStream::connect(addr)?);
        stream.inner.io_async(Direction::Write, connected).await?;
        Ok(stream)
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.io.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.io.local_addr()
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.io.set_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.inner.io.nodelay()
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

    /// Writes longer than this fail with `ErrorKind::TimedOut`. See
    /// [`set_read_timeout`](TcpStream::set_read_timeout).
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

    /// Receives data without taking it off the socket's queue: the next read returns it
    /// again. Waits like [`read`](Read::read), under the read timeout.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let timeout = self.read_timeout.get();
        self.inner
            .do_io(Direction::Read, timeout, "TcpStream::peek", |s| s.peek(buf))
    }

    /// A second handle to the same connection (`dup`), like std's `try_clone`: for
    /// example one green thread reads from one handle while another writes to the
    /// other. The clone starts with this handle's read and write timeouts; after that
    /// each handle keeps its own (std's clones share them, as socket options).
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        let fd = self.as_fd().try_clone_to_owned()?;
        // The duplicate shares the file's non-blocking flag.
        Ok(TcpStream {
            inner: self.inner.sibling(mio::net::TcpStream::from_std(fd.into())),
            read_timeout: self.read_timeout.copy(),
            write_timeout: self.write_timeout.copy(),
        })
    }

    ip_options!();

    /// Wraps a std stream (switching it to non-blocking mode). Its read and write
    /// timeouts carry over.
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        let (read, write) = (stream.read_timeout()?, stream.write_timeout()?);
        stream.set_nonblocking(true)?;
        let stream = TcpStream::from_mio(mio::net::TcpStream::from_std(stream));
        stream.read_timeout.set(read)?;
        stream.write_timeout.set(write)?;
        Ok(stream)
    }

    /// The std stream, back in blocking mode (left non-blocking while a `try_clone`
    /// of it is still alive: the flag is shared, and the clone's waits need it), with
    /// this stream's read and write timeouts.
    pub fn into_std(self) -> io::Result<std::net::TcpStream> {
        let (read, write) = (self.read_timeout.get(), self.write_timeout.get());
        let shared = self.inner.has_clones();
        let stream = std::net::TcpStream::from(self.inner.into_inner());
        if !shared {
            stream.set_nonblocking(false)?;
        }
        stream.set_read_timeout(read)?;
        stream.set_write_timeout(write)?;
        Ok(stream)
    }
}

/// A connect in progress: `WouldBlock` until it completed, then its outcome.
fn connected(stream: &mio::net::TcpStream) -> io::Result<()> {
    if let Some(error) = stream.take_error()? {
        return Err(error);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Err(io::ErrorKind::WouldBlock.into()),
        Err(e) => Err(e),
    }
}

/// `recv(2)` as std's `TcpStream::read` makes it, but called from the I/O loop's own
/// frame: through mio and std it took three more frames, stack that each connection's
/// green thread brings back into cache on every request.
#[inline]
fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call, and
    // recv writes at most that many; `fd` is the borrowed stream's socket, open for as
    // long as the borrow lasts.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// `send(2)` as std's `TcpStream::write` makes it (`MSG_NOSIGNAL`: a peer that closed
/// is an `EPIPE` error, not a `SIGPIPE`); see [`recv`].
#[inline]
fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole call; `fd` is
    // the borrowed stream's socket, open for as long as the borrow lasts.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let timeout = self.read_timeout.get();
        self.inner.do_transfer(
            Direction::Read,
            timeout,
            "TcpStream::read",
            buf.len(),
            |s| recv(s.as_raw_fd(), buf),
        )
    }

    fn read_vectored(&mut self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        let timeout = self.read_timeout.get();
        let len = vectored_len(bufs.iter().map(|b| b.len()));
        self.inner
            .do_transfer(Direction::Read, timeout, "TcpStream::read", len, |mut s| {
                s.read_vectored(bufs)
            })
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let timeout = self.write_timeout.get();
        self.inner.do_transfer(
            Direction::Write,
            timeout,
            "TcpStream::write",
            buf.len(),
            |s| send(s.as_raw_fd(), buf),
        )
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let timeout = self.write_timeout.get();
        let len = vectored_len(bufs.iter().map(|b| b.len()));
        self.inner.do_transfer(
            Direction::Write,
            timeout,
            "TcpStream::write",
            len,
            |mut s| s.write_vectored(bufs),
        )
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for &TcpStream {
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

impl AsyncWrite for &TcpStream {
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

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut this: &TcpStream = self.get_mut();
        Pin::new(&mut this).poll_read(cx, buf)
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut this: &TcpStream = self.get_mut();
        Pin::new(&mut this).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown(Shutdown::Write))
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.io.as_raw_fd()
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.io.as_fd()
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.io.as_raw_fd()
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.io.as_fd()
    }
}

/// Wraps a std stream: [`TcpStream::from_std`], which only fails on a closed fd.
///
/// # Panics
/// If the socket cannot be switched to non-blocking mode (a descriptor that is not a
/// socket); use `from_std` to get that as an error instead.
impl From<std::net::TcpStream> for TcpStream {
    fn from(stream: std::net::TcpStream) -> TcpStream {
        TcpStream::from_std(stream)
            .expect("TcpStream::from(std::net::TcpStream): cannot make the socket non-blocking; use TcpStream::from_std to handle the error")
    }
}

/// The std stream, in blocking mode again: [`TcpStream::into_std`].
///
/// # Panics
/// If the socket cannot be switched back to blocking mode; use `into_std` to get that
/// as an error instead.
impl From<TcpStream> for std::net::TcpStream {
    fn from(stream: TcpStream) -> std::net::TcpStream {
        stream
            .into_std()
            .expect("std::net::TcpStream::from(greenrt::net::TcpStream): cannot make the socket blocking; use TcpStream::into_std to handle the error")
    }
}

/// Wraps a std listener: [`TcpListener::from_std`].
///
/// # Panics
/// If the socket cannot be switched to non-blocking mode; use `from_std` to get that
/// as an error instead.
impl From<std::net::TcpListener> for TcpListener {
    fn from(listener: std::net::TcpListener) -> TcpListener {
        TcpListener::from_std(listener)
            .expect("TcpListener::from(std::net::TcpListener): cannot make the socket non-blocking; use TcpListener::from_std to handle the error")
    }
}

/// The std listener, in blocking mode again: [`TcpListener::into_std`].
///
/// # Panics
/// If the socket cannot be switched back to blocking mode; use `into_std` to get that
/// as an error instead.
impl From<TcpListener> for std::net::TcpListener {
    fn from(listener: TcpListener) -> std::net::TcpListener {
        listener
            .into_std()
            .expect("std::net::TcpListener::from(greenrt::net::TcpListener): cannot make the socket blocking; use TcpListener::into_std to handle the error")
    }
}

raw_fd_conversions!(TcpStream, std::net::TcpStream);
raw_fd_conversions!(TcpListener, std::net::TcpListener);
