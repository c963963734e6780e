//! One request/response exchange's accounting: when it ends (completed,
//! failed, or abandoned by the client) it records Istio's request metrics
//! and writes one access-log line, exactly once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use meshwork_telemetry::metrics::Label;
use meshwork_telemetry::{
    AccessLogEntry, PeerMetadata, RequestLabels, ResponseFlag, ResponseFlags,
};

use super::deferred::{Deferred, Finished};
use crate::balance::Endpoint;
use crate::ctx::{PeerLabels, ProxyCtx, fill_destination_from, fill_source_from};

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

/// The accounting of one exchange. Boxed: the exchange is moved through
/// every layer of the request path (and each async layer keeps its own
/// copy in its future), so a pointer keeps those moves and futures small.
pub struct Exchange(Box<State>);

/// What an [`Exchange`] holds.
pub struct State {
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
    /// Where the finished exchange is queued (`None`: recorded at once).
    deferred: Option<Arc<Deferred>>,
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
        // This proxy's own side of the labels was computed once (see
        // `LabelTemplates`); copying it only bumps reference counts.
        let mut labels = if info.inbound {
            ctx.labels.inbound.clone()
        } else {
            ctx.labels.outbound.clone()
        };
        let protocol = if crate::model::route::is_grpc(&parts.headers) {
            "grpc"
        } else {
            "http"
        };
        labels.request_protocol = Label::intern(protocol);
        let service_host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if info.inbound {
            // Principals come from verified peer certificates (mTLS); on
            // plaintext connections Istio reports them as unknown.
            labels.destination_service = Label::intern(service_host);
            labels.destination_service_name =
                Label::intern(service_host.split('.').next().unwrap_or("unknown"));
            if let Some(peer) = parts
                .headers
                .get(&super::headers::X_PEER_METADATA)
                .and_then(peer_labels)
            {
                fill_source_from(&mut labels, &peer);
                labels.source_principal = Label::unknown();
            }
            if let Some(p) = &info.peer_principal {
                // A verified client certificate: Istio's mTLS labels.
                labels.source_principal = Label::intern(p);
                labels.connection_security_policy = Label::intern("mutual_tls");
                if let Some(me) = ctx.mesh_tls.get().and_then(|m| m.id()) {
                    labels.destination_principal = Label::intern(&me);
                }
            }
        }
        Exchange(Box::new(State {
            ctx,
            start: Instant::now(),
            entry,
            labels,
            request_bytes: Arc::new(AtomicU64::new(0)),
            upstream_start: None,
            flags: ResponseFlags::new(),
            done: false,
            deferred: None,
        }))
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
                self.labels.destination_service = Label::intern(host);
                let mut labels = host.split('.');
                self.labels.destination_service_name =
                    Label::intern(labels.next().unwrap_or("unknown"));
                if host.ends_with(".svc.cluster.local") || host.split('.').count() > 2 {
                    self.labels.destination_service_namespace =
                        Label::intern(labels.next().unwrap_or("unknown"));
                }
            }
            if let Some(w) = &endpoint.model.workload {
                let l = &mut self.labels;
                l.destination_workload = Label::or_unknown(&w.workload);
                l.destination_workload_namespace = Label::or_unknown(&w.namespace);
                l.destination_app = Label::or_unknown(&w.app);
                l.destination_version = Label::or_unknown(&w.version);
                l.destination_canonical_service = Label::or_unknown(&w.app);
                l.destination_canonical_revision = Label::or_unknown(&w.version);
                l.destination_cluster = Label::or_unknown(&w.cluster);
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
            .get(&super::headers::X_PEER_METADATA)
            .and_then(peer_labels)
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
            self.labels.destination_principal = Label::intern(&p.0);
            if let Some(me) = self.ctx.mesh_tls.get().and_then(|m| m.id()) {
                self.labels.source_principal = Label::intern(&me);
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
        let finished = Finished {
            ctx: self.ctx.clone(),
            labels: std::mem::take(&mut self.labels),
            status,
            flags: self.flags,
            grpc_status: grpc_status.map(Label::intern),
            duration: self.start.elapsed(),
            request_bytes: self.request_bytes.load(Ordering::Relaxed),
            response_bytes,
            upstream_service_time: self.upstream_elapsed_ms(),
            entry: self.entry.take(),
        };
        match &self.deferred {
            Some(queue) => queue.push(finished),
            None => finished.emit(),
        }
    }

    /// Hands the recording to the connection's queue, flushed once the
    /// response is written (see [`Deferred`]).
    pub fn defer_to(&mut self, queue: &Arc<Deferred>) {
        self.deferred = Some(queue.clone());
    }
}

impl std::ops::Deref for Exchange {
    type Target = State;
    fn deref(&self) -> &State {
        &self.0
    }
}

impl std::ops::DerefMut for Exchange {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.0
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

/// Peer metadata headers decoded lately on this thread: a peer sends the
/// same value on every request, so decoding (base64 + protobuf) happens
/// once per distinct value, not per request.
const PEER_CACHE: usize = 8;

thread_local! {
    static PEERS: std::cell::RefCell<Vec<(http::HeaderValue, Arc<PeerLabels>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The labels of an `x-envoy-peer-metadata` value, if it decodes.
fn peer_labels(v: &http::HeaderValue) -> Option<Arc<PeerLabels>> {
    if let Some(hit) = PEERS.with(|c| {
        c.borrow()
            .iter()
            .find(|(k, _)| k.as_bytes() == v.as_bytes())
            .map(|(_, l)| l.clone())
    }) {
        return Some(hit);
    }
    let peer = PeerMetadata::from_header_value(v.to_str().ok()?)?;
    let labels = Arc::new(PeerLabels::of(&peer));
    PEERS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= PEER_CACHE {
            c.remove(0);
        }
        c.push((v.clone(), labels.clone()));
    });
    Some(labels)
}
