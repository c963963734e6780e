//! Explicit mode: a local mesh without root or network namespaces.
//!
//! Every pod shares the host's network, so each gets its own loopback
//! addresses (all of 127.0.0.0/8 is bindable by any user on Linux): from
//! the pod range `127.P.M.0/24` (default `127.1.0.0/24`; the first host is
//! the control plane's), pod number `n` has
//!
//! - the **pod address** `127.P.M.n`: what the registry publishes as its
//!   endpoint; the sidecar's inbound listeners (mTLS as PeerAuthentication
//!   says), admin 15000, health 15021 and metrics 15090/15020 bind it;
//! - the **app address** `127.(P+1).M.n`: where the workload listens on its
//!   container port (`BIND`, `POD_IP`);
//! - an **egress address** per Service: the `k`-th Service of the plan
//!   (from 0) is `127.(P+2+k).M.n` in this pod, the pod's own view of that
//!   service (what a cluster IP is on Kubernetes). The sidecar binds the
//!   service's ports there; the workload's `<NAME>_SERVICE_HOST`/`_PORT`
//!   point there (`MESHWORK_EXPLICIT=1`), so any client reaches the
//!   service, whatever Host header it sends.
//!
//! The second octet says what an address is (pod, app, service k), the
//! last two which pod; a pod range `127.P.0.0/16` to `/24` leaves room for
//! `254 - P` services ([`check_room`]).
//!
//! The sidecars are configured with Istio's own API, as Istio does for
//! workloads without iptables: one `Sidecar` per pod (selected by the
//! label [`POD_LABEL`] added to the pod's proxy labels) with `ingress`
//! (`bind` pod address, `defaultEndpoint` app address, `captureMode:
//! NONE`) and an `egress` listener per service port (`bind` that
//! service's egress address, `captureMode: NONE`, `hosts:
//! ["<ns>/<fqdn>"]`), written to a directory the control plane watches
//! beside the user's.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use meshwork_registry::{DOMAIN_SUFFIX, Protocol, Registry};

use crate::cidr::Cidr;
use crate::env::service_env;
use crate::plan::{Plan, Pod};
use crate::state::State;

/// The label naming a pod, which its generated Sidecar selects.
pub const POD_LABEL: &str = "meshwork.io/pod";

/// The pod range used when the requested one is not on loopback.
pub const DEFAULT_RANGE: Cidr = Cidr {
    network: Ipv4Addr::new(127, 1, 0, 0),
    prefix: 24,
};

/// What explicit mode tells the user, once.
pub const NOTICE: &str = "explicit mode: no network namespaces and no iptables. \
Each pod gets loopback addresses (pod, app, one per service); its sidecar \
listens on them and workloads reach their dependencies only through the \
<NAME>_SERVICE_HOST/<NAME>_SERVICE_PORT variables (each service its own \
address in each pod, served by the pod's sidecar). DNS names like `order` \
do not resolve to the mesh.";

/// A pod's loopback addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addrs {
    /// The sidecar's inbound side, the registry's endpoint address.
    pub pod: Ipv4Addr,
    /// Where the application listens.
    pub app: Ipv4Addr,
}

impl Addrs {
    /// Where this pod reaches the `k`-th service of the plan (its sidecar's
    /// egress listeners for that service): `127.(P+2+k).M.n`; `None` when
    /// that passes 127.255 ([`check_room`] refuses such plans).
    pub fn egress(&self, k: usize) -> Option<Ipv4Addr> {
        let [a, b, c, d] = self.pod.octets();
        let second = u8::try_from(usize::from(b) + 2 + k).ok()?;
        Some(Ipv4Addr::new(a, second, c, d))
    }

    /// The pod's egress addresses for `services` services, for display
    /// (`127.3.0.2-127.5.0.2`).
    pub fn egress_span(&self, services: usize) -> String {
        match (
            self.egress(0),
            services.checked_sub(1).and_then(|k| self.egress(k)),
        ) {
            (Some(first), Some(last)) if first != last => format!("{first}-{last}"),
            (Some(first), Some(_)) => first.to_string(),
            _ => String::new(),
        }
    }
}

