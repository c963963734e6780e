//! What a certificate says, read with x509-parser: serial, SANs, validity,
//! CA flag and fingerprint. The sidecar's `/certs` admin page, the trust
//! bundle refresh (which of the CA's answers are roots) and the tests use it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// A certificate that x509-parser cannot read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a valid X.509 certificate: {0}")]
pub struct CertParseError(pub String);

/// The facts of one certificate the mesh cares about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// URI SANs (a workload SVID has exactly one, its SPIFFE id).
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// Subject, RFC 4514 style.
    pub subject: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// basicConstraints CA=true.
    pub is_ca: bool,
    /// Subject equals issuer and the certificate is a CA: a root.
    pub self_signed: bool,
    /// SHA-256 of the DER, lowercase hex (as Envoy and `openssl x509 -fingerprint -sha256` show it, without colons).
    pub sha256: String,
}

impl CertInfo {
    /// Reads a DER certificate.
    pub fn parse(der: &[u8]) -> Result<CertInfo, CertParseError> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| CertParseError(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CertParseError(
                "trailing bytes after the certificate".into(),
            ));
        }
        let mut uris = Vec::new();
        let mut dns_names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => uris.push(u.to_string()),
                    GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                    _ => {}
                }
            }
        }
        let time = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
        let is_ca = cert.is_ca();
        Ok(CertInfo {
            serial: hex(cert.tbs_certificate.raw_serial()),
            uris,
            dns_names,
            subject: cert.subject().to_string(),
            not_before: time(cert.validity().not_before.timestamp()),
            not_after: time(cert.validity().not_after.timestamp()),
            is_ca,
            self_signed: is_ca && cert.subject().as_raw() == cert.issuer().as_raw(),
            sha256: sha256_hex(der),
        })
    }
}

/// SHA-256 of `bytes` in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error() {
        assert!(CertInfo::parse(b"not a certificate").is_err());
        assert_eq!(sha256_hex(b"").len(), 64);
    }
}
