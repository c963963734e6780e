//! TLS termination on a filter chain (`DownstreamTlsContext`): Istio's
//! inbound mTLS chains and gateways' TLS.
//!
//! The ClientHello is read first (rustls's `Acceptor`) so the server can
//! pick the ALPN protocol itself: the first of its own the client offered,
//! or none. rustls alone would fail a handshake without a common protocol;
//! Envoy goes on without ALPN, and Istio's clients rely on that (they offer
//! `istio-peer-exchange, istio` to chains that list `h2, http/1.1`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use meshwork_identity::tls::{
    CertSource, MeshTls, PeerPolicy, RootSource, select_alpn, server_config,
};
use meshwork_identity::verify::peer_identity;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;

use super::spec::DownstreamTlsSpec;
use super::stream::Downstream;

/// A chain's TLS context, with its rustls configs built on first use.
#[derive(Debug)]
pub struct ChainTls {
    /// What xDS said.
    pub spec: Arc<DownstreamTlsSpec>,
    built: OnceLock<Result<Arc<ServerTls>, String>>,
}

/// The outcome of a successful handshake.
#[derive(Debug)]
pub struct Accepted {
    /// The decrypted stream.
    pub stream: Downstream,
    /// The verified client identity (SPIFFE id), if it sent a certificate.
    pub peer: Option<Arc<str>>,
    /// The negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// The SNI the client asked for.
    pub sni: Option<String>,
}

#[derive(Debug)]
struct ServerTls {
    cert: CertSource,
    peer: Option<PeerPolicy>,
    require: bool,
    alpn: Vec<Vec<u8>>,
    /// One config per ALPN choice (they share resolver and verifier).
    configs: Mutex<HashMap<Option<Vec<u8>>, Arc<ServerConfig>>>,
}

impl ServerTls {
    fn config(&self, alpn: Option<&[u8]>) -> Result<Arc<ServerConfig>, String> {
        let key = alpn.map(<[u8]>::to_vec);
        let mut configs = self.configs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = configs.get(&key) {
            return Ok(c.clone());
        }
        let c = server_config(
            self.cert.clone(),
            self.peer.clone(),
            self.require,
            key.iter().cloned().collect(),
        )
        .map_err(|e| e.to_string())?;
        configs.insert(key, c.clone());
        Ok(c)
    }
}

impl ChainTls {
    /// Wraps a compiled context; nothing is built yet.
    pub fn new(spec: Arc<DownstreamTlsSpec>) -> Self {
        ChainTls {
            spec,
            built: OnceLock::new(),
        }
    }

    fn built(&self, mesh: Option<&Arc<MeshTls>>) -> Result<Arc<ServerTls>, String> {
        self.built
            .get_or_init(|| {
                let (cert, policy) = super::sources(&self.spec.common, mesh)?;
                // Without a validation context Envoy asks for no client certificate.
                let peer = match (&policy.roots, self.spec.require_client_certificate) {
                    (RootSource::None, false) => None,
                    _ => Some(policy),
                };
                Ok(Arc::new(ServerTls {
                    cert,
                    peer,
                    require: self.spec.require_client_certificate,
                    alpn: self
                        .spec
                        .common
                        .alpn
                        .iter()
                        .map(|p| p.as_bytes().to_vec())
                        .collect(),
                    configs: Mutex::default(),
                }))
            })
            .clone()
    }

    /// Performs the server handshake within `timeout`.
    pub async fn accept(
        &self,
        mesh: Option<&Arc<MeshTls>>,
        tcp: TcpStream,
        timeout: Duration,
    ) -> Result<Accepted, String> {
        let tls = self.built(mesh)?;
        if let CertSource::Mesh(m) = &tls.cert
            && !m.is_ready()
        {
            return Err("no workload certificate yet".into());
        }
        let handshake = async {
            let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp)
                .await
                .map_err(|e| format!("reading ClientHello: {e}"))?;
            let hello = start.client_hello();
            let sni = hello.server_name().map(str::to_string);
            let offered: Vec<String> = hello
                .alpn()
                .map(|it| {
                    it.map(|p| String::from_utf8_lossy(p).into_owned())
                        .collect()
                })
                .unwrap_or_default();
            let config = tls.config(select_alpn(&tls.alpn, &offered))?;
            let stream = start
                .into_stream(config)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            Ok::<_, String>((stream, sni))
        };
        let (stream, sni) = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| "TLS handshake timed out".to_string())??;
        let conn = stream.get_ref().1;
        let peer = peer_identity(conn.peer_certificates()).map(Arc::from);
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        Ok(Accepted {
            stream: Downstream::Tls {
                stream: Box::new(stream),
                prefix: Default::default(),
            },
            peer,
            alpn,
            sni,
        })
    }
}
