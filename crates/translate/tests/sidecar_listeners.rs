//! Sidecar `ingress`/`egress` listeners with `bind` and `captureMode: NONE`
//! (Istio's configuration for workloads without traffic capture, which the
//! explicit local mesh generates per pod): bound listeners named
//! `<bind>_<port>`, HTTP through RDS `<port>` (`<bind>:<port>` when several
//! listeners share the port) holding only the listener's own hosts, the
//! bind address a domain of the one service it stands for, TCP to the one
//! service,
//! `inbound|port||` to the `defaultEndpoint`, PeerAuthentication on the
//! bound inbound listener, and no capture listeners.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::listener::v3::{Filter, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier;
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Struct, Value};
use meshwork_registry::{Registry, WorkloadInstance};
use meshwork_translate::{
    GenerationCache, Generated, MeshSnapshot, ProxyMeta, generate, generate_cached, warnings,
};
use meshwork_xds::unpack;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: order}
spec:
  selector: {app: order}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: inventory}
spec:
  selector: {app: inventory}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  selector: {app: db}
  ports: [{name: tcp, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: zdb}
spec:
  selector: {app: zdb}
  ports: [{name: tcp, port: 5432}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: order-0, namespace: default}
spec:
  workloadSelector: {labels: {meshwork.io/pod: order-0}}
  ingress:
  - port: {number: 8080, protocol: HTTP, name: http}
    bind: 127.1.0.2
    defaultEndpoint: 127.2.0.2:8080
    captureMode: NONE
  egress:
  - port: {number: 8080, protocol: HTTP, name: http}
    bind: 127.3.0.2
    captureMode: NONE
    hosts: ["*/*"]
  - port: {number: 5432, protocol: TCP, name: tcp}
    bind: 127.3.0.2
    captureMode: NONE
    hosts: ["*/*"]
---
# What explicit mode generates: an egress address per (pod, service).
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: client-0, namespace: default}
spec:
  workloadSelector: {labels: {meshwork.io/pod: client-0}}
  egress:
  - port: {number: 8080, protocol: HTTP, name: out-8080}
    bind: 127.3.0.6
    captureMode: NONE
    hosts: ["default/order.default.svc.cluster.local"]
  - port: {number: 8080, protocol: HTTP, name: out-8080}
    bind: 127.4.0.6
    captureMode: NONE
    hosts: ["default/inventory.default.svc.cluster.local"]
  - port: {number: 5432, protocol: TCP, name: out-5432}
    bind: 127.5.0.6
    captureMode: NONE
    hosts: ["default/db.default.svc.cluster.local"]
  - port: {number: 5432, protocol: TCP, name: out-5432}
    bind: 127.6.0.6
    captureMode: NONE
    hosts: ["default/zdb.default.svc.cluster.local"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
# One bound listener on 8080 for one service: Istio's route name `8080`.
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: solo-0, namespace: default}
spec:
  workloadSelector: {labels: {meshwork.io/pod: solo-0}}
  egress:
  - port: {number: 8080, protocol: HTTP, name: out-8080}
    bind: 127.3.0.7
    captureMode: NONE
    hosts: ["./inventory.default.svc.cluster.local"]
"#;

fn s(v: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(v.into())),
    }
}

fn instance(name: &str, app: &str, ip: &str) -> WorkloadInstance {
    WorkloadInstance {
        name: name.into(),
        namespace: "default".into(),
        workload: app.into(),
        labels: [
            ("app".to_string(), app.to_string()),
            ("meshwork.io/pod".to_string(), name.to_string()),
        ]
        .into(),
        address: ip.parse::<IpAddr>().unwrap(),
        service_account: app.into(),
        has_sidecar: true,
    }
}

