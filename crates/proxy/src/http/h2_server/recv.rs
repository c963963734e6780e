//! A request body arriving on an HTTP/2 stream: the connection task pushes
//! DATA and trailers in, the request path (in any task) reads them out, and
//! what it reads is given back to the client as flow-control window.
//!
//! The window is returned lazily: a reader only wakes the connection when
//! its stream's, or the connection's, unannounced consumption crosses half
//! a window, so a small request body costs no extra wakeup.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures::task::AtomicWaker;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// What readers hand back to the connection.
#[derive(Default)]
pub struct Returns {
    /// Consumed octets not yet announced on the connection window.
    pub conn: AtomicU32,
    /// Streams whose unannounced consumption crossed their threshold.
    pub streams: Mutex<Vec<u32>>,
    /// Set after an id is pushed onto `streams`: the connection, which
    /// looks several times per wakeup, takes the lock only then.
    pub streams_pending: AtomicBool,
    /// The connection task.
    pub waker: AtomicWaker,
    /// Half the connection window: the wake threshold.
    pub conn_threshold: u32,
    /// Half the stream window: the wake threshold.
    pub stream_threshold: u32,
}

impl Returns {
    /// Thresholds from the windows the server announced.
    pub fn new(conn_window: u32, stream_window: u32) -> Arc<Returns> {
        Arc::new(Returns {
            conn_threshold: conn_window / 2,
            stream_threshold: stream_window / 2,
            ..Returns::default()
        })
    }

    /// Counts `n` consumed octets of stream `id`; `open` says whether the
    /// client may still send on it (only then is its window worth returning).
    fn give_back(&self, shared: &Shared, n: u32, open: bool) {
        let before = self.conn.fetch_add(n, Ordering::AcqRel);
        let mut wake = before < self.conn_threshold && before + n >= self.conn_threshold;
        if open {
            let before = shared.unannounced.fetch_add(n, Ordering::AcqRel);
            if before < self.stream_threshold && before + n >= self.stream_threshold {
                self.streams.lock().unwrap().push(shared.id);
                self.streams_pending.store(true, Ordering::Release);
                wake = true;
            }
        }
        if wake {
            self.waker.wake();
        }
    }
}

/// How a stream's body ended early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    /// The client reset the stream (with this reason).
    Reset(u32),
    /// The connection ended.
    Gone,
}

/// The state the connection and the reader share.
#[derive(Default)]
struct State {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    ended: bool,
    broken: Option<Broken>,
    reader: Option<Waker>,
    /// The reader dropped its end: new data is given back at once.
    dropped: bool,
}

/// One stream's body, shared by the connection and the reader.
pub struct Shared {
    id: u32,
    state: Mutex<State>,
    /// Consumed octets not yet announced on the stream window.
    pub unannounced: AtomicU32,
    returns: Arc<Returns>,
    /// Octets the request declared (content-length).
    declared: Option<u64>,
}

impl Shared {
    /// A body for stream `id`.
    pub fn new(id: u32, returns: Arc<Returns>, declared: Option<u64>) -> Arc<Shared> {
        Arc::new(Shared {
            id,
            state: Mutex::default(),
            unannounced: AtomicU32::new(0),
            returns,
            declared,
        })
    }

    /// Adds received data; `false` if the reader is gone (the caller gives
    /// the window back itself).
    pub fn push(&self, data: Bytes, end: bool) -> bool {
        let mut s = self.state.lock().unwrap();
        if s.dropped {
            s.ended |= end;
            return false;
        }
        if !data.is_empty() {
            s.chunks.push_back(data);
        }
        s.ended |= end;
        if let Some(w) = s.reader.take() {
            w.wake();
        }
        true
    }

