//! Control-plane scale: the real `meshwork control` binary serving 1,000
//! services with 10 endpoints each to 1,000 ADS clients held in this process
//! (100 workloads × 10 replicas over 4 namespaces). Reports the time of the
//! full push (every client has ACKed CDS, EDS, LDS and RDS), the control
//! plane's memory, and how long one changed VirtualService takes to reach
//! every client after the debounce.
//!
//! Usage: `control-scale [SERVICES] [PROXIES]` (defaults 1000 1000); run it
//! through `bench/run-scale`, which builds the release binaries.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::google::protobuf::Any;
use meshwork_proxy::options::Identity;
use meshwork_xds::TypeUrl;
use meshwork_xds::client::{AdsClient, ClientConfig, ResourceError, ResourceSink};

const NAMESPACES: usize = 4;
const ENDPOINTS: usize = 10;
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Records what a simulated proxy received; asks for what a proxy would.
#[derive(Default)]
struct Sink {
    routes: Mutex<BTreeSet<String>>,
    eds: Mutex<BTreeSet<String>>,
    /// When the last RDS update arrived, and its version.
    last_rds: Mutex<Option<(Instant, String)>>,
}

impl ResourceSink for Sink {
    fn apply(&self, t: TypeUrl, version: &str, resources: &[Any]) -> Vec<ResourceError> {
        match t {
            TypeUrl::Listener => {
                let mut names = BTreeSet::new();
                for r in resources {
                    let Ok(l) = meshwork_xds::unpack::<Listener>(r) else {
                        continue;
                    };
                    for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
                        for f in &chain.filters {
                            if let Some(ConfigType::TypedConfig(any)) = &f.config_type
                                && let Ok(hcm) = meshwork_xds::unpack::<HttpConnectionManager>(any)
                                && let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier
                            {
                                names.insert(rds.route_config_name);
                            }
                        }
                    }
                }
                *self.routes.lock().unwrap() = names;
            }
            TypeUrl::Cluster => {
                let names = resources
                    .iter()
                    .filter_map(|r| meshwork_xds::unpack::<Cluster>(r).ok())
                    .filter(|c| {
                        c.cluster_discovery_type
                            == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
                    })
                    .map(|c| {
                        c.eds_cluster_config
                            .map(|e| e.service_name)
                            .filter(|s| !s.is_empty())
                            .unwrap_or(c.name)
                    })
                    .collect();
                *self.eds.lock().unwrap() = names;
            }
            TypeUrl::Route => {
                *self.last_rds.lock().unwrap() = Some((Instant::now(), version.to_string()));
            }
            TypeUrl::Endpoint => {}
        }
        Vec::new()
    }

    fn wanted(&self, t: TypeUrl) -> Vec<String> {
        match t {
            TypeUrl::Route => self.routes.lock().unwrap().iter().cloned().collect(),
            TypeUrl::Endpoint => self.eds.lock().unwrap().iter().cloned().collect(),
            _ => Vec::new(),
        }
    }
}

fn write_config(dir: &std::path::Path, services: usize) {
    let mut yaml = String::new();
    for i in 0..services {
        let ns = i % NAMESPACES;
        let _ = write!(
            yaml,
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: svc-{i}\n  namespace: ns-{ns}\nspec:\n  hosts: [svc-{i}.ns-{ns}.svc.cluster.local]\n  addresses: [240.{}.{}.1]\n  ports: [{{number: 8080, name: http, protocol: HTTP}}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  endpoints:\n",
            i / 256,
            i % 256
        );
        for e in 0..ENDPOINTS {
            let _ = writeln!(
                yaml,
                "  - {{address: 10.{}.{}.{}, labels: {{app: svc-{i}, version: v1}}}}",
                100 + i / 256,
                i % 256,
                e + 1
            );
        }
        yaml.push_str("---\n");
    }
    std::fs::write(dir.join("services.yaml"), yaml).unwrap();
    write_vs(dir, 100);
}

fn write_vs(dir: &std::path::Path, weight0: u32) {
    let vs = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: svc-0\n  namespace: ns-0\nspec:\n  hosts: [svc-0.ns-0.svc.cluster.local]\n  http:\n  - route:\n    - destination: {{host: svc-0.ns-0.svc.cluster.local}}\n      weight: {weight0}\n    - destination: {{host: svc-4.ns-0.svc.cluster.local}}\n      weight: {}\n",
        100 - weight0
    );
    let tmp = dir.join(".vs.tmp");
    std::fs::write(&tmp, vs).unwrap();
    std::fs::rename(tmp, dir.join("vs.yaml")).unwrap();
}

