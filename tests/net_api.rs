//! The networking issue's promises as a new user reads them: net types, timers and the
//! blocking pool, written from the text alone, with std's (or tokio's)
//! semantics where the issue is silent.

mod common;

use common::{panic_message, runtime, with_watchdog};

use greenrt::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

fn tmp_path(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "greenrt-net-api-{}-{}-{:?}.sock",
        tag,
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_file(&p);
    p
}

/// A connected (client, server) TCP pair, made with blocking-style calls.
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

// ---------------------------------------------------------------- name resolution

#[test]
fn names_resolve_in_green_threads_plain_threads_and_block_on() {
    with_watchdog("names", LIMIT, || {
        // Plain thread, no runtime.
        let l = TcpListener::bind("localhost:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let s = TcpStream::connect(("localhost", port)).unwrap();
        assert_eq!(s.peer_addr().unwrap().port(), port);
        let u = UdpSocket::bind("localhost:0").unwrap();
        assert!(u.local_addr().unwrap().ip().is_loopback());

        let rt = runtime(2);
        // Green thread.
        rt.run(|| {
            let l = TcpListener::bind("localhost:0").unwrap();
            let port = l.local_addr().unwrap().port();
            let s = TcpStream::connect(format!("localhost:{port}")).unwrap();
            assert_eq!(s.peer_addr().unwrap().port(), port);
            let u = UdpSocket::bind(("localhost", 0)).unwrap();
            u.connect(format!("localhost:{}", u.local_addr().unwrap().port()))
                .unwrap();
            assert_eq!(u.send(b"me").unwrap(), 2);
            let mut buf = [0; 2];
            assert_eq!(u.recv(&mut buf).unwrap(), 2);
        });
        // Runtime::block_on's future, on this plain thread.
        rt.block_on(async {
            let l = TcpListener::bind("localhost:0").unwrap();
            let port = l.local_addr().unwrap().port();
            let mut s = TcpStream::connect_async(format!("localhost:{port}"))
                .await
                .unwrap();
            let (mut a, _) = l.accept_async().await.unwrap();
            futures::io::AsyncWriteExt::write_all(&mut s, b"hi")
                .await
                .unwrap();
            let mut buf = [0; 2];
            futures::io::AsyncReadExt::read_exact(&mut a, &mut buf)
                .await
                .unwrap();
            assert_eq!(&buf, b"hi");
        });
    });
}

/// The issue: names are "resolved on the blocking pool, never with getaddrinfo on a
/// worker". Async code has only `TcpListener::bind` / `UdpSocket::bind` to bind with.
#[test]
fn bind_to_a_name_inside_a_spawned_async_task() {
    with_watchdog("bind in task", LIMIT, || {
        let rt = runtime(2);
        let out = rt.block_on(rt.spawn_async(async {
            let l = TcpListener::bind("localhost:0").unwrap();
            let addr = l.local_addr().unwrap();
            let client = greenrt::spawn_async(async move {
                TcpStream::connect_async(addr).await.unwrap();
            });
            l.accept_async().await.unwrap();
            client.await.unwrap();
            let u = UdpSocket::bind("localhost:0").unwrap();
            u.local_addr().unwrap().ip().is_loopback()
        }));
        assert!(out.unwrap());
    });
}

#[test]
fn udp_send_to_async_with_a_name_in_a_task() {
    with_watchdog("send_to_async name", LIMIT, || {
        let rt = runtime(2);
        let got = rt.block_on(rt.spawn_async(async {
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = b.local_addr().unwrap().port();
            a.send_to_async(b"named", format!("localhost:{port}"))
                .await
                .unwrap();
            a.send_to_async(b"tuple", ("localhost", port))
                .await
                .unwrap();
            let mut buf = [0; 16];
            let (n, from) = b.recv_from_async(&mut buf).await.unwrap();
            assert_eq!(from, a.local_addr().unwrap());
            let first = buf[..n].to_vec();
            let (n, _) = b.recv_from_async(&mut buf).await.unwrap();
            (first, buf[..n].to_vec())
        }));
        let (first, second) = got.unwrap();
        assert_eq!(first, b"named");
        assert_eq!(second, b"tuple");
    });
}

#[test]
fn bad_addresses_are_errors_not_panics() {
    with_watchdog("bad addrs", LIMIT, || {
        let plain = TcpStream::connect("localhost").unwrap_err();
        assert_eq!(plain.kind(), ErrorKind::InvalidInput);
        let rt = runtime(1);
        rt.run(|| {
            assert_eq!(
                TcpStream::connect("localhost").unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
            assert_eq!(
                TcpListener::bind("127.0.0.1:notaport").unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
            assert!(TcpStream::connect("no-such-host.invalid:80").is_err());
            assert!(UdpSocket::bind("no-such-host.invalid:0").is_err());
        });
        rt.block_on(async {
            assert!(TcpStream::connect_async("no-such-host.invalid:80")
                .await
                .is_err());
        });
    });
}

#[test]
fn connect_tries_each_address_in_turn_like_std() {
    with_watchdog("each addr", LIMIT, || {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let good = listener.local_addr().unwrap();
        let addrs = [closed, good];
        // std does the same from a plain thread.
        assert_eq!(
            std::net::TcpStream::connect(&addrs[..])
                .unwrap()
                .peer_addr()
                .unwrap(),
            good
        );
        assert_eq!(
            TcpStream::connect(&addrs[..]).unwrap().peer_addr().unwrap(),
            good
        );
        let rt = runtime(1);
        rt.run(move || {
            assert_eq!(
                TcpStream::connect(&addrs[..]).unwrap().peer_addr().unwrap(),
                good
            );
            let e = TcpStream::connect(closed).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
            let e = TcpStream::connect_timeout(&closed, Duration::from_secs(5)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
        });
        let e = rt.block_on(TcpStream::connect_async(closed)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
        let s = rt.block_on(TcpStream::connect_async(&addrs[..])).unwrap();
        assert_eq!(s.peer_addr().unwrap(), good);
        let e = rt.block_on(TcpStream::connect_async(&[][..])).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        drop(listener);
    });
}

// ---------------------------------------------------------------- std edge cases

#[test]
fn zero_duration_timeouts_are_invalid_input_like_std() {
    fn check(green: bool) {
        let (c, _s) = tcp_pair();
        for r in [
            c.set_read_timeout(Some(Duration::ZERO)),
            c.set_write_timeout(Some(Duration::ZERO)),
        ] {
            assert_eq!(
                r.unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "green={green}"
            );
        }
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(
            a.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            a.set_write_timeout(Some(Duration::ZERO))
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            u.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            u.set_write_timeout(Some(Duration::ZERO))
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
        // Setting and clearing round-trips, like std.
        c.set_read_timeout(Some(Duration::from_millis(250)))
            .unwrap();
        assert_eq!(c.read_timeout().unwrap(), Some(Duration::from_millis(250)));
        c.set_read_timeout(None).unwrap();
        assert_eq!(c.read_timeout().unwrap(), None);
        // std agrees.
        let std_s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            std_s
                .set_read_timeout(Some(Duration::ZERO))
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
    }
    with_watchdog("zero timeouts", LIMIT, || {
        check(false);
        runtime(1).run(|| check(true));
    });
}

/// std (and Linux) semantics: a read into an empty buffer with nothing pending waits
/// like any read (checked against std: it blocks too), so only test it with data
/// pending; a zero-byte write returns at once.
#[test]
fn empty_reads_and_writes_return_at_once() {
    fn check() {
        let (mut c, mut s) = tcp_pair();
        assert_eq!(Write::write(&mut c, &[]).unwrap(), 0);
        Write::write_all(&mut c, &[]).unwrap();
        Write::flush(&mut c).unwrap();
        Write::write_all(&mut s, b"x").unwrap();
        greenrt::sleep(Duration::from_millis(20));
        assert_eq!(Read::read(&mut c, &mut []).unwrap(), 0);
        let (mut a, mut b) = UnixStream::pair().unwrap();
        assert_eq!(Write::write(&mut a, &[]).unwrap(), 0);
        Write::write_all(&mut b, b"y").unwrap();
        assert_eq!(Read::read(&mut a, &mut []).unwrap(), 0);
        // The pending bytes are still there afterwards.
        let mut one = [0; 1];
        Read::read_exact(&mut c, &mut one).unwrap();
        assert_eq!(&one, b"x");
        Read::read_exact(&mut a, &mut one).unwrap();
        assert_eq!(&one, b"y");
    }
    with_watchdog("empty io", LIMIT, || {
        check();
        let rt = runtime(1);
        rt.run(check);
        rt.block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut c = TcpStream::connect_async(l.local_addr().unwrap())
                .await
                .unwrap();
            let (mut s, _) = l.accept_async().await.unwrap();
            assert_eq!(
                futures::io::AsyncWriteExt::write(&mut c, &[])
                    .await
                    .unwrap(),
                0
            );
            futures::io::AsyncWriteExt::write_all(&mut s, b"z")
                .await
                .unwrap();
            greenrt::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(
                futures::io::AsyncReadExt::read(&mut c, &mut [])
                    .await
                    .unwrap(),
                0
            );
            let mut one = [0; 1];
            futures::io::AsyncReadExt::read_exact(&mut c, &mut one)
                .await
                .unwrap();
            assert_eq!(&one, b"z");
        });
    });
}

#[test]
fn shutdown_write_then_peer_reads_zero_tcp_and_unix_green_and_plain() {
    fn check() {
        let (c, mut s) = tcp_pair();
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(s.read(&mut [0; 8]).unwrap(), 0);
        // The other direction still works.
        s.write_all(b"back").unwrap();
        let mut buf = [0; 4];
        (&c).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"back");

        let (a, mut b) = UnixStream::pair().unwrap();
        (&a).write_all(b"last").unwrap();
        a.shutdown(Shutdown::Write).unwrap();
        let mut all = Vec::new();
        b.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"last");
        b.shutdown(Shutdown::Both).unwrap();
        assert_eq!((&a).read(&mut [0; 4]).unwrap(), 0);
    }
    with_watchdog("shutdown", LIMIT, || {
        check();
        runtime(2).run(check);
    });
}

/// std on Linux: `shutdown(Read)` from another thread wakes a reader blocked on the same
/// socket with `Ok(0)`. Here, both sides are green threads sharing `&TcpStream`.
#[test]
fn shutdown_read_wakes_a_green_reader_blocked_on_the_same_stream() {
    with_watchdog("shutdown read wakes", LIMIT, || {
        let rt = runtime(2);
        rt.run(|| {
            let (c, _s) = tcp_pair();
            let c = Arc::new(c);
            let reader = {
                let c = c.clone();
                greenrt::spawn(move || (&*c).read(&mut [0; 8]).unwrap())
            };
            greenrt::sleep(Duration::from_millis(50)); // the reader is waiting
            c.shutdown(Shutdown::Read).unwrap();
            assert_eq!(reader.join().unwrap(), 0);
        });
        // And a plain thread, like std.
        let (c, _s) = tcp_pair();
        let c = Arc::new(c);
        let reader = {
            let c = c.clone();
            std::thread::spawn(move || (&*c).read(&mut [0; 8]).unwrap())
        };
        std::thread::sleep(Duration::from_millis(50));
        c.shutdown(Shutdown::Read).unwrap();
        assert_eq!(reader.join().unwrap(), 0);
    });
}

#[test]
fn dropping_one_end_wakes_a_green_reader_of_the_other() {
    with_watchdog("drop wakes", LIMIT, || {
        let rt = runtime(2);
        rt.run(|| {
            let (c, s) = tcp_pair();
            let reader = greenrt::spawn(move || {
                let mut s = s;
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).map(|_| buf)
            });
            greenrt::sleep(Duration::from_millis(30));
            (&c).write_all(b"bye").unwrap();
            drop(c);
            assert_eq!(reader.join().unwrap().unwrap(), b"bye");
            let (a, b) = UnixStream::pair().unwrap();
            let reader = greenrt::spawn(move || (&b).read(&mut [0; 8]).unwrap());
            greenrt::sleep(Duration::from_millis(30));
            drop(a);
            assert_eq!(reader.join().unwrap(), 0);
        });
    });
}

// ---------------------------------------------------------------- timeouts

#[test]
fn two_green_threads_time_out_reading_one_shared_stream() {
    with_watchdog("shared timeouts", LIMIT, || {
        let rt = runtime(2);
        rt.run(|| {
            let (c, mut s) = tcp_pair();
            c.set_read_timeout(Some(Duration::from_millis(60))).unwrap();
            let c = Arc::new(c);
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let c = c.clone();
                    greenrt::spawn(move || {
                        let start = Instant::now();
                        let e = (&*c).read(&mut [0; 4]).unwrap_err();
                        (e.kind(), start.elapsed())
                    })
                })
                .collect();
            for r in readers {
                let (kind, took) = r.join().unwrap();
                assert_eq!(kind, ErrorKind::TimedOut);
                assert!(took >= Duration::from_millis(60), "{took:?}");
            }
            // The stream is fine after the timeouts: data arriving later is read.
            let late = {
                let c = c.clone();
                greenrt::spawn(move || {
                    let mut buf = [0; 4];
                    (&*c).read_exact(&mut buf).unwrap();
                    buf
                })
            };
            greenrt::sleep(Duration::from_millis(10));
            s.write_all(b"late").unwrap();
            assert_eq!(&late.join().unwrap(), b"late");
            // A write from another green thread meanwhile is not affected by the read
            // timeout.
            (&*c).write_all(b"w").unwrap();
            let mut one = [0; 1];
            s.read_exact(&mut one).unwrap();
        });
    });
}

