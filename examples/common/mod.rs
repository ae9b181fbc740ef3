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
/// `Connection: keep-alive` end the connection after the answer. Lines may also end
/// with a bare `\n`, as RFC 9112 allows.
///
/// Kept light on stack on purpose: the green server runs it on each connection's own
/// stack, where every line of its frames is one more line per connection to bring back
/// into cache (README, "Where greenrt's CPU goes"). So it walks the bytes with plain
/// loops: `str::split`'s searchers kept 328 bytes of iterator state in `parse`'s frame
/// and called `next_match` and `memchr` below it, making the parser the deepest call
/// chain of a request, ten cache lines below the serving loop.
pub fn parse(buf: &[u8]) -> Parsed {
    let Some(head_end) = find_head_end(buf) else {
        return if buf.len() >= MAX_HEAD {
            Parsed::TooLarge
        } else {
            Parsed::Incomplete
        };
    };
    let head = &buf[..head_end];
    if std::str::from_utf8(head).is_err() {
        return Parsed::Bad;
    }
    let (request_line, mut headers) = split_line(head);
    let Some(mut keep_alive) = version_keeps_alive(request_line) else {
        return Parsed::Bad;
    };
    let mut body = 0usize;
    while let Some(rest) = headers {
        let (line, next) = split_line(rest);
        headers = next;
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Parsed::Bad;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            match parse_length(value) {
                Some(n) => body = n,
                None => return Parsed::Bad,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
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

/// The first line of `text` without its `\r\n` or `\n`, and what follows that end
/// (`None` when `text` has no line end left: this was its last line).
fn split_line(text: &[u8]) -> (&[u8], Option<&[u8]>) {
    let (line, rest) = match text.iter().position(|&b| b == b'\n') {
        Some(end) => (&text[..end], Some(&text[end + 1..])),
        None => (text, None),
    };
    (line.strip_suffix(b"\r").unwrap_or(line), rest)
}

/// For a request line `METHOD TARGET VERSION` (exactly two spaces): whether its version
/// keeps the connection open by default, or `None` when it is not HTTP/1.x.
fn version_keeps_alive(request_line: &[u8]) -> Option<bool> {
    let mut spaces = request_line
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b' ')
        .map(|(at, _)| at);
    let (Some(_), Some(last), None) = (spaces.next(), spaces.next(), spaces.next()) else {
        return None;
    };
    match &request_line[last + 1..] {
        b"HTTP/1.1" => Some(true),
        b"HTTP/1.0" => Some(false),
        _ => None,
    }
}

/// A `Content-Length` value: one or more ASCII digits, not overflowing `usize`.
fn parse_length(value: &[u8]) -> Option<usize> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0usize, |n, &b| {
        let digit = (b as char).to_digit(10)?;
        n.checked_mul(10)?.checked_add(digit as usize)
    })
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
