//! The request parser the two HTTP examples share (`examples/common/mod.rs`): what
//! `http_hello` and `tokio_http_hello` answer depends on it, and `benches/http_load.sh`
//! compares the runtimes only while both parse alike.

#[path = "../examples/common/mod.rs"]
mod http;

use http::{parse, response, Parsed, MAX_HEAD, RESPONSE_CLOSE, RESPONSE_KEEP_ALIVE};

fn request(len: usize, keep_alive: bool) -> Parsed {
    Parsed::Request { len, keep_alive }
}

#[test]
fn a_keep_alive_request_is_found_with_its_length() {
    let req = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    assert_eq!(parse(req), request(req.len(), true));
}

#[test]
fn only_the_first_of_pipelined_requests_is_parsed() {
    let one = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut two = one.to_vec();
    two.extend_from_slice(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(parse(&two), request(one.len(), true));
}

#[test]
fn a_head_without_its_blank_line_is_incomplete() {
    assert_eq!(parse(b""), Parsed::Incomplete);
    assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::Incomplete);
}

#[test]
fn connection_close_and_http_1_0_end_the_connection() {
    let close = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
    assert_eq!(parse(close), request(close.len(), false));
    let old = b"GET / HTTP/1.0\r\n\r\n";
    assert_eq!(parse(old), request(old.len(), false));
    let old_kept = b"GET / HTTP/1.0\r\nconnection: Keep-Alive\r\n\r\n";
    assert_eq!(parse(old_kept), request(old_kept.len(), true));
    let tokens = b"GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n";
    assert_eq!(parse(tokens), request(tokens.len(), false));
}

#[test]
fn lines_ended_by_a_bare_line_feed_are_accepted() {
    let req = b"GET / HTTP/1.1\nConnection: close\r\n\r\n";
    assert_eq!(parse(req), request(req.len(), false));
}

#[test]
fn a_content_length_body_belongs_to_the_request() {
    let head = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
    let mut whole = head.to_vec();
    whole.extend_from_slice(b"hello");
    assert_eq!(parse(&whole), request(whole.len(), true));
    assert_eq!(parse(&whole[..whole.len() - 1]), Parsed::Incomplete);
}

#[test]
fn malformed_requests_are_bad() {
    for bad in [
        &b"GET /\r\n\r\n"[..],
        b"GET / HTTP/1.1 extra\r\n\r\n",
        b"GET / HTTP/2\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: many\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \xff\r\n\r\n",
    ] {
        assert_eq!(parse(bad), Parsed::Bad, "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn a_head_that_fills_the_buffer_is_too_large() {
    let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
    head.resize(MAX_HEAD, b'a');
    assert_eq!(parse(&head), Parsed::TooLarge);
}

#[test]
fn the_answer_matches_keep_alive() {
    assert_eq!(response(true), RESPONSE_KEEP_ALIVE);
    assert_eq!(response(false), RESPONSE_CLOSE);
    assert!(RESPONSE_CLOSE
        .windows(b"Connection: close".len())
        .any(|w| w == b"Connection: close"));
}

#[test]
fn a_content_length_is_digits_that_fit() {
    for value in ["", "+5", "-1", "5 5", "0x10", "99999999999999999999999"] {
        let req = format!("POST / HTTP/1.1\r\nContent-Length: {value}\r\n\r\n");
        assert_eq!(
            parse(req.as_bytes()),
            Parsed::Bad,
            "Content-Length: {value:?}"
        );
    }
    let padded = b"POST / HTTP/1.1\r\nContent-Length: \t 2 \r\n\r\nok";
    assert_eq!(parse(padded), request(padded.len(), true));
}

#[test]
fn the_request_line_needs_exactly_two_spaces() {
    assert_eq!(parse(b"GET  / HTTP/1.1\r\n\r\n"), Parsed::Bad);
    assert_eq!(parse(b"GET / HTTP/1.1 \r\n\r\n"), Parsed::Bad);
    let bare = b"GET / HTTP/1.0\r\n\r\n";
    assert_eq!(parse(bare), request(bare.len(), false));
}
