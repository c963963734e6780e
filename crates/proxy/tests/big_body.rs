//! A 100 MB body streams through the proxy in bounded memory (its own test
//! binary, so the process's peak memory is this test's alone).

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_stream_in_bounded_memory() {
    const TOTAL: usize = 100 * 1024 * 1024;
    let a = http_backend("a").await;
    let mesh = Mesh::start().await;
    let port = free_port();
    mesh.serve_http(port, &[a], false);
    mesh.wait_ready(port).await;
    let before = peak_rss_kb();

    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        wr.write_all(
            format!("POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: {TOTAL}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let chunk = vec![0xabu8; 64 * 1024];
        let mut sent = 0;
        while sent < TOTAL {
            wr.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        wr
    });
    // Read the echoed body as it streams back.
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let mut body_bytes = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while body_bytes < TOTAL {
        let n = tokio::time::timeout_at(deadline, rd.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "connection closed early after {body_bytes} body bytes"
        );
        if head.len() < 4 || !head.windows(4).any(|w| w == b"\r\n\r\n") {
            head.extend_from_slice(&buf[..n]);
            if let Some(pos) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                body_bytes += head.len() - pos - 4;
                assert!(head.starts_with(b"HTTP/1.1 200"));
            }
        } else {
            assert!(buf[..n].iter().all(|b| *b == 0xab), "bytes intact");
            body_bytes += n;
        }
    }
    writer.await.unwrap();
    assert_eq!(body_bytes, TOTAL);
    let grown_mb = (peak_rss_kb().saturating_sub(before)) / 1024;
    assert!(
        grown_mb < 48,
        "peak memory grew {grown_mb} MB while streaming 100 MB"
    );
}
