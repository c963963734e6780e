//! VirtualService `tcp` and `tls` routes through translate and the real
//! proxy: weighted TCP routes, destination subnet and source label
//! matches, and TLS passed through by SNI.

mod common;
mod live;
mod traffic;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use live::Live;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback address for a service VIP, different for each test run.
fn vip(seed: u8) -> IpAddr {
    let r: u16 = (std::process::id() % 250) as u16;
    format!("127.{}.{}.{}", 100 + seed, r + 1, 10)
        .parse()
        .unwrap()
}

fn service(name: &str, port: u16, port_name: &str, vip: IpAddr) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  clusterIP: {vip}\n  ports: [{{port: {port}, name: {port_name}}}]\n  selector: {{app: {name}}}\n"
    );
    for v in ["v1", "v2"] {
        y.push_str(&format!(
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}-{v}, namespace: default}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}, version: {v}}}}}\n  template:\n    metadata: {{labels: {{app: {name}, version: {v}}}}}\n    spec: {{containers: [{{name: {name}, image: x}}]}}\n"
        ));
    }
    y.push_str(&format!(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  host: {name}\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n"
    ));
    y
}

async fn start(yaml: &str, port: u16, vip: IpAddr) -> Arc<Live> {
    let res = common::load(&[], &format!("{}---\n{yaml}", traffic::mesh()));
    Arc::new(Live::start(res, "client-v1", &[port], Some(vip)).await)
}

/// One HTTP request over a fresh TCP connection through the proxy's TCP
/// proxy: which backend answered.
async fn over_tcp(live: &Live, port: u16) -> String {
    let mut s = tokio::net::TcpStream::connect(live.listeners[&port])
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: db\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("x-backend: "))
        .unwrap_or("none")
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_tcp_routes() {
    let ip = vip(1);
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: db, namespace: default}\nspec:\n  hosts: [db]\n  tcp:\n  - match: [{port: 7000}]\n    route:\n    - {destination: {host: db, subset: v1}, weight: 70}\n    - {destination: {host: db, subset: v2}, weight: 30}\n";
    let yaml = format!("{}---\n{vs}", service("db", 7000, "tcp", ip));
    let live = start(&yaml, 7000, ip).await;
    let n = 400;
    let mut v1 = 0;
    for _ in 0..n {
        match over_tcp(&live, 7000).await.as_str() {
            "db-v1" => v1 += 1,
            "db-v2" => {}
            other => panic!("answered by {other}"),
        }
    }
    // 70% within 5 standard deviations (sigma ~ 9.2).
    assert!((234..=326).contains(&v1), "{v1} of {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_match_on_subnet_and_source_labels() {
    let ip = vip(2);
    let vs = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: db, namespace: default}}\nspec:\n  hosts: [db]\n  tcp:\n  - match: [{{sourceLabels: {{app: other}}}}]\n    route: [{{destination: {{host: db, subset: v1}}}}]\n  - match: [{{destinationSubnets: [\"{ip}/32\"], sourceLabels: {{app: client}}}}]\n    route: [{{destination: {{host: db, subset: v2}}}}]\n"
    );
    let yaml = format!("{}---\n{vs}", service("db", 7000, "tcp", ip));
    let live = start(&yaml, 7000, ip).await;
    for _ in 0..10 {
        assert_eq!(over_tcp(&live, 7000).await, "db-v2");
    }
}

fn client_hello(name: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_routes_by_sni() {
    let ip = vip(3);
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: db, namespace: default}\nspec:\n  hosts: [db, db.example, v2.db.example]\n  tls:\n  - match: [{port: 7443, sniHosts: [v2.db.example]}]\n    route: [{destination: {host: db, subset: v2}}]\n  - match: [{port: 7443, sniHosts: [db.example]}]\n    route: [{destination: {host: db, subset: v1}}]\n";
    let yaml = format!("{}---\n{vs}", service("db", 7443, "tls", ip));
    let live = start(&yaml, 7443, ip).await;
    // The readiness probes' silent connections are passed through to a
    // random backend once detection gives up on them: let them land first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accepted = |w: &str| {
        live.workload(w)[0]
            .accepted
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    for (sni, want) in [
        ("v2.db.example", "db-v2"),
        ("db.example", "db-v1"),
        ("v2.db.example", "db-v2"),
    ] {
        let before = (accepted("db-v1"), accepted("db-v2"));
        let mut s = tokio::net::TcpStream::connect(live.listeners[&7443])
            .await
            .unwrap();
        s.write_all(&client_hello(sni)).await.unwrap();
        let mut got = None;
        for _ in 0..200 {
            let now = (accepted("db-v1"), accepted("db-v2"));
            if now != before {
                got = Some(if now.0 > before.0 { "db-v1" } else { "db-v2" });
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(got, Some(want), "{sni}");
    }
}
