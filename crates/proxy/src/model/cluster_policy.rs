//! The resilience parts of a CDS `Cluster`: circuit breakers, outlier
//! detection, the panic threshold, slow start, hash load balancer sizes and
//! TCP keepalive. Defaults are Envoy's.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::LbConfig;
use envoy_types::pb::envoy::config::cluster::v3::cluster::common_lb_config::LocalityConfigSpecifier;
use envoy_types::pb::envoy::config::core::v3::RoutingPriority;

use super::{CompileError, duration};

/// Circuit breaker thresholds (Envoy's DEFAULT priority).
#[derive(Clone, Debug, PartialEq)]
pub struct CircuitLimits {
    /// Upstream connections, cluster-wide (Envoy default 1024).
    pub max_connections: u32,
    /// Requests waiting for a connection (Envoy default 1024).
    pub max_pending_requests: u32,
    /// Requests in flight (Envoy default 1024).
    pub max_requests: u32,
    /// Retries in flight (Envoy default 3).
    pub max_retries: u32,
    /// A retry budget, which replaces `max_retries` when set.
    pub retry_budget: Option<RetryBudget>,
}

impl Default for CircuitLimits {
    fn default() -> Self {
        CircuitLimits {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            retry_budget: None,
        }
    }
}

/// Envoy's retry budget: retries may be `percent` of active plus pending
/// requests, and at least `min_concurrency`.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryBudget {
    /// Percent of active + pending requests (Envoy default 20).
    pub percent: f64,
    /// Retries always allowed (Envoy default 3).
    pub min_concurrency: u32,
}

/// Consecutive-error outlier detection (success-rate detection is not
/// implemented; a config asking for it is rejected).
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierConfig {
    /// 5xx responses (and local failures) in a row before ejection (default 5).
    pub consecutive_5xx: u32,
    /// Percent chance an ejection for 5xx is enforced (default 100).
    pub enforcing_5xx: u32,
    /// 502/503/504 (and local failures) in a row before ejection (default 5).
    pub consecutive_gateway: u32,
    /// Percent chance a gateway ejection is enforced (default 0).
    pub enforcing_gateway: u32,
    /// Time between ejection sweeps (default 10 s).
    pub interval: Duration,
    /// Ejection time, multiplied by the host's ejection count (default 30 s).
    pub base_ejection_time: Duration,
    /// Cap of the ejection time (default 300 s, at least the base).
    pub max_ejection_time: Duration,
    /// Most hosts that may be ejected, in percent (default 10).
    pub max_ejection_percent: u32,
    /// Eject one host even when the percentage forbids it.
    pub always_eject_one_host: bool,
}

/// Slow start: a new endpoint's weight ramps up over `window`.
#[derive(Clone, Debug, PartialEq)]
pub struct SlowStart {
    /// The ramp's length.
    pub window: Duration,
    /// Curve: 1.0 is linear, larger is faster at first.
    pub aggression: f64,
    /// The least weight factor, in percent (Envoy default 10).
    pub min_weight_percent: f64,
}

/// TCP keepalive probes on upstream connections.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Keepalive {
    /// Probes before the connection is dead.
    pub probes: Option<u32>,
    /// Idle time before probing.
    pub time: Option<Duration>,
    /// Time between probes.
    pub interval: Option<Duration>,
}

/// Everything about a cluster that protects it and its callers.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterPolicy {
    /// Circuit breakers.
    pub limits: CircuitLimits,
    /// Outlier detection, when configured.
    pub outlier: Option<OutlierConfig>,
    /// Below this percentage of healthy hosts the balancer uses all hosts
    /// (Envoy default 50; 0 disables panic mode).
    pub panic_threshold: f64,
    /// Slow start for new endpoints.
    pub slow_start: Option<SlowStart>,
    /// TCP keepalive.
    pub keepalive: Option<Keepalive>,
    /// Close an upstream connection after this many requests.
    pub max_requests_per_connection: Option<u32>,
    /// Weigh localities by their EDS `load_balancing_weight`.
    pub locality_weighted: bool,
}

impl Default for ClusterPolicy {
    fn default() -> Self {
        ClusterPolicy {
            limits: CircuitLimits::default(),
            outlier: None,
            panic_threshold: 50.0,
            slow_start: None,
            keepalive: None,
            max_requests_per_connection: None,
            locality_weighted: false,
        }
    }
}

