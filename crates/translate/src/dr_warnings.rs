//! DestinationRule fields that are valid Istio but that Meshwork accepts
//! without enforcing, reported as [`Warning`]s with their field paths
//! (top level, `portLevelSettings[i]`, `subsets[i].trafficPolicy`).

use meshwork_config::model::istio::{
    ConnectionPoolSettings, DestinationRule, LoadBalancerSettings, OutlierDetection, TrafficPolicy,
};

use crate::warnings::Warning;

/// Adds the warnings of one DestinationRule (`id` is `namespace/name`).
pub(crate) fn destination_rule(id: &str, dr: &DestinationRule, out: &mut Vec<Warning>) {
    let mut warn = |field: String, detail: &'static str| {
        out.push(Warning {
            kind: "DestinationRule",
            resource: id.to_string(),
            field,
            detail,
        })
    };
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy("spec.trafficPolicy", tp, &mut warn);
    }
    for (i, s) in dr.subsets.iter().enumerate() {
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(&format!("spec.subsets[{i}].trafficPolicy"), tp, &mut warn);
        }
    }
}

fn traffic_policy(at: &str, tp: &TrafficPolicy, warn: &mut impl FnMut(String, &'static str)) {
    parts(
        at,
        tp.load_balancer.as_ref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_ref(),
        warn,
    );
    for (i, p) in tp.port_level_settings.iter().enumerate() {
        parts(
            &format!("{at}.portLevelSettings[{i}]"),
            p.load_balancer.as_ref(),
            p.connection_pool.as_ref(),
            p.outlier_detection.as_ref(),
            warn,
        );
    }
    if tp.proxy_protocol.is_some() {
        warn(
            format!("{at}.proxyProtocol"),
            "not enforced: no PROXY protocol header is sent upstream",
        );
    }
    if tp.tunnel.is_some() {
        warn(
            format!("{at}.tunnel"),
            "not enforced: connections are not tunneled",
        );
    }
    if tp
        .retry_budget
        .as_ref()
        .is_some_and(|b| b.budget_interval.is_some())
    {
        warn(
            format!("{at}.retryBudget.budgetInterval"),
            "not enforced: the budget counts requests in flight now",
        );
    }
}

fn parts(
    at: &str,
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    warn: &mut impl FnMut(String, &'static str),
) {
    if let Some(lb) = lb {
        let at = format!("{at}.loadBalancer");
        if let Some(l) = &lb.locality_lb_setting
            && !l.failover_priority.is_empty()
        {
            warn(
                format!("{at}.localityLbSetting.failoverPriority"),
                "not enforced: failover follows localities only",
            );
        }
        if lb.zone_aware_lb_setting.is_some() {
            warn(format!("{at}.zoneAwareLbSetting"), "not enforced");
        }
        if lb.backend_utilization.is_some() {
            warn(
                format!("{at}.backendUtilization"),
                "not enforced: ORCA load reports are not read",
            );
        }
    }
    if let Some(pool) = pool {
        let at = format!("{at}.connectionPool");
        if let Some(t) = &pool.tcp {
            if t.max_connection_duration.is_some() {
                warn(
                    format!("{at}.tcp.maxConnectionDuration"),
                    "not enforced: connections live until idle or closed",
                );
            }
            if t.idle_timeout.is_some() {
                warn(
                    format!("{at}.tcp.idleTimeout"),
                    "not enforced for TCP proxying (HTTP pools use http.idleTimeout)",
                );
            }
        }
        if let Some(h) = &pool.http {
            if h.http2_keep_alive.is_some() {
                warn(
                    format!("{at}.http.http2KeepAlive"),
                    "not enforced: HTTP/2 PINGs use the proxy's defaults",
                );
            }
            if h.max_concurrent_streams.is_some() {
                warn(
                    format!("{at}.http.maxConcurrentStreams"),
                    "not enforced: the upstream's own stream limit applies",
                );
            }
        }
    }
    if let Some(o) = outlier {
        let at = format!("{at}.outlierDetection");
        if o.split_external_local_origin_errors == Some(true)
            || o.consecutive_local_origin_failures.is_some()
        {
            warn(
                format!("{at}.splitExternalLocalOriginErrors"),
                "not enforced: local failures count as 5xx and gateway errors",
            );
        }
        if !o.outlier_detection_http_error_codes.is_empty() {
            warn(
                format!("{at}.outlierDetectionHttpErrorCodes"),
                "not enforced: 5xx and gateway errors are counted",
            );
        }
        if o.consecutive_errors.is_some() {
            warn(
                format!("{at}.consecutiveErrors"),
                "deprecated and not enforced: use consecutive5xxErrors",
            );
        }
    }
}
