//! Istio's inventory scenario through a real proxy configured by
//! `translate`: a DestinationRule with maxConnections 1,
//! http1MaxPendingRequests 1, maxRequestsPerConnection 1 and
//! consecutive5xxErrors 1. Requests beyond the limits get a local 503 with
//! response flag UO; a failing endpoint is ejected and later returns.

mod cluster_harness;
mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use cluster_harness::{Backend, Proxy, config};

const CLUSTER: &str = "outbound|9080||inventory.default.svc.cluster.local";

const INVENTORY_RULE: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: inventory, namespace: default}
spec:
  host: inventory.default.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 1s
      maxEjectionPercent: 100
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_pool_get_503_uo() {
    let backend = Backend::start("v1").await;
    let proxy = Proxy::start(&config(&[&backend], INVENTORY_RULE)).await;

    // Five at once, each held 600 ms by the backend: one gets the single
    // connection, one waits for it, three overflow at once.
    let replies = futures::future::join_all(
        (0..5).map(|_| cluster_harness::request(proxy.addr, "/?delay=600", &[])),
    )
    .await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let overflow: Vec<_> = replies
        .iter()
        .filter(|r| r.status == 503)
        .map(|r| {
            r.header("x-meshwork-reason")
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(ok, 2, "{replies:#?}");
    assert_eq!(overflow.len(), 3, "{replies:#?}");
    assert!(
        overflow.iter().all(|r| r.starts_with("UO ")),
        "{overflow:?}"
    );
    // Never more than one request on the wire at once (one connection in
    // use); a new connection per request.
    assert_eq!(backend.max_active.load(Ordering::SeqCst), 1);
    assert_eq!(backend.connections.load(Ordering::SeqCst), 2);

    // The overflows are counted with Istio's labels.
    let (_, metrics) = support::http_get(proxy.mesh.proxy.stats_addr, "/stats/prometheus")
        .await
        .unwrap();
    let uo = metrics
        .lines()
        .find(|l| l.starts_with("istio_requests_total") && l.contains("response_flags=\"UO\""))
        .unwrap_or_else(|| panic!("no UO series in:\n{metrics}"));
    assert!(uo.contains("response_code=\"503\""), "{uo}");
    assert!(uo.trim_end().ends_with(" 3"), "{uo}");

    // And the limits show in /config_dump.
    let c = proxy.dumped_cluster(CLUSTER).await;
    let t = &c["policy"]["circuit_breakers"]["thresholds"][0];
    assert_eq!(t["max_connections"], 1);
    assert_eq!(t["max_pending_requests"], 1);
    assert_eq!(c["policy"]["max_requests_per_connection"], 1);
    assert_eq!(c["policy"]["outlier_detection"]["consecutive_5xx"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_opens_a_connection_per_request() {
    let backend = Backend::start("v1").await;
    let proxy = Proxy::start(&config(&[&backend], INVENTORY_RULE)).await;
    for _ in 0..4 {
        assert_eq!(proxy.get("/", &[]).await.status, 200);
    }
    assert_eq!(backend.connections.load(Ordering::SeqCst), 4);
    assert_eq!(backend.max_active.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_ejected_and_returns() {
    let good = Backend::start("good").await;
    let bad = Backend::start("bad").await;
    bad.fail.store(true, Ordering::SeqCst);
    let proxy = Proxy::start(&config(&[&good, &bad], INVENTORY_RULE)).await;

    // Until the bad endpoint has answered once (random choice of two).
    let mut saw_500 = false;
    for _ in 0..100 {
        if proxy.get("/", &[]).await.status == 500 {
            saw_500 = true;
            break;
        }
    }
    assert!(saw_500, "the failing endpoint never got a request");
    // One 5xx ejects it: everything goes to the good one now.
    let before = bad.requests.load(Ordering::SeqCst);
    for _ in 0..20 {
        let r = proxy.get("/", &[]).await;
        assert_eq!((r.status, r.header("x-backend")), (200, Some("good")));
    }
    assert_eq!(bad.requests.load(Ordering::SeqCst), before);
    let c = proxy.dumped_cluster(CLUSTER).await;
    let ejected: Vec<_> = c["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outlier_ejected"] == true)
        .map(|e| e["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ejected, vec![format!("127.0.0.1:{}", bad.port)]);

    // Healed, it comes back after baseEjectionTime (1 s) at a sweep (1 s).
    bad.fail.store(false, Ordering::SeqCst);
    let mut back = false;
    for _ in 0..100 {
        if proxy.get("/", &[]).await.header("x-backend") == Some("bad") {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "the ejected endpoint never returned");
    let c = proxy.dumped_cluster(CLUSTER).await;
    assert!(
        c["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["outlier_ejected"] == false),
        "{c}"
    );
}
