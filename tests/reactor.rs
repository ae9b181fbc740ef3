//! The I/O reactor: readiness with several waiters, waiters that give up, wakers that
//! panic, and who drives `epoll_wait`.

mod common;

use common::{runtime, with_watchdog};
use futures::io::AsyncRead;
use greenrt::net::{TcpListener, TcpStream};
use std::future::Future;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

/// A waker that counts its drops in the given counter.
struct Counted(&'static AtomicUsize);
impl Wake for Counted {
    fn wake(self: Arc<Self>) {}
}
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A read that gave up (timeout, select, dropped future, cancelled task) must not leave
/// its waker in the registration until the next readiness event, which on an idle
/// connection may never come.
#[test]
fn abandoned_io_waits_release_their_wakers() {
    static DROPPED: AtomicUsize = AtomicUsize::new(0);
    with_watchdog("abandoned waits", Duration::from_secs(30), || {
        let rt = runtime(1);
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let _client = TcpStream::connect_async(addr).await.unwrap();
            let (server, _) = listener.accept_async().await.unwrap();
            let mut buf = [0u8; 16];
            for _ in 0..1000 {
                let waker = Waker::from(Arc::new(Counted(&DROPPED)));
                let mut cx = Context::from_waker(&waker);
                let mut reader = &server;
                assert!(Pin::new(&mut reader)
                    .poll_read(&mut cx, &mut buf)
                    .is_pending());
                // The caller gives up on this read (e.g. its timeout fired).
            }
            let released = DROPPED.load(Ordering::SeqCst);
            assert!(
                released >= 999,
                "only {released} of 1000 abandoned wakers were released: the reactor still \
                 holds the rest (and the tasks/green threads they keep alive)"
            );
        });
    });
}

/// Dropping a pending `accept_async` future frees its waiter entry at once, while
/// other accept futures on the same listener keep theirs.
#[test]
fn dropped_accept_futures_release_their_wakers() {
    static DROPPED: AtomicUsize = AtomicUsize::new(0);
    with_watchdog("dropped accepts", Duration::from_secs(30), || {
        let rt = runtime(1);
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            for _ in 0..1000 {
                let waker = Waker::from(Arc::new(Counted(&DROPPED)));
                let mut accept = Box::pin(listener.accept_async());
                let poll = accept.as_mut().poll(&mut Context::from_waker(&waker));
                assert!(poll.is_pending());
            }
            let released = DROPPED.load(Ordering::SeqCst);
            assert_eq!(released, 1000, "dropped accept futures kept their wakers");
        });
    });
}

struct Panicky;
impl Wake for Panicky {
    fn wake(self: Arc<Self>) {
        panic!("a user waker panicked (expected by this test)");
    }
}

/// A readiness waker that panics when the driver dispatches an event must neither kill
/// the worker nor keep the other waiters of that event asleep.
#[test]
fn a_panicking_readiness_waker_spares_the_worker_and_the_other_waiters() {
    with_watchdog("panicking readiness waker", Duration::from_secs(30), || {
        let rt = runtime(1);
        rt.run(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            let (server, _) = listener.accept().unwrap();
            let server = Arc::new(server);
            let reader = {
                let server = server.clone();
                greenrt::spawn(move || {
                    let mut buf = [0u8; 1];
                    (&*server).read_exact(&mut buf).map(|()| buf[0])
                })
            };
            // Let the green reader wait (on the only worker) before the panicky poll.
            greenrt::sleep(Duration::from_millis(50));
            let waker = Waker::from(Arc::new(Panicky));
            let mut buf = [0u8; 1];
            let mut async_reader = &*server;
            let poll =
                Pin::new(&mut async_reader).poll_read(&mut Context::from_waker(&waker), &mut buf);
            assert!(poll.is_pending());
            client.write_all(b"x").unwrap();
            assert_eq!(reader.join().unwrap().unwrap(), b'x');
            // The worker is alive and runs new work.
            assert_eq!(greenrt::spawn(|| 5).join().unwrap(), 5);
        });
    });
}

