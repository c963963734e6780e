//! Upstream HTTP/1.1 responses, parsed and decoded without I/O: the head
//! with `httparse` (hyper's parser) and the body in whatever framing RFC
//! 9112 allows (content-length, chunked with extensions and trailers,
//! close-delimited, none). [`crate::upstream_h1_codec`] feeds it from the
//! socket; the fuzz target `upstream_response` feeds it anything.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body::Frame;

use crate::h1_wire::lists;
use crate::http::headers::RESPONSE_HEADERS_ADDED;

/// Response head bytes accepted at most.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Response header fields accepted at most.
const MAX_HEADERS: usize = 100;
/// A chunk-size line (with extensions) longer than this is refused.
const MAX_CHUNK_LINE: usize = 4096;

/// Why an exchange on a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The socket failed or closed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The upstream sent something that is not HTTP/1.1.
    #[error("invalid response: {0}")]
    Invalid(String),
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `content-length`: bytes still to come.
    Fixed(u64),
    /// Chunked transfer coding, at this point of a chunk.
    Chunked(ChunkState),
    /// Until the server closes the connection.
    Close,
    /// Complete.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// A parsed response head and how its body is framed.
pub struct Head {
    /// Status, version and headers (the body is read separately).
    pub response: Response<()>,
    pub(crate) framing: Framing,
    pub(crate) keep_alive: bool,
}

/// Parses a response head at the start of `buf`: `None` while incomplete.
pub fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<(Head, usize)>, CodecError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut fields);
    let n = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(CodecError::Invalid(e.to_string())),
    };
    let code = r.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| CodecError::Invalid(format!("status {code}")))?;
    let version = if r.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // One pass: the header map, and what framing and reuse depend on.
    let mut headers = HeaderMap::with_capacity(r.headers.len() + RESPONSE_HEADERS_ADDED);
    let mut facts = Facts::default();
    for f in r.headers.iter() {
        let name = HeaderName::from_bytes(f.name.as_bytes())
            .map_err(|_| CodecError::Invalid(format!("header name {:?}", f.name)))?;
        let value = HeaderValue::from_bytes(f.value)
            .map_err(|_| CodecError::Invalid(format!("value of {name}")))?;
        facts.learn(&name, f.value)?;
        headers.append(name, value);
    }
    if facts.chunked.is_some() {
        // Transfer-Encoding overrides Content-Length (RFC 9112 6.3): a
        // length next to it is dropped, never passed on with another body.
        headers.remove(header::CONTENT_LENGTH);
    }
    let framing = if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Done
    } else if let Some(chunked) = facts.chunked {
        if chunked {
            Framing::Chunked(ChunkState::Size)
        } else {
            Framing::Close
        }
    } else {
        match facts.length {
            Some(0) => Framing::Done,
            Some(n) => Framing::Fixed(n),
            None => Framing::Close,
        }
    };
    let keep_alive = framing != Framing::Close
        && !facts.close
        && (version == Version::HTTP_11 || facts.keep_alive);
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Some((
        Head {
            response,
            framing,
            keep_alive,
        },
        n,
    )))
}

/// What a response's headers say about its framing and its connection.
#[derive(Default)]
struct Facts {
    /// `transfer-encoding` seen: whether its last coding is chunked.
    chunked: Option<bool>,
    /// `content-length`, consistent over its fields.
    length: Option<u64>,
    /// `connection: close`.
    close: bool,
    /// `connection: keep-alive` (HTTP/1.0).
    keep_alive: bool,
}

impl Facts {
    fn learn(&mut self, name: &HeaderName, value: &[u8]) -> Result<(), CodecError> {
        if name == header::TRANSFER_ENCODING {
            let last = value.rsplit(|b| *b == b',').next().unwrap_or(b"");
            self.chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONTENT_LENGTH {
            for part in value.split(|b| *b == b',') {
                let n = std::str::from_utf8(part.trim_ascii())
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| CodecError::Invalid("bad content-length".into()))?;
                if self.length.is_some_and(|l| l != n) {
                    return Err(CodecError::Invalid("conflicting content-length".into()));
                }
                self.length = Some(n);
            }
        } else if name == header::CONNECTION {
            self.close |= lists(value, "close");
            self.keep_alive |= lists(value, "keep-alive");
        }
        Ok(())
    }
}

/// What [`BodyDecoder::decode`] found in the buffered bytes.
pub enum Decoded {
    /// A data or trailers frame.
    Frame(Frame<Bytes>),
    /// More bytes are needed.
    NeedMore,
    /// The body is complete.
    End,
}

