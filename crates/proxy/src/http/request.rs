//! The request path: route lookup, local answers (direct responses,
//! redirects, errors), forwarding upstream with timeouts, and the response
//! path back, with accounting attached to the response body's end.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use meshwork_telemetry::ResponseFlag;

use super::cors::CorsDecision;
use super::deferred::Deferred;
use super::exchange::{ConnInfo, Exchange};
use super::forward::{Plan, forward};
use super::headers::{authority, local_reply};
use super::mirror;
use crate::balance::ActiveGuard;
use crate::body::{self, BodyEnd, Observed, ProxyBody};
use crate::ctx::ProxyCtx;
use crate::io::ConnStats;
use crate::model::listener::{HttpManager, RouteSource};
use crate::model::route::{
    ForwardAction, RedirectModel, RouteAction, RouteModel, VirtualHostModel,
};

/// Everything one HTTP connection's requests share.
pub struct HttpConn {
    /// Proxy-wide state.
    pub ctx: Arc<ProxyCtx>,
    /// The connection manager config.
    pub hcm: Arc<HttpManager>,
    /// Connection facts.
    pub info: ConnInfo,
    /// Byte counters (for the slowloris mark).
    pub stats: Arc<ConnStats>,
    /// Finished exchanges, recorded once their response is written.
    pub deferred: Arc<Deferred>,
}

/// Serves one request (from hyper, or whole from the HTTP/1.1 fast path).
/// Never fails: every error becomes a response.
pub async fn handle<B>(
    conn: Arc<HttpConn>,
    mut req: Request<B>,
) -> Result<Response<ProxyBody>, Infallible>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<body::BoxError>,
{
    conn.stats.mark_read();
    let wants_upgrade = !conn.info.h2 && req.headers().contains_key(header::UPGRADE);
    let downstream_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let host = authority(&parts).unwrap_or_default();
    let mut ex = Exchange::new(conn.ctx.clone(), &conn.info, &parts, &host);
    ex.defer_to(&conn.deferred);

    // Request body: counted, limited, and its end marks the input complete.
    let limit = conn.ctx.limits.max_request_body_bytes;
    if let (Some(limit), Some(len)) = (limit, content_length(&parts.headers))
        && len > limit
    {
        return Ok(reply(ex, local_reply(413, None, "request body too large")));
    }
    let counter = ex.request_bytes.clone();
    let stats = conn.stats.clone();
    let body = body::boxed(Observed::new(
        body,
        limit,
        Box::new(move |n, _end, _| {
            counter.store(n, std::sync::atomic::Ordering::Relaxed);
            stats.mark_read();
        }),
    ));
    Ok(route(conn, ex, parts, body, host, downstream_upgrade).await)
}

