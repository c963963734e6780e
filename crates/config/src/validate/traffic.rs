//! DestinationRule checks (Istio's `ValidateDestinationRule`).

use super::Issues;
use super::common::{export_to, is_dns1123_label, labels, validate_port, validate_wildcard_domain};
use crate::model::istio::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRule,
    LoadBalancerSettings, OutlierDetection, TrafficPolicy,
};
use crate::node::FieldPath;

/// Validate a DestinationRule spec.
pub fn destination_rule(dr: &DestinationRule, spec: &FieldPath, out: &mut Issues) {
    if dr.host.contains('/') {
        out.err(
            &spec.key("host"),
            format!("host {:?} cannot contain a namespace prefix", dr.host),
        );
    } else {
        out.check(&spec.key("host"), validate_wildcard_domain(&dr.host));
    }
    export_to(&dr.export_to, &spec.key("exportTo"), out);
    if let Some(sel) = &dr.workload_selector {
        labels(
            &sel.match_labels,
            &spec.key("workloadSelector").key("matchLabels"),
            out,
        );
    }
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy(tp, &spec.key("trafficPolicy"), out);
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        let p = spec.key("subsets").index(i);
        if s.name.is_empty() {
            out.err(&p.key("name"), "subset name cannot be empty");
        } else if !is_dns1123_label(&s.name) {
            out.err(
                &p.key("name"),
                format!("subset name is invalid: {}", s.name),
            );
        }
        if names.contains(&s.name.as_str()) {
            out.err(
                &p.key("name"),
                format!("duplicate subset names: {}", s.name),
            );
        }
        names.push(&s.name);
        labels(&s.labels, &p.key("labels"), out);
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(tp, &p.key("trafficPolicy"), out);
        }
    }
}

fn traffic_policy(tp: &TrafficPolicy, p: &FieldPath, out: &mut Issues) {
    if tp.connection_pool.is_none()
        && tp.load_balancer.is_none()
        && tp.outlier_detection.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        out.err(p, "traffic policy must have at least one field");
    }
    if let Some(od) = &tp.outlier_detection {
        outlier(od, &p.key("outlierDetection"), out);
    }
    if let Some(cp) = &tp.connection_pool {
        pool(cp, &p.key("connectionPool"), out);
    }
    if let Some(lb) = &tp.load_balancer {
        load_balancer(lb, &p.key("loadBalancer"), out);
    }
    if let Some(tls) = &tp.tls {
        client_tls(tls, &p.key("tls"), out);
    }
    let mut ports = Vec::new();
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let pp = p.key("portLevelSettings").index(i);
        match pl.port.as_ref().and_then(|s| s.number) {
            Some(n) => {
                out.check(&pp.key("port").key("number"), validate_port(n));
                if ports.contains(&n) {
                    out.err(
                        &pp.key("port"),
                        format!("duplicate port level settings for port {n}"),
                    );
                }
                ports.push(n);
            }
            None => out.err(&pp.key("port"), "port must be specified"),
        }
        if pl.connection_pool.is_none()
            && pl.load_balancer.is_none()
            && pl.outlier_detection.is_none()
            && pl.tls.is_none()
        {
            out.err(&pp, "port traffic policy must have at least one field");
        }
        if let Some(od) = &pl.outlier_detection {
            outlier(od, &pp.key("outlierDetection"), out);
        }
        if let Some(cp) = &pl.connection_pool {
            pool(cp, &pp.key("connectionPool"), out);
        }
        if let Some(lb) = &pl.load_balancer {
            load_balancer(lb, &pp.key("loadBalancer"), out);
        }
        if let Some(tls) = &pl.tls {
            client_tls(tls, &pp.key("tls"), out);
        }
    }
}

fn outlier(od: &OutlierDetection, p: &FieldPath, out: &mut Issues) {
    if od.consecutive_errors.is_some() {
        out.warn(
            &p.key("consecutiveErrors"),
            "outlier detection consecutiveErrors is deprecated, use consecutive5xxErrors instead",
        );
    }
    for (field, v) in [
        ("maxEjectionPercent", od.max_ejection_percent),
        ("minHealthPercent", od.min_health_percent),
    ] {
        if let Some(v) = v
            && !(0..=100).contains(&v)
        {
            out.err(
                &p.key(field),
                format!("outlier detection {field} must be in range [0, 100]"),
            );
        }
    }
}

