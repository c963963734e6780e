//! An upstream HTTP/2 connection's task: writes what requests queued,
//! reads the server's frames and hands each stream its part.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::HeaderName;
use meshwork_hpack::Decoder;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Error;
use super::state::{Inner, MAX_HEADER_LIST, SEND_LIMIT, State};
use crate::h2_frame::{self as frame, Head, flag, kind, reason, setting};
use crate::http::headers::{RESPONSE_HEADERS_ADDED, h2_field_name, h2_header_map};

/// The largest frame accepted (the protocol default, never raised).
const MAX_FRAME: usize = frame::DEFAULT_MAX_FRAME;

/// A header block still arriving in CONTINUATION frames.
struct Partial {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
}

/// The connection's task; it ends when the connection does.
pub struct Connection<IO> {
    io: IO,
    inner: Arc<Inner>,
    rbuf: BytesMut,
    out: Vec<u8>,
    written: usize,
    decoder: Decoder,
    partial: Option<Partial>,
    shutting: bool,
    /// A header block's names, value ranges and whether the server sent
    /// each "never indexed" (kept so downstream, RFC 7541 §6.2.3); empty
    /// between blocks, only the allocation is reused.
    fields: Vec<(HeaderName, Range<usize>, bool)>,
    /// How many value octets the last header block decoded to: the next
    /// block's value buffer starts that large. A block's size says little
    /// (one index can stand for a peer metadata value of hundreds of
    /// octets), and a buffer that grows mid-block is reallocated.
    arena_hint: usize,
}

impl<IO> Connection<IO> {
    pub(super) fn new(io: IO, inner: Arc<Inner>) -> Self {
        Connection {
            io,
            inner,
            rbuf: BytesMut::new(),
            out: Vec::new(),
            written: 0,
            decoder: Decoder::new(4096),
            partial: None,
            shutting: false,
            fields: Vec::new(),
            arena_hint: 0,
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Future for Connection<IO> {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        this.inner.task.register(cx.waker());
        // Once a read found nothing, the socket wakes the task when bytes
        // come: asking again within this poll only costs a readiness check.
        let mut read_waiting = false;
        loop {
            if this.shutting {
                return Pin::new(&mut this.io).poll_shutdown(cx).map(|_| Ok(()));
            }
            let mut progress = false;
            // Write what requests and the last frames queued.
            if this.written == this.out.len() {
                this.out.clear();
                this.written = 0;
                let mut st = this.inner.lock();
                std::mem::swap(&mut this.out, &mut st.wbuf);
                // Senders held back by a full buffer may go on: the buffer
                // they wait on was just emptied (while they wait it is
                // full, so the loop comes back here before it ends).
                let waiters = std::mem::take(&mut st.buffer_waiters);
                drop(st);
                waiters.into_iter().for_each(std::task::Waker::wake);
            }
            while this.written < this.out.len() {
                match Pin::new(&mut this.io).poll_write(cx, &this.out[this.written..]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        this.written += n;
                        progress = true;
                    }
                    Poll::Ready(_) => {
                        return Poll::Ready(this.end(Error::Io("write failed".into())));
                    }
                    Poll::Pending => break,
                }
            }
            if this.written == this.out.len()
                && let Poll::Ready(Err(_)) = Pin::new(&mut this.io).poll_flush(cx)
            {
                return Poll::Ready(this.end(Error::Io("flush failed".into())));
            }
            // Read the server's frames.
            let read = if read_waiting {
                Poll::Pending
            } else {
                if this.rbuf.capacity() - this.rbuf.len() < MAX_FRAME {
                    this.rbuf.reserve(MAX_FRAME + frame::HEADER_LEN);
                }
                tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.rbuf)
            };
            match read {
                Poll::Ready(Ok(n)) if n > 0 => {
                    progress = true;
                    if let Err(e) = this.read_frames() {
                        // One try to tell the server why (GOAWAY queued).
                        // (Not after a frame only partly written.)
                        let goaway = std::mem::take(&mut this.inner.lock().wbuf);
                        if this.written == this.out.len() {
                            let _ = Pin::new(&mut this.io).poll_write(cx, &goaway);
                        }
                        return Poll::Ready(this.end(e));
                    }
                }
                Poll::Ready(Ok(_)) => {
                    return Poll::Ready(this.end(Error::Io("closed by the server".into())));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(this.end(Error::Io(e.to_string()))),
                Poll::Pending => read_waiting = true,
            }
            let st = this.inner.lock();
            if st.finished() && st.wbuf.is_empty() && this.written == this.out.len() {
                drop(st);
                this.inner.closed.store(true, Ordering::Relaxed);
                this.shutting = true;
                continue;
            }
            let more = !st.wbuf.is_empty() && this.written == this.out.len();
            drop(st);
            if !progress && !more {
                return Poll::Pending;
            }
        }
    }
}

impl<IO> Connection<IO> {
    /// Ends the connection: every stream fails with `e`.
    fn end(&mut self, e: Error) -> Result<(), Error> {
        self.inner.closed.store(true, Ordering::Relaxed);
        self.inner.lock().fail_all(&e);
        Err(e)
    }

