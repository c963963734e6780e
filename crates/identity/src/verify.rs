//! Peer certificate verification for mTLS, as Istio's sidecars do it.
//!
//! A peer's chain must lead to one of the roots we trust (several roots are
//! allowed, so a root can be rotated). For mesh traffic the peer's leaf must
//! also be an X.509-SVID: exactly one URI SAN, a SPIFFE id in our trust
//! domain. An optional allow-list of subject alt names narrows who may
//! answer (DestinationRule `subjectAltNames`, Istio's per-cluster service
//! accounts). The DNS name of the server is not checked: mesh certificates
//! carry no DNS names, exactly as Envoy does with Istio's configuration.
//!
//! Chain building is rustls-webpki's (the verifier rustls itself uses); it
//! is called directly because rustls's own verifiers insist on a DNS name.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::KeyUsage;

use crate::{SpiffeId, TrustBundle};

/// Why a peer's certificate was refused. The text is what operators read in
/// logs and in `upstream_transport_failure_reason`.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// The certificate could not be parsed.
    #[error("peer certificate is malformed: {0}")]
    Malformed(String),
    /// The chain does not lead to any trusted root.
    #[error("peer certificate chain is not trusted: it does not lead to a root of {0}")]
    Untrusted(String),
    /// A certificate in the chain has expired.
    #[error("peer certificate expired (not after {not_after}s, now {now}s since the epoch)")]
    Expired {
        /// End of validity, seconds since the epoch.
        not_after: u64,
        /// Verification time, seconds since the epoch.
        now: u64,
    },
    /// A certificate in the chain is not valid yet.
    #[error("peer certificate is not valid yet (not before {not_before}s, now {now}s)")]
    NotYetValid {
        /// Start of validity, seconds since the epoch.
        not_before: u64,
        /// Verification time, seconds since the epoch.
        now: u64,
    },
    /// Another chain problem (usage, signature algorithm, constraints).
    #[error("peer certificate chain rejected: {0}")]
    Chain(String),
    /// An X.509-SVID carries exactly one URI SAN.
    #[error("peer certificate must carry exactly one URI SAN (a SPIFFE id), it has {0}")]
    UriSanCount(usize),
    /// The SPIFFE id belongs to another trust domain.
    #[error("peer identity {id} is not in trust domain {expected}")]
    WrongTrustDomain {
        /// The peer's id.
        id: String,
        /// Our trust domain.
        expected: String,
    },
    /// The peer is not one of the names this connection may reach.
    #[error("peer identity {found:?} matches none of the allowed subject alt names {allowed:?}")]
    SanNotAllowed {
        /// The peer's names.
        found: Vec<String>,
        /// The allowed names.
        allowed: Vec<String>,
    },
    /// No roots are known yet (the workload has no certificate yet).
    #[error("no trusted roots yet: the workload certificate has not been issued")]
    NoRoots,
}

impl From<PeerError> for rustls::Error {
    /// Validity errors keep rustls's own variants (the peer gets the
    /// `certificate_expired` alert, the message names both times); the
    /// others carry our text.
    fn from(e: PeerError) -> Self {
        use rustls::CertificateError as C;
        match e {
            PeerError::Expired { not_after, now } => C::ExpiredContext {
                time: UnixTime::since_unix_epoch(std::time::Duration::from_secs(now)),
                not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(not_after)),
            }
            .into(),
            PeerError::NotYetValid { not_before, now } => C::NotValidYetContext {
                time: UnixTime::since_unix_epoch(std::time::Duration::from_secs(now)),
                not_before: UnixTime::since_unix_epoch(std::time::Duration::from_secs(not_before)),
            }
            .into(),
            other => rustls::Error::Other(rustls::OtherError(Arc::new(other))),
        }
    }
}

/// A set of trust anchors, parsed once.
#[derive(Debug)]
pub struct Roots {
    /// Trust domain SPIFFE ids must belong to (`None`: not checked).
    pub trust_domain: Option<String>,
    anchors: Vec<TrustAnchor<'static>>,
}

impl Roots {
    /// Parses the roots of a trust bundle.
    pub fn from_bundle(bundle: &TrustBundle) -> Result<Self, PeerError> {
        let mut r = Roots::from_certs(&bundle.roots)?;
        if !bundle.trust_domain.is_empty() {
            r.trust_domain = Some(bundle.trust_domain.clone());
        }
        Ok(r)
    }

