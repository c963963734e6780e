//! A lean simulated proxy for the control-plane scale benchmark.
//!
//! It speaks state-of-the-world ADS as Envoy does (CDS and LDS wildcard,
//! then EDS for the EDS clusters and RDS for the routes its listeners
//! name, every response ACKed), but decodes lazily: a response's resources
//! stay undecoded bytes (sliced from the received buffer, not copied), and
//! only clusters and listeners are decoded, to learn what to subscribe to.
//! With 1,000 of these in one process on the same cores as the control
//! plane, the full decode of the proxy's own client was the bottleneck of
//! the benchmark rather than the server it measures.
//!
//! With `delta`, the stream is delta ADS with VHDS instead
//! ([`crate::scale_delta`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use meshwork_xds::TypeUrl;
use prost::Message;
use tokio::sync::mpsc;

const ADS_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

/// A `DiscoveryResponse` whose resources are left encoded.
#[derive(Clone, PartialEq, Message)]
struct LazyResponse {
    #[prost(string, tag = "1")]
    version_info: String,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    resources: Vec<Bytes>,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    nonce: String,
}

/// A `google.protobuf.Any` whose value is left encoded.
#[derive(Clone, PartialEq, Message)]
struct LazyAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

/// What one simulated proxy has received.
#[derive(Debug, Default)]
pub struct State {
    /// Version ACKed per type.
    pub acked: BTreeMap<TypeUrl, String>,
    /// When the last route update arrived, and its version.
    pub last_rds: Option<(Instant, String)>,
    /// Bytes of resources received.
    pub bytes: u64,
    /// Why the stream ended, if it did.
    pub error: Option<String>,
}

/// One simulated proxy.
#[derive(Default)]
pub struct Sim {
    /// What it has received.
    pub state: Mutex<State>,
    /// Whether it speaks delta ADS with VHDS.
    delta: bool,
}

impl Sim {
    /// Connects to `addr` (`host:port`) as `node` and keeps the stream in
    /// a background task: state of the world, or delta ADS with VHDS.
    pub fn spawn(addr: String, node: Node, delta: bool) -> Arc<Sim> {
        let sim = Arc::new(Sim {
            delta,
            ..Sim::default()
        });
        let s = sim.clone();
        tokio::spawn(async move {
            let done = if delta {
                crate::scale_delta::run(&addr, crate::scale_delta::with_vhds(node), &s).await
            } else {
                run(&addr, node, &s).await
            };
            if let Err(e) = done {
                s.state.lock().unwrap().error = Some(e.to_string());
            }
        });
        sim
    }

    /// Whether every type has been ACKed (VHDS only over delta).
    pub fn complete(&self) -> bool {
        let types = if self.delta {
            TypeUrl::ALL.len()
        } else {
            TypeUrl::ALL.len() - 1
        };
        self.state.lock().unwrap().acked.len() == types
    }
}

/// Per type: what was last received, and the names subscribed.
#[derive(Default)]
struct Sub {
    version: String,
    nonce: String,
    names: Vec<String>,
}

fn request(t: TypeUrl, node: Option<&Node>, sub: &Sub) -> DiscoveryRequest {
    DiscoveryRequest {
        node: node.cloned(),
        type_url: t.as_str().to_string(),
        version_info: sub.version.clone(),
        response_nonce: sub.nonce.clone(),
        resource_names: sub.names.clone(),
        ..Default::default()
    }
}

async fn run(addr: &str, node: Node, sim: &Sim) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    // Advertises gzip as Envoy and grpc clients do; responses arrive
    // compressed and are inflated by tonic.
    let mut grpc = tonic::client::Grpc::new(channel)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    grpc.ready().await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut subs: BTreeMap<TypeUrl, Sub> = BTreeMap::new();
    tx.send(request(TypeUrl::Cluster, Some(&node), &Sub::default()))?;
    tx.send(request(TypeUrl::Listener, None, &Sub::default()))?;
    let codec = tonic_prost::ProstCodec::<DiscoveryRequest, LazyResponse>::default();
    let mut inbound = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
            http::uri::PathAndQuery::from_static(ADS_PATH),
            codec,
        )
        .await?
        .into_inner();
    while let Some(resp) = inbound.message().await? {
        let at = Instant::now();
        let t = TypeUrl::parse(&resp.type_url)
            .ok_or_else(|| anyhow::anyhow!("unknown type {}", resp.type_url))?;
        let bytes: usize = resp.resources.iter().map(Bytes::len).sum();
        let sub = subs.entry(t).or_default();
        sub.version = resp.version_info.clone();
        sub.nonce = resp.nonce.clone();
        tx.send(request(t, None, sub))?;
        // What the update asks for of the dependent type.
        let wants = match t {
            TypeUrl::Cluster => Some((TypeUrl::Endpoint, eds_names(&resp.resources)?)),
            TypeUrl::Listener => Some((TypeUrl::Route, route_names(&resp.resources)?)),
            _ => None,
        };
        if let Some((dep, names)) = wants {
            let sub = subs.entry(dep).or_default();
            if sub.names != names {
                sub.names = names;
                tx.send(request(dep, None, sub))?;
            }
        }
        let mut state = sim.state.lock().unwrap();
        state.bytes += bytes as u64;
        if t == TypeUrl::Route {
            state.last_rds = Some((at, resp.version_info.clone()));
        }
        state.acked.insert(t, resp.version_info);
    }
    Ok(())
}

/// Decodes a resource from its encoded `Any`.
pub fn unpack<M: Message + Default>(raw: &Bytes) -> anyhow::Result<M> {
    let any = LazyAny::decode(raw.clone())?;
    Ok(M::decode(any.value)?)
}

/// Service names of the EDS clusters.
pub fn eds_names(resources: &[Bytes]) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for raw in resources {
        let c: Cluster = unpack(raw)?;
        if c.cluster_discovery_type == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)) {
            let service = c.eds_cluster_config.map(|e| e.service_name);
            names.push(service.filter(|s| !s.is_empty()).unwrap_or(c.name));
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Route configurations the listeners' HTTP connection managers name.
pub fn route_names(resources: &[Bytes]) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for raw in resources {
        let l: Listener = unpack(raw)?;
        for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
            for f in &chain.filters {
                if let Some(ConfigType::TypedConfig(any)) = &f.config_type
                    && let Ok(hcm) = meshwork_xds::unpack::<HttpConnectionManager>(any)
                    && let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier
                {
                    names.push(rds.route_config_name);
                }
            }
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}
