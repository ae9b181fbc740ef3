//! Network I/O at its edges: vectored transfers past the kernel's buffer-count limit,
//! I/O in destructors during shutdown, sockets that outlive their runtime, full
//! backlogs, durations too long for `Instant`, and lookups where none may block.

mod common;

use common::{panic_message, runtime, with_watchdog};
use greenrt::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use std::io::{ErrorKind, IoSliceMut, Read, Write};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn a_vectored_read_of_more_than_1024_buffers_does_not_lose_readiness() {
    with_watchdog("vectored read", LIMIT, || {
        let rt = runtime(1);
        rt.run(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, _) = listener.accept().unwrap();
            // A first wait registers the socket with the reactor, which tracks its
            // readiness from then on.
            server
                .set_read_timeout(Some(Duration::from_millis(5)))
                .unwrap();
            let err = (&server).read(&mut [0u8; 1]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::TimedOut);
            server
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            client.write_all(&[7u8; 2000]).unwrap();

            // One byte per buffer: readv takes at most 1024 of the 2000, so the first
            // read moves fewer bytes than the buffers hold although more are waiting.
            // That must not mark the socket drained: the data is all there, and no
            // further readiness event will come for it.
            let mut bytes = vec![[0u8; 1]; 2000];
            let mut bufs: Vec<IoSliceMut> = bytes.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let mut total = (&server).read_vectored(&mut bufs).unwrap();
            assert!(total > 0 && total <= 1024, "one readv moved {total} bytes");
            let mut rest = [0u8; 2000];
            while total < 2000 {
                match (&server).read(&mut rest) {
                    Ok(0) => panic!("the client closed early"),
                    Ok(n) => total += n,
                    Err(e) => panic!("bytes already received were not read: {e} (after {total})"),
                }
            }
        });
    });
}

#[test]
fn dropping_the_runtime_ends_io_waits_in_destructors_of_cancelled_green_threads() {
    with_watchdog("runtime drop", LIMIT, || {
        let rt = runtime(1);
        let _server = rt.run(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            greenrt::spawn(move || {
                let stream = TcpStream::connect(addr).unwrap();
                // Unflushed bytes that its destructor will try to write while the
                // cancel unwinds this green thread, to a peer that never reads.
                let mut buffered = std::io::BufWriter::with_capacity(16 << 20, &stream);
                buffered.write_all(&vec![1u8; 8 << 20]).unwrap();
                ready_tx.send(()).unwrap();
                let chunk = vec![0u8; 1 << 16];
                loop {
                    // Suspends once the socket buffers are full.
                    (&stream).write_all(&chunk).unwrap();
                }
            });
            let (server, _) = listener.accept().unwrap();
            ready_rx.recv().unwrap();
            greenrt::sleep(Duration::from_millis(100));
            server // kept open and unread, so writes block rather than fail
        });
        // Cancels the writer; its BufWriter's flush must give up rather than block the
        // worker (which the drop joins) forever.
        drop(rt);
    });
}

#[test]
fn a_wait_on_a_socket_whose_runtime_shut_down_ends_with_an_error() {
    with_watchdog("wait on a dead reactor", LIMIT, || {
        let (a, _b) = UnixStream::pair().unwrap();
        let first = runtime(1);
        // Registers `a` with the first runtime's reactor (a wait that times out).
        let a = first.run(move || {
            a.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
            let err = (&a).read(&mut [0u8; 1]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::TimedOut);
            a.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            a
        });
        let second = runtime(1);
        let (waiting_tx, waiting_rx) = std::sync::mpsc::channel();
        let reader = second.spawn(move || {
            waiting_tx.send(()).unwrap();
            (&a).read(&mut [0u8; 1])
                .map_err(|e| (e.kind(), e.to_string()))
        });
        waiting_rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(100)); // let it reach its wait
                                                        // Nothing will poll the first reactor again: the waiter must hear of it now,
                                                        // not at its 30 s timeout.
        drop(first);
        let (kind, text) = reader.join().unwrap().unwrap_err();
        assert_ne!(kind, ErrorKind::TimedOut);
        assert!(text.contains("shut down"), "the error says why: {text}");
    });
}

