//! Meshwork setups: the real `meshwork proxy` binary configured only over
//! xDS (an in-process ADS server per proxy): one hop in plaintext, and two
//! hops — client sidecar to server sidecar over mutual TLS with X.509-SVIDs
//! from a test CA, as between two pods of a mesh.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType as SocketConfig;
use envoy_types::pb::envoy::config::core::v3::{
    Address, DataSource, SocketAddress, TransportSocket,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier as TcpCluster;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, TlsCertificate,
    UpstreamTlsContext,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    UpstreamProtocolOptions, UseDownstreamHttpConfig,
};
use envoy_types::pb::google::protobuf::BoolValue;
use meshwork_identity::pem::certs_to_pem;
use meshwork_identity::tls_fixture::TestCa;
use meshwork_xds::server::AdsServer;
use meshwork_xds::{TypeUrl, pack};

use crate::backend::Backend;
use crate::setup::{Entries, Setup, free_addr};

fn addr(a: SocketAddr) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: a.ip().to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(a.port()))),
            ..Default::default()
        })),
    }
}

/// A static cluster of one endpoint that speaks the downstream's protocol
/// (HTTP/1.1 for HTTP/1.1, HTTP/2 for h2c and gRPC), optionally over mTLS.
fn cluster(name: &str, to: SocketAddr, tls: Option<&Tls>) -> Cluster {
    let opts = HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(
            UseDownstreamHttpConfig::default(),
        )),
        ..Default::default()
    };
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            pack(&opts),
        )]
        .into(),
        transport_socket: tls.map(|t| t.upstream()),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(addr(to)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn http_listener(name: &str, at: SocketAddr, cluster: &str, tls: Option<&Tls>) -> Listener {
    let route = RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(RouteSpecifier::RouteConfig(route)),
        ..Default::default()
    };
    listener(
        name,
        at,
        "envoy.filters.network.http_connection_manager",
        pack(&hcm),
        tls,
    )
}

fn tcp_listener(name: &str, at: SocketAddr, cluster: &str, tls: Option<&Tls>) -> Listener {
    let tcp = TcpProxy {
        stat_prefix: name.into(),
        cluster_specifier: Some(TcpCluster::Cluster(cluster.into())),
        ..Default::default()
    };
    listener(name, at, "envoy.filters.network.tcp_proxy", pack(&tcp), tls)
}

