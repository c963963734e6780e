//! Upstream HTTP connection pools: one pool per cluster and endpoint, with
//! HTTP/1.1 keep-alive reuse or one multiplexed HTTP/2 connection, and an
//! idle timeout. Built on hyper-util's pooling client, one per cluster and
//! protocol so each cluster keeps its own connect and idle timeouts.

use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::ProxyBody;
use crate::model::cluster::ClusterModel;

/// An HTTP client over a cluster's endpoints.
pub type HttpClient = Client<HttpConnector, ProxyBody>;

/// The pools of one cluster.
#[derive(Clone, Debug)]
pub struct ClusterPools {
    /// HTTP/1.1 keep-alive pool.
    pub http1: HttpClient,
    /// HTTP/2 (prior knowledge) pool: one connection per endpoint.
    pub http2: HttpClient,
}

impl ClusterPools {
    /// Pools configured from the cluster's timeouts.
    pub fn new(model: &ClusterModel) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(model.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(300)));
        let mut h1 = Client::builder(TokioExecutor::new());
        h1.pool_idle_timeout(model.idle_timeout)
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(1024)
            .retry_canceled_requests(false)
            .set_host(false);
        let mut h2 = Client::builder(TokioExecutor::new());
        h2.pool_idle_timeout(model.idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(60))
            .http2_adaptive_window(true)
            .retry_canceled_requests(false)
            .set_host(false);
        ClusterPools {
            http1: h1.build(connector.clone()),
            http2: h2.build(connector),
        }
    }
}
