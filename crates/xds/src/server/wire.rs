//! The ADS gRPC service as mounted on a server: state-of-the-world and
//! delta responses leave as pre-encoded bytes.
//!
//! Why by hand: tonic encodes every response message into a fresh buffer
//! per stream, so a route table pushed to 1,000 proxies was encoded (and
//! held) 1,000 times. Here a response is a small per-stream head (gRPC
//! frame header, `version_info`, `nonce`) followed by the set's shared
//! encoding (`Bytes`, one allocation for every stream), handed to h2 as
//! two data frames, which h2 writes without copying. Protobuf decodes the
//! concatenated fields as one message; `DeltaDiscoveryResponse` has its
//! `system_version_info` and `nonce` at the same tags (1 and 5) as
//! `DiscoveryResponse`'s `version_info` and `nonce`, so one head encoder
//! serves both. Requests are still decoded by tonic's `Streaming` with
//! prost.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use http_body::Frame;
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;
use tonic::codec::{Codec, Streaming};
use tonic::codegen::{BoxFuture, Service, StdError};
use tonic::server::NamedService;

use super::AdsServer;
use super::gzip::{Deflated, accepts_gzip};
use super::resources::encode_head;

/// The gRPC path of state-of-the-world ADS.
const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
/// The gRPC path of delta ADS.
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
/// Largest request accepted (a proxy's subscription lists).
pub(crate) const MAX_REQUEST: usize = 16 << 20;

/// One state-of-the-world response on the wire: a per-stream head (gRPC
/// frame header, then the per-stream fields or a gzip header), the shared
/// bytes, and a per-stream tail (empty, or the gzip tail with this
/// stream's fields).
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    head: Bytes,
    shared: Bytes,
    tail: Bytes,
}

impl Outgoing {
    /// A response with `version` and `nonce` whose other fields are
    /// `shared` (see [`super::resources::encode_fields`]), sent as one
    /// gzip member when `deflated` (the same fields, deflated once) is
    /// given.
    pub(crate) fn new(
        version: &str,
        nonce: &str,
        shared: Bytes,
        deflated: Option<&Deflated>,
    ) -> Result<Self, Status> {
        let fields = encode_head(version, nonce);
        if let Some((gz_head, blocks, tail)) = deflated.and_then(|d| d.member(&fields)) {
            let len = frame_len(gz_head.len() + blocks.len() + tail.len())?;
            let mut head = Vec::with_capacity(5 + gz_head.len());
            head.push(1); // compressed with the stream's grpc-encoding
            head.extend_from_slice(&len.to_be_bytes());
            head.extend_from_slice(&gz_head);
            return Ok(Outgoing {
                head: Bytes::from(head),
                shared: blocks,
                tail,
            });
        }
        let len = frame_len(fields.len() + shared.len())?;
        let mut head = Vec::with_capacity(5 + fields.len());
        head.push(0); // not compressed
        head.extend_from_slice(&len.to_be_bytes());
        head.extend_from_slice(&fields);
        Ok(Outgoing {
            head: Bytes::from(head),
            shared,
            tail: Bytes::new(),
        })
    }

    /// Bytes on the wire, frame header included.
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.shared.len() + self.tail.len()
    }

    /// The response as a message (for the tonic-served path): a
    /// `DiscoveryResponse` or a `DeltaDiscoveryResponse`.
    pub(crate) fn decode<M: Message + Default>(&self) -> Result<M, Status> {
        let mut bytes = self.head.slice(5..).to_vec();
        bytes.extend_from_slice(&self.shared);
        bytes.extend_from_slice(&self.tail);
        if self.head.first() == Some(&1) {
            let mut plain = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(bytes.as_slice()),
                &mut plain,
            )
            .map_err(|e| Status::internal(format!("compressed response does not inflate: {e}")))?;
            bytes = plain;
        }
        M::decode(bytes.as_slice())
            .map_err(|e| Status::internal(format!("encoded response does not decode: {e}")))
    }
}

