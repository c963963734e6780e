//! `meshwork demo`: the online-ordering application (order → inventory,
//! shipping v1/v2, a load generator) on a local mesh, with a shipping
//! canary (90/10), an inventory circuit breaker and mesh-wide STRICT mTLS,
//! and a live summary every second from the proxies' own metrics.

use std::fmt::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use meshwork_local::cidr::Cidr;
use meshwork_local::demo::{manifests, summary};
use meshwork_local::state;

use crate::cmd_up::{self, UpArgs};

/// Demo options.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where the demo's manifests are written (kept if they exist, so your
    /// edits stay); the control plane watches this directory.
    #[arg(long, default_value = "meshwork-demo")]
    dir: PathBuf,
    /// Mesh name.
    #[arg(long, default_value = "demo")]
    name: String,
    /// Pod addresses.
    #[arg(long, default_value = "10.88.0.0/24")]
    pod_cidr: Cidr,
    /// Service virtual addresses.
    #[arg(long, default_value = "10.96.0.0/24")]
    service_cidr: Cidr,
    /// Where meshes keep their state.
    #[arg(long, default_value = state::STATE_ROOT)]
    state_root: PathBuf,
    /// Stop after this long (e.g. `30s`); runs until Ctrl-C when absent.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Print the summary as plain lines (no screen clearing).
    #[arg(long)]
    plain: bool,
    /// Explicit mode even as root (no network namespaces; see `meshwork up --help`).
    #[arg(long)]
    explicit: bool,
}

/// Runs the demo.
pub async fn run(a: DemoArgs) -> anyhow::Result<i32> {
    let fresh = manifests::write(&a.dir)?;
    let dir = std::fs::canonicalize(&a.dir)?;
    if fresh {
        eprintln!("==> demo manifests written to {}", dir.display());
    } else {
        eprintln!(
            "==> using the demo manifests in {} (delete the directory for fresh ones)",
            dir.display()
        );
    }
    let up = UpArgs {
        dir: dir.clone(),
        name: a.name.clone(),
        pod_cidr: a.pod_cidr,
        service_cidr: a.service_cidr,
        state_root: a.state_root.clone(),
        proxy_flags: vec!["--no-access-log".into()],
        explicit: a.explicit,
    };
    let mesh = cmd_up::start(&up).await?;
    let canary = dir.join(manifests::CANARY_FILE);
    let deeper = format!(
        "\nLook deeper:\n  meshwork proxy-status                       every proxy's CDS/LDS/EDS/RDS sync state\n  meshwork proxy-config clusters order-0      what order's sidecar knows (listeners|routes|clusters|endpoints|secrets)\n  meshwork analyze                            the running mesh's configuration ({})\n  edit {} (weights 90/10) and watch the split move within a second\n",
        dir.display(),
        canary.display()
    );
    if !cmd_up::say(&format!("{}{deeper}\n", mesh.describe())) {
        eprintln!("==> stdout is closed; stopping the demo");
        mesh.down().await;
        return Ok(0);
    }
    let targets = mesh.metrics_addrs();
    let started = Instant::now();
    let first = summary::scrape(&targets).await;
    let mut prev = (Instant::now(), first.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let stop = cmd_up::until_stopped();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        if a.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let now = summary::scrape(&targets).await;
        let secs = prev.0.elapsed().as_secs_f64();
        let window = now.since(&prev.1);
        let table = summary::render(&window, secs, &now.since(&first));
        let mut out = String::new();
        if !a.plain {
            // Clear the screen and home the cursor.
            let _ = write!(out, "\x1b[2J\x1b[H");
            let _ = writeln!(
                out,
                "meshwork demo: {} pods, {}s; Ctrl-C stops and cleans up",
                targets.len(),
                started.elapsed().as_secs()
            );
        } else {
            let _ = writeln!(out, "--- {}s", started.elapsed().as_secs());
        }
        let _ = write!(out, "{table}");
        if !a.plain {
            let _ = write!(out, "{deeper}");
        }
        if !cmd_up::say(&out) {
            // `meshwork demo | head`: nobody reads the summary any more.
            eprintln!("==> stdout is closed; stopping the demo");
            break;
        }
        prev = (Instant::now(), now);
    }
    mesh.down().await;
    Ok(0)
}