/// The request path after the body is wrapped: the same code for every
/// body type.
async fn route(
    conn: Arc<HttpConn>,
    mut ex: Exchange,
    mut parts: http::request::Parts,
    body: ProxyBody,
    host: String,
    downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<ProxyBody> {
    let tables = conn.ctx.tables.load_full();
    let table = match &conn.hcm.routes {
        RouteSource::Rds(name) => tables.routes.get(name).cloned(),
        RouteSource::Inline(t) => Some(t.clone()),
    };
    let match_host = if conn.hcm.strip_any_host_port {
        host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h)
    } else {
        host.as_str()
    };
    let Some((vh, route)) = table
        .as_ref()
        .and_then(|t| t.find_vhost(match_host))
        .and_then(|vh| vh.find_route(&parts).map(|r| (vh, r.clone())))
    else {
        ex.flag(ResponseFlag::NoRouteFound);
        return reply(ex, local_reply(404, Some(ResponseFlag::NoRouteFound), ""));
    };
    ex.set_route(&route.name);
    let mut extra_response = None;
    if let Some(cors) = &route.cors {
        match cors.decide(&parts) {
            CorsDecision::Reply(resp) => return reply(ex, resp),
            CorsDecision::Decorate(h) => extra_response = Some(h),
            CorsDecision::None => {}
        }
    }
    if let Some(fault) = &route.fault {
        if let Some(d) = fault.roll_delay() {
            ex.flag(ResponseFlag::DelayInjected);
            tokio::time::sleep(d).await;
        }
        if let Some(resp) = fault.roll_abort() {
            ex.flag(ResponseFlag::FaultInjected);
            return reply(ex, resp);
        }
    }
    let decorate = |h: &mut http::HeaderMap| {
        if let Some(extra) = &extra_response {
            for (k, v) in extra {
                h.insert(k.clone(), v.clone());
            }
        }
    };
    match &route.action {
        RouteAction::Direct { status, body } => {
            let mut resp = Response::new(body::full(body.clone()));
            *resp.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            apply_response_headers(vh, &route, resp.headers_mut());
            decorate(resp.headers_mut());
            reply(ex, resp)
        }
        RouteAction::Redirect(r) => {
            let mut resp = redirect(r, &parts, &host, &route);
            apply_response_headers(vh, &route, resp.headers_mut());
            decorate(resp.headers_mut());
            reply(ex, resp)
        }
        RouteAction::Forward(f) => {
            let cluster_name = f.clusters.pick(rand::random::<f64>());
            let Some(cluster) = tables.clusters.get(cluster_name).cloned() else {
                ex.flag(ResponseFlag::NoClusterFound);
                return reply(
                    ex,
                    local_reply(503, Some(ResponseFlag::NoClusterFound), cluster_name),
                );
            };
            drop(tables);
            rewrite_request(&mut parts, f, &route, &host);
            if let Some(h) = f.headers_for(cluster_name) {
                h.apply_request(&mut parts.headers);
            }
            route.headers.apply_request(&mut parts.headers);
            vh.headers.apply_request(&mut parts.headers);
            let mut body = body;
            if !f.mirrors.is_empty() && downstream_upgrade.is_none() {
                body = mirror::start(&conn.ctx, &f.mirrors, &parts, body, conn.info.h2, f.timeout);
            }
            let req = Request::from_parts(parts, body);
            let plan = Plan {
                f,
                vh,
                route: &route,
                cluster: cluster_name,
                extra_response,
            };
            forward(conn, ex, cluster, req, plan, downstream_upgrade).await
        }
    }
}

fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn apply_response_headers(vh: &VirtualHostModel, route: &RouteModel, h: &mut http::HeaderMap) {
    route.headers.apply_response(h);
    vh.headers.apply_response(h);
}

/// Attaches the exchange's accounting to a response whose body is local.
fn reply(ex: Exchange, resp: Response<ProxyBody>) -> Response<ProxyBody> {
    observe_response(ex, resp)
}

/// Wraps the response body so the exchange finishes when it ends.
pub(super) fn observe_response(ex: Exchange, resp: Response<ProxyBody>) -> Response<ProxyBody> {
    let (parts, body) = resp.into_parts();
    observe(ex, parts, body, None)
}

