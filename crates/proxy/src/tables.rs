//! The immutable configuration snapshot the data path reads: listeners,
//! route tables and cluster states, swapped atomically on every update.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use arc_swap::ArcSwap;

use crate::balance::{Endpoint, EndpointSet};
use crate::model::cluster::{ClusterModel, Discovery, EndpointModel};
use crate::model::listener::ListenerModel;
use crate::model::route::RouteTable;
use crate::upstream::ClusterPools;

/// A cluster with its live endpoints and connection pools. It survives
/// configuration updates that leave the cluster itself unchanged.
#[derive(Debug)]
pub struct ClusterState {
    /// The compiled cluster.
    pub model: ClusterModel,
    endpoints: ArcSwap<EndpointSet>,
    rr: AtomicUsize,
    /// Upstream HTTP pools.
    pub pools: ClusterPools,
}

impl ClusterState {
    /// A cluster state with its initial endpoints.
    pub fn new(model: ClusterModel, endpoints: &[EndpointModel]) -> Self {
        let pools = ClusterPools::new(&model);
        let initial = if model.inline_endpoints.is_empty() {
            endpoints
        } else {
            &model.inline_endpoints
        };
        ClusterState {
            endpoints: ArcSwap::from_pointee(EndpointSet::build(initial, None)),
            model,
            rr: AtomicUsize::new(0),
            pools,
        }
    }

    /// Replaces the endpoints, keeping counters of those that remain.
    pub fn set_endpoints(&self, models: &[EndpointModel]) {
        let previous = self.endpoints.load();
        self.endpoints
            .store(Arc::new(EndpointSet::build(models, Some(&previous))));
    }

    /// The current endpoints.
    pub fn endpoints(&self) -> Arc<EndpointSet> {
        self.endpoints.load_full()
    }

    /// The EDS service name, if the cluster uses EDS.
    pub fn eds_service(&self) -> Option<&str> {
        match &self.model.discovery {
            Discovery::Eds(s) => Some(s),
            _ => None,
        }
    }

    /// Chooses an endpoint. ORIGINAL_DST clusters go to the connection's
    /// original destination.
    pub fn pick(&self, original_dst: Option<SocketAddr>) -> Option<Arc<Endpoint>> {
        if self.model.discovery == Discovery::OriginalDst {
            return original_dst.map(|address| {
                Arc::new(Endpoint::new(EndpointModel {
                    address,
                    hostname: None,
                    weight: 1,
                    healthy: true,
                    workload: None,
                }))
            });
        }
        let set = self.endpoints.load();
        set.pick(self.model.lb, &self.rr, |n| rand::random_range(0..n.max(1)))
            .cloned()
    }
}

/// One consistent view of the whole configuration.
#[derive(Debug, Default)]
pub struct Tables {
    /// Listeners by name.
    pub listeners: BTreeMap<String, Arc<ListenerModel>>,
    /// Route tables by name.
    pub routes: HashMap<String, Arc<RouteTable>>,
    /// Clusters by name.
    pub clusters: HashMap<String, Arc<ClusterState>>,
}

impl Tables {
    /// The listener a `use_original_dst` listener hands a connection to:
    /// exact address first, then the wildcard address with the same port.
    pub fn listener_for(&self, dst: SocketAddr) -> Option<&Arc<ListenerModel>> {
        let exact = self
            .listeners
            .values()
            .find(|l| l.address == dst && !l.use_original_dst);
        exact.or_else(|| {
            self.listeners.values().find(|l| {
                l.address.port() == dst.port()
                    && l.address.ip().is_unspecified()
                    && l.address.is_ipv4() == dst.is_ipv4()
                    && !l.use_original_dst
            })
        })
    }
}

/// The shared, atomically swapped snapshot.
pub type SharedTables = Arc<ArcSwap<Tables>>;
