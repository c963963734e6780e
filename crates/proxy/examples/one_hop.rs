//! One hop through a real Meshwork sidecar, all in one process.
//!
//! Starts an in-process ADS (xDS) server, two small HTTP backends playing
//! `reviews-v1` and `reviews-v2`, and a proxy configured only over xDS with a
//! listener, a route and an EDS cluster named the way Istio names them
//! (`outbound|9080||reviews.default.svc.cluster.local`, endpoint weights 3:1).
//! It then sends 1,000 requests through the proxy, prints how they were
//! split between the backends, prints the proxy's `istio_requests_total`
//! metric lines, and drains the proxy.
//!
//! Run with `cargo run --release -p meshwork-proxy --example one_hop`
//! (or `scripts/demo`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, Metadata, SocketAddress};
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
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds,
};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Duration as PbDuration, Struct, UInt32Value, Value};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshwork_proxy::options::{Identity, Limits, ProxyOptions};
use meshwork_telemetry::AccessLogger;
use meshwork_xds::server::AdsServer;
use meshwork_xds::{TypeUrl, pack};

const REQUESTS: usize = 1_000;
const CONCURRENCY: usize = 8;
const SERVICE: &str = "reviews.default.svc.cluster.local";
const CLUSTER: &str = "outbound|9080||reviews.default.svc.cluster.local";

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // --- the control plane: an ADS server on a loopback port ---------------
    let ads = AdsServer::new();
    let xds_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let xds_addr = xds_listener.local_addr()?;
    tokio::spawn(ads.clone().serve(xds_listener));

    // --- two workloads behind one service ----------------------------------
    let v1 = backend("reviews-v1").await?;
    let v2 = backend("reviews-v2").await?;

    // --- the sidecar of `productpage-v1`, configured only over xDS ---------
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let opts = ProxyOptions {
        identity: Identity {
            node_id: "sidecar~127.0.0.1~productpage-v1.default~default.svc.cluster.local".into(),
            cluster: "Kubernetes".into(),
            namespace: "default".into(),
            workload: "productpage-v1".into(),
            labels: [("app", "productpage"), ("version", "v1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            service_account: "bookinfo-productpage".into(),
            trust_domain: "cluster.local".into(),
        },
        xds_address: xds_addr.to_string(),
        admin_address: loopback(0),
        health_address: loopback(0),
        stats_address: loopback(0),
        merged_stats_address: loopback(0),
        limits: Limits {
            drain_period: Duration::from_secs(1),
            ..Limits::default()
        },
        access_log: false,
        workload_certs: None,
        ..Default::default()
    };
    let proxy = meshwork_proxy::run::start(opts, AccessLogger::disabled(), None).await?;

    // --- what the control plane pushes --------------------------------------
    let listen_port = free_port()?;
    ads.set(TypeUrl::Cluster, [(CLUSTER.to_string(), pack(&cluster()))]);
    ads.set(
        TypeUrl::Endpoint,
        [(
            CLUSTER.to_string(),
            pack(&endpoints(&[
                (v1, "reviews-v1", "v1", 3),
                (v2, "reviews-v2", "v2", 1),
            ])),
        )],
    );
    ads.set(TypeUrl::Route, [("9080".to_string(), pack(&route("9080")))]);
    ads.set(
        TypeUrl::Listener,
        [(
            "outbound_9080".to_string(),
            pack(&listener("outbound_9080", listen_port, "9080")),
        )],
    );

    println!("Meshwork one-hop demo");
    println!("  xDS (ADS) server      {xds_addr}");
    println!(
        "  backends              reviews-v1 on :{v1} (weight 3), reviews-v2 on :{v2} (weight 1)"
    );
    println!("  proxy listener        127.0.0.1:{listen_port} -> {CLUSTER}");
    println!(
        "  proxy stats           http://{}/stats/prometheus",
        proxy.stats_addr
    );

    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let ready = Instant::now();
    wait_ready(&client, proxy.health_addr, listen_port).await?;
    println!(
        "  proxy ready after     {} ms (first complete xDS config ACKed, listener bound)",
        ready.elapsed().as_millis()
    );

    // --- 1,000 requests through the proxy ----------------------------------
    println!(
        "\nSending {REQUESTS} requests ({CONCURRENCY} concurrent keep-alive clients) through the proxy..."
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            let mut latencies = Vec::new();
            for i in (worker..REQUESTS).step_by(CONCURRENCY) {
                let req =
                    hyper::Request::get(format!("http://127.0.0.1:{listen_port}/reviews/{i}"))
                        .header("host", format!("{SERVICE}:9080"))
                        .body(Empty::<Bytes>::new())?;
                let t = Instant::now();
                let resp = client.request(req).await?;
                let status = resp.status();
                let who = resp
                    .headers()
                    .get("x-backend")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("(none)")
                    .to_string();
                resp.into_body().collect().await?;
                latencies.push(t.elapsed());
                *seen
                    .entry(format!("{who} {}", status.as_u16()))
                    .or_default() += 1;
            }
            Ok::<_, Error>((seen, latencies))
        }));
    }
    let mut split: BTreeMap<String, usize> = BTreeMap::new();
    let mut latencies = Vec::new();
    for t in tasks {
        let (seen, lat) = t.await??;
        for (k, n) in seen {
            *split.entry(k).or_default() += n;
        }
        latencies.extend(lat);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "  done in {} ms ({:.0} req/s); latency p50 {:.2} ms, p99 {:.2} ms",
        elapsed.as_millis(),
        REQUESTS as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
    println!("\nSplit between backends (backend, status: requests):");
    for (k, n) in &split {
        println!(
            "  {k:<20} {n:>5}  ({:.1}%)",
            *n as f64 * 100.0 / REQUESTS as f64
        );
    }

    // --- the proxy's Istio metrics ------------------------------------------
    let stats = get(&client, proxy.stats_addr, "/stats/prometheus").await?;
    println!(
        "\nistio_requests_total from http://{}/stats/prometheus:",
        proxy.stats_addr
    );
    let mut printed = 0;
    for line in stats
        .1
        .lines()
        .filter(|l| l.starts_with("istio_requests_total"))
    {
        println!("  {line}");
        printed += 1;
    }
    if printed == 0 {
        println!("  (no istio_requests_total lines found)");
    }

    // --- drain and stop -----------------------------------------------------
    drop(client);
    let stopping = Instant::now();
    proxy.shutdown();
    proxy.wait().await;
    println!(
        "\nProxy drained and stopped in {} ms.",
        stopping.elapsed().as_millis()
    );

    let total: usize = split.values().sum();
    let ok: usize = split
        .iter()
        .filter(|(k, _)| k.ends_with(" 200"))
        .map(|(_, n)| n)
        .sum();
    if total != REQUESTS || ok != REQUESTS || printed == 0 {
        return Err(
            format!("expected {REQUESTS} x 200 and metrics; got {ok} x 200 of {total}").into(),
        );
    }
    Ok(())
}

