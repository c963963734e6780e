//! mTLS in Istio's shapes: PeerAuthentication → the inbound listener's
//! chains (mesh / namespace / workload / port precedence, default
//! PERMISSIVE), auto mTLS on outbound clusters (endpoints with a sidecar
//! carry `tlsMode: istio`), and DestinationRule `tls` modes.

mod common;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
use meshwork_translate::{Generated, generate};
use meshwork_xds::unpack;

fn bookinfo(extra: &str) -> (Generated, Generated) {
    let (snap, instances) = common::snapshot(common::load(&["bookinfo.yaml"], extra));
    let reviews = generate(&snap, &common::sidecar(&instances, "reviews-v1"));
    let product = generate(&snap, &common::sidecar(&instances, "productpage-v1"));
    (reviews, product)
}

fn virtual_inbound(g: &Generated) -> Listener {
    unpack(g.listeners.get("virtualInbound").expect("virtualInbound")).unwrap()
}

/// Chains naming `port`: (name, transport protocol, has TLS).
fn chains_on(l: &Listener, port: u32) -> Vec<(String, String, bool)> {
    l.filter_chains
        .iter()
        .filter(|c| {
            c.filter_chain_match
                .as_ref()
                .and_then(|m| m.destination_port.as_ref())
                .is_some_and(|p| p.value == port)
        })
        .map(|c: &FilterChain| {
            let m = c.filter_chain_match.as_ref().unwrap();
            (
                c.name.clone(),
                m.transport_protocol.clone(),
                c.transport_socket.is_some(),
            )
        })
        .collect()
}

fn mode_of(l: &Listener, port: u32) -> &'static str {
    let chains = chains_on(l, port);
    let tls = chains.iter().any(|c| c.1 == "tls" && c.2);
    let refused = chains.iter().any(|c| c.0.ends_with("plaintext-refused"));
    let plain = chains
        .iter()
        .any(|c| !c.2 && !c.0.ends_with("plaintext-refused"));
    match (tls, plain, refused) {
        (true, false, true) => "STRICT",
        (true, true, false) => "PERMISSIVE",
        (false, true, false) => "DISABLE",
        other => panic!("unexpected chains on {port}: {chains:?} {other:?}"),
    }
}

#[test]
fn default_is_permissive() {
    let (reviews, _) = bookinfo("");
    let l = virtual_inbound(&reviews);
    assert_eq!(mode_of(&l, 9080), "PERMISSIVE");
    let mtls = l
        .filter_chains
        .iter()
        .find(|c| c.name.ends_with("-mtls") && c.transport_socket.is_some())
        .unwrap();
    let m = mtls.filter_chain_match.as_ref().unwrap();
    assert!(
        m.application_protocols
            .contains(&"istio-peer-exchange".to_string())
    );
    // Undeclared ports pass through, plaintext or mTLS.
    assert_eq!(
        l.default_filter_chain.unwrap().name,
        "InboundPassthroughFilterChain"
    );
}

const NS_STRICT: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
"#;

#[test]
fn namespace_strict_refuses_plaintext() {
    let (reviews, _) = bookinfo(NS_STRICT);
    let l = virtual_inbound(&reviews);
    assert_eq!(mode_of(&l, 9080), "STRICT");
    assert_eq!(
        l.default_filter_chain.unwrap().name,
        "virtualInbound-plaintext-refused"
    );
}

#[test]
fn precedence_mesh_namespace_workload_port() {
    let mesh_disable = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: DISABLE}}
"#;
    let (reviews, _) = bookinfo(mesh_disable);
    assert_eq!(mode_of(&virtual_inbound(&reviews), 9080), "DISABLE");

    // Namespace beats mesh.
    let (reviews, _) = bookinfo(&format!("{mesh_disable}---{NS_STRICT}"));
    assert_eq!(mode_of(&virtual_inbound(&reviews), 9080), "STRICT");

    // Workload beats namespace; UNSET inherits; port level beats workload.
    let workload = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls:
    "9080": {mode: DISABLE}
"#;
    let (reviews, product) = bookinfo(&format!("{NS_STRICT}---{workload}"));
    assert_eq!(mode_of(&virtual_inbound(&reviews), 9080), "DISABLE");
    assert_eq!(mode_of(&virtual_inbound(&product), 9080), "STRICT");
    let unset = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: UNSET}
"#;
    let (reviews, _) = bookinfo(&format!("{NS_STRICT}---{unset}"));
    assert_eq!(mode_of(&virtual_inbound(&reviews), 9080), "STRICT");
}

fn cluster(g: &Generated, name: &str) -> Cluster {
    unpack(g.clusters.get(name).unwrap_or_else(|| panic!("no {name}"))).unwrap()
}

