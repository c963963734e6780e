//! VirtualService HTTP routes as Envoy routes, for one service port.

use base64::Engine;
use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::query_parameter_matcher::QueryParameterMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::redirect_action::{
    PathRewriteSpecifier, SchemeRewriteSpecifier,
};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::{
    ClusterSpecifier, HostRewriteSpecifier,
};
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::weighted_cluster::ClusterWeight;
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, Route, RouteAction,
    RouteMatch, WeightedCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher,
};
use meshwork_config::model::istio::{
    DerivePort, Destination, Headers, HttpMatchRequest, HttpRoute, StringMatch,
};
use meshwork_registry::fqdn;

use crate::meta::ProxyMeta;
use crate::names::outbound_cluster;
use crate::pb::{bool_value, duration_nanos, header, parse_duration, u32_value};
use crate::policy;
use crate::snapshot::{MeshSnapshot, VsRef};
use meshwork_xds::pack;

/// The default outbound route of a service port: [`default_route`] with
/// Istio's default retry policy.
pub(crate) fn default_outbound_route(cluster: &str) -> Route {
    let mut r = default_route(cluster);
    if let Some(Action::Route(a)) = &mut r.action {
        a.retry_policy = Some(policy::default_retry());
    }
    r
}

/// The default route of a service port: everything to its cluster, no timeout.
pub(crate) fn default_route(cluster: &str) -> Route {
    Route {
        name: "default".into(),
        r#match: Some(prefix_match("/")),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
            timeout: Some(duration_nanos(0)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn prefix_match(prefix: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix(prefix.into())),
        ..Default::default()
    }
}

/// The routes of `vs` that apply to a client `proxy` on service port `port`,
/// in order: one Envoy route per match condition.
pub(crate) fn http_routes(
    snap: &MeshSnapshot,
    vs: &VsRef<'_>,
    port: u16,
    proxy: &ProxyMeta,
) -> Vec<Route> {
    let mut out = Vec::new();
    for (rule, ns) in crate::delegate::expanded(snap, vs) {
        let rule = rule.as_ref();
        let action = action(snap, rule, ns, port);
        let Some(action) = action else { continue };
        let mut per_filter = std::collections::HashMap::new();
        if let Some(f) = rule.fault.as_ref().and_then(policy::fault) {
            per_filter.insert(policy::FAULT_FILTER.to_string(), pack(&f));
        }
        if let Some(c) = &rule.cors_policy {
            per_filter.insert(policy::CORS_FILTER.to_string(), pack(&policy::cors(c)));
        }
        let matches: Vec<Option<&HttpMatchRequest>> = if rule.r#match.is_empty() {
            vec![None]
        } else {
            rule.r#match
                .iter()
                .filter(|m| applies(m, port, proxy))
                .map(Some)
                .collect()
        };
        for m in matches {
            let name = match (rule.name.as_deref(), m.and_then(|m| m.name.as_deref())) {
                (Some(r), Some(m)) => format!("{r}.{m}"),
                (Some(r), None) => r.to_string(),
                (None, Some(m)) => m.to_string(),
                (None, None) => String::new(),
            };
            let mut route = Route {
                name,
                r#match: Some(m.map(route_match).unwrap_or_else(|| prefix_match("/"))),
                action: Some(action.clone()),
                typed_per_filter_config: per_filter.clone(),
                ..Default::default()
            };
            let mut ops = vec![rule.headers.as_ref()];
            if rule.route.len() == 1 {
                ops.push(rule.route[0].headers.as_ref());
            }
            for h in ops.into_iter().flatten() {
                header_ops(&mut route, h);
            }
            out.push(route);
        }
    }
    out
}

/// Whether a match condition applies to this port and this client.
fn applies(m: &HttpMatchRequest, port: u16, proxy: &ProxyMeta) -> bool {
    m.port.is_none_or(|p| p == i64::from(port))
        && (m.gateways.is_empty() || m.gateways.iter().any(|g| g == "mesh"))
        && m.source_labels
            .iter()
            .all(|(k, v)| proxy.labels.get(k) == Some(v))
        && m.source_namespace
            .as_ref()
            .is_none_or(|ns| *ns == proxy.namespace)
}

/// An exact string matcher.
pub(crate) fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(s.into())),
        ignore_case: false,
    }
}

