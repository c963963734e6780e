//! Checks shared by many kinds: names, hosts, labels, ports, regexes,
//! durations and header names, with Istio's rules and messages.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::Issues;
use crate::node::FieldPath;

/// Longest regex Istio accepts: Envoy caps RE2 program size, and program
/// size is always larger than the pattern's length, so Istio caps length.
pub const MAX_REGEX_LEN: usize = 1024;
/// Compiled-program cap for the `regex` crate (linear-time, but memory is
/// still bounded).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A regex Istio would accept: at most 1024 bytes, compiles (RE2 syntax,
/// which the `regex` crate shares), and fits the program-size cap.
pub fn validate_regex(re: &str, where_: &str) -> Result<(), String> {
    if re.len() > MAX_REGEX_LEN {
        return Err(format!(
            "{where_:?}: regex is too large, max length allowed is {MAX_REGEX_LEN}"
        ));
    }
    regex::RegexBuilder::new(re)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(|_| ())
        .map_err(|e| {
            let first = e.to_string().lines().last().unwrap_or_default().trim().to_string();
            format!("{where_:?}: {first}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)")
        })
}

/// RFC 1123 label: lowercase alphanumerics and `-`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// A DNS name with an optional leading wildcard (`*.example.com`, `*`), as
/// Istio's `ValidateWildcardDomain` accepts. IP addresses are accepted too.
pub fn validate_wildcard_domain(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("domain name cannot be empty".into());
    }
    if host.len() > 255 {
        return Err(format!("domain name {host:?} too long (max 255)"));
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    // Wildcards are allowed in the first label only: `*`, `*.x`, `*x`, `*-x`.
    let (first, rest) = match host.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (host, None),
    };
    let first_ok = first == "*" || {
        let body = first
            .strip_prefix("*-")
            .or_else(|| first.strip_prefix('*'))
            .unwrap_or(first);
        first.len() <= 63 && is_dns1123_label(&body.to_ascii_lowercase())
    };
    if !first_ok {
        return Err(format!(
            "domain name {host:?} invalid (label {first:?} invalid)"
        ));
    }
    match rest {
        Some(r) => validate_dns_labels(r, host),
        None => Ok(()),
    }
}

/// A fully-qualified (or short) DNS name without wildcards.
pub fn validate_fqdn(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("domain name cannot be empty".into());
    }
    if host.len() > 255 {
        return Err(format!("domain name {host:?} too long (max 255)"));
    }
    validate_dns_labels(host, host)
}

fn validate_dns_labels(rest: &str, whole: &str) -> Result<(), String> {
    let rest = rest.strip_suffix('.').unwrap_or(rest);
    for label in rest.split('.') {
        if !is_dns1123_label(&label.to_ascii_lowercase()) {
            return Err(format!(
                "domain name {whole:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// A port number in 1–65535.
pub fn validate_port(port: i64) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port number {port} must be in the range 1..65535"))
    }
}

/// A port name: an RFC 1123 label.
pub fn validate_port_name(name: &str) -> Result<(), String> {
    if is_dns1123_label(name) {
        Ok(())
    } else {
        Err(format!("invalid port name: {name}"))
    }
}

/// A Go-style duration of at least 1ms.
pub fn validate_duration(d: &str) -> Result<(), String> {
    match crate::duration::parse_nanos(d) {
        None => Err(format!("invalid duration {d:?}")),
        Some(n) if n < 1_000_000 => Err(format!("duration {d:?} must be at least 1ms")),
        Some(_) => Ok(()),
    }
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

/// A Kubernetes label key: `[prefix/]name`.
pub fn validate_label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if prefix.is_some_and(|p| !is_dns1123_subdomain(p)) || !is_label_name(name) {
        return Err(format!("invalid label key: {k:?}"));
    }
    Ok(())
}

/// Labels (or a selector's `matchLabels`): valid keys and values.
pub fn labels(map: &BTreeMap<String, String>, path: &FieldPath, out: &mut Issues) {
    for (k, v) in map {
        let p = path.key(k);
        if k.is_empty() {
            continue; // the schema's rule reports empty keys
        }
        out.check(&p, validate_label_key(k));
        if !v.is_empty() && !is_label_name(v) && v != "*" {
            out.err(&p, format!("invalid label value: {v:?}"));
        }
    }
}

/// An HTTP header name: an RFC 7230 token (lowercase not required).
pub fn validate_header_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid header name: {name:?}"))
    }
}

/// A header name that a route may set or remove: not a pseudo-header and
/// not `host` (Istio's `ValidateHTTPHeaderOperationName`).
pub fn validate_header_operation_name(name: &str, allow_authority: bool) -> Result<(), String> {
    let authority = name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host");
    if authority && allow_authority {
        return Ok(());
    }
    if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
        return Err(format!(
            "invalid header {name:?}: cannot set or remove a pseudo or internal header"
        ));
    }
    validate_header_name(name)
}

/// `exportTo` entries: `.`, `*`, or namespace names, without duplicates.
pub fn export_to(list: &[String], path: &FieldPath, out: &mut Issues) {
    for (i, e) in list.iter().enumerate() {
        let p = path.index(i);
        if e != "." && e != "*" && e != "~" && !is_dns1123_label(e) {
            out.err(
                &p,
                format!(
                    "only .,*, or a valid DNS 1123 label is allowed as exportTo entry, got {e:?}"
                ),
            );
        }
        if list[..i].contains(e) {
            out.err(&p, format!("duplicate entries in exportTo: {e:?}"));
        }
    }
    if list.iter().any(|e| e == "*") && list.len() > 1 {
        out.err(
            path,
            "cannot have both public (*) and non-public exportTo values for a resource",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes() {
        assert!(validate_regex("^/api/v[0-9]+$", "uri").is_ok());
        assert!(validate_regex("(", "uri").is_err());
        assert!(
            validate_regex(&"a".repeat(1025), "uri")
                .unwrap_err()
                .contains("too large")
        );
        // Big counted repetitions blow the compiled-program cap.
        assert!(validate_regex("(\\w{1000}){1000}", "uri").is_err());
    }

    #[test]
    fn hosts() {
        assert!(validate_wildcard_domain("*.example.com").is_ok());
        assert!(validate_wildcard_domain("reviews").is_ok());
        assert!(validate_wildcard_domain("1.2.3.4").is_ok());
        assert!(validate_wildcard_domain("foo*.com").is_err());
        assert!(validate_wildcard_domain("*x").is_ok());
        assert!(validate_wildcard_domain("a.*.com").is_err());
        assert!(validate_wildcard_domain("a..b").is_err());
        assert!(validate_fqdn("*.x").is_err());
    }

    #[test]
    fn labels_and_ports() {
        assert!(validate_label_key("app.kubernetes.io/name").is_ok());
        assert!(validate_label_key("-bad").is_err());
        assert!(validate_port(65535).is_ok());
        assert!(validate_port(0).is_err());
        assert!(validate_duration("0.5ms").is_err());
        assert!(validate_duration("2s").is_ok());
    }
}
