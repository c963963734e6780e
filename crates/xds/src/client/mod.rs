//! The proxy's ADS client, state of the world ([`sotw`]) or delta
//! ([`delta`], incremental, with VHDS).
//!
//! One background task holds one bidirectional stream to the control plane.
//! It subscribes to clusters and listeners (wildcard), then to the endpoints,
//! routes and (delta only) VHDS virtual hosts the proxy says it needs. Each
//! response goes to a [`ResourceSink`], which validates every resource alone
//! and applies the valid ones; the client ACKs a clean update and NACKs one
//! with a rejected resource (keeping the last accepted version). On any
//! stream error it reconnects with exponential backoff and jitter, and the
//! proxy keeps serving with its last good configuration meanwhile.

mod delta;
mod sotw;

use std::collections::BTreeMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::Any;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::TypeUrl;

/// One resource the sink refused, with the reason sent back in the NACK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceError {
    /// The resource's name.
    pub name: String,
    /// What is wrong with it.
    pub message: String,
}

/// One resource of a delta response: its xDS name, its version and its body.
#[derive(Clone, Debug, PartialEq)]
pub struct DeltaResource {
    /// The name the server tracks it by (for VHDS
    /// `<route configuration name>/<virtual host name>`).
    pub name: String,
    /// Its version (a content hash with Meshwork's control plane).
    pub version: String,
    /// The resource.
    pub resource: Any,
}

/// One delta response of one type, as the sink sees it.
#[derive(Clone, Copy, Debug)]
pub struct DeltaUpdate<'a> {
    /// Added or changed resources.
    pub resources: &'a [DeltaResource],
    /// Names of resources that are gone.
    pub removed: &'a [String],
    /// For named types, every name this stream had subscribed to when the
    /// response arrived: their first response is in (VHDS warming).
    pub subscribed: &'a [String],
}

/// What the ADS client delivers resources to (the proxy's config store).
pub trait ResourceSink: Send + Sync + 'static {
    /// Applies a state-of-the-world update of one type. Every resource is
    /// validated alone: the valid ones apply, and one error is returned per
    /// rejected resource (which keeps its last good version, if any).
    fn apply(&self, type_url: TypeUrl, version: &str, resources: &[Any]) -> Vec<ResourceError>;

    /// Names the proxy currently needs of a non-wildcard type (routes named
    /// by listeners, endpoints of EDS clusters, and for VHDS the route
    /// configurations whose virtual hosts come separately).
    fn wanted(&self, type_url: TypeUrl) -> Vec<String>;

    /// Applies a delta update of one type: each resource validated alone,
    /// the valid ones added or replaced, the removed names dropped. The
    /// default refuses everything (a sink that only speaks SotW).
    fn apply_delta(&self, type_url: TypeUrl, update: DeltaUpdate<'_>) -> Vec<ResourceError> {
        let _ = type_url;
        update
            .resources
            .iter()
            .map(|r| ResourceError {
                name: r.name.clone(),
                message: "this client does not accept delta xDS".into(),
            })
            .collect()
    }

    /// The accepted resources of a type as (name, version), sent as
    /// `initial_resource_versions` when a delta stream (re)opens so the
    /// server sends only what changed meanwhile.
    fn versions(&self, type_url: TypeUrl) -> Vec<(String, String)> {
        let _ = type_url;
        Vec::new()
    }
}

/// Which form of ADS the client speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// State of the world (`StreamAggregatedResources`).
    #[default]
    Sotw,
    /// Delta / incremental (`DeltaAggregatedResources`), with VHDS.
    Delta,
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "sotw" | "state-of-the-world" => Ok(Protocol::Sotw),
            "delta" | "incremental" => Ok(Protocol::Delta),
            _ => Err(format!("unknown xDS protocol {s:?} (sotw or delta)")),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Sotw => "sotw",
            Protocol::Delta => "delta",
        })
    }
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
    /// State of the world or delta.
    pub protocol: Protocol,
}

impl ClientConfig {
    /// A SotW config with Envoy-like backoff (0.5 s doubling to 30 s).
    pub fn new(address: impl Into<String>, node: Node) -> Self {
        ClientConfig {
            address: address.into(),
            node,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            protocol: Protocol::Sotw,
        }
    }

    /// The same config speaking `protocol`.
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }
}

