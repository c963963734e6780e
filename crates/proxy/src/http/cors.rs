//! CORS (Envoy's `envoy.filters.http.cors`, configured per route): the
//! proxy answers preflight requests from allowed origins itself and adds
//! the CORS headers to actual responses for them.

use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::google::protobuf::Any;
use http::header::{self, HeaderMap, HeaderValue};

use crate::body::{self, ProxyBody};
use crate::model::CompileError;
use crate::model::matcher::StringMatcherModel;

/// The per-filter config name of the CORS filter.
pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// A compiled CORS policy.
#[derive(Clone, Debug)]
pub struct CorsModel {
    /// Origins allowed.
    pub origins: Vec<StringMatcherModel>,
    /// `access-control-allow-methods`.
    pub allow_methods: Option<HeaderValue>,
    /// `access-control-allow-headers`.
    pub allow_headers: Option<HeaderValue>,
    /// `access-control-expose-headers`.
    pub expose_headers: Option<HeaderValue>,
    /// `access-control-max-age`.
    pub max_age: Option<HeaderValue>,
    /// `access-control-allow-credentials: true`.
    pub allow_credentials: bool,
    /// Forward preflights from origins that are not allowed (Envoy's default).
    pub forward_unmatched_preflights: bool,
}

fn value(s: &str, what: &str) -> Result<Option<HeaderValue>, CompileError> {
    if s.is_empty() {
        return Ok(None);
    }
    HeaderValue::from_str(s)
        .map(Some)
        .map_err(|_| format!("invalid CORS {what} {s:?}"))
}

/// What the CORS policy decides for a request.
pub enum CorsDecision {
    /// Not a CORS request for this policy: go on untouched.
    None,
    /// Answer now (a preflight).
    Reply(http::Response<ProxyBody>),
    /// Go on; add these headers to the response.
    Decorate(HeaderMap),
}

impl CorsModel {
    /// Compiles the CORS filter's per-route config.
    pub fn compile(any: &Any) -> Result<Self, CompileError> {
        let p: CorsPolicy = meshwork_xds::unpack(any).map_err(|e| format!("cors config: {e}"))?;
        Ok(CorsModel {
            origins: p
                .allow_origin_string_match
                .iter()
                .map(StringMatcherModel::compile)
                .collect::<Result<_, _>>()?,
            allow_methods: value(&p.allow_methods, "allow_methods")?,
            allow_headers: value(&p.allow_headers, "allow_headers")?,
            expose_headers: value(&p.expose_headers, "expose_headers")?,
            max_age: value(&p.max_age, "max_age")?,
            allow_credentials: p.allow_credentials.is_some_and(|b| b.value),
            forward_unmatched_preflights: p
                .forward_not_matching_preflights
                .as_ref()
                .is_none_or(|b| b.value),
        })
    }

    /// Looks at a request: preflights from allowed origins are answered.
    pub fn decide(&self, parts: &http::request::Parts) -> CorsDecision {
        let Some(origin) = parts.headers.get(header::ORIGIN) else {
            return CorsDecision::None;
        };
        let preflight = parts.method == http::Method::OPTIONS
            && parts
                .headers
                .get(header::ACCESS_CONTROL_REQUEST_METHOD)
                .is_some_and(|m| !m.is_empty());
        let allowed = origin
            .to_str()
            .is_ok_and(|o| self.origins.iter().any(|m| m.matches(o)));
        if !allowed {
            if preflight && !self.forward_unmatched_preflights {
                return CorsDecision::Reply(http::Response::new(body::empty()));
            }
            return CorsDecision::None;
        }
        let mut h = HeaderMap::new();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.allow_credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if preflight {
            let opt = [
                (header::ACCESS_CONTROL_ALLOW_METHODS, &self.allow_methods),
                (header::ACCESS_CONTROL_ALLOW_HEADERS, &self.allow_headers),
                (header::ACCESS_CONTROL_MAX_AGE, &self.max_age),
            ];
            for (name, v) in opt {
                if let Some(v) = v {
                    h.insert(name, v.clone());
                }
            }
            let mut resp = http::Response::new(body::empty());
            *resp.headers_mut() = h;
            return CorsDecision::Reply(resp);
        }
        if let Some(v) = &self.expose_headers {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
        CorsDecision::Decorate(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;
    use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;

    fn model() -> CorsModel {
        let p = CorsPolicy {
            allow_origin_string_match: vec![StringMatcher {
                match_pattern: Some(MatchPattern::Exact("https://a.example".into())),
                ignore_case: false,
            }],
            allow_methods: "GET,POST".into(),
            max_age: "86400".into(),
            ..Default::default()
        };
        CorsModel::compile(&meshwork_xds::pack(&p)).unwrap()
    }

    fn req(method: &str, origin: &str) -> http::request::Parts {
        http::Request::builder()
            .method(method)
            .uri("/")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn preflight_answered_for_allowed_origin_only() {
        let m = model();
        match m.decide(&req("OPTIONS", "https://a.example")) {
            CorsDecision::Reply(r) => {
                assert_eq!(
                    r.headers()["access-control-allow-origin"],
                    "https://a.example"
                );
                assert_eq!(r.headers()["access-control-allow-methods"], "GET,POST");
                assert_eq!(r.headers()["access-control-max-age"], "86400");
            }
            _ => panic!("preflight not answered"),
        }
        assert!(matches!(
            m.decide(&req("OPTIONS", "https://b.example")),
            CorsDecision::None
        ));
        assert!(matches!(
            m.decide(&req("GET", "https://a.example")),
            CorsDecision::Decorate(_)
        ));
    }
}
