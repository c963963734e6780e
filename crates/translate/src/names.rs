//! Istio's names: clusters, listeners, route configurations, virtual host
//! domains and endpoint workload metadata.

use std::collections::BTreeMap;

use meshwork_registry::{DOMAIN_SUFFIX, Service, ServiceOrigin};

/// Istio's cluster id for a single-cluster mesh.
pub(crate) const CLUSTER_ID: &str = "Kubernetes";
/// Drops connections.
pub(crate) const BLACK_HOLE: &str = "BlackHoleCluster";
/// Forwards to the original destination (outbound).
pub(crate) const PASSTHROUGH: &str = "PassthroughCluster";
/// Forwards to the original destination (inbound).
pub(crate) const INBOUND_PASSTHROUGH: &str = "InboundPassthroughCluster";
/// Outbound capture port.
pub(crate) const OUTBOUND_CAPTURE: u16 = 15001;
/// Inbound capture port.
pub(crate) const INBOUND_CAPTURE: u16 = 15006;

/// `outbound|port|subset|host`.
pub(crate) fn outbound_cluster(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// `inbound|port||`.
pub(crate) fn inbound_cluster(port: u16) -> String {
    format!("inbound|{port}||")
}

/// The short name of a Kubernetes-style `name.namespace.svc.<domain>` host:
/// a Kubernetes Service, or a ServiceEntry host of that shape in its own
/// namespace (whose registry name is the whole host).
fn kube_name(svc: &Service) -> Option<&str> {
    if svc.origin == ServiceOrigin::Kubernetes {
        return Some(&svc.name);
    }
    let suffix = format!(".{}.svc.{DOMAIN_SUFFIX}", svc.namespace);
    svc.hostname
        .strip_suffix(&suffix)
        .filter(|n| !n.is_empty() && !n.contains(['.', '*']))
}

/// The names a client may use for a service port, as Istio writes a virtual
/// host's domains: the FQDN, `name.namespace`, `name.namespace.svc`, the
/// short name only for proxies of the same namespace, and the VIPs; each
/// alone and with `:port`.
pub(crate) fn domains(svc: &Service, port: u16, proxy_ns: &str) -> Vec<String> {
    let mut names = vec![svc.hostname.clone()];
    if let Some(name) = kube_name(svc) {
        if svc.namespace == proxy_ns {
            names.push(name.to_string());
        }
        names.push(format!("{name}.{}", svc.namespace));
        names.push(format!("{name}.{}.svc", svc.namespace));
    }
    names.extend(
        svc.addresses
            .iter()
            .filter(|a| a.parse::<std::net::IpAddr>().is_ok())
            .cloned(),
    );
    names
        .into_iter()
        .flat_map(|n| {
            let with_port = format!("{n}:{port}");
            [n, with_port]
        })
        .collect()
}

/// Names a proxyless client may dial for a service port (`host:port`).
pub(crate) fn grpc_targets(svc: &Service, port: u16, proxy_ns: &str) -> Vec<String> {
    let mut names = vec![format!("{}:{port}", svc.hostname)];
    if let Some(name) = kube_name(svc) {
        if svc.namespace == proxy_ns {
            names.push(format!("{name}:{port}"));
        }
        names.push(format!("{name}.{}:{port}", svc.namespace));
    }
    names
}

/// Istio's `istio.workload` endpoint metadata: `name;namespace;app;version;cluster`.
pub(crate) fn workload_metadata(
    workload: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> String {
    let first = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k).cloned());
    let app = first(&[
        "service.istio.io/canonical-name",
        "app.kubernetes.io/name",
        "app",
    ])
    .unwrap_or_else(|| workload.to_string());
    let version = first(&[
        "service.istio.io/canonical-revision",
        "app.kubernetes.io/version",
        "version",
    ])
    .unwrap_or_else(|| "latest".into());
    format!("{workload};{namespace};{app};{version};{CLUSTER_ID}")
}
