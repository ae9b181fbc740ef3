//! Networking: TCP, UDP and Unix sockets for green threads, async code and plain threads.
//!
//! The same types serve three kinds of callers:
//! - **Green threads** use `std::io::Read`/`Write` (also on `&TcpStream`, so one green
//!   thread can read while another writes) and the blocking-style methods (`accept`,
//!   `connect`, `recv_from`...). When the socket is not ready, only the calling green
//!   thread suspends until the runtime's reactor reports readiness; its worker keeps
//!   running other green threads.
//! - **Async code** uses `futures::io::AsyncRead`/`AsyncWrite` and the `_async` methods
//!   ([`TcpStream::connect_async`], [`TcpListener::accept_async`],
//!   [`UdpSocket::send_to_async`], [`UdpSocket::recv_from_async`]). As with tokio's
//!   streams, a socket keeps one waker per direction for `poll_read`/`poll_write`:
//!   when two tasks read (or write) one socket at once, only the one that polled last
//!   is woken, so give each direction one owner (green threads and the `_async`
//!   methods have no such limit).
//! - **Plain threads** (no runtime) get ordinary blocking sockets: the socket is always
//!   non-blocking underneath, and a plain thread waits for readiness with `poll(2)`,
//!   which behaves like a blocking call (including the read/write timeouts).
//!
//! Each type has `try_clone` (a second handle on a `dup`ed fd, as with std), the std
//! conversions (`from_std`/`into_std` and `From`, timeouts carried over both ways) and
//! `AsRawFd`/`AsFd`/`FromRawFd`/`IntoRawFd`. The handles of one socket share its
//! non-blocking mode, which greenrt's waits rely on: `into_std` (and `into_raw_fd`)
//! switches the socket back to blocking mode only when no other greenrt handle to it is
//! left, and a std handle made from a greenrt one's fd must not switch it while greenrt
//! handles use it.
//!
//! The types implement both `std::io::Read`/`Write` and `futures::io::AsyncRead`/
//! `AsyncWrite`, so with both `std::io::Read` and `futures::io::AsyncReadExt` in scope
//! a call like `stream.read(&mut buf)` is ambiguous (error E0034): import only the one
//! the code uses, or write `Read::read(&mut stream, &mut buf)`.
//!
//! Read and write timeouts return `ErrorKind::TimedOut` everywhere (std returns
//! `WouldBlock` on Unix). Host names (`"localhost:80"`) are resolved on the blocking
//! pool ([`crate::unblock`]) when called from a green thread or async code, never with
//! `getaddrinfo` on a worker; numeric addresses are parsed in place.
//!
//! A socket registers with the reactor of the runtime it is first waited on in, and
//! stays with it. Once that runtime has shut down, waiting on the socket in a green
//! thread or async code returns an error that says so, and waits in progress end with
//! that error (move it with `into_std` / `from_std` instead); plain threads can still
//! use it.
//!
//! ```
//! use std::io::{Read, Write};
//! use greenrt::net::{TcpListener, TcpStream};
//!
//! let rt = greenrt::runtime::Runtime::new()?;
//! rt.run(|| -> std::io::Result<()> {
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     let addr = listener.local_addr()?;
//!     let server = greenrt::spawn(move || -> std::io::Result<()> {
//!         let (mut conn, _) = listener.accept()?;
//!         let mut buf = [0; 5];
//!         conn.read_exact(&mut buf)?;
//!         conn.write_all(&buf)
//!     });
//!     let mut client = TcpStream::connect(addr)?;
//!     client.write_all(b"hello")?;
//!     let mut echo = [0; 5];
//!     client.read_exact(&mut echo)?;
//!     assert_eq!(&echo, b"hello");
//!     server.join().unwrap()
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```

/// `FromRawFd` and `IntoRawFd` for a socket type, through its std counterpart `$std`
/// (and the two `From` conversions between them).
macro_rules! raw_fd_conversions {
    ($ty:ident, $std:ty) => {
        impl std::os::fd::FromRawFd for $ty {
            /// Takes ownership of `fd`, a socket of this kind, as std's `from_raw_fd`
            /// does, and switches it to non-blocking mode.
            ///
            /// # Panics
            /// If it cannot be switched (`fcntl` fails: `fd` is not an open file).
            unsafe fn from_raw_fd(fd: std::os::fd::RawFd) -> $ty {
                // SAFETY: the caller's contract is std's own: `fd` is open, owned by the
                // caller and handed over, and a socket of this kind.
                $ty::from(unsafe { <$std as std::os::fd::FromRawFd>::from_raw_fd(fd) })
            }
        }

        impl std::os::fd::IntoRawFd for $ty {
            /// Gives up the fd, deregistered from the reactor and back in blocking mode
            /// unless a `try_clone` of it is still alive (as `into_std` does).
            fn into_raw_fd(self) -> std::os::fd::RawFd {
                std::os::fd::IntoRawFd::into_raw_fd(<$std>::from(self))
            }
        }
    };
}

/// `ttl`, `set_ttl` and `take_error` for a type whose `inner` is a `Source` of a mio IP
/// socket (used inside its `impl` block).
macro_rules! ip_options {
    () => {
        /// Sets `IP_TTL`.
        pub fn set_ttl(&self, ttl: u32) -> std::io::Result<()> {
            self.inner.io.set_ttl(ttl)
        }

        /// `IP_TTL`.
        pub fn ttl(&self) -> std::io::Result<u32> {
            self.inner.io.ttl()
        }

        /// Takes the pending socket error (`SO_ERROR`), if any.
        pub fn take_error(&self) -> std::io::Result<Option<std::io::Error>> {
            self.inner.io.take_error()
        }
    };
}

mod addr;
mod source;
mod tcp;
mod udp;
mod unix;

pub use addr::ToSocketAddrs;
pub use tcp::{Incoming, TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{Incoming as UnixIncoming, UnixListener, UnixStream};
