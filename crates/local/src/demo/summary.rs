//! The demo's live summary, computed only from the proxies' own metrics
//! (Istio's `istio_requests_total` and `istio_request_duration_milliseconds`
//! as each sidecar reports them on 15090, `reporter="destination"` so each
//! request counts once): requests per second, success rate, p50/p99 per
//! service and version, and the share of mutual-TLS traffic
//! (`connection_security_policy`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::fetch;
use crate::promtext::{self, Sample};

/// Counts for one (service, version).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Agg {
    /// Requests.
    pub requests: f64,
    /// Requests answered without a 5xx.
    pub ok: f64,
    /// Requests that arrived over mutual TLS.
    pub mtls: f64,
    /// Duration histogram: upper bound (bits) → (bound, cumulative count).
    pub buckets: BTreeMap<u64, (f64, f64)>,
}

impl Agg {
    fn minus(&self, before: &Agg) -> Agg {
        let mut buckets = self.buckets.clone();
        for (k, v) in &mut buckets {
            if let Some(b) = before.buckets.get(k) {
                v.1 -= b.1;
            }
        }
        Agg {
            requests: self.requests - before.requests,
            ok: self.ok - before.ok,
            mtls: self.mtls - before.mtls,
            buckets,
        }
    }

    /// A quantile of the durations, in milliseconds.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let mut b: Vec<(f64, f64)> = self.buckets.values().copied().collect();
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        promtext::quantile(q, &b)
    }
}

/// All (service, version) counts at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    /// (destination_service_name, destination_version) → counts.
    pub by_key: BTreeMap<(String, String), Agg>,
}

impl Totals {
    /// Adds the destination-reported samples of one proxy.
    pub fn add(&mut self, samples: &[Sample]) {
        for s in samples {
            if s.label("reporter") != "destination" {
                continue;
            }
            let key = (
                s.label("destination_service_name").to_string(),
                s.label("destination_version").to_string(),
            );
            if s.name == "istio_requests_total" {
                let a = self.by_key.entry(key).or_default();
                a.requests += s.value;
                if !s.label("response_code").starts_with('5') {
                    a.ok += s.value;
                }
                if s.label("connection_security_policy") == "mutual_tls" {
                    a.mtls += s.value;
                }
            } else if s.name == "istio_request_duration_milliseconds_bucket" {
                let le = match s.label("le") {
                    "+Inf" => f64::INFINITY,
                    v => match v.parse::<f64>() {
                        Ok(v) => v,
                        Err(_) => continue,
                    },
                };
                let a = self.by_key.entry(key).or_default();
                a.buckets.entry(le.to_bits()).or_insert((le, 0.0)).1 += s.value;
            }
        }
    }

    /// What happened between `before` and now.
    pub fn since(&self, before: &Totals) -> Totals {
        Totals {
            by_key: self
                .by_key
                .iter()
                .map(|(k, v)| {
                    let d = before
                        .by_key
                        .get(k)
                        .map(|b| v.minus(b))
                        .unwrap_or_else(|| v.clone());
                    (k.clone(), d)
                })
                .collect(),
        }
    }

    /// Requests of a service by version.
    pub fn versions(&self, service: &str) -> BTreeMap<String, f64> {
        self.by_key
            .iter()
            .filter(|((s, _), _)| s == service)
            .map(|((_, v), a)| (v.clone(), a.requests))
            .collect()
    }
}

