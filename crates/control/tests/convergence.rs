//! `pilot_proxy_convergence_time` counts from the first config change of a
//! debounce window to the proxy's ACK, as istiod's does: the debounce is in.

use std::sync::Arc;
use std::time::Duration;

use meshwork_control::run::{ControlOptions, start};
use meshwork_control::watch::Debounce;
use meshwork_registry::StaticPlatform;
use meshwork_xds::TypeUrl;
use meshwork_xds::client::{AdsClient, ClientConfig, ResourceError, ResourceSink};
use meshwork_xds::envoy_types::pb::envoy::config::core::v3::Node;
use meshwork_xds::envoy_types::pb::google::protobuf::Any;

struct Accept;

impl ResourceSink for Accept {
    fn apply(&self, _: TypeUrl, _: &str, _: &[Any]) -> Vec<ResourceError> {
        Vec::new()
    }
    fn wanted(&self, _: TypeUrl) -> Vec<String> {
        Vec::new()
    }
}

const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: shop, namespace: default}\nspec:\n  hosts: [shop.default.svc.cluster.local]\n  ports: [{number: 8080, name: http, protocol: HTTP}]\n  resolution: STATIC\n  location: MESH_INTERNAL\n  endpoints: [{address: 10.1.0.1}]\n";

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn convergence_time_includes_the_debounce() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("se.yaml"), SE).unwrap();
    let debounce = Debounce {
        quiet: Duration::from_millis(300),
        max: Duration::from_secs(1),
    };
    let control = start(ControlOptions {
        config_paths: vec![dir.path().to_path_buf()],
        xds_address: "127.0.0.1:0".parse().unwrap(),
        debug_address: "127.0.0.1:0".parse().unwrap(),
        debounce,
        platform: Arc::new(StaticPlatform::new(Vec::new())),
    })
    .await
    .unwrap();
    let node = Node {
        id: "sidecar~10.1.0.9~client.default~default.svc.cluster.local".into(),
        ..Default::default()
    };
    let client = AdsClient::spawn(
        ClientConfig::new(control.xds_addr.to_string(), node),
        Arc::new(Accept),
    );
    let mut status = client.status();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.types.contains_key(&TypeUrl::Listener)),
    )
    .await
    .unwrap()
    .unwrap();
    std::fs::write(dir.path().join("se.yaml"), SE.replace("8080", "8081")).unwrap();
    let url = format!("http://{}/metrics", control.debug_addr);
    let mut text = String::new();
    for _ in 0..200 {
        text = fetch(&url).await;
        if metric(&text, "pilot_proxy_convergence_time_count") >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let count = metric(&text, "pilot_proxy_convergence_time_count");
    let sum = metric(&text, "pilot_proxy_convergence_time_sum");
    assert!(count >= 1.0, "a convergence was observed:\n{text}");
    assert!(
        sum / count >= 0.3,
        "each convergence includes the 300 ms debounce: sum {sum} count {count}"
    );
    control.shutdown();
}

async fn fetch(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(format!("GET /{path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}
