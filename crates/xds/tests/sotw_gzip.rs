//! gRPC gzip of state-of-the-world responses: a client that advertises
//! gzip gets the shared set compressed (deflated once for every such
//! stream) and decodes the very response a plain client gets.

use std::time::Duration;

use futures::StreamExt;
use meshwork_xds::envoy_types::pb::envoy::config::cluster::v3::Cluster;
use meshwork_xds::envoy_types::pb::envoy::config::core::v3::Node;
use meshwork_xds::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use meshwork_xds::envoy_types::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse,
};
use meshwork_xds::server::AdsServer;
use meshwork_xds::{TypeUrl, pack};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;

type Client = AggregatedDiscoveryServiceClient<tonic::transport::Channel>;

/// A server with 200 clusters named like Istio's (compressible).
fn server() -> AdsServer {
    let server = AdsServer::new();
    server.set(
        TypeUrl::Cluster,
        (0..200).map(|i| {
            let name = format!("outbound|8080||svc-{i}.default.svc.cluster.local");
            let c = Cluster {
                name: name.clone(),
                ..Default::default()
            };
            (name, pack(&c))
        }),
    );
    server
}

/// Opens a CDS stream; returns the response's `grpc-encoding` and its
/// first message.
async fn first(client: &mut Client, id: &str) -> (Option<String>, DiscoveryResponse) {
    let (tx, rx) = mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: Some(Node {
            id: id.into(),
            ..Default::default()
        }),
        type_url: TypeUrl::Cluster.as_str().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let res = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap();
    let encoding = res
        .metadata()
        .get("grpc-encoding")
        .map(|v| v.to_str().unwrap().to_string());
    let mut stream = res.into_inner();
    let r = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a response")
        .expect("stream open")
        .expect("ok");
    drop(tx);
    (encoding, r)
}

#[tokio::test]
async fn gzip_clients_get_the_shared_set_compressed_once() {
    let server = server();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(server.clone().serve(l));
    let metrics = server.metrics().clone();
    let url = format!("http://{addr}");
    let mut plain = AggregatedDiscoveryServiceClient::connect(url.clone())
        .await
        .unwrap();
    let mut gzip = AggregatedDiscoveryServiceClient::connect(url)
        .await
        .unwrap()
        .accept_compressed(CompressionEncoding::Gzip);

    let (enc, want) = first(&mut plain, "plain").await;
    assert_eq!(enc, None, "no gzip unless advertised");
    assert_eq!(metrics.compressed_bytes.get(), 0);
    let plain_sent = metrics.sent_bytes.get();

    let (enc, got) = first(&mut gzip, "gz1").await;
    assert_eq!(enc.as_deref(), Some("gzip"));
    assert_eq!(got.resources, want.resources);
    assert_eq!(got.version_info, want.version_info);
    assert_eq!(got.type_url, want.type_url);
    assert_eq!(got.nonce, "1");
    let compressed = metrics.compressed_bytes.get();
    assert!(compressed > 0);
    let gzip_sent = metrics.sent_bytes.get() - plain_sent;
    assert!(
        gzip_sent * 4 < plain_sent,
        "compressed {gzip_sent} vs plain {plain_sent} bytes"
    );

    let (_, again) = first(&mut gzip, "gz2").await;
    assert_eq!(again.resources, want.resources);
    assert_eq!(
        metrics.compressed_bytes.get(),
        compressed,
        "compressed once per set"
    );
}
