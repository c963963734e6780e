//! TLS in Istio's shapes: the client side of outbound clusters
//! (DestinationRule `tls` DISABLE / SIMPLE / MUTUAL / ISTIO_MUTUAL, else
//! auto mTLS through `transport_socket_matches` on the endpoints'
//! `tlsMode`), and the server side of inbound filter chains (SDS `default`
//! + `ROOTCA`, client certificate required).
//!
//! Certificates on disk are named as pilot-agent's SDS serves them
//! (`file-cert:CERT~KEY`, `file-root:CA`), as Istio does for sidecars.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{DiscoveryType, TransportSocketMatch};
use envoy_types::pb::envoy::config::core::v3::TransportSocket;
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::{
    CombinedCertificateValidationContext, ValidationContextType,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::subject_alt_name_matcher::SanType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::google::protobuf::{BoolValue, Struct, Value, value};
use meshwork_config::model::istio::{ClientTlsMode, ClientTlsSettings};
use meshwork_xds::pack;

use crate::pb::ads;

/// Endpoint metadata key Envoy matches `transport_socket_matches` against.
pub(crate) const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";
/// Istio's client ALPN in the mesh (`ALPNInMeshWithMxc`).
const MESH_ALPN: [&str; 2] = ["istio-peer-exchange", "istio"];
/// The application protocols Istio's inbound mTLS chains match.
pub(crate) const INBOUND_MTLS_ALPNS: [&str; 5] = [
    "istio-peer-exchange",
    "istio",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.into(),
        sds_config: Some(ads()),
    }
}

