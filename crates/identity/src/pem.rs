//! PEM in and out: certificates and keys in the files the CA and the
//! sidecar exchange (Istio's plug-in CA files, `root-cert.pem`, the
//! `cert_chain` strings of `CreateCertificate`).

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why PEM text could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PemError {
    /// The text holds no `CERTIFICATE` block.
    #[error("no PEM CERTIFICATE block found")]
    NoCertificate,
    /// The text holds no private key block.
    #[error("no PEM private key block found")]
    NoKey,
    /// A block is malformed.
    #[error("malformed PEM: {0}")]
    Malformed(String),
}

/// Every `CERTIFICATE` block of `text`, in order; at least one.
pub fn certs_from_pem(text: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Malformed(e.to_string()))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(certs)
}

/// The first private key block of `text` (PKCS#8, SEC1 or PKCS#1).
pub fn key_from_pem(text: &str) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => PemError::NoKey,
        e => PemError::Malformed(e.to_string()),
    })
}

/// One DER certificate as a PEM `CERTIFICATE` block.
pub fn cert_to_pem(der: &[u8]) -> String {
    to_pem("CERTIFICATE", der)
}

/// Several DER certificates as concatenated PEM blocks.
pub fn certs_to_pem(ders: &[CertificateDer<'_>]) -> String {
    ders.iter().map(|c| cert_to_pem(c)).collect()
}

/// DER bytes as a PEM block with the given label (64-column base64).
pub fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_missing_blocks() {
        let der = CertificateDer::from(vec![0x30u8, 0x03, 0x02, 0x01, 0x01]);
        let text = certs_to_pem(&[der.clone(), der.clone()]);
        assert_eq!(certs_from_pem(&text).unwrap(), vec![der.clone(), der]);
        assert_eq!(certs_from_pem("hello"), Err(PemError::NoCertificate));
        assert_eq!(key_from_pem(&text), Err(PemError::NoKey));
    }
}
