//! One request/response exchange's accounting: when it ends (completed,
//! failed, or abandoned by the client) it records Istio's request metrics
//! and writes one access-log line, exactly once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use meshwork_telemetry::{
    AccessLogEntry, PEER_METADATA_HEADER, PeerMetadata, RequestLabels, ResponseFlag, ResponseFlags,
};

use crate::balance::Endpoint;
use crate::ctx::ProxyCtx;

/// Facts about the downstream connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// Client address.
    pub peer: SocketAddr,
    /// Our local address.
    pub local: SocketAddr,
    /// Original destination (the local address when not redirected).
    pub original_dst: SocketAddr,
    /// Whether the listener is inbound (we report as destination).
    pub inbound: bool,
    /// Downstream spoke HTTP/2.
    pub h2: bool,
    /// The downstream peer's verified identity (mTLS client certificate).
    pub peer_principal: Option<Arc<str>>,
}

/// The accounting of one exchange.
pub struct Exchange {
    ctx: Arc<ProxyCtx>,
    start: Instant,
    /// The access-log line being built (`None` when access logs are off).
    entry: Option<Box<AccessLogEntry>>,
    labels: RequestLabels,
    /// Request body bytes, counted as they stream.
    pub request_bytes: Arc<AtomicU64>,
    upstream_start: Option<Instant>,
    /// Why it failed, if it did.
    pub flags: ResponseFlags,
    done: bool,
}

impl Exchange {
    /// Starts accounting for a request.
    pub fn new(
        ctx: Arc<ProxyCtx>,
        info: &ConnInfo,
        parts: &http::request::Parts,
        host: &str,
    ) -> Self {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let entry = ctx.access_log.is_enabled().then(|| {
            Box::new(AccessLogEntry {
                start_time: SystemTime::now().into(),
                method: Some(parts.method.to_string()),
                path: Some(
                    parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_else(|| "/".into()),
                ),
                protocol: Some(format!("{:?}", parts.version)),
                x_forwarded_for: header("x-forwarded-for"),
                user_agent: header("user-agent"),
                request_id: header("x-request-id"),
                authority: Some(host.to_string()),
                downstream_local_address: Some(info.original_dst.to_string()),
                downstream_remote_address: Some(info.peer.to_string()),
                downstream_peer_uri_san: info.peer_principal.as_deref().map(str::to_string),
                ..Default::default()
            })
        });
        let mut labels = RequestLabels::unknown();
        let me = &ctx.peer;
        let protocol = if crate::model::route::is_grpc(&parts.headers) {
            "grpc"
        } else {
            "http"
        };
        labels.request_protocol = protocol.into();
        let service_host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if info.inbound {
            labels.reporter = "destination".into();
            fill_destination_from(&mut labels, me);
            // Principals come from verified peer certificates (mTLS); on
            // plaintext connections Istio reports them as unknown.
            labels.destination_service = service_host.to_string();
            labels.destination_service_name = service_host
                .split('.')
                .next()
                .unwrap_or("unknown")
                .to_string();
            labels.destination_service_namespace = me.namespace.clone();
            labels.connection_security_policy = "none".into();
            if let Some(peer) =
                header(PEER_METADATA_HEADER).and_then(|v| PeerMetadata::from_header_value(&v))
            {
                fill_source_from(&mut labels, &peer);
                labels.source_principal = "unknown".into();
            }
            if let Some(p) = &info.peer_principal {
                // A verified client certificate: Istio's mTLS labels.
                labels.source_principal = p.to_string().into();
                labels.connection_security_policy = "mutual_tls".into();
                if let Some(me) = ctx.mesh_tls.get().and_then(|m| m.id()) {
                    labels.destination_principal = me.into();
                }
            }
        } else {
            labels.reporter = "source".into();
            fill_source_from(&mut labels, me);
        }
        Exchange {
            ctx,
            start: Instant::now(),
            entry,
            labels,
            request_bytes: Arc::new(AtomicU64::new(0)),
            upstream_start: None,
            flags: ResponseFlags::new(),
            done: false,
        }
    }

    /// Records the chosen route.
    pub fn set_route(&mut self, name: &str) {
        if !name.is_empty()
            && let Some(e) = &mut self.entry
        {
            e.route_name = Some(name.to_string());
        }
    }

    /// Records the chosen cluster and endpoint.
    pub fn set_upstream(&mut self, cluster: &str, endpoint: &Endpoint) {
        if let Some(e) = &mut self.entry {
            e.upstream_cluster = Some(cluster.to_string());
            e.upstream_host = Some(endpoint.address().to_string());
        }
        self.upstream_start = Some(Instant::now());
        if self.labels.reporter == "source" {
            // outbound|port|subset|host
            let mut parts = cluster.split('|');
            let (_dir, _port, _subset, host) =
                (parts.next(), parts.next(), parts.next(), parts.next());
            if let Some(host) = host {
                self.labels.destination_service = host.to_string();
                let mut labels = host.split('.');
                self.labels.destination_service_name =
                    labels.next().unwrap_or("unknown").to_string();
                if host.ends_with(".svc.cluster.local") || host.split('.').count() > 2 {
                    self.labels.destination_service_namespace =
                        labels.next().unwrap_or("unknown").to_string();
                }
            }
            if let Some(w) = &endpoint.model.workload {
                self.labels.destination_workload = or_unknown(&w.workload);
                self.labels.destination_workload_namespace = or_unknown(&w.namespace);
                self.labels.destination_app = or_unknown(&w.app);
                self.labels.destination_version = or_unknown(&w.version);
                self.labels.destination_canonical_service = or_unknown(&w.app);
                self.labels.destination_canonical_revision = or_unknown(&w.version);
                self.labels.destination_cluster = or_unknown(&w.cluster);
            }
        }
    }

