//! The control plane's xDS metrics, with istiod's names (and two of our
//! own, `meshwork_xds_*`, for what istiod does not count).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::TypeUrl;

/// istiod's `type` label: `cds`, `eds`, `lds`, `rds` or `vhds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// The xDS type's short name.
    pub r#type: &'static str,
}

impl From<TypeUrl> for TypeLabel {
    fn from(t: TypeUrl) -> Self {
        let r#type = match t {
            TypeUrl::Cluster => "cds",
            TypeUrl::Endpoint => "eds",
            TypeUrl::Listener => "lds",
            TypeUrl::Route => "rds",
            TypeUrl::VirtualHost => "vhds",
        };
        TypeLabel { r#type }
    }
}

fn push_time() -> Histogram {
    Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0, 5.0, 10.0])
}

fn config_size() -> Histogram {
    Histogram::new([1e3, 1e4, 1e5, 1e6, 1e7])
}

/// Counters and histograms the server updates.
#[derive(Clone, Debug)]
pub struct ServerMetrics {
    /// Responses pushed, by type (`pilot_xds_pushes{type}`).
    pub pushes: Family<TypeLabel, Counter>,
    /// NACKs received (`pilot_total_xds_rejects`).
    pub nacks: Counter,
    /// Push errors: a response could not be sent (`pilot_xds_push_errors`).
    pub push_errors: Counter,
    /// Connected proxies (`pilot_xds`).
    pub connected: Gauge,
    /// Seconds from a configuration change to the proxy's ACK
    /// (`pilot_proxy_convergence_time`).
    pub convergence: Histogram,
    /// Seconds from a stream seeing a change (or request) to its response
    /// being queued, by type (`pilot_xds_push_time{type}`).
    pub push_time: Family<TypeLabel, Histogram, fn() -> Histogram>,
    /// Bytes of each response sent, by type (`pilot_xds_config_size_bytes{type}`).
    pub config_size: Family<TypeLabel, Histogram, fn() -> Histogram>,
    /// Bytes of resources encoded: a set shared by many proxies counts once
    /// (`meshwork_xds_encoded_bytes`).
    pub encoded_bytes: Counter,
    /// Bytes of shared sets after gzip, each compressed once for every
    /// gzip stream (`meshwork_xds_compressed_bytes`).
    pub compressed_bytes: Counter,
    /// Bytes of responses queued to proxies (`meshwork_xds_sent_bytes`).
    pub sent_bytes: Counter,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            pushes: Family::default(),
            nacks: Counter::default(),
            push_errors: Counter::default(),
            connected: Gauge::default(),
            convergence: Histogram::new([0.001, 0.01, 0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0]),
            push_time: Family::new_with_constructor(push_time),
            config_size: Family::new_with_constructor(config_size),
            encoded_bytes: Counter::default(),
            compressed_bytes: Counter::default(),
            sent_bytes: Counter::default(),
        }
    }
}

impl ServerMetrics {
    /// Counts one response of type `t` of `bytes` queued `secs` after the
    /// stream saw what caused it.
    pub(crate) fn pushed(&self, t: TypeUrl, bytes: usize, secs: f64) {
        let label = TypeLabel::from(t);
        self.pushes.get_or_create(&label).inc();
        self.push_time.get_or_create(&label).observe(secs);
        self.config_size.get_or_create(&label).observe(bytes as f64);
        self.sent_bytes.inc_by(bytes as u64);
    }

    /// Responses of type `t` pushed so far.
    pub fn pushes_of(&self, t: TypeUrl) -> u64 {
        self.pushes.get(&t.into()).map(|c| c.get()).unwrap_or(0)
    }

    /// Registers every metric in `registry` under istiod's names.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pilot_xds_pushes",
            "xDS responses pushed, by type",
            self.pushes.clone(),
        );
        registry.register(
            "pilot_total_xds_rejects",
            "xDS responses rejected by proxies (NACK)",
            self.nacks.clone(),
        );
        registry.register(
            "pilot_xds_push_errors",
            "xDS responses that could not be sent",
            self.push_errors.clone(),
        );
        registry.register("pilot_xds", "Connected xDS clients", self.connected.clone());
        registry.register(
            "pilot_proxy_convergence_time",
            "Seconds from a configuration change until the proxy ACKed it",
            self.convergence.clone(),
        );
        registry.register(
            "pilot_xds_push_time",
            "Seconds from a stream seeing a change until its response was queued, by type",
            self.push_time.clone(),
        );
        registry.register(
            "pilot_xds_config_size_bytes",
            "Size of xDS responses pushed, by type",
            self.config_size.clone(),
        );
        registry.register(
            "meshwork_xds_encoded_bytes",
            "Bytes of xDS resources encoded (a set shared by many proxies counts once)",
            self.encoded_bytes.clone(),
        );
        registry.register(
            "meshwork_xds_compressed_bytes",
            "Bytes of shared xDS sets after gzip (each set compressed once)",
            self.compressed_bytes.clone(),
        );
        registry.register(
            "meshwork_xds_sent_bytes",
            "Bytes of xDS responses queued to proxies",
            self.sent_bytes.clone(),
        );
    }
}
