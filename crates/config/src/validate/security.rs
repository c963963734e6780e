//! PeerAuthentication, RequestAuthentication, AuthorizationPolicy and
//! Telemetry checks.

use super::Issues;
use super::common::{labels, validate_header_name, validate_port};
use crate::model::istio::{
    AuthorizationAction, AuthorizationPolicy, PeerAuthentication, RequestAuthentication, Telemetry,
};
use crate::node::FieldPath;

/// Validate a PeerAuthentication spec.
pub fn peer_authentication(pa: &PeerAuthentication, spec: &FieldPath, out: &mut Issues) {
    if let Some(sel) = &pa.selector {
        labels(
            &sel.match_labels,
            &spec.key("selector").key("matchLabels"),
            out,
        );
    }
    for port in pa.port_level_mtls.keys() {
        let ok = port.parse::<i64>().is_ok_and(|n| validate_port(n).is_ok());
        if !ok {
            out.err(
                &spec.key("portLevelMtls").key(port),
                format!("port {port:?} must be a number in 1..65535"),
            );
        }
    }
}

/// Validate a RequestAuthentication spec.
pub fn request_authentication(ra: &RequestAuthentication, spec: &FieldPath, out: &mut Issues) {
    if let Some(sel) = &ra.selector {
        labels(
            &sel.match_labels,
            &spec.key("selector").key("matchLabels"),
            out,
        );
    }
    let mut issuers = Vec::new();
    for (i, rule) in ra.jwt_rules.iter().enumerate() {
        let p = spec.key("jwtRules").index(i);
        match rule.issuer.as_deref() {
            None | Some("") => out.err(&p.key("issuer"), "issuer must be set"),
            Some(iss) => {
                if issuers.contains(&iss) {
                    out.warn(
                        &p.key("issuer"),
                        format!("multiple jwtRules have the same issuer {iss:?}"),
                    );
                }
                issuers.push(iss);
            }
        }
        for (j, a) in rule.audiences.iter().enumerate() {
            if a.is_empty() {
                out.err(
                    &p.key("audiences").index(j),
                    "audience must be non-empty string",
                );
            }
        }
        for (field, uri) in [
            ("jwksUri", &rule.jwks_uri),
            ("jwks_uri", &rule.jwks_uri_alt),
        ] {
            if let Some(uri) = uri.as_deref().filter(|u| !u.is_empty()) {
                let ok = uri.split_once("://").is_some_and(|(scheme, rest)| {
                    (scheme == "http" || scheme == "https") && !rest.is_empty()
                });
                if !ok {
                    out.err(
                        &p.key(field),
                        format!("invalid jwksUri {uri:?}: must be an http or https URL"),
                    );
                }
            }
        }
        for (j, h) in rule.from_headers.iter().enumerate() {
            out.check(
                &p.key("fromHeaders").index(j).key("name"),
                validate_header_name(&h.name),
            );
        }
        for (j, c) in rule.output_claim_to_headers.iter().enumerate() {
            let cp = p.key("outputClaimToHeaders").index(j);
            out.check(&cp.key("header"), validate_header_name(&c.header));
            if c.claim.is_empty() {
                out.err(
                    &cp.key("claim"),
                    "outputClaimToHeaders.claim must not be empty",
                );
            }
        }
    }
}

