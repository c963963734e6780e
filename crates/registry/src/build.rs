//! Building a [`Registry`] snapshot from resources and workload instances.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use meshwork_config::model::istio::{self, IntOrString, Location};
use meshwork_config::model::k8s;
use meshwork_config::{Resource, Spec};

use crate::platform::WorkloadInstance;
use crate::service::{
    Port, Protocol, Resolution, Service, ServiceEndpoint, ServiceOrigin, TargetPort, labels_match,
};

/// The cluster's DNS domain, as Kubernetes and Istio default it.
pub const DOMAIN_SUFFIX: &str = "cluster.local";

/// The annotation that limits where a Kubernetes Service is visible.
const EXPORT_TO: &str = "networking.istio.io/exportTo";

/// Resolves a host named in a resource of `namespace` the way Istio does: a
/// name without a dot becomes `name.namespace.svc.cluster.local`; `*`, IP
/// addresses and names with dots stay as they are.
pub fn fqdn(host: &str, namespace: &str) -> String {
    if host.is_empty() || host == "*" || host.contains('.') || host.parse::<IpAddr>().is_ok() {
        return host.to_string();
    }
    format!("{host}.{namespace}.svc.{DOMAIN_SUFFIX}")
}

/// An immutable snapshot of the mesh's services and their endpoints.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    services: Vec<Service>,
    index: HashMap<String, usize>,
    endpoints: HashMap<String, BTreeMap<u16, Vec<ServiceEndpoint>>>,
    warnings: Vec<String>,
}

/// Workloads grouped by namespace.
type ByNamespace<'a> = HashMap<&'a str, Vec<&'a Workload>>;

/// Something that can back an endpoint: an instance or a WorkloadEntry.
struct Workload {
    address: String,
    namespace: String,
    workload: String,
    labels: BTreeMap<String, String>,
    service_account: String,
    has_sidecar: bool,
    locality: String,
    weight: u32,
    /// Named ports: a WorkloadEntry's `ports`, or the Deployment's container ports.
    ports: BTreeMap<String, u16>,
    /// Whether `ports` maps service port names (WorkloadEntry) rather than
    /// container port names.
    entry: bool,
}

impl Workload {
    /// The port this workload receives a service port on.
    fn target(&self, port: &Port) -> Option<u16> {
        if self.entry
            && let Some(p) = self.ports.get(&port.name)
        {
            return Some(*p);
        }
        match &port.target_port {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Name(name) => self.ports.get(name).copied(),
        }
    }

    fn endpoint(&self, port: u16) -> ServiceEndpoint {
        ServiceEndpoint {
            address: self.address.clone(),
            port,
            labels: self.labels.clone(),
            workload: self.workload.clone(),
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
            has_sidecar: self.has_sidecar,
            healthy: true,
            locality: self.locality.clone(),
            weight: self.weight,
        }
    }
}

fn port_u16(n: i64) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

/// Builds workloads out of the instances and the WorkloadEntry / WorkloadGroup resources.
fn workloads(resources: &[Resource], instances: &[WorkloadInstance]) -> Vec<Workload> {
    let mut container_ports: HashMap<(&str, &str), BTreeMap<String, u16>> = HashMap::new();
    for r in resources {
        if let Spec::Deployment(d) = &r.spec {
            let ports = d
                .template
                .spec
                .containers
                .iter()
                .flat_map(|c| c.ports.iter())
                .filter_map(|p| Some((p.name.clone()?, port_u16(p.container_port)?)))
                .collect();
            container_ports.insert((r.namespace(), r.name()), ports);
        }
    }
    let mut out: Vec<Workload> = instances
        .iter()
        .map(|i| Workload {
            address: i.address.to_string(),
            namespace: i.namespace.clone(),
            workload: i.workload.clone(),
            labels: i.labels.clone(),
            service_account: i.service_account.clone(),
            has_sidecar: i.has_sidecar,
            locality: String::new(),
            weight: 1,
            ports: container_ports
                .get(&(i.namespace.as_str(), i.workload.as_str()))
                .cloned()
                .unwrap_or_default(),
            entry: false,
        })
        .collect();
    for r in resources {
        let entry = match &r.spec {
            Spec::WorkloadEntry(we) => Some((**we).clone()),
            Spec::WorkloadGroup(wg) => wg.template.as_ref().map(|t| {
                let mut labels = t.labels.clone();
                if let Some(m) = &wg.metadata {
                    labels.extend(m.labels.clone());
                }
                istio::WorkloadEntry {
                    address: t.address.clone(),
                    labels,
                    locality: t.locality.clone(),
                    network: t.network.clone(),
                    ports: t.ports.clone(),
                    service_account: t.service_account.clone(),
                    weight: t.weight,
                }
            }),
            _ => None,
        };
        if let Some(we) = entry
            && let Some(w) = entry_workload(&we, r.namespace(), r.name())
        {
            out.push(w);
        }
    }
    out
}

