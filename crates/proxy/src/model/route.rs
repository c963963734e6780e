//! Virtual hosts (inline in RDS `RouteConfiguration`s or from VHDS), route matching and
//! route actions.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::route::v3::query_parameter_matcher::QueryParameterMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::redirect_action::{
    PathRewriteSpecifier, SchemeRewriteSpecifier,
};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::{
    ClusterSpecifier, HostRewriteSpecifier,
};
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{RedirectAction, Route, RouteMatch, VirtualHost};
use regex::Regex;

use super::matcher::{HeaderMatch, StringMatcherModel, full_regex};
use super::{CompileError, optional_duration};
use crate::http::cors::{CORS_FILTER, CorsModel};
use crate::http::fault::{FAULT_FILTER, FaultModel};
use crate::http::mirror::MirrorModel;
use crate::http::replay::DEFAULT_BUFFER_LIMIT;
use crate::http::retry::RetryPolicy;

pub use super::route_table::RouteTable;

/// A compiled virtual host.
#[derive(Debug)]
pub struct VirtualHostModel {
    /// Its name.
    pub name: String,
    /// Domains, as configured (lower case).
    pub domains: Vec<String>,
    /// Routes in order; the first match wins.
    pub routes: Vec<Arc<RouteModel>>,
    /// Header changes for every route of this host.
    pub headers: HeaderMutations,
    /// Send `x-envoy-attempt-count` upstream.
    pub include_attempt_count: bool,
}

/// Header additions and removals, applied in Envoy's order (remove, then add).
#[derive(Clone, Debug, Default)]
pub struct HeaderMutations {
    /// Request headers to add: (name, value, append).
    pub request_add: Vec<(http::HeaderName, http::HeaderValue, bool)>,
    /// Request headers to remove.
    pub request_remove: Vec<http::HeaderName>,
    /// Response headers to add.
    pub response_add: Vec<(http::HeaderName, http::HeaderValue, bool)>,
    /// Response headers to remove.
    pub response_remove: Vec<http::HeaderName>,
}

impl HeaderMutations {
    fn compile(
        req_add: &[HeaderValueOption],
        req_remove: &[String],
        resp_add: &[HeaderValueOption],
        resp_remove: &[String],
    ) -> Result<Self, CompileError> {
        Ok(HeaderMutations {
            request_add: compile_adds(req_add)?,
            request_remove: compile_names(req_remove)?,
            response_add: compile_adds(resp_add)?,
            response_remove: compile_names(resp_remove)?,
        })
    }

    /// Applies the request side.
    pub fn apply_request(&self, headers: &mut http::HeaderMap) {
        apply(headers, &self.request_remove, &self.request_add);
    }

    /// Applies the response side.
    pub fn apply_response(&self, headers: &mut http::HeaderMap) {
        apply(headers, &self.response_remove, &self.response_add);
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.request_add.is_empty()
            && self.request_remove.is_empty()
            && self.response_add.is_empty()
            && self.response_remove.is_empty()
    }
}

fn apply(
    headers: &mut http::HeaderMap,
    remove: &[http::HeaderName],
    add: &[(http::HeaderName, http::HeaderValue, bool)],
) {
    for name in remove {
        headers.remove(name);
    }
    for (name, value, append) in add {
        if *append {
            headers.append(name.clone(), value.clone());
        } else {
            headers.insert(name.clone(), value.clone());
        }
    }
}

fn compile_names(names: &[String]) -> Result<Vec<http::HeaderName>, CompileError> {
    names
        .iter()
        .map(|n| {
            http::HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("invalid header name {n:?}"))
        })
        .collect()
}

