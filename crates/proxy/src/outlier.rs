//! Outlier detection as Envoy does it for consecutive errors: each endpoint
//! counts 5xx answers and gateway failures (502, 503, 504) in a row, local
//! failures (connect failure, reset, timeout) counting as both; crossing a
//! threshold ejects the endpoint, if no more than `max_ejection_percent` of
//! the cluster would then be ejected. A sweep every `interval` returns
//! endpoints whose ejection time (base × their ejection count, capped at
//! the maximum) has passed, and lowers the count of endpoints that stayed
//! healthy for an interval.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::balance::EndpointSet;
use crate::model::cluster_policy::OutlierConfig;

/// What came of one request to an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered with this status.
    Status(u16),
    /// No answer: connect failure, reset or timeout (locally originated).
    LocalFailure,
}

/// One endpoint's outlier state; it survives endpoint-set rebuilds.
#[derive(Debug, Default)]
pub struct HostOutlier {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    ejected: AtomicBool,
    state: Mutex<EjectState>,
}

#[derive(Debug, Default)]
struct EjectState {
    ejected_at: Option<Instant>,
    /// The ejection-time multiplier (Envoy's eject time backoff).
    backoff: u32,
    last_unejected: Option<Instant>,
    total: u64,
}

impl HostOutlier {
    /// Whether the endpoint is ejected now.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// How many times it has been ejected.
    pub fn ejections(&self) -> u64 {
        self.lock().total
    }

