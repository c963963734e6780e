//! VirtualService checks (Istio's `ValidateVirtualService`).

use super::Issues;
use super::common::{
    export_to, is_dns1123_label, labels, validate_duration, validate_fqdn, validate_header_name,
    validate_header_operation_name, validate_port, validate_regex, validate_wildcard_domain,
};
use crate::model::istio::{
    Destination, Headers, HttpRoute, HttpRouteDestination, RouteDestination, StringMatch,
    VirtualService,
};
use crate::node::FieldPath;

const RETRY_ON: [&str; 17] = [
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
    "http3-post-connect-failure",
    "reset-before-request",
    "non-idempotent",
];

/// gRPC status code names in code order (index = code), as Istio accepts
/// them in fault aborts and retry conditions.
pub const GRPC_STATUS: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

const CORS_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Validate a VirtualService spec.
pub fn virtual_service(vs: &VirtualService, spec: &FieldPath, out: &mut Issues) {
    let delegate = vs.hosts.is_empty();
    if delegate && !vs.gateways.is_empty() {
        out.err(
            &spec.key("hosts"),
            "virtual service must have at least one host",
        );
    }
    let mesh_bound = vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh");
    for (i, host) in vs.hosts.iter().enumerate() {
        let p = spec.key("hosts").index(i);
        if host == "*" && mesh_bound {
            out.err(
                &p,
                "wildcard host * is not allowed for virtual services bound to the mesh gateway",
            );
        } else if host.contains('/') {
            out.err(
                &p,
                format!("host {host:?} cannot contain a namespace prefix"),
            );
        } else {
            out.check(&p, validate_wildcard_domain(host));
        }
    }
    gateway_names(&vs.gateways, &spec.key("gateways"), out);
    export_to(&vs.export_to, &spec.key("exportTo"), out);
    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        out.err(spec, "http, tcp or tls must be provided in virtual service");
    }
    let mut names = Vec::new();
    for (i, route) in vs.http.iter().enumerate() {
        let p = spec.key("http").index(i);
        if let Some(name) = route.name.as_deref().filter(|n| !n.is_empty()) {
            if names.contains(&name) {
                out.warn(&p.key("name"), format!("duplicate route name {name:?}"));
            }
            names.push(name);
        }
        http_route(route, delegate, &p, out);
    }
    for (i, tls) in vs.tls.iter().enumerate() {
        let p = spec.key("tls").index(i);
        if tls.r#match.is_empty() {
            out.err(
                &p.key("match"),
                "TLS route must have at least one match condition",
            );
        }
        for (j, m) in tls.r#match.iter().enumerate() {
            let mp = p.key("match").index(j);
            if m.sni_hosts.is_empty() {
                out.err(
                    &mp.key("sniHosts"),
                    "TLS match must have at least one SNI host",
                );
            }
            for (k, h) in m.sni_hosts.iter().enumerate() {
                out.check(&mp.key("sniHosts").index(k), validate_wildcard_domain(h));
            }
            for (k, s) in m.destination_subnets.iter().enumerate() {
                out.check(&mp.key("destinationSubnets").index(k), validate_cidr(s));
            }
            gateway_names(&m.gateways, &mp.key("gateways"), out);
            labels(&m.source_labels, &mp.key("sourceLabels"), out);
        }
        route_destinations(&tls.route, &p.key("route"), out);
    }
    for (i, tcp) in vs.tcp.iter().enumerate() {
        let p = spec.key("tcp").index(i);
        for (j, m) in tcp.r#match.iter().enumerate() {
            let mp = p.key("match").index(j);
            for (k, s) in m.destination_subnets.iter().enumerate() {
                out.check(&mp.key("destinationSubnets").index(k), validate_cidr(s));
            }
            if let Some(s) = &m.source_subnet {
                out.check(&mp.key("sourceSubnet"), validate_cidr(s));
            }
            gateway_names(&m.gateways, &mp.key("gateways"), out);
            labels(&m.source_labels, &mp.key("sourceLabels"), out);
        }
        route_destinations(&tcp.route, &p.key("route"), out);
    }
}

