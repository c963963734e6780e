//! `generate_cached` returns exactly what `generate` returns, for every
//! proxy of every Bookinfo sample and the mixed configuration, whatever the
//! order the proxies come in with one cache shared by all of them; and the
//! cache never gives one proxy another's label-dependent configuration.

mod common;

use meshwork_registry::WorkloadInstance;
use meshwork_translate::{
    Generated, GenerationCache, MeshSnapshot, ProxyMeta, generate, generate_cached,
};
use meshwork_xds::unpack;

/// Every replica's sidecar and a made-up extra replica of each (another
/// address), proxyless clients in two namespaces, and sidecars nothing
/// selects (no labels; an unknown workload at a known address).
fn proxies(instances: &[WorkloadInstance]) -> Vec<ProxyMeta> {
    let mut out: Vec<ProxyMeta> = instances
        .iter()
        .flat_map(|i| [i.clone(), extra_replica(i)])
        .map(|i| ProxyMeta {
            node_id: format!("sidecar~{}~{}.{}", i.address, i.name, i.namespace),
            kind: meshwork_translate::ProxyKind::Sidecar,
            ip: Some(i.address),
            namespace: i.namespace.clone(),
            workload: i.workload.clone(),
            labels: i.labels.clone(),
            service_account: i.service_account.clone(),
            locality: String::new(),
            vhds: false,
        })
        .collect();
    out.push(common::proxyless("default"));
    out.push(common::proxyless("elsewhere"));
    let mut bare = common::proxyless("default");
    bare.kind = meshwork_translate::ProxyKind::Sidecar;
    out.push(bare.clone());
    bare.labels.clear();
    bare.ip = None;
    out.push(bare.clone());
    if let Some(first) = out.first().cloned() {
        let mut stranger = first;
        stranger.workload = "stranger".into();
        stranger.ip = Some("10.9.9.8".parse().unwrap());
        out.push(stranger);
    }
    out
}

fn extra_replica(i: &WorkloadInstance) -> WorkloadInstance {
    let mut r = i.clone();
    r.name.push_str("-extra");
    if let std::net::IpAddr::V4(a) = r.address {
        r.address = std::net::Ipv4Addr::from(u32::from(a) + 1000).into();
    }
    r
}

/// A deterministic shuffle (xorshift), so failures reproduce.
fn shuffled<T: Clone>(items: &[T], mut seed: u64) -> Vec<T> {
    let mut v = items.to_vec();
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    v
}

/// Forward, backward and shuffled, each order with a fresh shared cache,
/// then all of them again on a warm cache, and from two threads at once.
fn assert_cached_equals_generate(snap: &MeshSnapshot, instances: &[WorkloadInstance], what: &str) {
    let all = proxies(instances);
    let expected: Vec<Generated> = all.iter().map(|p| generate(snap, p)).collect();
    let mut backward: Vec<usize> = (0..all.len()).collect();
    backward.reverse();
    let orders = [
        (0..all.len()).collect::<Vec<_>>(),
        backward,
        shuffled(&(0..all.len()).collect::<Vec<_>>(), 0x9e37_79b9_7f4a_7c15),
    ];
    for order in &orders {
        let cache = GenerationCache::new();
        for _pass in 0..2 {
            for &i in order {
                let got = generate_cached(snap, &all[i], &cache);
                assert!(
                    got == expected[i],
                    "{what}: proxy {} differs with the cache",
                    all[i].node_id
                );
            }
        }
    }
    let cache = GenerationCache::new();
    std::thread::scope(|s| {
        for seed in [1, 2] {
            let (cache, all, expected) = (&cache, &all, &expected);
            s.spawn(move || {
                for i in shuffled(&(0..all.len()).collect::<Vec<_>>(), seed) {
                    assert!(
                        generate_cached(snap, &all[i], cache) == expected[i],
                        "{what}"
                    );
                }
            });
        }
    });
}

#[test]
fn every_bookinfo_sample_with_a_shared_cache() {
    let mut samples: Vec<String> = std::fs::read_dir(common::BOOKINFO)
        .expect("bookinfo fixtures")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "bookinfo.yaml" && n != "destination-rule-all.yaml")
        .collect();
    samples.sort();
    assert!(samples.len() >= 20);
    for sample in samples {
        let res = common::load(&["bookinfo.yaml", "destination-rule-all.yaml", &sample], "");
        let (snap, instances) = common::snapshot(res);
        assert_cached_equals_generate(&snap, &instances, &sample);
    }
}

