//! HTTP/2, gRPC, WebSocket and opaque TCP through a real proxy.

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use meshwork_xds::{TypeUrl, pack};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_multiplexed_to_http2_upstream() {
    let a = http_backend("a").await;
    let mesh = Mesh::start().await;
    let port = free_port();
    mesh.serve_http(port, &[a], true);
    mesh.wait_ready(port).await;
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // Several streams at once over one connection, including a slow one.
    let mut calls = Vec::new();
    for path in ["/slow", "/a", "/b", "/c"] {
        let req = http::Request::builder()
            .uri(format!("http://shop{path}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        calls.push(tokio::spawn(send.send_request(req)));
        send.ready().await.unwrap();
    }
    let started = std::time::Instant::now();
    let mut fast_done = 0;
    for c in calls.into_iter().skip(1) {
        let resp = c.await.unwrap().unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body = String::from_utf8_lossy(&body);
        // The upstream HTTP/2 request carries the original authority, not the endpoint's address.
        assert!(body.contains("GET http://shop/"), "{body}");
        fast_done += 1;
    }
    assert_eq!(fast_done, 3);
    // The fast streams were not blocked behind the slow one (no timing
    // assertion: the slow one simply is still pending here).
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_streaming_and_status_preserved() {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("shipping", ServingStatus::Serving)
        .await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_port = l.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    let mesh = Mesh::start().await;
    let port = free_port();
    mesh.serve_http(port, &[grpc_port], true);
    mesh.wait_ready(port).await;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let ok = client
        .check(HealthCheckRequest {
            service: "shipping".into(),
        })
        .await
        .unwrap();
    assert_eq!(ok.into_inner().status, ServingStatus::Serving as i32);

    // An error status travels in trailers (here trailers-only) and must survive.
    let err = client
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // Server streaming: updates arrive as they happen.
    let mut watch = client
        .watch(HealthCheckRequest {
            service: "shipping".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    reporter
        .set_service_status("shipping", ServingStatus::NotServing)
        .await;
    let second = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.status, ServingStatus::NotServing as i32);

    let (_, metrics) = http_get(mesh.proxy.stats_addr, "/stats/prometheus")
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total{")
                && l.contains("request_protocol=\"grpc\"")
                && l.contains("grpc_response_status=\"5\"")),
        "gRPC status is a metric label:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_upgrade() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        ws.send(msg).await.unwrap();
                    }
                }
            });
        }
    });
    let mesh = Mesh::start().await;
    let port = free_port();
    mesh.serve_http(port, &[ws_port], false);
    mesh.wait_ready(port).await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/chat"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        let text = format!("message {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(text.clone()))
            .await
            .unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), text);
    }
    let big = vec![7u8; 1 << 20];
    ws.send(tokio_tungstenite::tungstenite::Message::binary(big.clone()))
        .await
        .unwrap();
    let back = ws.next().await.unwrap().unwrap();
    assert_eq!(back.into_data().as_ref(), big.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_echo_with_half_close() {
    // Echo server that answers only after the client's EOF: half-close must cross the proxy.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await.unwrap();
                s.write_all(&buf).await.unwrap();
                s.shutdown().await.unwrap();
            });
        }
    });
    let mesh = Mesh::start().await;
    let port = free_port();
    mesh.ads.set(
        TypeUrl::Cluster,
        [("db".to_string(), pack(&eds_cluster("db", false)))],
    );
    mesh.ads.set(
        TypeUrl::Endpoint,
        [("db".to_string(), pack(&endpoints("db", &[echo])))],
    );
    mesh.ads.set(
        TypeUrl::Listener,
        [("tcp".to_string(), pack(&tcp_listener("tcp", port, "db")))],
    );
    mesh.wait_ready(port).await;

    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    s.write_all(&payload).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "bytes are not corrupted");

    // Metrics count the connection and its bytes (readiness probes opened
    // connections too: sum every series, and wait until this one is in).
    let mut text = String::new();
    let mut sent = 0.0;
    for _ in 0..200 {
        text = http_get(mesh.proxy.stats_addr, "/stats/prometheus")
            .await
            .unwrap()
            .1;
        sent = text
            .lines()
            .filter(|l| l.starts_with("istio_tcp_sent_bytes_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if sent as usize >= payload.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sent as usize, payload.len(), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_first_protocol_is_not_stalled_by_detection() {
    // A "MySQL-like" server speaks first; the port mixes HTTP and TCP chains,
    // so detection runs, and must give up quickly for a silent client.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let greeter = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                s.write_all(b"220 hello from server\r\n").await.unwrap();
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
            });
        }
    });
    let mesh = Mesh::start().await;
    let port = free_port();
    let mut listener = tcp_listener("mixed", port, "greeter");
    let mut http_chain = http_listener("x", port, "r").filter_chains.remove(0);
    http_chain.filter_chain_match = Some(
        envoy_types::pb::envoy::config::listener::v3::FilterChainMatch {
            application_protocols: vec!["http/1.1".into(), "h2c".into()],
            ..Default::default()
        },
    );
    listener.filter_chains.insert(0, http_chain);
    mesh.ads.set(
        TypeUrl::Cluster,
        [("greeter".to_string(), pack(&eds_cluster("greeter", false)))],
    );
    mesh.ads.set(
        TypeUrl::Endpoint,
        [(
            "greeter".to_string(),
            pack(&endpoints("greeter", &[greeter])),
        )],
    );
    mesh.ads.set(
        TypeUrl::Route,
        [("r".to_string(), pack(&route_to("r", "greeter", None)))],
    );
    mesh.ads
        .set(TypeUrl::Listener, [("mixed".to_string(), pack(&listener))]);
    mesh.wait_ready(port).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut buf = [0u8; 23];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"220 hello from server\r\n");
}