/// Wraps `body` (one layer, boxed once) so the exchange finishes when it
/// ends; `hold` (the upstream endpoint's busy count and breaker permit)
/// is released at that moment too.
pub(super) fn observe<B>(
    ex: Exchange,
    parts: http::response::Parts,
    body: B,
    hold: Option<ActiveGuard>,
) -> Response<ProxyBody>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<body::BoxError>,
{
    let status = parts.status.as_u16();
    let header_grpc = parts
        .headers
        .get(&super::headers::GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if http_body::Body::is_end_stream(&body) {
        // Nothing to send: hyper never polls such a body, so it would look
        // abandoned (DC) when dropped. The exchange is complete now.
        drop(hold);
        ex.finish(status, 0, header_grpc.as_deref());
        return Response::from_parts(parts, body::boxed(body));
    }
    let mut ex = Some(ex);
    let observed = Observed::new(
        body,
        None,
        Box::new(move |bytes, end, trailers| {
            drop(hold);
            let Some(mut ex) = ex.take() else { return };
            let grpc = trailers
                .and_then(|t| t.get(&super::headers::GRPC_STATUS))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .or(header_grpc);
            match end {
                BodyEnd::Complete => {}
                BodyEnd::Error => ex.flag(ResponseFlag::UpstreamRemoteReset),
                BodyEnd::Dropped => ex.flag(ResponseFlag::DownstreamConnectionTermination),
            }
            ex.finish(status, bytes, grpc.as_deref());
        }),
    );
    Response::from_parts(parts, body::boxed(observed))
}

fn rewrite_request(
    parts: &mut http::request::Parts,
    f: &ForwardAction,
    route: &RouteModel,
    host: &str,
) {
    if f.prefix_rewrite.is_some() || f.regex_rewrite.is_some() {
        rewrite_path(parts, f, route);
    }
    let host_value = match &f.host_rewrite {
        Some(h) => Some(h.clone()),
        // The Host header already says it (HTTP/1.1): nothing to copy.
        None if parts
            .headers
            .get(header::HOST)
            .is_some_and(|h| h.as_bytes() == host.as_bytes()) =>
        {
            None
        }
        None => HeaderValue::from_str(host).ok(),
    };
    if let Some(h) = host_value {
        parts.headers.insert(header::HOST, h);
    }
}

/// The route's `prefix_rewrite` / `regex_rewrite` of the path (the query
/// is kept).
fn rewrite_path(parts: &mut http::request::Parts, f: &ForwardAction, route: &RouteModel) {
    let path = parts.uri.path();
    let new_path = if let Some(prefix) = &f.prefix_rewrite {
        match &route.matcher.path {
            crate::model::route::PathMatch::Prefix(p)
            | crate::model::route::PathMatch::Separated(p) => {
                let rest = path.get(p.len()..).unwrap_or("");
                Some(format!("{prefix}{rest}"))
            }
            _ => Some(prefix.clone()),
        }
    } else {
        f.regex_rewrite
            .as_ref()
            .map(|(re, sub)| re.replace_all(path, sub.as_str()).into_owned())
    };
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    if let Some(p) = new_path
        && let Ok(uri) = format!("{p}{query}").parse::<Uri>()
    {
        parts.uri = uri;
    }
}

fn redirect(
    r: &RedirectModel,
    parts: &http::request::Parts,
    host: &str,
    route: &RouteModel,
) -> Response<ProxyBody> {
    let (orig_host, orig_port) = match host.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, Some(p)),
        _ => (host, None),
    };
    let scheme = r.scheme.clone().unwrap_or_else(|| "http".into());
    let new_host = r.host.clone().unwrap_or_else(|| orig_host.to_string());
    let port = r
        .port
        .map(|p| p.to_string())
        .or_else(|| {
            if r.host.is_none() {
                orig_port.map(str::to_string)
            } else {
                None
            }
        })
        .filter(|p| !((scheme == "http" && p == "80") || (scheme == "https" && p == "443")));
    let path = if let Some(p) = &r.path {
        p.clone()
    } else if let Some(prefix) = &r.prefix_rewrite {
        let current = parts.uri.path();
        match &route.matcher.path {
            crate::model::route::PathMatch::Prefix(p) => {
                format!("{prefix}{}", current.get(p.len()..).unwrap_or(""))
            }
            _ => prefix.clone(),
        }
    } else {
        parts.uri.path().to_string()
    };
    let query = match (r.strip_query, parts.uri.query()) {
        (false, Some(q)) if !path.contains('?') => format!("?{q}"),
        _ => String::new(),
    };
    let location = match port {
        Some(p) => format!("{scheme}://{new_host}:{p}{path}{query}"),
        None => format!("{scheme}://{new_host}{path}{query}"),
    };
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}
