//! The versioned snapshot of configuration and registry that every push is
//! computed from, and how it is built from a config directory and a
//! platform.
//!
//! A rebuild re-parses only the files whose bytes changed: each file's
//! parsed and validated documents are kept and reused while the file is
//! unchanged (parsing and validating 1,000 ServiceEntries took most of a
//! rebuild after a one-line VirtualService edit), and the registry is
//! reused while its inputs (ServiceEntries, WorkloadEntries and groups,
//! Kubernetes Services and Deployments, the platform's instances and
//! addresses) are unchanged. [`SnapshotBuilder::build_next`] derives the new
//! snapshot from the current one ([`MeshSnapshot::next`]), so translation
//! redoes only what the change can affect.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use meshwork_config::{Diagnostic, Kind, Level, Loaded, Resource};
use meshwork_registry::{Platform, Registry, WorkloadInstance};
use meshwork_translate::MeshSnapshot;
use tokio::sync::watch;

/// Builds snapshots from the config paths and the platform's instances.
pub struct SnapshotBuilder {
    paths: Vec<PathBuf>,
    platform: Arc<dyn Platform>,
    files: Mutex<HashMap<PathBuf, ParsedFile>>,
    registry: Mutex<Option<RegistryInputs>>,
}

/// The last registry built and everything it was built from.
struct RegistryInputs {
    resources: Vec<Resource>,
    instances: Vec<WorkloadInstance>,
    addresses: BTreeMap<String, IpAddr>,
    registry: Arc<Registry>,
}

/// Whether `Registry::build` sees the same in `a` and `b`: everything but
/// the parsed document tree (it reads the spec, metadata, and file and
/// line for its warnings).
fn same_for_registry(a: &Resource, b: &Resource) -> bool {
    a.kind == b.kind
        && a.meta == b.meta
        && a.spec == b.spec
        && a.file == b.file
        && a.line == b.line
        && a.api_version == b.api_version
}

/// Kinds `Registry::build` reads.
fn feeds_registry(r: &Resource) -> bool {
    matches!(
        r.kind,
        Kind::ServiceEntry
            | Kind::WorkloadEntry
            | Kind::WorkloadGroup
            | Kind::Service
            | Kind::Deployment
    )
}

/// One file's bytes and what loading them gave.
struct ParsedFile {
    bytes: Vec<u8>,
    resources: Vec<Resource>,
    diagnostics: Vec<Diagnostic>,
}

/// Files a directory walk picks up (as `meshwork_config::load_paths`).
fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
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
    /// Whether the previous registry was kept (its inputs were unchanged).
    pub registry_kept: bool,
}

impl SnapshotBuilder {
    /// A builder over these config paths.
    pub fn new(paths: Vec<PathBuf>, platform: Arc<dyn Platform>) -> Self {
        SnapshotBuilder {
            paths,
            platform,
            files: Mutex::default(),
            registry: Mutex::default(),
        }
    }

    /// The platform.
    pub fn platform(&self) -> &Arc<dyn Platform> {
        &self.platform
    }

    /// Loads the configuration (bad documents are reported and skipped; the
    /// rest applies) and builds the registry and snapshot.
    pub fn build(&self, version: u64) -> (MeshSnapshot, BuildReport) {
        self.build_from(version, None)
    }

    /// As [`SnapshotBuilder::build`], derived from `previous` (the current
    /// snapshot) so that translation keeps what the change cannot affect;
    /// the snapshot's content is the same as `build` gives.
    pub fn build_next(&self, version: u64, previous: &MeshSnapshot) -> (MeshSnapshot, BuildReport) {
        self.build_from(version, Some(previous))
    }

