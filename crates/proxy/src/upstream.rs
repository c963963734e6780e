//! Upstream HTTP connection pools, one set per cluster so each cluster keeps
//! its own connect and idle timeouts.
//!
//! - HTTP/1.1: hyper-util's pooling client, keyed by endpoint address, with
//!   keep-alive reuse and an idle timeout.
//! - HTTP/2: one multiplexed connection per endpoint, kept here. hyper-util's
//!   client keys its pool on the request URI's authority, which would force
//!   `:authority` to be the endpoint's address; an intermediary must forward
//!   the original authority (RFC 9113 8.3.1), so HTTP/2 has its own pool.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http2::SendRequest;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};

use crate::balance::Endpoint;
use crate::body::ProxyBody;
use crate::circuit::{Breakers, Overflow};
use crate::model::cluster::ClusterModel;
use crate::model::cluster_policy::Keepalive;
use crate::tls::PeerPrincipal;
use crate::tls::client::{MaybeTls, Transports, UpstreamTls};
use crate::upstream_conn::{ConnUses, LimitedConnector};

/// An HTTP/1.1 client over a cluster's endpoints.
pub type HttpClient = Client<MaybeTls<LimitedConnector>, ProxyBody>;

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made (refused, unreachable, timed out).
    #[error("connect: {0}")]
    Connect(String),
    /// The connection or stream failed after it was made.
    #[error("{0}")]
    Request(String),
    /// A circuit breaker refused the request (503 `UO`).
    #[error("upstream overflow: {0}")]
    Overflow(#[from] Overflow),
}

/// Whether `e` (or an error under it) is a breaker's refusal.
fn overflow_in(e: &(dyn std::error::Error + 'static)) -> Option<Overflow> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(o) = err.downcast_ref::<Overflow>() {
            return Some(*o);
        }
        cur = err.source();
    }
    None
}

/// The pools of one cluster.
#[derive(Clone, Debug)]
pub struct ClusterPools {
    http1: HttpClient,
    http2: Arc<H2Pool>,
    max_requests_per_connection: Option<u32>,
    /// Pools of the cluster's TLS transport sockets (auto mTLS, DestinationRule TLS).
    transports: Arc<Transports>,
}

impl ClusterPools {
    /// Pools configured from the cluster's timeouts and limits; new
    /// connections take permits from `breakers`. Endpoints whose transport
    /// socket is TLS use pools of their own, made by [`ClusterPools::attach_tls`].
    pub fn new(model: &ClusterModel, breakers: Arc<Breakers>) -> Self {
        Self::with_tls(model, breakers, None)
    }

    /// Builds the TLS pools of the cluster's TLS transport sockets; SDS
    /// secrets (`default`, `ROOTCA`) resolve to `mesh`.
    pub fn attach_tls(
        &self,
        model: &ClusterModel,
        mesh: Option<&Arc<meshwork_identity::tls::MeshTls>>,
    ) {
        if self.transports.needs_tls() {
            let breakers = self.http2.breakers.clone();
            self.transports.attach(mesh, |tls| {
                Self::with_tls(model, breakers.clone(), Some(tls))
            });
        }
    }