/// An IP address or CIDR block.
pub fn validate_cidr(s: &str) -> Result<(), String> {
    let (ip, bits) = match s.split_once('/') {
        Some((ip, bits)) => (ip, Some(bits)),
        None => (s, None),
    };
    let addr: std::net::IpAddr = ip
        .parse()
        .map_err(|_| format!("invalid IP address or CIDR {s:?}"))?;
    if let Some(bits) = bits {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        match bits.parse::<u8>() {
            Ok(b) if b <= max => {}
            _ => return Err(format!("invalid CIDR prefix length in {s:?}")),
        }
    }
    Ok(())
}

/// Gateway references: `mesh`, `name`, `namespace/name` or a legacy FQDN.
pub fn gateway_names(names: &[String], path: &FieldPath, out: &mut Issues) {
    for (i, g) in names.iter().enumerate() {
        let p = path.index(i);
        match g.split_once('/') {
            None => out.check(&p, validate_fqdn(g)),
            Some((ns, name)) => {
                if ns.is_empty() || name.is_empty() {
                    out.err(&p, "config namespace and gateway name cannot be empty");
                } else {
                    if !is_dns1123_label(ns) {
                        out.err(&p, format!("invalid value for namespace: {ns:?}"));
                    }
                    if !is_dns1123_label(name) {
                        out.err(&p, format!("invalid value for gateway name: {name:?}"));
                    }
                }
            }
        }
    }
}

fn string_match(m: Option<&StringMatch>, path: &FieldPath, where_: &str, out: &mut Issues) {
    if let Some(re) = m.and_then(|m| m.regex.as_deref()) {
        if re.is_empty() {
            out.err(
                &path.key("regex"),
                format!("{where_:?}: regex string match should not be empty"),
            );
        } else {
            out.check(&path.key("regex"), validate_regex(re, where_));
        }
    }
}

