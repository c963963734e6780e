//! The certificate authority: it signs workload CSRs into X.509-SVIDs and
//! issues the control plane's own serving certificate.
//!
//! The identity written into a certificate is always the caller's, as
//! authenticated by the service ([`crate::service`]); the CSR contributes
//! only its public key, and a CSR that asks for any other name is refused.
//! The signing key and certificate come from a state directory (generated
//! on first start) or from an operator's plug-in CA files ([`files`]).

mod csr;
pub mod files;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::SpiffeId;
use crate::certinfo::CertInfo;
use crate::pem::{PemError, certs_to_pem};

/// Istio's default workload certificate lifetime.
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Istio's default upper bound on a requested workload certificate lifetime.
pub const MAX_CERT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Lifetime of a root the CA generates for itself.
const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Why the CA refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The CSR is not a well-formed, correctly signed PKCS#10 request.
    #[error("invalid CSR: {0}")]
    InvalidCsr(String),
    /// The CSR asks for a name other than the caller's own identity.
    #[error(
        "the CSR asks for {requested} but the caller authenticated as {caller}; the CA only issues the caller's own identity"
    )]
    IdentityMismatch {
        /// What the CSR asked for.
        requested: String,
        /// Who the caller is.
        caller: String,
    },
    /// The requested lifetime is over the CA's maximum.
    #[error("requested certificate lifetime {requested:?} exceeds the maximum {max:?}")]
    TtlTooLong {
        /// Requested.
        requested: Duration,
        /// Allowed.
        max: Duration,
    },
    /// A file of the CA could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A CA file holds no usable PEM.
    #[error("{path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: PemError,
    },
    /// The CA's files do not form a usable CA.
    #[error("CA configuration: {0}")]
    Config(String),
    /// Signing failed (a bug or an unsupported key).
    #[error("signing failed: {0}")]
    Sign(#[from] rcgen::Error),
}

/// Lifetimes the CA applies.
#[derive(Clone, Debug)]
pub struct CaOptions {
    /// Trust domain of issued identities (`cluster.local`).
    pub trust_domain: String,
    /// Lifetime when the request asks for none.
    pub default_ttl: Duration,
    /// Longest lifetime a request may ask for.
    pub max_ttl: Duration,
}

impl CaOptions {
    /// Istio's defaults (24 h, at most 90 days) for a trust domain.
    pub fn new(trust_domain: impl Into<String>) -> Self {
        CaOptions {
            trust_domain: trust_domain.into(),
            default_ttl: DEFAULT_CERT_TTL,
            max_ttl: MAX_CERT_TTL,
        }
    }
}

/// A signing key with its certificate, the chain up to a root, and the
/// trust bundle (every root the mesh currently trusts).
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    signing_not_after: SystemTime,
    /// Certificates between a leaf and the root: the signing certificate
    /// first when it is not itself a root.
    intermediates: Vec<CertificateDer<'static>>,
    /// Trusted roots; the root the signing chain ends in is last.
    roots: Vec<CertificateDer<'static>>,
    opts: CaOptions,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.opts.trust_domain)
            .field("intermediates", &self.intermediates.len())
            .field("roots", &self.roots.len())
            .finish()
    }
}

impl CertificateAuthority {
    /// A CA with a freshly generated self-signed ECDSA P-256 root (kept
    /// only in memory; [`files::load_or_create`] persists one).
    pub fn generate(opts: CaOptions) -> Result<Self, CaError> {
        let (key, root) = generate_root(&opts.trust_domain)?;
        Self::from_parts(key, root.clone(), Vec::new(), vec![root], opts)
    }