/// Validate an AuthorizationPolicy spec.
pub fn authorization_policy(ap: &AuthorizationPolicy, spec: &FieldPath, out: &mut Issues) {
    if let Some(sel) = &ap.selector {
        labels(
            &sel.match_labels,
            &spec.key("selector").key("matchLabels"),
            out,
        );
    }
    let action = ap.action.unwrap_or_default();
    let provider = ap
        .provider
        .as_ref()
        .and_then(|p| p.name.as_deref())
        .unwrap_or_default();
    if action == AuthorizationAction::Custom {
        if provider.is_empty() {
            out.err(
                &spec.key("provider"),
                "a provider must be specified when action is CUSTOM",
            );
        }
        if ap.rules.is_empty() {
            out.warn(
                &spec.key("rules"),
                "CUSTOM action without rules matches no request",
            );
        }
    } else if ap.provider.is_some() {
        out.err(
            &spec.key("provider"),
            "provider is only allowed with the CUSTOM action",
        );
    }
    for (i, rule) in ap.rules.iter().enumerate() {
        let p = spec.key("rules").index(i);
        for (j, from) in rule.from.iter().enumerate() {
            let fp = p.key("from").index(j);
            match &from.source {
                None => out.err(&fp.key("source"), "`from.source` must not be nil"),
                Some(s) => {
                    let lists = [
                        &s.principals,
                        &s.not_principals,
                        &s.request_principals,
                        &s.not_request_principals,
                        &s.namespaces,
                        &s.not_namespaces,
                        &s.ip_blocks,
                        &s.not_ip_blocks,
                        &s.remote_ip_blocks,
                        &s.not_remote_ip_blocks,
                        &s.service_accounts,
                        &s.not_service_accounts,
                    ];
                    if lists.iter().all(|l| l.is_empty()) {
                        out.err(&fp.key("source"), "`from.source` must not be empty");
                    }
                    if lists.iter().any(|l| l.iter().any(String::is_empty)) {
                        out.err(
                            &fp.key("source"),
                            "empty value is not allowed in `from.source`",
                        );
                    }
                }
            }
        }
        for (j, to) in rule.to.iter().enumerate() {
            let tp = p.key("to").index(j);
            match &to.operation {
                None => out.err(&tp.key("operation"), "`to.operation` must not be nil"),
                Some(o) => {
                    let lists = [
                        &o.hosts,
                        &o.not_hosts,
                        &o.ports,
                        &o.not_ports,
                        &o.methods,
                        &o.not_methods,
                        &o.paths,
                        &o.not_paths,
                    ];
                    if lists.iter().all(|l| l.is_empty()) {
                        out.err(&tp.key("operation"), "`to.operation` must not be empty");
                    }
                    if lists.iter().any(|l| l.iter().any(String::is_empty)) {
                        out.err(
                            &tp.key("operation"),
                            "empty value is not allowed in `to.operation`",
                        );
                    }
                    for (field, ports) in [("ports", &o.ports), ("notPorts", &o.not_ports)] {
                        for (k, port) in ports.iter().enumerate() {
                            let ok = port.parse::<i64>().is_ok_and(|n| validate_port(n).is_ok());
                            if !ok {
                                out.err(
                                    &tp.key("operation").key(field).index(k),
                                    format!("invalid port {port:?}"),
                                );
                            }
                        }
                    }
                }
            }
        }
        for (j, cond) in rule.when.iter().enumerate() {
            let cp = p.key("when").index(j);
            if cond.key.is_empty() {
                out.err(&cp.key("key"), "`key` must not be empty");
            }
            if cond.values.is_empty() && cond.not_values.is_empty() {
                out.err(&cp, "at least one of `values` or `notValues` must be set");
            }
        }
    }
}

/// Validate a Telemetry spec.
pub fn telemetry(t: &Telemetry, spec: &FieldPath, out: &mut Issues) {
    if let Some(sel) = &t.selector {
        labels(
            &sel.match_labels,
            &spec.key("selector").key("matchLabels"),
            out,
        );
    }
    for (i, tr) in t.tracing.iter().enumerate() {
        if let Some(pct) = tr.random_sampling_percentage
            && !(0.0..=100.0).contains(&pct)
        {
            out.err(
                &spec.key("tracing").index(i).key("randomSamplingPercentage"),
                "randomSamplingPercentage must be in range [0.0, 100.0]",
            );
        }
    }
    for (i, al) in t.access_logging.iter().enumerate() {
        if let Some(f) = &al.filter
            && f.expression.as_deref().is_none_or(str::is_empty)
        {
            out.err(
                &spec
                    .key("accessLogging")
                    .index(i)
                    .key("filter")
                    .key("expression"),
                "filter expression must not be empty",
            );
        }
    }
}
