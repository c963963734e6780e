use super::*;
use std::collections::{BTreeMap, BTreeSet};

/// One parsed sample line: name, labels, value.
type Sample = (String, BTreeMap<String, String>, String);

/// A strict little parser for sample lines of the text exposition.
fn parse_sample(line: &str) -> Sample {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => {
            let (n, v) = line.split_once(' ').expect("name value");
            return (n.to_string(), BTreeMap::new(), v.to_string());
        }
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "value must be quoted in {line}");
        let mut value = String::new();
        loop {
            match chars.next().expect("unterminated value") {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    other => panic!("bad escape {other:?} in {line}"),
                },
                '"' => break,
                '\n' => panic!("raw newline in {line}"),
                c => value.push(c),
            }
        }
        assert!(labels.insert(key, value).is_none(), "dup label in {line}");
        match chars.next() {
            Some(',') => continue,
            Some('}') => break,
            other => panic!("unexpected {other:?} in {line}"),
        }
    }
    assert_eq!(chars.next(), Some(' '));
    let value: String = chars.collect();
    value.parse::<f64>().expect("numeric value");
    (name.to_string(), labels, value)
}

fn samples(text: &str) -> Vec<Sample> {
    assert!(text.ends_with("# EOF\n"), "must end with EOF: {text}");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(parse_sample)
        .collect()
}

const COMMON: [&str; 20] = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "source_canonical_service",
    "source_canonical_revision",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
];

fn keys(extra: &[&str]) -> BTreeSet<String> {
    COMMON.iter().chain(extra).map(|s| s.to_string()).collect()
}

fn request_labels() -> RequestLabels {
    RequestLabels {
        reporter: "destination".into(),
        source_workload: "sleep".into(),
        destination_workload: "httpbin".into(),
        request_protocol: "http".into(),
        response_code: "200".into(),
        connection_security_policy: "mutual_tls".into(),
        ..RequestLabels::unknown()
    }
}

#[test]
fn unknown_labels() {
    let r = RequestLabels::unknown();
    assert_eq!(r.source_workload, "unknown");
    assert_eq!(r.destination_cluster, "unknown");
    assert_eq!(r.response_flags, "-");
    assert_eq!(r.grpc_response_status, "");
    let t = TcpLabels::unknown();
    assert_eq!(t.reporter, "unknown");
    assert_eq!(t.request_protocol, "tcp");
    assert_eq!(t.response_flags, "-");
}

#[test]
fn exposition_has_istio_names_and_labels() {
    let m = IstioMetrics::new();
    let labels = request_labels();
    m.record_request(&labels, Duration::from_millis(7), 120, 3000);
    m.record_request(&labels, Duration::from_micros(300), 0, 20);
    let tcp = TcpLabels {
        reporter: "source".into(),
        ..TcpLabels::unknown()
    };
    m.tcp_opened(&tcp);
    m.tcp_bytes(&tcp, 10, 20);
    m.tcp_bytes(&tcp, 5, 0);
    m.tcp_closed(&tcp);

    let text = m.encode();
    let all = samples(&text);
    let names: BTreeSet<&str> = all.iter().map(|s| s.0.as_str()).collect();
    let expected: BTreeSet<&str> = [
        "istio_requests_total",
        "istio_request_duration_milliseconds_bucket",
        "istio_request_duration_milliseconds_sum",
        "istio_request_duration_milliseconds_count",
        "istio_request_bytes_bucket",
        "istio_request_bytes_sum",
        "istio_request_bytes_count",
        "istio_response_bytes_bucket",
        "istio_response_bytes_sum",
        "istio_response_bytes_count",
        "istio_tcp_connections_opened_total",
        "istio_tcp_connections_closed_total",
        "istio_tcp_sent_bytes_total",
        "istio_tcp_received_bytes_total",
    ]
    .into_iter()
    .collect();
    assert_eq!(names, expected, "{text}");

    let http = keys(&[
        "request_protocol",
        "response_code",
        "grpc_response_status",
        "response_flags",
        "connection_security_policy",
    ]);
    let tcp_keys = keys(&[
        "request_protocol",
        "response_flags",
        "connection_security_policy",
    ]);
    for (name, labels, _) in &all {
        let mut got: BTreeSet<String> = labels.keys().cloned().collect();
        let is_bucket = name.ends_with("_bucket");
        assert_eq!(got.remove("le"), is_bucket, "{name}");
        let want = if name.starts_with("istio_tcp_") {
            &tcp_keys
        } else {
            &http
        };
        assert_eq!(&got, want, "{name}");
    }

    let value = |name: &str| -> f64 {
        let hits: Vec<_> = all.iter().filter(|s| s.0 == name).collect();
        assert_eq!(hits.len(), 1, "{name}");
        hits[0].2.parse().unwrap()
    };
    assert_eq!(value("istio_requests_total"), 2.0);
    assert_eq!(value("istio_request_duration_milliseconds_count"), 2.0);
    assert!((value("istio_request_duration_milliseconds_sum") - 7.3).abs() < 1e-9);
    assert_eq!(value("istio_request_bytes_sum"), 120.0);
    assert_eq!(value("istio_response_bytes_sum"), 3020.0);
    assert_eq!(value("istio_tcp_connections_opened_total"), 1.0);
    assert_eq!(value("istio_tcp_connections_closed_total"), 1.0);
    assert_eq!(value("istio_tcp_sent_bytes_total"), 15.0);
    assert_eq!(value("istio_tcp_received_bytes_total"), 20.0);

    // Buckets: Istio's bounds plus +Inf, cumulative.
    let buckets: Vec<(f64, f64)> = all
        .iter()
        .filter(|s| s.0 == "istio_request_duration_milliseconds_bucket")
        .map(|s| {
            let le = &s.1["le"];
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, s.2.parse().unwrap())
        })
        .collect();
    let bounds: Vec<f64> = buckets.iter().map(|b| b.0).collect();
    let mut want_bounds = DURATION_BUCKETS_MS.to_vec();
    want_bounds.push(f64::INFINITY);
    assert_eq!(bounds, want_bounds);
    assert_eq!(buckets[0].1, 1.0); // 0.3 ms <= 0.5
    assert_eq!(buckets[3].1, 2.0); // 7 ms <= 10
    let byte_bounds = all
        .iter()
        .filter(|s| s.0 == "istio_response_bytes_bucket")
        .count();
    assert_eq!(byte_bounds, BYTES_BUCKETS.len() + 1);

    let sample = all.iter().find(|s| s.0 == "istio_requests_total").unwrap();
    assert_eq!(sample.1["reporter"], "destination");
    assert_eq!(sample.1["response_flags"], "-");
    assert_eq!(sample.1["grpc_response_status"], "");

    // Metadata lines name the families as OpenMetrics expects.
    assert!(text.contains("# TYPE istio_requests counter\n"));
    assert!(text.contains("# TYPE istio_request_duration_milliseconds histogram\n"));
    assert!(text.contains("# TYPE istio_tcp_sent_bytes counter\n"));
}

