//! Test support: an in-process ADS server feeding a real proxy, xDS resource
//! builders, and small real backends.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, Http2ProtocolOptions, SocketAddress};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints};
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, FilterChainMatch, Listener};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{HttpConnectionManager, Rds};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy;
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};
use meshwork_proxy::options::{Identity, Limits, ProxyOptions};
use meshwork_proxy::run::ProxyHandle;
use meshwork_telemetry::AccessLogger;
use meshwork_xds::server::AdsServer;
use meshwork_xds::{TypeUrl, pack};

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `127.0.0.1:port` as an xDS address.
pub fn addr(port: u16) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// A listener on 127.0.0.1:port with one HTTP chain using RDS `route`.
pub fn http_listener(name: &str, port: u16, route: &str) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            route_config_name: route.into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    Listener {
        name: name.into(),
        address: Some(addr(port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(ConfigType::TypedConfig(pack(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A TCP proxy filter chain to `cluster`.
pub fn tcp_chain(cluster: &str, m: Option<FilterChainMatch>) -> FilterChain {
    let tp = TcpProxy {
        stat_prefix: cluster.into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    };
    FilterChain {
        filter_chain_match: m,
        filters: vec![Filter {
            name: "envoy.filters.network.tcp_proxy".into(),
            config_type: Some(ConfigType::TypedConfig(pack(&tp))),
        }],
        ..Default::default()
    }
}

/// A listener on 127.0.0.1:port proxying TCP to `cluster`.
pub fn tcp_listener(name: &str, port: u16, cluster: &str) -> Listener {
    Listener {
        name: name.into(),
        address: Some(addr(port)),
        filter_chains: vec![tcp_chain(cluster, None)],
        ..Default::default()
    }
}

/// A route configuration with one `*` virtual host sending `/` to `cluster`.
pub fn route_to(name: &str, cluster: &str, timeout: Option<Duration>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                name: "default".into(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
                    timeout: timeout.map(|t| PbDuration {
                        seconds: t.as_secs() as i64,
                        nanos: t.subsec_nanos() as i32,
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// An EDS cluster (optionally HTTP/2 upstream).
#[allow(deprecated)]
pub fn eds_cluster(name: &str, h2: bool) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            service_name: name.into(),
            ..Default::default()
        }),
        connect_timeout: Some(PbDuration {
            seconds: 1,
            nanos: 0,
        }),
        http2_protocol_options: h2.then(Http2ProtocolOptions::default),
        ..Default::default()
    }
}

/// Endpoints on loopback ports.
pub fn endpoints(cluster: &str, ports: &[u16]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: ports
                .iter()
                .map(|p| LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(addr(*p)),
                        ..Default::default()
                    })),
                    load_balancing_weight: Some(UInt32Value { value: 1 }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A control plane and a proxy connected to it.
pub struct Mesh {
    pub ads: AdsServer,
    pub proxy: ProxyHandle,
    pub xds_addr: SocketAddr,
}

impl Mesh {
    /// Starts an ADS server and a proxy with default limits.
    pub async fn start() -> Mesh {
        Self::start_with(Limits::default()).await
    }

    /// Starts an ADS server and a proxy with these limits.
    pub async fn start_with(limits: Limits) -> Mesh {
        Self::start_full(limits, AccessLogger::disabled(), "test", false).await
    }

    /// Starts an ADS server and a proxy with a given access logger, workload
    /// name and (for the peer exchange) labels app=<workload>, version=v1.
    pub async fn start_full(
        limits: Limits,
        log: AccessLogger,
        workload: &str,
        labels: bool,
    ) -> Mesh {
        let ads = AdsServer::new();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let xds_addr = l.local_addr().unwrap();
        tokio::spawn(ads.clone().serve(l));
        let any = |p| SocketAddr::from(([127, 0, 0, 1], p));
        let opts = ProxyOptions {
            identity: Identity {
                node_id: "sidecar~127.0.0.1~test.default~default.svc.cluster.local".into(),
                namespace: "default".into(),
                workload: workload.into(),
                labels: if labels {
                    [
                        ("app".to_string(), workload.to_string()),
                        ("version".to_string(), "v1".to_string()),
                    ]
                    .into()
                } else {
                    Default::default()
                },
                ..Default::default()
            },
            xds_address: xds_addr.to_string(),
            admin_address: any(0),
            health_address: any(0),
            stats_address: any(0),
            merged_stats_address: any(0),
            limits,
            access_log: false,
            workload_certs: None,
            ..Default::default()
        };
        let proxy = meshwork_proxy::run::start(opts, log, None).await.unwrap();
        Mesh {
            ads,
            proxy,
            xds_addr,
        }
    }

    /// Serves one listener, route and EDS cluster.
    pub fn serve_http(&self, listener_port: u16, backend_ports: &[u16], h2_upstream: bool) {
        self.ads.set(
            TypeUrl::Cluster,
            [(
                "backend".to_string(),
                pack(&eds_cluster("backend", h2_upstream)),
            )],
        );
        self.ads.set(
            TypeUrl::Endpoint,
            [(
                "backend".to_string(),
                pack(&endpoints("backend", backend_ports)),
            )],
        );
        self.ads.set(
            TypeUrl::Route,
            [("r".to_string(), pack(&route_to("r", "backend", None)))],
        );
        self.ads.set(
            TypeUrl::Listener,
            [(
                "l".to_string(),
                pack(&http_listener("l", listener_port, "r")),
            )],
        );
    }

    /// Waits until `/healthz/ready` says 200 and `port` accepts connections.
    pub async fn wait_ready(&self, port: u16) {
        for _ in 0..200 {
            let ok = http_get(self.proxy.health_addr, "/healthz/ready")
                .await
                .map(|(s, _)| s == 200)
                .unwrap_or(false);
            if ok
                && tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("proxy never became ready on port {port}");
    }

    /// GETs an admin path.
    pub async fn admin(&self, path: &str) -> (u16, String) {
        http_get(self.proxy.admin_addr, path).await.unwrap()
    }
}

/// A one-shot HTTP/1.1 GET with a raw socket: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A proxy with `limits` whose listener (the returned port) sends
/// everything to one [`http_backend`].
pub async fn mesh_with(limits: meshwork_proxy::options::Limits) -> (Mesh, u16) {
    let a = http_backend("a").await;
    let mesh = Mesh::start_with(limits).await;
    let port = free_port();
    mesh.serve_http(port, &[a], false);
    mesh.wait_ready(port).await;
    (mesh, port)
}

/// A real HTTP/1.1 + HTTP/2 backend (hyper) that answers with its name and
/// echoes request bodies (`/echo` streams them back, `/echo-after-read`
/// reads them whole first); `/slow` waits 2 s.
pub async fn http_backend(name: &'static str) -> u16 {
    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| async move {
                        if req.uri().path() == "/slow" {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                        let echo_headers = format!(
                            "{} {} host={:?} peer={}",
                            req.method(),
                            req.uri(),
                            req.headers().get("host"),
                            req.headers().contains_key("x-envoy-peer-metadata")
                        );
                        let (parts, body) = req.into_parts();
                        let resp = if parts.uri.path() == "/echo-after-read" {
                            // Answers only once the whole body is in, like a
                            // server that asked for it with 100-continue.
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            hyper::Response::builder()
                                .header("x-backend", name)
                                .body(
                                    http_body_util::Full::new(body)
                                        .map_err(|e| match e {})
                                        .boxed(),
                                )
                                .unwrap()
                        } else if parts.uri.path() == "/echo" {
                            hyper::Response::builder()
                                .header("x-backend", name)
                                .body(body.boxed())
                                .unwrap()
                        } else {
                            let _ = body.collect().await;
                            hyper::Response::builder()
                                .header("x-backend", name)
                                .body(
                                    http_body_util::Full::new(bytes::Bytes::from(format!(
                                        "{name}: {echo_headers}"
                                    )))
                                    .map_err(|e| match e {})
                                    .boxed(),
                                )
                                .unwrap()
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    },
                );
                let io = hyper_util::rt::TokioIo::new(s);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection_with_upgrades(io, svc)
                .await;
            });
        }
    });
    port
}
