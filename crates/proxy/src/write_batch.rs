//! Write batching for HTTP/2 connections: every frame a connection's poll
//! produces leaves in one socket write at the end of that poll.
//!
//! Why: the `h2` crate sends a DATA frame of 256 bytes or more straight
//! from its own buffer and takes no other frame until that one is flushed,
//! so a gRPC response (HEADERS, DATA, trailers) left in two writes and the
//! client woke twice for it. nginx and HAProxy write what an event-loop
//! turn produced; this does the same for a connection polled by its own
//! task: [`Batched`] takes writes into a buffer and treats `poll_flush` as
//! done, and the task calls [`Flusher::poll_drain`] after each poll of the
//! connection. A write that would grow the buffer past [`LIMIT`] first
//! drains it (back-pressure); a write of [`DIRECT`] bytes or more (a full
//! DATA frame) drains it and then goes to the socket unbuffered, so bulk
//! transfers are not copied.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes held before a write drains them first.
pub const LIMIT: usize = 64 * 1024;

/// Writes this large go to the socket directly (after what is held).
pub const DIRECT: usize = 16 * 1024;

/// A buffer left larger than this after a drain is freed.
const KEEP_CAPACITY: usize = 16 * 1024;

struct State<S> {
    io: S,
    pending: Vec<u8>,
    /// How much of `pending` is already written.
    written: usize,
    /// Bytes went to `io` since its last completed flush (a TLS stream
    /// may hold some of them until flushed).
    unflushed: bool,
    /// A drain's failure, returned to the connection's next I/O call.
    failed: Option<io::ErrorKind>,
}

impl<S> State<S> {
    /// The kept failure of an earlier drain, if any.
    fn failure(&self) -> io::Result<()> {
        match self.failed {
            Some(kind) => Err(kind.into()),
            None => Ok(()),
        }
    }
}

impl<S: AsyncWrite + Unpin> State<S> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.failure()?;
        let res = self.poll_write_out(cx);
        if let Poll::Ready(Err(e)) = &res {
            self.failed = Some(e.kind());
            // The connection may be parked on a read: poll it again so
            // its next I/O call sees the failure.
            cx.waker().wake_by_ref();
        }
        res
    }

    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
            self.unflushed = true;
        }
        if !self.pending.is_empty() {
            self.written = 0;
            if self.pending.capacity() > KEEP_CAPACITY {
                self.pending = Vec::new();
            } else {
                self.pending.clear();
            }
        }
        if self.unflushed {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// A write straight to `io`, flushed by the next drain.
    fn poll_write_direct(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, bufs))?;
        self.unflushed = true;
        Poll::Ready(Ok(n))
    }

    /// Makes room for `len` more bytes; `Ready(true)` when they should go
    /// to the socket directly instead (everything held is written by then).
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        self.failure()?;
        let direct = len >= DIRECT;
        if direct || self.pending.len() + len > LIMIT {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(direct))
    }
}

/// The connection's side of a batched stream (see the module docs).
pub struct Batched<S> {
    state: Arc<Mutex<State<S>>>,
}

/// The polling task's side: writes out what the connection buffered.
pub struct Flusher<S> {
    state: Arc<Mutex<State<S>>>,
}

/// Wraps `io`: the connection gets the [`Batched`] side, the task that
/// polls it keeps the [`Flusher`].
pub fn batched<S>(io: S) -> (Batched<S>, Flusher<S>) {
    let state = Arc::new(Mutex::new(State {
        io,
        pending: Vec::new(),
        written: 0,
        unflushed: false,
        failed: None,
    }));
    (
        Batched {
            state: state.clone(),
        },
        Flusher { state },
    )
}

