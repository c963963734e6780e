//! Forwarding a routed request upstream: attempts with retries (replaying
//! a bounded copy of the body), per-try and route timeouts, hosts already
//! tried avoided, and the upstream response carried back with the route's
//! response header changes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use meshwork_telemetry::ResponseFlag;
use tokio::time::Instant;

use super::deadline::Deadline;
use super::exchange::Exchange;
use super::headers::{
    X_FORWARDED_PROTO, X_PEER_METADATA, X_PEER_METADATA_ID, X_UPSTREAM_SERVICE_TIME,
    ensure_request_id, local_reply, strip_hop_by_hop, strip_peer_metadata,
};
use super::replay::Replay;
use super::request::{HttpConn, observe, observe_response};
use super::retry::{Outcome, RetryPolicy};
use super::upgrade;
use crate::balance::Endpoint;
use crate::body::{self, ProxyBody};
use crate::model::cluster::UpstreamProtocol;
use crate::model::route::{ForwardAction, RouteModel, VirtualHostModel};
use crate::tables::ClusterState;
use crate::upstream::UpstreamError;

/// `x-envoy-attempt-count`.
static X_ATTEMPT_COUNT: http::HeaderName = http::HeaderName::from_static("x-envoy-attempt-count");

/// What the route says about one forwarded request.
pub(super) struct Plan<'a> {
    /// The route's forwarding action.
    pub f: &'a ForwardAction,
    /// Its virtual host.
    pub vh: &'a VirtualHostModel,
    /// The route.
    pub route: &'a RouteModel,
    /// The chosen cluster's name.
    pub cluster: &'a str,
    /// Headers to add to the response (CORS).
    pub extra_response: Option<HeaderMap>,
}

/// Where attempts get their request from.
enum Source {
    /// One attempt: the request itself.
    Once(Option<Request<ProxyBody>>),
    /// Several: the head, copied, and a replayable body.
    Replay(http::request::Parts, Replay),
}

impl Source {
    fn next(&mut self, attempt: u32, count: bool) -> Option<Request<ProxyBody>> {
        let mut req = match self {
            Source::Once(r) => r.take()?,
            Source::Replay(parts, replay) => {
                let mut r = Request::new(body::boxed(replay.body()));
                *r.method_mut() = parts.method.clone();
                *r.uri_mut() = parts.uri.clone();
                *r.version_mut() = parts.version;
                *r.headers_mut() = parts.headers.clone();
                r
            }
        };
        if count {
            req.headers_mut()
                .insert(X_ATTEMPT_COUNT.clone(), HeaderValue::from(attempt));
        }
        Some(req)
    }

    fn can_replay(&self) -> bool {
        match self {
            Source::Once(_) => false,
            Source::Replay(_, r) => r.can_replay(),
        }
    }
}

/// A failed attempt, in the words of the access log.
fn failure(e: &UpstreamError) -> (Outcome<'static>, ResponseFlag, &'static str) {
    match e {
        UpstreamError::Connect(_) => (
            Outcome::ConnectFailure,
            ResponseFlag::UpstreamConnectionFailure,
            "connection failure",
        ),
        UpstreamError::Request(m) if m.contains("REFUSED_STREAM") => (
            Outcome::RefusedStream,
            ResponseFlag::UpstreamConnectionTermination,
            "refused stream",
        ),
        UpstreamError::Request(_) => (
            Outcome::Reset,
            ResponseFlag::UpstreamConnectionTermination,
            "connection termination",
        ),
        // Never retried: `forward` answers UO before asking the policy.
        UpstreamError::Overflow(_) => (
            Outcome::Reset,
            ResponseFlag::UpstreamOverflow,
            "upstream overflow",
        ),
    }
}

/// Picks an endpoint, avoiding those in `tried` when the policy says so.
fn pick(
    cluster: &ClusterState,
    dst: SocketAddr,
    policy: Option<&RetryPolicy>,
    tried: &[SocketAddr],
    hash: Option<u64>,
) -> Option<Arc<Endpoint>> {
    let avoid = policy.is_some_and(|p| p.previous_hosts) && !tried.is_empty();
    let tries = if avoid {
        policy.map_or(1, |p| p.host_selection_attempts)
    } else {
        1
    };
    let mut last = None;
    for _ in 0..tries {
        let ep = cluster.pick_hashed(Some(dst), hash)?;
        if !tried.contains(&ep.address()) {
            return Some(ep);
        }
        last = Some(ep);
    }
    last
}

