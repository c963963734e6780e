//! Gateway, ServiceEntry, WorkloadEntry, WorkloadGroup and Sidecar checks.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::Issues;
use super::common::{
    export_to, is_dns1123_label, labels, validate_fqdn, validate_header_name, validate_port,
    validate_port_name, validate_wildcard_domain,
};
use super::routes::validate_cidr;
use crate::model::istio::{
    Gateway, Resolution, ServerTlsMode, ServerTlsSettings, ServiceEntry, Sidecar, WorkloadEntry,
    WorkloadGroup,
};
use crate::node::FieldPath;
use crate::protocol::Protocol;

/// Validate a Gateway spec.
pub fn gateway(gw: &Gateway, spec: &FieldPath, out: &mut Issues) {
    if gw.servers.is_empty() {
        out.err(
            &spec.key("servers"),
            "gateway must have at least one server",
        );
    }
    labels(&gw.selector, &spec.key("selector"), out);
    let mut port_names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, s) in gw.servers.iter().enumerate() {
        let p = spec.key("servers").index(i);
        if s.hosts.is_empty() {
            out.err(
                &p.key("hosts"),
                "server config must contain at least one host",
            );
        }
        for (j, h) in s.hosts.iter().enumerate() {
            out.check(&p.key("hosts").index(j), namespaced_host(h));
        }
        let protocol = match &s.port {
            None => {
                out.err(&p.key("port"), "port is required");
                None
            }
            Some(port) => {
                let pp = p.key("port");
                match port.number {
                    Some(n) => out.check(&pp.key("number"), validate_port(n)),
                    None => out.err(&pp.key("number"), "port number is required"),
                }
                if let Some(t) = port.target_port {
                    out.check(&pp.key("targetPort"), validate_port(t));
                }
                let proto = Protocol::parse(&port.protocol);
                if proto == Protocol::Unsupported {
                    out.err(
                        &pp.key("protocol"),
                        format!(
                            "invalid protocol {:?}, supplied for port {:?}",
                            port.protocol, port.name
                        ),
                    );
                }
                if !port.name.is_empty()
                    && let Some(prev) = port_names.insert(&port.name, i)
                {
                    out.err(&pp.key("name"), format!("port names in servers must be unique: duplicate name {} (also in servers[{prev}])", port.name));
                }
                Some(proto)
            }
        };
        match (&s.tls, protocol) {
            (Some(tls), proto) => server_tls(tls, proto, &p.key("tls"), out),
            (None, Some(proto)) if proto.is_tls() => {
                out.err(
                    &p.key("tls"),
                    "server must have TLS settings for HTTPS/TLS protocols",
                );
            }
            _ => {}
        }
        if let Some(bind) = s.bind.as_deref().filter(|b| !b.is_empty())
            && bind.parse::<IpAddr>().is_err()
            && !bind.starts_with("unix://")
        {
            out.err(&p.key("bind"), format!("invalid bind address {bind:?}"));
        }
    }
}

/// A `[namespace/]dnsName` host as Gateways and Sidecars write them.
fn namespaced_host(h: &str) -> Result<(), String> {
    let (ns, host) = match h.split_once('/') {
        Some((ns, host)) => (Some(ns), host),
        None => (None, h),
    };
    if let Some(ns) = ns
        && ns != "."
        && ns != "*"
        && ns != "~"
        && !is_dns1123_label(ns)
    {
        return Err(format!("invalid namespace value {ns:?} in host {h:?}"));
    }
    validate_wildcard_domain(host)
}

fn server_tls(tls: &ServerTlsSettings, proto: Option<Protocol>, p: &FieldPath, out: &mut Issues) {
    if tls.https_redirect == Some(true) {
        if proto.is_some_and(|pr| pr != Protocol::Http) {
            out.warn(
                &p.key("httpsRedirect"),
                "tls.httpsRedirect should only be used with http servers",
            );
        }
        return;
    }
    let has = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
    let has_cred = has(&tls.credential_name)
        || !tls.credential_names.is_empty()
        || !tls.tls_certificates.is_empty();
    match tls.mode.unwrap_or_default() {
        ServerTlsMode::Simple => {
            if !has_cred && !has(&tls.server_certificate) {
                out.err(
                    &p.key("serverCertificate"),
                    "SIMPLE TLS requires a server certificate",
                );
            }
            if !has_cred && !has(&tls.private_key) {
                out.err(&p.key("privateKey"), "SIMPLE TLS requires a private key");
            }
        }
        ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            if !has_cred {
                if !has(&tls.server_certificate) {
                    out.err(
                        &p.key("serverCertificate"),
                        "MUTUAL TLS requires a server certificate",
                    );
                }
                if !has(&tls.private_key) {
                    out.err(&p.key("privateKey"), "MUTUAL TLS requires a private key");
                }
                if !has(&tls.ca_certificates) && !has(&tls.ca_cert_credential_name) {
                    out.err(
                        &p.key("caCertificates"),
                        "MUTUAL TLS requires a client CA bundle",
                    );
                }
            }
        }
        ServerTlsMode::IstioMutual => {
            if has_cred
                || has(&tls.server_certificate)
                || has(&tls.private_key)
                || has(&tls.ca_certificates)
            {
                out.err(
                    p,
                    "ISTIO_MUTUAL TLS cannot have associated credentials or certificates",
                );
            }
        }
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {}
    }
}

