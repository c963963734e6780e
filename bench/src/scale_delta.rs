//! The scale benchmark's simulated proxy over delta ADS with VHDS, as
//! Meshwork's sidecar speaks it when it announces `MESHWORK_VHDS`: CDS and
//! LDS wildcard, EDS by the EDS clusters' service names, RDS by the names
//! the listeners use, and the VirtualHost resources of every route
//! configuration that has `vhds` (subscribed by route configuration name).
//! Every response is ACKed by its nonce. Like the state-of-the-world
//! client it leaves resources undecoded, except clusters, listeners and
//! route configurations (to learn what to subscribe to).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::google::protobuf::Value;
use envoy_types::pb::google::protobuf::value::Kind;
use meshwork_xds::TypeUrl;
use prost::Message;
use tokio::sync::mpsc;

use crate::scale_client::{Sim, eds_names, route_names, unpack};

const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// A `DeltaDiscoveryResponse` whose resources are left encoded.
#[derive(Clone, PartialEq, Message)]
struct LazyDeltaResponse {
    #[prost(string, tag = "1")]
    system_version_info: String,
    #[prost(message, repeated, tag = "2")]
    resources: Vec<LazyResource>,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    nonce: String,
    #[prost(string, repeated, tag = "6")]
    removed_resources: Vec<String>,
}

/// A delta `Resource` whose `Any` is left encoded.
#[derive(Clone, PartialEq, Message)]
struct LazyResource {
    #[prost(string, tag = "1")]
    version: String,
    #[prost(bytes = "bytes", tag = "2")]
    resource: Bytes,
    #[prost(string, tag = "3")]
    name: String,
}

/// Adds `MESHWORK_VHDS: "true"` to a node's metadata.
pub fn with_vhds(mut node: Node) -> Node {
    node.metadata.get_or_insert_default().fields.insert(
        "MESHWORK_VHDS".into(),
        Value {
            kind: Some(Kind::StringValue("true".into())),
        },
    );
    node
}

/// What this client derived from one type's resources, by resource name:
/// the names they make it subscribe to of the dependent type.
type Derived = BTreeMap<String, Vec<String>>;

fn subscribe(t: TypeUrl, names: Vec<String>, unsubscribe: Vec<String>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: t.as_str().to_string(),
        resource_names_subscribe: names,
        resource_names_unsubscribe: unsubscribe,
        ..Default::default()
    }
}

/// Runs one delta stream until it ends.
pub async fn run(addr: &str, node: Node, sim: &Sim) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut grpc = tonic::client::Grpc::new(channel)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    grpc.ready().await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut first = subscribe(TypeUrl::Cluster, Vec::new(), Vec::new());
    first.node = Some(node);
    tx.send(first)?;
    tx.send(subscribe(TypeUrl::Listener, Vec::new(), Vec::new()))?;
    let codec = tonic_prost::ProstCodec::<DeltaDiscoveryRequest, LazyDeltaResponse>::default();
    let mut inbound = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
            http::uri::PathAndQuery::from_static(DELTA_PATH),
            codec,
        )
        .await?
        .into_inner();
    // Per type that drives subscriptions: what each resource asks for.
    let mut derived: BTreeMap<TypeUrl, Derived> = BTreeMap::new();
    // Per dependent type: names subscribed.
    let mut subscribed: BTreeMap<TypeUrl, BTreeSet<String>> = BTreeMap::new();
    while let Some(resp) = inbound.message().await? {
        let at = Instant::now();
        let t = TypeUrl::parse(&resp.type_url)
            .ok_or_else(|| anyhow::anyhow!("unknown type {}", resp.type_url))?;
        tx.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        })?;
        let bytes: usize = resp.resources.iter().map(|r| r.resource.len()).sum();
        let dep = match t {
            TypeUrl::Cluster => Some(TypeUrl::Endpoint),
            TypeUrl::Listener => Some(TypeUrl::Route),
            TypeUrl::Route => Some(TypeUrl::VirtualHost),
            _ => None,
        };
        if let Some(dep) = dep {
            let d = derived.entry(t).or_default();
            for name in &resp.removed_resources {
                d.remove(name);
            }
            for r in &resp.resources {
                let raw = std::slice::from_ref(&r.resource);
                let wants = match t {
                    TypeUrl::Cluster => eds_names(raw)?,
                    TypeUrl::Listener => route_names(raw)?,
                    _ => {
                        let rc: RouteConfiguration = unpack(&r.resource)?;
                        rc.vhds.is_some().then_some(rc.name).into_iter().collect()
                    }
                };
                d.insert(r.name.clone(), wants);
            }
            let want: BTreeSet<String> = d.values().flatten().cloned().collect();
            let have = subscribed.entry(dep).or_default();
            let add: Vec<String> = want.difference(have).cloned().collect();
            let drop: Vec<String> = have.difference(&want).cloned().collect();
            if !add.is_empty() || !drop.is_empty() {
                *have = want;
                tx.send(subscribe(dep, add, drop))?;
            }
        }
        let mut state = sim.state.lock().unwrap();
        state.bytes += bytes as u64;
        if t == TypeUrl::VirtualHost {
            state.last_rds = Some((at, resp.system_version_info.clone()));
        }
        state.acked.insert(t, resp.system_version_info);
    }
    Ok(())
}