#[allow(deprecated)] // `append` is deprecated but still sent by control planes.
fn compile_adds(
    adds: &[HeaderValueOption],
) -> Result<Vec<(http::HeaderName, http::HeaderValue, bool)>, CompileError> {
    adds.iter()
        .filter_map(|o| o.header.as_ref().map(|h| (h, o)))
        .map(|(h, o)| {
            let name = http::HeaderName::from_bytes(h.key.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("invalid header name {:?}", h.key))?;
            let raw = if h.raw_value.is_empty() {
                h.value.as_bytes()
            } else {
                &h.raw_value
            };
            let value = http::HeaderValue::from_bytes(raw)
                .map_err(|_| format!("invalid value for header {:?}", h.key))?;
            // append_action 0 is APPEND_IF_EXISTS_OR_ADD; `append` (deprecated) wins when set.
            let append = o
                .append
                .as_ref()
                .map(|b| b.value)
                .unwrap_or(o.append_action == 0);
            Ok((name, value, append))
        })
        .collect()
}

/// A compiled route.
#[derive(Debug)]
pub struct RouteModel {
    /// The route's name (for logs and metrics).
    pub name: String,
    /// What must match.
    pub matcher: RouteMatcher,
    /// What to do.
    pub action: RouteAction,
    /// Header changes for this route.
    pub headers: HeaderMutations,
    /// Fault injection (the fault filter's per-route config).
    pub fault: Option<FaultModel>,
    /// CORS (the CORS filter's per-route config).
    pub cors: Option<CorsModel>,
}

/// How the path is matched.
#[derive(Debug)]
pub enum PathMatch {
    /// Starts with.
    Prefix(String),
    /// Equals.
    Exact(String),
    /// The whole path matches.
    Regex(Regex),
    /// Equals, or starts with it followed by `/`.
    Separated(String),
}

/// A compiled `RouteMatch`.
#[derive(Debug)]
pub struct RouteMatcher {
    /// Path condition (on the path without the query string).
    pub path: PathMatch,
    /// Case sensitivity for prefix and exact paths.
    pub case_sensitive: bool,
    /// Every header matcher must match.
    pub headers: Vec<HeaderMatch>,
    /// Every query parameter matcher must match.
    pub query: Vec<(String, Option<StringMatcherModel>)>,
    /// Match only gRPC requests.
    pub grpc: bool,
}

impl RouteMatcher {
    fn compile(m: &RouteMatch) -> Result<Self, CompileError> {
        let case_sensitive = m.case_sensitive.as_ref().map(|b| b.value).unwrap_or(true);
        let fold = |s: &String| {
            if case_sensitive {
                s.clone()
            } else {
                s.to_ascii_lowercase()
            }
        };
        let path = match &m.path_specifier {
            Some(PathSpecifier::Prefix(p)) => PathMatch::Prefix(fold(p)),
            Some(PathSpecifier::Path(p)) => PathMatch::Exact(fold(p)),
            Some(PathSpecifier::SafeRegex(r)) => PathMatch::Regex(full_regex(r)?),
            Some(PathSpecifier::PathSeparatedPrefix(p)) => {
                if p.ends_with('/') || p.contains(['?', '#']) {
                    return Err(format!("invalid path_separated_prefix {p:?}"));
                }
                PathMatch::Separated(fold(p))
            }
            Some(other) => return Err(format!("unsupported path specifier {other:?}")),
            None => return Err("route match without a path specifier".into()),
        };
        let headers = m
            .headers
            .iter()
            .map(HeaderMatch::compile)
            .collect::<Result<_, _>>()?;
        let query = m
            .query_parameters
            .iter()
            .map(|q| {
                let check = match &q.query_parameter_match_specifier {
                    Some(QueryParameterMatchSpecifier::StringMatch(s)) => {
                        Some(StringMatcherModel::compile(s)?)
                    }
                    Some(QueryParameterMatchSpecifier::PresentMatch(_)) | None => None,
                };
                Ok((q.name.clone(), check))
            })
            .collect::<Result<_, CompileError>>()?;
        Ok(RouteMatcher {
            path,
            case_sensitive,
            headers,
            query,
            grpc: m.grpc.is_some(),
        })
    }

