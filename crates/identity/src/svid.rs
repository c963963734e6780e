//! The workload's current certificate and the roots it trusts.

use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::SpiffeId;

/// An X.509-SVID: leaf first, then any intermediates, with its private key.
#[derive(Debug)]
pub struct Svid {
    /// The SPIFFE id in the leaf's single URI SAN.
    pub id: SpiffeId,
    /// Leaf certificate followed by intermediates (not the root).
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key (PKCS#8).
    pub key: PrivateKeyDer<'static>,
    /// When the leaf stops being valid; renewal is planned from it.
    pub not_before: SystemTime,
    /// End of the leaf's validity.
    pub not_after: SystemTime,
}

/// The roots a workload trusts. Several roots are allowed so that a root can
/// be rotated (add the new one, reissue, remove the old one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustBundle {
    /// Trust domain the roots speak for.
    pub trust_domain: String,
    /// DER-encoded root certificates.
    pub roots: Vec<CertificateDer<'static>>,
}

/// What a sidecar needs for mTLS: its own SVID and the roots it trusts.
#[derive(Debug)]
pub struct Identity {
    /// The workload's certificate and key.
    pub svid: Svid,
    /// Roots that peers' chains must lead to.
    pub bundle: TrustBundle,
}

/// Watched by everything that builds TLS configs; `None` until the first
/// certificate has been obtained (the proxy is not ready before that).
pub type IdentityWatch = tokio::sync::watch::Receiver<Option<Arc<Identity>>>;
