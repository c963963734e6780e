//! Where the CA's keys come from: a state directory that keeps a generated
//! root across restarts, and an operator's plug-in CA (Istio's four files,
//! generated here) with an intermediate and several roots.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use meshwork_identity::SpiffeId;
use meshwork_identity::ca::files::{load_or_create, load_plugin, write_roots};
use meshwork_identity::ca::{CaOptions, generate_root};
use meshwork_identity::client::split_chain;
use meshwork_identity::csr::new_key_and_csr;
use meshwork_identity::pem::{cert_to_pem, certs_from_pem, certs_to_pem, to_pem};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::*;

fn opts() -> CaOptions {
    CaOptions::new("cluster.local")
}

#[test]
fn the_state_directory_keeps_the_root_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let first = load_or_create(&state, opts()).unwrap();
    let mode = std::fs::metadata(state.join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the CA key must be private");
    let root_file = write_roots(&first, &state).unwrap();
    let again = load_or_create(&state, opts()).unwrap();
    assert_eq!(first.roots(), again.roots());
    assert_eq!(
        certs_from_pem(&std::fs::read_to_string(root_file).unwrap()).unwrap(),
        again.roots()
    );
    // Half a CA is refused with a clear message rather than replaced.
    std::fs::remove_file(state.join("ca-cert.pem")).unwrap();
    let err = load_or_create(&state, opts()).unwrap_err().to_string();
    assert!(
        err.contains("has only one of ca-key.pem and ca-cert.pem"),
        "{err}"
    );
}

/// Writes an operator's plug-in CA: root → intermediate (the signing CA),
/// plus an unrelated second root in root-cert.pem (a rotation in progress).
fn plugin(
    dir: &Path,
) -> (
    CertificateDer<'static>,
    CertificateDer<'static>,
    CertificateDer<'static>,
) {
    let (root_key, root) = generate_root("cluster.local").unwrap();
    let (_, other_root) = generate_root("cluster.local").unwrap();
    let inter_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "operator intermediate");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = Issuer::from_ca_cert_der(&root, root_key).unwrap();
    let inter = params.signed_by(&inter_key, &issuer).unwrap().der().clone();
    std::fs::write(dir.join("ca-cert.pem"), cert_to_pem(&inter)).unwrap();
    std::fs::write(dir.join("ca-key.pem"), inter_key.serialize_pem()).unwrap();
    std::fs::write(
        dir.join("root-cert.pem"),
        certs_to_pem(&[root.clone(), other_root.clone()]),
    )
    .unwrap();
    std::fs::write(
        dir.join("cert-chain.pem"),
        certs_to_pem(&[inter.clone(), root.clone()]),
    )
    .unwrap();
    (root, other_root, inter)
}

#[test]
fn a_plugin_ca_issues_chains_through_its_intermediate() {
    let dir = tempfile::tempdir().unwrap();
    let (root, other_root, inter) = plugin(dir.path());
    let ca = load_plugin(dir.path(), opts()).unwrap();
    assert_eq!(ca.intermediates(), std::slice::from_ref(&inter));
    assert_eq!(
        ca.roots(),
        [other_root.clone(), root.clone()],
        "chain's root last"
    );

    let id = SpiffeId::new("cluster.local", "shop", "cart");
    let req = new_key_and_csr(&id).unwrap();
    let chain = ca
        .sign_csr(&req.csr_pem, &id, Some(Duration::from_secs(3600)))
        .unwrap();
    assert_eq!(chain.len(), 4, "leaf, intermediate, both roots");
    assert_eq!(chain[1], inter);
    assert_eq!(chain[3], root, "the last certificate is the chain's root");
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    let (_, inter_x) = X509Certificate::from_der(&inter).unwrap();
    let (_, root_x) = X509Certificate::from_der(&root).unwrap();
    leaf.verify_signature(Some(inter_x.public_key())).unwrap();
    inter_x.verify_signature(Some(root_x.public_key())).unwrap();
    assert!(leaf.verify_signature(Some(root_x.public_key())).is_err());

    // What a sidecar makes of the answer: leaf + intermediate, two roots.
    let pems: Vec<String> = chain.iter().map(|c| cert_to_pem(c)).collect();
    let (svid_chain, roots) = split_chain(&pems, &id).unwrap();
    assert_eq!(svid_chain, [chain[0].clone(), inter]);
    assert_eq!(roots, [other_root, root]);
    // An answer for someone else is not accepted by the sidecar.
    let err = split_chain(&pems, &SpiffeId::new("cluster.local", "shop", "other"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected exactly [spiffe://cluster.local/ns/shop/sa/other]"),
        "{err}"
    );
}

#[test]
fn a_broken_plugin_ca_is_refused_with_a_reason() {
    // The key does not belong to the certificate.
    let dir = tempfile::tempdir().unwrap();
    plugin(dir.path());
    let stranger = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(dir.path().join("ca-key.pem"), stranger.serialize_pem()).unwrap();
    let err = load_plugin(dir.path(), opts()).unwrap_err().to_string();
    assert!(err.contains("does not belong to the private key"), "{err}");

    // The chain leads to no root in root-cert.pem.
    let dir = tempfile::tempdir().unwrap();
    plugin(dir.path());
    let (_, unrelated) = generate_root("cluster.local").unwrap();
    std::fs::write(dir.path().join("root-cert.pem"), cert_to_pem(&unrelated)).unwrap();
    let err = load_plugin(dir.path(), opts()).unwrap_err().to_string();
    assert!(err.contains("does not lead to any root"), "{err}");

    // A key that is not PKCS#8.
    let dir = tempfile::tempdir().unwrap();
    plugin(dir.path());
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(
        dir.path().join("ca-key.pem"),
        to_pem("EC PRIVATE KEY", &key.serialize_der()),
    )
    .unwrap();
    let err = load_plugin(dir.path(), opts()).unwrap_err().to_string();
    assert!(err.contains("must be PKCS#8"), "{err}");

    // A missing file is named.
    let dir = tempfile::tempdir().unwrap();
    let err = load_plugin(dir.path(), opts()).unwrap_err().to_string();
    assert!(err.contains("ca-key.pem"), "{err}");

    // A signing certificate that is not a CA.
    let dir = tempfile::tempdir().unwrap();
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = CertificateParams::new(vec!["x.example".to_string()])
        .unwrap()
        .self_signed(&leaf_key)
        .unwrap();
    std::fs::write(dir.path().join("ca-cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.path().join("ca-key.pem"), leaf_key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("root-cert.pem"), leaf.pem()).unwrap();
    let err = load_plugin(dir.path(), opts()).unwrap_err().to_string();
    assert!(err.contains("not a CA"), "{err}");
}
