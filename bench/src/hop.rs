//! One proxy hop on loopback: HTTP/1.1 requests with 1 KB bodies at a fixed
//! rate, direct to a backend and through the real `meshwork proxy` binary,
//! interleaved and repeated; prints latency percentiles, the added latency
//! per hop, and the proxy's CPU time and peak resident memory from /proc.
//!
//! Usage: `hop [RATE_PER_S] [SECONDS_PER_ROUND] [ROUNDS]` (defaults 1000 10 3).
//! Run it through `bench/run`, which builds the release binaries.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints};
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use http_body_util::{BodyExt, Full};
use meshwork_xds::server::AdsServer;
use meshwork_xds::{TypeUrl, pack};

const CONNECTIONS: usize = 4;
/// How late a timer wake-up may be before it counts as the sender falling behind.
const TIMER_SLACK: Duration = Duration::from_millis(2);

fn addr(port: u16) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A backend answering every request with 1 KB.
async fn backend() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let body = Bytes::from(vec![b'x'; 1024]);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let _ = s.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let body = body.clone();
                        async move {
                            let _ = req.into_body().collect().await;
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body)))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    port
}

fn serve_config(ads: &AdsServer, listen: u16, backend: u16) {
    let cluster = Cluster {
        name: "backend".into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: "backend".into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(addr(backend)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let route = RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::Cluster("backend".into())),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: "bench".into(),
        route_specifier: Some(RouteSpecifier::RouteConfig(route)),
        ..Default::default()
    };
    let listener = Listener {
        name: "bench".into(),
        address: Some(addr(listen)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(ConfigType::TypedConfig(pack(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    ads.set(TypeUrl::Cluster, [("backend".to_string(), pack(&cluster))]);
    ads.set(TypeUrl::Listener, [("bench".to_string(), pack(&listener))]);
}

/// Sends at a fixed total rate over `CONNECTIONS` keep-alive connections for
/// `secs` and returns the sorted latencies in µs.
async fn load(target: SocketAddr, rate: u32, secs: u64) -> Vec<u64> {
    let per_conn = Duration::from_secs_f64(CONNECTIONS as f64 / f64::from(rate));
    let body = Bytes::from(vec![b'y'; 1024]);
    let mut tasks = Vec::new();
    for i in 0..CONNECTIONS {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let s = tokio::net::TcpStream::connect(target).await.unwrap();
            let _ = s.set_nodelay(true);
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let start =
                tokio::time::Instant::now() + per_conn.mul_f64(i as f64 / CONNECTIONS as f64);
            let end = start + Duration::from_secs(secs);
            let mut next = start;
            let mut lat = Vec::new();
            while next < end {
                tokio::time::sleep_until(next).await;
                let req = http::Request::post(format!("http://{target}/order"))
                    .header("host", "shop")
                    .body(Full::new(body.clone()))
                    .unwrap();
                send.ready().await.unwrap();
                // Tokio's timer wakes up to ~1 ms late; that lateness is not
                // the proxy's. Measure from the actual send unless this
                // sender fell behind its schedule by more than that slack
                // (a slow previous response): then from the schedule, so
                // stalls still count (no coordinated omission).
                let now = tokio::time::Instant::now();
                let begin = if now.duration_since(next) > TIMER_SLACK {
                    next
                } else {
                    now
                };
                let resp = send.send_request(req).await.unwrap();
                let _ = resp.into_body().collect().await.unwrap();
                lat.push(begin.elapsed().as_micros() as u64);
                next += per_conn;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    all
}

fn pct(v: &[u64], p: f64) -> u64 {
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn proc_stat(pid: u32) -> (f64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    (ticks / 100.0, hwm)
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rate: u32 = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(1000);
    let secs: u64 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(10);
    let rounds: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(3);
    let exe = std::env::current_exe()?.with_file_name("meshwork");
    anyhow::ensure!(
        exe.exists(),
        "{} not found: run bench/run (it builds it)",
        exe.display()
    );

    let backend_port = backend().await;
    let ads = AdsServer::new();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let xds = l.local_addr()?;
    tokio::spawn(ads.clone().serve(l));
    let listen = free_port();
    serve_config(&ads, listen, backend_port);
    let p = |port: u16| format!("127.0.0.1:{port}");
    // MESHWORK_PROXY_WRAPPER runs the proxy under a profiler, e.g.
    // "valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out".
    let wrapper = std::env::var("MESHWORK_PROXY_WRAPPER").unwrap_or_default();
    let mut words: Vec<String> = wrapper.split_whitespace().map(str::to_string).collect();
    words.push(exe.display().to_string());
    let mut child = tokio::process::Command::new(&words[0])
        .args(&words[1..])
        .args([
            "proxy",
            "--xds-address",
            &xds.to_string(),
            "--no-access-log",
            "--concurrency",
            "1",
        ])
        .args([
            "--admin-address",
            &p(free_port()),
            "--health-address",
            &p(free_port()),
        ])
        .args([
            "--stats-address",
            &p(free_port()),
            "--merged-stats-address",
            &p(free_port()),
        ])
        .env("MESHWORK_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    let proxy: SocketAddr = ([127, 0, 0, 1], listen).into();
    let direct: SocketAddr = ([127, 0, 0, 1], backend_port).into();
    for _ in 0..2000 {
        if tokio::net::TcpStream::connect(proxy).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Warm up both paths.
    load(direct, rate, 1).await;
    load(proxy, rate, 1).await;

    println!("| round | setup | p50 µs | p90 µs | p99 µs | max µs | requests |");
    println!("|---|---|---|---|---|---|---|");
    let (mut d50, mut p50s, mut d99, mut p99s) = (vec![], vec![], vec![], vec![]);
    let (cpu0, _) = proc_stat(pid);
    let mut proxied = 0usize;
    for round in 1..=rounds {
        for (name, target) in [("direct", direct), ("meshwork one hop", proxy)] {
            let lat = load(target, rate, secs).await;
            println!(
                "| {round} | {name} | {} | {} | {} | {} | {} |",
                pct(&lat, 0.5),
                pct(&lat, 0.9),
                pct(&lat, 0.99),
                lat[lat.len() - 1],
                lat.len()
            );
            if target == direct {
                d50.push(pct(&lat, 0.5));
                d99.push(pct(&lat, 0.99));
            } else {
                p50s.push(pct(&lat, 0.5));
                p99s.push(pct(&lat, 0.99));
                proxied += lat.len();
            }
        }
    }
    let (cpu1, hwm_kb) = proc_stat(pid);
    let (md50, mp50, md99, mp99) = (median(d50), median(p50s), median(d99), median(p99s));
    println!();
    println!(
        "median p50: direct {md50} µs, one hop {mp50} µs, added {} µs",
        mp50.saturating_sub(md50)
    );
    println!(
        "median p99: direct {md99} µs, one hop {mp99} µs, added {} µs",
        mp99.saturating_sub(md99)
    );
    println!(
        "proxy CPU: {:.3} s per 1,000 requests (whole run, incl. idle rounds); peak RSS {:.1} MB",
        (cpu1 - cpu0) / (proxied as f64 / 1000.0),
        hwm_kb as f64 / 1024.0
    );
    // SIGTERM: the proxy drains and exits (and a profiler wrapper writes its data).
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    if tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    Ok(())
}