#[test]
fn a_read_timeout_does_not_fire_when_data_comes_in_time() {
    with_watchdog("timeout not fired", LIMIT, || {
        let rt = runtime(2);
        rt.run(|| {
            let (mut c, s) = tcp_pair();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let w = greenrt::spawn(move || {
                greenrt::sleep(Duration::from_millis(30));
                (&s).write_all(b"ok").unwrap();
                s
            });
            let mut buf = [0; 2];
            c.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"ok");
            w.join().unwrap();
        });
    });
}

#[test]
fn write_and_udp_timeouts_are_timed_out_on_plain_threads() {
    with_watchdog("plain timeouts", LIMIT, || {
        let (mut c, _s) = tcp_pair();
        c.set_write_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let chunk = vec![1u8; 1 << 16];
        let start = Instant::now();
        let e = loop {
            if let Err(e) = c.write(&chunk) {
                break e;
            }
        };
        assert_eq!(e.kind(), ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(50));

        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        u.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
        let start = Instant::now();
        assert_eq!(
            u.recv_from(&mut [0; 8]).unwrap_err().kind(),
            ErrorKind::TimedOut
        );
        assert!(start.elapsed() >= Duration::from_millis(30));

        let (a, _b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
        assert_eq!(
            (&a).read(&mut [0; 1]).unwrap_err().kind(),
            ErrorKind::TimedOut
        );

        // Green: UDP recv_from too.
        runtime(1).run(|| {
            let u = UdpSocket::bind("127.0.0.1:0").unwrap();
            u.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
            assert_eq!(
                u.recv_from(&mut [0; 8]).unwrap_err().kind(),
                ErrorKind::TimedOut
            );
            let (a, _b) = UnixStream::pair().unwrap();
            a.set_write_timeout(Some(Duration::from_millis(30)))
                .unwrap();
            let chunk = vec![1u8; 1 << 16];
            let e = loop {
                if let Err(e) = (&a).write(&chunk) {
                    break e;
                }
            };
            assert_eq!(e.kind(), ErrorKind::TimedOut);
        });
    });
}

// ---------------------------------------------------------------- UDP

#[test]
fn udp_truncates_a_datagram_into_a_small_buffer_like_std() {
    fn check() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b_addr = b.local_addr().unwrap();
        a.send_to(b"0123456789", b_addr).unwrap();
        a.send_to(b"next", b_addr).unwrap();
        let mut small = [0; 4];
        let (n, from) = b.recv_from(&mut small).unwrap();
        assert_eq!((n, &small), (4, b"0123"));
        assert_eq!(from, a.local_addr().unwrap());
        // The rest of the first datagram is gone; the next one comes whole.
        let mut buf = [0; 16];
        let (n, _) = b.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"next");
    }
    with_watchdog("udp truncate", LIMIT, || {
        check();
        let rt = runtime(1);
        rt.run(check);
        rt.block_on(async {
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").unwrap();
            a.send_to_async(b"0123456789", b.local_addr().unwrap())
                .await
                .unwrap();
            let mut small = [0; 3];
            let (n, _) = b.recv_from_async(&mut small).await.unwrap();
            assert_eq!((n, &small), (3, b"012"));
        });
    });
}

/// Whether a std socket joined to `group` gets a datagram this host sends to it: on a
/// machine without a multicast route (some containers) it does not, and then std and
/// greenrt are compared on what they can do there.
fn std_multicast_loops_back(group: Ipv4Addr) -> bool {
    let receiver = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    if receiver
        .join_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED)
        .is_err()
    {
        return false;
    }
    receiver
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let port = receiver.local_addr().unwrap().port();
    let sender = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    sender.set_multicast_loop_v4(true).unwrap();
    if sender.send_to(b"probe", (group, port)).is_err() {
        return false;
    }
    let mut buf = [0; 8];
    matches!(receiver.recv_from(&mut buf), Ok((5, _)))
}

#[test]
fn udp_multicast_options_and_groups_work_like_std() {
    with_watchdog("udp multicast", LIMIT, || {
        let group = Ipv4Addr::new(239, 255, 71, 17);
        // Probed with std sockets on this plain thread, not on the worker.
        let routed = std_multicast_loops_back(group);
        let rt = runtime(1);
        rt.run(move || {
            let u = UdpSocket::bind("0.0.0.0:0").unwrap();
            u.set_multicast_ttl_v4(7).unwrap();
            assert_eq!(u.multicast_ttl_v4().unwrap(), 7);
            u.set_multicast_loop_v4(false).unwrap();
            assert!(!u.multicast_loop_v4().unwrap());
            u.set_multicast_loop_v4(true).unwrap();
            assert!(u.multicast_loop_v4().unwrap());
            // Leaving a group never joined is an error, as in std.
            let std_s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            let any = Ipv4Addr::UNSPECIFIED;
            assert!(std_s.leave_multicast_v4(&group, &any).is_err());
            assert!(u.leave_multicast_v4(&group, &any).is_err());

            if !routed {
                println!("no multicast route here: std's own datagram did not come back");
                // Then joining must still agree with std.
                assert_eq!(
                    u.join_multicast_v4(&group, &any).is_ok(),
                    std_s.join_multicast_v4(&group, &any).is_ok()
                );
                return;
            }
            u.join_multicast_v4(&group, &any).unwrap();
            let port = u.local_addr().unwrap().port();
            let sender = UdpSocket::bind("0.0.0.0:0").unwrap();
            sender.set_multicast_loop_v4(true).unwrap();
            // The receiver is a green thread that suspends in recv_from.
            let receiver = greenrt::spawn(move || {
                let mut buf = [0; 16];
                let (n, _) = u.recv_from(&mut buf).unwrap();
                u.leave_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED)
                    .unwrap();
                buf[..n].to_vec()
            });
            greenrt::yield_now();
            sender.send_to(b"to the group", (group, port)).unwrap();
            assert_eq!(receiver.join().unwrap(), b"to the group");
        });
    });
}

