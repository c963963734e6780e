//! mTLS test support: a client sidecar → server sidecar → backend chain,
//! configured over xDS the way Istio configures it (auto mTLS transport
//! socket matches on the client cluster, PeerAuthentication-shaped filter
//! chains on the server's inbound listener), with certificates from a real
//! rcgen CA published through the identity watch.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType as TsConfig;
use envoy_types::pb::envoy::config::core::v3::{Metadata, TrafficDirection, TransportSocket};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::{
    CombinedCertificateValidationContext, ValidationContextType,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, UpstreamTlsContext,
};
use envoy_types::pb::google::protobuf::{BoolValue, Struct, Value, value::Kind};
use meshwork_identity::Identity;
use meshwork_proxy::options::{Identity as ProxyIdentity, Limits, ProxyOptions};
use meshwork_proxy::run::ProxyHandle;
use meshwork_telemetry::AccessLogger;
use meshwork_xds::server::AdsServer;
use meshwork_xds::{TypeUrl, pack};
use tokio::sync::watch;

use crate::support::{addr, endpoints, free_port, http_listener, route_to, tcp_chain};

/// Istio's inbound mTLS application protocols.
pub const MTLS_ALPNS: &[&str] = &[
    "istio-peer-exchange",
    "istio",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];

/// PeerAuthentication modes, as the inbound listener's chains express them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// TLS only.
    Strict,
    /// TLS and plaintext on one port.
    Permissive,
    /// Plaintext only.
    Disable,
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.into(),
        ..Default::default()
    }
}

/// Istio's ISTIO_MUTUAL common context (SDS `default` + `ROOTCA`).
pub fn mesh_common(alpn: &[&str], sans: &[&str]) -> CommonTlsContext {
    #[allow(deprecated)]
    let default_validation = envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::CertificateValidationContext {
        match_subject_alt_names: sans
            .iter()
            .map(|s| envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher {
                match_pattern: Some(
                    envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern::Exact(
                        s.to_string(),
                    ),
                ),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds("default")],
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(default_validation),
                validation_context_sds_secret_config: Some(sds("ROOTCA")),
                ..Default::default()
            },
        )),
        alpn_protocols: alpn.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn tls_socket(any: envoy_types::pb::google::protobuf::Any) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(TsConfig::TypedConfig(any)),
    }
}

