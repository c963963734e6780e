//! Starting the control plane: first snapshot, xDS server, debug server,
//! and the reload loop (config directory changes, debounced, and platform
//! changes).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use meshwork_registry::Platform;
use meshwork_xds::server::{AdsServer, ServerMetrics};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::debug::{DebugState, router};
use crate::snapshot::{SnapshotBuilder, SnapshotStore};
use crate::source::TranslateSource;
use crate::watch::{Debounce, DirWatch};

/// How to run the control plane.
pub struct ControlOptions {
    /// Config files or directories (directories are watched).
    pub config_paths: Vec<PathBuf>,
    /// xDS (plaintext) listen address, Istio's 15010.
    pub xds_address: SocketAddr,
    /// Debug and metrics listen address, Istio's 15014.
    pub debug_address: SocketAddr,
    /// Debounce of config changes.
    pub debounce: Debounce,
    /// Where running workload instances come from.
    pub platform: Arc<dyn Platform>,
}

/// Errors starting the control plane.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A port could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// Which server.
        what: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The config directory cannot be watched.
    #[error(transparent)]
    Watch(#[from] crate::watch::WatchError),
}

/// A running control plane.
pub struct ControlHandle {
    /// Where xDS is served.
    pub xds_addr: SocketAddr,
    /// Where debug and metrics are served.
    pub debug_addr: SocketAddr,
    /// The xDS server (status per proxy).
    pub ads: AdsServer,
    /// The snapshot store.
    pub store: SnapshotStore,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ControlHandle {
    /// Stops serving (proxies keep their last configuration).
    pub fn shutdown(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Waits until the servers stop.
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts the control plane.
pub async fn start(opts: ControlOptions) -> Result<ControlHandle, StartError> {
    let builder = SnapshotBuilder::new(opts.config_paths.clone(), opts.platform.clone());
    let (first, report) = builder.build(1);
    tracing::info!(resources = report.resources, took = ?report.took, "configuration loaded");
    let store = SnapshotStore::new(first, report.diagnostics);

    let mut registry = Registry::default();
    let server_metrics = ServerMetrics::default();
    server_metrics.register(&mut registry);
    let builds = Counter::<u64>::default();
    let build_time = Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]);
    registry.register(
        "pilot_config_builds",
        "Snapshots built from configuration",
        builds.clone(),
    );
    registry.register(
        "pilot_config_build_seconds",
        "Time to load config and build a snapshot",
        build_time.clone(),
    );
    let metrics = Arc::new(Mutex::new(registry));

    let source = TranslateSource::new(store.clone());
    if let Ok(mut registry) = metrics.lock() {
        source.timing().register(&mut registry);
    }
    let ads = AdsServer::with_source(source, server_metrics);

    let xds = TcpListener::bind(opts.xds_address)
        .await
        .map_err(|source| StartError::Bind {
            what: "xDS",
            addr: opts.xds_address,
            source,
        })?;
    let debug = TcpListener::bind(opts.debug_address)
        .await
        .map_err(|source| StartError::Bind {
            what: "debug",
            addr: opts.debug_address,
            source,
        })?;
    let xds_addr = xds.local_addr().unwrap_or(opts.xds_address);
    let debug_addr = debug.local_addr().unwrap_or(opts.debug_address);
    tracing::info!(%xds_addr, %debug_addr, "control plane serving");

    let mut tasks = Vec::new();
    let ads2 = ads.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = ads2.serve(xds).await {
            tracing::error!(error = %e, "xDS server failed");
        }
    }));
    let state = DebugState {
        ads: ads.clone(),
        store: store.clone(),
        metrics,
    };
    tasks.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(debug, router(state)).await {
            tracing::error!(error = %e, "debug server failed");
        }
    }));

    let watched: Vec<PathBuf> = opts
        .config_paths
        .iter()
        .filter(|p| p.exists())
        .cloned()
        .collect();
    let mut watchers = Vec::new();
    for p in &watched {
        watchers.push(DirWatch::new(p, opts.debounce)?);
    }
    let store2 = store.clone();
    tasks.push(tokio::spawn(async move {
        let mut version = 1;
        let mut platform_changes = builder.platform().changes();
        loop {
            let next = async {
                if watchers.is_empty() {
                    std::future::pending::<Option<std::time::Instant>>().await
                } else {
                    let futs = watchers.iter_mut().map(|w| Box::pin(w.next_burst()));
                    futures::future::select_all(futs).await.0
                }
            };
            let started = tokio::select! {
                burst = next => match burst {
                    Some(first) => first,
                    None => return,
                },
                changed = platform_changes.changed() => match changed {
                    Ok(()) => std::time::Instant::now(),
                    Err(_) => return,
                },
            };
            version += 1;
            let (snapshot, report) = builder.build_next(version, &store2.current());
            builds.inc();
            build_time.observe(report.took.as_secs_f64());
            tracing::info!(
                version,
                resources = report.resources,
                rebuild_ms = report.took.as_secs_f64() * 1e3,
                registry_kept = report.registry_kept,
                "configuration reloaded"
            );
            store2.publish_change(snapshot, report.diagnostics, started);
        }
    }));
    Ok(ControlHandle {
        xds_addr,
        debug_addr,
        ads,
        store,
        tasks,
    })
}
