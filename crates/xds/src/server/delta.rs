//! Delta (incremental) ADS streams: per resource, only what changed is sent
//! and removals are named; a client's `initial_resource_versions` spare the
//! resources it already has after a reconnect.
//!
//! VirtualHost (VHDS) resources are subscribed to by route configuration
//! name, as Envoy's VHDS subscription does: `resource_names_subscribe:
//! [<route configuration>]` means every `<route configuration>/<vhost>`.
//!
//! A stream that had a shared set whole and gets the next one whole (the
//! usual case after a change) sends the shared delta between the two sets,
//! computed and encoded once for all such streams ([`super::delta_set`]);
//! only a stream with a partial subscription or an unknown state computes
//! its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use futures::StreamExt;
use tonic::Streaming;

use super::delta_set::{DeltaPayload, diff_known, vhost_wanted};
use super::gzip::Deflated;
use super::resources::{empty, set_version};
use super::wire::{Outgoing, OutgoingTx};
use super::{AdsServer, Pending, TypeResources, Versioned};
use crate::TypeUrl;

/// What the client has of one type.
enum Has {
    /// Exactly the whole of this shared set.
    Set(Arc<TypeResources>),
    /// These names at these versions.
    Map(HashMap<String, String>),
}

impl Has {
    /// The names and versions, as a map (copied out of a set).
    fn into_map(self) -> HashMap<String, String> {
        match self {
            Has::Map(m) => m,
            Has::Set(s) => s
                .resources()
                .iter()
                .map(|(n, v)| (n.clone(), v.version.clone()))
                .collect(),
        }
    }
}

/// One type's subscription and what the client has.
struct Sub {
    t: TypeUrl,
    wildcard: bool,
    names: BTreeSet<String>,
    has: Has,
    /// The shared set last compared with `has`.
    seen: Option<Arc<TypeResources>>,
    pending: Option<Pending>,
}

impl Sub {
    fn new(t: TypeUrl) -> Self {
        Sub {
            t,
            wildcard: false,
            names: BTreeSet::new(),
            has: Has::Map(HashMap::new()),
            seen: None,
            pending: None,
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.wildcard
            || if self.t == TypeUrl::VirtualHost {
                vhost_wanted(&self.names, name)
            } else {
                self.names.contains(name)
            }
    }

    /// Whether the subscription takes every resource of `set`.
    fn whole(&self, set: &TypeResources) -> bool {
        self.wildcard
            || if self.t == TypeUrl::VirtualHost {
                set.vhosts_covered_by(&self.names)
            } else {
                set.covered_by(&self.names)
            }
    }

    /// The client dropped what `name` covers (unsubscribed): forget it.
    fn forget(&mut self, name: &str) {
        let mut known = std::mem::replace(&mut self.has, Has::Map(HashMap::new())).into_map();
        let single = BTreeSet::from([name.to_string()]);
        known.retain(|n, _| {
            !(n == name || self.t == TypeUrl::VirtualHost && vhost_wanted(&single, n))
        });
        self.has = Has::Map(known);
        self.seen = None;
    }

    /// Applies a request's subscription changes; whether it asked for more.
    fn subscribe(&mut self, req: &DeltaDiscoveryRequest) -> bool {
        let mut added = false;
        for n in &req.resource_names_subscribe {
            if n == "*" {
                added |= !self.wildcard;
                self.wildcard = true;
            } else {
                added |= self.names.insert(n.clone());
            }
        }
        for n in &req.resource_names_unsubscribe {
            if n == "*" {
                self.wildcard = false;
                self.seen = None;
            } else if self.names.remove(n) {
                self.forget(n);
            }
        }
        added
    }
}

/// The response for one type, if one is due.
struct Due {
    payload: Shared,
    version: String,
}

/// A payload shared with other streams, or this stream's own.
enum Shared {
    Shared(Arc<DeltaPayload>),
    Own(DeltaPayload),
}

impl Shared {
    fn get(&self) -> &DeltaPayload {
        match self {
            Shared::Shared(p) => p,
            Shared::Own(p) => p,
        }
    }
}

pub(super) async fn run(
    server: AdsServer,
    mut inbound: Streaming<DeltaDiscoveryRequest>,
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
        let mut to_send: Vec<(TypeUrl, bool)> = Vec::new();
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
                let sub = subs.entry(t).or_insert_with(|| Sub::new(t));
                if !req.response_nonce.is_empty() {
                    let nack = req.error_detail.as_ref().map(|e| e.message.as_str());
                    if nack.is_some() {
                        // The client kept its previous versions of what it rejected.
                        sub.has = Has::Map(HashMap::new());
                        sub.seen = None;
                    }
                    server.record_ack(&node_id, t, &req.response_nonce, nack);
                    server.converged(&mut sub.pending, &req.response_nonce, nack.is_some());
                }
                if first {
                    sub.wildcard = req.resource_names_subscribe.is_empty() && t.is_wildcard_by_default();
                    sub.has = Has::Map(req.initial_resource_versions.clone().into_iter().collect());
                }
                let added = sub.subscribe(&req);
                if first || added || !req.resource_names_unsubscribe.is_empty() {
                    // A first request and new names are owed a response, even
                    // an empty one: a reconnecting client that has everything
                    // gets an empty one, and its ACK shows it in sync.
                    to_send.push((t, first || added));
                }
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                let generation = *changes.borrow_and_update();
                changed_at = Some(server.change_time(generation));
                to_send.extend(subs.keys().map(|t| (*t, false)));
            }
        }
        let Some(node) = &node else { continue };
        if to_send.is_empty() {
            continue;
        }
        let woke = Instant::now();
        let resources = server.source.resources(node);
        for (t, owed) in to_send {
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
            let Some(due) = due(&server, sub, &set, owed) else {
                continue;
            };
            let payload = due.payload.get();
            let deflated = match &due.payload {
                Shared::Shared(p) if gzip => deflate(&server, p),
                _ => None,
            };
            nonce += 1;
            let n = nonce.to_string();
            let out = match Outgoing::new(&due.version, &n, payload.bytes(), deflated.as_ref()) {
                Ok(out) => out,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    break;
                }
            };
            server.record_sent(&node_id, t, &n, &sub.names);
            server
                .metrics
                .pushed(t, out.len(), woke.elapsed().as_secs_f64());
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