fn listener(
    name: &str,
    at: SocketAddr,
    filter: &str,
    config: envoy_types::pb::google::protobuf::Any,
    tls: Option<&Tls>,
) -> Listener {
    Listener {
        name: name.into(),
        address: Some(addr(at)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: filter.into(),
                config_type: Some(ConfigType::TypedConfig(config)),
            }],
            transport_socket: tls.map(|t| t.downstream()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// One sidecar's certificate and the mesh root, inline PEM.
struct Tls {
    chain: String,
    key: String,
    root: String,
    /// The SPIFFE id the peer must present.
    peer: String,
}

impl Tls {
    fn pair(ca: &TestCa, me: &str, peer: &str) -> anyhow::Result<Tls> {
        let svid = ca.svid("bench", me, std::time::Duration::from_secs(86400))?;
        Ok(Tls {
            chain: certs_to_pem(&svid.chain),
            key: meshwork_identity::pem::to_pem("PRIVATE KEY", svid.key.secret_der()),
            root: certs_to_pem(&ca.bundle().roots),
            peer: format!("spiffe://{}/ns/bench/sa/{peer}", ca.trust_domain),
        })
    }

    fn common(&self, alpn: &[&str]) -> CommonTlsContext {
        let inline = |s: &str| DataSource {
            specifier: Some(Specifier::InlineString(s.to_string())),
            ..Default::default()
        };
        use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;
        use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
        CommonTlsContext {
            tls_certificates: vec![TlsCertificate {
                certificate_chain: Some(inline(&self.chain)),
                private_key: Some(inline(&self.key)),
                ..Default::default()
            }],
            validation_context_type: Some(ValidationContextType::ValidationContext(
                #[allow(deprecated)]
                CertificateValidationContext {
                    trusted_ca: Some(inline(&self.root)),
                    match_subject_alt_names: vec![StringMatcher {
                        match_pattern: Some(MatchPattern::Exact(self.peer.clone())),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            alpn_protocols: alpn.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn upstream(&self) -> TransportSocket {
        let ctx = UpstreamTlsContext {
            common_tls_context: Some(self.common(&["istio-peer-exchange", "istio"])),
            ..Default::default()
        };
        TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(SocketConfig::TypedConfig(pack(&ctx))),
        }
    }

    fn downstream(&self) -> TransportSocket {
        let ctx = DownstreamTlsContext {
            common_tls_context: Some(self.common(&["h2", "http/1.1"])),
            require_client_certificate: Some(BoolValue { value: true }),
            ..Default::default()
        };
        TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(SocketConfig::TypedConfig(pack(&ctx))),
        }
    }
}

/// How to start a proxy process.
pub struct ProxyCmd<'a> {
    /// The `meshwork` binary.
    pub exe: &'a Path,
    /// Worker threads (`--concurrency`).
    pub concurrency: usize,
    /// A profiler to run it under (words), e.g. valgrind.
    pub wrapper: &'a [String],
}

/// Serves `listeners` and `clusters` over a fresh ADS server and starts a
/// proxy on it.
async fn proxy(
    cmd: &ProxyCmd<'_>,
    listeners: Vec<Listener>,
    clusters: Vec<Cluster>,
) -> anyhow::Result<tokio::process::Child> {
    let ads = AdsServer::new();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let xds = l.local_addr()?;
    tokio::spawn(ads.clone().serve(l));
    ads.set(
        TypeUrl::Cluster,
        clusters.iter().map(|c| (c.name.clone(), pack(c))),
    );
    ads.set(
        TypeUrl::Listener,
        listeners.iter().map(|l| (l.name.clone(), pack(l))),
    );
    let mut words = cmd.wrapper.to_vec();
    words.push(cmd.exe.display().to_string());
    let p = |a: SocketAddr| a.to_string();
    let child = tokio::process::Command::new(&words[0])
        .args(&words[1..])
        .args([
            "proxy",
            "--xds-address",
            &xds.to_string(),
            "--no-access-log",
        ])
        .args(["--concurrency", &cmd.concurrency.to_string()])
        .args(["--admin-address", &p(free_addr()?)])
        .args(["--health-address", &p(free_addr()?)])
        .args(["--stats-address", &p(free_addr()?)])
        .args(["--merged-stats-address", &p(free_addr()?)])
        .env("MESHWORK_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    Ok(child)
}

/// One plaintext hop: load generator → meshwork → backend. `name` tells
/// the build under test from a baseline build.
pub async fn one_hop(name: &'static str, cmd: &ProxyCmd<'_>, b: &Backend) -> anyhow::Result<Setup> {
    let at = Entries::free()?;
    let child = proxy(
        cmd,
        vec![
            http_listener("http", at.h1, "backend", None),
            tcp_listener("tcp", at.tcp, "backend-tcp", None),
            tcp_listener("l4", at.l4, "backend", None),
        ],
        vec![
            cluster("backend", b.http, None),
            cluster("backend-tcp", b.tcp, None),
        ],
    )
    .await?;
    let at = Entries {
        h2: at.h1,
        grpc: at.h1,
        ..at
    };
    Setup::started(name, at, vec![child]).await
}

/// Two hops: load generator → client sidecar → (mTLS) → server sidecar →
/// backend. CPU and memory are the sum of both sidecars.
pub async fn two_hops(cmd: &ProxyCmd<'_>, b: &Backend) -> anyhow::Result<Setup> {
    let ca = TestCa::new("cluster.local")?;
    let client_tls = Tls::pair(&ca, "client", "server")?;
    let server_tls = Tls::pair(&ca, "server", "client")?;
    let inbound = Entries::free()?;
    let server = proxy(
        cmd,
        vec![
            http_listener("inbound-http", inbound.h1, "backend", Some(&server_tls)),
            tcp_listener("inbound-tcp", inbound.tcp, "backend-tcp", Some(&server_tls)),
            tcp_listener("inbound-l4", inbound.l4, "backend", Some(&server_tls)),
        ],
        vec![
            cluster("backend", b.http, None),
            cluster("backend-tcp", b.tcp, None),
        ],
    )
    .await?;
    let out = Entries::free()?;
    let client = proxy(
        cmd,
        vec![
            http_listener("outbound-http", out.h1, "server", None),
            tcp_listener("outbound-tcp", out.tcp, "server-tcp", None),
            tcp_listener("outbound-l4", out.l4, "server-l4", None),
        ],
        vec![
            cluster("server", inbound.h1, Some(&client_tls)),
            cluster("server-tcp", inbound.tcp, Some(&client_tls)),
            cluster("server-l4", inbound.l4, Some(&client_tls)),
        ],
    )
    .await?;
    let at = Entries {
        h2: out.h1,
        grpc: out.h1,
        ..out
    };
    Setup::started("meshwork two hops mTLS", at, vec![client, server]).await
}
