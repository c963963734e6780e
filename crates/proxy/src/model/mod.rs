//! The proxy's own configuration model, compiled from xDS resources.
//!
//! Every xDS resource is validated and compiled alone into an immutable
//! value here; a resource that does not compile is rejected (NACKed) and the
//! others still apply. The data path only ever reads these types.

pub mod cluster;
pub mod cluster_policy;
pub mod hash_policy;
pub mod listener;
pub mod matcher;
pub mod route;
pub mod route_table;

use std::time::Duration;

use envoy_types::pb::google::protobuf::Duration as PbDuration;

/// Why a resource was rejected.
pub type CompileError = String;

/// Converts a protobuf duration, rejecting negative ones.
pub fn duration(d: &PbDuration) -> Result<Duration, CompileError> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(format!("negative duration {}s {}ns", d.seconds, d.nanos));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// Converts an optional duration where zero means "disabled".
pub fn optional_duration(d: Option<&PbDuration>) -> Result<Option<Duration>, CompileError> {
    match d {
        None => Ok(None),
        Some(d) => {
            let d = duration(d)?;
            Ok((!d.is_zero()).then_some(d))
        }
    }
}
