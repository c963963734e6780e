//! State-of-the-world ADS streams: a type is (re)sent in full when the
//! proxy subscribes to it, changes its subscription, or when the type's
//! content for this proxy changed.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::{AdsServer, Pending, Versioned, set_version};
use crate::TypeUrl;

/// One type's subscription on this stream.
struct Sub {
    wildcard: bool,
    names: BTreeSet<String>,
    /// Version of the set last sent (`None`: nothing sent yet).
    sent: Option<String>,
    /// The last push caused by a change, until it is ACKed.
    pending: Option<Pending>,
}

pub(super) async fn run(
    server: AdsServer,
    mut inbound: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let mut changes = server.source.changes();
    let mut subs: BTreeMap<TypeUrl, Sub> = BTreeMap::new();
    let mut node: Option<Node> = None;
    let mut node_id = String::new();
    let mut nonce: u64 = 0;
    server.metrics.connected.inc();
    loop {
        let mut to_send: Vec<TypeUrl> = Vec::new();
        let mut changed_at = None;
        tokio::select! {
            req = inbound.next() => {
                let Some(Ok(req)) = req else { break };
                if node.is_none() {
                    let Some(n) = server.first_node(req.node.as_ref(), false, &tx).await else { break };
                    node_id = n.id.clone();
                    node = Some(n);
                }
                let Some(t) = TypeUrl::parse(&req.type_url) else {
                    tracing::debug!(type_url = req.type_url, "ignoring unsupported type");
                    continue;
                };
                let names: BTreeSet<String> = req.resource_names.iter().filter(|n| *n != "*").cloned().collect();
                let explicit_wildcard = req.resource_names.iter().any(|n| n == "*");
                if !req.response_nonce.is_empty() {
                    let nack = req.error_detail.as_ref().map(|e| e.message.as_str());
                    server.record_ack(&node_id, t, &req.version_info, nack);
                    if let Some(sub) = subs.get_mut(&t) {
                        server.converged(&mut sub.pending, &req.response_nonce, nack.is_some());
                    }
                }
                match subs.get_mut(&t) {
                    Some(sub) => {
                        let wildcard = explicit_wildcard || (sub.wildcard && req.resource_names.is_empty());
                        if sub.names != names || sub.wildcard != wildcard {
                            sub.names = names;
                            sub.wildcard = wildcard;
                            to_send.push(t);
                        }
                    }
                    None => {
                        let wildcard = explicit_wildcard || (names.is_empty() && t.is_wildcard_by_default());
                        subs.insert(t, Sub { wildcard, names, sent: None, pending: None });
                        to_send.push(t);
                    }
                }
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                let generation = *changes.borrow_and_update();
                changed_at = Some(server.change_time(generation));
                to_send.extend(subs.keys().copied());
            }
        }
        let Some(node) = &node else { continue };
        if to_send.is_empty() {
            continue;
        }
        let resources = server.source.resources(node);
        let empty = BTreeMap::new();
        for t in to_send {
            if !server.serves(t) {
                continue;
            }
            let Some(sub) = subs.get_mut(&t) else {
                continue;
            };
            let all = resources.get(&t).unwrap_or(&empty);
            let chosen: BTreeMap<String, &Versioned> = all
                .iter()
                .filter(|(name, _)| sub.wildcard || sub.names.contains(*name))
                .map(|(k, v)| (k.clone(), v))
                .collect();
            let version = set_version(&chosen);
            // Only what changed: a change that leaves this type as sent is not pushed.
            if changed_at.is_some() && sub.sent.as_deref() == Some(version.as_str()) {
                continue;
            }
            nonce += 1;
            let response = DiscoveryResponse {
                version_info: version.clone(),
                resources: chosen.values().map(|v| (*v.any).clone()).collect(),
                type_url: t.as_str().to_string(),
                nonce: nonce.to_string(),
                ..Default::default()
            };
            server.record_sent(&node_id, t, &version, &sub.names);
            sub.sent = Some(version);
            if let Some(since) = changed_at {
                sub.pending = Some(Pending { nonce, since });
            }
            if tx.send(Ok(response)).await.is_err() {
                server.metrics.push_errors.inc();
                break;
            }
        }
    }
    server.disconnected(&node_id);
}
