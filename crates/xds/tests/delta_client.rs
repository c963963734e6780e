//! The delta ADS client against a scripted delta server over a real
//! socket: what it sends, what it hands its sink, how it ACKs and NACKs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwork_xds::client::{
    AdsClient, ClientConfig, DeltaUpdate, Protocol, ResourceError, ResourceSink,
};
use meshwork_xds::envoy_types::pb::envoy::config::cluster::v3::Cluster;
use meshwork_xds::envoy_types::pb::envoy::config::core::v3::Node;
use meshwork_xds::envoy_types::pb::envoy::service::discovery::v3::Resource;
use meshwork_xds::envoy_types::pb::google::protobuf::Any;
use meshwork_xds::scripted::{ScriptedDelta, resource};
use meshwork_xds::{TypeUrl, pack};

const WAIT: Duration = Duration::from_secs(10);

/// One delta update as the sink saw it: (type, added names, removed names).
type Seen = (TypeUrl, Vec<String>, Vec<String>);

/// Records every delta update.
#[derive(Default)]
struct Recorder(Mutex<Vec<Seen>>);

impl ResourceSink for Recorder {
    fn apply(&self, _: TypeUrl, _: &str, _: &[Any]) -> Vec<ResourceError> {
        Vec::new()
    }

    fn wanted(&self, _: TypeUrl) -> Vec<String> {
        Vec::new()
    }

    fn apply_delta(&self, t: TypeUrl, u: DeltaUpdate<'_>) -> Vec<ResourceError> {
        let added = u.resources.iter().map(|r| r.name.clone()).collect();
        self.0.lock().unwrap().push((t, added, u.removed.to_vec()));
        Vec::new()
    }
}

/// A sink that only speaks state of the world (the trait's default).
struct SotwOnly;

impl ResourceSink for SotwOnly {
    fn apply(&self, _: TypeUrl, _: &str, _: &[Any]) -> Vec<ResourceError> {
        Vec::new()
    }

    fn wanted(&self, _: TypeUrl) -> Vec<String> {
        Vec::new()
    }
}

fn cluster(name: &str) -> Any {
    pack(&Cluster {
        name: name.into(),
        ..Default::default()
    })
}

fn delta_client<S: ResourceSink>(cp: &ScriptedDelta, sink: Arc<S>) -> AdsClient {
    let node = Node {
        id: "test".into(),
        ..Default::default()
    };
    let config = ClientConfig::new(cp.addr.to_string(), node).with_protocol(Protocol::Delta);
    AdsClient::spawn(config, sink)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_without_a_body_is_a_removal_and_every_response_is_acked() {
    let mut cp = ScriptedDelta::start().await.unwrap();
    let sink = Arc::new(Recorder::default());
    let client = delta_client(&cp, sink.clone());
    let (_, first) = cp.subscription(TypeUrl::Cluster, WAIT).await.unwrap();
    assert_eq!(first.node.unwrap().id, "test");
    assert!(first.initial_resource_versions.is_empty());

    let nonce = cp
        .respond(
            TypeUrl::Cluster,
            vec![resource("a", "1", cluster("a"))],
            &[],
        )
        .await;
    assert!(
        cp.ack_of(&nonce, WAIT)
            .await
            .unwrap()
            .error_detail
            .is_none()
    );
    let bodiless = Resource {
        name: "a".into(),
        ..Default::default()
    };
    let nonce = cp.respond(TypeUrl::Cluster, vec![bodiless], &["b"]).await;
    let ack = cp.ack_of(&nonce, WAIT).await.unwrap();
    assert!(ack.error_detail.is_none());
    assert_eq!(ack.type_url, TypeUrl::Cluster.as_str());
    let seen = sink.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            (TypeUrl::Cluster, vec!["a".to_string()], vec![]),
            (
                TypeUrl::Cluster,
                vec![],
                vec!["b".to_string(), "a".to_string()]
            ),
        ]
    );
    let status = client.status().borrow().clone();
    assert!(status.connected);
    assert_eq!(status.protocol, Protocol::Delta);
    assert_eq!(status.types[&TypeUrl::Cluster].acked_version, "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_without_delta_support_nacks_every_resource_by_name() {
    let mut cp = ScriptedDelta::start().await.unwrap();
    let client = delta_client(&cp, Arc::new(SotwOnly));
    cp.subscription(TypeUrl::Cluster, WAIT).await.unwrap();
    let nonce = cp
        .respond(
            TypeUrl::Cluster,
            vec![
                resource("a", "1", cluster("a")),
                resource("b", "1", cluster("b")),
            ],
            &[],
        )
        .await;
    let nack = cp.ack_of(&nonce, WAIT).await.unwrap();
    let message = nack.error_detail.expect("a NACK").message;
    assert_eq!(
        message,
        "a: this client does not accept delta xDS; b: this client does not accept delta xDS"
    );
    let status = client.status().borrow().clone();
    let st = &status.types[&TypeUrl::Cluster];
    assert_eq!(
        (st.acked_version.as_str(), st.received_version.as_str()),
        ("", "v1")
    );
    assert_eq!(st.last_nack.as_deref(), Some(message.as_str()));
}
