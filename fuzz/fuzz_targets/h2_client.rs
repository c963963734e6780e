//! Arbitrary bytes from an HTTP/2 server (after its SETTINGS preface),
//! read by the proxy's own upstream HTTP/2 client while two requests are
//! open (one with a body still streaming): nothing may panic, and every
//! stream and the connection finish once the server has closed.
#![no_main]

use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use meshwork_proxy::h2_client::{ResponseFuture, handshake};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let (client, connection) = handshake(client_io);
        let conn_task = tokio::spawn(connection);
        let get = http::Request::get("http://a/x").body(()).unwrap();
        let post = http::Request::post("http://a/y").body(()).unwrap();
        let first = client.send_request(get, true).ok();
        let second = client.send_request(post, false).ok();
        drop(client);
        let (mut rx, mut tx) = tokio::io::split(server_io);
        // The server's preface (an empty SETTINGS frame) comes first, as
        // the client requires (RFC 9113 §3.4); the input is what follows.
        let input = [&[0, 0, 0, 4, 0, 0, 0, 0, 0][..], data].concat();
        let server = async move {
            let _ = tx.write_all(&input).await;
            let _ = tx.shutdown().await;
            let mut sink = Vec::new();
            let _ = rx.read_to_end(&mut sink).await;
        };
        let exchange = |stream: Option<meshwork_proxy::h2_client::StreamRef>, body: bool| async move {
            let Some(stream) = stream else { return };
            if body {
                let mut chunk = Bytes::from_static(&[7; 3000]);
                let _ = std::future::poll_fn(|cx| stream.poll_send(cx, &mut chunk, true)).await;
            }
            if ResponseFuture(stream.clone()).await.is_err() {
                return;
            }
            while let Some(Ok(_)) = std::future::poll_fn(|cx| stream.poll_data(cx)).await {}
            let _ = std::future::poll_fn(|cx| stream.poll_trailers(cx)).await;
        };
        let all = async {
            tokio::join!(server, exchange(first, false), exchange(second, true));
            let _ = conn_task.await;
        };
        tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .expect("streams and connection finish after the server closed");
    });
});
