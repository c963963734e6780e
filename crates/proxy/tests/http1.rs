//! HTTP/1.1 through a real proxy configured by a real ADS stream.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_and_round_robin() {
    let a = http_backend("a").await;
    let b = http_backend("b").await;
    let mesh = Mesh::start().await;
    let port = free_port();
    mesh.serve_http(port, &[a, b], false);
    mesh.wait_ready(port).await;

    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut s = BufReader::new(s);
    let mut seen = Vec::new();
    for _ in 0..4 {
        s.get_mut()
            .write_all(b"GET /hello HTTP/1.1\r\nhost: shop\r\n\r\n")
            .await
            .unwrap();
        let (status, headers, body) = read_response(&mut s).await;
        assert_eq!(status, 200);
        assert!(body.contains("GET /hello"), "{body}");
        assert!(
            body.contains("host=Some(\"shop\")"),
            "Host is preserved: {body}"
        );
        seen.push(
            headers
                .iter()
                .find(|(k, _)| k == "x-backend")
                .unwrap()
                .1
                .clone(),
        );
    }
    seen.sort();
    assert_eq!(
        seen,
        vec!["a", "a", "b", "b"],
        "round robin over one keep-alive connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_body_is_streamed_through() {
    let a = http_backend("a").await;
    let mesh = Mesh::start().await;
    let port = free_port();
    mesh.serve_http(port, &[a], false);
    mesh.wait_ready(port).await;
    let mut s = BufReader::new(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap(),
    );
    s.get_mut()
        .write_all(b"POST /echo HTTP/1.1\r\nhost: shop\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .await
        .unwrap();
    let (status, _, body) = read_response(&mut s).await;
    assert_eq!(status, 200);
    assert_eq!(body, "hello world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_is_answered() {
    let a = http_backend("a").await;
    let mesh = Mesh::start().await;
    let port = free_port();
    mesh.serve_http(port, &[a], false);
    mesh.wait_ready(port).await;
    let mut s = BufReader::new(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap(),
    );
    s.get_mut()
        .write_all(b"POST /echo-after-read HTTP/1.1\r\nhost: shop\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "got {line:?}");
    let mut blank = String::new();
    s.read_line(&mut blank).await.unwrap();
    s.get_mut().write_all(b"ping").await.unwrap();
    let (status, _, body) = read_response(&mut s).await;
    assert_eq!((status, body.as_str()), (200, "ping"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_and_no_healthy_upstream_say_why() {
    let mesh = Mesh::start().await;
    let port = free_port();
    let dead = free_port();
    mesh.serve_http(port, &[dead], false);
    mesh.wait_ready(port).await;
    let mut s = BufReader::new(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap(),
    );
    s.get_mut()
        .write_all(b"GET / HTTP/1.1\r\nhost: shop\r\n\r\n")
        .await
        .unwrap();
    let (status, headers, _) = read_response(&mut s).await;
    assert_eq!(status, 503);
    let reason = &headers
        .iter()
        .find(|(k, _)| k == "x-meshwork-reason")
        .unwrap()
        .1;
    assert!(reason.starts_with("UF"), "{reason}");
}

/// Reads one response: status, headers, body (content-length or chunked).
pub async fn read_response<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> (u16, Vec<(String, String)>, String) {
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
        .await
        .expect("response in time")
        .unwrap();
    let status: u16 = line.get(9..12).unwrap_or("0").parse().unwrap_or(0);
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).await.unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(len) = get("content-length") {
        body.resize(len.parse().unwrap(), 0);
        r.read_exact(&mut body).await.unwrap();
    } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).await.unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}
