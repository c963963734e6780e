//! The xDS server's [`ResourceSource`]: each proxy's resources are generated
//! by `translate` from the current snapshot, once per proxy and snapshot
//! version (cached), and re-generated after every change.
//!
//! Per snapshot version one [`GenerationCache`] shares the translation work
//! between proxies (replicas of a workload get the very same maps), and the
//! conversion to [`NodeResources`] is shared too: one per distinct generated
//! result, each resource's version hash computed once, each of translate's
//! shared maps converted once into a shared [`TypeResources`].
//!
//! Sets are interned by type and content version, across snapshots too: a
//! change that leaves a set's content as it was hands every stream the very
//! `Arc` it already has, which the xDS server skips without looking inside,
//! and a new set is built (and later encoded) once however many proxy
//! classes have it.
//!
//! Work carries over from one snapshot version to the next: one
//! [`GenerationCache`] serves them all (translate keeps the parts a change
//! cannot affect, as the very same maps), and the previous version's
//! conversions (results, sets, resource versions, by the identity of what
//! they were made from) are reused for maps translate kept, so an
//! unchanged map costs a lookup instead of hashing every resource again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::Any;
use meshwork_translate::{
    Generated, GenerationCache, MeshSnapshot, ProxyMeta, Resources, generate_cached,
};
use meshwork_xds::TypeUrl;
use meshwork_xds::server::{NodeResources, ResourceSource, TypeResources, Versioned, set_version};
use tokio::sync::watch;

use crate::snapshot::SnapshotStore;
use crate::timing::PushTiming;

/// Generates resources per proxy from the snapshot store.
pub struct TranslateSource {
    store: SnapshotStore,
    generation: watch::Sender<u64>,
    /// By node id and a hash of what translation reads from the node (a
    /// proxy that reconnects with other metadata, e.g. asking for VHDS, is
    /// served anew).
    cache: Mutex<HashMap<NodeKey, (u64, Arc<NodeResources>)>>,
    shared: Mutex<Option<Arc<Shared>>>,
    timing: PushTiming,
}

/// The identities of a [`Generated`]'s maps, one per type.
type GeneratedId = [usize; TypeUrl::ALL.len()];

/// A generated result converted once, kept next to what it came from.
type Converted = Arc<OnceLock<(Generated, Arc<NodeResources>)>>;

/// Shared sets by type and content version.
type Interned = HashMap<(TypeUrl, String), Arc<TypeResources>>;

/// What one version's [`Shared`] hands to the next.
#[derive(Default)]
struct Carried {
    generation: Arc<GenerationCache>,
    interned: Interned,
    converted: HashMap<GeneratedId, Converted>,
    sets: HashMap<usize, (Resources, Arc<TypeResources>)>,
    versioned: HashMap<usize, (Arc<Any>, Versioned)>,
}

/// What the proxies of one snapshot version share.
struct Shared {
    version: u64,
    generation: Arc<GenerationCache>,
    /// Converted results by the identity of what they were converted from
    /// (kept alive next to them, so identities are not reused).
    converted: Mutex<HashMap<GeneratedId, Converted>>,
    /// Each of translate's maps converted, by its identity (kept alive).
    sets: Mutex<HashMap<usize, (Resources, Arc<TypeResources>)>>,
    /// The sets of this snapshot by content.
    interned: Mutex<Interned>,
    /// What the previous version had (its sets by content, conversions by
    /// identity), taken from on a miss.
    previous: Mutex<Carried>,
    /// Each resource with its version, by the address of its shared `Any`
    /// (kept alive in the entry).
    versioned: Mutex<HashMap<usize, (Arc<Any>, Versioned)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn new(version: u64, previous: Carried) -> Self {
        Shared {
            version,
            generation: previous.generation.clone(),
            converted: Mutex::default(),
            sets: Mutex::default(),
            interned: Mutex::default(),
            previous: Mutex::new(previous),
            versioned: Mutex::default(),
        }
    }

