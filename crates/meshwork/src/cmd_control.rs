//! `meshwork control`: the control plane (istiod's role) from a directory
//! of Istio and Kubernetes YAML.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use meshwork_control::run::{ControlOptions, start};
use meshwork_control::watch::Debounce;
use meshwork_registry::StaticPlatform;

/// Control plane options.
#[derive(Args, Debug)]
pub struct ControlArgs {
    /// Directory (or file) of Istio and Kubernetes YAML; watched for changes.
    #[arg(long, env = "MESHWORK_CONFIG_DIR", required = true)]
    config_dir: Vec<PathBuf>,
    /// xDS listen address (plaintext; Istio's 15010).
    #[arg(long, default_value = "127.0.0.1:15010")]
    xds_address: SocketAddr,
    /// Debug and metrics address (Istio's 15014): /debug/syncz, /debug/configz, /debug/registryz, /metrics.
    #[arg(long, default_value = "127.0.0.1:15014")]
    debug_address: SocketAddr,
    /// Push once config changes have been quiet this long.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    debounce_after: Duration,
    /// Push at most this long after the first change of a burst.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    debounce_max: Duration,
    /// The local mesh's pods and service addresses (JSON written by
    /// `meshwork up`; re-read when it changes).
    #[arg(long)]
    platform_file: Option<PathBuf>,
}

/// Runs the control plane until interrupted.
pub async fn run(args: ControlArgs) -> anyhow::Result<()> {
    let handle = start(ControlOptions {
        config_paths: args.config_dir.clone(),
        xds_address: args.xds_address,
        debug_address: args.debug_address,
        debounce: Debounce {
            quiet: args.debounce_after,
            max: args.debounce_max,
        },
        // Workload instances come from the local mesh or Kubernetes; on its
        // own the control plane knows the services and their declared endpoints.
        platform: match &args.platform_file {
            Some(p) => meshwork_local::platform::FilePlatform::start(p.clone()),
            None => Arc::new(StaticPlatform::new(Vec::new())),
        },
    })
    .await?;
    tracing::info!(xds = %handle.xds_addr, debug = %handle.debug_addr, "meshwork control started");
    tokio::signal::ctrl_c().await?;
    tracing::info!("meshwork control stopping; proxies keep their last configuration");
    handle.shutdown();
    Ok(())
}