/// The inbound listener on `port`: HTTP (or TCP to `cluster`) chains for `mode`.
pub fn inbound_listener(port: u16, mode: Mode, route: &str, tcp_cluster: Option<&str>) -> Listener {
    let base = match tcp_cluster {
        Some(c) => tcp_chain(c, None),
        None => http_listener("x", port, route).filter_chains.remove(0),
    };
    let tls = DownstreamTlsContext {
        common_tls_context: Some(mesh_common(&["h2", "http/1.1"], &[])),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    let tls_chain = FilterChain {
        name: "mtls".into(),
        filter_chain_match: Some(FilterChainMatch {
            transport_protocol: "tls".into(),
            application_protocols: MTLS_ALPNS.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        transport_socket: Some(tls_socket(pack(&tls))),
        ..base.clone()
    };
    let plain_chain = FilterChain {
        name: "plaintext".into(),
        filter_chain_match: Some(FilterChainMatch {
            transport_protocol: "raw_buffer".into(),
            ..Default::default()
        }),
        ..base
    };
    let chains = match mode {
        Mode::Strict => vec![tls_chain],
        Mode::Permissive => vec![tls_chain, plain_chain],
        Mode::Disable => vec![plain_chain],
    };
    Listener {
        name: "virtualInbound".into(),
        address: Some(addr(port)),
        filter_chains: chains,
        traffic_direction: TrafficDirection::Inbound as i32,
        ..Default::default()
    }
}

/// Istio's auto-mTLS matches: `tlsMode-istio` → ISTIO_MUTUAL, else plaintext.
pub fn auto_mtls(mut c: Cluster, sans: &[&str]) -> Cluster {
    let upstream = UpstreamTlsContext {
        common_tls_context: Some(mesh_common(&["istio-peer-exchange", "istio"], sans)),
        sni: "outbound_.8080_._.server.default.svc.cluster.local".into(),
        ..Default::default()
    };
    let criteria = Struct {
        fields: [(
            "tlsMode".to_string(),
            Value {
                kind: Some(Kind::StringValue("istio".into())),
            },
        )]
        .into_iter()
        .collect(),
    };
    c.transport_socket_matches = vec![
        TransportSocketMatch {
            name: "tlsMode-istio".into(),
            r#match: Some(criteria),
            transport_socket: Some(tls_socket(pack(&upstream))),
        },
        TransportSocketMatch {
            name: "tlsMode-disabled".into(),
            r#match: Some(Struct::default()),
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.raw_buffer".into(),
                config_type: Some(TsConfig::TypedConfig(pack(&RawBuffer {}))),
            }),
        },
    ];
    c
}

/// Endpoints; with `sidecar` they carry `tlsMode: istio`.
pub fn mesh_endpoints(cluster: &str, ports: &[u16], sidecar: bool) -> ClusterLoadAssignment {
    let mut la = endpoints(cluster, ports);
    if sidecar {
        for ep in &mut la.endpoints[0].lb_endpoints {
            let mut md = Metadata::default();
            md.filter_metadata.insert(
                "envoy.transport_socket_match".into(),
                Struct {
                    fields: [(
                        "tlsMode".to_string(),
                        Value {
                            kind: Some(Kind::StringValue("istio".into())),
                        },
                    )]
                    .into_iter()
                    .collect(),
                },
            );
            ep.metadata = Some(md);
        }
    }
    la
}

/// A control plane, a proxy with a workload identity, and the identity's sender.
pub struct Sidecar {
    pub ads: AdsServer,
    pub proxy: ProxyHandle,
    pub certs: watch::Sender<Option<Arc<Identity>>>,
}

impl Sidecar {
    /// Starts an ADS server and a proxy for `workload` holding `identity`.
    pub async fn start(workload: &str, identity: Arc<Identity>, log: AccessLogger) -> Sidecar {
        let ads = AdsServer::new();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let xds_addr = l.local_addr().unwrap();
        tokio::spawn(ads.clone().serve(l));
        let (certs, rx) = watch::channel(Some(identity));
        let any = |p| SocketAddr::from(([127, 0, 0, 1], p));
        let opts = ProxyOptions {
            identity: ProxyIdentity {
                node_id: format!("sidecar~127.0.0.1~{workload}.default~default.svc.cluster.local"),
                namespace: "default".into(),
                workload: workload.into(),
                labels: [
                    ("app".to_string(), workload.to_string()),
                    ("version".to_string(), "v1".to_string()),
                ]
                .into(),
                service_account: workload.into(),
                trust_domain: "cluster.local".into(),
                ..Default::default()
            },
            xds_address: xds_addr.to_string(),
            admin_address: any(0),
            health_address: any(0),
            stats_address: any(0),
            merged_stats_address: any(0),
            limits: Limits::default(),
            access_log: false,
            workload_certs: Some(rx),
            ..Default::default()
        };
        let proxy = meshwork_proxy::run::start(opts, log, None).await.unwrap();
        Sidecar { ads, proxy, certs }
    }

    /// Publishes a (rotated) identity.
    pub fn rotate(&self, identity: Arc<Identity>) {
        self.certs.send_replace(Some(identity));
    }

    /// The proxy's Prometheus text.
    pub async fn metrics(&self) -> String {
        crate::support::http_get(self.proxy.stats_addr, "/stats/prometheus")
            .await
            .unwrap()
            .1
    }
}

/// A client sidecar with an outbound HTTP listener (returned port) to the
/// server sidecar's inbound port, and a server sidecar in `mode` in front of
/// `backend`.
pub struct Chain {
    pub client: Sidecar,
    pub server: Sidecar,
    /// The client sidecar's outbound HTTP listener.
    pub outbound: u16,
    /// The server sidecar's inbound listener.
    pub inbound: u16,
}

/// Configures the server side: inbound listener in `mode` to `backend`.
pub fn serve_inbound(server: &Sidecar, inbound: u16, backend: u16, mode: Mode) {
    server.ads.set(
        TypeUrl::Cluster,
        [(
            "inbound|8080||".to_string(),
            pack(&crate::support::eds_cluster("inbound|8080||", false)),
        )],
    );
    server.ads.set(
        TypeUrl::Endpoint,
        [(
            "inbound|8080||".to_string(),
            pack(&endpoints("inbound|8080||", &[backend])),
        )],
    );
    server.ads.set(
        TypeUrl::Route,
        [(
            "inbound|8080||".to_string(),
            pack(&route_to("inbound|8080||", "inbound|8080||", None)),
        )],
    );
    server.ads.set(
        TypeUrl::Listener,
        [(
            "virtualInbound".to_string(),
            pack(&inbound_listener(inbound, mode, "inbound|8080||", None)),
        )],
    );
}

/// The client's cluster name (Istio's shape).
pub const OUTBOUND: &str = "outbound|8080||server.default.svc.cluster.local";

/// Configures the client side: outbound listener on `outbound` to the
/// server's `inbound` port, auto mTLS when `sidecar`.
pub fn serve_outbound(client: &Sidecar, outbound: u16, inbound: u16, sidecar: bool, h2: bool) {
    client.ads.set(
        TypeUrl::Cluster,
        [(
            OUTBOUND.to_string(),
            pack(&auto_mtls(crate::support::eds_cluster(OUTBOUND, h2), &[])),
        )],
    );
    client.ads.set(
        TypeUrl::Endpoint,
        [(
            OUTBOUND.to_string(),
            pack(&mesh_endpoints(OUTBOUND, &[inbound], sidecar)),
        )],
    );
    client.ads.set(
        TypeUrl::Route,
        [("8080".to_string(), pack(&route_to("8080", OUTBOUND, None)))],
    );
    client.ads.set(
        TypeUrl::Listener,
        [(
            "0.0.0.0_8080".to_string(),
            pack(&http_listener("0.0.0.0_8080", outbound, "8080")),
        )],
    );
}

/// Starts both sidecars with identities `client`/`server` from `ca`.
pub async fn chain(
    ca: &meshwork_identity::tls_fixture::TestCa,
    backend: u16,
    mode: Mode,
    log: AccessLogger,
) -> Chain {
    let client = Sidecar::start(
        "client",
        ca.identity("default", "client").unwrap(),
        log.clone(),
    )
    .await;
    let server = Sidecar::start("server", ca.identity("default", "server").unwrap(), log).await;
    let (outbound, inbound) = (free_port(), free_port());
    serve_inbound(&server, inbound, backend, mode);
    serve_outbound(&client, outbound, inbound, mode != Mode::Disable, false);
    wait_listening(inbound).await;
    wait_listening(outbound).await;
    Chain {
        client,
        server,
        outbound,
        inbound,
    }
}

/// Waits until something accepts on `port`.
pub async fn wait_listening(port: u16) {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listens on {port}");
}
