//! UDP: [`UdpSocket`].

use super::addr::{each_addr, resolve, resolve_async, ToSocketAddrs};
use super::source::{Source, Timeout};
use crate::reactor::Direction;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

/// A UDP socket. Blocking-style methods suspend only a green caller; the `_async`
/// methods are for async code. See the [module docs](crate::net).
pub struct UdpSocket {
    inner: Source<mio::net::UdpSocket>,
    read_timeout: Timeout,
    write_timeout: Timeout,
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("addr", &self.local_addr().ok())
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

fn first(addrs: Vec<SocketAddr>) -> io::Result<SocketAddr> {
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no addresses to send data to"))
}

impl UdpSocket {
    fn from_mio(io: mio::net::UdpSocket) -> UdpSocket {
        UdpSocket {
            inner: Source::new(io),
            read_timeout: Timeout::default(),
            write_timeout: Timeout::default(),
        }
    }

    /// Binds to `addr` (the first address that works).
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        each_addr(resolve(&addr, "UdpSocket::bind")?, |addr| {
            mio::net::UdpSocket::bind(addr).map(UdpSocket::from_mio)
        })
    }

    /// Sends `buf` to `addr` (its first resolved address).
    pub fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        let target = first(resolve(&addr, "UdpSocket::send_to")?)?;
        let timeout = self.write_timeout.get();
        self.inner
            .do_io(Direction::Write, timeout, "UdpSocket::send_to", |s| {
                s.send_to(buf, target)
            })
    }

    /// Receives one datagram and its sender.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let timeout = self.read_timeout.get();
        self.inner
            .do_io(Direction::Read, timeout, "UdpSocket::recv_from", |s| {
                s.recv_from(buf)
            })
    }

    /// Sets the default peer for [`send`](UdpSocket::send) and filters
    /// [`recv`](UdpSocket::recv) to it.
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        each_addr(resolve(&addr, "UdpSocket::connect")?, |addr| {
            self.inner.io.connect(addr)
        })
    }

    /// Sends to the connected peer.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        let timeout = self.write_timeout.get();
        self.inner
            .do_io(Direction::Write, timeout, "UdpSocket::send", |s| {
                s.send(buf)
            })
    }

    /// Receives one datagram from the connected peer.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let timeout = self.read_timeout.get();
        self.inner
            .do_io(Direction::Read, timeout, "UdpSocket::recv", |s| s.recv(buf))
    }

    /// [`send_to`](UdpSocket::send_to) for async code.
    pub async fn send_to_async<A: ToSocketAddrs>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        let target = first(resolve_async(&addr).await?)?;
        self.inner
            .io_async(Direction::Write, |s| s.send_to(buf, target))
            .await
    }

    /// [`recv_from`](UdpSocket::recv_from) for async code.
    pub async fn recv_from_async(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner
            .io_async(Direction::Read, |s| s.recv_from(&mut *buf))
            .await
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.io.local_addr()
    }

    /// The connected peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.io.peer_addr()
    }

    /// Receives longer than this fail with `ErrorKind::TimedOut` (green and plain
    /// alike). `None` (the default) waits forever; a zero duration is an `InvalidInput`
    /// error.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.read_timeout.set(timeout)
    }

    /// Sends longer than this fail with `ErrorKind::TimedOut`. See
    /// [`set_read_timeout`](UdpSocket::set_read_timeout).
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

    /// Receives a datagram without taking it off the queue, with its sender's address.
    /// Waits like [`recv_from`](UdpSocket::recv_from).
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let timeout = self.read_timeout.get();
        self.inner
            .do_io(Direction::Read, timeout, "UdpSocket::peek_from", |s| {
                s.peek_from(buf)
            })
    }

    /// Receives a datagram from the connected peer without taking it off the queue.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let timeout = self.read_timeout.get();
        self.inner
            .do_io(Direction::Read, timeout, "UdpSocket::peek", |s| s.peek(buf))
    }

    /// A second handle to the same socket (`dup`), like std's `try_clone`. The clone
    /// starts with this handle's timeouts; after that each handle keeps its own.
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        let fd = self.as_fd().try_clone_to_owned()?;
        // The duplicate shares the file's non-blocking flag.
        Ok(UdpSocket {
            inner: self.inner.sibling(mio::net::UdpSocket::from_std(fd.into())),
            read_timeout: self.read_timeout.copy(),
            write_timeout: self.write_timeout.copy(),
        })
    }

    /// Sets `SO_BROADCAST`: whether datagrams may go to a broadcast address.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.inner.io.set_broadcast(on)
    }

    /// `SO_BROADCAST`.
    pub fn broadcast(&self) -> io::Result<bool> {
        self.inner.io.broadcast()
    }

    /// Joins the IPv4 multicast group `multiaddr` on the interface with address
    /// `interface` (`Ipv4Addr::UNSPECIFIED`: the system picks one), like std's
    /// `join_multicast_v4`.
    ///
    /// ```no_run
    /// use std::net::Ipv4Addr;
    /// # fn main() -> std::io::Result<()> {
    /// let socket = greenrt::net::UdpSocket::bind("0.0.0.0:5353")?;
    /// socket.join_multicast_v4(&Ipv4Addr::new(224, 0, 0, 251), &Ipv4Addr::UNSPECIFIED)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn join_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.inner.io.join_multicast_v4(multiaddr, interface)
    }

    /// Leaves a group joined with [`join_multicast_v4`](UdpSocket::join_multicast_v4).
    pub fn leave_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.inner.io.leave_multicast_v4(multiaddr, interface)
    }

    /// Joins the IPv6 multicast group `multiaddr` on the interface with index
    /// `interface` (0: the system picks one).
    pub fn join_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.inner.io.join_multicast_v6(multiaddr, interface)
    }

    /// Leaves a group joined with [`join_multicast_v6`](UdpSocket::join_multicast_v6).
    pub fn leave_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.inner.io.leave_multicast_v6(multiaddr, interface)
    }

    /// Sets `IP_MULTICAST_LOOP`: whether this host's own IPv4 multicast datagrams come
    /// back to its sockets.
    pub fn set_multicast_loop_v4(&self, on: bool) -> io::Result<()> {
        self.inner.io.set_multicast_loop_v4(on)
    }

    /// `IP_MULTICAST_LOOP`.
    pub fn multicast_loop_v4(&self) -> io::Result<bool> {
        self.inner.io.multicast_loop_v4()
    }

    /// Sets `IP_MULTICAST_TTL`: how many hops IPv4 multicast datagrams may travel.
    pub fn set_multicast_ttl_v4(&self, ttl: u32) -> io::Result<()> {
        self.inner.io.set_multicast_ttl_v4(ttl)
    }

    /// `IP_MULTICAST_TTL`.
    pub fn multicast_ttl_v4(&self) -> io::Result<u32> {
        self.inner.io.multicast_ttl_v4()
    }

    /// Sets `IPV6_MULTICAST_LOOP`.
    pub fn set_multicast_loop_v6(&self, on: bool) -> io::Result<()> {
        self.inner.io.set_multicast_loop_v6(on)
    }

    /// `IPV6_MULTICAST_LOOP`.
    pub fn multicast_loop_v6(&self) -> io::Result<bool> {
        self.inner.io.multicast_loop_v6()
    }

    ip_options!();

    /// Wraps a std socket (switching it to non-blocking mode). Its read and write
    /// timeouts carry over.
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
        let (read, write) = (socket.read_timeout()?, socket.write_timeout()?);
        socket.set_nonblocking(true)?;
        let socket = UdpSocket::from_mio(mio::net::UdpSocket::from_std(socket));
        socket.read_timeout.set(read)?;
        socket.write_timeout.set(write)?;
        Ok(socket)
    }

    /// The std socket, back in blocking mode (left non-blocking while a `try_clone`
    /// of it is still alive: the flag is shared, and the clone's waits need it), with
    /// this socket's read and write timeouts.
    pub fn into_std(self) -> io::Result<std::net::UdpSocket> {
        let (read, write) = (self.read_timeout.get(), self.write_timeout.get());
        let shared = self.inner.has_clones();
        let socket = std::net::UdpSocket::from(std::os::fd::OwnedFd::from(self.inner.into_inner()));
        if !shared {
            socket.set_nonblocking(false)?;
        }
        socket.set_read_timeout(read)?;
        socket.set_write_timeout(write)?;
        Ok(socket)
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.io.as_raw_fd()
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.io.as_fd()
    }
}

/// Wraps a std socket: [`UdpSocket::from_std`].
///
/// # Panics
/// If the socket cannot be switched to non-blocking mode; use `from_std` to get that
/// as an error instead.
impl From<std::net::UdpSocket> for UdpSocket {
    fn from(socket: std::net::UdpSocket) -> UdpSocket {
        UdpSocket::from_std(socket)
            .expect("UdpSocket::from(std::net::UdpSocket): cannot make the socket non-blocking; use UdpSocket::from_std to handle the error")
    }
}

/// The std socket, in blocking mode again: [`UdpSocket::into_std`].
///
/// # Panics
/// If the socket cannot be switched back to blocking mode; use `into_std` to get that
/// as an error instead.
impl From<UdpSocket> for std::net::UdpSocket {
    fn from(socket: UdpSocket) -> std::net::UdpSocket {
        socket
            .into_std()
            .expect("std::net::UdpSocket::from(greenrt::net::UdpSocket): cannot make the socket blocking; use UdpSocket::into_std to handle the error")
    }
}

raw_fd_conversions!(UdpSocket, std::net::UdpSocket);
