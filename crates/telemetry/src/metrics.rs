//! Istio's standard metrics with Istio's exact names and label sets, exposed
//! in OpenMetrics text via prometheus-client.
//!
//! Hot path: one hash lookup under a read lock per call, no allocation once
//! a label set has been seen; a request with the very label values of the
//! thread's previous one (the same shared strings) skips even that. All
//! metrics of one label set live together, and a [`Collector`] writes them
//! out as Istio's metric families at scrape time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockWriteGuard};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::TypedMetric;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

mod label;
#[cfg(test)]
mod tests;

pub use label::Label;

/// Content type of what [`IstioMetrics::encode`] produces (OpenMetrics text,
/// which Prometheus scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Istio's buckets for `istio_request_duration_milliseconds`.
pub const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Istio's buckets for `istio_request_bytes` and `istio_response_bytes`.
pub const BYTES_BUCKETS: [f64; 10] = [
    1.0,
    10.0,
    100.0,
    1000.0,
    10000.0,
    100000.0,
    1000000.0,
    10000000.0,
    100000000.0,
    1000000000.0,
];

/// Istio's labels for the request metrics (`istio_requests_total`,
/// `istio_request_duration_milliseconds`, `istio_request_bytes`,
/// `istio_response_bytes`). Field names are the label names; values are
/// shared [`Label`]s so a precomputed set is cheap to copy per request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet, Default)]
#[allow(missing_docs)] // each field is the Istio label of the same name
pub struct RequestLabels {
    pub reporter: Label,
    pub source_workload: Label,
    pub source_workload_namespace: Label,
    pub source_principal: Label,
    pub source_app: Label,
    pub source_version: Label,
    pub source_cluster: Label,
    pub source_canonical_service: Label,
    pub source_canonical_revision: Label,
    pub destination_workload: Label,
    pub destination_workload_namespace: Label,
    pub destination_principal: Label,
    pub destination_app: Label,
    pub destination_version: Label,
    pub destination_service: Label,
    pub destination_service_name: Label,
    pub destination_service_namespace: Label,
    pub destination_canonical_service: Label,
    pub destination_canonical_revision: Label,
    pub destination_cluster: Label,
    pub request_protocol: Label,
    pub response_code: Label,
    pub grpc_response_status: Label,
    pub response_flags: Label,
    pub connection_security_policy: Label,
}

/// Istio's labels for the TCP metrics (`istio_tcp_*`). Like
/// [`RequestLabels`] without `response_code` and `grpc_response_status`;
/// Istio keeps `request_protocol` on TCP metrics (value `"tcp"`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet, Default)]
#[allow(missing_docs)] // each field is the Istio label of the same name
pub struct TcpLabels {
    pub reporter: String,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub source_app: String,
    pub source_version: String,
    pub source_cluster: String,
    pub source_canonical_service: String,
    pub source_canonical_revision: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_app: String,
    pub destination_version: String,
    pub destination_service: String,
    pub destination_service_name: String,
    pub destination_service_namespace: String,
    pub destination_canonical_service: String,
    pub destination_canonical_revision: String,
    pub destination_cluster: String,
    pub request_protocol: String,
    pub response_flags: String,
    pub connection_security_policy: String,
}

const UNKNOWN: &str = "unknown";

// === impl RequestLabels ===

impl RequestLabels {
    /// Every label `"unknown"`, as Istio reports missing values, except
    /// `response_flags` (`"-"`) and `grpc_response_status` (`""`).
    pub fn unknown() -> Self {
        let mut l = Self::default();
        for v in l.values_mut() {
            *v = Label::unknown();
        }
        l.response_flags = Label::intern("-");
        l.grpc_response_status = Label::default();
        l
    }

    /// Whether every label is the very same shared string as `other`'s
    /// (equal values in different allocations count as different).
    fn same_values(&self, other: &Self) -> bool {
        self.values()
            .into_iter()
            .zip(other.values())
            .all(|(a, b)| a.same(b))
    }
}

