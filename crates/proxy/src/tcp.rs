//! Opaque TCP proxying: one upstream connection per downstream one, bytes
//! copied both ways with half-close carried across, an idle timeout, and
//! Istio's TCP metrics and one access-log line per connection.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use meshwork_telemetry::{AccessLogEntry, ResponseFlag, ResponseFlags, TcpLabels};

use crate::ctx::ProxyCtx;
use crate::http::{ConnInfo, or_unknown};
use crate::io::{ConnStats, CountingIo, LastWords};
use crate::model::listener::TcpProxyModel;
use crate::tls::stream::Downstream;

/// Bytes each direction of an opaque connection moves per read and write:
/// four times tokio's default, so bulk transfers make a quarter of the
/// syscalls (nginx's stream proxy uses 16 KB); 64 KB per connection.
const COPY_BUFFER: usize = 32 * 1024;

/// Proxies one TCP connection to the chain's cluster.
pub async fn proxy(ctx: Arc<ProxyCtx>, stream: Downstream, tp: Arc<TcpProxyModel>, info: ConnInfo) {
    let start = Instant::now();
    let mut entry = AccessLogEntry {
        start_time: SystemTime::now().into(),
        downstream_local_address: Some(info.original_dst.to_string()),
        downstream_remote_address: Some(info.peer.to_string()),
        ..Default::default()
    };
    let mut labels = TcpLabels::unknown();
    let me = &ctx.peer;
    if info.inbound {
        labels.reporter = "destination".into();
        labels.destination_workload = or_unknown(&me.workload_name);
        labels.destination_workload_namespace = or_unknown(&me.namespace);
        labels.destination_app = or_unknown(&me.app);
        labels.destination_version = or_unknown(&me.version);
        labels.connection_security_policy = "none".into();
        if let Some(p) = &info.peer_principal {
            // A verified client certificate: Istio's mTLS labels.
            labels.source_principal = p.to_string();
            labels.connection_security_policy = "mutual_tls".into();
            if let Some(me) = ctx.mesh_tls.get().and_then(|m| m.id()) {
                labels.destination_principal = me;
            }
            entry.downstream_peer_uri_san = Some(p.to_string());
        }
    } else {
        labels.reporter = "source".into();
        labels.source_workload = or_unknown(&me.workload_name);
        labels.source_workload_namespace = or_unknown(&me.namespace);
        labels.source_app = or_unknown(&me.app);
        labels.source_version = or_unknown(&me.version);
    }
    let mut flags = ResponseFlags::new();
    let cluster_name = tp.clusters.pick(rand::random::<f64>()).to_string();
    entry.upstream_cluster = Some(cluster_name.clone());
    let cluster = ctx.tables.load().clusters.get(&cluster_name).cloned();
    let upstream = match cluster {
        None => Err(ResponseFlag::NoClusterFound),
        Some(c) => match c.pick(Some(info.original_dst)) {
            None => Err(ResponseFlag::NoHealthyUpstream),
            Some(ep) => {
                entry.upstream_host = Some(ep.address().to_string());
                if let Some(host) = cluster_name.split('|').nth(3) {
                    labels.destination_service = host.to_string();
                    labels.destination_service_name =
                        host.split('.').next().unwrap_or("unknown").into();
                }
                let guard = ep.track();
                match c.pools.connect_stream(&ep).await {
                    Ok((s, peer)) => {
                        if let Some(p) = peer {
                            labels.destination_principal = p.0.to_string();
                            entry.upstream_peer_uri_san = Some(p.0.to_string());
                        }
                        Ok((s, guard))
                    }
                    Err(e) => {
                        entry.upstream_transport_failure_reason = Some(e.to_string());
                        Err(ResponseFlag::UpstreamConnectionFailure)
                    }
                }
            }
        },
    };
    ctx.metrics.tcp_opened(&labels);
    let (sent, received) = match upstream {
        Err(flag) => {
            flags.insert(flag);
            (0, 0)
        }
        Ok((up, _guard)) => {
            if let Ok(a) = up.tcp().local_addr() {
                entry.upstream_local_address = Some(a.to_string());
            }
            let _ = stream.set_nodelay(true);
            let stats = ConnStats::new();
            let mut down = CountingIo::new(stream, stats.clone(), LastWords::default());
            let mut up = up;
            let idle = tp
                .idle_timeout
                .unwrap_or(ctx.limits.idle_timeout)
                .min(ctx.limits.idle_timeout);
            let copy = tokio::io::copy_bidirectional_with_sizes(
                &mut down,
                &mut up,
                COPY_BUFFER,
                COPY_BUFFER,
            );
            let mut copy = std::pin::pin!(copy);
            let drain = ctx.drain.clone();
            let mut drained = std::pin::pin!(drain.started());
            let tick = (idle / 4).clamp(
                std::time::Duration::from_millis(50),
                std::time::Duration::from_secs(30),
            );
            let mut draining = false;
            loop {
                // Biased: the copy first, with no random branch order drawn
                // on every wakeup (most wakeups are the copy's).
                tokio::select! {
                    biased;
                    res = copy.as_mut() => {
                        if let Err(e) = res {
                            tracing::debug!(error = %e, "tcp proxy ended with an error");
                            flags.insert(ResponseFlag::UpstreamConnectionTermination);
                        }
                        break;
                    }
                    _ = tokio::time::sleep(tick) => {
                        if stats.idle_for() >= idle {
                            flags.insert(ResponseFlag::StreamIdleTimeout);
                            break;
                        }
                        // During a drain, opaque connections keep going until the drain period ends.
                    }
                    _ = &mut drained, if !draining => { draining = true; }
                }
            }
            let r = stats.read.load(std::sync::atomic::Ordering::Relaxed);
            let w = stats.written.load(std::sync::atomic::Ordering::Relaxed);
            (w, r)
        }
    };
    labels.response_flags = flags.to_string();
    ctx.metrics.tcp_bytes(&labels, sent, received);
    ctx.metrics.tcp_closed(&labels);
    if ctx.access_log.is_enabled() {
        entry.response_flags = flags;
        entry.bytes_received = received;
        entry.bytes_sent = sent;
        entry.duration = start.elapsed().as_millis() as u64;
        ctx.access_log.log(entry);
    }
}