/// Validate a ServiceEntry spec (the schema's rules cover the rest).
pub fn service_entry(se: &ServiceEntry, spec: &FieldPath, out: &mut Issues) {
    for (i, h) in se.hosts.iter().enumerate() {
        if h != "*" {
            out.check(&spec.key("hosts").index(i), validate_wildcard_domain(h));
        }
    }
    for (i, a) in se.addresses.iter().enumerate() {
        out.check(&spec.key("addresses").index(i), validate_cidr(a));
    }
    export_to(&se.export_to, &spec.key("exportTo"), out);
    if let Some(sel) = &se.workload_selector {
        labels(
            &sel.labels,
            &spec.key("workloadSelector").key("labels"),
            out,
        );
    }
    let mut names = Vec::new();
    for (i, port) in se.ports.iter().enumerate() {
        let p = spec.key("ports").index(i);
        out.check(&p.key("name"), validate_port_name(&port.name));
        if let Some(proto) = &port.protocol
            && Protocol::parse(proto) == Protocol::Unsupported
        {
            out.err(
                &p.key("protocol"),
                format!("unsupported protocol {proto:?}"),
            );
        }
        names.push(port.name.as_str());
    }
    let resolution = se.resolution.unwrap_or_default();
    for (i, ep) in se.endpoints.iter().enumerate() {
        let p = spec.key("endpoints").index(i);
        let Some(addr) = ep.address.as_deref() else {
            continue;
        };
        if resolution == Resolution::Static
            && !addr.starts_with("unix://")
            && addr.parse::<IpAddr>().is_err()
        {
            out.err(
                &p.key("address"),
                format!("endpoint address {addr:?} is not a valid IP address"),
            );
        }
        for name in ep.ports.keys() {
            if !se.ports.is_empty() && !names.contains(&name.as_str()) {
                out.err(
                    &p.key("ports").key(name),
                    format!("endpoint port {name} is not defined by the service entry"),
                );
            }
        }
        workload_entry(ep, &p, out);
    }
    if matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin) && se.endpoints.is_empty()
    {
        for (i, h) in se.hosts.iter().enumerate() {
            if h.starts_with('*') {
                out.err(&spec.key("hosts").index(i), format!("hosts cannot contain wildcards when resolution is DNS and no endpoints are set: {h}"));
            }
        }
    }
}

/// Validate a WorkloadEntry spec (also used for ServiceEntry endpoints).
pub fn workload_entry(we: &WorkloadEntry, p: &FieldPath, out: &mut Issues) {
    let addr = we.address.as_deref().unwrap_or_default();
    if addr.is_empty() && we.network.is_some() {
        out.warn(
            &p.key("address"),
            format!(
                "address is unset with network {:?}",
                we.network.as_deref().unwrap_or_default()
            ),
        );
    }
    if !addr.is_empty()
        && !addr.starts_with("unix://")
        && addr.parse::<IpAddr>().is_err()
        && validate_fqdn(addr).is_err()
    {
        out.err(
            &p.key("address"),
            format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
        );
    }
    for (name, port) in &we.ports {
        out.check(&p.key("ports").key(name), validate_port_name(name));
        out.check(&p.key("ports").key(name), validate_port(*port));
    }
    labels(&we.labels, &p.key("labels"), out);
}