/// `values` and `values_mut` of [`RequestLabels`], from one list of its
/// fields.
macro_rules! request_label_values {
    ($($field:ident),+ $(,)?) => {
        impl RequestLabels {
            fn values(&self) -> [&Label; 25] {
                [$(&self.$field),+]
            }

            fn values_mut(&mut self) -> [&mut Label; 25] {
                [$(&mut self.$field),+]
            }
        }
    };
}

request_label_values!(
    reporter,
    source_workload,
    source_workload_namespace,
    source_principal,
    source_app,
    source_version,
    source_cluster,
    source_canonical_service,
    source_canonical_revision,
    destination_workload,
    destination_workload_namespace,
    destination_principal,
    destination_app,
    destination_version,
    destination_service,
    destination_service_name,
    destination_service_namespace,
    destination_canonical_service,
    destination_canonical_revision,
    destination_cluster,
    request_protocol,
    response_code,
    grpc_response_status,
    response_flags,
    connection_security_policy,
);

// === impl TcpLabels ===

impl TcpLabels {
    /// Every label `"unknown"`, except `request_protocol` (`"tcp"`) and
    /// `response_flags` (`"-"`).
    pub fn unknown() -> Self {
        let mut l = Self::default();
        for v in l.values_mut() {
            v.push_str(UNKNOWN);
        }
        l.request_protocol = "tcp".to_string();
        l.response_flags = "-".to_string();
        l
    }

    fn values_mut(&mut self) -> [&mut String; 23] {
        [
            &mut self.reporter,
            &mut self.source_workload,
            &mut self.source_workload_namespace,
            &mut self.source_principal,
            &mut self.source_app,
            &mut self.source_version,
            &mut self.source_cluster,
            &mut self.source_canonical_service,
            &mut self.source_canonical_revision,
            &mut self.destination_workload,
            &mut self.destination_workload_namespace,
            &mut self.destination_principal,
            &mut self.destination_app,
            &mut self.destination_version,
            &mut self.destination_service,
            &mut self.destination_service_name,
            &mut self.destination_service_namespace,
            &mut self.destination_canonical_service,
            &mut self.destination_canonical_revision,
            &mut self.destination_cluster,
            &mut self.request_protocol,
            &mut self.response_flags,
            &mut self.connection_security_policy,
        ]
    }
}

/// A label value type that [`escaped`] can rewrite.
trait EscapeValue {
    /// Escapes in place; `true` when anything changed.
    fn escape(&mut self) -> bool;
}

impl EscapeValue for String {
    fn escape(&mut self) -> bool {
        escape_value(self)
    }
}

impl EscapeValue for Label {
    fn escape(&mut self) -> bool {
        let mut s = self.as_str().to_string();
        let changed = escape_value(&mut s);
        if changed {
            *self = Label::from(s);
        }
        changed
    }
}

/// prometheus-client writes label values verbatim, and some come from peers
/// (metadata headers). Escape `\`, `"` and newlines once per new series.
fn escape_value(v: &mut String) -> bool {
    if !v.contains(['\\', '"', '\n']) {
        return false;
    }
    let mut out = String::with_capacity(v.len() + 8);
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    *v = out;
    true
}

/// Escaped copy of a label set, or `None` when it needs no escaping.
fn escaped<L: Clone, V: EscapeValue, const N: usize>(
    labels: &L,
    values_mut: impl FnOnce(&mut L) -> [&mut V; N],
) -> Option<L> {
    let mut copy = labels.clone();
    let mut changed = false;
    for v in values_mut(&mut copy) {
        changed |= v.escape();
    }
    changed.then_some(copy)
}

// === series storage ===

/// Ids for [`Series`], never reused.
static NEXT_SERIES_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The request series this thread recorded into last, with its labels
    /// and its [`Series`]' id. The next request on a connection mostly has
    /// the very same label values (the same shared strings): comparing 25
    /// pointers finds its series without hashing and comparing 25 strings.
    static LAST_REQUEST_SERIES: RefCell<Option<(u64, RequestLabels, Arc<RequestSeries>)>> =
        const { RefCell::new(None) };
}

