//! What translation must do, checked on the generated protobufs.

mod common;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy};
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use meshwork_translate::{Generated, generate};
use meshwork_xds::{TypeUrl, unpack};

const REVIEWS: &str = "reviews.default.svc.cluster.local";

fn route(g: &Generated, name: &str) -> RouteConfiguration {
    unpack(&g.routes[name]).expect("route")
}

fn vhost(rc: &RouteConfiguration, name: &str) -> VirtualHost {
    rc.virtual_hosts
        .iter()
        .find(|v| v.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no vhost {name}"))
}

fn cluster(g: &Generated, name: &str) -> Cluster {
    unpack(
        g.clusters
            .get(name)
            .unwrap_or_else(|| panic!("no cluster {name}")),
    )
    .expect("cluster")
}

fn addresses(g: &Generated, name: &str) -> Vec<String> {
    let cla: ClusterLoadAssignment = unpack(&g.endpoints[name]).expect("cla");
    let mut out: Vec<String> = cla
        .endpoints
        .iter()
        .flat_map(|l| l.lb_endpoints.iter())
        .map(|e| {
            format!("{:?}", e.host_identifier)
                .split("address: \"")
                .nth(1)
                .unwrap_or("")
                .split('"')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    out.sort();
    out
}

#[test]
fn weighted_routes_sum_to_the_virtual_service_weights() {
    let (snap, instances) = common::bookinfo();
    let g = generate(&snap, &common::sidecar(&instances, "productpage-v1"));
    let vh = vhost(&route(&g, "9080"), &format!("{REVIEWS}:9080"));
    assert_eq!(vh.routes.len(), 1);
    let Some(Action::Route(a)) = &vh.routes[0].action else {
        panic!("not a route")
    };
    let Some(ClusterSpecifier::WeightedClusters(w)) = &a.cluster_specifier else {
        panic!("not weighted")
    };
    let weights: Vec<(String, u32)> = w
        .clusters
        .iter()
        .map(|c| (c.name.clone(), c.weight.as_ref().map_or(0, |w| w.value)))
        .collect();
    assert_eq!(
        weights,
        [
            (format!("outbound|9080|v1|{REVIEWS}"), 80),
            (format!("outbound|9080|v2|{REVIEWS}"), 20)
        ]
    );
    assert_eq!(weights.iter().map(|(_, w)| w).sum::<u32>(), 100);
    assert!(
        vh.domains.contains(&"reviews:9080".to_string())
            && vh.domains.contains(&"reviews".to_string())
    );
}

#[test]
fn subset_clusters_carry_only_their_endpoints() {
    let (snap, instances) = common::bookinfo();
    let g = generate(&snap, &common::sidecar(&instances, "productpage-v1"));
    for v in ["v1", "v2", "v3"] {
        let name = format!("outbound|9080|{v}|{REVIEWS}");
        let c = cluster(&g, &name);
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        );
        let eds = c.eds_cluster_config.expect("eds config");
        assert_eq!(eds.service_name, name);
        assert!(matches!(
            eds.eds_config.and_then(|c| c.config_source_specifier),
            Some(ConfigSourceSpecifier::Ads(_))
        ));
        let expect = instances
            .iter()
            .filter(|i| i.workload == format!("reviews-{v}"))
            .map(|i| i.address.to_string())
            .collect::<Vec<_>>();
        assert_eq!(addresses(&g, &name), expect);
    }
    assert_eq!(addresses(&g, &format!("outbound|9080||{REVIEWS}")).len(), 3);
    // ratings v2 has no Deployment in bookinfo.yaml: its subset is empty, not absent.
    assert!(addresses(&g, "outbound|9080|v2|ratings.default.svc.cluster.local").is_empty());
}

#[test]
fn inbound_clusters_only_for_the_proxys_own_ports() {
    let (snap, instances) = common::bookinfo();
    let g = generate(&snap, &common::sidecar(&instances, "reviews-v1"));
    let inbound: Vec<&String> = g
        .clusters
        .keys()
        .filter(|k| k.starts_with("inbound|"))
        .collect();
    assert_eq!(inbound, ["inbound|9080||"]);
    let c = cluster(&g, "inbound|9080||");
    assert_eq!(
        c.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32))
    );
    let vi: Listener = unpack(&g.listeners["virtualInbound"]).expect("listener");
    let ports: Vec<u32> = vi
        .filter_chains
        .iter()
        .filter_map(|c| {
            c.filter_chain_match
                .as_ref()?
                .destination_port
                .as_ref()
                .map(|p| p.value)
        })
        .collect();
    // 9080 twice: PERMISSIVE (the default) has an mTLS and a plaintext chain.
    assert_eq!(ports, [15006, 9080, 9080]);
    // A client that no service selects has no inbound ports.
    let g = generate(&snap, &common::proxyless("default"));
    assert!(g.clusters.keys().all(|k| !k.starts_with("inbound|")));
}