/// Polls `/healthz/ready` until 200 and the listener accepts connections.
async fn wait_ready(
    client: &Client<HttpConnector, Empty<Bytes>>,
    health: SocketAddr,
    port: u16,
) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let ready = matches!(get(client, health, "/healthz/ready").await, Ok((200, _)));
        if ready
            && tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("the proxy did not become ready within 10 s".into())
}

async fn get(
    client: &Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> Result<(u16, String), Error> {
    let resp = client.get(format!("http://{addr}{path}").parse()?).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A real HTTP/1.1 + HTTP/2 backend that answers with its name.
async fn backend(name: &'static str) -> Result<u16, Error> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = format!("{name}: {} {}\n", req.method(), req.uri());
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .header("x-backend", name)
                                .body(Full::new(Bytes::from(body)))
                                .expect("static response"),
                        )
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Ok(port)
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

// === xDS resources, named as Istio names them ===

fn addr(port: u16) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn listener(name: &str, port: u16, route: &str) -> Listener {
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

fn route(name: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: format!("{SERVICE}:9080"),
            domains: vec!["*".into()],
            routes: vec![Route {
                name: "default".into(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::Cluster(CLUSTER.into())),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn cluster() -> Cluster {
    Cluster {
        name: CLUSTER.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            service_name: CLUSTER.into(),
            ..Default::default()
        }),
        connect_timeout: Some(PbDuration {
            seconds: 1,
            nanos: 0,
        }),
        lb_policy: LbPolicy::RoundRobin as i32,
        ..Default::default()
    }
}

/// Endpoints `(port, workload, version, weight)` with Istio's
/// `istio.workload` metadata, so metrics name the destination workload.
fn endpoints(eps: &[(u16, &str, &str, u32)]) -> ClusterLoadAssignment {
    let lb_endpoints = eps
        .iter()
        .map(|(port, workload, version, weight)| {
            let meta = format!("{workload};default;reviews;{version};Kubernetes");
            let istio = Struct {
                fields: [(
                    "workload".to_string(),
                    Value {
                        kind: Some(Kind::StringValue(meta)),
                    },
                )]
                .into_iter()
                .collect(),
            };
            LbEndpoint {
                host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                    address: Some(addr(*port)),
                    ..Default::default()
                })),
                load_balancing_weight: Some(UInt32Value { value: *weight }),
                metadata: Some(Metadata {
                    filter_metadata: [("istio".to_string(), istio)].into_iter().collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: CLUSTER.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}
