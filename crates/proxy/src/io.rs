//! A TCP stream wrapper that counts bytes and last activity (for idle
//! timeouts, byte metrics and the slowloris guard) and can send a last
//! canned reply when the connection is dropped (the 408 for a request whose
//! headers never completed).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::tls::stream::Downstream;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Live counters of one connection.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Bytes read from the peer.
    pub read: AtomicU64,
    /// Bytes written to the peer.
    pub written: AtomicU64,
    last_activity_ms: AtomicU64,
    /// `read` when the last request head or body was complete.
    pub read_mark: AtomicU64,
}

impl ConnStats {
    /// Fresh counters, active now.
    pub fn new() -> Arc<Self> {
        let s = ConnStats::default();
        s.touch();
        Arc::new(s)
    }

    fn touch(&self) {
        self.last_activity_ms
            .store(epoch().elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the last byte either way.
    pub fn idle_for(&self) -> Duration {
        let now = epoch().elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_activity_ms.load(Ordering::Relaxed)))
    }

    /// Marks everything read so far as belonging to complete messages.
    pub fn mark_read(&self) {
        self.read_mark
            .store(self.read.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Whether bytes arrived after the last complete message.
    pub fn has_partial_input(&self) -> bool {
        self.read.load(Ordering::Relaxed) > self.read_mark.load(Ordering::Relaxed)
    }
}

/// A canned reply written (best effort, without blocking) as the
/// connection is dropped.
#[derive(Clone, Debug, Default)]
pub struct LastWords(Arc<OnceLock<&'static [u8]>>);

impl LastWords {
    /// Sets the reply; only the first one counts.
    pub fn set(&self, bytes: &'static [u8]) {
        let _ = self.0.set(bytes);
    }
}

/// The counting stream.
#[derive(Debug)]
pub struct CountingIo {
    inner: Downstream,
    stats: Arc<ConnStats>,
    last_words: LastWords,
    /// Bytes read (and counted) already, served again before the socket's.
    unread: bytes::Bytes,
}

impl CountingIo {
    /// Wraps a stream.
    pub fn new(inner: impl Into<Downstream>, stats: Arc<ConnStats>, last_words: LastWords) -> Self {
        CountingIo {
            inner: inner.into(),
            stats,
            last_words,
            unread: bytes::Bytes::new(),
        }
    }

    /// Puts bytes read earlier back in front of the stream (a connection
    /// handed from one HTTP/1 server to another mid-way).
    pub fn unread(&mut self, bytes: bytes::Bytes) {
        debug_assert!(self.unread.is_empty(), "bytes put back twice");
        self.unread = bytes;
    }
}

impl Drop for CountingIo {
    fn drop(&mut self) {
        if let Some(bytes) = self.last_words.0.get() {
            self.inner.try_write_plain(bytes);
        }
    }
}

impl AsyncRead for CountingIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            let part = self.unread.split_to(n);
            buf.put_slice(&part);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.stats.read.fetch_add(n as u64, Ordering::Relaxed);
            self.stats.touch();
        }
        res
    }
}

impl AsyncWrite for CountingIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &res {
            self.stats.written.fetch_add(*n as u64, Ordering::Relaxed);
            self.stats.touch();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &res {
            self.stats.written.fetch_add(*n as u64, Ordering::Relaxed);
            self.stats.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
