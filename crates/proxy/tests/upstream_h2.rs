//! The HTTP/2 upstream client through a real proxy, against an `h2`
//! backend: request bodies that stream while the response does, trailers
//! both ways, bodies larger than the flow-control windows, and a
//! connection the upstream sends GOAWAY on.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{HeaderMap, Request, Response};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIG: usize = 3 << 20;

/// An HTTP/2 backend; returns its port and a count of its connections.
/// - `/echo`: answers at once, then echoes each request chunk and the
///   request trailers.
/// - `/count`: reads the whole body, answers with its length.
/// - `/big`: answers with [`BIG`] bytes.
/// - `/bye`: sends GOAWAY, then answers.
/// - `/refuse`: resets the stream with REFUSED_STREAM.
/// - `/cut`: answers with some data, then resets the stream.
async fn h2_backend() -> (u16, Arc<AtomicUsize>) {
    h2_backend_with_table(4096).await
}

/// `h2_backend` whose HPACK decoder allows a dynamic table of `table`
/// octets (SETTINGS_HEADER_TABLE_SIZE).
async fn h2_backend_with_table(table: u32) -> (u16, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let conns = Arc::new(AtomicUsize::new(0));
    let count = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut conn = h2::server::Builder::new()
                    .header_table_size(table)
                    .handshake(s)
                    .await
                    .unwrap();
                while let Some(Ok((req, respond))) = conn.accept().await {
                    if req.uri().path() == "/bye" {
                        conn.graceful_shutdown();
                    }
                    tokio::spawn(serve(req, respond));
                }
            });
        }
    });
    (port, conns)
}

async fn serve(req: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
    let path = req.uri().path().to_string();
    let x_test = req.headers().get("x-test").cloned();
    let mut body = req.into_body();
    let head = Response::new(());
    match path.as_str() {
        "/refuse" => respond.send_reset(h2::Reason::REFUSED_STREAM),
        "/cut" => {
            let mut tx = respond.send_response(head, false).unwrap();
            tx.send_data(Bytes::from_static(b"half of it"), false)
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            tx.send_reset(h2::Reason::INTERNAL_ERROR);
        }
        "/echo" => {
            let mut tx = respond.send_response(head, false).unwrap();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap();
                let _ = body.flow_control().release_capacity(chunk.len());
                tx.send_data(chunk, false).unwrap();
            }
            match body.trailers().await.unwrap() {
                Some(t) => tx.send_trailers(t).unwrap(),
                None => tx.send_data(Bytes::new(), true).unwrap(),
            }
        }
        "/count" => {
            let mut n = 0;
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap();
                n += chunk.len();
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            let mut tx = respond.send_response(head, false).unwrap();
            tx.send_data(n.to_string().into(), true).unwrap();
        }
        "/big" => {
            let mut tx = respond.send_response(head, false).unwrap();
            tx.send_data(Bytes::from(vec![b'x'; BIG]), true).unwrap();
            // The stream must live until the proxy has taken every byte.
            let _ = std::future::poll_fn(|cx| tx.poll_reset(cx)).await;
        }
        "/x-test" => {
            let mut tx = respond.send_response(head, false).unwrap();
            let value = x_test.map_or(Bytes::new(), |v| Bytes::copy_from_slice(v.as_bytes()));
            tx.send_data(value, true).unwrap();
        }
        _ => {
            let mut tx = respond.send_response(head, false).unwrap();
            tx.send_data(Bytes::from_static(b"ok"), true).unwrap();
        }
    }
}

/// A proxy whose listener sends everything to `backend` over HTTP/2, and
/// an h2c client connection to it.
async fn proxy_to(backend: u16) -> (Mesh, u16, h2::client::SendRequest<Bytes>) {
    let mesh = Mesh::start().await;
    let port = free_port();
    mesh.serve_http(port, &[backend], true);
    mesh.wait_ready(port).await;
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(s).await.unwrap();
    tokio::spawn(conn);
    (mesh, port, client)
}

fn request(method: &str, path: &str) -> Request<()> {
    Request::builder()
        .method(method)
        .uri(format!("http://shop{path}"))
        .body(())
        .unwrap()
}