/// Decodes a response body from the bytes read so far, whatever its
/// framing; no I/O, so the connection's body and the fuzz target share it.
#[derive(Debug, Clone, Copy)]
pub struct BodyDecoder {
    framing: Framing,
}

impl BodyDecoder {
    /// The decoder for the body of `head`.
    pub fn new(head: &Head) -> Self {
        BodyDecoder {
            framing: head.framing,
        }
    }

    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        self.framing == Framing::Done
    }

    /// Body bytes still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self.framing {
            Framing::Fixed(n) => Some(n),
            Framing::Done => Some(0),
            _ => None,
        }
    }

    /// The next frame from `buf`. `eof`: no more bytes will come (the
    /// connection closed), which ends a close-delimited body and cuts any
    /// other short.
    pub fn decode(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Decoded, CodecError> {
        loop {
            match self.framing {
                Framing::Done => return Ok(Decoded::End),
                Framing::Fixed(_) | Framing::Close if buf.is_empty() => {
                    return match (self.framing, eof) {
                        (_, false) => Ok(Decoded::NeedMore),
                        (Framing::Close, true) => {
                            self.framing = Framing::Done;
                            Ok(Decoded::End)
                        }
                        _ => Err(closed("within a content-length body")),
                    };
                }
                Framing::Fixed(left) => {
                    let take = (buf.len() as u64).min(left) as usize;
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.framing = if left == 0 {
                        Framing::Done
                    } else {
                        Framing::Fixed(left)
                    };
                    return Ok(Decoded::Frame(Frame::data(data)));
                }
                Framing::Close => return Ok(Decoded::Frame(Frame::data(buf.split().freeze()))),
                Framing::Chunked(state) => match chunk_step(buf, state)? {
                    Step::Next(s) => self.framing = s,
                    Step::Data(data, s) => {
                        self.framing = s;
                        return Ok(Decoded::Frame(Frame::data(data)));
                    }
                    Step::Trailers(t) => {
                        self.framing = Framing::Done;
                        return Ok(Decoded::Frame(Frame::trailers(t)));
                    }
                    Step::NeedMore if eof => return Err(closed("within a chunked body")),
                    Step::NeedMore => return Ok(Decoded::NeedMore),
                },
            }
        }
    }
}

/// The connection ended where the body needed more.
fn closed(what: &str) -> CodecError {
    CodecError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("upstream closed {what}"),
    ))
}

/// Decodes a whole response, as an upstream sent it before closing: the
/// final head (interim 1xx skipped) and every body frame. What the proxy
/// does with a connection's bytes, in one call; for tests and fuzzing.
pub fn decode_response(
    bytes: &[u8],
    head_request: bool,
) -> Result<(Response<()>, Vec<Frame<Bytes>>), CodecError> {
    let mut buf = BytesMut::from(bytes);
    let head = loop {
        let Some((head, n)) = parse_head(&buf, head_request)? else {
            return Err(closed("within the response head"));
        };
        buf.advance(n);
        if !head.response.status().is_informational() {
            break head;
        }
    };
    let mut decoder = BodyDecoder::new(&head);
    let mut frames = Vec::new();
    loop {
        match decoder.decode(&mut buf, true)? {
            Decoded::Frame(f) => frames.push(f),
            Decoded::End => return Ok((head.response, frames)),
            Decoded::NeedMore => return Err(closed("early")),
        }
    }
}

enum Step {
    /// Moved on without output.
    Next(Framing),
    /// Chunk data, then this state.
    Data(Bytes, Framing),
    /// The trailer section (the body ends).
    Trailers(HeaderMap),
    /// The buffer holds too little to go on.
    NeedMore,
}