fn proxy(i: &WorkloadInstance) -> ProxyMeta {
    let labels = Struct {
        fields: i.labels.iter().map(|(k, v)| (k.clone(), s(v))).collect(),
    };
    let md = Struct {
        fields: [
            ("NAMESPACE".to_string(), s(&i.namespace)),
            ("WORKLOAD_NAME".to_string(), s(&i.workload)),
            ("SERVICE_ACCOUNT".to_string(), s(&i.service_account)),
            (
                "LABELS".to_string(),
                Value {
                    kind: Some(Kind::StructValue(labels)),
                },
            ),
        ]
        .into_iter()
        .collect(),
    };
    ProxyMeta::from_node(&Node {
        id: format!(
            "sidecar~{}~{}.default~default.svc.cluster.local",
            i.address, i.name
        ),
        metadata: Some(md),
        ..Default::default()
    })
}

fn mesh() -> (MeshSnapshot, Vec<WorkloadInstance>) {
    let loaded = meshwork_config::load_str("explicit.yaml".as_ref(), MESH);
    assert!(
        loaded
            .diagnostics
            .iter()
            .all(|d| d.level != meshwork_config::Level::Error),
        "{:?}",
        loaded.diagnostics
    );
    let instances = vec![
        instance("order-0", "order", "127.1.0.2"),
        instance("inventory-0", "inventory", "127.1.0.3"),
        instance("db-0", "db", "127.1.0.4"),
        instance("zdb-0", "zdb", "127.1.0.5"),
        instance("client-0", "client", "127.1.0.6"),
        instance("solo-0", "solo", "127.1.0.7"),
    ];
    let registry = Registry::build(&loaded.resources, &instances);
    (MeshSnapshot::new(1, loaded.resources, registry), instances)
}

fn listener(g: &Generated, name: &str) -> Listener {
    let any = g
        .listeners
        .get(name)
        .unwrap_or_else(|| panic!("no listener {name}: {:?}", g.listeners.keys()));
    unpack(any).unwrap()
}

fn address(l: &Listener) -> String {
    match l.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(AddressKind::SocketAddress(sa)) => match sa.port_specifier {
            Some(PortSpecifier::PortValue(p)) => format!("{}:{p}", sa.address),
            _ => sa.address.clone(),
        },
        _ => String::new(),
    }
}

fn typed<T: prost::Message + prost::Name + Default>(f: &Filter) -> T {
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => unpack(any).unwrap(),
        _ => panic!("filter {} has no typed config", f.name),
    }
}

#[test]
fn bound_egress_listeners_route_http_by_port_and_tcp_to_the_service() {
    let (snap, instances) = mesh();
    let g = generate(&snap, &proxy(&instances[0]));
    let http = listener(&g, "127.3.0.2_8080");
    assert_eq!(address(&http), "127.3.0.2:8080");
    assert_eq!(http.bind_to_port.map(|b| b.value), Some(true));
    assert_eq!(http.traffic_direction, 2);
    assert!(
        http.listener_filters.is_empty() && http.use_original_dst.is_none_or(|b| !b.value),
        "no original destination on a bound listener"
    );
    let hcm: HttpConnectionManager = typed(&http.filter_chains[0].filters[0]);
    match hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => assert_eq!(rds.route_config_name, "8080"),
        other => panic!("not RDS: {other:?}"),
    }
    assert!(g.routes.contains_key("8080"));

    let tcp = listener(&g, "127.3.0.2_5432");
    assert_eq!(address(&tcp), "127.3.0.2:5432");
    let chain = tcp.default_filter_chain.expect("a default chain");
    let proxy: TcpProxy = typed(&chain.filters[0]);
    assert_eq!(
        proxy.cluster_specifier,
        Some(ClusterSpecifier::Cluster(
            "outbound|5432||db.default.svc.cluster.local".into()
        )),
        "the first service by host name"
    );
    // No capture listeners and no unbound port listeners.
    for gone in [
        "virtualOutbound",
        "virtualInbound",
        "0.0.0.0_8080",
        "0.0.0.0_5432",
    ] {
        assert!(!g.listeners.contains_key(gone), "{gone} is still there");
    }
    // The generated Sidecar's warning: two TCP services share 5432.
    let w: Vec<String> = warnings(&snap).iter().map(ToString::to_string).collect();
    assert!(
        w.iter()
            .any(|w| w.contains("Sidecar default/order-0") && w.contains("spec.egress[1].port")),
        "{w:?}"
    );
}

