//! One HTTP/2 stream's work inside the connection task: the request path
//! runs, then the response body is read frame by frame. It yields events
//! the connection turns into frames; it reads no further while the
//! connection holds data it could not send yet (flow control), and it ends
//! at once when the connection cancels it (a reset or the end of the
//! connection), dropping the request path and with it the upstream call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use futures::task::AtomicWaker;
use http::{HeaderMap, Response};
use http_body::Body;

use crate::body::ProxyBody;

/// The request path's future for one stream.
pub type Handler = Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>>;

/// How the connection steers a stream's task.
#[derive(Default)]
pub struct Control {
    /// The connection holds unsent data of this stream: read no more.
    blocked: AtomicBool,
    /// The stream is gone: end now.
    cancelled: AtomicBool,
    /// The task's waker.
    waker: AtomicWaker,
}

impl Control {
    /// Stops (`true`) or resumes the reading of the response body.
    pub fn block(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Release);
        if !blocked {
            self.waker.wake();
        }
    }

    /// Ends the task.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// What a stream's task produced.
pub enum Event {
    /// The response head; `end` when there is no body. With the body's
    /// first data (and whether it ends the body) when that was ready at
    /// once, as it is for most small responses: the connection sends both
    /// in one turn and the task is polled once less.
    Head(
        http::response::Parts,
        Option<u64>,
        bool,
        Option<(Bytes, bool)>,
    ),
    /// Body data; `end` when it is the last.
    Data(Bytes, bool),
    /// The trailers, which end the stream.
    Trailers(HeaderMap),
    /// The body failed: the stream is reset.
    Failed,
}

enum Phase {
    Handling(Handler),
    Sending(ProxyBody),
    Done,
}

/// A stream's task, polled by the connection.
pub struct Task {
    id: u32,
    control: Arc<Control>,
    phase: Phase,
    /// Trailers or a failure the body gave at once, behind the head, for
    /// the next poll (rare: boxed, as the task is moved on every event it
    /// yields).
    queued: Option<Box<Event>>,
}

impl Task {
    /// The task of stream `id`, running `handler`.
    pub fn new(id: u32, control: Arc<Control>, handler: Handler) -> Task {
        Task {
            id,
            control,
            phase: Phase::Handling(handler),
            queued: None,
        }
    }
}

impl Stream for Task {
    type Item = (u32, Event);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<(u32, Event)>> {
        let this = self.get_mut();
        this.control.waker.register(cx.waker());
        if this.control.cancelled.load(Ordering::Acquire) {
            this.phase = Phase::Done;
            return Poll::Ready(None);
        }
        // A panic in one request path resets its stream, not the
        // connection (each stream was a task of its own under hyper).
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| this.poll_phase(cx)));
        polled.unwrap_or_else(|_| {
            tracing::error!(
                stream = this.id,
                "request path panicked; resetting the stream"
            );
            this.phase = Phase::Done;
            Poll::Ready(Some((this.id, Event::Failed)))
        })
    }
}

impl Task {
    /// Advances the request path or the response body.
    fn poll_phase(&mut self, cx: &mut Context<'_>) -> Poll<Option<(u32, Event)>> {
        let id = self.id;
        if let Some(event) = self.queued.take() {
            return Poll::Ready(Some((id, *event)));
        }
        let event = match &mut self.phase {
            Phase::Handling(handler) => {
                let resp = std::task::ready!(handler.as_mut().poll(cx));
                let (parts, mut body) = resp.into_parts();
                if body.is_end_stream() {
                    // No content-length made up for a bodiless answer
                    // (a HEAD's describes the GET's body), as hyper.
                    self.phase = Phase::Done;
                    return Poll::Ready(Some((id, Event::Head(parts, None, true, None))));
                }
                let exact = body.size_hint().exact();
                let first = match poll_body(&mut body, id, cx) {
                    Poll::Pending => None,
                    Poll::Ready(Event::Data(data, end)) => Some((data, end)),
                    Poll::Ready(other) => {
                        self.queued = Some(Box::new(other));
                        None
                    }
                };
                let ended = first.as_ref().is_some_and(|(_, end)| *end) || self.queued.is_some();
                self.phase = if ended {
                    Phase::Done
                } else {
                    Phase::Sending(body)
                };
                Event::Head(parts, exact, false, first)
            }
            Phase::Sending(body) => {
                if self.control.blocked.load(Ordering::Acquire) {
                    return Poll::Pending;
                }
                let event = std::task::ready!(poll_body(body, id, cx));
                if matches!(event, Event::Data(_, false)) {
                    return Poll::Ready(Some((id, event)));
                }
                self.phase = Phase::Done;
                event
            }
            Phase::Done => return Poll::Ready(None),
        };
        Poll::Ready(Some((id, event)))
    }
}

/// The response body's next event; empty data and unknown frames are
/// skipped. Everything but `Data(_, false)` ends the stream.
fn poll_body(body: &mut ProxyBody, id: u32, cx: &mut Context<'_>) -> Poll<Event> {
    loop {
        let event = match std::task::ready!(Pin::new(&mut *body).poll_frame(cx)) {
            None => Event::Data(Bytes::new(), true),
            Some(Err(e)) => {
                tracing::debug!(error = %e, stream = id, "response body failed; resetting the stream");
                Event::Failed
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if body.is_end_stream() => Event::Data(data, true),
                Ok(data) if data.is_empty() => continue,
                Ok(data) => Event::Data(data, false),
                Err(frame) => match frame.into_trailers() {
                    Ok(t) => Event::Trailers(t),
                    Err(_) => continue,
                },
            },
        };
        return Poll::Ready(event);
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use http_body_util::StreamBody;

    use super::*;
    use crate::body;

    fn task(body: ProxyBody) -> Task {
        let handler: Handler = Box::pin(async move { Response::new(body) });
        Task::new(1, Arc::new(Control::default()), handler)
    }

    #[tokio::test]
    async fn a_body_ready_with_the_head_goes_out_with_it() {
        let mut t = task(body::full("hello"));
        match t.next().await {
            Some((1, Event::Head(_, Some(5), false, Some((data, true))))) => {
                assert_eq!(data, "hello")
            }
            _ => panic!("expected the head with its data"),
        }
        assert!(t.next().await.is_none());
    }

    #[tokio::test]
    async fn trailers_ready_with_the_head_follow_it() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frames = futures::stream::iter([Ok::<_, body::BoxError>(http_body::Frame::trailers(
            trailers,
        ))]);
        let mut t = task(body::boxed(StreamBody::new(frames)));
        assert!(matches!(
            t.next().await,
            Some((1, Event::Head(_, None, false, None)))
        ));
        match t.next().await {
            Some((1, Event::Trailers(t))) => assert_eq!(t["grpc-status"], "0"),
            _ => panic!("expected the trailers"),
        }
        assert!(t.next().await.is_none());
    }

    #[tokio::test]
    async fn a_failing_body_resets_after_the_head() {
        let frames = futures::stream::iter([Err::<http_body::Frame<Bytes>, body::BoxError>(
            "upstream reset".into(),
        )]);
        let mut t = task(body::boxed(StreamBody::new(frames)));
        assert!(matches!(t.next().await, Some((1, Event::Head(..)))));
        assert!(matches!(t.next().await, Some((1, Event::Failed))));
        assert!(t.next().await.is_none());
    }
}
