//! Upstream HTTP/2: multiplexed connections per endpoint, over the
//! proxy's own HTTP/2 client (`h2_client`).
//!
//! Why not hyper's HTTP/2 client: it hands every request to a dispatch
//! task over a channel and spawns two more tasks per request (one pipes
//! the body, one waits for the response), so the request's HEADERS and
//! DATA left in two writes. Here the request's own task opens the stream
//! and writes a body already at hand, so both leave in one write; only a
//! body still streaming when the response arrives gets a task of its own.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};
use crate::h2_client::{self, ClientConn, ResponseFuture, StreamRef};
use crate::h2_frame::reason;
use crate::tls::PeerPrincipal;
use crate::upstream::UpstreamError;
use crate::upstream_conn::{ConnUses, PoolSettings, set_keepalive};

/// Multiplexed HTTP/2 connections per endpoint: requests share the first
/// one with a free stream; when every one carries as many streams as its
/// server allows (`MAX_CONCURRENT_STREAMS`), another is made, as Envoy
/// does. Connections are replaced when they close and dropped when idle.
#[derive(Debug)]
pub struct H2Pool {
    settings: PoolSettings,
    /// By endpoint (foldhash: a checkout per request).
    conns: Mutex<foldhash::HashMap<SocketAddr, Vec<H2Conn>>>,
}

#[derive(Clone, Debug)]
struct H2Conn {
    /// Closed once the connection ends or refuses new streams (GOAWAY).
    sender: ClientConn,
    last_used: Arc<AtomicU64>,
    epoch: Instant,
    id: u64,
    uses: ConnUses,
    /// Streams open (or being opened) on it.
    streams: Arc<AtomicUsize>,
    /// The server's verified identity (TLS).
    peer: Option<PeerPrincipal>,
}

impl H2Conn {
    fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Open, and below the server's limit on concurrent streams.
    fn has_room(&self) -> bool {
        !self.is_closed() && self.streams.load(Ordering::Relaxed) < self.sender.max_streams()
    }

    /// How long it has had no stream (zero while it has one).
    fn idle_for(&self) -> Duration {
        if self.streams.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = self.last_used.load(Ordering::Relaxed);
        Duration::from_millis(now_ms(self.epoch).saturating_sub(last))
    }

    /// Counts one more stream on the connection until the slot is dropped.
    fn slot(&self) -> StreamSlot {
        self.streams.fetch_add(1, Ordering::Relaxed);
        StreamSlot(self.streams.clone())
    }
}

/// One stream's place on a connection, held by the response body (or
/// until the exchange fails).
#[derive(Debug)]
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn now_ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// Takes connection `id` out of the pool's list for `endpoint`, and the
/// list out when it empties.
fn remove_conn(
    conns: &mut foldhash::HashMap<SocketAddr, Vec<H2Conn>>,
    endpoint: SocketAddr,
    id: u64,
) {
    if let Some(list) = conns.get_mut(&endpoint) {
        list.retain(|c| c.id != id);
        if list.is_empty() {
            conns.remove(&endpoint);
        }
    }
}

/// The error of a failed stream. The retry policy's `refused-stream` looks
/// for the reason's name. A stream the server's GOAWAY left out (above the
/// last one it processed) never reached the application: it counts as
/// refused, as nghttp2 (and so Envoy) reports it, so it may be retried.
fn request_error(e: h2_client::Error) -> UpstreamError {
    UpstreamError::Request(format!("HTTP/2: {e}"))
}

impl H2Pool {
    /// An empty pool.
    pub fn new(settings: PoolSettings) -> Self {
        H2Pool {
            settings,
            conns: Mutex::default(),
        }
    }

