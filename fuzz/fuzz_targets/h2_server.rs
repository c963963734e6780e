//! Arbitrary bytes from an HTTP/2 client (after a valid preface and
//! SETTINGS), served by the proxy's own HTTP/2 server with a handler that
//! reads each request body and answers: nothing may panic, and the
//! connection always finishes once the client has sent everything and
//! closed.
#![no_main]

use std::time::Duration;

use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use meshwork_proxy::body;
use meshwork_proxy::http::h2_server::{Conn, MakeHandler, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The preface and an empty SETTINGS frame.
const START: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let settings = Settings {
            max_concurrent: 8,
            max_header_list: 4096,
            max_headers: 32,
            stream_window: 1024,
            conn_window: 4096,
            max_early_resets: 4,
            max_error_resets: 8,
        };
        let make: MakeHandler = Box::new(|req| {
            Box::pin(async move {
                let _ = req.into_body().collect().await;
                http::Response::new(body::full("ok"))
            })
        });
        let mut conn = Conn::new(server, settings, make);
        let (mut rx, mut tx) = tokio::io::split(client);
        let input = data.to_vec();
        let send = async move {
            let _ = tx.write_all(START).await;
            let _ = tx.write_all(&input).await;
            let _ = tx.shutdown().await;
        };
        let drain = async move {
            let mut sink = Vec::new();
            let _ = rx.read_to_end(&mut sink).await;
        };
        let serve = async {
            std::future::poll_fn(|cx| conn.poll_serve(cx)).await;
            conn.abandon();
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                std::future::poll_fn(|cx| conn.poll_finish(cx)),
            )
            .await;
        };
        let all = async { tokio::join!(send, drain, serve) };
        tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .expect("the connection finishes after the client closed");
    });
});