/// Whether the pod range leaves room for an egress address per service
/// (second octets up to 255), with an error that says what to change.
pub fn check_room(range: Cidr, services: usize) -> Result<(), String> {
    let p = usize::from(range.network.octets()[1]);
    if p + 1 + services > 255 {
        return Err(format!(
            "explicit mode gives each of the {services} services its own address \
             127.<{}+k>.x.y in every pod, which passes 127.255 with pod range {range}: \
             use a pod range with a lower second octet (--pod-cidr 127.1.0.0/24 leaves room for 253)",
            p + 2
        ));
    }
    Ok(())
}

/// The pod range for explicit mode: `requested` when it lies in
/// 127.0.0.0/8 with room for the app and egress ranges above it,
/// else [`DEFAULT_RANGE`].
pub fn pod_range(requested: Cidr) -> Result<Cidr, String> {
    let [a, b, ..] = requested.network.octets();
    if a != 127 {
        return Ok(DEFAULT_RANGE);
    }
    if b == 0 || b > 253 || requested.prefix < 16 {
        return Err(format!(
            "explicit mode needs a pod range like 127.1.0.0/24 (second octet 1-253, prefix /16 or longer), not {requested}"
        ));
    }
    Ok(requested)
}

/// The addresses of the pod whose pod address is `pod`.
pub fn addrs(pod: Ipv4Addr) -> Addrs {
    let [a, b, c, d] = pod.octets();
    Addrs {
        pod,
        app: Ipv4Addr::new(a, b.saturating_add(1), c, d),
    }
}

/// Adds [`POD_LABEL`] to every pod's labels (its proxy's and endpoints').
pub fn label_pods(plan: &mut Plan) {
    for p in &mut plan.pods {
        p.labels.insert(POD_LABEL.into(), p.name.clone());
    }
}

/// Istio's protocol name for a Sidecar port (none for detected ports).
fn protocol_name(p: Protocol) -> Option<&'static str> {
    (!p.is_unsupported()).then(|| p.name())
}

/// One egress listener of every pod's Sidecar: a port of the `index`-th
/// service, bound at that service's egress address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Egress {
    /// The service's place in the plan (its egress address's `k`).
    pub index: usize,
    /// The Sidecar `hosts` entry naming it: `<namespace>/<fqdn>`.
    pub host: String,
    /// The service port.
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
}

/// Every service port of the plan (UDP left out), in plan order.
pub fn egress_listeners(plan: &Plan, registry: &Registry) -> Vec<Egress> {
    let mut out = Vec::new();
    for (index, s) in plan.services.iter().enumerate() {
        let fqdn = format!("{}.{}.svc.{DOMAIN_SUFFIX}", s.name, s.namespace);
        let Some(svc) = registry.service(&fqdn) else {
            continue;
        };
        for p in svc.ports.iter().filter(|p| p.protocol != Protocol::Udp) {
            out.push(Egress {
                index,
                host: format!("{}/{fqdn}", s.namespace),
                port: p.port,
                protocol: p.protocol,
            });
        }
    }
    out
}

/// The pod's inbound ports: the target ports of the services that select
/// it (from the registry's endpoints at its pod address), with protocol.
pub fn ingress_ports(registry: &Registry, pod: &Pod) -> BTreeMap<u16, Protocol> {
    let ip = pod.ip.to_string();
    let mut out = BTreeMap::new();
    for svc in registry.services() {
        for p in &svc.ports {
            for e in registry.endpoints(&svc.hostname, p.port) {
                if e.address == ip && p.protocol != Protocol::Udp {
                    out.entry(e.port).or_insert(p.protocol);
                }
            }
        }
    }
    out
}

