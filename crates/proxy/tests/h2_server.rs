//! The downstream HTTP/2 server at the frame level: flow control both ways,
//! the concurrency limit, clean answers to malformed requests, and GOAWAY
//! on protocol errors. Raw frames where a real client would refuse to
//! send them; the `h2` crate's client elsewhere.

mod support;

use std::time::Duration;

use bytes::Bytes;
use meshwork_proxy::options::Limits;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut enc = meshwork_hpack::Encoder::new();
    let mut out = Vec::new();
    for (n, v) in fields {
        enc.encode(n.as_bytes(), v.as_bytes(), false, &mut out);
    }
    out
}

fn get(path: &str) -> Vec<u8> {
    block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "a"),
        (":path", path),
    ])
}

/// A client speaking raw frames.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    /// The connection's HPACK decoder: the server's encoder indexes
    /// fields, so blocks decode only in order, with one table.
    hpack: meshwork_hpack::Decoder,
}

impl Raw {
    async fn connect(port: u16) -> Raw {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        s.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        Raw {
            s,
            buf: Vec::new(),
            hpack: meshwork_hpack::Decoder::new(4096),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    /// The next frame, or `None` when the server closed.
    async fn next(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16)
                    | (usize::from(self.buf[1]) << 8)
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let f: Vec<u8> = self.buf.drain(..9 + len).collect();
                    let id = u32::from_be_bytes([f[5], f[6], f[7], f[8]]) & 0x7fff_ffff;
                    return Some((f[3], f[4], id, f[9..].to_vec()));
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let read = tokio::time::timeout(Duration::from_secs(10), self.s.read(&mut chunk));
            match read.await.expect("the server answers within 10 s") {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The first frame of `kind` (others are skipped).
    async fn next_of(&mut self, kind: u8) -> Option<(u8, u32, Vec<u8>)> {
        while let Some((k, flags, id, payload)) = self.next().await {
            if k == kind {
                return Some((flags, id, payload));
            }
        }
        None
    }
}

/// Sends `body` on `send` in 64 KiB chunks as the windows allow, then
/// ends the stream.
fn upload(mut send: h2::SendStream<Bytes>, body: Bytes) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for chunk in body.chunks(64 * 1024) {
            send.reserve_capacity(chunk.len());
            while send.capacity() < chunk.len() {
                let got = std::future::poll_fn(|cx| send.poll_capacity(cx)).await;
                got.unwrap().unwrap();
            }
            send.send_data(Bytes::copy_from_slice(chunk), false)
                .unwrap();
        }
        send.send_data(Bytes::new(), true).unwrap();
    })
}

fn decode(hpack: &mut meshwork_hpack::Decoder, block: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    hpack
        .decode(block, |f| {
            out.push((
                String::from_utf8_lossy(f.name).into_owned(),
                String::from_utf8_lossy(f.value).into_owned(),
            ))
        })
        .unwrap();
    out
}

