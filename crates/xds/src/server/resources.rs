//! [`TypeResources`]: one type's resources for a class of proxies, shared
//! by every proxy with that configuration, with the set's version and its
//! state-of-the-world encoding computed once.
//!
//! A stream remembers the set it last pushed; a change that hands it the
//! very same `Arc` is skipped without walking the set, and a changed set is
//! encoded once for all the streams that receive it in full.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use super::Versioned;
use super::gzip::Deflated;
use crate::TypeUrl;

/// Tag of `DiscoveryResponse.resources`.
const RESOURCES_TAG: u32 = 2;
/// Tag of `DiscoveryResponse.type_url`.
const TYPE_URL_TAG: u32 = 4;

/// Every resource of one type that a class of proxies gets, by name, with
/// the version of the whole set. Built once and shared behind an `Arc`.
#[derive(Debug)]
pub struct TypeResources {
    type_url: TypeUrl,
    resources: BTreeMap<String, Versioned>,
    version: String,
    /// The `resources` and `type_url` fields of a state-of-the-world
    /// response carrying the whole set, encoded on first use.
    encoded: OnceLock<Bytes>,
    /// That encoding gzip-deflated, on first use by a stream that accepts
    /// gzip (`None`: not worth compressing).
    deflated: OnceLock<Option<Deflated>>,
    /// Delta responses to this set, shared by the streams that get it
    /// whole ([`super::delta_set`]).
    pub(super) deltas: super::delta_set::DeltaCache,
}

impl PartialEq for TypeResources {
    fn eq(&self, other: &Self) -> bool {
        self.type_url == other.type_url && self.resources == other.resources
    }
}

impl TypeResources {
    /// A set of type `t`, computing its version.
    pub fn new(t: TypeUrl, resources: BTreeMap<String, Versioned>) -> Self {
        let version = set_version(resources.iter());
        TypeResources {
            type_url: t,
            resources,
            version,
            encoded: OnceLock::new(),
            deflated: OnceLock::new(),
            deltas: Default::default(),
        }
    }

    /// An empty set of type `t`.
    pub fn empty(t: TypeUrl) -> Self {
        Self::new(t, BTreeMap::new())
    }

    /// The type.
    pub fn type_url(&self) -> TypeUrl {
        self.type_url
    }

    /// The resources by name.
    pub fn resources(&self) -> &BTreeMap<String, Versioned> {
        &self.resources
    }

    /// The version of the whole set (a hash over names and versions).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether `names` (sorted) covers every resource of the set, so that
    /// a subscription to them gets the whole set.
    pub(crate) fn covered_by(&self, names: &BTreeSet<String>) -> bool {
        if names.len() < self.resources.len() {
            return false;
        }
        let mut wanted = names.iter();
        'have: for have in self.resources.keys() {
            for w in wanted.by_ref() {
                match w.cmp(have) {
                    std::cmp::Ordering::Less => continue,
                    std::cmp::Ordering::Equal => continue 'have,
                    std::cmp::Ordering::Greater => return false,
                }
            }
            return false;
        }
        true
    }

    /// The shared encoding of the whole set, and whether this call made it.
    pub(crate) fn encoded(&self) -> (Bytes, bool) {
        let mut made = false;
        let bytes = self.encoded.get_or_init(|| {
            made = true;
            encode_fields(self.type_url, self.resources.values().map(|v| &*v.any))
        });
        (bytes.clone(), made)
    }

    /// The shared encoding deflated once for gzip streams, and whether
    /// this call made it.
    pub(crate) fn deflated(&self) -> (Option<Deflated>, bool) {
        let mut made = false;
        let d = self.deflated.get_or_init(|| {
            made = true;
            Deflated::new(&self.encoded().0)
        });
        (d.clone(), made)
    }
}

