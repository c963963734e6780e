//! Certificate and root rotation under continuous load through a client
//! sidecar → server sidecar mTLS chain: HTTP over pooled connections and
//! TCP connections that each make a fresh handshake. Zero failures allowed.

mod mtls_support;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use meshwork_identity::tls_fixture::TestCa;
use meshwork_identity::{Identity, TrustBundle};
use meshwork_telemetry::AccessLogger;
use meshwork_xds::{TypeUrl, pack};
use mtls_support::*;
use support::{
    eds_cluster, free_port, http_backend, http_get, http_listener, route_to, tcp_listener,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OUTBOUND_TCP: &str = "outbound|9000||server.default.svc.cluster.local";

/// A TCP echo server.
async fn echo_backend() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn identity(ca: &TestCa, sa: &str, roots: &[&TestCa]) -> Arc<Identity> {
    Arc::new(Identity {
        svid: ca.svid("default", sa, Duration::from_secs(86400)).unwrap(),
        bundle: TrustBundle {
            trust_domain: "cluster.local".into(),
            roots: roots.iter().map(|c| c.root()).collect(),
        },
    })
}

struct Ports {
    http_out: u16,
    tcp_out: u16,
    http_in: u16,
    tcp_in: u16,
}

fn configure(client: &Sidecar, server: &Sidecar, p: &Ports, http_backend: u16, tcp_backend: u16) {
    server.ads.set(
        TypeUrl::Cluster,
        [
            (
                "inbound|8080||".to_string(),
                pack(&eds_cluster("inbound|8080||", false)),
            ),
            (
                "inbound|9000||".to_string(),
                pack(&eds_cluster("inbound|9000||", false)),
            ),
        ],
    );
    server.ads.set(
        TypeUrl::Endpoint,
        [
            (
                "inbound|8080||".to_string(),
                pack(&support::endpoints("inbound|8080||", &[http_backend])),
            ),
            (
                "inbound|9000||".to_string(),
                pack(&support::endpoints("inbound|9000||", &[tcp_backend])),
            ),
        ],
    );
    server.ads.set(
        TypeUrl::Route,
        [(
            "inbound|8080||".to_string(),
            pack(&route_to("inbound|8080||", "inbound|8080||", None)),
        )],
    );
    let mut tcp_in = inbound_listener(p.tcp_in, Mode::Strict, "", Some("inbound|9000||"));
    tcp_in.name = "inbound_9000".into();
    server.ads.set(
        TypeUrl::Listener,
        [
            (
                "virtualInbound".to_string(),
                pack(&inbound_listener(
                    p.http_in,
                    Mode::Strict,
                    "inbound|8080||",
                    None,
                )),
            ),
            ("inbound_9000".to_string(), pack(&tcp_in)),
        ],
    );
    client.ads.set(
        TypeUrl::Cluster,
        [
            (
                OUTBOUND.to_string(),
                pack(&auto_mtls(eds_cluster(OUTBOUND, false), &[])),
            ),
            (
                OUTBOUND_TCP.to_string(),
                pack(&auto_mtls(eds_cluster(OUTBOUND_TCP, false), &[])),
            ),
        ],
    );
    client.ads.set(
        TypeUrl::Endpoint,
        [
            (
                OUTBOUND.to_string(),
                pack(&mesh_endpoints(OUTBOUND, &[p.http_in], true)),
            ),
            (
                OUTBOUND_TCP.to_string(),
                pack(&mesh_endpoints(OUTBOUND_TCP, &[p.tcp_in], true)),
            ),
        ],
    );
    client.ads.set(
        TypeUrl::Route,
        [("8080".to_string(), pack(&route_to("8080", OUTBOUND, None)))],
    );
    client.ads.set(
        TypeUrl::Listener,
        [
            (
                "0.0.0.0_8080".to_string(),
                pack(&http_listener("0.0.0.0_8080", p.http_out, "8080")),
            ),
            (
                "0.0.0.0_9000".to_string(),
                pack(&tcp_listener("0.0.0.0_9000", p.tcp_out, OUTBOUND_TCP)),
            ),
        ],
    );
}

#[derive(Default)]
struct Counts {
    http_ok: AtomicU64,
    tcp_ok: AtomicU64,
    failed: AtomicU64,
}

/// One TCP round trip through the chain (a fresh mTLS handshake upstream).
async fn tcp_once(port: u16, i: u64) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let msg = format!("ping {i}");
    if s.write_all(msg.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).await.is_ok() && buf == msg.as_bytes()
}