#[test]
fn udp_connect_filters_and_unconnected_peer_addr_is_not_connected() {
    with_watchdog("udp connect", LIMIT, || {
        let rt = runtime(2);
        rt.run(|| {
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").unwrap();
            let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
            assert_eq!(a.peer_addr().unwrap_err().kind(), ErrorKind::NotConnected);
            a.connect(b.local_addr().unwrap()).unwrap();
            assert_eq!(a.peer_addr().unwrap(), b.local_addr().unwrap());
            stranger.send_to(b"noise", a.local_addr().unwrap()).unwrap();
            // A green receiver waits; only b's datagram gets through.
            let a = Arc::new(a);
            let rx = {
                let a = a.clone();
                greenrt::spawn(move || {
                    let mut buf = [0; 16];
                    let n = a.recv(&mut buf).unwrap();
                    buf[..n].to_vec()
                })
            };
            greenrt::sleep(Duration::from_millis(20));
            b.send_to(b"signal", a.local_addr().unwrap()).unwrap();
            assert_eq!(rx.join().unwrap(), b"signal");
            // send without connect is an error, like std.
            assert!(stranger.send(b"x").is_err());
        });
    });
}

// ---------------------------------------------------------------- Unix sockets

#[test]
fn unix_addresses_named_unnamed_and_abstract() {
    use std::os::linux::net::SocketAddrExt;
    with_watchdog("unix addrs", LIMIT, || {
        let rt = runtime(2);
        rt.run(|| {
            let (a, b) = UnixStream::pair().unwrap();
            assert!(a.local_addr().unwrap().is_unnamed());
            assert!(b.peer_addr().unwrap().is_unnamed());

            let path = tmp_path("named");
            let l = UnixListener::bind(&path).unwrap();
            assert_eq!(l.local_addr().unwrap().as_pathname(), Some(path.as_path()));
            let p2 = path.clone();
            let client = greenrt::spawn(move || {
                let s = UnixStream::connect(&p2).unwrap();
                assert_eq!(s.peer_addr().unwrap().as_pathname(), Some(p2.as_path()));
                (&s).write_all(b"named").unwrap();
            });
            let (mut conn, peer) = l.accept().unwrap();
            assert!(peer.is_unnamed());
            let mut buf = [0; 5];
            conn.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"named");
            client.join().unwrap();
            // Binding the same path again fails like std.
            assert_eq!(
                UnixListener::bind(&path).unwrap_err().kind(),
                ErrorKind::AddrInUse
            );
            let _ = std::fs::remove_file(&path);

            // Abstract names, through the std types and From.
            let name = format!("greenrt-net-api-{}", std::process::id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let l = UnixListener::from(std::os::unix::net::UnixListener::bind_addr(&addr).unwrap());
            assert_eq!(
                l.local_addr().unwrap().as_abstract_name(),
                Some(name.as_bytes())
            );
            let addr2 = addr.clone();
            let client = greenrt::spawn(move || {
                let std_s = std::os::unix::net::UnixStream::connect_addr(&addr2).unwrap();
                let s: UnixStream = std_s.into();
                (&s).write_all(b"abstract").unwrap();
            });
            let (conn, _) = l.accept().unwrap();
            let mut buf = [0; 8];
            (&conn).read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"abstract");
            client.join().unwrap();
        });
    });
}

#[test]
fn unix_bind_errors_match_std() {
    with_watchdog("unix errors", LIMIT, || {
        let long = std::env::temp_dir().join("x".repeat(200));
        let ours = UnixListener::bind(&long).unwrap_err();
        let std_err = std::os::unix::net::UnixListener::bind(&long).unwrap_err();
        assert_eq!(ours.kind(), std_err.kind(), "ours: {ours}; std: {std_err}");
        let ours = UnixStream::connect(&long).unwrap_err();
        let std_err = std::os::unix::net::UnixStream::connect(&long).unwrap_err();
        assert_eq!(ours.kind(), std_err.kind(), "ours: {ours}; std: {std_err}");
        let missing = tmp_path("missing");
        runtime(1).run(move || {
            let e = UnixStream::connect(&missing).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotFound);
            let e = UnixStream::connect(&long).unwrap_err();
            assert_eq!(e.kind(), std_err.kind(), "green: {e}");
        });
    });
}

#[test]
fn unix_conversions_and_raw_fds() {
    with_watchdog("unix conv", LIMIT, || {
        let path = tmp_path("conv");
        let std_l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let fd = std_l.as_raw_fd();
        let l: UnixListener = std_l.into();
        assert_eq!(l.as_raw_fd(), fd);
        let rt = runtime(1);
        let p2 = path.clone();
        rt.run(move || {
            let c = greenrt::spawn(move || UnixStream::connect(&p2).unwrap());
            let (conn, _) = l.accept().unwrap();
            let c = c.join().unwrap();
            let cfd = c.as_raw_fd();
            let mut std_c: std::os::unix::net::UnixStream = c.into();
            assert_eq!(std_c.as_raw_fd(), cfd);
            std_c.write_all(b"std").unwrap();
            let mut buf = [0; 3];
            (&conn).read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"std");
            let back: std::os::unix::net::UnixListener = l.into();
            assert_eq!(back.as_raw_fd(), fd);
        });
        let _ = std::fs::remove_file(&path);
    });
}

// ---------------------------------------------------------------- TCP bulk, green + async

#[test]
fn one_green_thread_reads_while_another_writes_a_megabyte_on_one_tcp_stream() {
    with_watchdog("bulk duplex", LIMIT, || {
        let rt = runtime(2);
        rt.run(|| {
            let (c, s) = tcp_pair();
            // Echo peer.
            let echo = greenrt::spawn(move || {
                let mut s = s;
                let mut buf = [0; 4096];
                loop {
                    let n = s.read(&mut buf).unwrap();
                    if n == 0 {
                        return;
                    }
                    s.write_all(&buf[..n]).unwrap();
                }
            });
            const LEN: usize = 1 << 20;
            let data: Arc<Vec<u8>> = Arc::new((0..LEN).map(|i| (i * 7 % 251) as u8).collect());
            let c = Arc::new(c);
            let writer = {
                let (c, data) = (c.clone(), data.clone());
                greenrt::spawn(move || {
                    (&*c).write_all(&data).unwrap();
                    c.shutdown(Shutdown::Write).unwrap();
                })
            };
            let mut got = Vec::with_capacity(LEN);
            (&*c).read_to_end(&mut got).unwrap();
            writer.join().unwrap();
            echo.join().unwrap();
            assert!(got == *data, "echoed bytes differ");
        });
    });
}

#[test]
fn async_tasks_read_and_write_halves_of_one_stream() {
    with_watchdog("async duplex", LIMIT, || {
        let rt = runtime(2);
        rt.block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let server = greenrt::spawn(move || {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).unwrap();
                s.write_all(&buf).unwrap();
            });
            let c = Arc::new(TcpStream::connect_async(addr).await.unwrap());
            let w = {
                let c = c.clone();
                greenrt::spawn_async(async move {
                    let mut w: &TcpStream = &c;
                    futures::io::AsyncWriteExt::write_all(&mut w, &[9u8; 100_000])
                        .await
                        .unwrap();
                    futures::io::AsyncWriteExt::close(&mut w).await.unwrap();
                })
            };
            let mut r: &TcpStream = &c;
            let mut got = Vec::new();
            futures::io::AsyncReadExt::read_to_end(&mut r, &mut got)
                .await
                .unwrap();
            w.await.unwrap();
            server.await.unwrap();
            assert_eq!(got.len(), 100_000);
            assert!(got.iter().all(|&b| b == 9));
        });
    });
}

/// `Runtime::block_on` enters the runtime, so a socket first waited on inside it
/// registers with that runtime: dropping another runtime does not affect it, and a green
/// thread of the same runtime can use it afterwards.
#[test]
fn block_on_registers_sockets_with_its_own_runtime() {
    with_watchdog("block_on reactor", LIMIT, || {
        let rt1 = runtime(1);
        let rt2 = runtime(1);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"one").unwrap();
            let mut buf = [0; 3];
            s.read_exact(&mut buf).unwrap();
            s.write_all(b"two").unwrap();
            buf
        });
        let (conn, _) = rt2.block_on(l.accept_async()).unwrap();
        drop(rt1);
        let conn = rt2.block_on(async move {
            let mut buf = [0; 3];
            futures::io::AsyncReadExt::read_exact(&mut &conn, &mut buf)
                .await
                .unwrap();
            assert_eq!(&buf, b"one");
            conn
        });
        let conn = rt2
            .spawn(move || {
                (&conn).write_all(b"ack").unwrap();
                let mut buf = [0; 3];
                (&conn).read_exact(&mut buf).unwrap();
                buf
            })
            .join()
            .unwrap();
        assert_eq!(&conn, b"two");
        assert_eq!(&client.join().unwrap(), b"ack");
    });
}

#[test]
fn accept_async_cancelled_by_timeout_then_accept_again() {
    with_watchdog("timeout accept", LIMIT, || {
        let rt = runtime(2);
        rt.block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let r = greenrt::time::timeout(Duration::from_millis(30), l.accept_async()).await;
            let elapsed: greenrt::time::Elapsed = r.unwrap_err();
            assert!(!elapsed.to_string().is_empty());
            let as_io: std::io::Error = elapsed.into();
            assert_eq!(as_io.kind(), ErrorKind::TimedOut);
            let u = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut buf = [0; 4];
            assert!(
                greenrt::time::timeout(Duration::from_millis(20), u.recv_from_async(&mut buf))
                    .await
                    .is_err()
            );
            // After the cancelled waits, a real connection and datagram are seen.
            let client = greenrt::spawn(move || TcpStream::connect(addr).unwrap());
            let (s, peer) = l.accept_async().await.unwrap();
            assert_eq!(s.peer_addr().unwrap(), peer);
            client.await.unwrap();
            let from = UdpSocket::bind("127.0.0.1:0").unwrap();
            from.send_to(b"dg", u.local_addr().unwrap()).unwrap();
            let (n, _) = u.recv_from_async(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"dg");
        });
    });
}

