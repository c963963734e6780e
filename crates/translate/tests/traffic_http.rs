//! VirtualService HTTP matching, rewrites, redirects, direct responses,
//! header changes, CORS and delegation: YAML through translate, xDS to
//! the real proxy, requests to real backends.

mod common;
mod live;
mod traffic;

const ROUTES: &str = r#"  - match: [{uri: {exact: /exact}}]
    route: [{destination: {host: web, subset: v2}}]
  - match: [{uri: {regex: "/re/[0-9]+"}}]
    rewrite: {uriRegexRewrite: {match: "^/re/([0-9]+)$", rewrite: "/num/\\1"}}
    route: [{destination: {host: web, subset: v2}}]
  - match: [{uri: {prefix: /old}}]
    rewrite: {uri: /new, authority: web-rewritten}
    route: [{destination: {host: web, subset: v1}}]
  - match: [{method: {exact: DELETE}}]
    directResponse: {status: 405, body: {string: no deletes}}
  - match: [{uri: {prefix: /canary}, headers: {x-canary: {exact: "yes"}}, withoutHeaders: {x-block: {}}}]
    route: [{destination: {host: web, subset: v2}}]
  - match: [{uri: {prefix: /hdr}, headers: {x-id: {regex: "u[0-9]+"}, x-pre: {prefix: ab}}}]
    route: [{destination: {host: web, subset: v2}}]
  - match: [{uri: {prefix: /query}, queryParams: {version: {exact: "2"}}}]
    route: [{destination: {host: web, subset: v2}}]
  - match: [{uri: {exact: /CaseLess}, ignoreUriCase: true}]
    route: [{destination: {host: web, subset: v2}}]
  - match: [{uri: {prefix: /auth}, authority: {prefix: web.default}}]
    route: [{destination: {host: web, subset: v2}}]
  - match: [{uri: {prefix: /scheme}, scheme: {exact: http}}]
    route: [{destination: {host: web, subset: v2}}]
  - match: [{uri: {prefix: /redirect}}]
    redirect: {uri: /moved, authority: elsewhere, port: 8443, scheme: https, redirectCode: 308}
  - match: [{uri: {prefix: /mine}, sourceLabels: {app: client}}, {uri: {prefix: /theirs}, sourceLabels: {app: other}}]
    route: [{destination: {host: web, subset: v2}}]
  - match: [{uri: {prefix: /ns}, sourceNamespace: default}, {uri: {prefix: /otherns}, sourceNamespace: elsewhere}]
    route: [{destination: {host: web, subset: v2}}]
  - match: [{uri: {prefix: /port}, port: 8080}, {uri: {prefix: /wrongport}, port: 9999}]
    route: [{destination: {host: web, subset: v2}}]
  - match: [{uri: {prefix: /gw}, gateways: [mesh]}, {uri: {prefix: /ingress-only}, gateways: [istio-system/ingress]}]
    route: [{destination: {host: web, subset: v2}}]
  - match: [{uri: {prefix: /headers}}]
    headers:
      request: {set: {x-route: a}, add: {x-multi: "1"}, remove: [x-drop]}
      response: {set: {x-resp: r}, remove: [x-app]}
    route: [{destination: {host: web, subset: v1}}]
  - match: [{uri: {prefix: /dest-headers}}]
    route:
    - destination: {host: web, subset: v1}
      weight: 50
      headers: {request: {set: {x-dest: v1}}, response: {set: {x-dest-resp: v1}}}
    - destination: {host: web, subset: v2}
      weight: 50
      headers: {request: {set: {x-dest: v2}}, response: {set: {x-dest-resp: v2}}}
  - route: [{destination: {host: web, subset: v1}}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_rewrites_redirects_and_headers() {
    let live = traffic::start(&traffic::web_vs(ROUTES)).await;
    let get = |path: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let live = live.clone();
        async move { live.get(8080, "web:8080", path, headers).await }
    };
    // URI matches.
    assert_eq!(get("/exact", &[]).await.backend(), "web-v2");
    assert_eq!(get("/exact/more", &[]).await.backend(), "web-v1");
    let r = get("/re/42", &[]).await;
    assert_eq!(r.backend(), "web-v2");
    assert!(r.body.contains(" /num/42 "), "{}", r.body);
    assert_eq!(get("/re/x", &[]).await.backend(), "web-v1");
    let r = get("/old/page?q=1", &[]).await;
    assert!(
        r.body.contains(" /new/page?q=1 host=web-rewritten"),
        "{}",
        r.body
    );
    assert_eq!(get("/caseless", &[]).await.backend(), "web-v2");
    assert_eq!(get("/CASELESS", &[]).await.backend(), "web-v2");
    // Method, headers, absence, query, authority, scheme.
    let r = live.send("DELETE", 8080, "web:8080", "/x", &[], "").await;
    assert_eq!((r.status, r.body.as_str()), (405, "no deletes"));
    assert_eq!(
        get("/canary", &[("x-canary", "yes")]).await.backend(),
        "web-v2"
    );
    assert_eq!(
        get("/canary", &[("x-canary", "yes"), ("x-block", "1")])
            .await
            .backend(),
        "web-v1"
    );
    assert_eq!(
        get("/canary", &[("x-canary", "no")]).await.backend(),
        "web-v1"
    );
    assert_eq!(
        get("/hdr", &[("x-id", "u12"), ("x-pre", "abc")])
            .await
            .backend(),
        "web-v2"
    );
    assert_eq!(
        get("/hdr", &[("x-id", "u12x"), ("x-pre", "abc")])
            .await
            .backend(),
        "web-v1"
    );
    assert_eq!(get("/query?a=1&version=2", &[]).await.backend(), "web-v2");
    assert_eq!(get("/query?version=3", &[]).await.backend(), "web-v1");
    let r = live
        .get(8080, "web.default.svc.cluster.local:8080", "/auth", &[])
        .await;
    assert_eq!(r.backend(), "web-v2");
    assert_eq!(get("/auth", &[]).await.backend(), "web-v1");
    assert_eq!(get("/scheme", &[]).await.backend(), "web-v2");
    // Redirect.
    let r = get("/redirect/x?y=1", &[]).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), "https://elsewhere:8443/moved?y=1");
    // Source labels, namespace, port and gateway conditions.
    assert_eq!(get("/mine", &[]).await.backend(), "web-v2");
    assert_eq!(get("/theirs", &[]).await.backend(), "web-v1");
    assert_eq!(get("/ns", &[]).await.backend(), "web-v2");
    assert_eq!(get("/otherns", &[]).await.backend(), "web-v1");
    assert_eq!(get("/port", &[]).await.backend(), "web-v2");
    assert_eq!(get("/wrongport", &[]).await.backend(), "web-v1");
    assert_eq!(get("/gw", &[]).await.backend(), "web-v2");
    assert_eq!(get("/ingress-only", &[]).await.backend(), "web-v1");
    // Header changes at route level.
    let r = get(
        "/headers",
        &[("x-drop", "1"), ("x-route", "old"), ("x-multi", "0")],
    )
    .await;
    assert_eq!(r.header("x-resp"), "r");
    assert!(r.headers.get("x-app").is_none(), "response header removed");
    let seen = live.seen("web-v1");
    let s = seen.iter().rev().find(|s| s.path == "/headers").unwrap();
    assert_eq!(s.headers["x-route"], "a");
    assert!(s.headers.get("x-drop").is_none());
    let multi: Vec<_> = s.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi.len(), 2, "add appends: {multi:?}");
    // Header changes per destination.
    for _ in 0..20 {
        let r = get("/dest-headers", &[]).await;
        let v = r.backend().trim_start_matches("web-");
        assert_eq!(r.header("x-dest-resp"), v);
    }
    for w in ["v1", "v2"] {
        for s in live
            .seen(&format!("web-{w}"))
            .iter()
            .filter(|s| s.path == "/dest-headers")
        {
            assert_eq!(s.headers["x-dest"], w);
        }
    }
    assert!(
        !live
            .seen("web-v2")
            .iter()
            .all(|s| s.path != "/dest-headers")
    );
}

