//! The proxy over delta ADS: the real ADS server's delta path carrying
//! traffic, and VHDS (route tables whose virtual hosts come as separate
//! VirtualHost resources) driven by a scripted delta server, every request
//! through the real proxy on real sockets.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::{AggregatedConfigSource, ApiVersion, ConfigSource};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, Vhds, VirtualHost};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use meshwork_proxy::options::{Identity, ProxyOptions, XdsProtocol};
use meshwork_proxy::run::ProxyHandle;
use meshwork_telemetry::AccessLogger;
use meshwork_xds::scripted::{ScriptedDelta, resource};
use meshwork_xds::server::AdsServer;
use meshwork_xds::{TypeUrl, pack};
use support::*;

const WAIT: Duration = Duration::from_secs(10);

async fn start_proxy(xds: SocketAddr) -> ProxyHandle {
    let any = |p| SocketAddr::from(([127, 0, 0, 1], p));
    let opts = ProxyOptions {
        identity: Identity {
            node_id: "sidecar~127.0.0.1~delta.default~default.svc.cluster.local".into(),
            namespace: "default".into(),
            workload: "delta".into(),
            ..Default::default()
        },
        xds_address: xds.to_string(),
        admin_address: any(0),
        health_address: any(0),
        stats_address: any(0),
        merged_stats_address: any(0),
        access_log: false,
        xds_protocol: XdsProtocol::Delta,
        ..Default::default()
    };
    meshwork_proxy::run::start(opts, AccessLogger::disabled(), None)
        .await
        .unwrap()
}

/// GET with a Host header: (status, x-meshwork-reason, body).
async fn get(port: u16, host: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return (0, "connection refused".into(), String::new());
    };
    let mut buf = Vec::new();
    let req = format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() || s.read_to_end(&mut buf).await.is_err() {
        return (0, "connection failed".into(), String::new());
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let reason = head
        .lines()
        .find_map(|l| l.strip_prefix("x-meshwork-reason: "))
        .unwrap_or_default()
        .to_string();
    (status, reason, body.to_string())
}