#[test]
fn mixed_config_with_a_shared_cache() {
    let mixed = include_str!("mixed.yaml");
    let (snap, instances) = common::snapshot(common::load(&["bookinfo.yaml"], mixed));
    assert_cached_equals_generate(&snap, &instances, "mixed");
    let (snap, instances) = common::snapshot(Vec::new());
    assert_cached_equals_generate(&snap, &instances, "empty");
}

/// A Sidecar for `version: v2` workloads only sees ratings; a
/// VirtualService sends `app: reviews, version: v3` clients to ratings v2.
const BY_LABELS: &str = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: v2-only, namespace: default}
spec:
  workloadSelector: {labels: {version: v2}}
  egress: [{hosts: [\"./ratings.default.svc.cluster.local\"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - match: [{sourceLabels: {app: reviews, version: v3}}]
    route: [{destination: {host: ratings, subset: v2}}]
  - route: [{destination: {host: ratings, subset: v1}}]
";

fn ratings_target(g: &Generated) -> String {
    let rc: envoy_types::pb::envoy::config::route::v3::RouteConfiguration =
        unpack(&g.routes["9080"]).expect("route");
    let vh = rc
        .virtual_hosts
        .iter()
        .find(|v| v.name.starts_with("ratings."))
        .expect("ratings vhost");
    format!("{:?}", vh.routes[0].action)
}

#[test]
fn label_dependent_outbound_config_is_not_shared() {
    let res = common::load(&["bookinfo.yaml", "destination-rule-all.yaml"], BY_LABELS);
    let (snap, instances) = common::snapshot(res);
    let v1 = common::sidecar(&instances, "reviews-v1");
    let v2 = common::sidecar(&instances, "reviews-v2");
    let v3 = common::sidecar(&instances, "reviews-v3");
    assert_eq!(v1.namespace, v2.namespace);
    for order in [[&v1, &v2, &v3], [&v3, &v2, &v1], [&v2, &v3, &v1]] {
        let cache = GenerationCache::new();
        for p in order {
            assert!(generate_cached(&snap, p, &cache) == generate(&snap, p));
        }
        let (g1, g2, g3) = (
            generate_cached(&snap, &v1, &cache),
            generate_cached(&snap, &v2, &cache),
            generate_cached(&snap, &v3, &cache),
        );
        // The Sidecar selects v2 only: it sees ratings and nothing else.
        assert!(g1.clusters.keys().any(|k| k.contains("|details.")));
        assert!(!g2.clusters.keys().any(|k| k.contains("|details.")));
        // sourceLabels: v3 goes to ratings v2, v1 to ratings v1.
        assert!(ratings_target(&g3).contains("outbound|9080|v2|ratings."));
        assert!(ratings_target(&g1).contains("outbound|9080|v1|ratings."));
        assert!(g1.routes != g3.routes && g1.routes != g2.routes);
    }
    // A label nothing consults does not split the outbound part: its maps
    // are shared, only the inbound part differs.
    let cache = GenerationCache::new();
    let mut other = v1.clone();
    other.labels.insert("team".into(), "x".into());
    let (a, b) = (
        generate_cached(&snap, &v1, &cache),
        generate_cached(&snap, &other, &cache),
    );
    assert!(a.routes.shares(&b.routes) && a.endpoints.shares(&b.endpoints));
    assert!(b == generate(&snap, &other));
    // Replicas of one workload share everything.
    let mut replica = v1.clone();
    replica.node_id.push_str("-2");
    replica.ip = Some("10.1.0.200".parse().unwrap());
    let b = generate_cached(&snap, &replica, &cache);
    assert!(a.clusters.shares(&b.clusters) && a.listeners.shares(&b.listeners));
    assert!(b == generate(&snap, &replica));
}

#[test]
fn a_cache_follows_the_snapshot_it_is_used_with() {
    let cache = GenerationCache::new();
    let (a, instances) = common::bookinfo();
    let proxy = common::sidecar(&instances, "productpage-v1");
    assert!(generate_cached(&a, &proxy, &cache) == generate(&a, &proxy));
    // Same version number, different content: nothing of `a` is reused.
    let (b, _) = common::snapshot(common::load(&["bookinfo.yaml"], BY_LABELS));
    assert_eq!(a.version(), b.version());
    assert!(generate_cached(&b, &proxy, &cache) == generate(&b, &proxy));
    assert!(generate_cached(&b, &proxy, &cache) != generate(&a, &proxy));
}

#[test]
fn the_cache_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<GenerationCache>();
    check::<Generated>();
}
