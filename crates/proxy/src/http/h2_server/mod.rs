//! The downstream HTTP/2 server: Meshwork's own, in place of hyper's.
//!
//! Why by hand: with hyper's server over the `h2` crate, an h2c request
//! cost 2.4 times an HTTP/1.1 one, and the proxy spent 30 µs per request
//! pass where nginx spends 7 (bench/README.md). Here one task owns the
//! connection: it reads and handles frames, runs each stream's request
//! path and response body itself (no task per stream, no locks on the
//! sending side), and writes everything one turn produced in one write.
//! Header blocks go through `meshwork-hpack`.
//!
//! What it does: RFC 9113 framing, flow control both ways, HPACK, stream
//! concurrency limits (REFUSED_STREAM), trailers both ways, content-length
//! checks, GOAWAY on drain and idleness, guards against reset floods
//! (CVE-2023-44487), header-block floods and stream-error floods. Server
//! push, priorities and extended CONNECT are not offered.

mod conn;
use crate::h2_frame as frame;
mod head;
mod receive;
mod recv;
mod send;
mod stream;

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

pub use conn::{Conn, MakeHandler, Settings};
pub use recv::RecvBody;
pub(crate) use recv::{Broken, BrokenBody};
pub use stream::Handler;

use super::request::{self, HttpConn};

/// How long a finished connection's last bytes may take to leave.
const LAST_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a graceful GOAWAY waits for its PING to come back.
const DRAIN_PING_WAIT: Duration = Duration::from_secs(1);

/// What a client may send on one stream before the proxy reads it.
pub const STREAM_WINDOW: u32 = 1024 * 1024;

/// What a client may send on the connection before the proxy reads it.
pub const CONN_WINDOW: u32 = 1024 * 1024;

/// Serves HTTP/2 on `io` until the client leaves, the connection fails,
/// or it is drained or idle (GOAWAY, then its streams finish).
pub(super) async fn serve<IO>(conn: Arc<HttpConn>, io: IO, settings: Settings, idle: Duration)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    let ctx = conn.ctx.clone();
    let stats = conn.stats.clone();
    let deferred = conn.deferred.clone();
    let make: MakeHandler = Box::new(move |req| {
        let conn = conn.clone();
        Box::pin(async move {
            match request::handle(conn, req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            }
        })
    });
    let mut c = Conn::new(io, settings, make);
    let tick = super::idle_tick(idle);
    let drain = ctx.drain.clone();
    let mut drained = pin!(drain.started());
    let mut going = false;
    loop {
        let draining = c.is_draining();
        let served = std::future::poll_fn(|cx| {
            let done = c.poll_serve(cx);
            deferred.flush();
            done
        });
        tokio::select! {
            () = served => break,
            _ = &mut drained, if !going => {
                c.start_going_away();
                going = true;
            }
            _ = tokio::time::sleep(tick), if !going => {
                if stats.idle_for() >= idle {
                    c.start_going_away();
                    going = true;
                }
            }
            // A client that never answers the PING gets the real GOAWAY anyway.
            _ = tokio::time::sleep(DRAIN_PING_WAIT), if draining => {
                c.go_away(frame::reason::NO_ERROR);
            }
        }
    }
    c.abandon();
    deferred.flush();
    let finish = std::future::poll_fn(|cx| c.poll_finish(cx));
    let _ = tokio::time::timeout(LAST_WRITE_TIMEOUT, finish).await;
}
