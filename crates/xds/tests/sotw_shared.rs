//! State-of-the-world responses are encoded once per shared set: streams
//! that get a set whole share one encoding, a stream subscribed to part of
//! a set gets its own, and the plain tonic-generated service (the fallback
//! for anyone mounting it directly) sends the same responses.

use std::time::Duration;

use futures::StreamExt;
use meshwork_xds::envoy_types::pb::envoy::config::cluster::v3::Cluster;
use meshwork_xds::envoy_types::pb::envoy::config::core::v3::Node;
use meshwork_xds::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use meshwork_xds::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use meshwork_xds::envoy_types::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse,
};
use meshwork_xds::server::AdsServer;
use meshwork_xds::{TypeUrl, pack};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

type Client = AggregatedDiscoveryServiceClient<tonic::transport::Channel>;

fn server_with_clusters() -> AdsServer {
    let server = AdsServer::new();
    server.set(
        TypeUrl::Cluster,
        ["a", "b"].map(|n| {
            let c = Cluster {
                name: n.into(),
                ..Default::default()
            };
            (n.to_string(), pack(&c))
        }),
    );
    server
}

async fn connect(addr: std::net::SocketAddr) -> Client {
    AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// Opens a stream subscribing to CDS `names` and returns its first response.
async fn first(client: &mut Client, id: &str, names: &[&str]) -> DiscoveryResponse {
    let (tx, rx) = mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: Some(Node {
            id: id.into(),
            ..Default::default()
        }),
        type_url: TypeUrl::Cluster.as_str().into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let r = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a response")
        .expect("stream open")
        .expect("ok");
    // Keep the request side open until the response is read.
    drop(tx);
    r
}

fn names(r: &DiscoveryResponse) -> Vec<String> {
    r.resources
        .iter()
        .map(|a| Cluster::decode(a.value.as_slice()).unwrap().name)
        .collect()
}

#[tokio::test]
async fn whole_sets_are_encoded_once_and_parts_per_stream() {
    let server = server_with_clusters();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(server.clone().serve(l));
    let mut client = connect(addr).await;
    let metrics = server.metrics().clone();

    let one = first(&mut client, "n1", &[]).await;
    let encoded = metrics.encoded_bytes.get();
    assert!(encoded > 0);
    let two = first(&mut client, "n2", &["*"]).await;
    // A superset of the names gets the whole set too.
    let three = first(&mut client, "n3", &["a", "b", "zzz"]).await;
    assert_eq!(names(&one), ["a", "b"]);
    for r in [&two, &three] {
        assert_eq!(r.resources, one.resources);
        assert_eq!(r.version_info, one.version_info);
        assert_eq!(r.type_url, TypeUrl::Cluster.as_str());
    }
    assert_eq!(
        metrics.encoded_bytes.get(),
        encoded,
        "whole set encoded once"
    );

    let part = first(&mut client, "n4", &["b"]).await;
    assert_eq!(names(&part), ["b"]);
    assert_ne!(part.version_info, one.version_info);
    assert!(
        metrics.encoded_bytes.get() > encoded,
        "a part is encoded apart"
    );
    assert_eq!(metrics.pushes_of(TypeUrl::Cluster), 4);
}

#[tokio::test]
async fn the_plain_generated_service_sends_the_same_responses() {
    let server = server_with_clusters();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let plain = AggregatedDiscoveryServiceServer::new(server.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(plain)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    let mut client = connect(addr).await;
    let r = first(&mut client, "p1", &[]).await;
    assert_eq!(names(&r), ["a", "b"]);
    assert_eq!(r.nonce, "1");
    assert!(!r.version_info.is_empty());
}
