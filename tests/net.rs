//! Network I/O: green, async and plain-thread sockets, the reactor, and the blocking pool.

mod common;

use common::{runtime, with_watchdog};
use greenrt::net::{TcpListener, TcpStream, UdpSocket, UnixStream};
use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

/// Raises the soft fd limit to the hard limit; returns the new soft limit.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to fill in.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a valid rlimit; raising the soft limit up to the hard one is
    // always allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    limit.rlim_cur
}

fn message(client: usize, seq: usize) -> [u8; 32] {
    let mut msg = [0u8; 32];
    let text = format!("client {client:06} message {seq:02}");
    msg[..text.len()].copy_from_slice(text.as_bytes());
    msg[31] = (client.wrapping_mul(31).wrapping_add(seq) % 251) as u8;
    msg
}

#[test]
fn echo_with_thousands_of_concurrent_green_clients() {
    let soft = raise_fd_limit();
    // Each connection is two sockets in this process; keep 200 fds spare.
    let clients = (soft.saturating_sub(200) / 2).min(10_000) as usize;
    println!("echo test: {clients} concurrent connections (fd limit {soft})");
    assert!(
        clients >= 5_000,
        "fd hard limit {soft} allows only {clients} connections; need at least 5000"
    );
    with_watchdog("echo", Duration::from_secs(120), move || {
        let rt = runtime(2);
        rt.run(move || {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = greenrt::spawn(move || {
                let mut handlers = Vec::with_capacity(clients);
                for _ in 0..clients {
                    let (mut conn, _) = listener.accept().unwrap();
                    handlers.push(greenrt::spawn(move || {
                        let mut buf = [0u8; 512];
                        loop {
                            let n = conn.read(&mut buf).unwrap();
                            if n == 0 {
                                return;
                            }
                            conn.write_all(&buf[..n]).unwrap();
                        }
                    }));
                }
                for h in handlers {
                    h.join().unwrap();
                }
            });
            let connected = Arc::new(AtomicUsize::new(0));
            let go = Arc::new(AtomicBool::new(false));
            let mut handles = Vec::with_capacity(clients);
            // Connect in waves (below the listen backlog) so no SYN is dropped, then
            // hold every connection open until all are up.
            for wave in (0..clients).collect::<Vec<_>>().chunks(500) {
                for &id in wave {
                    let connected = connected.clone();
                    let go = go.clone();
                    handles.push(greenrt::spawn(move || {
                        let mut stream = TcpStream::connect(addr).unwrap();
                        connected.fetch_add(1, Ordering::SeqCst);
                        while !go.load(Ordering::SeqCst) {
                            greenrt::sleep(Duration::from_millis(5));
                        }
                        for seq in 0..10 {
                            let msg = message(id, seq);
                            stream.write_all(&msg).unwrap();
                            let mut back = [0u8; 32];
                            stream.read_exact(&mut back).unwrap();
                            assert_eq!(back, msg, "client {id} message {seq}");
                        }
                    }));
                }
                while connected.load(Ordering::SeqCst) < handles.len() {
                    greenrt::sleep(Duration::from_millis(1));
                }
            }
            assert_eq!(connected.load(Ordering::SeqCst), clients);
            go.store(true, Ordering::SeqCst);
            for h in handles {
                h.join().unwrap();
            }
            server.join().unwrap();
        });
    });
}

#[test]
fn read_timeout_fires_with_timed_out_in_green_and_plain_threads() {
    with_watchdog("read timeout", LIMIT, || {
        let rt = runtime(2);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Plain thread: an ordinary blocking socket.
        let mut plain = TcpStream::connect(addr).unwrap();
        let (_held, _) = listener.accept().unwrap();
        plain
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let start = Instant::now();
        let err = plain.read(&mut [0; 8]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(50));
        rt.run(|| {
            let mut stream = TcpStream::connect(addr).unwrap();
            let (_held2, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            // Other green threads keep running meanwhile.
            let ticker = greenrt::spawn(|| {
                for _ in 0..10 {
                    greenrt::sleep(Duration::from_millis(1));
                }
            });
            let start = Instant::now();
            let err = stream.read(&mut [0; 8]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::TimedOut);
            assert!(start.elapsed() >= Duration::from_millis(50));
            ticker.join().unwrap();
            assert!(stream.set_read_timeout(Some(Duration::ZERO)).is_err());
        });
    });
}

#[test]
fn accept_and_connect_between_green_and_async_code() {
    with_watchdog("green/async", LIMIT, || {
        let rt = runtime(2);
        rt.block_on(async {
            // Async server, green client.
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let client = greenrt::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"ping").unwrap();
                let mut buf = [0; 4];
                s.read_exact(&mut buf).unwrap();
                buf
            });
            let (mut conn, _) = listener.accept_async().await.unwrap();
            let mut buf = [0; 4];
            futures::io::AsyncReadExt::read_exact(&mut conn, &mut buf)
                .await
                .unwrap();
            assert_eq!(&buf, b"ping");
            futures::io::AsyncWriteExt::write_all(&mut conn, b"pong")
                .await
                .unwrap();
            assert_eq!(&client.await.unwrap(), b"pong");

            // Green server, async client.
            let listener = TcpListener::bind("localhost:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = greenrt::spawn(move || {
                let (mut conn, peer) = listener.accept().unwrap();
                assert_eq!(peer, conn.peer_addr().unwrap());
                let mut buf = Vec::new();
                conn.read_to_end(&mut buf).unwrap();
                buf
            });
            let mut s = TcpStream::connect_async(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            futures::io::AsyncWriteExt::write_all(&mut s, b"hello from async")
                .await
                .unwrap();
            futures::io::AsyncWriteExt::close(&mut s).await.unwrap();
            assert_eq!(server.await.unwrap(), b"hello from async");
        });
    });
}