fn http_route(r: &HttpRoute, delegate: bool, p: &FieldPath, out: &mut Issues) {
    let root = r.delegate.is_some();
    if root {
        if r.redirect.is_some() {
            out.err(
                &p.key("redirect"),
                "root HTTP route must not specify redirect",
            );
        }
        if !r.route.is_empty() {
            out.err(&p.key("route"), "root HTTP route must not specify route");
        }
        if delegate {
            out.err(
                &p.key("delegate"),
                "delegate HTTP route cannot contain delegate",
            );
        }
    } else if r.redirect.is_some() {
        if !r.route.is_empty() {
            out.err(p, "HTTP route cannot contain both route and redirect");
        }
        if r.fault.is_some() {
            out.err(p, "HTTP route cannot contain both fault and redirect");
        }
        if r.rewrite.is_some() {
            out.err(
                p,
                "HTTP route rule cannot contain both rewrite and redirect",
            );
        }
    } else if r.direct_response.is_some() {
        if !r.route.is_empty() {
            out.err(
                p,
                "HTTP route cannot contain both route and direct response",
            );
        }
    } else if r.route.is_empty() {
        out.err(p, "HTTP route, redirect or direct_response is required");
    }
    for (j, m) in r.r#match.iter().enumerate() {
        let mp = p.key("match").index(j);
        for (field, sm) in [
            ("uri", &m.uri),
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if root && sm.as_ref().is_some_and(|s| s.regex.is_some()) {
                out.err(
                    &mp.key(field),
                    format!("{field} match does not support regex match for delegating"),
                );
            }
            string_match(sm.as_ref(), &mp.key(field), field, out);
        }
        for (field, map) in [
            ("headers", &m.headers),
            ("withoutHeaders", &m.without_headers),
        ] {
            for (name, sm) in map {
                let hp = mp.key(field).key(name);
                out.check(&hp, validate_header_name(name));
                string_match(Some(sm), &hp, field, out);
            }
        }
        for (name, sm) in &m.query_params {
            string_match(
                Some(sm),
                &mp.key("queryParams").key(name),
                "queryParams",
                out,
            );
        }
        if let Some(port) = m.port.filter(|p| *p != 0) {
            out.check(&mp.key("port"), validate_port(port));
        }
        labels(&m.source_labels, &mp.key("sourceLabels"), out);
        gateway_names(&m.gateways, &mp.key("gateways"), out);
        if let Some(ns) = m.source_namespace.as_deref().filter(|n| !n.is_empty())
            && !is_dns1123_label(ns)
        {
            out.err(
                &mp.key("sourceNamespace"),
                format!("sourceNamespace match {ns} is invalid"),
            );
        }
    }
    headers(r.headers.as_ref(), &p.key("headers"), out);
    if let Some(cors) = &r.cors_policy {
        let cp = p.key("corsPolicy");
        for (k, o) in cors.allow_origins.iter().enumerate() {
            let op = cp.key("allowOrigins").index(k);
            let value = o
                .exact
                .as_deref()
                .or(o.prefix.as_deref())
                .or(o.regex.as_deref());
            if value.is_none_or(str::is_empty) {
                out.err(&op, "'' is not a valid match type for CORS allow origins");
            }
            string_match(Some(o), &op, "corsPolicy.allowOrigins", out);
        }
        for (k, m) in cors.allow_methods.iter().enumerate() {
            if !CORS_METHODS.contains(&m.as_str()) {
                out.err(
                    &cp.key("allowMethods").index(k),
                    format!("{m:?} is not a supported HTTP method"),
                );
            }
        }
        for (field, list) in [
            ("allowHeaders", &cors.allow_headers),
            ("exposeHeaders", &cors.expose_headers),
        ] {
            for (k, h) in list.iter().enumerate() {
                if h != "*" {
                    out.check(&cp.key(field).index(k), validate_header_name(h));
                }
            }
        }
        if let Some(age) = &cors.max_age
            && let Some(n) = crate::duration::parse_nanos(age)
            && n % 1_000_000_000 != 0
        {
            out.err(
                &cp.key("maxAge"),
                "max_age duration is accurate only to seconds precision",
            );
        }
    }
    if let Some(fault) = &r.fault {
        let fp = p.key("fault");
        if fault.abort.is_none() && fault.delay.is_none() {
            out.err(
                &fp,
                "HTTP fault injection must have an abort and/or a delay",
            );
        }
        if let Some(abort) = &fault.abort {
            let ap = fp.key("abort");
            percentage(
                abort.percentage.as_ref().and_then(|p| p.value),
                &ap.key("percentage").key("value"),
                out,
            );
            if let Some(code) = abort.http_status {
                if !(200..=599).contains(&code) {
                    out.err(
                        &ap.key("httpStatus"),
                        format!("HTTP status {code} is not in range 200-599"),
                    );
                }
            } else if let Some(s) = &abort.grpc_status {
                if !GRPC_STATUS.contains(&s.as_str()) {
                    out.err(
                        &ap.key("grpcStatus"),
                        format!("gRPC status {s:?} is not supported"),
                    );
                }
            } else if abort.http2_error.is_some() {
                out.err(
                    &ap.key("http2Error"),
                    "HTTP/2 abort fault injection not supported yet",
                );
            } else {
                out.warn(&ap, "abort configured, but error type not set");
            }
        }
        if let Some(delay) = &fault.delay {
            let dp = fp.key("delay");
            percentage(
                delay.percentage.as_ref().and_then(|p| p.value),
                &dp.key("percentage").key("value"),
                out,
            );
            if delay.exponential_delay.is_some() {
                out.err(
                    &dp.key("exponentialDelay"),
                    "exponentialDelay not supported yet",
                );
            }
        }
    }
    if let Some(v) = r.mirror_percent.or(r.mirror_percent_alt) {
        if v > 100 {
            out.err(
                &p.key("mirrorPercent"),
                format!("mirror_percent must have a max value of 100 (it has {v})"),
            );
        }
        out.warn(
            &p.key("mirrorPercent"),
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        );
    }
    percentage(
        r.mirror_percentage.as_ref().and_then(|m| m.value),
        &p.key("mirrorPercentage").key("value"),
        out,
    );
    if let Some(m) = &r.mirror {
        destination(m, &p.key("mirror"), out);
    }
    for (k, m) in r.mirrors.iter().enumerate() {
        let mp = p.key("mirrors").index(k);
        match &m.destination {
            Some(d) => destination(d, &mp.key("destination"), out),
            None => out.err(&mp, "destination is required for mirrors"),
        }
        percentage(
            m.percentage.as_ref().and_then(|p| p.value),
            &mp.key("percentage").key("value"),
            out,
        );
    }
    if let Some(rd) = &r.redirect {
        let rp = p.key("redirect");
        if rd.uri.is_none()
            && rd.authority.is_none()
            && rd.port.is_none()
            && rd.derive_port.is_none()
            && rd.scheme.is_none()
            && rd.prefix_rewrite.is_none()
        {
            out.err(&rp, "redirect must specify URI, authority, scheme, or port");
        }
        if let Some(code) = rd.redirect_code.filter(|c| *c != 0)
            && !(300..=399).contains(&code)
        {
            out.err(
                &rp.key("redirectCode"),
                format!("{code} is not a valid redirect code, must be 3xx"),
            );
        }
        if let Some(s) = rd.scheme.as_deref().filter(|s| !s.is_empty())
            && s != "http"
            && s != "https"
        {
            out.err(
                &rp.key("scheme"),
                "invalid redirect scheme, must be \"http\" or \"https\"",
            );
        }
        if let Some(port) = rd.port.filter(|p| *p > 0) {
            out.check(&rp.key("port"), validate_port(port));
        }
    }
    if let Some(dr) = &r.direct_response {
        let status = dr.status.unwrap_or(0);
        if !(200..=599).contains(&status) {
            out.err(
                &p.key("directResponse").key("status"),
                format!("HTTP status {status} is not in range 200-599"),
            );
        }
        let size = dr.body.as_ref().map_or(0, |b| {
            b.string.as_ref().map_or(0, String::len)
                + b.bytes.as_ref().map_or(0, |s| s.len() * 3 / 4)
        });
        if size > 1 << 20 {
            out.err(&p.key("directResponse").key("body"), "large direct_responses may impact control plane performance, must be less than 1MB");
        } else if size > 100 << 10 {
            out.warn(
                &p.key("directResponse").key("body"),
                "large direct_responses may impact control plane performance",
            );
        }
    }
    if let Some(retries) = &r.retries {
        let rp = p.key("retries");
        let attempts = retries.attempts.unwrap_or(0);
        if attempts < 0 {
            out.err(&rp.key("attempts"), "attempts cannot be negative");
        }
        if attempts == 0
            && (retries.per_try_timeout.is_some()
                || retries.retry_on.as_deref().is_some_and(|s| !s.is_empty())
                || retries.retry_remote_localities.is_some())
        {
            out.err(
                &rp,
                "http retry policy configured when attempts are set to 0 (disabled)",
            );
        }
        if let Some(on) = retries.retry_on.as_deref().filter(|s| !s.is_empty()) {
            for policy in on.split(',') {
                let status = policy
                    .parse::<u16>()
                    .is_ok_and(|c| (100..=599).contains(&c));
                if !status && !RETRY_ON.contains(&policy) {
                    out.err(
                        &rp.key("retryOn"),
                        format!("{policy:?} is not a valid retryOn policy"),
                    );
                }
            }
        }
    }
    if let Some(rw) = &r.rewrite {
        let wp = p.key("rewrite");
        let uri = rw.uri.as_deref().is_some_and(|u| !u.is_empty());
        if uri && rw.uri_regex_rewrite.is_some() {
            out.err(
                &wp,
                "rewrite may only contain one of URI or UriRegexRewrite",
            );
        }
        if !uri
            && rw.uri_regex_rewrite.is_none()
            && rw.authority.as_deref().is_none_or(str::is_empty)
        {
            out.err(&wp, "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified");
        }
        if let Some(rr) = &rw.uri_regex_rewrite {
            let m = rr.r#match.as_deref().unwrap_or_default();
            if m.is_empty() || rr.rewrite.as_deref().is_none_or(str::is_empty) {
                out.err(
                    &wp.key("uriRegexRewrite"),
                    "UriRegexRewrite requires both Rewrite and Match fields to be specified",
                );
            } else {
                out.check(
                    &wp.key("uriRegexRewrite").key("match"),
                    validate_regex(m, "HTTPRewrite.UriRegexRewrite.Match"),
                );
            }
        }
    }
    http_destinations(&r.route, &p.key("route"), out);
    if let Some(t) = &r.timeout {
        out.check(&p.key("timeout"), validate_duration(t));
    }
}

