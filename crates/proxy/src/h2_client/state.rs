//! What an upstream HTTP/2 connection's task and its requests share: the
//! output buffer requests write their frames into, the streams' received
//! heads, data and trailers, and both directions' flow-control windows.
//! One mutex guards it; every holder is brief (no I/O under the lock).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::task::Waker;

use bytes::Bytes;
use futures::task::AtomicWaker;
use http::HeaderMap;
use meshwork_hpack::Encoder;

use super::Error;
use crate::h2_frame::{self as frame, reason};

/// What the proxy lets a server send on a stream before it reads it.
pub const STREAM_WINDOW: u32 = 2 << 20;
/// The same for the whole connection.
pub const CONN_WINDOW: u32 = 5 << 20;
/// The largest response head accepted.
pub const MAX_HEADER_LIST: usize = 16 << 10;
/// Streams opened before the server's SETTINGS say how many it takes.
pub const INITIAL_MAX_STREAMS: usize = 100;
/// Request frames queued before senders wait for the task to write.
pub const SEND_LIMIT: usize = 512 * 1024;

/// A connection's shared part.
pub struct Inner {
    pub state: Mutex<State>,
    /// The connection task.
    pub task: AtomicWaker,
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS (read without the lock).
    pub max_streams: AtomicUsize,
    /// Set once the connection takes no new streams (GOAWAY, failure).
    pub closed: AtomicBool,
}

impl Inner {
    /// Locks the state (a poisoned lock is still usable: the state is
    /// consistent between statements).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One stream as the connection and its request see it.
#[derive(Default)]
pub struct Stream {
    /// What the proxy may still send.
    pub send_window: i64,
    /// What the server may still send.
    pub recv_window: i64,
    /// Read but not yet given back.
    pub owed: u32,
    pub head: Option<http::response::Parts>,
    /// A final response head arrived (taken or not).
    pub head_delivered: bool,
    pub data: VecDeque<Bytes>,
    pub buffered: usize,
    pub trailers: Option<HeaderMap>,
    /// The server ended its side with END_STREAM (a clean end).
    pub recv_end: bool,
    /// The proxy ended its side (END_STREAM or a reset sent).
    pub local_end: bool,
    /// Reset (either way) or failed: later frames are dropped quietly.
    pub closed: bool,
    /// Why it failed; a response that had ended cleanly keeps its result.
    pub error: Option<Error>,
    /// The response side waits for a head, data or trailers.
    pub recv_waker: Option<Waker>,
    /// The request body waits for window.
    pub send_waker: Option<Waker>,
    /// Handles alive; at zero the stream is forgotten (reset if open).
    pub handles: usize,
}

impl Stream {
    /// Wakes whoever waits on the stream.
    pub fn wake_all(&mut self) {
        if let Some(w) = self.recv_waker.take() {
            w.wake();
        }
        if let Some(w) = self.send_waker.take() {
            w.wake();
        }
    }

    /// Fails the stream unless it already failed, and closes it.
    pub fn fail(&mut self, e: Error) {
        self.error.get_or_insert(e);
        self.closed = true;
        self.local_end = true;
        self.wake_all();
    }
}

/// The shared state.
pub struct State {
    /// Frames waiting for the connection task to write them.
    pub wbuf: Vec<u8>,
    pub encoder: Encoder,
    pub next_id: u32,
    /// By id (foldhash: looked up on every frame).
    pub streams: foldhash::HashMap<u32, Stream>,
    pub peer_window: i64,
    pub peer_max_frame: usize,
    pub conn_send: i64,
    /// What the server may still send on the connection.
    pub conn_recv: i64,
    /// Read on the connection but not yet given back.
    pub conn_owed: u32,
    /// The server's GOAWAY (its last processed stream).
    pub going_away: Option<u32>,
    /// Why the connection ended, once it did.
    pub failure: Option<Error>,
    /// `ClientConn` handles alive; at zero with no streams, it closes.
    pub senders: usize,
    /// Senders waiting for the output buffer to drain below [`SEND_LIMIT`].
    pub buffer_waiters: Vec<Waker>,
    /// The server's first SETTINGS came.
    pub settings_seen: bool,
}

impl State {
    /// A connection's first state, its preface frames queued.
    pub fn new() -> State {
        let mut wbuf = Vec::with_capacity(1024);
        wbuf.extend_from_slice(frame::PREFACE);
        frame::put_settings(
            &mut wbuf,
            &[
                (frame::setting::ENABLE_PUSH, 0),
                (frame::setting::INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                (frame::setting::MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST as u32),
            ],
        );
        frame::put_window_update(&mut wbuf, 0, CONN_WINDOW - frame::DEFAULT_WINDOW as u32);
        State {
            wbuf,
            encoder: Encoder::with_table(frame::HPACK_TABLE),
            next_id: 1,
            streams: foldhash::HashMap::default(),
            peer_window: frame::DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME,
            conn_send: frame::DEFAULT_WINDOW,
            conn_recv: i64::from(CONN_WINDOW),
            conn_owed: 0,
            going_away: None,
            failure: None,
            senders: 1,
            buffer_waiters: Vec::new(),
            settings_seen: false,
        }
    }

    /// Gives `n` read octets of stream `id` back to the server, in
    /// WINDOW_UPDATEs of at least half a window; whether any was queued.
    pub fn give_back(&mut self, id: u32, n: usize) -> bool {
        if n == 0 {
            return false; // a zero increment is a protocol error
        }
        let mut queued = false;
        if let Some(s) = self.streams.get_mut(&id)
            && !s.recv_end
            && !s.closed
        {
            s.owed += n as u32;
            // Half a window owed, or as much as the server has left (so
            // unread streams never starve the one being read).
            if s.owed >= STREAM_WINDOW / 2 || i64::from(s.owed) >= s.recv_window {
                frame::put_window_update(&mut self.wbuf, id, s.owed);
                s.recv_window += i64::from(s.owed);
                s.owed = 0;
                queued = true;
            }
        }
        self.conn_owed += n as u32;
        if self.conn_owed >= CONN_WINDOW / 2 || i64::from(self.conn_owed) >= self.conn_recv {
            frame::put_window_update(&mut self.wbuf, 0, self.conn_owed);
            self.conn_recv += i64::from(self.conn_owed);
            self.conn_owed = 0;
            queued = true;
        }
        queued
    }

    /// One handle of stream `id` less; the last one forgets the stream,
    /// resetting it (CANCEL) if either side is still open.
    pub fn release(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.handles -= 1;
        if s.handles == 0 {
            self.cancel(id);
            self.streams.remove(&id);
        }
    }

    /// Stops receiving on stream `id` (nobody reads the response): a
    /// stream still open is reset (CANCEL), what it holds is given back.
    pub fn cancel(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let open = !(s.closed || s.local_end && s.recv_end);
        let held = std::mem::take(&mut s.buffered);
        s.data.clear();
        if open {
            s.fail(Error::Local(reason::CANCEL));
            frame::put_rst(&mut self.wbuf, id, reason::CANCEL);
        }
        if held > 0 {
            self.give_back(0, held);
        }
    }

    /// Fails every stream, and the connection for new ones.
    pub fn fail_all(&mut self, e: &Error) {
        self.failure.get_or_insert_with(|| e.clone());
        for s in self.streams.values_mut() {
            s.fail(e.clone());
        }
    }

    /// Whether the connection is done: ended, or unused and with no stream.
    pub fn finished(&self) -> bool {
        self.failure.is_some() || (self.senders == 0 && self.streams.is_empty())
    }
}