/// Per-type progress of the subscription, for admin pages and readiness.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeState {
    /// Last version accepted in full (ACKed); in delta the response's
    /// `system_version_info`.
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
    /// The protocol spoken.
    pub protocol: Protocol,
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
        let (status_tx, status) = watch::channel(ClientStatus {
            protocol: config.protocol,
            ..Default::default()
        });
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

/// How one stream ended: whether any response arrived (which resets the
/// backoff), and the error if it failed.
type StreamEnd = Result<bool, (bool, String)>;

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
    // SotW versions survive reconnects so the server knows what we have
    // (delta asks the sink for its resources' versions instead).
    let mut versions: BTreeMap<TypeUrl, String> = BTreeMap::new();
    loop {
        let result = match connect(&address).await {
            Err(e) => Err((false, e)),
            Ok(client) => match config.protocol {
                Protocol::Sotw => {
                    sotw::stream_once(
                        client,
                        &address,
                        &config.node,
                        &*sink,
                        &status,
                        &mut versions,
                    )
                    .await
                }
                Protocol::Delta => {
                    delta::stream_once(client, &address, &config.node, &*sink, &status).await
                }
            },
        };
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

/// Opens the gRPC channel (HTTP/2, keep-alive, gzip accepted).
async fn connect(address: &str) -> Result<AggregatedDiscoveryServiceClient<Channel>, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(address.to_string())
        .map_err(|e| format!("bad xDS address {address}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect {address}: {e}"))?;
    Ok(AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip))
}

/// Joins a sink's errors into one NACK message (`name: reason; …`).
fn nack_message(errors: &[ResourceError]) -> Option<String> {
    (!errors.is_empty()).then(|| {
        errors
            .iter()
            .map(|e| format!("{}: {}", e.name, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Records a response's version and the ACK or NACK in the status.
fn record(status: &watch::Sender<ClientStatus>, t: TypeUrl, version: &str, nack: Option<&str>) {
    status.send_modify(|s| {
        let st = s.types.entry(t).or_default();
        st.received_version = version.to_string();
        match nack {
            None => {
                st.acked_version = version.to_string();
                st.last_nack = None;
            }
            Some(m) => st.last_nack = Some(m.to_string()),
        }
    });
}

/// Marks a stream open in the status.
fn opened(status: &watch::Sender<ClientStatus>, address: &str) {
    status.send_modify(|s| {
        s.connected = true;
        s.connects += 1;
        s.last_error = None;
    });
    tracing::info!(address, "xDS stream open");
}

/// The next response of an ADS stream (either protocol) with its type;
/// `None` when the server ended the stream. Responses of types this client
/// does not know are logged and skipped. `received` turns true at the first
/// response, which resets the reconnect backoff.
async fn next_typed<R>(
    inbound: &mut tonic::Streaming<R>,
    received: &mut bool,
    stream: &str,
    type_url: impl Fn(&R) -> &str,
) -> Result<Option<(TypeUrl, R)>, (bool, String)> {
    use futures::StreamExt;
    loop {
        let response = match inbound.next().await {
            None => return Ok(None),
            Some(Err(e)) => return Err((*received, format!("{stream}: {e}"))),
            Some(Ok(r)) => r,
        };
        *received = true;
        match TypeUrl::parse(type_url(&response)) {
            Some(t) => return Ok(Some((t, response))),
            None => tracing::warn!(
                type_url = type_url(&response),
                "ignoring unsupported xDS type"
            ),
        }
    }
}

async fn send<T>(tx: &mpsc::Sender<T>, req: T) -> Result<(), (bool, String)> {
    tx.send(req)
        .await
        .map_err(|_| (true, "ADS request stream closed".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_parses_both_names_and_refuses_others() {
        assert_eq!("sotw".parse::<Protocol>(), Ok(Protocol::Sotw));
        assert_eq!("DELTA".parse::<Protocol>(), Ok(Protocol::Delta));
        assert!(
            "grpc"
                .parse::<Protocol>()
                .unwrap_err()
                .contains("sotw or delta")
        );
        assert_eq!(Protocol::Delta.to_string(), "delta");
    }

    #[test]
    fn nack_message_names_every_rejected_resource() {
        assert_eq!(nack_message(&[]), None);
        let errors = [
            ResourceError {
                name: "a".into(),
                message: "bad".into(),
            },
            ResourceError {
                name: "b".into(),
                message: "worse".into(),
            },
        ];
        assert_eq!(nack_message(&errors).as_deref(), Some("a: bad; b: worse"));
    }
}