fn rss_mb(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let services: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(1000);
    let proxies: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(1000);
    let exe = std::env::current_exe()?.with_file_name("meshwork");
    anyhow::ensure!(
        exe.exists(),
        "{} not found: run bench/run-scale",
        exe.display()
    );
    let dir = std::env::temp_dir().join(format!("meshwork-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    write_config(&dir, services);
    let xds = format!("127.0.0.1:{}", free_port());
    let debug = format!("127.0.0.1:{}", free_port());
    let mut control = tokio::process::Command::new(&exe)
        .args(["control", "--config-dir"])
        .arg(&dir)
        .args(["--xds-address", &xds, "--debug-address", &debug])
        .env("MESHWORK_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;
    let pid = control.id().unwrap_or(0);
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(&xds).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let idle_rss = rss_mb(pid, "VmRSS:");

    // Full push: every client ACKs all four types.
    let start = Instant::now();
    let mut clients = Vec::with_capacity(proxies);
    for p in 0..proxies {
        let workload = p / 10;
        let ns = workload % NAMESPACES;
        let identity = Identity {
            node_id: format!(
                "sidecar~10.200.{}.{}~wl-{workload}-{p}.ns-{ns}~ns-{ns}.svc.cluster.local",
                p / 256,
                p % 256
            ),
            namespace: format!("ns-{ns}"),
            workload: format!("wl-{workload}"),
            labels: [("app".to_string(), format!("wl-{workload}"))].into(),
            service_account: "default".into(),
            ..Default::default()
        };
        let sink = Arc::new(Sink::default());
        let client = AdsClient::spawn(
            ClientConfig::new(xds.clone(), meshwork_proxy::run::node(&identity)),
            sink.clone(),
        );
        clients.push((client, sink));
    }
    let all_acked = |clients: &Vec<(AdsClient, Arc<Sink>)>| {
        clients.iter().all(|(c, _)| {
            let s = c.status();
            let s = s.borrow();
            TypeUrl::ALL
                .iter()
                .all(|t| s.types.get(t).is_some_and(|t| !t.acked_version.is_empty()))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    while !all_acked(&clients) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "full push did not complete in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let full_push = start.elapsed();
    let busy_rss = rss_mb(pid, "VmRSS:");

    // One changed VirtualService reaches every client.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before: Vec<Option<String>> = clients
        .iter()
        .map(|(_, s)| s.last_rds.lock().unwrap().as_ref().map(|(_, v)| v.clone()))
        .collect();
    let changed = Instant::now();
    write_vs(&dir, 50);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut arrivals: Vec<Duration>;
    loop {
        arrivals = clients
            .iter()
            .zip(&before)
            .filter_map(|((_, s), old)| {
                let last = s.last_rds.lock().unwrap().clone();
                last.filter(|(_, v)| Some(v) != old.as_ref())
                    .map(|(t, _)| t.duration_since(changed))
            })
            .collect();
        if arrivals.len() == clients.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    arrivals.sort();
    let reached = arrivals.len();
    let last = arrivals.last().copied().unwrap_or_default();
    let median = arrivals
        .get(arrivals.len() / 2)
        .copied()
        .unwrap_or_default();
    let peak_rss = rss_mb(pid, "VmHWM:");

    println!("| measure | value |");
    println!("|---|---|");
    println!("| services × endpoints | {services} × {ENDPOINTS} |");
    println!(
        "| ADS clients ({} workloads × 10 replicas, {NAMESPACES} namespaces) | {proxies} |",
        proxies.div_ceil(10)
    );
    println!(
        "| full push (all clients ACKed CDS, EDS, LDS, RDS) | {:.0} ms |",
        full_push.as_secs_f64() * 1e3
    );
    println!("| VirtualService change reached | {reached}/{proxies} clients |");
    println!(
        "| … median after the file write (debounce {} ms included) | {:.0} ms |",
        DEBOUNCE.as_millis(),
        median.as_secs_f64() * 1e3
    );
    println!(
        "| … last client after the file write | {:.0} ms |",
        last.as_secs_f64() * 1e3
    );
    println!(
        "| … last client after the debounce | {:.0} ms |",
        last.saturating_sub(DEBOUNCE).as_secs_f64() * 1e3
    );
    println!("| control plane RSS: config loaded, no clients | {idle_rss:.0} MB |");
    println!("| control plane RSS: {proxies} clients served | {busy_rss:.0} MB |");
    println!("| control plane peak RSS | {peak_rss:.0} MB |");
    drop(clients);
    let _ = control.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
