//! Arbitrary bytes from a client to a hyper HTTP/1 server connection set up
//! like the proxy's (60 KiB header buffer, 100 headers, upgrades allowed).
//! The server may reject the bytes, but nothing may panic or hang.
#![no_main]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

thread_local! {
    static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
}

fuzz_target!(|data: &[u8]| {
    RT.with(|rt| rt.block_on(one_connection(data)));
});

async fn one_connection(data: &[u8]) {
    let (client, server) = tokio::io::duplex(16 * 1024);
    let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
        // Read the whole body, as a proxied request would be streamed.
        let _ = req.into_body().collect().await;
        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(60 * 1024)
        .max_headers(100)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(server), service)
        .with_upgrades();

    let (mut rd, mut wr) = tokio::io::split(client);
    let write = async move {
        let _ = wr.write_all(data).await;
        let _ = wr.shutdown().await;
    };
    let read = async move {
        let mut sink = Vec::new();
        let _ = rd.read_to_end(&mut sink).await;
    };
    let (_, _, _) = tokio::join!(conn, write, read);
}
