//! Endpoint sets and load balancing (round robin, least request with power
//! of two choices, random), with per-endpoint active-request counts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::model::cluster::{EndpointModel, LbKind};

/// One endpoint with its live counters.
#[derive(Debug)]
pub struct Endpoint {
    /// What the control plane said about it.
    pub model: EndpointModel,
    /// Requests or connections in flight to it.
    pub active: AtomicUsize,
    /// `address` as a URI authority, built once.
    pub authority: http::uri::Authority,
}

impl Endpoint {
    /// A fresh endpoint.
    pub fn new(model: EndpointModel) -> Self {
        let authority = http::uri::Authority::try_from(model.address.to_string().as_str())
            .unwrap_or_else(|_| http::uri::Authority::from_static("invalid"));
        Endpoint {
            model,
            active: AtomicUsize::new(0),
            authority,
        }
    }

    /// Its address.
    pub fn address(&self) -> SocketAddr {
        self.model.address
    }

    /// Counts one request in flight until the guard drops.
    pub fn track(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }
}

/// Decrements an endpoint's active count on drop.
#[derive(Debug)]
pub struct ActiveGuard(Arc<Endpoint>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The endpoints of a cluster at one moment.
#[derive(Debug, Default)]
pub struct EndpointSet {
    /// Every endpoint.
    pub all: Vec<Arc<Endpoint>>,
    /// Those that may take traffic.
    pub healthy: Vec<Arc<Endpoint>>,
    healthy_weight: u64,
    uniform: bool,
}

impl EndpointSet {
    /// Builds a set, keeping the live counters of endpoints that were already
    /// in `previous` (same address).
    pub fn build(models: &[EndpointModel], previous: Option<&EndpointSet>) -> Self {
        let all: Vec<Arc<Endpoint>> = models
            .iter()
            .map(|m| {
                previous
                    .and_then(|p| p.all.iter().find(|e| e.model == *m))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Endpoint::new(m.clone())))
            })
            .collect();
        let healthy: Vec<Arc<Endpoint>> = all.iter().filter(|e| e.model.healthy).cloned().collect();
        let healthy_weight = healthy.iter().map(|e| u64::from(e.model.weight)).sum();
        let uniform = healthy
            .windows(2)
            .all(|w| w[0].model.weight == w[1].model.weight);
        EndpointSet {
            all,
            healthy,
            healthy_weight,
            uniform,
        }
    }

    /// Chooses a healthy endpoint. `counter` is the cluster's round-robin
    /// position; `random` yields uniform numbers.
    pub fn pick(
        &self,
        lb: LbKind,
        counter: &AtomicUsize,
        mut random: impl FnMut(usize) -> usize,
    ) -> Option<&Arc<Endpoint>> {
        let n = self.healthy.len();
        if n == 0 {
            return None;
        }
        if n == 1 {
            return self.healthy.first();
        }
        match lb {
            LbKind::RoundRobin => {
                let ticket = counter.fetch_add(1, Ordering::Relaxed);
                if self.uniform {
                    self.healthy.get(ticket % n)
                } else {
                    self.by_weight((ticket as u64) % self.healthy_weight.max(1))
                }
            }
            LbKind::Random => {
                if self.uniform {
                    self.healthy.get(random(n))
                } else {
                    self.by_weight(random(self.healthy_weight as usize) as u64)
                }
            }
            LbKind::LeastRequest { choices } => {
                let mut best = &self.healthy[random(n)];
                for _ in 1..choices.max(2) {
                    let other = &self.healthy[random(n)];
                    // Weighted: compare active/weight without division.
                    let lhs =
                        other.active.load(Ordering::Relaxed) as u64 * u64::from(best.model.weight);
                    let rhs =
                        best.active.load(Ordering::Relaxed) as u64 * u64::from(other.model.weight);
                    if lhs < rhs {
                        best = other;
                    }
                }
                Some(best)
            }
        }
    }

    fn by_weight(&self, mut point: u64) -> Option<&Arc<Endpoint>> {
        for e in &self.healthy {
            let w = u64::from(e.model.weight);
            if point < w {
                return Some(e);
            }
            point -= w;
        }
        self.healthy.last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16, weight: u32, healthy: bool) -> EndpointModel {
        EndpointModel {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            hostname: None,
            weight,
            healthy,
            workload: None,
        }
    }

    #[test]
    fn round_robin_skips_unhealthy() {
        let set = EndpointSet::build(&[ep(1, 1, true), ep(2, 1, false), ep(3, 1, true)], None);
        let c = AtomicUsize::new(0);
        let picks: Vec<u16> = (0..4)
            .map(|_| {
                set.pick(LbKind::RoundRobin, &c, |_| 0)
                    .unwrap()
                    .address()
                    .port()
            })
            .collect();
        assert_eq!(picks, vec![1, 3, 1, 3]);
    }

    #[test]
    fn weighted_round_robin_follows_weights() {
        let set = EndpointSet::build(&[ep(1, 3, true), ep(2, 1, true)], None);
        let c = AtomicUsize::new(0);
        let ones = (0..400)
            .filter(|_| {
                set.pick(LbKind::RoundRobin, &c, |_| 0)
                    .unwrap()
                    .address()
                    .port()
                    == 1
            })
            .count();
        assert_eq!(ones, 300);
    }

    #[test]
    fn least_request_prefers_idle_endpoint() {
        let set = EndpointSet::build(&[ep(1, 1, true), ep(2, 1, true)], None);
        let _busy: Vec<_> = (0..5).map(|_| set.healthy[0].track()).collect();
        let c = AtomicUsize::new(0);
        let mut i = 0;
        // Random picks alternate between the two; the idle one must win.
        let pick = set
            .pick(LbKind::LeastRequest { choices: 2 }, &c, |_| {
                i += 1;
                i % 2
            })
            .unwrap();
        assert_eq!(pick.address().port(), 2);
    }

    #[test]
    fn no_healthy_endpoint() {
        let set = EndpointSet::build(&[ep(1, 1, false)], None);
        assert!(
            set.pick(LbKind::RoundRobin, &AtomicUsize::new(0), |_| 0)
                .is_none()
        );
    }

    #[test]
    fn counters_survive_rebuild() {
        let a = EndpointSet::build(&[ep(1, 1, true)], None);
        let _g = a.healthy[0].track();
        let b = EndpointSet::build(&[ep(1, 1, true), ep(2, 1, true)], Some(&a));
        assert_eq!(b.all[0].active.load(Ordering::Relaxed), 1);
    }
}
