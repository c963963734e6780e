//! The HTTP/1.1 upstream pool of one cluster (and transport socket): per
//! endpoint, a small stack of idle keep-alive connections, each driven by
//! the request that holds it ([`crate::upstream_h1_codec`]).
//!
//! Why not hyper-util's pooling client: its checkout goes through a
//! URI-keyed pool, a oneshot and, after every response, a spawned task
//! that waits for the connection to be ready again; that was most of the
//! proxy's per-request cost beyond HTTP parsing. Here a checkout is a
//! mutex-guarded `Vec::pop` (the most recently used connection first),
//! and a connection goes back when its response body ends. Upgrade
//! requests (WebSocket, ...) go over a fresh hyper connection, never
//! pooled: hyper's upgrade API is what the tunnels take.
//!
//! A connection is closed (never reused) after an error, after its
//! response said `Connection: close` or ended with the connection, after
//! `max_requests_per_connection` requests, when its response body was
//! dropped before its end, when anything arrives on it while idle (the
//! server closed it), and when it has been idle for the cluster's idle
//! timeout (one sweeper task per pool while it holds idle connections).
//! Each connection holds a connection count of the cluster's breakers for
//! as long as its socket lives.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::Builder;

use crate::body::{BoxError, ProxyBody};
use crate::circuit::ConnectionPermit;
use crate::tls::PeerPrincipal;
use crate::tls::client::UpstreamIo;
use crate::upstream::UpstreamError;
use crate::upstream_conn::{PermitIo, PoolSettings, set_keepalive};
use crate::upstream_h1_codec::{
    BodyEnd, CodecError, Gather, Gathered, H1Body, H1Conn, Head, gather,
};
use crate::upstream_h2::H2Body;

/// Idle connections kept per endpoint at most (more are closed).
const MAX_IDLE_PER_ENDPOINT: usize = 1024;

struct IdleConn {
    conn: H1Conn,
    since: Instant,
}

#[derive(Default)]
struct Idle {
    /// foldhash: a checkout and a checkin per request.
    by_endpoint: foldhash::HashMap<SocketAddr, Vec<IdleConn>>,
    /// Whether the sweeper task runs.
    sweeping: bool,
}

/// The per-endpoint HTTP/1.1 pool; share as `Arc<H1Pool>`.
pub struct H1Pool {
    settings: PoolSettings,
    idle: Mutex<Idle>,
}

