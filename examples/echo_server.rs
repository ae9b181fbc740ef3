//! An echo server in plain blocking Rust: one green thread per connection, each a
//! `read`/`write_all` loop on a `greenrt::net::TcpStream`. Only the green thread
//! waiting on a socket suspends; thousands of connections share the workers.
//!
//! ```text
//! cargo run --release --example echo_server -- [ADDR] [--workers N]
//! nc 127.0.0.1 7878        # type lines; they come back
//! ```
//!
//! ADDR defaults to `127.0.0.1:7878`; the worker count comes from `--workers N`, else
//! `$GREENRT_WORKERS`, else one per CPU.

mod common;

use common::Args;
use greenrt::net::{TcpListener, TcpStream};
use std::io::{self, Read, Write};
use std::time::Duration;

/// Echoes everything until the client closes its side.
fn echo(mut conn: TcpStream) -> io::Result<u64> {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        conn.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn main() -> io::Result<()> {
    let args = Args::parse("127.0.0.1:7878", "GREENRT_WORKERS");
    let mut builder = greenrt::runtime::Builder::new();
    if let Some(workers) = args.workers {
        builder.worker_threads(workers);
    }
    // `run` makes this thread's closure a green thread, so the accept loop below is
    // blocking-style code like the connection handlers.
    builder.build()?.run(|| serve(args))
}

fn serve(args: Args) -> io::Result<()> {
    let listener = TcpListener::bind(args.addr.as_str())?;
    println!("echo_server listening on {}", listener.local_addr()?);
    for conn in listener.incoming() {
        match conn {
            Ok(conn) => {
                greenrt::spawn(move || {
                    let peer = conn.peer_addr().ok();
                    match echo(conn) {
                        Ok(bytes) => println!("{peer:?}: closed after {bytes} bytes"),
                        Err(error) => eprintln!("{peer:?}: {error}"),
                    }
                });
            }
            Err(error) => {
                eprintln!("accept failed: {error}");
                greenrt::sleep(Duration::from_millis(10));
            }
        }
    }
    Ok(())
}