    /// The pool's settings.
    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// A connection to `endpoint` with room for one more stream, and that
    /// stream's slot. The request that reaches `max_requests` takes the
    /// connection out of the pool: later ones get another, and this one
    /// closes when its streams end.
    fn checkout(&self, endpoint: SocketAddr) -> Option<(H2Conn, StreamSlot)> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let list = conns.get_mut(&endpoint)?;
        list.retain(|c| !c.is_closed());
        let taken = self.take_room(list);
        if list.is_empty() {
            conns.remove(&endpoint);
        }
        taken
    }

    /// The first connection of `list` with room, its slot taken.
    fn take_room(&self, list: &mut Vec<H2Conn>) -> Option<(H2Conn, StreamSlot)> {
        let i = list.iter().position(H2Conn::has_room)?;
        let conn = list[i].clone();
        let slot = conn.slot();
        if let Some(max) = self.settings.max_requests
            && conn.uses.bump() >= max
        {
            list.remove(i);
        }
        Some((conn, slot))
    }

    fn forget(&self, endpoint: SocketAddr, id: u64) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        remove_conn(&mut conns, endpoint, id);
    }

    /// Sends `req` (absolute URI, HTTP/2 version) on a connection to the
    /// endpoint with room for its stream, made if none has. A connection
    /// found closed or going away (GOAWAY) before the stream opened is
    /// replaced once: nothing was sent on it.
    pub async fn send(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        req: Request<ProxyBody>,
    ) -> Result<Response<H2Body>, UpstreamError> {
        if req.method() == http::Method::CONNECT {
            // Tunnels go over HTTP/1.1 upstreams; extended CONNECT is not offered.
            return Err(UpstreamError::Request(
                "CONNECT to an HTTP/2 upstream is not supported".into(),
            ));
        }
        let (mut parts, body) = req.into_parts();
        crate::http::headers::strip_hop_by_hop(&mut parts.headers, false);
        if let Some(len) = body.size_hint().exact()
            && (len != 0
                || !matches!(
                    parts.method,
                    http::Method::GET | http::Method::HEAD | http::Method::DELETE
                ))
        {
            parts
                .headers
                .entry(http::header::CONTENT_LENGTH)
                .or_insert_with(|| len.into());
        }
        let mut head = Request::from_parts(parts, ());
        let mut replaced = false;
        let (conn, slot, response, stream) = loop {
            let (conn, slot) = match self.checkout(endpoint) {
                Some(c) => c,
                None => self.connect(endpoint).await?,
            };
            match conn.sender.send_request(head, body.is_end_stream()) {
                Ok(stream) => break (conn, slot, ResponseFuture(stream.clone()), stream),
                Err((e, unsent)) => {
                    // Closed or going away (the handle says so now):
                    // nothing was sent on it.
                    self.forget(endpoint, conn.id);
                    if replaced {
                        return Err(request_error(e));
                    }
                    replaced = true;
                    head = unsent;
                }
            }
        };
        conn.last_used.store(now_ms(conn.epoch), Ordering::Relaxed);
        let pump = (!body.is_end_stream()).then(|| Pump::new(stream.clone(), body));
        let parts = Exchange { pump, response }.await.map_err(request_error)?;
        let mut resp = Response::from_parts(
            parts,
            H2Body {
                recv: stream,
                data_done: false,
                _slot: slot,
            },
        );
        if let Some(p) = conn.peer {
            resp.extensions_mut().insert(p);
        }
        Ok(resp)
    }

    /// Makes a connection to `endpoint` and takes a stream slot on the
    /// first of its connections with room (the new one, unless another
    /// request's connection or stream ended meanwhile).
    async fn connect(
        self: &Arc<Self>,
        endpoint: SocketAddr,
    ) -> Result<(H2Conn, StreamSlot), UpstreamError> {
        let s = &self.settings;
        let permit = s.breakers.connection(s.connect_timeout).await?;
        let (stream, peer) =
            crate::tls::client::connect(endpoint, s.tls.as_deref(), true, s.connect_timeout)
                .await?;
        if let Some(k) = &s.keepalive {
            set_keepalive(stream.tcp(), Some(k));
        }
        let (sender, connection) = h2_client::handshake(stream);
        tokio::spawn(async move {
            // The breaker's permit lives as long as the connection.
            let _permit = permit;
            if let Err(e) = connection.await {
                tracing::debug!(%endpoint, error = %e, "upstream HTTP/2 connection ended");
            }
        });
        let conn = H2Conn {
            sender,
            last_used: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
            id: rand::random(),
            uses: ConnUses::default(),
            streams: Arc::default(),
            peer,
        };
        let taken = {
            let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            let list = conns.entry(endpoint).or_default();
            // Connections made meanwhile may have room: the first with room
            // takes the stream, and the new one waits in the pool for more.
            list.push(conn.clone());
            self.take_room(list)
        };
        self.reap_when_idle(endpoint, conn.id);
        let Some((conn, slot)) = taken else {
            // Closed already, or the server allows no streams at all.
            return Err(UpstreamError::Connect(format!(
                "HTTP/2 connection to {endpoint} takes no streams"
            )));
        };
        Ok((conn, slot))
    }

    /// Forgets the connection once closed, or idle (no stream for the idle
    /// timeout); dropped, it closes when its last stream ends.
    fn reap_when_idle(self: &Arc<Self>, endpoint: SocketAddr, id: u64) {
        let pool = Arc::downgrade(self);
        let idle = self.settings.idle_timeout;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep((idle / 2).max(Duration::from_millis(50))).await;
                let Some(pool) = pool.upgrade() else { return };
                let mut conns = pool.conns.lock().unwrap_or_else(|p| p.into_inner());
                let Some(c) = conns
                    .get(&endpoint)
                    .and_then(|list| list.iter().find(|c| c.id == id))
                else {
                    return;
                };
                if c.is_closed() || c.idle_for() >= idle {
                    remove_conn(&mut conns, endpoint, id);
                    return;
                }
            }
        });
    }
}

