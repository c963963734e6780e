//! A route's `hash_policy`: which part of a request keys the consistent-hash
//! load balancers (RING_HASH, MAGLEV) — a header, a cookie (generated when
//! absent and a TTL is set, as Envoy does), the source IP or a query
//! parameter. Policies combine in order; a `terminal` one that produced a
//! hash ends the list.

use std::net::IpAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::route_action::HashPolicy;
use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::PolicySpecifier;
use http::HeaderValue;

use super::{CompileError, duration};
use crate::hash::hash_key;

/// One compiled hash policy.
#[derive(Clone, Debug, PartialEq)]
pub enum HashSource {
    /// A request header's value.
    Header(http::HeaderName),
    /// A cookie; generated with these attributes when absent and `ttl` is set.
    Cookie {
        /// Cookie name.
        name: String,
        /// `Max-Age` of a generated cookie; `None`: never generate.
        ttl: Option<Duration>,
        /// `Path` of a generated cookie.
        path: String,
        /// Extra `name=value` attributes.
        attributes: Vec<(String, String)>,
    },
    /// The downstream peer's IP.
    SourceIp,
    /// A query parameter's value.
    QueryParameter(String),
}

/// A route's hash policies, in order, each with its `terminal` flag.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HashPolicies(pub Vec<(HashSource, bool)>);

/// The hash of one request and, when a cookie had to be made up, the
/// `Set-Cookie` value to return with the response.
#[derive(Debug, Default)]
pub struct RequestHash {
    /// The combined hash (`None`: no policy produced one; pick at random).
    pub hash: Option<u64>,
    /// A generated affinity cookie for the response.
    pub set_cookie: Option<HeaderValue>,
}

impl HashPolicies {
    /// Compiles `RouteAction.hash_policy`.
    pub fn compile(list: &[HashPolicy]) -> Result<Self, CompileError> {
        let mut out = Vec::with_capacity(list.len());
        for p in list {
            let source = match &p.policy_specifier {
                Some(PolicySpecifier::Header(h)) => HashSource::Header(
                    http::HeaderName::from_bytes(h.header_name.as_bytes())
                        .map_err(|_| format!("invalid hash header name {:?}", h.header_name))?,
                ),
                Some(PolicySpecifier::Cookie(c)) => {
                    if c.name.is_empty() || c.name.contains([';', '=', ' ']) {
                        return Err(format!("invalid hash cookie name {:?}", c.name));
                    }
                    HashSource::Cookie {
                        name: c.name.clone(),
                        ttl: c.ttl.as_ref().map(duration).transpose()?,
                        path: c.path.clone(),
                        attributes: c
                            .attributes
                            .iter()
                            .map(|a| (a.name.clone(), a.value.clone()))
                            .collect(),
                    }
                }
                Some(PolicySpecifier::ConnectionProperties(cp)) if cp.source_ip => {
                    HashSource::SourceIp
                }
                Some(PolicySpecifier::QueryParameter(q)) if !q.name.is_empty() => {
                    HashSource::QueryParameter(q.name.clone())
                }
                other => return Err(format!("unsupported hash policy {other:?}")),
            };
            out.push((source, p.terminal));
        }
        Ok(HashPolicies(out))
    }

    /// Whether there is no policy (the common case: nothing to compute).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Computes a request's hash.
    pub fn hash(&self, headers: &http::HeaderMap, uri: &http::Uri, peer: IpAddr) -> RequestHash {
        let mut out = RequestHash::default();
        for (source, terminal) in &self.0 {
            let h = match source {
                HashSource::Header(name) => headers.get(name).map(|v| hash_key(v.as_bytes())),
                HashSource::SourceIp => Some(hash_key(peer.to_string().as_bytes())),
                HashSource::QueryParameter(name) => {
                    query_value(uri.query().unwrap_or(""), name).map(|v| hash_key(v.as_bytes()))
                }
                HashSource::Cookie {
                    name,
                    ttl,
                    path,
                    attributes,
                } => match cookie_value(headers, name) {
                    Some(v) => Some(hash_key(v.as_bytes())),
                    None => ttl.map(|ttl| {
                        let value = format!("{:016x}", rand::random::<u64>());
                        out.set_cookie = set_cookie(name, &value, ttl, path, attributes);
                        hash_key(value.as_bytes())
                    }),
                },
            };
            if let Some(h) = h {
                out.hash = Some(match out.hash {
                    // Envoy's combination: rotate left by one, then xor.
                    Some(prev) => prev.rotate_left(1) ^ h,
                    None => h,
                });
                if *terminal {
                    break;
                }
            }
        }
        out
    }
}