/// Istio's `StringMatch` as Envoy's (`None` when it has no pattern).
pub(crate) fn string_matcher(m: &StringMatch) -> Option<StringMatcher> {
    let pattern = if let Some(e) = &m.exact {
        MatchPattern::Exact(e.clone())
    } else if let Some(p) = &m.prefix {
        MatchPattern::Prefix(p.clone())
    } else if let Some(r) = &m.regex {
        MatchPattern::SafeRegex(regex(r))
    } else {
        return None;
    };
    Some(StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    })
}

fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.into(),
        ..Default::default()
    }
}

fn header_matcher(name: &str, m: &StringMatch, invert: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(match string_matcher(m) {
            Some(s) => HeaderMatchSpecifier::StringMatch(s),
            None => HeaderMatchSpecifier::PresentMatch(true),
        }),
        invert_match: invert,
        ..Default::default()
    }
}

fn route_match(m: &HttpMatchRequest) -> RouteMatch {
    let path = match &m.uri {
        Some(StringMatch { exact: Some(e), .. }) => PathSpecifier::Path(e.clone()),
        Some(StringMatch {
            prefix: Some(p), ..
        }) => PathSpecifier::Prefix(p.clone()),
        Some(StringMatch { regex: Some(r), .. }) => PathSpecifier::SafeRegex(regex(r)),
        _ => PathSpecifier::Prefix("/".into()),
    };
    let mut headers: Vec<HeaderMatcher> = m
        .headers
        .iter()
        .map(|(k, v)| header_matcher(k, v, false))
        .chain(
            m.without_headers
                .iter()
                .map(|(k, v)| header_matcher(k, v, true)),
        )
        .collect();
    for (name, sm) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if let Some(sm) = sm {
            headers.push(header_matcher(name, sm, false));
        }
    }
    RouteMatch {
        path_specifier: Some(path),
        case_sensitive: m
            .ignore_uri_case
            .filter(|i| *i)
            .and_then(|_| bool_value(false)),
        headers,
        query_parameters: m
            .query_params
            .iter()
            .map(|(k, v)| QueryParameterMatcher {
                name: k.clone(),
                query_parameter_match_specifier: Some(match string_matcher(v) {
                    Some(s) => QueryParameterMatchSpecifier::StringMatch(s),
                    None => QueryParameterMatchSpecifier::PresentMatch(true),
                }),
            })
            .collect(),
        ..Default::default()
    }
}

/// The cluster a destination names, from a listener on `port`.
fn cluster_of(snap: &MeshSnapshot, d: &Destination, vs_ns: &str, port: u16) -> String {
    let host = fqdn(&d.host, vs_ns);
    let number = d
        .port
        .as_ref()
        .and_then(|p| p.number)
        .and_then(|n| u16::try_from(n).ok())
        .or_else(|| {
            let svc = snap.registry().service(&host)?;
            (svc.ports.len() == 1).then(|| svc.ports[0].port)
        })
        .unwrap_or(port);
    outbound_cluster(number, d.subset.as_deref().unwrap_or(""), &host)
}

