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
//! Replicas of one workload therefore share everything: the memoized parts
//! and their merged maps are returned shared (see [`crate::Resources`]).
//!
//! Across snapshots: when a snapshot was derived from the one the cache
//! last served ([`MeshSnapshot::next`]) by a change the cache understands
//! ([`crate::change`]), each part is derived from the previous snapshot's
//! part with the same key: inbound parts and ports are kept, outbound parts
//! keep their clusters and endpoints (and listeners unless TCP/TLS routes
//! changed) and re-translate route configurations only if they hold a
//! changed host. Kept maps are the very same `Arc`s, so consumers can skip
//! them by pointer. Only the snapshot just before is remembered.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use meshwork_registry::Protocol;

use crate::change::Change;
use crate::cluster::{self, ClusterMemo};
use crate::meta::{ProxyKind, ProxyMeta};
use crate::scope::Scope;
use crate::snapshot::MeshSnapshot;
use crate::{Generated, Resources, grpc, listener, route};

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

    /// The value for `key`, if it has been computed.
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        let cell = lock(&self.cells).get(key)?.clone();
        cell.get().cloned()
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

/// What a proxy's inbound ports depend on besides the snapshot:
/// namespace, workload, labels and address.
type PortsKey = (String, String, BTreeMap<String, String>, Option<IpAddr>);

/// The memos of one snapshot.
#[derive(Default)]
struct Memos {
    snapshot: u64,
    clusters: ClusterMemo,
    outbound: Memo<OutboundKey, Generated>,
    inbound: Memo<InboundKey, Generated>,
    ports: Memo<PortsKey, Vec<(u16, Protocol)>>,
    /// A sidecar's map of one type: the outbound part's map with the
    /// inbound part's added, by the identities of the two (both kept alive
    /// in the value, so the identities stay theirs).
    merged: Memo<(usize, usize), (Resources, Resources, Resources)>,
    /// The memos of the snapshot this one was derived from, while the
    /// change between them lets parts carry over (never a chain: the
    /// previous memos' own previous is dropped).
    previous: Mutex<Option<Arc<Memos>>>,
}

/// Shared generation work for the proxies of one [`MeshSnapshot`]: create
/// one and pass it to every [`generate_cached`] call. It is `Send + Sync`;
/// concurrent callers share the work.
///
/// Used with another snapshot, it forgets what it held and starts over (a
/// cache never serves one snapshot's results for another), except that a
/// snapshot derived from the last one by [`MeshSnapshot::next`] reuses
/// what its change cannot affect.
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

    /// The memos for `snap`: fresh if they were for another snapshot, with
    /// the old ones to carry over from if `snap` was derived from it.
    fn memos(&self, snap: &MeshSnapshot) -> Arc<Memos> {
        let mut memos = lock(&self.memos);
        match &*memos {
            Some(m) if m.snapshot == snap.id() => m.clone(),
            old => {
                let previous = match (old, snap.change()) {
                    (Some(o), Some(c)) if c.base == o.snapshot => {
                        lock(&o.previous).take();
                        Some(o.clone())
                    }
                    _ => None,
                };
                let fresh = Arc::new(Memos {
                    snapshot: snap.id(),
                    previous: Mutex::new(previous),
                    ..Memos::default()
                });
                *memos = Some(fresh.clone());
                fresh
            }
        }
    }
}

