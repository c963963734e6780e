//! Generating one sidecar's resources in a mesh of 1,000 services with 10
//! endpoints each (10 namespaces, a DestinationRule with two subsets and a
//! weighted VirtualService for every tenth service), and every proxy's of
//! 1,000 (100 workloads x 10 replicas in 4 namespaces) with a shared
//! [`GenerationCache`].

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use meshwork_registry::{Registry, WorkloadInstance};
use meshwork_translate::{
    GenerationCache, MeshSnapshot, ProxyKind, ProxyMeta, generate, generate_cached,
};

const SERVICES: usize = 1_000;
const ENDPOINTS: usize = 10;

fn mesh() -> (Vec<meshwork_config::Resource>, Vec<WorkloadInstance>) {
    let mut yaml = String::new();
    let mut instances = Vec::new();
    for i in 0..SERVICES {
        let ns = format!("ns{}", i % 10);
        let _ = write!(
            yaml,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc{i}, namespace: {ns}}}\nspec:\n  clusterIP: 10.96.{}.{}\n  selector: {{app: svc{i}}}\n  ports: [{{name: http, port: 8080}}, {{name: tcp-admin, port: 9000}}]\n",
            i / 250,
            i % 250 + 1
        );
        if i % 10 == 0 {
            let _ = write!(
                yaml,
                "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc{i}, namespace: {ns}}}\nspec:\n  host: svc{i}\n  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc{i}, namespace: {ns}}}\nspec:\n  hosts: [svc{i}]\n  http:\n  - match: [{{headers: {{x-canary: {{exact: \"1\"}}}}}}]\n    route: [{{destination: {{host: svc{i}, subset: v2}}}}]\n  - route: [{{destination: {{host: svc{i}, subset: v1}}, weight: 90}}, {{destination: {{host: svc{i}, subset: v2}}, weight: 10}}]\n"
            );
        }
        for e in 0..ENDPOINTS {
            let n = (i * ENDPOINTS + e) as u32;
            instances.push(WorkloadInstance {
                name: format!("svc{i}-{e}"),
                namespace: ns.clone(),
                workload: format!("svc{i}-v{}", e % 2 + 1),
                labels: BTreeMap::from([
                    ("app".to_string(), format!("svc{i}")),
                    ("version".to_string(), format!("v{}", e % 2 + 1)),
                ]),
                address: IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + n)),
                service_account: format!("svc{i}"),
                has_sidecar: true,
            });
        }
    }
    let loaded = meshwork_config::load_str("bench.yaml".as_ref(), &yaml);
    assert_eq!(
        loaded.resources.len(),
        SERVICES + 2 * SERVICES / 10,
        "{:?}",
        loaded.diagnostics.first()
    );
    (loaded.resources, instances)
}

/// 100 workloads (`svc<s>-v1` of a service in ns0..ns3) x 10 replicas, at
/// the addresses of that service's endpoints.
fn fleet(instances: &[WorkloadInstance]) -> Vec<ProxyMeta> {
    let mut out = Vec::new();
    for w in 0..100 {
        let s = w * 10 + w % 4;
        for e in 0..ENDPOINTS {
            let i = &instances[s * ENDPOINTS + e];
            out.push(ProxyMeta {
                node_id: format!(
                    "sidecar~{}~svc{s}-v1-{e}.{1}~{1}.svc.cluster.local",
                    i.address, i.namespace
                ),
                kind: ProxyKind::Sidecar,
                ip: Some(i.address),
                namespace: i.namespace.clone(),
                workload: format!("svc{s}-v1"),
                labels: BTreeMap::from([
                    ("app".to_string(), format!("svc{s}")),
                    ("version".to_string(), "v1".to_string()),
                ]),
                service_account: format!("svc{s}"),
                locality: String::new(),
                vhds: false,
            });
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let (resources, instances) = mesh();
    let proxy = ProxyMeta {
        node_id: "sidecar~10.1.0.0~svc0-0.ns0~ns0.svc.cluster.local".into(),
        kind: ProxyKind::Sidecar,
        ip: Some(instances[0].address),
        namespace: "ns0".into(),
        workload: instances[0].workload.clone(),
        labels: instances[0].labels.clone(),
        service_account: "svc0".into(),
        locality: String::new(),
        vhds: false,
    };
    c.bench_function("registry_and_snapshot_1000x10", |b| {
        b.iter(|| {
            let registry = Registry::build(&resources, &instances);
            MeshSnapshot::new(1, resources.clone(), registry)
        })
    });
    let snap = MeshSnapshot::new(
        1,
        resources.clone(),
        Registry::build(&resources, &instances),
    );
    let g = generate(&snap, &proxy);
    eprintln!(
        "one sidecar: {} listeners, {} routes, {} clusters, {} endpoint sets",
        g.listeners.len(),
        g.routes.len(),
        g.clusters.len(),
        g.endpoints.len()
    );
    c.bench_function("generate_sidecar_1000x10", |b| {
        b.iter(|| generate(&snap, &proxy))
    });
    let mut grpc = proxy.clone();
    grpc.kind = ProxyKind::Proxyless;
    c.bench_function("generate_proxyless_1000x10", |b| {
        b.iter(|| generate(&snap, &grpc))
    });
    let proxies = fleet(&instances);
    let namespaces: std::collections::BTreeSet<&str> =
        proxies.iter().map(|p| p.namespace.as_str()).collect();
    assert_eq!((proxies.len(), namespaces.len()), (1_000, 4));
    c.bench_function("generate_cached_1000_proxies_1000x10", |b| {
        b.iter(|| {
            let cache = GenerationCache::new();
            proxies
                .iter()
                .map(|p| generate_cached(&snap, p, &cache).clusters.len())
                .sum::<usize>()
        })
    });
    let cache = GenerationCache::new();
    for p in &proxies {
        generate_cached(&snap, p, &cache);
    }
    c.bench_function("generate_cached_warm_sidecar_1000x10", |b| {
        b.iter(|| generate_cached(&snap, &proxies[0], &cache))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
