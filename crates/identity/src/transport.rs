//! TLS for the CA's gRPC (and xDS on 15012): a tonic channel over
//! tokio-rustls that verifies the control plane's certificate against the
//! mesh roots, and a TLS accept stream for tonic's server.
//!
//! tonic's own TLS features are not used: the mesh needs to choose the
//! roots per connection (the configured root file plus roots learned from
//! the CA, so a root rotation does not lock sidecars out) and to verify a
//! fixed server name (`istiod.istio-system.svc`) when dialling an IP.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::Channel;
use tonic::transport::server::Connected;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a TLS channel or server config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The roots or the certificate are unusable for rustls.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// A root certificate was rejected.
    #[error("root certificate rejected: {0}")]
    Root(String),
    /// The address or server name is malformed.
    #[error("bad address {0}")]
    Address(String),
    /// Connecting failed (TLS verification failures show up here).
    #[error("cannot connect to the CA at {address}: {reason}")]
    Connect {
        /// Address dialled.
        address: String,
        /// The innermost cause, e.g. `invalid peer certificate: UnknownIssuer`.
        reason: String,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config trusting exactly `roots`, speaking HTTP/2.
pub fn client_config(roots: &[CertificateDer<'static>]) -> Result<ClientConfig, TransportError> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store
            .add(r.clone())
            .map_err(|e| TransportError::Root(e.to_string()))?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A server config presenting `chain` (leaf first) with `key`, speaking HTTP/2.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TransportError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Connects a gRPC channel to `address` (`host:port`) over TLS, verifying
/// the server's certificate for `server_name` against `config`'s roots.
pub async fn connect(
    address: &str,
    server_name: &str,
    config: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<Channel, TransportError> {
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|_| TransportError::Address(format!("server name {server_name:?}")))?;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| TransportError::Address(format!("{address:?}: {e}")))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let connector = TlsDialer {
        tls: TlsConnector::from(config),
        name,
    };
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| TransportError::Connect {
            address: address.to_string(),
            reason: innermost(&e),
        })
}

/// Dials TCP, then TLS with a fixed server name.
#[derive(Clone)]
struct TlsDialer {
    tls: TlsConnector,
    name: ServerName<'static>,
}

type Dialed = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower::Service<Uri> for TlsDialer {
    type Response = Dialed;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Dialed, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .unwrap_or("")
                .trim_matches(['[', ']'])
                .to_string();
            let port = uri.port_u16().unwrap_or(15012);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = this.tls.connect(this.name.clone(), tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// An accepted TLS connection, for tonic's `serve_with_incoming`.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    remote: Option<SocketAddr>,
}

/// What a handler can learn about a [`TlsConn`] (request extension).
#[derive(Clone, Debug)]
pub struct TlsConnectInfo {
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
}

impl Connected for TlsConn {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> TlsConnectInfo {
        TlsConnectInfo {
            remote_addr: self.remote,
        }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts TCP connections on `listener` and yields those whose TLS
/// handshake completed (each handshake runs in its own task, so a slow
/// client holds up no one). Accepting stops when the stream is dropped.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> impl futures::Stream<Item = Result<TlsConn, std::io::Error>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Result<TlsConn, std::io::Error>>(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(inner)) => {
                        let _ = tx
                            .send(Ok(TlsConn {
                                inner,
                                remote: Some(remote),
                            }))
                            .await;
                    }
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The last error in a source chain (tonic wraps the real cause twice).
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
