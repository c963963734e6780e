//! From manifests to a plan: which pods run (one per Deployment replica),
//! with which address, identity, processes and environment, and which
//! virtual address each Service gets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use meshwork_config::{Diagnostic, Level, Resource, Spec};
use serde::{Deserialize, Serialize};

use crate::cidr::{Cidr, CidrError};
use crate::env::service_env;

/// Most pods made for one Deployment, whatever its `replicas` says.
pub const MAX_REPLICAS: i64 = 16;

/// A Service of the plan with the virtual address the runtime gave it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedService {
    /// Service name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its virtual (cluster) address.
    pub vip: Ipv4Addr,
    /// Its ports: (name, port).
    pub ports: Vec<(String, u16)>,
}

impl PlannedService {
    /// `name.namespace.svc.cluster.local`.
    pub fn hostname(&self) -> String {
        format!(
            "{}.{}.svc.{}",
            self.name,
            self.namespace,
            meshwork_registry::DOMAIN_SUFFIX
        )
    }
}

/// One process of a pod: a container's command, args and environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// Container name.
    pub name: String,
    /// `command` followed by `args`.
    pub argv: Vec<String>,
    /// The container's own `env` (literal values only).
    pub env: Vec<(String, String)>,
    /// Its declared container ports.
    pub ports: Vec<u16>,
}

/// One replica of a Deployment: a pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// `<deployment>-<n>`.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// The Deployment.
    pub workload: String,
    /// Pod template labels.
    pub labels: BTreeMap<String, String>,
    /// Service account (its mesh identity).
    pub service_account: String,
    /// Its address on the bridge.
    pub ip: Ipv4Addr,
    /// Whether a sidecar runs beside it (`sidecar.istio.io/inject` not `"false"`).
    pub sidecar: bool,
    /// The processes to run.
    pub containers: Vec<Container>,
}

impl Pod {
    /// The environment every container of the pod gets: Kubernetes service
    /// variables for the services of its namespace, and the downward API's.
    pub fn base_env(&self, services: &[PlannedService]) -> Vec<(String, String)> {
        let mut env = vec![
            ("POD_NAME".to_string(), self.name.clone()),
            ("POD_NAMESPACE".to_string(), self.namespace.clone()),
            ("POD_IP".to_string(), self.ip.to_string()),
            ("INSTANCE_IP".to_string(), self.ip.to_string()),
            ("SERVICE_ACCOUNT".to_string(), self.service_account.clone()),
        ];
        for s in services.iter().filter(|s| s.namespace == self.namespace) {
            env.extend(service_env(&s.name, &s.vip.to_string(), &s.ports));
        }
        env
    }
}

/// What runs: namespaces, services with their virtual addresses, pods.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Namespaces named by any resource.
    pub namespaces: BTreeSet<String>,
    /// Services (ClusterIP ones get a virtual address).
    pub services: Vec<PlannedService>,
    /// Pods, in manifest order.
    pub pods: Vec<Pod>,
}

/// Why a plan cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// An address range is malformed.
    #[error(transparent)]
    Cidr(#[from] CidrError),
    /// A range has no room left.
    #[error("{what} range {cidr} is too small for {need} addresses; pass a larger one")]
    Exhausted {
        /// Which range.
        what: &'static str,
        /// The range.
        cidr: Cidr,
        /// Addresses needed.
        need: usize,
    },
}