#[test]
fn label_values_from_peers_are_escaped() {
    let m = IstioMetrics::new();
    let labels = RequestLabels {
        source_workload: "evil\"} 1\nfake_metric 2\\".into(),
        ..request_labels()
    };
    m.record_request(&labels, Duration::ZERO, 0, 0);
    m.record_request(&labels, Duration::ZERO, 0, 0);
    let all = samples(&m.encode());
    assert!(all.iter().all(|s| s.0.starts_with("istio_")));
    let s = all.iter().find(|s| s.0 == "istio_requests_total").unwrap();
    assert_eq!(s.1["source_workload"], labels.source_workload);
    assert_eq!(s.2, "2");
}

#[test]
fn empty_exposition_is_valid() {
    let text = IstioMetrics::default().encode();
    assert!(samples(&text).is_empty());
    assert!(text.contains("# TYPE istio_requests counter"));
}

#[test]
fn extra_metrics_can_be_registered() {
    use prometheus_client::metrics::gauge::Gauge;
    let m = IstioMetrics::new();
    let c: Counter = Counter::default();
    let g: Gauge = Gauge::default();
    m.register("meshwork_upstream_retries", "Retries", c.clone());
    m.registry_mut()
        .register("meshwork_active_connections", "Open connections", g.clone());
    c.inc_by(3);
    g.set(4);
    let clone = m.clone();
    let all = samples(&clone.encode());
    let get = |n: &str| all.iter().find(|s| s.0 == n).map(|s| s.2.clone());
    assert_eq!(get("meshwork_upstream_retries_total").as_deref(), Some("3"));
    assert_eq!(get("meshwork_active_connections").as_deref(), Some("4"));
    assert_eq!(
        CONTENT_TYPE,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
}

#[test]
fn shared_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<IstioMetrics>();
    let m = IstioMetrics::new();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                let l = request_labels();
                for _ in 0..250 {
                    m.record_request(&l, Duration::from_millis(1), 1, 1);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let all = samples(&m.encode());
    let s = all.iter().find(|s| s.0 == "istio_requests_total").unwrap();
    assert_eq!(s.2, "1000");
}

/// The per-thread cache of the last series: the same shared values hit it,
/// equal values in other allocations and other label values find their own
/// series, and a second `IstioMetrics` never takes the first one's series.
#[test]
fn last_series_cache_keeps_series_apart() {
    let requests = |m: &IstioMetrics| -> Vec<(String, String)> {
        let mut v: Vec<_> = samples(&m.encode())
            .into_iter()
            .filter(|s| s.0 == "istio_requests_total")
            .map(|s| (s.1["response_code"].clone(), s.2))
            .collect();
        v.sort();
        v
    };
    let a = IstioMetrics::new();
    let b = IstioMetrics::new();
    let shared = request_labels();
    let ok = Duration::from_millis(1);
    a.record_request(&shared, ok, 1, 1);
    a.record_request(&shared.clone(), ok, 1, 1);
    // Equal values, separate allocations.
    a.record_request(&request_labels(), ok, 1, 1);
    let other = RequestLabels {
        response_code: "503".into(),
        ..shared.clone()
    };
    a.record_request(&other, ok, 1, 1);
    a.record_request(&shared, ok, 1, 1);
    b.record_request(&shared, ok, 1, 1);
    assert_eq!(
        requests(&a),
        [("200".into(), "4".into()), ("503".into(), "1".into())]
    );
    assert_eq!(requests(&b), [("200".into(), "1".into())]);
}
