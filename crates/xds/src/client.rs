//! The proxy's ADS client (state of the world).
//!
//! One background task holds one bidirectional stream to the control plane.
//! It subscribes to clusters and listeners (wildcard), then to the endpoints
//! and routes the proxy says it needs. Each response goes to a
//! [`ResourceSink`], which validates every resource alone and applies the
//! valid ones; the client ACKs a clean update and NACKs one with a rejected
//! resource (keeping the last accepted version). On any stream error it
//! reconnects with exponential backoff and jitter, and the proxy keeps
//! serving with its last good configuration meanwhile.

use std::collections::BTreeMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::TypeUrl;

/// One resource the sink refused, with the reason sent back in the NACK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceError {
    /// The resource's name.
    pub name: String,
    /// What is wrong with it.
    pub message: String,
}

/// What the ADS client delivers resources to (the proxy's config store).
pub trait ResourceSink: Send + Sync + 'static {
    /// Applies a state-of-the-world update of one type. Every resource is
    /// validated alone: the valid ones apply, and one error is returned per
    /// rejected resource (which keeps its last good version, if any).
    fn apply(&self, type_url: TypeUrl, version: &str, resources: &[Any]) -> Vec<ResourceError>;

    /// Names the proxy currently needs of a non-wildcard type (routes named
    /// by listeners, endpoints of EDS clusters).
    fn wanted(&self, type_url: TypeUrl) -> Vec<String>;
}

/// How to reach the control plane and who this proxy is.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `http://host:port` (a bare `host:port` is accepted), or
    /// `unix:///path/to/socket` for a Unix domain socket (tonic's `Endpoint`
    /// connects to those itself; see `AdsServer::serve_unix`).
    pub address: String,
    /// The node identity sent on the first request of each stream.
    pub node: Node,
    /// First reconnect delay; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
}

impl ClientConfig {
    /// A config with Envoy-like backoff (0.5 s doubling to 30 s).
    pub fn new(address: impl Into<String>, node: Node) -> Self {
        ClientConfig {
            address: address.into(),
            node,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Per-type progress of the subscription, for admin pages and readiness.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeState {
    /// Last version accepted in full (ACKed).
    pub acked_version: String,
    /// Last version received, accepted or not.
    pub received_version: String,
    /// The last NACK's message, cleared by the next ACK.
    pub last_nack: Option<String>,
}

/// The client's view of its connection, published through a `watch`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStatus {
    /// Whether a stream is currently open.
    pub connected: bool,
    /// How many streams have been opened so far.
    pub connects: u64,
    /// The last connection or stream error.
    pub last_error: Option<String>,
    /// Progress per type.
    pub types: BTreeMap<TypeUrl, TypeState>,
}

/// A running ADS client task.
pub struct AdsClient {
    status: watch::Receiver<ClientStatus>,
    cancel: CancellationToken,
}

impl AdsClient {
    /// Starts the background task that keeps a stream open to `config.address`
    /// and feeds `sink` until [`AdsClient::shutdown`] or drop.
    pub fn spawn<S: ResourceSink>(config: ClientConfig, sink: std::sync::Arc<S>) -> AdsClient {
        let (status_tx, status) = watch::channel(ClientStatus::default());
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = run(config, sink, status_tx) => {}
            }
        });
        AdsClient { status, cancel }
    }

    /// A receiver of the client's status.
    pub fn status(&self) -> watch::Receiver<ClientStatus> {
        self.status.clone()
    }

    /// Stops the client task.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}

