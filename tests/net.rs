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
            // A name, resolved on the blocking pool.
            let mut s = TcpStream::connect_async(format!("localhost:{}", addr.port()))
                .await
                .unwrap();
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
            // The pool job blocks until a second green thread has run and answered. Both
            // green threads live on the runtime's only worker, so this finishes only if
            // that worker kept running green threads while the job blocked.
            let (started_tx, started_rx) = futures::channel::oneshot::channel::<()>();
            let (answer_tx, answer_rx) = std::sync::mpsc::channel::<std::thread::ThreadId>();
            let blocker = greenrt::spawn(move || {
                let worker = std::thread::current().id();
                let (pool, other_ran_on) = greenrt::unblock(move || {
                    started_tx.send(()).unwrap();
                    let other_ran_on = answer_rx.recv().unwrap();
                    (std::thread::current().id(), other_ran_on)
                });
                assert_ne!(pool, worker, "unblock ran its job on the caller's worker");
                assert_eq!(
                    other_ran_on, worker,
                    "the other green thread must have run on the blocked caller's worker"
                );
                assert_eq!(std::thread::current().id(), worker);
            });
            let other = greenrt::spawn(move || {
                greenrt::block_on(started_rx).unwrap();
                answer_tx.send(std::thread::current().id()).unwrap();
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
fn blocking_pool_is_bounded_by_max_blocking_threads() {
    with_watchdog("blocking pool bound", LIMIT, || {
        let rt = greenrt::runtime::Builder::new()
            .worker_threads(2)
            .max_blocking_threads(2)
            .build()
            .unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        // Jobs meet in pairs: with fewer than two pool threads this would never finish.
        let barrier = Arc::new(std::sync::Barrier::new(2));
        rt.run(|| {
            let jobs: Vec<_> = (0..6)
                .map(|_| {
                    let (running, most, barrier) = (running.clone(), most.clone(), barrier.clone());
                    greenrt::spawn(move || {
                        greenrt::unblock(move || {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            barrier.wait();
                            std::thread::sleep(Duration::from_millis(5));
                            running.fetch_sub(1, Ordering::SeqCst);
                        })
                    })
                })
                .collect();
            for job in jobs {
                job.join().unwrap();
            }
        });
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "at most 2 pool threads at once"
        );
    });
}

#[test]
fn incoming_connect_timeout_shutdown_and_write_timeout() {
    with_watchdog("tcp api", LIMIT, || {
        let rt = runtime(2);
        rt.run(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = greenrt::spawn(move || {
                let mut got = Vec::new();
                for conn in listener.incoming().take(2) {
                    let mut conn = conn.unwrap();
                    let mut buf = Vec::new();
                    // The client shut down its write half: read_to_end ends.
                    conn.read_to_end(&mut buf).unwrap();
                    got.push(buf);
                }
                got
            });
            for text in [&b"first"[..], b"second"] {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
                s.set_nodelay(true).unwrap();
                assert!(s.nodelay().unwrap());
                s.write_all(text).unwrap();
                s.shutdown(std::net::Shutdown::Write).unwrap();
                assert!(
                    s.write(b"x").is_err(),
                    "writing after shutdown(Write) must fail"
                );
            }
            assert_eq!(
                server.join().unwrap(),
                vec![b"first".to_vec(), b"second".to_vec()]
            );

            // Write timeout: the peer never reads, so the buffers fill and a write waits.
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut s = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (_held, _) = listener.accept().unwrap();
            s.set_write_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            assert_eq!(s.write_timeout().unwrap(), Some(Duration::from_millis(50)));
            let chunk = vec![7u8; 1 << 16];
            let err = loop {
                if let Err(e) = s.write(&chunk) {
                    break e;
                }
            };
            assert_eq!(err.kind(), ErrorKind::TimedOut);
        });
    });
}

