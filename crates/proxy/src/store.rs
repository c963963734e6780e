//! The proxy's configuration store: the xDS [`ResourceSink`].
//!
//! Each resource is decoded and compiled alone. A bad one is rejected (the
//! ADS client NACKs it) and keeps its last good version; the good ones apply.
//! After every update the store publishes a new [`Tables`] snapshot and
//! recomputes readiness: the proxy is ready once it has listeners, clusters,
//! every route configuration its listeners name and the endpoints of every
//! EDS cluster.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use meshwork_xds::TypeUrl;
use meshwork_xds::client::{ResourceError, ResourceSink};
use tokio::sync::watch;

use crate::model::cluster::{ClusterModel, Discovery, EndpointModel, compile_assignment};
use crate::model::listener::ListenerModel;
use crate::model::route::RouteTable;
use crate::tables::{ClusterState, SharedTables, Tables};

/// One accepted resource: its raw form, its compiled form and the version
/// that brought it.
#[derive(Clone, Debug)]
pub struct Entry<T> {
    /// As received.
    pub raw: Any,
    /// Compiled.
    pub value: T,
    /// The xDS version it came with.
    pub version: String,
}

#[derive(Default)]
struct Accepted {
    listeners: BTreeMap<String, Entry<Arc<ListenerModel>>>,
    routes: BTreeMap<String, Entry<Arc<RouteTable>>>,
    clusters: BTreeMap<String, Entry<Arc<ClusterState>>>,
    endpoints: BTreeMap<String, Entry<Arc<Vec<EndpointModel>>>>,
    received: std::collections::BTreeSet<TypeUrl>,
}

/// The store; share it as `Arc<ConfigStore>`.
pub struct ConfigStore {
    accepted: Mutex<Accepted>,
    tables: SharedTables,
    ready: watch::Sender<bool>,
    generation: watch::Sender<u64>,
    /// The workload certificate (SDS `default` / `ROOTCA`) for clusters'
    /// TLS transport sockets; unset without a CA.
    mesh_tls: std::sync::OnceLock<Arc<meshwork_identity::tls::MeshTls>>,
}

impl Default for ConfigStore {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigStore {
    /// An empty store.
    pub fn new() -> Self {
        ConfigStore {
            accepted: Mutex::default(),
            tables: Arc::default(),
            ready: watch::Sender::new(false),
            generation: watch::Sender::new(0),
            mesh_tls: std::sync::OnceLock::new(),
        }
    }

    /// Gives clusters the workload certificate; set once, before the first
    /// cluster arrives.
    pub fn set_mesh_tls(&self, mesh: Arc<meshwork_identity::tls::MeshTls>) {
        let _ = self.mesh_tls.set(mesh);
    }

    /// The snapshot the data path reads.
    pub fn tables(&self) -> SharedTables {
        self.tables.clone()
    }