#[derive(Debug)]
struct RequestSeries {
    export: Option<RequestLabels>,
    requests: Counter,
    duration_ms: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

#[derive(Debug)]
struct TcpSeries {
    export: Option<TcpLabels>,
    opened: Counter,
    closed: Counter,
    sent: Counter,
    received: Counter,
}

/// Label sets are hashed with foldhash: fast, and seeded per process so
/// label values from peers cannot be chosen to collide.
type LabelMap<L, S> = HashMap<L, Arc<S>, foldhash::fast::RandomState>;

#[derive(Debug)]
struct SeriesMap<L, S>(RwLock<LabelMap<L, S>>);

impl<L: Hash + Eq + Clone, S> SeriesMap<L, S> {
    fn new() -> Self {
        Self(RwLock::new(HashMap::default()))
    }

    /// The series for `labels`, created with `make` first if needed (the
    /// only path that allocates).
    fn get(&self, labels: &L, make: impl FnOnce(&L) -> S) -> Arc<S> {
        {
            let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(s) = map.get(labels) {
                return s.clone();
            }
        }
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        map.entry(labels.clone())
            .or_insert_with(|| Arc::new(make(labels)))
            .clone()
    }

    /// Runs `f` on the series for `labels` (see [`SeriesMap::get`]).
    fn with(&self, labels: &L, make: impl FnOnce(&L) -> S, f: impl FnOnce(&S)) {
        {
            let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(s) = map.get(labels) {
                return f(s);
            }
        }
        f(&self.get(labels, make))
    }
}

#[derive(Debug)]
struct Series {
    /// Tells these series from another `IstioMetrics`' in
    /// [`LAST_REQUEST_SERIES`].
    id: u64,
    requests: SeriesMap<RequestLabels, RequestSeries>,
    tcp: SeriesMap<TcpLabels, TcpSeries>,
}

/// Writes one metric family from a series map at scrape time.
fn encode_family<L, S, M>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    map: &LabelMap<L, S>,
    pick: impl Fn(&S) -> (Option<&L>, &M),
) -> fmt::Result
where
    L: EncodeLabelSet,
    M: EncodeMetric + TypedMetric,
{
    let mut metric = enc.encode_descriptor(name, help, None, M::TYPE)?;
    for (labels, series) in map {
        let (export, m) = pick(series.as_ref());
        m.encode(metric.encode_family(export.unwrap_or(labels))?)?;
    }
    Ok(())
}

#[derive(Debug)]
struct StandardCollector(Arc<Series>);

impl Collector for StandardCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        {
            let map = self
                .0
                .requests
                .0
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let m = &*map;
            // prometheus-client appends `_total` to counters.
            encode_family(
                &mut enc,
                "istio_requests",
                "Requests handled by the proxy.",
                m,
                |s| (s.export.as_ref(), &s.requests),
            )?;
            encode_family(
                &mut enc,
                "istio_request_duration_milliseconds",
                "Request duration in milliseconds.",
                m,
                |s| (s.export.as_ref(), &s.duration_ms),
            )?;
            encode_family(
                &mut enc,
                "istio_request_bytes",
                "Request body size in bytes.",
                m,
                |s| (s.export.as_ref(), &s.request_bytes),
            )?;
            encode_family(
                &mut enc,
                "istio_response_bytes",
                "Response body size in bytes.",
                m,
                |s| (s.export.as_ref(), &s.response_bytes),
            )?;
        }
        let map = self.0.tcp.0.read().unwrap_or_else(PoisonError::into_inner);
        let m = &*map;
        encode_family(
            &mut enc,
            "istio_tcp_connections_opened",
            "TCP connections opened.",
            m,
            |s| (s.export.as_ref(), &s.opened),
        )?;
        encode_family(
            &mut enc,
            "istio_tcp_connections_closed",
            "TCP connections closed.",
            m,
            |s| (s.export.as_ref(), &s.closed),
        )?;
        encode_family(
            &mut enc,
            "istio_tcp_sent_bytes",
            "Bytes sent on TCP connections.",
            m,
            |s| (s.export.as_ref(), &s.sent),
        )?;
        encode_family(
            &mut enc,
            "istio_tcp_received_bytes",
            "Bytes received on TCP connections.",
            m,
            |s| (s.export.as_ref(), &s.received),
        )
    }
}

/// Istio's standard metrics plus a registry for the proxy's own metrics.
/// Cheap to clone (an `Arc`), `Send + Sync`.
#[derive(Clone, Debug)]
pub struct IstioMetrics {
    series: Arc<Series>,
    registry: Arc<RwLock<Registry>>,
}

