//! The immutable configuration snapshot the data path reads: listeners,
//! route tables and cluster states, swapped atomically on every update.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::balance::{BalanceConfig, Endpoint, EndpointSet};
use crate::circuit::Breakers;
use crate::model::cluster::{ClusterModel, Discovery, EndpointModel};
use crate::model::listener::ListenerModel;
use crate::model::route::RouteTable;
use crate::outlier::{self, Outcome};
use crate::upstream::ClusterPools;

/// A cluster with its live endpoints and connection pools. It survives
/// configuration updates that leave the cluster itself unchanged.
#[derive(Debug)]
pub struct ClusterState {
    /// The compiled cluster.
    pub model: ClusterModel,
    endpoints: ArcSwap<EndpointSet>,
    rr: AtomicUsize,
    balance: BalanceConfig,
    /// Circuit breakers.
    pub breakers: Arc<Breakers>,
    sweeping: AtomicBool,
    /// Upstream HTTP pools.
    pub pools: ClusterPools,
}

impl ClusterState {
    /// A cluster state with its initial endpoints.
    pub fn new(model: ClusterModel, endpoints: &[EndpointModel]) -> Self {
        let breakers = Breakers::new(model.policy.limits.clone());
        let pools = ClusterPools::new(&model, breakers.clone());
        let initial = if model.inline_endpoints.is_empty() {
            endpoints
        } else {
            &model.inline_endpoints
        };
        let balance = BalanceConfig::of(&model);
        ClusterState {
            endpoints: ArcSwap::from_pointee(EndpointSet::build(initial, None, &balance)),
            model,
            rr: AtomicUsize::new(0),
            balance,
            breakers,
            sweeping: AtomicBool::new(false),
            pools,
        }
    }

    /// Replaces the endpoints, keeping the live state of those that remain.
    pub fn set_endpoints(&self, models: &[EndpointModel]) {
        let previous = self.endpoints.load();
        self.endpoints.store(Arc::new(EndpointSet::build(
            models,
            Some(&previous),
            &self.balance,
        )));
    }

    /// Feeds outlier detection with what came of a request to `endpoint`;
    /// it may eject the endpoint (and starts the ejection sweeps).
    pub fn record(self: &Arc<Self>, endpoint: &Endpoint, outcome: Outcome) {
        let Some(cfg) = &self.model.policy.outlier else {
            return;
        };
        if !endpoint.outlier.record(cfg, outcome) {
            return;
        }
        let set = self.endpoints.load_full();
        let Some(i) = set
            .all
            .iter()
            .position(|e| std::ptr::eq(Arc::as_ptr(e), endpoint))
        else {
            return;
        };
        if outlier::try_eject(cfg, &set, i, Instant::now()) {
            tracing::info!(cluster = self.model.name, endpoint = %endpoint.address(), "outlier ejected");
            self.endpoints.store(Arc::new(set.rebuild(&self.balance)));
            self.start_sweeps();
        }
    }

    /// [`record`](Self::record) for an attempt's result (`None`: it timed
    /// out); breaker refusals say nothing about the endpoint.
    pub fn record_result<B>(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        result: Option<&Result<http::Response<B>, crate::upstream::UpstreamError>>,
    ) {
        let outcome = match result {
            Some(Ok(r)) => Outcome::Status(r.status().as_u16()),
            Some(Err(crate::upstream::UpstreamError::Overflow(_))) => return,
            Some(Err(_)) | None => Outcome::LocalFailure,
        };
        self.record(endpoint, outcome);
    }

    /// Runs the outlier sweep every interval while some endpoint is ejected
    /// or carries an ejection multiplier, and the cluster lives.
    fn start_sweeps(self: &Arc<Self>) {
        let Some(cfg) = self.model.policy.outlier.clone() else {
            return;
        };
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(cfg.interval).await;
                let Some(cluster) = weak.upgrade() else {
                    return;
                };
                let set = cluster.endpoints.load_full();
                if outlier::sweep(&cfg, &set, Instant::now()) {
                    tracing::info!(
                        cluster = cluster.model.name,
                        "outlier sweep returned endpoints"
                    );
                    cluster
                        .endpoints
                        .store(Arc::new(set.rebuild(&cluster.balance)));
                }
                if !outlier::active(&cluster.endpoints.load()) {
                    cluster.sweeping.store(false, Ordering::Release);
                    return;
                }
            }
        });
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
        self.pick_hashed(original_dst, None)
    }

    /// Chooses an endpoint for a request with this hash (from the route's
    /// hash policy); the hash balancers pick at random without one.
    pub fn pick_hashed(
        &self,
        original_dst: Option<SocketAddr>,
        hash: Option<u64>,
    ) -> Option<Arc<Endpoint>> {
        if self.model.discovery == Discovery::OriginalDst {
            return original_dst.map(|address| {
                Arc::new(Endpoint::new(EndpointModel {
                    address,
                    hostname: None,
                    weight: 1,
                    healthy: true,
                    workload: None,
                    locality: String::new(),
                    locality_weight: 1,
                    priority: 0,
                    transport_match: Default::default(),
                }))
            });
        }
        let set = self.endpoints.load();
        set.pick(&self.balance, &self.rr, hash, |n| {
            rand::random_range(0..n.max(1))
        })
        .cloned()
    }
}

/// One consistent view of the whole configuration.
#[derive(Debug, Default)]
pub struct Tables {
    /// Listeners by name.
    pub listeners: BTreeMap<String, Arc<ListenerModel>>,
    /// Route tables by name (foldhash: looked up on every request).
    pub routes: foldhash::HashMap<String, Arc<RouteTable>>,
    /// Clusters by name (foldhash: looked up on every request).
    pub clusters: foldhash::HashMap<String, Arc<ClusterState>>,
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
