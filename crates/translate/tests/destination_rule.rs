//! DestinationRule traffic policies as Istio translates them: precedence
//! (top level < port level; subset < its port level), circuit breakers,
//! outlier detection, load balancers and their route hash policies.

mod common;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{LbConfig, LbPolicy};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::PolicySpecifier;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::UpstreamProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::explicit_http_config::ProtocolConfig;
use meshwork_translate::{Generated, ProxyKind, ProxyMeta, generate};
use meshwork_xds::unpack;

const SERVICE: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: inventory, namespace: default}
spec:
  hosts: [inventory.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  - {number: 9090, name: http-admin, protocol: HTTP}
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, labels: {version: v2}}
"#;

fn generated(dr: &str) -> Generated {
    let (snap, _) = common::snapshot(common::load(&[], &format!("{SERVICE}---{dr}")));
    let proxy = ProxyMeta {
        node_id: "sidecar~10.9.0.1~client-0.default~default.svc.cluster.local".into(),
        kind: ProxyKind::Sidecar,
        ip: Some("10.9.0.1".parse().unwrap()),
        namespace: "default".into(),
        workload: "client".into(),
        labels: Default::default(),
        service_account: "default".into(),
        locality: String::new(),
        vhds: false,
    };
    generate(&snap, &proxy)
}

fn cluster(g: &Generated, port: u16, subset: &str) -> Cluster {
    let name = format!("outbound|{port}|{subset}|inventory.default.svc.cluster.local");
    unpack(g.clusters.get(&name).unwrap_or_else(|| panic!("no {name}"))).unwrap()
}

fn max_connections(c: &Cluster) -> u32 {
    c.circuit_breakers.as_ref().unwrap().thresholds[0]
        .max_connections
        .as_ref()
        .unwrap()
        .value
}

#[test]
fn subset_and_port_level_precedence() {
    let g = generated(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: inventory, namespace: default}
spec:
  host: inventory.default.svc.cluster.local
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 10}}
    loadBalancer: {simple: RANDOM}
    portLevelSettings:
    - port: {number: 9090}
      connectionPool: {tcp: {maxConnections: 20}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool: {tcp: {maxConnections: 30}}
      portLevelSettings:
      - port: {number: 9090}
        connectionPool: {tcp: {maxConnections: 40}}
  - name: v2
    labels: {version: v2}
"#,
    );
    assert_eq!(max_connections(&cluster(&g, 9080, "")), 10);
    assert_eq!(max_connections(&cluster(&g, 9090, "")), 20);
    assert_eq!(max_connections(&cluster(&g, 9080, "v1")), 30);
    assert_eq!(max_connections(&cluster(&g, 9090, "v1")), 40);
    // v2 inherits the top level (and its port level).
    assert_eq!(max_connections(&cluster(&g, 9080, "v2")), 10);
    assert_eq!(max_connections(&cluster(&g, 9090, "v2")), 20);
    // Fields the subset does not set come from the top level.
    assert_eq!(cluster(&g, 9080, "v1").lb_policy, LbPolicy::Random as i32);
}

#[test]
fn inventory_circuit_breaker_and_outlier_detection() {
    let g = generated(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: inventory, namespace: default}
spec:
  host: inventory.default.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
        connectTimeout: 250ms
        tcpKeepalive: {time: 7200s, interval: 75s, probes: 9}
      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1, http2MaxRequests: 5, maxRetries: 2}
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
      minHealthPercent: 30
