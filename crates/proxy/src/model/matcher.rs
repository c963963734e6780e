//! String and header matchers (Envoy's `StringMatcher`, `HeaderMatcher`).

use envoy_types::pb::envoy::config::route::v3::HeaderMatcher;
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher};
use regex::Regex;

use super::CompileError;

/// Largest compiled regex accepted, as Envoy's `max_program_size` guards
/// against patterns that cost too much to run.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles an RE2-style regex that must match the whole input.
pub fn full_regex(m: &RegexMatcher) -> Result<Regex, CompileError> {
    regex::RegexBuilder::new(&format!("^(?:{})$", m.regex))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("invalid regex {:?}: {e}", m.regex))
}

/// A compiled `StringMatcher`.
#[derive(Clone, Debug)]
pub enum StringMatch {
    /// Equal to the value.
    Exact(String),
    /// Starts with the value.
    Prefix(String),
    /// Ends with the value.
    Suffix(String),
    /// Contains the value.
    Contains(String),
    /// The whole input matches the regex.
    Regex(Regex),
}

/// A `StringMatch` plus case folding.
#[derive(Clone, Debug)]
pub struct StringMatcherModel {
    /// The pattern (lower-cased when `ignore_case`).
    pub pattern: StringMatch,
    /// Compare case-insensitively (not for regex).
    pub ignore_case: bool,
}

impl StringMatcherModel {
    /// Compiles Envoy's `StringMatcher`.
    pub fn compile(m: &StringMatcher) -> Result<Self, CompileError> {
        let lower = |s: &String| {
            if m.ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.clone()
            }
        };
        let pattern = match &m.match_pattern {
            Some(MatchPattern::Exact(s)) => StringMatch::Exact(lower(s)),
            Some(MatchPattern::Prefix(s)) => StringMatch::Prefix(lower(s)),
            Some(MatchPattern::Suffix(s)) => StringMatch::Suffix(lower(s)),
            Some(MatchPattern::Contains(s)) => StringMatch::Contains(lower(s)),
            Some(MatchPattern::SafeRegex(r)) => StringMatch::Regex(full_regex(r)?),
            Some(other) => return Err(format!("unsupported string matcher {other:?}")),
            None => return Err("string matcher without a pattern".into()),
        };
        Ok(StringMatcherModel {
            pattern,
            ignore_case: m.ignore_case,
        })
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        let folded;
        let v = if self.ignore_case && !matches!(self.pattern, StringMatch::Regex(_)) {
            folded = value.to_ascii_lowercase();
            folded.as_str()
        } else {
            value
        };
        match &self.pattern {
            StringMatch::Exact(s) => v == s,
            StringMatch::Prefix(s) => v.starts_with(s.as_str()),
            StringMatch::Suffix(s) => v.ends_with(s.as_str()),
            StringMatch::Contains(s) => v.contains(s.as_str()),
            StringMatch::Regex(r) => r.is_match(v),
        }
    }
}

/// What a header matcher checks.
#[derive(Clone, Debug)]
pub enum HeaderCheck {
    /// The header is present (or absent, with `false`).
    Present(bool),
    /// The value matches.
    Value(StringMatcherModel),
    /// The value parses as an integer in `[start, end)`.
    Range(i64, i64),
}

/// What a header matcher reads: a header, or an HTTP/2-style pseudo-header
/// (Istio matches `method`, `authority` and `scheme` through them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderKey {
    /// A regular header (lower case).
    Header(http::HeaderName),
    /// `:method`.
    Method,
    /// `:authority` (the Host header in HTTP/1).
    Authority,
    /// `:scheme`.
    Scheme,
    /// `:path` (path and query).
    Path,
}

impl HeaderKey {
    fn parse(name: &str) -> Result<Self, CompileError> {
        let lower = name.to_ascii_lowercase();
        Ok(match lower.as_str() {
            ":method" => HeaderKey::Method,
            ":authority" | "host" => HeaderKey::Authority,
            ":scheme" => HeaderKey::Scheme,
            ":path" => HeaderKey::Path,
            _ => HeaderKey::Header(
                http::HeaderName::from_bytes(lower.as_bytes())
                    .map_err(|_| format!("invalid header name {name:?}"))?,
            ),
        })
    }

    /// The value(s) in a request, several values joined with "," as Envoy does.
    fn value(&self, parts: &http::request::Parts) -> Option<String> {
        match self {
            HeaderKey::Method => Some(parts.method.as_str().to_string()),
            HeaderKey::Authority => parts
                .uri
                .authority()
                .map(|a| a.as_str().to_string())
                .or_else(|| {
                    parts
                        .headers
                        .get(http::header::HOST)
                        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
                }),
            HeaderKey::Scheme => Some(parts.uri.scheme_str().unwrap_or("http").to_string()),
            HeaderKey::Path => parts.uri.path_and_query().map(|p| p.as_str().to_string()),
            HeaderKey::Header(name) => {
                let mut values = parts.headers.get_all(name).iter();
                let first = values.next()?;
                let mut s = String::from_utf8_lossy(first.as_bytes()).into_owned();
                for v in values {
                    s.push(',');
                    s.push_str(&String::from_utf8_lossy(v.as_bytes()));
                }
                Some(s)
            }
        }
    }
}

/// A compiled `HeaderMatcher`.
#[derive(Clone, Debug)]
pub struct HeaderMatch {
    /// What is read.
    pub name: HeaderKey,
    /// The check.
    pub check: HeaderCheck,
    /// Negate the result.
    pub invert: bool,
    /// A missing header is checked as the empty string.
    pub missing_as_empty: bool,
}

