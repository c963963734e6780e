//! VirtualService route policies as Istio translates them: retries (with
//! Istio's default policy), fault injection and CORS (per-route configs of
//! the fault and CORS filters) and mirroring.

use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::route::v3::RetryPolicy;
use envoy_types::pb::envoy::config::route::v3::retry_policy::{
    RetryBackOff, RetryHostPredicate, retry_host_predicate,
};
use envoy_types::pb::envoy::config::route::v3::route_action::RequestMirrorPolicy;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::FaultDelay;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as EnvoyCors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::fault_abort::ErrorType;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{FaultAbort, HttpFault};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use meshwork_config::model::istio::{
    CorsPolicy, HttpFaultInjection, HttpRetry, HttpRoute, Percent, UnmatchedPreflights,
};
use meshwork_xds::pack;

use crate::pb::{bool_value, parse_duration, u32_value};

/// Envoy's name of the fault filter (its per-route config key).
pub(crate) const FAULT_FILTER: &str = "envoy.filters.http.fault";
/// Envoy's name of the CORS filter (its per-route config key).
pub(crate) const CORS_FILTER: &str = "envoy.filters.http.cors";
/// What Istio retries on by default.
const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// The `retryOn` conditions Meshwork's proxy enforces.
pub(crate) const RETRY_ON_SUPPORTED: [&str; 12] = [
    "5xx",
    "gateway-error",
    "connect-failure",
    "refused-stream",
    "retriable-4xx",
    "reset",
    "retriable-status-codes",
    "cancelled",
    "deadline-exceeded",
    "resource-exhausted",
    "unavailable",
    "internal",
];

/// Istio's default retry policy: 2 retries on connection failures, refused
/// streams, gRPC unavailable/cancelled and 503, on a host not tried yet.
pub(crate) fn default_retry() -> RetryPolicy {
    RetryPolicy {
        retry_on: DEFAULT_RETRY_ON.into(),
        num_retries: u32_value(2),
        retriable_status_codes: vec![503],
        retry_host_predicate: vec![RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: Some(retry_host_predicate::ConfigType::TypedConfig(pack(
                &PreviousHostsPredicate::default(),
            ))),
        }],
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    }
}

/// Istio's `ConvertPolicy`: no `retries` means the default policy, zero
/// attempts means none.
pub(crate) fn retry(r: Option<&HttpRetry>) -> Option<RetryPolicy> {
    let Some(r) = r else {
        return Some(default_retry());
    };
    let attempts = r.attempts.unwrap_or(0);
    if attempts <= 0 {
        return None;
    }
    let mut out = default_retry();
    out.num_retries = u32_value(attempts as u32);
    if let Some(on) = r.retry_on.as_deref().filter(|s| !s.trim().is_empty()) {
        let mut policies = Vec::new();
        let mut codes = Vec::new();
        for token in on.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match token.parse::<u32>() {
                Ok(code) => codes.push(code),
                // Conditions the proxy cannot observe are left out (and
                // reported by `crate::warnings`).
                Err(_) if RETRY_ON_SUPPORTED.contains(&token) => policies.push(token.to_string()),
                Err(_) => {}
            }
        }
        if !codes.is_empty() && !policies.iter().any(|p| p == "retriable-status-codes") {
            policies.push("retriable-status-codes".into());
        }
        out.retry_on = policies.join(",");
        out.retriable_status_codes = codes;
    }
    out.per_try_timeout = r.per_try_timeout.as_deref().and_then(parse_duration);
    if r.retry_ignore_previous_hosts == Some(false) {
        out.retry_host_predicate.clear();
    }
    if let Some(base) = r.backoff.as_deref().and_then(parse_duration) {
        out.retry_back_off = Some(RetryBackOff {
            base_interval: Some(base),
            ..Default::default()
        });
    }
    Some(out)
}

fn percent(p: &Percent) -> FractionalPercent {
    let v = p.value.unwrap_or(0.0).clamp(0.0, 100.0);
    FractionalPercent {
        numerator: (v * 10_000.0) as u32,
        denominator: 2, // MILLION
    }
}

fn hundredths(n: i64) -> FractionalPercent {
    FractionalPercent {
        numerator: n.clamp(0, 100) as u32,
        denominator: 0, // HUNDRED
    }
}