/// A WorkloadEntry as a workload; `None` without a usable address.
fn entry_workload(we: &istio::WorkloadEntry, namespace: &str, name: &str) -> Option<Workload> {
    let address = we
        .address
        .clone()
        .filter(|a| !a.is_empty() && !a.starts_with("unix://"))?;
    Some(Workload {
        address,
        namespace: namespace.to_string(),
        workload: name.to_string(),
        labels: we.labels.clone(),
        service_account: we
            .service_account
            .clone()
            .unwrap_or_else(|| "default".into()),
        has_sidecar: we
            .labels
            .get("security.istio.io/tlsMode")
            .is_some_and(|m| m == "istio"),
        locality: we.locality.clone().unwrap_or_default(),
        weight: we
            .weight
            .and_then(|w| u32::try_from(w).ok())
            .unwrap_or(1)
            .max(1),
        ports: we
            .ports
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), port_u16(*v)?)))
            .collect(),
        entry: true,
    })
}

impl Registry {
    /// Builds the registry from configuration and the platform's instances.
    /// Invalid or conflicting definitions are skipped and reported in
    /// [`Registry::warnings`]; nothing here panics on bad input.
    pub fn build(resources: &[Resource], instances: &[WorkloadInstance]) -> Registry {
        let all = workloads(resources, instances);
        let mut workloads: HashMap<&str, Vec<&Workload>> = HashMap::new();
        for w in &all {
            workloads.entry(w.namespace.as_str()).or_default().push(w);
        }
        let mut reg = Registry::default();
        let mut pending: Vec<(Service, Vec<(u16, ServiceEndpoint)>)> = Vec::new();
        for r in resources {
            if let Spec::Service(s) = &r.spec {
                pending.push(reg.kube_service(r, s, &workloads));
            }
        }
        for r in resources {
            if let Spec::ServiceEntry(se) = &r.spec {
                pending.extend(reg.service_entry(r, se, &workloads));
            }
        }
        for (svc, eps) in pending {
            if reg.index.contains_key(&svc.hostname) {
                reg.warnings.push(format!(
                    "{} {}/{}: host {} is already defined; ignored",
                    match &svc.origin {
                        ServiceOrigin::Kubernetes => "Service",
                        ServiceOrigin::ServiceEntry { .. } => "ServiceEntry",
                    },
                    svc.namespace,
                    svc.name,
                    svc.hostname
                ));
                continue;
            }
            let by_port = reg.endpoints.entry(svc.hostname.clone()).or_default();
            for p in &svc.ports {
                by_port.entry(p.port).or_default();
            }
            for (port, ep) in eps {
                by_port.entry(port).or_default().push(ep);
            }
            for list in by_port.values_mut() {
                list.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));
                list.dedup_by(|a, b| a.address == b.address && a.port == b.port);
            }
            reg.index.insert(svc.hostname.clone(), 0);
            reg.services.push(svc);
        }
        reg.services.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        for (i, s) in reg.services.iter().enumerate() {
            reg.index.insert(s.hostname.clone(), i);
        }
        reg
    }

    fn kube_service(
        &mut self,
        r: &Resource,
        s: &k8s::ServiceSpec,
        workloads: &ByNamespace<'_>,
    ) -> (Service, Vec<(u16, ServiceEndpoint)>) {
        let ns = r.namespace();
        let mut ports = Vec::new();
        for p in &s.ports {
            let Some(port) = port_u16(p.port) else {
                self.warn(r, format!("port {} is out of range; skipped", p.port));
                continue;
            };
            let target_port = match &p.target_port {
                None => TargetPort::Number(port),
                Some(IntOrString::Int(n)) => match port_u16(*n) {
                    Some(n) => TargetPort::Number(n),
                    None => {
                        self.warn(r, format!("targetPort {n} is out of range; skipped"));
                        continue;
                    }
                },
                Some(IntOrString::String(name)) => match name.parse::<u16>() {
                    Ok(n) if n != 0 => TargetPort::Number(n),
                    _ => TargetPort::Name(name.clone()),
                },
            };
            ports.push(Port {
                name: p.name.clone().unwrap_or_default(),
                port,
                protocol: Protocol::of_service_port(
                    p.name.as_deref(),
                    p.app_protocol.as_deref(),
                    p.protocol.as_deref(),
                ),
                target_port,
            });
        }
        let cluster_ip = s.cluster_ip.as_deref().unwrap_or("");
        let external = s.type_.as_deref() == Some("ExternalName");
        let resolution = if external {
            Resolution::DnsLb
        } else if cluster_ip == "None" {
            Resolution::Passthrough
        } else {
            Resolution::ClientSideLb
        };
        let svc = Service {
            hostname: fqdn(r.name(), ns),
            namespace: ns.to_string(),
            name: r.name().to_string(),
            ports,
            addresses: cluster_ip
                .parse::<IpAddr>()
                .map(|ip| vec![ip.to_string()])
                .unwrap_or_default(),
            selector: s.selector.clone(),
            mesh_external: external,
            resolution,
            export_to: r
                .meta
                .annotations
                .get(EXPORT_TO)
                .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
                .unwrap_or_default(),
            origin: ServiceOrigin::Kubernetes,
        };
        let mut eps = Vec::new();
        if external {
            if let Some(name) = s.external_name.as_ref().filter(|n| !n.is_empty()) {
                for p in &svc.ports {
                    let mut ep = dns_endpoint(name, p.port, ns);
                    ep.port = match p.target_port {
                        TargetPort::Number(n) => n,
                        TargetPort::Name(_) => p.port,
                    };
                    eps.push((p.port, ep));
                }
            }
        } else if !svc.selector.is_empty() {
            eps = select(&svc, ns, &svc.selector, workloads);
        }
        (svc, eps)
    }

    fn service_entry(
        &mut self,
        r: &Resource,
        se: &istio::ServiceEntry,
        workloads: &ByNamespace<'_>,
    ) -> Vec<(Service, Vec<(u16, ServiceEndpoint)>)> {
        let ns = r.namespace();
        let mut ports = Vec::new();
        for p in &se.ports {
            let Some(port) = p.number.and_then(port_u16) else {
                self.warn(r, format!("port {:?} has no valid number; skipped", p.name));
                continue;
            };
            ports.push(Port {
                name: p.name.clone(),
                port,
                protocol: p
                    .protocol
                    .as_deref()
                    .map(Protocol::parse)
                    .unwrap_or(Protocol::Unsupported),
                target_port: TargetPort::Number(p.target_port.and_then(port_u16).unwrap_or(port)),
            });
        }
        let resolution = match se.resolution.unwrap_or_default() {
            istio::Resolution::None => Resolution::Passthrough,
            istio::Resolution::Static => Resolution::ClientSideLb,
            istio::Resolution::Dns | istio::Resolution::DynamicDns => Resolution::DnsLb,
            istio::Resolution::DnsRoundRobin => Resolution::DnsRoundRobinLb,
        };
        let selector = se
            .workload_selector
            .as_ref()
            .map(|s| s.labels.clone())
            .unwrap_or_default();
        let mut hosts: Vec<&String> = se.hosts.iter().filter(|h| !h.is_empty()).collect();
        hosts.dedup();
        let mut out = Vec::new();
        for host in hosts {
            let svc = Service {
                hostname: host.to_ascii_lowercase(),
                namespace: ns.to_string(),
                name: host.to_ascii_lowercase(),
                ports: ports.clone(),
                addresses: se.addresses.clone(),
                selector: selector.clone(),
                mesh_external: se.location.unwrap_or_default() != Location::MeshInternal,
                resolution,
                export_to: se.export_to.clone(),
                origin: ServiceOrigin::ServiceEntry {
                    name: r.name().to_string(),
                },
            };
            let mut eps = Vec::new();
            for we in &se.endpoints {
                match entry_workload(we, ns, "") {
                    Some(w) => eps.extend(
                        svc.ports
                            .iter()
                            .filter_map(|p| Some((p.port, w.endpoint(w.target(p)?)))),
                    ),
                    None => self.warn(r, "an endpoint without a usable address is skipped".into()),
                }
            }
            if !selector.is_empty() {
                eps.extend(select(&svc, ns, &selector, workloads));
            }
            let dns = matches!(resolution, Resolution::DnsLb | Resolution::DnsRoundRobinLb);
            if dns && se.endpoints.is_empty() && selector.is_empty() && !host.contains('*') {
                for p in &svc.ports {
                    let target = match p.target_port {
                        TargetPort::Number(n) => n,
                        TargetPort::Name(_) => p.port,
                    };
                    eps.push((p.port, dns_endpoint(&svc.hostname, target, ns)));
                }
            }
            out.push((svc, eps));
        }
        out
    }

    fn warn(&mut self, r: &Resource, msg: String) {
        self.warnings.push(format!(
            "{} {}/{} ({}:{}): {msg}",
            r.kind,
            r.namespace(),
            r.name(),
            r.file.display(),
            r.line
        ));
    }

    /// Every service, ordered by host name.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.iter()
    }

    /// The service with this fully qualified host name.
    pub fn service(&self, hostname: &str) -> Option<&Service> {
        self.index.get(hostname).map(|i| &self.services[*i])
    }

    /// The endpoints of a service port (empty if unknown).
    pub fn endpoints(&self, hostname: &str, port: u16) -> &[ServiceEndpoint] {
        self.endpoints
            .get(hostname)
            .and_then(|m| m.get(&port))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Gives each service that has no address of its own the virtual
    /// address a platform allocated for it (hostname → address), as the
    /// local mesh does for Services without a `clusterIP`.
    pub fn assign_addresses(&mut self, addresses: &BTreeMap<String, IpAddr>) {
        for svc in &mut self.services {
            if svc.addresses.is_empty()
                && let Some(ip) = addresses.get(&svc.hostname)
            {
                svc.addresses.push(ip.to_string());
            }
        }
    }

    /// What was skipped while building, with the resource and its location.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The whole registry as JSON (for `/debug/registryz`).
    pub fn to_json(&self) -> serde_json::Value {
        let services: Vec<serde_json::Value> = self
            .services
            .iter()
            .map(|s| {
                let endpoints: BTreeMap<String, &[ServiceEndpoint]> = s
                    .ports
                    .iter()
                    .map(|p| (p.port.to_string(), self.endpoints(&s.hostname, p.port)))
                    .collect();
                serde_json::json!({ "service": s, "endpoints": endpoints })
            })
            .collect();
        serde_json::json!({ "services": services, "warnings": self.warnings })
    }
}

/// Endpoints of `svc` from the workloads of `namespace` that carry `selector`.
fn select(
    svc: &Service,
    namespace: &str,
    selector: &BTreeMap<String, String>,
    workloads: &ByNamespace<'_>,
) -> Vec<(u16, ServiceEndpoint)> {
    workloads
        .get(namespace)
        .into_iter()
        .flatten()
        .filter(|w| labels_match(selector, &w.labels))
        .flat_map(|w| {
            svc.ports
                .iter()
                .filter_map(move |p| Some((p.port, w.endpoint(w.target(p)?))))
        })
        .collect()
}

/// An endpoint that is a host name for the proxy to resolve.
fn dns_endpoint(host: &str, port: u16, namespace: &str) -> ServiceEndpoint {
    ServiceEndpoint {
        address: host.to_string(),
        port,
        labels: BTreeMap::new(),
        workload: String::new(),
        namespace: namespace.to_string(),
        service_account: String::new(),
        has_sidecar: false,
        healthy: true,
        locality: String::new(),
        weight: 1,
    }
}