/// Reads a response body whole, giving the window back as it goes.
async fn read_all(body: &mut RecvStream) -> Vec<u8> {
    let mut all = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        all.extend_from_slice(&chunk);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_streams_while_the_response_does() {
    let (backend, _) = h2_backend().await;
    let (_mesh, _, client) = proxy_to(backend).await;
    let mut client = client.ready().await.unwrap();
    let (resp, mut tx) = client
        .send_request(request("POST", "/echo"), false)
        .unwrap();
    // The response head comes back before the request body has ended.
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut rx = resp.into_body();
    for word in ["one", "two", "three"] {
        tx.send_data(Bytes::from(word), false).unwrap();
        let mut got = Vec::new();
        while got.len() < word.len() {
            let chunk = rx.data().await.unwrap().unwrap();
            let _ = rx.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, word.as_bytes());
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("x-words", "3".parse().unwrap());
    tx.send_trailers(trailers).unwrap();
    assert!(rx.data().await.is_none());
    let t = rx.trailers().await.unwrap().expect("trailers");
    assert_eq!(t["x-words"], "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_larger_than_the_windows_pass_both_ways() {
    let (backend, conns) = h2_backend().await;
    let (_mesh, _, client) = proxy_to(backend).await;
    let mut client = client.ready().await.unwrap();

    // Upload: more than the backend's 64 KiB window and the proxy's 2 MiB one.
    let (resp, mut tx) = client
        .send_request(request("POST", "/count"), false)
        .unwrap();
    let chunk = Bytes::from(vec![b'u'; 64 << 10]);
    for _ in 0..BIG / chunk.len() {
        tx.reserve_capacity(chunk.len());
        while tx.capacity() < chunk.len() {
            std::future::poll_fn(|cx| tx.poll_capacity(cx))
                .await
                .unwrap()
                .unwrap();
        }
        tx.send_data(chunk.clone(), false).unwrap();
    }
    tx.send_data(Bytes::new(), true).unwrap();
    let mut body = resp.await.unwrap().into_body();
    assert_eq!(read_all(&mut body).await, BIG.to_string().as_bytes());

    // Download: the proxy gives its window back as the client reads.
    let (status, body) = get(client, "/big").await;
    assert_eq!((status, body.len()), (200, BIG));
    assert_eq!(conns.load(Ordering::SeqCst), 1, "one upstream connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_upstream_sends_goaway_on_is_replaced() {
    let (backend, conns) = h2_backend().await;
    let (_mesh, _, client) = proxy_to(backend).await;
    for path in ["/bye", "/next", "/again"] {
        assert_eq!(
            get(client.clone(), path).await,
            (200, b"ok".to_vec()),
            "{path}"
        );
    }
    // `/bye`'s connection took no more streams after its GOAWAY.
    assert_eq!(conns.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_is_a_503_that_says_so() {
    let (backend, _) = h2_backend().await;
    let (_mesh, _, client) = proxy_to(backend).await;
    let (status, body) = get(client, "/refuse").await;
    assert_eq!(status, 503);
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("refused stream"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn te_in_any_case_reaches_an_http2_upstream_on_the_same_connection() {
    let (backend, conns) = h2_backend().await;
    let (_mesh, port, _) = proxy_to(backend).await;
    for te in ["trailers", "Trailers", "TRAILERS, gzip"] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let req = format!("GET /x HTTP/1.1\r\nhost: shop\r\nte: {te}\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 200"), "te: {te}\n{got}");
        assert!(got.contains("\r\nok\r\n"), "te: {te}\n{got}");
    }
    assert_eq!(conns.load(Ordering::SeqCst), 1, "one upstream connection");
}

/// A SETTINGS frame acknowledging the peer's.
const SETTINGS_ACK: [u8; 9] = [0, 0, 0, 4, 1, 0, 0, 0, 0];

/// Reads one frame off `s`, for the servers written frame by frame: its
/// 9-octet header (the payload is read and dropped).
async fn read_frame(s: &mut tokio::net::TcpStream) -> std::io::Result<[u8; 9]> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await?;
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    s.read_exact(&mut vec![0u8; len]).await?;
    Ok(head)
}

/// An HTTP/2 server written frame by frame: on its one connection it waits
/// for two streams, then sends GOAWAY saying it processed only the first,
/// and answers that one (`:status: 200`, no body). `first_seen` fires when
/// the first stream's HEADERS arrive.
async fn goaway_server(first_seen: tokio::sync::oneshot::Sender<()>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut preface = [0u8; 24];
        s.read_exact(&mut preface).await.unwrap();
        s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        let mut first_seen = Some(first_seen);
        let mut streams = Vec::new();
        while streams.len() < 2 {
            let head = read_frame(&mut s).await.unwrap();
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            match head[3] {
                // SETTINGS (not an ACK): acknowledge.
                4 if head[4] & 1 == 0 => s.write_all(&SETTINGS_ACK).await.unwrap(),
                // HEADERS.
                1 => {
                    streams.push(id);
                    if let Some(tx) = first_seen.take() {
                        let _ = tx.send(());
                    }
                }
                _ => {}
            }
        }
        let first = streams[0].to_be_bytes();
        let mut goaway = vec![0, 0, 8, 7, 0, 0, 0, 0, 0];
        goaway.extend_from_slice(&first);
        goaway.extend_from_slice(&[0, 0, 0, 0]);
        // HEADERS, END_STREAM | END_HEADERS, `:status: 200` (static index 8).
        let mut answer = vec![0, 0, 1, 1, 5];
        answer.extend_from_slice(&first);
        answer.push(0x88);
        s.write_all(&[goaway, answer].concat()).await.unwrap();
        let mut sink = [0u8; 1024];
        while s.read(&mut sink).await.unwrap_or(0) > 0 {}
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_a_goaway_left_out_is_refused() {
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    let backend = goaway_server(seen_tx).await;
    let (_mesh, _, client) = proxy_to(backend).await;
    let mut first = client.clone().ready().await.unwrap();
    let (first, _) = first.send_request(request("GET", "/first"), true).unwrap();
    seen_rx.await.unwrap();
    let mut second = client.ready().await.unwrap();
    let (second, _) = second
        .send_request(request("GET", "/second"), true)
        .unwrap();
    assert_eq!(first.await.unwrap().status(), 200);
    // Never processed upstream: refused, so `retryOn: refused-stream` may
    // send it again; here (no retry policy) the client sees why.
    let resp = second.await.unwrap();
    assert_eq!(resp.status(), 503);
    let mut body = resp.into_body();
    let text = String::from_utf8(read_all(&mut body).await).unwrap();
    assert!(text.contains("refused stream"), "{text}");
}

/// An HTTP/2 backend that takes one stream per connection; each `/hold`
/// is answered once two have arrived (over all its connections), or after
/// 5 s. Returns its port and a count of its connections.
async fn one_stream_backend() -> (u16, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let conns = Arc::new(AtomicUsize::new(0));
    let count = conns.clone();
    let both = Arc::new(tokio::sync::Barrier::new(2));
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let both = both.clone();
            tokio::spawn(async move {
                let mut conn = h2::server::Builder::new()
                    .max_concurrent_streams(1)
                    .handshake::<_, Bytes>(s)
                    .await
                    .unwrap();
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let both = both.clone();
                    tokio::spawn(async move {
                        if req.uri().path() == "/hold" {
                            let wait = std::time::Duration::from_secs(5);
                            let _ = tokio::time::timeout(wait, both.wait()).await;
                        }
                        let mut tx = respond.send_response(Response::new(()), false).unwrap();
                        tx.send_data(Bytes::from_static(b"ok"), true).unwrap();
                    });
                }
            });
        }
    });
    (port, conns)
}

/// A GET through `client`: status and body.
async fn get(client: h2::client::SendRequest<Bytes>, path: &str) -> (u16, Vec<u8>) {
    let mut client = client.ready().await.unwrap();
    let (resp, _) = client.send_request(request("GET", path), true).unwrap();
    let resp = resp.await.unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    (status, read_all(&mut body).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_connection_opens_when_streams_are_at_the_servers_limit() {
    let (backend, conns) = one_stream_backend().await;
    let (_mesh, _, client) = proxy_to(backend).await;
    // Answered: the proxy has read the server's SETTINGS (one stream).
    assert_eq!(get(client.clone(), "/warm").await, (200, b"ok".to_vec()));
    // Two at once: the backend answers neither before both have arrived.
    let a = tokio::spawn(get(client.clone(), "/hold"));
    let b = tokio::spawn(get(client, "/hold"));
    assert_eq!(a.await.unwrap(), (200, b"ok".to_vec()));
    assert_eq!(b.await.unwrap(), (200, b"ok".to_vec()));
    // Two, or three when `/warm`'s stream was still closing as both began.
    assert!(
        conns.load(Ordering::SeqCst) >= 2,
        "a second upstream connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_the_upstream_resets_midway_fails_downstream_instead_of_ending() {
    let (backend, _) = h2_backend().await;
    let (_mesh, _port, client) = proxy_to(backend).await;
    let mut client = client.ready().await.unwrap();
    let (resp, _) = client.send_request(request("GET", "/cut"), true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.data().await.unwrap().unwrap();
    assert_eq!(first, "half of it");
    // The upstream's reset must reach the client as a reset, never as a
    // clean end of a shorter body.
    let rest = body.data().await;
    assert!(
        matches!(rest, Some(Err(_))),
        "a cut response ended cleanly: {rest:?}"
    );
}

/// An HTTP/2 server written frame by frame that answers every stream with
/// HEADERS frames carrying `blocks` as they are, each with its flags
/// (END_HEADERS is 4, END_STREAM 1).
async fn raw_head_server(blocks: Vec<(u8, Vec<u8>)>) -> u16 {
    raw_server(vec![0, 0, 0, 4, 0, 0, 0, 0, 0], blocks).await
}

/// `raw_head_server` that opens with `preface` (its frames as bytes)
/// instead of an empty SETTINGS frame.
async fn raw_server(preface: Vec<u8>, blocks: Vec<(u8, Vec<u8>)>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let blocks = blocks.clone();
            let ours = preface.clone();
            tokio::spawn(async move {
                let mut preface = [0u8; 24];
                s.read_exact(&mut preface).await.ok()?;
                s.write_all(&ours).await.ok()?;
                loop {
                    let head = read_frame(&mut s).await.ok()?;
                    match head[3] {
                        4 if head[4] & 1 == 0 => s.write_all(&SETTINGS_ACK).await.ok()?,
                        1 => {
                            let mut answer = Vec::new();
                            for (flags, block) in &blocks {
                                let len = block.len().to_be_bytes();
                                answer.extend_from_slice(&[len[5], len[6], len[7], 1, *flags]);
                                answer.extend_from_slice(&head[5..9]);
                                answer.extend_from_slice(block);
                            }
                            s.write_all(&answer).await.ok()?;
                        }
                        _ => {}
                    }
                }
                #[allow(unreachable_code)]
                Some(())
            });
        }
    });
    port
}

/// An HPACK literal field without indexing, with a new name.
fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upstream_response_heads_are_refused_not_forwarded() {
    const STATUS_200: u8 = 0x88;
    let cases = [
        (
            "uppercase name",
            [vec![STATUS_200], literal("X-Upper", "1")].concat(),
        ),
        (
            "connection-specific",
            [vec![STATUS_200], literal("connection", "close")].concat(),
        ),
        (
            "status after a field",
            [literal("x-a", "1"), vec![STATUS_200]].concat(),
        ),
        ("two statuses", vec![STATUS_200, STATUS_200]),
    ];
    for (what, block) in cases {
        let backend = raw_head_server(vec![(5, block)]).await;
        let (_mesh, _, client) = proxy_to(backend).await;
        let (status, _) = get(client, "/").await;
        assert_eq!(status, 503, "{what}: a malformed head was forwarded");
    }
    // The same server with a well-formed head answers 200: the harness
    // itself is sound.
    let backend = raw_head_server(vec![(
        5,
        [vec![STATUS_200], literal("x-fine", "1")].concat(),
    )])
    .await;
    let (_mesh, _, client) = proxy_to(backend).await;
    assert_eq!(get(client, "/").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_trailers_with_a_pseudo_header_reset_the_response() {
    let backend = raw_head_server(vec![
        (4, vec![0x88]),
        (5, [vec![0x88], literal("grpc-status", "0")].concat()),
    ])
    .await;
    let (_mesh, _, client) = proxy_to(backend).await;
    let mut client = client.ready().await.unwrap();
    let (resp, _) = client.send_request(request("GET", "/"), true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    while let Some(Ok(_)) = body.data().await {}
    let trailers = body.trailers().await;
    assert!(
        trailers.is_err(),
        "trailers with :status reached the client: {trailers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_whose_first_frame_is_not_settings_is_refused() {
    // A PING, then SETTINGS: RFC 9113 §3.4 makes SETTINGS the first frame.
    let ping_first = [
        vec![0, 0, 8, 6, 0, 0, 0, 0, 0],
        vec![0; 8],
        vec![0, 0, 0, 4, 0, 0, 0, 0, 0],
    ]
    .concat();
    let backend = raw_server(ping_first, vec![(5, vec![0x88])]).await;
    let (_mesh, _, client) = proxy_to(backend).await;
    assert_eq!(get(client, "/").await.0, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_headers_reach_the_upstream_intact_over_one_connection() {
    // The proxy's HPACK encoder indexes repeating fields: h2's decoder on
    // the backend must read every request right while entries repeat, are
    // evicted (values of up to 3 KB through a 4 KB table) and come back,
    // and when the backend asks for a smaller table (256 octets) or none.
    // (h2's decoder tolerates an encoder that ignores the smaller size;
    // the size updates themselves are checked against our own strict
    // decoder in meshwork-hpack's tests.)
    for table in [4096, 256, 0] {
        headers_reach_the_upstream_intact(table).await;
    }
}

async fn headers_reach_the_upstream_intact(table: u32) {
    let (backend, conns) = h2_backend_with_table(table).await;
    let (_mesh, _, client) = proxy_to(backend).await;
    for i in 0..60usize {
        let value = match i % 4 {
            0 => "same".to_string(),
            1 => format!("fresh-{i}"),
            2 => "y".repeat(300 * (i % 11)),
            _ => "same".to_string() + &"z".repeat(i % 3),
        };
        let mut req = request("GET", "/x-test");
        req.headers_mut().insert("x-test", value.parse().unwrap());
        let mut c = client.clone().ready().await.unwrap();
        let (resp, _) = c.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200, "table {table}, request {i}");
        let got = read_all(&mut resp.into_body()).await;
        assert_eq!(
            String::from_utf8(got).unwrap(),
            value,
            "table {table}, request {i}"
        );
    }
    assert_eq!(conns.load(Ordering::SeqCst), 1, "one upstream connection");
}