const CORS: &str = r#"  - corsPolicy:
      allowOrigins: [{exact: "https://a.example"}, {prefix: "https://app."}]
      allowMethods: [GET, POST]
      allowHeaders: [x-custom]
      exposeHeaders: [x-app]
      maxAge: 24h
      allowCredentials: true
    route: [{destination: {host: web, subset: v1}}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_answered_and_headers_added() {
    let live = traffic::start(&traffic::web_vs(CORS)).await;
    let pre = |origin: &'static str| {
        let live = live.clone();
        async move {
            live.send(
                "OPTIONS",
                8080,
                "web:8080",
                "/",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                ],
                "",
            )
            .await
        }
    };
    let r = pre("https://app.example").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        "https://app.example"
    );
    assert_eq!(r.header("access-control-allow-methods"), "GET,POST");
    assert_eq!(r.header("access-control-allow-headers"), "x-custom");
    assert_eq!(r.header("access-control-max-age"), "86400");
    assert_eq!(r.header("access-control-allow-credentials"), "true");
    assert!(
        live.seen("web-v1").is_empty(),
        "preflight answered by the proxy"
    );
    // Not an allowed origin: forwarded, no CORS headers.
    let r = pre("https://evil.example").await;
    assert_eq!(r.backend(), "web-v1");
    assert!(r.headers.get("access-control-allow-origin").is_none());
    // Actual request from an allowed origin.
    let r = live
        .get(8080, "web:8080", "/", &[("origin", "https://a.example")])
        .await;
    assert_eq!(r.backend(), "web-v1");
    assert_eq!(r.header("access-control-allow-origin"), "https://a.example");
    assert_eq!(r.header("access-control-expose-headers"), "x-app");
    let r = live.get(8080, "web:8080", "/", &[]).await;
    assert!(r.headers.get("access-control-allow-origin").is_none());
}