"#,
    );
    let c = cluster(&g, 9080, "");
    let t = &c.circuit_breakers.as_ref().unwrap().thresholds[0];
    assert_eq!(t.max_connections.as_ref().unwrap().value, 1);
    assert_eq!(t.max_pending_requests.as_ref().unwrap().value, 1);
    assert_eq!(t.max_requests.as_ref().unwrap().value, 5);
    assert_eq!(t.max_retries.as_ref().unwrap().value, 2);
    assert_eq!(c.connect_timeout.as_ref().unwrap().nanos, 250_000_000);
    let o = c.outlier_detection.as_ref().unwrap();
    assert_eq!(o.consecutive_5xx.as_ref().unwrap().value, 1);
    assert_eq!(o.enforcing_consecutive_5xx.as_ref().unwrap().value, 100);
    assert_eq!(o.enforcing_success_rate.as_ref().unwrap().value, 0);
    assert_eq!(o.interval.as_ref().unwrap().seconds, 1);
    assert_eq!(o.base_ejection_time.as_ref().unwrap().seconds, 180);
    assert_eq!(o.max_ejection_percent.as_ref().unwrap().value, 100);
    let panic = c.common_lb_config.as_ref().unwrap();
    assert_eq!(panic.healthy_panic_threshold.as_ref().unwrap().value, 30.0);
    let k = c
        .upstream_connection_options
        .as_ref()
        .unwrap()
        .tcp_keepalive
        .as_ref()
        .unwrap();
    assert_eq!(k.keepalive_time.as_ref().unwrap().value, 7200);
    assert_eq!(k.keepalive_interval.as_ref().unwrap().value, 75);
    assert_eq!(k.keepalive_probes.as_ref().unwrap().value, 9);
    let opts: HttpProtocolOptions = unpack(
        &c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"],
    )
    .unwrap();
    let common = opts.common_http_protocol_options.unwrap();
    assert_eq!(common.max_requests_per_connection.unwrap().value, 1);
}

#[test]
fn defaults_are_istios() {
    let g = generated(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: inventory, namespace: default}
spec:
  host: inventory.default.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}]
"#,
    );
    let c = cluster(&g, 9080, "v1");
    assert_eq!(max_connections(&c), u32::MAX);
    assert!(c.outlier_detection.is_none());
    assert_eq!(c.lb_policy, LbPolicy::LeastRequest as i32);
    assert_eq!(
        c.common_lb_config
            .unwrap()
            .healthy_panic_threshold
            .unwrap()
            .value,
        0.0
    );
}

fn route_hash(g: &Generated, port: u16) -> Vec<Option<PolicySpecifier>> {
    let rc: RouteConfiguration = unpack(&g.routes[&port.to_string()]).unwrap();
    let vh = rc
        .virtual_hosts
        .iter()
        .find(|v| v.name.starts_with("inventory"))
        .unwrap();
    match &vh.routes[0].action {
        Some(Action::Route(a)) => a
            .hash_policy
            .iter()
            .map(|h| h.policy_specifier.clone())
            .collect(),
        other => panic!("{other:?}"),
    }
}

fn hashed(lb: &str) -> Generated {
    generated(&format!(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: inventory, namespace: default}}
spec:
  host: inventory.default.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      consistentHash: {lb}
"#
    ))
}

