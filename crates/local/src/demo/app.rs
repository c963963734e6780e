//! The demo's services, small hyper servers and clients run as
//! `meshwork demo-app <role>` so the demo needs nothing but the binary:
//!
//! - `inventory`: `GET /reserve?item=…` reserves an item;
//! - `shipping`: `GET /quote` answers with its version (`VERSION` env);
//! - `order`: `GET /order` calls inventory and shipping and answers with
//!   the shipping version that quoted;
//! - `loadgen`: sends orders at `RATE` per second and logs a tally.
//!
//! Dependencies are reached by their service names (`http://inventory:8080`,
//! resolved by the pod's hosts file and captured by its sidecar) or, in
//! explicit mode, at `http://$INVENTORY_SERVICE_HOST:$INVENTORY_SERVICE_PORT`
//! when `MESHWORK_EXPLICIT=1`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A demo service role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The order service.
    Order,
    /// The inventory service.
    Inventory,
    /// The shipping service (v1 or v2 by `VERSION`).
    Shipping,
    /// The load generator.
    Loadgen,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Ok(match s {
            "order" => Role::Order,
            "inventory" => Role::Inventory,
            "shipping" => Role::Shipping,
            "loadgen" => Role::Loadgen,
            other => {
                return Err(format!(
                    "unknown demo role {other:?}: one of order, inventory, shipping, loadgen"
                ));
            }
        })
    }
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn env(k: &str, default: &str) -> String {
    std::env::var(k)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// A dependency: the base URL requests go to, and the Host header they
/// carry when that URL does not name the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// `http://host:port` (no trailing slash).
    pub base: String,
    /// The Host header, when it must differ from the URL's authority.
    pub host: Option<String>,
}

impl Upstream {
    /// Requests go to `base` with its own authority as Host.
    pub fn direct(base: String) -> Upstream {
        Upstream { base, host: None }
    }
}

