//! Telemetry for the Meshwork sidecar proxy.
//!
//! - [`metrics`]: Istio's standard metrics (`istio_requests_total`,
//!   `istio_request_duration_milliseconds`, `istio_tcp_*` …) with Istio's
//!   exact names and labels, exposed in OpenMetrics text.
//! - [`access_log`]: one JSON line per request or TCP connection, Envoy/Istio
//!   style, written by a background thread so logging never blocks traffic.
//! - [`response_flags`]: Envoy's response flags (`UF`, `UH`, `NR` …).
//! - [`peer`]: Istio's HTTP metadata exchange (`x-envoy-peer-metadata`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access_log;
pub mod metrics;
pub mod peer;
pub mod response_flags;

pub use access_log::{AccessLogEntry, AccessLogger, LogTime};
pub use metrics::{CONTENT_TYPE, IstioMetrics, RequestLabels, TcpLabels};
pub use peer::{PEER_METADATA_HEADER, PEER_METADATA_ID_HEADER, PeerMetadata, principal};
pub use response_flags::{ResponseFlag, ResponseFlags};

/// Re-export so the proxy can build extra metrics with the same version.
pub use prometheus_client;
