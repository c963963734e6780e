//! DestinationRule traffic policies as Istio's cluster builder translates
//! them: the policy in force for one cluster (top level, then the subset,
//! each overridden by its `portLevelSettings` for the port), and its Envoy
//! form — circuit breakers (Istio's unlimited defaults unless
//! `connectionPool` says otherwise), outlier detection with the panic
//! threshold set from `minHealthPercent`, the load balancer (simple,
//! consistent hash with ring hash or Maglev, warmup), TCP keepalive and
//! the route hash policy that keys a consistent-hash cluster.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::OutlierDetection as EnvoyOutlier;
use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds;
use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::thresholds::RetryBudget as EnvoyRetryBudget;
use envoy_types::pb::envoy::config::cluster::v3::cluster::common_lb_config::{
    LocalityConfigSpecifier, LocalityWeightedLbConfig,
};
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    CommonLbConfig, LbConfig, LbPolicy, LeastRequestLbConfig, MaglevLbConfig, RingHashLbConfig,
    RoundRobinLbConfig, SlowStartConfig,
};
use envoy_types::pb::envoy::config::cluster::v3::{CircuitBreakers, UpstreamConnectionOptions};
use envoy_types::pb::envoy::config::core::v3::{RuntimeDouble, TcpKeepalive};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::{
    ConnectionProperties, Cookie, CookieAttribute, Header, PolicySpecifier, QueryParameter,
};
use envoy_types::pb::envoy::config::route::v3::route_action::{ClusterSpecifier, HashPolicy};
use envoy_types::pb::envoy::config::route::v3::{Route, VirtualHost};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{UInt32Value, UInt64Value};
use meshwork_config::model::istio::{
    ConnectionPoolSettings, ConsistentHashLb, Distribute, LoadBalancerSettings,
    LocalityLoadBalancerSetting, OutlierDetection, RetryBudget, TrafficPolicy,
};

use crate::pb::{parse_duration, u32_value};
use crate::snapshot::MeshSnapshot;

/// The parts of a DestinationRule traffic policy that apply to one cluster.
#[derive(Clone, Default)]
pub(crate) struct Policy {
    pub lb: Option<LoadBalancerSettings>,
    pub pool: Option<ConnectionPoolSettings>,
    pub outlier: Option<OutlierDetection>,
    pub retry_budget: Option<RetryBudget>,
    /// Client TLS (`tls`), set from the most specific level that has it.
    pub tls: Option<meshwork_config::model::istio::ClientTlsSettings>,
}

impl Policy {
    /// Overlays `tp` (and its settings for `port`) on this policy: a field
    /// set at a more specific level replaces the whole field (Istio's
    /// `MergeTrafficPolicy`).
    pub fn apply(&mut self, tp: Option<&TrafficPolicy>, port: u16) {
        let Some(tp) = tp else { return };
        if tp.load_balancer.is_some() {
            self.lb.clone_from(&tp.load_balancer);
        }
        if tp.connection_pool.is_some() {
            self.pool.clone_from(&tp.connection_pool);
        }
        if tp.outlier_detection.is_some() {
            self.outlier.clone_from(&tp.outlier_detection);
        }
        if tp.retry_budget.is_some() {
            self.retry_budget.clone_from(&tp.retry_budget);
        }
        if tp.tls.is_some() {
            self.tls.clone_from(&tp.tls);
        }
        let level = tp
            .port_level_settings
            .iter()
            .find(|p| p.port.as_ref().and_then(|s| s.number) == Some(i64::from(port)));
        if let Some(level) = level {
            if level.load_balancer.is_some() {
                self.lb.clone_from(&level.load_balancer);
            }
            if level.connection_pool.is_some() {
                self.pool.clone_from(&level.connection_pool);
            }
            if level.outlier_detection.is_some() {
                self.outlier.clone_from(&level.outlier_detection);
            }
            if level.tls.is_some() {
                self.tls.clone_from(&level.tls);
            }
        }
    }