fn lock<S>(state: &Mutex<State<S>>) -> MutexGuard<'_, State<S>> {
    // Only the connection's own task touches the state, one call at a
    // time; a poisoned lock means a panic there, and the state (a buffer
    // and a stream) is still whole.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl<S: AsyncWrite + Unpin> Flusher<S> {
    /// Writes out everything buffered and flushes the stream (a TLS
    /// stream may hold bytes a direct write left). `Pending` leaves the
    /// rest for the next call (the socket wakes the task); an error is
    /// kept, returned to the connection's next I/O call, and wakes the
    /// task so that call comes.
    pub fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.state).poll_drain(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Batched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = lock(&self.state);
        st.failure()?;
        Pin::new(&mut st.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Batched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        let mut st = lock(&self.state);
        if ready!(st.poll_room(cx, len))? {
            return st.poll_write_direct(cx, bufs);
        }
        st.pending.reserve(len);
        for b in bufs {
            st.pending.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Done at once: the polling task drains after the poll.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(lock(&self.state).failure())
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = lock(&self.state);
        ready!(st.poll_drain(cx))?;
        Pin::new(&mut st.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_leave_only_when_drained_and_in_order() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let (mut conn, flusher) = batched(a);
        conn.write_all(b"one ").await.unwrap();
        conn.flush().await.unwrap();
        conn.write_all(b"two").await.unwrap();
        let mut buf = [0u8; 16];
        let nothing = tokio::time::timeout(std::time::Duration::from_millis(50), b.read(&mut buf));
        assert!(nothing.await.is_err(), "nothing leaves before the drain");
        poll_fn(|cx| flusher.poll_drain(cx)).await.unwrap();
        let n = b.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"one two");
    }

    #[tokio::test]
    async fn big_writes_go_straight_after_what_is_held() {
        let (a, mut b) = tokio::io::duplex(4 * LIMIT);
        let (mut conn, _flusher) = batched(a);
        conn.write_all(b"head").await.unwrap();
        let big = vec![7u8; DIRECT];
        conn.write_all(&big).await.unwrap();
        let mut got = vec![0u8; 4 + DIRECT];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..4], b"head");
        assert!(got[4..].iter().all(|&x| x == 7));
    }

    #[tokio::test]
    async fn a_write_past_the_limit_drains_what_is_held_first() {
        let (a, mut b) = tokio::io::duplex(4 * LIMIT);
        let (mut conn, _flusher) = batched(a);
        let chunk = vec![1u8; DIRECT - 1];
        let mut sent = 0;
        while sent + chunk.len() <= LIMIT {
            conn.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        let mut buf = [0u8; 16];
        let nothing = tokio::time::timeout(std::time::Duration::from_millis(50), b.read(&mut buf));
        assert!(nothing.await.is_err(), "up to the limit, nothing leaves");
        conn.write_all(&chunk).await.unwrap();
        let mut got = vec![0u8; sent];
        b.read_exact(&mut got).await.unwrap();
        assert!(got.iter().all(|&x| x == 1));
    }

    #[tokio::test]
    async fn a_failed_drain_fails_the_connection_s_next_call() {
        let (a, b) = tokio::io::duplex(64);
        drop(b);
        let (mut conn, flusher) = batched(a);
        conn.write_all(b"lost").await.unwrap();
        assert!(poll_fn(|cx| flusher.poll_drain(cx)).await.is_err());
        assert!(conn.write_all(b"more").await.is_err());
        let mut buf = [0u8; 4];
        assert!(conn.read(&mut buf).await.is_err());
    }

    /// Holds what is written until flushed, as a TLS stream may.
    struct HoldsUntilFlush {
        held: Vec<u8>,
        out: tokio::io::DuplexStream,
    }

    impl AsyncWrite for HoldsUntilFlush {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.held.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this = &mut *self;
            while !this.held.is_empty() {
                let n = ready!(Pin::new(&mut this.out).poll_write(cx, &this.held))?;
                this.held.drain(..n);
            }
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.poll_flush(cx)
        }
    }

    #[tokio::test]
    async fn a_drain_flushes_what_a_direct_write_left_in_the_stream() {
        let (a, mut b) = tokio::io::duplex(4 * LIMIT);
        let inner = HoldsUntilFlush {
            held: Vec::new(),
            out: a,
        };
        let (mut conn, flusher) = batched(inner);
        conn.write_all(&vec![3u8; DIRECT]).await.unwrap();
        poll_fn(|cx| flusher.poll_drain(cx)).await.unwrap();
        let mut got = vec![0u8; DIRECT];
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), b.read_exact(&mut got));
        read.await.expect("the held bytes were flushed").unwrap();
        assert!(got.iter().all(|&x| x == 3));
    }

    #[tokio::test]
    async fn shutdown_drains_first() {
        let (a, mut b) = tokio::io::duplex(1024);
        let (mut conn, _flusher) = batched(a);
        conn.write_all(b"bye").await.unwrap();
        conn.shutdown().await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
    }
}
