//! Workload identity for the mesh.
//!
//! The control plane's CA issues X.509-SVIDs (`spiffe://<td>/ns/<ns>/sa/<sa>`);
//! each sidecar obtains one, renews it, and builds its rustls configurations
//! from the current [`Identity`]. Everything that needs the workload's
//! certificate watches an [`IdentityWatch`] so a renewal is picked up by new
//! handshakes without touching established connections.
//!
//! - [`ca`]: the CA (state directory or plug-in files), CSR checks, issuance.
//! - [`service`]: `istio.v1.auth.IstioCertificateService` over tonic.
//! - [`client`] and [`rotation`]: the sidecar's certificate client.
//! - [`transport`]: TLS for the CA's gRPC.
#![forbid(unsafe_code)]

pub mod ca;
pub mod certinfo;
pub mod client;
pub mod csr;
pub mod pem;
pub mod proto;
pub mod rotation;
pub mod service;
mod spiffe;
mod svid;
pub mod tls;
pub mod tls_fixture;
mod tokens;
pub mod transport;
pub mod verify;

pub use spiffe::{SpiffeId, SpiffeIdError};
pub use svid::{Identity, IdentityWatch, Svid, TrustBundle};
pub use tokens::{TokenError, TokenFile, TokenTable};
