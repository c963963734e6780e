//! The versioned snapshot of configuration and registry that every push is
//! computed from, and how it is built from a config directory and a
//! platform.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use meshwork_config::{Diagnostic, Level};
use meshwork_registry::{Platform, Registry};
use meshwork_translate::MeshSnapshot;
use tokio::sync::watch;

/// Builds snapshots from the config paths and the platform's instances.
pub struct SnapshotBuilder {
    paths: Vec<PathBuf>,
    platform: Arc<dyn Platform>,
}

/// What one build produced, besides the snapshot.
#[derive(Debug, Default)]
pub struct BuildReport {
    /// Findings of loading and validation (bad documents were skipped).
    pub diagnostics: Vec<Diagnostic>,
    /// How many resources were accepted.
    pub resources: usize,
    /// How long the build took.
    pub took: std::time::Duration,
}

impl SnapshotBuilder {
    /// A builder over these config paths.
    pub fn new(paths: Vec<PathBuf>, platform: Arc<dyn Platform>) -> Self {
        SnapshotBuilder { paths, platform }
    }

    /// The platform.
    pub fn platform(&self) -> &Arc<dyn Platform> {
        &self.platform
    }

    /// Loads the configuration (bad documents are reported and skipped; the
    /// rest applies) and builds the registry and snapshot.
    pub fn build(&self, version: u64) -> (MeshSnapshot, BuildReport) {
        let start = Instant::now();
        let loaded = meshwork_config::load_paths(&self.paths);
        for d in &loaded.diagnostics {
            match d.level {
                Level::Error => tracing::error!("{d}"),
                Level::Warning => tracing::warn!("{d}"),
                Level::Info => tracing::info!("{d}"),
            }
        }
        let instances = self.platform.instances();
        let mut registry = Registry::build(&loaded.resources, &instances);
        registry.assign_addresses(&self.platform.service_addresses());
        let resources = loaded.resources.len();
        let snapshot = MeshSnapshot::new(version, loaded.resources, registry);
        let report = BuildReport {
            diagnostics: loaded.diagnostics,
            resources,
            took: start.elapsed(),
        };
        (snapshot, report)
    }
}

/// The current snapshot, published to every consumer.
#[derive(Clone)]
pub struct SnapshotStore {
    current: watch::Sender<Arc<MeshSnapshot>>,
    diagnostics: Arc<std::sync::Mutex<Vec<Diagnostic>>>,
    /// Snapshot version -> when the change that produced it began.
    started: Arc<std::sync::Mutex<Option<(u64, Instant)>>>,
}

impl SnapshotStore {
    /// A store holding `first` and the findings of its build.
    pub fn new(first: MeshSnapshot, diagnostics: Vec<Diagnostic>) -> Self {
        SnapshotStore {
            current: watch::Sender::new(Arc::new(first)),
            diagnostics: Arc::new(std::sync::Mutex::new(diagnostics)),
            started: Arc::default(),
        }
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<MeshSnapshot> {
        self.current.borrow().clone()
    }

    /// Receives every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MeshSnapshot>> {
        self.current.subscribe()
    }

    /// Publishes a new snapshot and the findings of its build.
    pub fn publish(&self, snapshot: MeshSnapshot, diagnostics: Vec<Diagnostic>) {
        if let Ok(mut d) = self.diagnostics.lock() {
            *d = diagnostics;
        }
        self.current.send_replace(Arc::new(snapshot));
    }

    /// Publishes a snapshot produced by a change that began at `started`
    /// (the first config event of its debounce window).
    pub fn publish_change(
        &self,
        snapshot: MeshSnapshot,
        diagnostics: Vec<Diagnostic>,
        started: Instant,
    ) {
        if let Ok(mut s) = self.started.lock() {
            *s = Some((snapshot.version(), started));
        }
        self.publish(snapshot, diagnostics);
    }

    /// When the change that produced snapshot `version` began, if known.
    pub fn change_started(&self, version: u64) -> Option<Instant> {
        self.started
            .lock()
            .ok()
            .and_then(|s| *s)
            .filter(|(v, _)| *v == version)
            .map(|(_, t)| t)
    }

    /// The findings of the last build.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        self.diagnostics
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }
}
