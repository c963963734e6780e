//! Metadata checks for every kind, and the core Kubernetes kinds' specs.

use super::Issues;
use super::common::{is_dns1123_label, is_dns1123_subdomain, labels, validate_port};
use crate::model::k8s::{DeploymentSpec, ServiceSpec};
use crate::node::FieldPath;
use crate::resource::{Kind, Resource};

/// `metadata`: a name (RFC 1123 subdomain, or label for Namespaces and
/// Services), a valid namespace, valid labels.
pub fn validate_meta(res: &Resource, out: &mut Issues) {
    let mp = FieldPath::root().key("metadata");
    let name = &res.meta.name;
    if name.is_empty() {
        out.err(&mp.key("name"), "Required value: name is required");
    } else {
        let label_kind = matches!(res.kind, Kind::Namespace | Kind::Service);
        let ok = if label_kind {
            is_dns1123_label(name)
        } else {
            is_dns1123_subdomain(name)
        };
        if !ok {
            out.err(&mp.key("name"), format!("Invalid value: {name:?}: a lowercase RFC 1123 {} must consist of lower case alphanumeric characters, '-' or '.'", if label_kind { "label" } else { "subdomain" }));
        }
    }
    if let Some(ns) = res.meta.namespace.as_deref().filter(|n| !n.is_empty())
        && !is_dns1123_label(ns)
    {
        out.err(
            &mp.key("namespace"),
            format!("Invalid value: {ns:?}: a namespace must be an RFC 1123 label"),
        );
    }
    labels(&res.meta.labels, &mp.key("labels"), out);
}

/// A Service: ports in range, unique port numbers and names.
pub fn service(svc: &ServiceSpec, spec: &FieldPath, out: &mut Issues) {
    let mut seen: Vec<(i64, String)> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for (i, port) in svc.ports.iter().enumerate() {
        let p = spec.key("ports").index(i);
        out.check(&p.key("port"), validate_port(port.port));
        let l4 = port.protocol.clone().unwrap_or_else(|| "TCP".into());
        if seen.contains(&(port.port, l4.clone())) {
            out.err(&p, format!("Duplicate value: port {} {l4}", port.port));
        }
        seen.push((port.port, l4));
        if let Some(name) = port.name.as_deref() {
            if names.contains(&name) {
                out.err(&p.key("name"), format!("Duplicate value: {name:?}"));
            }
            names.push(name);
        } else if svc.ports.len() > 1 {
            out.err(
                &p.key("name"),
                "Required value: port names are required when a Service has several ports",
            );
        }
    }
    labels(&svc.selector, &spec.key("selector"), out);
}

/// A Deployment: its selector must match its pod template's labels.
pub fn deployment(d: &DeploymentSpec, spec: &FieldPath, out: &mut Issues) {
    let tpl_labels = &d.template.metadata.labels;
    labels(
        tpl_labels,
        &spec.key("template").key("metadata").key("labels"),
        out,
    );
    if let Some(sel) = &d.selector {
        for (k, v) in &sel.match_labels {
            if tpl_labels.get(k) != Some(v) {
                out.err(
                    &spec.key("template").key("metadata").key("labels"),
                    "Invalid value: `selector` does not match template `labels`",
                );
                break;
            }
        }
    }
    for (i, c) in d.template.spec.containers.iter().enumerate() {
        for (j, port) in c.ports.iter().enumerate() {
            let p = spec
                .key("template")
                .key("spec")
                .key("containers")
                .index(i)
                .key("ports")
                .index(j)
                .key("containerPort");
            out.check(&p, validate_port(port.container_port));
        }
    }
}