#[test]
fn consistent_hash_header_with_maglev() {
    let g = hashed("{httpHeaderName: X-User, maglev: {tableSize: 1021}}");
    let c = cluster(&g, 9080, "");
    assert_eq!(c.lb_policy, LbPolicy::Maglev as i32);
    match c.lb_config {
        Some(LbConfig::MaglevLbConfig(m)) => assert_eq!(m.table_size.unwrap().value, 1021),
        other => panic!("{other:?}"),
    }
    match &route_hash(&g, 9080)[..] {
        [Some(PolicySpecifier::Header(h))] => assert_eq!(h.header_name, "x-user"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn consistent_hash_cookie_source_ip_query_with_ring_hash() {
    let g =
        hashed("{httpCookie: {name: user, ttl: 60s, path: /}, ringHash: {minimumRingSize: 2048}}");
    let c = cluster(&g, 9080, "");
    assert_eq!(c.lb_policy, LbPolicy::RingHash as i32);
    match c.lb_config {
        Some(LbConfig::RingHashLbConfig(r)) => {
            assert_eq!(r.minimum_ring_size.unwrap().value, 2048)
        }
        other => panic!("{other:?}"),
    }
    match &route_hash(&g, 9080)[..] {
        [Some(PolicySpecifier::Cookie(k))] => {
            assert_eq!(k.name, "user");
            assert_eq!(k.ttl.as_ref().unwrap().seconds, 60);
            assert_eq!(k.path, "/");
        }
        other => panic!("{other:?}"),
    }
    let g = hashed("{useSourceIp: true}");
    assert!(matches!(
        &route_hash(&g, 9080)[..],
        [Some(PolicySpecifier::ConnectionProperties(p))] if p.source_ip
    ));
    // No ring size given: Istio's 1024.
    match cluster(&g, 9080, "").lb_config {
        Some(LbConfig::RingHashLbConfig(r)) => {
            assert_eq!(r.minimum_ring_size.unwrap().value, 1024)
        }
        other => panic!("{other:?}"),
    }
    let g = hashed("{httpQueryParameterName: user}");
    assert!(matches!(
        &route_hash(&g, 9080)[..],
        [Some(PolicySpecifier::QueryParameter(q))] if q.name == "user"
    ));
}

#[test]
fn simple_load_balancers_warmup_and_h2_upgrade() {
    let g = generated(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: inventory, namespace: default}
spec:
  host: inventory.default.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      warmup: {duration: 30s, aggression: 2, minimumPercent: 5}
    connectionPool: {http: {h2UpgradePolicy: UPGRADE}}
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer: {simple: PASSTHROUGH}
"#,
    );
    let c = cluster(&g, 9080, "");
    assert_eq!(c.lb_policy, LbPolicy::RoundRobin as i32);
    match &c.lb_config {
        Some(LbConfig::RoundRobinLbConfig(r)) => {
            let s = r.slow_start_config.as_ref().unwrap();
            assert_eq!(s.slow_start_window.as_ref().unwrap().seconds, 30);
            assert_eq!(s.aggression.as_ref().unwrap().default_value, 2.0);
            assert_eq!(s.min_weight_percent.as_ref().unwrap().value, 5.0);
        }
        other => panic!("{other:?}"),
    }
    let opts: HttpProtocolOptions = unpack(
        &c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"],
    )
    .unwrap();
    assert!(matches!(
        opts.upstream_protocol_options,
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(e))
            if matches!(e.protocol_config, Some(ProtocolConfig::Http2ProtocolOptions(_)))
    ));
    let pass = cluster(&g, 9090, "");
    assert_eq!(pass.lb_policy, LbPolicy::ClusterProvided as i32);
    assert!(route_hash(&g, 9080).is_empty());
}

#[test]
fn every_policy_compiles_in_the_proxy() {
    use meshwork_proxy::model::cluster::ClusterModel;
    use meshwork_proxy::model::route::RouteTable;
    for lb in [
        "{consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}}",
        "{consistentHash: {httpCookie: {name: c, ttl: 0s}}}",
        "{simple: LEAST_REQUEST, warmup: {duration: 10s}}",
        "{simple: RANDOM}",
    ] {
        let g = generated(&format!(
            r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: inventory, namespace: default}}
spec:
  host: inventory.default.svc.cluster.local
  trafficPolicy:
    loadBalancer: {lb}
    connectionPool: {{tcp: {{maxConnections: 3, tcpKeepalive: {{time: 10s}}}}, http: {{maxRequestsPerConnection: 2}}}}
    outlierDetection: {{consecutiveGatewayErrors: 2, interval: 1s, baseEjectionTime: 1s}}
    retryBudget: {{percent: 25, minRetryConcurrency: 5}}
"#
        ));
        for any in g.clusters.values() {
            let c: Cluster = unpack(any).unwrap();
            let m = ClusterModel::compile(&c).unwrap_or_else(|e| panic!("{lb}: {e}"));
            if c.name.contains("inventory") {
                assert_eq!(m.policy.limits.max_connections, 3);
                assert_eq!(m.policy.max_requests_per_connection, Some(2));
                assert!(m.policy.limits.retry_budget.is_some());
            }
        }
        for any in g.routes.values() {
            RouteTable::compile(&unpack(any).unwrap()).unwrap_or_else(|e| panic!("{lb}: {e}"));
        }
    }
}