    /// The policy for `cluster` (`outbound|port|subset|host`) as seen from
    /// a proxy in `proxy_ns`.
    pub fn for_cluster(snap: &MeshSnapshot, proxy_ns: &str, cluster: &str) -> Option<Policy> {
        let mut parts = cluster.split('|');
        let (dir, port, subset, host) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if dir != "outbound" {
            return None;
        }
        let port: u16 = port.parse().ok()?;
        let svc = snap.registry().service(host)?;
        let dr = snap.destination_rule(host, proxy_ns, &svc.namespace)?;
        let mut policy = Policy::default();
        policy.apply(dr.traffic_policy.as_ref(), port);
        if !subset.is_empty() {
            let s = dr.subsets.iter().find(|s| s.name == subset)?;
            policy.apply(s.traffic_policy.as_ref(), port);
        }
        Some(policy)
    }
}

fn u64_value(v: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value: v })
}

fn positive_u32(v: Option<i64>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0)
}

/// Circuit breakers: Istio's defaults are unlimited (Envoy's 1024 would
/// surprise users), then `connectionPool` and `retryBudget` lower them.
pub(crate) fn circuit_breakers(policy: &Policy) -> CircuitBreakers {
    let max = u32_value(u32::MAX);
    let mut t = Thresholds {
        max_connections: max,
        max_pending_requests: max,
        max_requests: max,
        max_retries: max,
        track_remaining: true,
        ..Default::default()
    };
    let pool = policy.pool.as_ref();
    if let Some(h) = pool.and_then(|p| p.http.as_ref()) {
        if let Some(v) = positive_u32(h.http2_max_requests.map(i64::from)) {
            t.max_requests = u32_value(v);
        }
        if let Some(v) = positive_u32(h.http1_max_pending_requests.map(i64::from)) {
            t.max_pending_requests = u32_value(v);
        }
        if let Some(v) = positive_u32(h.max_retries.map(i64::from)) {
            t.max_retries = u32_value(v);
        }
    }
    if let Some(v) = positive_u32(
        pool.and_then(|p| p.tcp.as_ref())
            .and_then(|t| t.max_connections)
            .map(i64::from),
    ) {
        t.max_connections = u32_value(v);
    }
    if let Some(b) = &policy.retry_budget {
        t.retry_budget = Some(EnvoyRetryBudget {
            budget_percent: Some(Percent {
                value: b.percent.unwrap_or(20.0),
            }),
            min_retry_concurrency: u32_value(
                b.min_retry_concurrency
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or(3),
            ),
            budget_interval: b.budget_interval.as_deref().and_then(parse_duration),
        });
    }
    CircuitBreakers {
        thresholds: vec![t],
        ..Default::default()
    }
}

/// `maxRequestsPerConnection`, for the cluster's HTTP protocol options.
pub(crate) fn max_requests_per_connection(policy: &Policy) -> Option<u32> {
    positive_u32(
        policy
            .pool
            .as_ref()
            .and_then(|p| p.http.as_ref())
            .and_then(|h| h.max_requests_per_connection)
            .map(i64::from),
    )
}

