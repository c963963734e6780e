//! I/O-free HTTP/1.1 server framing for the fast path ([`super::h1_server`]):
//! a request head (and its small body) taken off the read buffer, and a
//! response head written for a body.
//!
//! The fast path serves only the plain, common request: HTTP/1.1, a
//! content-length body (or none) already read whole, no upgrade, no
//! `Expect`, no transfer coding, within the header limits. Everything else
//! is left to hyper (see [`Parsed::HandOff`]), which then answers exactly as
//! it always did, errors (400, 431, 408) included.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::SizeHint;
use http_body_util::Full;

use crate::h1_wire::{lists, put_field, put_length};
use crate::http::headers::REQUEST_HEADERS_ADDED;

/// Headers the fast path takes in one request; more go to hyper.
const MAX_FAST_HEADERS: usize = 32;

/// Largest body the fast path takes whole with its head.
pub const MAX_FAST_BODY: u64 = 64 * 1024;

/// The limits a request head is held to.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// Largest head in bytes.
    pub max_header_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
}

/// What to do with the bytes at the front of the read buffer.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // made once per request and moved out at once
pub enum Parsed {
    /// A whole request, taken off the buffer; `close` when the client
    /// asked for the connection to end after it.
    Ready {
        /// The request, with its whole body.
        req: Request<Full<Bytes>>,
        /// `Connection: close` was sent.
        close: bool,
    },
    /// The head or its body is not all there yet.
    Partial,
    /// Not for the fast path (malformed, over a limit, an upgrade, HTTP/1.0,
    /// `Expect`, a transfer coding, HEAD or CONNECT): hyper serves the
    /// connection from these bytes on.
    HandOff,
}

/// Where a header's name and value lie in the head.
#[derive(Clone, Copy, Default)]
struct Field {
    name: (u32, u32),
    value: (u32, u32),
}

/// Offsets of `part` inside `whole` (a sub-slice of it, shorter than the
/// head limit, so the offsets fit).
fn span(whole: &[u8], part: &[u8]) -> (u32, u32) {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    (start as u32, (start + part.len()) as u32)
}

/// Takes one request off the front of `buf` when the fast path can serve
/// it; leaves `buf` untouched otherwise.
pub fn parse_request(buf: &mut BytesMut, limits: HeadLimits) -> Parsed {
    let mut fields = [Field::default(); MAX_FAST_HEADERS];
    let mut raw =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FAST_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() <= limits.max_header_bytes => {
            return Parsed::Partial;
        }
        _ => return Parsed::HandOff,
    };
    if head_len > limits.max_header_bytes
        || req.headers.len() > limits.max_headers
        || req.version != Some(1)
    {
        return Parsed::HandOff;
    }
    let method = match req.method.map(|m| Method::from_bytes(m.as_bytes())) {
        Some(Ok(m)) if m != Method::HEAD && m != Method::CONNECT => m,
        _ => return Parsed::HandOff,
    };
    let path = span(buf, req.path.unwrap_or_default().as_bytes());
    let mut length = 0u64;
    let mut seen_length = false;
    let mut close = false;
    let count = req.headers.len();
    for (field, h) in fields.iter_mut().zip(req.headers.iter()) {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let parsed = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match parsed {
                Some(n) if !seen_length => {
                    length = n;
                    seen_length = true;
                }
                _ => return Parsed::HandOff,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return Parsed::HandOff;
        } else if name.eq_ignore_ascii_case(b"connection") {
            if lists(h.value, "upgrade") {
                return Parsed::HandOff;
            }
            close |= lists(h.value, "close");
        }
        field.name = span(buf, name);
        field.value = span(buf, h.value);
    }
    if length > MAX_FAST_BODY {
        return Parsed::HandOff;
    }
    let total = head_len + length as usize;
    if buf.len() < total {
        return Parsed::Partial;
    }
    let mut whole = buf.split_to(total).freeze();
    let body = whole.split_off(head_len);
    match build(&whole, method, path, &fields[..count], body.clone()) {
        Some(req) => Parsed::Ready { req, close },
        None => {
            // Rare (a URI or name `http` refuses): give the bytes back.
            let mut back = BytesMut::with_capacity(total + buf.len());
            back.extend_from_slice(&whole);
            back.extend_from_slice(&body);
            back.extend_from_slice(buf);
            *buf = back;
            Parsed::HandOff
        }
    }
}

/// The `http` request for a parsed head; header values and the path share
/// the head's bytes.
fn build(
    head: &Bytes,
    method: Method,
    path: (u32, u32),
    fields: &[Field],
    body: Bytes,
) -> Option<Request<Full<Bytes>>> {
    let slice = |(a, b): (u32, u32)| head.slice(a as usize..b as usize);
    let uri = Uri::from_maybe_shared(slice(path)).ok()?;
    let mut headers = HeaderMap::with_capacity(fields.len() + REQUEST_HEADERS_ADDED);
    for f in fields {
        let name = HeaderName::from_bytes(&head[f.name.0 as usize..f.name.1 as usize]).ok()?;
        let value = HeaderValue::from_maybe_shared(slice(f.value)).ok()?;
        headers.append(name, value);
    }
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Some(req)
}

/// How a response body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// No body at all (1xx, 204, 304).
    Empty,
}

