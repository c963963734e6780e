//! The HTTP/1.1 upstream pool through a real proxy and a raw TCP backend
//! that counts its connections: keep-alive reuse, `Connection: close`, a
//! connection the server closed while idle, the cluster's idle timeout,
//! and concurrent requests each getting a connection.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::HttpProtocolOptions as CommonOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use meshwork_xds::{TypeUrl, pack};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the raw backend treats its connections.
#[derive(Clone, Copy)]
enum Mode {
    /// Keep-alive.
    KeepAlive,
    /// Answers with `Connection: close` and closes.
    Close,
    /// Keep-alive in the reply, but closes the connection 50 ms after it.
    CloseSoon,
}

#[derive(Default)]
struct Counts {
    opened: AtomicUsize,
    closed_by_peer: AtomicUsize,
    requests: AtomicUsize,
}

/// A raw HTTP/1.1 backend (GETs without bodies; `/slow` waits 200 ms).
async fn backend(mode: Mode) -> (u16, Arc<Counts>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            c.opened.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let n = match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => {
                            c.closed_by_peer.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        c.requests.fetch_add(1, Ordering::SeqCst);
                        if head.starts_with("GET /slow ") {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        let close = matches!(mode, Mode::Close);
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{}\r\nok",
                            if close { "connection: close\r\n" } else { "" }
                        );
                        if s.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                        match mode {
                            Mode::KeepAlive => {}
                            Mode::Close => return,
                            Mode::CloseSoon => {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (port, counts)
}

/// A proxy whose cluster `backend` is the raw backend, with an upstream
/// idle timeout.
async fn proxy_to(backend_port: u16, idle: Duration) -> (Mesh, u16) {
    let mesh = Mesh::start().await;
    let listen = free_port();
    mesh.serve_http(listen, &[backend_port], false);
    let mut cluster = eds_cluster("backend", false);
    let opts = HttpProtocolOptions {
        common_http_protocol_options: Some(CommonOptions {
            idle_timeout: Some(PbDuration {
                seconds: idle.as_secs() as i64,
                nanos: idle.subsec_nanos() as i32,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    cluster.typed_extension_protocol_options = [(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
        pack(&opts),
    )]
    .into();
    mesh.ads
        .set(TypeUrl::Cluster, [("backend".to_string(), pack(&cluster))]);
    mesh.wait_ready(listen).await;
    (mesh, listen)
}

async fn get(port: u16, path: &str) -> (u16, String) {
    http_get(([127, 0, 0, 1], port).into(), path).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_one_upstream_connection() {
    let (b, counts) = backend(Mode::KeepAlive).await;
    let (_mesh, port) = proxy_to(b, Duration::from_secs(60)).await;
    for _ in 0..10 {
        assert_eq!(get(port, "/").await, (200, "ok".to_string()));
    }
    assert_eq!(counts.requests.load(Ordering::SeqCst), 10);
    assert_eq!(counts.opened.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_from_upstream_is_never_reused() {
    let (b, counts) = backend(Mode::Close).await;
    let (_mesh, port) = proxy_to(b, Duration::from_secs(60)).await;
    for _ in 0..3 {
        assert_eq!(get(port, "/").await, (200, "ok".to_string()));
    }
    assert_eq!(counts.opened.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_upstream_closed_while_idle_is_replaced() {
    let (b, counts) = backend(Mode::CloseSoon).await;
    let (_mesh, port) = proxy_to(b, Duration::from_secs(60)).await;
    for _ in 0..3 {
        assert_eq!(get(port, "/").await, (200, "ok".to_string()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(counts.opened.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_close_after_the_idle_timeout() {
    let (b, counts) = backend(Mode::KeepAlive).await;
    let (_mesh, port) = proxy_to(b, Duration::from_millis(300)).await;
    assert_eq!(get(port, "/").await.0, 200);
    // Reused while fresh.
    assert_eq!(get(port, "/").await.0, 200);
    assert_eq!(counts.opened.load(Ordering::SeqCst), 1);
    let mut closed = false;
    for _ in 0..100 {
        if counts.closed_by_peer.load(Ordering::SeqCst) == 1 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "the idle upstream connection was never closed");
    // A new request gets a new connection.
    assert_eq!(get(port, "/").await.0, 200);
    assert_eq!(counts.opened.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_get_connections_of_their_own_and_keep_them() {
    let (b, counts) = backend(Mode::KeepAlive).await;
    let (_mesh, port) = proxy_to(b, Duration::from_secs(60)).await;
    let burst = || async {
        let all: Vec<_> = (0..4).map(|_| tokio::spawn(get(port, "/slow"))).collect();
        for r in all {
            assert_eq!(r.await.unwrap(), (200, "ok".to_string()));
        }
    };
    burst().await;
    let opened = counts.opened.load(Ordering::SeqCst);
    assert_eq!(
        opened, 4,
        "each of 4 concurrent requests needs a connection"
    );
    // The second burst finds them idle in the pool.
    burst().await;
    assert_eq!(counts.opened.load(Ordering::SeqCst), opened);
    assert_eq!(counts.requests.load(Ordering::SeqCst), 8);
}
