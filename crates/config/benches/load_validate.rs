//! Load and validate 10,000 generated resources (a mix of every networking
//! and security kind) from one multi-document YAML stream.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use meshwork_config::load_str;

/// A stream of `n` resources, cycling through the common kinds.
fn generate(n: usize) -> String {
    let mut s = String::with_capacity(n * 400);
    for i in 0..n {
        let ns = format!("ns{}", i % 50);
        let doc = match i % 5 {
            0 => format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs{i}\n  namespace: {ns}\nspec:\n  hosts: [svc{i}.{ns}.svc.cluster.local]\n  http:\n  - match:\n    - uri: {{prefix: /api/v{i}}}\n      headers:\n        x-user: {{regex: \"^user-[0-9]+$\"}}\n    timeout: 2s\n    retries: {{attempts: 3, perTryTimeout: 500ms, retryOn: \"5xx,reset\"}}\n    route:\n    - destination: {{host: svc{i}, subset: v1}}\n      weight: 90\n    - destination: {{host: svc{i}, subset: v2}}\n      weight: 10\n"
            ),
            1 => format!(
                "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: dr{i}\n  namespace: {ns}\nspec:\n  host: svc{i}\n  trafficPolicy:\n    connectionPool:\n      tcp: {{maxConnections: 100, connectTimeout: 30ms}}\n    outlierDetection: {{consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m}}\n    tls: {{mode: ISTIO_MUTUAL}}\n  subsets:\n  - name: v1\n    labels: {{version: v1}}\n  - name: v2\n    labels: {{version: v2}}\n"
            ),
            2 => format!(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: se{i}\n  namespace: {ns}\nspec:\n  hosts: [ext{i}.example.com]\n  location: MESH_EXTERNAL\n  ports:\n  - {{number: 443, name: https, protocol: TLS}}\n  resolution: DNS\n"
            ),
            3 => format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: ap{i}\n  namespace: {ns}\nspec:\n  selector:\n    matchLabels: {{app: svc{i}}}\n  action: ALLOW\n  rules:\n  - from:\n    - source: {{principals: [\"cluster.local/ns/{ns}/sa/client\"]}}\n    to:\n    - operation: {{methods: [GET], paths: [\"/api/*\"]}}\n"
            ),
            _ => format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc{i}\n  namespace: {ns}\n  labels: {{app: svc{i}}}\nspec:\n  selector: {{app: svc{i}}}\n  ports:\n  - {{name: http, port: 9080}}\n"
            ),
        };
        s.push_str("---\n");
        s.push_str(&doc);
    }
    s
}

fn bench(c: &mut Criterion) {
    let text = generate(10_000);
    // Check once that the generated stream is all valid, so the benchmark
    // measures the happy path it claims to.
    let loaded = load_str(Path::new("bench.yaml"), &text);
    assert_eq!(
        loaded.resources.len(),
        10_000,
        "{:?}",
        loaded.diagnostics.first()
    );
    let mut group = c.benchmark_group("config");
    group.sample_size(10);
    group.bench_function("load_validate_10k", |b| {
        b.iter(|| load_str(Path::new("bench.yaml"), black_box(&text)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
