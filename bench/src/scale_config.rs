//! The control-plane scale configuration, shared by `control-scale` (the
//! end-to-end benchmark) and `meshwork-control`'s `change` bench (the
//! control plane's own work per change, in process): 1,000 ServiceEntries
//! with 10 endpoints each over 4 namespaces, one VirtualService file that
//! the benchmarks rewrite, and the fleet of 100 workloads × 10 replicas.
//!
//! Included with `#[path]` (the bench package has no library target), so
//! every item here need not be used by every includer.
#![allow(dead_code)]

use std::fmt::Write as _;

/// Namespaces the services and proxies are spread over.
pub const NAMESPACES: usize = 4;
/// Endpoints per ServiceEntry.
pub const ENDPOINTS: usize = 10;

/// Writes `services.yaml` (`services` ServiceEntries) and `vs.yaml` into `dir`.
pub fn write_config(dir: &std::path::Path, services: usize) {
    let mut yaml = String::new();
    for i in 0..services {
        let ns = i % NAMESPACES;
        let _ = write!(
            yaml,
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: svc-{i}\n  namespace: ns-{ns}\nspec:\n  hosts: [svc-{i}.ns-{ns}.svc.cluster.local]\n  addresses: [240.{}.{}.1]\n  ports: [{{number: 8080, name: http, protocol: HTTP}}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  endpoints:\n",
            i / 256,
            i % 256
        );
        for e in 0..ENDPOINTS {
            let _ = writeln!(
                yaml,
                "  - {{address: 10.{}.{}.{}, labels: {{app: svc-{i}, version: v1}}}}",
                100 + i / 256,
                i % 256,
                e + 1
            );
        }
        yaml.push_str("---\n");
    }
    std::fs::write(dir.join("services.yaml"), yaml).expect("write services.yaml");
    write_vs(dir, 100);
}

/// Rewrites `vs.yaml` (atomically, by rename): svc-0 split `weight0` /
/// `100 - weight0` between svc-0 and svc-4.
pub fn write_vs(dir: &std::path::Path, weight0: u32) {
    let vs = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: svc-0\n  namespace: ns-0\nspec:\n  hosts: [svc-0.ns-0.svc.cluster.local]\n  http:\n  - route:\n    - destination: {{host: svc-0.ns-0.svc.cluster.local}}\n      weight: {weight0}\n    - destination: {{host: svc-4.ns-0.svc.cluster.local}}\n      weight: {}\n",
        100 - weight0
    );
    let tmp = dir.join(".vs.tmp");
    std::fs::write(&tmp, vs).expect("write vs.yaml");
    std::fs::rename(tmp, dir.join("vs.yaml")).expect("rename vs.yaml");
}

/// Proxy `p` of the fleet: workload `wl-<p/10>` in `ns-<workload % 4>`, as
/// `(node id, namespace, workload, app label)`.
pub fn proxy(p: usize) -> (String, String, String, String) {
    let workload = p / 10;
    let ns = workload % NAMESPACES;
    (
        format!(
            "sidecar~10.200.{}.{}~wl-{workload}-{p}.ns-{ns}~ns-{ns}.svc.cluster.local",
            p / 256,
            p % 256
        ),
        format!("ns-{ns}"),
        format!("wl-{workload}"),
        format!("wl-{workload}"),
    )
}