#[test]
fn bound_ingress_listener_forwards_to_the_default_endpoint_with_strict_mtls() {
    let (snap, instances) = mesh();
    let g = generate(&snap, &proxy(&instances[0]));
    let l = listener(&g, "127.1.0.2_8080");
    assert_eq!(address(&l), "127.1.0.2:8080");
    assert_eq!(l.traffic_direction, 1);
    let names: Vec<&str> = l.filter_chains.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["0.0.0.0_8080-mtls", "0.0.0.0_8080-plaintext-refused"],
        "STRICT: mTLS or nothing"
    );
    assert!(l.filter_chains[0].transport_socket.is_some());
    let c: Cluster = unpack(g.clusters.get("inbound|8080||").expect("inbound cluster")).unwrap();
    let ep = c.load_assignment.unwrap().endpoints[0].lb_endpoints[0].clone();
    let Some(HostIdentifier::Endpoint(ep)) = ep.host_identifier else {
        panic!("no endpoint");
    };
    let a = Listener {
        address: ep.address,
        ..Default::default()
    };
    assert_eq!(address(&a), "127.2.0.2:8080", "the defaultEndpoint");
    // Outbound clusters reach other pods at their pod address.
    assert!(
        g.endpoints
            .contains_key("outbound|8080||inventory.default.svc.cluster.local")
    );
}

#[test]
fn cached_generation_matches_and_other_proxies_keep_capture() {
    let (snap, instances) = mesh();
    let cache = GenerationCache::new();
    for i in &instances {
        let p = proxy(i);
        assert_eq!(
            generate_cached(&snap, &p, &cache),
            generate(&snap, &p),
            "{}",
            i.name
        );
    }
    // inventory-0 has no Sidecar of its own: Istio's usual capture listeners.
    let g = generate(&snap, &proxy(&instances[1]));
    assert!(g.listeners.contains_key("virtualOutbound"));
    assert!(g.listeners.contains_key("virtualInbound"));
    assert!(g.listeners.contains_key("0.0.0.0_8080"));
    assert!(!g.listeners.keys().any(|k| k.starts_with("127.")));
}

/// The RDS name of a listener's first HTTP chain.
fn rds(l: &Listener) -> String {
    let hcm: HttpConnectionManager = typed(&l.filter_chains[0].filters[0]);
    match hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => rds.route_config_name,
        other => panic!("not RDS: {other:?}"),
    }
}

fn route(g: &Generated, name: &str) -> RouteConfiguration {
    let any = g
        .routes
        .get(name)
        .unwrap_or_else(|| panic!("no route {name}: {:?}", g.routes.keys()));
    unpack(any).unwrap()
}

fn vhost<'a>(rc: &'a RouteConfiguration, name: &str) -> &'a VirtualHost {
    rc.virtual_hosts
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no virtual host {name} in {}", rc.name))
}

fn tcp_cluster(l: &Listener) -> String {
    let chain = l.default_filter_chain.as_ref().expect("a default chain");
    let proxy: TcpProxy = typed(&chain.filters[0]);
    match proxy.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => c,
        other => panic!("{other:?}"),
    }
}

const INVENTORY: &str = "inventory.default.svc.cluster.local:8080";

