//! The proxy's configuration store: the xDS [`ResourceSink`].
//!
//! Each resource is decoded and compiled alone. A bad one is rejected (the
//! ADS client NACKs it) and keeps its last good version; the good ones apply.
//! After every update the store publishes a new [`Tables`] snapshot and
//! recomputes readiness: the proxy is ready once it has listeners, clusters,
//! every route configuration its listeners name (with, for VHDS, its first
//! virtual hosts) and the endpoints of every EDS cluster.
//!
//! Updates come whole per type (state of the world: a listener or cluster
//! missing from the update is gone) or as deltas (named resources added,
//! changed or removed, each with its own version).

mod routes;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::google::protobuf::Any;
use meshwork_xds::TypeUrl;
use meshwork_xds::client::{DeltaUpdate, ResourceError, ResourceSink};
use tokio::sync::watch;

use crate::model::cluster::{ClusterModel, Discovery, EndpointModel, compile_assignment};
use crate::model::listener::ListenerModel;
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
    routes: routes::Routes,
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
            TypeUrl::Route => list(a.routes.configs()),
            TypeUrl::Cluster => list(&a.clusters),
            TypeUrl::Endpoint => list(&a.endpoints),
            TypeUrl::VirtualHost => list(a.routes.vhosts()),
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
                .tables()
                .iter()
                .map(|(k, t)| (k.clone(), t.clone()))
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
            && wanted_routes(a)
                .iter()
                .all(|r| a.routes.tables().contains_key(r))
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

/// One update of one type, as it came.
#[derive(Clone, Copy)]
enum Batch<'a> {
    /// State of the world: every resource of the type (for wildcard types).
    Sotw {
        version: &'a str,
        resources: &'a [Any],
    },
    /// Delta: resources added or changed, names removed.
    Delta(DeltaUpdate<'a>),
}

/// Merges one update into `map` (see [`merge`] and [`merge_delta`]).
fn merge_batch<T: Clone>(
    map: &mut BTreeMap<String, Entry<T>>,
    batch: Batch<'_>,
    replace_all: bool,
    compile: impl FnMut(&Any) -> Result<(String, T), (String, String)>,
) -> Vec<ResourceError> {
    match batch {
        Batch::Sotw { version, resources } => merge(map, version, resources, replace_all, compile),
        Batch::Delta(update) => merge_delta(map, update, compile),
    }
}

/// Merges one state-of-the-world update into `map`. For wildcard types
/// (`replace_all`) names missing from the update are removed; a rejected
/// resource keeps its last good version either way.
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

/// Merges one delta update into `map`: removed names go, each resource is
/// compiled alone (an unchanged one keeps its compiled value and live
/// state without compiling again) and must carry the name it is sent
/// under; a rejected one keeps its last good version.
fn merge_delta<T: Clone>(
    map: &mut BTreeMap<String, Entry<T>>,
    update: DeltaUpdate<'_>,
    mut compile: impl FnMut(&Any) -> Result<(String, T), (String, String)>,
) -> Vec<ResourceError> {
    let mut errors = Vec::new();
    for name in update.removed {
        map.remove(name);
    }
    for r in update.resources {
        if let Some(p) = map.get_mut(&r.name)
            && p.raw == r.resource
        {
            p.version = r.version.clone();
            continue;
        }
        let message = match compile(&r.resource) {
            Ok((name, value)) if name == r.name => {
                let entry = Entry {
                    raw: r.resource.clone(),
                    value,
                    version: r.version.clone(),
                };
                map.insert(name, entry);
                continue;
            }
            Ok((name, _)) => format!("sent as {:?} but named {name:?}", r.name),
            Err((_, message)) => message,
        };
        errors.push(ResourceError {
            name: r.name.clone(),
            message,
        });
    }
    errors
}

impl ConfigStore {
    /// Applies one update of type `t` and publishes the result.
    fn apply_batch(&self, t: TypeUrl, batch: Batch<'_>) -> Vec<ResourceError> {
        let mut a = self.lock();
        let errors = match t {
            TypeUrl::Listener => merge_batch(&mut a.listeners, batch, true, |raw| {
                let l: Listener = meshwork_xds::unpack(raw).map_err(|e| (String::new(), e))?;
                ListenerModel::compile(&l)
                    .map(|m| (l.name.clone(), Arc::new(m)))
                    .map_err(|e| (l.name.clone(), e))
            }),
            TypeUrl::Route => {
                let wanted = wanted_routes(&a);
                a.routes.apply_configs(batch, &wanted)
            }
            TypeUrl::VirtualHost => match batch {
                Batch::Delta(update) => {
                    let wanted = wanted_routes(&a);
                    a.routes.apply_vhosts(update, &wanted)
                }
                Batch::Sotw { resources, .. } => resources
                    .iter()
                    .map(|_| ResourceError {
                        name: String::new(),
                        message: "VHDS needs delta xDS".into(),
                    })
                    .collect(),
            },
            TypeUrl::Cluster => {
                let endpoints = a.endpoints.clone();
                let before: Vec<Arc<ClusterState>> =
                    a.clusters.values().map(|e| e.value.clone()).collect();
                let errors = merge_batch(&mut a.clusters, batch, true, |raw| {
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
                let errors = merge_batch(&mut a.endpoints, batch, false, |raw| {
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
        };
        if matches!(t, TypeUrl::Listener) {
            // Listeners name the routes we need: drop the others.
            let wanted = wanted_routes(&a);
            a.routes.apply_configs(
                Batch::Delta(DeltaUpdate {
                    resources: &[],
                    removed: &[],
                    subscribed: &[],
                }),
                &wanted,
            );
        }
        a.received.insert(t);
        self.publish(&a);
        errors
    }
}

impl ResourceSink for ConfigStore {
    fn apply(&self, t: TypeUrl, version: &str, resources: &[Any]) -> Vec<ResourceError> {
        self.apply_batch(t, Batch::Sotw { version, resources })
    }

    fn apply_delta(&self, t: TypeUrl, update: DeltaUpdate<'_>) -> Vec<ResourceError> {
        self.apply_batch(t, Batch::Delta(update))
    }

    fn versions(&self, t: TypeUrl) -> Vec<(String, String)> {
        self.raw(t)
            .into_iter()
            .map(|(name, version, _)| (name, version))
            .collect()
    }

    fn wanted(&self, t: TypeUrl) -> Vec<String> {
        let a = self.lock();
        match t {
            TypeUrl::Route => wanted_routes(&a),
            TypeUrl::Endpoint => wanted_endpoints(&a),
            TypeUrl::VirtualHost => a.routes.vhds_names(),
            TypeUrl::Listener | TypeUrl::Cluster => Vec::new(),
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