    /// Assembles a CA from a signing key and certificate, the intermediates
    /// (signing certificate first when it is not a root) and the roots
    /// (the one the chain ends in last).
    pub fn from_parts(
        key: KeyPair,
        signing_cert: CertificateDer<'static>,
        intermediates: Vec<CertificateDer<'static>>,
        roots: Vec<CertificateDer<'static>>,
        opts: CaOptions,
    ) -> Result<Self, CaError> {
        let info = CertInfo::parse(&signing_cert).map_err(|e| CaError::Config(e.to_string()))?;
        if !info.is_ca {
            return Err(CaError::Config(
                "the signing certificate is not a CA (basicConstraints CA=true is missing)".into(),
            ));
        }
        if roots.is_empty() {
            return Err(CaError::Config("no root certificate".into()));
        }
        let issuer = Issuer::from_ca_cert_der(&signing_cert, key)?;
        Ok(CertificateAuthority {
            issuer,
            signing_not_after: info.not_after,
            intermediates,
            roots,
            opts,
        })
    }

    /// The trust domain identities are issued in.
    pub fn trust_domain(&self) -> &str {
        &self.opts.trust_domain
    }

    /// Every trusted root (the trust bundle), the signing chain's root last.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The trust bundle as PEM (what `root-cert.pem` holds).
    pub fn roots_pem(&self) -> String {
        certs_to_pem(&self.roots)
    }

    /// Certificates between an issued leaf and its root.
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.intermediates
    }

    /// Signs a workload's CSR (PEM) for the authenticated `caller`. Returns
    /// the `cert_chain` of `CreateCertificate`: the leaf, the
    /// intermediates, then every trusted root (the signing root last).
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        caller: &SpiffeId,
        ttl: Option<Duration>,
    ) -> Result<Vec<CertificateDer<'static>>, CaError> {
        let public_key = csr::check(csr_pem, caller)?;
        let ttl = match ttl {
            None => self.opts.default_ttl,
            Some(t) if t.is_zero() => self.opts.default_ttl,
            Some(t) if t > self.opts.max_ttl => {
                return Err(CaError::TtlTooLong {
                    requested: t,
                    max: self.opts.max_ttl,
                });
            }
            Some(t) => t,
        };
        let mut params = self.leaf_params(ttl)?;
        params.subject_alt_names = vec![SanType::URI(caller.to_string().try_into()?)];
        let leaf = params.signed_by(&public_key, &self.issuer)?;
        let mut chain = vec![leaf.der().clone()];
        chain.extend(self.intermediates.iter().cloned());
        chain.extend(self.roots.iter().cloned());
        Ok(chain)
    }

    /// Issues a serving certificate (new P-256 key) for DNS names and IPs,
    /// as istiod's own certificate for `istiod.istio-system.svc`. Returns
    /// the chain (leaf and intermediates, no root) and the key.
    pub fn issue_server_cert(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        ttl: Duration,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = self.leaf_params(ttl)?;
        for d in dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(d.clone().try_into()?));
        }
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        let leaf = params.signed_by(&key, &self.issuer)?;
        let mut chain = vec![leaf.der().clone()];
        chain.extend(self.intermediates.iter().cloned());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((chain, key))
    }

    /// X.509-SVID shape: empty subject (so the SAN is critical), CA=false,
    /// digitalSignature + keyEncipherment, serverAuth + clientAuth, a
    /// random serial, validity from now for `ttl` (never past the signer's).
    fn leaf_params(&self, ttl: Duration) -> Result<CertificateParams, CaError> {
        let now = SystemTime::now();
        let not_after = (now + ttl).min(self.signing_not_after);
        if not_after <= now {
            return Err(CaError::Config(
                "the signing certificate has expired; rotate the CA".into(),
            ));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = now.into();
        params.not_after = not_after.into();
        Ok(params)
    }
}

/// A self-signed ECDSA P-256 root for a trust domain (O=<trust domain>, as
/// Istio's self-signed CA names it, and a random CN tag), valid ten years.
pub fn generate_root(trust_domain: &str) -> Result<(KeyPair, CertificateDer<'static>), CaError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    // A distinct name per root: during a rotation old and new roots are
    // told apart, and a chain from a foreign root reads "unknown issuer".
    let tag: [u8; 4] = rand::random();
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    dn.push(DnType::CommonName, format!("Meshwork root CA {tag}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(60)).into();
    params.not_after = (now + ROOT_TTL).into();
    let cert = params.self_signed(&key)?;
    Ok((key, cert.der().clone()))
}

/// 16 random bytes, top bit clear (a positive INTEGER).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}
