//! Shared test fixtures (Bookinfo with made-up instances) and a compact,
//! deterministic text rendering of generated resources for golden files.
#![allow(dead_code)]

pub mod render;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use meshwork_registry::{
    Platform, Registry, StaticPlatform, WorkloadInstance, instances_from_deployments,
};
use meshwork_translate::{MeshSnapshot, ProxyKind, ProxyMeta};

/// Istio's Bookinfo samples.
pub const BOOKINFO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/istio/bookinfo"
);

/// Loads files (Bookinfo sample names or paths) plus extra YAML.
pub fn load(samples: &[&str], extra: &str) -> Vec<meshwork_config::Resource> {
    let paths: Vec<PathBuf> = samples
        .iter()
        .map(|s| PathBuf::from(BOOKINFO).join(s))
        .collect();
    let mut loaded = meshwork_config::load_paths(&paths);
    if !extra.is_empty() {
        loaded.extend(meshwork_config::load_str("extra.yaml".as_ref(), extra));
    }
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.level == meshwork_config::Level::Error)
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    loaded.resources
}

/// A snapshot of `resources` with one instance per Deployment replica
/// (addresses from 10.1.0.1), and those instances.
pub fn snapshot(
    resources: Vec<meshwork_config::Resource>,
) -> (MeshSnapshot, Vec<WorkloadInstance>) {
    let platform = StaticPlatform::new(instances_from_deployments(
        &resources,
        Ipv4Addr::new(10, 1, 0, 1),
    ));
    let instances = platform.instances();
    let registry = Registry::build(&resources, &instances);
    (MeshSnapshot::new(1, resources, registry), instances)
}

/// The standard Bookinfo setup: the app, every subset, reviews 80/20 v1/v2.
pub fn bookinfo() -> (MeshSnapshot, Vec<WorkloadInstance>) {
    snapshot(load(
        &[
            "bookinfo.yaml",
            "destination-rule-all.yaml",
            "virtual-service-reviews-80-20.yaml",
        ],
        "",
    ))
}

/// The sidecar of the first instance of `workload`.
pub fn sidecar(instances: &[WorkloadInstance], workload: &str) -> ProxyMeta {
    let i = instances
        .iter()
        .find(|i| i.workload == workload)
        .unwrap_or_else(|| panic!("no instance of {workload}"));
    ProxyMeta {
        node_id: format!(
            "sidecar~{}~{}.{}~{}.svc.cluster.local",
            i.address, i.name, i.namespace, i.namespace
        ),
        kind: ProxyKind::Sidecar,
        ip: Some(i.address),
        namespace: i.namespace.clone(),
        workload: i.workload.clone(),
        labels: i.labels.clone(),
        service_account: i.service_account.clone(),
        locality: String::new(),
        vhds: false,
    }
}

/// A proxyless gRPC client in `namespace`.
pub fn proxyless(namespace: &str) -> ProxyMeta {
    ProxyMeta {
        node_id: format!(
            "sidecar~10.9.9.9~grpc-client-0.{namespace}~{namespace}.svc.cluster.local"
        ),
        kind: ProxyKind::Proxyless,
        ip: Some("10.9.9.9".parse().unwrap()),
        namespace: namespace.into(),
        workload: "grpc-client".into(),
        labels: [("app".to_string(), "grpc-client".to_string())].into(),
        service_account: "default".into(),
        locality: String::new(),
        vhds: false,
    }
}
