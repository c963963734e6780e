//! A downstream connection after its filter chain was chosen: plaintext, or
//! TLS terminated by the proxy (with any bytes read ahead to detect the
//! protocol inside, replayed first).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::detect::{Detected, MAX_PEEK, Verdict, classify};

/// Plaintext or TLS; both read and write like the socket.
#[derive(Debug)]
pub enum Downstream {
    /// The accepted socket itself.
    Plain(TcpStream),
    /// TLS terminated here.
    Tls {
        /// The TLS stream.
        stream: Box<TlsStream<TcpStream>>,
        /// Decrypted bytes already read (protocol detection), served first.
        prefix: Bytes,
    },
}

impl From<TcpStream> for Downstream {
    fn from(s: TcpStream) -> Self {
        Downstream::Plain(s)
    }
}

impl Downstream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Downstream::Plain(s) => s,
            Downstream::Tls { stream, .. } => stream.get_ref().0,
        }
    }

    /// Sets TCP_NODELAY on the socket.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.tcp().set_nodelay(on)
    }

    /// The local address of the socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    /// Best-effort, non-blocking write of a last canned reply; only on
    /// plaintext (a TLS reply would need the record layer).
    pub fn try_write_plain(&self, bytes: &[u8]) {
        if let Downstream::Plain(s) = self {
            let _ = s.try_write(bytes);
        }
    }

    /// Detects the protocol inside a TLS stream by reading (not peeking)
    /// its first bytes, kept to be replayed. Plaintext streams were
    /// detected before the chain was chosen and answer `Opaque` here.
    pub async fn sniff_inside(&mut self, timeout: Duration) -> Detected {
        let Downstream::Tls { stream, prefix } = self else {
            return Detected::Opaque;
        };
        let mut buf = BytesMut::with_capacity(1024);
        let deadline = tokio::time::Instant::now() + timeout;
        let verdict = loop {
            if let Verdict::Done(d) = classify(&buf) {
                break d;
            }
            if buf.len() >= MAX_PEEK {
                break Detected::Opaque;
            }
            match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => break Detected::Opaque,
            }
        };
        *prefix = buf.freeze();
        verdict
    }
}

impl AsyncRead for Downstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Downstream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Downstream::Tls { stream, prefix } => {
                if !prefix.is_empty() {
                    let n = prefix.len().min(buf.remaining());
                    buf.put_slice(&prefix[..n]);
                    prefix.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Pin::new(stream.as_mut()).poll_read(cx, buf)
            }
        }
    }
}

impl AsyncWrite for Downstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Downstream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Downstream::Tls { stream, .. } => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Downstream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Downstream::Tls { stream, .. } => {
                Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Downstream::Plain(s) => s.is_write_vectored(),
            Downstream::Tls { stream, .. } => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Downstream::Plain(s) => Pin::new(s).poll_flush(cx),
            Downstream::Tls { stream, .. } => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Downstream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Downstream::Tls { stream, .. } => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
