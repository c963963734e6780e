//! The upstream HTTP/2 client: Meshwork's own, in place of the `h2`
//! crate's (which was about 34k of an h2c request's 74k instructions).
//!
//! A connection is one task that owns the socket ([`Connection`]) and a
//! shared state its requests write into: a request encodes its HEADERS
//! (and the body chunks the windows allow) straight into the output
//! buffer under the state's lock and wakes the task, which writes all
//! that gathered in one write, reads the server's frames and hands each
//! stream its head, data and trailers. `h2` kept a stream store with
//! slab indices, send queues and per-frame prioritisation behind the same
//! kind of lock; here a stream is a map entry and frames are bytes.
//!
//! Frames are shared with the downstream server (`h2_frame`), header
//! blocks go through `meshwork-hpack` (the encoder indexes the fields that repeat).

mod conn;
mod state;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http::header::{self, HeaderMap};

pub use conn::Connection;
use state::{Inner, State, Stream};

use crate::h2_frame::{self as frame, reason};

/// Why a stream or connection failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The connection broke or closed.
    Io(String),
    /// The server reset the stream with this code.
    Reset(u32),
    /// The proxy reset the stream (or forgot it) with this code.
    Local(u32),
    /// The server's GOAWAY left the stream out (it was never processed).
    Refused,
    /// The server broke the protocol (code, what).
    Protocol(u32, &'static str),
}

impl Error {
    /// The stream was never processed: safe to send again.
    pub fn is_refused(&self) -> bool {
        matches!(self, Error::Refused | Error::Reset(reason::REFUSED_STREAM))
    }

    /// The connection itself failed.
    pub fn is_io(&self) -> bool {
        matches!(self, Error::Io(_))
    }

    /// The HTTP/2 error code, if any.
    pub fn code(&self) -> Option<u32> {
        match self {
            Error::Reset(c) | Error::Local(c) | Error::Protocol(c, _) => Some(*c),
            Error::Refused => Some(reason::REFUSED_STREAM),
            Error::Io(_) => None,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "connection error: {e}"),
            Error::Reset(c) => write!(f, "stream reset by the server: {}", frame::reason_name(*c)),
            Error::Local(c) => write!(f, "stream reset by the proxy: {}", frame::reason_name(*c)),
            Error::Refused => write!(f, "stream left out by the server's GOAWAY: REFUSED_STREAM"),
            Error::Protocol(c, what) => {
                write!(f, "protocol error ({}): {what}", frame::reason_name(*c))
            }
        }
    }
}

impl std::error::Error for Error {}

/// A handle on a connection, for opening streams. The connection closes
/// once every handle and every stream is gone.
pub struct ClientConn {
    inner: Arc<Inner>,
}

/// Starts a connection over `io`: the handle, and the task to spawn.
pub fn handshake<IO>(io: IO) -> (ClientConn, Connection<IO>) {
    let inner = Arc::new(Inner {
        state: std::sync::Mutex::new(State::new()),
        task: Default::default(),
        max_streams: state::INITIAL_MAX_STREAMS.into(),
        closed: Default::default(),
    });
    (
        ClientConn {
            inner: inner.clone(),
        },
        Connection::new(io, inner),
    )
}

impl Clone for ClientConn {
    fn clone(&self) -> Self {
        self.inner.lock().senders += 1;
        ClientConn {
            inner: self.inner.clone(),
        }
    }
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        self.inner.lock().senders -= 1;
        self.inner.task.wake();
    }
}

impl std::fmt::Debug for ClientConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConn").finish_non_exhaustive()
    }
}

/// Headers not sent in HTTP/2: the connection-specific ones (RFC 9113
/// §8.2.2), and `host`, which `:authority` carries.
fn connection_specific(name: &header::HeaderName) -> bool {
    crate::http::headers::is_connection_specific(name) || name == header::HOST
}

impl ClientConn {
    /// The server's limit on concurrent streams.
    pub fn max_streams(&self) -> usize {
        self.inner.max_streams.load(Ordering::Relaxed)
    }