#[test]
fn locality_failover_orders_endpoints_by_the_proxy_locality() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: inventory, namespace: default}
spec:
  hosts: [inventory.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.0.1, locality: r1/z1}
  - {address: 10.0.0.2, locality: r1/z2}
  - {address: 10.0.0.3, locality: r2/z1}
  - {address: 10.0.0.4, locality: r3/z1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: inventory, namespace: default}
spec:
  host: inventory.default.svc.cluster.local
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1}
    loadBalancer:
      localityLbSetting:
        failover: [{from: r1, to: r3}]
"#;
    let (snap, _) = common::snapshot(common::load(&[], yaml));
    let mut proxy = ProxyMeta {
        node_id: "sidecar~10.9.0.1~client-0.default~default.svc.cluster.local".into(),
        kind: ProxyKind::Sidecar,
        ip: Some("10.9.0.1".parse().unwrap()),
        namespace: "default".into(),
        workload: "client".into(),
        labels: Default::default(),
        service_account: "default".into(),
        locality: "r1/z1/".into(),
        vhds: false,
    };
    let priorities = |g: &Generated| {
        let la: envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment =
            unpack(&g.endpoints["outbound|9080||inventory.default.svc.cluster.local"]).unwrap();
        let mut v: Vec<(String, u32)> = la
            .endpoints
            .iter()
            .map(|l| {
                let l2 = l.locality.clone().unwrap();
                (format!("{}/{}", l2.region, l2.zone), l.priority)
            })
            .collect();
        v.sort();
        v
    };
    // Own zone, own region, the failover region, then the rest.
    let g = generate(&snap, &proxy);
    assert_eq!(
        priorities(&g),
        vec![
            ("r1/z1".into(), 0),
            ("r1/z2".into(), 1),
            ("r2/z1".into(), 3),
            ("r3/z1".into(), 2)
        ]
    );
    // The cache keeps proxies of different localities apart.
    let cache = meshwork_translate::GenerationCache::new();
    let cached = meshwork_translate::generate_cached(&snap, &proxy, &cache);
    assert_eq!(priorities(&cached), priorities(&g));
    proxy.locality = "r2/z1/".into();
    let other = meshwork_translate::generate_cached(&snap, &proxy, &cache);
    assert_eq!(priorities(&other)[2], ("r2/z1".into(), 0));
    // No outlier detection, no failover (Istio's rule): one priority.
    let (snap, _) = common::snapshot(common::load(
        &[],
        &yaml.replace(
            "outlierDetection: {consecutive5xxErrors: 1}",
            "connectionPool: {tcp: {maxConnections: 5}}",
        ),
    ));
    assert!(
        priorities(&generate(&snap, &proxy))
            .iter()
            .all(|(_, p)| *p == 0)
    );
}

#[test]
fn locality_distribute_weights_localities_from_the_proxy_locality() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: inventory, namespace: default}
spec:
  hosts: [inventory.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.0.1, locality: region1/zone1/a}
  - {address: 10.0.0.2, locality: region1/zone1/b}
  - {address: 10.0.0.3, locality: region1/zone2/a}
  - {address: 10.0.0.4, locality: region2/zone1/a}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: inventory, namespace: default}
