//! Everything translate emits must compile in Meshwork's own proxy (it
//! would NACK anything else): every Bookinfo sample, TCP and
//! protocol-detected services, ServiceEntries of each resolution, and
//! hostile-but-valid configuration.

mod common;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use meshwork_proxy::model::cluster::{ClusterModel, compile_assignment};
use meshwork_proxy::model::listener::ListenerModel;
use meshwork_proxy::model::route::RouteTable;
use meshwork_translate::{Generated, MeshSnapshot, generate};
use meshwork_xds::unpack;

/// Compiles every resource; proxyless listeners (ApiListeners, for gRPC
/// clients only) are checked for what gRPC requires instead.
fn assert_accepted(g: &Generated, what: &str) {
    for (name, any) in &g.listeners {
        let l: Listener = unpack(any).expect("listener decodes");
        assert_eq!(&l.name, name);
        if let Some(api) = l
            .api_listener
            .as_ref()
            .and_then(|a| a.api_listener.as_ref())
        {
            let hcm: HttpConnectionManager = unpack(api).expect("api_listener is an HCM");
            assert!(
                matches!(hcm.route_specifier, Some(RouteSpecifier::Rds(_))),
                "{what}: {name}"
            );
            assert_eq!(
                hcm.http_filters.last().map(|f| f.name.as_str()),
                Some("envoy.filters.http.router")
            );
            continue;
        }
        if let Err(e) = ListenerModel::compile(&l) {
            panic!("{what}: listener {name} rejected: {e}");
        }
    }
    for (name, any) in &g.routes {
        let rc: RouteConfiguration = unpack(any).expect("route decodes");
        assert_eq!(&rc.name, name);
        if let Err(e) = RouteTable::compile(&rc) {
            panic!("{what}: route {name} rejected: {e}");
        }
    }
    for (name, any) in &g.clusters {
        let c: Cluster = unpack(any).expect("cluster decodes");
        assert_eq!(&c.name, name);
        if let Err(e) = ClusterModel::compile(&c) {
            panic!("{what}: cluster {name} rejected: {e}");
        }
    }
    for (name, any) in &g.endpoints {
        let cla: ClusterLoadAssignment = unpack(any).expect("cla decodes");
        assert_eq!(&cla.cluster_name, name);
        assert!(
            g.clusters.contains_key(name),
            "{what}: endpoints without a cluster: {name}"
        );
        if let Err(e) = compile_assignment(&cla, false) {
            panic!("{what}: endpoints {name} rejected: {e}");
        }
    }
}

fn every_proxy(snap: &MeshSnapshot, instances: &[meshwork_registry::WorkloadInstance], what: &str) {
    let mut workloads: Vec<&str> = instances.iter().map(|i| i.workload.as_str()).collect();
    workloads.dedup();
    for w in workloads {
        assert_accepted(
            &generate(snap, &common::sidecar(instances, w)),
            &format!("{what} {w}"),
        );
    }
    assert_accepted(
        &generate(snap, &common::proxyless("default")),
        &format!("{what} proxyless"),
    );
    assert_accepted(
        &generate(snap, &common::proxyless("elsewhere")),
        &format!("{what} proxyless elsewhere"),
    );
}

const CERT_MANAGER_RESOLVER: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: cert-manager-resolver, namespace: istio-system}\nspec:\n  ports: [{name: http, port: 8089}]\n";

#[test]
fn every_bookinfo_sample() {
    let mut samples: Vec<String> = std::fs::read_dir(common::BOOKINFO)
        .expect("bookinfo fixtures")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "bookinfo.yaml" && n != "destination-rule-all.yaml")
        .collect();
    samples.sort();
    assert!(samples.len() >= 20);
    for sample in samples {
        let res = common::load(
            &["bookinfo.yaml", "destination-rule-all.yaml", &sample],
            CERT_MANAGER_RESOLVER,
        );
        let (snap, instances) = common::snapshot(res);
        every_proxy(&snap, &instances, &sample);
    }
}

/// TCP with and without VIPs, protocol detection, every ServiceEntry
/// resolution, DestinationRule policies, VirtualService features.
const MIXED: &str = include_str!("mixed.yaml");

