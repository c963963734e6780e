//! Body types for proxied messages and a body wrapper that observes the end
//! of a stream (for byte counts, metrics and access logs).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

/// Errors carried through proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type on both sides of the proxy.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body into a [`ProxyBody`].
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A body with fixed content.
pub fn full(data: impl Into<Bytes>) -> ProxyBody {
    boxed(http_body_util::Full::new(data.into()))
}

/// An empty body.
pub fn empty() -> ProxyBody {
    boxed(http_body_util::Empty::new())
}

/// How a body stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEnd {
    /// All data (and trailers) passed.
    Complete,
    /// The body produced an error (reset, disconnect).
    Error,
    /// The body was dropped before its end (the reader went away).
    Dropped,
}

/// Called once with the byte count and how the body ended.
pub type OnEnd = Box<dyn FnOnce(u64, BodyEnd, Option<&http::HeaderMap>) + Send>;

pin_project_lite::pin_project! {
    /// Counts the bytes of a body and reports its end exactly once.
    pub struct Observed<B> {
        #[pin]
        inner: B,
        bytes: u64,
        on_end: Option<OnEnd>,
        limit: Option<u64>,
    }

    impl<B> PinnedDrop for Observed<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(f) = this.on_end.take() {
                f(*this.bytes, BodyEnd::Dropped, None);
            }
        }
    }
}

/// The error an [`Observed`] body yields past its byte limit.
#[derive(Debug, thiserror::Error)]
#[error("body larger than {0} bytes")]
pub struct BodyTooLarge(pub u64);

impl<B> Observed<B> {
    /// Wraps `inner`; `on_end` runs when it ends, fails or is dropped.
    pub fn new(inner: B, limit: Option<u64>, on_end: OnEnd) -> Self {
        Observed {
            inner,
            bytes: 0,
            on_end: Some(on_end),
            limit,
        }
    }
}

impl<B> Body for Observed<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                if let Some(f) = this.on_end.take() {
                    f(*this.bytes, BodyEnd::Complete, None);
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(f) = this.on_end.take() {
                    f(*this.bytes, BodyEnd::Error, None);
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                    if let Some(limit) = *this.limit
                        && *this.bytes > limit
                    {
                        if let Some(f) = this.on_end.take() {
                            f(*this.bytes, BodyEnd::Error, None);
                        }
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge(limit)))));
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    // Trailers end the stream: report now, with them (gRPC status).
                    if let Some(f) = this.on_end.take() {
                        f(*this.bytes, BodyEnd::Complete, Some(trailers));
                    }
                }
                if this.inner.is_end_stream()
                    && let Some(f) = this.on_end.take()
                {
                    f(*this.bytes, BodyEnd::Complete, None);
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
