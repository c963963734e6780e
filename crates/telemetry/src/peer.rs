//! Istio's metadata exchange over HTTP headers: each sidecar sends its own
//! workload metadata in `x-envoy-peer-metadata` (base64 of a serialized
//! `google.protobuf.Struct`) so the other side can fill `source_*` /
//! `destination_*` labels.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use prost::Message as _;
use prost_types::value::Kind;
use prost_types::{Struct, Value};

/// Header carrying the base64-encoded peer metadata.
pub const PEER_METADATA_HEADER: &str = "x-envoy-peer-metadata";
/// Header carrying the peer's node id (`sidecar~IP~POD.NS~NS.svc.cluster.local`).
pub const PEER_METADATA_ID_HEADER: &str = "x-envoy-peer-metadata-id";

/// Larger header values are rejected without decoding.
const MAX_HEADER_LEN: usize = 16 * 1024;

const LABEL_APP: &str = "app";
const LABEL_VERSION: &str = "version";
const LABEL_CANONICAL_NAME: &str = "service.istio.io/canonical-name";
const LABEL_CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";

/// Standard alphabet, padding optional on decode (peers differ).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What one side of a connection knows about its own workload; the part of
/// Istio's node metadata that the standard metrics need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerMetadata {
    /// Kubernetes namespace (`NAMESPACE`).
    pub namespace: String,
    /// Workload (deployment) name (`WORKLOAD_NAME`).
    pub workload_name: String,
    /// `app` label.
    pub app: String,
    /// `version` label.
    pub version: String,
    /// Service account (`SERVICE_ACCOUNT`).
    pub service_account: String,
    /// Cluster id (`CLUSTER_ID`), e.g. `Kubernetes`.
    pub cluster_id: String,
    /// `service.istio.io/canonical-name` label.
    pub canonical_service: String,
    /// `service.istio.io/canonical-revision` label.
    pub canonical_revision: String,
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

fn insert_nonempty(map: &mut BTreeMap<String, Value>, key: &str, value: &str) {
    if !value.is_empty() {
        map.insert(key.to_string(), string_value(value));
    }
}

fn get_str<'a>(map: &'a BTreeMap<String, Value>, key: &str) -> Option<&'a str> {
    match map.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

// === impl PeerMetadata ===

impl PeerMetadata {
    /// The `google.protobuf.Struct` Istio exchanges. `NAME` (Istio's pod
    /// name) carries the workload name, as there is no pod name here.
    pub fn to_struct(&self) -> Struct {
        let mut labels = BTreeMap::new();
        insert_nonempty(&mut labels, LABEL_APP, &self.app);
        insert_nonempty(&mut labels, LABEL_VERSION, &self.version);
        insert_nonempty(&mut labels, LABEL_CANONICAL_NAME, &self.canonical_service);
        insert_nonempty(
            &mut labels,
            LABEL_CANONICAL_REVISION,
            &self.canonical_revision,
        );

        let mut fields = BTreeMap::new();
        insert_nonempty(&mut fields, "NAME", &self.workload_name);
        insert_nonempty(&mut fields, "NAMESPACE", &self.namespace);
        insert_nonempty(&mut fields, "WORKLOAD_NAME", &self.workload_name);
        insert_nonempty(&mut fields, "CLUSTER_ID", &self.cluster_id);
        insert_nonempty(&mut fields, "SERVICE_ACCOUNT", &self.service_account);
        fields.insert(
            "LABELS".to_string(),
            Value {
                kind: Some(Kind::StructValue(Struct { fields: labels })),
            },
        );
        Struct { fields }
    }

    /// Encodes as Istio does for [`PEER_METADATA_HEADER`]: base64 (standard,
    /// padded) of the serialized `Struct`. Compute once per proxy and reuse.
    pub fn to_header_value(&self) -> String {
        BASE64.encode(self.to_struct().encode_to_vec())
    }

    /// Reads a `Struct` as Istio builds it. Canonical name and revision fall
    /// back as in Istio (`app` / workload name, `version` / `latest`).
    /// `None` unless it names a namespace or workload.
    pub fn from_struct(s: &Struct) -> Option<Self> {
        let f = &s.fields;
        let namespace = get_str(f, "NAMESPACE");
        let workload = get_str(f, "WORKLOAD_NAME").or_else(|| get_str(f, "NAME"));
        if namespace.is_none() && workload.is_none() {
            return None;
        }
        let empty = BTreeMap::new();
        let labels = match f.get("LABELS").and_then(|v| v.kind.as_ref()) {
            Some(Kind::StructValue(l)) => &l.fields,
            _ => &empty,
        };
        let label = |k: &str| get_str(labels, k);
        let app = label(LABEL_APP).or_else(|| label("app.kubernetes.io/name"));
        let version = label(LABEL_VERSION).or_else(|| label("app.kubernetes.io/version"));
        let own = |v: Option<&str>| v.unwrap_or_default().to_string();
        Some(Self {
            namespace: own(namespace),
            workload_name: own(workload),
            app: own(app),
            version: own(version),
            service_account: own(get_str(f, "SERVICE_ACCOUNT")),
            cluster_id: own(get_str(f, "CLUSTER_ID")),
            canonical_service: own(label(LABEL_CANONICAL_NAME).or(app).or(workload)),
            canonical_revision: own(label(LABEL_CANONICAL_REVISION)
                .or(version)
                .or(Some("latest"))),
        })
    }