async fn status_of(raw: &mut Raw) -> String {
    let (_, _, head) = raw.next_of(HEADERS).await.expect("a response");
    decode(&mut raw.hpack, &head)
        .into_iter()
        .find(|(n, _)| n == ":status")
        .map(|(_, v)| v)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_passes_both_ways_through_small_client_windows() {
    let (_mesh, port) = mesh_with(Limits::default()).await;
    let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(1000)
        .initial_connection_window_size(70_000)
        .handshake::<_, Bytes>(s)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::post("http://a/echo").body(()).unwrap();
    let (resp, send) = client.send_request(req, false).unwrap();
    // 3 MiB: more than the proxy's stream and connection windows.
    let body: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let upload = upload(send, Bytes::from(body.clone()));
    let download = async {
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut recv = resp.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.unwrap();
            // 1000-octet windows: the proxy must wait for every update.
            assert!(chunk.len() <= 16 * 1024);
            recv.flow_control().release_capacity(chunk.len()).unwrap();
            got.extend_from_slice(&chunk);
        }
        got
    };
    // A window never given back stalls the transfer: fail, do not hang.
    let got = tokio::time::timeout(Duration::from_secs(60), download)
        .await
        .expect("the transfer stalled");
    upload.await.unwrap();
    assert_eq!(got.len(), body.len());
    assert!(got == body, "the body came back changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_limit_are_refused() {
    let (_mesh, port) = mesh_with(Limits {
        max_concurrent_streams: 1,
        ..Limits::default()
    })
    .await;
    let mut raw = Raw::connect(port).await;
    let slow = get("/slow");
    raw.send(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &slow))
        .await;
    raw.send(&frame(HEADERS, END_STREAM | END_HEADERS, 3, &get("/")))
        .await;
    let (_, id, code) = raw.next_of(RST_STREAM).await.unwrap();
    assert_eq!(
        (id, code),
        (3, 7u32.to_be_bytes().to_vec()),
        "REFUSED_STREAM"
    );
    assert_eq!(status_of(&mut raw).await, "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_and_large_ones_431() {
    let (_mesh, port) = mesh_with(Limits {
        max_header_bytes: 2048,
        ..Limits::default()
    })
    .await;
    let mut raw = Raw::connect(port).await;
    let mut upper = get("/");
    upper.extend(block(&[("X-Upper", "1")]));
    raw.send(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &upper))
        .await;
    assert_eq!(status_of(&mut raw).await, "400");
    let no_path = block(&[(":method", "GET"), (":scheme", "http")]);
    raw.send(&frame(HEADERS, END_STREAM | END_HEADERS, 3, &no_path))
        .await;
    assert_eq!(status_of(&mut raw).await, "400");
    let mut big = get("/");
    big.extend(block(&[("x-big", &"v".repeat(4096))]));
    raw.send(&frame(HEADERS, END_STREAM | END_HEADERS, 5, &big))
        .await;
    assert_eq!(status_of(&mut raw).await, "431");
    // The connection still serves.
    raw.send(&frame(HEADERS, END_STREAM | END_HEADERS, 7, &get("/")))
        .await;
    assert_eq!(status_of(&mut raw).await, "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_and_protocol_errors_end_with_goaway() {
    let (_mesh, port) = mesh_with(Limits::default()).await;
    let mut raw = Raw::connect(port).await;
    raw.send(&frame(PING, 0, 0, b"12345678")).await;
    let (flags, _, payload) = raw.next_of(PING).await.unwrap();
    assert_eq!((flags, payload.as_slice()), (1, &b"12345678"[..]));

    let cases: [(&str, Vec<u8>, u32); 4] = [
        ("DATA on stream 0", frame(DATA, 0, 0, b"x"), 1),
        (
            "window overflow",
            frame(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes()),
            3,
        ),
        (
            "bad HPACK index",
            frame(HEADERS, END_HEADERS, 1, &[0xff, 0x7f]),
            9,
        ),
        (
            "even stream id",
            frame(HEADERS, END_HEADERS, 2, &get("/")),
            1,
        ),
    ];
    for (what, bad, code) in cases {
        let mut raw = Raw::connect(port).await;
        raw.send(&bad).await;
        let (_, _, payload) = raw.next_of(GOAWAY).await.expect(what);
        assert_eq!(payload[4..8], code.to_be_bytes(), "{what}");
        assert!(raw.next().await.is_none(), "{what}: closed after GOAWAY");
    }

    let mut raw = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    raw.write_all(b"PRI * HTTP/1.1\r\n\r\nXX\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut rest));
    assert!(closed.await.is_ok(), "a bad preface closes the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_stream_is_forgotten_and_the_connection_goes_on() {
    let (_mesh, port) = mesh_with(Limits::default()).await;
    let mut raw = Raw::connect(port).await;
    raw.send(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &get("/slow")))
        .await;
    raw.send(&frame(RST_STREAM, 0, 1, &8u32.to_be_bytes()))
        .await;
    raw.send(&frame(HEADERS, END_STREAM | END_HEADERS, 3, &get("/")))
        .await;
    let (_, id, head) = raw.next_of(HEADERS).await.unwrap();
    assert_eq!(id, 3, "nothing comes for the reset stream");
    assert!(decode(&mut raw.hpack, &head).contains(&(":status".into(), "200".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_read_by_another_task_gets_its_window_back_and_a_large_answer_flows() {
    // `/echo-after-read` on an HTTP/1.1 upstream: the proxy's pool reads
    // the 5 MiB body in a task of its own (so only that reader can ask the
    // connection for window updates), then the answer comes back whole to
    // a client with windows large enough to fill the proxy's output.
    let (_mesh, port) = mesh_with(Limits::default()).await;
    let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(16 << 20)
        .initial_connection_window_size(16 << 20)
        .handshake::<_, Bytes>(s)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let body: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let req = http::Request::post("http://a/echo-after-read")
        .body(())
        .unwrap();
    let (resp, send) = client.send_request(req, false).unwrap();
    let upload = upload(send, Bytes::from(body.clone()));
    let exchange = async {
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        // Read late, so the proxy's writes back up first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut recv = resp.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.unwrap();
            recv.flow_control().release_capacity(chunk.len()).unwrap();
            got.extend_from_slice(&chunk);
        }
        got
    };
    let got = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("the exchange stalled");
    upload.await.unwrap();
    assert!(got == body, "the body came back changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_goes_away_in_two_steps_and_serves_streams_sent_meanwhile() {
    let (mesh, port) = mesh_with(Limits::default()).await;
    let mut raw = Raw::connect(port).await;
    raw.send(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &get("/slow")))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    mesh.proxy.shutdown();
    // First step: GOAWAY naming the highest id, and a PING.
    let (_, _, first) = raw.next_of(GOAWAY).await.expect("a first GOAWAY");
    assert_eq!(first[..4], 0x7fff_ffffu32.to_be_bytes(), "highest id first");
    let (flags, _, ping) = raw.next_of(PING).await.expect("a PING");
    assert_eq!(flags & 1, 0);
    // A stream the client opened before it saw the GOAWAY is still served.
    raw.send(&frame(HEADERS, END_STREAM | END_HEADERS, 3, &get("/")))
        .await;
    raw.send(&frame(PING, 1, 0, &ping)).await;
    let mut last = None;
    let mut answered = Vec::new();
    while let Some((kind, _, id, payload)) = raw.next().await {
        match kind {
            GOAWAY => last = Some(u32::from_be_bytes(payload[..4].try_into().unwrap())),
            HEADERS => answered.push(id),
            _ => {}
        }
        if answered.len() == 2 {
            break;
        }
    }
    assert_eq!(
        last,
        Some(3),
        "the real GOAWAY names the last stream served"
    );
    answered.sort_unstable();
    assert_eq!(answered, [1, 3], "both streams answered");
}