/// One step of the chunked decoder over what is buffered.
fn chunk_step(buf: &mut BytesMut, state: ChunkState) -> Result<Step, CodecError> {
    match state {
        ChunkState::Size => {
            let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                if buf.len() > MAX_CHUNK_LINE {
                    return Err(CodecError::Invalid("chunk size line too long".into()));
                }
                return Ok(Step::NeedMore);
            };
            let line = &buf[..end];
            let digits = line
                .split(|b| *b == b';')
                .next()
                .unwrap_or(b"")
                .trim_ascii();
            let size = std::str::from_utf8(digits)
                .ok()
                .filter(|d| {
                    !d.is_empty() && d.len() <= 16 && d.bytes().all(|b| b.is_ascii_hexdigit())
                })
                .and_then(|d| u64::from_str_radix(d, 16).ok())
                .ok_or_else(|| CodecError::Invalid("bad chunk size".into()))?;
            buf.advance(end + 2);
            Ok(Step::Next(Framing::Chunked(if size == 0 {
                ChunkState::Trailers
            } else {
                ChunkState::Data(size)
            })))
        }
        ChunkState::Data(left) => {
            if buf.is_empty() {
                return Ok(Step::NeedMore);
            }
            let take = (buf.len() as u64).min(left) as usize;
            let data = buf.split_to(take).freeze();
            let left = left - take as u64;
            let next = if left == 0 {
                ChunkState::DataEnd
            } else {
                ChunkState::Data(left)
            };
            Ok(Step::Data(data, Framing::Chunked(next)))
        }
        ChunkState::DataEnd => {
            if buf.len() < 2 {
                return Ok(Step::NeedMore);
            }
            if &buf[..2] != b"\r\n" {
                return Err(CodecError::Invalid("chunk not followed by CRLF".into()));
            }
            buf.advance(2);
            Ok(Step::Next(Framing::Chunked(ChunkState::Size)))
        }
        ChunkState::Trailers => {
            if buf.starts_with(b"\r\n") {
                buf.advance(2);
                return Ok(Step::Next(Framing::Done));
            }
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match httparse::parse_headers(buf, &mut fields) {
                Ok(httparse::Status::Complete((n, fields))) => {
                    let mut t = HeaderMap::new();
                    for f in fields {
                        if let (Ok(k), Ok(v)) = (
                            HeaderName::from_bytes(f.name.as_bytes()),
                            HeaderValue::from_bytes(f.value),
                        ) {
                            t.append(k, v);
                        }
                    }
                    buf.advance(n);
                    Ok(Step::Trailers(t))
                }
                Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD_BYTES => Ok(Step::NeedMore),
                Ok(httparse::Status::Partial) => {
                    Err(CodecError::Invalid("trailer section too large".into()))
                }
                Err(e) => Err(CodecError::Invalid(format!("trailers: {e}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[u8], head_request: bool) -> (Head, usize) {
        parse_head(raw, head_request).unwrap().unwrap()
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let (h, n) = head(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", false);
        assert_eq!(n, 38);
        assert_eq!(h.framing, Framing::Fixed(5));
        assert!(h.keep_alive);
        let (h, _) = head(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true);
        assert_eq!(h.framing, Framing::Done);
        let (h, _) = head(b"HTTP/1.1 204 No Content\r\n\r\n", false);
        assert_eq!(h.framing, Framing::Done);
        let (h, _) = head(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, Framing::Chunked(ChunkState::Size));
        let (h, _) = head(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(h.framing, Framing::Close);
        assert!(!h.keep_alive);
        let (h, _) = head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: Close\r\n\r\n",
            false,
        );
        assert!(!h.keep_alive);
        let (h, _) = head(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", false);
        assert!(!h.keep_alive);
        let (h, _) = head(
            b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\nconnection: keep-alive\r\n\r\n",
            false,
        );
        assert!(h.keep_alive);
    }

    #[test]
    fn transfer_encoding_overrides_content_length() {
        let (h, _) = head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, Framing::Chunked(ChunkState::Size));
        assert!(!h.response.headers().contains_key(header::CONTENT_LENGTH));
    }

    fn body(frames: &[Frame<Bytes>]) -> Vec<u8> {
        frames
            .iter()
            .filter_map(|f| f.data_ref())
            .flat_map(|d| d.to_vec())
            .collect()
    }

    #[test]
    fn whole_responses_decode_in_every_framing() {
        let (r, f) = decode_response(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\ngrpc-status: 0\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(body(&f), b"hello");
        let trailers = f.last().and_then(|f| f.trailers_ref()).unwrap();
        assert_eq!(trailers["grpc-status"], "0");
        let (_, f) = decode_response(b"HTTP/1.1 200 OK\r\n\r\nto the end", false).unwrap();
        assert_eq!(body(&f), b"to the end");
        let (_, f) = decode_response(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA",
            false,
        )
        .unwrap();
        assert_eq!(body(&f), b"ok");
        for short in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort"[..],
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-le",
        ] {
            assert!(decode_response(short, false).is_err(), "{short:?}");
        }
    }

    #[test]
    fn bad_heads_are_errors_not_panics() {
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 5", false)
                .unwrap()
                .is_none()
        );
        for raw in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 999999 OK\r\n\r\n",
        ] {
            assert!(parse_head(raw, false).is_err(), "{raw:?}");
        }
    }
}