    /// Whether the connection takes no new streams (GOAWAY or failure).
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Relaxed)
    }

    /// Opens a stream for `head` (its HEADERS queued; `end` when there is
    /// no body). On a connection that takes no new streams, nothing is
    /// sent and the head comes back.
    #[allow(clippy::result_large_err)]
    pub fn send_request(
        &self,
        head: Request<()>,
        end: bool,
    ) -> Result<StreamRef, (Error, Request<()>)> {
        let mut st = self.inner.lock();
        if let Some(e) = &st.failure {
            return Err((e.clone(), head));
        }
        if st.going_away.is_some() || st.next_id > 0x7fff_ffff {
            // Stream ids used up: the pool must open another connection.
            self.inner.closed.store(true, Ordering::Relaxed);
            return Err((Error::Refused, head));
        }
        let id = st.next_id;
        st.next_id += 2;
        let State {
            wbuf,
            encoder,
            peer_max_frame,
            ..
        } = &mut *st;
        let start = wbuf.len();
        wbuf.extend_from_slice(&[0; frame::HEADER_LEN]);
        encoder.begin_block(wbuf);
        let uri = head.uri();
        encoder.encode(b":method", head.method().as_str().as_bytes(), false, wbuf);
        encoder.encode(
            b":scheme",
            uri.scheme_str().unwrap_or("http").as_bytes(),
            false,
            wbuf,
        );
        let authority = uri.authority().map(|a| a.as_str()).or_else(|| {
            head.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        if let Some(a) = authority {
            encoder.encode(b":authority", a.as_bytes(), false, wbuf);
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        encoder.encode(b":path", path.as_bytes(), false, wbuf);
        for (name, value) in head.headers() {
            if connection_specific(name) || (name == header::TE && value != "trailers") {
                continue;
            }
            encoder.encode(
                name.as_str().as_bytes(),
                value.as_bytes(),
                value.is_sensitive(),
                wbuf,
            );
        }
        frame::finish_headers(wbuf, start, id, end, *peer_max_frame);
        let stream = Stream {
            send_window: st.peer_window,
            recv_window: i64::from(state::STREAM_WINDOW),
            local_end: end,
            handles: 1,
            ..Stream::default()
        };
        st.streams.insert(id, stream);
        drop(st);
        self.inner.task.wake();
        Ok(StreamRef {
            inner: self.inner.clone(),
            id,
        })
    }
}

/// One stream: the request's sending side and the response's receiving
/// side. Clones share it; when the last is dropped, a stream still open
/// is reset (CANCEL).
pub struct StreamRef {
    inner: Arc<Inner>,
    id: u32,
}

impl Clone for StreamRef {
    fn clone(&self) -> Self {
        if let Some(s) = self.inner.lock().streams.get_mut(&self.id) {
            s.handles += 1;
        }
        StreamRef {
            inner: self.inner.clone(),
            id: self.id,
        }
    }
}

impl Drop for StreamRef {
    fn drop(&mut self) {
        self.inner.lock().release(self.id);
        // The task writes a reset, or ends an unused connection.
        self.inner.task.wake();
    }
}

impl std::fmt::Debug for StreamRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRef").field("id", &self.id).finish()
    }
}

impl StreamRef {
    fn with<T>(&self, f: impl FnOnce(&mut State, u32) -> T) -> T {
        let mut st = self.inner.lock();
        f(&mut st, self.id)
    }