#[test]
fn an_egress_address_per_service_routes_only_to_it_and_answers_its_own_address() {
    let (snap, instances) = mesh();
    let g = generate(&snap, &proxy(&instances[4]));
    // Several listeners on 8080: each its own route `<bind>:<port>`.
    let inv = listener(&g, "127.4.0.6_8080");
    assert_eq!(address(&inv), "127.4.0.6:8080");
    assert_eq!(rds(&inv), "127.4.0.6:8080");
    assert_eq!(rds(&listener(&g, "127.3.0.6_8080")), "127.3.0.6:8080");
    let rc = route(&g, "127.4.0.6:8080");
    let names: Vec<&str> = rc.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, [INVENTORY, "block_all"], "only its own hosts");
    let domains = &vhost(&rc, INVENTORY).domains;
    for d in ["inventory", "inventory:8080", "127.4.0.6", "127.4.0.6:8080"] {
        assert!(domains.iter().any(|x| x == d), "{d} not in {domains:?}");
    }
    assert!(
        !domains.iter().any(|d| d.starts_with("127.3.")),
        "{domains:?}"
    );
    let rc = route(&g, "127.3.0.6:8080");
    let order = vhost(&rc, "order.default.svc.cluster.local:8080");
    assert!(order.domains.iter().any(|d| d == "127.3.0.6:8080"));
    assert_eq!(rc.virtual_hosts.len(), 2);
    // The scope-wide `8080` is used by no listener any more.
    assert_eq!(
        g.routes.keys().collect::<Vec<_>>(),
        ["127.3.0.6:8080", "127.4.0.6:8080"]
    );
    // TCP: each address forwards to its own service, and nothing to warn.
    assert_eq!(
        tcp_cluster(&listener(&g, "127.5.0.6_5432")),
        "outbound|5432||db.default.svc.cluster.local"
    );
    assert_eq!(
        tcp_cluster(&listener(&g, "127.6.0.6_5432")),
        "outbound|5432||zdb.default.svc.cluster.local"
    );
    let w: Vec<String> = warnings(&snap).iter().map(ToString::to_string).collect();
    assert!(!w.iter().any(|w| w.contains("client-0")), "{w:?}");
}

#[test]
fn one_listener_on_a_port_keeps_istios_route_name_scoped_to_its_hosts() {
    let (snap, instances) = mesh();
    let g = generate(&snap, &proxy(&instances[5]));
    let l = listener(&g, "127.3.0.7_8080");
    assert_eq!(rds(&l), "8080");
    let rc = route(&g, "8080");
    let names: Vec<&str> = rc.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        [INVENTORY, "block_all"],
        "not order: not in its hosts"
    );
    let domains = &vhost(&rc, INVENTORY).domains;
    assert!(domains.iter().any(|d| d == "127.3.0.7:8080"), "{domains:?}");
    // order-0's listener admits every host on 8080: no address is one
    // service's, so none is a domain.
    let g = generate(&snap, &proxy(&instances[0]));
    let rc = route(&g, "8080");
    assert!(rc.virtual_hosts.len() >= 3, "{:?}", rc.virtual_hosts);
    assert!(
        !rc.virtual_hosts
            .iter()
            .flat_map(|v| &v.domains)
            .any(|d| d.starts_with("127.")),
        "{rc:?}"
    );
}

#[test]
fn bound_routes_in_vhds_form_and_cached_generation_agree() {
    let (snap, instances) = mesh();
    let mut p = proxy(&instances[4]);
    p.vhds = true;
    let g = generate(&snap, &p);
    let names: Vec<&String> = g.virtual_hosts.keys().collect();
    assert_eq!(
        names,
        [
            "127.3.0.6:8080/order.default.svc.cluster.local:8080",
            "127.4.0.6:8080/inventory.default.svc.cluster.local:8080"
        ]
    );
    let vh: VirtualHost = unpack(&g.virtual_hosts[names[1].as_str()]).unwrap();
    assert!(vh.domains.iter().any(|d| d == "127.4.0.6:8080"));
    let rc = route(&g, "127.4.0.6:8080");
    assert!(rc.vhds.is_some());
    let cache = GenerationCache::new();
    for i in &instances {
        for vhds in [false, true] {
            let mut p = proxy(i);
            p.vhds = vhds;
            assert_eq!(generate_cached(&snap, &p, &cache), generate(&snap, &p));
        }
    }
}
