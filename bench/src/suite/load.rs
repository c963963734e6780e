//! The load generator: fixed-rate (open-loop) HTTP/1.1, h2c and gRPC unary
//! with latency per request, closed-loop maximum throughput, and TCP bulk
//! transfer. Every response is checked (status, body size, gRPC status);
//! failures are counted, never hidden.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backend::{BODY_BYTES, grpc_message};

/// How late a timer wake-up may be before it counts as the sender falling
/// behind (tokio's timer has millisecond granularity).
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// What one run of a load measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Latency of every successful request, µs, sorted.
    pub latencies: Vec<u64>,
    /// Requests that failed (bad status, short body, transport error).
    pub errors: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Bytes moved (TCP bulk only).
    pub bytes: u64,
}

impl Outcome {
    /// Requests (or, for TCP, none) per second.
    pub fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p` quantile (0..=1) in µs.
    pub fn pct(&self, p: f64) -> u64 {
        let v = &self.latencies;
        if v.is_empty() {
            return 0;
        }
        v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
    }
}

async fn connect(target: SocketAddr) -> anyhow::Result<TcpStream> {
    let s = TcpStream::connect(target).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn h1_request(body: &Bytes) -> Request<Full<Bytes>> {
    Request::post("/order")
        .header("host", "shop")
        .body(Full::new(body.clone()))
        .expect("static request")
}

fn h2_request(body: &Bytes, grpc: bool) -> Request<Full<Bytes>> {
    let b = Request::post(if grpc {
        "http://shop/bench.Echo/Unary"
    } else {
        "http://shop/order"
    });
    let b = if grpc {
        b.header("content-type", "application/grpc")
            .header("te", "trailers")
    } else {
        b
    };
    b.body(Full::new(body.clone())).expect("static request")
}

/// Reads a whole response; `true` when it is the expected one.
async fn check(resp: http::Response<hyper::body::Incoming>, grpc: bool) -> bool {
    if resp.status() != http::StatusCode::OK {
        return false;
    }
    let Ok(c) = resp.into_body().collect().await else {
        return false;
    };
    if grpc {
        let ok = c
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .is_some_and(|v| v == "0");
        ok && c.to_bytes().len() == BODY_BYTES + 5
    } else {
        c.to_bytes().len() == BODY_BYTES
    }
}

/// Where a fixed-rate sender measures from: the actual send unless it fell
/// behind its schedule (then the schedule, so stalls count: no coordinated
/// omission).
fn begin_of(next: tokio::time::Instant) -> Instant {
    let now = tokio::time::Instant::now();
    let late = now.saturating_duration_since(next);
    if late > TIMER_SLACK {
        Instant::now() - late
    } else {
        Instant::now()
    }
}

/// HTTP/1.1 POSTs with 1 KB bodies at `rate` per second in total over
/// `conns` keep-alive connections for `secs`.
pub async fn h1_fixed(target: SocketAddr, rate: u32, conns: usize, secs: f64) -> Outcome {
    let per_conn = Duration::from_secs_f64(conns as f64 / f64::from(rate));
    let body = Bytes::from(vec![b'y'; BODY_BYTES]);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..conns {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome::default();
            let Ok(s) = connect(target).await else {
                out.errors += 1;
                return out;
            };
            let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await
            else {
                out.errors += 1;
                return out;
            };
            tokio::spawn(conn);
            let start = tokio::time::Instant::now() + per_conn.mul_f64(i as f64 / conns as f64);
            let end = start + Duration::from_secs_f64(secs);
            let mut next = start;
            while next < end {
                tokio::time::sleep_until(next).await;
                next += per_conn;
                if send.ready().await.is_err() {
                    out.errors += 1;
                    break;
                }
                let begin = begin_of(next - per_conn);
                let ok = match send.send_request(h1_request(&body)).await {
                    Ok(r) => check(r, false).await,
                    Err(_) => false,
                };
                if ok {
                    out.latencies.push(begin.elapsed().as_micros() as u64);
                } else {
                    out.errors += 1;
                }
            }
            out
        }));
    }
    gather(tasks, started).await
}

/// HTTP/1.1 as fast as possible over `conns` connections for `secs`.
pub async fn h1_max(target: SocketAddr, conns: usize, secs: f64) -> Outcome {
    let body = Bytes::from(vec![b'y'; BODY_BYTES]);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome::default();
            let Ok(s) = connect(target).await else {
                out.errors += 1;
                return out;
            };
            let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await
            else {
                out.errors += 1;
                return out;
            };
            tokio::spawn(conn);
            while Instant::now() < deadline {
                if send.ready().await.is_err() {
                    out.errors += 1;
                    break;
                }
                let begin = Instant::now();
                let ok = match send.send_request(h1_request(&body)).await {
                    Ok(r) => check(r, false).await,
                    Err(_) => false,
                };
                if ok {
                    out.latencies.push(begin.elapsed().as_micros() as u64);
                } else {
                    out.errors += 1;
                }
            }
            out
        }));
    }
    gather(tasks, started).await
}

/// HTTP/2 prior knowledge (h2c) or gRPC unary at `rate` per second over
/// `conns` multiplexed connections for `secs`; each request is its own
/// stream started on schedule.
pub async fn h2_fixed(
    target: SocketAddr,
    rate: u32,
    conns: usize,
    secs: f64,
    grpc: bool,
) -> Outcome {
    let per_conn = Duration::from_secs_f64(conns as f64 / f64::from(rate));
    let body = if grpc {
        grpc_message()
    } else {
        Bytes::from(vec![b'y'; BODY_BYTES])
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..conns {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome::default();
            let Ok(s) = connect(target).await else {
                out.errors += 1;
                return out;
            };
            let Ok((send, conn)) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s)).await
            else {
                out.errors += 1;
                return out;
            };
            tokio::spawn(conn);
            let start = tokio::time::Instant::now() + per_conn.mul_f64(i as f64 / conns as f64);
            let end = start + Duration::from_secs_f64(secs);
            let mut next = start;
            let mut streams = tokio::task::JoinSet::new();
            while next < end {
                tokio::time::sleep_until(next).await;
                let begin = begin_of(next);
                next += per_conn;
                let mut send = send.clone();
                let req = h2_request(&body, grpc);
                streams.spawn(async move {
                    let ok = match send.send_request(req).await {
                        Ok(r) => check(r, grpc).await,
                        Err(_) => false,
                    };
                    ok.then(|| begin.elapsed().as_micros() as u64)
                });
            }
            while let Some(r) = streams.join_next().await {
                match r {
                    Ok(Some(us)) => out.latencies.push(us),
                    _ => out.errors += 1,
                }
            }
            out
        }));
    }
    gather(tasks, started).await
}

async fn gather(tasks: Vec<tokio::task::JoinHandle<Outcome>>, started: Instant) -> Outcome {
    let mut all = Outcome::default();
    for t in tasks {
        match t.await {
            Ok(o) => {
                all.latencies.extend(o.latencies);
                all.errors += o.errors;
            }
            Err(_) => all.errors += 1,
        }
    }
    all.elapsed = started.elapsed();
    all.latencies.sort_unstable();
    all
}

/// Sends `total` bytes over one TCP connection, half-closes, and waits for
/// the sink's acknowledgement (so every byte went through).
pub async fn tcp_bulk(target: SocketAddr, total: u64) -> Outcome {
    let mut out = Outcome::default();
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let run = async {
        let mut s = connect(target).await?;
        let chunk = vec![b'z'; 64 * 1024];
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            s.write_all(&chunk[..n]).await?;
            left -= n as u64;
            sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        s.shutdown().await?;
        let mut ack = [0u8; 1];
        s.read_exact(&mut ack).await?;
        anyhow::ensure!(&ack == b"k", "sink answered {ack:?}");
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(120), run).await {
        Ok(Ok(())) => {
            out.bytes = total;
            out.latencies.push(started.elapsed().as_micros() as u64);
        }
        _ => out.errors += 1,
    }
    out.elapsed = started.elapsed();
    out
}
