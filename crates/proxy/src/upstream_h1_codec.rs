//! HTTP/1.1 to an upstream, driven in the caller's own task.
//!
//! Why not hyper's `client::conn::http1` (used for upgrades only): its
//! connection runs as a separate task fed through channels, so every
//! proxied request paid two task hand-offs and hyper's dispatcher on top of
//! the parsing: about 15k instructions, a third of the proxy's per-request
//! work (callgrind). Here the request future writes the request head and
//! body itself, parses the response head with `httparse` (the parser hyper
//! uses), and the response body is read from the socket by whoever polls
//! it, with no task in between.
//!
//! Only requests whose body is already whole come here ([`gather`]);
//! streaming ones (large uploads, bodies sent after a `100 Continue`)
//! and upgrades use hyper, which writes and reads at once. Framing follows
//! RFC 9112: the request body goes with `content-length` (chunked when it
//! has trailers); response bodies are empty (HEAD, 1xx, 204, 304), chunked,
//! `content-length` or delimited by the connection's close. Interim 1xx
//! responses are skipped.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::FutureExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use crate::body::ProxyBody;
use crate::circuit::ConnectionPermit;
use crate::tls::PeerPrincipal;
use crate::tls::client::UpstreamIo;

/// Response head bytes accepted at most.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Response header fields accepted at most.
const MAX_HEADERS: usize = 100;
/// Request bytes gathered before a write.
const WRITE_BATCH: usize = 64 * 1024;
/// A chunk-size line (with extensions) longer than this is refused.
const MAX_CHUNK_LINE: usize = 4096;
/// Bytes asked of the socket per read (hyper's first read size too).
const READ_CHUNK: usize = 8 * 1024;

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

/// One upstream HTTP/1.1 connection (plaintext or TLS), with the cluster
/// breakers' connection permit for as long as it lives.
pub struct H1Conn {
    io: UpstreamIo,
    read_buf: BytesMut,
    /// Requests sent on it so far.
    pub uses: u32,
    /// The server's verified identity (TLS).
    pub peer: Option<PeerPrincipal>,
    _permit: ConnectionPermit,
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
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
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// A parsed response head and how its body is framed.
pub struct Head {
    /// Status, version and headers (the body is read separately).
    pub response: Response<()>,
    framing: Framing,
    keep_alive: bool,
}

impl H1Conn {
    /// A connection over `io`.
    pub fn new(io: UpstreamIo, peer: Option<PeerPrincipal>, permit: ConnectionPermit) -> Self {
        H1Conn {
            io,
            read_buf: BytesMut::new(),
            uses: 0,
            peer,
            _permit: permit,
        }
    }