/// Connects to a listener whose accept queue is full (backlog 0, one connection already
/// queued): Linux drops the SYNs, so the connect can only time out.
fn connect_to_full_backlog(connect: impl Fn(&std::net::SocketAddr) -> std::io::Result<TcpStream>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: listen(2) on a socket we own, already listening: it only changes the
    // backlog. No memory is involved.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
    let mut held = Vec::new();
    let mut timed_out = None;
    for _ in 0..8 {
        let start = Instant::now();
        match connect(&addr) {
            Ok(stream) => held.push(stream),
            Err(e) => {
                timed_out = Some((e, start.elapsed()));
                break;
            }
        }
    }
    let (err, elapsed) = timed_out.expect("8 connects to a full accept queue all succeeded");
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
}

#[test]
fn connect_timeout_fires_in_green_and_plain_threads() {
    with_watchdog("connect timeout", LIMIT, || {
        let timeout = Duration::from_millis(100);
        connect_to_full_backlog(|addr| TcpStream::connect_timeout(addr, timeout));
        let rt = runtime(1);
        rt.run(|| connect_to_full_backlog(|addr| TcpStream::connect_timeout(addr, timeout)));
    });
}

#[test]
fn conversions_to_and_from_std_and_raw_fds() {
    use std::os::fd::AsRawFd;
    with_watchdog("conversions", LIMIT, || {
        let rt = runtime(1);
        rt.run(|| {
            let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let fd = std_listener.as_raw_fd();
            let listener = TcpListener::from(std_listener);
            assert_eq!(listener.as_raw_fd(), fd);
            let addr = listener.local_addr().unwrap();
            let client = greenrt::spawn(move || {
                let std_stream = std::net::TcpStream::connect(addr).unwrap();
                let mut stream: TcpStream = std_stream.into();
                stream.write_all(b"via std").unwrap();
            });
            let (conn, _) = listener.accept().unwrap();
            client.join().unwrap();
            // Back to std: a blocking socket again.
            let mut std_conn: std::net::TcpStream = conn.into();
            let mut buf = Vec::new();
            std_conn.read_to_end(&mut buf).unwrap();
            assert_eq!(buf, b"via std");
            let back: std::net::TcpListener = listener.into();
            assert_eq!(back.as_raw_fd(), fd);

            let udp = UdpSocket::from(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
            let udp_fd = udp.as_raw_fd();
            let std_udp: std::net::UdpSocket = udp.into();
            assert_eq!(std_udp.as_raw_fd(), udp_fd);
        });
    });
}

#[test]
fn unix_sockets_between_green_async_and_plain_threads() {
    use greenrt::net::UnixListener;
    with_watchdog("unix", LIMIT, || {
        let dir = std::env::temp_dir().join(format!("greenrt-net-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sock");
        let _ = std::fs::remove_file(&path);
        let rt = runtime(2);
        let listener = UnixListener::bind(&path).unwrap();
        // A plain-thread client, blocking.
        let plain = {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&path).unwrap();
                s.write_all(b"plain").unwrap();
                let mut buf = [0; 5];
                s.read_exact(&mut buf).unwrap();
                buf
            })
        };
        rt.run(|| {
            // Green server: echoes two connections.
            let server = greenrt::spawn(move || {
                for conn in listener.incoming().take(2) {
                    let mut conn = conn.unwrap();
                    let mut buf = [0; 5];
                    conn.read_exact(&mut buf).unwrap();
                    conn.write_all(&buf).unwrap();
                }
            });
            // An async client.
            let path2 = path.clone();
            let reply = greenrt::block_on(greenrt::spawn_async(async move {
                let mut s = UnixStream::connect_async(&path2).await.unwrap();
                futures::io::AsyncWriteExt::write_all(&mut s, b"async")
                    .await
                    .unwrap();
                let mut buf = [0; 5];
                futures::io::AsyncReadExt::read_exact(&mut s, &mut buf)
                    .await
                    .unwrap();
                buf
            }))
            .unwrap();
            assert_eq!(&reply, b"async");
            server.join().unwrap();
            // Timeouts on Unix streams too.
            let (a, _b) = UnixStream::pair().unwrap();
            a.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            assert_eq!(
                (&a).read(&mut [0; 1]).unwrap_err().kind(),
                ErrorKind::TimedOut
            );
        });
        assert_eq!(&plain.join().unwrap(), b"plain");
        std::fs::remove_dir_all(&dir).unwrap();
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
        let std_stream: std::net::TcpStream = s.into();
        assert!(std_stream.peer_addr().is_ok());
    });
}
