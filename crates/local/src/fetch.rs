//! A small HTTP/1.1 GET over a fresh connection (hyper's client
//! connection), for the runtime's readiness checks, metric scrapes and the
//! operator CLI's calls to admin and debug ports.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// Why a GET failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Could not connect.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// HTTP failure.
    #[error("http://{addr}{path}: {message}")]
    Http {
        /// Where.
        addr: SocketAddr,
        /// Path.
        path: String,
        /// What happened.
        message: String,
    },
    /// No answer in time.
    #[error("http://{0}{1}: no answer in time")]
    Timeout(SocketAddr, String),
}

/// `GET http://addr{path}`: status and body.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, bytes::Bytes), FetchError> {
    tokio::time::timeout(timeout, get_inner(addr, path))
        .await
        .map_err(|_| FetchError::Timeout(addr, path.to_string()))?
}

async fn get_inner(addr: SocketAddr, path: &str) -> Result<(u16, bytes::Bytes), FetchError> {
    let http = |message: String| FetchError::Http {
        addr,
        path: path.to_string(),
        message,
    };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| FetchError::Connect { addr, source })?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(e.to_string()))?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| http(e.to_string()))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| http(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| http(e.to_string()))?
        .to_bytes();
    Ok((status, body))
}

/// Polls `GET addr{path}` until it answers 200 or `timeout` passes.
pub async fn wait_ok(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), FetchError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match get(addr, path, Duration::from_secs(2)).await {
            Ok((200, _)) => return Ok(()),
            Ok((s, body)) => FetchError::Http {
                addr,
                path: path.into(),
                message: format!("status {s}: {}", String::from_utf8_lossy(&body).trim()),
            },
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