/// Applies outlier detection, the panic threshold, TCP keepalive and the
/// load balancer's configuration to `c` (whose `lb_policy` the caller
/// chose for simple policies).
pub(crate) fn apply(c: &mut Cluster, policy: &Policy, grpc: bool) {
    c.circuit_breakers = Some(circuit_breakers(policy));
    // Meshwork's EDS carries endpoints the platform marks unhealthy (Istio
    // leaves them out), so panic mode is off unless minHealthPercent asks.
    let mut panic = 0.0;
    if let Some(o) = &policy.outlier {
        let mut out = EnvoyOutlier {
            enforcing_success_rate: u32_value(0),
            interval: o.interval.as_deref().and_then(parse_duration),
            base_ejection_time: o.base_ejection_time.as_deref().and_then(parse_duration),
            max_ejection_percent: o
                .max_ejection_percent
                .and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0)
                .and_then(u32_value),
            ..Default::default()
        };
        if let Some(v) = o.consecutive5xx_errors.and_then(|v| u32::try_from(v).ok()) {
            out.consecutive_5xx = u32_value(v);
            out.enforcing_consecutive_5xx = u32_value(if v > 0 { 100 } else { 0 });
        }
        if let Some(v) = o
            .consecutive_gateway_errors
            .and_then(|v| u32::try_from(v).ok())
        {
            out.consecutive_gateway_failure = u32_value(v);
            out.enforcing_consecutive_gateway_failure = u32_value(if v > 0 { 100 } else { 0 });
        }
        c.outlier_detection = Some(out);
        panic = f64::from(o.min_health_percent.unwrap_or(0).clamp(0, 100));
    }
    c.common_lb_config = Some(CommonLbConfig {
        healthy_panic_threshold: Some(Percent { value: panic }),
        locality_config_specifier: locality_weighted(policy).then_some({
            LocalityConfigSpecifier::LocalityWeightedLbConfig(LocalityWeightedLbConfig {})
        }),
        ..Default::default()
    });
    if let Some(k) = policy
        .pool
        .as_ref()
        .and_then(|p| p.tcp.as_ref())
        .and_then(|t| t.tcp_keepalive.as_ref())
    {
        let secs = |d: Option<&String>| {
            d.and_then(|d| parse_duration(d))
                .and_then(|d| u32::try_from(d.seconds).ok())
                .and_then(u32_value)
        };
        c.upstream_connection_options = Some(UpstreamConnectionOptions {
            tcp_keepalive: Some(TcpKeepalive {
                keepalive_probes: k
                    .probes
                    .and_then(|p| u32::try_from(p).ok())
                    .and_then(u32_value),
                keepalive_time: secs(k.time.as_ref()),
                keepalive_interval: secs(k.interval.as_ref()),
            }),
            ..Default::default()
        });
    }
    if grpc {
        return;
    }
    let lb = policy.lb.as_ref();
    if let Some(ch) = lb.and_then(|l| l.consistent_hash.as_ref()) {
        if let Some(m) = &ch.maglev {
            c.lb_policy = LbPolicy::Maglev as i32;
            c.lb_config = m
                .table_size
                .and_then(|t| u64::try_from(t).ok())
                .filter(|t| *t > 0)
                .map(|t| {
                    LbConfig::MaglevLbConfig(MaglevLbConfig {
                        table_size: u64_value(t),
                    })
                });
        } else {
            let size = ch
                .ring_hash
                .as_ref()
                .and_then(|r| r.minimum_ring_size)
                .or(ch.minimum_ring_size)
                .and_then(|t| u64::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(1024);
            c.lb_policy = LbPolicy::RingHash as i32;
            c.lb_config = Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
                minimum_ring_size: u64_value(size),
                ..Default::default()
            }));
        }
        return;
    }
    if let Some(w) = lb.and_then(|l| l.warmup.as_ref())
        && let Some(window) = parse_duration(&w.duration)
    {
        let slow = SlowStartConfig {
            slow_start_window: Some(window),
            aggression: Some(RuntimeDouble {
                default_value: w.aggression.unwrap_or(1.0),
                runtime_key: "upstream.slow_start.aggression".into(),
            }),
            min_weight_percent: Some(Percent {
                value: w.minimum_percent.unwrap_or(10.0),
            }),
        };
        c.lb_config = if c.lb_policy == LbPolicy::RoundRobin as i32 {
            Some(LbConfig::RoundRobinLbConfig(RoundRobinLbConfig {
                slow_start_config: Some(slow),
            }))
        } else if c.lb_policy == LbPolicy::LeastRequest as i32 {
            Some(LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
                slow_start_config: Some(slow),
                ..Default::default()
            }))
        } else {
            None
        };
    }
}