impl HeaderMatch {
    /// Compiles Envoy's `HeaderMatcher`. The deprecated specifiers are still
    /// sent by control planes (Istio among them), so they are honoured.
    #[allow(deprecated)]
    pub fn compile(m: &HeaderMatcher) -> Result<Self, CompileError> {
        let name = HeaderKey::parse(&m.name)?;
        let exact = |s: &String| StringMatcherModel {
            pattern: StringMatch::Exact(s.clone()),
            ignore_case: false,
        };
        let check = match &m.header_match_specifier {
            None => HeaderCheck::Present(true),
            Some(HeaderMatchSpecifier::ExactMatch(s)) => HeaderCheck::Value(exact(s)),
            Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => {
                HeaderCheck::Value(StringMatcherModel {
                    pattern: StringMatch::Regex(full_regex(r)?),
                    ignore_case: false,
                })
            }
            Some(HeaderMatchSpecifier::RangeMatch(r)) => HeaderCheck::Range(r.start, r.end),
            Some(HeaderMatchSpecifier::PresentMatch(p)) => HeaderCheck::Present(*p),
            Some(HeaderMatchSpecifier::PrefixMatch(s)) => HeaderCheck::Value(StringMatcherModel {
                pattern: StringMatch::Prefix(s.clone()),
                ignore_case: false,
            }),
            Some(HeaderMatchSpecifier::SuffixMatch(s)) => HeaderCheck::Value(StringMatcherModel {
                pattern: StringMatch::Suffix(s.clone()),
                ignore_case: false,
            }),
            Some(HeaderMatchSpecifier::ContainsMatch(s)) => {
                HeaderCheck::Value(StringMatcherModel {
                    pattern: StringMatch::Contains(s.clone()),
                    ignore_case: false,
                })
            }
            Some(HeaderMatchSpecifier::StringMatch(s)) => {
                HeaderCheck::Value(StringMatcherModel::compile(s)?)
            }
        };
        Ok(HeaderMatch {
            name,
            check,
            invert: m.invert_match,
            missing_as_empty: m.treat_missing_header_as_empty,
        })
    }

    /// Whether a request satisfies this matcher.
    pub fn matches(&self, parts: &http::request::Parts) -> bool {
        let joined = self.name.value(parts);
        let result = match (&self.check, joined) {
            (HeaderCheck::Present(p), v) => v.is_some() == *p,
            (_, None) if !self.missing_as_empty => false,
            (HeaderCheck::Value(m), v) => m.matches(v.as_deref().unwrap_or("")),
            (HeaderCheck::Range(start, end), v) => v
                .as_deref()
                .unwrap_or("")
                .parse::<i64>()
                .is_ok_and(|n| n >= *start && n < *end),
        };
        result != self.invert
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sm(p: MatchPattern, ignore_case: bool) -> StringMatcherModel {
        StringMatcherModel::compile(&StringMatcher {
            match_pattern: Some(p),
            ignore_case,
        })
        .unwrap()
    }

    #[test]
    fn string_matchers() {
        assert!(sm(MatchPattern::Exact("Ab".into()), true).matches("aB"));
        assert!(!sm(MatchPattern::Exact("Ab".into()), false).matches("aB"));
        assert!(sm(MatchPattern::Prefix("/api".into()), false).matches("/api/v1"));
        let re = RegexMatcher {
            regex: "/v[0-9]+".into(),
            ..Default::default()
        };
        let m = sm(MatchPattern::SafeRegex(re), false);
        assert!(m.matches("/v12"));
        assert!(!m.matches("/v12/x"), "regex must match the whole value");
    }

    #[test]
    fn bad_regex_is_an_error() {
        let re = RegexMatcher {
            regex: "(".into(),
            ..Default::default()
        };
        assert!(full_regex(&re).is_err());
    }

    fn request(h: http::HeaderMap) -> http::request::Parts {
        let mut req = http::Request::post("/a?b=1").body(()).unwrap();
        *req.headers_mut() = h;
        req.into_parts().0
    }

    #[test]
    fn pseudo_headers() {
        let mut h = http::HeaderMap::new();
        h.insert("host", "shop:8080".parse().unwrap());
        let parts = request(h);
        let m = |name: &str, v: &str| {
            HeaderMatch::compile(&HeaderMatcher {
                name: name.into(),
                header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                    match_pattern: Some(MatchPattern::Exact(v.into())),
                    ignore_case: false,
                })),
                ..Default::default()
            })
            .unwrap()
            .matches(&parts)
        };
        assert!(m(":method", "POST"));
        assert!(!m(":method", "GET"));
        assert!(m(":authority", "shop:8080"));
        assert!(m(":scheme", "http"));
        assert!(m(":path", "/a?b=1"));
    }

    #[test]
    #[allow(deprecated)]
    fn header_present_and_invert() {
        let mut h = http::HeaderMap::new();
        h.insert("x-user", "jason".parse().unwrap());
        let h = request(h);
        let m = HeaderMatch::compile(&HeaderMatcher {
            name: "X-User".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::ExactMatch("jason".into())),
            ..Default::default()
        })
        .unwrap();
        assert!(m.matches(&h));
        let absent = HeaderMatch::compile(&HeaderMatcher {
            name: "x-other".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::PresentMatch(true)),
            invert_match: true,
            ..Default::default()
        })
        .unwrap();
        assert!(absent.matches(&h));
    }
}
