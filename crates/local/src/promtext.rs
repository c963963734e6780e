//! Reading Prometheus text exposition (the proxies' `/stats/prometheus`):
//! samples with their labels. Only what the demo's summary and the tests
//! read; comments and types are skipped, malformed lines ignored.

use std::collections::BTreeMap;

/// One sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`, `_sum`, `_count` suffixes as written).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// A label's value, or "".
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map(String::as_str).unwrap_or("")
    }
}

/// Parses the text; lines that are not samples are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let end;
        loop {
            while chars
                .peek()
                .is_some_and(|(_, c)| *c == ',' || c.is_whitespace())
            {
                chars.next();
            }
            let (start, c) = *chars.peek()?;
            if c == '}' {
                end = start + 1;
                break;
            }
            let eq = r[start..].find('=')? + start;
            let key = r[start..eq].trim().to_string();
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                let (_, c) = chars.next()?;
                match c {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    c => value.push(c),
                }
            }
            labels.insert(key, value);
        }
        rest = &r[end..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The `le` buckets of a histogram (upper bound → cumulative count),
/// summed over the samples `keep` accepts.
pub fn buckets<'a>(
    samples: impl IntoIterator<Item = &'a Sample>,
    histogram: &str,
    keep: impl Fn(&Sample) -> bool,
) -> Vec<(f64, f64)> {
    let bucket = format!("{histogram}_bucket");
    let mut m: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for s in samples {
        if s.name != bucket || !keep(s) {
            continue;
        }
        let le = match s.label("le") {
            "+Inf" => f64::INFINITY,
            v => match v.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        let e = m.entry(le.to_bits()).or_insert((le, 0.0));
        e.1 += s.value;
    }
    let mut v: Vec<(f64, f64)> = m.into_values().collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// The `q` quantile (0..1) of cumulative buckets, interpolated within the
/// bucket as Prometheus' `histogram_quantile` does; `None` without data.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let in_bucket = count - prev.1;
            let frac = if in_bucket > 0.0 {
                (rank - prev.1) / in_bucket
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, count);
    }
    Some(prev.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_samples() {
        let text = r#"# HELP istio_requests_total Requests
# TYPE istio_requests_total counter
istio_requests_total{reporter="source",destination_service="shipping.default.svc.cluster.local",destination_version="v2",response_code="200",connection_security_policy="unknown"} 42
istio_requests_total{reporter="destination",path="a\"b\\c",x="1,2"} 3 1700000000
istio_tcp_connections_opened_total 7
garbage{ 1
"#;
        let s = parse(text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].label("destination_version"), "v2");
        assert_eq!(s[0].value, 42.0);
        assert_eq!(s[1].label("path"), "a\"b\\c");
        assert_eq!(s[1].label("x"), "1,2");
        assert_eq!(s[2].name, "istio_tcp_connections_opened_total");
    }

    #[test]
    fn quantiles_from_buckets() {
        let text = "d_bucket{le=\"1\"} 10\nd_bucket{le=\"5\"} 90\nd_bucket{le=\"10\"} 100\nd_bucket{le=\"+Inf\"} 100\n";
        let s = parse(text);
        let b = buckets(&s, "d", |_| true);
        assert_eq!(b.len(), 4);
        let p50 = quantile(0.5, &b).unwrap();
        assert!((p50 - 3.0).abs() < 1e-9, "{p50}");
        let p99 = quantile(0.99, &b).unwrap();
        assert!((p99 - 9.5).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.5, &[]), None);
    }
}
