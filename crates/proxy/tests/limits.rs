//! Protection from bad input: each limit answers with its clean error, and
//! nothing panics.

mod support;

use std::time::Duration;

use meshwork_proxy::options::Limits;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn raw_exchange(port: u16, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_is_431() {
    let (_mesh, port) = mesh_with(Limits {
        max_headers: 10,
        ..Limits::default()
    })
    .await;
    let mut req = String::from("GET / HTTP/1.1\r\nhost: a\r\n");
    for i in 0..20 {
        req.push_str(&format!("x-h{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let resp = raw_exchange(port, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_is_431() {
    let (_mesh, port) = mesh_with(Limits {
        max_header_bytes: 16 * 1024,
        ..Limits::default()
    })
    .await;
    let big = "x".repeat(40 * 1024);
    let resp = raw_exchange(
        port,
        format!("GET / HTTP/1.1\r\nhost: a\r\nx-big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_is_400() {
    let (_mesh, port) = mesh_with(Limits::default()).await;
    let resp = raw_exchange(
        port,
        b"GET / HTTP/1.1\r\nhost: a\r\nbad header line\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let resp = raw_exchange(port, b"GET /\x01\x02 HTTP/1.1\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_gets_408() {
    let (_mesh, port) = mesh_with(Limits {
        request_header_timeout: Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\nx-slow: ")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let resp = String::from_utf8_lossy(&out);
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_is_closed_without_a_reply() {
    let (_mesh, port) = mesh_with(Limits {
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // Detection waits for bytes on HTTP ports; send a complete request then idle.
    s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let resp = String::from_utf8_lossy(&out);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(
        resp.matches("HTTP/1.1").count(),
        1,
        "only the one response: {resp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_body_is_413() {
    let (_mesh, port) = mesh_with(Limits {
        max_request_body_bytes: Some(1024),
        ..Limits::default()
    })
    .await;
    let resp = raw_exchange(
        port,
        b"POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: 5000\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_refuses_extra_connections() {
    let (_mesh, port) = mesh_with(Limits {
        max_connections: 2,
        ..Limits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let resp = raw_exchange(port, b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await;
    assert!(resp.is_empty(), "third connection refused: {resp}");
    drop(held);
    // Capacity comes back once connections close.
    let mut ok = false;
    for _ in 0..100 {
        let resp = raw_exchange(
            port,
            b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        )
        .await;
        if resp.starts_with("HTTP/1.1 200") {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_flood_closes_the_connection() {
    let (_mesh, port) = mesh_with(Limits::default()).await;
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(s).await.unwrap();
    let conn_task = tokio::spawn(conn);
    let mut client = client;
    // Open and immediately reset many streams (CVE-2023-44487).
    let mut refused = false;
    for _ in 0..10_000 {
        match client.clone().ready().await {
            Ok(mut c) => {
                let req = http::Request::builder()
                    .uri("http://a/slow")
                    .body(())
                    .unwrap();
                match c.send_request(req, true) {
                    Ok((resp, _)) => drop(resp),
                    Err(_) => {
                        refused = true;
                        break;
                    }
                }
                client = c;
            }
            Err(_) => {
                refused = true;
                break;
            }
        }
    }
    // Dropping the response future resets the stream; the server must end the connection.
    let ended = tokio::time::timeout(Duration::from_secs(10), conn_task).await;
    assert!(
        refused || ended.is_ok(),
        "server tolerated an unbounded reset flood"
    );
}
