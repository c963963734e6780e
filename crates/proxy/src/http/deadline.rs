//! The route timeout's second half: Envoy's route timeout spans the whole
//! upstream response, body included, so a response body still streaming
//! when the deadline passes is cut (the client sees the stream reset).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::body::BoxError;

/// The error a body cut by the route timeout yields.
#[derive(Debug, thiserror::Error)]
#[error("upstream response timed out (route timeout)")]
pub struct ResponseTimeout;

pin_project_lite::pin_project! {
    /// A body that fails with [`ResponseTimeout`] once `deadline` passes.
    /// The timer is made only when the body first has to wait: most small
    /// responses are complete when first polled and never need one.
    pub struct Deadline<B> {
        #[pin]
        inner: B,
        deadline: Instant,
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> Deadline<B> {
    /// Wraps `inner` with a deadline.
    pub fn new(inner: B, deadline: Instant) -> Self {
        Deadline {
            inner,
            deadline,
            sleep: None,
        }
    }
}

impl<B> Body for Deadline<B>
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
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let deadline = *this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(ResponseTimeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_cut_at_the_deadline() {
        let inner = http_body_util::StreamBody::new(futures::stream::pending::<
            Result<Frame<Bytes>, BoxError>,
        >());
        let body = Deadline::new(inner, Instant::now() + std::time::Duration::from_secs(2));
        let Err(err) = body.collect().await else {
            panic!("the body was not cut")
        };
        assert!(err.to_string().contains("route timeout"));
    }
}
