//! `meshwork control`: the control plane (istiod's role) from a directory
//! of Istio and Kubernetes YAML.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use meshwork_control::ca::CaServeOptions;
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
    /// CA state directory: the root is generated here on first start and
    /// reused; the trust bundle is written to DIR/root-cert.pem. The CA runs
    /// when this or --ca-dir is given.
    #[arg(long, env = "MESHWORK_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Plug-in CA directory (Istio's files: ca-cert.pem, ca-key.pem,
    /// root-cert.pem, cert-chain.pem); used instead of a generated root.
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    /// Trust domain of workload identities.
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Bootstrap token file for the CA (`<token> <namespace> <service-account>` per line; re-read when it changes).
    #[arg(long)]
    ca_tokens: Option<PathBuf>,
    /// Default workload certificate lifetime.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    cert_ttl: Duration,
    /// CA (and xDS) over TLS listen address (Istio's 15012).
    #[arg(long, default_value = "0.0.0.0:15012")]
    ca_address: SocketAddr,
    /// Extra DNS names or IPs for the control plane's serving certificate (comma separated).
    #[arg(long, value_delimiter = ',')]
    ca_san: Vec<String>,
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
    let ca = if args.state_dir.is_some() || args.ca_dir.is_some() {
        let opts = CaServeOptions {
            state_dir: args.state_dir.clone(),
            plugin_dir: args.ca_dir.clone(),
            trust_domain: args.trust_domain.clone(),
            tokens: args.ca_tokens.clone(),
            cert_ttl: args.cert_ttl,
            address: args.ca_address,
            extra_sans: args.ca_san.clone(),
        };
        Some(meshwork_control::ca::start(opts, Some(handle.ads.clone())).await?)
    } else {
        tracing::info!("no --state-dir or --ca-dir: the CA is off (plaintext xDS only)");
        None
    };
    tracing::info!(xds = %handle.xds_addr, debug = %handle.debug_addr, ca = ?ca.as_ref().map(|c| c.addr), "meshwork control started");
    tokio::signal::ctrl_c().await?;
    tracing::info!("meshwork control stopping; proxies keep their last configuration");
    handle.shutdown();
    if let Some(ca) = ca {
        ca.shutdown();
    }
    Ok(())
}
