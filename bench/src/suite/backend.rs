//! The one backend every setup talks to, on its own thread and runtime so
//! the load generator's work does not delay its answers: HTTP/1.1 and h2c
//! (answers 1 KB), gRPC unary (a 1 KB message and `grpc-status: 0`
//! trailers), and a TCP sink for bulk throughput (reads to EOF, then
//! answers one byte so the sender knows everything arrived).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use futures::stream;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Size of every response body and gRPC message.
pub const BODY_BYTES: usize = 1024;

/// Where the backend listens.
#[derive(Clone, Copy, Debug)]
pub struct Backend {
    /// HTTP/1.1, h2c and gRPC.
    pub http: SocketAddr,
    /// TCP sink.
    pub tcp: SocketAddr,
}

/// Starts the backend on a thread of its own.
pub fn start() -> anyhow::Result<Backend> {
    let http = std::net::TcpListener::bind("127.0.0.1:0")?;
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
    http.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    let addrs = Backend {
        http: http.local_addr()?,
        tcp: tcp.local_addr()?,
    };
    std::thread::Builder::new()
        .name("backend".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("backend runtime");
            rt.block_on(async move {
                let http = tokio::net::TcpListener::from_std(http).expect("http listener");
                let tcp = tokio::net::TcpListener::from_std(tcp).expect("tcp listener");
                tokio::join!(serve_http(http), serve_tcp(tcp));
            });
        })?;
    Ok(addrs)
}

/// A gRPC length-prefixed message of `BODY_BYTES`.
pub fn grpc_message() -> Bytes {
    let mut b = BytesMut::with_capacity(5 + BODY_BYTES);
    b.put_u8(0);
    b.put_u32(BODY_BYTES as u32);
    b.put_bytes(b'g', BODY_BYTES);
    b.freeze()
}

type Body = BoxBody<Bytes, Infallible>;

async fn answer(
    req: Request<Incoming>,
    plain: Bytes,
    grpc: Bytes,
) -> Result<Response<Body>, Infallible> {
    let is_grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let _ = req.into_body().collect().await;
    if !is_grpc {
        return Ok(Response::new(Full::new(plain).boxed()));
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = stream::iter([
        Ok::<_, Infallible>(Frame::data(grpc)),
        Ok(Frame::trailers(trailers)),
    ]);
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    Ok(resp)
}

async fn serve_http(l: tokio::net::TcpListener) {
    let plain = Bytes::from(vec![b'x'; BODY_BYTES]);
    let grpc = grpc_message();
    loop {
        let Ok((s, _)) = l.accept().await else { return };
        let _ = s.set_nodelay(true);
        let (plain, grpc) = (plain.clone(), grpc.clone());
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req| answer(req, plain.clone(), grpc.clone()));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}

async fn serve_tcp(l: tokio::net::TcpListener) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
            let _ = s.write_all(b"k").await;
            let _ = s.shutdown().await;
        });
    }
}