/// Scrapes every proxy (`name`, metrics address) once; proxies that do
/// not answer are skipped (they may be restarting).
pub async fn scrape(targets: &[(String, SocketAddr)]) -> Totals {
    let mut set = tokio::task::JoinSet::new();
    for (_, addr) in targets {
        let addr = *addr;
        set.spawn(
            async move { fetch::get(addr, "/stats/prometheus", Duration::from_secs(2)).await },
        );
    }
    let mut t = Totals::default();
    while let Some(r) = set.join_next().await {
        if let Ok(Ok((200, body))) = r {
            t.add(&promtext::parse(&String::from_utf8_lossy(&body)));
        }
    }
    t
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

/// The summary table for `window` (the change over `secs` seconds) and
/// the totals since the start.
pub fn render(window: &Totals, secs: f64, total: &Totals) -> String {
    let mut out = format!(
        "{:<12} {:<8} {:>8} {:>9} {:>9} {:>9} {:>7} {:>9}\n",
        "SERVICE", "VERSION", "REQ/S", "SUCCESS", "P50 ms", "P99 ms", "mTLS", "TOTAL"
    );
    for ((svc, ver), t) in &total.by_key {
        let w = window
            .by_key
            .get(&(svc.clone(), ver.clone()))
            .cloned()
            .unwrap_or_default();
        let rate = if secs > 0.0 { w.requests / secs } else { 0.0 };
        let pct = |a: f64, b: f64| {
            if b > 0.0 {
                format!("{:.1}%", 100.0 * a / b)
            } else {
                "-".into()
            }
        };
        out.push_str(&format!(
            "{:<12} {:<8} {:>8.1} {:>9} {:>9} {:>9} {:>7} {:>9}\n",
            svc,
            if ver.is_empty() { "-" } else { ver },
            rate,
            pct(w.ok, w.requests),
            ms(w.quantile(0.5)),
            ms(w.quantile(0.99)),
            pct(w.mtls, w.requests),
            t.requests as u64
        ));
    }
    let versions = total.versions("shipping");
    let all: f64 = versions.values().sum();
    if all > 0.0 {
        let split: Vec<String> = versions
            .iter()
            .map(|(v, n)| format!("{v} {:.1}%", 100.0 * n / all))
            .collect();
        out.push_str(&format!(
            "shipping split since start: {}\n",
            split.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v1: u32, v2: u32, fail: u32) -> String {
        format!(
            "istio_requests_total{{reporter=\"destination\",destination_service_name=\"shipping\",destination_version=\"v1\",response_code=\"200\",connection_security_policy=\"mutual_tls\"}} {v1}\n\
             istio_requests_total{{reporter=\"destination\",destination_service_name=\"shipping\",destination_version=\"v2\",response_code=\"200\",connection_security_policy=\"mutual_tls\"}} {v2}\n\
             istio_requests_total{{reporter=\"destination\",destination_service_name=\"shipping\",destination_version=\"v2\",response_code=\"503\",connection_security_policy=\"none\"}} {fail}\n\
             istio_requests_total{{reporter=\"source\",destination_service_name=\"shipping\",destination_version=\"v1\",response_code=\"200\"}} 999\n\
             istio_request_duration_milliseconds_bucket{{reporter=\"destination\",destination_service_name=\"shipping\",destination_version=\"v1\",le=\"1\"}} {v1}\n\
             istio_request_duration_milliseconds_bucket{{reporter=\"destination\",destination_service_name=\"shipping\",destination_version=\"v1\",le=\"+Inf\"}} {v1}\n"
        )
    }

    #[test]
    fn rates_success_mtls_and_split() {
        let mut before = Totals::default();
        before.add(&promtext::parse(&text(90, 10, 0)));
        let mut now = Totals::default();
        now.add(&promtext::parse(&text(180, 20, 10)));
        let w = now.since(&before);
        let v2 = &w.by_key[&("shipping".to_string(), "v2".to_string())];
        assert_eq!(v2.requests, 20.0);
        assert_eq!(v2.ok, 10.0);
        assert_eq!(v2.mtls, 10.0);
        let v1 = &w.by_key[&("shipping".to_string(), "v1".to_string())];
        assert_eq!(v1.requests, 90.0, "source-reported samples are not counted");
        assert!(v1.quantile(0.5).unwrap() <= 1.0);
        let table = render(&w, 2.0, &now);
        assert!(table.contains("shipping     v1           45.0"), "{table}");
        assert!(
            table.contains("shipping split since start: v1 85.7%, v2 14.3%"),
            "{table}"
        );
    }
}