/// Builds the plan: pods get addresses from `pod_cidr` (after the first,
/// which is the bridge's own), services from `service_cidr` (a manifest's
/// own `clusterIP` is kept). Findings about documents that cannot run (a
/// Deployment without a command, `valueFrom` env) go to `diags`; the rest
/// still runs.
pub fn plan(
    resources: &[Resource],
    pod_cidr: Cidr,
    service_cidr: Cidr,
    diags: &mut Vec<Diagnostic>,
) -> Result<Plan, PlanError> {
    let mut out = Plan::default();
    for r in resources {
        if !r.namespace().is_empty() {
            out.namespaces.insert(r.namespace().to_string());
        }
        if let Spec::Namespace(_) = &r.spec {
            out.namespaces.insert(r.name().to_string());
        }
    }
    let mut vips = service_cidr.hosts().skip(1);
    for r in resources {
        let Spec::Service(s) = &r.spec else { continue };
        let own = s.cluster_ip.as_deref().unwrap_or("");
        if own == "None" || s.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let vip = match own.parse::<Ipv4Addr>() {
            Ok(ip) => ip,
            Err(_) => vips.next().ok_or(PlanError::Exhausted {
                what: "service",
                cidr: service_cidr,
                need: out.services.len() + 1,
            })?,
        };
        out.services.push(PlannedService {
            name: r.name().to_string(),
            namespace: r.namespace().to_string(),
            vip,
            ports: s
                .ports
                .iter()
                .filter_map(|p| {
                    let port = u16::try_from(p.port).ok().filter(|p| *p != 0)?;
                    Some((p.name.clone().unwrap_or_default(), port))
                })
                .collect(),
        });
    }
    // The first host address is the bridge's (where the control plane listens).
    let mut ips = pod_cidr.hosts().skip(1);
    for r in resources {
        let Spec::Deployment(d) = &r.spec else {
            continue;
        };
        let t = &d.template;
        let containers = containers(r, &t.spec.containers, diags);
        if containers.is_empty() {
            continue;
        }
        let inject = t
            .metadata
            .annotations
            .get("sidecar.istio.io/inject")
            .or_else(|| t.metadata.labels.get("sidecar.istio.io/inject"));
        for n in 0..d.replicas.unwrap_or(1).clamp(0, MAX_REPLICAS) {
            let ip = ips.next().ok_or(PlanError::Exhausted {
                what: "pod",
                cidr: pod_cidr,
                need: out.pods.len() + 1,
            })?;
            out.pods.push(Pod {
                name: format!("{}-{n}", r.name()),
                namespace: r.namespace().to_string(),
                workload: r.name().to_string(),
                labels: t.metadata.labels.clone(),
                service_account: t
                    .spec
                    .service_account_name
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "default".into()),
                ip,
                sidecar: inject.is_none_or(|v| v != "false"),
                containers: containers.clone(),
            });
        }
    }
    Ok(out)
}

/// The runnable containers of a Deployment; the others are reported.
fn containers(
    r: &Resource,
    list: &[meshwork_config::model::k8s::Container],
    diags: &mut Vec<Diagnostic>,
) -> Vec<Container> {
    let mut out = Vec::new();
    for c in list {
        let argv: Vec<String> = c.command.iter().chain(&c.args).cloned().collect();
        if argv.is_empty() {
            diags.push(finding(
                r,
                format!(
                    "container {:?} has no command: the local mesh runs processes, not images ({}); it is not started",
                    c.name,
                    c.image.as_deref().unwrap_or("no image")
                ),
            ));
            continue;
        }
        let mut env = Vec::new();
        for e in &c.env {
            match &e.value {
                Some(v) => env.push((e.name.clone(), v.clone())),
                None if e.value_from.is_some() => diags.push(finding(
                    r,
                    format!(
                        "container {:?}: env {} uses valueFrom, which the local mesh does not resolve; it is left unset",
                        c.name, e.name
                    ),
                )),
                None => env.push((e.name.clone(), String::new())),
            }
        }
        out.push(Container {
            name: c.name.clone(),
            argv,
            env,
            ports: c
                .ports
                .iter()
                .filter_map(|p| u16::try_from(p.container_port).ok())
                .collect(),
        });
    }
    out
}

fn finding(r: &Resource, message: String) -> Diagnostic {
    Diagnostic {
        level: Level::Warning,
        code: "MW0701",
        name: "NotRunnableLocally",
        file: Some(r.file.clone()),
        line: Some(r.line),
        path: None,
        resource: Some(r.reference()),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: order, namespace: shop}
spec:
  selector: {app: order}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: fixed, namespace: shop}
