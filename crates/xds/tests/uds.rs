//! ADS over a Unix domain socket: the server's `serve_unix` and a client
//! addressed as `unix:///path` (how pilot-agent serves Envoy's xDS, and how
//! a proxy in another network namespace reaches a control plane sharing
//! its filesystem).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwork_xds::client::{AdsClient, ClientConfig, ResourceError, ResourceSink};
use meshwork_xds::envoy_types::pb::envoy::config::cluster::v3::Cluster;
use meshwork_xds::envoy_types::pb::envoy::config::core::v3::Node;
use meshwork_xds::envoy_types::pb::google::protobuf::Any;
use meshwork_xds::server::AdsServer;
use meshwork_xds::{TypeUrl, pack, unpack};

/// Records the cluster names of every CDS update.
#[derive(Default)]
struct Clusters(Mutex<BTreeMap<String, Vec<String>>>);

impl ResourceSink for Clusters {
    fn apply(&self, t: TypeUrl, version: &str, resources: &[Any]) -> Vec<ResourceError> {
        if t == TypeUrl::Cluster {
            let names = resources
                .iter()
                .map(|r| unpack::<Cluster>(r).expect("a Cluster").name)
                .collect();
            self.0.lock().unwrap().insert(version.to_string(), names);
        }
        Vec::new()
    }

    fn wanted(&self, _: TypeUrl) -> Vec<String> {
        Vec::new()
    }
}

fn cluster(name: &str) -> (String, Any) {
    let c = Cluster {
        name: name.into(),
        ..Default::default()
    };
    (name.to_string(), pack(&c))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_receives_and_acks_resources_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xds.sock");
    let server = AdsServer::new();
    server.set(TypeUrl::Cluster, [cluster("a"), cluster("b")]);
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let serving = tokio::spawn(server.clone().serve_unix(listener));

    let sink = Arc::new(Clusters::default());
    let node = Node {
        id: "sidecar~10.0.0.1~uds.default~default.svc.cluster.local".into(),
        ..Default::default()
    };
    let address = format!("unix://{}", path.display());
    let client = AdsClient::spawn(ClientConfig::new(address, node), sink.clone());

    // The first push, then a change pushed over the same stream. Versions
    // are content hashes: check what each ACKed version carried.
    let mut status = client.status();
    let acked_with = |names: &'static [&'static str]| {
        let sink = sink.clone();
        move |s: &meshwork_xds::client::ClientStatus| {
            s.types.get(&TypeUrl::Cluster).is_some_and(|t| {
                sink.0
                    .lock()
                    .unwrap()
                    .get(&t.acked_version)
                    .is_some_and(|n| n == names)
            })
        }
    };
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(acked_with(&["a", "b"])),
    )
    .await
    .expect("the first CDS version ACKed over the socket within 10 s")
    .unwrap();
    let first = status.borrow().types[&TypeUrl::Cluster]
        .acked_version
        .clone();
    server.set(TypeUrl::Cluster, [cluster("c")]);
    tokio::time::timeout(Duration::from_secs(10), status.wait_for(acked_with(&["c"])))
        .await
        .expect("the second CDS version ACKed over the socket within 10 s")
        .unwrap();
    let second = status.borrow().types[&TypeUrl::Cluster]
        .acked_version
        .clone();
    assert_ne!(first, second, "a change has a new version");
    assert_eq!(client.status().borrow().connects, 1);

    // The server saw the node over the socket and recorded its ACK.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let nodes = server.nodes();
        let acked = nodes
            .get("sidecar~10.0.0.1~uds.default~default.svc.cluster.local")
            .and_then(|n| n.types.get(&TypeUrl::Cluster))
            .is_some_and(|t| t.acked_version == second);
        if acked {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server never recorded the ACK: {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.shutdown();
    serving.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnects_when_the_socket_appears_later() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.sock");
    let sink = Arc::new(Clusters::default());
    let mut config = ClientConfig::new(format!("unix://{}", path.display()), Node::default());
    config.initial_backoff = Duration::from_millis(20);
    config.max_backoff = Duration::from_millis(100);
    let client = AdsClient::spawn(config, sink.clone());

    // Nothing listens yet: the client reports the connect error.
    let mut status = client.status();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.last_error.is_some()),
    )
    .await
    .expect("a connect error is reported within 10 s")
    .unwrap();
    assert!(!status.borrow().connected);

    let server = AdsServer::new();
    server.set(TypeUrl::Cluster, [cluster("late")]);
    let serving = tokio::spawn(
        server
            .clone()
            .serve_unix(tokio::net::UnixListener::bind(&path).unwrap()),
    );
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| {
            s.connected
                && s.types
                    .get(&TypeUrl::Cluster)
                    .is_some_and(|t| !t.acked_version.is_empty())
        }),
    )
    .await
    .expect("connected and ACKed after the socket appeared")
    .unwrap();
    let version = status.borrow().types[&TypeUrl::Cluster]
        .acked_version
        .clone();
    assert_eq!(
        sink.0.lock().unwrap().get(&version),
        Some(&vec!["late".to_string()])
    );
    client.shutdown();
    serving.abort();
}
