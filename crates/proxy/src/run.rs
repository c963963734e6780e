//! Starting and stopping a whole sidecar proxy: xDS client, config store,
//! admin endpoints, listeners, and the graceful drain on SIGTERM or
//! `/quitquitquit`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use meshwork_telemetry::{AccessLogger, IstioMetrics};
use meshwork_xds::client::{AdsClient, ClientConfig, Protocol};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::admin::{AdminState, LogControl, admin_router, health_router, stats_router};
use crate::ctx::ProxyCtx;
use crate::drain::Drain;
use crate::listen::ListenerManager;
use crate::options::{Identity, ProxyOptions};
use crate::store::ConfigStore;

/// Errors that stop the proxy from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An admin, health or stats port could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// Which endpoint.
        what: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// A running proxy.
pub struct ProxyHandle {
    /// Where the admin endpoint listens.
    pub admin_addr: SocketAddr,
    /// Where `/healthz/ready` listens.
    pub health_addr: SocketAddr,
    /// Where proxy metrics listen (15090).
    pub stats_addr: SocketAddr,
    /// Where merged metrics listen (15020).
    pub merged_stats_addr: SocketAddr,
    /// The config store (tests inspect it).
    pub store: Arc<ConfigStore>,
    quit: Arc<Notify>,
    done: tokio::task::JoinHandle<()>,
}

impl ProxyHandle {
    /// Starts the drain, as SIGTERM does.
    pub fn shutdown(&self) {
        self.quit.notify_one();
    }

    /// Waits until the proxy has drained and stopped.
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// The xDS node for this proxy, with Istio's metadata keys.
pub fn node(identity: &Identity) -> Node {
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.to_string())),
    };
    let labels = Struct {
        fields: identity
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), s(v)))
            .collect(),
    };
    let mut fields: BTreeMap<String, Value> = BTreeMap::new();
    fields.insert("NAMESPACE".into(), s(&identity.namespace));
    fields.insert("WORKLOAD_NAME".into(), s(&identity.workload));
    fields.insert("SERVICE_ACCOUNT".into(), s(&identity.service_account));
    fields.insert("CLUSTER_ID".into(), s(&identity.cluster));
    fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(Kind::StructValue(labels)),
        },
    );
    Node {
        id: identity.node_id.clone(),
        cluster: identity.cluster.clone(),
        metadata: Some(Struct {
            fields: fields.into_iter().collect(),
        }),
        user_agent_name: "meshwork".into(),
        ..Default::default()
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

/// Starts a proxy. Listeners bind once the first complete configuration
/// has arrived; until then readiness answers 503.
pub async fn start(
    opts: ProxyOptions,
    access_log: AccessLogger,
    log: Option<LogControl>,
) -> Result<ProxyHandle, StartError> {
    let store = Arc::new(ConfigStore::new());
    let mesh_tls = opts
        .workload_certs
        .clone()
        .map(meshwork_identity::tls::MeshTls::new);
    if let Some(m) = &mesh_tls {
        store.set_mesh_tls(m.clone());
    }
    let drain = Drain::new();
    let ctx = ProxyCtx::new(
        store.tables(),
        IstioMetrics::new(),
        access_log.clone(),
        opts.limits.clone(),
        opts.identity.clone(),
        drain.clone(),
    );
    if let Some(m) = mesh_tls {
        let _ = ctx.mesh_tls.set(m);
    }
    crate::heap::spawn_release(Arc::downgrade(&ctx));
    let mut node = node(&opts.identity);
    if opts.xds_protocol == Protocol::Delta {
        // Only a delta client can take route tables through VHDS.
        if let Some(m) = node.metadata.as_mut() {
            m.fields.insert(
                "MESHWORK_VHDS".into(),
                Value {
                    kind: Some(Kind::StringValue("true".into())),
                },
            );
        }
    }
    let ads = AdsClient::spawn(
        ClientConfig::new(opts.xds_address.clone(), node).with_protocol(opts.xds_protocol),
        store.clone(),
    );
    let quit = Arc::new(Notify::new());
    let state = AdminState {
        ctx: ctx.clone(),
        store: store.clone(),
        xds: ads.status(),
        log,
        quit: quit.clone(),
        certs: opts.workload_certs.clone(),
    };
    let admin = bind("admin", opts.admin_address).await?;
    let health = bind("health", opts.health_address).await?;
    let stats = bind("stats", opts.stats_address).await?;
    let merged = bind("merged stats", opts.merged_stats_address).await?;
    let addr = |l: &TcpListener| l.local_addr().unwrap_or(opts.admin_address);
    let (admin_addr, health_addr, stats_addr, merged_stats_addr) =
        (addr(&admin), addr(&health), addr(&stats), addr(&merged));
    let servers = [
        tokio::spawn(serve(admin, admin_router(state.clone()))),
        tokio::spawn(serve(health, health_router(state.clone()))),
        tokio::spawn(serve(stats, stats_router(state.clone()))),
        tokio::spawn(serve(merged, stats_router(state))),
    ];
    let quit2 = quit.clone();
    let store2 = store.clone();
    let drain_period = opts.limits.drain_period;
    let mut certs = opts.workload_certs.clone();
    let done = tokio::spawn(async move {
        let mut listeners = ListenerManager::new(ctx.clone());
        let mut generation = store2.generation();
        let mut ready = store2.ready();
        let sigterm = sigterm();
        tokio::pin!(sigterm);
        // Traffic waits for the first complete config and, with a CA, the
        // first workload certificate (readiness says which is missing).
        let first = async {
            if ready.wait_for(|r| *r).await.is_err() {
                return true;
            }
            if let Some(c) = certs.as_mut() {
                if c.wait_for(|c| c.is_some()).await.is_err() {
                    return true;
                }
                tracing::info!("first workload certificate received");
            }
            false
        };
        let stop_early = tokio::select! {
            e = first => e,
            _ = quit2.notified() => true,
            _ = &mut sigterm => true,
        };
        if !stop_early {
            tracing::info!("first complete configuration received; binding listeners");
            loop {
                listeners.sync();
                tokio::select! {
                    changed = generation.changed() => if changed.is_err() { break },
                    _ = quit2.notified() => break,
                    _ = &mut sigterm => break,
                }
            }
        }
        tracing::info!(period = ?drain_period, "draining");
        listeners.close_all();
        let left = drain.drain(drain_period).await;
        if left > 0 {
            tracing::warn!(
                connections = left,
                "drain period over; closing remaining connections"
            );
        }
        ads.shutdown();
        for s in servers {
            s.abort();
        }
        ctx.access_log.flush();
    });
    Ok(ProxyHandle {
        admin_addr,
        health_addr,
        stats_addr,
        merged_stats_addr,
        store,
        quit,
        done,
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn sigterm() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

async fn serve(listener: TcpListener, router: axum::Router) {
    if let Err(e) = axum::serve(listener, router).await {
        tracing::error!(error = %e, "admin server failed");
    }
}
