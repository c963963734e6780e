//! `meshwork up -f DIR`: runs a mesh from Kubernetes-style manifests and
//! Istio config on this host until Ctrl-C (or `meshwork down`), then
//! removes everything it made.

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
}

impl UpArgs {
    /// The runtime's options.
    pub fn options(&self) -> anyhow::Result<UpOptions> {
        Ok(UpOptions {
            name: self.name.clone(),
            config_dir: self.dir.clone(),
            state_root: self.state_root.clone(),
            pod_cidr: self.pod_cidr,
            service_cidr: self.service_cidr,
            binary: std::env::current_exe()?,
            proxy_flags: self.proxy_flags.clone(),
        })
    }
}

/// Brings the mesh up, or says why it cannot.
pub async fn start(a: &UpArgs) -> anyhow::Result<Mesh> {
    if let Some(why) = up::netns_unavailable() {
        anyhow::bail!(
            "cannot run pods in network namespaces: {why}.\n\
             Explicit mode (no namespaces; workloads reach dependencies through their \
             sidecar via ORDER_SERVICE_HOST/ORDER_SERVICE_PORT) is not implemented yet; \
             run as root on Linux with iproute2, iptables and util-linux"
        );
    }
    let mesh = up::up(&a.options()?).await?;
    Ok(mesh)
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
    print!("{}", mesh.describe());
    println!(
        "mesh is up. Look deeper: meshwork proxy-status | meshwork proxy-config clusters POD | meshwork analyze -f {}\nCtrl-C (or `meshwork down --name {}`) stops it and removes everything it made.",
        a.dir.display(),
        a.name
    );
    until_stopped().await;
    mesh.down().await;
    Ok(0)
}
