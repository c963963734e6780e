//! The control plane's xDS metrics, with istiod's names.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Counters and histograms the server updates.
#[derive(Clone, Debug)]
pub struct ServerMetrics {
    /// Responses pushed (`pilot_xds_pushes`).
    pub pushes: Counter,
    /// NACKs received (`pilot_total_xds_rejects`).
    pub nacks: Counter,
    /// Push errors: a response could not be sent (`pilot_xds_push_errors`).
    pub push_errors: Counter,
    /// Connected proxies (`pilot_xds`).
    pub connected: Gauge,
    /// Seconds from a configuration change to the proxy's ACK
    /// (`pilot_proxy_convergence_time`).
    pub convergence: Histogram,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            pushes: Counter::default(),
            nacks: Counter::default(),
            push_errors: Counter::default(),
            connected: Gauge::default(),
            convergence: Histogram::new([0.001, 0.01, 0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0]),
        }
    }
}

impl ServerMetrics {
    /// Registers every metric in `registry` under istiod's names.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pilot_xds_pushes",
            "xDS responses pushed",
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
    }
}
