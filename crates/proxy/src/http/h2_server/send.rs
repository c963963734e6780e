//! The sending side of a downstream HTTP/2 connection: streams' events
//! become HEADERS and DATA frames within the client's flow-control
//! windows, data the windows hold back waits (and its stream reads no
//! further) until a WINDOW_UPDATE lets it out, and the output buffer is
//! written in one write per turn of the connection.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use super::conn::{Conn, WRITE_LIMIT, close_stream};
use super::frame::{self, reason};
use super::head;
use super::recv::Broken;
use super::stream::Event;

/// Output buffer capacity kept between turns; more is freed.
const KEEP_CAPACITY: usize = 256 * 1024;

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    /// Turns one stream event into frames.
    pub(super) fn on_event(&mut self, id: u32, event: Event) {
        if !self.streams.contains_key(&id) {
            return; // reset meanwhile
        }
        match event {
            Event::Head(parts, exact, end, first) => {
                let start = self.wbuf.len();
                self.wbuf.extend_from_slice(&[0; frame::HEADER_LEN]);
                let date = super::super::h1_server::date();
                head::encode_response(&mut self.encoder, &parts, exact, &date, &mut self.wbuf);
                frame::finish_headers(&mut self.wbuf, start, id, end, self.peer_max_frame);
                if let Some(s) = self.streams.get_mut(&id) {
                    s.head_sent = true;
                }
                if end {
                    self.local_done(id);
                }
                if let Some((data, end)) = first {
                    self.send_data(id, data, end);
                }
            }
            Event::Data(data, end) => self.send_data(id, data, end),
            Event::Trailers(trailers) => {
                let start = self.wbuf.len();
                self.wbuf.extend_from_slice(&[0; frame::HEADER_LEN]);
                head::encode_trailers(&mut self.encoder, &trailers, &mut self.wbuf);
                frame::finish_headers(&mut self.wbuf, start, id, true, self.peer_max_frame);
                self.local_done(id);
            }
            Event::Failed => self.reset(id, reason::INTERNAL_ERROR),
        }
    }

    /// Sends what the windows allow of `data`; the rest waits, and the
    /// stream reads no more body until it is out.
    fn send_data(&mut self, id: u32, data: Bytes, end: bool) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let allowed = s.send_window.min(self.conn_send).max(0) as usize;
        let n = data.len().min(allowed);
        let all = n == data.len();
        if n > 0 || (all && end) {
            frame::put_data(
                &mut self.wbuf,
                id,
                &data[..n],
                all && end,
                self.peer_max_frame,
            );
            s.send_window -= n as i64;
            self.conn_send -= n as i64;
        }
        if all {
            if s.pending.take().is_some() {
                s.control.block(false);
            }
            if end {
                self.local_done(id);
            }
            return;
        }
        let first_wait = s.pending.is_none();
        s.pending = Some((data.slice(n..), end));
        if first_wait {
            s.control.block(true);
            self.blocked.push_back(id);
        }
    }

    /// Lets held data out after the windows grew.
    pub(super) fn send_blocked(&mut self) {
        if self.conn_send <= 0 {
            // Nothing can go; forget streams that are gone meanwhile.
            let streams = &self.streams;
            self.blocked
                .retain(|id| streams.get(id).is_some_and(|s| s.pending.is_some()));
            return;
        }
        for _ in 0..self.blocked.len() {
            if self.conn_send <= 0 {
                return;
            }
            let Some(id) = self.blocked.pop_front() else {
                return;
            };
            let Some((data, end)) = self.streams.get_mut(&id).and_then(|s| s.pending.clone())
            else {
                continue; // gone, or already sent
            };
            self.send_data(id, data, end);
            if self.streams.get(&id).is_some_and(|s| s.pending.is_some()) {
                self.blocked.push_back(id);
            }
        }
    }

    /// The response of stream `id` is complete. A client still sending its
    /// request is told to stop (RST_STREAM NO_ERROR, RFC 9113 §8.1).
    fn local_done(&mut self, id: u32) {
        let Some(s) = self.streams.remove(&id) else {
            return;
        };
        if s.recv.is_some() {
            frame::put_rst(&mut self.wbuf, id, reason::NO_ERROR);
        }
        close_stream(s, Broken::Reset(reason::NO_ERROR));
    }

    /// Writes the output buffer out (`Ready(Ok)` when all of it is out and
    /// flushed; `Ready(Err)` when the connection is broken).
    pub(super) fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        let mut wrote = false;
        while self.written < self.wbuf.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                Poll::Ready(Ok(n)) => {
                    self.written += n;
                    wrote = true;
                }
                Poll::Pending => break,
            }
        }
        if self.written == self.wbuf.len() {
            self.wbuf.clear();
            self.written = 0;
            if self.wbuf.capacity() > KEEP_CAPACITY {
                self.wbuf = Vec::new();
            }
        } else if self.written >= WRITE_LIMIT {
            // A reader that never catches up must not grow the buffer.
            self.wbuf.drain(..self.written);
            self.written = 0;
        }
        if wrote || self.wbuf.is_empty() {
            // TLS holds what it encrypted until flushed.
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {}
            }
        }
        if self.wbuf.is_empty() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    /// Writes out what is left, then closes the connection the polite way.
    pub fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.poll_write_out(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(())) => Poll::Ready(()),
            Poll::Ready(Ok(())) => Pin::new(&mut self.io).poll_shutdown(cx).map(|_| ()),
        }
    }
}