// === impl IstioMetrics ===

impl Default for IstioMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl IstioMetrics {
    /// A fresh set of Istio standard metrics with an otherwise empty registry.
    pub fn new() -> Self {
        let series = Arc::new(Series {
            id: NEXT_SERIES_ID.fetch_add(1, Ordering::Relaxed),
            requests: SeriesMap::new(),
            tcp: SeriesMap::new(),
        });
        let mut registry = Registry::default();
        registry.register_collector(Box::new(StandardCollector(series.clone())));
        Self {
            series,
            registry: Arc::new(RwLock::new(registry)),
        }
    }

    /// Records one finished HTTP/gRPC request: bumps `istio_requests_total`
    /// and observes duration, request size and response size.
    pub fn record_request(
        &self,
        labels: &RequestLabels,
        duration: Duration,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        let make = |l: &RequestLabels| RequestSeries {
            export: escaped(l, RequestLabels::values_mut),
            requests: Counter::default(),
            duration_ms: Histogram::new(DURATION_BUCKETS_MS),
            request_bytes: Histogram::new(BYTES_BUCKETS),
            response_bytes: Histogram::new(BYTES_BUCKETS),
        };
        let observe = |s: &RequestSeries| {
            s.requests.inc();
            s.duration_ms.observe(duration.as_secs_f64() * 1000.0);
            s.request_bytes.observe(request_bytes as f64);
            s.response_bytes.observe(response_bytes as f64);
        };
        let id = self.series.id;
        LAST_REQUEST_SERIES.with(|last| {
            let mut last = last.borrow_mut();
            if let Some((last_id, last_labels, s)) = &*last
                && *last_id == id
                && last_labels.same_values(labels)
            {
                return observe(s);
            }
            let s = self.series.requests.get(labels, make);
            observe(&s);
            *last = Some((id, labels.clone(), s));
        });
    }

    fn tcp(&self, labels: &TcpLabels, f: impl FnOnce(&TcpSeries)) {
        let make = |l: &TcpLabels| TcpSeries {
            export: escaped(l, TcpLabels::values_mut),
            opened: Counter::default(),
            closed: Counter::default(),
            sent: Counter::default(),
            received: Counter::default(),
        };
        self.series.tcp.with(labels, make, f);
    }

    /// Bumps `istio_tcp_connections_opened_total`.
    pub fn tcp_opened(&self, labels: &TcpLabels) {
        self.tcp(labels, |s| {
            s.opened.inc();
        });
    }

    /// Bumps `istio_tcp_connections_closed_total`.
    pub fn tcp_closed(&self, labels: &TcpLabels) {
        self.tcp(labels, |s| {
            s.closed.inc();
        });
    }

    /// Adds to `istio_tcp_sent_bytes_total` and
    /// `istio_tcp_received_bytes_total` (call periodically and at close).
    pub fn tcp_bytes(&self, labels: &TcpLabels, sent: u64, received: u64) {
        self.tcp(labels, |s| {
            s.sent.inc_by(sent);
            s.received.inc_by(received);
        });
    }

    /// Registers an extra metric (e.g. a proxy-specific gauge). Counters must
    /// be named without `_total`; prometheus-client appends it.
    pub fn register(&self, name: impl Into<String>, help: impl Into<String>, metric: impl Metric) {
        self.registry_mut().register(name, help, metric);
    }

    /// Registers an extra collector, called at every scrape.
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        self.registry_mut().register_collector(collector);
    }

    /// Write access to the underlying registry (sub-registries, units …).
    /// Do not hold it across an `encode` on the same thread.
    pub fn registry_mut(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends the OpenMetrics text exposition (ending in `# EOF`) to `buf`.
    pub fn encode_into(&self, buf: &mut String) {
        let registry = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        // Writing into a String cannot fail; a metric's own error is logged.
        if let Err(e) = prometheus_client::encoding::text::encode(buf, &registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
    }

    /// The OpenMetrics text exposition, served with [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut buf = String::with_capacity(16 * 1024);
        self.encode_into(&mut buf);
        buf
    }
}