/// Where service `name` is reached: its name (captured by the sidecar),
/// or in explicit mode the service's address in this pod from the
/// Kubernetes variables (its sidecar's egress listener for that service).
/// The sidecar routes there whatever the Host header (a plain client
/// works), but the demo still sends `Host: name:port`: the destination
/// side's `destination_service` label comes from the Host header (Istio
/// takes it from the inbound cluster's service metadata first, which
/// Meshwork does not have yet), and the live summary groups by it.
pub fn service_url(name: &str, port: u16) -> Upstream {
    let key = name.to_ascii_uppercase().replace('-', "_");
    if std::env::var("MESHWORK_EXPLICIT").is_ok_and(|v| v == "1")
        && let (Ok(h), Ok(p)) = (
            std::env::var(format!("{key}_SERVICE_HOST")),
            std::env::var(format!("{key}_SERVICE_PORT")),
        )
    {
        return Upstream {
            base: format!("http://{h}:{p}"),
            host: Some(format!("{name}:{p}")),
        };
    }
    Upstream::direct(format!("http://{name}:{port}"))
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

async fn call(client: &HttpClient, to: &Upstream, path: &str) -> Result<(u16, String), String> {
    let url = format!("{}{path}", to.base);
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let mut req = Request::get(uri);
    if let Some(h) = &to.host {
        req = req.header(http::header::HOST, h);
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("{url}: {e}"))?;
    let fut = client.request(req);
    let resp = tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| format!("{url}: timeout"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Serves one role's handler on `addr` until the process ends.
async fn serve<F, Fut>(addr: SocketAddr, handler: F) -> std::io::Result<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("demo-app listening on {addr}");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let h = handler.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let h = h.clone();
                async move { Ok::<_, Infallible>(h(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn query_item(req: &Request<Incoming>) -> String {
    req.uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("item=")))
        .unwrap_or("book")
        .to_string()
}

/// Runs a role until the process is stopped.
pub async fn run(role: Role) -> std::io::Result<()> {
    let port: u16 = env("PORT", "8080").parse().unwrap_or(8080);
    let bind: std::net::IpAddr = env("BIND", "0.0.0.0")
        .parse()
        .unwrap_or([0, 0, 0, 0].into());
    let addr = SocketAddr::new(bind, port);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    match role {
        Role::Inventory => {
            let reserved = Arc::new(AtomicU64::new(0));
            serve(addr, move |req| {
                let reserved = reserved.clone();
                async move {
                    let item = query_item(&req);
                    let n = reserved.fetch_add(1, Ordering::Relaxed) + 1;
                    reply(
                        StatusCode::OK,
                        format!("{{\"item\":\"{item}\",\"reserved\":{n}}}"),
                    )
                }
            })
            .await
        }
        Role::Shipping => {
            let version = env("VERSION", "v1");
            let delay = Duration::from_millis(env("DELAY_MS", "0").parse().unwrap_or(0));
            serve(addr, move |_req| {
                let version = version.clone();
                async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    reply(
                        StatusCode::OK,
                        format!("{{\"shipping\":\"{version}\",\"days\":2}}"),
                    )
                }
            })
            .await
        }
        Role::Order => {
            let inventory = service_url("inventory", 8080);
            let shipping = service_url("shipping", 8080);
            serve(addr, move |req| {
                let (client, inventory, shipping) =
                    (client.clone(), inventory.clone(), shipping.clone());
                handle_order(client, inventory, shipping, req)
            })
            .await
        }
        Role::Loadgen => loadgen(client).await,
    }
}

/// The order handler: reserve at inventory, quote at shipping.
async fn handle_order(
    client: HttpClient,
    inventory: Upstream,
    shipping: Upstream,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let item = query_item(&req);
    let inv = call(&client, &inventory, &format!("/reserve?item={item}")).await;
    let ship = call(&client, &shipping, "/quote").await;
    match (inv, ship) {
        (Ok((200, _)), Ok((200, quote))) => reply(
            StatusCode::OK,
            format!("{{\"order\":\"accepted\",\"item\":\"{item}\",\"quote\":{quote}}}"),
        ),
        (i, s) => reply(
            StatusCode::BAD_GATEWAY,
            format!(
                "{{\"order\":\"failed\",\"inventory\":\"{}\",\"shipping\":\"{}\"}}",
                outcome(&i),
                outcome(&s)
            ),
        ),
    }
}

fn outcome(r: &Result<(u16, String), String>) -> String {
    match r {
        Ok((s, _)) => s.to_string(),
        Err(e) => e.replace('"', "'"),
    }
}

/// Sends orders at `RATE`/s (default 20) with `CONCURRENCY` workers and
/// logs a tally every 10 seconds (stops after `COUNT` orders when set).
async fn loadgen(client: HttpClient) -> std::io::Result<()> {
    let rate: f64 = env("RATE", "20").parse().unwrap_or(20.0_f64).max(0.1);
    let workers: usize = env("CONCURRENCY", "4").parse().unwrap_or(4).max(1);
    let count: u64 = env("COUNT", "0").parse().unwrap_or(0);
    let order = service_url("order", 8080);
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let interval = Duration::from_secs_f64(workers as f64 / rate);
    eprintln!(
        "loadgen: {rate} orders/s to {} (Host {:?}) with {workers} workers",
        order.base, order.host
    );
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (client, order, ok, failed, sent) = (
            client.clone(),
            order.clone(),
            ok.clone(),
            failed.clone(),
            sent.clone(),
        );
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(interval.mul_f64(w as f64 / workers as f64)).await;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let n = sent.fetch_add(1, Ordering::Relaxed);
                if count > 0 && n >= count {
                    return;
                }
                match call(&client, &order, &format!("/order?item=book-{n}")).await {
                    Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok((s, body)) => {
                        eprintln!("order failed: {s} {body}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        eprintln!("order failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let (ok2, failed2) = (ok.clone(), failed.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            eprintln!(
                "loadgen: {} ok, {} failed",
                ok2.load(Ordering::Relaxed),
                failed2.load(Ordering::Relaxed)
            );
        }
    });
    for t in tasks {
        let _ = t.await;
    }
    eprintln!(
        "loadgen: done: {} ok, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    // A finished load generator idles (a restart would send COUNT again).
    std::future::pending::<()>().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn order_calls_inventory_and_shipping() {
        // Three real servers on loopback; order finds the others through
        // explicit-mode variables.
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        };
        let (inv, ship, ord) = (free(), free(), free());
        let inv_task = tokio::spawn(async move {
            serve(inv, |req| async move {
                reply(
                    StatusCode::OK,
                    format!("{{\"item\":\"{}\"}}", query_item(&req)),
                )
            })
            .await
        });
        let ship_task = tokio::spawn(async move {
            serve(ship, |_| async {
                reply(StatusCode::OK, "{\"shipping\":\"v2\"}".into())
            })
            .await
        });
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let (c2, i, s) = (
            client.clone(),
            Upstream::direct(format!("http://{inv}")),
            Upstream::direct(format!("http://{ship}")),
        );
        let ord_task = tokio::spawn(async move {
            serve(ord, move |req| {
                handle_order(c2.clone(), i.clone(), s.clone(), req)
            })
            .await
        });
        let mut answer = None;
        for _ in 0..50 {
            let to = Upstream::direct(format!("http://{ord}"));
            if let Ok(r) = call(&client, &to, "/order?item=x").await {
                answer = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (status, body) = answer.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"quote\":{\"shipping\":\"v2\"}"), "{body}");
        assert!(body.contains("\"item\":\"x\""), "{body}");
        // A dependency that is down makes the order fail with 502, saying which.
        let ord2 = free();
        let (c3, s3) = (client.clone(), Upstream::direct(format!("http://{ship}")));
        let down = Upstream::direct(format!("http://{}", free()));
        let ord2_task = tokio::spawn(async move {
            serve(ord2, move |req| {
                handle_order(c3.clone(), down.clone(), s3.clone(), req)
            })
            .await
        });
        let mut failed = None;
        for _ in 0..50 {
            let to = Upstream::direct(format!("http://{ord2}"));
            if let Ok(r) = call(&client, &to, "/order?item=y").await {
                failed = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (status, body) = failed.unwrap();
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("\"shipping\":\"200\""), "{body}");
        assert!(body.contains("\"inventory\":\"http://"), "{body}");
        for t in [inv_task, ship_task, ord_task, ord2_task] {
            t.abort();
        }
        assert!("nope".parse::<Role>().is_err());
        assert_eq!("loadgen".parse::<Role>().unwrap(), Role::Loadgen);
    }
}
