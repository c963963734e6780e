//! The HTTP/1.1 fast path: serves the plain, common requests of a
//! downstream connection without hyper's server dispatcher, and hands the
//! connection to hyper at the first request it does not take.
//!
//! Why: hyper's HTTP/1 server (its dispatcher, a header-read timer per
//! request, its encoder) was about a fifth of the proxy's work on every
//! request. Here one task reads a request already whole (head and small
//! body) into a buffer, runs the request path, and writes the response
//! head with the first body bytes in one write. Anything unusual (see
//! [`Parsed::HandOff`]) goes to hyper along with the bytes read, so errors,
//! upgrades, `100-continue`, streaming uploads and slow clients keep
//! hyper's behaviour exactly.

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http_body::Body;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::h1_head::{self, Framing, HeadLimits, Parsed};
use super::request::{self, HttpConn};
use crate::body::ProxyBody;
use crate::h1_wire;
use crate::io::CountingIo;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8 * 1024;

/// The last chunk of a chunked body (no trailers: HTTP/1.1 clients seldom
/// ask for them, and hyper drops them too).
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Response bytes gathered before a write.
const WRITE_BATCH: usize = 64 * 1024;

/// How a connection left the fast path.
pub(super) enum Served {
    /// It ended (closed by either side, idle, drained or failed).
    Closed,
    /// hyper serves the rest, starting with these bytes.
    HandOff(CountingIo, Bytes),
}

/// What the fast path needs to know of the connection's limits.
pub(super) struct FastLimits {
    /// Head limits.
    pub head: HeadLimits,
    /// Idle time after which the connection is closed.
    pub idle: Duration,
}

/// Serves requests until the connection ends or one needs hyper.
pub(super) async fn serve(conn: Arc<HttpConn>, mut io: CountingIo, limits: FastLimits) -> Served {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let tick = super::idle_tick(limits.idle);
    let mut ticker = pin!(tokio::time::sleep(tick));
    let drain = conn.ctx.drain.clone();
    let mut drained = pin!(drain.started());
    // The client sent FIN after requests still in `buf`: answer them, then close.
    let mut peer_done = false;
    // Idle for a tick: the buffers were freed; read small until busy again.
    let mut quiet = false;
    let most = limits.head.max_header_bytes + h1_head::MAX_FAST_BODY as usize;
    loop {
        if buf.is_empty() {
            if peer_done {
                return close(io).await;
            }
            // Between requests: wait for the next one, idleness or drain.
            buf.reserve(if quiet { QUIET_CHUNK } else { READ_CHUNK });
            let read = tokio::select! {
                biased;
                r = io.read_buf(&mut buf) => r,
                _ = &mut drained => return close(io).await,
                _ = &mut ticker => {
                    let idle_for = conn.stats.idle_for();
                    if idle_for >= limits.idle {
                        return close(io).await;
                    }
                    if idle_for >= tick {
                        // Keep-alive connections may idle for an hour:
                        // without their buffers.
                        (buf, out, quiet) = (BytesMut::new(), Vec::new(), true);
                    }
                    ticker.as_mut().reset(tokio::time::Instant::now() + tick);
                    continue;
                }
            };
            match read {
                Ok(n) if n > 0 => {}
                _ => return Served::Closed,
            }
        }
        let (req, asked_close) = match h1_head::parse_request(&mut buf, limits.head) {
            Parsed::Ready { req, close } => (req, close),
            // The rest may already be in the socket (the request is larger
            // than the read, or split over TLS records): take it without
            // waiting, else hyper waits for it (with its header timeout).
            Parsed::Partial if !peer_done && buf.len() < most && read_now(&mut io, &mut buf) => {
                continue;
            }
            Parsed::Partial | Parsed::HandOff => {
                conn.ctx.http1.handoffs.inc();
                return Served::HandOff(io, buf.freeze());
            }
        };
        quiet = false;
        conn.ctx.http1.fast_requests.inc();
        let resp = match respond(&conn, &mut io, &mut buf, req, peer_done).await {
            Watched::Answered(resp) => resp,
            Watched::AnsweredAfterEof(resp) => {
                peer_done = true;
                resp
            }
            Watched::Left => {
                // The client went away first: the exchange records DC as it drops.
                conn.deferred.flush();
                return Served::Closed;
            }
        };
        let keep = !asked_close && !conn.ctx.drain.is_draining();
        let written = write_response(&mut io, &mut out, resp, !keep).await;
        // The response is out: record it off the critical path.
        conn.deferred.flush();
        if out.capacity() > 2 * WRITE_BATCH {
            out = Vec::new();
        }
        if !written || !keep {
            return close(io).await;
        }
    }
}