/// Forwards `req` to `cluster` as `plan` says; never fails.
pub(super) async fn forward(
    conn: Arc<HttpConn>,
    mut ex: Exchange,
    cluster: Arc<ClusterState>,
    mut req: Request<ProxyBody>,
    plan: Plan<'_>,
    downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<ProxyBody> {
    let f = plan.f;
    let is_upgrade = downstream_upgrade.is_some();
    prepare_headers(&conn, req.headers_mut(), is_upgrade);
    // Consistent-hash key (DestinationRule consistentHash) and any affinity
    // cookie to hand out.
    let affinity = f
        .hash_policy
        .hash(req.headers(), req.uri(), conn.info.peer.ip());
    let use_h2 = match cluster.model.protocol {
        UpstreamProtocol::Http2 => true,
        UpstreamProtocol::Http1 => false,
        UpstreamProtocol::UseDownstream => conn.info.h2,
    } && !is_upgrade;
    let policy = f
        .retry
        .as_ref()
        .filter(|p| p.num_retries > 0 && !is_upgrade);
    let mut source = match policy {
        Some(_) => {
            let (parts, body) = req.into_parts();
            Source::Replay(parts, Replay::new(body, f.buffer_limit))
        }
        None => Source::Once(Some(req)),
    };
    let deadline = f.timeout.map(|t| Instant::now() + t);
    let count = plan.vh.include_attempt_count;
    let mut tried = Vec::new();
    let mut attempt = 0u32;
    let mut retry_permit = None;
    loop {
        attempt += 1;
        let Some(endpoint) = pick(
            &cluster,
            conn.info.original_dst,
            policy,
            &tried,
            affinity.hash,
        ) else {
            ex.flag(ResponseFlag::NoHealthyUpstream);
            return observe_response(
                ex,
                local_reply(503, Some(ResponseFlag::NoHealthyUpstream), ""),
            );
        };
        ex.set_upstream(&cluster.model.name, &endpoint);
        // Circuit breakers: over a limit, a local 503 UO (never retried).
        let permit = match cluster.breakers.admit(&endpoint, !use_h2).await {
            Ok(p) => p,
            Err(o) => {
                ex.flag(ResponseFlag::UpstreamOverflow);
                return observe_response(
                    ex,
                    local_reply(503, Some(ResponseFlag::UpstreamOverflow), &o.to_string()),
                );
            }
        };
        let active = endpoint.track().hold(permit);
        let Some(req) = source.next(attempt, count) else {
            return observe_response(ex, local_reply(500, None, "request already sent"));
        };
        let per_try = policy.and_then(|p| p.per_try_timeout);
        let now = Instant::now();
        let limit = match (per_try, deadline) {
            (Some(p), Some(d)) => Some((now + p).min(d)),
            (Some(p), None) => Some(now + p),
            (None, d) => d,
        };
        let call = cluster.pools.send(&endpoint, use_h2, req);
        let result = match limit {
            Some(at) => tokio::time::timeout_at(at, call).await.ok(),
            None => Some(call.await),
        };
        cluster.record_result(&endpoint, result.as_ref());
        if let Some(Err(UpstreamError::Overflow(o))) = &result {
            ex.flag(ResponseFlag::UpstreamOverflow);
            return observe_response(
                ex,
                local_reply(503, Some(ResponseFlag::UpstreamOverflow), &o.to_string()),
            );
        }
        let more = policy.is_some_and(|p| attempt <= p.num_retries) && source.can_replay();
        let (outcome, failed) = match &result {
            None if deadline.is_some_and(|d| Instant::now() >= d) => {
                ex.flag(ResponseFlag::UpstreamRequestTimeout);
                return observe_response(
                    ex,
                    local_reply(504, Some(ResponseFlag::UpstreamRequestTimeout), ""),
                );
            }
            None => (Outcome::PerTryTimeout, None),
            Some(Ok(resp)) => {
                let grpc = resp
                    .headers()
                    .get(&super::headers::GRPC_STATUS)
                    .and_then(|v| v.to_str().ok());
                (Outcome::Response(resp.status().as_u16(), grpc), None)
            }
            Some(Err(e)) => {
                let (o, flag, detail) = failure(e);
                (o, Some((flag, detail, e.to_string())))
            }
        };
        let retriable = policy.is_some_and(|p| p.retriable(outcome));
        // A retry needs room under the cluster's max_retries / retry budget.
        let more = more && retriable && {
            retry_permit = cluster.breakers.admit_retry().ok();
            retry_permit.is_some()
        };
        if retriable && more {
            tried.push(endpoint.address());
            drop(result);
            drop(active);
            let wait = policy.map_or(Duration::ZERO, |p| p.backoff(attempt));
            if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                ex.flag(ResponseFlag::UpstreamRequestTimeout);
                return observe_response(
                    ex,
                    local_reply(504, Some(ResponseFlag::UpstreamRequestTimeout), ""),
                );
            }
            tokio::time::sleep(wait).await;
            continue;
        }
        if retriable {
            ex.flag(ResponseFlag::UpstreamRetryLimitExceeded);
        }
        return match (result, failed) {
            (Some(Ok(resp)), _) => {
                drop(retry_permit);
                let mut resp = finish(&conn, ex, resp, active, downstream_upgrade, &plan, deadline);
                if let Some(cookie) = affinity.set_cookie {
                    resp.headers_mut().append(header::SET_COOKIE, cookie);
                }
                resp
            }
            (_, Some((flag, detail, reason))) => {
                ex.flag(flag);
                ex.failure_reason(reason);
                tracing::debug!(cluster = cluster.model.name, upstream = %endpoint.address(), detail, "upstream request failed");
                observe_response(ex, local_reply(503, Some(flag), detail))
            }
            _ => {
                // The per-try timeout of the last attempt.
                ex.flag(ResponseFlag::UpstreamRequestTimeout);
                observe_response(
                    ex,
                    local_reply(504, Some(ResponseFlag::UpstreamRequestTimeout), ""),
                )
            }
        };
    }
}

