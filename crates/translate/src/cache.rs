//! [`generate_cached`]: per-proxy generation from parts shared between the
//! proxies of one snapshot, each part keyed by exactly the proxy properties
//! it depends on.
//!
//! - The outbound part (outbound clusters and their endpoints, outbound
//!   listeners, route configurations; for proxyless clients everything)
//!   depends on the proxy's kind, namespace and the values of the labels
//!   some configuration consults ([`MeshSnapshot::consulted_labels`]:
//!   Sidecar and DestinationRule selectors, VirtualService `sourceLabels`).
//! - The inbound part (`inbound|port||` clusters, `virtualInbound`) depends
//!   on the proxy's namespace, workload, labels and service account, and on
//!   its inbound ports (which its address may decide: named target ports).
//! - Outbound clusters are shared between namespaces by cluster name and the
//!   DestinationRule in force.
//!
//! Replicas of one workload therefore share everything: the memoized whole
//! is returned with its maps shared (see [`crate::Resources`]).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use meshwork_registry::Protocol;

use crate::cluster::{self, ClusterMemo};
use crate::meta::{ProxyKind, ProxyMeta};
use crate::scope::Scope;
use crate::snapshot::MeshSnapshot;
use crate::{Generated, grpc, listener, route};

/// A concurrent memo: each value is computed once (by one caller; callers
/// of the same key wait for it, other keys proceed in parallel).
pub(crate) struct Memo<K, V> {
    cells: Mutex<HashMap<K, Arc<OnceLock<V>>>>,
}

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Memo {
            cells: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq, V: Clone> Memo<K, V> {
    /// The value for `key`, computed by `init` if nobody has yet.
    pub(crate) fn get_or_init(&self, key: K, init: impl FnOnce() -> V) -> V {
        let cell = lock(&self.cells).entry(key).or_default().clone();
        cell.get_or_init(init).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the outbound part depends on: kind, namespace, and the value (or
/// absence) of each consulted label, in `consulted_labels` order, and the
/// proxy's locality (locality failover orders endpoints by it), and
/// whether it takes virtual hosts through VHDS.
type OutboundKey = (ProxyKind, String, Vec<Option<String>>, String, bool);

/// What the inbound part depends on: namespace, workload, labels, service
/// account and inbound ports.
type InboundKey = (
    String,
    String,
    BTreeMap<String, String>,
    String,
    Vec<(u16, Protocol)>,
);

/// The memos of one snapshot.
#[derive(Default)]
struct Memos {
    snapshot: u64,
    clusters: ClusterMemo,
    outbound: Memo<OutboundKey, Generated>,
    inbound: Memo<InboundKey, Generated>,
    /// Sidecar results by the identities of their two parts.
    whole: Memo<(usize, usize), Generated>,
}

/// Shared generation work for the proxies of one [`MeshSnapshot`]: create
/// one per snapshot and pass it to every [`generate_cached`] call for that
/// snapshot. It is `Send + Sync`; concurrent callers share the work.
///
/// Used with another snapshot, it forgets what it held and starts over (a
/// cache never serves one snapshot's results for another).
#[derive(Default)]
pub struct GenerationCache {
    memos: Mutex<Option<Arc<Memos>>>,
}

impl std::fmt::Debug for GenerationCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snapshot = lock(&self.memos).as_ref().map(|m| m.snapshot);
        f.debug_struct("GenerationCache")
            .field("snapshot", &snapshot)
            .finish_non_exhaustive()
    }
}

impl GenerationCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The memos for `snap`, fresh if they were for another snapshot.
    fn memos(&self, snap: &MeshSnapshot) -> Arc<Memos> {
        let mut memos = lock(&self.memos);
        match &*memos {
            Some(m) if m.snapshot == snap.id() => m.clone(),
            _ => {
                let fresh = Arc::new(Memos {
                    snapshot: snap.id(),
                    ..Memos::default()
                });
                *memos = Some(fresh.clone());
                fresh
            }
        }
    }
}

/// Generates every xDS resource `proxy` should receive from `snapshot`,
/// exactly as [`crate::generate`] does, sharing work (and the resulting
/// maps) with other proxies through `cache`.
pub fn generate_cached(
    snapshot: &MeshSnapshot,
    proxy: &ProxyMeta,
    cache: &GenerationCache,
) -> Generated {
    let memos = cache.memos(snapshot);
    let labels = snapshot
        .consulted_labels()
        .iter()
        .map(|k| proxy.labels.get(k).cloned())
        .collect();
    let key = (
        proxy.kind,
        proxy.namespace.clone(),
        labels,
        proxy.locality.clone(),
        proxy.vhds,
    );
    let outbound = memos
        .outbound
        .get_or_init(key, || outbound(snapshot, proxy, &memos.clusters));
    if proxy.kind == ProxyKind::Proxyless {
        return outbound;
    }
    let ports = cluster::inbound_ports(snapshot, proxy);
    let key = (
        proxy.namespace.clone(),
        proxy.workload.clone(),
        proxy.labels.clone(),
        proxy.service_account.clone(),
        ports.clone(),
    );
    let inbound = memos.inbound.get_or_init(key, || {
        let mut out = Generated::default();
        cluster::inbound(proxy, &ports, &mut out);
        let mtls = crate::authn::inbound_mtls(snapshot, proxy);
        listener::inbound(&ports, &mtls, &mut out);
        crate::sidecar_listeners::ingress(snapshot, proxy, &mtls, &mut out);
        out
    });
    // Both parts stay alive in their memos, so their ids identify them.
    let key = (outbound.listeners.id(), inbound.listeners.id());
    memos.whole.get_or_init(key, || merge(&outbound, &inbound))
}

/// The proxy-dependent outbound part, for the kind of `proxy`.
fn outbound(snap: &MeshSnapshot, proxy: &ProxyMeta, clusters: &ClusterMemo) -> Generated {
    let scope = Scope::for_proxy(snap, proxy);
    let mut out = Generated::default();
    match proxy.kind {
        ProxyKind::Sidecar => {
            cluster::outbound(snap, proxy, &scope, false, Some(clusters), &mut out);
            listener::outbound(snap, proxy, &scope, &mut out);
            route::outbound(snap, proxy, &scope, &mut out);
        }
        ProxyKind::Proxyless => {
            cluster::outbound(snap, proxy, &scope, true, Some(clusters), &mut out);
            grpc::listeners_and_routes(snap, proxy, &scope, &mut out);
        }
    }
    out
}

/// A sidecar's resources from its parts; the inbound part's entries are
/// added after the outbound part's, as [`crate::generate`] adds them.
fn merge(outbound: &Generated, inbound: &Generated) -> Generated {
    let mut out = outbound.clone();
    for (map, add) in [
        (&mut out.listeners, &inbound.listeners),
        (&mut out.routes, &inbound.routes),
        (&mut out.clusters, &inbound.clusters),
        (&mut out.endpoints, &inbound.endpoints),
        (&mut out.virtual_hosts, &inbound.virtual_hosts),
    ] {
        if !add.is_empty() {
            map.extend(add.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    out
}
