//! Header blocks to and from HTTP messages: a request head (or trailers)
//! built from decoded fields with RFC 9113 §8.2–8.3's checks, and a
//! response head (or trailers) encoded for the wire.
//!
//! Decoded values are copied into one buffer per block and handed out as
//! slices of it, so a request's header values cost one allocation, not
//! one each.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Uri};
use meshwork_hpack::{Encoder, Field};

use crate::http::headers::{
    REQUEST_HEADERS_ADDED, h2_field_name, h2_header_map, is_connection_specific,
};

/// Why a header block does not make a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed (RFC 9113 §8.1.1), with what was wrong.
    Malformed(&'static str),
    /// Larger than the header list limit.
    TooLarge,
}

/// Collects one header block's fields as they are decoded.
pub struct HeadBuilder {
    trailers: bool,
    max_list: usize,
    max_fields: usize,
    counted: usize,
    list: usize,
    arena: BytesMut,
    /// Names, value ranges in `arena`, and whether the client sent the
    /// value "never indexed" (kept so on the way upstream, RFC 7541 §6.2.3).
    fields: Vec<(HeaderName, Range<usize>, bool)>,
    method: Option<Method>,
    scheme: Option<Range<usize>>,
    authority: Option<Range<usize>>,
    path: Option<Range<usize>>,
    regular_seen: bool,
    error: Option<HeadError>,
}

impl HeadBuilder {
    /// A builder for a request head (`trailers` false) or trailers, that
    /// refuses lists larger than `max_list` octets (RFC 9113 §6.5.2
    /// accounting) or with more than `max_fields` regular fields.
    pub fn new(trailers: bool, max_list: usize, max_fields: usize) -> HeadBuilder {
        HeadBuilder {
            trailers,
            max_list,
            max_fields,
            counted: 0,
            list: 0,
            arena: BytesMut::new(),
            fields: Vec::new(),
            method: None,
            scheme: None,
            authority: None,
            path: None,
            regular_seen: false,
            error: None,
        }
    }

    fn fail(&mut self, e: HeadError) {
        self.error.get_or_insert(e);
    }

    /// Sizes the value buffer for a block of `len` octets (values decode
    /// to at most about 1.6 times their Huffman-coded size).
    pub fn expect(&mut self, len: usize) {
        self.arena.reserve(2 * len);
    }

    fn keep(&mut self, value: &[u8]) -> Range<usize> {
        let start = self.arena.len();
        self.arena.extend_from_slice(value);
        start..self.arena.len()
    }

    /// Takes one decoded field.
    pub fn field(&mut self, f: Field<'_>) {
        self.list += f.name.len() + f.value.len() + 32;
        if self.list > self.max_list {
            self.fail(HeadError::TooLarge);
        }
        if self.error.is_some() {
            return;
        }
        if let Some(pseudo) = f.name.strip_prefix(b":") {
            if self.regular_seen || self.trailers {
                return self.fail(HeadError::Malformed("pseudo-header after a regular header"));
            }
            let slot = match pseudo {
                b"method" => {
                    if self.method.is_some() {
                        return self.fail(HeadError::Malformed("duplicate :method"));
                    }
                    match Method::from_bytes(f.value) {
                        Ok(m) => self.method = Some(m),
                        Err(_) => self.fail(HeadError::Malformed("invalid :method")),
                    }
                    return;
                }
                b"scheme" => &self.scheme,
                b"authority" => &self.authority,
                b"path" => &self.path,
                _ => return self.fail(HeadError::Malformed("unknown pseudo-header")),
            };
            if slot.is_some() {
                return self.fail(HeadError::Malformed("duplicate pseudo-header"));
            }
            let range = Some(self.keep(f.value));
            match pseudo {
                b"scheme" => self.scheme = range,
                b"authority" => self.authority = range,
                _ => self.path = range,
            }
            return;
        }
        self.regular_seen = true;
        let name = match h2_field_name(&f) {
            Ok(name) => name,
            Err(why) => return self.fail(HeadError::Malformed(why)),
        };
        if name == header::TE && f.value != b"trailers" {
            return self.fail(HeadError::Malformed("te other than trailers"));
        }
        // Cookie crumbs (one field per cookie, RFC 9113 §8.2.3) are one header.
        if name != header::COOKIE {
            self.counted += 1;
            if self.counted > self.max_fields {
                return self.fail(HeadError::TooLarge);
            }
        }
        let range = self.keep(f.value);
        self.fields.push((name, range, f.never_indexed));
    }

