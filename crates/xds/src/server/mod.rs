//! The ADS server: state of the world and delta (incremental) xDS.
//!
//! Each proxy's resources come from a [`ResourceSource`] (the control plane
//! generates them per proxy; [`AdsServer::new`] serves one shared set that
//! tests and simple setups fill with [`AdsServer::set`]). After every change
//! the server recomputes a connected proxy's resources and pushes only what
//! changed: in state-of-the-world, the types whose content changed; in delta,
//! the resources that changed and the names removed. Versions are content
//! hashes, so they survive a control-plane restart. Per proxy and type it
//! records what was sent, ACKed and NACKed, and when.
//!
//! Sources hand out each type's resources as a shared [`TypeResources`]
//! (one per class of identical proxies, with its version precomputed); a
//! stream skips a type whose set is the one it saw last, and a changed set
//! is encoded once for every proxy that gets it whole ([`AdsService`]).

mod delta;
mod delta_set;
mod gzip;
mod metrics;
mod resources;
mod sotw;
mod wire;

pub use metrics::{ServerMetrics, TypeLabel};
pub use resources::{TypeResources, set_version};
pub use wire::AdsService;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use crate::TypeUrl;

/// One resource with its content version. The resource is shared: many
/// proxies usually get the very same bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned {
    /// The resource.
    pub any: Arc<Any>,
    /// A hash of its content.
    pub version: String,
}

impl Versioned {
    /// Wraps a resource, computing its version.
    pub fn new(any: Any) -> Self {
        Self::shared(Arc::new(any))
    }

    /// Wraps a shared resource, computing its version.
    pub fn shared(any: Arc<Any>) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        any.type_url.hash(&mut h);
        any.value.hash(&mut h);
        Versioned {
            version: format!("{:016x}", h.finish()),
            any,
        }
    }
}

/// Every resource one proxy should have, by type. Sets are shared between
/// proxies with the same configuration; a missing type is an empty set.
pub type NodeResources = BTreeMap<TypeUrl, Arc<TypeResources>>;

/// Where the server gets each proxy's resources.
pub trait ResourceSource: Send + Sync + 'static {
    /// The resources for this node now.
    fn resources(&self, node: &Node) -> Arc<NodeResources>;
    /// Changes whenever resources may have changed; the value is a
    /// generation counter.
    fn changes(&self) -> watch::Receiver<u64>;

    /// When the change that produced `generation` began (e.g. the first
    /// config file event of a debounce window), so convergence time counts
    /// from there as istiod's does. `None`: from when the server sees it.
    fn change_started(&self, _generation: u64) -> Option<Instant> {
        None
    }
}

/// One shared resource set for every node (tests, simple setups).
#[derive(Default)]
pub struct StaticSource {
    set: Mutex<Arc<NodeResources>>,
    known: Mutex<BTreeSet<TypeUrl>>,
    changes: watch::Sender<u64>,
}

impl ResourceSource for StaticSource {
    fn resources(&self, _node: &Node) -> Arc<NodeResources> {
        self.set.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// What one proxy has of one type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeStatus {
    /// Version of the last response sent.
    pub sent_version: String,
    /// When it was sent.
    pub sent_at: Option<SystemTime>,
    /// Version the proxy last ACKed.
    pub acked_version: String,
    /// When.
    pub acked_at: Option<SystemTime>,
    /// The last NACK's message, cleared by the next ACK.
    pub nack: Option<String>,
    /// Names subscribed (empty for wildcard).
    pub names: Vec<String>,
}

/// What the server knows of one proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// Whether its stream is open.
    pub connected: bool,
    /// Whether it uses delta xDS.
    pub delta: bool,
    /// When its current (or last) stream opened.
    pub connected_at: Option<SystemTime>,
    /// Per-type progress.
    pub types: BTreeMap<TypeUrl, TypeStatus>,
}

/// A cheaply cloneable ADS server handle.
#[derive(Clone)]
pub struct AdsServer {
    source: Arc<dyn ResourceSource>,
    statics: Option<Arc<StaticSource>>,
    nodes: Arc<Mutex<BTreeMap<String, NodeStatus>>>,
    metrics: ServerMetrics,
}

impl Default for AdsServer {
    fn default() -> Self {
        Self::new()
    }
}

impl AdsServer {
    /// A server of one shared resource set, filled with [`AdsServer::set`].
    pub fn new() -> Self {
        let statics = Arc::new(StaticSource::default());
        AdsServer {
            source: statics.clone(),
            statics: Some(statics),
            nodes: Arc::default(),
            metrics: ServerMetrics::default(),
        }
    }

    /// A server whose resources come from `source` (the control plane).
    pub fn with_source(source: Arc<dyn ResourceSource>, metrics: ServerMetrics) -> Self {
        AdsServer {
            source,
            statics: None,
            nodes: Arc::default(),
            metrics,
        }
    }

    /// Replaces every resource of type `t` in the shared set and pushes the
    /// change. Only for servers made with [`AdsServer::new`]. A type never
    /// set is not served at all (proxies wait for it).
    pub fn set(&self, t: TypeUrl, resources: impl IntoIterator<Item = (String, Any)>) {
        let Some(statics) = &self.statics else {
            return;
        };
        let versioned: BTreeMap<String, Versioned> = resources
            .into_iter()
            .map(|(name, any)| (name, Versioned::new(any)))
            .collect();
        if let Ok(mut set) = statics.set.lock() {
            let mut next = (**set).clone();
            next.insert(t, Arc::new(TypeResources::new(t, versioned)));
            *set = Arc::new(next);
        }
        if let Ok(mut known) = statics.known.lock() {
            known.insert(t);
        }
        statics.changes.send_modify(|g| *g += 1);
    }