fn port_json(number: u16, protocol: Protocol, kind: &str) -> serde_json::Value {
    let mut port = serde_json::json!({
        "number": number,
        "name": format!("{kind}-{number}"),
    });
    if let Some(name) = protocol_name(protocol) {
        port["protocol"] = name.into();
    }
    port
}

/// The Sidecar resource of one pod, as JSON (which is YAML).
pub fn sidecar(
    pod: &Pod,
    a: &Addrs,
    ingress: &BTreeMap<u16, Protocol>,
    egress: &[Egress],
) -> serde_json::Value {
    let ingress: Vec<_> = ingress
        .iter()
        .map(|(&port, &proto)| {
            serde_json::json!({
                "port": port_json(port, proto, "in"),
                "bind": a.pod.to_string(),
                "defaultEndpoint": format!("{}:{port}", a.app),
                "captureMode": "NONE",
            })
        })
        .collect();
    let egress: Vec<_> = egress
        .iter()
        .filter_map(|e| {
            Some(serde_json::json!({
                "port": port_json(e.port, e.protocol, "out"),
                "bind": a.egress(e.index)?.to_string(),
                "captureMode": "NONE",
                "hosts": [e.host],
            }))
        })
        .collect();
    let mut spec = serde_json::json!({
        "workloadSelector": {"labels": {POD_LABEL: pod.name}},
        "egress": egress,
        // Without capture, passing unknown destinations through would
        // loop back into the listener itself.
        "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
    });
    if !ingress.is_empty() {
        spec["ingress"] = ingress.into();
    }
    serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {
            "name": format!("explicit-{}", pod.name),
            "namespace": pod.namespace,
            "labels": {"app.kubernetes.io/managed-by": "meshwork-up"},
        },
        "spec": spec,
    })
}