#[test]
fn mixed_protocols_and_service_entries() {
    let (snap, instances) = common::snapshot(common::load(&["bookinfo.yaml"], MIXED));
    every_proxy(&snap, &instances, "mixed");
}

#[test]
fn empty_mesh_and_unknown_proxies() {
    let (snap, _) = common::snapshot(Vec::new());
    assert_accepted(&generate(&snap, &common::proxyless("x")), "empty proxyless");
    let mut p = common::proxyless("x");
    p.kind = meshwork_translate::ProxyKind::Sidecar;
    let g = generate(&snap, &p);
    assert_accepted(&g, "empty sidecar");
    assert!(
        g.listeners.contains_key("virtualOutbound") && g.listeners.contains_key("virtualInbound")
    );
}

/// Istio matches `method`, `authority` and `scheme` with the pseudo-header
/// matchers `:method`, `:authority` and `:scheme`, and so does translate;
/// Meshwork's proxy compiles them (`HeaderKey` in its matcher model).
#[test]
fn pseudo_header_matches() {
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{method: {exact: POST}, authority: {prefix: rev}, scheme: {exact: http}}]\n    route: [{destination: {host: reviews}}]\n";
    let (snap, instances) = common::snapshot(common::load(&["bookinfo.yaml"], vs));
    every_proxy(&snap, &instances, "pseudo-headers");
}

/// Every VirtualService route policy translate emits (retries, timeouts,
/// faults, mirrors, CORS, per-destination headers, redirects with derived
/// ports, delegates, TCP and TLS routes) compiles in the proxy.
#[test]
fn route_policies() {
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /d}}]
    delegate: {name: reviews-delegate}
  - match: [{uri: {regex: "/r/[0-9]+"}, ignoreUriCase: true, withoutHeaders: {x-a: {}}}]
    timeout: 2s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,gateway-error,reset,retriable-4xx,409,envoy-ratelimited", backoff: 50ms, retryIgnorePreviousHosts: false}
    fault: {delay: {fixedDelay: 1s, percentage: {value: 0.5}}, abort: {grpcStatus: UNAVAILABLE, percentage: {value: 10}}}
    mirror: {host: ratings}
    mirrorPercentage: {value: 12.5}
    mirrors: [{destination: {host: details}, percentage: {value: 0}}, {destination: {host: details, subset: v1}}]
    corsPolicy: {allowOrigins: [{regex: "https://.*\\.example"}], allowMethods: [GET], maxAge: 1m, unmatchedPreflights: IGNORE}
    route:
    - {destination: {host: reviews, subset: v1}, weight: 60, headers: {request: {set: {x-v: "1"}}, response: {remove: [x-r]}}}
    - {destination: {host: reviews, subset: v2}, weight: 40}
  - match: [{uri: {prefix: /redir}}]
    redirect: {authority: other, derivePort: FROM_REQUEST_PORT, scheme: https}
  - route: [{destination: {host: reviews, subset: v3}}]
    retries: {attempts: 0}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-delegate}
spec:
  http:
  - match: [{uri: {prefix: /d/x}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v2}}]
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: 10.0.0.77
  ports: [{name: tcp, port: 3306}, {name: tls, port: 3443}]
  selector: {app: db}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db, db.example]
  tcp:
  - match: [{port: 3306, destinationSubnets: [10.0.0.0/24]}]
    route: [{destination: {host: db, port: {number: 3306}}, weight: 50}, {destination: {host: reviews, port: {number: 9080}}, weight: 50}]
  tls:
  - match: [{port: 3443, sniHosts: [db.example]}]
    route: [{destination: {host: db, port: {number: 3443}}}]
"#;
    let (snap, instances) = common::snapshot(common::load(
        &["bookinfo.yaml", "destination-rule-all.yaml"],
        yaml,
    ));
    every_proxy(&snap, &instances, "route policies");
    let warnings: Vec<String> = meshwork_translate::warnings(&snap)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        warnings.iter().any(|w| w.contains("retries.retryOn")),
        "{warnings:?}"
    );
}