fn percentage(v: Option<f64>, path: &FieldPath, out: &mut Issues) {
    if let Some(v) = v
        && !(0.0..=100.0).contains(&v)
    {
        out.err(path, format!("percentage {v} is not in range 0..100"));
    }
}

fn headers(h: Option<&Headers>, path: &FieldPath, out: &mut Issues) {
    let Some(h) = h else { return };
    for (side, ops) in [("request", &h.request), ("response", &h.response)] {
        let Some(ops) = ops else { continue };
        let sp = path.key(side);
        let allow_authority = side == "request";
        for (field, map) in [("add", &ops.add), ("set", &ops.set)] {
            for name in map.keys() {
                out.check(
                    &sp.key(field).key(name),
                    validate_header_operation_name(name, allow_authority),
                );
            }
        }
        for (i, name) in ops.remove.iter().enumerate() {
            out.check(
                &sp.key("remove").index(i),
                validate_header_operation_name(name, false),
            );
        }
    }
}

/// Destination host, subset and port.
pub fn destination(d: &Destination, path: &FieldPath, out: &mut Issues) {
    if d.host == "*" {
        out.err(
            &path.key("host"),
            format!("invalid destination host {}", d.host),
        );
    } else {
        out.check(&path.key("host"), validate_wildcard_domain(&d.host));
    }
    if let Some(subset) = &d.subset {
        if subset.is_empty() {
            out.err(&path.key("subset"), "subset name cannot be empty");
        } else if !is_dns1123_label(subset) {
            out.err(
                &path.key("subset"),
                format!("subset name is invalid: {subset}"),
            );
        }
    }
    if let Some(port) = d.port.as_ref().and_then(|p| p.number) {
        out.check(&path.key("port").key("number"), validate_port(port));
    }
}

