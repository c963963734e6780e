//! The HTTP/1.1 upstream pool of one cluster (and transport socket): per
//! endpoint, a small stack of idle keep-alive connections made with
//! hyper's `client::conn::http1`.
//!
//! Why not hyper-util's pooling client: its checkout goes through a
//! URI-keyed pool, a oneshot and, after every response, a spawned task
//! that waits for the connection to be ready again; that was most of the
//! proxy's per-request cost beyond HTTP parsing. Here a checkout is a
//! mutex-guarded `Vec::pop` (the most recently used connection first),
//! and a connection goes back when its response body ends.
//!
//! A connection is closed (never reused) after an error, after its
//! response said `Connection: close` (hyper then closes it), after
//! `max_requests_per_connection` requests, after an upgrade, when its
//! response body was dropped before its end, and when it has been idle
//! for the cluster's idle timeout (one sweeper task per pool while it
//! holds idle connections). Each connection holds a connection count of
//! the cluster's breakers for as long as its socket lives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};

use crate::body::ProxyBody;
use crate::circuit::Breakers;
use crate::model::cluster_policy::Keepalive;
use crate::tls::PeerPrincipal;
use crate::tls::client::UpstreamTls;
use crate::upstream::UpstreamError;
use crate::upstream_conn::{PermitIo, set_keepalive};

/// Idle connections kept per endpoint at most (more are closed).
const MAX_IDLE_PER_ENDPOINT: usize = 1024;

/// How one cluster's HTTP/1.1 connections are made and kept.
#[derive(Debug)]
pub struct H1Settings {
    /// Bound on TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Idle connections older than this are closed.
    pub idle_timeout: Duration,
    /// TCP keepalive of the cluster.
    pub keepalive: Option<Keepalive>,
    /// Requests per connection before it is retired.
    pub max_requests: Option<u32>,
    /// TLS for every connection (`None`: plaintext).
    pub tls: Option<Arc<UpstreamTls>>,
    /// The cluster's breakers (connection counts).
    pub breakers: Arc<Breakers>,
}

/// One upstream HTTP/1.1 connection as the pool holds it.
struct Conn {
    sender: SendRequest<ProxyBody>,
    /// Requests sent on it so far.
    uses: u32,
    /// The server's verified identity (TLS).
    peer: Option<PeerPrincipal>,
}

struct IdleConn {
    conn: Conn,
    since: Instant,
}

#[derive(Default)]
struct Idle {
    by_endpoint: HashMap<SocketAddr, Vec<IdleConn>>,
    /// Whether the sweeper task runs.
    sweeping: bool,
}