    /// What every proxy that ever connected has, by node id.
    pub fn nodes(&self) -> BTreeMap<String, NodeStatus> {
        self.nodes.lock().map(|n| n.clone()).unwrap_or_default()
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &ServerMetrics {
        &self.metrics
    }

    /// The gRPC service to mount on a tonic server: state of the world
    /// with shared pre-encoded responses, delta through tonic.
    pub fn service(&self) -> AdsService {
        AdsService::new(self.clone())
    }

    /// Serves ADS on an already bound listener until the future is dropped.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
    ) -> Result<(), tonic::transport::Error> {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tonic::transport::Server::builder()
            .add_service(self.service())
            .serve_with_incoming(incoming)
            .await
    }

    /// Serves ADS on a bound Unix domain socket until the future is dropped,
    /// as pilot-agent serves Envoy's xDS on `./etc/istio/proxy/XDS`. Clients
    /// reach it as `unix:///path/to/socket`.
    pub async fn serve_unix(
        self,
        listener: tokio::net::UnixListener,
    ) -> Result<(), tonic::transport::Error> {
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        tonic::transport::Server::builder()
            .add_service(self.service())
            .serve_with_incoming(incoming)
            .await
    }

    fn update_node(&self, node: &str, f: impl FnOnce(&mut NodeStatus)) {
        if node.is_empty() {
            return;
        }
        if let Ok(mut nodes) = self.nodes.lock() {
            f(nodes.entry(node.to_string()).or_default());
        }
    }

    /// Whether `t` may be served: always with a source, and for the shared
    /// set only once it was set.
    fn serves(&self, t: TypeUrl) -> bool {
        match &self.statics {
            None => true,
            Some(s) => s.known.lock().map(|k| k.contains(&t)).unwrap_or(false),
        }
    }

    /// Records a request's ACK or NACK. Returns the NACK message, if any.
    fn record_ack(&self, node: &str, t: TypeUrl, version: &str, nack: Option<&str>) {
        self.update_node(node, |n| {
            let st = n.types.entry(t).or_default();
            match nack {
                Some(m) => st.nack = Some(m.to_string()),
                None => {
                    st.acked_version = version.to_string();
                    st.acked_at = Some(SystemTime::now());
                    st.nack = None;
                }
            }
        });
        if let Some(m) = nack {
            self.metrics.nacks.inc();
            tracing::warn!(node, %t, version, message = m, "proxy rejected configuration (NACK)");
        }
    }

    fn record_sent(&self, node: &str, t: TypeUrl, version: &str, names: &BTreeSet<String>) {
        self.update_node(node, |n| {
            let st = n.types.entry(t).or_default();
            st.sent_version = version.to_string();
            st.sent_at = Some(SystemTime::now());
            st.names = names.iter().cloned().collect();
        });
    }
}

impl AdsServer {
    /// Takes the node from a stream's first request and records the
    /// connection. Without a node the stream is refused (`None`).
    async fn first_node<R>(
        &self,
        node: Option<&Node>,
        delta: bool,
        tx: &mpsc::Sender<Result<R, Status>>,
    ) -> Option<Node> {
        let Some(node) = node else {
            let _ = tx
                .send(Err(Status::invalid_argument(
                    "the first request must carry the node",
                )))
                .await;
            return None;
        };
        self.update_node(&node.id, |s| {
            s.connected = true;
            s.delta = delta;
            s.connected_at = Some(SystemTime::now());
        });
        tracing::info!(node = node.id, delta, "proxy connected");
        Some(node.clone())
    }

    /// Records the end of a stream.
    fn disconnected(&self, node_id: &str) {
        self.metrics.connected.dec();
        self.update_node(node_id, |n| n.connected = false);
        if !node_id.is_empty() {
            tracing::info!(node = node_id, "proxy disconnected");
        }
    }

    /// When the change seen as `generation` began.
    fn change_time(&self, generation: u64) -> Instant {
        self.source
            .change_started(generation)
            .unwrap_or_else(Instant::now)
    }

    /// Observes the convergence time when `nonce` ACKs the pending push.
    fn converged(&self, pending: &mut Option<Pending>, nonce: &str, nack: bool) {
        if let Some(p) = *pending
            && !nack
            && nonce == p.nonce.to_string()
        {
            self.metrics
                .convergence
                .observe(p.since.elapsed().as_secs_f64());
            *pending = None;
        }
    }
}

/// A change waiting for the proxy's ACK, to measure convergence.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pending {
    nonce: u64,
    since: Instant,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    /// Served when the plain generated service is mounted; [`AdsService`]
    /// (what [`AdsServer::service`] returns) sends the same responses
    /// without decoding and re-encoding them per stream.
    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let server = self.clone();
        tokio::spawn(async move { sotw::run(server, inbound, tx, false).await });
        let decoded = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|out| out.and_then(|o| o.decode::<DiscoveryResponse>()));
        Ok(Response::new(Box::pin(decoded)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let server = self.clone();
        tokio::spawn(async move { delta::run(server, inbound, tx, false).await });
        let decoded = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|out| out.and_then(|o| o.decode::<DeltaDiscoveryResponse>()));
        Ok(Response::new(Box::pin(decoded)))
    }
}