    /// The header map of the block, and the arena its values live in.
    fn headers(&mut self) -> Result<(HeaderMap, Bytes), HeadError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let arena = std::mem::take(&mut self.arena).freeze();
        let map = h2_header_map(&mut self.fields, &arena, REQUEST_HEADERS_ADDED)
            .ok_or(HeadError::Malformed("invalid header value"))?;
        Ok((map, arena))
    }

    /// The trailers.
    pub fn into_trailers(mut self) -> Result<HeaderMap, HeadError> {
        self.headers().map(|(map, _)| map)
    }

    /// The request (body attached by the caller) and its declared length.
    pub fn into_request(mut self) -> Result<(Request<()>, Option<u64>), HeadError> {
        let (headers, arena) = self.headers()?;
        let method = self
            .method
            .take()
            .ok_or(HeadError::Malformed("missing :method"))?;
        let authority = match self.authority.take() {
            Some(r) => Some(
                Authority::from_maybe_shared(arena.slice(r))
                    .map_err(|_| HeadError::Malformed("invalid :authority"))?,
            ),
            None => None,
        };
        let mut uri = http::uri::Parts::default();
        if method == Method::CONNECT {
            if self.scheme.is_some() || self.path.is_some() || authority.is_none() {
                return Err(HeadError::Malformed("CONNECT takes only :authority"));
            }
            uri.authority = authority;
        } else {
            let scheme = self
                .scheme
                .take()
                .ok_or(HeadError::Malformed("missing :scheme"))?;
            let path = self
                .path
                .take()
                .ok_or(HeadError::Malformed("missing :path"))?;
            if path.is_empty() {
                return Err(HeadError::Malformed("empty :path"));
            }
            uri.path_and_query = Some(
                PathAndQuery::from_maybe_shared(arena.slice(path))
                    .map_err(|_| HeadError::Malformed("invalid :path"))?,
            );
            if authority.is_some() {
                uri.scheme = Some(
                    Scheme::try_from(&arena[scheme])
                        .map_err(|_| HeadError::Malformed("invalid :scheme"))?,
                );
                uri.authority = authority;
            }
        }
        let uri =
            Uri::from_parts(uri).map_err(|_| HeadError::Malformed("invalid request target"))?;
        let declared = match headers.get(header::CONTENT_LENGTH) {
            None => None,
            Some(v) => Some(
                Some(v.as_bytes())
                    .filter(|b| !b.is_empty() && b.iter().all(u8::is_ascii_digit))
                    .and_then(|b| std::str::from_utf8(b).ok()?.parse::<u64>().ok())
                    .ok_or(HeadError::Malformed("invalid content-length"))?,
            ),
        };
        let mut req = Request::new(());
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = http::Version::HTTP_2;
        *req.headers_mut() = headers;
        Ok((req, declared))
    }
}

/// Appends a response head's header block: `:status`, the headers (less
/// connection-specific ones), `date` when missing, and `content-length`
/// when missing and the body's length is known (as hyper's server does).
pub fn encode_response(
    enc: &mut Encoder,
    parts: &http::response::Parts,
    exact: Option<u64>,
    date: &[u8],
    dst: &mut Vec<u8>,
) {
    let status = parts.status.as_u16();
    enc.begin_block(dst);
    enc.encode_status(status, dst);
    encode_fields(enc, &parts.headers, dst);
    if !parts.headers.contains_key(header::DATE) {
        enc.encode(b"date", date, false, dst);
    }
    let bodiless = status == 204 || status == 304 || status < 200;
    if let Some(n) = exact
        && !bodiless
        && !parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        enc.encode(b"content-length", n.to_string().as_bytes(), false, dst);
    }
}

/// Appends trailers' header block.
pub fn encode_trailers(enc: &mut Encoder, trailers: &HeaderMap, dst: &mut Vec<u8>) {
    enc.begin_block(dst);
    encode_fields(enc, trailers, dst);
}

