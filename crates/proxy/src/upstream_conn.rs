//! The HTTP/1.1 pool's connector: hyper-util's `HttpConnector` whose
//! connections hold a connection count of the cluster's breakers (see
//! [`Breakers::connection`]) and carry a request counter (as hyper-util
//! connection "extra" data) so the pool can retire them after
//! `max_requests_per_connection` requests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::circuit::{Breakers, ConnectionPermit};

/// Requests sent on one connection so far.
#[derive(Clone, Debug, Default)]
pub struct ConnUses(Arc<AtomicU32>);

impl ConnUses {
    /// Counts one more request; returns the new count.
    pub fn bump(&self) -> u32 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// `HttpConnector` whose connections are counted by the cluster's
/// breakers and count their requests.
#[derive(Clone, Debug)]
pub struct LimitedConnector {
    inner: HttpConnector,
    breakers: Arc<Breakers>,
    wait: Duration,
}

impl LimitedConnector {
    /// Wraps `inner`; `wait` bounds the wait for a connection permit.
    pub fn new(inner: HttpConnector, breakers: Arc<Breakers>, wait: Duration) -> Self {
        LimitedConnector {
            inner,
            breakers,
            wait,
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for LimitedConnector {
    type Response = LimitedIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<LimitedIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::<Uri>::poll_ready(&mut self.inner, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut inner = self.inner.clone();
        let breakers = self.breakers.clone();
        let wait = self.wait;
        Box::pin(async move {
            let permit = breakers.connection(wait).await?;
            let io = tower::Service::call(&mut inner, uri).await?;
            Ok(LimitedIo {
                io,
                _permit: permit,
                uses: ConnUses::default(),
            })
        })
    }
}

pin_project_lite::pin_project! {
    /// An upstream connection with its connection permit and request
    /// counter.
    pub struct LimitedIo {
        #[pin]
        io: TokioIo<TcpStream>,
        _permit: ConnectionPermit,
        uses: ConnUses,
    }
}

impl Connection for LimitedIo {
    fn connected(&self) -> Connected {
        self.io.connected().extra(self.uses.clone())
    }
}

impl hyper::rt::Read for LimitedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl hyper::rt::Write for LimitedIo {
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
