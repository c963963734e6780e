//! Configuration lifecycle: a bad resource is NACKed while the good ones
//! apply, updates take effect without restarts, and drain lets in-flight
//! requests finish.

mod support;

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use meshwork_xds::{TypeUrl, pack};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_resource_is_nacked_and_the_rest_applies() {
    let a = http_backend("a").await;
    let mesh = Mesh::start().await;
    let port = free_port();
    mesh.serve_http(port, &[a], false);
    mesh.wait_ready(port).await;

    // A second version: the good cluster plus one with an unknown LB policy.
    let bad = Cluster {
        name: "broken".into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        lb_policy: 99,
        ..Default::default()
    };
    mesh.ads.set(
        TypeUrl::Cluster,
        [
            ("backend".to_string(), pack(&eds_cluster("backend", false))),
            ("broken".to_string(), pack(&bad)),
        ],
    );
    let mut nack = None;
    for _ in 0..200 {
        let nodes = mesh.ads.nodes();
        if let Some(n) = nodes
            .values()
            .next()
            .and_then(|n| n.types.get(&TypeUrl::Cluster))
            .and_then(|t| t.nack.clone())
        {
            nack = Some(n);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let nack = nack.expect("the control plane saw a NACK");
    assert!(
        nack.contains("broken") && nack.contains("lb_policy"),
        "{nack}"
    );
    // Traffic still flows on the good cluster.
    let (status, body) = http_get(([127, 0, 0, 1], port).into(), "/").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (_, dump) = mesh.admin("/config_dump").await;
    assert!(dump.contains("\"last_nack\""), "{dump}");
    assert!(
        !dump.contains("\"name\":\"broken\""),
        "the bad cluster is not applied: {dump}"
    );

    // A fixed version clears the NACK.
    mesh.ads.set(
        TypeUrl::Cluster,
        [("backend".to_string(), pack(&eds_cluster("backend", false)))],
    );
    let mut cleared = false;
    for _ in 0..200 {
        let nodes = mesh.ads.nodes();
        if nodes
            .values()
            .next()
            .and_then(|n| n.types.get(&TypeUrl::Cluster))
            .is_some_and(|t| t.nack.is_none())
        {
            cleared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cleared);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_update_shifts_traffic_without_restart() {
    let a = http_backend("a").await;
    let b = http_backend("b").await;
    let mesh = Mesh::start().await;
    let port = free_port();
    mesh.serve_http(port, &[a], false);
    mesh.wait_ready(port).await;
    assert!(
        http_get(([127, 0, 0, 1], port).into(), "/")
            .await
            .unwrap()
            .1
            .starts_with("a:")
    );
    mesh.ads.set(
        TypeUrl::Endpoint,
        [("backend".to_string(), pack(&endpoints("backend", &[b])))],
    );
    let mut moved = false;
    for _ in 0..200 {
        if http_get(([127, 0, 0, 1], port).into(), "/")
            .await
            .unwrap()
            .1
            .starts_with("b:")
        {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(moved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_complete_config() {
    let mesh = Mesh::start().await;
    let (status, _) = http_get(mesh.proxy.health_addr, "/healthz/ready")
        .await
        .unwrap();
    assert_eq!(status, 503, "not ready before any config");
    // Listener referencing a route that is not served yet: still not ready.
    let port = free_port();
    mesh.ads.set(
        TypeUrl::Cluster,
        [("backend".to_string(), pack(&eds_cluster("backend", false)))],
    );
    mesh.ads.set(
        TypeUrl::Endpoint,
        [("backend".to_string(), pack(&endpoints("backend", &[1])))],
    );
    mesh.ads.set(
        TypeUrl::Listener,
        [("l".to_string(), pack(&http_listener("l", port, "r")))],
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = http_get(mesh.proxy.health_addr, "/healthz/ready")
        .await
        .unwrap();
    assert_eq!(status, 503, "route config still missing");
    mesh.ads.set(
        TypeUrl::Route,
        [("r".to_string(), pack(&route_to("r", "backend", None)))],
    );
    mesh.wait_ready(port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_in_flight_requests_finish() {
    let a = http_backend("a").await;
    let mesh = Mesh::start().await;
    let port = free_port();
    mesh.serve_http(port, &[a], false);
    mesh.wait_ready(port).await;
    // A request that takes 2 s is in flight when the drain starts.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    mesh.proxy.shutdown();
    // New connections are refused once draining.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "listener closed on drain");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let resp = String::from_utf8_lossy(&out);
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "in-flight request completed: {resp}"
    );
    assert!(
        resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );
    tokio::time::timeout(Duration::from_secs(10), mesh.proxy.wait())
        .await
        .expect("proxy stops after drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_listener_warms_until_its_routes_arrive() {
    let a = http_backend("a").await;
    let mesh = Mesh::start().await;
    let port = free_port();
    mesh.serve_http(port, &[a], false);
    mesh.wait_ready(port).await;
    let second = free_port();
    mesh.ads.set(
        TypeUrl::Listener,
        [
            ("l".to_string(), pack(&http_listener("l", port, "r"))),
            ("l2".to_string(), pack(&http_listener("l2", second, "r2"))),
        ],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", second))
            .await
            .is_err(),
        "a listener without its routes does not accept yet"
    );
    mesh.ads.set(
        TypeUrl::Route,
        [
            ("r".to_string(), pack(&route_to("r", "backend", None))),
            ("r2".to_string(), pack(&route_to("r2", "backend", None))),
        ],
    );
    let mut ok = false;
    for _ in 0..200 {
        if let Ok((200, _)) = http_get(([127, 0, 0, 1], second).into(), "/").await {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ok, "the listener serves once its routes arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_match_uses_the_pseudo_header() {
    use envoy_types::pb::envoy::config::route::v3::HeaderMatcher;
    use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
    use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;
    use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
    let a = http_backend("a").await;
    let mesh = Mesh::start().await;
    let port = free_port();
    mesh.serve_http(port, &[a], false);
    // Only POST is routed; a GET finds no route (404 NR).
    let mut route = route_to("r", "backend", None);
    route.virtual_hosts[0].routes[0]
        .r#match
        .as_mut()
        .unwrap()
        .headers
        .push(HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(MatchPattern::Exact("POST".into())),
                ignore_case: false,
            })),
            ..Default::default()
        });
    mesh.ads
        .set(TypeUrl::Route, [("r".to_string(), pack(&route))]);
    mesh.wait_ready(port).await;
    let mut nr = false;
    for _ in 0..200 {
        if http_get(([127, 0, 0, 1], port).into(), "/")
            .await
            .unwrap()
            .0
            == 404
        {
            nr = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(nr, "GET does not match a :method POST route");
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
}
