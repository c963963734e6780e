//! The downstream HTTP/1.1 fast path and its hand-off to hyper, through a
//! real proxy and a real backend: pipelined requests answered in order,
//! a request the fast path leaves to hyper (chunked, a head split over two
//! writes) in the middle of a connection, streamed response bodies framed
//! chunked, `Connection: close`, a half-close after pipelined requests,
//! and the client closing mid-request. The proxy's `meshwork_http1_*`
//! counters show which server took each request.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn proxy() -> (Mesh, u16) {
    let b = http_backend("b").await;
    let mesh = Mesh::start().await;
    let port = free_port();
    mesh.serve_http(port, &[b], false);
    mesh.wait_ready(port).await;
    (mesh, port)
}

/// The fast path's counters: (requests served, connections handed off).
async fn fast_path_counts(mesh: &Mesh) -> (u64, u64) {
    let (_, stats) = mesh.admin("/stats/prometheus").await;
    let value = |name: &str| {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{stats}"))
    };
    (
        value("meshwork_http1_fast_path_requests_total "),
        value("meshwork_http1_handoffs_total "),
    )
}

/// One response read off `s`: (status, lowercased head, body), the body
/// framed by content-length or chunked.
async fn response(s: &mut TcpStream, pending: &mut Vec<u8>) -> (u16, String, Vec<u8>) {
    let head_end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        read_some(s, pending).await;
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).to_lowercase();
    pending.drain(..head_end);
    let status = head[9..12].parse().unwrap();
    let mut body = Vec::new();
    if head.contains("transfer-encoding: chunked") {
        loop {
            let line = loop {
                if let Some(i) = pending.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                read_some(s, pending).await;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&pending[..line]).unwrap(), 16).unwrap();
            while pending.len() < line + 2 + size + 2 {
                read_some(s, pending).await;
            }
            body.extend_from_slice(&pending[line + 2..line + 2 + size]);
            pending.drain(..line + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
    } else {
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        while pending.len() < len {
            read_some(s, pending).await;
        }
        body = pending.drain(..len).collect();
    }
    (status, head, body)
}

async fn read_some(s: &mut TcpStream, pending: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
        .await
        .expect("the proxy answered in time")
        .unwrap();
    assert!(
        n > 0,
        "connection closed early: {:?}",
        String::from_utf8_lossy(pending)
    );
    pending.extend_from_slice(&chunk[..n]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_then_a_hand_off_on_one_connection() {
    let (mesh, port) = proxy().await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // Two plain requests, a chunked one (hyper's from here on), one more.
    s.write_all(
        b"GET /one HTTP/1.1\r\nhost: a\r\n\r\n\
          POST /echo-after-read HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello\
          POST /echo-after-read HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET /four HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut pending = Vec::new();
    let (status, head, body) = response(&mut s, &mut pending).await;
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("\r\ndate: "), "a date is always sent: {head}");
    assert!(String::from_utf8_lossy(&body).contains("GET /one"));
    let (status, _, body) = response(&mut s, &mut pending).await;
    assert_eq!((status, &body[..]), (200, &b"hello"[..]));
    let (status, _, body) = response(&mut s, &mut pending).await;
    assert_eq!((status, &body[..]), (200, &b"abc"[..]));
    let (status, head, body) = response(&mut s, &mut pending).await;
    assert_eq!(status, 200);
    assert!(head.contains("connection: close"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("GET /four"));
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert!(
        rest.is_empty() && pending.is_empty(),
        "nothing after the last response"
    );
    let (fast, handoffs) = fast_path_counts(&mesh).await;
    assert_eq!(handoffs, 1, "the chunked request went to hyper");
    assert!(fast >= 2, "the first two took the fast path: {fast}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_and_half_close_on_the_fast_path() {
    let (mesh, port) = proxy().await;
    let (fast_before, _) = fast_path_counts(&mesh).await;
    // `Connection: close`: answered with it, then the proxy closes.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /bye HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut pending = Vec::new();
    let (status, head, _) = response(&mut s, &mut pending).await;
    assert_eq!(status, 200);
    assert!(head.contains("connection: close"), "{head}");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty() && pending.is_empty());
    // Two requests, then FIN: both are answered before the proxy closes.
    // The first is slow (2 s), so the FIN surely arrives while it runs: a
    // FIN during the last request cancels it (the client left, as in hyper
    // and Envoy), and that would race with answering `/b`.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nhost: a\r\n\r\nGET /b HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let mut pending = Vec::new();
    for path in ["/slow", "/b"] {
        let (status, _, body) = response(&mut s, &mut pending).await;
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&body).contains(path));
    }
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty() && pending.is_empty());
    let (fast, handoffs) = fast_path_counts(&mesh).await;
    assert_eq!(
        (fast - fast_before, handoffs),
        (3, 0),
        "all on the fast path"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_split_over_writes_and_a_streamed_body_are_served() {
    let (_mesh, port) = proxy().await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut pending = Vec::new();
    // A whole request first (the fast path), then one in two pieces.
    s.write_all(b"GET /first HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let (status, _, _) = response(&mut s, &mut pending).await;
    assert_eq!(status, 200);
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: a\r\ncont")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"ent-length: 4\r\n\r\nbody").await.unwrap();
    let (status, head, body) = response(&mut s, &mut pending).await;
    assert_eq!((status, &body[..]), (200, &b"body"[..]), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_response_is_framed_chunked() {
    let (_mesh, port) = proxy().await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // `/echo` streams the request body back: the backend answers chunked
    // and the proxy has no length to give.
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nxyz")
        .await
        .unwrap();
    let mut pending = Vec::new();
    let (status, head, body) = response(&mut s, &mut pending).await;
    assert_eq!((status, &body[..]), (200, &b"xyz"[..]), "{head}");
    s.write_all(b"GET /after HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let (status, _, body) = response(&mut s, &mut pending).await;
    assert_eq!(status, 200, "the connection is kept");
    assert!(String::from_utf8_lossy(&body).contains("GET /after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_request_is_logged_as_dc() {
    let (mesh, port) = proxy().await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, stats) = mesh.admin("/stats/prometheus").await;
        if stats
            .lines()
            .any(|l| l.starts_with("istio_requests_total") && l.contains("response_flags=\"DC\""))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no DC request recorded:\n{stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
