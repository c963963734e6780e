//! `meshwork up -f DIR`: runs a mesh from Kubernetes-style manifests and
//! Istio config on this host until Ctrl-C (or `meshwork down`), then
//! removes everything it made. Without root or `ip netns` (or with
//! `--explicit`) it runs in explicit mode: no namespaces, loopback
//! addresses per pod, dependencies through `*_SERVICE_HOST/_PORT`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use meshwork_local::cidr::Cidr;
use meshwork_local::state;
use meshwork_local::up::{self, Mesh, UpOptions};

/// Where and how the mesh runs.
#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Directory of manifests (Namespace, ServiceAccount, Service,
    /// Deployment, Istio config); the control plane watches it.
    #[arg(short = 'f', long = "filename")]
    pub dir: PathBuf,
    /// Mesh name (state directory, network namespace and interface names).
    #[arg(long, default_value = "mesh")]
    pub name: String,
    /// Pod addresses; the first is the bridge's, where the control plane listens.
    #[arg(long, default_value = "10.88.0.0/24")]
    pub pod_cidr: Cidr,
    /// Service virtual addresses.
    #[arg(long, default_value = "10.96.0.0/24")]
    pub service_cidr: Cidr,
    /// Where meshes keep their state.
    #[arg(long, default_value = state::STATE_ROOT)]
    pub state_root: PathBuf,
    /// Extra flags for every sidecar (`--proxy-flag=--no-access-log`).
    #[arg(long = "proxy-flag", allow_hyphen_values = true)]
    pub proxy_flags: Vec<String>,
    /// Explicit mode even when network namespaces are available: pods as
    /// host processes on loopback addresses (a --pod-cidr in 127.0.0.0/8,
    /// else 127.1.0.0/24), workloads reaching their dependencies through
    /// their sidecar via <NAME>_SERVICE_HOST/_PORT. Chosen automatically
    /// without root or `ip netns`.
    #[arg(long)]
    pub explicit: bool,
}

impl UpArgs {
    /// The runtime's options.
    pub fn options(&self) -> anyhow::Result<UpOptions> {
        Ok(UpOptions {
            name: self.name.clone(),
            config_dir: self.dir.clone(),
            state_root: state::writable_root(&self.state_root),
            pod_cidr: self.pod_cidr,
            service_cidr: self.service_cidr,
            binary: std::env::current_exe()?,
            proxy_flags: self.proxy_flags.clone(),
            explicit: self.explicit,
        })
    }
}

/// Brings the mesh up, or says why it cannot.
pub async fn start(a: &UpArgs) -> anyhow::Result<Mesh> {
    let mut opts = a.options()?;
    if !opts.explicit
        && let Some(why) = up::netns_unavailable()
    {
        eprintln!(
            "==> cannot run pods in network namespaces: {why}; running in explicit mode instead"
        );
        opts.explicit = true;
    }
    let mesh = up::up(&opts).await?;
    Ok(mesh)
}

/// Writes `text` to stdout; false once stdout is gone (a closed pipe, as
/// in `meshwork demo | head`), so the caller stops and tears down as on
/// Ctrl-C instead of dying on the write.
pub fn say(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_ok()
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn until_stopped() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// Runs the mesh until stopped.
pub async fn run(a: UpArgs) -> anyhow::Result<i32> {
    let mesh = start(&a).await?;
    let text = format!(
        "{}mesh is up{}. Look deeper: meshwork proxy-status | meshwork proxy-config clusters POD | meshwork analyze\nCtrl-C (or `meshwork down --name {}`) stops it and removes everything it made.\n",
        mesh.describe(),
        if mesh.state.mode == "explicit" {
            " in explicit mode (workloads reach services only through their *_SERVICE_HOST/*_SERVICE_PORT variables)"
        } else {
            ""
        },
        a.name
    );
    if say(&text) {
        until_stopped().await;
    } else {
        eprintln!("==> stdout is closed; stopping the mesh");
    }
    mesh.down().await;
    Ok(0)
}
