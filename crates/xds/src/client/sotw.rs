//! State-of-the-world ADS streams: every response of a type carries all of
//! that type's resources; one version and nonce per type.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

use super::{
    ClientStatus, ResourceSink, StreamEnd, nack_message, next_typed, opened, record, send,
};
use crate::TypeUrl;

/// Subscription state of one type on the current stream.
#[derive(Default)]
struct Sub {
    nonce: String,
    names: Vec<String>,
    sent: bool,
}

/// Runs one stream until it ends. Returns whether any response arrived.
pub(super) async fn stream_once<S: ResourceSink>(
    mut client: AggregatedDiscoveryServiceClient<Channel>,
    address: &str,
    node: &Node,
    sink: &S,
    status: &watch::Sender<ClientStatus>,
    versions: &mut BTreeMap<TypeUrl, String>,
) -> StreamEnd {
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
    opened(status, address);
    let mut received = false;
    loop {
        let Some((t, response)) = next_typed(
            &mut inbound,
            &mut received,
            "ADS stream",
            |r: &DiscoveryResponse| r.type_url.as_str(),
        )
        .await?
        else {
            return Ok(received);
        };
        let errors = sink.apply(t, &response.version_info, &response.resources);
        let sub = subs.entry(t).or_default();
        sub.nonce = response.nonce.clone();
        let detail = nack_message(&errors);
        match &detail {
            None => {
                versions.insert(t, response.version_info.clone());
            }
            Some(message) => {
                tracing::warn!(%t, version = response.version_info, %message, "NACK");
            }
        }
        record(status, t, &response.version_info, detail.as_deref());
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