fn load(
    p: &Ports,
    counts: &Arc<Counts>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (c, s, port) = (counts.clone(), stop.clone(), p.http_out);
        tasks.push(tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                match http_get(([127, 0, 0, 1], port).into(), "/").await {
                    Ok((200, _)) => c.http_ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("HTTP failure: {other:?}");
                        c.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
        let (c, s, port) = (counts.clone(), stop.clone(), p.tcp_out);
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !s.load(Ordering::Relaxed) {
                i += 1;
                if tcp_once(port, i).await {
                    c.tcp_ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    eprintln!("TCP failure");
                    c.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tasks
}

async fn ready(p: &Ports) {
    for _ in 0..200 {
        let http = matches!(
            http_get(([127, 0, 0, 1], p.http_out).into(), "/").await,
            Ok((200, _))
        );
        if http && tcp_once(p.tcp_out, 0).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("chain never became ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_of_certificates_and_roots_under_load_fails_nothing() {
    let ca1 = TestCa::new("cluster.local").unwrap();
    let client = Sidecar::start(
        "client",
        identity(&ca1, "client", &[&ca1]),
        AccessLogger::disabled(),
    )
    .await;
    let server = Sidecar::start(
        "server",
        identity(&ca1, "server", &[&ca1]),
        AccessLogger::disabled(),
    )
    .await;
    let p = Ports {
        http_out: free_port(),
        tcp_out: free_port(),
        http_in: free_port(),
        tcp_in: free_port(),
    };
    configure(
        &client,
        &server,
        &p,
        http_backend("app").await,
        echo_backend().await,
    );
    ready(&p).await;

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&p, &counts, &stop);
    let step = Duration::from_millis(700);

    // Leaf rotation about every second, both sides.
    for _ in 0..3 {
        tokio::time::sleep(step).await;
        client.rotate(identity(&ca1, "client", &[&ca1]));
        server.rotate(identity(&ca1, "server", &[&ca1]));
    }
    // Root rotation: add the new root, reissue from it, remove the old one.
    let ca2 = TestCa::new("cluster.local").unwrap();
    tokio::time::sleep(step).await;
    client.rotate(identity(&ca1, "client", &[&ca1, &ca2]));
    server.rotate(identity(&ca1, "server", &[&ca1, &ca2]));
    tokio::time::sleep(step).await;
    client.rotate(identity(&ca2, "client", &[&ca1, &ca2]));
    server.rotate(identity(&ca2, "server", &[&ca1, &ca2]));
    tokio::time::sleep(step).await;
    client.rotate(identity(&ca2, "client", &[&ca2]));
    server.rotate(identity(&ca2, "server", &[&ca2]));
    let tcp_before = counts.tcp_ok.load(Ordering::Relaxed);
    tokio::time::sleep(step).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let (http, tcp, failed) = (
        counts.http_ok.load(Ordering::Relaxed),
        counts.tcp_ok.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
    );
    eprintln!("rotation under load: {http} HTTP requests, {tcp} TCP connections, {failed} failed");
    assert_eq!(failed, 0);
    assert!(
        http > 50 && tcp > 50,
        "too little load: {http} HTTP, {tcp} TCP"
    );
    assert!(
        tcp > tcp_before,
        "new handshakes after the old root was removed"
    );

    // The old root is gone: a peer still holding a certificate from it is refused.
    server.rotate(identity(&ca1, "server", &[&ca2]));
    assert!(
        !tcp_once(p.tcp_out, 1).await,
        "a certificate from the removed root must fail"
    );
}