    /// Pools whose every connection uses `tls` (plaintext when `None`).
    fn with_tls(
        model: &ClusterModel,
        breakers: Arc<Breakers>,
        tls: Option<Arc<UpstreamTls>>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(model.connect_timeout));
        connector.set_nodelay(true);
        match &model.policy.keepalive {
            Some(k) => {
                connector.set_keepalive(Some(k.time.unwrap_or(Duration::from_secs(300))));
                connector.set_keepalive_interval(k.interval);
                connector.set_keepalive_retries(k.probes);
            }
            None => connector.set_keepalive(Some(Duration::from_secs(300))),
        }
        let connector = MaybeTls::new(
            LimitedConnector::new(connector, breakers.clone(), model.connect_timeout),
            tls.clone(),
            model.connect_timeout,
        );
        let mut h1 = Client::builder(TokioExecutor::new());
        h1.pool_idle_timeout(model.idle_timeout)
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(1024)
            .retry_canceled_requests(false)
            .set_host(false);
        ClusterPools {
            http1: h1.build(connector),
            http2: Arc::new(H2Pool {
                connect_timeout: model.connect_timeout,
                idle_timeout: model.idle_timeout,
                conns: Mutex::default(),
                breakers,
                keepalive: model.policy.keepalive.clone(),
                max_requests_per_connection: model.policy.max_requests_per_connection,
                tls: tls.clone(),
            }),
            max_requests_per_connection: model.policy.max_requests_per_connection,
            transports: Arc::new(Transports::new(if tls.is_some() {
                Default::default()
            } else {
                model.transport.clone()
            })),
        }
    }

    /// Sends a request to `endpoint`. For HTTP/1.1 the request target
    /// names the endpoint and the Host header carries the original
    /// authority; for HTTP/2 `:authority` is the original authority (from
    /// the Host header) and the connection goes to the endpoint.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        http2: bool,
        mut req: http::Request<ProxyBody>,
    ) -> Result<http::Response<hyper::body::Incoming>, UpstreamError> {
        if let Some(tls_pools) = self.transports.for_endpoint(endpoint) {
            return Box::pin(tls_pools?.send(endpoint, http2, req)).await;
        }
        let path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let authority = if http2 {
            req.headers_mut()
                .remove(http::header::HOST)
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                .unwrap_or_else(|| endpoint.authority.clone())
        } else {
            endpoint.authority.clone()
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority);
        parts.path_and_query = Some(path_and_query);
        *req.uri_mut() = Uri::from_parts(parts)
            .map_err(|e| UpstreamError::Request(format!("bad request target: {e}")))?;
        if http2 {
            *req.version_mut() = http::Version::HTTP_2;
            return self.http2.send(endpoint.address(), req).await;
        }
        *req.version_mut() = http::Version::HTTP_11;
        let capture = self
            .max_requests_per_connection
            .map(|_| hyper_util::client::legacy::connect::capture_connection(&mut req));
        let resp = self.http1.request(req).await.map_err(|e| {
            if let Some(o) = overflow_in(&e) {
                UpstreamError::Overflow(o)
            } else if e.is_connect() {
                UpstreamError::Connect(format!("{e:?}"))
            } else {
                UpstreamError::Request(format!("{e:?}"))
            }
        })?;
        // Retire the connection after max_requests_per_connection requests:
        // a poisoned connection is closed instead of going back to the pool.
        if let (Some(max), Some(capture)) = (self.max_requests_per_connection, capture)
            && let Some(conn) = capture.connection_metadata().as_ref()
        {
            let mut extras = http::Extensions::new();
            conn.get_extras(&mut extras);
            if extras.get::<ConnUses>().is_some_and(|u| u.bump() >= max) {
                conn.poison();
            }
        }
        Ok(resp)
    }
}

impl ClusterPools {
    /// Opens a connection for TCP proxying to `endpoint`, with the TLS its
    /// transport socket asks for. Returns the server's identity with it.
    pub async fn connect_stream(
        &self,
        endpoint: &Endpoint,
    ) -> Result<(crate::tls::client::UpstreamIo, Option<PeerPrincipal>), UpstreamError> {
        if let Some(tls_pools) = self.transports.for_endpoint(endpoint) {
            return Box::pin(tls_pools?.connect_stream(endpoint)).await;
        }
        crate::tls::client::connect(
            endpoint.address(),
            self.http2.tls.as_deref(),
            false,
            self.http2.connect_timeout,
        )
        .await
    }
}

fn now_ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// One HTTP/2 connection per endpoint, reconnected when it closes and
/// dropped when idle.
#[derive(Debug)]
struct H2Pool {
    connect_timeout: Duration,
    idle_timeout: Duration,
    conns: Mutex<HashMap<SocketAddr, H2Conn>>,
    breakers: Arc<Breakers>,
    keepalive: Option<Keepalive>,
    max_requests_per_connection: Option<u32>,
    tls: Option<Arc<UpstreamTls>>,
}

#[derive(Clone, Debug)]
struct H2Conn {
    sender: SendRequest<ProxyBody>,
    last_used: Arc<AtomicU64>,
    epoch: Instant,
    id: u64,
    uses: ConnUses,
    /// The server's verified identity (TLS).
    peer: Option<PeerPrincipal>,
}