    /// Adds the trailers, which end the body.
    pub fn push_trailers(&self, trailers: HeaderMap) {
        let mut s = self.state.lock().unwrap();
        s.trailers = Some(trailers);
        s.ended = true;
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    /// Ends the body with an error, unless it had already ended.
    pub fn break_off(&self, why: Broken) {
        let mut s = self.state.lock().unwrap();
        if !s.ended {
            s.broken = Some(why);
        }
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }
}

/// The request body the request path reads.
pub struct RecvBody {
    shared: Arc<Shared>,
    /// Octets read so far (for the exact size hint).
    read: u64,
}

impl RecvBody {
    /// The reader's end of `shared`.
    pub fn new(shared: Arc<Shared>) -> RecvBody {
        RecvBody { shared, read: 0 }
    }
}

/// A body that broke off (the client reset the stream or left).
#[derive(Debug, thiserror::Error)]
#[error("HTTP/2 request body broke off: {0:?}")]
pub struct BrokenBody(pub Broken);

impl Body for RecvBody {
    type Data = Bytes;
    type Error = BrokenBody;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BrokenBody>>> {
        let this = self.get_mut();
        let mut s = this.shared.state.lock().unwrap();
        if let Some(chunk) = s.chunks.pop_front() {
            let open = !s.ended;
            drop(s);
            this.read += chunk.len() as u64;
            let n = chunk.len() as u32;
            this.shared.returns.give_back(&this.shared, n, open);
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(t) = s.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        if s.ended {
            return Poll::Ready(None);
        }
        if let Some(why) = s.broken {
            return Poll::Ready(Some(Err(BrokenBody(why))));
        }
        match &mut s.reader {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let s = self.shared.state.lock().unwrap();
        s.ended && s.chunks.is_empty() && s.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(n) = self.shared.declared {
            return SizeHint::with_exact(n.saturating_sub(self.read));
        }
        let s = self.shared.state.lock().unwrap();
        let held: u64 = s.chunks.iter().map(|c| c.len() as u64).sum();
        if s.ended {
            SizeHint::with_exact(held)
        } else {
            let mut h = SizeHint::new();
            h.set_lower(held);
            h
        }
    }
}

impl Drop for RecvBody {
    fn drop(&mut self) {
        let mut s = self.shared.state.lock().unwrap();
        s.dropped = true;
        let held: usize = s.chunks.drain(..).map(|c| c.len()).sum();
        let open = !s.ended && s.broken.is_none();
        drop(s);
        if held > 0 {
            self.shared
                .returns
                .give_back(&self.shared, held as u32, open);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn data_and_trailers_come_out_in_order_and_are_given_back() {
        let returns = Returns::new(100, 10);
        let shared = Shared::new(1, returns.clone(), Some(6));
        let mut body = RecvBody::new(shared.clone());
        assert_eq!(body.size_hint().exact(), Some(6));
        shared.push(Bytes::from_static(b"abc"), false);
        shared.push(Bytes::from_static(b"def"), false);
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        shared.push_trailers(t);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "abc");
        assert_eq!(body.size_hint().exact(), Some(3));
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(returns.conn.load(Ordering::Acquire), 6);
        // The stream had ended: its own window is not worth returning.
        assert!(returns.streams.lock().unwrap().is_empty());
        assert!(!returns.streams_pending.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn crossing_half_the_stream_window_asks_for_an_update() {
        let returns = Returns::new(1000, 10);
        let shared = Shared::new(3, returns.clone(), None);
        let mut body = RecvBody::new(shared.clone());
        shared.push(Bytes::from_static(b"0123456"), false);
        body.frame().await.unwrap().unwrap();
        assert_eq!(*returns.streams.lock().unwrap(), [3]);
        assert!(returns.streams_pending.load(Ordering::Acquire));
        assert_eq!(shared.unannounced.load(Ordering::Acquire), 7);
    }

    #[tokio::test]
    async fn a_reset_breaks_the_body_and_a_dropped_reader_gives_all_back() {
        let returns = Returns::new(1000, 1000);
        let shared = Shared::new(5, returns.clone(), None);
        let mut body = RecvBody::new(shared.clone());
        shared.break_off(Broken::Reset(8));
        assert!(body.frame().await.unwrap().is_err());
        let shared = Shared::new(7, returns.clone(), None);
        let body = RecvBody::new(shared.clone());
        shared.push(Bytes::from_static(b"held"), false);
        drop(body);
        assert_eq!(returns.conn.load(Ordering::Acquire), 4);
        assert!(!shared.push(Bytes::from_static(b"late"), false));
    }
}