    fn build_from(
        &self,
        version: u64,
        previous: Option<&MeshSnapshot>,
    ) -> (MeshSnapshot, BuildReport) {
        let start = Instant::now();
        let loaded = self.load();
        for d in &loaded.diagnostics {
            match d.level {
                Level::Error => tracing::error!("{d}"),
                Level::Warning => tracing::warn!("{d}"),
                Level::Info => tracing::info!("{d}"),
            }
        }
        let (registry, registry_kept) = self.registry(&loaded.resources);
        let resources = loaded.resources.len();
        let snapshot = match previous {
            Some(p) => p.next(version, loaded.resources, registry),
            None => MeshSnapshot::with_registry(version, loaded.resources, registry),
        };
        // Fields that are accepted but not enforced are reported, never
        // silently ignored.
        for w in meshwork_translate::warnings(&snapshot) {
            tracing::warn!("{w}");
        }
        let report = BuildReport {
            diagnostics: loaded.diagnostics,
            resources,
            took: start.elapsed(),
            registry_kept,
        };
        (snapshot, report)
    }

    /// The registry for `resources` and the platform's current instances:
    /// the last one (and `true`) if none of its inputs changed.
    fn registry(&self, resources: &[Resource]) -> (Arc<Registry>, bool) {
        let instances = self.platform.instances();
        let addresses = self.platform.service_addresses();
        let mut last = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = &*last
            && l.instances == instances
            && l.addresses == addresses
            && l.resources.len() == resources.iter().filter(|r| feeds_registry(r)).count()
            && l.resources
                .iter()
                .zip(resources.iter().filter(|r| feeds_registry(r)))
                .all(|(a, b)| same_for_registry(a, b))
        {
            return (l.registry.clone(), true);
        }
        let mut registry = Registry::build(resources, &instances);
        registry.assign_addresses(&addresses);
        let registry = Arc::new(registry);
        *last = Some(RegistryInputs {
            resources: resources
                .iter()
                .filter(|r| feeds_registry(r))
                .cloned()
                .collect(),
            instances,
            addresses,
            registry: registry.clone(),
        });
        (registry, false)
    }

    /// What `meshwork_config::load_paths` gives for the paths, re-parsing
    /// only files whose bytes changed since the last build.
    fn load(&self) -> Loaded {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        let mut kept = HashMap::new();
        let mut out = Loaded::default();
        for p in &self.paths {
            if p.as_os_str() == "-" {
                out.extend(meshwork_config::load_paths(std::slice::from_ref(p)));
            } else {
                walk(p, 0, &mut files, &mut kept, &mut out);
            }
        }
        // Files gone since the last build are forgotten.
        *files = kept;
        out
    }
}

