//! The control plane's certificate authority on the network (Istio's
//! 15012): `istio.v1.auth.IstioCertificateService` and ADS together on one
//! TLS server, whose own certificate the CA issues for
//! `istiod.istio-system.svc` and the addresses it listens on.
//!
//! The CA comes from an operator's plug-in files (`--ca-dir`) or from the
//! state directory (`--state-dir`, root generated on first start and kept).
//! The trust bundle is written to `<state-dir>/root-cert.pem` so sidecars
//! on the same machine can trust the CA (`meshwork proxy --ca-root-cert`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meshwork_identity::TokenFile;
use meshwork_identity::ca::files::{load_or_create, load_plugin, write_roots};
use meshwork_identity::ca::{CaError, CaOptions, CertificateAuthority};
use meshwork_identity::service::CaService;
use meshwork_identity::transport::{TransportError, server_config, tls_incoming};
use meshwork_xds::server::AdsServer;
use tokio::net::TcpListener;

/// DNS names on the control plane's serving certificate, as istiod's.
pub const SERVING_DNS_NAMES: [&str; 4] = [
    "istiod.istio-system.svc",
    "istiod.istio-system.svc.cluster.local",
    "istiod.istio-system",
    "istiod",
];
/// Lifetime of the serving certificate (reissued at every start).
const SERVING_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// How to run the CA.
#[derive(Clone, Debug)]
pub struct CaServeOptions {
    /// Directory keeping the generated root (and where `root-cert.pem` is written).
    pub state_dir: Option<PathBuf>,
    /// Plug-in CA directory (Istio's `cacerts` files); wins over the state directory's root.
    pub plugin_dir: Option<PathBuf>,
    /// Trust domain of issued identities.
    pub trust_domain: String,
    /// Bootstrap token file (`<token> <namespace> <service-account>` lines).
    pub tokens: Option<PathBuf>,
    /// Default workload certificate lifetime.
    pub cert_ttl: Duration,
    /// Listen address (Istio's 15012).
    pub address: SocketAddr,
    /// Extra DNS names or IPs for the serving certificate.
    pub extra_sans: Vec<String>,
}

/// Why the CA could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaStartError {
    /// Neither a state directory nor a plug-in CA was given.
    #[error("the CA needs --state-dir or --ca-dir")]
    NoSource,
    /// The CA's files are unusable.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The serving TLS config could not be built.
    #[error(transparent)]
    Tls(#[from] TransportError),
    /// The port could not be bound.
    #[error("cannot bind the CA on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// A running CA server.
pub struct CaHandle {
    /// Where the CA (and ADS over TLS) listens.
    pub addr: SocketAddr,
    /// The CA itself.
    pub ca: Arc<CertificateAuthority>,
    /// Where the trust bundle was written, if anywhere.
    pub root_cert: Option<PathBuf>,
    task: tokio::task::JoinHandle<()>,
}

impl CaHandle {
    /// Stops serving.
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

/// Loads the CA as `opts` says (plug-in files first, else the state directory).
pub fn load_ca(opts: &CaServeOptions) -> Result<CertificateAuthority, CaStartError> {
    let mut ca_opts = CaOptions::new(opts.trust_domain.clone());
    ca_opts.default_ttl = opts.cert_ttl;
    ca_opts.max_ttl = ca_opts.max_ttl.max(opts.cert_ttl);
    Ok(match (&opts.plugin_dir, &opts.state_dir) {
        (Some(dir), _) => load_plugin(dir, ca_opts)?,
        (None, Some(dir)) => load_or_create(dir, ca_opts)?,
        (None, None) => return Err(CaStartError::NoSource),
    })
}

/// Starts the CA server; ADS is served beside it when `ads` is given.
pub async fn start(opts: CaServeOptions, ads: Option<AdsServer>) -> Result<CaHandle, CaStartError> {
    let ca = Arc::new(load_ca(&opts)?);
    let root_cert = match &opts.state_dir {
        Some(dir) => Some(write_roots(&ca, dir)?),
        None => None,
    };
    let listener = TcpListener::bind(opts.address)
        .await
        .map_err(|source| CaStartError::Bind {
            addr: opts.address,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(opts.address);
    let (dns, ips) = serving_names(addr, &opts.extra_sans);
    let (chain, key) = ca.issue_server_cert(&dns, &ips, SERVING_CERT_TTL)?;
    let tls = Arc::new(server_config(chain, key)?);
    let tokens = opts.tokens.clone().map(TokenFile::new);
    if tokens.is_none() {
        tracing::warn!("no --ca-tokens file: every certificate request will be refused");
    }
    let service = CaService::new(ca.clone(), tokens);
    let mut router = tonic::transport::Server::builder().add_service(service);
    if let Some(ads) = &ads {
        router = router.add_service(ads.service());
    }
    let incoming = tls_incoming(listener, tls);
    let task = tokio::spawn(async move {
        if let Err(e) = router.serve_with_incoming(incoming).await {
            tracing::error!(error = %e, "CA server failed");
        }
    });
    tracing::info!(%addr, trust_domain = %ca.trust_domain(), roots = ca.roots().len(), root_cert = ?root_cert, "CA serving");
    Ok(CaHandle {
        addr,
        ca,
        root_cert,
        task,
    })
}

/// istiod's names, loopback, the bound IP (when specific) and the extras.
fn serving_names(addr: SocketAddr, extra: &[String]) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns: Vec<String> = SERVING_DNS_NAMES.iter().map(|s| s.to_string()).collect();
    dns.push("localhost".into());
    let mut ips = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    if !addr.ip().is_unspecified() && !ips.contains(&addr.ip()) {
        ips.push(addr.ip());
    }
    for e in extra {
        match e.parse::<IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) if !dns.contains(e) => dns.push(e.clone()),
            Err(_) => {}
        }
    }
    (dns, ips)
}
