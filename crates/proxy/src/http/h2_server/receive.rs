//! The receiving side of a downstream HTTP/2 connection: DATA into the
//! request bodies (flow control and content-length checked), HEADERS and
//! CONTINUATION into new requests (each one's task started) or trailers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use super::conn::{Conn, ConnError, Partial, RESET_WINDOW, StreamState};
use super::frame::{self, Head, flag, reason};
use super::head::{HeadBuilder, HeadError};
use super::recv::{RecvBody, Shared};
use super::stream::{Control, Handler, Task};

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    pub(super) fn on_data(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        let len = payload.len() as i64;
        if len > self.conn_recv {
            return Err(ConnError(
                reason::FLOW_CONTROL_ERROR,
                "connection window exceeded",
            ));
        }
        self.conn_recv -= len;
        let range = frame::strip_padding(&payload, head.has(flag::PADDED)).ok_or(ConnError(
            reason::PROTOCOL_ERROR,
            "padding longer than the frame",
        ))?;
        let data = payload.slice(range);
        let end = head.has(flag::END_STREAM);
        // Padding is never read: given back at once.
        self.give_back(payload.len() - data.len());
        let id = head.stream;
        let Some(s) = self.streams.get_mut(&id) else {
            if self.idle(id) {
                return Err(ConnError(reason::PROTOCOL_ERROR, "DATA on an idle stream"));
            }
            // A stream already closed or reset: the data is dropped.
            self.give_back(data.len());
            return Ok(());
        };
        let Some(shared) = s.recv.clone() else {
            self.give_back(data.len());
            self.reset(id, reason::STREAM_CLOSED);
            return Ok(());
        };
        if len > s.recv_window {
            self.give_back(data.len());
            self.reset(id, reason::FLOW_CONTROL_ERROR);
            return Ok(());
        }
        s.recv_window -= len;
        if payload.len() > data.len() {
            let padding = (payload.len() - data.len()) as u32;
            frame::put_window_update(&mut self.wbuf, id, padding);
            s.recv_window += i64::from(padding);
        }
        s.received += data.len() as u64;
        let length_wrong = s
            .declared
            .is_some_and(|n| s.received > n || (end && s.received != n));
        if length_wrong {
            self.give_back(data.len());
            self.reset(id, reason::PROTOCOL_ERROR);
            return Ok(());
        }
        let n = data.len() as u32;
        if !shared.push(data, end) {
            // Nobody reads this body any more: give the window back.
            self.returns.conn.fetch_add(n, Ordering::AcqRel);
            if !end && n > 0 {
                frame::put_window_update(&mut self.wbuf, id, n);
                s.recv_window += i64::from(n);
            }
        }
        if end {
            self.remote_done(id);
        }
        Ok(())
    }

    pub(super) fn on_headers(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        let mut range = frame::strip_padding(&payload, head.has(flag::PADDED)).ok_or(ConnError(
            reason::PROTOCOL_ERROR,
            "padding longer than the frame",
        ))?;
        if head.has(flag::PRIORITY) {
            if range.len() < 5 {
                return Err(ConnError(reason::FRAME_SIZE_ERROR, "HEADERS too short"));
            }
            range.start += 5;
        }
        let fragment = &payload[range];
        let end_stream = head.has(flag::END_STREAM);
        if !head.has(flag::END_HEADERS) {
            self.partial = Some(Partial {
                stream: head.stream,
                end_stream,
                block: BytesMut::from(fragment),
            });
            return Ok(());
        }
        self.on_block(head.stream, end_stream, fragment)
    }

    pub(super) fn on_continuation(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        let Some(mut p) = self.partial.take() else {
            return Err(ConnError(
                reason::PROTOCOL_ERROR,
                "CONTINUATION without HEADERS",
            ));
        };
        p.block.extend_from_slice(&payload);
        // Compressed, a block is at most ~4x smaller than its list.
        if p.block.len() > 4 * self.settings.max_header_list + 4096 {
            return Err(ConnError(
                reason::ENHANCE_YOUR_CALM,
                "header block too large",
            ));
        }
        if !head.has(flag::END_HEADERS) {
            self.partial = Some(p);
            return Ok(());
        }
        self.on_block(p.stream, p.end_stream, &p.block)
    }

    /// A whole header block: a new request, or a stream's trailers.
    fn on_block(&mut self, id: u32, end_stream: bool, block: &[u8]) -> Result<(), ConnError> {
        let trailers = self.streams.contains_key(&id);
        let mut b = HeadBuilder::new(
            trailers,
            self.settings.max_header_list,
            self.settings.max_headers,
        );
        b.expect(block.len());
        self.decoder
            .decode(block, |f| b.field(f))
            .map_err(|_| ConnError(reason::COMPRESSION_ERROR, "header block does not decode"))?;
        if trailers {
            return self.on_trailers(id, end_stream, b);
        }
        if !self.idle(id) {
            // A stream already closed (e.g. trailers after a reset): ignored.
            return Ok(());
        }
        if id.is_multiple_of(2) {
            return Err(ConnError(
                reason::PROTOCOL_ERROR,
                "even stream id from a client",
            ));
        }
        self.last_id = id;
        if self.goaway.is_some() {
            return Ok(()); // after GOAWAY: not processed
        }
        if self.streams.len() >= self.settings.max_concurrent as usize {
            frame::put_rst(&mut self.wbuf, id, reason::REFUSED_STREAM);
            return Ok(());
        }
        self.opened += 1;
        if self.opened >= RESET_WINDOW {
            // Recent streams weigh most: a long-lived connection's old
            // cancellations fade.
            self.opened /= 2;
            self.early_resets /= 2;
        }
        let built = b.into_request();
        let declared = built.as_ref().ok().and_then(|(_, d)| *d);
        let shared = Shared::new(id, self.returns.clone(), declared);
        let body = RecvBody::new(shared.clone());
        if end_stream {
            shared.push(Bytes::new(), true);
        }
        let handler = match built {
            Ok((_, Some(n))) if end_stream && n != 0 => {
                refuse(400, "content-length on a request without a body")
            }
            Ok((req, _)) => (self.make)(req.map(|()| body)),
            Err(HeadError::TooLarge) => refuse(431, "request headers too large"),
            Err(HeadError::Malformed(why)) => {
                tracing::info!(why, "malformed HTTP/2 request");
                refuse(400, why)
            }
        };
        let control = Arc::new(Control::default());
        self.tasks.push(Task::new(id, control.clone(), handler));
        self.streams.insert(
            id,
            StreamState {
                control,
                recv: (!end_stream).then_some(shared),
                recv_window: i64::from(self.settings.stream_window),
                declared,
                received: 0,
                send_window: self.peer_window,
                pending: None,
                head_sent: false,
            },
        );
        Ok(())
    }

    fn on_trailers(&mut self, id: u32, end_stream: bool, b: HeadBuilder) -> Result<(), ConnError> {
        let s = self.streams.get_mut(&id).expect("checked by the caller");
        let Some(shared) = s.recv.clone() else {
            self.reset(id, reason::STREAM_CLOSED);
            return Ok(());
        };
        let length_wrong = s.declared.is_some_and(|n| s.received != n);
        match b.into_trailers() {
            Ok(t) if end_stream && !length_wrong => {
                shared.push_trailers(t);
                self.remote_done(id);
            }
            _ => self.reset(id, reason::PROTOCOL_ERROR),
        }
        Ok(())
    }

    /// The client ended its side of stream `id`.
    fn remote_done(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        // The stream stays until its response is sent.
        s.recv = None;
    }
}

/// A stream answered locally without the request path.
fn refuse(status: u16, why: &'static str) -> Handler {
    Box::pin(std::future::ready(super::super::headers::local_reply(
        status, None, why,
    )))
}