impl std::fmt::Debug for H1Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Pool")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl H1Pool {
    /// An empty pool.
    pub fn new(settings: PoolSettings) -> Arc<Self> {
        Arc::new(H1Pool {
            settings,
            idle: Mutex::default(),
        })
    }

    /// Idle connections to `endpoint` now (for tests and debugging).
    pub fn idle_count(&self, endpoint: SocketAddr) -> usize {
        self.lock().by_endpoint.get(&endpoint).map_or(0, Vec::len)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `req` (origin-form target, Host header set) to `endpoint` on
    /// an idle connection or a new one. Idle connections that closed while
    /// idle are dropped at checkout; upgrades go on a fresh connection.
    pub async fn send(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        if req.headers().contains_key(http::header::UPGRADE)
            || req.method() == http::Method::CONNECT
        {
            // Rare paths are boxed: their futures would otherwise size (and
            // be copied with) every request's future.
            return Box::pin(self.send_hyper(endpoint, req)).await;
        }
        let (parts, body) = req.into_parts();
        let body = match gather(body)
            .await
            .map_err(|e| UpstreamError::Request(e.to_string()))?
        {
            Gather::Complete(b) => b,
            Gather::Partial(read, rest) => {
                let body = crate::body::boxed(Prefixed {
                    first: Some(read).filter(|b| !b.is_empty()),
                    rest,
                });
                return Box::pin(self.send_hyper(endpoint, Request::from_parts(parts, body))).await;
            }
        };
        let (mut conn, reused) = match self.checkout(endpoint) {
            Some(c) => (c, true),
            None => (Box::pin(self.connect(endpoint)).await?, false),
        };
        let head = match exchange(&mut conn, &parts, &body).await {
            Ok(head) => head,
            // The server closed the kept-alive connection as the request
            // went out (nothing came back): an idempotent request goes
            // again on a new connection (RFC 9110 9.2.2).
            Err(e) if reused && e.closed_early && idempotent(&parts.method) => {
                drop(conn);
                conn = Box::pin(self.connect(endpoint)).await?;
                exchange(&mut conn, &parts, &body)
                    .await
                    .map_err(|e| UpstreamError::Request(e.message))?
            }
            Err(e) => return Err(UpstreamError::Request(e.message)),
        };
        let peer = conn.peer.clone();
        let mut body = UpstreamBody::http1(H1Body::new(conn, &head), self.clone(), endpoint);
        body.give_back_if_done();
        let mut resp = head.response.map(|()| body);
        if let Some(p) = peer {
            resp.extensions_mut().insert(p);
        }
        Ok(resp)
    }

    /// A request over a new hyper connection, never pooled: upgrades (and
    /// CONNECT), whose connection becomes the tunnel after a `101`, and
    /// requests whose body streams, which hyper writes while it reads the
    /// response.
    async fn send_hyper(
        &self,
        endpoint: SocketAddr,
        req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let (io, peer, permit) = self.dial(endpoint).await?;
        let (mut sender, connection) = Builder::new()
            .handshake(PermitIo::new(io, permit))
            .await
            .map_err(|e| UpstreamError::Connect(format!("HTTP/1.1 with {endpoint}: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(%endpoint, error = %e, "upstream HTTP/1.1 connection ended");
            }
        });
        let mut resp = sender
            .send_request(req)
            .await
            .map_err(|e| UpstreamError::Request(format!("{e:?}")))?;
        if let Some(p) = peer {
            resp.extensions_mut().insert(p);
        }
        Ok(resp.map(UpstreamBody::new))
    }

    /// The most recently used idle connection to `endpoint` that is still
    /// open and within the idle timeout; the others are closed.
    fn checkout(&self, endpoint: SocketAddr) -> Option<H1Conn> {
        let mut idle = self.lock();
        let stack = idle.by_endpoint.get_mut(&endpoint)?;
        let now = Instant::now();
        while let Some(mut c) = stack.pop() {
            if now.saturating_duration_since(c.since) < self.settings.idle_timeout
                && c.conn.is_idle_ok()
            {
                return Some(c.conn);
            }
        }
        None
    }

    /// A TCP (and TLS) connection holding a breaker connection permit.
    async fn dial(
        &self,
        endpoint: SocketAddr,
    ) -> Result<(UpstreamIo, Option<PeerPrincipal>, ConnectionPermit), UpstreamError> {
        let s = &self.settings;
        let permit = s.breakers.connection(s.connect_timeout).await?;
        let (stream, peer) =
            crate::tls::client::connect(endpoint, s.tls.as_deref(), false, s.connect_timeout)
                .await?;
        set_keepalive(stream.tcp(), s.keepalive.as_ref());
        Ok((stream, peer, permit))
    }

    async fn connect(&self, endpoint: SocketAddr) -> Result<H1Conn, UpstreamError> {
        let (io, peer, permit) = self.dial(endpoint).await?;
        Ok(H1Conn::new(io, peer, permit))
    }

    /// Puts a connection whose exchange ended back, if it may be reused.
    fn checkin(self: &Arc<Self>, endpoint: SocketAddr, conn: H1Conn) {
        if self
            .settings
            .max_requests
            .is_some_and(|max| conn.uses >= max)
        {
            return;
        }
        let mut idle = self.lock();
        let stack = idle.by_endpoint.entry(endpoint).or_default();
        if stack.len() >= MAX_IDLE_PER_ENDPOINT {
            return;
        }
        stack.push(IdleConn {
            conn,
            since: Instant::now(),
        });
        if !idle.sweeping {
            idle.sweeping = true;
            sweep(Arc::downgrade(self), self.settings.idle_timeout);
        }
    }
}

/// How long a pooled connection idles before its read buffer is freed.
const KEEP_BUFFER: Duration = Duration::from_secs(1);

/// Closes idle connections past the idle timeout (and those the server
/// closed) and frees the read buffers of those idle for [`KEEP_BUFFER`];
/// ends when the pool has none left or is gone.
fn sweep(pool: Weak<H1Pool>, idle_timeout: Duration) {
    let every = (idle_timeout / 2).clamp(Duration::from_millis(50), 2 * KEEP_BUFFER);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(pool) = pool.upgrade() else { return };
            let mut idle = pool.lock();
            let now = Instant::now();
            idle.by_endpoint.retain(|_, stack| {
                stack.retain_mut(|c| {
                    let idle_for = now.saturating_duration_since(c.since);
                    if idle_for >= KEEP_BUFFER {
                        c.conn.release_buffer();
                    }
                    idle_for < idle_timeout && c.conn.is_idle_ok()
                });
                !stack.is_empty()
            });
            if idle.by_endpoint.is_empty() {
                idle.sweeping = false;
                return;
            }
        }
    });
}

