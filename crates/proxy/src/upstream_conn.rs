//! Pieces shared by the upstream pools: their settings, a connection's request counter
//! (to retire it after `max_requests_per_connection`), the I/O wrapper that
//! holds the cluster breakers' connection count for as long as the socket
//! lives (also through an HTTP/1.1 upgrade), and TCP keepalive.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;

use crate::circuit::{Breakers, ConnectionPermit};
use crate::model::cluster_policy::Keepalive;
use crate::tls::client::{UpstreamIo, UpstreamTls};

/// How one cluster's connections (HTTP/1.1 or HTTP/2) are made and kept.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Bound on TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Connections idle this long are closed (HTTP/2: dropped from the
    /// pool, closing when their last stream ends).
    pub idle_timeout: Duration,
    /// TCP keepalive of the cluster (DestinationRule `tcpKeepalive`).
    pub keepalive: Option<Keepalive>,
    /// Requests per connection before it is retired.
    pub max_requests: Option<u32>,
    /// TLS for every connection (`None`: plaintext).
    pub tls: Option<Arc<UpstreamTls>>,
    /// The cluster's breakers: each connection holds a permit.
    pub breakers: Arc<Breakers>,
}

/// Requests sent on one connection so far.
#[derive(Clone, Debug, Default)]
pub struct ConnUses(Arc<AtomicU32>);

impl ConnUses {
    /// Counts one more request; returns the new count.
    pub fn bump(&self) -> u32 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

pin_project_lite::pin_project! {
    /// An upstream socket (plaintext or TLS) with the connection permit of
    /// its cluster's breakers: the count drops when the socket closes.
    pub struct PermitIo {
        #[pin]
        io: TokioIo<UpstreamIo>,
        _permit: ConnectionPermit,
    }
}

impl PermitIo {
    /// Wraps `io`, holding `permit` until it is dropped.
    pub fn new(io: UpstreamIo, permit: ConnectionPermit) -> Self {
        PermitIo {
            io: TokioIo::new(io),
            _permit: permit,
        }
    }
}

impl hyper::rt::Read for PermitIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl hyper::rt::Write for PermitIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }
}

/// Sets TCP keepalive probing on an upstream socket: the cluster's
/// `upstream_connection_options` when it has them; probes start after
/// 300 s idle unless the cluster says otherwise.
pub fn set_keepalive(stream: &tokio::net::TcpStream, k: Option<&Keepalive>) {
    let default_time = std::time::Duration::from_secs(300);
    let mut ka = socket2::TcpKeepalive::new();
    match k {
        Some(k) => {
            ka = ka.with_time(k.time.unwrap_or(default_time));
            if let Some(i) = k.interval {
                ka = ka.with_interval(i);
            }
            if let Some(p) = k.probes {
                ka = ka.with_retries(p);
            }
        }
        None => ka = ka.with_time(default_time),
    }
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "setting TCP keepalive failed");
    }
}