    /// Whether an idle connection still looks usable: nothing arrived on
    /// it since its last response (no close, no stray bytes). Costs no
    /// syscall unless the socket became readable.
    pub fn is_idle_ok(&mut self) -> bool {
        if !self.read_buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.read_buf.reserve(READ_CHUNK);
        // Pending: nothing came. Ready: closed, failed, or bytes nobody
        // asked for.
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), &mut cx, &mut self.read_buf)
            .is_pending()
    }

    /// Writes a request whose body is all here (origin-form target, Host
    /// header set), head and body in one write. The body goes with its
    /// `content-length`, or chunked when it has trailers.
    pub async fn write_request(
        &mut self,
        parts: &http::request::Parts,
        body: &Gathered,
    ) -> io::Result<()> {
        let mut out = BytesMut::with_capacity(512 + body.data.len());
        out.put_slice(parts.method.as_str().as_bytes());
        out.put_u8(b' ');
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        out.put_slice(target.as_bytes());
        out.put_slice(b" HTTP/1.1\r\n");
        let framing_header =
            |name: &HeaderName| name == header::TRANSFER_ENCODING || name == header::CONTENT_LENGTH;
        for (name, value) in &parts.headers {
            if !framing_header(name) {
                put_field(&mut out, name, value);
            }
        }
        let chunked = body.trailers.is_some();
        if chunked {
            out.put_slice(b"transfer-encoding: chunked\r\n\r\n");
            if !body.data.is_empty() {
                out.put_slice(format!("{:x}\r\n", body.data.len()).as_bytes());
                out.put_slice(&body.data);
                out.put_slice(b"\r\n");
            }
            out.put_slice(b"0\r\n");
            for (name, value) in body.trailers.iter().flatten() {
                put_field(&mut out, name, value);
            }
            out.put_slice(b"\r\n");
        } else {
            let needs_length = !body.data.is_empty()
                || parts.headers.contains_key(header::CONTENT_LENGTH)
                || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
            if needs_length {
                out.put_slice(b"content-length: ");
                out.put_slice(body.data.len().to_string().as_bytes());
                out.put_slice(b"\r\n");
            }
            out.put_slice(b"\r\n");
            out.put_slice(&body.data);
        }
        self.io.write_all(&out).await?;
        self.io.flush().await
    }

    /// Reads the final response head (interim 1xx ones are skipped).
    /// `head_request`: the request was HEAD (the response has no body).
    pub async fn read_head(&mut self, head_request: bool) -> Result<Head, CodecError> {
        loop {
            if !self.read_buf.is_empty()
                && let Some((head, n)) = parse_head(&self.read_buf, head_request)?
            {
                self.read_buf.advance(n);
                if head.response.status().is_informational() {
                    continue;
                }
                return Ok(head);
            }
            if self.read_buf.len() >= MAX_HEAD_BYTES {
                return Err(CodecError::Invalid("response head too large".into()));
            }
            let was_empty = self.read_buf.is_empty();
            if self.read_more().await? == 0 {
                let what = if was_empty {
                    "connection closed before a response"
                } else {
                    "connection closed within the response head"
                };
                return Err(CodecError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    what,
                )));
            }
        }
    }

    /// Lets go of the read buffer while the connection idles in the pool
    /// (it is empty; the next exchange reserves a new one anyway, since the
    /// last response's body may still share the old allocation).
    pub fn release_buffer(&mut self) {
        self.read_buf = BytesMut::new();
    }

    /// Whether no response byte has come on this exchange yet.
    pub fn nothing_read(&self) -> bool {
        self.read_buf.is_empty()
    }

    async fn read_more(&mut self) -> io::Result<usize> {
        self.read_buf.reserve(READ_CHUNK);
        std::future::poll_fn(|cx| {
            tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read_buf)
        })
        .await
    }

    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.read_buf.reserve(READ_CHUNK);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read_buf)
    }
}

fn put_field(out: &mut BytesMut, name: &HeaderName, value: &HeaderValue) {
    out.put_slice(name.as_str().as_bytes());
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_slice(b"\r\n");
}

/// A request body read as far as it was already there.
pub struct Gathered {
    /// The bytes read.
    pub data: Bytes,
    /// Its trailers, if it had some.
    pub trailers: Option<HeaderMap>,
}

/// The outcome of [`gather`].
pub enum Gather {
    /// The whole body was there.
    Complete(Gathered),
    /// More is to come: the bytes read so far, and the rest of the body.
    Partial(Bytes, ProxyBody),
}

/// Takes the frames of `body` that are ready now, up to [`WRITE_BATCH`]
/// bytes: small request bodies arrive with their head, so most requests
/// are whole here and go out in one write on a pooled connection.
pub fn gather(mut body: ProxyBody) -> Result<Gather, crate::body::BoxError> {
    let mut data = BytesMut::new();
    let mut first: Option<Bytes> = None;
    loop {
        if http_body::Body::is_end_stream(&body) {
            break;
        }
        let next = match body.frame().now_or_never() {
            Some(next) => next,
            None => return Ok(Gather::Partial(take(first, data), body)),
        };
        let frame = match next {
            None => break,
            Some(Err(e)) => return Err(e),
            Some(Ok(f)) => f,
        };
        match frame.into_data() {
            Ok(chunk) if chunk.is_empty() => {}
            Ok(chunk) => {
                // One frame (the usual case) is kept without a copy.
                match first.take() {
                    None if data.is_empty() => first = Some(chunk),
                    prev => {
                        if let Some(p) = prev {
                            data.put_slice(&p);
                        }
                        data.put_slice(&chunk);
                    }
                }
                if first.as_ref().map_or(data.len(), Bytes::len) >= WRITE_BATCH {
                    return Ok(Gather::Partial(take(first, data), body));
                }
            }
            Err(frame) => {
                return Ok(Gather::Complete(Gathered {
                    data: take(first, data),
                    trailers: frame.into_trailers().ok(),
                }));
            }
        }
    }
    Ok(Gather::Complete(Gathered {
        data: take(first, data),
        trailers: None,
    }))
}

