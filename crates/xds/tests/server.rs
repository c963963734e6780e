//! The ADS server with a real tonic client: state of the world pushes only
//! changed types; delta pushes only changed resources and removals; a
//! per-node source gives each proxy its own resources.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use meshwork_xds::envoy_types::pb::envoy::config::cluster::v3::Cluster;
use meshwork_xds::envoy_types::pb::envoy::config::core::v3::Node;
use meshwork_xds::envoy_types::pb::envoy::config::listener::v3::Listener;
use meshwork_xds::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use meshwork_xds::envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use meshwork_xds::envoy_types::pb::google::protobuf::Any;
use meshwork_xds::server::{
    AdsServer, NodeResources, ResourceSource, ServerMetrics, TypeResources, Versioned,
};
use meshwork_xds::{TypeUrl, pack};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

fn cluster(name: &str, timeout_s: i64) -> (String, Any) {
    let c = Cluster {
        name: name.into(),
        connect_timeout: Some(meshwork_xds::envoy_types::pb::google::protobuf::Duration {
            seconds: timeout_s,
            nanos: 0,
        }),
        ..Default::default()
    };
    (name.to_string(), pack(&c))
}

fn listener(name: &str) -> (String, Any) {
    (
        name.to_string(),
        pack(&Listener {
            name: name.into(),
            ..Default::default()
        }),
    )
}

async fn start(server: AdsServer) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(server.serve(l));
    AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn node(id: &str) -> Option<Node> {
    Some(Node {
        id: id.into(),
        ..Default::default()
    })
}

async fn next<T>(s: &mut tonic::Streaming<T>) -> Option<T> {
    tokio::time::timeout(Duration::from_millis(500), s.next())
        .await
        .ok()
        .flatten()
        .map(|r| r.unwrap())
}

#[tokio::test]
async fn sotw_pushes_only_types_that_changed() {
    let server = AdsServer::new();
    server.set(TypeUrl::Cluster, [cluster("a", 1)]);
    server.set(TypeUrl::Listener, [listener("l")]);
    let mut client = start(server.clone()).await;
    let (tx, rx) = mpsc::channel(8);
    let req = |t: TypeUrl, version: &str, nonce: &str, first: bool| DiscoveryRequest {
        node: if first { node("n1") } else { None },
        type_url: t.as_str().into(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    };
    tx.send(req(TypeUrl::Cluster, "", "", true)).await.unwrap();
    tx.send(req(TypeUrl::Listener, "", "", false))
        .await
        .unwrap();
    let mut stream = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut got: BTreeMap<String, DiscoveryResponse> = BTreeMap::new();
    for _ in 0..2 {
        let r = next(&mut stream).await.expect("initial responses");
        got.insert(r.type_url.clone(), r);
    }
    for r in got.values() {
        tx.send(req(
            TypeUrl::parse(&r.type_url).unwrap(),
            &r.version_info,
            &r.nonce,
            false,
        ))
        .await
        .unwrap();
    }
    // Change clusters only: exactly one CDS response follows, no LDS.
    server.set(TypeUrl::Cluster, [cluster("a", 2)]);
    let r = next(&mut stream).await.expect("a CDS push");
    assert_eq!(r.type_url, TypeUrl::Cluster.as_str());
    assert_ne!(r.version_info, got[TypeUrl::Cluster.as_str()].version_info);
    assert!(
        next(&mut stream).await.is_none(),
        "listeners did not change: nothing else pushed"
    );
    // Setting identical content pushes nothing at all.
    tx.send(req(TypeUrl::Cluster, &r.version_info, &r.nonce, false))
        .await
        .unwrap();
    server.set(TypeUrl::Cluster, [cluster("a", 2)]);
    assert!(next(&mut stream).await.is_none());
    let status = server.nodes();
    assert_eq!(
        status["n1"].types[&TypeUrl::Cluster].acked_version,
        r.version_info
    );
}

#[tokio::test]
async fn delta_sends_changes_and_removals_only() {
    let server = AdsServer::new();
    server.set(TypeUrl::Cluster, [cluster("a", 1), cluster("b", 1)]);
    let mut client = start(server.clone()).await;
    let (tx, rx) = mpsc::channel(8);
    tx.send(DeltaDiscoveryRequest {
        node: node("d1"),
        type_url: TypeUrl::Cluster.as_str().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first: DeltaDiscoveryResponse = next(&mut stream).await.expect("initial state");
    let names: Vec<_> = first.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let versions: std::collections::HashMap<String, String> = first
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    tx.send(DeltaDiscoveryRequest {
        type_url: TypeUrl::Cluster.as_str().into(),
        response_nonce: first.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();

    // Change a, remove b, add c.
    server.set(TypeUrl::Cluster, [cluster("a", 5), cluster("c", 1)]);
    let update = next(&mut stream).await.expect("a delta update");
    let mut changed: Vec<_> = update.resources.iter().map(|r| r.name.as_str()).collect();
    changed.sort();
    assert_eq!(changed, ["a", "c"]);
    assert_eq!(update.removed_resources, ["b"]);
    drop(tx);

    // Reconnect with what the client has: nothing is resent.
    let mut client = start_again(&server).await;
    let (tx, rx) = mpsc::channel(8);
    let mut have = versions;
    have.remove("b");
    for r in &update.resources {
        have.insert(r.name.clone(), r.version.clone());
    }
    tx.send(DeltaDiscoveryRequest {
        node: node("d1"),
        type_url: TypeUrl::Cluster.as_str().into(),
        initial_resource_versions: have,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let again = next(&mut stream)
        .await
        .expect("an answer to the first request");
    assert!(
        again.resources.is_empty() && again.removed_resources.is_empty(),
        "the client already has everything: {again:?}"
    );
    assert!(server.nodes()["d1"].delta);
}

async fn start_again(
    server: &AdsServer,
) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
    start(server.clone()).await
}

/// Gives each node a cluster named after its id.
struct PerNode {
    generation: watch::Sender<u64>,
    calls: Mutex<u32>,
}

impl ResourceSource for PerNode {
    fn resources(&self, node: &Node) -> Arc<NodeResources> {
        *self.calls.lock().unwrap() += 1;
        let (name, any) = cluster(&format!("for-{}", node.id), 1);
        let set = TypeResources::new(TypeUrl::Cluster, [(name, Versioned::new(any))].into());
        Arc::new([(TypeUrl::Cluster, Arc::new(set))].into())
    }
    fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

#[tokio::test]
async fn each_node_gets_its_own_resources() {
    let source = Arc::new(PerNode {
        generation: watch::Sender::new(0),
        calls: Mutex::new(0),
    });
    let metrics = ServerMetrics::default();
    let server = AdsServer::with_source(source.clone(), metrics.clone());
    let mut client = start(server.clone()).await;
    for id in ["x", "y"] {
        let (tx, rx) = mpsc::channel(8);
        tx.send(DiscoveryRequest {
            node: node(id),
            type_url: TypeUrl::Cluster.as_str().into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut stream = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let r = next(&mut stream).await.unwrap();
        let c: Cluster = meshwork_xds::unpack(&r.resources[0]).unwrap();
        assert_eq!(c.name, format!("for-{id}"));
        std::mem::forget(tx);
    }
    assert_eq!(metrics.connected.get(), 2);
    assert!(metrics.pushes_of(TypeUrl::Cluster) >= 2);
}