#[test]
fn futures_io_traits_are_the_ones_implemented() {
    fn is_async_read<T: futures::io::AsyncRead + Unpin>() {}
    fn is_async_write<T: futures::io::AsyncWrite + Unpin>() {}
    fn is_send_sync<T: Send + Sync>() {}
    is_async_read::<TcpStream>();
    is_async_write::<TcpStream>();
    is_async_read::<&TcpStream>();
    is_async_write::<&TcpStream>();
    is_async_read::<UnixStream>();
    is_async_write::<UnixStream>();
    is_async_read::<&UnixStream>();
    is_async_write::<&UnixStream>();
    is_send_sync::<TcpStream>();
    is_send_sync::<TcpListener>();
    is_send_sync::<UdpSocket>();
    is_send_sync::<UnixStream>();
    is_send_sync::<UnixListener>();
    fn is_read_write<T: Read + Write>() {}
    is_read_write::<TcpStream>();
    is_read_write::<&TcpStream>();
    is_read_write::<UnixStream>();
    is_read_write::<&UnixStream>();
    fn raw<T: AsRawFd>() {}
    raw::<TcpStream>();
    raw::<TcpListener>();
    raw::<UdpSocket>();
    raw::<UnixStream>();
    raw::<UnixListener>();
    fn from_into<G: From<S>, S: From<G>>() {}
    from_into::<TcpStream, std::net::TcpStream>();
    from_into::<TcpListener, std::net::TcpListener>();
    from_into::<UdpSocket, std::net::UdpSocket>();
    from_into::<UnixStream, std::os::unix::net::UnixStream>();
    from_into::<UnixListener, std::os::unix::net::UnixListener>();
    // Timer futures can go into spawned tasks.
    fn is_send<T: Send>(_: &T) {}
    is_send(&greenrt::time::sleep(Duration::ZERO));
    is_send(&greenrt::time::timeout(Duration::ZERO, async {}));
    is_send(&greenrt::time::interval(Duration::from_secs(1)));
}

#[test]
fn std_conversion_keeps_the_connection_usable_both_ways() {
    with_watchdog("std conv", LIMIT, || {
        let rt = runtime(1);
        rt.run(|| {
            let (c, s) = tcp_pair();
            // To std: blocking again.
            let mut std_c: std::net::TcpStream = c.into();
            std_c
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let e = std_c.read(&mut [0; 1]).unwrap_err();
            assert!(matches!(
                e.kind(),
                ErrorKind::WouldBlock | ErrorKind::TimedOut
            ));
            // Back: suspends only this green thread again (with no timeout: the std
            // stream's timeout would carry over).
            std_c.set_read_timeout(None).unwrap();
            let c = TcpStream::from(std_c);
            let w = greenrt::spawn(move || {
                greenrt::sleep(Duration::from_millis(20));
                (&s).write_all(b"z").unwrap();
                s
            });
            let mut b = [0; 1];
            (&c).read_exact(&mut b).unwrap();
            w.join().unwrap();
        });
    });
}

// ---------------------------------------------------------------- timers

#[test]
fn timers_async_and_green() {
    with_watchdog("timers", LIMIT, || {
        let rt = runtime(2);
        rt.block_on(async {
            let start = Instant::now();
            greenrt::time::sleep(Duration::from_millis(20)).await;
            assert!(start.elapsed() >= Duration::from_millis(20));
            let deadline = Instant::now() + Duration::from_millis(20);
            greenrt::time::sleep_until(deadline).await;
            assert!(Instant::now() >= deadline);
            // A deadline in the past completes at once.
            greenrt::time::sleep_until(Instant::now() - Duration::from_secs(1)).await;
            greenrt::time::sleep(Duration::ZERO).await;
            assert_eq!(
                greenrt::time::timeout(Duration::ZERO, async { 7 }).await,
                Ok(7)
            );
            let err =
                greenrt::time::timeout(Duration::from_millis(10), futures::future::pending::<()>())
                    .await
                    .unwrap_err();
            let _: &dyn std::error::Error = &err;

            // Interval: first tick at once, then one per period, scheduled instants.
            let period = Duration::from_millis(15);
            let start = Instant::now();
            let mut iv = greenrt::time::interval(period);
            assert_eq!(iv.period(), period);
            let t0 = iv.tick().await;
            let t1 = iv.tick().await;
            let t2 = iv.tick().await;
            assert_eq!(t1 - t0, period);
            assert_eq!(t2 - t1, period);
            assert!(start.elapsed() >= 2 * period);
            assert!(Instant::now() >= t2);
        });
        rt.run(|| {
            let start = Instant::now();
            greenrt::sleep(Duration::from_millis(20));
            assert!(start.elapsed() >= Duration::from_millis(20));
            // Async timers from a green thread, through greenrt::block_on.
            greenrt::block_on(greenrt::time::sleep(Duration::from_millis(5)));
            let r = greenrt::block_on(greenrt::time::timeout(
                Duration::from_millis(10),
                greenrt::time::sleep(Duration::from_secs(60)),
            ));
            assert!(r.is_err());
            let mut iv = greenrt::time::interval(Duration::from_millis(5));
            for _ in 0..3 {
                greenrt::block_on(iv.tick());
            }
            assert!(start.elapsed() >= Duration::from_millis(35));
        });
        // Plain thread: greenrt::sleep is a thread sleep.
        let start = Instant::now();
        greenrt::sleep(Duration::from_millis(10));
        assert!(start.elapsed() >= Duration::from_millis(10));
    });
}

#[test]
fn many_concurrent_timeouts_of_green_reads_all_fire() {
    with_watchdog("many timeouts", LIMIT, || {
        let rt = runtime(2);
        rt.run(|| {
            let handles: Vec<_> = (0..200)
                .map(|i| {
                    greenrt::spawn(move || {
                        let (a, _b) = UnixStream::pair().unwrap();
                        let d = Duration::from_millis(20 + (i % 10) as u64 * 5);
                        a.set_read_timeout(Some(d)).unwrap();
                        let start = Instant::now();
                        let e = (&a).read(&mut [0; 1]).unwrap_err();
                        assert_eq!(e.kind(), ErrorKind::TimedOut);
                        assert!(start.elapsed() >= d);
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
        });
    });
}

// ---------------------------------------------------------------- blocking pool

#[test]
fn unblock_panics_propagate_with_their_payload() {
    with_watchdog("unblock panic", LIMIT, || {
        let rt = runtime(1);
        rt.run(|| {
            let r = std::panic::catch_unwind(|| greenrt::unblock(|| -> u32 { panic!("boom") }));
            let payload = r.unwrap_err();
            assert_eq!(panic_message(&*payload), "boom");
            // A green thread whose unblock job panicked reports it through join.
            let h = greenrt::spawn(|| greenrt::unblock(|| std::panic::panic_any(42u32)));
            let payload = h.join().unwrap_err();
            assert_eq!(payload.downcast_ref::<u32>(), Some(&42));
            // spawn_blocking: join() from a green thread gives the payload.
            let h = greenrt::spawn_blocking(|| -> () { panic!("sb boom") });
            assert_eq!(panic_message(&*h.join().unwrap_err()), "sb boom");
            // The pool still works.
            assert_eq!(greenrt::unblock(|| 5), 5);
        });
        rt.block_on(async {
            let payload = greenrt::spawn_blocking(|| -> () { panic!("async boom") })
                .await
                .unwrap_err();
            assert_eq!(panic_message(&*payload), "async boom");
        });
    });
}

#[test]
fn unblock_runs_on_a_pool_thread_and_reads_files() {
    with_watchdog("unblock fs", LIMIT, || {
        let rt = runtime(1);
        let path =
            std::env::temp_dir().join(format!("greenrt-net-api-file-{}", std::process::id()));
        std::fs::write(&path, b"contents").unwrap();
        let p = path.clone();
        rt.run(move || {
            let me = std::thread::current().id();
            let (data, there) =
                greenrt::unblock(move || (std::fs::read(&p), std::thread::current().id()));
            assert_eq!(data.unwrap(), b"contents");
            assert_ne!(there, me);
            // Many at once, from many green threads.
            let hs: Vec<_> = (0..50)
                .map(|i| greenrt::spawn(move || greenrt::unblock(move || i * 2)))
                .collect();
            let sum: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
            assert_eq!(sum, (0..50).map(|i| i * 2).sum());
        });
        // spawn_blocking from a plain thread inside block_on, joined after (the handle
        // leaves the block on purpose).
        #[allow(clippy::async_yields_async)]
        let h = rt.block_on(async { greenrt::spawn_blocking(|| 3) });
        assert_eq!(h.join().unwrap(), 3);
        let _ = std::fs::remove_file(&path);
    });
}

#[test]
fn max_blocking_threads_one_runs_spawn_blocking_jobs_one_at_a_time() {
    with_watchdog("pool of one", LIMIT, || {
        let rt = greenrt::runtime::Builder::new()
            .worker_threads(2)
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        rt.block_on(async {
            let hs: Vec<_> = (0..6)
                .map(|_| {
                    let (running, most) = (running.clone(), most.clone());
                    greenrt::spawn_blocking(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(5));
                        running.fetch_sub(1, Ordering::SeqCst);
                        std::thread::current().id()
                    })
                })
                .collect();
            let mut ids = Vec::new();
            for h in hs {
                ids.push(h.await.unwrap());
            }
            ids.dedup();
            assert_eq!(ids.len(), 1, "one pool thread ran them all");
        });
        assert_eq!(most.load(Ordering::SeqCst), 1);
    });
}

/// Beyond the issue (tokio behaves alike): the `_async` methods driven by another
/// executor on a plain thread, with no greenrt runtime, end with an error that names
/// the way out (instead of hanging); the blocking-style methods work there.
#[test]
fn async_methods_on_a_plain_thread_without_a_runtime() {
    with_watchdog("async no runtime", LIMIT, || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = futures::executor::block_on(l.accept_async()).unwrap_err();
        assert!(e.to_string().contains("runtime"), "{e}");
        let t = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            s.write_all(b"x").unwrap();
            (l, s)
        });
        let (l, _s) = t.join().unwrap();
        // Ready at once: the async form completes without waiting.
        let (mut conn, _) = futures::executor::block_on(l.accept_async()).unwrap();
        let mut b = [0; 1];
        futures::executor::block_on(futures::io::AsyncReadExt::read_exact(&mut conn, &mut b))
            .unwrap();
        assert_eq!(&b, b"x");
    });
}

