//! Incremental translation equals translation from scratch: a sequence of
//! configuration edits, each snapshot derived from the one before
//! (`MeshSnapshot::next`, the registry shared while its inputs are
//! unchanged, as the control plane builds them), one `GenerationCache`
//! kept across all of them, and after every edit each proxy class's
//! cached result compared with `generate` on the same snapshot. Where the
//! edit touched VirtualServices only, what the change cannot affect must
//! also be the very same maps as before (kept, not re-translated).

mod common;

use std::sync::Arc;

use meshwork_config::Resource;
use meshwork_registry::{Registry, WorkloadInstance};
use meshwork_translate::{
    Generated, GenerationCache, MeshSnapshot, ProxyKind, ProxyMeta, generate, generate_cached,
};

/// Every sidecar of the fixtures (SotW and VHDS), one without labels, and
/// proxyless clients in two namespaces.
fn proxies(instances: &[WorkloadInstance]) -> Vec<ProxyMeta> {
    let mut out = Vec::new();
    for i in instances {
        let p = common::sidecar(std::slice::from_ref(i), &i.workload);
        let mut vhds = p.clone();
        vhds.vhds = true;
        vhds.node_id.push_str("-vhds");
        out.extend([p, vhds]);
    }
    let mut bare = common::proxyless("default");
    bare.kind = ProxyKind::Sidecar;
    bare.labels.clear();
    out.extend([
        bare,
        common::proxyless("default"),
        common::proxyless("elsewhere"),
    ]);
    out
}

const TCP_RATINGS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings-tcp, namespace: default}
spec:
  hosts: [ratings]
  tcp:
  - route: [{destination: {host: ratings, subset: v1}}]
";

const SOURCE_LABELS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details, namespace: default}
spec:
  hosts: [details]
  http:
  - match: [{sourceLabels: {app: productpage}}]
    route: [{destination: {host: details, subset: v2}}]
  - route: [{destination: {host: details, subset: v1}}]
";

const WILDCARD: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: everything, namespace: default}
spec:
  hosts: ['*.default.svc.cluster.local']
  http:
  - route: [{destination: {host: productpage}}]
";

const LOCAL_ONLY: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details-local, namespace: elsewhere}
spec:
  hosts: [details.default.svc.cluster.local]
  exportTo: ['.']
  http:
  - route: [{destination: {host: details.default.svc.cluster.local, subset: v2}}]
";

const SIDECAR: &str = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress: [{hosts: ['./*']}]
";

/// The edits: Bookinfo sample files plus extra YAML, and whether the edit
/// from the step before touches VirtualServices only (so parts must be kept).
const STEPS: &[(&[&str], &str, bool)] = &[
    (&[], "", false),
    (&["virtual-service-reviews-80-20.yaml"], "", true),
    (&["virtual-service-reviews-90-10.yaml"], "", true),
    (&["virtual-service-reviews-90-10.yaml"], TCP_RATINGS, true),
    (
        &[
            "virtual-service-reviews-90-10.yaml",
            "virtual-service-ratings-test-abort.yaml",
        ],
        LOCAL_ONLY,
        true,
    ),
    (&["virtual-service-all-v1.yaml"], LOCAL_ONLY, true),
    (&["virtual-service-all-v1.yaml"], SOURCE_LABELS, false),
    (&["virtual-service-all-v1.yaml"], WILDCARD, false),
    (&["virtual-service-all-v1.yaml"], "", false),
    (&["virtual-service-all-v1.yaml"], SIDECAR, false),
    (&["virtual-service-all-v1.yaml"], "", false),
    (&["virtual-service-reviews-v3.yaml"], "", true),
    (&[], "", true),
];

fn registry_kind(r: &Resource) -> bool {
    use meshwork_config::Kind;
    matches!(
        r.kind,
        Kind::ServiceEntry
            | Kind::WorkloadEntry
            | Kind::WorkloadGroup
            | Kind::Service
            | Kind::Deployment
    )
}

fn check(
    snap: &MeshSnapshot,
    proxies: &[ProxyMeta],
    cache: &GenerationCache,
    step: usize,
) -> Vec<Generated> {
    proxies
        .iter()
        .map(|p| {
            let got = generate_cached(snap, p, cache);
            assert!(
                got == generate(snap, p),
                "step {step}: {} differs from a full translation",
                p.node_id
            );
            got
        })
        .collect()
}

#[test]
fn a_sequence_of_edits_translates_as_from_scratch() {
    let base = ["bookinfo.yaml", "destination-rule-all.yaml"];
    let (first, instances) = common::snapshot(common::load(&base, ""));
    let proxies = proxies(&instances);
    let cache = GenerationCache::new();
    let mut snap = first;
    let mut before = check(&snap, &proxies, &cache, 0);
    let mut kept_vhosts = 0;
    for (step, (samples, extra, vs_only)) in STEPS.iter().enumerate().skip(1) {
        let files: Vec<&str> = base.iter().chain(samples.iter()).copied().collect();
        let resources = common::load(&files, extra);
        let unchanged_inputs = resources
            .iter()
            .filter(|r| registry_kind(r))
            .eq(snap.resources().iter().filter(|r| registry_kind(r)));
        let registry = if unchanged_inputs {
            snap.shared_registry().clone()
        } else {
            Arc::new(Registry::build(&resources, &instances))
        };
        let next = snap.next(step as u64 + 1, resources, registry);
        let after = check(&next, &proxies, &cache, step);
        let kept = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b.clusters.shares(&a.clusters) && b.endpoints.shares(&a.endpoints))
            .count();
        if *vs_only {
            assert_eq!(
                kept,
                proxies.len(),
                "step {step}: clusters kept for every proxy"
            );
            // VHDS virtual hosts of untouched hosts keep their identity.
            kept_vhosts += before
                .iter()
                .zip(&after)
                .flat_map(|(b, a)| {
                    a.virtual_hosts
                        .iter()
                        .filter(|(k, v)| b.virtual_hosts.get(*k).is_some_and(|o| Arc::ptr_eq(o, v)))
                })
                .count();
        } else {
            assert_eq!(kept, 0, "step {step}: a full translation shares nothing");
        }
        // Asked again, the same snapshot gives the same maps.
        for (p, a) in proxies.iter().zip(&after) {
            assert!(generate_cached(&next, p, &cache).routes.shares(&a.routes));
        }
        snap = next;
        before = after;
    }
    assert!(kept_vhosts > 0, "no VHDS virtual host kept its identity");
}

/// A cache that skipped a snapshot, or serves one not derived from its
/// last, starts over and is still right.
#[test]
fn a_cache_behind_by_a_snapshot_starts_over() {
    let base = ["bookinfo.yaml", "destination-rule-all.yaml"];
    let (a, instances) = common::snapshot(common::load(&base, ""));
    let proxies = proxies(&instances);
    let reg = a.shared_registry().clone();
    let with = |s: &MeshSnapshot, v, f: &str| {
        let files: Vec<&str> = base.iter().copied().chain([f]).collect();
        s.next(v, common::load(&files, ""), reg.clone())
    };
    let b = with(&a, 2, "virtual-service-reviews-80-20.yaml");
    let c = with(&b, 3, "virtual-service-reviews-v3.yaml");
    let cache = GenerationCache::new();
    check(&a, &proxies, &cache, 1);
    check(&c, &proxies, &cache, 3);
    check(&b, &proxies, &cache, 2);
    check(&a, &proxies, &cache, 1);
}