impl H2Pool {
    fn cached(&self, endpoint: SocketAddr) -> Option<H2Conn> {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns
            .get(&endpoint)
            .filter(|c| !c.sender.is_closed())
            .cloned()
    }

    async fn send(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        req: http::Request<ProxyBody>,
    ) -> Result<http::Response<hyper::body::Incoming>, UpstreamError> {
        let conn = match self.cached(endpoint) {
            Some(c) => c,
            None => self.connect(endpoint).await?,
        };
        conn.last_used.store(now_ms(conn.epoch), Ordering::Relaxed);
        if let Some(max) = self.max_requests_per_connection
            && conn.uses.bump() >= max
        {
            // Its last request: new requests get a new connection, and this
            // one closes when its streams end.
            let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            if conns.get(&endpoint).is_some_and(|c| c.id == conn.id) {
                conns.remove(&endpoint);
            }
        }
        let mut sender = conn.sender;
        sender
            .ready()
            .await
            .map_err(|e| UpstreamError::Request(format!("{e:?}")))?;
        let mut resp = sender
            .send_request(req)
            .await
            .map_err(|e| UpstreamError::Request(format!("{e:?}")))?;
        if let Some(p) = conn.peer {
            resp.extensions_mut().insert(p);
        }
        Ok(resp)
    }

    async fn connect(self: &Arc<Self>, endpoint: SocketAddr) -> Result<H2Conn, UpstreamError> {
        let permit = self.breakers.connection(self.connect_timeout).await?;
        let (stream, peer) =
            crate::tls::client::connect(endpoint, self.tls.as_deref(), true, self.connect_timeout)
                .await?;
        if let Some(k) = &self.keepalive {
            set_keepalive(stream.tcp(), k);
        }
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .keep_alive_interval(Duration::from_secs(60))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| {
                UpstreamError::Connect(format!("HTTP/2 handshake with {endpoint}: {e}"))
            })?;
        tokio::spawn(async move {
            // The breaker's permit lives as long as the connection.
            let _permit = permit;
            if let Err(e) = connection.await {
                tracing::debug!(%endpoint, error = %e, "upstream HTTP/2 connection ended");
            }
        });
        let epoch = Instant::now();
        let conn = H2Conn {
            sender,
            last_used: Arc::new(AtomicU64::new(0)),
            epoch,
            id: rand::random(),
            uses: ConnUses::default(),
            peer,
        };
        {
            let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            // Another request may have connected meanwhile: use one connection.
            if let Some(existing) = conns.get(&endpoint).filter(|c| !c.sender.is_closed()) {
                return Ok(existing.clone());
            }
            conns.insert(endpoint, conn.clone());
        }
        self.reap_when_idle(endpoint, conn.id, conn.last_used.clone(), epoch);
        Ok(conn)
    }

    /// Forgets the connection once idle; it closes when its last in-flight
    /// stream ends.
    fn reap_when_idle(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        id: u64,
        last_used: Arc<AtomicU64>,
        epoch: Instant,
    ) {
        let pool = Arc::downgrade(self);
        let idle = self.idle_timeout;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep((idle / 2).max(Duration::from_millis(50))).await;
                let Some(pool) = pool.upgrade() else { return };
                let idle_for = now_ms(epoch).saturating_sub(last_used.load(Ordering::Relaxed));
                let mut conns = pool.conns.lock().unwrap_or_else(|p| p.into_inner());
                match conns.get(&endpoint) {
                    Some(c) if c.id == id => {
                        if c.sender.is_closed() || Duration::from_millis(idle_for) >= idle {
                            conns.remove(&endpoint);
                            return;
                        }
                    }
                    _ => return,
                }
            }
        });
    }
}

/// Sets TCP keepalive probing on an upstream socket.
fn set_keepalive(stream: &tokio::net::TcpStream, k: &Keepalive) {
    let mut ka = socket2::TcpKeepalive::new();
    if let Some(t) = k.time {
        ka = ka.with_time(t);
    }
    if let Some(i) = k.interval {
        ka = ka.with_interval(i);
    }
    if let Some(p) = k.probes {
        ka = ka.with_retries(p);
    }
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "setting TCP keepalive failed");
    }
}
