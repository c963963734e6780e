//! Request mirroring (Envoy's `request_mirror_policies`): a copy of a
//! fraction of requests goes to another cluster with `-shadow` appended to
//! the host, fire-and-forget. The copy's body is fed through a small
//! bounded channel that never blocks the primary request: if the mirror
//! falls behind it is abandoned, and its response is always discarded.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::route::v3::route_action::RequestMirrorPolicy;
use http::header::{self, HeaderValue};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::fault::Fraction;
use crate::body::{self, BoxError, ProxyBody};
use crate::ctx::ProxyCtx;
use crate::model::CompileError;
use crate::model::cluster::UpstreamProtocol;

/// Body frames buffered for a mirror before it is abandoned.
const MIRROR_QUEUE: usize = 64;
/// The longest a mirrored request may take when the route has no timeout.
const MIRROR_LIMIT: Duration = Duration::from_secs(300);

/// A compiled mirror policy.
#[derive(Clone, Debug, PartialEq)]
pub struct MirrorModel {
    /// Where copies go.
    pub cluster: String,
    /// How many requests are copied.
    pub fraction: Fraction,
}

impl MirrorModel {
    /// Compiles one `RequestMirrorPolicy`.
    pub fn compile(p: &RequestMirrorPolicy) -> Result<Self, CompileError> {
        if p.cluster.is_empty() {
            return Err("mirror policy needs a cluster (cluster_header is not supported)".into());
        }
        let fraction = match &p.runtime_fraction {
            Some(rf) => Fraction::compile(rf.default_value.as_ref())?,
            None => Fraction(1_000_000),
        };
        Ok(MirrorModel {
            cluster: p.cluster.clone(),
            fraction,
        })
    }
}

/// `host-shadow`, keeping any port: Envoy's shadow host.
pub fn shadow_host(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() && (!h.contains(':') || h.ends_with(']')) => {
            format!("{h}-shadow:{p}")
        }
        _ => format!("{host}-shadow"),
    }
}

enum Msg {
    Data(Bytes),
    Trailers(http::HeaderMap),
    End,
}

/// Sends copies of the request to the mirrors whose dice roll hits; returns
/// the primary's body (a tee when a copy needs the body).
pub fn start(
    ctx: &Arc<ProxyCtx>,
    mirrors: &[MirrorModel],
    parts: &http::request::Parts,
    body: ProxyBody,
    downstream_h2: bool,
    timeout: Option<Duration>,
) -> ProxyBody {
    let tables = ctx.tables.load();
    let mut senders = Vec::new();
    let empty = body.is_end_stream();
    for m in mirrors.iter().filter(|m| m.fraction.hit()) {
        let Some(cluster) = tables.clusters.get(&m.cluster).cloned() else {
            tracing::debug!(cluster = m.cluster, "mirror cluster unknown; copy skipped");
            continue;
        };
        let mut req = http::Request::new(if empty {
            body::empty()
        } else {
            let (tx, rx) = mpsc::channel(MIRROR_QUEUE);
            senders.push(tx);
            body::boxed(MirrorBody { rx, ended: false })
        });
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = parts.uri.clone();
        *req.headers_mut() = parts.headers.clone();
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if let Ok(v) = HeaderValue::from_str(&shadow_host(host)) {
            req.headers_mut().insert(header::HOST, v);
        }
        let use_h2 = match cluster.model.protocol {
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::UseDownstream => downstream_h2,
        };
        let limit = timeout.unwrap_or(MIRROR_LIMIT);
        tokio::spawn(async move {
            let Some(endpoint) = cluster.pick(None) else {
                return;
            };
            let _active = endpoint.track();
            let call = async {
                let resp = cluster.pools.send(&endpoint, use_h2, req).await?;
                // Read and discard the answer so the connection can be reused.
                let _ = resp.into_body().collect().await;
                Ok::<_, crate::upstream::UpstreamError>(())
            };
            match tokio::time::timeout(limit, call).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "mirrored request failed"),
                Err(_) => tracing::debug!("mirrored request timed out"),
            }
        });
    }
    if senders.is_empty() {
        return body;
    }
    body::boxed(Tee {
        inner: body,
        senders,
    })
}

pin_project_lite::pin_project! {
    /// The primary's body, copying each frame to the mirrors without waiting.
    struct Tee {
        #[pin]
        inner: ProxyBody,
        senders: Vec<mpsc::Sender<Msg>>,
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let msg = |f: &Frame<Bytes>| match (f.data_ref(), f.trailers_ref()) {
                    (Some(d), _) => Some(Msg::Data(d.clone())),
                    (None, Some(t)) => Some(Msg::Trailers(t.clone())),
                    _ => None,
                };
                // A full or closed queue drops that mirror (its body then fails).
                this.senders
                    .retain(|s| msg(frame).is_none_or(|m| s.try_send(m).is_ok()));
                // A reader that knows the body is whole stops polling here
                // (content-length reached): end the copies now, or they
                // would be abandoned when the primary's body is dropped.
                if this.inner.is_end_stream() {
                    for s in this.senders.drain(..) {
                        let _ = s.try_send(Msg::End);
                    }
                }
            }
            Poll::Ready(None) => {
                for s in this.senders.drain(..) {
                    let _ = s.try_send(Msg::End);
                }
            }
            Poll::Ready(Some(Err(_))) => this.senders.clear(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A mirror's body, fed by the [`Tee`]; a queue closed without its end
/// marker is an error (the copy is abandoned, never sent truncated).
struct MirrorBody {
    rx: mpsc::Receiver<Msg>,
    ended: bool,
}

/// The error a mirror's body yields when it was abandoned.
#[derive(Debug, thiserror::Error)]
#[error("mirrored body abandoned")]
struct Abandoned;

impl Body for MirrorBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Msg::Data(d))) => Poll::Ready(Some(Ok(Frame::data(d)))),
            Poll::Ready(Some(Msg::Trailers(t))) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Poll::Ready(Some(Msg::End)) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => Poll::Ready(Some(Err(Box::new(Abandoned)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_copy_ends_when_the_primary_is_read_only_to_its_known_end() {
        let (tx, rx) = mpsc::channel(MIRROR_QUEUE);
        let mut tee = Tee {
            inner: body::full("payload"),
            senders: vec![tx],
        };
        // Read as the HTTP/1.1 pool does: stop once the body says it is whole.
        while !tee.is_end_stream() {
            tee.frame().await.unwrap().unwrap();
        }
        drop(tee);
        let copy = MirrorBody { rx, ended: false }.collect().await;
        assert_eq!(copy.unwrap().to_bytes(), "payload");
    }

    #[test]
    fn shadow_hosts() {
        assert_eq!(shadow_host("reviews:9080"), "reviews-shadow:9080");
        assert_eq!(shadow_host("reviews"), "reviews-shadow");
        assert_eq!(shadow_host("a.b.svc"), "a.b.svc-shadow");
    }
}
