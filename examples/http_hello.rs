//! A minimal HTTP/1.1 keep-alive server answering "Hello, world!", written as plain
//! blocking Rust: one green thread per connection, `std::io::Read`/`Write` on a
//! `greenrt::net::TcpStream`. Every read that would block suspends only that
//! connection's green thread. Compare with `tokio_http_hello.rs`, the same server in
//! tokio's idiomatic async style (same request parser, `examples/common/mod.rs`).
//!
//! ```text
//! cargo run --release --example http_hello -- [ADDR] [--workers N]
//! curl http://127.0.0.1:8080/
//! wrk -t1 -c100 -d10s --latency http://127.0.0.1:8080/
//! ```
//!
//! ADDR defaults to `127.0.0.1:8080`; the worker count comes from `--workers N`, else
//! `$GREENRT_WORKERS`, else one per CPU. `benches/http_load.sh` runs it against the
//! tokio version under `wrk`.

mod common;

use common::{parse, response, Args, Parsed, BAD_REQUEST, HEAD_TOO_LARGE, MAX_HEAD};
use greenrt::net::{TcpListener, TcpStream};
use std::io::{self, Read, Write};
use std::time::Duration;

/// Serves one connection until the client closes it or asks to.
fn serve(mut conn: TcpStream) -> io::Result<()> {
    // Small answers go out at once instead of waiting for the client's delayed ACK.
    conn.set_nodelay(true)?;
    let mut buf = [0u8; MAX_HEAD];
    let mut filled = 0;
    loop {
        match parse(&buf[..filled]) {
            Parsed::Request { len, keep_alive } => {
                conn.write_all(response(keep_alive))?;
                if !keep_alive {
                    return Ok(());
                }
                buf.copy_within(len..filled, 0);
                filled -= len;
                continue;
            }
            Parsed::Bad => return conn.write_all(BAD_REQUEST),
            Parsed::TooLarge => return conn.write_all(HEAD_TOO_LARGE),
            Parsed::Incomplete if filled == buf.len() => return conn.write_all(HEAD_TOO_LARGE),
            Parsed::Incomplete => {}
        }
        let n = conn.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(()); // the client closed the connection
        }
        filled += n;
    }
}

fn main() -> io::Result<()> {
    let args = Args::parse("127.0.0.1:8080", "GREENRT_WORKERS");
    let mut builder = greenrt::runtime::Builder::new();
    if let Some(workers) = args.workers {
        builder.worker_threads(workers);
    }
    let rt = builder.build()?;
    rt.run(move || -> io::Result<()> {
        let listener = TcpListener::bind(args.addr.as_str())?;
        let workers = args
            .workers
            .map_or_else(|| "default".to_string(), |n| n.to_string());
        println!(
            "http_hello (greenrt, workers: {workers}) listening on http://{}/",
            listener.local_addr()?
        );
        // The accept loop is a green thread on the workers too, so with one worker the
        // whole server runs on that one thread (this thread only waits).
        greenrt::spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(conn) => {
                        greenrt::spawn(move || {
                            if let Err(error) = serve(conn) {
                                // Resets by clients that hang up mid-request are normal.
                                if error.kind() != io::ErrorKind::ConnectionReset {
                                    eprintln!("http_hello: connection error: {error}");
                                }
                            }
                        });
                    }
                    Err(error) => {
                        // Typically out of file descriptors: back off instead of spinning.
                        eprintln!("http_hello: accept failed: {error}");
                        greenrt::sleep(Duration::from_millis(10));
                    }
                }
            }
        })
        .join()
        .expect("the accept loop panicked");
        Ok(())
    })
}
