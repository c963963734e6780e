//! The proxy's own HTTP endpoints: admin on 127.0.0.1:15000 (`/ready`,
//! `/config_dump`, `/clusters`, `/certs`, `/stats/prometheus`, `/logging`,
//! `/quitquitquit`), health on 15021 (`/healthz/ready`), and Prometheus
//! metrics on 15090 and 15020.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use meshwork_xds::TypeUrl;
use meshwork_xds::client::ClientStatus;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use crate::ctx::ProxyCtx;
use crate::model::listener::{NetworkFilter, RouteSource};
use crate::model::route::RouteAction;
use crate::store::ConfigStore;

/// Changes the log filter (e.g. `debug`, `meshwork_proxy=trace`).
pub type LogControl = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// Data path state.
    pub ctx: Arc<ProxyCtx>,
    /// Config store.
    pub store: Arc<ConfigStore>,
    /// xDS client status.
    pub xds: watch::Receiver<ClientStatus>,
    /// Log level control.
    pub log: Option<LogControl>,
    /// Notified by `/quitquitquit`.
    pub quit: Arc<Notify>,
    /// The workload certificate, when the proxy runs with a CA; readiness
    /// waits for the first one and `/certs` shows it.
    pub certs: Option<meshwork_identity::IdentityWatch>,
}

impl AdminState {
    fn is_ready(&self) -> bool {
        *self.store.ready().borrow() && self.has_certificate() && !self.ctx.drain.is_draining()
    }

    /// True without a CA, else once the first certificate has arrived.
    fn has_certificate(&self) -> bool {
        self.certs.as_ref().is_none_or(|c| c.borrow().is_some())
    }
}

/// The admin router (bind it to loopback only).
pub fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/config_dump", get(config_dump))
        .route("/clusters", get(clusters))
        .route("/certs", get(certs))
        .route("/stats/prometheus", get(stats))
        .route("/logging", post(logging).get(logging))
        .route("/quitquitquit", post(quit))
        .with_state(state)
}

/// The health router (15021).
pub fn health_router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz/ready", get(ready))
        .with_state(state)
}

/// The metrics router (15090 and 15020).
pub fn stats_router(state: AdminState) -> Router {
    Router::new()
        .route("/stats/prometheus", get(stats))
        .route("/metrics", get(stats))
        .route("/healthz/ready", get(ready))
        .with_state(state)
}

async fn ready(State(s): State<AdminState>) -> Response {
    if s.is_ready() {
        (StatusCode::OK, "LIVE\n").into_response()
    } else if s.ctx.drain.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n").into_response()
    } else if *s.store.ready().borrow() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "PRE_INITIALIZING: waiting for the first workload certificate from the CA\n",
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "PRE_INITIALIZING: waiting for the first complete xDS configuration\n",
        )
            .into_response()
    }
}

async fn stats(State(s): State<AdminState>) -> Response {
    let body = s.ctx.metrics.encode();
    (
        [(header::CONTENT_TYPE, meshwork_telemetry::CONTENT_TYPE)],
        body,
    )
        .into_response()
}

async fn quit(State(s): State<AdminState>) -> &'static str {
    s.quit.notify_one();
    "OK\n"
}

async fn logging(
    State(s): State<AdminState>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let Some(level) = q.get("level") else {
        return (
            StatusCode::BAD_REQUEST,
            "usage: POST /logging?level=<filter>, e.g. level=debug\n",
        )
            .into_response();
    };
    match &s.log {
        None => (StatusCode::NOT_IMPLEMENTED, "log control unavailable\n").into_response(),
        Some(set) => match set(level) {
            Ok(()) => (StatusCode::OK, format!("log level set to {level}\n")).into_response(),
            Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        },
    }
}