/// Writes the response head for `resp` into `out` and says how its body is
/// framed: the response's own content-length, else the body's exact size,
/// else chunked. `close` adds `Connection: close`; `date` is added when the
/// response has none.
pub fn encode_head<B>(
    out: &mut Vec<u8>,
    resp: &Response<B>,
    hint: &SizeHint,
    close: bool,
    date: &[u8],
) -> Framing {
    let status = resp.status();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut framing = None;
    let mut has_date = false;
    for (name, value) in resp.headers() {
        if name == header::TRANSFER_ENCODING || name == header::CONNECTION {
            continue;
        }
        if name == header::CONTENT_LENGTH {
            if status == StatusCode::NO_CONTENT || status.is_informational() {
                continue;
            }
            let n: Option<u64> = value.to_str().ok().and_then(|v| v.trim().parse().ok());
            if let (Some(n), None) = (n, framing) {
                framing = Some(Framing::Length(n));
                // Written as the number it means (`+5` or ` 5` → `5`).
                put_length(out, n);
            }
            continue;
        }
        has_date |= name == header::DATE;
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let framing = if bodiless {
        Framing::Empty
    } else if let Some(f) = framing {
        f
    } else if let Some(n) = hint.exact() {
        put_length(out, n);
        Framing::Length(n)
    } else {
        put_field(out, b"transfer-encoding", b"chunked");
        Framing::Chunked
    };
    if close {
        put_field(out, b"connection", b"close");
    }
    if !has_date {
        put_field(out, b"date", date);
    }
    out.extend_from_slice(b"\r\n");
    framing
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_header_bytes: 8192,
        max_headers: 100,
    };

    fn parse(bytes: &[u8]) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        let p = parse_request(&mut buf, LIMITS);
        (p, buf)
    }

    #[test]
    fn takes_a_plain_request_and_leaves_the_next() {
        let (p, rest) = parse(
            b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nX-A: 1\r\nx-a: 2\r\n\r\nabcGET /",
        );
        let Parsed::Ready { req, close } = p else {
            panic!("{p:?}")
        };
        assert!(!close);
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "/a?b=1");
        assert_eq!(req.headers()["host"], "x");
        assert_eq!(req.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(http_body::Body::size_hint(req.body()).exact(), Some(3));
        assert_eq!(&rest[..], b"GET /");
    }

    #[test]
    fn waits_for_the_rest() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost").0,
            Parsed::Partial
        ));
        let head = b"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\nab";
        let (p, rest) = parse(head);
        assert!(matches!(p, Parsed::Partial));
        assert_eq!(&rest[..], head, "nothing taken");
    }

    #[test]
    fn leaves_the_unusual_to_hyper() {
        for head in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"HEAD / HTTP/1.1\r\n\r\n",
            b"CONNECT a:1 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\nx",
            b"POST / HTTP/1.1\r\ncontent-length: +1\r\n\r\nx",
            b"POST / HTTP/1.1\r\ncontent-length: 99999999\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
            b"\x16\x03\x01garbage\r\n\r\n",
        ] {
            let (p, rest) = parse(head);
            assert!(
                matches!(p, Parsed::HandOff),
                "{:?}",
                String::from_utf8_lossy(head)
            );
            assert_eq!(&rest[..], head, "bytes kept for hyper");
        }
        let big = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(9000));
        assert!(matches!(parse(big.as_bytes()).0, Parsed::HandOff));
        let many: String = (0..40).map(|i| format!("h{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(parse(many.as_bytes()).0, Parsed::HandOff));
    }

    #[test]
    fn connection_close_is_noted() {
        let (p, _) = parse(b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n");
        assert!(matches!(p, Parsed::Ready { close: true, .. }));
    }

    #[test]
    fn response_heads_frame_their_bodies() {
        let date = b"Sun, 22 Nov 2026 16:00:00 GMT";
        let mut out = Vec::new();
        let resp = Response::builder()
            .status(200)
            .header("x-a", "1")
            .body(())
            .unwrap();
        let f = encode_head(&mut out, &resp, &SizeHint::with_exact(5), false, date);
        assert_eq!(f, Framing::Length(5));
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\ndate: Sun, 22 Nov 2026 16:00:00 GMT\r\n\r\n"
        );
        out.clear();
        let resp = Response::builder()
            .status(503)
            .header("transfer-encoding", "chunked")
            .header("date", "d")
            .body(())
            .unwrap();
        let f = encode_head(&mut out, &resp, &SizeHint::new(), true, date);
        assert_eq!(f, Framing::Chunked);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "HTTP/1.1 503 Service Unavailable\r\ndate: d\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        out.clear();
        let resp = Response::builder()
            .status(204)
            .header("content-length", "0")
            .body(())
            .unwrap();
        let f = encode_head(&mut out, &resp, &SizeHint::with_exact(0), false, date);
        assert_eq!(f, Framing::Empty);
        assert!(
            !String::from_utf8(out.clone())
                .unwrap()
                .contains("content-length")
        );
        out.clear();
        let resp = Response::builder()
            .status(200)
            .header("content-length", "+7")
            .body(())
            .unwrap();
        assert_eq!(
            encode_head(&mut out, &resp, &SizeHint::new(), false, date),
            Framing::Length(7)
        );
        assert!(
            String::from_utf8(out.clone())
                .unwrap()
                .contains("content-length: 7\r\n")
        );
    }
}
