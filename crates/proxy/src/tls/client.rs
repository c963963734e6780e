//! Upstream TLS for clusters: Istio's ISTIO_MUTUAL (SDS `default` +
//! `ROOTCA`), DestinationRule SIMPLE and MUTUAL, and auto mTLS through
//! `transport_socket_matches` (each endpoint gets TLS or plaintext from its
//! `tlsMode` metadata).
//!
//! Each transport socket of a cluster gets pools of its own, so a TLS
//! connection and a plaintext one to the same address never mix.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use meshwork_identity::tls::{ALPN_H2, MeshTls, client_config};
use meshwork_identity::verify::peer_identity;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::PeerPrincipal;
use super::spec::{TransportModel, UpstreamTlsSpec};
use crate::balance::Endpoint;
use crate::upstream::{ClusterPools, UpstreamError};

// === impl UpstreamTls ===

/// One upstream TLS context, ready to connect.
#[derive(Debug)]
pub struct UpstreamTls {
    /// For HTTP/1.1 and TCP: the configured ALPN without `h2`.
    plain: Arc<ClientConfig>,
    /// For HTTP/2: the configured ALPN with `h2`.
    h2: Arc<ClientConfig>,
    sni: Option<ServerName<'static>>,
    mesh: Option<Arc<MeshTls>>,
}

fn connector(base: &Arc<ClientConfig>, alpn: Vec<Vec<u8>>, sni: bool) -> Arc<ClientConfig> {
    let mut c = (**base).clone();
    c.alpn_protocols = alpn;
    c.enable_sni = sni;
    Arc::new(c)
}

impl UpstreamTls {
    /// Builds the client side of `spec`; SDS secrets resolve to `mesh`.
    pub fn build(spec: &UpstreamTlsSpec, mesh: Option<&Arc<MeshTls>>) -> Result<Self, String> {
        let (cert, peer) = super::sources(&spec.common, mesh)?;
        let base = client_config(cert, peer, Vec::new()).map_err(|e| e.to_string())?;
        let alpn: Vec<Vec<u8>> = spec
            .common
            .alpn
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        let without_h2: Vec<Vec<u8>> = alpn.iter().filter(|p| p != &ALPN_H2).cloned().collect();
        let mut with_h2 = alpn.clone();
        if !with_h2.iter().any(|p| p == ALPN_H2) {
            with_h2.push(ALPN_H2.to_vec());
        }
        let sni = spec
            .sni
            .as_ref()
            .map(|s| {
                ServerName::try_from(s.clone()).map_err(|e| format!("sni {s:?} is not a name: {e}"))
            })
            .transpose()?;
        let uses_mesh = spec.uses_workload_identity();
        Ok(UpstreamTls {
            plain: connector(&base, without_h2, sni.is_some()),
            h2: connector(&base, with_h2, sni.is_some()),
            sni,
            mesh: if uses_mesh { mesh.cloned() } else { None },
        })
    }

    /// The client handshake over `io` to `endpoint`. Returns the stream and
    /// the server's verified identity.
    pub async fn handshake<IO>(
        &self,
        io: IO,
        endpoint: SocketAddr,
        h2: bool,
        timeout: Duration,
    ) -> Result<(tokio_rustls::client::TlsStream<IO>, Option<PeerPrincipal>), String>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        if let Some(m) = &self.mesh
            && !m.is_ready()
        {
            return Err("no workload certificate yet".into());
        }
        let name = self
            .sni
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(endpoint.ip().into()));
        let connector = TlsConnector::from(if h2 { &self.h2 } else { &self.plain }.clone());
        let tls = tokio::time::timeout(timeout, connector.connect(name, io))
            .await
            .map_err(|_| format!("TLS handshake with {endpoint} timed out"))?
            .map_err(|e| format!("TLS handshake with {endpoint}: {e}"))?;
        let peer =
            peer_identity(tls.get_ref().1.peer_certificates()).map(|p| PeerPrincipal(Arc::from(p)));
        Ok((tls, peer))
    }
}

// === impl Transports ===

/// The TLS pools of a cluster, one set per TLS transport socket.
#[derive(Debug)]
pub struct Transports {
    model: TransportModel,
    /// Index as in [`TransportModel::select`]; `None` for plaintext sockets.
    built: OnceLock<Vec<Option<Result<ClusterPools, String>>>>,
}

impl Transports {
    /// Transports of `model`; TLS pools are made by [`Transports::attach`].
    pub fn new(model: TransportModel) -> Self {
        Transports {
            model,
            built: OnceLock::new(),
        }
    }

    /// Whether any socket needs TLS.
    pub fn needs_tls(&self) -> bool {
        !self.model.is_plaintext()
    }

    /// Builds the TLS pools with `make(tls)` (a cluster's pools over that
    /// TLS context); errors stay, to be reported per request.
    pub fn attach(
        &self,
        mesh: Option<&Arc<MeshTls>>,
        make: impl Fn(Arc<UpstreamTls>) -> ClusterPools,
    ) {
        let built = (0..self.model.sockets())
            .map(|i| {
                let spec = self.model.spec(i)?;
                // Auto mTLS (a `transport_socket_matches` entry) on a proxy
                // without a CA degrades to plaintext, as a mesh without
                // certificates does; an explicit transport socket never does.
                if i > 0 && mesh.is_none() && spec.uses_workload_identity() {
                    tracing::info!(
                        socket = self.model.matches[i - 1].name,
                        "auto mTLS off: this proxy has no workload certificate"
                    );
                    return None;
                }
                Some(UpstreamTls::build(spec, mesh).map(|tls| make(Arc::new(tls))))
            })
            .collect();
        let _ = self.built.set(built);
    }

    /// The TLS pools `endpoint` uses, or `None` when it is plaintext.
    pub fn for_endpoint(
        &self,
        endpoint: &Endpoint,
    ) -> Option<Result<&ClusterPools, UpstreamError>> {
        if self.model.is_plaintext() {
            return None;
        }
        let index = self.model.select(&endpoint.model.transport_match);
        self.model.spec(index)?;
        Some(match self.built.get().and_then(|b| b.get(index)) {
            Some(Some(Ok(p))) => Ok(p),
            Some(Some(Err(e))) => Err(UpstreamError::Connect(format!("TLS: {e}"))),
            // Auto mTLS off (no workload certificate): plaintext.
            Some(None) => return None,
            None => Err(UpstreamError::Connect(
                "TLS transport socket not initialised".into(),
            )),
        })
    }
}

// === impl UpstreamIo ===

/// An upstream connection: plaintext or TLS.
#[derive(Debug)]
pub enum UpstreamIo {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl UpstreamIo {
    /// The socket.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            UpstreamIo::Plain(s) => s,
            UpstreamIo::Tls(t) => t.get_ref().0,
        }
    }
}

/// Connects to `endpoint` within `timeout`, with TLS when `tls` says so.
pub async fn connect(
    endpoint: SocketAddr,
    tls: Option<&UpstreamTls>,
    h2: bool,
    timeout: Duration,
) -> Result<(UpstreamIo, Option<PeerPrincipal>), UpstreamError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(endpoint))
        .await
        .map_err(|_| UpstreamError::Connect(format!("timed out connecting to {endpoint}")))?
        .map_err(|e| UpstreamError::Connect(format!("{endpoint}: {e}")))?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => Ok((UpstreamIo::Plain(stream), None)),
        Some(t) => {
            let (s, peer) = t
                .handshake(stream, endpoint, h2, timeout)
                .await
                .map_err(UpstreamError::Connect)?;
            Ok((UpstreamIo::Tls(Box::new(s)), peer))
        }
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(t) => t.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}
