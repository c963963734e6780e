//! `meshwork proxy`: bootstrap flags (and their environment variables) for
//! the sidecar proxy.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use meshwork_proxy::options::{Identity, Limits, ProxyOptions};
use meshwork_telemetry::AccessLogger;

use crate::logging::LogControl;

/// Sidecar proxy bootstrap.
#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// Control plane ADS address: `host:port`, `http://host:port` or `unix:///path/to/socket`.
    #[arg(long, env = "MESHWORK_XDS_ADDRESS", default_value = "127.0.0.1:15010")]
    xds_address: String,
    /// ADS form: `sotw` (state of the world) or `delta` (incremental; route
    /// tables may then come as VHDS virtual hosts).
    #[arg(long, env = "MESHWORK_XDS_PROTOCOL", default_value = "delta")]
    xds_protocol: meshwork_proxy::options::XdsProtocol,
    /// xDS node id; defaults to Istio's form `sidecar~IP~WORKLOAD.NS~NS.svc.cluster.local`.
    #[arg(long, env = "MESHWORK_NODE_ID")]
    node_id: Option<String>,
    /// This pod's IP (for the node id).
    #[arg(long, env = "INSTANCE_IP", default_value = "127.0.0.1")]
    instance_ip: IpAddr,
    /// Namespace of the workload.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Workload name (the Deployment).
    #[arg(long, env = "WORKLOAD_NAME", default_value = "unknown")]
    workload: String,
    /// Workload labels, `key=value` comma separated (`app` and `version` feed metrics).
    #[arg(long, env = "MESHWORK_LABELS", value_delimiter = ',')]
    labels: Vec<String>,
    /// Service account of the workload.
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "default")]
    service_account: String,
    /// Cluster id.
    #[arg(long, env = "CLUSTER_ID", default_value = "Kubernetes")]
    cluster_id: String,
    /// Trust domain of workload identities.
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Admin address (keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin_address: SocketAddr,
    /// Health (`/healthz/ready`) address.
    #[arg(long, default_value = "0.0.0.0:15021")]
    health_address: SocketAddr,
    /// Proxy metrics address.
    #[arg(long, default_value = "0.0.0.0:15090")]
    stats_address: SocketAddr,
    /// Merged metrics address.
    #[arg(long, default_value = "0.0.0.0:15020")]
    merged_stats_address: SocketAddr,
    /// Time in-flight requests get to finish after SIGTERM (e.g. `5s`).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    drain_period: Duration,
    /// Request header bytes before 431.
    #[arg(long, default_value_t = 60 * 1024)]
    max_header_bytes: usize,
    /// Request header count before 431.
    #[arg(long, default_value_t = 100)]
    max_headers: usize,
    /// Time to receive request headers before 408 (slowloris guard).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    request_header_timeout: Duration,
    /// Close connections idle this long.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Connections open at once; more are refused.
    #[arg(long, default_value_t = 100_000)]
    max_connections: usize,
    /// HTTP/2 concurrent streams per connection.
    #[arg(long, default_value_t = 1024)]
    max_concurrent_streams: u32,
    /// Request body bytes before 413 (unlimited when absent).
    #[arg(long)]
    max_request_body_bytes: Option<u64>,
    /// Do not write access logs to stdout.
    #[arg(long)]
    no_access_log: bool,
    /// Worker threads.
    #[arg(long, env = "MESHWORK_CONCURRENCY", default_value_t = 2)]
    pub concurrency: usize,
    /// The control plane's CA (gRPC over TLS, Istio's 15012), `host:port`.
    /// When given, the proxy obtains and renews its workload certificate
    /// and is not ready before it has one.
    #[arg(long, env = "CA_ADDR")]
    ca_address: Option<String>,
    /// PEM root(s) the CA's serving certificate must chain to (the control
    /// plane writes `<state-dir>/root-cert.pem`).
    #[arg(long, env = "MESHWORK_CA_ROOT_CERT", requires = "ca_address")]
    ca_root_cert: Option<PathBuf>,
    /// File holding this workload's bootstrap token for the CA.
    #[arg(long, env = "MESHWORK_CA_TOKEN_FILE", requires = "ca_address")]
    ca_token_file: Option<PathBuf>,
    /// Name the CA's serving certificate must carry (istiod's by default;
    /// a DNS name in --ca-address is used when present).
    #[arg(long, env = "ISTIOD_SAN")]
    ca_server_name: Option<String>,
    /// Workload certificate lifetime to ask for (the CA's default when absent).
    #[arg(long, value_parser = humantime::parse_duration)]
    cert_ttl: Option<Duration>,
}

