//! Meshwork's control plane (istiod's role): it watches a directory of Istio
//! and Kubernetes YAML, keeps a versioned snapshot of configuration and
//! service registry, generates each connected proxy's xDS with `translate`,
//! pushes only what changed, and shows what every proxy has on its debug
//! port (15014).
#![forbid(unsafe_code)]

pub mod ca;
pub mod debug;
pub mod run;
pub mod snapshot;
pub mod source;
pub mod timing;
pub mod watch;

pub use snapshot::{SnapshotBuilder, SnapshotStore};
pub use source::TranslateSource;