fn pool(cp: &ConnectionPoolSettings, p: &FieldPath, out: &mut Issues) {
    if cp.http.is_none() && cp.tcp.is_none() {
        out.err(p, "must set either http or tcp settings");
    }
    if let Some(h) = &cp.http {
        for (field, v) in [
            ("http1MaxPendingRequests", h.http1_max_pending_requests),
            ("http2MaxRequests", h.http2_max_requests),
            ("maxRequestsPerConnection", h.max_requests_per_connection),
            ("maxRetries", h.max_retries),
            ("maxConcurrentStreams", h.max_concurrent_streams),
        ] {
            if v.is_some_and(|v| v < 0) {
                out.err(
                    &p.key("http").key(field),
                    format!("{field} must be non-negative"),
                );
            }
        }
    }
    if let Some(t) = &cp.tcp
        && t.max_connections.is_some_and(|v| v < 0)
    {
        out.err(
            &p.key("tcp").key("maxConnections"),
            "max connections must be non-negative",
        );
    }
}

fn load_balancer(lb: &LoadBalancerSettings, p: &FieldPath, out: &mut Issues) {
    if let Some(ch) = &lb.consistent_hash {
        let cp = p.key("consistentHash");
        if let Some(c) = &ch.http_cookie
            && c.name.is_empty()
        {
            out.err(
                &cp.key("httpCookie").key("name"),
                "name required for HttpCookie",
            );
        }
        if let Some(m) = ch.maglev.as_ref().and_then(|m| m.table_size)
            && !is_prime(m)
        {
            out.err(
                &cp.key("maglev").key("tableSize"),
                format!("table size {m} must be a prime number"),
            );
        }
        if ch.minimum_ring_size.is_some() {
            out.warn(&cp.key("minimumRingSize"), "consistent hash minimumRingSize is deprecated, use ringHash.minimumRingSize instead");
        }
    }
    if let Some(loc) = &lb.locality_lb_setting {
        let lp = p.key("localityLbSetting");
        if !loc.distribute.is_empty() && !loc.failover.is_empty() {
            out.err(
                &lp,
                "can not simultaneously specify 'distribute' and 'failover'",
            );
        }
        for (i, d) in loc.distribute.iter().enumerate() {
            let total: i64 = d.to.values().sum();
            if total != 100 {
                out.err(
                    &lp.key("distribute").index(i).key("to"),
                    "total weight across all localities must be 100",
                );
            }
        }
        for (i, f) in loc.failover.iter().enumerate() {
            if f.from.is_some() && f.from == f.to {
                out.err(
                    &lp.key("failover").index(i),
                    "locality lb failover settings must specify different regions",
                );
            }
        }
    }
}

fn is_prime(n: i64) -> bool {
    if n < 2 {
        return false;
    }
    let mut i = 2;
    while i * i <= n {
        if n % i == 0 {
            return false;
        }
        i += 1;
    }
    true
}

fn client_tls(tls: &ClientTlsSettings, p: &FieldPath, out: &mut Issues) {
    let mode = tls.mode.unwrap_or_default();
    let has = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
    match mode {
        ClientTlsMode::IstioMutual | ClientTlsMode::Disable => {
            if has(&tls.client_certificate)
                || has(&tls.private_key)
                || has(&tls.ca_certificates)
                || has(&tls.credential_name)
            {
                out.err(p, format!("cannot specify client certificates, CA certificate or credential name with {mode:?} mode"));
            }
        }
        ClientTlsMode::Mutual => {
            if !has(&tls.credential_name) {
                if !has(&tls.client_certificate) {
                    out.err(
                        &p.key("clientCertificate"),
                        "client certificate required for mutual tls",
                    );
                }
                if !has(&tls.private_key) {
                    out.err(&p.key("privateKey"), "private key required for mutual tls");
                }
            }
        }
        ClientTlsMode::Simple => {
            if has(&tls.client_certificate) || has(&tls.private_key) {
                out.err(
                    p,
                    "cannot specify client certificate or private key with SIMPLE mode",
                );
            }
        }
    }
}