    /// The response head, once it came (interim 1xx heads are skipped).
    pub fn poll_response(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<http::response::Parts, Error>> {
        self.with(|st, id| {
            let failure = st.failure.clone();
            let Some(s) = st.streams.get_mut(&id) else {
                return Poll::Ready(Err(failure.unwrap_or(Error::Local(reason::CANCEL))));
            };
            if let Some(head) = s.head.take() {
                return Poll::Ready(Ok(head));
            }
            if let Some(e) = &s.error {
                return Poll::Ready(Err(e.clone()));
            }
            s.recv_waker = Some(cx.waker().clone());
            Poll::Pending
        })
    }

    /// The next chunk of the response body (its window given back).
    pub fn poll_data(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        let (polled, queued) = self.with(|st, id| {
            let Some(s) = st.streams.get_mut(&id) else {
                return (Poll::Ready(Some(Err(Error::Local(reason::CANCEL)))), false);
            };
            if let Some(chunk) = s.data.pop_front() {
                s.buffered -= chunk.len();
                let queued = st.give_back(id, chunk.len());
                return (Poll::Ready(Some(Ok(chunk))), queued);
            }
            if s.recv_end {
                return (Poll::Ready(None), false);
            }
            if let Some(e) = &s.error {
                return (Poll::Ready(Some(Err(e.clone()))), false);
            }
            s.recv_waker = Some(cx.waker().clone());
            (Poll::Pending, false)
        });
        if queued {
            self.inner.task.wake();
        }
        polled
    }

    /// The trailers, after the data.
    pub fn poll_trailers(&self, cx: &mut Context<'_>) -> Poll<Result<Option<HeaderMap>, Error>> {
        self.with(|st, id| {
            let Some(s) = st.streams.get_mut(&id) else {
                return Poll::Ready(Ok(None));
            };
            if let Some(t) = s.trailers.take() {
                return Poll::Ready(Ok(Some(t)));
            }
            if s.recv_end {
                return Poll::Ready(Ok(None));
            }
            if let Some(e) = &s.error {
                return Poll::Ready(Err(e.clone()));
            }
            s.recv_waker = Some(cx.waker().clone());
            Poll::Pending
        })
    }

    /// Whether the response is over (nothing more to read).
    pub fn is_end_stream(&self) -> bool {
        self.with(|st, id| {
            st.streams
                .get(&id)
                .is_none_or(|s| s.recv_end && s.data.is_empty() && s.trailers.is_none())
        })
    }

    /// Sends what the windows allow of `data` (taking it off the front);
    /// `Ready(Ok)` once all of it is queued, with END_STREAM when `end`.
    pub fn poll_send(
        &self,
        cx: &mut Context<'_>,
        data: &mut Bytes,
        end: bool,
    ) -> Poll<Result<(), Error>> {
        let (polled, queued) = self.with(|st, id| {
            let failure = st.failure.clone();
            let State {
                streams,
                wbuf,
                conn_send,
                peer_max_frame,
                buffer_waiters,
                ..
            } = st;
            let Some(s) = streams.get_mut(&id) else {
                let e = failure.unwrap_or(Error::Local(reason::CANCEL));
                return (Poll::Ready(Err(e)), false);
            };
            if let Some(e) = &s.error {
                return (Poll::Ready(Err(e.clone())), false);
            }
            if s.local_end {
                return (Poll::Ready(Ok(())), false);
            }
            if wbuf.len() >= state::SEND_LIMIT {
                // The task has not written out what is queued yet.
                buffer_waiters.push(cx.waker().clone());
                return (Poll::Pending, true);
            }
            let allowed = s.send_window.min(*conn_send).max(0) as usize;
            let n = data.len().min(allowed);
            let queued = n > 0 || (data.is_empty() && end);
            if queued {
                let last = n == data.len();
                frame::put_data(wbuf, id, &data[..n], last && end, *peer_max_frame);
                s.send_window -= n as i64;
                *conn_send -= n as i64;
                bytes::Buf::advance(data, n);
                s.local_end = last && end;
            }
            if data.is_empty() {
                return (Poll::Ready(Ok(())), queued);
            }
            s.send_waker = Some(cx.waker().clone());
            (Poll::Pending, queued)
        });
        if queued {
            self.inner.task.wake();
        }
        polled
    }

    /// Ready once the stream is reset or gone (a request body need not
    /// be read further).
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.with(|st, id| match st.streams.get_mut(&id) {
            Some(s) if !s.closed => {
                s.send_waker = Some(cx.waker().clone());
                Poll::Pending
            }
            _ => Poll::Ready(()),
        })
    }

    /// Nobody will read the response: a stream still open is reset
    /// (CANCEL) and what it holds is given back.
    pub fn stop_receiving(&self) {
        self.with(|st, id| st.cancel(id));
        self.inner.task.wake();
    }

    /// Sends the request's trailers, which end it.
    pub fn send_trailers(&self, trailers: &HeaderMap) {
        self.with(|st, id| {
            let State {
                streams,
                wbuf,
                encoder,
                peer_max_frame,
                ..
            } = st;
            let Some(s) = streams.get_mut(&id) else {
                return;
            };
            if s.local_end || s.error.is_some() {
                return;
            }
            s.local_end = true;
            let start = wbuf.len();
            wbuf.extend_from_slice(&[0; frame::HEADER_LEN]);
            encoder.begin_block(wbuf);
            for (name, value) in trailers {
                if !connection_specific(name) {
                    encoder.encode(
                        name.as_str().as_bytes(),
                        value.as_bytes(),
                        value.is_sensitive(),
                        wbuf,
                    );
                }
            }
            frame::finish_headers(wbuf, start, id, true, *peer_max_frame);
        });
        self.inner.task.wake();
    }

    /// Resets the stream (the request body failed).
    pub fn send_reset(&self, code: u32) {
        self.with(|st, id| {
            let Some(s) = st.streams.get_mut(&id) else {
                return;
            };
            if s.error.is_none() {
                s.fail(Error::Local(code));
                frame::put_rst(&mut st.wbuf, id, code);
            }
        });
        self.inner.task.wake();
    }
}

/// Polls a stream's response head as a future.
pub struct ResponseFuture(pub StreamRef);

impl std::future::Future for ResponseFuture {
    type Output = Result<http::response::Parts, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.poll_response(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_streams_say_so_for_the_retry_policy() {
        // `retryOn: refused-stream` matches the reason's name in the message.
        for e in [Error::Refused, Error::Reset(reason::REFUSED_STREAM)] {
            assert!(e.is_refused());
            assert!(e.to_string().contains("REFUSED_STREAM"), "{e}");
        }
        let local = Error::Local(reason::CANCEL);
        assert!(!local.is_refused());
        assert_eq!(local.to_string(), "stream reset by the proxy: CANCEL");
        assert_eq!(Error::Reset(0x42).code(), Some(0x42));
        assert!(Error::Reset(0x42).to_string().ends_with("UNKNOWN_ERROR"));
        assert!(Error::Io("gone".into()).is_io());
    }
}
