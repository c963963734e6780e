//! Delta responses shared between streams: the difference between two
//! shared sets (or a whole set, for a first response) computed and encoded
//! once, however many streams move from the one set to the other.
//!
//! After a change, every proxy of a class typically had the previous set
//! whole and gets the new one whole, so the 1,000 streams of a class need
//! the very same `resources` and `removed_resources`. The first stream to
//! get there diffs the two sets and encodes the fields of a
//! `DeltaDiscoveryResponse` except `system_version_info` and `nonce`; the
//! others find it cached on the new set (keyed by the old one) and add
//! only their own head (see [`super::wire::Outgoing`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use bytes::Bytes;
use prost::encoding::{WireType, encode_key, encode_varint};

use super::gzip::Deflated;
use super::{TypeResources, Versioned};
use crate::TypeUrl;

/// Tag of `DeltaDiscoveryResponse.resources`.
const RESOURCES_TAG: u32 = 2;
/// Tag of `DeltaDiscoveryResponse.type_url`.
const TYPE_URL_TAG: u32 = 4;
/// Tag of `DeltaDiscoveryResponse.removed_resources`.
const REMOVED_TAG: u32 = 6;
/// Tags of `Resource.version`, `.resource` and `.name`.
const VERSION_TAG: u32 = 1;
const ANY_TAG: u32 = 2;
const NAME_TAG: u32 = 3;

/// The encoded fields of one delta response, shared by streams.
#[derive(Debug)]
pub(crate) struct DeltaPayload {
    /// `resources`, `removed_resources` and `type_url`, encoded.
    bytes: Bytes,
    /// How many resources it updates and removes.
    pub(crate) updated: usize,
    pub(crate) removed: usize,
    /// `bytes` deflated once for gzip streams (`None`: not worth it).
    deflated: OnceLock<Option<Deflated>>,
}

impl DeltaPayload {
    /// Encodes `updated` resources and `removed` names of type `t`.
    pub(crate) fn new<'a>(
        t: TypeUrl,
        updated: impl Iterator<Item = (&'a String, &'a Versioned)> + Clone,
        removed: &[&str],
    ) -> Self {
        let mut buf = Vec::with_capacity(
            updated
                .clone()
                .map(|(n, v)| resource_len(n, v) + 8)
                .sum::<usize>()
                + removed.iter().map(|n| n.len() + 4).sum::<usize>()
                + 80,
        );
        let mut count = 0;
        for (name, v) in updated {
            encode_key(RESOURCES_TAG, WireType::LengthDelimited, &mut buf);
            encode_varint(resource_len(name, v) as u64, &mut buf);
            prost::encoding::string::encode(VERSION_TAG, &v.version, &mut buf);
            prost::encoding::message::encode(ANY_TAG, &*v.any, &mut buf);
            prost::encoding::string::encode(NAME_TAG, name, &mut buf);
            count += 1;
        }
        prost::encoding::string::encode(TYPE_URL_TAG, &t.as_str().to_string(), &mut buf);
        for n in removed {
            prost::encoding::string::encode(REMOVED_TAG, &n.to_string(), &mut buf);
        }
        DeltaPayload {
            bytes: Bytes::from(buf),
            updated: count,
            removed: removed.len(),
            deflated: OnceLock::new(),
        }
    }

    /// Whether it neither updates nor removes anything.
    pub(crate) fn is_empty(&self) -> bool {
        self.updated == 0 && self.removed == 0
    }

    /// The encoded fields.
    pub(crate) fn bytes(&self) -> Bytes {
        self.bytes.clone()
    }

    /// The fields deflated once, and whether this call deflated them.
    pub(crate) fn deflated(&self) -> (Option<Deflated>, bool) {
        let mut made = false;
        let d = self.deflated.get_or_init(|| {
            made = true;
            Deflated::new(&self.bytes)
        });
        (d.clone(), made)
    }
}

