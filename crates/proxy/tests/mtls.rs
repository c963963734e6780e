//! Mutual TLS in the data path, over real sockets: a client sidecar sends
//! ISTIO_MUTUAL to a server sidecar (auto mTLS), the server applies its
//! PeerAuthentication-shaped chains (STRICT / PERMISSIVE / DISABLE), bad
//! peers are refused with a clear reason, and the peer's identity reaches
//! metrics and access logs.

mod mtls_support;
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use meshwork_identity::tls_fixture::TestCa;
use meshwork_identity::{Identity, Svid};
use meshwork_telemetry::AccessLogger;
use mtls_support::*;
use support::{http_backend, http_get};

const CLIENT: &str = "spiffe://cluster.local/ns/default/sa/client";
const SERVER: &str = "spiffe://cluster.local/ns/default/sa/server";

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
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn at(port: u16) -> std::net::SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// Retries until the proxies have their configuration.
async fn get_ok(port: u16) -> String {
    for _ in 0..200 {
        if let Ok((200, body)) = http_get(at(port), "/").await {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no 200 through port {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_serves_mtls_and_refuses_plaintext() {
    let ca = TestCa::new("cluster.local").unwrap();
    let backend = http_backend("app").await;
    let buf = Buffer::default();
    let log = AccessLogger::to_writer(buf.clone());
    let c = chain(&ca, backend, Mode::Strict, log.clone()).await;
    let body = get_ok(c.outbound).await;
    assert!(body.starts_with("app: GET"), "{body}");

    // Plaintext straight to the STRICT port: no chain matches, closed.
    let direct = http_get(at(c.inbound), "/").await;
    assert!(
        matches!(direct, Err(_) | Ok((0, _))),
        "plaintext must be refused, got {direct:?}"
    );

    // The server reports the verified peer, the client the server.
    let server = c.server.metrics().await;
    let line = server
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("reporter=\"destination\""))
        .expect("server-side request metric");
    assert!(
        line.contains("connection_security_policy=\"mutual_tls\""),
        "{line}"
    );
    assert!(
        line.contains(&format!("source_principal=\"{CLIENT}\"")),
        "{line}"
    );
    assert!(
        line.contains(&format!("destination_principal=\"{SERVER}\"")),
        "{line}"
    );
    let client = c.client.metrics().await;
    let line = client
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("reporter=\"source\""))
        .expect("client-side request metric");
    assert!(
        line.contains(&format!("destination_principal=\"{SERVER}\"")),
        "{line}"
    );
    assert!(
        line.contains(&format!("source_principal=\"{CLIENT}\"")),
        "{line}"
    );

    log.flush();
    let text = buf.text();
    assert!(
        text.contains(&format!("\"downstream_peer_uri_san\":\"{CLIENT}\"")),
        "{text}"
    );
    assert!(
        text.contains(&format!("\"upstream_peer_uri_san\":\"{SERVER}\"")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_accepts_mtls_and_plaintext_on_one_port() {
    let ca = TestCa::new("cluster.local").unwrap();
    let backend = http_backend("app").await;
    let c = chain(&ca, backend, Mode::Permissive, AccessLogger::disabled()).await;
    assert!(get_ok(c.outbound).await.starts_with("app: GET"));
    let (status, body) = http_get(at(c.inbound), "/").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let server = c.server.metrics().await;
    assert!(
        server.contains("connection_security_policy=\"mutual_tls\""),
        "{server}"
    );
    assert!(
        server.contains("connection_security_policy=\"none\""),
        "{server}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_serves_plaintext_and_refuses_tls() {
    let ca = TestCa::new("cluster.local").unwrap();
    let backend = http_backend("app").await;
    let c = chain(&ca, backend, Mode::Disable, AccessLogger::disabled()).await;
    // Endpoints without a sidecar mark: the client sends plaintext.
    assert!(get_ok(c.outbound).await.starts_with("app: GET"));
    // Now tell the client the endpoint has a sidecar: mTLS to a DISABLE
    // port has no chain to land on and fails with a clear flag.
    serve_outbound(&c.client, c.outbound, c.inbound, true, false);
    let mut status = 0;
    for _ in 0..100 {
        status = http_get(at(c.outbound), "/").await.unwrap().0;
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, 503);
    let server = c.server.metrics().await;
    assert!(!server.contains("mutual_tls"), "{server}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_mtls_by_alpn() {
    let ca = TestCa::new("cluster.local").unwrap();
    let backend = http_backend("app").await;
    let c = chain(&ca, backend, Mode::Strict, AccessLogger::disabled()).await;
    serve_outbound(&c.client, c.outbound, c.inbound, true, true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        assert!(get_ok(c.outbound).await.starts_with("app: GET"));
    }
    let server = c.server.metrics().await;
    assert!(server.contains("mutual_tls"), "{server}");
}

/// A leaf from `ca` for `uri`, valid over `[from, to]`, with `bundle`.
fn forged(
    ca: &TestCa,
    uri: &str,
    from: SystemTime,
    to: SystemTime,
    bundle_of: &TestCa,
) -> Arc<Identity> {
    let (chain, key) = ca.issue_uris(&[uri], from, to).unwrap();
    Arc::new(Identity {
        svid: Svid {
            id: SERVER.parse().unwrap(),
            chain,
            key,
            not_before: from,
            not_after: to,
        },
        bundle: bundle_of.bundle(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_server_certificates_are_refused_with_a_reason() {
    let ca = TestCa::new("cluster.local").unwrap();
    let other = TestCa::new("cluster.local").unwrap();
    let backend = http_backend("app").await;
    let buf = Buffer::default();
    let log = AccessLogger::to_writer(buf.clone());
    let c = chain(&ca, backend, Mode::Strict, log.clone()).await;
    get_ok(c.outbound).await;
    let now = SystemTime::now();
    let day = Duration::from_secs(86400);
    let cases = [
        (
            "untrusted",
            forged(&other, SERVER, now - day, now + day, &ca),
            "not trusted",
        ),
        (
            "expired",
            forged(&ca, SERVER, now - 2 * day, now - day, &ca),
            "expired",
        ),
        (
            "wrong trust domain",
            forged(
                &ca,
                "spiffe://evil.example/ns/default/sa/server",
                now - day,
                now + day,
                &ca,
            ),
            "not in trust domain cluster.local",
        ),
    ];
    for (what, identity, reason) in cases {
        c.server.rotate(identity);
        let mut refused = false;
        for i in 0..100 {
            // Pooled connections stay up (as they should); a changed cluster
            // gets new pools, so each try makes a fresh handshake.
            serve_outbound(&c.client, c.outbound, c.inbound, true, i % 2 == 0);
            tokio::time::sleep(Duration::from_millis(20)).await;
            let (status, _) = http_get(at(c.outbound), "/").await.unwrap();
            log.flush();
            if status == 503 && buf.text().contains(reason) {
                refused = true;
                break;
            }
        }
        assert!(
            refused,
            "{what}: no 503 with {reason:?}; log: {}",
            buf.text()
        );
    }
    // A good certificate again: traffic flows.
    c.server.rotate(ca.identity("default", "server").unwrap());
    assert!(get_ok(c.outbound).await.starts_with("app: GET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mtls_without_a_ca_sends_plaintext() {
    // A proxy started without a CA has no workload certificate: endpoints
    // marked `tlsMode: istio` get plaintext instead of failing.
    let backend = http_backend("app").await;
    let mesh = support::Mesh::start().await;
    let port = support::free_port();
    mesh.ads.set(
        meshwork_xds::TypeUrl::Cluster,
        [(
            OUTBOUND.to_string(),
            meshwork_xds::pack(&auto_mtls(support::eds_cluster(OUTBOUND, false), &[])),
        )],
    );
    mesh.ads.set(
        meshwork_xds::TypeUrl::Endpoint,
        [(
            OUTBOUND.to_string(),
            meshwork_xds::pack(&mesh_endpoints(OUTBOUND, &[backend], true)),
        )],
    );
    mesh.ads.set(
        meshwork_xds::TypeUrl::Route,
        [(
            "r".to_string(),
            meshwork_xds::pack(&support::route_to("r", OUTBOUND, None)),
        )],
    );
    mesh.ads.set(
        meshwork_xds::TypeUrl::Listener,
        [(
            "l".to_string(),
            meshwork_xds::pack(&support::http_listener("l", port, "r")),
        )],
    );
    mesh.wait_ready(port).await;
    assert!(get_ok(port).await.starts_with("app: GET"));
}

/// Megabytes each way between the sidecars over HTTP/2 and mutual TLS:
/// the server sidecar's batched writes (full DATA frames straight into
/// the TLS stream) all reach the client, read slowly so buffers fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_streams_both_ways_over_http2_mtls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const TOTAL: usize = 8 * 1024 * 1024;
    let ca = TestCa::new("cluster.local").unwrap();
    let backend = http_backend("app").await;
    let c = chain(&ca, backend, Mode::Strict, AccessLogger::disabled()).await;
    serve_outbound(&c.client, c.outbound, c.inbound, true, true);
    get_ok(c.outbound).await;

    let s = tokio::net::TcpStream::connect(at(c.outbound))
        .await
        .unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let head = format!("POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: {TOTAL}\r\n\r\n");
        wr.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![0x5au8; 64 * 1024];
        for _ in 0..TOTAL / chunk.len() {
            wr.write_all(&chunk).await.unwrap();
        }
        wr
    });
    let mut buf = vec![0u8; 16 * 1024];
    let mut head = Vec::new();
    let mut body = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while body < TOTAL {
        let n = tokio::time::timeout_at(deadline, rd.read(&mut buf))
            .await
            .expect("the whole body arrives")
            .unwrap();
        assert!(n > 0, "closed after {body} body bytes");
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            assert!(buf[..n].iter().all(|b| *b == 0x5a), "bytes intact");
            body += n;
        } else {
            head.extend_from_slice(&buf[..n]);
            if let Some(pos) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
                body += head.len() - pos - 4;
            }
        }
        if body < TOTAL / 4 {
            // A slow reader at first: the chain's buffers and windows fill.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    writer.await.unwrap();
    assert_eq!(body, TOTAL);
}