/// Polls until a GET for `host` gives `status` and a body starting with
/// `body` (what the backend answers); panics after 10 s.
async fn until(port: u16, host: &str, status: u16, body: &str) {
    let mut last = (0, String::new(), String::new());
    for _ in 0..400 {
        last = get(port, host).await;
        if last.0 == status && last.2.starts_with(body) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{host}: wanted {status} {body:?}, last got {last:?}");
}

fn vhds_route(name: &str, inline: Vec<VirtualHost>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: inline,
        vhds: Some(Vhds {
            config_source: Some(ConfigSource {
                config_source_specifier: Some(ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource {},
                )),
                resource_api_version: ApiVersion::V3 as i32,
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// A virtual host for `domain` sending everything to `cluster`.
fn vhost(name: &str, domain: &str, cluster: &str) -> VirtualHost {
    let mut vh = route_to("x", cluster, None).virtual_hosts.remove(0);
    vh.name = name.into();
    vh.domains = vec![domain.into()];
    vh
}

/// A scripted control plane and a delta proxy with two EDS clusters `a`
/// and `b` (backends "A" and "B"), listener `l` on `port` using RDS `r`
/// with VHDS: `r/a` (a.test -> a) and `r/b` (b.test -> b).
struct Vhds1 {
    cp: ScriptedDelta,
    proxy: ProxyHandle,
    port: u16,
}

async fn vhds_mesh() -> Vhds1 {
    let (a, b) = (http_backend("A").await, http_backend("B").await);
    let mut cp = ScriptedDelta::start().await.unwrap();
    let proxy = start_proxy(cp.addr).await;
    let port = free_port();

    // Wildcard CDS and LDS first; the node announces VHDS.
    let (_, cds) = cp.subscription(TypeUrl::Cluster, WAIT).await.unwrap();
    let meta = cds.node.as_ref().and_then(|n| n.metadata.as_ref()).unwrap();
    assert!(format!("{:?}", meta.fields.get("MESHWORK_VHDS")).contains("\"true\""));
    assert!(cds.resource_names_subscribe.is_empty(), "wildcard: {cds:?}");
    let (_, lds) = cp.subscription(TypeUrl::Listener, WAIT).await.unwrap();
    assert!(lds.node.is_none(), "node only on the first request");

    let clusters = vec![
        resource("a", "c1", pack(&eds_cluster("a", false))),
        resource("b", "c1", pack(&eds_cluster("b", false))),
    ];
    let nonce = cp.respond(TypeUrl::Cluster, clusters, &[]).await;
    assert!(
        cp.ack_of(&nonce, WAIT)
            .await
            .unwrap()
            .error_detail
            .is_none()
    );
    let (_, eds) = cp.subscription(TypeUrl::Endpoint, WAIT).await.unwrap();
    assert_eq!(eds.resource_names_subscribe, ["a", "b"]);
    let eps = vec![
        resource("a", "e1", pack(&endpoints("a", &[a]))),
        resource("b", "e1", pack(&endpoints("b", &[b]))),
    ];
    cp.respond(TypeUrl::Endpoint, eps, &[]).await;
    let l = resource("l", "l1", pack(&http_listener("l", port, "r")));
    cp.respond(TypeUrl::Listener, vec![l], &[]).await;
    let (_, rds) = cp.subscription(TypeUrl::Route, WAIT).await.unwrap();
    assert_eq!(rds.resource_names_subscribe, ["r"]);
    cp.respond(
        TypeUrl::Route,
        vec![resource("r", "r1", pack(&vhds_route("r", vec![])))],
        &[],
    )
    .await;
    // VHDS is subscribed by route configuration name.
    let (_, vhds) = cp.subscription(TypeUrl::VirtualHost, WAIT).await.unwrap();
    assert_eq!(vhds.resource_names_subscribe, ["r"]);

    // Warming: the route configuration is in, its virtual hosts are not.
    let (status, _) = http_get(proxy.health_addr, "/healthz/ready").await.unwrap();
    assert_eq!(status, 503, "ready before the first VHDS response");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );

    let hosts = vec![
        resource("r/a", "h1", pack(&vhost("a", "a.test", "a"))),
        resource("r/b", "h1", pack(&vhost("b", "b.test", "b"))),
    ];
    let nonce = cp.respond(TypeUrl::VirtualHost, hosts, &[]).await;
    assert!(
        cp.ack_of(&nonce, WAIT)
            .await
            .unwrap()
            .error_detail
            .is_none()
    );
    until(port, "a.test", 200, "A").await;
    Vhds1 { cp, proxy, port }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_client_carries_traffic_from_the_ads_server() {
    let (one, two) = (http_backend("one").await, http_backend("two").await);
    let ads = AdsServer::new();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let xds = l.local_addr().unwrap();
    tokio::spawn(ads.clone().serve(l));
    let port = free_port();
    ads.set(
        TypeUrl::Cluster,
        [("backend".to_string(), pack(&eds_cluster("backend", false)))],
    );
    ads.set(
        TypeUrl::Endpoint,
        [("backend".to_string(), pack(&endpoints("backend", &[one])))],
    );
    ads.set(
        TypeUrl::Route,
        [("r".to_string(), pack(&route_to("r", "backend", None)))],
    );
    ads.set(
        TypeUrl::Listener,
        [("l".to_string(), pack(&http_listener("l", port, "r")))],
    );
    let proxy = start_proxy(xds).await;
    until(port, "x", 200, "one").await;

    // A changed EDS resource reaches the data path; the server saw delta.
    ads.set(
        TypeUrl::Endpoint,
        [("backend".to_string(), pack(&endpoints("backend", &[two])))],
    );
    until(port, "x", 200, "two").await;
    let node = "sidecar~127.0.0.1~delta.default~default.svc.cluster.local";
    assert!(ads.nodes()[node].delta);

    // A removed listener is closed.
    ads.set(TypeUrl::Listener, []);
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );
    let (_, dump) = http_get(proxy.admin_addr, "/config_dump").await.unwrap();
    assert!(dump.contains("\"protocol\":\"delta\""), "{dump}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhds_routes_by_host_and_follows_updates_and_removals() {
    let Vhds1 {
        mut cp,
        proxy,
        port,
    } = vhds_mesh().await;
    until(port, "b.test", 200, "B").await;
    // No virtual host for this name (and no catch-all): 404 NR.
    let (status, reason, _) = get(port, "c.test").await;
    assert_eq!((status, reason.as_str()), (404, "NR no route found"));

    // An updated virtual host swaps the table: a.test now goes to b.
    let hosts = vec![resource("r/a", "h2", pack(&vhost("a", "a.test", "b")))];
    let nonce = cp.respond(TypeUrl::VirtualHost, hosts, &[]).await;
    assert!(
        cp.ack_of(&nonce, WAIT)
            .await
            .unwrap()
            .error_detail
            .is_none()
    );
    until(port, "a.test", 200, "B").await;

    // A removed virtual host: its host has no route any more.
    let nonce = cp.respond(TypeUrl::VirtualHost, vec![], &["r/b"]).await;
    assert!(
        cp.ack_of(&nonce, WAIT)
            .await
            .unwrap()
            .error_detail
            .is_none()
    );
    until(port, "b.test", 404, "no route found").await;
    until(port, "a.test", 200, "B").await;

    // /config_dump shows where each virtual host came from.
    let (_, dump) = http_get(proxy.admin_addr, "/config_dump").await.unwrap();
    assert!(dump.contains("\"source\":\"vhds\""), "{dump}");
    assert!(
        dump.contains("\"name\":\"r/a\",\"version_info\":\"h2\""),
        "{dump}"
    );
    assert!(!dump.contains("r/b"), "{dump}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_virtual_host_is_nacked_while_the_others_apply() {
    let Vhds1 {
        mut cp,
        proxy: _p,
        port,
    } = vhds_mesh().await;
    let hosts = vec![
        // No domains: invalid.
        resource(
            "r/bad",
            "h1",
            pack(&VirtualHost {
                name: "bad".into(),
                ..Default::default()
            }),
        ),
        // a.test belongs to r/a already.
        resource("r/dup", "h1", pack(&vhost("dup", "a.test", "b"))),
        resource("r/c", "h1", pack(&vhost("c", "c.test", "b"))),
    ];
    let nonce = cp.respond(TypeUrl::VirtualHost, hosts, &[]).await;
    let nack = cp.ack_of(&nonce, WAIT).await.unwrap();
    let detail = nack.error_detail.expect("a NACK").message;
    assert!(
        detail.contains("r/bad: virtual host \"bad\": no domains"),
        "{detail}"
    );
    assert!(
        detail.contains("r/dup: domain \"a.test\" is already in virtual host \"r/a\""),
        "{detail}"
    );
    assert!(!detail.contains("r/c"), "{detail}");
    until(port, "c.test", 200, "B").await;
    until(port, "a.test", 200, "A").await;

    // A route configuration with VHDS may not claim a VHDS host's domain
    // inline; it is NACKed and the last good one stays.
    let clash = vhds_route("r", vec![vhost("inline", "a.test", "b")]);
    let nonce = cp
        .respond(TypeUrl::Route, vec![resource("r", "r2", pack(&clash))], &[])
        .await;
    let nack = cp.ack_of(&nonce, WAIT).await.unwrap();
    let detail = nack.error_detail.expect("a NACK").message;
    assert!(detail.contains("more than one virtual host"), "{detail}");
    until(port, "a.test", 200, "A").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_sends_initial_resource_versions_and_resumes() {
    let Vhds1 {
        mut cp,
        proxy: _p,
        port,
    } = vhds_mesh().await;
    cp.drain();
    cp.cut_streams().await;
    // The last good configuration keeps serving while disconnected.
    let (status, _, body) = get(port, "a.test").await;
    assert_eq!((status, &body[..1]), (200, "A"));

    let on_2 =
        |t: TypeUrl| move |id: u64, r: &DeltaDiscoveryRequest| id == 2 && r.type_url == t.as_str();
    let versions = |r: &DeltaDiscoveryRequest| {
        let mut v: Vec<(String, String)> =
            r.initial_resource_versions.clone().into_iter().collect();
        v.sort();
        v
    };
    let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
    let (_, cds) = cp.expect(WAIT, on_2(TypeUrl::Cluster)).await.unwrap();
    assert!(cds.node.is_some(), "a new stream sends the node again");
    assert_eq!(versions(&cds), [pair("a", "c1"), pair("b", "c1")]);
    let (_, lds) = cp.expect(WAIT, on_2(TypeUrl::Listener)).await.unwrap();
    assert_eq!(versions(&lds), [pair("l", "l1")]);
    let (_, eds) = cp.expect(WAIT, on_2(TypeUrl::Endpoint)).await.unwrap();
    assert_eq!(eds.resource_names_subscribe, ["a", "b"]);
    assert_eq!(versions(&eds), [pair("a", "e1"), pair("b", "e1")]);
    let (_, rds) = cp.expect(WAIT, on_2(TypeUrl::Route)).await.unwrap();
    assert_eq!(rds.resource_names_subscribe, ["r"]);
    assert_eq!(versions(&rds), [pair("r", "r1")]);
    let (_, vhds) = cp.expect(WAIT, on_2(TypeUrl::VirtualHost)).await.unwrap();
    assert_eq!(vhds.resource_names_subscribe, ["r"]);
    assert_eq!(versions(&vhds), [pair("r/a", "h1"), pair("r/b", "h1")]);

    // The new stream resumes: a change on it reaches the data path.
    let hosts = vec![resource("r/b", "h2", pack(&vhost("b", "b.test", "a")))];
    let nonce = cp.respond(TypeUrl::VirtualHost, hosts, &[]).await;
    assert!(
        cp.ack_of(&nonce, WAIT)
            .await
            .unwrap()
            .error_detail
            .is_none()
    );
    until(port, "b.test", 200, "A").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_configuration_that_goes_away_is_unsubscribed_from_vhds() {
    let Vhds1 {
        mut cp,
        proxy: _p,
        port,
    } = vhds_mesh().await;
    // The listener now names route configuration r2 (no VHDS).
    let l = resource("l", "l2", pack(&http_listener("l", port, "r2")));
    cp.respond(TypeUrl::Listener, vec![l], &[]).await;
    let (_, rds) = cp.subscription(TypeUrl::Route, WAIT).await.unwrap();
    assert_eq!(rds.resource_names_subscribe, ["r2"]);
    assert_eq!(rds.resource_names_unsubscribe, ["r"]);
    let (_, vhds) = cp.subscription(TypeUrl::VirtualHost, WAIT).await.unwrap();
    assert!(vhds.resource_names_subscribe.is_empty());
    assert_eq!(vhds.resource_names_unsubscribe, ["r"]);
    let r2 = resource("r2", "r1", pack(&route_to("r2", "b", None)));
    cp.respond(TypeUrl::Route, vec![r2], &[]).await;
    until(port, "a.test", 200, "B").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhds_from_the_ads_server_routes_by_host() {
    let (a, b) = (http_backend("A").await, http_backend("B").await);
    let ads = AdsServer::new();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let xds = l.local_addr().unwrap();
    tokio::spawn(ads.clone().serve(l));
    let port = free_port();
    let named = |n: &str, any| (n.to_string(), any);
    ads.set(
        TypeUrl::Cluster,
        [
            named("a", pack(&eds_cluster("a", false))),
            named("b", pack(&eds_cluster("b", false))),
        ],
    );
    ads.set(
        TypeUrl::Endpoint,
        [
            named("a", pack(&endpoints("a", &[a]))),
            named("b", pack(&endpoints("b", &[b]))),
        ],
    );
    ads.set(TypeUrl::Route, [named("r", pack(&vhds_route("r", vec![])))]);
    ads.set(
        TypeUrl::VirtualHost,
        [
            named("r/a", pack(&vhost("a", "a.test", "a"))),
            named("r/b", pack(&vhost("b", "b.test", "b"))),
            // Another route configuration's host is not ours.
            named("other/c", pack(&vhost("c", "c.test", "a"))),
        ],
    );
    ads.set(
        TypeUrl::Listener,
        [named("l", pack(&http_listener("l", port, "r")))],
    );
    let _proxy = start_proxy(xds).await;
    until(port, "a.test", 200, "A").await;
    until(port, "b.test", 200, "B").await;
    until(port, "c.test", 404, "no route found").await;

    // One virtual host changes, one goes away: only they are pushed.
    ads.set(
        TypeUrl::VirtualHost,
        [named("r/a", pack(&vhost("a", "a.test", "b")))],
    );
    until(port, "a.test", 200, "B").await;
    until(port, "b.test", 404, "no route found").await;
}
