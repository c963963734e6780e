//! A scripted delta ADS server, for tests of xDS clients: every request a
//! client sends is handed to the test, which decides each response. It is
//! a real tonic gRPC server on a real socket; only the control-plane logic
//! is the test's. Used where exact requests matter (NACK details,
//! `initial_resource_versions` after a reconnect, VHDS subscriptions).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::TypeUrl;

type Responses = mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>;

/// The test's end: requests in, responses out, streams cut at will.
pub struct ScriptedDelta {
    /// Where the server listens.
    pub addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<(u64, DeltaDiscoveryRequest)>,
    pending: Vec<(u64, DeltaDiscoveryRequest)>,
    streams: Arc<Mutex<Vec<(u64, Responses)>>>,
    nonce: u64,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Service {
    requests: mpsc::UnboundedSender<(u64, DeltaDiscoveryRequest)>,
    streams: Arc<Mutex<Vec<(u64, Responses)>>>,
    next_stream: Arc<Mutex<u64>>,
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream = Boxed<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Boxed<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        _request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "the scripted server speaks delta only",
        ))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let id = {
            let mut n = self.next_stream.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            *n
        };
        let (tx, rx) = mpsc::channel(64);
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, tx));
        let mut inbound = request.into_inner();
        let requests = self.requests.clone();
        tokio::spawn(async move {
            while let Some(Ok(req)) = inbound.next().await {
                if requests.send((id, req)).is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

impl ScriptedDelta {
    /// Starts the server on a free loopback port.
    pub async fn start() -> std::io::Result<ScriptedDelta> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (req_tx, requests) = mpsc::unbounded_channel();
        let streams = Arc::new(Mutex::new(Vec::new()));
        let service = Service {
            requests: req_tx,
            streams: streams.clone(),
            next_stream: Arc::default(),
        };
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AggregatedDiscoveryServiceServer::new(service))
                .serve_with_incoming(incoming)
                .await;
        });
        Ok(ScriptedDelta {
            addr,
            requests,
            pending: Vec::new(),
            streams,
            nonce: 0,
            server,
        })
    }

    /// The first request not taken yet (oldest first, from any stream)
    /// that `pred` accepts, with its stream's number (1 for the first
    /// stream opened); requests it skips stay for later calls. `None`
    /// after `wait` without one.
    pub async fn expect(
        &mut self,
        wait: Duration,
        pred: impl Fn(u64, &DeltaDiscoveryRequest) -> bool,
    ) -> Option<(u64, DeltaDiscoveryRequest)> {
        if let Some(i) = self.pending.iter().position(|(id, r)| pred(*id, r)) {
            return Some(self.pending.remove(i));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (id, req) = tokio::time::timeout(left, self.requests.recv())
                .await
                .ok()
                .flatten()?;
            if pred(id, &req) {
                return Some((id, req));
            }
            self.pending.push((id, req));
        }
    }

    /// The next request of type `t` that subscribes or unsubscribes names
    /// or opens the type on a stream (not an ACK or NACK).
    pub async fn subscription(
        &mut self,
        t: TypeUrl,
        wait: Duration,
    ) -> Option<(u64, DeltaDiscoveryRequest)> {
        self.expect(wait, |_, r| {
            r.type_url == t.as_str() && r.response_nonce.is_empty()
        })
        .await
    }

    /// The ACK or NACK of `nonce`.
    pub async fn ack_of(&mut self, nonce: &str, wait: Duration) -> Option<DeltaDiscoveryRequest> {
        self.expect(wait, |_, r| r.response_nonce == nonce)
            .await
            .map(|(_, r)| r)
    }

    /// Every request received and not taken yet, without waiting.
    pub fn drain(&mut self) -> Vec<(u64, DeltaDiscoveryRequest)> {
        while let Ok(r) = self.requests.try_recv() {
            self.pending.push(r);
        }
        std::mem::take(&mut self.pending)
    }

    /// Sends a response of type `t` on the newest stream, numbering its
    /// nonce; returns the nonce.
    pub async fn respond(
        &mut self,
        t: TypeUrl,
        resources: Vec<Resource>,
        removed: &[&str],
    ) -> String {
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        let response = DeltaDiscoveryResponse {
            system_version_info: format!("v{nonce}"),
            resources,
            removed_resources: removed.iter().map(|s| s.to_string()).collect(),
            type_url: t.as_str().to_string(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        let tx = self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .map(|(_, tx)| tx.clone());
        if let Some(tx) = tx {
            let _ = tx.send(Ok(response)).await;
        }
        nonce
    }

    /// Ends every open stream with an error (the client must reconnect).
    pub async fn cut_streams(&self) {
        let streams: Vec<(u64, Responses)> =
            std::mem::take(&mut *self.streams.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, tx) in streams {
            let _ = tx.send(Err(Status::unavailable("cut by the test"))).await;
        }
    }
}

impl Drop for ScriptedDelta {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A delta `Resource` named `name` at `version`.
pub fn resource(name: &str, version: &str, any: Any) -> Resource {
    Resource {
        name: name.to_string(),
        version: version.to_string(),
        resource: Some(any),
        ..Default::default()
    }
}