impl Drop for AdsClient {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn run<S: ResourceSink>(
    config: ClientConfig,
    sink: std::sync::Arc<S>,
    status: watch::Sender<ClientStatus>,
) {
    let address = if config.address.contains("://") {
        config.address.clone()
    } else {
        format!("http://{}", config.address)
    };
    let mut backoff = config.initial_backoff;
    // Versions survive reconnects so the server knows what we already have.
    let mut versions: BTreeMap<TypeUrl, String> = BTreeMap::new();
    loop {
        let result = stream_once(&address, &config.node, &*sink, &status, &mut versions).await;
        let received_any = match result {
            Ok(received) => {
                status.send_modify(|s| {
                    s.connected = false;
                    s.last_error = Some("stream closed by control plane".into());
                });
                received
            }
            Err((received, e)) => {
                tracing::warn!(address, error = %e, "xDS stream failed");
                status.send_modify(|s| {
                    s.connected = false;
                    s.last_error = Some(e);
                });
                received
            }
        };
        if received_any {
            backoff = config.initial_backoff;
        }
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(config.max_backoff);
    }
}

/// Full jitter in [backoff/2, backoff].
fn jittered(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// Subscription state of one type on the current stream.
#[derive(Default)]
struct Sub {
    nonce: String,
    names: Vec<String>,
    sent: bool,
}

/// Runs one stream until it ends. Returns whether any response arrived.
async fn stream_once<S: ResourceSink>(
    address: &str,
    node: &Node,
    sink: &S,
    status: &watch::Sender<ClientStatus>,
    versions: &mut BTreeMap<TypeUrl, String>,
) -> Result<bool, (bool, String)> {
    let endpoint = tonic::transport::Endpoint::from_shared(address.to_string())
        .map_err(|e| (false, format!("bad xDS address {address}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| (false, format!("connect {address}: {e}")))?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
    let mut subs: BTreeMap<TypeUrl, Sub> = BTreeMap::new();
    let mut first = true;

    // Wildcard subscriptions first; named ones follow as the sink asks.
    for t in [TypeUrl::Cluster, TypeUrl::Listener] {
        let sub = subs.entry(t).or_default();
        send(&tx, request(t, versions, sub, node, &mut first, None)).await?;
        sub.sent = true;
    }
    let mut inbound = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|e| (false, format!("open ADS stream: {e}")))?
        .into_inner();
    status.send_modify(|s| {
        s.connected = true;
        s.connects += 1;
        s.last_error = None;
    });
    tracing::info!(address, "xDS stream open");
    let mut received = false;
    loop {
        let response: DiscoveryResponse = match inbound.next().await {
            None => return Ok(received),
            Some(Err(e)) => return Err((received, format!("ADS stream: {e}"))),
            Some(Ok(r)) => r,
        };
        received = true;
        let Some(t) = TypeUrl::parse(&response.type_url) else {
            tracing::warn!(
                type_url = response.type_url,
                "ignoring unsupported xDS type"
            );
            continue;
        };
        let errors = sink.apply(t, &response.version_info, &response.resources);
        let sub = subs.entry(t).or_default();
        sub.nonce = response.nonce.clone();
        let detail = if errors.is_empty() {
            versions.insert(t, response.version_info.clone());
            None
        } else {
            let message = errors
                .iter()
                .map(|e| format!("{}: {}", e.name, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            tracing::warn!(%t, version = response.version_info, %message, "NACK");
            Some(message)
        };
        status.send_modify(|s| {
            let st = s.types.entry(t).or_default();
            st.received_version = response.version_info.clone();
            match &detail {
                None => {
                    st.acked_version = response.version_info.clone();
                    st.last_nack = None;
                }
                Some(m) => st.last_nack = Some(m.clone()),
            }
        });
        send(&tx, request(t, versions, sub, node, &mut first, detail)).await?;

        // The update may change which routes and endpoints we need.
        for named in [TypeUrl::Endpoint, TypeUrl::Route] {
            let mut wanted = sink.wanted(named);
            wanted.sort();
            wanted.dedup();
            let sub = subs.entry(named).or_default();
            if sub.sent && sub.names == wanted {
                continue;
            }
            if !sub.sent && wanted.is_empty() {
                continue;
            }
            sub.names = wanted;
            sub.sent = true;
            send(&tx, request(named, versions, sub, node, &mut first, None)).await?;
        }
    }
}

fn request(
    t: TypeUrl,
    versions: &BTreeMap<TypeUrl, String>,
    sub: &Sub,
    node: &Node,
    first: &mut bool,
    nack: Option<String>,
) -> DiscoveryRequest {
    let node = std::mem::take(first).then(|| node.clone());
    DiscoveryRequest {
        version_info: versions.get(&t).cloned().unwrap_or_default(),
        node,
        resource_names: sub.names.clone(),
        type_url: t.as_str().to_string(),
        response_nonce: sub.nonce.clone(),
        error_detail: nack.map(|message| Status {
            code: tonic::Code::InvalidArgument as i32,
            message,
            details: vec![],
        }),
        ..Default::default()
    }
}

async fn send(
    tx: &mpsc::Sender<DiscoveryRequest>,
    req: DiscoveryRequest,
) -> Result<(), (bool, String)> {
    tx.send(req)
        .await
        .map_err(|_| (true, "ADS request stream closed".to_string()))
}
