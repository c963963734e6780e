//! What every connection handler shares.

use std::sync::Arc;

use meshwork_telemetry::{AccessLogger, IstioMetrics, PeerMetadata};
use tokio::sync::Semaphore;

use crate::drain::Drain;
use crate::options::{Identity, Limits};
use crate::tables::SharedTables;

/// Shared state of the data path.
pub struct ProxyCtx {
    /// Current configuration.
    pub tables: SharedTables,
    /// Istio standard metrics.
    pub metrics: IstioMetrics,
    /// Access log.
    pub access_log: AccessLogger,
    /// Limits.
    pub limits: Limits,
    /// Who this proxy is.
    pub identity: Identity,
    /// This workload's metadata, for the peer exchange and metric labels.
    pub peer: PeerMetadata,
    /// `peer` encoded once as the `x-envoy-peer-metadata` header value.
    pub peer_header: http::HeaderValue,
    /// `x-envoy-peer-metadata-id` value (the node id).
    pub peer_id_header: http::HeaderValue,
    /// Drain signal and connection tracking.
    pub drain: Drain,
    /// Connection cap.
    pub connections: Arc<Semaphore>,
    /// The workload certificate and bundle (SDS `default` / `ROOTCA`) for
    /// TLS filter chains; unset when the proxy runs without a CA.
    pub mesh_tls: std::sync::OnceLock<Arc<meshwork_identity::tls::MeshTls>>,
}

impl ProxyCtx {
    /// Builds the context.
    pub fn new(
        tables: SharedTables,
        metrics: IstioMetrics,
        access_log: AccessLogger,
        limits: Limits,
        identity: Identity,
        drain: Drain,
    ) -> Arc<Self> {
        let label = |k: &str| identity.labels.get(k).cloned().unwrap_or_default();
        let app = label("app");
        let version = label("version");
        let peer = PeerMetadata {
            namespace: identity.namespace.clone(),
            workload_name: identity.workload.clone(),
            canonical_service: identity
                .labels
                .get("service.istio.io/canonical-name")
                .cloned()
                .unwrap_or_else(|| {
                    if app.is_empty() {
                        identity.workload.clone()
                    } else {
                        app.clone()
                    }
                }),
            canonical_revision: identity
                .labels
                .get("service.istio.io/canonical-revision")
                .cloned()
                .unwrap_or_else(|| {
                    if version.is_empty() {
                        "latest".into()
                    } else {
                        version.clone()
                    }
                }),
            app,
            version,
            service_account: identity.service_account.clone(),
            cluster_id: identity.cluster.clone(),
        };
        let peer_header = http::HeaderValue::from_str(&peer.to_header_value())
            .unwrap_or_else(|_| http::HeaderValue::from_static(""));
        let peer_id_header = http::HeaderValue::from_str(&identity.node_id)
            .unwrap_or_else(|_| http::HeaderValue::from_static("unknown"));
        Arc::new(ProxyCtx {
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            tables,
            metrics,
            access_log,
            limits,
            identity,
            peer,
            peer_header,
            peer_id_header,
            drain,
            mesh_tls: std::sync::OnceLock::new(),
        })
    }
}
