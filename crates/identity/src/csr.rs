//! The sidecar's side of issuance: a fresh ECDSA P-256 key and a CSR
//! naming the workload's SPIFFE id (as Istio's agent sends it; the CA
//! checks the name against the caller and takes only the key).

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::SpiffeId;

/// A private key and the PEM CSR for it.
pub struct KeyAndCsr {
    /// PKCS#8 private key; stays in the sidecar.
    pub key: PrivateKeyDer<'static>,
    /// PEM `CERTIFICATE REQUEST` sent to the CA.
    pub csr_pem: String,
}

/// Generates a P-256 key and a CSR whose single URI SAN is `id`.
pub fn new_key_and_csr(id: &SpiffeId) -> Result<KeyAndCsr, rcgen::Error> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    csr_for(&key, &[SanType::URI(id.to_string().try_into()?)]).map(|csr_pem| KeyAndCsr {
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        csr_pem,
    })
}

/// A PEM CSR signed by `key` asking for the given SANs (tests use it to
/// ask for someone else's identity).
pub fn csr_for(key: &KeyPair, sans: &[SanType]) -> Result<String, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans.to_vec();
    params.serialize_request(key)?.pem()
}