/// The gRPC frame length of a message of `len` bytes.
fn frame_len(len: usize) -> Result<u32, Status> {
    u32::try_from(len).map_err(|_| Status::resource_exhausted("xDS response larger than 4 GiB"))
}

/// What a state-of-the-world stream task sends to its response body.
pub(crate) type OutgoingTx = mpsc::Sender<Result<Outgoing, Status>>;

/// The ADS service to mount on a tonic server (`Router::add_service`).
#[derive(Clone)]
pub struct AdsService {
    server: AdsServer,
    delta: AggregatedDiscoveryServiceServer<AdsServer>,
}

impl AdsService {
    pub(crate) fn new(server: AdsServer) -> Self {
        let delta = AggregatedDiscoveryServiceServer::new(server.clone())
            .max_decoding_message_size(MAX_REQUEST)
            .max_encoding_message_size(256 << 20);
        AdsService { server, delta }
    }

    /// A stream served by hand: state of the world, or delta.
    fn stream<B>(&self, req: http::Request<B>, delta: bool) -> http::Response<tonic::body::Body>
    where
        B: http_body::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        let encoding = req
            .headers()
            .get("grpc-encoding")
            .map(|v| v.as_bytes())
            .filter(|v| *v != b"identity");
        if encoding.is_some() {
            return Status::unimplemented("compressed requests are not supported").into_http();
        }
        let gzip = req
            .headers()
            .get_all("grpc-accept-encoding")
            .iter()
            .any(|v| accepts_gzip(v.as_bytes()));
        let (tx, rx) = mpsc::channel(16);
        let server = self.server.clone();
        if delta {
            let decoder =
                tonic_prost::ProstCodec::<DeltaDiscoveryResponse, DeltaDiscoveryRequest>::default()
                    .decoder();
            let inbound = Streaming::new_request(decoder, req.into_body(), None, Some(MAX_REQUEST));
            tokio::spawn(async move { super::delta::run(server, inbound, tx, gzip).await });
        } else {
            let decoder =
                tonic_prost::ProstCodec::<DiscoveryResponse, DiscoveryRequest>::default().decoder();
            let inbound = Streaming::new_request(decoder, req.into_body(), None, Some(MAX_REQUEST));
            tokio::spawn(async move { super::sotw::run(server, inbound, tx, gzip).await });
        }
        let mut res = http::Response::new(tonic::body::Body::new(ResponseBody {
            rx,
            next: [None, None],
            done: false,
        }));
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        if gzip {
            res.headers_mut()
                .insert("grpc-encoding", http::HeaderValue::from_static("gzip"));
        }
        res
    }
}

impl NamedService for AdsService {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

impl<B> Service<http::Request<B>> for AdsService
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let delta = path == DELTA_PATH;
        if path == SOTW_PATH || delta {
            let res = self.stream(req, delta);
            Box::pin(async move { Ok(res) })
        } else {
            self.delta.call(req)
        }
    }
}

/// The response body of a stream served by hand: each response as two
/// or three data frames, then the gRPC status as trailers.
struct ResponseBody {
    rx: mpsc::Receiver<Result<Outgoing, Status>>,
    /// The rest of the response being sent, in order.
    next: [Option<Bytes>; 2],
    done: bool,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        for i in 0..self.next.len() {
            if let Some(part) = self.next[i].take() {
                return Poll::Ready(Some(Ok(Frame::data(part))));
            }
        }
        if self.done {
            return Poll::Ready(None);
        }
        let status = match self.rx.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(out))) => {
                let tail = (!out.tail.is_empty()).then_some(out.tail);
                self.next = [Some(out.shared), tail];
                return Poll::Ready(Some(Ok(Frame::data(out.head))));
            }
            Poll::Ready(Some(Err(status))) => status,
            Poll::Ready(None) => Status::ok(""),
        };
        self.done = true;
        let mut trailers = http::HeaderMap::new();
        if status.add_header(&mut trailers).is_err() {
            trailers.insert("grpc-status", http::HeaderValue::from_static("13"));
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.next.iter().all(Option::is_none)
    }
}
