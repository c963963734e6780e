//! TLS passthrough: connections are routed by the ClientHello's SNI without
//! terminating TLS, with exact names preferred over wildcards.

mod support;

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::listener::v3::{FilterChainMatch, Listener};
use meshwork_xds::{TypeUrl, pack};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A real ClientHello for `name`, produced by rustls.
fn client_hello(name: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

/// A TCP server that reads the ClientHello's first byte and answers its name.
async fn tagged_server(tag: &'static str) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                s.read_exact(&mut first).await.unwrap();
                assert_eq!(first[0], 0x16, "the TLS record arrives untouched");
                s.write_all(tag.as_bytes()).await.unwrap();
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_sni_exact_before_wildcard() {
    let exact = tagged_server("exact").await;
    let wild = tagged_server("wildcard").await;
    let other = tagged_server("default").await;
    let mesh = Mesh::start().await;
    let port = free_port();
    let sni = |names: &[&str]| {
        Some(FilterChainMatch {
            server_names: names.iter().map(|n| n.to_string()).collect(),
            transport_protocol: "tls".into(),
            ..Default::default()
        })
    };
    let listener = Listener {
        name: "tls".into(),
        address: Some(addr(port)),
        filter_chains: vec![
            tcp_chain("wild", sni(&["*.example.com"])),
            tcp_chain("exact", sni(&["api.example.com"])),
            tcp_chain("other", None),
        ],
        ..Default::default()
    };
    let clusters = [("exact", exact), ("wild", wild), ("other", other)];
    mesh.ads.set(
        TypeUrl::Cluster,
        clusters.map(|(n, _)| (n.to_string(), pack(&eds_cluster(n, false)))),
    );
    mesh.ads.set(
        TypeUrl::Endpoint,
        clusters.map(|(n, p)| (n.to_string(), pack(&endpoints(n, &[p])))),
    );
    mesh.ads
        .set(TypeUrl::Listener, [("tls".to_string(), pack(&listener))]);
    mesh.wait_ready(port).await;

    for (name, want) in [
        ("api.example.com", "exact"),
        ("web.example.com", "wildcard"),
        ("example.org", "default"),
    ] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(&client_hello(name)).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&got), want, "SNI {name}");
    }
}