const OTHER_NS: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: billing, namespace: finance}\nspec:\n  selector: {app: billing}\n  ports: [{name: http, port: 8080}]\n";

#[test]
fn sidecar_egress_hosts_scope_what_a_proxy_receives() {
    let (snap, instances) = common::snapshot(common::load(&["bookinfo.yaml"], OTHER_NS));
    let proxy = common::sidecar(&instances, "productpage-v1");
    let g = generate(&snap, &proxy);
    assert!(
        g.clusters
            .contains_key("outbound|8080||billing.finance.svc.cluster.local")
    );
    assert!(g.routes.contains_key("8080"));
    let scoped = format!(
        "{OTHER_NS}---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: default}}\nspec:\n  egress: [{{hosts: [\"./*\"]}}]\n  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}\n"
    );
    let (snap, instances) = common::snapshot(common::load(&["bookinfo.yaml"], &scoped));
    let g = generate(&snap, &common::sidecar(&instances, "productpage-v1"));
    assert!(
        g.clusters.keys().all(|k| !k.contains("finance")),
        "{:?}",
        g.clusters.keys()
    );
    assert!(!g.routes.contains_key("8080") && !g.listeners.contains_key("0.0.0.0_8080"));
    assert!(
        g.clusters
            .contains_key(&format!("outbound|9080||{REVIEWS}"))
    );
    // REGISTRY_ONLY: unknown hosts get 502 and unknown destinations the black hole.
    let rc = route(&g, "9080");
    assert_eq!(
        rc.virtual_hosts.last().map(|v| v.name.as_str()),
        Some("block_all")
    );
    let text = common::render::render(&g);
    assert!(
        text.contains("default \"PassthroughFilterChain\" -> tcp_proxy BlackHoleCluster"),
        "{text}"
    );
}

#[test]
fn header_match_routes_in_order() {
    let (snap, instances) = common::snapshot(common::load(
        &[
            "bookinfo.yaml",
            "destination-rule-all.yaml",
            "virtual-service-reviews-jason-v2-v3.yaml",
        ],
        "",
    ));
    let g = generate(&snap, &common::sidecar(&instances, "productpage-v1"));
    let vh = vhost(&route(&g, "9080"), &format!("{REVIEWS}:9080"));
    assert_eq!(vh.routes.len(), 2);
    let m = vh.routes[0].r#match.as_ref().expect("match");
    assert_eq!(m.headers.len(), 1);
    assert_eq!(m.headers[0].name, "end-user");
    let target = |i: usize| match &vh.routes[i].action {
        Some(Action::Route(a)) => format!("{:?}", a.cluster_specifier),
        other => format!("{other:?}"),
    };
    assert!(target(0).contains("|v2|") && target(1).contains("|v3|"));
}

#[test]
fn tcp_vips_policies_and_ports() {
    let mixed = include_str!("mixed.yaml");
    let (snap, instances) = common::snapshot(common::load(&["bookinfo.yaml"], mixed));
    let g = generate(&snap, &common::sidecar(&instances, "productpage-v1"));
    // TCP service with a VIP: a chain matched on it.
    let l: Listener = unpack(&g.listeners["0.0.0.0_5432"]).expect("listener");
    let m = l.filter_chains[0]
        .filter_chain_match
        .as_ref()
        .expect("match");
    assert_eq!(m.prefix_ranges[0].address_prefix, "10.96.0.10");
    // DestinationRule policy: ROUND_ROBIN, 250ms connect timeout, RANDOM on 8081, HTTP/2 for grpc.
    let c = cluster(&g, "outbound|8080||api.data.svc.cluster.local");
    assert_eq!(c.lb_policy, LbPolicy::RoundRobin as i32);
    assert_eq!(c.connect_timeout.map(|d| d.nanos), Some(250_000_000));
    assert!(format!("{:?}", c.typed_extension_protocol_options).contains("HttpProtocolOptions"));
    assert_eq!(
        cluster(&g, "outbound|8081||api.data.svc.cluster.local").lb_policy,
        LbPolicy::Random as i32
    );
    let pass = cluster(&g, "outbound|8080|pass|api.data.svc.cluster.local");
    assert_eq!(
        pass.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32
        ))
    );
    // Named target ports resolve through the Deployment's container ports.
    assert_eq!(
        addresses(&g, "outbound|8080||api.data.svc.cluster.local").len(),
        1
    );
    let api = common::sidecar(&instances, "api");
    let g_api = generate(&snap, &api);
    assert!(
        g_api.clusters.contains_key("inbound|9090||"),
        "{:?}",
        g_api.clusters.keys()
    );
    // Match port: the `port: 8080` match is on route config 8080 only.
    let r8080 = vhost(&route(&g, "8080"), "api.data.svc.cluster.local:8080");
    let r8081 = vhost(&route(&g, "8081"), "api.data.svc.cluster.local:8081");
    assert_eq!(r8080.routes.len(), r8081.routes.len() + 1);
    // DNS round robin ServiceEntry: LOGICAL_DNS with its host as the endpoint.
    let rr = cluster(&g, "outbound|80||rr.example.com");
    assert_eq!(
        rr.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::LogicalDns as i32))
    );
}