#[test]
fn async_methods_from_green_threads_through_block_on() {
    with_watchdog("async in green", LIMIT, || {
        runtime(2).run(|| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let c = greenrt::spawn(move || {
                greenrt::block_on(TcpStream::connect_async(format!(
                    "localhost:{}",
                    addr.port()
                )))
                .unwrap()
            });
            let (s, _) = greenrt::block_on(l.accept_async()).unwrap();
            let c = c.join().unwrap();
            (&c).write_all(b"q").unwrap();
            let mut b = [0; 1];
            greenrt::block_on(futures::io::AsyncReadExt::read_exact(&mut &s, &mut b)).unwrap();
            let u = UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = u.local_addr().unwrap().port();
            // A name in blocking-style send_to from a green thread.
            u.send_to(b"self", format!("localhost:{port}")).unwrap();
            let mut buf = [0; 8];
            let (n, _) = greenrt::block_on(u.recv_from_async(&mut buf)).unwrap();
            assert_eq!(&buf[..n], b"self");
        });
    });
}

#[test]
fn an_aborted_green_reader_leaves_the_stream_usable() {
    with_watchdog("abort reader", LIMIT, || {
        runtime(2).run(|| {
            let (c, s) = tcp_pair();
            let c = Arc::new(c);
            let doomed = {
                let c = c.clone();
                greenrt::spawn(move || (&*c).read(&mut [0; 4]).map(|_| ()))
            };
            greenrt::sleep(Duration::from_millis(30));
            doomed.abort();
            assert!(doomed.join().is_err());
            let reader = {
                let c = c.clone();
                greenrt::spawn(move || {
                    let mut b = [0; 2];
                    (&*c).read_exact(&mut b).unwrap();
                    b
                })
            };
            greenrt::sleep(Duration::from_millis(10));
            (&s).write_all(b"ok").unwrap();
            assert_eq!(&reader.join().unwrap(), b"ok");
        });
    });
}

#[test]
fn duration_max_read_timeout_means_forever() {
    fn check() {
        let (c, s) = tcp_pair();
        c.set_read_timeout(Some(Duration::MAX)).unwrap();
        c.set_write_timeout(Some(Duration::MAX)).unwrap();
        let w = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            (&s).write_all(b"m").unwrap();
            s
        });
        let mut b = [0; 1];
        (&c).read_exact(&mut b).unwrap();
        (&c).write_all(b"n").unwrap();
        w.join().unwrap();
    }
    with_watchdog("max timeout", LIMIT, || {
        check();
        runtime(1).run(check);
    });
}

#[test]
fn bind_and_send_errors_match_std() {
    with_watchdog("errors", LIMIT, || {
        runtime(1).run(|| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let ours = TcpListener::bind(addr).unwrap_err();
            let std_err = std::net::TcpListener::bind(addr).unwrap_err();
            assert_eq!(ours.kind(), std_err.kind());
            assert_eq!(ours.kind(), ErrorKind::AddrInUse);
            let u = UdpSocket::bind("127.0.0.1:0").unwrap();
            let to = u.local_addr().unwrap();
            let big = vec![0u8; 70_000];
            let ours = u.send_to(&big, to).unwrap_err();
            let su = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let std_err = su.send_to(&big, to).unwrap_err();
            assert_eq!(ours.kind(), std_err.kind(), "ours {ours}, std {std_err}");
        });
    });
}

/// Conversions "from/to the std types": a timeout set on one side of the conversion.
#[test]
fn conversions_keep_read_timeouts() {
    with_watchdog("conv timeouts", LIMIT, || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let std_c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let _s = l.accept().unwrap();
        std_c
            .set_read_timeout(Some(Duration::from_millis(40)))
            .unwrap();
        let c = TcpStream::from(std_c);
        assert_eq!(
            c.read_timeout().unwrap(),
            Some(Duration::from_millis(40)),
            "from std"
        );
        c.set_read_timeout(Some(Duration::from_millis(60))).unwrap();
        let back: std::net::TcpStream = c.into();
        assert_eq!(
            back.read_timeout().unwrap(),
            Some(Duration::from_millis(60)),
            "into std"
        );
    });
}

#[test]
fn a_socket_registered_with_one_runtime_serves_a_green_thread_of_another() {
    with_watchdog("cross rt", LIMIT, || {
        let rt1 = runtime(1);
        let rt2 = runtime(1);
        let (c, s) = tcp_pair();
        let c = Arc::new(c);
        // First waited on in rt1.
        let c1 = c.clone();
        let h = rt1.spawn(move || {
            let mut b = [0; 1];
            (&*c1).read_exact(&mut b).unwrap();
        });
        std::thread::sleep(Duration::from_millis(20));
        (&s).write_all(b"1").unwrap();
        h.join().unwrap();
        // Now a green thread of rt2 waits on it while rt1 is idle.
        let c2 = c.clone();
        let h = rt2.spawn(move || {
            let mut b = [0; 1];
            (&*c2).read_exact(&mut b).unwrap();
            b
        });
        std::thread::sleep(Duration::from_millis(20));
        (&s).write_all(b"2").unwrap();
        assert_eq!(&h.join().unwrap(), b"2");
        // rt2 drops first; then rt1 drops; a plain thread can still use it.
        drop(rt2);
        drop(rt1);
        (&s).write_all(b"3").unwrap();
        let mut b = [0; 1];
        (&*c).read_exact(&mut b).unwrap();
        assert_eq!(&b, b"3");
    });
}

#[test]
fn concurrent_async_accepts_and_recvs_on_one_socket_all_complete() {
    with_watchdog("concurrent async waits", LIMIT, || {
        let rt = runtime(2);
        rt.block_on(async {
            let l = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
            let addr = l.local_addr().unwrap();
            let accepts: Vec<_> = (0..4)
                .map(|_| {
                    let l = l.clone();
                    greenrt::spawn_async(async move { l.accept_async().await.unwrap().0 })
                })
                .collect();
            greenrt::time::sleep(Duration::from_millis(20)).await;
            let mut clients = Vec::new();
            for _ in 0..4 {
                clients.push(TcpStream::connect_async(addr).await.unwrap());
            }
            for a in accepts {
                a.await.unwrap();
            }
            let u = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
            let to = u.local_addr().unwrap();
            let recvs: Vec<_> = (0..4)
                .map(|_| {
                    let u = u.clone();
                    greenrt::spawn_async(async move {
                        let mut b = [0; 1];
                        u.recv_from_async(&mut b).await.unwrap();
                        b[0]
                    })
                })
                .collect();
            greenrt::time::sleep(Duration::from_millis(20)).await;
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            for i in 0..4u8 {
                s.send_to_async(&[i], to).await.unwrap();
            }
            let mut got = Vec::new();
            for r in recvs {
                got.push(r.await.unwrap());
            }
            got.sort();
            assert_eq!(got, vec![0, 1, 2, 3]);
        });
    });
}

#[test]
fn block_on_of_another_runtime_inside_a_green_thread_does_not_hang() {
    with_watchdog("nested block_on", LIMIT, || {
        let rt1 = runtime(1);
        let rt2 = Arc::new(runtime(1));
        let r = rt1.run(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rt2.block_on(async {
                    let l = TcpListener::bind("127.0.0.1:0").unwrap();
                    let addr = l.local_addr().unwrap();
                    let c = greenrt::spawn(move || TcpStream::connect(addr).unwrap());
                    l.accept_async().await.unwrap();
                    c.await.unwrap();
                    greenrt::time::sleep(Duration::from_millis(5)).await;
                })
            }))
            .map_err(|p| panic_message(&*p))
        });
        // Like tokio: refused with a panic that says why, not a hang.
        assert!(r.unwrap_err().contains("block_on"));
    });
}

#[greenrt::test(worker_threads = 2)]
async fn macro_async_test_udp_and_tcp_round_trip() {
    let a = UdpSocket::bind("localhost:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.send_to_async(b"ping", b.local_addr().unwrap())
        .await
        .unwrap();
    let mut buf = [0; 8];
    let (n, from) = b.recv_from_async(&mut buf).await.unwrap();
    assert_eq!((&buf[..n], from), (&b"ping"[..], a.local_addr().unwrap()));
    let l = TcpListener::bind("localhost:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = greenrt::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut b = [0; 4];
        s.read_exact(&mut b).unwrap();
        s.write_all(&b).unwrap();
    });
    let mut c = TcpStream::connect_async(addr).await.unwrap();
    futures::io::AsyncWriteExt::write_all(&mut c, b"echo")
        .await
        .unwrap();
    let mut b = [0; 4];
    futures::io::AsyncReadExt::read_exact(&mut c, &mut b)
        .await
        .unwrap();
    assert_eq!(&b, b"echo");
    server.await.unwrap();
    let n = greenrt::spawn_blocking(|| 2 + 2).await.unwrap();
    assert_eq!(n, 4);
}