/// Request headers every forwarded request gets.
fn prepare_headers(conn: &HttpConn, headers: &mut HeaderMap, is_upgrade: bool) {
    strip_hop_by_hop(headers, is_upgrade);
    // The proxy answers `Expect: 100-continue` itself (hyper sends the 100
    // when the body is first read), as Envoy does by default.
    headers.remove(header::EXPECT);
    ensure_request_id(headers);
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    if conn.info.inbound {
        strip_peer_metadata(headers);
    } else {
        headers.insert(X_PEER_METADATA.clone(), conn.ctx.peer_header.clone());
        headers.insert(X_PEER_METADATA_ID.clone(), conn.ctx.peer_id_header.clone());
    }
}

/// Carries the upstream response back: upgrades, hop-by-hop headers, peer
/// metadata, the route's response header changes.
fn finish(
    conn: &HttpConn,
    mut ex: Exchange,
    mut resp: Response<crate::upstream::UpstreamBody>,
    active: crate::balance::ActiveGuard,
    downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
    plan: &Plan<'_>,
    deadline: Option<Instant>,
) -> Response<ProxyBody> {
    ex.learn_upstream_peer(resp.headers());
    ex.learn_upstream_tls(resp.extensions());
    let mut active = Some(active);
    let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if upgraded && let Some(down) = downstream_upgrade {
        let up = hyper::upgrade::on(&mut resp);
        if let Some(guard) = active.take() {
            upgrade::tunnel(down, up, guard);
        }
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgraded);
    if !conn.info.inbound {
        strip_peer_metadata(&mut parts.headers);
    } else {
        parts
            .headers
            .insert(X_PEER_METADATA.clone(), conn.ctx.peer_header.clone());
        parts
            .headers
            .insert(X_PEER_METADATA_ID.clone(), conn.ctx.peer_id_header.clone());
    }
    if let Some(ms) = ex.upstream_elapsed_ms() {
        parts
            .headers
            .insert(X_UPSTREAM_SERVICE_TIME.clone(), HeaderValue::from(ms));
    }
    if let Some(h) = plan.f.headers_for(plan.cluster) {
        h.apply_response(&mut parts.headers);
    }
    plan.route.headers.apply_response(&mut parts.headers);
    plan.vh.headers.apply_response(&mut parts.headers);
    if let Some(extra) = &plan.extra_response {
        for (k, v) in extra {
            parts.headers.insert(k.clone(), v.clone());
        }
    }
    // Keep the endpoint counted as busy until the response body ends.
    // The route timeout spans the response body too (not for upgrades).
    match deadline.filter(|_| !upgraded) {
        Some(d) => observe(ex, parts, Deadline::new(body, d), active),
        None => observe(ex, parts, body, active),
    }
}