/// Writes every pod's Sidecar to `dir/sidecars.yaml` (one document each).
pub fn write_sidecars(
    plan: &Plan,
    registry: &Registry,
    dir: &Path,
) -> std::io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let egress = egress_listeners(plan, registry);
    let mut text =
        String::from("# Generated by `meshwork up` (explicit mode): one Sidecar per pod.\n");
    for pod in plan.pods.iter().filter(|p| p.sidecar) {
        let doc = sidecar(pod, &addrs(pod.ip), &ingress_ports(registry, pod), &egress);
        text.push_str("---\n");
        text.push_str(&serde_json::to_string_pretty(&doc).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    let path = dir.join("sidecars.yaml");
    let tmp = dir.join("sidecars.yaml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// A container's environment in explicit mode: the downward API's with
/// the app address, `BIND` (where the demo app listens), and for every
/// Service of the mesh the Kubernetes variables pointing at that service's
/// egress address in this pod (services of the pod's namespace win a name
/// clash).
pub fn container_env(pod: &Pod, a: &Addrs, plan: &Plan) -> Vec<(String, String)> {
    let mut env = vec![
        ("POD_NAME".to_string(), pod.name.clone()),
        ("POD_NAMESPACE".to_string(), pod.namespace.clone()),
        ("POD_IP".to_string(), a.app.to_string()),
        ("INSTANCE_IP".to_string(), a.app.to_string()),
        ("BIND".to_string(), a.app.to_string()),
        ("SERVICE_ACCOUNT".to_string(), pod.service_account.clone()),
        ("MESHWORK_EXPLICIT".to_string(), "1".to_string()),
    ];
    let mut seen = std::collections::BTreeSet::new();
    let (own, others): (Vec<_>, Vec<_>) = plan
        .services
        .iter()
        .enumerate()
        .partition(|(_, s)| s.namespace == pod.namespace);
    for (k, s) in own.into_iter().chain(others) {
        if let Some(host) = a.egress(k)
            && seen.insert(s.name.clone())
        {
            env.extend(service_env(&s.name, &host.to_string(), &s.ports));
        }
    }
    env
}

/// The pod table of `describe` in explicit mode.
pub fn describe_pods(state: &State) -> String {
    let mut out = format!(
        "{:<28} {:<12} {:<16} {:<16} {}\n",
        "POD", "NAMESPACE", "POD ADDRESS", "APP ADDRESS", "SERVICE ADDRESSES (*_SERVICE_HOST)"
    );
    for p in &state.pods {
        out.push_str(&format!(
            "{:<28} {:<12} {:<16} {:<16} {}\n",
            p.name, p.namespace, p.ip, p.app, p.egress
        ));
    }
    out
}

/// The service table of `describe` in explicit mode: how workloads find
/// each service (the virtual addresses are names only here): in the pod
/// `127.P.x.y`, service `k` is `127.(P+2+k).x.y`.
pub fn describe_services(plan: &Plan) -> String {
    let mut out = format!(
        "{:<28} {:<12} {:<12} {:<14} {}\n",
        "SERVICE", "NAMESPACE", "PORTS", "IN POD x.y", "REACHED AT"
    );
    let first = plan.pods.first().map(|p| addrs(p.ip));
    for (k, s) in plan.services.iter().enumerate() {
        let ports: Vec<String> = s.ports.iter().map(|(_, p)| p.to_string()).collect();
        let var = s.name.to_ascii_uppercase().replace(['-', '.'], "_");
        let at = first
            .and_then(|a| a.egress(k))
            .map(|e| format!("{}.{}.x.y", e.octets()[0], e.octets()[1]))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<28} {:<12} {:<12} {:<14} ${var}_SERVICE_HOST:${var}_SERVICE_PORT\n",
            s.name,
            s.namespace,
            ports.join(","),
            at
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFESTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: order}
spec:
  selector: {app: order}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: db-main}
spec:
  selector: {app: db}
  ports: [{name: tcp, port: 5432}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: order}
spec:
  selector: {matchLabels: {app: order}}
  template:
    metadata: {labels: {app: order}}
    spec:
      containers: [{name: app, command: [meshwork, demo-app, order], ports: [{containerPort: 8080}]}]
"#;

    fn setup() -> (Plan, Registry) {
        let loaded = meshwork_config::load_str("m.yaml".as_ref(), MANIFESTS);
        let mut plan = crate::plan::plan(
            &loaded.resources,
            DEFAULT_RANGE,
            "10.96.0.0/24".parse().unwrap(),
            &mut Vec::new(),
        )
        .unwrap();
        label_pods(&mut plan);
        let instances = crate::platform::PlatformFile::from_plan(&plan).instances;
        let registry = Registry::build(&loaded.resources, &instances);
        (plan, registry)
    }

    #[test]
    fn addresses_per_pod() {
        let a = addrs(Ipv4Addr::new(127, 1, 0, 2));
        assert_eq!(a.app, Ipv4Addr::new(127, 2, 0, 2));
        assert_eq!(a.egress(0), Some(Ipv4Addr::new(127, 3, 0, 2)));
        assert_eq!(a.egress(1), Some(Ipv4Addr::new(127, 4, 0, 2)));
        assert_eq!(a.egress(252), Some(Ipv4Addr::new(127, 255, 0, 2)));
        assert_eq!(a.egress(253), None);
        assert_eq!(a.egress_span(3), "127.3.0.2-127.5.0.2");
        assert_eq!(a.egress_span(1), "127.3.0.2");
        assert_eq!(a.egress_span(0), "");
        // A /16 pod range: the last two octets name the pod.
        let b = addrs(Ipv4Addr::new(127, 7, 3, 9));
        assert_eq!(b.egress(2), Some(Ipv4Addr::new(127, 11, 3, 9)));
        assert_eq!(check_room(DEFAULT_RANGE, 253), Ok(()));
        let full = check_room(DEFAULT_RANGE, 254).unwrap_err();
        assert!(
            full.contains("254 services") && full.contains("--pod-cidr"),
            "{full}"
        );
        assert!(check_room("127.200.0.0/24".parse().unwrap(), 60).is_err());
        assert_eq!(
            pod_range("10.88.0.0/24".parse().unwrap()),
            Ok(DEFAULT_RANGE)
        );
        let mine: Cidr = "127.5.9.0/24".parse().unwrap();
        assert_eq!(pod_range(mine), Ok(mine));
        assert!(pod_range("127.254.0.0/24".parse().unwrap()).is_err());
        assert!(pod_range("127.0.0.0/8".parse().unwrap()).is_err());
    }

    #[test]
    fn sidecar_per_pod_with_ingress_to_the_app_and_egress_per_port() {
        let (plan, registry) = setup();
        let pod = &plan.pods[0];
        assert_eq!(pod.ip, Ipv4Addr::new(127, 1, 0, 2));
        assert_eq!(pod.labels[POD_LABEL], "order-0");
        let doc = sidecar(
            pod,
            &addrs(pod.ip),
            &ingress_ports(&registry, pod),
            &egress_listeners(&plan, &registry),
        );
        let text = serde_json::to_string(&doc).unwrap();
        // It is a valid Istio Sidecar.
        let loaded = meshwork_config::load_str("s.yaml".as_ref(), &text);
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        assert_eq!(loaded.resources.len(), 1);
        let spec = &doc["spec"];
        assert_eq!(spec["workloadSelector"]["labels"][POD_LABEL], "order-0");
        let ingress = &spec["ingress"][0];
        assert_eq!(ingress["port"]["number"], 8080, "the target port");
        assert_eq!(ingress["port"]["protocol"], "HTTP");
        assert_eq!(ingress["bind"], "127.1.0.2");
        assert_eq!(ingress["defaultEndpoint"], "127.2.0.2:8080");
        // One egress listener per (service, port), at the service's own
        // address in this pod, importing only that service.
        let egress = spec["egress"].as_array().unwrap();
        assert_eq!(egress.len(), 2, "{egress:?}");
        for (k, s) in plan.services.iter().enumerate() {
            let e = egress
                .iter()
                .find(|e| e["hosts"][0] == format!("default/{}.default.svc.cluster.local", s.name))
                .unwrap_or_else(|| panic!("no listener for {}: {egress:?}", s.name));
            assert_eq!(e["bind"], format!("127.{}.0.2", 3 + k));
            assert_eq!(e["port"]["number"], s.ports[0].1);
            assert_eq!(e["captureMode"], "NONE");
            assert_eq!(e["hosts"].as_array().unwrap().len(), 1);
        }
        let order = egress.iter().find(|e| e["port"]["number"] == 80).unwrap();
        assert_eq!(order["port"]["protocol"], "HTTP");
        let db = egress.iter().find(|e| e["port"]["number"] == 5432).unwrap();
        assert_eq!(db["port"]["protocol"], "TCP");
    }

    #[test]
    fn workloads_find_services_at_their_egress_address() {
        let (plan, _) = setup();
        let pod = &plan.pods[0];
        let env: BTreeMap<_, _> = container_env(pod, &addrs(pod.ip), &plan)
            .into_iter()
            .collect();
        let k = |name: &str| plan.services.iter().position(|s| s.name == name).unwrap();
        let order = format!("127.{}.0.2", 3 + k("order"));
        let db = format!("127.{}.0.2", 3 + k("db-main"));
        assert_ne!(order, db, "each service its own address");
        assert_eq!(env["ORDER_SERVICE_HOST"], order);
        assert_eq!(env["ORDER_SERVICE_PORT"], "80");
        assert_eq!(env["ORDER_PORT"], format!("tcp://{order}:80"));
        assert_eq!(env["DB_MAIN_SERVICE_HOST"], db);
        assert_eq!(env["DB_MAIN_SERVICE_PORT"], "5432");
        assert_eq!(env["MESHWORK_EXPLICIT"], "1");
        assert_eq!(env["BIND"], "127.2.0.2");
    }
}