fn take(first: Option<Bytes>, data: BytesMut) -> Bytes {
    first.unwrap_or_else(|| data.freeze())
}

/// Headers the forwarding path adds to a response (peer metadata, the
/// upstream service time, route headers): room for them up front saves
/// the header map a rehash per response.
const HEADERS_ADDED_LATER: usize = 6;

/// Parses a response head at the start of `buf`: `None` while incomplete.
fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<(Head, usize)>, CodecError> {
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
    let mut headers = HeaderMap::with_capacity(r.headers.len() + HEADERS_ADDED_LATER);
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
            for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        Ok(())
    }
}

/// A response body being read off its connection.
pub struct H1Body {
    conn: Option<H1Conn>,
    framing: Framing,
    keep_alive: bool,
}

/// What a finished body hands back: the connection, when it can be reused.
pub enum BodyEnd {
    /// The body ended and the connection may carry another request.
    Reusable(H1Conn),
    /// The body ended; the connection is closed.
    Closed,
}

impl H1Body {
    /// The body of `head`, read from `conn`.
    pub fn new(conn: H1Conn, head: &Head) -> Self {
        H1Body {
            conn: Some(conn),
            framing: head.framing,
            keep_alive: head.keep_alive,
        }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.framing == Framing::Done
    }

    /// Bytes still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self.framing {
            Framing::Fixed(n) => Some(n),
            Framing::Done => Some(0),
            _ => None,
        }
    }

    /// After the end: the connection, if it may be reused.
    pub fn take_end(&mut self) -> BodyEnd {
        match self.conn.take() {
            Some(c)
                if self.framing == Framing::Done && self.keep_alive && c.read_buf.is_empty() =>
            {
                BodyEnd::Reusable(c)
            }
            _ => BodyEnd::Closed,
        }
    }

    /// The next frame of the body (`None` at its end).
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, CodecError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Fixed(left) => {
                    if conn.read_buf.is_empty() {
                        match ready_read(conn, cx) {
                            Poll::Ready(Ok(true)) => continue,
                            Poll::Ready(Ok(false)) => return eof("within a content-length body"),
                            Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                    let take = (conn.read_buf.len() as u64).min(left) as usize;
                    let data = conn.read_buf.split_to(take).freeze();
                    self.framing = if left - take as u64 == 0 {
                        Framing::Done
                    } else {
                        Framing::Fixed(left - take as u64)
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Close => {
                    if conn.read_buf.is_empty() {
                        match ready_read(conn, cx) {
                            Poll::Ready(Ok(true)) => continue,
                            Poll::Ready(Ok(false)) => {
                                self.framing = Framing::Done;
                                self.keep_alive = false;
                                return Poll::Ready(None);
                            }
                            Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                    let data = conn.read_buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(state) => match chunk_step(conn, state) {
                    Ok(Step::Next(s)) => self.framing = s,
                    Ok(Step::Data(data, s)) => {
                        self.framing = s;
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(Step::Trailers(t)) => {
                        self.framing = Framing::Done;
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                    Ok(Step::NeedMore) => match ready_read(conn, cx) {
                        Poll::Ready(Ok(true)) => {}
                        Poll::Ready(Ok(false)) => return eof("within a chunked body"),
                        Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                        Poll::Pending => return Poll::Pending,
                    },
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
            }
        }
    }
}

fn eof<T>(what: &str) -> Poll<Option<Result<T, CodecError>>> {
    Poll::Ready(Some(Err(CodecError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("upstream closed {what}"),
    )))))
}

/// Reads more: `true` when bytes came, `false` at the end of the stream.
fn ready_read(conn: &mut H1Conn, cx: &mut Context<'_>) -> Poll<Result<bool, CodecError>> {
    match conn.poll_read_more(cx) {
        Poll::Ready(Ok(n)) => Poll::Ready(Ok(n > 0)),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
        Poll::Pending => Poll::Pending,
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
fn chunk_step(conn: &mut H1Conn, state: ChunkState) -> Result<Step, CodecError> {
    let buf = &mut conn.read_buf;
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
