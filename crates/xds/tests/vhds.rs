//! VHDS over delta ADS with a real tonic client: subscribing to a route
//! configuration's name gets all of its virtual hosts; a change pushes only
//! the changed one, computed and encoded once for every synced stream
//! (gzip streams get it compressed and decode the same response); a gone
//! virtual host is named in `removed_resources`; unsubscribing stops the
//! pushes.

use std::time::Duration;

use futures::StreamExt;
use meshwork_xds::envoy_types::pb::envoy::config::core::v3::Node;
use meshwork_xds::envoy_types::pb::envoy::config::route::v3::VirtualHost;
use meshwork_xds::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use meshwork_xds::envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use meshwork_xds::envoy_types::pb::google::protobuf::Any;
use meshwork_xds::server::AdsServer;
use meshwork_xds::{TypeUrl, pack};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;

type Client = AggregatedDiscoveryServiceClient<tonic::transport::Channel>;

/// A virtual host resource `<rc>/<host>:<port>` with `routes` routes (to
/// make it big enough to be worth compressing), tagged with `rev`.
fn vhost(rc: &str, host: &str, rev: u32) -> (String, Any) {
    let name = format!("{host}:{rc}");
    let vh = VirtualHost {
        name: name.clone(),
        domains: vec![
            name.clone(),
            host.into(),
            format!("{host}.default.svc.cluster.local"),
        ],
        routes: (0..=rev)
            .map(|i| envoy_types_route(&format!("r{i}-outbound|{rc}||{host}")))
            .collect(),
        ..Default::default()
    };
    (format!("{rc}/{name}"), pack(&vh))
}

fn envoy_types_route(name: &str) -> meshwork_xds::envoy_types::pb::envoy::config::route::v3::Route {
    meshwork_xds::envoy_types::pb::envoy::config::route::v3::Route {
        name: name.into(),
        ..Default::default()
    }
}

struct Stream {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: tonic::Streaming<DeltaDiscoveryResponse>,
    encoding: Option<String>,
}