/// Encoded length of a `Resource` message (without its key and length).
fn resource_len(name: &str, v: &Versioned) -> usize {
    prost::encoding::string::encoded_len(VERSION_TAG, &v.version)
        + prost::encoding::message::encoded_len(ANY_TAG, &*v.any)
        + prost::encoding::string::encoded_len(NAME_TAG, &name.to_string())
}

/// A delta response computed on first use.
type Cell = Arc<OnceLock<Arc<DeltaPayload>>>;

/// Shared delta responses to one set: from nothing (the whole set), and
/// from each earlier set streams moved from (held weakly: an entry whose
/// old set is gone can never be asked for again).
#[derive(Debug, Default)]
pub(crate) struct DeltaCache {
    full: OnceLock<Arc<DeltaPayload>>,
    from: Mutex<Vec<(Weak<TypeResources>, Cell)>>,
    /// The route configuration names of a VirtualHost set, and whether
    /// every resource name has one.
    groups: OnceLock<(BTreeSet<String>, bool)>,
}

/// Whether VirtualHost resource `name` belongs to a route configuration
/// in `names` (`<route configuration>/<virtual host>`), or is named itself.
pub(crate) fn vhost_wanted(names: &BTreeSet<String>, name: &str) -> bool {
    names.contains(name)
        || name
            .split_once('/')
            .is_some_and(|(rc, _)| names.contains(rc))
}

impl TypeResources {
    /// The delta response that brings a client from having nothing to
    /// having this whole set; computed once.
    pub(crate) fn delta_full(&self) -> (Arc<DeltaPayload>, bool) {
        let mut made = false;
        let p = self.deltas.full.get_or_init(|| {
            made = true;
            Arc::new(DeltaPayload::new(
                self.type_url(),
                self.resources().iter(),
                &[],
            ))
        });
        (p.clone(), made)
    }

    /// The delta response that brings a client from having `old` whole to
    /// having this set whole; computed once per `old`.
    pub(crate) fn delta_from(&self, old: &Arc<TypeResources>) -> (Arc<DeltaPayload>, bool) {
        let cell = {
            let mut from = self
                .deltas
                .from
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let found = from
                .iter()
                .find(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(old)))
                .map(|(_, c)| c.clone());
            match found {
                Some(c) => c,
                None => {
                    from.retain(|(w, _)| w.strong_count() > 0);
                    let c = Arc::new(OnceLock::new());
                    from.push((Arc::downgrade(old), c.clone()));
                    c
                }
            }
        };
        let mut made = false;
        let p = cell.get_or_init(|| {
            made = true;
            Arc::new(diff(self.type_url(), old.resources(), self.resources()))
        });
        (p.clone(), made)
    }

    /// For a VirtualHost set: whether a subscription to `names` (route
    /// configuration names, or full resource names) covers all of it.
    pub(crate) fn vhosts_covered_by(&self, names: &BTreeSet<String>) -> bool {
        let (groups, all_grouped) = self.deltas.groups.get_or_init(|| {
            let groups = self
                .resources()
                .keys()
                .filter_map(|n| n.split_once('/').map(|(rc, _)| rc.to_string()))
                .collect();
            (groups, self.resources().keys().all(|n| n.contains('/')))
        });
        if *all_grouped && groups.iter().all(|g| names.contains(g)) {
            return true;
        }
        self.resources().keys().all(|n| vhost_wanted(names, n))
    }
}

/// The response bringing a client from `old` to `new`: what is new or
/// changed, and the names gone.
fn diff(
    t: TypeUrl,
    old: &BTreeMap<String, Versioned>,
    new: &BTreeMap<String, Versioned>,
) -> DeltaPayload {
    let updated: Vec<(&String, &Versioned)> = new
        .iter()
        .filter(|(n, v)| old.get(*n).is_none_or(|o| o.version != v.version))
        .collect();
    let removed: Vec<&str> = old
        .keys()
        .filter(|n| !new.contains_key(*n))
        .map(String::as_str)
        .collect();
    DeltaPayload::new(t, updated.iter().copied(), &removed)
}