    /// Whether a request matches.
    pub fn matches(&self, parts: &http::request::Parts) -> bool {
        let path = parts.uri.path();
        let folded;
        let p = if self.case_sensitive {
            path
        } else {
            folded = path.to_ascii_lowercase();
            &folded
        };
        let path_ok = match &self.path {
            PathMatch::Prefix(x) => p.starts_with(x.as_str()),
            PathMatch::Exact(x) => p == x,
            PathMatch::Regex(r) => r.is_match(path),
            PathMatch::Separated(x) => {
                p.starts_with(x.as_str()) && matches!(p.as_bytes().get(x.len()), None | Some(b'/'))
            }
        };
        if !path_ok || !self.headers.iter().all(|h| h.matches(parts)) {
            return false;
        }
        if self.grpc && !is_grpc(&parts.headers) {
            return false;
        }
        self.query.iter().all(|(name, check)| {
            query_value(parts.uri.query().unwrap_or(""), name)
                .is_some_and(|v| check.as_ref().is_none_or(|c| c.matches(&v)))
        })
    }
}

/// Whether the request is gRPC (content-type application/grpc*).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The first value of a query parameter, percent-decoding not applied
/// (Envoy matches the raw value).
fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| v.to_string())
    })
}

/// Which cluster(s) a forwarding route sends to.
#[derive(Clone, Debug)]
pub enum ClusterChoice {
    /// One cluster.
    Single(String),
    /// Weighted clusters: (name, weight), with the total weight.
    Weighted(Vec<(String, u32)>, u32),
}

impl ClusterChoice {
    /// Picks a cluster; `roll` is uniform in `[0, 1)`.
    pub fn pick(&self, roll: f64) -> &str {
        match self {
            ClusterChoice::Single(c) => c,
            ClusterChoice::Weighted(list, total) => {
                let mut point = (roll * f64::from(*total)) as u32;
                for (name, w) in list {
                    if point < *w {
                        return name;
                    }
                    point -= w;
                }
                &list[list.len() - 1].0
            }
        }
    }

    /// Every cluster named.
    pub fn names(&self) -> Vec<&str> {
        match self {
            ClusterChoice::Single(c) => vec![c.as_str()],
            ClusterChoice::Weighted(l, _) => l.iter().map(|(n, _)| n.as_str()).collect(),
        }
    }
}

/// A forwarding action.
#[derive(Debug)]
pub struct ForwardAction {
    /// Destination cluster(s).
    pub clusters: ClusterChoice,
    /// Whole-request timeout (`None`: disabled).
    pub timeout: Option<Duration>,
    /// Replace the matched prefix with this.
    pub prefix_rewrite: Option<String>,
    /// Rewrite the path with a regex substitution.
    pub regex_rewrite: Option<(Regex, String)>,
    /// Replace the Host/authority.
    pub host_rewrite: Option<http::HeaderValue>,
    /// Allowed upgrade types (websocket is always allowed, as in Istio).
    pub upgrades: Vec<String>,
    /// Retries (`None`: one attempt only).
    pub retry: Option<RetryPolicy>,
    /// Request copies sent elsewhere.
    pub mirrors: Vec<MirrorModel>,
    /// Header changes of individual weighted clusters, by cluster name.
    pub cluster_headers: Vec<(String, HeaderMutations)>,
    /// Most request body bytes kept for retries.
    pub buffer_limit: u64,
    /// What keys the consistent-hash balancers (RING_HASH, MAGLEV).
    pub hash_policy: super::hash_policy::HashPolicies,
}

impl ForwardAction {
    /// The header changes of the chosen weighted cluster, if it has any.
    pub fn headers_for(&self, cluster: &str) -> Option<&HeaderMutations> {
        self.cluster_headers
            .iter()
            .find(|(c, _)| c == cluster)
            .map(|(_, h)| h)
    }
}

/// A redirect action.
#[derive(Debug)]
pub struct RedirectModel {
    /// New scheme.
    pub scheme: Option<String>,
    /// New host.
    pub host: Option<String>,
    /// New port.
    pub port: Option<u16>,
    /// New path, or replacement for the matched prefix.
    pub path: Option<String>,
    /// Replace only the matched prefix with `path`.
    pub prefix_rewrite: Option<String>,
    /// Status code (301, 302, 303, 307, 308).
    pub status: u16,
    /// Drop the query string.
    pub strip_query: bool,
}

