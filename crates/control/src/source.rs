//! The xDS server's [`ResourceSource`]: each proxy's resources are generated
//! by `translate` from the current snapshot, once per proxy and snapshot
//! version (cached), and re-generated after every change.
//!
//! Per snapshot version one [`GenerationCache`] shares the translation work
//! between proxies (replicas of a workload get the very same maps), and the
//! conversion to [`NodeResources`] is shared too: one per distinct generated
//! result, each resource's version hash computed once.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::Any;
use meshwork_translate::{Generated, GenerationCache, MeshSnapshot, ProxyMeta, generate_cached};
use meshwork_xds::TypeUrl;
use meshwork_xds::server::{NodeResources, ResourceSource, Versioned};
use tokio::sync::watch;

use crate::snapshot::SnapshotStore;

/// Generates resources per proxy from the snapshot store.
pub struct TranslateSource {
    store: SnapshotStore,
    generation: watch::Sender<u64>,
    cache: Mutex<HashMap<String, (u64, Arc<NodeResources>)>>,
    shared: Mutex<Option<Arc<Shared>>>,
}

/// The identities of a [`Generated`]'s four maps.
type GeneratedId = [usize; 4];

/// A generated result converted once, kept next to what it came from.
type Converted = Arc<OnceLock<(Generated, Arc<NodeResources>)>>;

/// What the proxies of one snapshot version share.
struct Shared {
    version: u64,
    generation: GenerationCache,
    /// Converted results by the identity of what they were converted from
    /// (kept alive next to them, so identities are not reused).
    converted: Mutex<HashMap<GeneratedId, Converted>>,
    /// Each resource with its version, by the address of its shared `Any`
    /// (kept alive in the entry).
    versioned: Mutex<HashMap<usize, (Arc<Any>, Versioned)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn once<K: Hash + Eq, V>(cells: &Mutex<HashMap<K, Arc<OnceLock<V>>>>, key: K) -> Arc<OnceLock<V>> {
    lock(cells).entry(key).or_default().clone()
}

impl Shared {
    fn new(version: u64) -> Self {
        Shared {
            version,
            generation: GenerationCache::new(),
            converted: Mutex::default(),
            versioned: Mutex::default(),
        }
    }

    /// `node`'s resources from `snapshot` (whose version this is).
    fn resources(&self, snapshot: &MeshSnapshot, node: &Node) -> Arc<NodeResources> {
        let generated = generate_cached(snapshot, &ProxyMeta::from_node(node), &self.generation);
        let id = TypeUrl::ALL.map(|t| generated.resources(t).id());
        let cell = once(&self.converted, id);
        let (_, resources) =
            cell.get_or_init(|| (generated.clone(), Arc::new(self.convert(&generated))));
        resources.clone()
    }

    fn convert(&self, generated: &Generated) -> NodeResources {
        TypeUrl::ALL
            .into_iter()
            .map(|t| {
                let mut versioned = lock(&self.versioned);
                let set = generated
                    .by_type(t)
                    .iter()
                    .map(|(name, any)| {
                        let (_, v) = versioned
                            .entry(Arc::as_ptr(any) as usize)
                            .or_insert_with(|| (any.clone(), Versioned::shared(any.clone())));
                        (name.clone(), v.clone())
                    })
                    .collect();
                (t, set)
            })
            .collect()
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
        });
        let weak = Arc::downgrade(&source);
        let mut updates = store.subscribe();
        tokio::spawn(async move {
            while updates.changed().await.is_ok() {
                let version = updates.borrow_and_update().version();
                let Some(source) = weak.upgrade() else { return };
                lock(&source.cache).retain(|_, (v, _)| *v == version);
                source.shared_for(version);
                source.generation.send_replace(version);
            }
        });
        source
    }

    /// What proxies share for snapshot `version`; replaced (and the old
    /// version's dropped) when the version changes.
    fn shared_for(&self, version: u64) -> Arc<Shared> {
        let mut shared = lock(&self.shared);
        match &*shared {
            Some(s) if s.version == version => s.clone(),
            _ => {
                let fresh = Arc::new(Shared::new(version));
                *shared = Some(fresh.clone());
                fresh
            }
        }
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
                (t, set)
            })
            .collect()
    }
}

impl ResourceSource for TranslateSource {
    fn resources(&self, node: &Node) -> Arc<NodeResources> {
        let snapshot = self.store.current();
        let version = snapshot.version();
        if let Some((v, r)) = lock(&self.cache).get(&node.id)
            && *v == version
        {
            return r.clone();
        }
        let resources = self.shared_for(version).resources(&snapshot, node);
        lock(&self.cache).insert(node.id.clone(), (version, resources.clone()));
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
        let shared = Shared::new(7);
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
                let names: Vec<(&String, &String)> =
                    set.iter().map(|(k, v)| (k, &v.version)).collect();
                let got_names: Vec<(&String, &String)> =
                    g[t].iter().map(|(k, v)| (k, &v.version)).collect();
                assert_eq!(names, got_names);
                assert!(set.iter().all(|(k, v)| g[t][k].any == v.any));
            }
        }
        assert!(Arc::ptr_eq(&got[0], &got[1]));
        assert!(!Arc::ptr_eq(&got[0], &got[2]));
    }
}
