//! Shared by the server examples: command-line settings and a minimal HTTP/1.1 request
//! parser. The green and the tokio HTTP servers use the same parser, so comparing them
//! compares the runtimes, not two parsers.
// Each example compiles this module and uses only some of it.
#![allow(dead_code)]

use std::str::FromStr;

/// Settings every server example takes: `[ADDR] [--workers N]`.
pub struct Args {
    /// Where to listen (first positional argument, else `default_addr`).
    pub addr: String,
    /// Worker threads (`--workers N`, else the environment variable named by the
    /// example, else `None`: the runtime's default of one per CPU).
    pub workers: Option<usize>,
}

impl Args {
    /// Parses `std::env::args()`; exits with a usage message on bad input.
    pub fn parse(default_addr: &str, workers_env: &str) -> Args {
        let program = std::env::args().next().unwrap_or_default();
        let usage = |problem: String| -> ! {
            eprintln!(
                "{problem}\nusage: {program} [ADDR (default {default_addr})] [--workers N]\n\
                       (the worker count can also come from ${workers_env})"
            );
            std::process::exit(2)
        };
        let mut addr = None;
        let mut workers = None;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            if arg == "--workers" {
                let value = args
                    .next()
                    .unwrap_or_else(|| usage("--workers needs a number".to_string()));
                workers = Some(parse_workers(&value).unwrap_or_else(|e| usage(e)));
            } else if let Some(value) = arg.strip_prefix("--workers=") {
                workers = Some(parse_workers(value).unwrap_or_else(|e| usage(e)));
            } else if arg == "-h" || arg == "--help" {
                usage(String::new());
            } else if addr.is_none() && !arg.starts_with('-') {
                addr = Some(arg);
            } else {
                usage(format!("unexpected argument {arg:?}"));
            }
        }
        if workers.is_none() {
            if let Ok(value) = std::env::var(workers_env) {
                workers = Some(
                    parse_workers(&value).unwrap_or_else(|e| usage(format!("${workers_env}: {e}"))),
                );
            }
        }
        Args {
            addr: addr.unwrap_or_else(|| default_addr.to_string()),
            workers,
        }
    }
}

fn parse_workers(value: &str) -> Result<usize, String> {
    match usize::from_str(value.trim()) {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "worker count {value:?} is not a positive whole number; pass e.g. --workers 1"
        )),
    }
}

/// The longest request head accepted; longer ones get 431 and the connection closes.
pub const MAX_HEAD: usize = 8192;

const BODY: &str = "Hello, world!";

/// The answer to every request on a connection that stays open.
pub const RESPONSE_KEEP_ALIVE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!";

/// The answer to a request that asked to close the connection (or was HTTP/1.0).
pub const RESPONSE_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nHello, world!";

/// The answer to a request we cannot parse; the connection closes after it.
pub const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// The answer to a request head longer than [`MAX_HEAD`].
pub const HEAD_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// What the bytes received so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole request yet: read more.
    Incomplete,
    /// A whole request of `len` bytes (head and body); answer it, then drop those bytes.
    Request { len: usize, keep_alive: bool },
    /// Not HTTP/1.x we understand: answer [`BAD_REQUEST`] and close.
    Bad,
    /// The head is longer than [`MAX_HEAD`]: answer [`HEAD_TOO_LARGE`] and close.
    TooLarge,
}

/// Parses the first request in `buf`: the head ends at the first `\r\n\r\n`; a
/// `Content-Length` body is skipped; `Connection: close` and HTTP/1.0 without
/// `Connection: keep-alive` end the connection after the answer.
///
/// Kept light on stack on purpose: the green server runs it on each connection's own
/// stack, where every line of its frames is one more line per connection to bring back
/// into cache (README, "Where greenrt's CPU goes"). Splitting the head at the string
/// `"\r\n"` kept std's two-way searcher in `parse`'s frame (512 bytes against 384 now)
/// and called its `next` below that.
pub fn parse(buf: &[u8]) -> Parsed {
    let Some(head_end) = find_head_end(buf) else {
        return if buf.len() >= MAX_HEAD {
            Parsed::TooLarge
        } else {
            Parsed::Incomplete
        };
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_end]) else {
        return Parsed::Bad;
    };
    // Split at '\n' (a byte search) and drop the '\r': a bare '\n' ends a line too, as
    // RFC 9112 allows.
    let mut lines = head
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(_method), Some(_target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Bad;
    };
    let mut keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Parsed::Bad,
    };
    let mut body = 0usize;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Bad;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            match value.parse() {
                Ok(n) => body = n,
                Err(_) => return Parsed::Bad,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked bodies are out of scope for a hello-world server.
            return Parsed::Bad;
        }
    }
    let len = head_end + 4 + body;
    if buf.len() < len {
        return Parsed::Incomplete;
    }
    Parsed::Request { len, keep_alive }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The response for a parsed request.
pub fn response(keep_alive: bool) -> &'static [u8] {
    debug_assert!(RESPONSE_CLOSE.ends_with(BODY.as_bytes()));
    if keep_alive {
        RESPONSE_KEEP_ALIVE
    } else {
        RESPONSE_CLOSE
    }
}