    /// Fails the connection for a server's protocol error: GOAWAY queued
    /// alone (the caller tries to write it once), then the end.
    fn protocol_error(&mut self, st: &mut State, code: u32, what: &'static str) -> Error {
        st.wbuf.clear();
        frame::put_goaway(&mut st.wbuf, 0, code);
        Error::Protocol(code, what)
    }

    fn read_frames(&mut self) -> Result<(), Error> {
        let inner = self.inner.clone();
        let mut st = inner.lock();
        loop {
            let (head, payload) = match frame::take_frame(&mut self.rbuf, MAX_FRAME) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(()) => {
                    let e = reason::FRAME_SIZE_ERROR;
                    return Err(self.protocol_error(&mut st, e, "frame too large"));
                }
            };
            if let Err((code, what)) = self.on_frame(&mut st, head, payload) {
                return Err(self.protocol_error(&mut st, code, what));
            }
        }
        Ok(())
    }

    fn on_frame(
        &mut self,
        st: &mut State,
        head: Head,
        payload: Bytes,
    ) -> Result<(), (u32, &'static str)> {
        // The server's preface is a SETTINGS frame (RFC 9113 §3.4).
        if !st.settings_seen && (head.kind != kind::SETTINGS || head.has(flag::ACK)) {
            return Err((
                reason::PROTOCOL_ERROR,
                "the server's first frame is not SETTINGS",
            ));
        }
        if let Some(p) = &self.partial
            && (head.kind != kind::CONTINUATION || head.stream != p.stream)
        {
            return Err((reason::PROTOCOL_ERROR, "header block interrupted"));
        }
        let wrong_stream = match head.kind {
            kind::DATA | kind::HEADERS | kind::RST_STREAM | kind::CONTINUATION => {
                head.stream == 0 || head.stream.is_multiple_of(2) || head.stream >= st.next_id
            }
            kind::SETTINGS | kind::PING | kind::GOAWAY => head.stream != 0,
            _ => false,
        };
        if wrong_stream {
            return Err((reason::PROTOCOL_ERROR, "frame on the wrong stream"));
        }
        match head.kind {
            kind::DATA => on_data(st, head, payload),
            kind::HEADERS => {
                let mut range = frame::strip_padding(&payload, head.has(flag::PADDED))
                    .ok_or((reason::PROTOCOL_ERROR, "bad padding"))?;
                if head.has(flag::PRIORITY) {
                    if range.len() < 5 {
                        return Err((reason::FRAME_SIZE_ERROR, "HEADERS too short"));
                    }
                    range.start += 5;
                }
                let end_stream = head.has(flag::END_STREAM);
                if head.has(flag::END_HEADERS) {
                    self.on_block(st, head.stream, end_stream, &payload[range])
                } else {
                    self.partial = Some(Partial {
                        stream: head.stream,
                        end_stream,
                        block: payload[range].to_vec(),
                    });
                    Ok(())
                }
            }
            kind::CONTINUATION => {
                let Some(mut p) = self.partial.take() else {
                    return Err((reason::PROTOCOL_ERROR, "CONTINUATION without HEADERS"));
                };
                p.block.extend_from_slice(&payload);
                if p.block.len() > 4 * MAX_HEADER_LIST + 4096 {
                    return Err((reason::ENHANCE_YOUR_CALM, "header block too large"));
                }
                if head.has(flag::END_HEADERS) {
                    self.on_block(st, p.stream, p.end_stream, &p.block)
                } else {
                    self.partial = Some(p);
                    Ok(())
                }
            }
            kind::RST_STREAM => {
                let code = <[u8; 4]>::try_from(&payload[..])
                    .map_err(|_| (reason::FRAME_SIZE_ERROR, "RST_STREAM not 4 octets"))?;
                if let Some(s) = st.streams.get_mut(&head.stream) {
                    s.fail(Error::Reset(u32::from_be_bytes(code)));
                }
                Ok(())
            }
            kind::SETTINGS => on_settings(st, &self.inner, head, &payload),
            kind::PING => {
                if payload.len() != 8 {
                    return Err((reason::FRAME_SIZE_ERROR, "PING not 8 octets"));
                }
                if !head.has(flag::ACK) {
                    // Acks of a server that never reads pile up: bounded.
                    if st.wbuf.len() > 4 * SEND_LIMIT {
                        return Err((reason::ENHANCE_YOUR_CALM, "PING flood"));
                    }
                    frame::put_ping_ack(&mut st.wbuf, &payload);
                }
                Ok(())
            }
            kind::GOAWAY => {
                let last = payload
                    .get(..4)
                    .map(|b| u32::from_be_bytes(b.try_into().unwrap()) & 0x7fff_ffff)
                    .ok_or((reason::FRAME_SIZE_ERROR, "GOAWAY too short"))?;
                self.inner.closed.store(true, Ordering::Relaxed);
                st.going_away = Some(last);
                for (id, s) in st.streams.iter_mut() {
                    if *id > last {
                        s.fail(Error::Refused);
                    }
                }
                Ok(())
            }
            kind::WINDOW_UPDATE => {
                let inc = <[u8; 4]>::try_from(&payload[..])
                    .map_err(|_| (reason::FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 octets"))?;
                let inc = i64::from(u32::from_be_bytes(inc) & 0x7fff_ffff);
                if head.stream == 0 {
                    st.conn_send += inc;
                    if inc == 0 || st.conn_send > frame::MAX_WINDOW {
                        return Err((reason::FLOW_CONTROL_ERROR, "bad connection window update"));
                    }
                    for s in st.streams.values_mut() {
                        if let Some(w) = s.send_waker.take() {
                            w.wake();
                        }
                    }
                } else if let Some(s) = st.streams.get_mut(&head.stream) {
                    s.send_window += inc;
                    let bad = if inc == 0 {
                        Some(reason::PROTOCOL_ERROR)
                    } else {
                        (s.send_window > frame::MAX_WINDOW).then_some(reason::FLOW_CONTROL_ERROR)
                    };
                    match bad {
                        Some(code) if !s.closed => {
                            s.fail(Error::Protocol(code, "bad stream window update"));
                            frame::put_rst(&mut st.wbuf, head.stream, code);
                        }
                        _ => s.wake_all(),
                    }
                }
                Ok(())
            }
            kind::PUSH_PROMISE => Err((reason::PROTOCOL_ERROR, "PUSH_PROMISE with push disabled")),
            _ => Ok(()),
        }
    }

    /// A whole header block: a stream's response head, or its trailers.
    fn on_block(
        &mut self,
        st: &mut State,
        id: u32,
        end: bool,
        block: &[u8],
    ) -> Result<(), (u32, &'static str)> {
        let mut status = None;
        let mut size = 0;
        let mut bad = false;
        let mut regular_seen = false;
        // Values are copied into one buffer per block and handed out as
        // slices of it: one allocation per head, not one per header.
        let mut arena = BytesMut::with_capacity((2 * block.len()).max(self.arena_hint));
        let fields = &mut self.fields;
        fields.clear();
        self.decoder
            .decode(block, |f| {
                size += f.name.len() + f.value.len() + 32;
                if f.name == b":status" {
                    // One, before any regular field (RFC 9113 §8.3).
                    bad |= status.is_some() || regular_seen;
                    status = http::StatusCode::from_bytes(f.value).ok();
                    bad |= status.is_none();
                } else if f.name.starts_with(b":") || size > MAX_HEADER_LIST {
                    bad = true;
                } else {
                    regular_seen = true;
                    match h2_field_name(&f) {
                        Ok(name) => {
                            let start = arena.len();
                            arena.extend_from_slice(f.value);
                            fields.push((name, start..arena.len(), f.never_indexed));
                        }
                        Err(_) => bad = true,
                    }
                }
            })
            .map_err(|_| (reason::COMPRESSION_ERROR, "header block does not decode"))?;
        self.arena_hint = arena.len().min(MAX_HEADER_LIST);
        let headers = h2_header_map(fields, &arena.freeze(), RESPONSE_HEADERS_ADDED);
        bad |= headers.is_none();
        let headers = headers.unwrap_or_default();
        let Some(s) = st.streams.get_mut(&id) else {
            return Ok(()); // a stream already forgotten
        };
        if s.closed {
            return Ok(()); // reset already: late frames are dropped
        }
        let problem = if bad {
            Some((reason::PROTOCOL_ERROR, "malformed response head"))
        } else if s.recv_end {
            Some((reason::STREAM_CLOSED, "HEADERS after the end of the stream"))
        } else if !s.head_delivered {
            match status {
                None => Some((reason::PROTOCOL_ERROR, "response without :status")),
                Some(st) if st.is_informational() && end => {
                    Some((reason::PROTOCOL_ERROR, "interim response ends the stream"))
                }
                _ => None,
            }
        } else if !end {
            Some((reason::PROTOCOL_ERROR, "trailers without END_STREAM"))
        } else if status.is_some() {
            Some((reason::PROTOCOL_ERROR, "pseudo-header in trailers"))
        } else {
            None
        };
        if let Some((code, what)) = problem {
            s.fail(Error::Protocol(code, what));
            frame::put_rst(&mut st.wbuf, id, code);
            return Ok(());
        }
        if !s.head_delivered {
            let status = status.expect("checked above");
            if status.is_informational() {
                return Ok(()); // interim (100 Continue, 103): not forwarded
            }
            let mut resp = http::Response::new(());
            *resp.status_mut() = status;
            *resp.version_mut() = http::Version::HTTP_2;
            *resp.headers_mut() = headers;
            s.head = Some(resp.into_parts().0);
            s.head_delivered = true;
        } else {
            s.trailers = Some(headers);
        }
        if end {
            s.recv_end = true;
        }
        if let Some(w) = s.recv_waker.take() {
            w.wake();
        }
        Ok(())
    }
}

fn on_data(st: &mut State, head: Head, payload: Bytes) -> Result<(), (u32, &'static str)> {
    let len = payload.len();
    if len as i64 > st.conn_recv {
        return Err((reason::FLOW_CONTROL_ERROR, "connection window exceeded"));
    }
    st.conn_recv -= len as i64;
    let range = frame::strip_padding(&payload, head.has(flag::PADDED))
        .ok_or((reason::PROTOCOL_ERROR, "bad padding"))?;
    let data = payload.slice(range);
    let end = head.has(flag::END_STREAM);
    let Some(s) = st.streams.get_mut(&head.stream) else {
        // Forgotten (cancelled) already: the window comes back at once.
        st.give_back(0, len);
        return Ok(());
    };
    if s.closed {
        // Reset already: in-flight data is dropped (RFC 9113 §5.4.2).
        st.give_back(0, len);
        return Ok(());
    }
    let problem = if s.recv_end {
        Some(reason::STREAM_CLOSED)
    } else if len as i64 > s.recv_window {
        Some(reason::FLOW_CONTROL_ERROR)
    } else if !s.head_delivered {
        Some(reason::PROTOCOL_ERROR)
    } else {
        None
    };
    if let Some(code) = problem {
        s.fail(Error::Protocol(code, "DATA out of place"));
        frame::put_rst(&mut st.wbuf, head.stream, code);
        st.give_back(0, len);
        return Ok(());
    }
    s.recv_window -= len as i64;
    let padding = len - data.len();
    if !data.is_empty() {
        s.buffered += data.len();
        s.data.push_back(data);
    }
    if end {
        s.recv_end = true;
    }
    if let Some(w) = s.recv_waker.take() {
        w.wake();
    }
    if padding > 0 {
        st.give_back(head.stream, padding);
    }
    Ok(())
}

fn on_settings(
    st: &mut State,
    inner: &Inner,
    head: Head,
    payload: &[u8],
) -> Result<(), (u32, &'static str)> {
    if head.has(flag::ACK) {
        return Ok(());
    }
    if !payload.len().is_multiple_of(6) {
        return Err((reason::FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6"));
    }
    if !st.settings_seen {
        // A server that names no limit has none (h2 and Go do the same).
        st.settings_seen = true;
        inner.max_streams.store(usize::MAX, Ordering::Relaxed);
    }
    for entry in payload.chunks_exact(6) {
        let id = u16::from_be_bytes([entry[0], entry[1]]);
        let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
        match id {
            setting::MAX_CONCURRENT_STREAMS => {
                inner.max_streams.store(value as usize, Ordering::Relaxed);
            }
            setting::INITIAL_WINDOW_SIZE => {
                let value = i64::from(value);
                if value > frame::MAX_WINDOW {
                    return Err((reason::FLOW_CONTROL_ERROR, "window too large"));
                }
                let delta = value - st.peer_window;
                st.peer_window = value;
                for s in st.streams.values_mut() {
                    s.send_window += delta;
                    if s.send_window > frame::MAX_WINDOW {
                        return Err((reason::FLOW_CONTROL_ERROR, "window overflow"));
                    }
                    if let Some(w) = s.send_waker.take() {
                        w.wake();
                    }
                }
            }
            setting::HEADER_TABLE_SIZE => st.encoder.set_peer_table_size(value as usize),
            setting::MAX_FRAME_SIZE => {
                if !(frame::DEFAULT_MAX_FRAME as u32..=frame::MAX_MAX_FRAME).contains(&value) {
                    return Err((reason::PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range"));
                }
                st.peer_max_frame = value as usize;
            }
            _ => {}
        }
    }
    frame::put_settings_ack(&mut st.wbuf);
    Ok(())
}
