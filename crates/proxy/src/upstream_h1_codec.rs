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
use http::Method;
use http::header::{self, HeaderMap, HeaderName};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use crate::body::ProxyBody;
use crate::circuit::ConnectionPermit;
use crate::h1_wire::{put_chunk, put_field, put_length};
use crate::tls::PeerPrincipal;
use crate::tls::client::UpstreamIo;
use crate::upstream_h1_parse::MAX_HEAD_BYTES;
pub use crate::upstream_h1_parse::{
    BodyDecoder, CodecError, Decoded, Head, decode_response, parse_head,
};

/// Request bytes gathered before a write.
const WRITE_BATCH: usize = 64 * 1024;
/// The largest request buffer kept for the next request (a larger one,
/// for a large body, is freed once written).
const KEEP_WRITE_BUF: usize = 16 * 1024;
/// Bytes asked of the socket per read (hyper's first read size too).
const READ_CHUNK: usize = 8 * 1024;

/// One upstream HTTP/1.1 connection (plaintext or TLS), with the cluster
/// breakers' connection permit for as long as it lives.
pub struct H1Conn {
    io: UpstreamIo,
    read_buf: BytesMut,
    /// The request being written, kept (empty) between requests so that
    /// writing one allocates nothing.
    write_buf: Vec<u8>,
    /// Requests sent on it so far.
    pub uses: u32,
    /// The server's verified identity (TLS).
    pub peer: Option<PeerPrincipal>,
    _permit: ConnectionPermit,
}

impl H1Conn {
    /// A connection over `io`.
    pub fn new(io: UpstreamIo, peer: Option<PeerPrincipal>, permit: ConnectionPermit) -> Self {
        H1Conn {
            io,
            read_buf: BytesMut::new(),
            write_buf: Vec::new(),
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
        // Pending: nothing came. Ready: closed, failed, or bytes nobody
        // asked for (the connection is dropped, so they are not kept). A
        // stack buffer: the read buffer may have been released.
        let mut probe = [0u8; 64];
        let mut probe = tokio::io::ReadBuf::new(&mut probe);
        tokio::io::AsyncRead::poll_read(Pin::new(&mut self.io), &mut cx, &mut probe).is_pending()
    }

    /// Writes a request whose body is all here (origin-form target, Host
    /// header set), head and body in one write. The body goes with its
    /// `content-length`, or chunked when it has trailers.
    pub async fn write_request(
        &mut self,
        parts: &http::request::Parts,
        body: &Gathered,
    ) -> io::Result<()> {
        let mut out = std::mem::take(&mut self.write_buf);
        out.clear();
        out.reserve(512 + body.data.len());
        out.put_slice(parts.method.as_str().as_bytes());
        out.put_u8(b' ');
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        out.put_slice(target.as_bytes());
        out.put_slice(b" HTTP/1.1\r\n");
        let framing_header =
            |name: &HeaderName| name == header::TRANSFER_ENCODING || name == header::CONTENT_LENGTH;
        for (name, value) in &parts.headers {
            if !framing_header(name) {
                put_field(&mut out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        let chunked = body.trailers.is_some();
        if chunked {
            out.put_slice(b"transfer-encoding: chunked\r\n\r\n");
            put_chunk(&mut out, &body.data);
            out.put_slice(b"0\r\n");
            for (name, value) in body.trailers.iter().flatten() {
                put_field(&mut out, name.as_str().as_bytes(), value.as_bytes());
            }
            out.put_slice(b"\r\n");
        } else {
            let needs_length = !body.data.is_empty()
                || parts.headers.contains_key(header::CONTENT_LENGTH)
                || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
            if needs_length {
                put_length(&mut out, body.data.len() as u64);
            }
            out.put_slice(b"\r\n");
            out.put_slice(&body.data);
        }
        let written = self.io.write_all(&out).await;
        if out.capacity() <= KEEP_WRITE_BUF {
            self.write_buf = out;
        }
        written?;
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

    /// Lets go of the read and write buffers of a connection idle in the
    /// pool for a while (both are empty). A busy connection keeps them:
    /// once the last response's body is dropped, the next read reuses the
    /// read buffer's allocation, and the next request the write buffer.
    pub fn release_buffer(&mut self) {
        self.read_buf = BytesMut::new();
        self.write_buf = Vec::new();
    }

    /// Whether no response byte has come on this exchange yet.
    pub fn nothing_read(&self) -> bool {
        self.read_buf.is_empty()
    }

    async fn read_more(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read_more(cx)).await
    }

    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.read_buf.reserve(READ_CHUNK);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read_buf)
    }
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

/// Yields in a row, each bringing no new frame, before a body counts as
/// still streaming.
const IDLE_YIELDS: u32 = 2;

/// Takes the frames of `body` that are here, up to [`WRITE_BATCH`] bytes:
/// small request bodies arrive with their head, so most requests are
/// whole here and go out in one write on a pooled connection. A chunked
/// body comes out of hyper one chunk per poll of its connection, so when
/// no frame is ready the task yields (the connection decodes what it has
/// already read) and only gives up after [`IDLE_YIELDS`] yields in a row
/// brought nothing; it never waits for the network.
pub async fn gather(mut body: ProxyBody) -> Result<Gather, crate::body::BoxError> {
    let mut data = BytesMut::new();
    let mut first: Option<Bytes> = None;
    let mut idle = 0;
    loop {
        if http_body::Body::is_end_stream(&body) {
            break;
        }
        let next = match body.frame().now_or_never() {
            Some(next) => {
                idle = 0;
                next
            }
            None if idle < IDLE_YIELDS => {
                idle += 1;
                tokio::task::yield_now().await;
                continue;
            }
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

/// A response body being read off its connection.
pub struct H1Body {
    conn: Option<H1Conn>,
    decoder: BodyDecoder,
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
            decoder: BodyDecoder::new(head),
            keep_alive: head.keep_alive,
        }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.decoder.is_done()
    }

    /// Bytes still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        self.decoder.remaining()
    }

    /// After the end: the connection, if it may be reused.
    pub fn take_end(&mut self) -> BodyEnd {
        match self.conn.take() {
            Some(c) if self.is_done() && self.keep_alive && c.read_buf.is_empty() => {
                BodyEnd::Reusable(c)
            }
            _ => BodyEnd::Closed,
        }
    }

    /// The next frame of the body (`None` at its end), reading the socket
    /// when the buffered bytes do not make one.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, CodecError>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let mut eof = false;
        loop {
            match self.decoder.decode(&mut conn.read_buf, eof) {
                Ok(Decoded::Frame(f)) => return Poll::Ready(Some(Ok(f))),
                Ok(Decoded::End) => {
                    if eof {
                        self.keep_alive = false;
                    }
                    return Poll::Ready(None);
                }
                Err(e) => return Poll::Ready(Some(Err(e))),
                Ok(Decoded::NeedMore) => match ready_read(conn, cx) {
                    Poll::Ready(Ok(more)) => eof = !more,
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

/// Reads more: `true` when bytes came, `false` at the end of the stream.
fn ready_read(conn: &mut H1Conn, cx: &mut Context<'_>) -> Poll<Result<bool, CodecError>> {
    match conn.poll_read_more(cx) {
        Poll::Ready(Ok(n)) => Poll::Ready(Ok(n > 0)),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
        Poll::Pending => Poll::Pending,
    }
}
