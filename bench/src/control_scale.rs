//! Control-plane scale: the real `meshwork control` binary serving 1,000
//! services with 10 endpoints each to 1,000 ADS clients held in this process
//! (100 workloads × 10 replicas over 4 namespaces). Reports the time of the
//! full push (every client has ACKed CDS, EDS, LDS and RDS), the control
//! plane's memory, and how long one changed VirtualService takes to reach
//! every client after the debounce.
//!
//! Usage: `control-scale [--delta] [SERVICES] [PROXIES]` (defaults 1000
//! 1000); run it through `bench/run-scale`, which builds the release
//! binaries. With `--delta` the clients speak delta ADS and announce
//! `MESHWORK_VHDS`, so the route table's virtual hosts come through VHDS
//! and a change is measured by its VirtualHost update.

mod scale_client;
mod scale_config;
mod scale_delta;

use std::time::{Duration, Instant};

use meshwork_proxy::options::Identity;
use scale_client::Sim;
use scale_config::{ENDPOINTS, NAMESPACES, write_config, write_vs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEBOUNCE: Duration = Duration::from_millis(100);

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
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let delta = args.iter().any(|a| a == "--delta");
    args.retain(|a| a != "--delta");
    if let Some(bad) = args.iter().find(|a| a.parse::<usize>().is_err()) {
        anyhow::bail!("usage: control-scale [--delta] [SERVICES] [PROXIES] (got {bad:?})");
    }
    let services: usize = args.first().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let proxies: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(1000);
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
    let cpu0 = cpu_ms(pid);
    let mut clients = Vec::with_capacity(proxies);
    for p in 0..proxies {
        let (node_id, namespace, workload, app) = scale_config::proxy(p);
        let identity = Identity {
            node_id,
            namespace,
            workload,
            labels: [("app".to_string(), app)].into(),
            service_account: "default".into(),
            ..Default::default()
        };
        clients.push(Sim::spawn(
            xds.clone(),
            meshwork_proxy::run::node(&identity),
            delta,
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while !clients.iter().all(|c| c.complete()) {
        if let Some(e) = clients
            .iter()
            .find_map(|c| c.state.lock().unwrap().error.clone())
        {
            anyhow::bail!("a client failed: {e}");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "full push did not complete in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let full_push = start.elapsed();
    let full_cpu = cpu_ms(pid) - cpu0;
    let full_bytes: u64 = clients.iter().map(|c| c.state.lock().unwrap().bytes).sum();
    let busy_rss = rss_mb(pid, "VmRSS:");

    // One changed VirtualService reaches every client.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics_before = scrape(&debug).await;
    let before: Vec<Option<String>> = clients
        .iter()
        .map(|c| {
            c.state
                .lock()
                .unwrap()
                .last_rds
                .as_ref()
                .map(|(_, v)| v.clone())
        })
        .collect();
    let cpu0 = cpu_ms(pid);
    let own0 = cpu_ms(std::process::id());
    let changed = Instant::now();
    write_vs(&dir, 50);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut arrivals: Vec<Duration>;
    loop {
        arrivals = clients
            .iter()
            .zip(&before)
            .filter_map(|(c, old)| {
                let last = c.state.lock().unwrap().last_rds.clone();
                last.filter(|(_, v)| Some(v) != old.as_ref())
                    .map(|(t, _)| t.duration_since(changed))
            })
            .collect();
        if arrivals.len() == clients.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let change_cpu = cpu_ms(pid) - cpu0;
    let own_cpu = cpu_ms(std::process::id()) - own0;
    // Let the last ACKs land before reading the counters.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics_after = scrape(&debug).await;
    let diff = |name: &str| metric(&metrics_after, name) - metric(&metrics_before, name);
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
    println!(
        "| protocol | {} |",
        if delta {
            "delta ADS + VHDS"
        } else {
            "state of the world"
        }
    );
    println!("| services × endpoints | {services} × {ENDPOINTS} |");
    println!(
        "| ADS clients ({} workloads × 10 replicas, {NAMESPACES} namespaces) | {proxies} |",
        proxies.div_ceil(10)
    );
    println!(
        "| full push (all clients ACKed CDS, EDS, LDS, RDS{}) | {:.0} ms |",
        if delta { ", VHDS" } else { "" },
        full_push.as_secs_f64() * 1e3
    );
    println!("| … control-plane CPU during the full push | {full_cpu:.0} ms |");
    println!(
        "| … resource bytes received by all clients | {:.1} MB |",
        full_bytes as f64 / 1e6
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
    println!(
        "| … snapshot build (load + registry) of the change | {:.0} ms |",
        diff("pilot_config_build_seconds_sum") * 1e3
    );
    println!("| … control-plane CPU for the change | {change_cpu:.0} ms |");
    println!("| … benchmark clients' CPU for the change | {own_cpu:.0} ms |");
    println!(
        "| … responses pushed (CDS/EDS/LDS/RDS/VHDS) | {:.0}/{:.0}/{:.0}/{:.0}/{:.0} |",
        diff("pilot_xds_pushes_total{type=\"cds\"}"),
        diff("pilot_xds_pushes_total{type=\"eds\"}"),
        diff("pilot_xds_pushes_total{type=\"lds\"}"),
        diff("pilot_xds_pushes_total{type=\"rds\"}"),
        diff("pilot_xds_pushes_total{type=\"vhds\"}"),
    );
    println!(
        "| … bytes encoded by the control plane | {:.0} kB |",
        diff("meshwork_xds_encoded_bytes_total") / 1e3
    );
    println!(
        "| … bytes sent to proxies | {:.2} MB |",
        diff("meshwork_xds_sent_bytes_total") / 1e6
    );
    println!("| control plane RSS: config loaded, no clients | {idle_rss:.0} MB |");
    println!("| control plane RSS: {proxies} clients served | {busy_rss:.0} MB |");
    println!("| control plane peak RSS | {peak_rss:.0} MB |");
    drop(clients);
    let _ = control.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// CPU time (user + system) a process has used, in milliseconds.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let ticks = fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0);
    // The kernel reports USER_HZ ticks, 100 per second on Linux.
    ticks * 10.0
}

/// The control plane's Prometheus text from its debug address.
async fn scrape(debug: &str) -> String {
    let Ok(mut s) = tokio::net::TcpStream::connect(debug).await else {
        return String::new();
    };
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {debug}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body).await;
    body
}

/// A sample's value (`name` with its labels, as printed), 0 if absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}
