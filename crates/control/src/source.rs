//! The xDS server's [`ResourceSource`]: each proxy's resources are generated
//! by `translate` from the current snapshot, once per proxy and snapshot
//! version (cached), and re-generated after every change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::core::v3::Node;
use meshwork_translate::{MeshSnapshot, ProxyMeta};
use meshwork_xds::TypeUrl;
use meshwork_xds::server::{NodeResources, ResourceSource, Versioned};
use tokio::sync::watch;

use crate::snapshot::SnapshotStore;

/// Generates resources per proxy from the snapshot store.
pub struct TranslateSource {
    store: SnapshotStore,
    generation: watch::Sender<u64>,
    cache: Mutex<HashMap<String, (u64, Arc<NodeResources>)>>,
}

impl TranslateSource {
    /// A source over `store`; it follows every published snapshot.
    pub fn new(store: SnapshotStore) -> Arc<Self> {
        let source = Arc::new(TranslateSource {
            generation: watch::Sender::new(store.current().version()),
            store: store.clone(),
            cache: Mutex::default(),
        });
        let weak = Arc::downgrade(&source);
        let mut updates = store.subscribe();
        tokio::spawn(async move {
            while updates.changed().await.is_ok() {
                let version = updates.borrow_and_update().version();
                let Some(source) = weak.upgrade() else { return };
                if let Ok(mut cache) = source.cache.lock() {
                    cache.retain(|_, (v, _)| *v == version);
                }
                source.generation.send_replace(version);
            }
        });
        source
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
                    .map(|(name, any)| (name.clone(), Versioned::new(any.clone())))
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
        if let Ok(cache) = self.cache.lock()
            && let Some((v, r)) = cache.get(&node.id)
            && *v == version
        {
            return r.clone();
        }
        let resources = Arc::new(Self::generate(&snapshot, node));
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(node.id.clone(), (version, resources.clone()));
        }
        resources
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}
