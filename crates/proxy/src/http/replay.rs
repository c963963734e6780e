//! A request body that can be sent more than once (for retries) while it
//! still streams: every attempt reads the chunks already received, then
//! pulls new ones from the client, keeping a copy up to a byte limit
//! (Envoy's per-request buffer limit). Past the limit nothing more is kept
//! and the body can no longer be replayed: memory stays bounded.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};

/// Envoy's default per-request buffer limit (its connection buffer limit).
pub const DEFAULT_BUFFER_LIMIT: u64 = 1024 * 1024;

struct Shared {
    inner: ProxyBody,
    chunks: Vec<Bytes>,
    size: u64,
    limit: u64,
    overflowed: bool,
    done: bool,
    trailers: Option<http::HeaderMap>,
    error: Option<String>,
    generation: u64,
}

/// The shared source of a replayable body.
#[derive(Clone)]
pub struct Replay {
    shared: Arc<Mutex<Shared>>,
}

impl Replay {
    /// Wraps the client's body, keeping at most `limit` bytes for replay.
    pub fn new(inner: ProxyBody, limit: u64) -> Self {
        let done = inner.is_end_stream();
        Replay {
            shared: Arc::new(Mutex::new(Shared {
                inner,
                chunks: Vec::new(),
                size: 0,
                limit,
                overflowed: false,
                done,
                trailers: None,
                error: None,
                generation: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A body for the next attempt; bodies of earlier attempts fail from now on.
    pub fn body(&self) -> ReplayBody {
        let mut s = self.lock();
        s.generation += 1;
        ReplayBody {
            shared: self.shared.clone(),
            generation: s.generation,
            cursor: 0,
            trailers_sent: false,
        }
    }

    /// Whether another attempt can still send the whole body.
    pub fn can_replay(&self) -> bool {
        let s = self.lock();
        !s.overflowed && s.error.is_none()
    }
}

/// One attempt's view of a [`Replay`].
pub struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    generation: u64,
    cursor: usize,
    trailers_sent: bool,
}

/// The error an earlier attempt's body yields once a retry replaced it.
#[derive(Debug, thiserror::Error)]
#[error("request body superseded by a retry")]
pub struct Superseded;

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut guard = this.shared.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut *guard;
        if s.generation != this.generation {
            return Poll::Ready(Some(Err(Box::new(Superseded))));
        }
        if let Some(chunk) = s.chunks.get(this.cursor) {
            this.cursor += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if s.done {
            if !this.trailers_sent
                && let Some(t) = &s.trailers
            {
                this.trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(t.clone()))));
            }
            return Poll::Ready(None);
        }
        if let Some(e) = &s.error {
            return Poll::Ready(Some(Err(e.clone().into())));
        }
        match Pin::new(&mut s.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                s.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                s.error = Some(e.to_string());
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    s.size += data.len() as u64;
                    if !s.overflowed {
                        if s.size > s.limit {
                            // Too big to keep: stream on, never replay.
                            s.overflowed = true;
                            s.chunks = Vec::new();
                            this.cursor = 0;
                        } else {
                            s.chunks.push(data.clone());
                            this.cursor += 1;
                        }
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    s.trailers = Some(t.clone());
                    s.done = true;
                    this.trailers_sent = true;
                }
                if s.inner.is_end_stream() {
                    s.done = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        s.generation == self.generation
            && self.cursor >= s.chunks.len()
            && s.done
            && (s.trailers.is_none() || self.trailers_sent)
    }

    fn size_hint(&self) -> SizeHint {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if s.done && s.trailers.is_none() && !s.overflowed && self.cursor == 0 {
            return SizeHint::with_exact(s.size);
        }
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;
    use http_body_util::BodyExt;

    fn stream(chunks: &[&'static str]) -> ProxyBody {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        body::boxed(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
    }

    #[tokio::test]
    async fn replays_after_partial_read() {
        let r = Replay::new(stream(&["ab", "cd", "ef"]), 100);
        let mut first = r.body();
        let f = first.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "ab");
        let second = r.body();
        assert!(first.frame().await.unwrap().is_err(), "first is superseded");
        let all = second.collect().await.unwrap().to_bytes();
        assert_eq!(all, "abcdef");
        assert!(r.can_replay());
        let third = r.body().collect().await.unwrap().to_bytes();
        assert_eq!(third, "abcdef");
    }

    #[tokio::test]
    async fn over_the_limit_streams_but_never_replays() {
        let r = Replay::new(stream(&["abcd", "efgh", "ij"]), 5);
        let all = r.body().collect().await.unwrap().to_bytes();
        assert_eq!(all, "abcdefghij");
        assert!(!r.can_replay());
    }

    #[tokio::test]
    async fn empty_body_is_end_stream() {
        let r = Replay::new(body::empty(), 5);
        assert!(r.body().is_end_stream());
    }
}
