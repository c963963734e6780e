//! Platforms: where running workload instances come from.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

use meshwork_config::{Resource, Spec};
use serde::Serialize;
use tokio::sync::watch;

/// One running instance of a workload (a pod, or a process of the local mesh).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct WorkloadInstance {
    /// The instance's own name (the pod name).
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The workload it belongs to (the Deployment name).
    pub workload: String,
    /// Its labels (the pod template's labels).
    pub labels: BTreeMap<String, String>,
    /// Its address.
    pub address: IpAddr,
    /// The service account it runs as (its mesh identity).
    pub service_account: String,
    /// Whether a sidecar proxy runs beside it.
    pub has_sidecar: bool,
}

/// A source of running workload instances: the local mesh and Kubernetes
/// implement it.
pub trait Platform: Send + Sync + 'static {
    /// The running workload instances (pods).
    fn instances(&self) -> Vec<WorkloadInstance>;
    /// A counter that changes whenever [`Platform::instances`] does.
    fn changes(&self) -> watch::Receiver<u64>;
    /// Virtual addresses the platform gave to services that name none
    /// (hostname → address); the local mesh allocates them.
    fn service_addresses(&self) -> BTreeMap<String, IpAddr> {
        BTreeMap::new()
    }
}

/// A platform whose instances are set by hand (tests, file-only setups).
#[derive(Debug)]
pub struct StaticPlatform {
    instances: Mutex<Vec<WorkloadInstance>>,
    version: watch::Sender<u64>,
}

impl StaticPlatform {
    /// A platform holding `instances`.
    pub fn new(instances: Vec<WorkloadInstance>) -> StaticPlatform {
        StaticPlatform {
            instances: Mutex::new(instances),
            version: watch::Sender::new(0),
        }
    }

    /// Replaces the instances and notifies every [`Platform::changes`] receiver.
    pub fn set(&self, instances: Vec<WorkloadInstance>) {
        *self
            .instances
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = instances;
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }
}

impl Default for StaticPlatform {
    fn default() -> Self {
        StaticPlatform::new(Vec::new())
    }
}

impl Platform for StaticPlatform {
    fn instances(&self) -> Vec<WorkloadInstance> {
        self.instances
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// Most instances made for one Deployment, whatever its `replicas` says.
const MAX_REPLICAS: i64 = 64;

/// One instance per replica of every Deployment in `resources`, named
/// `<deployment>-<n>`, with addresses counted up from `first` (made-up
/// addresses for tests and for describing a mesh before anything runs).
/// Pods whose template says `sidecar.istio.io/inject: "false"` have no
/// sidecar.
pub fn instances_from_deployments(
    resources: &[Resource],
    first: Ipv4Addr,
) -> Vec<WorkloadInstance> {
    let mut next = u32::from(first);
    let mut out = Vec::new();
    for r in resources {
        let Spec::Deployment(d) = &r.spec else {
            continue;
        };
        let template = &d.template;
        let replicas = d.replicas.unwrap_or(1).clamp(0, MAX_REPLICAS);
        let inject = template
            .metadata
            .annotations
            .get("sidecar.istio.io/inject")
            .or_else(|| template.metadata.labels.get("sidecar.istio.io/inject"));
        for n in 0..replicas {
            out.push(WorkloadInstance {
                name: format!("{}-{n}", r.name()),
                namespace: r.namespace().to_string(),
                workload: r.name().to_string(),
                labels: template.metadata.labels.clone(),
                address: IpAddr::V4(Ipv4Addr::from(next)),
                service_account: template
                    .spec
                    .service_account_name
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "default".into()),
                has_sidecar: inject.is_none_or(|v| v != "false"),
            });
            next = next.wrapping_add(1);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_notifies() {
        let p = StaticPlatform::default();
        let mut rx = p.changes();
        assert!(p.instances().is_empty());
        p.set(instances_from_deployments(&[], Ipv4Addr::new(10, 0, 0, 1)));
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 1);
    }

    #[test]
    fn replicas_get_distinct_addresses() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: x}]\n";
        let loaded = meshwork_config::load_str("d.yaml".as_ref(), text);
        let list = instances_from_deployments(&loaded.resources, Ipv4Addr::new(10, 0, 0, 254));
        assert_eq!(list.len(), 3);
        assert_eq!(list[2].address.to_string(), "10.0.1.0");
        assert_eq!(list[1].name, "web-1");
        assert_eq!(list[0].service_account, "default");
        assert!(list[0].has_sidecar);
    }

    #[test]
    fn platform_addresses_fill_services_without_one() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: order}\nspec:\n  ports: [{name: http, port: 8080}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: own}\nspec:\n  clusterIP: 10.0.0.9\n  ports: [{name: http, port: 80}]\n";
        let loaded = meshwork_config::load_str("s.yaml".as_ref(), text);
        let mut reg = crate::Registry::build(&loaded.resources, &[]);
        let vips: BTreeMap<String, IpAddr> = [
            (
                "order.default.svc.cluster.local".to_string(),
                "10.96.0.2".parse().unwrap(),
            ),
            (
                "own.default.svc.cluster.local".to_string(),
                "10.96.0.3".parse().unwrap(),
            ),
        ]
        .into();
        reg.assign_addresses(&vips);
        assert_eq!(
            reg.service("order.default.svc.cluster.local")
                .unwrap()
                .addresses,
            ["10.96.0.2"]
        );
        assert_eq!(
            reg.service("own.default.svc.cluster.local")
                .unwrap()
                .addresses,
            ["10.0.0.9"]
        );
        assert!(StaticPlatform::default().service_addresses().is_empty());
    }
}