/// Encodes the `resources` and `type_url` fields of a `DiscoveryResponse`
/// (the part every proxy of a class shares; the version and nonce are
/// encoded per stream and the two parts concatenated, which protobuf
/// decodes as one message).
pub(crate) fn encode_fields<'a>(
    t: TypeUrl,
    resources: impl Iterator<Item = &'a Any> + Clone,
) -> Bytes {
    let type_url = t.as_str().to_string();
    let len: usize = resources
        .clone()
        .map(|a| prost::encoding::message::encoded_len(RESOURCES_TAG, a))
        .sum::<usize>()
        + prost::encoding::string::encoded_len(TYPE_URL_TAG, &type_url);
    let mut buf = Vec::with_capacity(len);
    for a in resources {
        prost::encoding::message::encode(RESOURCES_TAG, a, &mut buf);
    }
    prost::encoding::string::encode(TYPE_URL_TAG, &type_url, &mut buf);
    Bytes::from(buf)
}

/// Encodes the per-stream fields of a `DiscoveryResponse`.
pub(crate) fn encode_head(version: &str, nonce: &str) -> Vec<u8> {
    envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse {
        version_info: version.to_string(),
        nonce: nonce.to_string(),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Version of a set: a hash over its names and versions, in name order
/// ([`TypeResources::version`] of the same entries).
pub fn set_version<'a>(set: impl Iterator<Item = (&'a String, &'a Versioned)>) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (name, v) in set {
        name.hash(&mut h);
        v.version.hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

/// A shared empty set per type, for proxies that have none of a type.
pub(crate) fn empty(t: TypeUrl) -> Arc<TypeResources> {
    static EMPTY: OnceLock<[Arc<TypeResources>; TypeUrl::ALL.len()]> = OnceLock::new();
    let all = EMPTY.get_or_init(|| TypeUrl::ALL.map(|t| Arc::new(TypeResources::empty(t))));
    all.iter()
        .find(|s| s.type_url == t)
        .cloned()
        .unwrap_or_else(|| Arc::new(TypeResources::empty(t)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;

    fn set(names: &[&str]) -> TypeResources {
        let resources = names
            .iter()
            .map(|n| {
                let any = Any {
                    type_url: TypeUrl::Cluster.as_str().into(),
                    value: n.as_bytes().to_vec(),
                };
                (n.to_string(), Versioned::new(any))
            })
            .collect();
        TypeResources::new(TypeUrl::Cluster, resources)
    }

    /// Head and shared fields concatenated decode as the response prost
    /// would have encoded whole.
    #[test]
    fn split_encoding_decodes_as_one_response() {
        let s = set(&["a", "b"]);
        let (shared, made) = s.encoded();
        assert!(made);
        assert!(!s.encoded().1, "encoded once");
        let mut bytes = encode_head(s.version(), "7");
        bytes.extend_from_slice(&shared);
        let got = DiscoveryResponse::decode(bytes.as_slice()).unwrap();
        let want = DiscoveryResponse {
            version_info: s.version().into(),
            resources: s.resources().values().map(|v| (*v.any).clone()).collect(),
            type_url: TypeUrl::Cluster.as_str().into(),
            nonce: "7".into(),
            ..Default::default()
        };
        assert_eq!(got, want);
        assert_eq!(want.encode_to_vec().len(), bytes.len());
    }

    #[test]
    fn covered_by_needs_every_name() {
        let s = set(&["b", "d"]);
        let names = |v: &[&str]| v.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        assert!(s.covered_by(&names(&["b", "d"])));
        assert!(s.covered_by(&names(&["a", "b", "c", "d", "e"])));
        assert!(!s.covered_by(&names(&["b"])));
        assert!(!s.covered_by(&names(&["a", "b", "c"])));
        assert!(!s.covered_by(&names(&["a", "c", "e"])));
        assert!(set(&[]).covered_by(&names(&[])));
    }

    #[test]
    fn versions_follow_content() {
        assert_eq!(set(&["a"]).version(), set(&["a"]).version());
        assert_ne!(set(&["a"]).version(), set(&["b"]).version());
        assert_eq!(empty(TypeUrl::Route).type_url(), TypeUrl::Route);
    }
}