/// The route hash policy for a consistent-hash load balancer.
pub(crate) fn hash_policy(ch: &ConsistentHashLb) -> Option<HashPolicy> {
    let spec = if let Some(h) = &ch.http_header_name {
        PolicySpecifier::Header(Header {
            header_name: h.to_ascii_lowercase(),
            ..Default::default()
        })
    } else if let Some(c) = &ch.http_cookie {
        PolicySpecifier::Cookie(Cookie {
            name: c.name.clone(),
            ttl: c.ttl.as_deref().and_then(parse_duration),
            path: c.path.clone().unwrap_or_default(),
            attributes: c
                .attributes
                .iter()
                .map(|a| CookieAttribute {
                    name: a.name.clone(),
                    value: a.value.clone().unwrap_or_default(),
                })
                .collect(),
        })
    } else if ch.use_source_ip == Some(true) {
        PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
    } else if let Some(q) = &ch.http_query_parameter_name {
        PolicySpecifier::QueryParameter(QueryParameter { name: q.clone() })
    } else {
        return None;
    };
    Some(HashPolicy {
        policy_specifier: Some(spec),
        terminal: false,
    })
}

/// The hash policy the clusters of a route agree on (Istio sets one only
/// when every destination hashes the same way).
fn route_hash_policy(snap: &MeshSnapshot, proxy_ns: &str, route: &Route) -> Option<HashPolicy> {
    let Some(Action::Route(a)) = &route.action else {
        return None;
    };
    let clusters: Vec<&str> = match &a.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => vec![c.as_str()],
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            w.clusters.iter().map(|c| c.name.as_str()).collect()
        }
        _ => return None,
    };
    let mut agreed: Option<Option<HashPolicy>> = None;
    for c in clusters {
        let hp = Policy::for_cluster(snap, proxy_ns, c)
            .and_then(|p| p.lb)
            .and_then(|lb| lb.consistent_hash)
            .and_then(|ch| hash_policy(&ch));
        match &agreed {
            None => agreed = Some(hp),
            Some(prev) if *prev != hp => return None,
            Some(_) => {}
        }
    }
    agreed.flatten()
}

/// Adds each route's hash policy, from the DestinationRules of its
/// clusters, to a virtual host's routes.
pub(crate) fn add_hash_policies(snap: &MeshSnapshot, proxy_ns: &str, vh: &mut VirtualHost) {
    for route in &mut vh.routes {
        if let Some(hp) = route_hash_policy(snap, proxy_ns, route)
            && let Some(Action::Route(a)) = &mut route.action
            && a.hash_policy.is_empty()
        {
            a.hash_policy.push(hp);
        }
    }
}

/// The proxy locality the endpoints of a cluster are weighted or ordered
/// by, or `""` when neither applies. `distribute` needs only a known proxy
/// locality; locality failover, as in Istio, also needs outlier detection
/// (to notice failures). Both need locality load balancing not disabled.
pub(crate) fn failover_locality<'a>(policy: &Policy, proxy_locality: &'a str) -> &'a str {
    let setting = locality_setting(policy);
    let enabled = setting.is_none_or(|s| s.enabled != Some(false));
    let distribute = setting.is_some_and(|s| !s.distribute.is_empty());
    if enabled && (distribute || policy.outlier.is_some()) && !proxy_locality.is_empty() {
        proxy_locality
    } else {
        ""
    }
}

/// The effective `localityLbSetting`, if any.
fn locality_setting(policy: &Policy) -> Option<&LocalityLoadBalancerSetting> {
    policy
        .lb
        .as_ref()
        .and_then(|l| l.locality_lb_setting.as_ref())
}

/// Whether the cluster balances by locality weights (`distribute` set and
/// locality load balancing not disabled), as Istio then sets
/// `common_lb_config.locality_weighted_lb_config`.
pub(crate) fn locality_weighted(policy: &Policy) -> bool {
    locality_setting(policy).is_some_and(|s| s.enabled != Some(false) && !s.distribute.is_empty())
}