impl Stream {
    async fn open(client: &mut Client, id: &str, subscribe: &[&str]) -> Stream {
        let (tx, rx) = mpsc::channel(8);
        tx.send(DeltaDiscoveryRequest {
            node: Some(Node {
                id: id.into(),
                ..Default::default()
            }),
            type_url: TypeUrl::VirtualHost.as_str().into(),
            resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
        let res = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap();
        let encoding = res
            .metadata()
            .get("grpc-encoding")
            .map(|v| v.to_str().unwrap().to_string());
        Stream {
            tx,
            rx: res.into_inner(),
            encoding,
        }
    }

    async fn next(&mut self) -> Option<DeltaDiscoveryResponse> {
        tokio::time::timeout(Duration::from_millis(700), self.rx.next())
            .await
            .ok()
            .flatten()
            .map(|r| r.unwrap())
    }

    /// The next response, ACKed.
    async fn acked(&mut self) -> DeltaDiscoveryResponse {
        let r = self.next().await.expect("a response");
        self.send(DeltaDiscoveryRequest {
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await;
        r
    }

    async fn send(&self, mut req: DeltaDiscoveryRequest) {
        req.type_url = TypeUrl::VirtualHost.as_str().into();
        self.tx.send(req).await.unwrap();
    }
}

fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
    let mut n: Vec<&str> = r.resources.iter().map(|r| r.name.as_str()).collect();
    n.sort();
    n
}

#[tokio::test]
async fn vhds_by_route_configuration_name() {
    let server = AdsServer::new();
    let set = |revs: &[(&str, &str, u32)]| {
        server.set(
            TypeUrl::VirtualHost,
            revs.iter().map(|(rc, h, rev)| vhost(rc, h, *rev)),
        )
    };
    set(&[("8080", "a", 0), ("8080", "b", 0), ("9090", "c", 0)]);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(server.clone().serve(l));
    let url = format!("http://{addr}");
    let mut plain = Client::connect(url.clone()).await.unwrap();
    let mut gzip = Client::connect(url)
        .await
        .unwrap()
        .accept_compressed(CompressionEncoding::Gzip);

    // A stream subscribed to one route configuration gets only its virtual
    // hosts.
    let mut only = Stream::open(&mut plain, "only", &["8080"]).await;
    assert_eq!(names(&only.acked().await), ["8080/a:8080", "8080/b:8080"]);

    // Streams subscribed to both get all of them.
    let mut streams = Vec::new();
    for i in 0..3 {
        let client = if i == 2 { &mut gzip } else { &mut plain };
        let mut s = Stream::open(client, &format!("p{i}"), &["8080", "9090"]).await;
        let first = s.acked().await;
        assert_eq!(names(&first), ["8080/a:8080", "8080/b:8080", "9090/c:9090"]);
        assert!(first.removed_resources.is_empty());
        let vh = VirtualHost::decode(
            first.resources[0]
                .resource
                .as_ref()
                .unwrap()
                .value
                .as_slice(),
        )
        .unwrap();
        assert_eq!(vh.name, "a:8080");
        streams.push(s);
    }
    assert_eq!(streams[2].encoding.as_deref(), Some("gzip"));
    assert_eq!(streams[0].encoding, None);

    // One virtual host changes: only it is pushed, the same to every
    // stream, the delta encoded once for the three synced streams (and
    // once more for the stream subscribed to part of the set).
    let encoded = server.metrics().encoded_bytes.get();
    set(&[("8080", "a", 9), ("8080", "b", 0), ("9090", "c", 0)]);
    let mut updates = Vec::new();
    for s in &mut streams {
        let u = s.acked().await;
        assert_eq!(names(&u), ["8080/a:8080"]);
        assert!(u.removed_resources.is_empty());
        updates.push(u);
    }
    assert_eq!(names(&only.acked().await), ["8080/a:8080"]);
    let payload = DeltaDiscoveryResponse {
        resources: updates[0].resources.clone(),
        type_url: TypeUrl::VirtualHost.as_str().into(),
        ..Default::default()
    };
    assert_eq!(
        server.metrics().encoded_bytes.get() - encoded,
        2 * payload.encoded_len() as u64,
        "encoded once for the synced streams, once for the partial one"
    );
    for u in &updates[1..] {
        assert_eq!(u.resources, updates[0].resources, "gzip decodes the same");
        assert_eq!(u.system_version_info, updates[0].system_version_info);
    }

    // A change to a route configuration `only` did not subscribe to.
    set(&[("8080", "a", 9), ("8080", "b", 0), ("9090", "c", 1)]);
    for s in &mut streams {
        assert_eq!(names(&s.acked().await), ["9090/c:9090"]);
    }
    assert!(only.next().await.is_none(), "9090 is not subscribed");

    // A removed service: named in removed_resources, nothing else sent.
    set(&[("8080", "a", 9), ("9090", "c", 1)]);
    for s in streams.iter_mut().chain([&mut only]) {
        let u = s.acked().await;
        assert!(u.resources.is_empty());
        assert_eq!(u.removed_resources, ["8080/b:8080"]);
    }

    // Subscribing to another route configuration sends its virtual hosts.
    only.send(DeltaDiscoveryRequest {
        resource_names_subscribe: vec!["9090".into()],
        ..Default::default()
    })
    .await;
    assert_eq!(names(&only.acked().await), ["9090/c:9090"]);

    // Unsubscribed: its changes are no longer pushed, the other's are.
    let s = &mut streams[0];
    s.send(DeltaDiscoveryRequest {
        resource_names_unsubscribe: vec!["8080".into()],
        ..Default::default()
    })
    .await;
    assert!(
        s.next().await.is_none(),
        "nothing to send for an unsubscribe"
    );
    set(&[("8080", "a", 10), ("9090", "c", 1)]);
    assert!(s.next().await.is_none(), "8080 is no longer subscribed");
    set(&[("8080", "a", 10), ("9090", "c", 2)]);
    let u = s.acked().await;
    assert_eq!(names(&u), ["9090/c:9090"]);
    assert!(u.removed_resources.is_empty());
    // The streams still subscribed to 8080 got both changes.
    for s in streams[1..].iter_mut().chain([&mut only]) {
        assert_eq!(names(&s.acked().await), ["8080/a:8080"]);
        assert_eq!(names(&s.acked().await), ["9090/c:9090"]);
    }
    assert_eq!(
        server.nodes()["p0"].types[&TypeUrl::VirtualHost].names,
        ["9090"]
    );
}

/// A route configuration without virtual hosts still gets an (empty)
/// answer, so a client waiting for its first VHDS response goes on.
#[tokio::test]
async fn empty_route_configuration_is_answered() {
    let server = AdsServer::new();
    server.set(TypeUrl::VirtualHost, [vhost("8080", "a", 0)]);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(server.clone().serve(l));
    let mut client = Client::connect(format!("http://{addr}")).await.unwrap();
    let mut s = Stream::open(&mut client, "e", &["7070"]).await;
    let r = s.acked().await;
    assert!(r.resources.is_empty() && r.removed_resources.is_empty());
    s.send(DeltaDiscoveryRequest {
        resource_names_subscribe: vec!["6060".into()],
        ..Default::default()
    })
    .await;
    let r = s.acked().await;
    assert!(r.resources.is_empty());
}
