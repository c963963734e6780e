//! HTTP/1.1 and HTTP/2 serving of downstream connections.

pub mod cors;
pub mod deadline;
mod deferred;
mod exchange;
pub mod fault;
mod forward;
pub mod h1_head;
mod h1_server;
pub mod h2_server;
pub mod headers;
pub mod mirror;
pub mod replay;
mod request;
pub mod retry;
mod upgrade;

pub use exchange::ConnInfo;
pub(crate) use exchange::or_unknown;
pub(crate) use h2_server::{Broken, BrokenBody};

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::ctx::ProxyCtx;
use crate::io::{ConnStats, CountingIo, LastWords};
use crate::model::listener::HttpManager;
use request::HttpConn;

/// Sent when a client does not finish its request headers in time.
const REQUEST_TIMEOUT_REPLY: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\nx-meshwork-reason: request header timeout\r\n\r\n";

/// Serves HTTP on a connection until it closes, idles out or is drained.
pub async fn serve(
    ctx: Arc<ProxyCtx>,
    stream: crate::tls::stream::Downstream,
    hcm: Arc<HttpManager>,
    info: ConnInfo,
) {
    keep_timer_floor(&ctx);
    let stats = ConnStats::new();
    let last_words = LastWords::default();
    let io = CountingIo::new(stream, stats.clone(), last_words.clone());
    let limits = ctx.limits.clone();
    let h2 = info.h2;
    let idle = hcm
        .idle_timeout
        .map_or(limits.idle_timeout, |t| t.min(limits.idle_timeout));
    let header_timeout = hcm
        .request_headers_timeout
        .map_or(limits.request_header_timeout, |t| {
            t.min(limits.request_header_timeout)
        });
    let max_header_bytes = hcm
        .max_request_headers_bytes
        .unwrap_or(limits.max_header_bytes);
    let max_headers = hcm.max_headers_count.unwrap_or(limits.max_headers);
    let deferred = deferred::Deferred::new();
    let conn = Arc::new(HttpConn {
        ctx: ctx.clone(),
        hcm,
        info,
        stats: stats.clone(),
        deferred: deferred.clone(),
    });
    if h2 {
        let settings = h2_server::Settings {
            max_concurrent: limits.max_concurrent_streams,
            max_header_list: max_header_bytes,
            max_headers,
            stream_window: h2_server::STREAM_WINDOW,
            conn_window: h2_server::CONN_WINDOW,
            max_early_resets: limits.max_pending_accept_reset_streams,
            max_error_resets: 1024,
        };
        h2_server::serve(conn, io, settings, idle).await;
    } else {
        let fast = h1_server::FastLimits {
            head: h1_head::HeadLimits {
                max_header_bytes,
                max_headers,
            },
            idle,
        };
        // Boxed: the request future is several KB, and hyper moves it.
        let service_conn = conn.clone();
        let service = service_fn(move |req| Box::pin(request::handle(service_conn.clone(), req)));
        let io = match h1_server::serve(conn, io, fast).await {
            h1_server::Served::Closed => return,
            h1_server::Served::HandOff(mut io, unread) => {
                io.unread(unread);
                io
            }
        };
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(max_header_bytes.max(8192))
            .max_headers(max_headers)
            .keep_alive(true);
        let c = b
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let _ = drive(c, &ctx, &stats, idle, &last_words, &deferred).await;
    }
}

/// How far ahead the timer floor keeps a timer due.
const TIMER_FLOOR: Duration = Duration::from_secs(5);

/// Keeps a timer due within [`TIMER_FLOOR`] on the runtime while the proxy
/// lives. Tokio's time driver interrupts its own park (an eventfd write,
/// and one more epoll wakeup) whenever a new timer is due before the
/// earliest one it knew when it parked; every forwarded request arms one
/// (the route timeout, 15 s by default) while the idle connections' timers
/// are further out, so that cost was paid per request. With a timer always
/// due within 5 s, a route timeout longer than that never interrupts; the
/// price is one wakeup per 5 s.
fn keep_timer_floor(ctx: &Arc<ProxyCtx>) {
    use std::sync::atomic::Ordering;
    if ctx.timer_floor.swap(true, Ordering::Relaxed) {
        return;
    }
    let ctx = Arc::downgrade(ctx);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(TIMER_FLOOR).await;
            let Some(ctx) = ctx.upgrade() else { return };
            if ctx.drain.is_draining() {
                ctx.timer_floor.store(false, Ordering::Relaxed);
                return;
            }
        }
    });
}

/// How often a connection with idle timeout `idle` checks for idleness.
fn idle_tick(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(30))
}

/// A server connection that can be asked to finish gracefully (HTTP/2
/// GOAWAY; HTTP/1 close after the in-flight response).
trait Graceful: std::future::Future<Output = Result<(), hyper::Error>> {
    fn shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    Self: std::future::Future<Output = Result<(), hyper::Error>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Runs a connection, shutting it down gracefully on drain or idleness.
/// After each poll of the connection, the exchanges that finished are
/// recorded.
async fn drive<C>(
    conn: C,
    ctx: &ProxyCtx,
    stats: &ConnStats,
    idle: Duration,
    last_words: &LastWords,
    deferred: &deferred::Deferred,
) -> Result<(), hyper::Error>
where
    C: Graceful,
{
    let mut conn = pin!(conn);
    let mut shutting_down = false;
    let tick = idle_tick(idle);
    let drain = ctx.drain.clone();
    let mut drained = pin!(drain.started());
    loop {
        let polled = std::future::poll_fn(|cx| {
            let res = conn.as_mut().poll(cx);
            deferred.flush();
            res
        });
        tokio::select! {
            res = polled => {
                if let Err(e) = &res {
                    if e.is_timeout() && stats.has_partial_input() {
                        // The request head never completed: say so before closing.
                        last_words.set(REQUEST_TIMEOUT_REPLY);
                        tracing::info!("request header timeout: 408");
                    } else if e.is_parse() || e.is_parse_too_large() {
                        tracing::info!(error = %e, "malformed request");
                    } else {
                        tracing::debug!(error = %e, "connection error");
                    }
                }
                return res;
            }
            _ = &mut drained, if !shutting_down => {
                conn.as_mut().shutdown();
                shutting_down = true;
            }
            _ = tokio::time::sleep(tick), if !shutting_down => {
                if stats.idle_for() >= idle {
                    conn.as_mut().shutdown();
                    shutting_down = true;
                }
            }
        }
    }
}
