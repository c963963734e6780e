//! rustls configurations for mesh mTLS, built from the workload's
//! [`Identity`] and kept current as it rotates.
//!
//! The configs are built once and never rebuilt: their certificate resolver
//! and their verifier read the *current* identity from the watch on every
//! handshake (a pointer comparison; the key is parsed once per new
//! certificate). So a renewed certificate or a changed trust bundle is used
//! by the next handshake, and established connections are left alone.
//!
//! Session resumption is off: every connection presents a certificate that
//! is checked against the bundle of the moment (a removed root stops being
//! trusted at once, not when some ticket expires).

use std::fmt;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};

use crate::verify::{PeerError, PeerRole, Roots, verify_peer};
use crate::{Identity, IdentityWatch};

/// ALPN a sidecar offers to another sidecar (Istio's metadata exchange).
pub const ALPN_ISTIO_PEER_EXCHANGE: &[u8] = b"istio-peer-exchange";
/// ALPN marking in-mesh mTLS traffic (Istio).
pub const ALPN_ISTIO: &[u8] = b"istio";
/// HTTP/2 over TLS.
pub const ALPN_H2: &[u8] = b"h2";
/// HTTP/1.1 over TLS.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The application protocols Istio's inbound mTLS filter chains match
/// (`ALPNInMeshWithMxc` plus the `istio-http/*` names its ALPN filter sets).
pub const INBOUND_MTLS_ALPNS: &[&str] = &[
    "istio-peer-exchange",
    "istio",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM/DER certificate or key could not be read.
    #[error("{what}: {detail}")]
    Pem {
        /// Which input.
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A root could not be used.
    #[error(transparent)]
    Peer(#[from] PeerError),
}

/// The process-wide crypto provider (ring).
pub fn provider() -> &'static Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
}

// === impl MeshTls ===

struct Current {
    identity: Arc<Identity>,
    key: Arc<CertifiedKey>,
    roots: Arc<Roots>,
}

/// The workload's identity as TLS material: follows an [`IdentityWatch`]
/// (Istio's SDS secrets `default` and `ROOTCA`).
pub struct MeshTls {
    watch: IdentityWatch,
    cache: ArcSwapOption<Current>,
}

impl fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshTls")
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl MeshTls {
    /// Follows `watch`; nothing is parsed until the first handshake.
    pub fn new(watch: IdentityWatch) -> Arc<Self> {
        Arc::new(MeshTls {
            watch,
            cache: ArcSwapOption::empty(),
        })
    }

    /// Whether a certificate has been issued.
    pub fn is_ready(&self) -> bool {
        self.watch.borrow().is_some()
    }

    fn current(&self) -> Option<Arc<Current>> {
        let identity = self.watch.borrow().clone()?;
        let cached = self.cache.load_full();
        if let Some(c) = &cached
            && Arc::ptr_eq(&c.identity, &identity)
        {
            return cached;
        }
        match build_current(identity) {
            Ok(c) => {
                let c = Arc::new(c);
                self.cache.store(Some(c.clone()));
                Some(c)
            }
            Err(e) => {
                tracing::warn!(error = %e, "workload certificate cannot be used; keeping the previous one");
                cached
            }
        }
    }

    /// The current certificate and key, ready for rustls.
    pub fn certified_key(&self) -> Option<Arc<CertifiedKey>> {
        self.current().map(|c| c.key.clone())
    }

    /// The current trust anchors.
    pub fn roots(&self) -> Option<Arc<Roots>> {
        self.current().map(|c| c.roots.clone())
    }

    /// The current SPIFFE id.
    pub fn id(&self) -> Option<String> {
        self.watch.borrow().as_ref().map(|i| i.svid.id.to_string())
    }
}

fn build_current(identity: Arc<Identity>) -> Result<Current, TlsError> {
    let key = certified_key(identity.svid.chain.clone(), identity.svid.key.clone_key())?;
    let roots = Arc::new(Roots::from_bundle(&identity.bundle)?);
    Ok(Current {
        identity,
        key,
        roots,
    })
}

/// A certificate chain and its key, as rustls signs with them.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(TlsError::Rustls)?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// Reads a PEM certificate chain.
pub fn pem_chain(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: what.into(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: what.into(),
            detail: "no PEM certificate found".into(),
        });
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, SEC1 or PKCS#1).
pub fn pem_key(what: &str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        what: what.into(),
        detail: e.to_string(),
    })
}