impl Memos {
    /// The previous snapshot's memos and the change since, if parts may
    /// carry over.
    fn previous<'a>(&self, snap: &'a MeshSnapshot) -> Option<(Arc<Memos>, &'a Change)> {
        let previous = lock(&self.previous).clone()?;
        let change = snap.change().filter(|c| c.base == previous.snapshot)?;
        Some((previous, change))
    }

    /// `outbound` with `inbound` added, shared by every caller with the
    /// same two maps.
    fn merged(&self, outbound: &Resources, inbound: &Resources) -> Resources {
        if inbound.is_empty() {
            return outbound.clone();
        }
        let key = (outbound.id(), inbound.id());
        let carried = || lock(&self.previous).as_ref()?.merged.get(&key);
        let (_, _, merged) = self.merged.get_or_init(key, || {
            carried().unwrap_or_else(|| {
                let mut out = outbound.clone();
                out.extend(inbound.iter().map(|(k, v)| (k.clone(), v.clone())));
                (outbound.clone(), inbound.clone(), out)
            })
        });
        merged
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
    let previous = memos.previous(snapshot);
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
    let outbound = memos.outbound.get_or_init(key.clone(), || {
        match previous
            .as_ref()
            .and_then(|(p, c)| Some((p.outbound.get(&key)?, *c)))
        {
            Some((old, change)) => refresh(snapshot, proxy, &old, change),
            None => outbound(snapshot, proxy, &memos.clusters),
        }
    });
    if proxy.kind == ProxyKind::Proxyless {
        return outbound;
    }
    let key = (
        proxy.namespace.clone(),
        proxy.workload.clone(),
        proxy.labels.clone(),
        proxy.ip,
    );
    let ports = memos.ports.get_or_init(key.clone(), || {
        previous
            .as_ref()
            .and_then(|(p, _)| p.ports.get(&key))
            .unwrap_or_else(|| cluster::inbound_ports(snapshot, proxy))
    });
    let key = (
        proxy.namespace.clone(),
        proxy.workload.clone(),
        proxy.labels.clone(),
        proxy.service_account.clone(),
        ports.clone(),
    );
    let inbound = memos.inbound.get_or_init(key.clone(), || {
        if let Some(kept) = previous.as_ref().and_then(|(p, _)| p.inbound.get(&key)) {
            return kept;
        }
        let mut out = Generated::default();
        cluster::inbound(proxy, &ports, &mut out);
        let mtls = crate::authn::inbound_mtls(snapshot, proxy);
        listener::inbound(&ports, &mtls, &mut out);
        crate::sidecar_listeners::ingress(snapshot, proxy, &mtls, &mut out);
        out
    });
    // Inbound entries are added after the outbound part's, as
    // [`crate::generate`] adds them.
    Generated {
        listeners: memos.merged(&outbound.listeners, &inbound.listeners),
        routes: memos.merged(&outbound.routes, &inbound.routes),
        clusters: memos.merged(&outbound.clusters, &inbound.clusters),
        endpoints: memos.merged(&outbound.endpoints, &inbound.endpoints),
        virtual_hosts: memos.merged(&outbound.virtual_hosts, &inbound.virtual_hosts),
    }
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

/// The outbound part after `change`, from the part `old` of the snapshot
/// before it (same key): clusters and endpoints are kept, listeners unless
/// TCP/TLS routes changed, route configurations unless one of their hosts
/// changed; whatever is kept is the very same map.
fn refresh(snap: &MeshSnapshot, proxy: &ProxyMeta, old: &Generated, change: &Change) -> Generated {
    let scope = Scope::for_proxy(snap, proxy);
    let routes = scope
        .services
        .iter()
        .any(|s| change.vs_hosts.contains(&s.hostname));
    if !routes && !change.vs_l4 {
        return old.clone();
    }
    let mut out = Generated {
        clusters: old.clusters.clone(),
        endpoints: old.endpoints.clone(),
        ..Generated::default()
    };
    match proxy.kind {
        ProxyKind::Sidecar => {
            if change.vs_l4 {
                listener::outbound(snap, proxy, &scope, &mut out);
            } else {
                out.listeners = old.listeners.clone();
            }
            if routes {
                route::outbound(snap, proxy, &scope, &mut out);
                keep_equal(&mut out.routes, &old.routes);
                keep_equal(&mut out.virtual_hosts, &old.virtual_hosts);
            } else {
                out.routes = old.routes.clone();
                out.virtual_hosts = old.virtual_hosts.clone();
            }
        }
        ProxyKind::Proxyless => grpc::listeners_and_routes(snap, proxy, &scope, &mut out),
    }
    out
}

/// Puts `old`'s resource in place of each re-translated one with the same
/// name and bytes, so that unchanged resources (VHDS virtual hosts of
/// hosts the change did not touch) keep their identity and their
/// consumers' cached versions.
fn keep_equal(new: &mut Resources, old: &Resources) {
    for (name, any) in new.iter_mut() {
        if let Some(kept) = old.get(name).filter(|o| ***o == **any) {
            *any = kept.clone();
        }
    }
}