/// The per-endpoint HTTP/1.1 pool; share as `Arc<H1Pool>`.
pub struct H1Pool {
    settings: H1Settings,
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
    pub fn new(settings: H1Settings) -> Arc<Self> {
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
    /// an idle connection or a new one. A reused connection that turns out
    /// closed before the request went out is replaced by a new one.
    pub async fn send(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let (mut conn, reused) = match self.checkout(endpoint) {
            Some(c) => (c, true),
            None => (self.connect(endpoint).await?, false),
        };
        conn.uses += 1;
        let resp = match conn.sender.try_send_request(req).await {
            Ok(r) => r,
            Err(mut e) => match e.take_message() {
                // The server closed the idle connection first: the request
                // never left, so it goes out on a fresh connection.
                Some(req) if reused => {
                    drop(conn);
                    conn = self.connect(endpoint).await?;
                    conn.uses += 1;
                    conn.sender
                        .try_send_request(req)
                        .await
                        .map_err(|e| UpstreamError::Request(format!("{:?}", e.error())))?
                }
                _ => return Err(UpstreamError::Request(format!("{:?}", e.error()))),
            },
        };
        let (mut parts, inner) = resp.into_parts();
        if let Some(p) = &conn.peer {
            parts.extensions.insert(p.clone());
        }
        let mut checkin =
            (parts.status != http::StatusCode::SWITCHING_PROTOCOLS).then(|| Checkin {
                pool: self.clone(),
                endpoint,
                conn,
            });
        if inner.is_end_stream()
            && let Some(c) = checkin.take()
        {
            // No body to wait for (hyper never polls an empty body).
            c.done();
        }
        Ok(Response::from_parts(parts, UpstreamBody { inner, checkin }))
    }

    /// The most recently used idle connection to `endpoint` that is still
    /// open, ready and within the idle timeout; the others are closed.
    fn checkout(&self, endpoint: SocketAddr) -> Option<Conn> {
        let mut idle = self.lock();
        let stack = idle.by_endpoint.get_mut(&endpoint)?;
        let now = Instant::now();
        while let Some(c) = stack.pop() {
            if c.conn.sender.is_ready()
                && now.saturating_duration_since(c.since) < self.settings.idle_timeout
            {
                return Some(c.conn);
            }
        }
        None
    }

    async fn connect(&self, endpoint: SocketAddr) -> Result<Conn, UpstreamError> {
        let s = &self.settings;
        let permit = s.breakers.connection(s.connect_timeout).await?;
        let (stream, peer) =
            crate::tls::client::connect(endpoint, s.tls.as_deref(), false, s.connect_timeout)
                .await?;
        set_keepalive(stream.tcp(), s.keepalive.as_ref());
        let (sender, connection) = Builder::new()
            .handshake(PermitIo::new(stream, permit))
            .await
            .map_err(|e| UpstreamError::Connect(format!("HTTP/1.1 with {endpoint}: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(%endpoint, error = %e, "upstream HTTP/1.1 connection ended");
            }
        });
        Ok(Conn {
            sender,
            uses: 0,
            peer,
        })
    }

    /// Puts a connection whose exchange ended back, if it may be reused.
    fn checkin(self: &Arc<Self>, endpoint: SocketAddr, mut conn: Conn) {
        if self
            .settings
            .max_requests
            .is_some_and(|max| conn.uses >= max)
            || conn.sender.is_closed()
        {
            return;
        }
        if conn.sender.is_ready() {
            self.push(endpoint, conn);
            return;
        }
        // Not ready yet (the request body may still be streaming, or the
        // connection task has not run since the response ended): back in
        // the pool once it is, closed if it fails.
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            if conn.sender.ready().await.is_ok()
                && let Some(pool) = pool.upgrade()
            {
                pool.push(endpoint, conn);
            }
        });
    }

    fn push(self: &Arc<Self>, endpoint: SocketAddr, conn: Conn) {
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

/// Closes idle connections past the idle timeout (and those the server
/// closed); ends when the pool has none left or is gone.
fn sweep(pool: Weak<H1Pool>, idle_timeout: Duration) {
    let every = (idle_timeout / 2).max(Duration::from_millis(50));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(pool) = pool.upgrade() else { return };
            let mut idle = pool.lock();
            let now = Instant::now();
            idle.by_endpoint.retain(|_, stack| {
                stack.retain(|c| {
                    !c.conn.sender.is_closed()
                        && now.saturating_duration_since(c.since) < idle_timeout
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

/// A connection lent to one exchange, returned when its response ends.
struct Checkin {
    pool: Arc<H1Pool>,
    endpoint: SocketAddr,
    conn: Conn,
}

impl Checkin {
    fn done(self) {
        self.pool.checkin(self.endpoint, self.conn);
    }
}

pin_project_lite::pin_project! {
    /// An upstream response body. An HTTP/1.1 one gives its connection
    /// back to the pool when it ends; dropped or failed before its end, the
    /// connection is closed.
    pub struct UpstreamBody {
        #[pin]
        inner: Incoming,
        checkin: Option<Checkin>,
    }
}

impl UpstreamBody {
    /// A body with no connection to give back (HTTP/2).
    pub fn new(inner: Incoming) -> Self {
        UpstreamBody {
            inner,
            checkin: None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(c) = this.checkin.take() {
                    c.done();
                }
            }
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => {
                if let Some(c) = this.checkin.take() {
                    c.done();
                }
            }
            Poll::Ready(Some(Err(_))) => drop(this.checkin.take()),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