fn sans(names: &[String]) -> CertificateValidationContext {
    CertificateValidationContext {
        match_typed_subject_alt_names: names
            .iter()
            .map(|n| SubjectAltNameMatcher {
                san_type: if n.contains("://") {
                    SanType::Uri as i32
                } else {
                    SanType::Dns as i32
                },
                matcher: Some(StringMatcher {
                    match_pattern: Some(MatchPattern::Exact(n.clone())),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn combined(defaults: CertificateValidationContext, root: &str) -> ValidationContextType {
    ValidationContextType::CombinedValidationContext(CombinedCertificateValidationContext {
        default_validation_context: Some(defaults),
        validation_context_sds_secret_config: Some(sds(root)),
        ..Default::default()
    })
}

fn socket(name: &str, config: envoy_types::pb::google::protobuf::Any) -> TransportSocket {
    TransportSocket {
        name: name.into(),
        config_type: Some(ConfigType::TypedConfig(config)),
    }
}

fn tls_socket(config: envoy_types::pb::google::protobuf::Any) -> TransportSocket {
    socket("envoy.transport_sockets.tls", config)
}

/// Istio's SNI for a cluster: `outbound_.8080_.v1_.reviews.default.svc.cluster.local`.
pub(crate) fn mesh_sni(cluster: &str) -> String {
    cluster.split('|').collect::<Vec<_>>().join("_.")
}

/// ISTIO_MUTUAL: the workload certificate, the mesh bundle, Istio's ALPN.
fn istio_mutual(sni: String, san_list: &[String], h2: bool) -> UpstreamTlsContext {
    let mut alpn: Vec<String> = MESH_ALPN.iter().map(|s| s.to_string()).collect();
    if h2 {
        alpn.push("h2".into());
    }
    UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds("default")],
            validation_context_type: Some(combined(sans(san_list), "ROOTCA")),
            alpn_protocols: alpn,
            ..Default::default()
        }),
        sni,
        ..Default::default()
    }
}

/// SIMPLE / MUTUAL with certificates on disk.
fn external(tls: &ClientTlsSettings, mutual: bool) -> UpstreamTlsContext {
    let mut common = CommonTlsContext::default();
    if mutual && let (Some(cert), Some(key)) = (&tls.client_certificate, &tls.private_key) {
        common.tls_certificate_sds_secret_configs = vec![sds(&format!("file-cert:{cert}~{key}"))];
    }
    if tls.insecure_skip_verify != Some(true) {
        common.validation_context_type = match &tls.ca_certificates {
            Some(ca) => Some(combined(
                sans(&tls.subject_alt_names),
                &format!("file-root:{ca}"),
            )),
            None if !tls.subject_alt_names.is_empty() => Some(
                ValidationContextType::ValidationContext(sans(&tls.subject_alt_names)),
            ),
            None => None,
        };
    }
    UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: tls.sni.clone().unwrap_or_default(),
        ..Default::default()
    }
}

fn tls_mode_struct() -> Struct {
    Struct {
        fields: [(
            "tlsMode".to_string(),
            Value {
                kind: Some(value::Kind::StringValue("istio".into())),
            },
        )]
        .into_iter()
        .collect(),
    }
}

/// The endpoint metadata of an endpoint with a sidecar (`tlsMode: istio`).
pub(crate) fn endpoint_tls_mode() -> (String, Struct) {
    (TRANSPORT_SOCKET_MATCH.to_string(), tls_mode_struct())
}

/// `filter_metadata` whose iteration (and so protobuf encoding) order is
/// sorted by key. prost models protobuf maps as `std` `HashMap`s with a
/// random seed, so two entries would encode in either order: the same
/// endpoint would get different bytes each time and content-hash versions
/// would flap. Istio marshals deterministically; here a map is rebuilt
/// (with a fresh seed) until its order is the sorted one — for the one or
/// two entries of endpoint metadata, about two tries.
pub(crate) fn sorted_metadata(
    entries: Vec<(String, Struct)>,
) -> std::collections::HashMap<String, Struct> {
    let mut map: std::collections::HashMap<String, Struct> = entries.iter().cloned().collect();
    for _ in 0..64 {
        if map.keys().zip(map.keys().skip(1)).all(|(a, b)| a <= b) {
            break;
        }
        map = entries.iter().cloned().collect();
    }
    map
}

/// Sets the client TLS of an outbound cluster from the DestinationRule's
/// `tls` in force (`tls`), or auto mTLS when it says nothing. `h2`: the
/// cluster speaks HTTP/2 (ALPN `h2` is added to ISTIO_MUTUAL).
pub(crate) fn apply_client(
    c: &mut Cluster,
    tls: Option<&ClientTlsSettings>,
    kind: DiscoveryType,
    h2: bool,
) {
    let mode = tls.and_then(|t| t.mode);
    match (mode, tls) {
        (Some(ClientTlsMode::Disable), _) => {}
        (Some(ClientTlsMode::IstioMutual), Some(t)) => {
            let sni = t.sni.clone().unwrap_or_else(|| mesh_sni(&c.name));
            c.transport_socket = Some(tls_socket(pack(&istio_mutual(
                sni,
                &t.subject_alt_names,
                h2,
            ))));
        }
        (Some(m @ (ClientTlsMode::Simple | ClientTlsMode::Mutual)), Some(t)) => {
            let ctx = external(t, m == ClientTlsMode::Mutual);
            c.transport_socket = Some(tls_socket(pack(&ctx)));
        }
        _ if kind == DiscoveryType::OriginalDst => {}
        _ => {
            // Auto mTLS: endpoints with a sidecar get ISTIO_MUTUAL.
            let ctx = istio_mutual(mesh_sni(&c.name), &[], h2);
            c.transport_socket_matches = vec![
                TransportSocketMatch {
                    name: "tlsMode-istio".into(),
                    r#match: Some(tls_mode_struct()),
                    transport_socket: Some(tls_socket(pack(&ctx))),
                },
                TransportSocketMatch {
                    name: "tlsMode-disabled".into(),
                    r#match: Some(Struct::default()),
                    transport_socket: Some(socket(
                        "envoy.transport_sockets.raw_buffer",
                        pack(&RawBuffer::default()),
                    )),
                },
            ];
        }
    }
}

/// The server side of an inbound mTLS chain: the workload certificate, the
/// mesh bundle, a client certificate required; `alpn` as the chain serves.
pub(crate) fn inbound_socket(alpn: &[&str]) -> TransportSocket {
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds("default")],
            validation_context_type: Some(combined(
                CertificateValidationContext::default(),
                "ROOTCA",
            )),
            alpn_protocols: alpn.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    tls_socket(pack(&ctx))
}
