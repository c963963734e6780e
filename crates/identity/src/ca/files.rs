//! Where the CA's key and certificates come from.
//!
//! - **State directory** (`meshwork control --state-dir DIR`): on first
//!   start a self-signed P-256 root is generated and written to
//!   `DIR/ca-key.pem` (mode 0600) and `DIR/ca-cert.pem`; later starts reuse
//!   them. Extra roots to trust during a root rotation go in
//!   `DIR/extra-roots.pem` (optional).
//! - **Plug-in CA** (`--ca-dir DIR`), Istio's file names: `ca-cert.pem`
//!   (signing certificate, usually an intermediate), `ca-key.pem` (its
//!   PKCS#8 key), `root-cert.pem` (one or more trusted roots) and
//!   `cert-chain.pem` (optional: the chain from `ca-cert.pem` up to the
//!   root). The chain is checked link by link before the CA starts.
//!
//! Either way [`write_roots`] publishes the trust bundle as `root-cert.pem`
//! for local sidecars (`--ca-root-cert`).

use std::path::{Path, PathBuf};

use rcgen::KeyPair;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{CaError, CaOptions, CertificateAuthority, generate_root};
use crate::pem::{cert_to_pem, certs_from_pem, key_from_pem};

/// Signing key file name (state directory and plug-in CA).
pub const CA_KEY: &str = "ca-key.pem";
/// Signing certificate file name.
pub const CA_CERT: &str = "ca-cert.pem";
/// Trust bundle file name.
pub const ROOT_CERT: &str = "root-cert.pem";
/// Plug-in CA chain file name.
pub const CERT_CHAIN: &str = "cert-chain.pem";
/// Extra trusted roots in a state directory (root rotation).
pub const EXTRA_ROOTS: &str = "extra-roots.pem";

/// Loads the CA kept in `dir`, generating and saving a root on first use.
pub fn load_or_create(dir: &Path, opts: CaOptions) -> Result<CertificateAuthority, CaError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (key_path, cert_path) = (dir.join(CA_KEY), dir.join(CA_CERT));
    let (key, root) = match (key_path.exists(), cert_path.exists()) {
        (true, true) => {
            let key = load_key(&key_path)?;
            let root = read_certs(&cert_path)?.remove(0);
            (key, root)
        }
        (false, false) => {
            let (key, root) = generate_root(&opts.trust_domain)?;
            write_private(&key_path, &key.serialize_pem())?;
            write_atomic(&cert_path, &cert_to_pem(&root))?;
            tracing::info!(dir = %dir.display(), "generated a new root CA");
            (key, root)
        }
        _ => {
            return Err(CaError::Config(format!(
                "{} has only one of {CA_KEY} and {CA_CERT}; restore the other or remove both to generate a new root",
                dir.display()
            )));
        }
    };
    check_key_matches(&key, &root, &cert_path)?;
    let mut roots = Vec::new();
    let extra = dir.join(EXTRA_ROOTS);
    if extra.exists() {
        roots.extend(read_certs(&extra)?.into_iter().filter(|r| *r != root));
    }
    roots.push(root.clone());
    CertificateAuthority::from_parts(key, root, Vec::new(), roots, opts)
}

/// Loads an operator's plug-in CA from Istio's four files in `dir`.
pub fn load_plugin(dir: &Path, opts: CaOptions) -> Result<CertificateAuthority, CaError> {
    let cert_path = dir.join(CA_CERT);
    let key = load_key(&dir.join(CA_KEY))?;
    let signing = read_certs(&cert_path)?.remove(0);
    check_key_matches(&key, &signing, &cert_path)?;
    let roots = read_certs(&dir.join(ROOT_CERT))?;
    let chain_path = dir.join(CERT_CHAIN);
    let listed = if chain_path.exists() {
        read_certs(&chain_path)?
    } else {
        Vec::new()
    };
    // Intermediates: the signing certificate (unless it is a root itself)
    // and whatever cert-chain.pem lists above it, roots left out.
    let mut intermediates: Vec<CertificateDer<'static>> = Vec::new();
    if !roots.contains(&signing) {
        intermediates.push(signing.clone());
    }
    for c in listed {
        if c != signing && !roots.contains(&c) {
            intermediates.push(c);
        }
    }
    // Each link must be signed by the next, the last by one of the roots.
    for pair in intermediates.windows(2) {
        if !signed_by(&pair[0], &pair[1]) {
            return Err(CaError::Config(format!(
                "{}: the chain is broken: a certificate is not signed by the next one",
                chain_path.display()
            )));
        }
    }
    let top = intermediates.last().unwrap_or(&signing);
    let Some(anchor) = roots.iter().find(|r| signed_by(top, r)) else {
        return Err(CaError::Config(format!(
            "{}: the signing chain does not lead to any root in {}",
            dir.display(),
            ROOT_CERT
        )));
    };
    // The root the chain ends in goes last (clients take the last as root).
    let anchor = anchor.clone();
    let mut ordered: Vec<_> = roots.into_iter().filter(|r| *r != anchor).collect();
    ordered.push(anchor);
    CertificateAuthority::from_parts(key, signing, intermediates, ordered, opts)
}

/// Writes the CA's trust bundle to `dir/root-cert.pem` (atomically).
pub fn write_roots(ca: &CertificateAuthority, dir: &Path) -> Result<PathBuf, CaError> {
    let path = dir.join(ROOT_CERT);
    write_atomic(&path, &ca.roots_pem())?;
    Ok(path)
}

/// Whether `cert` verifies with `issuer`'s public key.
fn signed_by(cert: &CertificateDer<'_>, issuer: &CertificateDer<'_>) -> bool {
    let (Ok((_, c)), Ok((_, i))) = (
        X509Certificate::from_der(cert),
        X509Certificate::from_der(issuer),
    ) else {
        return false;
    };
    c.verify_signature(Some(i.public_key())).is_ok()
}

fn check_key_matches(key: &KeyPair, cert: &CertificateDer<'_>, path: &Path) -> Result<(), CaError> {
    let (_, parsed) = X509Certificate::from_der(cert)
        .map_err(|e| CaError::Config(format!("{}: {e}", path.display())))?;
    if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(CaError::Config(format!(
            "{}: the certificate does not belong to the private key in {CA_KEY}",
            path.display()
        )));
    }
    Ok(())
}

fn load_key(path: &Path) -> Result<KeyPair, CaError> {
    let text = read(path)?;
    let key = key_from_pem(&text).map_err(|source| CaError::Pem {
        path: path.to_path_buf(),
        source,
    })?;
    match key {
        PrivateKeyDer::Pkcs8(k) => KeyPair::try_from(k.secret_pkcs8_der())
            .map_err(|e| CaError::Config(format!("{}: unusable private key: {e}", path.display()))),
        _ => Err(CaError::Config(format!(
            "{}: the key must be PKCS#8 (`BEGIN PRIVATE KEY`); convert it with `openssl pkcs8 -topk8 -nocrypt -in {} -out {}`",
            path.display(),
            CA_KEY,
            CA_KEY
        ))),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    certs_from_pem(&read(path)?).map_err(|source| CaError::Pem {
        path: path.to_path_buf(),
        source,
    })
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(io(path))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes through a temporary file and a rename, so readers never see half a file.
fn write_atomic(path: &Path, text: &str) -> Result<(), CaError> {
    let tmp = path.with_extension("pem.tmp");
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn write_private(path: &Path, text: &str) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(text.as_bytes()).map_err(io(path))
}
