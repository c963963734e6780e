//! Retry policies (Envoy's `RetryPolicy` on a route): which outcomes of an
//! upstream attempt are retried, how many times, with what per-try timeout
//! and back-off, and whether hosts already tried are avoided.

use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::RetryPolicy as PbRetryPolicy;

use crate::model::{CompileError, duration, optional_duration};

/// Envoy's default retry back-off base interval.
const DEFAULT_BASE_INTERVAL: Duration = Duration::from_millis(25);
/// The `previous_hosts` retry host predicate's extension name.
const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";

/// One `retry_on` condition, as a bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum RetryOn {
    /// Any 5xx, reset, connect failure or per-try timeout.
    FiveXx = 1,
    /// 502, 503, 504, reset, connect failure or per-try timeout.
    GatewayError = 1 << 1,
    /// Connection could not be made.
    ConnectFailure = 1 << 2,
    /// HTTP/2 `REFUSED_STREAM`.
    RefusedStream = 1 << 3,
    /// 409.
    Retriable4xx = 1 << 4,
    /// No response at all: disconnect, reset, per-try timeout.
    Reset = 1 << 5,
    /// A status in `retriable_status_codes`.
    RetriableStatusCodes = 1 << 6,
    /// gRPC `CANCELLED` (1).
    Cancelled = 1 << 7,
    /// gRPC `DEADLINE_EXCEEDED` (4).
    DeadlineExceeded = 1 << 8,
    /// gRPC `RESOURCE_EXHAUSTED` (8).
    ResourceExhausted = 1 << 9,
    /// gRPC `UNAVAILABLE` (14).
    Unavailable = 1 << 10,
    /// gRPC `INTERNAL` (13).
    Internal = 1 << 11,
}

impl RetryOn {
    fn parse(token: &str) -> Result<Self, CompileError> {
        Ok(match token {
            "5xx" => RetryOn::FiveXx,
            "gateway-error" => RetryOn::GatewayError,
            "connect-failure" => RetryOn::ConnectFailure,
            "refused-stream" => RetryOn::RefusedStream,
            "retriable-4xx" => RetryOn::Retriable4xx,
            "reset" => RetryOn::Reset,
            "retriable-status-codes" => RetryOn::RetriableStatusCodes,
            "cancelled" => RetryOn::Cancelled,
            "deadline-exceeded" => RetryOn::DeadlineExceeded,
            "resource-exhausted" => RetryOn::ResourceExhausted,
            "unavailable" => RetryOn::Unavailable,
            "internal" => RetryOn::Internal,
            other => return Err(format!("unsupported retry_on condition {other:?}")),
        })
    }
}

/// What one upstream attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// No connection could be made.
    ConnectFailure,
    /// The stream was refused (HTTP/2 `REFUSED_STREAM`).
    RefusedStream,
    /// The connection or stream failed after it was made.
    Reset,
    /// The per-try timeout fired before response headers.
    PerTryTimeout,
    /// Response headers arrived: status and any `grpc-status` header.
    Response(u16, Option<&'a str>),
}

/// A compiled retry policy.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub num_retries: u32,
    /// Bit set of [`RetryOn`] conditions.
    pub on: u16,
    /// Statuses retried under `retriable-status-codes`.
    pub status_codes: Vec<u16>,
    /// Limit on each attempt (to response headers).
    pub per_try_timeout: Option<Duration>,
    /// Avoid hosts already tried (`previous_hosts` predicate).
    pub previous_hosts: bool,
    /// How many picks to try when looking for a host not yet tried.
    pub host_selection_attempts: u32,
    /// Back-off base interval.
    pub base_interval: Duration,
    /// Back-off ceiling.
    pub max_interval: Duration,
}

