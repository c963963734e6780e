//! Upstream HTTP connection pools, one set per cluster so each cluster keeps
//! its own connect and idle timeouts.
//!
//! - HTTP/1.1: a stack of idle keep-alive connections per endpoint
//!   ([`crate::upstream_h1`]).
//! - HTTP/2: one multiplexed connection per endpoint, kept here. An
//!   intermediary must forward the original `:authority` (RFC 9113 8.3.1),
//!   so the pool is keyed by endpoint address, never by the request URI.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};

use crate::balance::Endpoint;
use crate::body::ProxyBody;
use crate::circuit::{Breakers, Overflow};
use crate::model::cluster::ClusterModel;
use crate::model::cluster_policy::Keepalive;
use crate::tls::PeerPrincipal;
use crate::tls::client::{Transports, UpstreamTls};
use crate::upstream_conn::{ConnUses, set_keepalive};
pub use crate::upstream_h1::UpstreamBody;
use crate::upstream_h1::{H1Pool, H1Settings};

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

/// The pools of one cluster.
#[derive(Clone, Debug)]
pub struct ClusterPools {
    http1: Arc<H1Pool>,
    http2: Arc<H2Pool>,
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
        let http1 = H1Pool::new(H1Settings {
            connect_timeout: model.connect_timeout,
            idle_timeout: model.idle_timeout,
            keepalive: model.policy.keepalive.clone(),
            max_requests: model.policy.max_requests_per_connection,
            tls: tls.clone(),
            breakers: breakers.clone(),
        });
        ClusterPools {
            http1,
            http2: Arc::new(H2Pool {
                connect_timeout: model.connect_timeout,
                idle_timeout: model.idle_timeout,
                conns: Mutex::default(),
                breakers,
                keepalive: model.policy.keepalive.clone(),
                max_requests_per_connection: model.policy.max_requests_per_connection,
                tls: tls.clone(),
            }),
            transports: Arc::new(Transports::new(if tls.is_some() {
                Default::default()
            } else {
                model.transport.clone()
            })),
        }
    }

    /// Sends a request to `endpoint`. For HTTP/1.1 the request target is
    /// in origin form and the Host header carries the original authority;
    /// for HTTP/2 `:authority` is the original authority (from the Host
    /// header) and the connection goes to the endpoint.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        http2: bool,
        mut req: http::Request<ProxyBody>,
    ) -> Result<http::Response<UpstreamBody>, UpstreamError> {
        if let Some(tls_pools) = self.transports.for_endpoint(endpoint) {
            return Box::pin(tls_pools?.send(endpoint, http2, req)).await;
        }
        if !http2 {
            *req.version_mut() = http::Version::HTTP_11;
            if req.method() == http::Method::CONNECT {
                *req.uri_mut() = Uri::from(endpoint.authority.clone());
            } else if req.uri().scheme().is_some() || req.uri().authority().is_some() {
                let origin = req
                    .uri()
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/"));
                *req.uri_mut() = Uri::from(origin);
            }
            return self.http1.send(endpoint.address(), req).await;
        }
        let path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let authority = req
            .headers_mut()
            .remove(http::header::HOST)
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .unwrap_or_else(|| endpoint.authority.clone());
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority);
        parts.path_and_query = Some(path_and_query);
        *req.uri_mut() = Uri::from_parts(parts)
            .map_err(|e| UpstreamError::Request(format!("bad request target: {e}")))?;
        *req.version_mut() = http::Version::HTTP_2;
        // Boxed: this future would otherwise size every HTTP/1.1 request's.
        let resp = Box::pin(self.http2.send(endpoint.address(), req)).await?;
        Ok(resp.map(UpstreamBody::new))
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
            set_keepalive(stream.tcp(), Some(k));
        }
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
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
