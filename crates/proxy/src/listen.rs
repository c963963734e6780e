//! Listener management: binds a socket for every listener that asks for one,
//! follows LDS updates (new listeners bind, removed ones close), and hands
//! each accepted connection to [`dispatch`]: original destination, protocol
//! detection, filter chain, then HTTP or TCP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::ctx::ProxyCtx;
use crate::detect::{Detected, detect};
use crate::http::ConnInfo;
use crate::model::listener::{ConnFacts, NetworkFilter};
use crate::tls::stream::Downstream;

/// The original destination of a redirected connection (SO_ORIGINAL_DST),
/// or `None` when it was not redirected.
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let local = stream.local_addr().ok()?;
    let dst = if local.is_ipv4() {
        sock.original_dst_v4().ok()?
    } else {
        sock.original_dst_v6().ok()?
    };
    dst.as_socket()
}

/// Keeps the bound sockets in line with the listeners in the tables.
pub struct ListenerManager {
    ctx: Arc<ProxyCtx>,
    bound: HashMap<String, (SocketAddr, JoinHandle<()>)>,
}

impl ListenerManager {
    /// A manager with nothing bound.
    pub fn new(ctx: Arc<ProxyCtx>) -> Self {
        ListenerManager {
            ctx,
            bound: HashMap::new(),
        }
    }

    /// Binds new listeners and closes removed ones. Returns bind errors
    /// (listener name, message); the rest still bind.
    pub fn sync(&mut self) -> Vec<(String, String)> {
        let tables = self.ctx.tables.load_full();
        let mut errors = Vec::new();
        self.bound.retain(|name, (addr, task)| {
            let keep = tables
                .listeners
                .get(name)
                .is_some_and(|l| l.bind && l.address == *addr);
            if !keep {
                task.abort();
                tracing::info!(listener = name, %addr, "listener closed");
            }
            keep
        });
        if self.ctx.drain.is_draining() {
            return errors;
        }
        for (name, l) in &tables.listeners {
            if !l.bind || self.bound.contains_key(name) {
                continue;
            }
            // Warming, as in Envoy: a listener starts accepting only once
            // every route configuration it names has arrived.
            if !l.rds_names().all(|r| tables.routes.contains_key(r)) {
                tracing::debug!(listener = name, "waiting for its route configuration");
                continue;
            }
            match bind(l.address) {
                Ok(listener) => {
                    tracing::info!(listener = name, addr = %l.address, "listening");
                    let task = tokio::spawn(accept_loop(self.ctx.clone(), listener, name.clone()));
                    self.bound.insert(name.clone(), (l.address, task));
                }
                Err(e) => {
                    tracing::error!(listener = name, addr = %l.address, error = %e, "cannot bind");
                    errors.push((name.clone(), e.to_string()));
                }
            }
        }
        errors
    }

    /// Closes every listener (drain).
    pub fn close_all(&mut self) {
        for (_, (_, task)) in self.bound.drain() {
            task.abort();
        }
    }

    /// The addresses currently bound, by listener name.
    pub fn bound(&self) -> HashMap<String, SocketAddr> {
        self.bound
            .iter()
            .map(|(k, (a, _))| (k.clone(), *a))
            .collect()
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

async fn accept_loop(ctx: Arc<ProxyCtx>, listener: TcpListener, name: String) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = ctx.connections.clone().try_acquire_owned() else {
            tracing::warn!(listener = name, %peer, "connection limit reached; refusing");
            drop(stream);
            continue;
        };
        let ctx2 = ctx.clone();
        let name = name.clone();
        ctx.drain.spawn(async move {
            let _permit = permit;
            dispatch(ctx2, stream, peer, &name).await;
        });
    }
}

/// Handles one accepted connection end to end.
pub async fn dispatch(
    ctx: Arc<ProxyCtx>,
    stream: TcpStream,
    peer: SocketAddr,
    listener_name: &str,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let tables = ctx.tables.load_full();
    let Some(mut listener) = tables.listeners.get(listener_name).cloned() else {
        return;
    };
    let mut destination = local;
    if listener.use_original_dst {
        if let Some(orig) = original_dst(&stream) {
            destination = orig;
        }
        if let Some(l) = tables.listener_for(destination) {
            listener = l.clone();
        }
    } else if listener.original_dst_filter
        && let Some(orig) = original_dst(&stream)
    {
        destination = orig;
    }
    drop(tables);
    let detected = if listener.needs_detection {
        detect(&stream, listener.detection_timeout).await
    } else {
        Detected::Opaque
    };
    let facts = ConnFacts {
        destination: Some(destination),
        source: Some(peer),
        transport: detected.transport(),
        application: detected.application(),
        server_name: match &detected {
            Detected::Tls { sni, .. } => sni.clone(),
            _ => None,
        },
    };
    let Some(chain) = listener.select_chain(&facts) else {
        tracing::info!(listener = listener.name, %peer, %destination, "no filter chain matched; closing (NR)");
        return;
    };
    let mut info = ConnInfo {
        peer,
        local,
        original_dst: destination,
        inbound: listener.inbound,
        h2: false,
        peer_principal: None,
    };
    let _ = stream.set_nodelay(true);
    let (mut stream, alpn) = match &chain.tls {
        None => (Downstream::Plain(stream), None),
        Some(tls) => {
            let timeout = ctx.limits.request_header_timeout;
            match tls.accept(ctx.mesh_tls.get(), stream, timeout).await {
                Ok(acc) => {
                    info.peer_principal = acc.peer;
                    (acc.stream, Some(acc.alpn))
                }
                Err(e) => {
                    tracing::info!(listener = listener.name, chain = chain.name, %peer, error = %e, "TLS handshake failed; closing");
                    return;
                }
            }
        }
    };
    match &chain.filter {
        NetworkFilter::Http(hcm) => {
            info.h2 = match (alpn, &stream) {
                (Some(Some(p)), _) if p == b"h2" => true,
                (Some(Some(p)), _) if p == b"http/1.1" => false,
                // TLS without an HTTP ALPN (Istio's `istio` ALPN): look inside.
                (Some(_), _) => {
                    stream.sniff_inside(ctx.limits.request_header_timeout).await == Detected::H2c
                }
                (None, Downstream::Plain(tcp)) => {
                    let detected = if listener.needs_detection {
                        detected
                    } else {
                        // An HTTP-only port: the client speaks first, so waiting is safe.
                        detect(tcp, ctx.limits.request_header_timeout).await
                    };
                    detected == Detected::H2c
                }
                (None, _) => false,
            };
            crate::http::serve(ctx, stream, hcm.clone(), info).await;
        }
        NetworkFilter::Tcp(tp) => crate::tcp::proxy(ctx, stream, tp.clone(), info).await,
    }
}