impl RetryPolicy {
    /// Compiles Envoy's route `RetryPolicy`.
    pub fn compile(p: &PbRetryPolicy) -> Result<Self, CompileError> {
        let mut on = 0u16;
        for token in p
            .retry_on
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            on |= RetryOn::parse(token)? as u16;
        }
        let status_codes = p
            .retriable_status_codes
            .iter()
            .map(|c| {
                u16::try_from(*c)
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .ok_or_else(|| format!("retriable status code {c} out of range"))
            })
            .collect::<Result<_, _>>()?;
        let mut previous_hosts = false;
        for pred in &p.retry_host_predicate {
            if pred.name == PREVIOUS_HOSTS {
                previous_hosts = true;
            } else {
                return Err(format!("unsupported retry host predicate {:?}", pred.name));
            }
        }
        if p.retry_priority.is_some() {
            return Err("retry_priority is not supported".into());
        }
        let (base_interval, max_interval) = match &p.retry_back_off {
            None => (DEFAULT_BASE_INTERVAL, DEFAULT_BASE_INTERVAL * 10),
            Some(b) => {
                let base = duration(b.base_interval.as_ref().ok_or("back-off without base")?)?;
                if base.is_zero() {
                    return Err("retry back-off base interval must be positive".into());
                }
                let max = match &b.max_interval {
                    Some(m) => duration(m)?,
                    None => base * 10,
                };
                if max < base {
                    return Err("retry back-off max interval below base".into());
                }
                (base, max)
            }
        };
        Ok(RetryPolicy {
            num_retries: p.num_retries.as_ref().map_or(1, |n| n.value),
            on,
            status_codes,
            per_try_timeout: optional_duration(p.per_try_timeout.as_ref())?,
            previous_hosts,
            host_selection_attempts: u32::try_from(p.host_selection_retry_max_attempts.max(1))
                .unwrap_or(1)
                .min(16),
            base_interval,
            max_interval,
        })
    }

    fn has(&self, c: RetryOn) -> bool {
        self.on & c as u16 != 0
    }

    /// Whether an attempt with this outcome would be retried (retries left
    /// permitting).
    pub fn retriable(&self, outcome: Outcome<'_>) -> bool {
        use RetryOn::*;
        let no_response = self.has(FiveXx) || self.has(GatewayError) || self.has(Reset);
        match outcome {
            Outcome::ConnectFailure => no_response || self.has(ConnectFailure),
            Outcome::RefusedStream => no_response || self.has(RefusedStream),
            Outcome::Reset | Outcome::PerTryTimeout => no_response,
            Outcome::Response(status, grpc) => {
                (self.has(FiveXx) && status >= 500)
                    || (self.has(GatewayError) && matches!(status, 502..=504))
                    || (self.has(Retriable4xx) && status == 409)
                    || (self.has(RetriableStatusCodes) && self.status_codes.contains(&status))
                    || grpc.is_some_and(|g| self.grpc_retriable(g))
            }
        }
    }

    fn grpc_retriable(&self, status: &str) -> bool {
        use RetryOn::*;
        match status.trim() {
            "1" => self.has(Cancelled),
            "4" => self.has(DeadlineExceeded),
            "8" => self.has(ResourceExhausted),
            "13" => self.has(Internal),
            "14" => self.has(Unavailable),
            _ => false,
        }
    }

    /// The wait before retry number `retry` (1-based): fully jittered
    /// exponential back-off, as Envoy's.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base_interval
            .saturating_mul(1u32 << retry.min(16))
            .min(self.max_interval);
        let ms = ceiling.as_millis().max(1) as u64;
        Duration::from_millis(rand::random::<u64>() % ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::UInt32Value;

    fn policy(on: &str, codes: Vec<u32>) -> RetryPolicy {
        RetryPolicy::compile(&PbRetryPolicy {
            retry_on: on.into(),
            num_retries: Some(UInt32Value { value: 2 }),
            retriable_status_codes: codes,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn istio_default_policy() {
        let p = policy(
            "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
            vec![503],
        );
        assert!(p.retriable(Outcome::ConnectFailure));
        assert!(p.retriable(Outcome::RefusedStream));
        assert!(p.retriable(Outcome::Response(503, None)));
        assert!(p.retriable(Outcome::Response(200, Some("14"))));
        assert!(!p.retriable(Outcome::Response(500, None)));
        assert!(!p.retriable(Outcome::Reset));
        assert!(!p.retriable(Outcome::PerTryTimeout));
    }

    #[test]
    fn five_xx_gateway_and_4xx() {
        let p = policy("5xx", vec![]);
        assert!(p.retriable(Outcome::Response(500, None)));
        assert!(p.retriable(Outcome::PerTryTimeout));
        assert!(!p.retriable(Outcome::Response(404, None)));
        let g = policy("gateway-error", vec![]);
        assert!(g.retriable(Outcome::Response(502, None)));
        assert!(!g.retriable(Outcome::Response(500, None)));
        let c = policy("retriable-4xx,reset", vec![]);
        assert!(c.retriable(Outcome::Response(409, None)));
        assert!(c.retriable(Outcome::Reset));
        assert!(!c.retriable(Outcome::Response(503, None)));
    }

    #[test]
    fn unknown_condition_is_an_error() {
        let r = RetryPolicy::compile(&PbRetryPolicy {
            retry_on: "5xx,sometimes".into(),
            ..Default::default()
        });
        assert!(r.unwrap_err().contains("sometimes"));
    }

    #[test]
    fn backoff_is_bounded() {
        let p = policy("5xx", vec![]);
        for n in 1..40 {
            assert!(p.backoff(n) <= p.max_interval);
        }
    }
}
