//! Full mTLS handshakes (ECDSA P-256 SVIDs, TLS 1.3, no resumption) between
//! two mesh identities, both sides in memory on one core: the CPU cost of
//! one sidecar-to-sidecar connection setup, without sockets.
//!
//! `cargo bench -p meshwork-identity --bench handshake`; handshakes per
//! second per core = 1 / (reported time) for both sides together.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use meshwork_identity::tls::{
    ALPN_ISTIO, ALPN_ISTIO_PEER_EXCHANGE, CertSource, MeshTls, PeerPolicy, client_config,
    server_config,
};
use meshwork_identity::tls_fixture::TestCa;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection};

fn transfer(from: &mut dyn FnMut(&mut Vec<u8>), to: &mut dyn FnMut(&[u8])) -> bool {
    let mut buf = Vec::new();
    from(&mut buf);
    if buf.is_empty() {
        return false;
    }
    to(&buf);
    true
}

fn handshake(client: &Arc<rustls::ClientConfig>, server: &Arc<rustls::ServerConfig>) {
    let name = ServerName::try_from("outbound_.8080_._.server.default.svc.cluster.local").unwrap();
    let mut c = ClientConnection::new(client.clone(), name).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    loop {
        let a = transfer(
            &mut |b| {
                while c.wants_write() {
                    c.write_tls(b).unwrap();
                }
            },
            &mut |b| {
                s.read_tls(&mut &b[..]).unwrap();
                s.process_new_packets().unwrap();
            },
        );
        let b = transfer(
            &mut |b| {
                while s.wants_write() {
                    s.write_tls(b).unwrap();
                }
            },
            &mut |b| {
                c.read_tls(&mut &b[..]).unwrap();
                c.process_new_packets().unwrap();
            },
        );
        if !a && !b && !c.is_handshaking() && !s.is_handshaking() {
            break;
        }
    }
    assert!(
        s.peer_certificates().is_some(),
        "the client was authenticated"
    );
}

fn bench(cr: &mut Criterion) {
    let ca = TestCa::new("cluster.local").unwrap();
    let watch = |sa: &str| tokio::sync::watch::channel(Some(ca.identity("default", sa).unwrap())).1;
    let a = MeshTls::new(watch("client"));
    let b = MeshTls::new(watch("server"));
    let client = client_config(
        CertSource::Mesh(a.clone()),
        PeerPolicy::mesh(&a),
        vec![ALPN_ISTIO_PEER_EXCHANGE.to_vec(), ALPN_ISTIO.to_vec()],
    )
    .unwrap();
    let server = server_config(
        CertSource::Mesh(b.clone()),
        Some(PeerPolicy::mesh(&b)),
        true,
        vec![],
    )
    .unwrap();
    cr.bench_function("full mTLS handshake (both sides, one core)", |bch| {
        bch.iter(|| handshake(&client, &server))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
