//! What every connection handler shares.

use std::sync::Arc;

use meshwork_telemetry::metrics::Label;
use meshwork_telemetry::prometheus_client::metrics::counter::Counter;
use meshwork_telemetry::{AccessLogger, IstioMetrics, PeerMetadata, RequestLabels};
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
    /// This workload's side of the request metric labels, computed once.
    pub labels: LabelTemplates,
    /// `x-envoy-peer-metadata-id` value (the node id).
    pub peer_id_header: http::HeaderValue,
    /// Drain signal and connection tracking.
    pub drain: Drain,
    /// Connection cap.
    pub connections: Arc<Semaphore>,
    /// The workload certificate and bundle (SDS `default` / `ROOTCA`) for
    /// TLS filter chains; unset when the proxy runs without a CA.
    pub mesh_tls: std::sync::OnceLock<Arc<meshwork_identity::tls::MeshTls>>,
    /// Whether the timer floor task runs (see `http::keep_timer_floor`).
    pub(crate) timer_floor: std::sync::atomic::AtomicBool,
    /// How the HTTP/1.1 fast path fares (`meshwork_http1_*` metrics).
    pub http1: Http1Stats,
}

/// Counters of the HTTP/1.1 fast path, exported with the metrics: how
/// many requests it served and how many connections it left to hyper (a
/// high share points at clients sending what the fast path does not
/// take: chunked or large uploads, `Expect`, heads split over writes).
#[derive(Clone, Debug, Default)]
pub struct Http1Stats {
    /// Requests served by the fast path.
    pub fast_requests: Counter,
    /// Connections handed to hyper's server.
    pub handoffs: Counter,
}

impl Http1Stats {
    fn register(&self, metrics: &IstioMetrics) {
        metrics.register(
            "meshwork_http1_fast_path_requests",
            "HTTP/1.1 requests served by the proxy's fast path",
            self.fast_requests.clone(),
        );
        metrics.register(
            "meshwork_http1_handoffs",
            "HTTP/1.1 connections the fast path handed to hyper's server",
            self.handoffs.clone(),
        );
    }
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
        let labels = LabelTemplates::new(&peer);
        let http1 = Http1Stats::default();
        http1.register(&metrics);
        Arc::new(ProxyCtx {
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            tables,
            metrics,
            access_log,
            limits,
            identity,
            peer,
            labels,
            peer_header,
            peer_id_header,
            drain,
            mesh_tls: std::sync::OnceLock::new(),
            timer_floor: std::sync::atomic::AtomicBool::new(false),
            http1,
        })
    }
}

// === request metric labels ===

/// A peer's seven workload labels (Istio's `source_*` / `destination_*`).
pub(crate) struct PeerLabels {
    workload: Label,
    namespace: Label,
    app: Label,
    version: Label,
    canonical_service: Label,
    canonical_revision: Label,
    cluster: Label,
}

impl PeerLabels {
    /// The labels of a peer's metadata (`unknown` where it is empty).
    pub(crate) fn of(p: &PeerMetadata) -> Self {
        PeerLabels {
            workload: Label::or_unknown(&p.workload_name),
            namespace: Label::or_unknown(&p.namespace),
            app: Label::or_unknown(&p.app),
            version: Label::or_unknown(&p.version),
            canonical_service: Label::or_unknown(&p.canonical_service),
            canonical_revision: Label::or_unknown(&p.canonical_revision),
            cluster: Label::or_unknown(&p.cluster_id),
        }
    }
}

/// This proxy's side of every request's labels, computed once per proxy.
#[derive(Debug)]
pub struct LabelTemplates {
    /// Outbound (reporter `source`): the source is this workload.
    pub outbound: RequestLabels,
    /// Inbound (reporter `destination`): the destination is this workload.
    pub inbound: RequestLabels,
}

impl LabelTemplates {
    /// The templates for this workload.
    pub fn new(me: &PeerMetadata) -> Self {
        let peer = PeerLabels::of(me);
        let mut outbound = RequestLabels::unknown();
        outbound.reporter = Label::intern("source");
        fill_source_from(&mut outbound, &peer);
        let mut inbound = RequestLabels::unknown();
        inbound.reporter = Label::intern("destination");
        fill_destination_from(&mut inbound, &peer);
        inbound.destination_service_namespace = Label::intern(&me.namespace);
        inbound.connection_security_policy = Label::intern("none");
        LabelTemplates { outbound, inbound }
    }
}

/// Sets the `source_*` workload labels.
pub(crate) fn fill_source_from(l: &mut RequestLabels, p: &PeerLabels) {
    l.source_workload = p.workload.clone();
    l.source_workload_namespace = p.namespace.clone();
    l.source_app = p.app.clone();
    l.source_version = p.version.clone();
    l.source_canonical_service = p.canonical_service.clone();
    l.source_canonical_revision = p.canonical_revision.clone();
    l.source_cluster = p.cluster.clone();
}

/// Sets the `destination_*` workload labels.
pub(crate) fn fill_destination_from(l: &mut RequestLabels, p: &PeerLabels) {
    l.destination_workload = p.workload.clone();
    l.destination_workload_namespace = p.namespace.clone();
    l.destination_app = p.app.clone();
    l.destination_version = p.version.clone();
    l.destination_canonical_service = p.canonical_service.clone();
    l.destination_canonical_revision = p.canonical_revision.clone();
    l.destination_cluster = p.cluster.clone();
}