#[test]
fn connect_resolves_names_and_reports_refused() {
    with_watchdog("connect", LIMIT, || {
        let rt = runtime(1);
        rt.run(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let s = TcpStream::connect(format!("localhost:{port}")).unwrap();
            assert_eq!(s.peer_addr().unwrap().port(), port);
            drop(listener);
            let err = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
        });
    });
}

#[test]
fn udp_round_trip_green_and_async() {
    with_watchdog("udp", LIMIT, || {
        let rt = runtime(2);
        rt.run(|| {
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").unwrap();
            let a_addr = a.local_addr().unwrap();
            let b_addr = b.local_addr().unwrap();
            let echo = greenrt::spawn_async(async move {
                let mut buf = [0; 64];
                let (n, from) = b.recv_from_async(&mut buf).await.unwrap();
                b.send_to_async(&buf[..n], from).await.unwrap();
                from
            });
            a.send_to(b"datagram", b_addr).unwrap();
            let mut buf = [0; 64];
            let (n, from) = a.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"datagram");
            assert_eq!(from, b_addr);
            assert_eq!(echo.join().unwrap(), a_addr);
            // Connected sockets.
            a.connect(b_addr).unwrap();
            a.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            assert_eq!(a.recv(&mut buf).unwrap_err().kind(), ErrorKind::TimedOut);
            assert_eq!(a.send(b"x").unwrap(), 1);
        });
    });
}

#[test]
fn unblock_runs_on_another_thread_while_the_worker_runs_other_green_threads() {
    with_watchdog("unblock", LIMIT, || {
        let rt = runtime(1);
        rt.run(|| {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let blocker = greenrt::spawn(move || {
                let worker = std::thread::current().id();
                let pool = greenrt::unblock(move || {
                    // Blocks until the other green thread, on the only worker, has run.
                    rx.recv().unwrap();
                    std::thread::current().id()
                });
                assert_ne!(pool, worker);
            });
            let other = greenrt::spawn(move || {
                greenrt::yield_now();
                tx.send(()).unwrap();
            });
            other.join().unwrap();
            blocker.join().unwrap();
            // spawn_blocking, and a panic coming back.
            let len = greenrt::block_on(greenrt::spawn_blocking(|| {
                std::fs::read("Cargo.toml").map(|b| b.len())
            }))
            .unwrap()
            .unwrap();
            assert!(len > 0);
            let caught = std::panic::catch_unwind(|| greenrt::unblock(|| panic!("in pool")));
            assert!(caught.is_err());
        });
        // A plain thread runs it inline.
        let me = std::thread::current().id();
        assert_eq!(greenrt::unblock(move || std::thread::current().id()), me);
    });
}

#[test]
fn connection_closed_mid_read_returns_eof_and_nothing_hangs() {
    with_watchdog("closed mid-read", LIMIT, || {
        let rt = runtime(2);
        rt.run(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = greenrt::spawn(move || {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = [0u8; 10];
                let partial = conn.read_exact(&mut buf).unwrap_err();
                let (mut conn2, _) = listener.accept().unwrap();
                let n = conn2.read(&mut buf).unwrap();
                (partial.kind(), n)
            });
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"abc").unwrap();
            greenrt::sleep(Duration::from_millis(20));
            drop(c);
            let c2 = TcpStream::connect(addr).unwrap();
            greenrt::sleep(Duration::from_millis(20)); // the server is waiting in read
            drop(c2);
            let (kind, n) = server.join().unwrap();
            assert_eq!(kind, ErrorKind::UnexpectedEof);
            assert_eq!(n, 0);

            // One green thread reads while another writes the same stream.
            let (a, b) = UnixStream::pair().unwrap();
            let a = Arc::new(a);
            let reader = {
                let a = a.clone();
                greenrt::spawn(move || {
                    let mut buf = [0; 5];
                    (&*a).read_exact(&mut buf).unwrap();
                    buf
                })
            };
            let writer = {
                let a = a.clone();
                greenrt::spawn(move || (&*a).write_all(b"12345").unwrap())
            };
            let mut b = b;
            let mut got = [0; 5];
            b.read_exact(&mut got).unwrap();
            b.write_all(&got).unwrap();
            writer.join().unwrap();
            assert_eq!(&reader.join().unwrap(), b"12345");
        });
    });
}

#[test]
fn plain_threads_use_blocking_sockets_without_a_runtime() {
    with_watchdog("plain", LIMIT, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0; 3];
            conn.read_exact(&mut buf).unwrap();
            conn.write_all(&buf).unwrap();
        });
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"abc").unwrap();
        let mut buf = [0; 3];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"abc");
        t.join().unwrap();
        let std_stream: std::net::TcpStream = s.try_into().unwrap();
        assert!(std_stream.peer_addr().is_ok());
    });
}