    /// Parses DER root certificates (no trust-domain check).
    pub fn from_certs(certs: &[CertificateDer<'_>]) -> Result<Self, PeerError> {
        let anchors = certs
            .iter()
            .map(|c| {
                webpki::anchor_from_trusted_cert(c)
                    .map(|a| a.to_owned())
                    .map_err(|e| PeerError::Malformed(format!("root certificate: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Roots {
            trust_domain: None,
            anchors,
        })
    }

    /// How many roots.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }
}

/// Which side the peer plays (decides the extended key usage checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRole {
    /// The peer is a server (we are the client).
    Server,
    /// The peer is a client (we are the server).
    Client,
}

/// Verifies a peer's chain against `roots`; for mesh peers (`spiffe`) also
/// checks the X.509-SVID shape and trust domain; then the allow-list.
/// Returns the peer's SPIFFE id (or first URI SAN) when it has one.
pub fn verify_peer(
    roots: &Roots,
    spiffe: bool,
    allowed_sans: &[String],
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    role: PeerRole,
) -> Result<Option<String>, PeerError> {
    let algs = crate::tls::provider().signature_verification_algorithms.all;
    let ee = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|e| PeerError::Malformed(e.to_string()))?;
    let usage = match role {
        PeerRole::Server => KeyUsage::server_auth(),
        PeerRole::Client => KeyUsage::client_auth(),
    };
    let domain = || {
        roots
            .trust_domain
            .clone()
            .unwrap_or_else(|| "the configured trust bundle".into())
    };
    ee.verify_for_usage(algs, &roots.anchors, intermediates, now, usage, None, None)
        .map_err(|e| match e {
            // A root with the same name but another key fails the signature check.
            webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
                PeerError::Untrusted(domain())
            }
            webpki::Error::CertExpired { time, not_after } => PeerError::Expired {
                not_after: not_after.as_secs(),
                now: time.as_secs(),
            },
            webpki::Error::CertNotValidYet { time, not_before } => PeerError::NotYetValid {
                not_before: not_before.as_secs(),
                now: time.as_secs(),
            },
            other => PeerError::Chain(format!("{other:?}")),
        })?;
    let (uris, dns) = subject_alt_names(end_entity)?;
    let id = if spiffe {
        if uris.len() != 1 {
            return Err(PeerError::UriSanCount(uris.len()));
        }
        let id = uris[0].clone();
        if let Some(td) = &roots.trust_domain {
            let parsed: Option<SpiffeId> = id.parse().ok();
            let in_domain = parsed.is_some_and(|p| &p.trust_domain == td)
                || id
                    .strip_prefix("spiffe://")
                    .and_then(|r| r.split('/').next())
                    .is_some_and(|d| d == td);
            if !in_domain {
                return Err(PeerError::WrongTrustDomain {
                    id,
                    expected: td.clone(),
                });
            }
        }
        Some(id)
    } else {
        uris.first().cloned()
    };
    if !allowed_sans.is_empty() {
        let found: Vec<String> = uris.iter().chain(dns.iter()).cloned().collect();
        if !found.iter().any(|n| allowed_sans.iter().any(|a| a == n)) {
            return Err(PeerError::SanNotAllowed {
                found,
                allowed: allowed_sans.to_vec(),
            });
        }
    }
    Ok(id)
}

/// The URI and DNS subject alt names of a certificate.
pub fn subject_alt_names(
    cert: &CertificateDer<'_>,
) -> Result<(Vec<String>, Vec<String>), PeerError> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| PeerError::Malformed(e.to_string()))?;
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    if let Some(san) = parsed
        .subject_alternative_name()
        .map_err(|e| PeerError::Malformed(e.to_string()))?
    {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uris.push(u.to_string()),
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                _ => {}
            }
        }
    }
    Ok((uris, dns))
}

/// The identity a verified peer presented: its first URI SAN (the SPIFFE
/// id for mesh peers). `None` without a certificate or URI SAN.
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Option<String> {
    let leaf = certs?.first()?;
    subject_alt_names(leaf).ok()?.0.into_iter().next()
}
