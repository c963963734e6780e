//! xDS v3 transport for Meshwork.
//!
//! The proxy subscribes to its configuration over the Aggregated Discovery
//! Service (ADS) with [`client::AdsClient`]; tests and, later, the control
//! plane serve it with [`server::AdsServer`]. Resources travel as
//! `google.protobuf.Any`; [`resource`] names their type URLs and packs and
//! unpacks them.
#![forbid(unsafe_code)]

pub mod client;
pub mod resource;
pub mod scripted;
pub mod server;

pub use envoy_types;
pub use resource::{TypeUrl, pack, unpack};