fn weight(w: Option<i32>, path: &FieldPath, out: &mut Issues) -> i64 {
    let w = w.unwrap_or(0);
    if w < 0 {
        out.err(&path.key("weight"), format!("weight {w} < 0"));
    }
    i64::from(w)
}

fn http_destinations(routes: &[HttpRouteDestination], path: &FieldPath, out: &mut Issues) {
    let mut total = 0;
    for (i, r) in routes.iter().enumerate() {
        let p = path.index(i);
        match &r.destination {
            Some(d) => destination(d, &p.key("destination"), out),
            None => out.err(&p.key("destination"), "destination is required"),
        }
        headers(r.headers.as_ref(), &p.key("headers"), out);
        total += weight(r.weight, &p, out);
    }
    if routes.len() > 1 && total == 0 {
        out.err(path, "total destination weight = 0");
    }
}

fn route_destinations(routes: &[RouteDestination], path: &FieldPath, out: &mut Issues) {
    let mut total = 0;
    for (i, r) in routes.iter().enumerate() {
        let p = path.index(i);
        match &r.destination {
            Some(d) => destination(d, &p.key("destination"), out),
            None => out.err(&p.key("destination"), "destination is required"),
        }
        total += weight(r.weight, &p, out);
    }
    if routes.len() > 1 && total == 0 {
        out.err(path, "total destination weight = 0");
    }
}
