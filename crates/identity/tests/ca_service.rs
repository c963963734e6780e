//! The CA over real gRPC and TLS on loopback: issued certificates are
//! X.509-SVIDs (checked by parsing them), bad callers are refused with
//! clear errors, and the rotation client renews at about half the lifetime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use meshwork_identity::ca::{CaOptions, CertificateAuthority};
use meshwork_identity::client::{ClientError, ClientOptions, fetch_identity};
use meshwork_identity::csr::csr_for;
use meshwork_identity::pem::certs_to_pem;
use meshwork_identity::proto::{
    CREATE_CERTIFICATE_PATH, IstioCertificateRequest, IstioCertificateResponse,
};
use meshwork_identity::rotation::{RotationPolicy, spawn};
use meshwork_identity::service::CaService;
use meshwork_identity::transport::{client_config, connect, server_config, tls_incoming};
use meshwork_identity::{SpiffeId, TokenFile};
use rcgen::{KeyPair, SanType};
use tokio::net::TcpListener;
use x509_parser::prelude::*;

const TOKEN: &str = "tok-order";

/// A CA serving on 127.0.0.1:0 over TLS, with its files in a temp dir.
struct Served {
    addr: String,
    ca: Arc<CertificateAuthority>,
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    fn root_file(&self) -> PathBuf {
        self.dir.path().join("root-cert.pem")
    }
    fn tokens_file(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }
    fn token_file(&self, token: &str) -> PathBuf {
        let p = self.dir.path().join(format!("token-{token}"));
        std::fs::write(&p, format!("{token}\n")).unwrap();
        p
    }
    fn client(&self, token: &str, ttl: Option<Duration>) -> ClientOptions {
        ClientOptions {
            address: self.addr.clone(),
            server_name: "istiod.istio-system.svc".into(),
            root_cert: self.root_file(),
            token_file: self.token_file(token),
            id: SpiffeId::new("cluster.local", "default", "order"),
            ttl,
            timeout: Duration::from_secs(5),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(ca: CertificateAuthority, tokens: &str) -> Served {
    serve_at(ca, tokens, "127.0.0.1:0", tempfile::tempdir().unwrap()).await
}

async fn serve_at(
    ca: CertificateAuthority,
    tokens: &str,
    at: &str,
    dir: tempfile::TempDir,
) -> Served {
    std::fs::write(dir.path().join("tokens"), tokens).unwrap();
    std::fs::write(dir.path().join("root-cert.pem"), ca.roots_pem()).unwrap();
    let ca = Arc::new(ca);
    // A just-stopped server on the same address lets go of it shortly.
    let mut tries = 0;
    let listener = loop {
        match TcpListener::bind(at).await {
            Ok(l) => break l,
            Err(e) if tries < 40 => {
                tries += 1;
                eprintln!("bind {at}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("bind {at}: {e}"),
        }
    };
    let addr = listener.local_addr().unwrap().to_string();
    let (chain, key) = ca
        .issue_server_cert(
            &["istiod.istio-system.svc".into()],
            &[],
            Duration::from_secs(3600),
        )
        .unwrap();
    let tls = Arc::new(server_config(chain, key).unwrap());
    let service = CaService::new(ca.clone(), Some(TokenFile::new(dir.path().join("tokens"))));
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tls_incoming(listener, tls))
            .await
            .unwrap();
    });
    Served {
        addr,
        ca,
        dir,
        task,
    }
}

fn new_ca(ttl: Duration) -> CertificateAuthority {
    let mut opts = CaOptions::new("cluster.local");
    opts.default_ttl = ttl;
    CertificateAuthority::generate(opts).unwrap()
}

#[tokio::test]
async fn issued_certificates_are_x509_svids() {
    let served = serve(
        new_ca(Duration::from_secs(24 * 3600)),
        "tok-order default order\n",
    )
    .await;
    let identity = fetch_identity(&served.client(TOKEN, None), &[])
        .await
        .unwrap();
    assert_eq!(identity.bundle.roots, served.ca.roots());
    assert_eq!(
        identity.svid.chain.len(),
        1,
        "no intermediates with a self-signed root"
    );

    let (_, leaf) = X509Certificate::from_der(&identity.svid.chain[0]).unwrap();
    // Exactly one URI SAN, the caller's SPIFFE id, and no other SAN; the
    // subject is empty so the SAN extension is critical.
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(san.critical, "SAN must be critical with an empty subject");
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::URI(
            "spiffe://cluster.local/ns/default/sa/order"
        )]
    );
    assert_eq!(leaf.subject().iter_attributes().count(), 0);
    // CA=false.
    let bc = leaf
        .basic_constraints()
        .unwrap()
        .expect("basicConstraints present");
    assert!(!bc.value.ca);
    // digitalSignature + keyEncipherment only.
    let ku = leaf.key_usage().unwrap().expect("keyUsage present").value;
    assert!(ku.digital_signature() && ku.key_encipherment());
    assert!(!ku.key_cert_sign() && !ku.crl_sign() && !ku.non_repudiation());
    // serverAuth + clientAuth.
    let eku = leaf
        .extended_key_usage()
        .unwrap()
        .expect("EKU present")
        .value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!eku.any && !eku.code_signing);
    // 24 h by default.
    let lifetime = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert_eq!(lifetime, 24 * 3600);
    let now = SystemTime::now();
    assert!(identity.svid.not_before <= now && now < identity.svid.not_after);
    // Signed by the root.
    let (_, root) = X509Certificate::from_der(&served.ca.roots()[0]).unwrap();
    leaf.verify_signature(Some(root.public_key())).unwrap();
    assert_eq!(leaf.issuer(), root.subject());
    assert!(root.is_ca());
    // The private key belongs to the leaf.
    let key = KeyPair::try_from(identity.svid.key.secret_der()).unwrap();
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    // Two certificates get two serials.
    let again = fetch_identity(&served.client(TOKEN, None), &[])
        .await
        .unwrap();
    let (_, leaf2) = X509Certificate::from_der(&again.svid.chain[0]).unwrap();
    assert_ne!(leaf.raw_serial(), leaf2.raw_serial());
}

