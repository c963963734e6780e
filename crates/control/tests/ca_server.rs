//! The control plane's CA on its TLS port: a sidecar-style client obtains
//! a certificate using the root the control plane wrote to its state
//! directory, ADS answers on the same TLS port, and a restart with the same
//! state directory keeps the same root (old sidecars keep trusting it).

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::Any;
use meshwork_control::ca::{CaServeOptions, start};
use meshwork_identity::SpiffeId;
use meshwork_identity::certinfo::CertInfo;
use meshwork_identity::client::{ClientOptions, fetch_identity};
use meshwork_identity::pem::certs_from_pem;
use meshwork_identity::transport::{client_config, connect};
use meshwork_xds::TypeUrl;
use meshwork_xds::server::AdsServer;

fn options(dir: &std::path::Path) -> CaServeOptions {
    CaServeOptions {
        state_dir: Some(dir.join("state")),
        plugin_dir: None,
        trust_domain: "cluster.local".into(),
        tokens: Some(dir.join("tokens")),
        cert_ttl: Duration::from_secs(3600),
        address: "127.0.0.1:0".parse().unwrap(),
        extra_sans: vec!["cp.example.internal".into()],
    }
}

fn client(dir: &std::path::Path, addr: std::net::SocketAddr) -> ClientOptions {
    ClientOptions {
        address: addr.to_string(),
        server_name: "istiod.istio-system.svc".into(),
        root_cert: dir.join("state/root-cert.pem"),
        token_file: dir.join("token"),
        id: SpiffeId::new("cluster.local", "shop", "cart"),
        ttl: None,
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn the_ca_serves_beside_ads_and_keeps_its_root_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokens"), "t-cart shop cart\n").unwrap();
    std::fs::write(dir.path().join("token"), "t-cart\n").unwrap();
    let ads = AdsServer::new();
    ads.set(
        TypeUrl::Cluster,
        [(
            "outbound|80||a.shop.svc.cluster.local".to_string(),
            Any {
                type_url: TypeUrl::Cluster.as_str().to_string(),
                value: Vec::new(),
            },
        )],
    );
    let first = start(options(dir.path()), Some(ads.clone())).await.unwrap();
    let root_file = first.root_cert.clone().expect("root-cert.pem written");
    let root_pem = std::fs::read_to_string(&root_file).unwrap();

    // A certificate for the caller's own identity, with the CA's default TTL.
    let identity = fetch_identity(&client(dir.path(), first.addr), &[])
        .await
        .unwrap();
    let leaf = CertInfo::parse(&identity.svid.chain[0]).unwrap();
    assert_eq!(leaf.uris, ["spiffe://cluster.local/ns/shop/sa/cart"]);
    assert_eq!(
        identity
            .svid
            .not_after
            .duration_since(identity.svid.not_before)
            .unwrap(),
        Duration::from_secs(3600)
    );
    assert_eq!(identity.bundle.roots, certs_from_pem(&root_pem).unwrap());

    // ADS over the same TLS port; the serving certificate also names the
    // extra SAN and the bound IP.
    for name in [
        "istiod.istio-system.svc",
        "cp.example.internal",
        "127.0.0.1",
    ] {
        let tls = Arc::new(client_config(first.ca.roots()).unwrap());
        let channel = connect(&first.addr.to_string(), name, tls, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut ads_client = AggregatedDiscoveryServiceClient::new(channel);
        let req = DiscoveryRequest {
            type_url: TypeUrl::Cluster.as_str().to_string(),
            node: Some(Node {
                id: "sidecar~10.0.0.1~cart-1.shop~shop.svc.cluster.local".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut stream = ads_client
            .stream_aggregated_resources(futures::stream::iter([req]))
            .await
            .unwrap()
            .into_inner();
        let resp = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("an ADS answer")
            .unwrap()
            .unwrap();
        assert_eq!(resp.resources.len(), 1);
    }

    // Restart: same root, and the old root file still reaches the CA.
    first.shutdown();
    let second = start(options(dir.path()), None).await.unwrap();
    assert_eq!(std::fs::read_to_string(&root_file).unwrap(), root_pem);
    assert_eq!(second.ca.roots(), first.ca.roots());
    let again = fetch_identity(&client(dir.path(), second.addr), &[])
        .await
        .unwrap();
    assert_eq!(again.bundle.roots, identity.bundle.roots);
    second.shutdown();
}

#[tokio::test]
async fn the_ca_needs_a_key_source_and_names_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.state_dir = None;
    let err = start(opts.clone(), None).await.err().unwrap().to_string();
    assert!(err.contains("--state-dir or --ca-dir"), "{err}");
    opts.plugin_dir = Some(dir.path().join("cacerts"));
    let err = start(opts, None).await.err().unwrap().to_string();
    assert!(err.contains("cacerts/ca-key.pem"), "{err}");
}