/// Bytes asked of the socket by a connection that was idle.
const QUIET_CHUNK: usize = 1024;

/// Reads what the socket has right now, without waiting; whether anything
/// came.
fn read_now(io: &mut CountingIo, buf: &mut BytesMut) -> bool {
    buf.reserve(READ_CHUNK);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let read = tokio_util::io::poll_read_buf(Pin::new(io), &mut cx, buf);
    matches!(read, Poll::Ready(Ok(n)) if n > 0)
}

/// How a request ended while the connection was watched.
enum Watched {
    /// Its response.
    Answered(http::Response<ProxyBody>),
    /// Its response; the client half-closed after sending more requests,
    /// which are answered before the connection closes (as hyper does).
    AnsweredAfterEof(http::Response<ProxyBody>),
    /// The client closed with nothing more sent: the request is cancelled.
    Left,
}

/// Runs the request path while watching the connection: bytes that arrive
/// meanwhile (pipelined requests) are kept; the client closing cancels the
/// request unless it had sent more requests first.
async fn respond(
    conn: &Arc<HttpConn>,
    io: &mut CountingIo,
    buf: &mut BytesMut,
    req: http::Request<http_body_util::Full<Bytes>>,
    peer_done: bool,
) -> Watched {
    let mut handler = pin!(request::handle(conn.clone(), req));
    let mut watching = !peer_done;
    let mut eof = peer_done;
    loop {
        if !watching {
            let Ok(resp) = handler.await;
            return if eof {
                Watched::AnsweredAfterEof(resp)
            } else {
                Watched::Answered(resp)
            };
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            resp = &mut handler => {
                let Ok(resp) = resp;
                return Watched::Answered(resp);
            }
            r = io.read_buf(buf) => match r {
                Ok(n) if n > 0 => watching = buf.len() < READ_CHUNK * 8,
                _ if buf.is_empty() => return Watched::Left,
                _ => (watching, eof) = (false, true),
            },
        }
    }
}

/// Writes one response; `false` when the connection cannot carry another
/// (the body failed or did not match its length, or a write failed).
async fn write_response(
    io: &mut CountingIo,
    out: &mut Vec<u8>,
    resp: http::Response<ProxyBody>,
    close: bool,
) -> bool {
    out.clear();
    let framing = h1_head::encode_head(out, &resp, &resp.body().size_hint(), close, &date());
    let mut body = resp.into_body();
    let mut sent = 0u64;
    let mut intact = true;
    if framing != Framing::Empty && !body.is_end_stream() {
        loop {
            let frame = std::future::poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
                Poll::Pending if !out.is_empty() => Poll::Ready(Err(())),
                other => other.map(Ok),
            })
            .await;
            let frame = match frame {
                // Nothing more yet: send what is gathered, then wait.
                Err(()) => {
                    if send(io, out).await.is_err() {
                        return false;
                    }
                    continue;
                }
                Ok(f) => f,
            };
            let data = match frame {
                None => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "response body failed; closing");
                    intact = false;
                    break;
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(d) => d,
                    Err(_) => continue, // trailers: not sent on HTTP/1.1
                },
            };
            sent += data.len() as u64;
            match framing {
                Framing::Chunked => h1_wire::put_chunk(out, &data),
                Framing::Length(n) if sent > n => {
                    intact = false;
                    break;
                }
                _ => out.extend_from_slice(&data),
            }
            if body.is_end_stream() {
                break;
            }
            if out.len() >= WRITE_BATCH && send(io, out).await.is_err() {
                return false;
            }
        }
    }
    match framing {
        Framing::Chunked if intact => out.extend_from_slice(LAST_CHUNK),
        Framing::Length(n) if sent != n => intact = false,
        _ => {}
    }
    send(io, out).await.is_ok() && intact
}

/// Writes and empties `out`.
async fn send(io: &mut CountingIo, out: &mut Vec<u8>) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    io.write_all(out).await?;
    io.flush().await?;
    out.clear();
    Ok(())
}

/// Ends the connection the polite way (FIN, or TLS close_notify).
async fn close(mut io: CountingIo) -> Served {
    let _ = io.shutdown().await;
    Served::Closed
}

/// The `Date` header value, formatted once per second per thread.
pub(super) fn date() -> Bytes {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, Bytes)> =
            const { std::cell::RefCell::new((0, Bytes::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs || c.1.is_empty() {
            *c = (secs, Bytes::from(httpdate::fmt_http_date(now)));
        }
        c.1.clone()
    })
}
