//! State-of-the-world ADS streams: a type is (re)sent in full when the
//! proxy subscribes to it, changes its subscription, or when the type's
//! content for this proxy changed.
//!
//! A change costs a stream nothing for a type whose shared set is the very
//! one it last saw (pointer equality). A changed set that the proxy gets
//! whole (wildcard, or subscribed to every name in it) goes out as the
//! set's shared encoding; only a proxy subscribed to part of a set gets a
//! response encoded for it alone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use futures::StreamExt;
use tonic::Streaming;

use super::resources::{empty, encode_fields, set_version};
use super::wire::{Outgoing, OutgoingTx};
use super::{AdsServer, Pending, TypeResources};
use crate::TypeUrl;

/// One type's subscription on this stream.
struct Sub {
    wildcard: bool,
    names: BTreeSet<String>,
    /// Version of the set last sent (`None`: nothing sent yet).
    sent: Option<String>,
    /// The shared set the last response was computed from.
    seen: Option<Arc<TypeResources>>,
    /// The last push caused by a change, until it is ACKed.
    pending: Option<Pending>,
}

pub(super) async fn run(
    server: AdsServer,
    mut inbound: Streaming<DiscoveryRequest>,
    tx: OutgoingTx,
    gzip: bool,
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
                let explicit_wildcard = req.resource_names.iter().any(|n| n == "*");
                if !req.response_nonce.is_empty() {
                    let nack = req.error_detail.as_ref().map(|e| e.message.as_str());
                    server.record_ack(&node_id, t, &req.version_info, nack);
                    if let Some(sub) = subs.get_mut(&t) {
                        server.converged(&mut sub.pending, &req.response_nonce, nack.is_some());
                    }
                }
                let names = || -> BTreeSet<String> {
                    req.resource_names.iter().filter(|n| *n != "*").cloned().collect()
                };
                match subs.get_mut(&t) {
                    Some(sub) => {
                        let wildcard = explicit_wildcard || (sub.wildcard && req.resource_names.is_empty());
                        if sub.wildcard != wildcard || !same_names(&sub.names, &req.resource_names) {
                            sub.names = names();
                            sub.wildcard = wildcard;
                            to_send.push(t);
                        }
                    }
                    None => {
                        let names = names();
                        let wildcard = explicit_wildcard || (names.is_empty() && t.is_wildcard_by_default());
                        subs.insert(t, Sub { wildcard, names, sent: None, seen: None, pending: None });
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
            // Only what changed: the very set last seen is not even looked at.
            if changed_at.is_some() && sub.seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, &set)) {
                continue;
            }
            let whole = sub.wildcard || set.covered_by(&sub.names);
            let version = if whole {
                set.version().to_string()
            } else {
                set_version(
                    set.resources()
                        .iter()
                        .filter(|(n, _)| sub.names.contains(*n)),
                )
            };
            sub.seen = Some(set.clone());
            if changed_at.is_some() && sub.sent.as_deref() == Some(version.as_str()) {
                continue;
            }
            let (fields, deflated) = if whole {
                let (bytes, made) = set.encoded();
                if made {
                    server.metrics.encoded_bytes.inc_by(bytes.len() as u64);
                }
                // Compressed once per set, for every gzip stream.
                let deflated = gzip.then(|| set.deflated()).and_then(|(d, made)| {
                    if made && let Some(d) = &d {
                        server.metrics.compressed_bytes.inc_by(d.len() as u64);
                    }
                    d
                });
                (bytes, deflated)
            } else {
                (partial(&server, &set, &sub.names), None)
            };
            nonce += 1;
            let out = match Outgoing::new(&version, &nonce.to_string(), fields, deflated.as_ref()) {
                Ok(out) => out,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    break;
                }
            };
            server.record_sent(&node_id, t, &version, &sub.names);
            server
                .metrics
                .pushed(t, out.len(), woke.elapsed().as_secs_f64());
            sub.sent = Some(version);
            if let Some(since) = changed_at {
                sub.pending = Some(Pending { nonce, since });
            }
            if tx.send(Ok(out)).await.is_err() {
                server.metrics.push_errors.inc();
                break;
            }
        }
    }
    server.disconnected(&node_id);
}

/// Whether a request names exactly the subscribed names (`*` aside).
fn same_names(names: &BTreeSet<String>, requested: &[String]) -> bool {
    let requested: BTreeSet<&str> = requested
        .iter()
        .map(String::as_str)
        .filter(|n| *n != "*")
        .collect();
    requested.len() == names.len() && requested.iter().all(|r| names.contains(*r))
}

/// The fields of a response carrying only the subscribed part of `set`,
/// encoded for this stream.
fn partial(server: &AdsServer, set: &TypeResources, names: &BTreeSet<String>) -> Bytes {
    let chosen: Vec<_> = set
        .resources()
        .iter()
        .filter(|(n, _)| names.contains(*n))
        .map(|(_, v)| &*v.any)
        .collect();
    let bytes = encode_fields(set.type_url(), chosen.iter().copied());
    server.metrics.encoded_bytes.inc_by(bytes.len() as u64);
    bytes
}
