//! Typed models of every Istio kind Meshwork reads, one file per kind.
//! The spec types are generated from Istio's CRD schemas by
//! `codegen/gen.py`, so every field the schema has is here, with Istio's
//! JSON names. Types shared between kinds live with the kind that owns them
//! and are re-exported here.

pub use std::collections::BTreeMap;

pub use serde::{Deserialize, Serialize};

mod authorization_policy;
mod destination_rule;
mod gateway;
mod peer_authentication;
mod proxy_config;
mod request_authentication;
mod service_entry;
mod sidecar;
mod telemetry;
mod traffic_policy;
mod virtual_service;
mod workload_entry;
mod workload_group;

pub use authorization_policy::*;
pub use destination_rule::*;
pub use gateway::*;
pub use peer_authentication::*;
pub use proxy_config::*;
pub use request_authentication::*;
pub use service_entry::*;
pub use sidecar::*;
pub use telemetry::*;
pub use traffic_policy::*;
pub use virtual_service::*;
pub use workload_entry::*;
pub use workload_group::*;

/// A value that is either an integer or a string (Kubernetes' `IntOrString`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// An integer, e.g. a port number.
    Int(i64),
    /// A string, e.g. a port name.
    String(String),
}

impl Default for IntOrString {
    fn default() -> Self {
        IntOrString::Int(0)
    }
}

impl std::fmt::Display for IntOrString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}