/// Validate a WorkloadGroup spec.
pub fn workload_group(wg: &WorkloadGroup, spec: &FieldPath, out: &mut Issues) {
    match &wg.template {
        None => out.err(&spec.key("template"), "template is required"),
        Some(t) => {
            labels(&t.labels, &spec.key("template").key("labels"), out);
            for (name, port) in &t.ports {
                out.check(
                    &spec.key("template").key("ports").key(name),
                    validate_port(*port),
                );
            }
        }
    }
    if let Some(m) = &wg.metadata {
        labels(&m.labels, &spec.key("metadata").key("labels"), out);
    }
    let Some(probe) = &wg.probe else { return };
    let pp = spec.key("probe");
    for (field, v) in [
        ("periodSeconds", probe.period_seconds),
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        if v.is_some_and(|v| v < 0) {
            out.err(&pp.key(field), format!("{field} must be non-negative"));
        }
    }
    if let Some(h) = &probe.http_get {
        let hp = pp.key("httpGet");
        out.check(&hp.key("port"), validate_port(h.port.unwrap_or(0)));
        if let Some(s) = h.scheme.as_deref().filter(|s| !s.is_empty())
            && s != "HTTP"
            && s != "HTTPS"
        {
            out.err(
                &hp.key("scheme"),
                "httpGet.scheme must be one of \"HTTPS\", \"HTTP\"",
            );
        }
        for (i, hd) in h.http_headers.iter().enumerate() {
            out.check(
                &hp.key("httpHeaders").index(i).key("name"),
                validate_header_name(hd.name.as_deref().unwrap_or_default()),
            );
        }
    } else if let Some(t) = &probe.tcp_socket {
        out.check(
            &pp.key("tcpSocket").key("port"),
            validate_port(t.port.unwrap_or(0)),
        );
    } else if let Some(e) = &probe.exec {
        if e.command.is_empty() {
            out.err(&pp.key("exec").key("command"), "exec.command is required");
        }
    } else if probe.grpc.is_none() {
        out.err(
            &pp,
            "unknown health check method: set httpGet, tcpSocket, exec or grpc",
        );
    }
}

/// Validate a Sidecar spec.
pub fn sidecar(sc: &Sidecar, spec: &FieldPath, out: &mut Issues) {
    if let Some(sel) = &sc.workload_selector {
        if sel.labels.is_empty() {
            out.err(
                &spec.key("workloadSelector"),
                "sidecar: workloadSelector must have at least one label",
            );
        }
        labels(
            &sel.labels,
            &spec.key("workloadSelector").key("labels"),
            out,
        );
    }
    let mut ingress_ports = Vec::new();
    for (i, ing) in sc.ingress.iter().enumerate() {
        let p = spec.key("ingress").index(i);
        match ing.port.as_ref().and_then(|port| port.number) {
            None => out.err(
                &p.key("port"),
                "sidecar: port is required for ingress listeners",
            ),
            Some(n) => {
                out.check(&p.key("port").key("number"), validate_port(n));
                if ingress_ports.contains(&n) {
                    out.err(
                        &p.key("port"),
                        format!("sidecar: ports on IP bound listeners must be unique: {n}"),
                    );
                }
                ingress_ports.push(n);
            }
        }
        if let Some(ep) = ing.default_endpoint.as_deref().filter(|e| !e.is_empty())
            && !ep.starts_with("unix://")
        {
            let ok = ep.rsplit_once(':').is_some_and(|(host, port)| {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                host.parse::<IpAddr>().is_ok()
                    && port.parse::<i64>().is_ok_and(|n| validate_port(n).is_ok())
            });
            if !ok {
                out.err(&p.key("defaultEndpoint"), format!("sidecar: defaultEndpoint {ep:?} must be of form 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:port, [::]:port or unix://filepath"));
            }
        }
    }
    let mut catch_all = 0;
    for (i, eg) in sc.egress.iter().enumerate() {
        let p = spec.key("egress").index(i);
        if eg.port.is_none() {
            catch_all += 1;
        }
        if eg.hosts.is_empty() {
            out.err(
                &p.key("hosts"),
                "sidecar: egress listener must contain at least one host",
            );
        }
        for (j, h) in eg.hosts.iter().enumerate() {
            let hp = p.key("hosts").index(j);
            match h.split_once('/') {
                Some(_) => out.check(&hp, namespaced_host(h)),
                None => out.err(
                    &hp,
                    format!("sidecar: host {h:?} must be of form namespace/dnsName"),
                ),
            }
        }
        if let Some(n) = eg.port.as_ref().and_then(|port| port.number) {
            out.check(&p.key("port").key("number"), validate_port(n));
        }
    }
    if catch_all > 1 {
        out.err(
            &spec.key("egress"),
            "sidecar: at most one egress listener without a port is allowed",
        );
    }
}