#[tokio::test]
async fn requested_lifetime_is_honoured_up_to_the_maximum() {
    let served = serve(
        new_ca(Duration::from_secs(24 * 3600)),
        "tok-order default order\n",
    )
    .await;
    let id = fetch_identity(&served.client(TOKEN, Some(Duration::from_secs(600))), &[])
        .await
        .unwrap();
    let life = id
        .svid
        .not_after
        .duration_since(id.svid.not_before)
        .unwrap();
    assert_eq!(life, Duration::from_secs(600));
    let err = fetch_identity(
        &served.client(TOKEN, Some(Duration::from_secs(365 * 24 * 3600))),
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(err.status().unwrap().code(), tonic::Code::InvalidArgument);
    assert!(err.to_string().contains("exceeds the maximum"), "{err}");
}

#[tokio::test]
async fn an_unknown_token_is_unauthenticated() {
    let served = serve(
        new_ca(Duration::from_secs(3600)),
        "tok-order default order\n",
    )
    .await;
    let err = fetch_identity(&served.client("tok-forged", None), &[])
        .await
        .unwrap_err();
    let status = err.status().expect("a gRPC refusal");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(status.message(), "unknown bootstrap token");
    assert!(
        err.to_string().contains("the CA refused the request"),
        "{err}"
    );
}

/// Calls CreateCertificate with a hand-made CSR and the given token.
async fn raw_request(served: &Served, csr: String, token: Option<&str>) -> tonic::Status {
    let tls = Arc::new(client_config(served.ca.roots()).unwrap());
    let channel = connect(
        &served.addr,
        "istiod.istio-system.svc",
        tls,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let mut req = tonic::Request::new(IstioCertificateRequest {
        csr,
        validity_duration: 0,
        metadata: None,
    });
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let resp: Result<tonic::Response<IstioCertificateResponse>, _> = grpc
        .unary(
            req,
            http::uri::PathAndQuery::from_static(CREATE_CERTIFICATE_PATH),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    resp.expect_err("the request must be refused")
}

#[tokio::test]
async fn a_csr_for_someone_else_is_refused() {
    let served = serve(
        new_ca(Duration::from_secs(3600)),
        "tok-order default order\n",
    )
    .await;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let other = SanType::URI(
        "spiffe://cluster.local/ns/kube-system/sa/admin"
            .try_into()
            .unwrap(),
    );
    let status = raw_request(&served, csr_for(&key, &[other]).unwrap(), Some(TOKEN)).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains("spiffe://cluster.local/ns/kube-system/sa/admin")
            && status
                .message()
                .contains("authenticated as spiffe://cluster.local/ns/default/sa/order"),
        "{}",
        status.message()
    );
    // A DNS name is not the caller's identity either.
    let dns = SanType::DnsName("payments.example.com".try_into().unwrap());
    let status = raw_request(&served, csr_for(&key, &[dns]).unwrap(), Some(TOKEN)).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("DNS SAN payments.example.com"));
    // No token at all.
    let mine = SanType::URI(
        "spiffe://cluster.local/ns/default/sa/order"
            .try_into()
            .unwrap(),
    );
    let status = raw_request(
        &served,
        csr_for(&key, std::slice::from_ref(&mine)).unwrap(),
        None,
    )
    .await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status.message().contains("authorization"));
    // A CSR whose signature does not verify (a public key the caller does
    // not hold): one byte of the signature flipped.
    let pem = csr_for(&key, &[mine]).unwrap();
    let mut der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|d: rustls::pki_types::CertificateSigningRequestDer<'static>| d.as_ref().to_vec())
        .unwrap();
    let last = der.len() - 3;
    der[last] ^= 0x55;
    let tampered = meshwork_identity::pem::to_pem("CERTIFICATE REQUEST", &der);
    let status = raw_request(&served, tampered, Some(TOKEN)).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("signature does not verify"),
        "{}",
        status.message()
    );
    // Not a CSR.
    let status = raw_request(&served, "hello".into(), Some(TOKEN)).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("invalid CSR"));
}

