//! One downstream HTTP/2 connection's state and its poll loop: read and
//! handle frames, run the streams' tasks, write out what both produced in
//! one write per turn. Connection-level frames (SETTINGS, PING, GOAWAY,
//! WINDOW_UPDATE, RST_STREAM) are handled here; stream data and header
//! blocks in `receive.rs`; the sending side in `send.rs`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::stream::{SelectAll, Stream};
use http::Request;
use meshwork_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncWrite};

use super::frame::{self, Head, flag, kind, reason, setting};
use super::recv::{Broken, RecvBody, Returns, Shared};
use super::stream::{Control, Handler, Task};

/// The server's side of the connection's limits and windows.
#[derive(Clone, Debug)]
pub struct Settings {
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_concurrent: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE; a larger request gets 431.
    pub max_header_list: usize,
    /// Header fields per request; more get 431.
    pub max_headers: usize,
    /// SETTINGS_INITIAL_WINDOW_SIZE: what a client may send on a stream
    /// before the proxy reads it.
    pub stream_window: u32,
    /// The same for the whole connection.
    pub conn_window: u32,
    /// Streams the client may reset before their response starts, once
    /// they are also half the streams it opened lately, before the
    /// connection is closed (CVE-2023-44487; Envoy's premature-reset rule).
    pub max_early_resets: usize,
    /// Stream errors the client may cause before the connection is closed.
    pub max_error_resets: usize,
}

/// Output gathered before the connection stops reading and running
/// streams until it is written out.
pub(super) const WRITE_LIMIT: usize = 64 * 1024;

/// The largest frame the server accepts (the protocol default).
const MAX_FRAME: usize = frame::DEFAULT_MAX_FRAME;

/// The PING payload of a graceful GOAWAY's round trip.
const DRAIN_PING: [u8; 8] = *b"mw-drain";

/// Streams over which the early-reset share is judged (halved past it).
pub(super) const RESET_WINDOW: usize = 1000;

/// Makes the request path's future for a request.
pub type MakeHandler = Box<dyn FnMut(Request<RecvBody>) -> Handler + Send>;

