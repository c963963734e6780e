//! Arbitrary bytes from a client, taken request by request the way the
//! proxy's HTTP/1.1 fast path takes them (`http::h1_head`). Nothing may
//! panic; a request taken consumes bytes and its body is never longer than
//! the input; bytes the fast path does not take stay untouched for hyper.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use meshwork_proxy::http::h1_head::{HeadLimits, Parsed, parse_request};

fuzz_target!(|data: &[u8]| {
    let limits = HeadLimits {
        max_header_bytes: 8 * 1024,
        max_headers: 100,
    };
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.clone();
        match parse_request(&mut buf, limits) {
            Parsed::Ready { req, .. } => {
                assert!(buf.len() < before.len(), "a request consumes bytes");
                let body = http_body::Body::size_hint(req.body()).exact();
                assert!(body.is_some_and(|n| n as usize <= data.len()));
            }
            Parsed::Partial | Parsed::HandOff => {
                assert_eq!(buf, before, "bytes left for hyper are untouched");
                return;
            }
        }
    }
});
