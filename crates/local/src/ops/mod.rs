//! The operator CLI's work: `proxy-status` ([`status`]) from the control
//! plane's `/debug/syncz`, `proxy-config` ([`config`]) from a sidecar's
//! admin endpoints, and finding a running mesh and its pods ([`target`]).

pub mod config;
pub mod status;
pub mod target;
