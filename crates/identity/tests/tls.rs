//! Mesh mTLS configs over real sockets: SPIFFE verification, clear refusals,
//! and rotation picked up by the next handshake.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshwork_identity::tls::{
    self, CertSource, MeshTls, PeerPolicy, RootSource, client_config, server_config,
};
use meshwork_identity::tls_fixture::TestCa;
use meshwork_identity::verify::{Roots, peer_identity};
use meshwork_identity::{Identity, Svid, TrustBundle};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::{TlsAcceptor, TlsConnector};

type Outcome = (
    Result<Option<String>, String>,
    Result<Option<String>, String>,
);

/// One handshake over loopback; each side returns the peer's identity or
/// its error text.
async fn handshake(
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let srv = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        match TlsAcceptor::from(server).accept(s).await {
            Ok(mut tls) => {
                let id = peer_identity(tls.get_ref().1.peer_certificates());
                let mut buf = [0u8; 4];
                let _ = tls.read_exact(&mut buf).await;
                let _ = tls.write_all(b"pong").await;
                let _ = tls.shutdown().await;
                Ok(id)
            }
            Err(e) => Err(e.to_string()),
        }
    });
    let s = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("outbound_.8080_._.svc.default.svc.cluster.local").unwrap();
    let cli = match TlsConnector::from(client).connect(name, s).await {
        Ok(mut tls) => {
            let id = peer_identity(tls.get_ref().1.peer_certificates());
            // TLS 1.3: the server's verdict on our certificate arrives with the
            // first read.
            let ping = tls.write_all(b"ping").await;
            let mut buf = [0u8; 4];
            match (ping, tls.read_exact(&mut buf).await) {
                (Ok(()), Ok(_)) => Ok(id),
                (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    (cli, srv.await.unwrap())
}

fn mesh(identity: Arc<Identity>) -> (Arc<MeshTls>, watch::Sender<Option<Arc<Identity>>>) {
    let (tx, rx) = watch::channel(Some(identity));
    (MeshTls::new(rx), tx)
}

fn mesh_client(m: &Arc<MeshTls>) -> Arc<rustls::ClientConfig> {
    client_config(
        CertSource::Mesh(m.clone()),
        PeerPolicy::mesh(m),
        vec![
            tls::ALPN_ISTIO_PEER_EXCHANGE.to_vec(),
            tls::ALPN_ISTIO.to_vec(),
        ],
    )
    .unwrap()
}

fn mesh_server(m: &Arc<MeshTls>) -> Arc<rustls::ServerConfig> {
    server_config(
        CertSource::Mesh(m.clone()),
        Some(PeerPolicy::mesh(m)),
        true,
        vec![],
    )
    .unwrap()
}

#[tokio::test]
async fn mutual_tls_between_two_identities() {
    let ca = TestCa::new("cluster.local").unwrap();
    let (a, _ta) = mesh(ca.identity("default", "client").unwrap());
    let (b, _tb) = mesh(ca.identity("default", "server").unwrap());
    let (cli, srv) = handshake(mesh_client(&a), mesh_server(&b)).await;
    assert_eq!(
        cli.unwrap().as_deref(),
        Some("spiffe://cluster.local/ns/default/sa/server")
    );
    assert_eq!(
        srv.unwrap().as_deref(),
        Some("spiffe://cluster.local/ns/default/sa/client")
    );
}

#[tokio::test]
async fn untrusted_chain_is_refused() {
    let ours = TestCa::new("cluster.local").unwrap();
    let theirs = TestCa::new("cluster.local").unwrap();
    let (a, _ta) = mesh(theirs.identity("default", "intruder").unwrap());
    let (b, _tb) = mesh(ours.identity("default", "server").unwrap());
    // The intruder's client does not trust us either; check the server side
    // refusing the client, then a client refusing an untrusted server.
    let (_, srv) = handshake(
        client_config(
            CertSource::Mesh(a.clone()),
            PeerPolicy {
                roots: RootSource::None,
                allowed_sans: vec![],
            },
            vec![],
        )
        .unwrap(),
        mesh_server(&b),
    )
    .await;
    let err = srv.unwrap_err();
    assert!(err.contains("not trusted"), "{err}");
    let (cli, _) = handshake(mesh_client(&b), mesh_server(&a)).await;
    let err = cli.unwrap_err();
    assert!(err.contains("not trusted"), "{err}");
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let ca = TestCa::new("cluster.local").unwrap();
    let past = SystemTime::now() - Duration::from_secs(7200);
    let (chain, key) = ca
        .issue_uris(
            &["spiffe://cluster.local/ns/default/sa/old"],
            past - Duration::from_secs(3600),
            past,
        )
        .unwrap();
    let old = Arc::new(Identity {
        svid: Svid {
            id: "spiffe://cluster.local/ns/default/sa/old".parse().unwrap(),
            chain,
            key,
            not_before: past,
            not_after: past,
        },
        bundle: ca.bundle(),
    });
    let (a, _ta) = mesh(old);
    let (b, _tb) = mesh(ca.identity("default", "server").unwrap());
    let (cli, _) = handshake(mesh_client(&b), mesh_server(&a)).await;
    let err = cli.unwrap_err();
    assert!(err.contains("expired"), "{err}");
}

#[tokio::test]
async fn wrong_trust_domain_and_san_shape_are_refused() {
    let ca = TestCa::new("cluster.local").unwrap();
    let day = Duration::from_secs(86400);
    let now = SystemTime::now();
    let forged = |uris: &[&str]| {
        let (chain, key) = ca.issue_uris(uris, now - day, now + day).unwrap();
        Arc::new(Identity {
            svid: Svid {
                id: "spiffe://cluster.local/ns/x/sa/y".parse().unwrap(),
                chain,
                key,
                not_before: now - day,
                not_after: now + day,
            },
            bundle: ca.bundle(),
        })
    };
    let (b, _tb) = mesh(ca.identity("default", "client").unwrap());
    let (evil, _te) = mesh(forged(&["spiffe://evil.example/ns/default/sa/server"]));
    let (cli, _) = handshake(mesh_client(&b), mesh_server(&evil)).await;
    let err = cli.unwrap_err();
    assert!(err.contains("not in trust domain cluster.local"), "{err}");
    let (two, _t2) = mesh(forged(&[
        "spiffe://cluster.local/ns/a/sa/b",
        "spiffe://cluster.local/ns/c/sa/d",
    ]));
    let (cli, _) = handshake(mesh_client(&b), mesh_server(&two)).await;
    assert!(cli.unwrap_err().contains("exactly one URI SAN"));
}

#[tokio::test]
async fn allowed_sans_narrow_the_server() {
    let ca = TestCa::new("cluster.local").unwrap();
    let (a, _ta) = mesh(ca.identity("default", "client").unwrap());
    let (b, _tb) = mesh(ca.identity("default", "server").unwrap());
    let policy = |san: &str| PeerPolicy {
        roots: RootSource::Mesh(a.clone()),
        allowed_sans: vec![san.to_string()],
    };
    let ok = client_config(
        CertSource::Mesh(a.clone()),
        policy("spiffe://cluster.local/ns/default/sa/server"),
        vec![],
    )
    .unwrap();
    assert!(handshake(ok, mesh_server(&b)).await.0.is_ok());
    let wrong = client_config(
        CertSource::Mesh(a.clone()),
        policy("spiffe://cluster.local/ns/default/sa/other"),
        vec![],
    )
    .unwrap();
    let err = handshake(wrong, mesh_server(&b)).await.0.unwrap_err();
    assert!(err.contains("matches none of the allowed"), "{err}");
}

#[tokio::test]
async fn rotation_is_used_by_the_next_handshake() {
    let ca = TestCa::new("cluster.local").unwrap();
    let (a, _ta) = mesh(ca.identity("default", "client").unwrap());
    let (b, tb) = mesh(ca.identity("default", "server").unwrap());
    let client = mesh_client(&a);
    let server = mesh_server(&b);
    let first = b.certified_key().unwrap().cert[0].clone();
    assert!(handshake(client.clone(), server.clone()).await.0.is_ok());
    tb.send_replace(Some(ca.identity("default", "server").unwrap()));
    let second = b.certified_key().unwrap().cert[0].clone();
    assert_ne!(first, second, "the new certificate is served");
    assert!(handshake(client.clone(), server.clone()).await.0.is_ok());

    // Root rotation: a bundle with both roots trusts both generations.
    let new_ca = TestCa::new("cluster.local").unwrap();
    let both = TrustBundle {
        trust_domain: "cluster.local".into(),
        roots: vec![ca.root(), new_ca.root()],
    };
    let mut reissued = Arc::into_inner(new_ca.identity("default", "server").unwrap()).unwrap();
    reissued.bundle = both.clone();
    tb.send_replace(Some(Arc::new(reissued)));
    let (cli, _) = handshake(client.clone(), server.clone()).await;
    assert!(
        cli.unwrap_err().contains("not trusted"),
        "client has only the old root"
    );
    let mut client_both = Arc::into_inner(ca.identity("default", "client").unwrap()).unwrap();
    client_both.bundle = both;
    _ta.send_replace(Some(Arc::new(client_both)));
    assert!(handshake(client, server).await.0.is_ok());
}

#[test]
fn roots_reject_garbage() {
    let err = Roots::from_certs(&[CertificateDer::from(vec![1u8, 2, 3])]).unwrap_err();
    assert!(err.to_string().contains("root certificate"), "{err}");
    assert!(tls::pem_chain("cert", b"not pem").is_err());
    assert!(tls::pem_key("key", b"-----BEGIN NOTHING-----").is_err());
}