#[test]
fn a_unix_connect_to_a_full_backlog_waits_without_blocking_the_worker() {
    with_watchdog("unix connect with a full backlog", LIMIT, || {
        let path = std::env::temp_dir().join(format!(
            "greenrt-backlog-{}-{:?}.sock",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&path);
        let std_listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // Listening again sets the backlog: 0 lets one connection wait, no more.
        use std::os::fd::AsRawFd;
        // SAFETY: listen(2) on a valid, bound socket fd that `std_listener` owns.
        assert_eq!(unsafe { libc::listen(std_listener.as_raw_fd(), 0) }, 0);
        let listener = UnixListener::from_std(std_listener).unwrap();

        let rt = runtime(1);
        rt.run(|| {
            let connect_path = path.clone();
            // On one worker: if a connect blocked the OS thread, the accepting green
            // thread could never run, and neither could finish.
            let connector = greenrt::spawn(move || {
                (0..3)
                    .map(|_| UnixStream::connect(&connect_path).unwrap())
                    .collect::<Vec<_>>()
            });
            let acceptor = greenrt::spawn(move || {
                (0..3)
                    .map(|_| listener.accept().unwrap().0)
                    .collect::<Vec<_>>()
            });
            let mut clients = connector.join().unwrap();
            let mut servers = acceptor.join().unwrap();
            for (client, server) in clients.iter_mut().zip(servers.iter_mut()) {
                client.write_all(b"x").unwrap();
                let mut byte = [0u8; 1];
                server.read_exact(&mut byte).unwrap();
                assert_eq!(&byte, b"x");
            }
        });
        let _ = std::fs::remove_file(&path);
    });
}

#[test]
fn duration_max_means_forever_not_an_overflow_panic() {
    with_watchdog("Duration::MAX", LIMIT, || {
        let rt = runtime(1);
        rt.block_on(async {
            let quick = greenrt::time::timeout(Duration::MAX, async { 5 }).await;
            assert_eq!(quick, Ok(5));
            let short = Duration::from_millis(20);
            let never = greenrt::time::sleep(Duration::MAX);
            assert!(greenrt::time::timeout(short, never).await.is_err());
            let mut interval = greenrt::time::interval(Duration::MAX);
            interval.tick().await; // the first tick is at once
            assert!(greenrt::time::timeout(short, interval.tick())
                .await
                .is_err());
        });
        rt.run(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            TcpStream::connect_timeout(&addr, Duration::MAX).unwrap();

            let sleeper = greenrt::spawn(|| greenrt::sleep(Duration::MAX));
            greenrt::sleep(Duration::from_millis(20));
            sleeper.abort();
            let payload = sleeper.join().unwrap_err();
            assert!(
                payload.downcast_ref::<greenrt::Cancelled>().is_some(),
                "the sleep was cancelled, it did not panic: {}",
                panic_message(&*payload)
            );
        });
    });
}

#[test]
fn connect_timeout_of_zero_is_invalid_input_as_in_std() {
    let rt = runtime(1);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let green = rt.run(|| TcpStream::connect_timeout(&addr, Duration::ZERO).unwrap_err());
    assert_eq!(green.kind(), ErrorKind::InvalidInput);
    let plain = TcpStream::connect_timeout(&addr, Duration::ZERO).unwrap_err();
    assert_eq!(plain.kind(), ErrorKind::InvalidInput);
}

#[test]
fn a_name_lookup_in_a_future_task_panics_naming_the_way_out() {
    let rt = runtime(1);
    let payload = rt
        .block_on(rt.spawn_async(async { TcpListener::bind("greenrt-test.invalid:0").map(drop) }))
        .unwrap_err();
    let text = panic_message(&*payload);
    assert!(
        text.contains("TcpListener::bind")
            && text.contains("\"greenrt-test.invalid\"")
            && text.contains("spawn_blocking"),
        "the panic names the call and the fix: {text}"
    );
}

/// `localhost` needs no lookup (RFC 6761): the blocking-style calls that need no wait
/// (`bind`, UDP `connect`) take it in a future task too, where another name would need
/// a lookup that blocks the worker (and `bind` has no `_async` form).
#[test]
fn localhost_works_in_a_future_task_without_a_lookup() {
    let rt = runtime(1);
    let echoed = rt
        .block_on(rt.spawn_async(async {
            let listener = TcpListener::bind("localhost:0")?;
            let port = listener.local_addr()?.port();
            let socket = greenrt::net::UdpSocket::bind("localhost:0")?;
            socket.connect(("localhost", socket.local_addr()?.port()))?;
            let client =
                greenrt::spawn_async(
                    async move { TcpStream::connect_async(("localhost", port)).await },
                );
            let (accepted, _) = listener.accept_async().await?;
            let connected = client.await.unwrap()?;
            assert_eq!(accepted.peer_addr()?, connected.local_addr()?);
            let own = ("localhost", socket.local_addr()?.port());
            socket.send_to_async(b"ping", own).await?;
            let mut buf = [0; 4];
            let n = socket.recv_from_async(&mut buf).await?.0;
            std::io::Result::Ok(buf[..n].to_vec())
        }))
        .unwrap()
        .unwrap();
    assert_eq!(echoed, b"ping");
}