/// What a matched route does.
// Routes are compiled once and shared behind an `Arc`: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum RouteAction {
    /// Forward upstream.
    Forward(ForwardAction),
    /// Answer with a redirect.
    Redirect(RedirectModel),
    /// Answer directly.
    Direct {
        /// Status code.
        status: u16,
        /// Body.
        body: bytes::Bytes,
    },
}

impl VirtualHostModel {
    /// Compiles one virtual host (inline in a route configuration, or a
    /// VHDS `VirtualHost` resource).
    pub fn compile(vh: &VirtualHost) -> Result<Self, CompileError> {
        compile_vhost(vh)
    }

    /// The first route that matches the request.
    pub fn find_route(&self, parts: &http::request::Parts) -> Option<&Arc<RouteModel>> {
        self.routes.iter().find(|r| r.matcher.matches(parts))
    }
}

fn compile_vhost(vh: &VirtualHost) -> Result<VirtualHostModel, CompileError> {
    if vh.domains.is_empty() {
        return Err("no domains".into());
    }
    let routes = vh
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            compile_route(r)
                .map(Arc::new)
                .map_err(|e| format!("route {i} ({:?}): {e}", r.name))
        })
        .collect::<Result<_, _>>()?;
    Ok(VirtualHostModel {
        name: vh.name.clone(),
        domains: vh.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        routes,
        headers: HeaderMutations::compile(
            &vh.request_headers_to_add,
            &vh.request_headers_to_remove,
            &vh.response_headers_to_add,
            &vh.response_headers_to_remove,
        )?,
        include_attempt_count: vh.include_request_attempt_count,
    })
}

