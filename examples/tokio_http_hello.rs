//! The server of `http_hello.rs` written the idiomatic tokio way: a multi-threaded
//! runtime, an accept loop, one `tokio::spawn`ed task per connection, `AsyncReadExt`/
//! `AsyncWriteExt` on `tokio::net::TcpStream`. Same request parser
//! (`examples/common/mod.rs`), same answers, so the two can be compared under load.
//!
//! ```text
//! cargo run --release --example tokio_http_hello -- [ADDR] [--workers N]
//! curl http://127.0.0.1:8080/
//! ```
//!
//! ADDR defaults to `127.0.0.1:8080`; the worker count comes from `--workers N`, else
//! `$TOKIO_WORKERS`, else one per CPU. `benches/http_load.sh` runs it against the
//! greenrt version under `wrk`.

mod common;

use common::{parse, response, Args, Parsed, BAD_REQUEST, HEAD_TOO_LARGE, MAX_HEAD};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves one connection until the client closes it or asks to.
async fn serve(mut conn: TcpStream) -> io::Result<()> {
    conn.set_nodelay(true)?;
    let mut buf = [0u8; MAX_HEAD];
    let mut filled = 0;
    loop {
        match parse(&buf[..filled]) {
            Parsed::Request { len, keep_alive } => {
                conn.write_all(response(keep_alive)).await?;
                if !keep_alive {
                    return Ok(());
                }
                buf.copy_within(len..filled, 0);
                filled -= len;
                continue;
            }
            Parsed::Bad => return conn.write_all(BAD_REQUEST).await,
            Parsed::TooLarge => return conn.write_all(HEAD_TOO_LARGE).await,
            Parsed::Incomplete if filled == buf.len() => {
                return conn.write_all(HEAD_TOO_LARGE).await
            }
            Parsed::Incomplete => {}
        }
        let n = conn.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
    }
}

fn main() -> io::Result<()> {
    let args = Args::parse("127.0.0.1:8080", "TOKIO_WORKERS");
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(workers) = args.workers {
        builder.worker_threads(workers);
    }
    let rt = builder.build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(args.addr.as_str()).await?;
        let workers = args
            .workers
            .map_or_else(|| "default".to_string(), |n| n.to_string());
        println!(
            "tokio_http_hello (tokio, workers: {workers}) listening on http://{}/",
            listener.local_addr()?
        );
        loop {
            match listener.accept().await {
                Ok((conn, _)) => {
                    tokio::spawn(async move {
                        if let Err(error) = serve(conn).await {
                            if error.kind() != io::ErrorKind::ConnectionReset {
                                eprintln!("tokio_http_hello: connection error: {error}");
                            }
                        }
                    });
                }
                Err(error) => {
                    eprintln!("tokio_http_hello: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
}
