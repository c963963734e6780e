//! Delta (incremental) ADS streams: per resource, only what changed is sent
//! and removals are named; a client's `initial_resource_versions` spare the
//! resources it already has after a reconnect.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::resources::{empty, set_version};
use super::{AdsServer, Pending, TypeResources, Versioned};
use crate::TypeUrl;

/// One type's subscription and what the client has.
#[derive(Default)]
struct Sub {
    wildcard: bool,
    names: BTreeSet<String>,
    /// Resource name -> version the client has (as far as we know).
    known: HashMap<String, String>,
    /// The shared set last compared with `known`.
    seen: Option<Arc<TypeResources>>,
    pending: Option<Pending>,
}

impl Sub {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

pub(super) async fn run(
    server: AdsServer,
    mut inbound: Streaming<DeltaDiscoveryRequest>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
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
                    let Some(n) = server.first_node(req.node.as_ref(), true, &tx).await else { break };
                    node_id = n.id.clone();
                    node = Some(n);
                }
                let Some(t) = TypeUrl::parse(&req.type_url) else { continue };
                let first = !subs.contains_key(&t);
                let sub = subs.entry(t).or_default();
                if !req.response_nonce.is_empty() {
                    let nack = req.error_detail.as_ref().map(|e| e.message.as_str());
                    if nack.is_some() {
                        // The client kept its previous versions of what it rejected.
                        sub.known.clear();
                        sub.seen = None;
                    }
                    server.record_ack(&node_id, t, &req.response_nonce, nack);
                    server.converged(&mut sub.pending, &req.response_nonce, nack.is_some());
                }
                if first {
                    sub.wildcard = req.resource_names_subscribe.is_empty() && t.is_wildcard_by_default();
                    sub.known = req.initial_resource_versions.clone().into_iter().collect();
                }
                for n in &req.resource_names_subscribe {
                    if n == "*" {
                        sub.wildcard = true;
                    } else {
                        sub.names.insert(n.clone());
                    }
                }
                for n in &req.resource_names_unsubscribe {
                    if n == "*" {
                        sub.wildcard = false;
                    } else {
                        sub.names.remove(n);
                        sub.known.remove(n);
                    }
                }
                if first || !req.resource_names_subscribe.is_empty() || !req.resource_names_unsubscribe.is_empty() {
                    to_send.push(t);
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
        let woke = Instant::now();
        let resources = server.source.resources(node);
        for t in to_send {
            if !server.serves(t) {
                continue;
            }
            let Some(sub) = subs.get_mut(&t) else {
                continue;
            };
            let set = resources.get(&t).cloned().unwrap_or_else(|| empty(t));
            // The very set already compared: nothing changed for this type.
            if changed_at.is_some() && sub.seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, &set)) {
                continue;
            }
            sub.seen = Some(set.clone());
            let wanted: BTreeMap<&String, &Versioned> = set
                .resources()
                .iter()
                .filter(|(name, _)| sub.wants(name))
                .collect();
            let updated: Vec<Resource> = wanted
                .iter()
                .filter(|(name, v)| sub.known.get(name.as_str()) != Some(&v.version))
                .map(|(name, v)| Resource {
                    name: (*name).clone(),
                    version: v.version.clone(),
                    resource: Some((*v.any).clone()),
                    ..Default::default()
                })
                .collect();
            let removed: Vec<String> = sub
                .known
                .keys()
                .filter(|name| !wanted.contains_key(name))
                .cloned()
                .collect();
            // A first response is owed even when empty; afterwards only changes.
            let owed = sub.pending.is_none() && changed_at.is_none() && sub.known.is_empty();
            if updated.is_empty() && removed.is_empty() && !owed {
                continue;
            }
            for r in &updated {
                sub.known.insert(r.name.clone(), r.version.clone());
            }
            for n in &removed {
                sub.known.remove(n);
            }
            nonce += 1;
            let version = set_version(wanted.iter().map(|(k, v)| (*k, *v)));
            let response = DeltaDiscoveryResponse {
                system_version_info: version.clone(),
                resources: updated,
                removed_resources: removed,
                type_url: t.as_str().to_string(),
                nonce: nonce.to_string(),
                ..Default::default()
            };
            server.record_sent(&node_id, t, &nonce.to_string(), &sub.names);
            let bytes = prost::Message::encoded_len(&response);
            server.metrics.encoded_bytes.inc_by(bytes as u64);
            server
                .metrics
                .pushed(t, bytes, woke.elapsed().as_secs_f64());
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
