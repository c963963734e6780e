//! The control plane's own CPU per configuration change, in process: the
//! scale configuration of `bench/run-scale` (1,000 ServiceEntries × 10
//! endpoints, 1,000 sidecars in 4 namespaces), one VirtualService file
//! rewritten per round. Per round it reports, as CPU time of this thread:
//! the snapshot rebuild (load + registry + indexes), and translate plus the
//! conversion to shared xDS sets for all 1,000 proxies (what every stream
//! asks the source for after a change). The xDS server's diff and encoding
//! are not included (`bench/run-scale` measures the whole process).
//!
//! `cargo bench -p meshwork-control --bench change [-- ROUNDS] [--full]
//! [--vhds]`; `--vhds`: the proxies ask for VHDS (`MESHWORK_VHDS`), as
//! Meshwork's sidecar does over delta xDS;
//! `--full` measures the way before incremental translation: snapshots
//! from `SnapshotBuilder::build` (not derived from the current one, so
//! translate starts over) plus one registry build per change (`build`
//! itself now keeps an unchanged registry).

#[path = "../../../bench/src/scale_config.rs"]
mod scale_config;

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Struct, Value};
use meshwork_control::{SnapshotBuilder, SnapshotStore, TranslateSource};
use meshwork_registry::StaticPlatform;
use meshwork_xds::server::ResourceSource;

const SERVICES: usize = 1_000;
const PROXIES: usize = 1_000;

/// This thread's CPU time so far (`/proc/thread-self/schedstat`, ns).
fn cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The node a proxy of the fleet sends (as `meshwork proxy` builds it).
fn node(p: usize, vhds: bool) -> Node {
    let (id, namespace, workload, app) = scale_config::proxy(p);
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.to_string())),
    };
    let labels = Struct {
        fields: [("app".to_string(), s(&app))].into_iter().collect(),
    };
    let vhds = vhds.then(|| ("MESHWORK_VHDS".to_string(), s("true")));
    let fields = [
        ("NAMESPACE".to_string(), s(&namespace)),
        ("WORKLOAD_NAME".to_string(), s(&workload)),
        ("SERVICE_ACCOUNT".to_string(), s("default")),
        (
            "LABELS".to_string(),
            Value {
                kind: Some(Kind::StructValue(labels)),
            },
        ),
    ];
    Node {
        id,
        metadata: Some(Struct {
            fields: fields.into_iter().chain(vhds).collect(),
        }),
        user_agent_name: "meshwork".into(),
        ..Default::default()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    let full = std::env::args().any(|a| a == "--full");
    let vhds = std::env::args().any(|a| a == "--vhds");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let dir = tempfile::tempdir().expect("tempdir");
    scale_config::write_config(dir.path(), SERVICES);
    let builder = SnapshotBuilder::new(
        vec![dir.path().to_path_buf()],
        Arc::new(StaticPlatform::default()),
    );
    let t = cpu();
    let (first, report) = builder.build(1);
    println!("first build: {:.1} ms", ms(cpu() - t));
    let store = SnapshotStore::new(first, report.diagnostics);
    let source = TranslateSource::new(store.clone());
    let nodes: Vec<Node> = (0..PROXIES).map(|p| node(p, vhds)).collect();
    let t = cpu();
    for n in &nodes {
        source.resources(n);
    }
    println!("full translate, {PROXIES} proxies: {:.1} ms", ms(cpu() - t));
    let (mut builds, mut translates) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        scale_config::write_vs(dir.path(), if round % 2 == 0 { 50 } else { 90 });
        let t0 = cpu();
        let version = round as u64 + 2;
        let (snap, report) = if full {
            let built = builder.build(version);
            std::hint::black_box(meshwork_registry::Registry::build(built.0.resources(), &[]));
            built
        } else {
            builder.build_next(version, &store.current())
        };
        let t1 = cpu();
        store.publish(snap, report.diagnostics);
        for n in &nodes {
            source.resources(n);
        }
        let t2 = cpu();
        builds.push(ms(t1 - t0));
        translates.push(ms(t2 - t1));
        println!(
            "change {round}: rebuild {:.1} ms, translate + convert {:.1} ms",
            ms(t1 - t0),
            ms(t2 - t1)
        );
    }
    let (b, t) = (median(builds), median(translates));
    println!(
        "median over {rounds} changes: rebuild {b:.1} ms, translate + convert {t:.1} ms, total {:.1} ms",
        b + t
    );
}
