//! A state-of-the-world ADS server.
//!
//! It holds one resource set per type, each with its own version, and pushes
//! a type to a connected proxy when that proxy subscribes to it or when the
//! type's set changes. It records, per proxy and type, what was sent, what was
//! ACKed and the last NACK. The proxy's tests use it in-process; the control
//! plane builds on it.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use crate::TypeUrl;

/// The resources of one type and the version they carry.
#[derive(Clone, Debug, Default)]
pub struct TypeSet {
    /// Bumped on every change of this type.
    pub version: u64,
    /// Resources by name.
    pub resources: BTreeMap<String, Any>,
}

/// Everything the server serves.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// One set per type.
    pub types: BTreeMap<TypeUrl, TypeSet>,
}

/// What one proxy has of one type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeStatus {
    /// Version of the last response sent.
    pub sent_version: String,
    /// Version the proxy last ACKed.
    pub acked_version: String,
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
    /// Per-type progress.
    pub types: BTreeMap<TypeUrl, TypeStatus>,
}

/// A cheaply cloneable ADS server handle.
#[derive(Clone)]
pub struct AdsServer {
    snapshot: watch::Sender<Arc<Snapshot>>,
    nodes: Arc<Mutex<BTreeMap<String, NodeStatus>>>,
}

impl Default for AdsServer {
    fn default() -> Self {
        Self::new()
    }
}

impl AdsServer {
    /// An empty server.
    pub fn new() -> Self {
        AdsServer {
            snapshot: watch::Sender::new(Arc::new(Snapshot::default())),
            nodes: Arc::default(),
        }
    }

    /// Replaces every resource of type `t` and pushes the change.
    pub fn set(&self, t: TypeUrl, resources: impl IntoIterator<Item = (String, Any)>) {
        let resources: BTreeMap<String, Any> = resources.into_iter().collect();
        self.snapshot.send_modify(|snap| {
            let snap = Arc::make_mut(snap);
            let set = snap.types.entry(t).or_default();
            set.version += 1;
            set.resources = resources;
        });
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// What every proxy that ever connected has, by node id.
    pub fn nodes(&self) -> BTreeMap<String, NodeStatus> {
        self.nodes.lock().map(|n| n.clone()).unwrap_or_default()
    }

    /// The tonic service to mount on a server.
    pub fn service(&self) -> AggregatedDiscoveryServiceServer<AdsServer> {
        AggregatedDiscoveryServiceServer::new(self.clone()).max_decoding_message_size(16 << 20)
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
        if let Ok(mut nodes) = self.nodes.lock() {
            f(nodes.entry(node.to_string()).or_default());
        }
    }
}

/// Per-stream subscription of one type.
struct StreamSub {
    wildcard: bool,
    names: BTreeSet<String>,
    sent_version: Option<u64>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let server = self.clone();
        tokio::spawn(async move { server.run_stream(inbound, tx).await });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "incremental xDS is not served yet; use state-of-the-world ADS",
        ))
    }
}

impl AdsServer {
    async fn run_stream(
        &self,
        mut inbound: Streaming<DiscoveryRequest>,
        tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    ) {
        let mut snapshots = self.snapshot.subscribe();
        let mut subs: BTreeMap<TypeUrl, StreamSub> = BTreeMap::new();
        let mut node_id = String::new();
        let mut nonce: u64 = 0;
        loop {
            let mut to_send: Vec<TypeUrl> = Vec::new();
            tokio::select! {
                req = inbound.next() => {
                    let req = match req {
                        Some(Ok(r)) => r,
                        _ => break,
                    };
                    if let Some(node) = req.node.as_ref().filter(|_| node_id.is_empty()) {
                        node_id = node.id.clone();
                    }
                    let Some(t) = TypeUrl::parse(&req.type_url) else {
                        continue;
                    };
                    let wildcard = req.resource_names.iter().any(|n| n == "*")
                        || (req.resource_names.is_empty()
                            && t.is_wildcard_by_default()
                            && !subs.contains_key(&t));
                    let names: BTreeSet<String> =
                        req.resource_names.iter().filter(|n| *n != "*").cloned().collect();
                    let acked = !req.response_nonce.is_empty();
                    self.update_node(&node_id, |n| {
                        n.connected = true;
                        let st = n.types.entry(t).or_default();
                        st.names = names.iter().cloned().collect();
                        if acked {
                            match &req.error_detail {
                                Some(e) => st.nack = Some(e.message.clone()),
                                None => {
                                    st.acked_version = req.version_info.clone();
                                    st.nack = None;
                                }
                            }
                        }
                    });
                    match subs.get_mut(&t) {
                        Some(sub) => {
                            let keep_wildcard = sub.wildcard && req.resource_names.is_empty();
                            if sub.names != names || (sub.wildcard != (wildcard || keep_wildcard)) {
                                sub.names = names;
                                sub.wildcard = wildcard || keep_wildcard;
                                to_send.push(t);
                            }
                        }
                        None => {
                            subs.insert(t, StreamSub { wildcard, names, sent_version: None });
                            to_send.push(t);
                        }
                    }
                }
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let snap = snapshots.borrow_and_update().clone();
                    for (t, sub) in &subs {
                        let version = snap.types.get(t).map(|s| s.version).unwrap_or(0);
                        if sub.sent_version != Some(version) {
                            to_send.push(*t);
                        }
                    }
                }
            }
            let snap = self.snapshot.borrow().clone();
            for t in to_send {
                let Some(sub) = subs.get_mut(&t) else {
                    continue;
                };
                // A type never set is not known yet: say nothing rather than
                // claim it is empty (an empty answer completes a proxy's
                // initialization).
                let Some(set) = snap.types.get(&t) else {
                    continue;
                };
                let version = set.version;
                let resources: Vec<Any> = set
                    .resources
                    .iter()
                    .filter(|(name, _)| sub.wildcard || sub.names.contains(*name))
                    .map(|(_, r)| r.clone())
                    .collect();
                nonce += 1;
                sub.sent_version = Some(version);
                let response = DiscoveryResponse {
                    version_info: version.to_string(),
                    resources,
                    type_url: t.as_str().to_string(),
                    nonce: nonce.to_string(),
                    ..Default::default()
                };
                self.update_node(&node_id, |n| {
                    n.types.entry(t).or_default().sent_version = version.to_string();
                });
                if tx.send(Ok(response)).await.is_err() {
                    break;
                }
            }
        }
        self.update_node(&node_id, |n| n.connected = false);
    }
}