fn encode_fields(enc: &mut Encoder, headers: &HeaderMap, dst: &mut Vec<u8>) {
    for (name, value) in headers {
        if is_connection_specific(name) || name == header::TE {
            continue;
        }
        enc.encode(
            name.as_str().as_bytes(),
            value.as_bytes(),
            value.is_sensitive(),
            dst,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<'a>(name: &'a str, value: &'a str) -> Field<'a> {
        Field {
            name: name.as_bytes(),
            value: value.as_bytes(),
            static_index: None,
            never_indexed: false,
        }
    }

    fn build(fields: &[(&str, &str)]) -> Result<(Request<()>, Option<u64>), HeadError> {
        let mut b = HeadBuilder::new(false, 16 * 1024, 100);
        for (n, v) in fields {
            b.field(field(n, v));
        }
        b.into_request()
    }

    #[test]
    fn a_value_sent_never_indexed_stays_sensitive() {
        let mut b = HeadBuilder::new(false, 16 * 1024, 100);
        for (n, v) in [(":method", "GET"), (":scheme", "http"), (":path", "/")] {
            b.field(field(n, v));
        }
        b.field(Field {
            never_indexed: true,
            ..field("x-token", "secret")
        });
        b.field(field("x-plain", "1"));
        let (req, _) = b.into_request().unwrap();
        assert!(req.headers()["x-token"].is_sensitive());
        assert!(!req.headers()["x-plain"].is_sensitive());
    }

    #[test]
    fn a_request_head_becomes_a_request() {
        let (req, declared) = build(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "svc:8080"),
            (":path", "/pkg.Svc/Call?x=1"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("content-length", "5"),
            ("x-b3", "a"),
            ("x-b3", "b"),
        ])
        .unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "http://svc:8080/pkg.Svc/Call?x=1");
        assert_eq!(req.version(), http::Version::HTTP_2);
        assert_eq!(req.headers().get_all("x-b3").iter().count(), 2);
        assert_eq!(declared, Some(5));
    }

    #[test]
    fn malformed_heads_are_refused() {
        let base = [(":method", "GET"), (":scheme", "http"), (":path", "/")];
        assert!(build(&base).is_ok());
        let cases: &[&[(&str, &str)]] = &[
            &[(":method", "GET"), (":path", "/")],
            &[(":method", "GET"), (":scheme", "http")],
            &[(":method", "GET"), (":scheme", "http"), (":path", "")],
            &[
                ("x", "1"),
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
            ],
            &[
                (":method", "GET"),
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("X-Up", "1"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("connection", "close"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("te", "gzip"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":protocol", "ws"),
            ],
            &[
                (":method", "CONNECT"),
                (":authority", "a:1"),
                (":path", "/"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("content-length", "x"),
            ],
        ];
        for fields in cases {
            assert!(
                matches!(build(fields), Err(HeadError::Malformed(_))),
                "{fields:?}"
            );
        }
        let (connect, _) = build(&[(":method", "CONNECT"), (":authority", "a:1")]).unwrap();
        assert_eq!(connect.uri().authority().unwrap(), "a:1");
    }

    #[test]
    fn a_list_over_the_limit_is_too_large() {
        let mut b = HeadBuilder::new(false, 100, 100);
        b.field(field(":method", "GET"));
        b.field(field("x-big", &"v".repeat(80)));
        assert_eq!(b.into_request().unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn a_response_head_is_encoded_with_date_and_length() {
        let mut resp = http::Response::new(());
        resp.headers_mut()
            .insert("connection", "close".parse().unwrap());
        resp.headers_mut().insert("x-app", "1".parse().unwrap());
        let (parts, ()) = resp.into_parts();
        let mut out = Vec::new();
        encode_response(&mut Encoder::new(), &parts, Some(12), b"Mon", &mut out);
        let mut got = Vec::new();
        meshwork_hpack::Decoder::new(4096)
            .decode(&out, |f| {
                got.push((
                    String::from_utf8_lossy(f.name).into_owned(),
                    String::from_utf8_lossy(f.value).into_owned(),
                ))
            })
            .unwrap();
        let got: Vec<(&str, &str)> = got.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(
            got,
            [
                (":status", "200"),
                ("x-app", "1"),
                ("date", "Mon"),
                ("content-length", "12")
            ]
        );
    }
}