const ROOT: &str = r#"  - name: api
    match: [{uri: {prefix: /api}}]
    delegate: {name: web-api, namespace: default}
  - route: [{destination: {host: web, subset: v1}}]
"#;

const DELEGATE: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-api, namespace: default}
spec:
  http:
  - match: [{uri: {prefix: /api/v2}}]
    route: [{destination: {host: web, subset: v2}}]
  - match: [{uri: {prefix: /other}}]
    route: [{destination: {host: web, subset: v2}}]
  - headers: {response: {set: {x-delegate: "yes"}}}
    route: [{destination: {host: web, subset: v1}}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegate_routes_merge_under_the_root_match() {
    let yaml = format!("{}---\n{DELEGATE}", traffic::web_vs(ROOT));
    let live = traffic::start(&yaml).await;
    let r = live.get(8080, "web:8080", "/api/v2/x", &[]).await;
    assert_eq!(r.backend(), "web-v2");
    let r = live.get(8080, "web:8080", "/api/v1", &[]).await;
    assert_eq!((r.backend(), r.header("x-delegate")), ("web-v1", "yes"));
    // The delegate's /other conflicts with the root's /api: dropped.
    let r = live.get(8080, "web:8080", "/other", &[]).await;
    assert_eq!((r.backend(), r.header("x-delegate")), ("web-v1", ""));
}

const SHIPPING: &str = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: shipping, namespace: default}
spec:
  host: shipping
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shipping, namespace: default}
spec:
  hosts: [shipping]
  http:
  - route:
    - {destination: {host: shipping, subset: v1}, weight: 90}
    - {destination: {host: shipping, subset: v2}, weight: 10}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipping_split_90_10_over_10000_requests() {
    let yaml = format!(
        "{}---\n{SHIPPING}",
        traffic::app("shipping", &[("v1", ""), ("v2", "")])
    );
    let live = traffic::start(&yaml).await;
    let n = 10_000;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let live = live.clone();
        tasks.push(tokio::spawn(async move {
            let mut v1 = 0usize;
            for _ in 0..n / 8 {
                let r = live.get(8080, "shipping:8080", "/quote", &[]).await;
                match r.backend() {
                    "shipping-v1" => v1 += 1,
                    "shipping-v2" => {}
                    other => panic!("answered by {other:?}: {r:?}"),
                }
            }
            v1
        }));
    }
    let mut v1 = 0;
    for t in tasks {
        v1 += t.await.unwrap();
    }
    let share = v1 as f64 / n as f64;
    assert!((0.88..=0.92).contains(&share), "v1 share {share}");
}
