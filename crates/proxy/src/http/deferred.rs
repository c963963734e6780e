//! Accounting taken off the response's critical path.
//!
//! An exchange ends when its response body's last frame is handed to
//! hyper, which writes those bytes only after that poll returns. Recording
//! the metrics and the access-log line right there would delay every
//! response by that work. Instead the finished exchange is queued on its
//! connection and recorded as soon as the connection's poll is over (the
//! response written), or when the connection ends.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use meshwork_telemetry::metrics::Label;
use meshwork_telemetry::{AccessLogEntry, RequestLabels, ResponseFlags};

use crate::ctx::ProxyCtx;

/// An exchange whose outcome is known and not yet recorded.
pub(super) struct Finished {
    pub ctx: Arc<ProxyCtx>,
    pub labels: RequestLabels,
    pub status: u16,
    pub flags: ResponseFlags,
    pub grpc_status: Option<Label>,
    pub duration: Duration,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub upstream_service_time: Option<u64>,
    pub entry: Option<Box<AccessLogEntry>>,
}

impl Finished {
    /// Records Istio's request metrics and writes the access-log line.
    pub fn emit(self) {
        let mut labels = self.labels;
        labels.response_code = status_label(self.status);
        if !self.flags.is_empty() {
            labels.response_flags = Label::intern(&self.flags.to_string());
        }
        if let Some(g) = self.grpc_status {
            labels.grpc_response_status = g;
        }
        self.ctx.metrics.record_request(
            &labels,
            self.duration,
            self.request_bytes,
            self.response_bytes,
        );
        if let Some(mut entry) = self.entry {
            entry.response_code = self.status;
            entry.response_flags = self.flags;
            entry.response_code_details = self.flags.reason().map(str::to_string);
            entry.bytes_received = self.request_bytes;
            entry.bytes_sent = self.response_bytes;
            entry.duration = self.duration.as_millis() as u64;
            entry.upstream_service_time = self.upstream_service_time;
            self.ctx.access_log.log(*entry);
        }
    }
}

/// One connection's finished exchanges waiting to be recorded.
#[derive(Default)]
pub struct Deferred(Mutex<Vec<Finished>>);

impl Deferred {
    /// A queue for one connection.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Queues an exchange for [`Deferred::flush`].
    pub(super) fn push(&self, f: Finished) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(f);
    }

    /// Records every queued exchange (call after the connection's poll).
    /// One at a time, so the queue keeps its capacity.
    pub fn flush(&self) {
        loop {
            let next = self.0.lock().unwrap_or_else(PoisonError::into_inner).pop();
            match next {
                Some(f) => f.emit(),
                None => return,
            }
        }
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        self.flush();
    }
}

/// `response_code` for a status, without formatting per request.
fn status_label(status: u16) -> Label {
    match http::StatusCode::from_u16(status) {
        Ok(s) => Label::intern(s.as_str()),
        Err(_) => Label::intern(&status.to_string()),
    }
}