/// The response bringing a client that has `known` (name → version) to
/// having `wanted`, encoded for that client alone; and what it then has.
pub(crate) fn diff_known<'a>(
    t: TypeUrl,
    known: &HashMap<String, String>,
    wanted: &[(&'a String, &'a Versioned)],
) -> (DeltaPayload, HashMap<String, String>) {
    let updated: Vec<(&String, &Versioned)> = wanted
        .iter()
        .filter(|(n, v)| known.get(n.as_str()) != Some(&v.version))
        .copied()
        .collect();
    let wanted_names: HashMap<&str, &str> = wanted
        .iter()
        .map(|(n, v)| (n.as_str(), v.version.as_str()))
        .collect();
    let removed: Vec<&str> = known
        .keys()
        .filter(|n| !wanted_names.contains_key(n.as_str()))
        .map(String::as_str)
        .collect();
    let payload = DeltaPayload::new(t, updated.iter().copied(), &removed);
    let now = wanted_names
        .into_iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    (payload, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;

    fn set(entries: &[(&str, &str)]) -> Arc<TypeResources> {
        let resources = entries
            .iter()
            .map(|(n, content)| {
                let any = Any {
                    type_url: TypeUrl::VirtualHost.as_str().into(),
                    value: content.as_bytes().to_vec(),
                };
                (n.to_string(), Versioned::new(any))
            })
            .collect();
        Arc::new(TypeResources::new(TypeUrl::VirtualHost, resources))
    }

    fn decode(p: &DeltaPayload) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse::decode(p.bytes()).unwrap()
    }

    #[test]
    fn shared_diff_is_computed_once_and_decodes() {
        let old = set(&[("80/a", "1"), ("80/b", "1"), ("80/c", "1")]);
        let new = set(&[("80/a", "1"), ("80/b", "2"), ("80/d", "1")]);
        let (p, made) = new.delta_from(&old);
        assert!(made);
        let (again, made) = new.delta_from(&old);
        assert!(!made, "computed once");
        assert!(Arc::ptr_eq(&p, &again));
        let r = decode(&p);
        let names: Vec<_> = r.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["80/b", "80/d"]);
        assert_eq!(r.resources[0].version, new.resources()["80/b"].version);
        assert_eq!(
            *r.resources[0].resource.as_ref().unwrap(),
            *new.resources()["80/b"].any
        );
        assert_eq!(r.removed_resources, ["80/c"]);
        assert_eq!(r.type_url, TypeUrl::VirtualHost.as_str());
        assert_eq!((p.updated, p.removed), (2, 1));
        // A diff from the same content is empty.
        let same = set(&[("80/a", "1")]);
        assert!(set(&[("80/a", "1")]).delta_from(&same).0.is_empty());
        assert_eq!(decode(&new.delta_full().0).resources.len(), 3);
    }

    #[test]
    fn per_client_diff() {
        let new = set(&[("80/a", "1"), ("80/b", "2")]);
        let known: HashMap<String, String> = [
            ("80/a".to_string(), new.resources()["80/a"].version.clone()),
            ("80/x".to_string(), "v".to_string()),
        ]
        .into();
        let wanted: Vec<_> = new.resources().iter().collect();
        let (p, now) = diff_known(TypeUrl::VirtualHost, &known, &wanted);
        let r = decode(&p);
        assert_eq!(r.resources.len(), 1);
        assert_eq!(r.resources[0].name, "80/b");
        assert_eq!(r.removed_resources, ["80/x"]);
        assert_eq!(now.len(), 2);
    }

    #[test]
    fn vhost_subscriptions_by_route_configuration() {
        let s = set(&[("80/a", "1"), ("90/b", "1")]);
        let names = |v: &[&str]| v.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        assert!(s.vhosts_covered_by(&names(&["80", "90"])));
        assert!(s.vhosts_covered_by(&names(&["80", "90/b"])));
        assert!(!s.vhosts_covered_by(&names(&["80"])));
        assert!(vhost_wanted(&names(&["80"]), "80/a"));
        assert!(!vhost_wanted(&names(&["80"]), "800/a"));
        assert!(!vhost_wanted(&names(&["8"]), "80/a"));
    }
}
