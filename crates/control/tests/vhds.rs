//! The real control plane serves VHDS to a delta client that announces
//! `MESHWORK_VHDS`: the route configuration with only its catch-all and
//! `vhds`, the service virtual hosts as `VirtualHost` resources by route
//! configuration name; a VirtualService edit pushes only the changed
//! virtual host, a removed service is named in `removed_resources`. A
//! client without the flag gets the inline route table.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use meshwork_control::run::{ControlOptions, start};
use meshwork_control::watch::Debounce;
use meshwork_registry::StaticPlatform;
use meshwork_xds::envoy_types::pb::envoy::config::core::v3::Node;
use meshwork_xds::envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use meshwork_xds::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use meshwork_xds::envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use meshwork_xds::envoy_types::pb::google::protobuf::value::Kind;
use meshwork_xds::envoy_types::pb::google::protobuf::{Struct, Value};
use meshwork_xds::{TypeUrl, unpack};

fn service(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{name}.default.svc.cluster.local]\n  ports: [{{number: 8080, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  location: MESH_INTERNAL\n  endpoints: [{{address: {ip}}}]\n"
    )
}

fn vs(prefix: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: shop, namespace: default}}\nspec:\n  hosts: [shop.default.svc.cluster.local]\n  http:\n  - match: [{{uri: {{prefix: {prefix}}}}}]\n    route: [{{destination: {{host: shop.default.svc.cluster.local}}}}]\n"
    )
}

struct Delta {
    tx: mpsc::UnboundedSender<DeltaDiscoveryRequest>,
    rx: tonic::Streaming<DeltaDiscoveryResponse>,
}

impl Delta {
    async fn open(addr: &str, vhds: bool) -> Delta {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::unbounded();
        let mut fields = std::collections::HashMap::new();
        if vhds {
            let v = Value {
                kind: Some(Kind::StringValue("true".into())),
            };
            fields.insert("MESHWORK_VHDS".to_string(), v);
        }
        tx.unbounded_send(DeltaDiscoveryRequest {
            node: Some(Node {
                id: "sidecar~10.1.0.9~client.default~default.svc.cluster.local".into(),
                metadata: Some(Struct {
                    fields: fields.into_iter().collect(),
                }),
                ..Default::default()
            }),
            type_url: TypeUrl::Route.as_str().into(),
            resource_names_subscribe: vec!["8080".into()],
            ..Default::default()
        })
        .unwrap();
        let rx = client
            .delta_aggregated_resources(rx)
            .await
            .unwrap()
            .into_inner();
        Delta { tx, rx }
    }

    async fn next(&mut self) -> Option<DeltaDiscoveryResponse> {
        let r = tokio::time::timeout(Duration::from_secs(5), self.rx.next())
            .await
            .ok()??
            .unwrap();
        self.tx
            .unbounded_send(DeltaDiscoveryRequest {
                type_url: r.type_url.clone(),
                response_nonce: r.nonce.clone(),
                ..Default::default()
            })
            .unwrap();
        Some(r)
    }
}

fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
    let mut n: Vec<&str> = r.resources.iter().map(|r| r.name.as_str()).collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhds_from_the_real_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let write = |file: &str, text: String| {
        let tmp = dir.path().join(".tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, dir.path().join(file)).unwrap();
    };
    write("shop.yaml", service("shop", "10.1.0.1"));
    write("cart.yaml", service("cart", "10.1.0.2"));
    write("vs.yaml", vs("/a"));
    let control = start(ControlOptions {
        config_paths: vec![dir.path().to_path_buf()],
        xds_address: "127.0.0.1:0".parse().unwrap(),
        debug_address: "127.0.0.1:0".parse().unwrap(),
        debounce: Debounce {
            quiet: Duration::from_millis(50),
            max: Duration::from_millis(500),
        },
        platform: Arc::new(StaticPlatform::new(Vec::new())),
    })
    .await
    .unwrap();
    let addr = control.xds_addr.to_string();
    let shop = "8080/shop.default.svc.cluster.local:8080";
    let cart = "8080/cart.default.svc.cluster.local:8080";

    // Without the flag: Istio's inline route table.
    let mut plain = Delta::open(&addr, false).await;
    let r = plain.next().await.expect("route configuration");
    let rc: RouteConfiguration = unpack(r.resources[0].resource.as_ref().unwrap()).unwrap();
    assert!(rc.vhds.is_none());
    assert!(rc.virtual_hosts.len() >= 3, "services inline: {rc:?}");

    // With it: the VHDS form, then the virtual hosts by route configuration.
    let mut d = Delta::open(&addr, true).await;
    let r = d.next().await.expect("route configuration");
    assert_eq!(names(&r), ["8080"]);
    let rc: RouteConfiguration = unpack(r.resources[0].resource.as_ref().unwrap()).unwrap();
    assert!(rc.vhds.is_some());
    let inline: Vec<&str> = rc.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(inline, ["allow_any"]);
    d.tx.unbounded_send(DeltaDiscoveryRequest {
        type_url: TypeUrl::VirtualHost.as_str().into(),
        resource_names_subscribe: vec!["8080".into()],
        ..Default::default()
    })
    .unwrap();
    let r = d.next().await.expect("virtual hosts");
    assert_eq!(r.type_url, TypeUrl::VirtualHost.as_str());
    assert_eq!(names(&r), [cart, shop]);
    let shop_v1 = r.resources.iter().find(|x| x.name == shop).unwrap().clone();

    // A VirtualService edit: only shop's virtual host comes, nothing else.
    write("vs.yaml", vs("/b"));
    let r = d.next().await.expect("the changed virtual host");
    assert_eq!(r.type_url, TypeUrl::VirtualHost.as_str());
    assert_eq!(names(&r), [shop]);
    assert!(r.removed_resources.is_empty());
    assert_ne!(r.resources[0].version, shop_v1.version);
    let vh: VirtualHost = unpack(r.resources[0].resource.as_ref().unwrap()).unwrap();
    assert_eq!(vh.name, "shop.default.svc.cluster.local:8080");
    assert!(format!("{vh:?}").contains("\"/b\""), "{vh:?}");

    // A removed service: named in removed_resources.
    std::fs::remove_file(dir.path().join("cart.yaml")).unwrap();
    loop {
        let r = d.next().await.expect("the removal");
        if r.type_url == TypeUrl::VirtualHost.as_str() {
            assert!(r.resources.is_empty(), "{:?}", names(&r));
            assert_eq!(r.removed_resources, [cart]);
            break;
        }
    }
}