fn action(snap: &MeshSnapshot, rule: &HttpRoute, vs_ns: &str, port: u16) -> Option<Action> {
    if let Some(rd) = &rule.redirect {
        let code = match rd.redirect_code.unwrap_or(301) {
            302 => 1,
            303 => 2,
            307 => 3,
            308 => 4,
            _ => 0,
        };
        // derivePort: the scheme's default port, or the port the request came to.
        let derived = rd.derive_port.map(|d| match d {
            DerivePort::FromProtocolDefault if rd.scheme.as_deref() == Some("https") => 443,
            DerivePort::FromProtocolDefault => 80,
            DerivePort::FromRequestPort => u32::from(port),
        });
        let path_rewrite_specifier = match (&rd.uri, &rd.prefix_rewrite) {
            (Some(u), _) => Some(PathRewriteSpecifier::PathRedirect(u.clone())),
            (None, Some(p)) => Some(PathRewriteSpecifier::PrefixRewrite(p.clone())),
            (None, None) => None,
        };
        return Some(Action::Redirect(RedirectAction {
            host_redirect: rd.authority.clone().unwrap_or_default(),
            port_redirect: rd
                .port
                .and_then(|p| u32::try_from(p).ok())
                .filter(|p| *p <= 65535)
                .or(derived)
                .unwrap_or(0),
            response_code: code,
            scheme_rewrite_specifier: rd
                .scheme
                .clone()
                .map(SchemeRewriteSpecifier::SchemeRedirect),
            path_rewrite_specifier,
            ..Default::default()
        }));
    }
    if let Some(dr) = &rule.direct_response {
        let status = dr.status.and_then(|s| u32::try_from(s).ok())?;
        if !(200..=599).contains(&status) {
            return None;
        }
        let body = dr.body.as_ref().and_then(|b| match (&b.string, &b.bytes) {
            (Some(s), _) => Some(Specifier::InlineString(s.clone())),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .ok()
                .map(Specifier::InlineBytes),
            _ => None,
        });
        return Some(Action::DirectResponse(DirectResponseAction {
            status,
            body: body.map(|s| DataSource {
                specifier: Some(s),
                ..Default::default()
            }),
            ..Default::default()
        }));
    }
    let dests: Vec<(String, u32, Option<&Headers>)> = rule
        .route
        .iter()
        .filter_map(|d| {
            let dest = d.destination.as_ref()?;
            let w = d.weight.and_then(|w| u32::try_from(w).ok()).unwrap_or(0);
            Some((cluster_of(snap, dest, vs_ns, port), w, d.headers.as_ref()))
        })
        .collect();
    let cluster_specifier = match dests.as_slice() {
        [] => return None,
        [(one, _, _)] => ClusterSpecifier::Cluster(one.clone()),
        many => {
            let positive: Vec<_> = many.iter().filter(|(_, w, _)| *w > 0).collect();
            let clusters: Vec<ClusterWeight> = if positive.is_empty() {
                // Weights must be positive; unweighted destinations share evenly.
                many.iter().map(|(n, _, h)| weighted(n, 1, *h)).collect()
            } else {
                positive
                    .iter()
                    .map(|(n, w, h)| weighted(n, *w, *h))
                    .collect()
            };
            ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters,
                ..Default::default()
            })
        }
    };
    let rewrite = rule.rewrite.as_ref();
    Some(Action::Route(RouteAction {
        cluster_specifier: Some(cluster_specifier),
        timeout: Some(
            rule.timeout
                .as_deref()
                .and_then(parse_duration)
                .unwrap_or(duration_nanos(0)),
        ),
        prefix_rewrite: rewrite.and_then(|r| r.uri.clone()).unwrap_or_default(),
        regex_rewrite: rewrite
            .and_then(|r| r.uri_regex_rewrite.as_ref())
            .and_then(|rr| {
                Some(RegexMatchAndSubstitute {
                    pattern: Some(regex(rr.r#match.as_deref()?)),
                    substitution: rr.rewrite.clone().unwrap_or_default(),
                })
            }),
        host_rewrite_specifier: rewrite
            .and_then(|r| r.authority.clone())
            .map(HostRewriteSpecifier::HostRewriteLiteral),
        retry_policy: policy::retry(rule.retries.as_ref()),
        request_mirror_policies: policy::mirrors(rule, |d| cluster_of(snap, d, vs_ns, port)),
        ..Default::default()
    }))
}

fn weighted(name: &str, weight: u32, headers: Option<&Headers>) -> ClusterWeight {
    let mut r = Route::default();
    if let Some(h) = headers {
        header_ops(&mut r, h);
    }
    ClusterWeight {
        name: name.into(),
        weight: u32_value(weight),
        request_headers_to_add: r.request_headers_to_add,
        request_headers_to_remove: r.request_headers_to_remove,
        response_headers_to_add: r.response_headers_to_add,
        response_headers_to_remove: r.response_headers_to_remove,
        ..Default::default()
    }
}

/// Applies a VirtualService `headers` block to a route.
fn header_ops(route: &mut Route, h: &Headers) {
    if let Some(req) = &h.request {
        route
            .request_headers_to_add
            .extend(req.set.iter().map(|(k, v)| header(k, v, true)));
        route
            .request_headers_to_add
            .extend(req.add.iter().map(|(k, v)| header(k, v, false)));
        route
            .request_headers_to_remove
            .extend(req.remove.iter().cloned());
    }
    if let Some(resp) = &h.response {
        route
            .response_headers_to_add
            .extend(resp.set.iter().map(|(k, v)| header(k, v, true)));
        route
            .response_headers_to_add
            .extend(resp.add.iter().map(|(k, v)| header(k, v, false)));
        route
            .response_headers_to_remove
            .extend(resp.remove.iter().cloned());
    }
}
