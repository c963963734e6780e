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

/// Whether the service is a Kubernetes-style `name.namespace.svc.<domain>` host.
fn is_kube_host(svc: &Service) -> bool {
    svc.origin == ServiceOrigin::Kubernetes
        || svc.hostname == format!("{}.{}.svc.{DOMAIN_SUFFIX}", svc.name, svc.namespace)
}

/// The names a client may use for a service port, as Istio writes a virtual
/// host's domains: the FQDN, `name.namespace`, `name.namespace.svc`, the
/// short name only for proxies of the same namespace, and the VIPs; each
/// alone and with `:port`.
pub(crate) fn domains(svc: &Service, port: u16, proxy_ns: &str) -> Vec<String> {
    let mut names = vec![svc.hostname.clone()];
    if is_kube_host(svc) {
        if svc.namespace == proxy_ns {
            names.push(svc.name.clone());
        }
        names.push(format!("{}.{}", svc.name, svc.namespace));
        names.push(format!("{}.{}.svc", svc.name, svc.namespace));
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
    if is_kube_host(svc) {
        if svc.namespace == proxy_ns {
            names.push(format!("{}:{port}", svc.name));
        }
        names.push(format!("{}.{}:{port}", svc.name, svc.namespace));
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