spec:
  host: inventory.default.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: region9/*
          to: {"region2/*": 100}
        - from: region1/zone1/*
          to: {"region1/zone1/*": 80, "region1/zone2/*": 20}
"#;
    let (snap, _) = common::snapshot(common::load(&[], yaml));
    let mut proxy = ProxyMeta {
        node_id: "sidecar~10.9.0.1~client-0.default~default.svc.cluster.local".into(),
        kind: ProxyKind::Sidecar,
        ip: Some("10.9.0.1".parse().unwrap()),
        namespace: "default".into(),
        workload: "client".into(),
        labels: Default::default(),
        service_account: "default".into(),
        locality: "region1/zone1/a".into(),
        vhds: false,
    };
    // (locality, its weight, its endpoint count, priority)
    let weights = |g: &Generated| {
        let la: envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment =
            unpack(&g.endpoints["outbound|9080||inventory.default.svc.cluster.local"]).unwrap();
        let mut v: Vec<(String, u32, usize, u32)> = la
            .endpoints
            .iter()
            .map(|l| {
                let l2 = l.locality.clone().unwrap();
                (
                    format!("{}/{}/{}", l2.region, l2.zone, l2.sub_zone),
                    l.load_balancing_weight.unwrap().value,
                    l.lb_endpoints.len(),
                    l.priority,
                )
            })
            .collect();
        v.sort();
        v
    };
    let g = generate(&snap, &proxy);
    // 80 split over the two subzones of region1/zone1, 20 to region1/zone2,
    // region2 matches no entry and loses its endpoints; no priorities.
    assert_eq!(
        weights(&g),
        vec![
            ("region1/zone1/a".into(), 40, 1, 0),
            ("region1/zone1/b".into(), 40, 1, 0),
            ("region1/zone2/a".into(), 20, 1, 0),
            ("region2/zone1/a".into(), 1, 0, 0),
        ]
    );
    let c = cluster(&g, 9080, "");
    let lb = c.common_lb_config.unwrap();
    assert!(matches!(
        lb.locality_config_specifier,
        Some(envoy_types::pb::envoy::config::cluster::v3::cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
    ));
    // The first matching rule wins: a region9 proxy sends all to region2.
    proxy.locality = "region9/zone7/".into();
    let g = generate(&snap, &proxy);
    let w = weights(&g);
    assert_eq!(w[3], ("region2/zone1/a".into(), 100, 1, 0));
    assert!(w[..3].iter().all(|l| l.2 == 0), "{w:?}");
    // A proxy no rule matches keeps the plain locality weights.
    proxy.locality = "region5/zone1/".into();
    let w = weights(&generate(&snap, &proxy));
    assert!(w.iter().all(|l| l.1 == 1 && l.2 == 1), "{w:?}");
    // Disabled locality load balancing: no weighting at all.
    let (snap, _) = common::snapshot(common::load(
        &[],
        &yaml.replace(
            "localityLbSetting:",
            "localityLbSetting:\n        enabled: false",
        ),
    ));
    proxy.locality = "region1/zone1/a".into();
    let g = generate(&snap, &proxy);
    assert!(weights(&g).iter().all(|l| l.1 == 1 && l.2 == 1));
    let lb = cluster(&g, 9080, "").common_lb_config.unwrap();
    assert!(lb.locality_config_specifier.is_none());
}

#[test]
fn unenforced_fields_are_reported_with_their_path() {
    let dr = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: inventory, namespace: default}
spec:
  host: inventory.default.svc.cluster.local
  trafficPolicy:
    tunnel: {targetHost: x, targetPort: 80}
    portLevelSettings:
    - port: {number: 9080}
      connectionPool: {tcp: {maxConnectionDuration: 1s}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer:
        localityLbSetting:
          failoverPriority: [topology.istio.io/network]
"#;
    let (snap, _) = common::snapshot(common::load(&[], &format!("{SERVICE}---{dr}")));
    let found: Vec<String> = meshwork_translate::warnings(&snap)
        .iter()
        .map(ToString::to_string)
        .collect();
    for field in [
        "DestinationRule default/inventory: spec.trafficPolicy.portLevelSettings[0].connectionPool.tcp.maxConnectionDuration",
        "DestinationRule default/inventory: spec.trafficPolicy.tunnel",
        "DestinationRule default/inventory: spec.subsets[0].trafficPolicy.loadBalancer.localityLbSetting.failoverPriority",
    ] {
        assert!(
            found.iter().any(|w| w.starts_with(field)),
            "{field} not in {found:#?}"
        );
    }
}
