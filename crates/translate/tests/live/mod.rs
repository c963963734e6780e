//! Live traffic harness: the xDS that `translate` generates for one client
//! sidecar, served by an in-process ADS server to a real Meshwork proxy,
//! with a real HTTP backend per workload instance. Only two things are
//! adapted to a shared test machine: EDS addresses point at the backends'
//! loopback ports, and the outbound listeners bind to loopback ports.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::google::protobuf::BoolValue;
use http_body_util::{BodyExt, Full};
use meshwork_proxy::options::{Identity, Limits, ProxyOptions};
use meshwork_proxy::run::ProxyHandle;
use meshwork_telemetry::AccessLogger;
use meshwork_translate::{Generated, generate};
use meshwork_xds::server::AdsServer;
use meshwork_xds::{TypeUrl, pack, unpack};

use super::common;

/// One request as a backend saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Host header.
    pub host: String,
    /// All headers.
    pub headers: http::HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// A real HTTP backend standing in for one workload instance.
#[derive(Clone)]
pub struct Backend {
    /// The instance's workload (e.g. `reviews-v2`).
    pub workload: String,
    /// Its loopback port.
    pub port: u16,
    /// Requests it received.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections it accepted.
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Backend {
    /// Requests so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A response as the client got it.
#[derive(Debug)]
pub struct Resp {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body text.
    pub body: String,
}

impl Resp {
    /// The answering backend's workload (`x-backend`), or "".
    pub fn backend(&self) -> &str {
        self.headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// A proxy configured by translate, with backends.
pub struct Live {
    /// The ADS server feeding the proxy.
    pub ads: AdsServer,
    /// The proxy.
    pub proxy: ProxyHandle,
    /// Proxy listener address per service port.
    pub listeners: HashMap<u16, SocketAddr>,
    /// Backends by workload instance name.
    pub backends: BTreeMap<String, Backend>,
    /// What translate generated.
    pub generated: Generated,
    client: Client,
    /// Sockets bound, never listening, that hold the dead instances' ports:
    /// connecting there is refused, and no other test can take the port.
    _dead: Vec<tokio::net::TcpSocket>,
}

/// Labels on a Deployment's pod template that shape its test backend.
pub const DEAD_LABEL: &str = "test/dead";
/// Every request to such a backend waits this many milliseconds.
pub const SLOW_LABEL: &str = "test/slow-ms";

fn sock(ip: IpAddr, port: u16) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn sock_ip(a: &Address) -> Option<IpAddr> {
    match a.address.as_ref()? {
        AddressKind::SocketAddress(s) => s.address.parse().ok(),
        _ => None,
    }
}

impl Live {
    /// Generates `client`'s xDS from `resources`, starts a backend per
    /// instance and a proxy whose outbound listeners for `ports` listen on
    /// loopback (on `bind_ip` when given, for VIP-matched TCP chains).
    pub async fn start(
        resources: Vec<meshwork_config::Resource>,
        client: &str,
        ports: &[u16],
        bind_ip: Option<IpAddr>,
    ) -> Live {
        let (snap, instances) = common::snapshot(resources);
        let meta = common::sidecar(&instances, client);
        let generated = generate(&snap, &meta);

        let mut backends = BTreeMap::new();
        let mut by_ip: HashMap<IpAddr, u16> = HashMap::new();
        let mut dead = Vec::new();
        for i in &instances {
            let port = if i.labels.contains_key(DEAD_LABEL) {
                let s = tokio::net::TcpSocket::new_v4().unwrap();
                s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
                let port = s.local_addr().unwrap().port();
                dead.push(s);
                port
            } else {
                let slow = i
                    .labels
                    .get(SLOW_LABEL)
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_millis);
                let b = http_backend(&i.workload, slow).await;
                let port = b.port;
                backends.insert(i.name.clone(), b);
                port
            };
            by_ip.insert(i.address, port);
        }

        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let mut endpoints = Vec::new();
        for (name, any) in generated.endpoints.iter() {
            let mut cla: ClusterLoadAssignment = unpack(any).unwrap();
            for l in &mut cla.endpoints {
                for e in &mut l.lb_endpoints {
                    if let Some(HostIdentifier::Endpoint(ep)) = &mut e.host_identifier
                        && let Some(ip) = ep.address.as_ref().and_then(sock_ip)
                        && let Some(port) = by_ip.get(&ip)
                    {
                        ep.address = Some(sock(loopback, *port));
                    }
                }
            }
            endpoints.push((name.clone(), pack(&cla)));
        }

        let ip = bind_ip.unwrap_or(loopback);
        let mut listeners = HashMap::new();
        let mut lds = Vec::new();
        for port in ports {
            let name = format!("0.0.0.0_{port}");
            let any = generated
                .listeners
                .get(&name)
                .unwrap_or_else(|| panic!("no listener {name}"));
            let mut l: Listener = unpack(any).unwrap();
            let local = std::net::TcpListener::bind((ip, 0))
                .unwrap()
                .local_addr()
                .unwrap();
            l.address = Some(sock(ip, local.port()));
            l.bind_to_port = Some(BoolValue { value: true });
            listeners.insert(*port, local);
            lds.push((name, pack(&l)));
        }

        let ads = AdsServer::new();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let xds_addr = tcp.local_addr().unwrap();
        tokio::spawn(ads.clone().serve(tcp));
        let clone = |m: &meshwork_translate::Resources| {
            m.iter()
                .map(|(k, v)| (k.clone(), (**v).clone()))
                .collect::<Vec<_>>()
        };
        ads.set(TypeUrl::Cluster, clone(&generated.clusters));
        ads.set(TypeUrl::Endpoint, endpoints);
        ads.set(TypeUrl::Route, clone(&generated.routes));
        ads.set(TypeUrl::Listener, lds);

        let any = |p| SocketAddr::from(([127, 0, 0, 1], p));
        let opts = ProxyOptions {
            identity: Identity {
                node_id: meta.node_id.clone(),
                namespace: meta.namespace.clone(),
                workload: meta.workload.clone(),
                labels: meta.labels.clone(),
                service_account: meta.service_account.clone(),
                ..Default::default()
            },
            xds_address: xds_addr.to_string(),
            admin_address: any(0),
            health_address: any(0),
            stats_address: any(0),
            merged_stats_address: any(0),
            limits: Limits::default(),
            access_log: false,
            workload_certs: None,
            ..Default::default()
        };
        let proxy = meshwork_proxy::run::start(opts, AccessLogger::disabled(), None)
            .await
            .unwrap();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(64)
                .build_http();
        let live = Live {
            ads,
            proxy,
            listeners,
            backends,
            generated,
            client,
            _dead: dead,
        };
        live.wait_ready().await;
        live
    }

    async fn wait_ready(&self) {
        for _ in 0..400 {
            let ready = raw_get(self.proxy.health_addr, "/healthz/ready")
                .await
                .is_ok_and(|(s, _)| s == 200);
            let mut all = ready;
            for a in self.listeners.values() {
                all &= tokio::net::TcpStream::connect(a).await.is_ok();
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("proxy never became ready");
    }

    /// Backends of one workload.
    pub fn workload(&self, workload: &str) -> Vec<&Backend> {
        self.backends
            .values()
            .filter(|b| b.workload == workload)
            .collect()
    }

    /// Every request the backends of `workload` saw.
    pub fn seen(&self, workload: &str) -> Vec<Seen> {
        self.workload(workload)
            .iter()
            .flat_map(|b| b.seen())
            .collect()
    }

    /// Sends a request through the proxy's listener for `port`.
    pub async fn send(
        &self,
        method: &str,
        port: u16,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Resp {
        let addr = self.listeners[&port];
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header("host", host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .expect("request through the proxy");
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Resp {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            }
        };
        tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("no answer within 30 s")
    }

    /// A GET through the proxy whose response body may fail: the body, or
    /// why it could not be read.
    pub async fn try_get(
        &self,
        port: u16,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Bytes), String> {
        let addr = self.listeners[&port];
        let mut b = http::Request::builder()
            .uri(format!("http://{addr}{path}"))
            .header("host", host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::new())).unwrap();
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok((status, body.to_bytes()))
        };
        tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("no answer within 30 s")
    }

    /// A GET through the proxy.
    pub async fn get(&self, port: u16, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send("GET", port, host, path, headers, "").await
    }

    /// The proxy's Prometheus metrics.
    pub async fn metrics(&self) -> String {
        raw_get(self.proxy.stats_addr, "/stats/prometheus")
            .await
            .unwrap()
            .1
    }

    /// The admin `/config_dump`.
    pub async fn config_dump(&self) -> String {
        raw_get(self.proxy.admin_addr, "/config_dump")
            .await
            .unwrap()
            .1
    }
}

/// The sum of `istio_requests_total` samples whose labels contain every
/// `needle` (e.g. `response_flags="URX"`).
pub fn requests_total(metrics: &str, needles: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A one-shot HTTP/1.1 GET with a raw socket: (status, body).
pub async fn raw_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A real HTTP/1.1 + HTTP/2 backend. Paths: `/status/<code>` answers that
/// status, `/delay/<ms>` waits first, `/flaky/<key>/<n>` answers 503 to the
/// first `n` requests for `key`; anything else 200. Every answer carries
/// `x-backend: <workload>` and a body naming the workload, method, path
/// and Host.
pub async fn http_backend(workload: &str, slow: Option<Duration>) -> Backend {
    use hyper::service::service_fn;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let counters: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let accepted: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
    let backend = Backend {
        workload: workload.to_string(),
        port,
        seen: seen.clone(),
        accepted: accepted.clone(),
    };
    let name = workload.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (seen, counters, name) = (seen.clone(), counters.clone(), name.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (seen, counters, name) = (seen.clone(), counters.clone(), name.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let path = parts
                            .uri
                            .path_and_query()
                            .map(|p| p.as_str().to_string())
                            .unwrap_or_default();
                        let host = parts
                            .headers
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_string)
                            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
                            .unwrap_or_default();
                        seen.lock().unwrap().push(Seen {
                            method: parts.method.to_string(),
                            path: path.clone(),
                            host: host.clone(),
                            headers: parts.headers.clone(),
                            body: body.clone(),
                        });
                        if let Some(d) = slow {
                            tokio::time::sleep(d).await;
                        }
                        let segs: Vec<&str> = parts.uri.path().split('/').collect();
                        let status = match segs.as_slice() {
                            ["", "status", code] => code.parse().unwrap_or(200),
                            ["", "delay", ms] => {
                                let ms = ms.parse().unwrap_or(0);
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                                200
                            }
                            ["", "flaky", key, n] => {
                                let mut c = counters.lock().unwrap();
                                let count = c.entry(key.to_string()).or_default();
                                *count += 1;
                                if *count <= n.parse().unwrap_or(0) {
                                    503
                                } else {
                                    200
                                }
                            }
                            _ => 200,
                        };
                        let text = format!(
                            "{name} {} {path} host={host} body={}",
                            parts.method,
                            body.len()
                        );
                        let body = match segs.as_slice() {
                            // Headers now, the body only after `ms`.
                            ["", "drip", ms] => {
                                let ms = ms.parse().unwrap_or(0);
                                let chunk = async move {
                                    tokio::time::sleep(Duration::from_millis(ms)).await;
                                    Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                                        Bytes::from(text),
                                    ))
                                };
                                http_body_util::StreamBody::new(futures::stream::once(chunk))
                                    .boxed()
                            }
                            _ => Full::new(Bytes::from(text)).boxed(),
                        };
                        let resp = hyper::Response::builder()
                            .status(status)
                            .header("x-backend", name.as_str())
                            .header("x-app", "1")
                            .body(body)
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(s);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(io, svc)
                .await;
            });
        }
    });
    backend
}