    /// Learns the upstream's identity from its response headers (the peer
    /// exchange), when it sent one.
    pub fn learn_upstream_peer(&mut self, headers: &http::HeaderMap) {
        if self.labels.reporter != "source" {
            return;
        }
        if let Some(peer) = headers
            .get(PEER_METADATA_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(PeerMetadata::from_header_value)
        {
            fill_destination_from(&mut self.labels, &peer);
        }
    }

    /// Learns the upstream's verified TLS identity (from the connection's
    /// response extensions): `destination_principal` on the client side.
    pub fn learn_upstream_tls(&mut self, extensions: &http::Extensions) {
        let Some(p) = extensions.get::<crate::tls::PeerPrincipal>() else {
            return;
        };
        if self.labels.reporter == "source" {
            self.labels.destination_principal = p.0.to_string().into();
            if let Some(me) = self.ctx.mesh_tls.get().and_then(|m| m.id()) {
                self.labels.source_principal = me.into();
            }
        }
        if let Some(e) = &mut self.entry {
            e.upstream_peer_uri_san = Some(p.0.to_string());
        }
    }

    /// Time to upstream response headers, in ms.
    pub fn upstream_elapsed_ms(&self) -> Option<u64> {
        self.upstream_start.map(|s| s.elapsed().as_millis() as u64)
    }

    /// Adds a response flag.
    pub fn flag(&mut self, f: ResponseFlag) {
        self.flags.insert(f);
    }

    /// Records a transport failure reason.
    pub fn failure_reason(&mut self, reason: String) {
        if let Some(e) = &mut self.entry {
            e.upstream_transport_failure_reason = Some(reason);
        }
    }

    /// Ends the exchange: metrics and access log.
    pub fn finish(mut self, status: u16, response_bytes: u64, grpc_status: Option<&str>) {
        self.record(status, response_bytes, grpc_status);
    }

    fn record(&mut self, status: u16, response_bytes: u64, grpc_status: Option<&str>) {
        if self.done {
            return;
        }
        self.done = true;
        let duration = self.start.elapsed();
        let request_bytes = self.request_bytes.load(Ordering::Relaxed);
        let mut labels = std::mem::take(&mut self.labels);
        labels.response_code = status.to_string();
        labels.response_flags = self.flags.to_string();
        if let Some(g) = grpc_status {
            labels.grpc_response_status = g.to_string();
        }
        self.ctx
            .metrics
            .record_request(&labels, duration, request_bytes, response_bytes);
        if let Some(mut entry) = self.entry.take() {
            entry.response_code = status;
            entry.response_flags = self.flags;
            entry.response_code_details = self.flags.reason().map(str::to_string);
            entry.bytes_received = request_bytes;
            entry.bytes_sent = response_bytes;
            entry.duration = duration.as_millis() as u64;
            entry.upstream_service_time = self.upstream_elapsed_ms();
            self.ctx.access_log.log(*entry);
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if !self.done {
            // The client went away before a response was sent.
            self.flags
                .insert(ResponseFlag::DownstreamConnectionTermination);
            self.record(0, 0, None);
        }
    }
}

/// Istio's value for a label nobody knows.
pub(crate) fn or_unknown(s: &str) -> String {
    if s.is_empty() {
        "unknown".into()
    } else {
        s.to_string()
    }
}

fn fill_source_from(l: &mut RequestLabels, p: &PeerMetadata) {
    l.source_workload = or_unknown(&p.workload_name);
    l.source_workload_namespace = or_unknown(&p.namespace);
    l.source_app = or_unknown(&p.app);
    l.source_version = or_unknown(&p.version);
    l.source_canonical_service = or_unknown(&p.canonical_service);
    l.source_canonical_revision = or_unknown(&p.canonical_revision);
    l.source_cluster = or_unknown(&p.cluster_id);
}

fn fill_destination_from(l: &mut RequestLabels, p: &PeerMetadata) {
    l.destination_workload = or_unknown(&p.workload_name);
    l.destination_workload_namespace = or_unknown(&p.namespace);
    l.destination_app = or_unknown(&p.app);
    l.destination_version = or_unknown(&p.version);
    l.destination_canonical_service = or_unknown(&p.canonical_service);
    l.destination_canonical_revision = or_unknown(&p.canonical_revision);
    l.destination_cluster = or_unknown(&p.cluster_id);
}