/// A failed exchange on one connection.
struct ExchangeError {
    message: String,
    /// The connection ended before any response byte came.
    closed_early: bool,
}

/// Writes the request and reads its response head.
async fn exchange(
    conn: &mut H1Conn,
    parts: &http::request::Parts,
    body: &Gathered,
) -> Result<Head, ExchangeError> {
    conn.uses += 1;
    let closed = |e: &std::io::Error| {
        use std::io::ErrorKind::*;
        matches!(
            e.kind(),
            UnexpectedEof | ConnectionReset | BrokenPipe | ConnectionAborted
        )
    };
    if let Err(e) = conn.write_request(parts, body).await {
        return Err(ExchangeError {
            closed_early: closed(&e),
            message: e.to_string(),
        });
    }
    let head_request = parts.method == http::Method::HEAD;
    conn.read_head(head_request)
        .await
        .map_err(|e| ExchangeError {
            closed_early: matches!(&e, CodecError::Io(io) if closed(io)) && conn.nothing_read(),
            message: e.to_string(),
        })
}

/// Methods a client may send again after a lost connection (RFC 9110 9.2.2).
fn idempotent(m: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(m)
}

pin_project_lite::pin_project! {
    /// The bytes of a request body already read, then the rest of it.
    struct Prefixed {
        first: Option<Bytes>,
        #[pin]
        rest: ProxyBody,
    }
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        this.rest.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.rest.size_hint();
        let first = self.first.as_ref().map_or(0, |b| b.len() as u64);
        // Upper first: a lower bound above the upper one would panic.
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + first);
        }
        hint.set_lower(hint.lower() + first);
        hint
    }
}

pin_project_lite::pin_project! {
    /// An upstream response body. An HTTP/1.1 one is read off its
    /// connection and gives the connection back to the pool when it ends;
    /// dropped or failed before its end, the connection is closed.
    pub struct UpstreamBody {
        #[pin]
        kind: Kind,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind {
        Http1 { body: H1Body, pool: Arc<H1Pool>, endpoint: SocketAddr },
        Http2 { #[pin] body: H2Body },
        Hyper { #[pin] inner: Incoming },
    }
}

impl UpstreamBody {
    /// A body hyper reads (upgrades, streamed uploads).
    pub fn new(inner: Incoming) -> Self {
        UpstreamBody {
            kind: Kind::Hyper { inner },
        }
    }

    /// The body of an HTTP/2 stream.
    pub fn http2(body: H2Body) -> Self {
        UpstreamBody {
            kind: Kind::Http2 { body },
        }
    }

    fn http1(body: H1Body, pool: Arc<H1Pool>, endpoint: SocketAddr) -> Self {
        UpstreamBody {
            kind: Kind::Http1 {
                body,
                pool,
                endpoint,
            },
        }
    }

    /// A body that is already complete (no bytes to read) gives its
    /// connection back at once.
    fn give_back_if_done(&mut self) {
        if let Kind::Http1 {
            body,
            pool,
            endpoint,
        } = &mut self.kind
        {
            give_back_if_done(body, pool, *endpoint);
        }
    }
}

/// Once `body` is complete, its connection goes back to `pool` (if it may
/// be reused).
fn give_back_if_done(body: &mut H1Body, pool: &Arc<H1Pool>, endpoint: SocketAddr) {
    if body.is_done()
        && let BodyEnd::Reusable(c) = body.take_end()
    {
        pool.checkin(endpoint, c);
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Hyper { inner } => inner.poll_frame(cx).map_err(Into::into),
            KindProj::Http2 { body } => body.poll_frame(cx),
            KindProj::Http1 {
                body,
                pool,
                endpoint,
            } => {
                let polled = body.poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Err(_))) => drop(body.take_end()),
                    Poll::Ready(_) => give_back_if_done(body, pool, *endpoint),
                    Poll::Pending => {}
                }
                polled.map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Hyper { inner } => inner.is_end_stream(),
            Kind::Http2 { body } => body.is_end_stream(),
            Kind::Http1 { body, .. } => body.is_done(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Hyper { inner } => inner.size_hint(),
            Kind::Http2 { body } => body.size_hint(),
            Kind::Http1 { body, .. } => match body.remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}