    /// What the next version may reuse; this one keeps only its
    /// generation cache (a late caller of this version recomputes).
    fn carry(&self) -> Carried {
        Carried {
            generation: self.generation.clone(),
            interned: lock(&self.interned).clone(),
            converted: std::mem::take(&mut *lock(&self.converted)),
            sets: std::mem::take(&mut *lock(&self.sets)),
            versioned: std::mem::take(&mut *lock(&self.versioned)),
        }
    }

    /// `node`'s resources from `snapshot` (whose version this is).
    fn resources(&self, snapshot: &MeshSnapshot, node: &Node) -> Arc<NodeResources> {
        let generated = generate_cached(snapshot, &ProxyMeta::from_node(node), &self.generation);
        let id = TypeUrl::ALL.map(|t| generated.resources(t).id());
        let cell = {
            let mut converted = lock(&self.converted);
            match converted.get(&id) {
                Some(cell) => cell.clone(),
                None => {
                    // The previous version's conversion of the same maps.
                    let kept = lock(&self.previous).converted.remove(&id);
                    converted
                        .entry(id)
                        .or_insert(kept.unwrap_or_default())
                        .clone()
                }
            }
        };
        let (_, resources) =
            cell.get_or_init(|| (generated.clone(), Arc::new(self.convert(&generated))));
        resources.clone()
    }

    fn convert(&self, generated: &Generated) -> NodeResources {
        TypeUrl::ALL
            .into_iter()
            .map(|t| (t, self.set(t, generated.resources(t))))
            .collect()
    }

    /// The shared set for one of translate's maps: converted once per map,
    /// built only if no set with its content exists yet.
    fn set(&self, t: TypeUrl, map: &Resources) -> Arc<TypeResources> {
        if let Some((_, set)) = lock(&self.sets).get(&map.id()) {
            return set.clone();
        }
        if let Some(kept) = lock(&self.previous).sets.remove(&map.id()) {
            let set = kept.1.clone();
            lock(&self.sets).insert(map.id(), kept);
            return set;
        }
        let versioned: Vec<Versioned> = {
            let mut cache = lock(&self.versioned);
            let mut previous = lock(&self.previous);
            map.values()
                .map(|any| {
                    let key = Arc::as_ptr(any) as usize;
                    let (_, v) = cache.entry(key).or_insert_with(|| {
                        previous
                            .versioned
                            .remove(&key)
                            .unwrap_or_else(|| (any.clone(), Versioned::shared(any.clone())))
                    });
                    v.clone()
                })
                .collect()
        };
        let version = set_version(map.keys().zip(&versioned));
        let key = (t, version);
        let set = {
            let mut interned = lock(&self.interned);
            interned
                .entry(key)
                .or_insert_with_key(|key| {
                    let kept = lock(&self.previous).interned.get(key).cloned();
                    kept.unwrap_or_else(|| {
                        let entries = map.keys().cloned().zip(versioned).collect();
                        Arc::new(TypeResources::new(t, entries))
                    })
                })
                .clone()
        };
        lock(&self.sets).insert(map.id(), (map.clone(), set.clone()));
        set
    }
}

impl TranslateSource {
    /// A source over `store`; it follows every published snapshot.
    pub fn new(store: SnapshotStore) -> Arc<Self> {
        let source = Arc::new(TranslateSource {
            generation: watch::Sender::new(store.current().version()),
            store: store.clone(),
            cache: Mutex::default(),
            shared: Mutex::default(),
            timing: PushTiming::default(),
        });
        let weak = Arc::downgrade(&source);
        let mut updates = store.subscribe();
        tokio::spawn(async move {
            while updates.changed().await.is_ok() {
                let version = updates.borrow_and_update().version();
                let Some(source) = weak.upgrade() else { return };
                let (expected, early) = {
                    let mut cache = lock(&source.cache);
                    let all = cache.len();
                    cache.retain(|_, (v, _)| *v == version);
                    (all, cache.len())
                };
                source.timing.published(version, expected, early);
                let old = source.renew(version);
                source.generation.send_replace(version);
                // The old snapshot's results are freed off the push path.
                tokio::task::spawn_blocking(move || drop(old));
            }
        });
        source
    }

