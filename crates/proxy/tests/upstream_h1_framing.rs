//! The proxy's own HTTP/1.1 upstream codec against a raw backend that
//! answers with every framing RFC 9112 allows: chunked with extensions and
//! trailers, close-delimited, interim 1xx before the final response, 204
//! and HEAD without a body (the connection is kept), and garbage (a clean
//! 503, never a hang). The requests the backend receives are checked too:
//! whole bodies, each with its one `content-length`.

mod support;

use std::sync::{Arc, Mutex};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the backend saw: each request head (lowercased) and its body.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// The canned response for a request head, and whether to close after it.
fn reply(head: &str) -> (&'static [u8], bool) {
    let path = head.split(' ').nth(1).unwrap_or("/");
    let head_request = head.starts_with("head ");
    match path {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
            false,
        ),
        "/close-delimited" => (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", true),
        "/interim" => (
            b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            false,
        ),
        "/no-content" => (b"HTTP/1.1 204 No Content\r\n\r\n", false),
        "/garbage" => (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", true),
        _ if head_request => (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n", false),
        _ => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
    }
}

/// A raw backend: reads each request (head, then a `content-length`
/// body), records it, answers from [`reply`]; counts its connections.
async fn backend() -> (u16, Seen, Arc<Mutex<usize>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let conns = Arc::new(Mutex::new(0));
    let (s2, c2) = (seen.clone(), conns.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            *c2.lock().unwrap() += 1;
            let seen = s2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let Some((body, used)) = request_body(&head, &buf[end + 4..]) else {
                            break;
                        };
                        buf.drain(..end + 4 + used);
                        let (answer, close) = reply(&head);
                        seen.lock().unwrap().push((head, body));
                        if s.write_all(answer).await.is_err() || close {
                            return;
                        }
                    }
                    let mut chunk = [0u8; 4096];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (port, seen, conns)
}

/// The request body after `head` in `rest` (`content-length` or chunked)
/// and the bytes it took; `None` while incomplete.
fn request_body(head: &str, rest: &[u8]) -> Option<(Vec<u8>, usize)> {
    if head.contains("transfer-encoding: chunked") {
        let (mut body, mut at) = (Vec::new(), 0);
        loop {
            let line_end = rest[at..].windows(2).position(|w| w == b"\r\n")? + at;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[at..line_end]).ok()?, 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                return (rest.len() >= at + 2).then_some((body, at + 2));
            }
            body.extend_from_slice(rest.get(at..at + size)?);
            at += size + 2;
        }
    }
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (rest.len() >= len).then(|| (rest[..len].to_vec(), len))
}

/// Sends raw request bytes (which ask for `connection: close`) and returns
/// the whole raw response.
async fn raw(port: u16, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the proxy answered in time")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

async fn proxy() -> (Mesh, u16, Seen, Arc<Mutex<usize>>) {
    let (b, seen, conns) = backend().await;
    let mesh = Mesh::start().await;
    let port = free_port();
    mesh.serve_http(port, &[b], false);
    mesh.wait_ready(port).await;
    (mesh, port, seen, conns)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
}

/// The body of a raw response, a chunked one decoded.
fn body_of(resp: &str) -> String {
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    if !head.to_lowercase().contains("transfer-encoding: chunked") {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_framing_arrives_whole() {
    let (_mesh, port, _seen, _conns) = proxy().await;

    let r = raw(port, &get("/chunked")).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(body_of(&r), "hello world");

    let r = raw(port, &get("/close-delimited")).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(body_of(&r), "until the end");

    let r = raw(port, &get("/interim")).await;
    assert!(r.starts_with("HTTP/1.1 200"), "interim 103 skipped: {r}");
    assert_eq!(body_of(&r), "ok");

    let r = raw(port, &get("/garbage")).await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_responses_keep_the_connection() {
    let (_mesh, port, _seen, conns) = proxy().await;
    let r = raw(port, &get("/no-content")).await;
    assert!(r.starts_with("HTTP/1.1 204"), "{r}");
    let r = raw(
        port,
        "HEAD / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.to_lowercase().contains("content-length: 100"), "{r}");
    let r = raw(port, &get("/")).await;
    assert_eq!(body_of(&r), "ok");
    assert_eq!(
        *conns.lock().unwrap(),
        1,
        "204 and HEAD responses end without a body: one upstream connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_requests_carry_one_content_length() {
    let (_mesh, port, seen, _conns) = proxy().await;
    let r = raw(
        port,
        "POST /a HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // A small chunked request body, all sent at once, goes with its length.
    let r = raw(
        port,
        "POST /b HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // An empty POST says so.
    let r = raw(
        port,
        "POST /c HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");

    let seen = seen.lock().unwrap().clone();
    let by_path = |p: &str| {
        seen.iter()
            .find(|(h, _)| h.starts_with(&format!("post {p} ")))
            .cloned()
            .unwrap_or_else(|| panic!("{p} never reached the backend: {seen:?}"))
    };
    for (path, body) in [("/a", "abc"), ("/b", "hello"), ("/c", "")] {
        let (head, got) = by_path(path);
        assert_eq!(got, body.as_bytes(), "{path}");
        assert_eq!(
            head.matches("content-length: ").count(),
            1,
            "{path}: {head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{path}: {head}"
        );
        assert!(!head.contains("transfer-encoding"), "{path}: {head}");
    }
}