/// gRPC status codes by name, as Istio accepts them.
fn grpc_code(name: &str) -> Option<u32> {
    name.parse::<u32>().ok().filter(|c| *c <= 16).or_else(|| {
        meshwork_config::validate::GRPC_STATUS
            .iter()
            .position(|n| *n == name)
            .map(|i| i as u32)
    })
}

/// Istio's `TranslateFault`: a fixed delay and an abort, each with its
/// percentage (absent: none of the requests).
pub(crate) fn fault(f: &HttpFaultInjection) -> Option<HttpFault> {
    let delay = f.delay.as_ref().and_then(|d| {
        let fixed = d.fixed_delay.as_deref().and_then(parse_duration)?;
        Some(FaultDelay {
            percentage: Some(match (&d.percentage, d.percent) {
                (Some(p), _) => percent(p),
                (None, n) => hundredths(i64::from(n.unwrap_or(0))),
            }),
            fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(fixed)),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let error_type = match (a.http_status, a.grpc_status.as_deref()) {
            (Some(s), _) if s > 0 => ErrorType::HttpStatus(s as u32),
            (_, Some(g)) => ErrorType::GrpcStatus(grpc_code(g)?),
            _ => return None,
        };
        Some(FaultAbort {
            percentage: a.percentage.as_ref().map(percent),
            error_type: Some(error_type),
            ..Default::default()
        })
    });
    if delay.is_none() && abort.is_none() {
        return None;
    }
    Some(HttpFault {
        delay,
        abort,
        ..Default::default()
    })
}

/// Istio's `TranslateCORSPolicy`.
pub(crate) fn cors(c: &CorsPolicy) -> EnvoyCors {
    let origins = if c.allow_origins.is_empty() {
        c.allow_origin.iter().map(|o| crate::vs::exact(o)).collect()
    } else {
        c.allow_origins
            .iter()
            .filter_map(crate::vs::string_matcher)
            .collect()
    };
    EnvoyCors {
        allow_origin_string_match: origins,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .as_deref()
            .and_then(meshwork_config::duration::parse_nanos)
            .map(|n| (n / 1_000_000_000).to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.and_then(bool_value),
        filter_enabled: Some(RuntimeFractionalPercent {
            default_value: Some(hundredths(100)),
            ..Default::default()
        }),
        forward_not_matching_preflights: (c.unmatched_preflights
            == Some(UnmatchedPreflights::Ignore))
        .then(|| bool_value(false))
        .flatten(),
        ..Default::default()
    }
}

/// The mirror policies of a route: `mirror` (with `mirrorPercentage`, the
/// deprecated `mirrorPercent`, or 100%) then each of `mirrors`; a zero
/// percentage disables that mirror.
pub(crate) fn mirrors(
    rule: &HttpRoute,
    cluster: impl Fn(&meshwork_config::model::istio::Destination) -> String,
) -> Vec<RequestMirrorPolicy> {
    let mut out = Vec::new();
    let policy = |cluster: String, fraction: FractionalPercent| RequestMirrorPolicy {
        cluster,
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(fraction),
            ..Default::default()
        }),
        trace_sampled: bool_value(false),
        ..Default::default()
    };
    if let Some(m) = &rule.mirror {
        let fraction = match (
            &rule.mirror_percentage,
            rule.mirror_percent.or(rule.mirror_percent_alt),
        ) {
            (Some(p), _) => Some(percent(p)).filter(|f| f.numerator > 0),
            (None, Some(n)) => Some(hundredths(n)).filter(|f| f.numerator > 0),
            (None, None) => Some(hundredths(100)),
        };
        if let Some(f) = fraction {
            out.push(policy(cluster(m), f));
        }
    }
    for m in &rule.mirrors {
        let Some(dest) = &m.destination else { continue };
        let f = m.percentage.as_ref().map_or(hundredths(100), percent);
        if f.numerator > 0 {
            out.push(policy(cluster(dest), f));
        }
    }
    out
}

/// Puts the CORS and fault filters before the router, as Istio's sidecar
/// HTTP connection managers have them (their per-route configs need them).
pub(crate) fn add_route_filters(
    hcm: &mut envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager,
) {
    use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpFilter, http_filter,
    };
    let filter = |name: &str, config| HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    };
    let at = hcm.http_filters.len().saturating_sub(1);
    hcm.http_filters.splice(
        at..at,
        [
            filter(CORS_FILTER, pack(&Cors::default())),
            filter(FAULT_FILTER, pack(&HttpFault::default())),
        ],
    );
}