/// What to send for `sub` now that its set is `set`, and what the client
/// then has; `None` when nothing is due.
fn due(server: &AdsServer, sub: &mut Sub, set: &Arc<TypeResources>, owed: bool) -> Option<Due> {
    if sub.whole(set) {
        let previous = std::mem::replace(&mut sub.has, Has::Set(set.clone()));
        let payload = match previous {
            Has::Set(old) if Arc::ptr_eq(&old, set) => {
                Shared::Own(DeltaPayload::new(set.type_url(), std::iter::empty(), &[]))
            }
            Has::Set(old) => Shared::Shared(count(server, set.delta_from(&old))),
            Has::Map(m) if m.is_empty() => Shared::Shared(count(server, set.delta_full())),
            Has::Map(m) => {
                let wanted: Vec<(&String, &Versioned)> = set.resources().iter().collect();
                Shared::Own(own(server, diff_known(set.type_url(), &m, &wanted).0))
            }
        };
        if payload.get().is_empty() && !owed {
            return None;
        }
        return Some(Due {
            payload,
            version: set.version().to_string(),
        });
    }
    let known = std::mem::replace(&mut sub.has, Has::Map(HashMap::new())).into_map();
    let wanted: Vec<(&String, &Versioned)> = set
        .resources()
        .iter()
        .filter(|(n, _)| sub.wants(n))
        .collect();
    let (payload, now) = diff_known(set.type_url(), &known, &wanted);
    sub.has = Has::Map(now);
    if payload.is_empty() && !owed {
        return None;
    }
    Some(Due {
        payload: Shared::Own(own(server, payload)),
        version: set_version(wanted.iter().copied()),
    })
}

/// Counts a shared payload's bytes once, when it was made.
fn count(server: &AdsServer, (p, made): (Arc<DeltaPayload>, bool)) -> Arc<DeltaPayload> {
    if made {
        server.metrics.encoded_bytes.inc_by(p.bytes().len() as u64);
    }
    p
}

/// Counts a stream's own payload's bytes.
fn own(server: &AdsServer, p: DeltaPayload) -> DeltaPayload {
    server.metrics.encoded_bytes.inc_by(p.bytes().len() as u64);
    p
}

/// A shared payload deflated once for every gzip stream.
fn deflate(server: &AdsServer, p: &DeltaPayload) -> Option<Deflated> {
    let (d, made) = p.deflated();
    if made && let Some(d) = &d {
        server.metrics.compressed_bytes.inc_by(d.len() as u64);
    }
    d
}