/// A query parameter's first value (undecoded, as Envoy compares it).
fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// A cookie's value from the `Cookie` headers (quotes removed).
fn cookie_value<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"'))
        })
}

/// `name="value"; Max-Age=N; Path=P; HttpOnly`, as Envoy generates it.
fn set_cookie(
    name: &str,
    value: &str,
    ttl: Duration,
    path: &str,
    attributes: &[(String, String)],
) -> Option<HeaderValue> {
    let mut s = format!("{name}=\"{value}\"");
    if !ttl.is_zero() {
        s.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    if !path.is_empty() {
        s.push_str(&format!("; Path={path}"));
    }
    for (k, v) in attributes {
        if v.is_empty() {
            s.push_str(&format!("; {k}"));
        } else {
            s.push_str(&format!("; {k}={v}"));
        }
    }
    s.push_str("; HttpOnly");
    HeaderValue::from_str(&s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::{
        ConnectionProperties, Cookie, Header,
    };
    use envoy_types::pb::google::protobuf::Duration as PbDuration;

    fn policies(list: Vec<PolicySpecifier>) -> HashPolicies {
        HashPolicies::compile(
            &list
                .into_iter()
                .map(|p| HashPolicy {
                    policy_specifier: Some(p),
                    terminal: false,
                })
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn header_hash_is_stable_and_absent_header_gives_none() {
        let p = policies(vec![PolicySpecifier::Header(Header {
            header_name: "x-user".into(),
            ..Default::default()
        })]);
        let uri = http::Uri::from_static("/");
        let a = p.hash(&headers(&[("x-user", "jason")]), &uri, PEER).hash;
        let b = p.hash(&headers(&[("x-user", "jason")]), &uri, PEER).hash;
        let c = p.hash(&headers(&[("x-user", "ann")]), &uri, PEER).hash;
        assert!(a.is_some());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(p.hash(&headers(&[]), &uri, PEER).hash, None);
    }

    #[test]
    fn cookie_is_read_or_generated() {
        let p = policies(vec![PolicySpecifier::Cookie(Cookie {
            name: "user".into(),
            ttl: Some(PbDuration {
                seconds: 60,
                nanos: 0,
            }),
            path: "/".into(),
            ..Default::default()
        })]);
        let uri = http::Uri::from_static("/");
        let made = p.hash(&headers(&[]), &uri, PEER);
        let cookie = made.set_cookie.unwrap();
        let text = cookie.to_str().unwrap();
        assert!(text.starts_with("user=\""), "{text}");
        assert!(text.contains("Max-Age=60; Path=/"), "{text}");
        // The client sends it back: the same hash.
        let value = text.split(';').next().unwrap().to_string();
        let mut h = http::HeaderMap::new();
        h.insert(http::header::COOKIE, HeaderValue::from_str(&value).unwrap());
        let again = p.hash(&h, &uri, PEER);
        assert_eq!(again.hash, made.hash);
        assert!(again.set_cookie.is_none());
    }

    #[test]
    fn source_ip_and_query_parameter() {
        let p = policies(vec![PolicySpecifier::ConnectionProperties(
            ConnectionProperties { source_ip: true },
        )]);
        let uri = http::Uri::from_static("/?a=1");
        assert!(p.hash(&headers(&[]), &uri, PEER).hash.is_some());
        assert_eq!(query_value("a=1&user=bob", "user"), Some("bob"));
        assert_eq!(query_value("a=1", "user"), None);
    }

    #[test]
    fn rejects_bad_policies() {
        let bad = HashPolicy {
            policy_specifier: Some(PolicySpecifier::Header(Header {
                header_name: "bad header".into(),
                ..Default::default()
            })),
            terminal: false,
        };
        assert!(HashPolicies::compile(&[bad]).is_err());
        assert!(HashPolicies::compile(&[HashPolicy::default()]).is_err());
    }
}