spec:
  clusterIP: 10.96.9.9
  ports: [{name: tcp, port: 9000}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: order, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: order}}
  template:
    metadata: {labels: {app: order, version: v1}}
    spec:
      serviceAccountName: order
      containers:
      - name: app
        image: order:1
        command: [meshwork, demo-app]
        args: [order]
        env: [{name: GREETING, value: hi}, {name: SECRET, valueFrom: {secretKeyRef: {name: s, key: k}}}]
        ports: [{containerPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: imageonly}
spec:
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}, annotations: {sidecar.istio.io/inject: "false"}}
    spec:
      containers: [{name: x, image: nginx}]
"#;

    fn load() -> (Plan, Vec<Diagnostic>) {
        let loaded = meshwork_config::load_str("m.yaml".as_ref(), MANIFESTS);
        assert!(
            loaded.diagnostics.iter().all(|d| d.level != Level::Error),
            "{:?}",
            loaded.diagnostics
        );
        let mut diags = Vec::new();
        let p = plan(
            &loaded.resources,
            "10.88.0.0/24".parse().unwrap(),
            "10.96.0.0/24".parse().unwrap(),
            &mut diags,
        )
        .unwrap();
        (p, diags)
    }

    #[test]
    fn replicas_become_pods_with_addresses_after_the_bridge() {
        let (p, _) = load();
        assert_eq!(p.pods.len(), 2);
        assert_eq!(p.pods[0].name, "order-0");
        assert_eq!(p.pods[1].name, "order-1");
        assert_eq!(p.pods[0].ip, Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(p.pods[1].ip, Ipv4Addr::new(10, 88, 0, 3));
        assert_eq!(p.pods[0].service_account, "order");
        assert_eq!(
            p.pods[0].containers[0].argv,
            ["meshwork", "demo-app", "order"]
        );
        assert_eq!(
            p.pods[0].containers[0].env,
            [("GREETING".into(), "hi".into())]
        );
        assert!(p.pods[0].sidecar);
        assert!(p.namespaces.contains("shop") && p.namespaces.contains("default"));
    }

    #[test]
    fn services_get_virtual_addresses_unless_they_name_one() {
        let (p, _) = load();
        let order = p.services.iter().find(|s| s.name == "order").unwrap();
        assert_eq!(order.vip, Ipv4Addr::new(10, 96, 0, 2));
        assert_eq!(order.hostname(), "order.shop.svc.cluster.local");
        let fixed = p.services.iter().find(|s| s.name == "fixed").unwrap();
        assert_eq!(fixed.vip, Ipv4Addr::new(10, 96, 9, 9));
    }

    #[test]
    fn unrunnable_containers_are_reported_with_file_and_line() {
        let (p, diags) = load();
        assert!(p.pods.iter().all(|p| p.workload != "imageonly"));
        let text: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("m.yaml") && t.contains("no command")),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t.contains("valueFrom")), "{text:?}");
    }

    #[test]
    fn pods_get_service_variables_of_their_namespace() {
        let (p, _) = load();
        let env: BTreeMap<_, _> = p.pods[0].base_env(&p.services).into_iter().collect();
        assert_eq!(env["ORDER_SERVICE_HOST"], "10.96.0.2");
        assert_eq!(env["ORDER_SERVICE_PORT"], "8080");
        assert_eq!(env["FIXED_SERVICE_PORT_TCP"], "9000");
        assert_eq!(env["POD_IP"], "10.88.0.2");
    }

    #[test]
    fn a_small_range_is_an_error_not_a_panic() {
        let loaded = meshwork_config::load_str("m.yaml".as_ref(), MANIFESTS);
        let err = plan(
            &loaded.resources,
            "10.88.0.0/30".parse().unwrap(),
            "10.96.0.0/24".parse().unwrap(),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("too small"), "{err}");
    }
}
