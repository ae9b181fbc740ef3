//! Addresses: which ones need a name lookup, and doing it off the workers.

use crate::bridge::{self, Caller};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// What an address argument turned into: addresses, or a name to look up.
#[doc(hidden)]
#[derive(Debug)]
pub enum Addrs {
    Ready(Vec<SocketAddr>),
    Lookup(String, u16),
}

mod sealed {
    pub trait Sealed {
        fn to_addrs(&self) -> std::io::Result<super::Addrs>;
    }
}

/// Like [`std::net::ToSocketAddrs`], for greenrt's sockets: implemented for the same
/// types, but a host name is looked up on the blocking pool (from green threads and
/// async code) instead of on the calling worker.
pub trait ToSocketAddrs: sealed::Sealed {}

impl<T: sealed::Sealed + ?Sized> ToSocketAddrs for T {}

fn ready(addr: SocketAddr) -> io::Result<Addrs> {
    Ok(Addrs::Ready(vec![addr]))
}

impl sealed::Sealed for SocketAddr {
    fn to_addrs(&self) -> io::Result<Addrs> {
        ready(*self)
    }
}
impl sealed::Sealed for SocketAddrV4 {
    fn to_addrs(&self) -> io::Result<Addrs> {
        ready((*self).into())
    }
}
impl sealed::Sealed for SocketAddrV6 {
    fn to_addrs(&self) -> io::Result<Addrs> {
        ready((*self).into())
    }
}
impl sealed::Sealed for (IpAddr, u16) {
    fn to_addrs(&self) -> io::Result<Addrs> {
        ready((*self).into())
    }
}
impl sealed::Sealed for (Ipv4Addr, u16) {
    fn to_addrs(&self) -> io::Result<Addrs> {
        ready((*self).into())
    }
}
impl sealed::Sealed for (Ipv6Addr, u16) {
    fn to_addrs(&self) -> io::Result<Addrs> {
        ready((*self).into())
    }
}
impl sealed::Sealed for (&str, u16) {
    fn to_addrs(&self) -> io::Result<Addrs> {
        match self.0.parse::<IpAddr>() {
            Ok(ip) => ready((ip, self.1).into()),
            Err(_) => Ok(Addrs::Lookup(self.0.to_string(), self.1)),
        }
    }
}

/// `localhost` and names under it (`app.localhost`), any case, with or without the
/// final dot: loopback by definition (RFC 6761, section 6.3).
fn is_localhost(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host).as_bytes();
    let suffix = b"localhost";
    host.len() >= suffix.len()
        && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        && (host.len() == suffix.len() || host[host.len() - suffix.len() - 1] == b'.')
}
impl sealed::Sealed for (String, u16) {
    fn to_addrs(&self) -> io::Result<Addrs> {
        (self.0.as_str(), self.1).to_addrs()
    }
}
impl sealed::Sealed for str {
    fn to_addrs(&self) -> io::Result<Addrs> {
        if let Ok(addr) = self.parse::<SocketAddr>() {
            return ready(addr);
        }
        let invalid = || io::Error::new(io::ErrorKind::InvalidInput, "invalid socket address");
        let (host, port) = self.rsplit_once(':').ok_or_else(invalid)?;
        let port = port.parse::<u16>().map_err(|_| invalid())?;
        (host, port).to_addrs()
    }
}
impl sealed::Sealed for String {
    fn to_addrs(&self) -> io::Result<Addrs> {
        self.as_str().to_addrs()
    }
}
impl sealed::Sealed for [SocketAddr] {
    fn to_addrs(&self) -> io::Result<Addrs> {
        Ok(Addrs::Ready(self.to_vec()))
    }
}
impl<T: sealed::Sealed + ?Sized> sealed::Sealed for &T {
    fn to_addrs(&self) -> io::Result<Addrs> {
        (**self).to_addrs()
    }
}

fn lookup(host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
    std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port)).map(Iterator::collect)
}

/// Resolves for the blocking-style call `what`: a lookup runs on the blocking pool from
/// a green thread, inline on a plain thread. In a future task a lookup would block the
/// worker, and `what` may have no `_async` form (`bind`): `localhost` is taken as
/// `127.0.0.1`, then `::1`, without one; any other name panics, naming the way out.
pub(crate) fn resolve<A: ToSocketAddrs + ?Sized>(
    addr: &A,
    what: &str,
) -> io::Result<Vec<SocketAddr>> {
    match addr.to_addrs()? {
        Addrs::Ready(addrs) => Ok(addrs),
        Addrs::Lookup(host, port) => {
            if crate::runtime::context::in_task() {
                if is_localhost(&host) {
                    return Ok(loopback(port));
                }
                panic!(
                    "{what} with the host name {host:?} called inside a future task: looking \
                     the name up would block the worker thread. Use the `_async` form where \
                     there is one (`TcpStream::connect_async`, `UdpSocket::send_to_async`), \
                     or look the name up first without blocking (`greenrt::spawn_blocking(\
                     move || std::net::ToSocketAddrs::to_socket_addrs(&addr)).await`) and \
                     pass the `SocketAddr`"
                );
            }
            match bridge::caller(what) {
                Caller::Green(_) => crate::unblock(move || lookup(host, port)),
                Caller::Thread => lookup(host, port),
            }
        }
    }
}

/// `localhost`'s addresses, without a lookup.
fn loopback(port: u16) -> Vec<SocketAddr> {
    vec![
        (Ipv4Addr::LOCALHOST, port).into(),
        (Ipv6Addr::LOCALHOST, port).into(),
    ]
}

/// Resolves for async code: a lookup runs on the blocking pool when there is a runtime.
pub(crate) async fn resolve_async<A: ToSocketAddrs + ?Sized>(
    addr: &A,
) -> io::Result<Vec<SocketAddr>> {
    match addr.to_addrs()? {
        Addrs::Ready(addrs) => Ok(addrs),
        Addrs::Lookup(host, port) => {
            if crate::runtime::context::current_handle().is_none() {
                return lookup(host, port);
            }
            match crate::spawn_blocking(move || lookup(host, port)).await {
                Ok(result) => result,
                Err(payload) => std::panic::resume_unwind(payload),
            }
        }
    }
}

/// Tries `f` on each address in turn; returns the first success or the last error.
pub(crate) fn each_addr<T>(
    addrs: Vec<SocketAddr>,
    mut f: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for addr in addrs {
        match f(addr) {
            Ok(value) => return Ok(value),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_names_are_recognised() {
        for name in ["localhost", "LocalHost", "localhost.", "app.localhost"] {
            assert!(is_localhost(name), "{name}");
        }
        for name in [
            "notlocalhost",
            "localhost.example",
            "example.com",
            "localhos",
            "",
        ] {
            assert!(!is_localhost(name), "{name}");
        }
    }
}