#[allow(deprecated)] // `per_request_buffer_limit_bytes` is what control planes send.
fn compile_route(r: &Route) -> Result<RouteModel, CompileError> {
    let matcher = RouteMatcher::compile(r.r#match.as_ref().ok_or("route without match")?)?;
    let action = match &r.action {
        Some(Action::Route(a)) => {
            let mut cluster_headers = Vec::new();
            let clusters = match &a.cluster_specifier {
                Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() => {
                    ClusterChoice::Single(c.clone())
                }
                Some(ClusterSpecifier::WeightedClusters(w)) => {
                    let list: Vec<(String, u32)> = w
                        .clusters
                        .iter()
                        .map(|c| {
                            (
                                c.name.clone(),
                                c.weight.as_ref().map(|w| w.value).unwrap_or(0),
                            )
                        })
                        .filter(|(_, w)| *w > 0)
                        .collect();
                    for c in &w.clusters {
                        let h = HeaderMutations::compile(
                            &c.request_headers_to_add,
                            &c.request_headers_to_remove,
                            &c.response_headers_to_add,
                            &c.response_headers_to_remove,
                        )?;
                        if !h.is_empty() {
                            cluster_headers.push((c.name.clone(), h));
                        }
                    }
                    let total: u32 = list.iter().map(|(_, w)| *w).sum();
                    if list.is_empty() || total == 0 {
                        return Err("weighted clusters with no positive weight".into());
                    }
                    ClusterChoice::Weighted(list, total)
                }
                other => return Err(format!("unsupported cluster specifier {other:?}")),
            };
            let host_rewrite = match &a.host_rewrite_specifier {
                Some(HostRewriteSpecifier::HostRewriteLiteral(h)) => Some(
                    http::HeaderValue::from_str(h)
                        .map_err(|_| format!("invalid host rewrite {h:?}"))?,
                ),
                _ => None,
            };
            let regex_rewrite = match &a.regex_rewrite {
                Some(rw) => {
                    let pattern = rw.pattern.as_ref().ok_or("regex_rewrite without pattern")?;
                    let re = regex::RegexBuilder::new(&pattern.regex)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| format!("invalid regex_rewrite: {e}"))?;
                    // Envoy's substitution uses \1; the regex crate uses ${1}.
                    let sub = translate_substitution(&rw.substitution);
                    Some((re, sub))
                }
                None => None,
            };
            RouteAction::Forward(ForwardAction {
                clusters,
                timeout: match &a.timeout {
                    // Envoy's default route timeout is 15 s; zero disables it.
                    None => Some(Duration::from_secs(15)),
                    Some(t) => optional_duration(Some(t))?,
                },
                prefix_rewrite: (!a.prefix_rewrite.is_empty()).then(|| a.prefix_rewrite.clone()),
                regex_rewrite,
                host_rewrite,
                upgrades: a
                    .upgrade_configs
                    .iter()
                    .map(|u| u.upgrade_type.to_ascii_lowercase())
                    .collect(),
                retry: a
                    .retry_policy
                    .as_ref()
                    .map(RetryPolicy::compile)
                    .transpose()
                    .map_err(|e| format!("retry policy: {e}"))?,
                mirrors: a
                    .request_mirror_policies
                    .iter()
                    .map(MirrorModel::compile)
                    .collect::<Result<_, _>>()?,
                cluster_headers,
                buffer_limit: r
                    .per_request_buffer_limit_bytes
                    .as_ref()
                    .map_or(DEFAULT_BUFFER_LIMIT, |b| u64::from(b.value)),
                hash_policy: super::hash_policy::HashPolicies::compile(&a.hash_policy)?,
            })
        }
        Some(Action::Redirect(rd)) => RouteAction::Redirect(compile_redirect(rd)?),
        Some(Action::DirectResponse(d)) => {
            if !(200..=599).contains(&d.status) {
                return Err(format!("direct response status {} out of range", d.status));
            }
            let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
                None => bytes::Bytes::new(),
                Some(Specifier::InlineString(s)) => bytes::Bytes::from(s.clone()),
                Some(Specifier::InlineBytes(b)) => bytes::Bytes::from(b.clone()),
                Some(other) => return Err(format!("unsupported direct response body {other:?}")),
            };
            RouteAction::Direct {
                status: d.status as u16,
                body,
            }
        }
        other => return Err(format!("unsupported route action {other:?}")),
    };
    let fault = r
        .typed_per_filter_config
        .get(FAULT_FILTER)
        .map(FaultModel::compile)
        .transpose()?;
    let cors = r
        .typed_per_filter_config
        .get(CORS_FILTER)
        .map(CorsModel::compile)
        .transpose()?;
    Ok(RouteModel {
        name: r.name.clone(),
        matcher,
        action,
        fault,
        cors,
        headers: HeaderMutations::compile(
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
        )?,
    })
}

fn translate_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(|d| d.is_ascii_digit()) => {
                let d = chars.next().unwrap_or('0');
                out.push_str(&format!("${{{d}}}"));
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn compile_redirect(rd: &RedirectAction) -> Result<RedirectModel, CompileError> {
    let status = match rd.response_code {
        0 => 301,
        1 => 302,
        2 => 303,
        3 => 307,
        4 => 308,
        c => return Err(format!("unknown redirect response code {c}")),
    };
    let scheme = match &rd.scheme_rewrite_specifier {
        Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".to_string()),
        Some(SchemeRewriteSpecifier::SchemeRedirect(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let (path, prefix_rewrite) = match &rd.path_rewrite_specifier {
        Some(PathRewriteSpecifier::PathRedirect(p)) => (Some(p.clone()), None),
        Some(PathRewriteSpecifier::PrefixRewrite(p)) => (None, Some(p.clone())),
        Some(other) => return Err(format!("unsupported redirect path rewrite {other:?}")),
        None => (None, None),
    };
    let port = match rd.port_redirect {
        0 => None,
        p if p <= 65535 => Some(p as u16),
        p => return Err(format!("redirect port {p} out of range")),
    };
    Ok(RedirectModel {
        scheme,
        host: (!rd.host_redirect.is_empty()).then(|| rd.host_redirect.clone()),
        port,
        path,
        prefix_rewrite,
        status,
        strip_query: rd.strip_query,
    })
}