    /// Becomes true once the first complete configuration is in.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Bumped after every applied update (listeners follow it).
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The accepted raw resources of one type with their versions, for
    /// `/config_dump`.
    pub fn raw(&self, t: TypeUrl) -> Vec<(String, String, Any)> {
        let a = self.lock();
        fn list<T>(m: &BTreeMap<String, Entry<T>>) -> Vec<(String, String, Any)> {
            m.iter()
                .map(|(k, e)| (k.clone(), e.version.clone(), e.raw.clone()))
                .collect()
        }
        match t {
            TypeUrl::Listener => list(&a.listeners),
            TypeUrl::Route => list(&a.routes),
            TypeUrl::Cluster => list(&a.clusters),
            TypeUrl::Endpoint => list(&a.endpoints),
            TypeUrl::VirtualHost => Vec::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Accepted> {
        self.accepted.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, a: &Accepted) {
        let tables = Tables {
            listeners: a
                .listeners
                .iter()
                .map(|(k, e)| (k.clone(), e.value.clone()))
                .collect(),
            routes: a
                .routes
                .iter()
                .map(|(k, e)| (k.clone(), e.value.clone()))
                .collect(),
            clusters: a
                .clusters
                .iter()
                .map(|(k, e)| (k.clone(), e.value.clone()))
                .collect(),
        };
        self.tables.store(Arc::new(tables));
        self.generation.send_modify(|g| *g += 1);
        let ready = a.received.contains(&TypeUrl::Listener)
            && a.received.contains(&TypeUrl::Cluster)
            && wanted_routes(a).iter().all(|r| a.routes.contains_key(r))
            && wanted_endpoints(a)
                .iter()
                .all(|e| a.endpoints.contains_key(e));
        self.ready.send_if_modified(|r| {
            // Readiness is sticky: later updates never make a proxy unready.
            let changed = ready && !*r;
            *r |= ready;
            changed
        });
    }
}

fn wanted_routes(a: &Accepted) -> Vec<String> {
    a.listeners
        .values()
        .flat_map(|e| e.value.rds_names().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

fn wanted_endpoints(a: &Accepted) -> Vec<String> {
    a.clusters
        .values()
        .filter_map(|e| e.value.eds_service().map(str::to_string))
        .collect()
}

/// Merges one update into `map`. For wildcard types (`replace_all`) names
/// missing from the update are removed; a rejected resource keeps its last
/// good version either way.
fn merge<T: Clone>(
    map: &mut BTreeMap<String, Entry<T>>,
    version: &str,
    resources: &[Any],
    replace_all: bool,
    mut compile: impl FnMut(&Any) -> Result<(String, T), (String, String)>,
) -> Vec<ResourceError> {
    let mut errors = Vec::new();
    let mut next: BTreeMap<String, Entry<T>> = if replace_all {
        BTreeMap::new()
    } else {
        map.clone()
    };
    for raw in resources {
        match compile(raw) {
            Ok((name, value)) => {
                // Unchanged resources keep their compiled value (and live state).
                let value = match map.get(&name) {
                    Some(p) if p.raw == *raw => p.value.clone(),
                    _ => value,
                };
                next.insert(
                    name,
                    Entry {
                        raw: raw.clone(),
                        value,
                        version: version.to_string(),
                    },
                );
            }
            Err((name, message)) => {
                if let Some(old) = map.get(&name) {
                    next.insert(name.clone(), old.clone());
                }
                errors.push(ResourceError { name, message });
            }
        }
    }
    *map = next;
    errors
}

impl ResourceSink for ConfigStore {
    fn apply(&self, t: TypeUrl, version: &str, resources: &[Any]) -> Vec<ResourceError> {
        let mut a = self.lock();
        let errors = match t {
            TypeUrl::Listener => merge(&mut a.listeners, version, resources, true, |raw| {
                let l: Listener = meshwork_xds::unpack(raw).map_err(|e| (String::new(), e))?;
                ListenerModel::compile(&l)
                    .map(|m| (l.name.clone(), Arc::new(m)))
                    .map_err(|e| (l.name.clone(), e))
            }),
            TypeUrl::Route => {
                let errors = merge(&mut a.routes, version, resources, false, |raw| {
                    let r: RouteConfiguration =
                        meshwork_xds::unpack(raw).map_err(|e| (String::new(), e))?;
                    RouteTable::compile(&r)
                        .map(|m| (r.name.clone(), Arc::new(m)))
                        .map_err(|e| (r.name.clone(), e))
                });
                let wanted = wanted_routes(&a);
                a.routes.retain(|k, _| wanted.contains(k));
                errors
            }
            TypeUrl::Cluster => {
                let endpoints = a.endpoints.clone();
                let before: Vec<Arc<ClusterState>> =
                    a.clusters.values().map(|e| e.value.clone()).collect();
                let errors = merge(&mut a.clusters, version, resources, true, |raw| {
                    let c: Cluster = meshwork_xds::unpack(raw).map_err(|e| (String::new(), e))?;
                    let model = ClusterModel::compile(&c).map_err(|e| (c.name.clone(), e))?;
                    let eds = match &model.discovery {
                        Discovery::Eds(s) => endpoints.get(s).map(|e| e.value.clone()),
                        _ => None,
                    };
                    let state =
                        Arc::new(ClusterState::new(model, eds.as_deref().map_or(&[], |v| v)));
                    state.pools.attach_tls(&state.model, self.mesh_tls.get());
                    Ok((c.name.clone(), state))
                });
                // New DNS clusters start resolving; kept ones already do.
                for e in a.clusters.values() {
                    let new = !before.iter().any(|b| Arc::ptr_eq(b, &e.value));
                    if new && e.value.model.discovery == Discovery::Dns {
                        spawn_dns_refresh(Arc::downgrade(&e.value));
                    }
                }
                errors
            }
            TypeUrl::Endpoint => {
                let errors = merge(&mut a.endpoints, version, resources, false, |raw| {
                    let la: ClusterLoadAssignment =
                        meshwork_xds::unpack(raw).map_err(|e| (String::new(), e))?;
                    compile_assignment(&la, false)
                        .map(|eps| (la.cluster_name.clone(), Arc::new(eps)))
                        .map_err(|e| (la.cluster_name.clone(), e))
                });
                let wanted = wanted_endpoints(&a);
                a.endpoints.retain(|k, _| wanted.contains(k));
                for c in a.clusters.values() {
                    if let Some(service) = c.value.eds_service()
                        && let Some(eps) = a.endpoints.get(service)
                    {
                        c.value.set_endpoints(&eps.value);
                    }
                }
                errors
            }
            // VHDS is not consumed yet: nothing to apply, nothing rejected.
            TypeUrl::VirtualHost => Vec::new(),
        };
        a.received.insert(t);
        self.publish(&a);
        errors
    }

    fn wanted(&self, t: TypeUrl) -> Vec<String> {
        let a = self.lock();
        match t {
            TypeUrl::Route => wanted_routes(&a),
            TypeUrl::Endpoint => wanted_endpoints(&a),
            TypeUrl::Listener | TypeUrl::Cluster | TypeUrl::VirtualHost => Vec::new(),
        }
    }
}

/// Re-resolves a DNS cluster's hostnames every 5 s while the cluster lives.
fn spawn_dns_refresh(cluster: Weak<ClusterState>) {
    tokio::spawn(async move {
        loop {
            let Some(state) = cluster.upgrade() else {
                return;
            };
            let mut resolved = Vec::new();
            for ep in &state.model.inline_endpoints {
                let Some((host, port)) = &ep.hostname else {
                    resolved.push(ep.clone());
                    continue;
                };
                match tokio::net::lookup_host((host.as_str(), *port)).await {
                    Ok(addrs) => resolved.extend(addrs.map(|address| EndpointModel {
                        address,
                        hostname: Some((host.clone(), *port)),
                        ..ep.clone()
                    })),
                    Err(e) => {
                        tracing::warn!(cluster = state.model.name, host, error = %e, "DNS resolution failed")
                    }
                }
            }
            state.set_endpoints(&resolved);
            drop(state);
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
}
