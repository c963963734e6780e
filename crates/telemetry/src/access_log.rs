//! JSON access log, one line per request or TCP connection, with Istio's
//! default JSON keys. [`AccessLogger::log`] never blocks: entries go through
//! a bounded channel to a writer thread that serializes, writes and flushes
//! in batches; when the channel is full the entry is dropped and counted.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use crate::response_flags::ResponseFlags;

/// Entries that may wait for the writer before new ones are dropped.
pub const DEFAULT_CAPACITY: usize = 1024;
/// Entries written between two flushes of the writer, at most.
const BATCH: usize = 256;
/// How long [`AccessLogger::flush`] waits at most.
const FLUSH_BOUND: Duration = Duration::from_secs(1);

/// A point in time that serializes as RFC 3339 UTC with milliseconds
/// (`2024-05-01T12:34:56.789Z`). Formatting happens on the writer thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogTime(pub SystemTime);

impl Default for LogTime {
    fn default() -> Self {
        Self(UNIX_EPOCH)
    }
}

impl From<SystemTime> for LogTime {
    fn from(t: SystemTime) -> Self {
        Self(t)
    }
}

impl LogTime {
    /// The current time.
    pub fn now() -> Self {
        Self(SystemTime::now())
    }
}

impl std::fmt::Display for LogTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&rfc3339_millis(self.0))
    }
}

impl Serialize for LogTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Formats `t` as RFC 3339 UTC with milliseconds; times before 1970 clamp
/// to the epoch.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// One access-log line, with Istio's default JSON access-log keys. Absent
/// values are `None` and left out of the JSON.
#[derive(Serialize, Default, Debug, Clone)]
pub struct AccessLogEntry {
    /// When the request (or connection) started.
    pub start_time: LogTime,
    /// HTTP method; `None` for TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Request path (`x-envoy-original-path` or `:path`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `HTTP/1.1`, `HTTP/2` …; `None` for TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// HTTP status; 0 for TCP or when no response was sent.
    pub response_code: u16,
    /// Envoy response flags; `-` when none.
    pub response_flags: ResponseFlags,
    /// Why this response code (`via_upstream`, `route_not_found` …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_code_details: Option<String>,
    /// Details on why the connection was terminated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_termination_details: Option<String>,
    /// Why the upstream connection failed (e.g. TLS error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_transport_failure_reason: Option<String>,
    /// Body bytes received from downstream.
    pub bytes_received: u64,
    /// Body bytes sent to downstream.
    pub bytes_sent: u64,
    /// Total duration in milliseconds.
    pub duration: u64,
    /// Time spent in the upstream in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_service_time: Option<u64>,
    /// `x-forwarded-for` request header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x_forwarded_for: Option<String>,
    /// `user-agent` request header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// `x-request-id` request header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// `:authority` / `host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Upstream host address (`ip:port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_host: Option<String>,
    /// Upstream cluster name (`outbound|8080||order.default.svc.cluster.local`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_cluster: Option<String>,
    /// Local address of the upstream connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_local_address: Option<String>,
    /// Local address of the downstream connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downstream_local_address: Option<String>,
    /// Remote address of the downstream connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downstream_remote_address: Option<String>,
    /// SNI of the downstream TLS connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_server_name: Option<String>,
    /// The verified identity (URI SAN, a SPIFFE id) of the downstream mTLS
    /// peer (Envoy's `%DOWNSTREAM_PEER_URI_SAN%`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downstream_peer_uri_san: Option<String>,
    /// The verified identity of the upstream TLS peer
    /// (`%UPSTREAM_PEER_URI_SAN%`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_peer_uri_san: Option<String>,
    /// Name of the route that matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_name: Option<String>,
}

/// Progress shared between loggers and the writer thread.
#[derive(Debug, Default)]
struct Progress {
    /// Entries accepted into the channel.
    queued: AtomicU64,
    /// Entries dropped because the channel was full.
    dropped: AtomicU64,
    /// Entries written and flushed (or failed), guarded for the condvar.
    done: Mutex<u64>,
    done_cv: Condvar,
}

#[derive(Debug)]
struct Inner {
    tx: Option<SyncSender<AccessLogEntry>>,
    progress: Arc<Progress>,
}

/// Handle to the access log. Cheap to clone; the writer thread ends once
/// every clone is gone and the queue is drained.
#[derive(Clone, Debug)]
pub struct AccessLogger {
    inner: Arc<Inner>,
}

// === impl AccessLogger ===

impl AccessLogger {
    /// Logs to standard output.
    pub fn stdout() -> Self {
        Self::to_writer(io::stdout())
    }

    /// Logs to `w` with [`DEFAULT_CAPACITY`].
    pub fn to_writer(w: impl Write + Send + 'static) -> Self {
        Self::with_capacity(w, DEFAULT_CAPACITY)
    }

    /// Logs to `w`, queueing at most `capacity` entries (at least 1).
    pub fn with_capacity(w: impl Write + Send + 'static, capacity: usize) -> Self {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let progress = Arc::new(Progress::default());
        let p = progress.clone();
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer_loop(rx, w, &p));
        let tx = match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start access-log writer; access log disabled");
                None
            }
        };
        Self {
            inner: Arc::new(Inner { tx, progress }),
        }
    }

    /// A logger that discards everything.
    pub fn disabled() -> Self {
        Self {
            inner: Arc::new(Inner {
                tx: None,
                progress: Arc::default(),
            }),
        }
    }

    /// Whether entries are written anywhere (skip building them if not).
    pub fn is_enabled(&self) -> bool {
        self.inner.tx.is_some()
    }

    /// Queues `entry` without blocking; drops it (and counts) when full.
    pub fn log(&self, entry: AccessLogEntry) {
        let Some(tx) = &self.inner.tx else { return };
        let p = &self.inner.progress;
        match tx.try_send(entry) {
            Ok(()) => {
                p.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                p.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Entries dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.progress.dropped.load(Ordering::Relaxed)
    }

    /// Waits (at most about a second) until everything queued before this
    /// call has been written and flushed. Best effort; for shutdown and tests.
    pub fn flush(&self) {
        if self.inner.tx.is_none() {
            return;
        }
        let p = &self.inner.progress;
        let target = p.queued.load(Ordering::Relaxed);
        let done = p.done.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = p
            .done_cv
            .wait_timeout_while(done, FLUSH_BOUND, |done| *done < target);
    }
}

/// The writer thread: blocks for one entry, takes whatever else is queued
/// (up to [`BATCH`]), writes each as one line, flushes, reports progress.
fn writer_loop(rx: Receiver<AccessLogEntry>, w: impl Write, progress: &Progress) {
    let mut out = io::BufWriter::with_capacity(64 * 1024, w);
    let mut line = Vec::with_capacity(1024);
    let mut failed = false;
    while let Ok(first) = rx.recv() {
        let mut n = 0u64;
        for entry in std::iter::once(first).chain(rx.try_iter().take(BATCH - 1)) {
            n += 1;
            line.clear();
            if serde_json::to_writer(&mut line, &entry).is_err() {
                continue;
            }
            line.push(b'\n');
            report(&mut failed, out.write_all(&line));
        }
        report(&mut failed, out.flush());
        let mut done = progress.done.lock().unwrap_or_else(PoisonError::into_inner);
        *done += n;
        progress.done_cv.notify_all();
    }
}

/// Logs the first write error only, so a broken sink cannot flood logs.
fn report(failed: &mut bool, r: io::Result<()>) {
    if let Err(e) = r {
        if !*failed {
            tracing::warn!(error = %e, "access log write failed");
        }
        *failed = true;
    }
}

#[cfg(test)]
mod tests;