/// Loads `p` (a file, or a directory walked in name order) into `out`,
/// reusing `old` entries whose bytes are unchanged and keeping every file
/// read in `kept`. Anything unusual (unreadable, not UTF-8, nested too
/// deep) is left to `load_paths`, which reports it.
fn walk(
    p: &Path,
    depth: usize,
    old: &mut HashMap<PathBuf, ParsedFile>,
    kept: &mut HashMap<PathBuf, ParsedFile>,
    out: &mut Loaded,
) {
    let fallback = |out: &mut Loaded| out.extend(meshwork_config::load_paths(&[p.to_path_buf()]));
    if p.is_dir() {
        let Ok(entries) = std::fs::read_dir(p) else {
            return fallback(out);
        };
        if depth > 64 {
            return fallback(out);
        }
        let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for e in entries {
            if e.is_dir() || is_manifest(&e) {
                walk(&e, depth + 1, old, kept, out);
            }
        }
        return;
    }
    let Ok(bytes) = std::fs::read(p) else {
        return fallback(out);
    };
    let parsed = match old.remove(p) {
        Some(f) if f.bytes == bytes => f,
        _ => {
            let Ok(text) = std::str::from_utf8(&bytes) else {
                return fallback(out);
            };
            let loaded = meshwork_config::load_str(p, text);
            ParsedFile {
                bytes,
                resources: loaded.resources,
                diagnostics: loaded.diagnostics,
            }
        }
    };
    out.resources.extend(parsed.resources.iter().cloned());
    out.diagnostics.extend(parsed.diagnostics.iter().cloned());
    kept.insert(p.to_path_buf(), parsed);
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
        let old = self.current.send_replace(Arc::new(snapshot));
        // The old snapshot (often its last reference) is freed off the push path.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn_blocking(move || drop(old));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_registry::StaticPlatform;

    fn se(name: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{name}.example.com]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: DNS\n"
        )
    }

    fn names(snap: &MeshSnapshot) -> Vec<String> {
        snap.resources()
            .iter()
            .map(|r| r.name().to_string())
            .collect()
    }

    /// Cached builds load exactly what `load_paths` loads, through edits,
    /// new files, removed files and broken documents.
    #[test]
    fn cached_loads_match_load_paths() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("a.yaml"), se("a")).unwrap();
        std::fs::write(d.join("sub/b.yml"), se("b")).unwrap();
        std::fs::write(d.join("notes.txt"), "not config").unwrap();
        let builder =
            SnapshotBuilder::new(vec![d.to_path_buf()], Arc::new(StaticPlatform::default()));
        let check = |version: u64| {
            let (snap, report) = builder.build(version);
            let want = meshwork_config::load_paths(&[d.to_path_buf()]);
            let want_names: Vec<String> = want
                .resources
                .iter()
                .map(|r| r.name().to_string())
                .collect();
            assert_eq!(names(&snap), want_names);
            assert_eq!(snap.resources(), want.resources.as_slice());
            assert_eq!(report.diagnostics, want.diagnostics);
            names(&snap)
        };
        assert_eq!(check(1), ["a", "b"]);
        assert_eq!(check(2), ["a", "b"]);
        std::fs::write(d.join("a.yaml"), se("a2")).unwrap();
        std::fs::write(d.join("c.json"), "{\"kind\": \"ServiceEntry\"").unwrap();
        assert_eq!(check(3), ["a2", "b"]);
        std::fs::remove_file(d.join("sub/b.yml")).unwrap();
        std::fs::write(d.join("sub/d.yaml"), se("d")).unwrap();
        assert_eq!(check(4), ["a2", "d"]);
        assert_eq!(
            builder.files.lock().unwrap().len(),
            3,
            "removed files are forgotten"
        );
    }

    /// The registry is the very same while its inputs are unchanged (a
    /// VirtualService edit), and rebuilt when a ServiceEntry changes.
    #[test]
    fn registry_is_kept_while_its_inputs_are_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let vs = |w: u32| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: a, namespace: default}}\nspec:\n  hosts: [a.example.com]\n  http:\n  - route: [{{destination: {{host: a.example.com}}, weight: {w}}}, {{destination: {{host: b.example.com}}, weight: {}}}]\n",
                100 - w
            )
        };
        std::fs::write(d.join("se.yaml"), format!("{}---\n{}", se("a"), se("b"))).unwrap();
        std::fs::write(d.join("vs.yaml"), vs(50)).unwrap();
        let builder =
            SnapshotBuilder::new(vec![d.to_path_buf()], Arc::new(StaticPlatform::default()));
        let (first, report) = builder.build(1);
        assert!(!report.registry_kept);
        std::fs::write(d.join("vs.yaml"), vs(90)).unwrap();
        let (second, report) = builder.build_next(2, &first);
        assert!(report.registry_kept);
        assert!(Arc::ptr_eq(
            first.shared_registry(),
            second.shared_registry()
        ));
        std::fs::write(d.join("se.yaml"), se("a")).unwrap();
        let (third, report) = builder.build_next(3, &second);
        assert!(!report.registry_kept);
        assert!(third.registry().service("b.example.com").is_none());
        assert_eq!(
            third.resources(),
            meshwork_config::load_paths(&[d.to_path_buf()])
                .resources
                .as_slice()
        );
    }
}
