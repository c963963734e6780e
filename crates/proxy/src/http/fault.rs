//! Fault injection (Envoy's `envoy.filters.http.fault`, configured per
//! route): a fixed delay and/or an abort with an HTTP or gRPC status, each
//! for a fraction of requests. Injected delays are flagged `DI`, aborts `FI`.

use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::fault_abort::ErrorType;
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::google::protobuf::Any;
use http::header::HeaderValue;

use crate::body::{self, ProxyBody};
use crate::model::{CompileError, duration};

/// The per-filter config name of the fault filter.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";

/// A fraction of requests, in parts per million.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fraction(pub u32);

impl Fraction {
    /// Converts Envoy's `FractionalPercent` (absent is the proto default: 0%).
    pub fn compile(p: Option<&FractionalPercent>) -> Result<Self, CompileError> {
        let Some(p) = p else {
            return Ok(Fraction(0));
        };
        let scale = match p.denominator {
            0 => 10_000,
            1 => 100,
            2 => 1,
            d => return Err(format!("unknown fractional percent denominator {d}")),
        };
        Ok(Fraction(p.numerator.saturating_mul(scale).min(1_000_000)))
    }

    /// Rolls the dice.
    pub fn hit(self) -> bool {
        self.0 >= 1_000_000 || (self.0 > 0 && rand::random::<u32>() % 1_000_000 < self.0)
    }
}

/// What an abort answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortStatus {
    /// An HTTP status.
    Http(u16),
    /// A gRPC status (HTTP 200, `grpc-status` trailers-only).
    Grpc(u32),
}

/// A compiled fault policy.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultModel {
    /// Fixed delay and how often.
    pub delay: Option<(Duration, Fraction)>,
    /// Abort and how often.
    pub abort: Option<(AbortStatus, Fraction)>,
}

impl FaultModel {
    /// Compiles the fault filter's per-route config.
    pub fn compile(any: &Any) -> Result<Self, CompileError> {
        let f: HttpFault = meshwork_xds::unpack(any).map_err(|e| format!("fault config: {e}"))?;
        if !f.headers.is_empty() || !f.downstream_nodes.is_empty() || !f.upstream_cluster.is_empty()
        {
            return Err(
                "fault filter conditions (headers, nodes, cluster) are not supported".into(),
            );
        }
        if f.response_rate_limit.is_some() {
            return Err("fault response_rate_limit is not supported".into());
        }
        let delay = match &f.delay {
            None => None,
            Some(d) => match &d.fault_delay_secifier {
                Some(FaultDelaySecifier::FixedDelay(t)) => {
                    Some((duration(t)?, Fraction::compile(d.percentage.as_ref())?))
                }
                _ => return Err("only fixed fault delays are supported".into()),
            },
        };
        let abort = match &f.abort {
            None => None,
            Some(a) => {
                let status = match &a.error_type {
                    Some(ErrorType::HttpStatus(s)) if (200..600).contains(s) => {
                        AbortStatus::Http(*s as u16)
                    }
                    Some(ErrorType::HttpStatus(s)) => {
                        return Err(format!("fault abort status {s} out of range"));
                    }
                    Some(ErrorType::GrpcStatus(g)) if *g <= 16 => AbortStatus::Grpc(*g),
                    Some(ErrorType::GrpcStatus(g)) => {
                        return Err(format!("fault abort gRPC status {g} out of range"));
                    }
                    _ => return Err("fault abort needs an HTTP or gRPC status".into()),
                };
                Some((status, Fraction::compile(a.percentage.as_ref())?))
            }
        };
        Ok(FaultModel { delay, abort })
    }

    /// The delay to inject into this request, if any.
    pub fn roll_delay(&self) -> Option<Duration> {
        self.delay.and_then(|(d, f)| f.hit().then_some(d))
    }

    /// The abort to answer this request with, if any.
    pub fn roll_abort(&self) -> Option<http::Response<ProxyBody>> {
        let (status, f) = self.abort.as_ref()?;
        if !f.hit() {
            return None;
        }
        Some(match status {
            AbortStatus::Http(s) => {
                let mut r = http::Response::new(body::full("fault filter abort"));
                *r.status_mut() = http::StatusCode::from_u16(*s).unwrap_or_default();
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain"),
                );
                r
            }
            AbortStatus::Grpc(g) => {
                let mut r = http::Response::new(body::empty());
                let h = r.headers_mut();
                h.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                h.insert(super::headers::GRPC_STATUS.clone(), HeaderValue::from(*g));
                h.insert(
                    "grpc-message",
                    HeaderValue::from_static("fault filter abort"),
                );
                r
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions() {
        let p = |n, d| {
            Fraction::compile(Some(&FractionalPercent {
                numerator: n,
                denominator: d,
            }))
        };
        assert_eq!(p(50, 0).unwrap(), Fraction(500_000));
        assert_eq!(p(1, 1).unwrap(), Fraction(100));
        assert_eq!(p(250_000, 2).unwrap(), Fraction(250_000));
        assert!(p(1, 9).is_err());
        assert!(Fraction(1_000_000).hit());
        assert!(!Fraction(0).hit());
    }
}
