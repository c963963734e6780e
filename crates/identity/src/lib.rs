//! Workload identity for the mesh.
//!
//! The control plane's CA issues X.509-SVIDs (`spiffe://<td>/ns/<ns>/sa/<sa>`);
//! each sidecar obtains one, renews it, and builds its rustls configurations
//! from the current [`Identity`]. Everything that needs the workload's
//! certificate watches an [`IdentityWatch`] so a renewal is picked up by new
//! handshakes without touching established connections.
#![forbid(unsafe_code)]

mod spiffe;
mod svid;
pub mod tls;
pub mod tls_fixture;
mod tokens;
pub mod verify;

pub use spiffe::{SpiffeId, SpiffeIdError};
pub use svid::{Identity, IdentityWatch, Svid, TrustBundle};
pub use tokens::{TokenError, TokenTable};