#[tokio::test]
async fn a_client_with_the_wrong_root_refuses_the_ca() {
    let served = serve(
        new_ca(Duration::from_secs(3600)),
        "tok-order default order\n",
    )
    .await;
    let impostor_root = served.dir.path().join("other-root.pem");
    std::fs::write(&impostor_root, new_ca(Duration::from_secs(60)).roots_pem()).unwrap();
    let mut opts = served.client(TOKEN, None);
    opts.root_cert = impostor_root;
    let err = fetch_identity(&opts, &[]).await.unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
    let text = error_chain(&err);
    eprintln!("wrong root: {text}");
    assert!(text.contains("cannot connect to the CA"), "{text}");
    assert!(
        text.contains("invalid peer certificate: UnknownIssuer"),
        "{text}"
    );
    // The wrong server name is refused too.
    let mut opts = served.client(TOKEN, None);
    opts.server_name = "evil.example.com".into();
    let err = fetch_identity(&opts, &[]).await.unwrap_err();
    let text = error_chain(&err);
    eprintln!("wrong name: {text}");
    assert!(matches!(err, ClientError::Transport(_)), "{text}");
    assert!(text.contains("not valid for name"), "{text}");
}

/// An error and its sources, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text.push_str(": ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}

async fn wait_for_serial(
    rx: &mut meshwork_identity::IdentityWatch,
    not: Option<&str>,
    within: Duration,
) -> String {
    let serial = |rx: &meshwork_identity::IdentityWatch| {
        rx.borrow().as_ref().map(|id| {
            meshwork_identity::certinfo::CertInfo::parse(&id.svid.chain[0])
                .unwrap()
                .serial
        })
    };
    tokio::time::timeout(within, async {
        loop {
            if let Some(s) = serial(rx)
                && Some(s.as_str()) != not
            {
                return s;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("no new certificate in time")
}

#[tokio::test]
async fn the_client_renews_at_about_half_the_lifetime() {
    let served = serve(new_ca(Duration::from_secs(6)), "tok-order default order\n").await;
    let (mut rx, _task) = spawn(served.client(TOKEN, None), RotationPolicy::default());
    let first = wait_for_serial(&mut rx, None, Duration::from_secs(10)).await;
    let got_first = Instant::now();
    let second = wait_for_serial(&mut rx, Some(&first), Duration::from_secs(10)).await;
    let took = got_first.elapsed();
    // Half of 6 s is 3 s (±5 % jitter, and X.509 whole seconds); the bounds
    // are generous for a loaded machine but still mean "well before expiry,
    // not at once".
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_millis(5500),
        "renewed after {took:?}, expected about 3 s"
    );
    let third = wait_for_serial(&mut rx, Some(&second), Duration::from_secs(10)).await;
    assert_ne!(third, first);
}

#[tokio::test]
async fn the_client_retries_until_its_token_is_known() {
    let served = serve(new_ca(Duration::from_secs(3600)), "other default other\n").await;
    let (mut rx, _task) = spawn(served.client(TOKEN, None), RotationPolicy::default());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        rx.borrow().is_none(),
        "an unknown token must not get a certificate"
    );
    // The mesh runtime adds the workload's token; the CA re-reads the file.
    std::fs::write(
        served.tokens_file(),
        "other default other\ntok-order default order\n",
    )
    .unwrap();
    wait_for_serial(&mut rx, None, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn several_roots_reach_the_client() {
    // Root rotation: the CA signs with its new root and still trusts the old one.
    let old = new_ca(Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("extra-roots.pem"), old.roots_pem()).unwrap();
    let ca =
        meshwork_identity::ca::files::load_or_create(dir.path(), CaOptions::new("cluster.local"))
            .unwrap();
    assert_eq!(ca.roots().len(), 2);
    assert_eq!(ca.roots()[0], old.roots()[0]);
    let served = serve(ca, "tok-order default order\n").await;
    let identity = fetch_identity(&served.client(TOKEN, None), &[])
        .await
        .unwrap();
    assert_eq!(identity.bundle.roots.len(), 2);
    assert!(identity.bundle.roots.contains(&old.roots()[0]));
    // Roots learned from the CA let the client reach it even when its root
    // file holds only an unrelated root.
    let mut opts = served.client(TOKEN, None);
    let stale = served.dir.path().join("stale-root.pem");
    std::fs::write(&stale, certs_to_pem(old.roots())).unwrap();
    opts.root_cert = stale;
    assert!(fetch_identity(&opts, &[]).await.is_err());
    fetch_identity(&opts, &identity.bundle.roots).await.unwrap();
}

#[tokio::test]
async fn the_old_certificate_keeps_serving_while_the_ca_is_away() {
    let state = tempfile::tempdir().unwrap();
    let opts = || {
        let mut o = CaOptions::new("cluster.local");
        o.default_ttl = Duration::from_secs(4);
        o
    };
    let ca = meshwork_identity::ca::files::load_or_create(state.path(), opts()).unwrap();
    let served = serve(ca, "tok-order default order\n").await;
    let (mut rx, _task) = spawn(served.client(TOKEN, None), RotationPolicy::default());
    let first = wait_for_serial(&mut rx, None, Duration::from_secs(10)).await;
    // The CA goes away past the renewal time: the client keeps the
    // certificate it has (and retries with backoff).
    let addr = served.addr.clone();
    served.task.abort();
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let kept = rx.borrow().as_ref().map(|id| {
        meshwork_identity::certinfo::CertInfo::parse(&id.svid.chain[0])
            .unwrap()
            .serial
    });
    assert_eq!(kept.as_deref(), Some(first.as_str()));
    // The CA comes back on the same address with the same root: renewed.
    let ca = meshwork_identity::ca::files::load_or_create(state.path(), opts()).unwrap();
    let _back = serve_at(
        ca,
        "tok-order default order\n",
        &addr,
        tempfile::tempdir().unwrap(),
    )
    .await;
    wait_for_serial(&mut rx, Some(&first), Duration::from_secs(15)).await;
}