#[test]
fn proxyless_resources_are_what_grpc_requires() {
    let (snap, _) = common::bookinfo();
    let g = generate(&snap, &common::proxyless("default"));
    for name in [
        format!("{REVIEWS}:9080"),
        "reviews:9080".into(),
        "reviews.default:9080".into(),
    ] {
        let l: Listener = unpack(&g.listeners[&name]).expect("listener");
        let hcm: HttpConnectionManager = unpack(
            l.api_listener
                .and_then(|a| a.api_listener)
                .as_ref()
                .expect("api listener"),
        )
        .expect("hcm");
        let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
            panic!("no rds")
        };
        assert!(matches!(
            rds.config_source.and_then(|c| c.config_source_specifier),
            Some(ConfigSourceSpecifier::Ads(_))
        ));
        let rc = route(&g, &rds.route_config_name);
        assert_eq!(rc.virtual_hosts.len(), 1);
        assert!(
            rc.virtual_hosts[0].domains.contains(&name),
            "{name} not in {:?}",
            rc.virtual_hosts[0].domains
        );
        let router = &hcm.http_filters[0];
        assert_eq!(router.name, "envoy.filters.http.router");
        assert!(
            format!("{:?}", router.config_type)
                .contains("envoy.extensions.filters.http.router.v3.Router")
        );
    }
    for any in g.by_type(TypeUrl::Cluster).values() {
        let c: Cluster = unpack(any).expect("cluster");
        assert_eq!(c.lb_policy, LbPolicy::RoundRobin as i32, "{}", c.name);
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        );
        assert!(g.endpoints.contains_key(&c.name));
    }
    // Short names only for clients of the same namespace.
    let elsewhere = generate(&snap, &common::proxyless("other"));
    assert!(!elsewhere.listeners.contains_key("reviews:9080"));
    assert!(elsewhere.listeners.contains_key("reviews.default:9080"));
}

/// A ServiceEntry host shaped like a Kubernetes Service
/// (`name.ns.svc.cluster.local`), as the grpcio interop test uses it:
/// the short names are dialable too, and every EDS locality is present
/// (gRPC NACKs `endpoints[].locality` missing).
#[test]
fn proxyless_service_entry_with_a_kubernetes_host() {
    let extra = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: greeter, namespace: default}
spec:
  hosts: [greeter.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{name: grpc, number: 50051, protocol: GRPC}]
  endpoints:
  - {address: 127.0.0.1, ports: {grpc: 7001}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {grpc: 7002}, labels: {version: v2}}
"#;
    let (snap, _) = common::snapshot(common::load(&[], extra));
    let g = generate(&snap, &common::proxyless("default"));
    for name in [
        "greeter.default.svc.cluster.local:50051",
        "greeter.default:50051",
        "greeter:50051",
    ] {
        assert!(g.listeners.contains_key(name), "no listener {name}");
    }
    let rc = route(&g, "greeter.default.svc.cluster.local:50051");
    assert!(
        rc.virtual_hosts[0]
            .domains
            .contains(&"greeter:50051".to_string())
    );
    let elsewhere = generate(&snap, &common::proxyless("other"));
    assert!(!elsewhere.listeners.contains_key("greeter:50051"));
    assert!(elsewhere.listeners.contains_key("greeter.default:50051"));

    let (bookinfo, _) = common::bookinfo();
    let bookinfo = generate(&bookinfo, &common::proxyless("default"));
    for g in [&g, &bookinfo] {
        assert!(!g.endpoints.is_empty());
        for (name, any) in &g.endpoints {
            let cla: ClusterLoadAssignment = unpack(any).expect("cla");
            for l in &cla.endpoints {
                assert!(l.locality.is_some(), "{name}: a locality is missing");
            }
        }
    }
}

#[test]
fn endpoint_metadata_names_the_workload() {
    let (snap, instances) = common::bookinfo();
    let g = generate(&snap, &common::sidecar(&instances, "productpage-v1"));
    let cla: ClusterLoadAssignment =
        unpack(&g.endpoints[&format!("outbound|9080|v2|{REVIEWS}")]).expect("cla");
    let md = cla.endpoints[0].lb_endpoints[0]
        .metadata
        .as_ref()
        .expect("metadata");
    let w = format!("{:?}", md.filter_metadata["istio"].fields["workload"]);
    assert!(
        w.contains("reviews-v2;default;reviews;v2;Kubernetes"),
        "{w}"
    );
}
