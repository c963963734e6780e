//! Access logs and Istio's standard metrics, including the peer metadata
//! exchange between a client-side and a server-side proxy.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use meshwork_proxy::options::Limits;
use meshwork_telemetry::AccessLogger;
use meshwork_xds::{TypeUrl, pack};
use support::*;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn lines(&self) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(|l| serde_json::from_str(l).expect("every access-log line is JSON"))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_json_access_log_line_per_request_with_flags() {
    let buf = Buffer::default();
    let log = AccessLogger::to_writer(buf.clone());
    let a = http_backend("a").await;
    let mesh = Mesh::start_full(Limits::default(), log.clone(), "client", true).await;
    let port = free_port();
    mesh.serve_http(port, &[a], false);
    mesh.wait_ready(port).await;
    let target = ([127, 0, 0, 1], port).into();
    assert_eq!(http_get(target, "/ok?x=1").await.unwrap().0, 200);
    // Point the cluster at a dead port: a connect failure, flagged UF.
    mesh.ads.set(
        TypeUrl::Endpoint,
        [(
            "backend".to_string(),
            pack(&endpoints("backend", &[free_port()])),
        )],
    );
    let mut failed = None;
    for _ in 0..100 {
        let r = http_get(target, "/fail").await.unwrap();
        if r.0 == 503 {
            failed = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(failed.is_some());
    log.flush();
    let lines = buf.lines();
    let ok = lines
        .iter()
        .find(|l| l["path"] == "/ok?x=1")
        .expect("a line for the request");
    assert_eq!(ok["response_code"], 200);
    assert_eq!(ok["response_flags"], "-");
    assert_eq!(ok["upstream_cluster"], "backend");
    assert_eq!(ok["method"], "GET");
    let fail = lines
        .iter()
        .find(|l| l["path"] == "/fail" && l["response_code"] == 503)
        .expect("a line for the failure");
    assert_eq!(fail["response_flags"], "UF");
}

fn inbound(mut l: Listener) -> Listener {
    l.traffic_direction = 1;
    l
}

/// A proxy's first `istio_requests_total` line and all its metrics, once
/// there: a request is recorded just after its response is written, so a
/// proxy further along the chain (or the client) may finish first.
async fn requests_line(mesh: &Mesh) -> (String, String) {
    for _ in 0..200 {
        let (_, metrics) = http_get(mesh.proxy.stats_addr, "/stats/prometheus")
            .await
            .unwrap();
        if let Some(line) = metrics
            .lines()
            .find(|l| l.starts_with("istio_requests_total{"))
        {
            return (line.to_string(), metrics);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the proxy never reported the request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_and_destination_proxies_learn_each_other() {
    let app = http_backend("shipping").await;
    // Server side: an inbound listener in front of the app.
    let server = Mesh::start_full(
        Limits::default(),
        AccessLogger::disabled(),
        "shipping",
        true,
    )
    .await;
    let inbound_port = free_port();
    server.ads.set(
        TypeUrl::Cluster,
        [(
            "inbound|8080||".to_string(),
            pack(&eds_cluster("inbound|8080||", false)),
        )],
    );
    server.ads.set(
        TypeUrl::Endpoint,
        [(
            "inbound|8080||".to_string(),
            pack(&endpoints("inbound|8080||", &[app])),
        )],
    );
    server.ads.set(
        TypeUrl::Route,
        [(
            "inbound".to_string(),
            pack(&route_to("inbound", "inbound|8080||", None)),
        )],
    );
    server.ads.set(
        TypeUrl::Listener,
        [(
            "virtualInbound".to_string(),
            pack(&inbound(http_listener(
                "virtualInbound",
                inbound_port,
                "inbound",
            ))),
        )],
    );
    server.wait_ready(inbound_port).await;
    // Client side: an outbound listener to the server proxy.
    let client = Mesh::start_full(Limits::default(), AccessLogger::disabled(), "order", true).await;
    let out_port = free_port();
    let cluster = "outbound|8080||shipping.default.svc.cluster.local";
    client.ads.set(
        TypeUrl::Cluster,
        [(cluster.to_string(), pack(&eds_cluster(cluster, false)))],
    );
    client.ads.set(
        TypeUrl::Endpoint,
        [(
            cluster.to_string(),
            pack(&endpoints(cluster, &[inbound_port])),
        )],
    );
    client.ads.set(
        TypeUrl::Route,
        [("8080".to_string(), pack(&route_to("8080", cluster, None)))],
    );
    client.ads.set(
        TypeUrl::Listener,
        [(
            "0.0.0.0_8080".to_string(),
            pack(&http_listener("0.0.0.0_8080", out_port, "8080")),
        )],
    );
    client.wait_ready(out_port).await;

    let (status, body) = http_get(([127, 0, 0, 1], out_port).into(), "/ship")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("peer=false"),
        "the app never sees the exchange headers: {body}"
    );

    let (line, _) = requests_line(&client).await;
    for label in [
        "reporter=\"source\"",
        "source_workload=\"order\"",
        "source_app=\"order\"",
        "destination_workload=\"shipping\"",
        "destination_version=\"v1\"",
        "destination_service=\"shipping.default.svc.cluster.local\"",
        "destination_service_name=\"shipping\"",
        "response_code=\"200\"",
        "request_protocol=\"http\"",
    ] {
        assert!(line.contains(label), "missing {label} in {line}");
    }
    let (line, server_metrics) = requests_line(&server).await;
    for label in [
        "reporter=\"destination\"",
        "source_workload=\"order\"",
        "source_version=\"v1\"",
        "destination_workload=\"shipping\"",
    ] {
        assert!(line.contains(label), "missing {label} in {line}");
    }
    assert!(server_metrics.contains("istio_request_duration_milliseconds_bucket{"));
    assert!(server_metrics.contains("istio_request_bytes_bucket{"));
    assert!(server_metrics.contains("istio_response_bytes_bucket{"));
}