async fn clusters(State(s): State<AdminState>) -> String {
    let tables = s.ctx.tables.load();
    let mut out = String::new();
    let mut names: Vec<_> = tables.clusters.keys().collect();
    names.sort();
    for name in names {
        let c = &tables.clusters[name];
        for e in &c.endpoints().all {
            out.push_str(&format!(
                "{name}::{}::health_flags::{}\n{name}::{}::rq_active::{}\n{name}::{}::weight::{}\n",
                e.address(),
                if !e.model.healthy {
                    "/failed_eds_health"
                } else if e.outlier.is_ejected() {
                    "/failed_outlier_check"
                } else {
                    "healthy"
                },
                e.address(),
                e.active.load(Ordering::Relaxed),
                e.address(),
                e.model.weight,
            ));
        }
    }
    out
}

async fn config_dump(State(s): State<AdminState>) -> Response {
    let xds = s.xds.borrow().clone();
    let tables = s.ctx.tables.load_full();
    let version = |t: TypeUrl| {
        xds.types
            .get(&t)
            .map(|st| json!({"acked": st.acked_version, "received": st.received_version, "last_nack": st.last_nack}))
            .unwrap_or(Value::Null)
    };
    let versions: BTreeMap<String, String> = s
        .store
        .raw(TypeUrl::Listener)
        .into_iter()
        .map(|(name, version, _)| (name, version))
        .collect();
    let listeners: Vec<Value> = tables
        .listeners
        .values()
        .map(|l| {
            let chain = |c: &crate::model::listener::FilterChainModel| {
                let filter = match &c.filter {
                    NetworkFilter::Http(h) => json!({"http_connection_manager": {
                        "stat_prefix": h.stat_prefix,
                        "rds": match &h.routes { RouteSource::Rds(n) => json!(n), RouteSource::Inline(t) => json!({"inline": t.name}) },
                    }}),
                    NetworkFilter::Tcp(t) => json!({"tcp_proxy": {"stat_prefix": t.stat_prefix, "clusters": t.clusters.names(), "weighted": format!("{:?}", t.clusters)}}),
                };
                json!({"name": c.name, "match": format!("{:?}", c.matcher), "filter": filter})
            };
            json!({
                "name": l.name,
                "version_info": versions.get(&l.name),
                "address": l.address.to_string(),
                "bind_to_port": l.bind,
                "use_original_dst": l.use_original_dst,
                "traffic_direction": if l.inbound { "INBOUND" } else { "OUTBOUND" },
                "filter_chains": l.chains.iter().map(chain).collect::<Vec<_>>(),
                "default_filter_chain": l.default_chain.as_ref().map(chain),
            })
        })
        .collect();
    let route_versions: BTreeMap<String, String> = s
        .store
        .raw(TypeUrl::Route)
        .into_iter()
        .map(|(name, version, _)| (name, version))
        .collect();
    // VHDS virtual hosts as received (resource name and version).
    let vhds: Vec<Value> = s
        .store
        .raw(TypeUrl::VirtualHost)
        .into_iter()
        .map(|(name, version, _)| json!({"name": name, "version_info": version}))
        .collect();
    let mut routes: Vec<Value> = tables
        .routes
        .values()
        .map(|r| {
            json!({
                "name": r.name,
                "version_info": route_versions.get(&r.name),
                "vhds": r.vhds,
                "virtual_hosts": r.virtual_hosts.iter().enumerate().map(|(i, vh)| json!({
                    "name": vh.name,
                    "source": if i < r.inline { "inline" } else { "vhds" },
                    "domains": vh.domains,
                    "routes": vh.routes.iter().map(|rt| json!({
                        "name": rt.name,
                        "match": format!("{:?}", rt.matcher),
                        "headers": (!rt.headers.is_empty()).then(|| format!("{:?}", rt.headers)),
                        "fault": rt.fault.as_ref().map(|f| format!("{f:?}")),
                        "cors": rt.cors.as_ref().map(|c| format!("{c:?}")),
                        "action": match &rt.action {
                            RouteAction::Forward(f) => json!({"route": {
                                "clusters": format!("{:?}", f.clusters),
                                "timeout_ms": f.timeout.map(|t| t.as_millis() as u64),
                                "retry_policy": f.retry.as_ref().map(|r| format!("{r:?}")),
                                "request_mirror_policies": f.mirrors.iter().map(|m| format!("{m:?}")).collect::<Vec<_>>(),
                                "cluster_headers": f.cluster_headers.iter().map(|(c, h)| format!("{c}: {h:?}")).collect::<Vec<_>>(),
                            }}),
                            RouteAction::Redirect(r) => json!({"redirect": format!("{r:?}")}),
                            RouteAction::Direct { status, .. } => json!({"direct_response": status}),
                        },
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    routes.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let mut clusters: Vec<Value> = tables
        .clusters
        .values()
        .map(|c| {
            json!({
                "name": c.model.name,
                "type": format!("{:?}", c.model.discovery),
                "lb_policy": format!("{:?}", c.model.lb),
                "protocol": format!("{:?}", c.model.protocol),
                "connect_timeout_ms": c.model.connect_timeout.as_millis() as u64,
                "policy": c.model.policy.dump(),
                "endpoints": c.endpoints().all.iter().map(|e| json!({
                    "address": e.address().to_string(),
                    "healthy": e.model.healthy,
                    "outlier_ejected": e.outlier.is_ejected(),
                    "ejections": e.outlier.ejections(),
                    "locality": e.model.locality,
                    "priority": e.model.priority,
                    "locality_weight": e.model.locality_weight,
                    "weight": e.model.weight,
                    "active_requests": e.active.load(Ordering::Relaxed),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    clusters.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let dump = json!({
        "node": {"id": s.ctx.identity.node_id, "cluster": s.ctx.identity.cluster},
        "xds": {
            "connected": xds.connected,
            "last_error": xds.last_error,
            "protocol": xds.protocol.to_string(),
            "versions": {"LDS": version(TypeUrl::Listener), "RDS": version(TypeUrl::Route), "CDS": version(TypeUrl::Cluster), "EDS": version(TypeUrl::Endpoint), "VHDS": version(TypeUrl::VirtualHost)},
        },
        "configs": [
            {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "dynamic_listeners": listeners},
            {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump", "dynamic_route_configs": routes, "dynamic_vhds_virtual_hosts": vhds},
            {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "dynamic_active_clusters": clusters},
        ],
    });
    axum::Json(dump).into_response()
}

/// Envoy's `/certs`: the workload certificate chain (SDS `default`) and the
/// trust bundle (`ROOTCA`) with serial, SANs, validity and SHA-256
/// fingerprints; `{"certificates": []}` without a CA or before the first one.
async fn certs(State(s): State<AdminState>) -> Response {
    let current = s.certs.as_ref().and_then(|c| c.borrow().clone());
    let Some(identity) = current else {
        return axum::Json(json!({"certificates": []})).into_response();
    };
    let details = |path: &str, der: &[u8]| match meshwork_identity::certinfo::CertInfo::parse(der) {
        Ok(c) => {
            let left = c
                .not_after
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            json!({
                "path": path,
                "serial_number": c.serial,
                "subject_alt_names": c.uris.iter().map(|u| json!({"uri": u}))
                    .chain(c.dns_names.iter().map(|d| json!({"dns": d})))
                    .collect::<Vec<_>>(),
                "days_until_expiration": (left.as_secs() / 86_400).to_string(),
                "seconds_until_expiration": left.as_secs(),
                "valid_from": humantime::format_rfc3339_seconds(c.not_before).to_string(),
                "expiration_time": humantime::format_rfc3339_seconds(c.not_after).to_string(),
                "sha256": c.sha256,
            })
        }
        Err(e) => json!({"path": path, "error": e.to_string()}),
    };
    let roots: Vec<Value> = identity
        .bundle
        .roots
        .iter()
        .map(|r| details("ROOTCA", r))
        .collect();
    let chain: Vec<Value> = identity
        .svid
        .chain
        .iter()
        .map(|c| details("default", c))
        .collect();
    axum::Json(json!({
        "spiffe_id": identity.svid.id.to_string(),
        "trust_domain": identity.bundle.trust_domain,
        "root_fingerprints": identity.bundle.roots.iter()
            .map(|r| meshwork_identity::certinfo::sha256_hex(r)).collect::<Vec<_>>(),
        "certificates": [{"ca_cert": roots, "cert_chain": chain}],
    }))
    .into_response()
}
