//! The control plane's debug and metrics endpoints (port 15014), as istiod
//! serves them: `/debug/syncz` (what each proxy was sent and ACKed, when,
//! and pending NACKs), `/debug/configz` (the configuration in force and the
//! findings of its last load), `/debug/registryz` (services and endpoints),
//! `/debug/edsz`-like views come from `proxy-config`; `/metrics`.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use meshwork_telemetry::access_log::rfc3339_millis;
use meshwork_xds::TypeUrl;
use meshwork_xds::server::{AdsServer, TypeStatus};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use crate::snapshot::SnapshotStore;

/// What the debug handlers read.
#[derive(Clone)]
pub struct DebugState {
    /// The xDS server (per-proxy status).
    pub ads: AdsServer,
    /// The snapshot store.
    pub store: SnapshotStore,
    /// Prometheus registry of the control plane.
    pub metrics: Arc<Mutex<Registry>>,
}

/// The debug router.
pub fn router(state: DebugState) -> Router {
    Router::new()
        .route("/debug/syncz", get(syncz))
        .route("/debug/configz", get(configz))
        .route("/debug/registryz", get(registryz))
        .route("/metrics", get(metrics))
        .route("/ready", get(|| async { "ready\n" }))
        .with_state(state)
}

fn time(t: Option<SystemTime>) -> Value {
    t.map(|t| Value::String(rfc3339_millis(t)))
        .unwrap_or(Value::Null)
}

/// istioctl's words for a type's sync state.
pub fn sync_state(t: Option<&TypeStatus>) -> &'static str {
    match t {
        None => "NOT SENT",
        Some(t) if t.nack.is_some() => "NACKED",
        Some(t) if t.sent_version.is_empty() => "NOT SENT",
        Some(t) if t.sent_version == t.acked_version => "SYNCED",
        Some(_) => "STALE",
    }
}

async fn syncz(State(s): State<DebugState>) -> Response {
    let nodes = s.ads.nodes();
    let out: Vec<Value> = nodes
        .iter()
        .map(|(id, n)| {
            let mut entry = json!({
                "proxy": id,
                "connected": n.connected,
                "delta": n.delta,
                "connected_at": time(n.connected_at),
            });
            for t in TypeUrl::ALL {
                let st = n.types.get(&t);
                entry[t.short_name()] = json!({
                    "state": sync_state(st),
                    "sent": st.map(|s| s.sent_version.clone()),
                    "sent_at": time(st.and_then(|s| s.sent_at)),
                    "acked": st.map(|s| s.acked_version.clone()),
                    "acked_at": time(st.and_then(|s| s.acked_at)),
                    "nack": st.and_then(|s| s.nack.clone()),
                    "resource_names": st.map(|s| s.names.clone()),
                });
            }
            entry
        })
        .collect();
    axum::Json(Value::Array(out)).into_response()
}

async fn configz(State(s): State<DebugState>) -> Response {
    let snapshot = s.store.current();
    let resources: Vec<Value> = snapshot
        .resources()
        .iter()
        .map(|r| {
            json!({
                "kind": r.kind.name(),
                "apiVersion": r.api_version,
                "namespace": r.namespace(),
                "name": r.name(),
                "source": format!("{}:{}", r.file.display(), r.line),
            })
        })
        .collect();
    let findings: Vec<String> = s
        .store
        .diagnostics()
        .iter()
        .map(|d| d.to_string())
        .collect();
    axum::Json(json!({
        "version": snapshot.version(),
        "resources": resources,
        "findings": findings,
    }))
    .into_response()
}

async fn registryz(State(s): State<DebugState>) -> Response {
    axum::Json(s.store.current().registry().to_json()).into_response()
}

async fn metrics(State(s): State<DebugState>) -> Response {
    let mut body = String::new();
    if let Ok(registry) = s.metrics.lock() {
        let _ = prometheus_client::encoding::text::encode(&mut body, &registry);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
