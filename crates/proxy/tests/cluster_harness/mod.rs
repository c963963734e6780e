//! Harness for the DestinationRule tests: Istio YAML (a ServiceEntry for
//! `inventory` on port 9080 with real loopback backends, plus the rule
//! under test) → `translate` → an in-process ADS server → a real proxy,
//! and backends that count their connections and can be told to fail.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use meshwork_translate::{MeshSnapshot, ProxyKind, ProxyMeta, generate};
use meshwork_xds::TypeUrl;

use crate::support::{Mesh, free_port, http_listener};

/// The service's host.
pub const HOST: &str = "inventory.default.svc.cluster.local";

/// A backend that names itself in `x-backend`, waits `?delay=ms`, answers
/// 500 while `fail` is set, and counts connections.
pub struct Backend {
    /// Its name.
    pub name: &'static str,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Answer 500 while set.
    pub fail: Arc<AtomicBool>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// Most connections open at once.
    pub max_open: Arc<AtomicUsize>,
    /// Requests served.
    pub requests: Arc<AtomicUsize>,
    /// Most requests in service at once.
    pub max_active: Arc<AtomicUsize>,
}

impl Backend {
    /// Starts one.
    pub async fn start(name: &'static str) -> Backend {
        use http_body_util::BodyExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let b = Backend {
            name,
            port,
            fail: Arc::default(),
            connections: Arc::default(),
            max_open: Arc::default(),
            requests: Arc::default(),
            max_active: Arc::default(),
        };
        let (fail, connections, max_open, requests, max_active) = (
            b.fail.clone(),
            b.connections.clone(),
            b.max_open.clone(),
            b.requests.clone(),
            b.max_active.clone(),
        );
        let active = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                connections.fetch_add(1, Ordering::SeqCst);
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                max_open.fetch_max(now, Ordering::SeqCst);
                let (fail, requests, open) = (fail.clone(), requests.clone(), open.clone());
                let (active, max_active) = (active.clone(), max_active.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let fail = fail.load(Ordering::SeqCst);
                            requests.fetch_add(1, Ordering::SeqCst);
                            let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                            max_active.fetch_max(now, Ordering::SeqCst);
                            let active = active.clone();
                            async move {
                                let delay = req
                                    .uri()
                                    .query()
                                    .and_then(|q| q.strip_prefix("delay="))
                                    .and_then(|d| d.parse().ok())
                                    .unwrap_or(0);
                                let _ = req.into_body().collect().await;
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                                active.fetch_sub(1, Ordering::SeqCst);
                                let resp = hyper::Response::builder()
                                    .status(if fail { 500 } else { 200 })
                                    .header("x-backend", name)
                                    .body(http_body_util::Full::new(bytes::Bytes::from(name)))
                                    .unwrap();
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        b
    }
}

/// The ServiceEntry for `inventory:9080` with these backends (labels
/// `version: <name>`) followed by `extra` YAML.
pub fn config(backends: &[&Backend], extra: &str) -> String {
    let mut y = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: inventory, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints:
"
    );
    for b in backends {
        y.push_str(&format!(
            "  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: {}}}}}\n",
            b.port, b.name
        ));
    }
    if !extra.is_empty() {
        y.push_str("---\n");
        y.push_str(extra);
    }
    y
}

/// A proxy fed what `translate` makes of `yaml`, listening for the 9080
/// route configuration on a free loopback port.
pub struct Proxy {
    /// ADS server and proxy.
    pub mesh: Mesh,
    /// The listener's address.
    pub addr: SocketAddr,
}

impl Proxy {
    /// Translates `yaml` and starts a proxy on it.
    pub async fn start(yaml: &str) -> Proxy {
        let mesh = Mesh::start().await;
        let port = free_port();
        let p = Proxy {
            mesh,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        p.update(yaml);
        p.mesh.wait_ready(port).await;
        p
    }

    /// Serves the translation of `yaml` (clusters, endpoints, route 9080,
    /// and the test listener).
    pub fn update(&self, yaml: &str) {
        let loaded = meshwork_config::load_str("test.yaml".as_ref(), yaml);
        let errors: Vec<String> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.level == meshwork_config::Level::Error)
            .map(ToString::to_string)
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        let registry = meshwork_registry::Registry::build(&loaded.resources, &[]);
        let snap = MeshSnapshot::new(1, loaded.resources, registry);
        let proxy = ProxyMeta {
            node_id: "sidecar~127.0.0.1~client-0.default~default.svc.cluster.local".into(),
            kind: ProxyKind::Sidecar,
            ip: None,
            namespace: "default".into(),
            workload: "client".into(),
            labels: Default::default(),
            service_account: "default".into(),
            locality: String::new(),
            vhds: false,
        };
        let g = generate(&snap, &proxy);
        let all = |m: &meshwork_translate::Resources| {
            m.iter()
                .map(|(k, v)| (k.clone(), (**v).clone()))
                .collect::<Vec<_>>()
        };
        self.mesh.ads.set(TypeUrl::Cluster, all(&g.clusters));
        self.mesh.ads.set(TypeUrl::Endpoint, all(&g.endpoints));
        let route = g.routes.get("9080").expect("route 9080");
        self.mesh
            .ads
            .set(TypeUrl::Route, [("9080".to_string(), (**route).clone())]);
        self.mesh.ads.set(
            TypeUrl::Listener,
            [(
                "test".to_string(),
                meshwork_xds::pack(&http_listener("test", self.addr.port(), "9080")),
            )],
        );
    }

    /// Sends `GET path` with `headers` on a new connection.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        request(self.addr, path, headers).await
    }

    /// The proxy's `/config_dump` cluster entry for `name`.
    pub async fn dumped_cluster(&self, name: &str) -> serde_json::Value {
        let (_, dump) = self.mesh.admin("/config_dump").await;
        let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
        dump["configs"][2]["dynamic_active_clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in config_dump"))
    }
}

/// An HTTP/1.1 response.
#[derive(Debug)]
pub struct Reply {
    /// Status code (0: no answer).
    pub status: u16,
    /// Header lines, lowercased names.
    pub headers: Vec<(String, String)>,
    /// Body text.
    pub body: String,
}

impl Reply {
    /// A header's first value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` to `addr` with the service's Host and `headers`.
pub async fn request(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("GET {path} HTTP/1.1\r\nhost: {HOST}\r\nconnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.get(9..12))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}
