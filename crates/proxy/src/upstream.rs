//! Upstream HTTP connection pools, one set per cluster so each cluster keeps
//! its own connect and idle timeouts.
//!
//! - HTTP/1.1: a stack of idle keep-alive connections per endpoint
//!   ([`crate::upstream_h1`]).
//! - HTTP/2: multiplexed connections per endpoint, another when every one
//!   is at its server's stream limit ([`crate::upstream_h2`]). An
//!   intermediary must forward the original `:authority` (RFC 9113 8.3.1),
//!   so the pool is keyed by endpoint address, never by the request URI.

use std::sync::Arc;

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};

use crate::balance::Endpoint;
use crate::body::ProxyBody;
use crate::circuit::{Breakers, Overflow};
use crate::model::cluster::ClusterModel;
use crate::tls::PeerPrincipal;
use crate::tls::client::{Transports, UpstreamTls};
use crate::upstream_conn::PoolSettings;
use crate::upstream_h1::H1Pool;
pub use crate::upstream_h1::UpstreamBody;
use crate::upstream_h2::H2Pool;

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
            let breakers = self.http2.settings().breakers.clone();
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
        let settings = PoolSettings {
            connect_timeout: model.connect_timeout,
            idle_timeout: model.idle_timeout,
            keepalive: model.policy.keepalive.clone(),
            max_requests: model.policy.max_requests_per_connection,
            tls: tls.clone(),
            breakers,
        };
        ClusterPools {
            http1: H1Pool::new(settings.clone()),
            http2: Arc::new(H2Pool::new(settings)),
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
        Ok(resp.map(UpstreamBody::http2))
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
        let settings = self.http2.settings();
        crate::tls::client::connect(
            endpoint.address(),
            settings.tls.as_deref(),
            false,
            settings.connect_timeout,
        )
        .await
    }
}