    /// The current ejection-time multiplier.
    pub fn backoff(&self) -> u32 {
        self.lock().backoff
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EjectState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an outcome; true when it crossed an enforced threshold (the
    /// caller then asks [`try_eject`]).
    pub fn record(&self, cfg: &OutlierConfig, outcome: Outcome) -> bool {
        let (is_5xx, is_gateway) = match outcome {
            Outcome::LocalFailure => (true, true),
            Outcome::Status(s) => ((500..600).contains(&s), matches!(s, 502..=504)),
        };
        let bump = |counter: &AtomicU32, hit: bool| {
            if hit {
                counter.fetch_add(1, Ordering::Relaxed) + 1
            } else {
                counter.store(0, Ordering::Relaxed);
                0
            }
        };
        let n5 = bump(&self.consecutive_5xx, is_5xx);
        let ngw = bump(&self.consecutive_gateway, is_gateway);
        let roll = |pct: u32| pct >= 100 || (pct > 0 && rand::random_range(0..100) < pct);
        (cfg.consecutive_5xx > 0 && n5 >= cfg.consecutive_5xx && roll(cfg.enforcing_5xx))
            || (cfg.consecutive_gateway > 0
                && ngw >= cfg.consecutive_gateway
                && roll(cfg.enforcing_gateway))
    }

    fn reset_counters(&self) {
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway.store(0, Ordering::Relaxed);
    }
}

/// Ejects `host` (an index into `set.all`) unless that would exceed
/// `max_ejection_percent`; true when it was ejected.
pub fn try_eject(cfg: &OutlierConfig, set: &EndpointSet, host: usize, now: Instant) -> bool {
    let Some(h) = set.all.get(host) else {
        return false;
    };
    if h.outlier.is_ejected() {
        return false;
    }
    let ejected = set.all.iter().filter(|e| e.outlier.is_ejected()).count();
    let total = set.all.len().max(1);
    // Envoy: the percentage counts the host about to be ejected.
    let percent = 100.0 * (ejected + 1) as f64 / total as f64;
    let allowed = percent <= f64::from(cfg.max_ejection_percent)
        || (cfg.always_eject_one_host && ejected == 0);
    h.outlier.reset_counters();
    if !allowed {
        return false;
    }
    let mut st = h.outlier.lock();
    // The multiplier grows while base × multiplier stays under the cap.
    if cfg.base_ejection_time * st.backoff < cfg.max_ejection_time {
        st.backoff += 1;
    }
    st.ejected_at = Some(now);
    st.total += 1;
    h.outlier.ejected.store(true, Ordering::Relaxed);
    true
}

/// How long an ejection with this multiplier lasts.
pub fn ejection_time(cfg: &OutlierConfig, backoff: u32) -> Duration {
    (cfg.base_ejection_time * backoff.max(1)).min(cfg.max_ejection_time)
}

/// One sweep: returns endpoints whose time is up and lowers the multiplier
/// of those healthy for an interval. True when some endpoint returned.
pub fn sweep(cfg: &OutlierConfig, set: &EndpointSet, now: Instant) -> bool {
    let mut changed = false;
    for h in &set.all {
        let mut st = h.outlier.lock();
        if h.outlier.is_ejected() {
            let due = st
                .ejected_at
                .is_some_and(|at| now.duration_since(at) >= ejection_time(cfg, st.backoff));
            if due {
                st.ejected_at = None;
                st.last_unejected = Some(now);
                h.outlier.ejected.store(false, Ordering::Relaxed);
                h.outlier.reset_counters();
                changed = true;
            }
        } else if st.backoff > 0
            && st
                .last_unejected
                .is_some_and(|at| now.duration_since(at) >= cfg.interval)
        {
            st.backoff -= 1;
            st.last_unejected = Some(now);
        }
    }
    changed
}

/// Whether any endpoint is ejected or still carries a multiplier (the
/// sweeper keeps running while so).
pub fn active(set: &EndpointSet) -> bool {
    set.all
        .iter()
        .any(|h| h.outlier.is_ejected() || h.outlier.lock().backoff > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cluster::EndpointModel;
    use std::net::SocketAddr;

    fn cfg() -> OutlierConfig {
        OutlierConfig {
            consecutive_5xx: 2,
            enforcing_5xx: 100,
            consecutive_gateway: 5,
            enforcing_gateway: 0,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
            always_eject_one_host: false,
        }
    }

    fn set(n: u8) -> EndpointSet {
        let models: Vec<EndpointModel> = (0..n)
            .map(|i| EndpointModel {
                address: SocketAddr::from(([10, 0, 0, i + 1], 80)),
                hostname: None,
                weight: 1,
                healthy: true,
                workload: None,
                locality: String::new(),
                locality_weight: 1,
                priority: 0,
                transport_match: Default::default(),
            })
            .collect();
        EndpointSet::build(&models, None, &Default::default())
    }

    #[test]
    fn consecutive_errors_eject_and_success_resets() {
        let c = cfg();
        let s = set(2);
        let h = &s.all[0].outlier;
        assert!(!h.record(&c, Outcome::Status(500)));
        assert!(!h.record(&c, Outcome::Status(200)));
        assert!(!h.record(&c, Outcome::Status(503)));
        assert!(h.record(&c, Outcome::LocalFailure));
        assert!(try_eject(&c, &s, 0, Instant::now()));
        assert!(h.is_ejected());
    }

    #[test]
    fn max_ejection_percent_limits_ejections() {
        let c = cfg();
        let s = set(2);
        let now = Instant::now();
        assert!(try_eject(&c, &s, 0, now));
        // A second host would make 100% > 50%.
        assert!(!try_eject(&c, &s, 1, now));
    }

    #[test]
    fn ejection_time_grows_with_the_count_and_decays() {
        let c = cfg();
        let s = set(2);
        let t0 = Instant::now();
        assert!(try_eject(&c, &s, 0, t0));
        assert!(!sweep(&c, &s, t0 + Duration::from_secs(9)));
        assert!(sweep(&c, &s, t0 + Duration::from_secs(10)));
        // Ejected again right away: twice the base.
        let t1 = t0 + Duration::from_secs(10);
        assert!(try_eject(&c, &s, 0, t1));
        assert_eq!(s.all[0].outlier.backoff(), 2);
        assert!(!sweep(&c, &s, t1 + Duration::from_secs(19)));
        assert!(sweep(&c, &s, t1 + Duration::from_secs(20)));
        // Healthy for an interval: the multiplier decays.
        sweep(&c, &s, t1 + Duration::from_secs(21));
        assert_eq!(s.all[0].outlier.backoff(), 1);
        assert_eq!(s.all[0].outlier.ejections(), 2);
    }
}