/// Istio's `applyLocalityWeights`: for the first `distribute` rule whose
/// `from` matches the proxy's locality, each locality gets the weight of
/// the first `to` entry (in key order) it matches, split among the
/// localities matching that entry in proportion to their own weights
/// (rounded up); localities matching no entry lose their endpoints.
fn apply_distribute(
    la: &mut envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment,
    rules: &[Distribute],
    here: &str,
) {
    let (r, z, s) = split_locality(here);
    let Some(rule) = rules
        .iter()
        .find(|d| locality_match((r, z, s), d.from.as_deref().unwrap_or("")))
    else {
        return;
    };
    let mut unmatched: Vec<bool> = vec![true; la.endpoints.len()];
    for (to, weight) in &rule.to {
        let weight = u64::try_from(*weight).unwrap_or(0);
        let mut hit = Vec::new();
        for (i, group) in la.endpoints.iter().enumerate() {
            let l = group.locality.clone().unwrap_or_default();
            if unmatched[i] && locality_match((&l.region, &l.zone, &l.sub_zone), to) {
                unmatched[i] = false;
                let own = group.load_balancing_weight.as_ref().map_or(1, |w| w.value);
                hit.push((i, u64::from(own)));
            }
        }
        let total: u64 = hit.iter().map(|h| h.1).sum();
        for (i, own) in hit {
            let w = (own * weight).div_ceil(total.max(1));
            if w > 0 {
                let w = u32::try_from(w).unwrap_or(u32::MAX);
                la.endpoints[i].load_balancing_weight = Some(UInt32Value { value: w });
            }
        }
    }
    for (group, drop) in la.endpoints.iter_mut().zip(unmatched) {
        if drop {
            group.lb_endpoints.clear();
        }
    }
}

/// `region/zone/subzone` split into its parts (missing ones empty).
fn split_locality(l: &str) -> (&str, &str, &str) {
    let mut it = l.splitn(3, '/');
    (
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
    )
}

/// Istio's `LocalityMatch`: a rule `region/zone/subzone` where `*` matches
/// anything and a missing zone or subzone matches any.
fn locality_match(l: (&str, &str, &str), rule: &str) -> bool {
    let (r, z, s) = split_locality(rule);
    (r == "*" || r == l.0)
        && (z.is_empty() || z == "*" || z == l.1)
        && (s.is_empty() || s == "*" || s == l.2)
}

/// Istio's locality load balancing: `distribute` weights (see
/// `apply_distribute`), or else locality failover: priority 0 for endpoints in the proxy's
/// region/zone/subzone, 1 for its zone, 2 for its region, 3 for other
/// regions — 4 for those not named by a matching `failover` rule's `to` —
/// then renumbered without gaps.
pub(crate) fn apply_failover(
    la: &mut envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment,
    policy: &Policy,
    here: &str,
) {
    if here.is_empty() {
        return;
    }
    if let Some(s) = locality_setting(policy)
        && !s.distribute.is_empty()
    {
        apply_distribute(la, &s.distribute, here);
        return;
    }
    let mut mine = here.splitn(3, '/');
    let (region, zone, sub) = (
        mine.next().unwrap_or(""),
        mine.next().unwrap_or(""),
        mine.next().unwrap_or(""),
    );
    let rules = policy
        .lb
        .as_ref()
        .and_then(|l| l.locality_lb_setting.as_ref())
        .map(|s| s.failover.as_slice())
        .unwrap_or_default();
    let mut raw = Vec::with_capacity(la.endpoints.len());
    for group in &la.endpoints {
        let l = group.locality.clone().unwrap_or_default();
        let mut p = if l.region != region {
            3
        } else if l.zone != zone {
            2
        } else if l.sub_zone != sub {
            1
        } else {
            0
        };
        if p == 3
            && let Some(rule) = rules.iter().find(|r| r.from.as_deref() == Some(region))
            && rule.to.as_deref() != Some(l.region.as_str())
        {
            p = 4;
        }
        raw.push(p);
    }
    let mut distinct = raw.clone();
    distinct.sort_unstable();
    distinct.dedup();
    for (group, p) in la.endpoints.iter_mut().zip(raw) {
        group.priority = distinct.iter().position(|d| *d == p).unwrap_or(0) as u32;
    }
}