fn opt_duration(
    d: Option<&envoy_types::pb::google::protobuf::Duration>,
    default: Duration,
) -> Result<Duration, CompileError> {
    d.map(duration).transpose().map(|d| d.unwrap_or(default))
}

fn percent(v: Option<u32>, default: u32, what: &str) -> Result<u32, CompileError> {
    let v = v.unwrap_or(default);
    if v > 100 {
        return Err(format!("{what} {v} is over 100 percent"));
    }
    Ok(v)
}

impl ClusterPolicy {
    /// Reads the policy from a cluster, rejecting values Envoy rejects.
    #[allow(deprecated)]
    pub fn compile(c: &Cluster) -> Result<Self, CompileError> {
        let mut p = ClusterPolicy::default();
        if let Some(cb) = &c.circuit_breakers {
            for t in &cb.thresholds {
                // Requests have no priority here: HIGH thresholds never apply.
                if t.priority != RoutingPriority::Default as i32 {
                    continue;
                }
                let l = &mut p.limits;
                let get = |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>, d| {
                    v.as_ref().map_or(d, |v| v.value)
                };
                l.max_connections = get(&t.max_connections, l.max_connections);
                l.max_pending_requests = get(&t.max_pending_requests, l.max_pending_requests);
                l.max_requests = get(&t.max_requests, l.max_requests);
                l.max_retries = get(&t.max_retries, l.max_retries);
                if let Some(b) = &t.retry_budget {
                    let pct = b.budget_percent.as_ref().map_or(20.0, |p| p.value);
                    if !(0.0..=100.0).contains(&pct) {
                        return Err(format!("retry budget percent {pct} out of range"));
                    }
                    l.retry_budget = Some(RetryBudget {
                        percent: pct,
                        min_concurrency: b.min_retry_concurrency.as_ref().map_or(3, |v| v.value),
                    });
                }
            }
        }
        if let Some(o) = &c.outlier_detection {
            let u = |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>| {
                v.as_ref().map(|v| v.value)
            };
            if u(&o.enforcing_success_rate).unwrap_or(100) > 0
                && u(&o.success_rate_request_volume).is_some()
            {
                return Err("success-rate outlier detection is not supported".into());
            }
            let base = opt_duration(o.base_ejection_time.as_ref(), Duration::from_secs(30))?;
            p.outlier = Some(OutlierConfig {
                consecutive_5xx: u(&o.consecutive_5xx).unwrap_or(5),
                enforcing_5xx: percent(u(&o.enforcing_consecutive_5xx), 100, "enforcing_5xx")?,
                consecutive_gateway: u(&o.consecutive_gateway_failure).unwrap_or(5),
                enforcing_gateway: percent(
                    u(&o.enforcing_consecutive_gateway_failure),
                    0,
                    "enforcing_gateway",
                )?,
                interval: opt_duration(o.interval.as_ref(), Duration::from_secs(10))?
                    .max(Duration::from_millis(1)),
                base_ejection_time: base,
                max_ejection_time: opt_duration(
                    o.max_ejection_time.as_ref(),
                    Duration::from_secs(300),
                )?
                .max(base),
                max_ejection_percent: percent(
                    u(&o.max_ejection_percent),
                    10,
                    "max_ejection_percent",
                )?,
                always_eject_one_host: o.always_eject_one_host.as_ref().is_some_and(|b| b.value),
            });
        }
        if let Some(common) = &c.common_lb_config {
            if let Some(t) = &common.healthy_panic_threshold {
                if !(0.0..=100.0).contains(&t.value) {
                    return Err(format!("healthy_panic_threshold {} out of range", t.value));
                }
                p.panic_threshold = t.value;
            }
            p.locality_weighted = matches!(
                common.locality_config_specifier,
                Some(LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
            );
        }
        let slow = match &c.lb_config {
            Some(LbConfig::RoundRobinLbConfig(r)) => r.slow_start_config.as_ref(),
            Some(LbConfig::LeastRequestLbConfig(r)) => r.slow_start_config.as_ref(),
            _ => None,
        };
        if let Some(s) = slow
            && let Some(window) = &s.slow_start_window
        {
            let aggression = s.aggression.as_ref().map_or(1.0, |a| a.default_value);
            if aggression <= 0.0 || !aggression.is_finite() {
                return Err(format!("slow start aggression {aggression} must be > 0"));
            }
            p.slow_start = Some(SlowStart {
                window: duration(window)?,
                aggression,
                min_weight_percent: s.min_weight_percent.as_ref().map_or(10.0, |m| m.value),
            });
        }
        if let Some(k) = c
            .upstream_connection_options
            .as_ref()
            .and_then(|o| o.tcp_keepalive.as_ref())
        {
            let secs = |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>| {
                v.as_ref().map(|v| Duration::from_secs(u64::from(v.value)))
            };
            p.keepalive = Some(Keepalive {
                probes: k.keepalive_probes.as_ref().map(|v| v.value),
                time: secs(&k.keepalive_time),
                interval: secs(&k.keepalive_interval),
            });
        }
        p.max_requests_per_connection = c
            .max_requests_per_connection
            .as_ref()
            .map(|v| v.value)
            .filter(|v| *v > 0);
        Ok(p)
    }
}

impl ClusterPolicy {
    /// The policy as `/config_dump` shows it (Envoy's field names).
    pub fn dump(&self) -> serde_json::Value {
        let l = &self.limits;
        serde_json::json!({
            "circuit_breakers": {"thresholds": [{
                "max_connections": l.max_connections,
                "max_pending_requests": l.max_pending_requests,
                "max_requests": l.max_requests,
                "max_retries": l.max_retries,
                "retry_budget": l.retry_budget.as_ref().map(|b| serde_json::json!({
                    "budget_percent": b.percent,
                    "min_retry_concurrency": b.min_concurrency,
                })),
            }]},
            "outlier_detection": self.outlier.as_ref().map(|o| serde_json::json!({
                "consecutive_5xx": o.consecutive_5xx,
                "enforcing_consecutive_5xx": o.enforcing_5xx,
                "consecutive_gateway_failure": o.consecutive_gateway,
                "enforcing_consecutive_gateway_failure": o.enforcing_gateway,
                "interval_ms": o.interval.as_millis() as u64,
                "base_ejection_time_ms": o.base_ejection_time.as_millis() as u64,
                "max_ejection_time_ms": o.max_ejection_time.as_millis() as u64,
                "max_ejection_percent": o.max_ejection_percent,
            })),
            "healthy_panic_threshold": self.panic_threshold,
            "locality_weighted_lb_config": self.locality_weighted,
            "slow_start_window_ms": self.slow_start.as_ref().map(|s| s.window.as_millis() as u64),
            "max_requests_per_connection": self.max_requests_per_connection,
            "tcp_keepalive": self.keepalive.as_ref().map(|k| serde_json::json!({
                "keepalive_probes": k.probes,
                "keepalive_time_s": k.time.map(|t| t.as_secs()),
                "keepalive_interval_s": k.interval.map(|t| t.as_secs()),
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds;
    use envoy_types::pb::envoy::config::cluster::v3::{CircuitBreakers, OutlierDetection};
    use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

    #[test]
    fn defaults_are_envoys() {
        let p = ClusterPolicy::compile(&Cluster::default()).unwrap();
        assert_eq!(p.limits.max_connections, 1024);
        assert_eq!(p.limits.max_retries, 3);
        assert_eq!(p.panic_threshold, 50.0);
        assert!(p.outlier.is_none());
    }

    #[test]
    fn reads_breakers_and_outlier_detection() {
        let c = Cluster {
            circuit_breakers: Some(CircuitBreakers {
                thresholds: vec![Thresholds {
                    max_connections: Some(UInt32Value { value: 1 }),
                    max_pending_requests: Some(UInt32Value { value: 2 }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            outlier_detection: Some(OutlierDetection {
                consecutive_5xx: Some(UInt32Value { value: 1 }),
                base_ejection_time: Some(PbDuration {
                    seconds: 1,
                    nanos: 0,
                }),
                max_ejection_percent: Some(UInt32Value { value: 100 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = ClusterPolicy::compile(&c).unwrap();
        assert_eq!(p.limits.max_connections, 1);
        assert_eq!(p.limits.max_pending_requests, 2);
        assert_eq!(p.limits.max_requests, 1024);
        let o = p.outlier.unwrap();
        assert_eq!(o.consecutive_5xx, 1);
        assert_eq!(o.base_ejection_time, Duration::from_secs(1));
        assert_eq!(o.max_ejection_time, Duration::from_secs(300));
        assert_eq!(o.max_ejection_percent, 100);
    }

    #[test]
    fn rejects_bad_percentages() {
        let c = Cluster {
            outlier_detection: Some(OutlierDetection {
                max_ejection_percent: Some(UInt32Value { value: 101 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(ClusterPolicy::compile(&c).is_err());
    }
}