fn cla(g: &Generated, name: &str) -> ClusterLoadAssignment {
    unpack(g.endpoints.get(name).unwrap_or_else(|| panic!("no {name}"))).unwrap()
}

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";

#[test]
fn auto_mtls_on_outbound_clusters_and_sidecar_endpoints() {
    let (_, product) = bookinfo(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
  hosts: [ext.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.5.0.1}
  - {address: 10.5.0.2, labels: {security.istio.io/tlsMode: istio}}
"#,
    );
    let c = cluster(&product, REVIEWS);
    let names: Vec<&str> = c
        .transport_socket_matches
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["tlsMode-istio", "tlsMode-disabled"]);
    let tls: UpstreamTlsContext = unpack(
        match c.transport_socket_matches[0]
            .transport_socket
            .as_ref()
            .unwrap()
            .config_type
            .as_ref()
            .unwrap()
        {
            envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
                a,
            ) => a,
        },
    )
    .unwrap();
    assert_eq!(
        tls.sni,
        "outbound_.9080_._.reviews.default.svc.cluster.local"
    );
    let common = tls.common_tls_context.unwrap();
    assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "default");
    assert_eq!(common.alpn_protocols, ["istio-peer-exchange", "istio"]);
    match common.validation_context_type.unwrap() {
        ValidationContextType::CombinedValidationContext(v) => {
            assert_eq!(
                v.validation_context_sds_secret_config.unwrap().name,
                "ROOTCA"
            )
        }
        other => panic!("{other:?}"),
    }
    // Deployment endpoints have a sidecar.
    let eps = cla(&product, REVIEWS);
    let md = eps.endpoints[0].lb_endpoints[0].metadata.as_ref().unwrap();
    assert!(
        md.filter_metadata
            .contains_key("envoy.transport_socket_match")
    );
    // ServiceEntry endpoints only with the tlsMode label.
    let ext = cla(&product, "outbound|80||ext.example.com");
    let marked: Vec<bool> = ext
        .endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| {
            e.metadata.as_ref().is_some_and(|m| {
                m.filter_metadata
                    .contains_key("envoy.transport_socket_match")
            })
        })
        .collect();
    assert_eq!(marked.iter().filter(|m| **m).count(), 1, "{marked:?}");
}

#[test]
fn destination_rule_tls_modes() {
    let dr = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: DISABLE}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      tls:
        mode: ISTIO_MUTUAL
        subjectAltNames: [spiffe://cluster.local/ns/default/sa/bookinfo-reviews]
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      tls:
        mode: MUTUAL
        clientCertificate: /etc/certs/cert.pem
        privateKey: /etc/certs/key.pem
        caCertificates: /etc/certs/ca.pem
        sni: reviews.example.com
  - name: v3
    labels: {version: v3}
    trafficPolicy:
      portLevelSettings:
      - port: {number: 9080}
        tls: {mode: SIMPLE, sni: v3.example.com}
"#;
    let (_, product) = bookinfo(dr);
    let top = cluster(&product, REVIEWS);
    assert!(top.transport_socket.is_none() && top.transport_socket_matches.is_empty());
    let tls_of =
        |c: &Cluster| -> UpstreamTlsContext {
            match c.transport_socket.as_ref().unwrap().config_type.as_ref().unwrap() {
            envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
                a,
            ) => unpack(a).unwrap(),
        }
        };
    let v1 = tls_of(&cluster(
        &product,
        "outbound|9080|v1|reviews.default.svc.cluster.local",
    ));
    assert_eq!(
        v1.sni,
        "outbound_.9080_.v1_.reviews.default.svc.cluster.local"
    );
    let common = v1.common_tls_context.unwrap();
    match common.validation_context_type.unwrap() {
        ValidationContextType::CombinedValidationContext(v) => {
            let sans = v
                .default_validation_context
                .unwrap()
                .match_typed_subject_alt_names;
            assert_eq!(sans.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    let v2 = tls_of(&cluster(
        &product,
        "outbound|9080|v2|reviews.default.svc.cluster.local",
    ));
    assert_eq!(v2.sni, "reviews.example.com");
    let common = v2.common_tls_context.unwrap();
    assert_eq!(
        common.tls_certificate_sds_secret_configs[0].name,
        "file-cert:/etc/certs/cert.pem~/etc/certs/key.pem"
    );
    let v3 = tls_of(&cluster(
        &product,
        "outbound|9080|v3|reviews.default.svc.cluster.local",
    ));
    assert_eq!(v3.sni, "v3.example.com");
    assert!(
        v3.common_tls_context
            .unwrap()
            .tls_certificate_sds_secret_configs
            .is_empty()
    );
}
