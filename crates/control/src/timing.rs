//! Where a configuration change's time goes after the snapshot is built:
//! per snapshot, translation (translate + conversion to shared sets,
//! summed over the streams that asked) and the push (from publishing the
//! snapshot until every stream served the version before has asked for
//! its new resources, i.e. has its response queued), and per proxy
//! istiod's `pilot_proxy_queue_time` (publication to that stream asking).
//! Logged once per snapshot and exported on 15014.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Histogram buckets for these timings, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// The push timings of one snapshot version, kept while it is current.
#[derive(Debug)]
struct Round {
    version: u64,
    published: Instant,
    /// Streams served the version before (the ones this one must reach).
    expected: usize,
    served: usize,
    translate: Duration,
    reported: bool,
}

/// Push timing metrics and the round of the current snapshot.
#[derive(Debug)]
pub struct PushTiming {
    queue_time: Histogram,
    translate: Histogram,
    push: Histogram,
    round: Mutex<Option<Round>>,
}

impl Default for PushTiming {
    fn default() -> Self {
        PushTiming {
            queue_time: Histogram::new(BUCKETS),
            translate: Histogram::new(BUCKETS),
            push: Histogram::new(BUCKETS),
            round: Mutex::default(),
        }
    }
}

impl PushTiming {
    /// Registers the metrics (istiod's `pilot_proxy_queue_time`, and
    /// `meshwork_translate_seconds` / `meshwork_push_seconds` per snapshot).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pilot_proxy_queue_time",
            "Seconds from a snapshot's publication until a proxy's stream asked for its resources",
            self.queue_time.clone(),
        );
        registry.register(
            "meshwork_translate_seconds",
            "Seconds spent translating and converting one snapshot, summed over the streams",
            self.translate.clone(),
        );
        registry.register(
            "meshwork_push_seconds",
            "Seconds from a snapshot's publication until every stream of the version before had asked for its resources",
            self.push.clone(),
        );
    }

    /// A new snapshot `version` was published; `expected` streams were
    /// served before, `early` of them already this version (they asked
    /// before this was called). Reports the previous round if it never
    /// completed.
    pub fn published(&self, version: u64, expected: usize, early: usize) {
        let old = self
            .round
            .lock()
            .ok()
            .and_then(|mut r| {
                r.replace(Round {
                    version,
                    published: Instant::now(),
                    expected,
                    served: early,
                    translate: Duration::ZERO,
                    reported: false,
                })
            })
            .filter(|r| !r.reported && r.served > 0);
        if let Some(r) = old {
            self.report(&r, "superseded before every stream asked");
        }
    }

    /// A stream asked for `version` and got it after `took` of translation.
    pub fn served(&self, version: u64, took: Duration) {
        let Ok(mut round) = self.round.lock() else {
            return;
        };
        let Some(r) = round.as_mut().filter(|r| r.version == version) else {
            return;
        };
        self.queue_time.observe(r.published.elapsed().as_secs_f64());
        r.served += 1;
        r.translate += took;
        if !r.reported && r.served >= r.expected {
            r.reported = true;
            self.report(r, "every stream has its resources");
        }
    }

    fn report(&self, r: &Round, what: &str) {
        let push = r.published.elapsed();
        self.translate.observe(r.translate.as_secs_f64());
        self.push.observe(push.as_secs_f64());
        tracing::info!(
            version = r.version,
            proxies = r.served,
            translate_ms = r.translate.as_secs_f64() * 1e3,
            push_ms = push.as_secs_f64() * 1e3,
            "snapshot pushed: {what}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_reports_once_when_every_stream_asked() {
        let t = PushTiming::default();
        t.published(2, 3, 1);
        t.served(2, Duration::from_millis(3));
        assert!(!t.round.lock().unwrap().as_ref().unwrap().reported);
        t.served(1, Duration::from_millis(3));
        t.served(2, Duration::from_millis(4));
        let r = t.round.lock().unwrap();
        let r = r.as_ref().unwrap();
        assert!(r.reported);
        assert_eq!((r.served, r.translate), (3, Duration::from_millis(7)));
        let mut text = String::new();
        let mut reg = Registry::default();
        t.register(&mut reg);
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(text.contains("pilot_proxy_queue_time_count 2"), "{text}");
        assert!(text.contains("meshwork_push_seconds_count 1"), "{text}");
    }
}