#[greenrt::test(worker_threads = 1)]
fn macro_green_test_read_timeout_fires() {
    let (mut c, _s) = tcp_pair();
    c.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
    let start = Instant::now();
    assert_eq!(c.read(&mut [0; 1]).unwrap_err().kind(), ErrorKind::TimedOut);
    assert!(start.elapsed() >= Duration::from_millis(30));
}

#[test]
fn a_hundred_thousand_pending_timers() {
    with_watchdog("many timers", Duration::from_secs(120), || {
        let rt = runtime(2);
        rt.block_on(async {
            use futures::stream::StreamExt;
            let start = Instant::now();
            let mut all: futures::stream::FuturesUnordered<_> = (0..100_000u64)
                .map(|i| greenrt::time::sleep(Duration::from_millis(50 + i % 200)))
                .collect();
            let mut n = 0;
            while all.next().await.is_some() {
                n += 1;
            }
            assert_eq!(n, 100_000);
            assert!(start.elapsed() >= Duration::from_millis(50));
            // And as many cancelled ones.
            let cancelled: Vec<_> = (0..100_000u64)
                .map(|i| greenrt::time::timeout(Duration::from_secs(60 + i), async move { i }))
                .collect();
            let mut sum = 0;
            for t in cancelled {
                sum += t.await.unwrap();
            }
            assert_eq!(sum, (0..100_000u64).sum());
        });
    });
}