/// Waits for the response head while writing the request body; a body
/// still streaming when the head arrives goes on in a task of its own.
struct Exchange {
    pump: Option<Pump>,
    response: ResponseFuture,
}

impl Future for Exchange {
    type Output = Result<http::response::Parts, h2_client::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(pump) = &mut self.pump
            && pump.poll_send(cx).is_ready()
        {
            self.pump = None;
        }
        let resp = ready!(Pin::new(&mut self.response).poll(cx));
        if let Some(pump) = self.pump.take()
            && resp.is_ok()
        {
            tokio::spawn(pump);
        }
        Poll::Ready(resp)
    }
}

/// Copies a request body into its stream: data as it comes, then trailers
/// or the end of the stream.
///
/// A chunk goes out as far as the windows allow the moment it is read (the
/// first one with the HEADERS); the rest waits for a WINDOW_UPDATE, and
/// the body is not read further meanwhile, so a slow upstream slows the
/// client. Window is never claimed ahead of a chunk in hand (a claim held
/// by an idle stream can stall the others: hyperium/hyper#4003).
struct Pump {
    tx: StreamRef,
    body: ProxyBody,
    /// A chunk read from the body, not all sent yet (and whether it ends
    /// the body).
    held: Option<(Bytes, bool)>,
}

impl Pump {
    fn new(tx: StreamRef, body: ProxyBody) -> Self {
        Pump {
            tx,
            body,
            held: None,
        }
    }

    /// Ready once the body is all sent, or the stream failed (the response
    /// then carries the error).
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            // A reset stream (e.g. the server answered and reset, or the
            // response was dropped) reads no more of the body.
            if self.tx.poll_closed(cx).is_ready() {
                return Poll::Ready(());
            }
            if let Some((data, end)) = &mut self.held {
                let end = *end;
                match ready!(self.tx.poll_send(cx, data, end)) {
                    Ok(()) if !end => self.held = None,
                    _ => return Poll::Ready(()),
                }
            }
            let frame = match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => {
                    self.held = Some((Bytes::new(), true));
                    continue;
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "request body failed; resetting the stream");
                    // A client's reset passes on with its reason.
                    let code = match e.downcast_ref::<crate::http::BrokenBody>() {
                        Some(crate::http::BrokenBody(crate::http::Broken::Reset(code))) => *code,
                        _ => reason::INTERNAL_ERROR,
                    };
                    self.tx.send_reset(code);
                    return Poll::Ready(());
                }
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(data) => {
                    let end = self.body.is_end_stream();
                    if data.is_empty() && !end {
                        continue;
                    }
                    self.held = Some((data, end));
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        self.tx.send_trailers(&trailers);
                        return Poll::Ready(());
                    }
                }
            }
        }
    }
}

impl Future for Pump {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_send(cx)
    }
}

/// An HTTP/2 response body: data, then trailers. Received bytes give their
/// flow-control window back as they are read, so the window follows the
/// reader's pace.
#[derive(Debug)]
pub struct H2Body {
    recv: StreamRef,
    data_done: bool,
    _slot: StreamSlot,
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.recv.is_end_stream() {
            SizeHint::with_exact(0)
        } else {
            SizeHint::default()
        }
    }
}

impl Drop for H2Body {
    fn drop(&mut self) {
        // Unread, the response's data would hold the connection's window.
        self.recv.stop_receiving();
    }
}
