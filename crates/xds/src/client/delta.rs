//! Delta (incremental) ADS streams: resources are tracked by name with a
//! version each; a response carries only added or changed resources and
//! the names removed, and is ACKed or NACKed by its nonce.
//!
//! Clusters and listeners are wildcard subscriptions; endpoints, route
//! configurations and VHDS virtual hosts are subscribed by name as the sink
//! asks (for VHDS, by route configuration name: the server answers with
//! every `<route configuration>/<virtual host>` of it). When a stream
//! (re)opens, every first request of a type carries the versions the sink
//! holds (`initial_resource_versions`), so the server sends only what
//! changed meanwhile and names what was removed.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

use super::{
    ClientStatus, DeltaResource, DeltaUpdate, ResourceError, ResourceSink, StreamEnd, nack_message,
    next_typed, opened, record, send,
};
use crate::TypeUrl;

/// Types subscribed by name, in the order their names are synced.
const NAMED: [TypeUrl; 3] = [TypeUrl::Endpoint, TypeUrl::Route, TypeUrl::VirtualHost];

/// Per-stream request state: the node goes on the first request only, and
/// the names subscribed so far per named type.
struct Requests<'a> {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    node: Option<&'a Node>,
    named: BTreeMap<TypeUrl, BTreeSet<String>>,
}

impl Requests<'_> {
    async fn send(&mut self, mut req: DeltaDiscoveryRequest) -> Result<(), (bool, String)> {
        req.node = self.node.take().cloned();
        send(&self.tx, req).await
    }

    /// Subscribes to names the sink now wants and unsubscribes from those
    /// it no longer does (one request per type that changed).
    async fn sync_named<S: ResourceSink>(&mut self, sink: &S) -> Result<(), (bool, String)> {
        for t in NAMED {
            let wanted: BTreeSet<String> = sink.wanted(t).into_iter().collect();
            let req = match self.named.get(&t) {
                None if wanted.is_empty() => continue,
                None => DeltaDiscoveryRequest {
                    type_url: t.as_str().to_string(),
                    resource_names_subscribe: wanted.iter().cloned().collect(),
                    initial_resource_versions: sink.versions(t).into_iter().collect(),
                    ..Default::default()
                },
                Some(have) if *have == wanted => continue,
                Some(have) => DeltaDiscoveryRequest {
                    type_url: t.as_str().to_string(),
                    resource_names_subscribe: wanted.difference(have).cloned().collect(),
                    resource_names_unsubscribe: have.difference(&wanted).cloned().collect(),
                    ..Default::default()
                },
            };
            self.named.insert(t, wanted);
            self.send(req).await?;
        }
        Ok(())
    }
}

/// Runs one delta stream until it ends. Returns whether any response arrived.
pub(super) async fn stream_once<S: ResourceSink>(
    mut client: AggregatedDiscoveryServiceClient<Channel>,
    address: &str,
    node: &Node,
    sink: &S,
    status: &watch::Sender<ClientStatus>,
) -> StreamEnd {
    // Room for every request sent before the stream is opened.
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(32);
    let mut requests = Requests {
        tx,
        node: Some(node),
        named: BTreeMap::new(),
    };
    // Wildcard types first (an empty first subscription is the wildcard),
    // then the named ones the last good configuration needs (a reconnect).
    for t in [TypeUrl::Cluster, TypeUrl::Listener] {
        let req = DeltaDiscoveryRequest {
            type_url: t.as_str().to_string(),
            initial_resource_versions: sink.versions(t).into_iter().collect(),
            ..Default::default()
        };
        requests.send(req).await?;
    }
    requests.sync_named(sink).await?;
    let mut inbound = client
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|e| (false, format!("open delta ADS stream: {e}")))?
        .into_inner();
    opened(status, address);
    let mut received = false;
    loop {
        let Some((t, response)) = next_typed(
            &mut inbound,
            &mut received,
            "delta ADS stream",
            |r: &DeltaDiscoveryResponse| r.type_url.as_str(),
        )
        .await?
        else {
            return Ok(received);
        };
        let subscribed: Vec<String> = requests
            .named
            .get(&t)
            .map(|n| n.iter().cloned().collect())
            .unwrap_or_default();
        let errors = apply(
            sink,
            t,
            response.resources,
            response.removed_resources,
            &subscribed,
        );
        let detail = nack_message(&errors);
        if let Some(message) = &detail {
            tracing::warn!(%t, version = response.system_version_info, %message, "NACK");
        }
        record(status, t, &response.system_version_info, detail.as_deref());
        let ack = DeltaDiscoveryRequest {
            type_url: t.as_str().to_string(),
            response_nonce: response.nonce,
            error_detail: detail.map(|message| Status {
                code: tonic::Code::InvalidArgument as i32,
                message,
                details: vec![],
            }),
            ..Default::default()
        };
        requests.send(ack).await?;
        // The update may change which endpoints, routes and vhosts we need.
        requests.sync_named(sink).await?;
    }
}

/// Hands one response to the sink. A resource without a body is a removal
/// (how a server says a subscribed name does not exist).
fn apply<S: ResourceSink>(
    sink: &S,
    t: TypeUrl,
    resources: Vec<envoy_types::pb::envoy::service::discovery::v3::Resource>,
    mut removed: Vec<String>,
    subscribed: &[String],
) -> Vec<ResourceError> {
    let mut bodies = Vec::with_capacity(resources.len());
    for r in resources {
        match r.resource {
            Some(resource) => bodies.push(DeltaResource {
                name: r.name,
                version: r.version,
                resource,
            }),
            None => removed.push(r.name),
        }
    }
    sink.apply_delta(
        t,
        DeltaUpdate {
            resources: &bodies,
            removed: &removed,
            subscribed,
        },
    )
}