    /// Installs what proxies share for snapshot `version` (if not yet) and
    /// returns what it replaced.
    fn renew(&self, version: u64) -> Option<Arc<Shared>> {
        let mut shared = lock(&self.shared);
        if shared.as_ref().is_some_and(|s| s.version == version) {
            return None;
        }
        let previous = shared.as_ref().map(|o| o.carry()).unwrap_or_default();
        shared.replace(Arc::new(Shared::new(version, previous)))
    }

    /// What proxies share for snapshot `version`; replaced (and the old
    /// version's dropped) when the version changes.
    fn shared_for(&self, version: u64) -> Arc<Shared> {
        let mut shared = lock(&self.shared);
        match &*shared {
            Some(s) if s.version == version => s.clone(),
            old => {
                let previous = old.as_ref().map(|o| o.carry()).unwrap_or_default();
                let fresh = Arc::new(Shared::new(version, previous));
                *shared = Some(fresh.clone());
                fresh
            }
        }
    }

    /// Per-snapshot translate and push timings (register them on 15014).
    pub fn timing(&self) -> &PushTiming {
        &self.timing
    }

    /// Generates without caching (also for `/debug/configz`-style views).
    pub fn generate(snapshot: &MeshSnapshot, node: &Node) -> NodeResources {
        let meta = ProxyMeta::from_node(node);
        let generated = meshwork_translate::generate(snapshot, &meta);
        TypeUrl::ALL
            .into_iter()
            .map(|t| {
                let set = generated
                    .by_type(t)
                    .iter()
                    .map(|(name, any)| (name.clone(), Versioned::shared(any.clone())))
                    .collect();
                (t, Arc::new(TypeResources::new(t, set)))
            })
            .collect()
    }
}

/// A node's id and [`metadata_hash`].
type NodeKey = (String, u64);

/// A hash of what translation reads from a node ([`ProxyMeta`]: labels,
/// locality, VHDS…), so that a proxy reconnecting under the same id with
/// other metadata is not served what was generated for the old one.
fn metadata_hash(node: &Node) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{:?}", ProxyMeta::from_node(node)).hash(&mut h);
    h.finish()
}