#[test]
fn default_blocking_pool_is_bounded_at_512() {
    with_watchdog("pool 512", Duration::from_secs(120), || {
        let rt = runtime(2);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        rt.block_on(async {
            let hs: Vec<_> = (0..600)
                .map(|_| {
                    let (running, most) = (running.clone(), most.clone());
                    greenrt::spawn_blocking(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(500));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                })
                .collect();
            for h in hs {
                h.await.unwrap();
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 512);
    });
}

/// std on Linux: a writer blocked on a full send buffer fails (EPIPE) when the socket's
/// write half is shut down from another thread. Green and plain alike: no hang.
#[test]
fn shutdown_write_wakes_a_blocked_writer_of_the_same_stream() {
    fn fill_and_block(c: Arc<TcpStream>) -> std::io::Error {
        let chunk = vec![5u8; 1 << 16];
        loop {
            if let Err(e) = (&*c).write(&chunk) {
                return e;
            }
        }
    }
    with_watchdog("shutdown write wakes", LIMIT, || {
        runtime(2).run(|| {
            let (c, _s) = tcp_pair();
            let c = Arc::new(c);
            let writer = {
                let c = c.clone();
                greenrt::spawn(move || fill_and_block(c))
            };
            greenrt::sleep(Duration::from_millis(100)); // buffers full, writer waiting
            c.shutdown(Shutdown::Write).unwrap();
            let e = writer.join().unwrap();
            assert_eq!(e.kind(), ErrorKind::BrokenPipe, "{e}");
        });
        let (c, _s) = tcp_pair();
        let c = Arc::new(c);
        let writer = {
            let c = c.clone();
            std::thread::spawn(move || fill_and_block(c))
        };
        std::thread::sleep(Duration::from_millis(100));
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(writer.join().unwrap().kind(), ErrorKind::BrokenPipe);
    });
}

#[test]
fn writing_to_a_closed_peer_errors_instead_of_hanging() {
    with_watchdog("write closed peer", LIMIT, || {
        runtime(2).run(|| {
            let (mut c, s) = tcp_pair();
            drop(s);
            greenrt::sleep(Duration::from_millis(20));
            let e = loop {
                if let Err(e) = c.write(&[1u8; 1024]) {
                    break e;
                }
                greenrt::sleep(Duration::from_millis(5));
            };
            assert!(
                matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
                "{e}"
            );
            let (mut a, b) = UnixStream::pair().unwrap();
            drop(b);
            assert_eq!(a.write(b"x").unwrap_err().kind(), ErrorKind::BrokenPipe);
        });
    });
}

#[test]
fn ipv6_loopback_where_available() {
    with_watchdog("ipv6", LIMIT, || {
        if std::net::TcpListener::bind("[::1]:0").is_err() {
            eprintln!("no IPv6 loopback here; skipped");
            return;
        }
        runtime(1).run(|| {
            let l = TcpListener::bind("[::1]:0").unwrap();
            let addr = l.local_addr().unwrap();
            assert!(addr.is_ipv6());
            let c = greenrt::spawn(move || TcpStream::connect(addr).unwrap());
            let (s, peer) = l.accept().unwrap();
            assert!(peer.is_ipv6());
            drop((s, c.join().unwrap()));
            let u = UdpSocket::bind((std::net::Ipv6Addr::LOCALHOST, 0)).unwrap();
            u.send_to(b"6", u.local_addr().unwrap()).unwrap();
            let mut b = [0; 1];
            assert_eq!(u.recv_from(&mut b).unwrap().0, 1);
        });
    });
}

#[test]
fn unix_paths_with_nul_bytes_are_rejected_like_std() {
    let green_and_plain = || {
        for p in [
            format!("\0greenrt-net-api-nul-{}", std::process::id()),
            "/tmp/a\0b".to_string(),
        ] {
            let ours = UnixListener::bind(&p).unwrap_err();
            let std_e = std::os::unix::net::UnixListener::bind(&p).unwrap_err();
            assert_eq!(ours.kind(), std_e.kind());
            let ours = UnixStream::connect(&p).unwrap_err();
            assert_eq!(ours.kind(), ErrorKind::InvalidInput);
        }
    };
    green_and_plain();
    runtime(1).run(green_and_plain);
}

/// "Addresses given as names are resolved on the blocking pool, never with getaddrinfo
/// on a worker": with a pool of one thread held busy, a name lookup from a green thread
/// (and from async code) waits for the pool while the only worker keeps running.
#[test]
fn name_lookups_go_through_the_blocking_pool() {
    with_watchdog("lookup on pool", LIMIT, || {
        let rt = greenrt::runtime::Builder::new()
            .worker_threads(1)
            .max_blocking_threads(1)
            .build()
            .unwrap();
        rt.run(|| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
            let (busy_tx, busy_rx) = futures::channel::oneshot::channel::<()>();
            let holder = greenrt::spawn(move || {
                greenrt::unblock(move || {
                    busy_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                })
            });
            greenrt::block_on(busy_rx).unwrap();
            let done = Arc::new(AtomicUsize::new(0));
            let green = {
                let done = done.clone();
                greenrt::spawn(move || {
                    let s = TcpStream::connect(format!("localhost:{port}")).unwrap();
                    done.fetch_add(1, Ordering::SeqCst);
                    s
                })
            };
            let task = {
                let done = done.clone();
                greenrt::spawn_async(async move {
                    let s = TcpStream::connect_async(("localhost", port)).await.unwrap();
                    done.fetch_add(1, Ordering::SeqCst);
                    s
                })
            };
            // The lookups wait for the busy pool; this green thread runs meanwhile.
            greenrt::sleep(Duration::from_millis(100));
            assert_eq!(
                done.load(Ordering::SeqCst),
                0,
                "a lookup did not use the pool"
            );
            release_tx.send(()).unwrap();
            holder.join().unwrap();
            green.join().unwrap();
            task.join().unwrap();
            assert_eq!(done.load(Ordering::SeqCst), 2);
            drop(l);
        });
    });
}

#[test]
fn spawn_blocking_leaves_the_only_worker_free_for_other_tasks() {
    with_watchdog("spawn_blocking frees worker", LIMIT, || {
        let rt = runtime(1);
        rt.block_on(rt.spawn_async(async {
            let (tx, rx) = std::sync::mpsc::channel::<u32>();
            let job = greenrt::spawn_blocking(move || rx.recv().unwrap() * 2);
            let other = greenrt::spawn_async(async move {
                greenrt::time::sleep(Duration::from_millis(10)).await;
                tx.send(21).unwrap();
            });
            let g = greenrt::spawn(|| {
                greenrt::sleep(Duration::from_millis(5));
                7
            });
            assert_eq!(job.await.unwrap(), 42);
            other.await.unwrap();
            assert_eq!(g.await.unwrap(), 7);
        }))
        .unwrap();
    });
}

/// Many small ping-pongs over shared `&TcpStream`s, with the reader and the writer of
/// each end in different green threads, plus async peers: a lost readiness wake hangs.
#[test]
fn many_split_ping_pongs_between_green_threads_and_tasks() {
    with_watchdog("ping-pong", Duration::from_secs(120), || {
        let rt = runtime(2);
        rt.run(|| {
            const PAIRS: usize = 100;
            const ROUNDS: usize = 200;
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let mut handles = Vec::new();
            for i in 0..PAIRS {
                let c = Arc::new(TcpStream::connect(addr).unwrap());
                let s = Arc::new(l.accept().unwrap().0);
                // Server end: async echo for odd pairs, green echo for even ones.
                if i % 2 == 1 {
                    handles.push(greenrt::spawn_async(async move {
                        let mut b = [0u8; 1];
                        for _ in 0..ROUNDS {
                            futures::io::AsyncReadExt::read_exact(&mut &*s, &mut b)
                                .await
                                .unwrap();
                            futures::io::AsyncWriteExt::write_all(&mut &*s, &b)
                                .await
                                .unwrap();
                        }
                    }));
                } else {
                    handles.push(greenrt::spawn(move || {
                        let mut b = [0u8; 1];
                        for _ in 0..ROUNDS {
                            (&*s).read_exact(&mut b).unwrap();
                            (&*s).write_all(&b).unwrap();
                        }
                    }));
                }
                // Client end: a writer and a reader green thread, in lock step via a
                // channel so that each round trip is one byte.
                let (tx, rx) = std::sync::mpsc::sync_channel::<u8>(1);
                let (ack_tx, ack_rx) = std::sync::mpsc::sync_channel::<()>(1);
                let w = c.clone();
                handles.push(greenrt::spawn(move || {
                    for r in 0..ROUNDS {
                        let byte = (r % 251) as u8;
                        (&*w).write_all(&[byte]).unwrap();
                        tx.send(byte).unwrap();
                        // Wait for the reader without blocking the worker.
                        loop {
                            match ack_rx.try_recv() {
                                Ok(()) => break,
                                Err(std::sync::mpsc::TryRecvError::Empty) => greenrt::yield_now(),
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                }));
                handles.push(greenrt::spawn(move || {
                    let mut b = [0u8; 1];
                    for _ in 0..ROUNDS {
                        (&*c).read_exact(&mut b).unwrap();
                        let want = loop {
                            match rx.try_recv() {
                                Ok(v) => break v,
                                Err(std::sync::mpsc::TryRecvError::Empty) => greenrt::yield_now(),
                                Err(e) => panic!("{e}"),
                            }
                        };
                        assert_eq!(b[0], want);
                        ack_tx.send(()).unwrap();
                    }
                }));
            }
            for h in handles {
                h.join().unwrap();
            }
        });
    });
}

/// The peer resets the connection (closed with unread data) while a green writer waits
/// on a full buffer and a green reader waits for data: both end with an error or EOF.
#[test]
fn a_connection_reset_ends_blocked_green_readers_and_writers() {
    with_watchdog("reset", LIMIT, || {
        runtime(2).run(|| {
            let (c, s) = tcp_pair();
            let c = Arc::new(c);
            let writer = {
                let c = c.clone();
                greenrt::spawn(move || {
                    let chunk = vec![3u8; 1 << 16];
                    loop {
                        if let Err(e) = (&*c).write(&chunk) {
                            return e.kind();
                        }
                    }
                })
            };
            let reader = {
                let c = c.clone();
                greenrt::spawn(move || (&*c).read(&mut [0; 8]).map_err(|e| e.kind()))
            };
            greenrt::sleep(Duration::from_millis(100));
            drop(s); // unread data: the kernel sends RST
            let w = writer.join().unwrap();
            assert!(
                matches!(w, ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
                "{w:?}"
            );
            let r = reader.join().unwrap();
            assert!(
                matches!(r, Ok(0) | Err(ErrorKind::ConnectionReset)),
                "{r:?}"
            );
        });
    });
}

/// Timeouts racing with data: whatever wins, no byte is lost and nothing hangs.
#[test]
fn read_timeouts_racing_with_arriving_data_lose_nothing() {
    with_watchdog("timeout races", Duration::from_secs(120), || {
        let rt = runtime(2);
        rt.run(|| {
            let hs: Vec<_> = (0..100)
                .map(|i| {
                    greenrt::spawn(move || {
                        let (c, s) = tcp_pair();
                        let d = Duration::from_micros(500 + (i % 7) * 300);
                        c.set_read_timeout(Some(d)).unwrap();
                        let w = greenrt::spawn(move || {
                            for k in 0..20u8 {
                                greenrt::sleep(Duration::from_micros(200 * (k as u64 % 5)));
                                (&s).write_all(&[k]).unwrap();
                            }
                            s
                        });
                        let mut got = Vec::new();
                        let mut timeouts = 0;
                        while got.len() < 20 {
                            let mut b = [0u8; 4];
                            match (&c).read(&mut b) {
                                Ok(0) => panic!("eof"),
                                Ok(n) => got.extend_from_slice(&b[..n]),
                                Err(e) if e.kind() == ErrorKind::TimedOut => timeouts += 1,
                                Err(e) => panic!("{e}"),
                            }
                        }
                        w.join().unwrap();
                        assert_eq!(got, (0..20u8).collect::<Vec<_>>());
                        timeouts
                    })
                })
                .collect();
            let total: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
            eprintln!("timeouts seen: {total}");
        });
    });
}

/// `timeout(accept_async)` and `timeout(read)` abandoned at random points while
/// connections and data keep coming: every connection and byte is still seen.
#[test]
fn abandoned_async_waits_racing_with_readiness_lose_nothing() {
    with_watchdog("async abandon races", Duration::from_secs(120), || {
        let rt = runtime(2);
        rt.block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            const N: usize = 200;
            let clients = greenrt::spawn(move || {
                let mut v = Vec::new();
                for i in 0..N {
                    if i % 3 == 0 {
                        greenrt::sleep(Duration::from_micros(300));
                    }
                    let s = TcpStream::connect(addr).unwrap();
                    (&s).write_all(&[(i % 256) as u8]).unwrap();
                    v.push(s);
                }
                v
            });
            let mut accepted = 0;
            let mut bytes = 0;
            let mut abandoned = 0;
            while accepted < N {
                match greenrt::time::timeout(Duration::from_micros(200), l.accept_async()).await {
                    Err(_) => abandoned += 1,
                    Ok(r) => {
                        let (s, _) = r.unwrap();
                        accepted += 1;
                        let mut b = [0u8; 1];
                        let mut sr: &TcpStream = &s;
                        loop {
                            let read = futures::io::AsyncReadExt::read(&mut sr, &mut b);
                            match greenrt::time::timeout(Duration::from_micros(100), read).await {
                                Err(_) => abandoned += 1,
                                Ok(r) => {
                                    assert_eq!(r.unwrap(), 1);
                                    bytes += 1;
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            assert_eq!(bytes, N);
            assert_eq!(clients.await.unwrap().len(), N);
            eprintln!("abandoned waits: {abandoned}");
        });
    });
}

#[test]
fn sockets_in_blocking_pool_jobs_wait_like_plain_threads() {
    with_watchdog("io in pool jobs", LIMIT, || {
        let rt = runtime(1);
        rt.run(|| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let job = greenrt::spawn(move || {
                greenrt::unblock(move || {
                    // Blocking-style on a pool thread, then an `_async` one via block_on.
                    let (s, _) = l.accept().unwrap();
                    let mut b = [0; 2];
                    (&s).read_exact(&mut b).unwrap();
                    let (s2, _) = greenrt::block_on(l.accept_async()).unwrap();
                    (b, s, s2)
                })
            });
            greenrt::sleep(Duration::from_millis(20));
            let c = TcpStream::connect(addr).unwrap();
            (&c).write_all(b"pj").unwrap();
            greenrt::sleep(Duration::from_millis(20));
            let c2 = TcpStream::connect(addr).unwrap();
            let (b, _s, _s2) = job.join().unwrap();
            assert_eq!(&b, b"pj");
            drop((c, c2));
        });
    });
}

#[test]
fn registration_churn_thousands_of_short_lived_sockets() {
    with_watchdog("churn", Duration::from_secs(120), || {
        let rt = runtime(2);
        rt.run(|| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    greenrt::spawn(|| {
                        for i in 0..750u32 {
                            let (a, b) = UnixStream::pair().unwrap();
                            let w = greenrt::spawn(move || {
                                greenrt::yield_now();
                                (&b).write_all(&i.to_le_bytes()).unwrap();
                            });
                            let mut got = [0; 4];
                            (&a).read_exact(&mut got).unwrap();
                            assert_eq!(u32::from_le_bytes(got), i);
                            w.join().unwrap();
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        });
    });
}

#[test]
fn a_socket_moved_between_runtimes_through_std() {
    with_watchdog("move between runtimes", LIMIT, || {
        let (c, s) = tcp_pair();
        let rt1 = runtime(1);
        let c = rt1
            .spawn(move || {
                let w = greenrt::spawn(move || {
                    greenrt::sleep(Duration::from_millis(10));
                    (&s).write_all(b"ab").unwrap();
                    s
                });
                let mut b = [0; 1];
                (&c).read_exact(&mut b).unwrap();
                (c.into_std().unwrap(), w.join().unwrap())
            })
            .join()
            .unwrap();
        drop(rt1);
        let rt2 = runtime(1);
        let (std_c, s) = c;
        rt2.run(move || {
            let c = TcpStream::from(std_c);
            let mut b = [0; 1];
            (&c).read_exact(&mut b).unwrap();
            assert_eq!(&b, b"b");
            let r = greenrt::spawn(move || {
                let mut b = [0; 1];
                (&c).read_exact(&mut b).unwrap();
                b
            });
            greenrt::sleep(Duration::from_millis(10));
            (&s).write_all(b"c").unwrap();
            assert_eq!(&r.join().unwrap(), b"c");
        });
    });
}

/// std's way to split a stream: `try_clone`, one green thread reading from one handle
/// while another writes to the other; the clone starts with the original's timeouts.
#[test]
fn try_clone_splits_a_stream_between_a_green_reader_and_writer() {
    with_watchdog("try_clone", LIMIT, || {
        runtime(2).run(|| {
            let (client, server) = tcp_pair();
            client
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let mut reader = client.try_clone().unwrap();
            assert_ne!(reader.as_raw_fd(), client.as_raw_fd());
            assert_eq!(
                reader.read_timeout().unwrap(),
                Some(Duration::from_secs(20))
            );
            let echo = greenrt::spawn(move || {
                let mut server = server;
                let mut buf = [0; 1024];
                loop {
                    let n = server.read(&mut buf).unwrap();
                    if n == 0 {
                        return;
                    }
                    server.write_all(&buf[..n]).unwrap();
                }
            });
            let read = greenrt::spawn(move || {
                let mut got = Vec::new();
                reader.read_to_end(&mut got).unwrap();
                got
            });
            let mut writer = client;
            let sent: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
            writer.write_all(&sent).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
            echo.join().unwrap();
            drop(writer);
            assert_eq!(read.join().unwrap(), sent);
        });
    });
}

/// A listener's clone accepts from the same queue; a UDP socket's clone receives what
/// was sent to the original; a Unix stream's clone reads what the peer wrote.
#[test]
fn try_clone_of_listeners_udp_and_unix_sockets_share_the_socket() {
    with_watchdog("try_clone others", LIMIT, || {
        runtime(2).run(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let clone = listener.try_clone().unwrap();
            let addr = listener.local_addr().unwrap();
            assert_eq!(clone.local_addr().unwrap(), addr);
            let accepted = greenrt::spawn(move || clone.accept().map(|(_, peer)| peer));
            let client = TcpStream::connect(addr).unwrap();
            assert_eq!(
                accepted.join().unwrap().unwrap(),
                client.local_addr().unwrap()
            );

            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let clone = socket.try_clone().unwrap();
            assert_eq!(clone.read_timeout().unwrap(), Some(Duration::from_secs(20)));
            clone
                .send_to(b"dgram", socket.local_addr().unwrap())
                .unwrap();
            let mut buf = [0; 16];
            let (n, from) = clone.peek_from(&mut buf).unwrap();
            assert_eq!(
                (&buf[..n], from),
                (&b"dgram"[..], socket.local_addr().unwrap())
            );
            let (n, _) = socket.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"dgram", "peek left the datagram queued");

            let (a, b) = UnixStream::pair().unwrap();
            let a2 = a.try_clone().unwrap();
            (&b).write_all(b"unix").unwrap();
            let mut got = [0; 4];
            (&a2).read_exact(&mut got).unwrap();
            assert_eq!(&got, b"unix");
            drop(a);
            (&b).write_all(b"more").unwrap();
            (&a2).read_exact(&mut got).unwrap();
            assert_eq!(&got, b"more", "the clone outlives the original");
            let path = tmp_path("clone");
            let unix_listener = UnixListener::bind(&path).unwrap();
            let unix_clone = unix_listener.try_clone().unwrap();
            let accepted = greenrt::spawn(move || unix_clone.accept().map(drop));
            let _client = UnixStream::connect(&path).unwrap();
            accepted.join().unwrap().unwrap();
            let _ = std::fs::remove_file(&path);
        });
    });
}

/// `peek` waits like `read` in a green thread and leaves the bytes for the next read.
#[test]
fn peek_waits_for_data_and_leaves_it_queued() {
    with_watchdog("peek", LIMIT, || {
        runtime(1).run(|| {
            let (client, server) = tcp_pair();
            let peeker = greenrt::spawn(move || {
                let mut buf = [0; 8];
                let n = server.peek(&mut buf).unwrap();
                let peeked = buf[..n].to_vec();
                let mut all = [0; 5];
                (&server).read_exact(&mut all).unwrap();
                (peeked, all)
            });
            greenrt::yield_now(); // the peeker is waiting by now on one worker
            (&client).write_all(b"hello").unwrap();
            let (peeked, all) = peeker.join().unwrap();
            assert!(
                !peeked.is_empty() && b"hello".starts_with(&peeked),
                "{peeked:?}"
            );
            assert_eq!(&all, b"hello");
        });
    });
}

/// Conversions through raw fds, as with std: `IntoRawFd` gives the fd up (blocking
/// again), `FromRawFd` takes it back (non-blocking, usable in green threads).
#[test]
fn raw_fd_round_trips_keep_the_connection() {
    use std::os::fd::{FromRawFd, IntoRawFd};
    with_watchdog("raw fds", LIMIT, || {
        runtime(1).run(|| {
            let (client, server) = tcp_pair();
            let fd = client.into_raw_fd();
            // SAFETY: `fd` was just given up by `into_raw_fd` and is owned here.
            let mut std_client = unsafe { std::net::TcpStream::from_raw_fd(fd) };
            std_client.write_all(b"raw").unwrap(); // blocking mode again
            let fd = std_client.into_raw_fd();
            // SAFETY: as above.
            let client = unsafe { TcpStream::from_raw_fd(fd) };
            let mut got = [0; 3];
            (&server).read_exact(&mut got).unwrap();
            assert_eq!(&got, b"raw");
            let reader = greenrt::spawn(move || {
                let mut got = [0; 4];
                (&client).read_exact(&mut got).map(|()| got)
            });
            (&server).write_all(b"back").unwrap();
            assert_eq!(&reader.join().unwrap().unwrap(), b"back");

            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = socket.local_addr().unwrap();
            // SAFETY: `into_raw_fd` handed the fd over.
            let socket = unsafe { UdpSocket::from_raw_fd(socket.into_raw_fd()) };
            assert_eq!(socket.local_addr().unwrap(), addr);
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            // SAFETY: as above.
            let listener = unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) };
            assert_eq!(listener.local_addr().unwrap(), addr);
        });
    });
}

/// Socket options std has: TTL, broadcast, pending error.
#[test]
fn socket_options_read_back_what_was_set() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_broadcast(true).unwrap();
    assert!(socket.broadcast().unwrap());
    socket.set_ttl(17).unwrap();
    assert_eq!(socket.ttl().unwrap(), 17);
    assert!(socket.take_error().unwrap().is_none());
    socket
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    assert_eq!(
        socket.write_timeout().unwrap(),
        Some(Duration::from_secs(3))
    );
    let (client, _server) = tcp_pair();
    client.set_ttl(33).unwrap();
    assert_eq!(client.ttl().unwrap(), 33);
    assert!(client.take_error().unwrap().is_none());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_ttl(44).unwrap();
    assert_eq!(listener.ttl().unwrap(), 44);
}

/// `spawn_blocking` through a `Runtime` or a `Handle`, from a plain thread outside the
/// runtime, as tokio's `Handle::spawn_blocking`.
#[test]
fn spawn_blocking_through_runtime_and_handle_from_plain_threads() {
    with_watchdog("spawn_blocking via handle", LIMIT, || {
        let rt = runtime(1);
        let job = rt.spawn_blocking(|| std::thread::current().name().map(str::to_owned));
        let name = job.join().unwrap();
        assert!(
            name.as_deref().is_some_and(|n| n.contains("blocking")),
            "ran on a pool thread: {name:?}"
        );
        let handle = rt.handle().clone();
        let job = std::thread::spawn(move || handle.spawn_blocking(|| 6 * 7))
            .join()
            .unwrap();
        assert_eq!(job.join().unwrap(), 42);
    });
}

/// Whether `fd`'s open file is in non-blocking mode.
fn is_nonblocking(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: F_GETFL only reads the flags of an fd the caller keeps open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(flags >= 0, "fcntl: {}", std::io::Error::last_os_error());
    flags & libc::O_NONBLOCK != 0
}

/// `O_NONBLOCK` belongs to the socket that `try_clone`d handles share: giving one handle
/// to std (`into_std`, `into_raw_fd`) leaves it set while another greenrt handle lives,
/// or that handle's green threads would block their worker in the syscall. The last
/// handle given to std gets a blocking socket, as documented.
#[test]
fn giving_a_clone_to_std_keeps_the_shared_socket_non_blocking_for_the_others() {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let (a, _server) = tcp_pair();
    let std_b = a.try_clone().unwrap().into_std().unwrap();
    assert!(
        is_nonblocking(a.as_raw_fd()),
        "TcpStream clone given to std"
    );
    drop(std_b);
    let std_a = a.into_std().unwrap();
    assert!(
        !is_nonblocking(std_a.as_raw_fd()),
        "the last handle is blocking"
    );

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let raw = listener.try_clone().unwrap().into_raw_fd();
    assert!(
        is_nonblocking(listener.as_raw_fd()),
        "TcpListener clone via raw fd"
    );
    // SAFETY: `into_raw_fd` handed `raw` over; closed here.
    drop(unsafe { std::net::TcpListener::from_raw_fd(raw) });

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let std_socket = socket.try_clone().unwrap().into_std().unwrap();
    assert!(
        is_nonblocking(socket.as_raw_fd()),
        "UdpSocket clone given to std"
    );
    drop((socket, std_socket));

    let (unix, _peer) = UnixStream::pair().unwrap();
    let std_unix = unix.try_clone().unwrap().into_std().unwrap();
    assert!(
        is_nonblocking(unix.as_raw_fd()),
        "UnixStream clone given to std"
    );
    drop(std_unix);
    assert!(!is_nonblocking(unix.into_std().unwrap().as_raw_fd()));

    let path = tmp_path("clone-flag");
    let unix_listener = UnixListener::bind(&path).unwrap();
    let std_listener = unix_listener.try_clone().unwrap().into_std().unwrap();
    assert!(
        is_nonblocking(unix_listener.as_raw_fd()),
        "UnixListener clone given to std"
    );
    drop((unix_listener, std_listener));
    let _ = std::fs::remove_file(&path);
}

/// Each clone has its own registration: dropping one (registered) clone while a green
/// thread waits on the other leaves the other's wait working.
#[test]
fn dropping_a_registered_clone_leaves_the_other_waiting_correctly() {
    with_watchdog("drop clone while waiting", LIMIT, || {
        let rt = runtime(1);
        let (a, server) = tcp_pair();
        // Register `a` (a read that times out), then clone it and wait on the clone.
        let a = rt
            .spawn(move || {
                a.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
                let _ = (&a).read(&mut [0u8; 1]);
                a
            })
            .join()
            .unwrap();
        let b = a.try_clone().unwrap();
        b.set_read_timeout(None).unwrap();
        let (waiting_tx, waiting_rx) = std::sync::mpsc::channel();
        let reader = rt.spawn(move || {
            waiting_tx.send(()).unwrap();
            let mut buf = [0u8; 4];
            (&b).read(&mut buf).map_err(|e| e.kind())
        });
        waiting_rx.recv().unwrap();
        drop(a);
        (&server).write_all(b"hi").unwrap();
        assert_eq!(reader.join().unwrap(), Ok(2));
    });
}