/// A connection-level failure: GOAWAY with this code, then close.
#[derive(Debug)]
pub(super) struct ConnError(pub u32, pub &'static str);

/// One stream as the connection sees it.
pub(super) struct StreamState {
    pub control: Arc<Control>,
    /// The body being received; `None` once the client ended its side.
    pub recv: Option<Arc<Shared>>,
    /// What the client may still send on this stream.
    pub recv_window: i64,
    pub declared: Option<u64>,
    pub received: u64,
    /// What the proxy may still send on this stream.
    pub send_window: i64,
    /// Data the windows did not let out yet, and whether it ends the stream.
    pub pending: Option<(Bytes, bool)>,
    pub head_sent: bool,
}

/// A header block still arriving in CONTINUATION frames.
pub(super) struct Partial {
    pub stream: u32,
    pub end_stream: bool,
    pub block: BytesMut,
}

/// The connection.
pub struct Conn<IO> {
    pub(super) io: IO,
    pub(super) rbuf: BytesMut,
    pub(super) wbuf: Vec<u8>,
    pub(super) written: usize,
    pub(super) settings: Settings,
    pub(super) make: MakeHandler,
    pub(super) peer_window: i64,
    pub(super) peer_max_frame: usize,
    pub(super) conn_send: i64,
    pub(super) conn_recv: i64,
    pub(super) decoder: Decoder,
    pub(super) encoder: Encoder,
    /// By id (foldhash: looked up on every frame).
    pub(super) streams: foldhash::HashMap<u32, StreamState>,
    pub(super) tasks: SelectAll<Task>,
    pub(super) blocked: VecDeque<u32>,
    pub(super) last_id: u32,
    pub(super) partial: Option<Partial>,
    preface_seen: bool,
    settings_seen: bool,
    pub(super) returns: Arc<Returns>,
    /// The stream ids taken from `returns` (swapped with its list, so
    /// neither allocation is dropped between rounds).
    returned_ids: Vec<u32>,
    /// The GOAWAY sent, if any: streams above its last id are ignored.
    pub(super) goaway: Option<u32>,
    /// A graceful GOAWAY's first step is out; its PING is awaited.
    pub(super) draining: bool,
    /// The connection failed: write the GOAWAY out and end.
    pub(super) failed: bool,
    read_closed: bool,
    pub(super) opened: usize,
    pub(super) early_resets: usize,
    error_resets: usize,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    /// A connection over `io` whose requests run through `make`; the
    /// server's SETTINGS and connection window are queued at once.
    pub fn new(io: IO, settings: Settings, make: MakeHandler) -> Conn<IO> {
        let mut wbuf = Vec::with_capacity(1024);
        frame::put_settings(
            &mut wbuf,
            &[
                (setting::MAX_CONCURRENT_STREAMS, settings.max_concurrent),
                (setting::INITIAL_WINDOW_SIZE, settings.stream_window),
                (
                    setting::MAX_HEADER_LIST_SIZE,
                    settings.max_header_list as u32,
                ),
            ],
        );
        let conn_window = i64::from(settings.conn_window).max(frame::DEFAULT_WINDOW);
        if conn_window > frame::DEFAULT_WINDOW {
            frame::put_window_update(&mut wbuf, 0, (conn_window - frame::DEFAULT_WINDOW) as u32);
        }
        Conn {
            io,
            rbuf: BytesMut::new(),
            wbuf,
            written: 0,
            returns: Returns::new(conn_window as u32, settings.stream_window),
            returned_ids: Vec::new(),
            settings,
            make,
            peer_window: frame::DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME,
            conn_send: frame::DEFAULT_WINDOW,
            conn_recv: conn_window,
            decoder: Decoder::new(4096),
            encoder: Encoder::with_table(frame::HPACK_TABLE),
            streams: foldhash::HashMap::default(),
            tasks: SelectAll::new(),
            blocked: VecDeque::new(),
            last_id: 0,
            partial: None,
            preface_seen: false,
            settings_seen: false,
            goaway: None,
            draining: false,
            failed: false,
            read_closed: false,
            opened: 0,
            early_resets: 0,
            error_resets: 0,
        }
    }

    /// Sends GOAWAY: streams opened so far finish, no new ones start.
    pub fn go_away(&mut self, code: u32) {
        if self.goaway.is_none() {
            self.draining = false;
            frame::put_goaway(&mut self.wbuf, self.last_id, code);
            self.goaway = Some(self.last_id);
        }
    }

    /// Starts a graceful GOAWAY in two steps (RFC 9113 §6.8): first one
    /// naming the highest stream id, with a PING; once the PING comes back
    /// (or [`Conn::go_away`] is called after a while), the real one. Streams
    /// the client opened before it saw the first are served, not dropped.
    pub fn start_going_away(&mut self) {
        if self.goaway.is_none() && !self.draining {
            self.draining = true;
            frame::put_goaway(&mut self.wbuf, 0x7fff_ffff, reason::NO_ERROR);
            frame::put_ping(&mut self.wbuf, &DRAIN_PING);
        }
    }

    /// Whether a graceful GOAWAY waits for its PING.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Runs the connection until it is done: the client left, it failed,
    /// or it was told to go away and its streams are finished.
    pub fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Readers of request bodies wake the connection to give window back.
        self.returns.waker.register(cx.waker());
        // Once a read found nothing, the socket wakes the task when bytes
        // come: asking again within this poll only costs a readiness check.
        let mut read_waiting = false;
        loop {
            let mut progress = false;
            self.take_returns();
            // Output over the limit skips reading and the streams this
            // turn; once it is written, they must be polled (else nothing
            // would wake the connection again).
            let gated = self.unwritten() >= WRITE_LIMIT;
            if !self.read_closed && !self.failed && !gated && !read_waiting {
                if self.rbuf.capacity() - self.rbuf.len() < MAX_FRAME {
                    self.rbuf.reserve(MAX_FRAME + frame::HEADER_LEN);
                }
                match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        progress = true;
                        if let Err(e) = self.read_frames() {
                            self.fail(e);
                        }
                    }
                    Poll::Ready(_) => self.read_closed = true,
                    Poll::Pending => read_waiting = true,
                }
            }
            while !self.failed && self.unwritten() < WRITE_LIMIT {
                match Pin::new(&mut self.tasks).poll_next(cx) {
                    Poll::Ready(Some((id, event))) => {
                        progress = true;
                        self.on_event(id, event);
                    }
                    Poll::Ready(None) | Poll::Pending => break,
                }
            }
            self.take_returns();
            if let Poll::Ready(Err(())) = self.poll_write_out(cx) {
                return Poll::Ready(());
            }
            if self.failed {
                // The GOAWAY gets its moment in `poll_finish`, bounded.
                return Poll::Ready(());
            }
            if gated && self.unwritten() < WRITE_LIMIT {
                progress = true;
            }
            if self.read_closed {
                // An HTTP/2 client that closes has left: its streams are void.
                return Poll::Ready(());
            }
            if self.goaway.is_some() && self.streams.is_empty() && self.unwritten() == 0 {
                return Poll::Ready(());
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Ends every stream: the connection is over.
    pub fn abandon(&mut self) {
        for (_, s) in self.streams.drain() {
            s.control.cancel();
            if let Some(r) = s.recv {
                r.break_off(Broken::Gone);
            }
        }
        self.tasks.clear();
    }

    /// Output not yet written.
    pub(super) fn unwritten(&self) -> usize {
        self.wbuf.len() - self.written
    }

    fn fail(&mut self, e: ConnError) {
        tracing::debug!(code = e.0, why = e.1, "HTTP/2 connection error");
        // A later GOAWAY may not name a higher stream (RFC 9113 §6.8).
        let last = self.goaway.unwrap_or(self.last_id);
        frame::put_goaway(&mut self.wbuf, last, e.0);
        self.goaway = Some(last);
        self.failed = true;
        self.abandon();
    }

    /// Gives back connection window for data nobody will read.
    pub(super) fn give_back(&self, n: usize) {
        self.returns.conn.fetch_add(n as u32, Ordering::AcqRel);
    }

    /// Announces the window readers gave back: the connection's once half
    /// a window is owed, a stream's once its reader crossed its threshold.
    fn take_returns(&mut self) {
        let owed = self.returns.conn.load(Ordering::Acquire);
        if owed > 0 && owed >= self.returns.conn_threshold {
            self.returns.conn.fetch_sub(owed, Ordering::AcqRel);
            frame::put_window_update(&mut self.wbuf, 0, owed);
            self.conn_recv += i64::from(owed);
        }
        if !self.returns.streams_pending.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut ids = std::mem::take(&mut self.returned_ids);
        std::mem::swap(&mut ids, &mut *self.returns.streams.lock().unwrap());
        for id in ids.drain(..) {
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            let Some(shared) = &s.recv else { continue };
            let n = shared.unannounced.swap(0, Ordering::AcqRel);
            if n > 0 {
                frame::put_window_update(&mut self.wbuf, id, n);
                s.recv_window += i64::from(n);
            }
        }
        self.returned_ids = ids;
    }

    /// Handles every whole frame in the read buffer.
    fn read_frames(&mut self) -> Result<(), ConnError> {
        if !self.preface_seen {
            let n = self.rbuf.len().min(frame::PREFACE.len());
            if self.rbuf[..n] != frame::PREFACE[..n] {
                return Err(ConnError(reason::PROTOCOL_ERROR, "bad connection preface"));
            }
            if n < frame::PREFACE.len() {
                return Ok(());
            }
            let _ = self.rbuf.split_to(n);
            self.preface_seen = true;
        }
        loop {
            let (head, payload) = match frame::take_frame(&mut self.rbuf, MAX_FRAME) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(()) => {
                    let e = reason::FRAME_SIZE_ERROR;
                    return Err(ConnError(e, "frame larger than allowed"));
                }
            };
            if self.failed {
                break;
            }
            self.on_frame(head, payload)?;
        }
        Ok(())
    }

    fn on_frame(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        if !self.settings_seen && head.kind != kind::SETTINGS {
            return Err(ConnError(
                reason::PROTOCOL_ERROR,
                "first frame is not SETTINGS",
            ));
        }
        if let Some(p) = &self.partial
            && (head.kind != kind::CONTINUATION || head.stream != p.stream)
        {
            return Err(ConnError(
                reason::PROTOCOL_ERROR,
                "header block interrupted",
            ));
        }
        let on_stream = head.stream != 0;
        let wrong_stream = match head.kind {
            kind::DATA | kind::HEADERS | kind::PRIORITY | kind::RST_STREAM | kind::CONTINUATION => {
                !on_stream
            }
            kind::SETTINGS | kind::PING | kind::GOAWAY => on_stream,
            _ => false,
        };
        if wrong_stream {
            return Err(ConnError(
                reason::PROTOCOL_ERROR,
                "frame on the wrong stream",
            ));
        }
        match head.kind {
            kind::DATA => self.on_data(head, payload),
            kind::HEADERS => self.on_headers(head, payload),
            kind::CONTINUATION => self.on_continuation(head, payload),
            kind::PRIORITY => {
                if payload.len() != 5 {
                    self.reset(head.stream, reason::FRAME_SIZE_ERROR);
                }
                Ok(())
            }
            kind::RST_STREAM => self.on_rst(head, &payload),
            kind::SETTINGS => self.on_settings(head, &payload),
            kind::PUSH_PROMISE => Err(ConnError(
                reason::PROTOCOL_ERROR,
                "PUSH_PROMISE from a client",
            )),
            kind::PING => {
                if payload.len() != 8 {
                    return Err(ConnError(reason::FRAME_SIZE_ERROR, "PING not 8 octets"));
                }
                if !head.has(flag::ACK) {
                    frame::put_ping_ack(&mut self.wbuf, &payload);
                } else if self.draining && payload[..] == DRAIN_PING {
                    self.go_away(reason::NO_ERROR);
                }
                Ok(())
            }
            kind::GOAWAY => {
                // The client opens no more streams; those open finish.
                self.go_away(reason::NO_ERROR);
                Ok(())
            }
            kind::WINDOW_UPDATE => self.on_window_update(head, &payload),
            _ => Ok(()), // unknown frame types are ignored (RFC 9113 §4.1)
        }
    }

    /// Whether `id` names a stream the client never opened.
    pub(super) fn idle(&self, id: u32) -> bool {
        id > self.last_id
    }

    fn on_rst(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        let Ok(code) = <[u8; 4]>::try_from(payload) else {
            return Err(ConnError(
                reason::FRAME_SIZE_ERROR,
                "RST_STREAM not 4 octets",
            ));
        };
        if self.idle(head.stream) {
            return Err(ConnError(
                reason::PROTOCOL_ERROR,
                "RST_STREAM on an idle stream",
            ));
        }
        let Some(s) = self.streams.remove(&head.stream) else {
            return Ok(());
        };
        let code = u32::from_be_bytes(code);
        if !s.head_sent {
            self.early_resets += 1;
        }
        close_stream(s, Broken::Reset(code));
        if self.early_resets >= self.settings.max_early_resets
            && self.early_resets * 2 >= self.opened
        {
            return Err(ConnError(
                reason::ENHANCE_YOUR_CALM,
                "too many streams reset early",
            ));
        }
        Ok(())
    }

    fn on_settings(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.has(flag::ACK) {
            if !payload.is_empty() {
                return Err(ConnError(
                    reason::FRAME_SIZE_ERROR,
                    "SETTINGS ack with a payload",
                ));
            }
            return Ok(());
        }
        if !payload.len().is_multiple_of(6) {
            return Err(ConnError(
                reason::FRAME_SIZE_ERROR,
                "SETTINGS not a multiple of 6",
            ));
        }
        for entry in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([entry[0], entry[1]]);
            let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
            match id {
                setting::ENABLE_PUSH if value > 1 => {
                    return Err(ConnError(reason::PROTOCOL_ERROR, "ENABLE_PUSH not 0 or 1"));
                }
                setting::INITIAL_WINDOW_SIZE => {
                    let value = i64::from(value);
                    if value > frame::MAX_WINDOW {
                        return Err(ConnError(reason::FLOW_CONTROL_ERROR, "window too large"));
                    }
                    let delta = value - self.peer_window;
                    self.peer_window = value;
                    for s in self.streams.values_mut() {
                        s.send_window += delta;
                        if s.send_window > frame::MAX_WINDOW {
                            return Err(ConnError(reason::FLOW_CONTROL_ERROR, "window overflow"));
                        }
                    }
                }
                setting::MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME as u32..=frame::MAX_MAX_FRAME).contains(&value) {
                        return Err(ConnError(
                            reason::PROTOCOL_ERROR,
                            "MAX_FRAME_SIZE out of range",
                        ));
                    }
                    self.peer_max_frame = value as usize;
                }
                setting::HEADER_TABLE_SIZE => self.encoder.set_peer_table_size(value as usize),
                _ => {} // advisory
            }
        }
        self.settings_seen = true;
        frame::put_settings_ack(&mut self.wbuf);
        self.send_blocked();
        Ok(())
    }

    fn on_window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        let Ok(inc) = <[u8; 4]>::try_from(payload) else {
            return Err(ConnError(
                reason::FRAME_SIZE_ERROR,
                "WINDOW_UPDATE not 4 octets",
            ));
        };
        let inc = i64::from(u32::from_be_bytes(inc) & 0x7fff_ffff);
        if head.stream == 0 {
            if inc == 0 {
                return Err(ConnError(reason::PROTOCOL_ERROR, "zero window increment"));
            }
            self.conn_send += inc;
            if self.conn_send > frame::MAX_WINDOW {
                return Err(ConnError(
                    reason::FLOW_CONTROL_ERROR,
                    "connection window overflow",
                ));
            }
        } else {
            if self.idle(head.stream) {
                return Err(ConnError(
                    reason::PROTOCOL_ERROR,
                    "WINDOW_UPDATE on an idle stream",
                ));
            }
            let Some(s) = self.streams.get_mut(&head.stream) else {
                return Ok(());
            };
            s.send_window += inc;
            if inc == 0 {
                self.reset(head.stream, reason::PROTOCOL_ERROR);
                return Ok(());
            }
            if s.send_window > frame::MAX_WINDOW {
                self.reset(head.stream, reason::FLOW_CONTROL_ERROR);
                return Ok(());
            }
        }
        self.send_blocked();
        Ok(())
    }

    /// Resets stream `id` for a client's error (counted) or the proxy's.
    pub(super) fn reset(&mut self, id: u32, code: u32) {
        frame::put_rst(&mut self.wbuf, id, code);
        if code == reason::PROTOCOL_ERROR || code == reason::FLOW_CONTROL_ERROR {
            self.error_resets += 1;
            if self.error_resets > self.settings.max_error_resets {
                self.fail(ConnError(
                    reason::ENHANCE_YOUR_CALM,
                    "too many stream errors",
                ));
                return;
            }
        }
        if let Some(s) = self.streams.remove(&id) {
            close_stream(s, Broken::Reset(code));
        }
    }
}

/// Ends a stream's task and body.
pub(super) fn close_stream(s: StreamState, why: Broken) {
    s.control.cancel();
    if let Some(r) = s.recv {
        r.break_off(why);
    }
}
