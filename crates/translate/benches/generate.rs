//! Generating one sidecar's resources in a mesh of 1,000 services with 10
//! endpoints each (10 namespaces, a DestinationRule with two subsets and a
//! weighted VirtualService for every tenth service).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use meshwork_registry::{Registry, WorkloadInstance};
use meshwork_translate::{MeshSnapshot, ProxyKind, ProxyMeta, generate};

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
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