/// Runs the proxy until it has drained.
pub async fn run(args: ProxyArgs, log: LogControl) -> anyhow::Result<()> {
    let mut labels = BTreeMap::new();
    for kv in &args.labels {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("label {kv:?} is not key=value"))?;
        labels.insert(k.trim().to_string(), v.trim().to_string());
    }
    let node_id = args.node_id.clone().unwrap_or_else(|| {
        format!(
            "sidecar~{}~{}.{}~{}.svc.cluster.local",
            args.instance_ip, args.workload, args.namespace, args.namespace
        )
    });
    let opts = ProxyOptions {
        identity: Identity {
            node_id,
            cluster: args.cluster_id.clone(),
            namespace: args.namespace.clone(),
            workload: args.workload.clone(),
            labels,
            service_account: args.service_account.clone(),
            trust_domain: args.trust_domain.clone(),
        },
        xds_address: args.xds_address.clone(),
        admin_address: args.admin_address,
        health_address: args.health_address,
        stats_address: args.stats_address,
        merged_stats_address: args.merged_stats_address,
        limits: Limits {
            max_header_bytes: args.max_header_bytes,
            max_headers: args.max_headers,
            request_header_timeout: args.request_header_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections,
            max_concurrent_streams: args.max_concurrent_streams,
            max_request_body_bytes: args.max_request_body_bytes,
            drain_period: args.drain_period,
            ..Limits::default()
        },
        access_log: !args.no_access_log,
        workload_certs: identity_client(&args)?,
        xds_protocol: args.xds_protocol,
    };
    let access_log = if opts.access_log {
        AccessLogger::stdout()
    } else {
        AccessLogger::disabled()
    };
    let handle = meshwork_proxy::run::start(opts, access_log, Some(log)).await?;
    tracing::info!(admin = %handle.admin_addr, health = %handle.health_addr, "meshwork proxy started");
    handle.wait().await;
    tracing::info!("meshwork proxy stopped");
    Ok(())
}

/// Starts the certificate client when `--ca-address` is given; its watch
/// feeds the proxy's TLS and readiness.
fn identity_client(args: &ProxyArgs) -> anyhow::Result<Option<meshwork_identity::IdentityWatch>> {
    use meshwork_identity::client::{ClientOptions, DEFAULT_CA_SERVER_NAME};
    use meshwork_identity::rotation::{RotationPolicy, spawn};
    let Some(address) = args.ca_address.clone() else {
        return Ok(None);
    };
    let (Some(root_cert), Some(token_file)) =
        (args.ca_root_cert.clone(), args.ca_token_file.clone())
    else {
        anyhow::bail!("--ca-address needs --ca-root-cert and --ca-token-file");
    };
    let host = address.rsplit_once(':').map(|(h, _)| h).unwrap_or(&address);
    let host = host.trim_matches(['[', ']']);
    let server_name = args.ca_server_name.clone().unwrap_or_else(|| {
        if host.parse::<IpAddr>().is_ok() || host.is_empty() {
            DEFAULT_CA_SERVER_NAME.to_string()
        } else {
            host.to_string()
        }
    });
    let opts = ClientOptions {
        address,
        server_name,
        root_cert,
        token_file,
        id: meshwork_identity::SpiffeId::new(
            args.trust_domain.clone(),
            args.namespace.clone(),
            args.service_account.clone(),
        ),
        ttl: args.cert_ttl,
        timeout: Duration::from_secs(10),
    };
    let (watch, _task) = spawn(opts, RotationPolicy::default());
    Ok(Some(watch))
}