// === sources ===

/// Where our own certificate comes from.
#[derive(Clone, Debug)]
pub enum CertSource {
    /// The workload's SVID (SDS `default`).
    Mesh(Arc<MeshTls>),
    /// A fixed certificate (files or inline, DestinationRule MUTUAL).
    Static(Arc<CertifiedKey>),
    /// None: a client that presents no certificate.
    None,
}

impl CertSource {
    fn get(&self) -> Option<Arc<CertifiedKey>> {
        match self {
            CertSource::Mesh(m) => m.certified_key(),
            CertSource::Static(k) => Some(k.clone()),
            CertSource::None => None,
        }
    }
}

/// Which roots a peer's chain must lead to.
#[derive(Clone, Debug)]
pub enum RootSource {
    /// The workload's trust bundle (SDS `ROOTCA`); peers must be SVIDs in
    /// our trust domain.
    Mesh(Arc<MeshTls>),
    /// Fixed roots (DestinationRule `caCertificates`).
    Static(Arc<Roots>),
    /// No validation context: any certificate is accepted (Envoy's
    /// behaviour without `validation_context`).
    None,
}

/// How a peer is checked.
#[derive(Clone, Debug)]
pub struct PeerPolicy {
    /// Its roots.
    pub roots: RootSource,
    /// Subject alt names (URI or DNS) of which the peer must carry one;
    /// empty: any.
    pub allowed_sans: Vec<String>,
}

impl PeerPolicy {
    /// Mesh peers: the workload's bundle, any identity in our trust domain.
    pub fn mesh(mesh: &Arc<MeshTls>) -> Self {
        PeerPolicy {
            roots: RootSource::Mesh(mesh.clone()),
            allowed_sans: Vec::new(),
        }
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        role: PeerRole,
    ) -> Result<(), PeerError> {
        let (roots, spiffe) = match &self.roots {
            RootSource::Mesh(m) => (m.roots().ok_or(PeerError::NoRoots)?, true),
            RootSource::Static(r) => (r.clone(), false),
            RootSource::None => return Ok(()),
        };
        verify_peer(
            &roots,
            spiffe,
            &self.allowed_sans,
            end_entity,
            intermediates,
            now,
            role,
        )
        .map(|_| ())
    }
}

// === rustls traits ===

#[derive(Debug)]
struct Resolver(CertSource);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.get()
    }
}

impl rustls::client::ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.get()
    }

    fn has_certs(&self) -> bool {
        !matches!(self.0, CertSource::None)
    }
}

#[derive(Debug)]
struct Verifier {
    policy: PeerPolicy,
    mandatory: bool,
}

impl Verifier {
    fn schemes() -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.policy
            .check(end_entity, intermediates, now, PeerRole::Server)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

impl ClientCertVerifier for Verifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.policy
            .check(end_entity, intermediates, now, PeerRole::Client)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls12_signature(self, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls13_signature(self, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

// === builders ===

/// A client config: presents `cert` (if any), checks the server by `peer`,
/// offers `alpn`.
pub fn client_config(
    cert: CertSource,
    peer: PeerPolicy,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider().clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier {
            policy: peer,
            mandatory: true,
        }))
        .with_client_cert_resolver(Arc::new(Resolver(cert)));
    config.alpn_protocols = alpn;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// A server config: presents `cert`, asks for a client certificate checked
/// by `peer` (required when `require_client_cert`), selects from `alpn`.
pub fn server_config(
    cert: CertSource,
    peer: Option<PeerPolicy>,
    require_client_cert: bool,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider().clone())
        .with_safe_default_protocol_versions()?;
    let builder = match peer {
        Some(policy) => builder.with_client_cert_verifier(Arc::new(Verifier {
            policy,
            mandatory: require_client_cert,
        })),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(Resolver(cert)));
    config.alpn_protocols = alpn;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The ALPN a server with `ours` (in preference order) selects when the
/// client offers `offered`: the first of ours the client offered. `None`
/// when there is no overlap: the handshake then goes on without ALPN, as
/// Envoy's does, instead of failing.
pub fn select_alpn<'a>(ours: &'a [Vec<u8>], offered: &[String]) -> Option<&'a [u8]> {
    ours.iter()
        .find(|p| offered.iter().any(|o| o.as_bytes() == p.as_slice()))
        .map(Vec::as_slice)
}
