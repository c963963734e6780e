//! Issuance throughput (a benchmark, not a test): how many CSRs the CA
//! signs per second, (1) in process (`sign_csr`: CSR parse + signature
//! check + leaf signing) and (2) end to end over gRPC + TLS on loopback
//! with one connection and several requests in flight, as sidecars renew.
//! CSRs are generated beforehand so client-side key generation is not
//! counted.
//!
//! ```sh
//! CARGO_TARGET_DIR=$HOME/.cache/meshwork-target cargo run --release -p meshwork-identity --example issuance -- 4000 8
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use meshwork_identity::SpiffeId;
use meshwork_identity::TokenFile;
use meshwork_identity::ca::{CaOptions, CertificateAuthority};
use meshwork_identity::csr::new_key_and_csr;
use meshwork_identity::proto::{
    CREATE_CERTIFICATE_PATH, IstioCertificateRequest, IstioCertificateResponse,
};
use meshwork_identity::service::CaService;
use meshwork_identity::transport::{client_config, connect, server_config, tls_incoming};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let inflight: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let id = SpiffeId::new("cluster.local", "default", "bench");
    let csrs: Vec<String> = (0..n)
        .map(|_| new_key_and_csr(&id).expect("csr").csr_pem)
        .collect();
    let ca = Arc::new(CertificateAuthority::generate(CaOptions::new("cluster.local")).unwrap());

    let t = Instant::now();
    for csr in &csrs {
        ca.sign_csr(csr, &id, None).expect("signed");
    }
    let took = t.elapsed();
    println!(
        "in process: {n} CSRs in {took:?} = {:.0} CSRs/s on one core",
        n as f64 / took.as_secs_f64()
    );

    let dir = std::env::temp_dir().join(format!("meshwork-issuance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokens"), "bench-token default bench\n").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (chain, key) = ca
        .issue_server_cert(
            &["istiod.istio-system.svc".into()],
            &[],
            Duration::from_secs(3600),
        )
        .unwrap();
    let service = CaService::new(ca.clone(), Some(TokenFile::new(dir.join("tokens"))));
    let incoming = tls_incoming(listener, Arc::new(server_config(chain, key).unwrap()));
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    let tls = Arc::new(client_config(ca.roots()).unwrap());
    let channel = connect(
        &addr,
        "istiod.istio-system.svc",
        tls,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let csrs = Arc::new(csrs);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let workers: Vec<_> = (0..inflight)
        .map(|_| {
            let (channel, csrs, next) = (channel.clone(), csrs.clone(), next.clone());
            tokio::spawn(async move {
                let mut grpc = tonic::client::Grpc::new(channel);
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(csr) = csrs.get(i) else { return };
                    let mut req = tonic::Request::new(IstioCertificateRequest {
                        csr: csr.clone(),
                        validity_duration: 0,
                        metadata: None,
                    });
                    req.metadata_mut()
                        .insert("authorization", "Bearer bench-token".parse().unwrap());
                    grpc.ready().await.unwrap();
                    let resp: tonic::Response<IstioCertificateResponse> = grpc
                        .unary(
                            req,
                            http::uri::PathAndQuery::from_static(CREATE_CERTIFICATE_PATH),
                            tonic_prost::ProstCodec::default(),
                        )
                        .await
                        .expect("issued");
                    assert_eq!(resp.get_ref().cert_chain.len(), 2);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let took = t.elapsed();
    println!(
        "gRPC+TLS, {inflight} in flight, client and server on the same 2 cores: {n} CSRs in {took:?} = {:.0} CSRs/s",
        n as f64 / took.as_secs_f64()
    );
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