impl ResourceSource for TranslateSource {
    fn resources(&self, node: &Node) -> Arc<NodeResources> {
        let snapshot = self.store.current();
        let version = snapshot.version();
        let key = (node.id.clone(), metadata_hash(node));
        if let Some((v, r)) = lock(&self.cache).get(&key)
            && *v == version
        {
            return r.clone();
        }
        let start = std::time::Instant::now();
        let resources = self.shared_for(version).resources(&snapshot, node);
        self.timing.served(version, start.elapsed());
        lock(&self.cache).insert(key, (version, resources.clone()));
        resources
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn change_started(&self, generation: u64) -> Option<std::time::Instant> {
        self.store.change_started(generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use envoy_types::pb::google::protobuf::value::Kind;
    use envoy_types::pb::google::protobuf::{Struct, Value};
    use meshwork_registry::Registry;

    fn node(id: &str, app: &str) -> Node {
        let s = |v: &str| Value {
            kind: Some(Kind::StringValue(v.into())),
        };
        let labels = Struct {
            fields: [("app".to_string(), s(app))].into_iter().collect(),
        };
        Node {
            id: id.into(),
            metadata: Some(Struct {
                fields: [
                    ("NAMESPACE".to_string(), s("default")),
                    ("WORKLOAD_NAME".to_string(), s(app)),
                    (
                        "LABELS".to_string(),
                        Value {
                            kind: Some(Kind::StructValue(labels)),
                        },
                    ),
                ]
                .into_iter()
                .collect(),
            }),
            ..Default::default()
        }
    }

    /// Shared conversion gives every node what uncached generation gives
    /// it, and replicas the very same resources.
    #[test]
    fn shared_conversion_equals_uncached() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  clusterIP: 10.96.0.1\n  selector: {app: web}\n  ports: [{name: http, port: 80}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: default}\nspec:\n  selector: {app: db}\n  ports: [{name: tcp, port: 5432}]\n";
        let resources = meshwork_config::load_str("t.yaml".as_ref(), yaml).resources;
        let registry = Registry::build(&resources, &[]);
        let snap = MeshSnapshot::new(7, resources, registry);
        let shared = Shared::new(7, Carried::default());
        let nodes = [
            node(
                "sidecar~10.0.0.1~web-0.default~default.svc.cluster.local",
                "web",
            ),
            node(
                "sidecar~10.0.0.2~web-1.default~default.svc.cluster.local",
                "web",
            ),
            node(
                "sidecar~10.0.0.3~db-0.default~default.svc.cluster.local",
                "db",
            ),
        ];
        let got: Vec<Arc<NodeResources>> =
            nodes.iter().map(|n| shared.resources(&snap, n)).collect();
        for (n, g) in nodes.iter().zip(&got) {
            let want = TranslateSource::generate(&snap, n);
            assert_eq!(g.len(), want.len());
            for (t, set) in &want {
                let names: Vec<(&String, &String)> = set
                    .resources()
                    .iter()
                    .map(|(k, v)| (k, &v.version))
                    .collect();
                let got_names: Vec<(&String, &String)> = g[t]
                    .resources()
                    .iter()
                    .map(|(k, v)| (k, &v.version))
                    .collect();
                assert_eq!(names, got_names);
                assert_eq!(set.version(), g[t].version());
                assert!(
                    set.resources()
                        .iter()
                        .all(|(k, v)| g[t].resources()[k].any == v.any)
                );
            }
        }
        assert!(Arc::ptr_eq(&got[0], &got[1]));
        assert!(!Arc::ptr_eq(&got[0], &got[2]));
    }

    const SERVICES: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  clusterIP: 10.96.0.1\n  selector: {app: web}\n  ports: [{name: http, port: 80}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: default}\nspec:\n  clusterIP: 10.96.0.2\n  selector: {app: db}\n  ports: [{name: http, port: 80}]\n";

    fn snapshot(version: u64, yaml: &str) -> MeshSnapshot {
        let resources = meshwork_config::load_str("t.yaml".as_ref(), yaml).resources;
        let registry = Registry::build(&resources, &[]);
        MeshSnapshot::new(version, resources, registry)
    }

    /// A new snapshot that changes only a VirtualService hands out the very
    /// same cluster, endpoint and listener sets (so streams skip them by
    /// pointer) and a new route set, shared by every proxy that has it.
    #[test]
    fn unchanged_sets_survive_a_snapshot_change() {
        let web = node(
            "sidecar~10.0.0.1~web-0.default~default.svc.cluster.local",
            "web",
        );
        let db = node(
            "sidecar~10.0.0.3~db-0.default~default.svc.cluster.local",
            "db",
        );
        let old = Shared::new(1, Carried::default());
        let before = old.resources(&snapshot(1, SERVICES), &web);
        let vs = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: db, namespace: default}\nspec:\n  hosts: [db]\n  http:\n  - match: [{uri: {prefix: /v2}}]\n    route: [{destination: {host: db}}]\n  - route: [{destination: {host: db}}]\n";
        let snap = snapshot(2, &format!("{SERVICES}{vs}"));
        let new = Shared::new(2, old.carry());
        let after = new.resources(&snap, &web);
        for t in [TypeUrl::Cluster, TypeUrl::Endpoint, TypeUrl::Listener] {
            let show = |r: &NodeResources| {
                r[&t]
                    .resources()
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.version))
                    .collect::<Vec<_>>()
            };
            assert_eq!(show(&before), show(&after));
            assert!(Arc::ptr_eq(&before[&t], &after[&t]), "{t} kept");
        }
        assert!(!Arc::ptr_eq(
            &before[&TypeUrl::Route],
            &after[&TypeUrl::Route]
        ));
        assert_ne!(
            before[&TypeUrl::Route].version(),
            after[&TypeUrl::Route].version()
        );
        // Another workload of the namespace shares the new route set.
        let other = new.resources(&snap, &db);
        assert!(Arc::ptr_eq(
            &after[&TypeUrl::Route],
            &other[&TypeUrl::Route]
        ));
        // What it equals: uncached generation.
        let want = TranslateSource::generate(&snap, &web);
        assert_eq!(
            want[&TypeUrl::Route].version(),
            after[&TypeUrl::Route].version()
        );
    }
}