/// When the worker that drove epoll is woken for its own I/O and then computes, an idle
/// worker must take over the reactor: I/O for others must not wait until the computing
/// worker parks or ticks again. The busy green thread computes *until* the host's read
/// completes (bounded by a long limit, far beyond any scheduling noise): without a
/// hand-off the read can only complete after the computation gave up. Six rounds,
/// because the stall needs the busy green thread to be at home on the driver (about
/// every other round).
#[test]
fn io_is_not_stalled_by_a_computing_former_driver() {
    const GIVE_UP: Duration = Duration::from_secs(10);
    with_watchdog("io hand-off", Duration::from_secs(120), || {
        let rt = runtime(2);
        for round in 0..6 {
            rt.run(|| {
                let la = TcpListener::bind("127.0.0.1:0").unwrap();
                let lb = TcpListener::bind("127.0.0.1:0").unwrap();
                let (aa, ab) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
                let client = std::thread::spawn(move || {
                    let mut a = std::net::TcpStream::connect(aa).unwrap();
                    let mut b = std::net::TcpStream::connect(ab).unwrap();
                    std::thread::sleep(Duration::from_millis(100)); // everyone parks
                    b.write_all(b"x").unwrap(); // wakes the computing green thread
                    std::thread::sleep(Duration::from_millis(50));
                    a.write_all(b"y").unwrap(); // the host green thread waits for this
                    (a, b)
                });
                let (sa, _) = la.accept().unwrap();
                let (sb, _) = lb.accept().unwrap();
                let got_io = Arc::new(AtomicBool::new(false));
                let busy = {
                    let got_io = got_io.clone();
                    greenrt::spawn(move || {
                        let mut buf = [0u8; 1];
                        (&sb).read_exact(&mut buf).unwrap();
                        let start = Instant::now();
                        while !got_io.load(Ordering::SeqCst) {
                            if start.elapsed() > GIVE_UP {
                                return false;
                            }
                            std::hint::spin_loop();
                        }
                        true
                    })
                };
                let mut buf = [0u8; 1];
                (&sa).read_exact(&mut buf).unwrap();
                got_io.store(true, Ordering::SeqCst);
                let _sockets = client.join().unwrap();
                assert!(
                    busy.join().unwrap(),
                    "round {round}: a readable socket waited for the computing former \
                     driver although another worker was idle"
                );
            });
        }
    });
}

/// A socket stays registered with the runtime it was first waited on in. Once that
/// runtime is gone nothing polls its reactor: waiting on the socket in another runtime
/// is an error that says why, not a hang; a plain thread can still use it.
#[test]
fn waiting_on_a_socket_of_a_shut_down_runtime_is_an_error_not_a_hang() {
    with_watchdog(
        "socket of a dropped runtime",
        Duration::from_secs(30),
        || {
            let first = runtime(1);
            let socket = first.run(|| {
                let socket = greenrt::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                socket
                    .set_read_timeout(Some(Duration::from_millis(5)))
                    .unwrap();
                let mut buf = [0u8; 8];
                // Waits (so registers) with the first runtime's reactor, then times out.
                let err = socket.recv_from(&mut buf).unwrap_err();
                assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
                socket.set_read_timeout(None).unwrap();
                socket
            });
            drop(first);

            let second = runtime(1);
            let err = second.run(|| {
                let mut buf = [0u8; 8];
                socket.recv_from(&mut buf).unwrap_err()
            });
            assert!(err.to_string().contains("shut down"), "{err}");

            // On a plain thread it is an ordinary blocking socket again.
            let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            peer.send_to(b"hi", socket.local_addr().unwrap()).unwrap();
            let mut buf = [0u8; 8];
            let (n, _) = socket.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"hi");
        },
    );
}