    /// Decodes a [`PEER_METADATA_HEADER`] value. Malformed input (bad
    /// base64, bad protobuf, oversized, no workload) gives `None`.
    pub fn from_header_value(value: &str) -> Option<Self> {
        let value = value.trim();
        if value.is_empty() || value.len() > MAX_HEADER_LEN {
            return None;
        }
        let bytes = BASE64.decode(value).ok()?;
        let s = Struct::decode(bytes.as_slice()).ok()?;
        Self::from_struct(&s)
    }
}

/// The SPIFFE id Istio uses as a workload's principal:
/// `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`.
pub fn principal(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// Istio's sidecar node id, the value of [`PEER_METADATA_ID_HEADER`]:
/// `sidecar~IP~NAME.NAMESPACE~NAMESPACE.svc.cluster.local`.
pub fn sidecar_node_id(ip: &str, name: &str, namespace: &str) -> String {
    format!("sidecar~{ip}~{name}.{namespace}~{namespace}.svc.cluster.local")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PeerMetadata {
        PeerMetadata {
            namespace: "default".into(),
            workload_name: "reviews-v2".into(),
            app: "reviews".into(),
            version: "v2".into(),
            service_account: "bookinfo-reviews".into(),
            cluster_id: "Kubernetes".into(),
            canonical_service: "reviews".into(),
            canonical_revision: "v2".into(),
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let header = m.to_header_value();
        assert!(header.is_ascii() && !header.contains(['\n', ' ']));
        assert_eq!(PeerMetadata::from_header_value(&header), Some(m));
    }

    #[test]
    fn struct_has_istio_keys() {
        let s = sample().to_struct();
        let keys: Vec<&str> = s.fields.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "CLUSTER_ID",
                "LABELS",
                "NAME",
                "NAMESPACE",
                "SERVICE_ACCOUNT",
                "WORKLOAD_NAME"
            ]
        );
        let Some(Kind::StructValue(labels)) = &s.fields["LABELS"].kind else {
            panic!("LABELS must be a struct");
        };
        assert_eq!(
            get_str(&labels.fields, LABEL_CANONICAL_NAME),
            Some("reviews")
        );
        assert_eq!(
            get_str(&labels.fields, LABEL_CANONICAL_REVISION),
            Some("v2")
        );
        assert_eq!(get_str(&labels.fields, "app"), Some("reviews"));
        assert_eq!(get_str(&labels.fields, "version"), Some("v2"));
    }

    #[test]
    fn canonical_labels_fall_back() {
        let mut m = sample();
        m.canonical_service.clear();
        m.canonical_revision.clear();
        let back = PeerMetadata::from_header_value(&m.to_header_value()).unwrap();
        assert_eq!(back.canonical_service, "reviews");
        assert_eq!(back.canonical_revision, "v2");

        let bare = PeerMetadata {
            namespace: "ns".into(),
            workload_name: "w".into(),
            ..Default::default()
        };
        let back = PeerMetadata::from_header_value(&bare.to_header_value()).unwrap();
        assert_eq!(back.canonical_service, "w");
        assert_eq!(back.canonical_revision, "latest");
        assert_eq!(back.app, "");
    }

    #[test]
    fn unpadded_base64_is_accepted() {
        let header = sample().to_header_value();
        let unpadded = header.trim_end_matches('=');
        assert_eq!(PeerMetadata::from_header_value(unpadded), Some(sample()));
    }

    #[test]
    fn malformed_is_none() {
        let empty_struct = BASE64.encode(Struct::default().encode_to_vec());
        let wrong_type = BASE64.encode(
            Struct {
                fields: [(
                    "NAMESPACE".to_string(),
                    Value {
                        kind: Some(Kind::NumberValue(1.0)),
                    },
                )]
                .into(),
            }
            .encode_to_vec(),
        );
        let huge = "A".repeat(MAX_HEADER_LEN + 4);
        for bad in [
            "",
            "   ",
            "!!!not base64!!!",
            "////",
            "AAAA",
            "CgQKAmFi",
            &BASE64.encode([0xff; 40]),
            &BASE64.encode(b"\x0a\x80"),
            &empty_struct,
            &wrong_type,
            &huge,
        ] {
            assert_eq!(PeerMetadata::from_header_value(bad), None, "{bad:.40}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let valid = BASE64.decode(sample().to_header_value()).unwrap();
        for cut in 0..valid.len() {
            let _ = PeerMetadata::from_header_value(&BASE64.encode(&valid[..cut]));
            let mut flipped = valid.clone();
            flipped[cut] ^= 0x5a;
            let _ = PeerMetadata::from_header_value(&BASE64.encode(&flipped));
        }
    }

    #[test]
    fn principal_and_node_id() {
        assert_eq!(
            principal("cluster.local", "default", "sleep"),
            "spiffe://cluster.local/ns/default/sa/sleep"
        );
        assert_eq!(
            sidecar_node_id("10.0.0.7", "sleep-7d9f", "default"),
            "sidecar~10.0.0.7~sleep-7d9f.default~default.svc.cluster.local"
        );
        assert_eq!(PEER_METADATA_HEADER, "x-envoy-peer-metadata");
        assert_eq!(PEER_METADATA_ID_HEADER, "x-envoy-peer-metadata-id");
    }
}
