//! Endpoint sets and load balancing (round robin, least request with power
//! of two choices, random, ring hash and Maglev), with per-endpoint
//! active-request counts, EDS priorities, locality-weighted balancing,
//! Envoy's panic threshold, slow start and outlier ejection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::hash::HashTable;
use crate::locality::{locality_weight, priority_load};
use crate::model::cluster::{ClusterModel, EndpointModel, LbKind};
use crate::model::cluster_policy::SlowStart;
use crate::outlier::HostOutlier;

/// One endpoint with its live counters.
#[derive(Debug)]
pub struct Endpoint {
    /// What the control plane said about it.
    pub model: EndpointModel,
    /// Requests or connections in flight to it.
    pub active: AtomicUsize,
    /// HTTP/1.1 connections busy with a request (circuit breakers).
    pub h1_busy: std::sync::atomic::AtomicU32,
    /// `address` as a URI authority, built once.
    pub authority: http::uri::Authority,
    /// Outlier detection state.
    pub outlier: HostOutlier,
    /// When it joined a running cluster (slow start); `None` for the
    /// cluster's first endpoints.
    pub joined: Option<Instant>,
}

impl Endpoint {
    /// A fresh endpoint.
    pub fn new(model: EndpointModel) -> Self {
        let authority = http::uri::Authority::try_from(model.address.to_string().as_str())
            .unwrap_or_else(|_| http::uri::Authority::from_static("invalid"));
        Endpoint {
            model,
            active: AtomicUsize::new(0),
            h1_busy: Default::default(),
            authority,
            outlier: HostOutlier::default(),
            joined: None,
        }
    }

    /// Its address.
    pub fn address(&self) -> SocketAddr {
        self.model.address
    }

    /// Counts one request in flight until the guard drops.
    pub fn track(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone(), None)
    }
}

/// Decrements an endpoint's active count on drop, and releases the
/// cluster's circuit-breaker permit it holds, if any.
#[derive(Debug)]
pub struct ActiveGuard(Arc<Endpoint>, Option<crate::circuit::RequestPermit>);

impl ActiveGuard {
    /// Keeps `permit` until this guard drops (when the response ends).
    pub fn hold(mut self, permit: crate::circuit::RequestPermit) -> Self {
        self.1 = Some(permit);
        self
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a cluster balances: what [`EndpointSet::build`] needs to know.
#[derive(Clone, Debug)]
pub struct BalanceConfig {
    /// The algorithm.
    pub lb: LbKind,
    /// Envoy's healthy panic threshold, in percent.
    pub panic_threshold: f64,
    /// Slow start for endpoints that join later.
    pub slow_start: Option<SlowStart>,
    /// Envoy's locality-weighted balancing (`locality_weighted_lb_config`):
    /// a locality is chosen by weight first, then an endpoint in it.
    pub locality_weighted: bool,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig {
            lb: LbKind::RoundRobin,
            panic_threshold: 0.0,
            slow_start: None,
            locality_weighted: false,
        }
    }
}

impl BalanceConfig {
    /// The balancing part of a cluster.
    pub fn of(model: &ClusterModel) -> Self {
        BalanceConfig {
            lb: model.lb,
            panic_threshold: model.policy.panic_threshold,
            slow_start: model.policy.slow_start.clone(),
            locality_weighted: model.policy.locality_weighted,
        }
    }
}

/// The hosts of one EDS priority that may take traffic.
#[derive(Debug, Default)]
pub struct Level {
    /// The hosts.
    pub hosts: Vec<Arc<Endpoint>>,
    weight: u64,
    uniform: bool,
    table: Option<HashTable>,
    /// With locality-weighted balancing: each locality's effective weight
    /// and its usable hosts (empty otherwise).
    localities: Vec<(u64, Level)>,
}

impl Level {
    fn new(hosts: Vec<Arc<Endpoint>>, lb: LbKind) -> Self {
        let weight = hosts.iter().map(|e| u64::from(e.model.weight)).sum();
        let uniform = hosts
            .windows(2)
            .all(|w| w[0].model.weight == w[1].model.weight);
        let table = match lb {
            LbKind::RingHash { min_size, max_size } => {
                Some(HashTable::ring(&hosts, min_size, max_size))
            }
            LbKind::Maglev { table_size } => Some(HashTable::maglev(&hosts, table_size)),
            _ => None,
        };
        Level {
            hosts,
            weight,
            uniform,
            table,
            localities: Vec::new(),
        }
    }

    /// A level split by locality: `all` are every endpoint of the priority
    /// (usable or not, for the health share), `usable` says which take
    /// traffic. Localities whose effective weight is 0 are left out.
    fn by_locality(
        all: &[&Arc<Endpoint>],
        usable: impl Fn(&Arc<Endpoint>) -> bool,
        lb: LbKind,
    ) -> Self {
        let mut names: Vec<&str> = Vec::new();
        for e in all {
            if !names.contains(&e.model.locality.as_str()) {
                names.push(&e.model.locality);
            }
        }
        let localities = names
            .into_iter()
            .filter_map(|name| {
                let members: Vec<&Arc<Endpoint>> = all
                    .iter()
                    .copied()
                    .filter(|e| e.model.locality == name)
                    .collect();
                let hosts: Vec<Arc<Endpoint>> = members
                    .iter()
                    .copied()
                    .filter(|e| usable(e))
                    .cloned()
                    .collect();
                let weight =
                    locality_weight(members[0].model.locality_weight, hosts.len(), members.len());
                (weight > 0).then(|| (weight, Level::new(hosts, lb)))
            })
            .collect();
        let hosts = all.iter().copied().filter(|e| usable(e)).cloned().collect();
        Level {
            localities,
            ..Level::new(hosts, lb)
        }
    }
}

/// The endpoints of a cluster at one moment.
#[derive(Debug, Default)]
pub struct EndpointSet {
    /// Every endpoint.
    pub all: Vec<Arc<Endpoint>>,
    /// Those that may take traffic: healthy by the platform and not ejected
    /// (every endpoint in panic mode).
    pub healthy: Vec<Arc<Endpoint>>,
    /// The same, by priority (index 0 is priority 0).
    pub levels: Vec<Level>,
    /// Cumulative percent of traffic per level (the last is 100).
    load: Vec<u32>,
    /// Whether too few endpoints are healthy and all of them take traffic.
    pub panic: bool,
}

impl EndpointSet {
    /// Builds a set, keeping the live state (counters, outlier state) of
    /// endpoints that were already in `previous`.
    pub fn build(
        models: &[EndpointModel],
        previous: Option<&EndpointSet>,
        cfg: &BalanceConfig,
    ) -> Self {
        let all: Vec<Arc<Endpoint>> = models
            .iter()
            .map(|m| {
                previous
                    .and_then(|p| p.all.iter().find(|e| e.model == *m))
                    .cloned()
                    .unwrap_or_else(|| {
                        let mut e = Endpoint::new(m.clone());
                        if previous.is_some() && cfg.slow_start.is_some() {
                            e.joined = Some(Instant::now());
                        }
                        Arc::new(e)
                    })
            })
            .collect();
        Self::from_endpoints(all, cfg)
    }

    /// Recomputes which endpoints take traffic (after an ejection).
    pub fn rebuild(&self, cfg: &BalanceConfig) -> Self {
        Self::from_endpoints(self.all.clone(), cfg)
    }

    fn from_endpoints(all: Vec<Arc<Endpoint>>, cfg: &BalanceConfig) -> Self {
        let usable = |e: &Arc<Endpoint>| e.model.healthy && !e.outlier.is_ejected();
        let priorities = all
            .iter()
            .map(|e| e.model.priority)
            .max()
            .map_or(0, |p| p + 1);
        let mut per_level: Vec<(usize, usize)> = vec![(0, 0); priorities as usize];
        for e in &all {
            let slot = &mut per_level[e.model.priority as usize];
            slot.1 += 1;
            if usable(e) {
                slot.0 += 1;
            }
        }
        let (load, total_health) = priority_load(&per_level);
        let panic = !all.is_empty() && f64::from(total_health) < cfg.panic_threshold;
        let (healthy, levels, load) = if panic {
            // Envoy's panic mode: every endpoint takes traffic.
            let level = Level::new(all.clone(), cfg.lb);
            (all.clone(), vec![level], vec![100])
        } else {
            let by_locality = cfg.locality_weighted
                && !matches!(cfg.lb, LbKind::RingHash { .. } | LbKind::Maglev { .. });
            let levels = (0..priorities)
                .map(|p| {
                    if by_locality {
                        let members: Vec<&Arc<Endpoint>> =
                            all.iter().filter(|e| e.model.priority == p).collect();
                        return Level::by_locality(&members, usable, cfg.lb);
                    }
                    let hosts = all
                        .iter()
                        .filter(|e| e.model.priority == p && usable(e))
                        .cloned()
                        .collect();
                    Level::new(hosts, cfg.lb)
                })
                .collect();
            let healthy = all.iter().filter(|e| usable(e)).cloned().collect();
            (healthy, levels, load)
        };
        EndpointSet {
            all,
            healthy,
            levels,
            load,
            panic,
        }
    }

    /// Chooses an endpoint. `counter` is the cluster's round-robin position,
    /// `hash` the request's hash for the hash balancers (random without),
    /// `random(n)` a uniform number below `n`.
    pub fn pick(
        &self,
        cfg: &BalanceConfig,
        counter: &AtomicUsize,
        hash: Option<u64>,
        mut random: impl FnMut(usize) -> usize,
    ) -> Option<&Arc<Endpoint>> {
        if self.healthy.len() == 1 {
            return self.healthy.first();
        }
        let level = if self.levels.len() == 1 {
            &self.levels[0]
        } else {
            let point = match hash {
                Some(h) => (h % 100) as u32,
                None => random(100) as u32,
            };
            let i = self.load.iter().position(|c| point < *c)?;
            self.levels.get(i)?
        };
        let level = if level.localities.is_empty() {
            level
        } else {
            let total: u64 = level.localities.iter().map(|l| l.0).sum();
            let mut point = random(usize::try_from(total).unwrap_or(usize::MAX)) as u64;
            let mut chosen = None;
            for (w, l) in &level.localities {
                if point < *w {
                    chosen = Some(l);
                    break;
                }
                point -= w;
            }
            chosen?
        };
        let n = level.hosts.len();
        if n <= 1 {
            return level.hosts.first();
        }
        if let Some(slow) = &cfg.slow_start
            && matches!(cfg.lb, LbKind::RoundRobin | LbKind::LeastRequest { .. })
            && level.hosts.iter().any(|e| warming(e, slow))
        {
            return slow_start_pick(level, slow, &mut random);
        }
        match cfg.lb {
            LbKind::RingHash { .. } | LbKind::Maglev { .. } => {
                let h = hash.unwrap_or_else(|| random(usize::MAX) as u64);
                level
                    .table
                    .as_ref()
                    .and_then(|t| t.lookup(h))
                    .and_then(|i| level.hosts.get(i))
            }
            LbKind::RoundRobin => {
                let ticket = counter.fetch_add(1, Ordering::Relaxed);
                if level.uniform {
                    level.hosts.get(ticket % n)
                } else {
                    by_weight(level, (ticket as u64) % level.weight.max(1))
                }
            }
            LbKind::Random => {
                if level.uniform {
                    level.hosts.get(random(n))
                } else {
                    by_weight(level, random(level.weight as usize) as u64)
                }
            }
            LbKind::LeastRequest { choices } => {
                let mut best = &level.hosts[random(n)];
                for _ in 1..choices.max(2) {
                    let other = &level.hosts[random(n)];
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
}

fn by_weight(level: &Level, mut point: u64) -> Option<&Arc<Endpoint>> {
    for e in &level.hosts {
        let w = u64::from(e.model.weight);
        if point < w {
            return Some(e);
        }
        point -= w;
    }
    level.hosts.last()
}

fn warming(e: &Endpoint, slow: &SlowStart) -> bool {
    e.joined.is_some_and(|j| j.elapsed() < slow.window)
}

/// Envoy's slow start: a joining endpoint's weight is scaled by
/// `max(min_weight_percent, (elapsed / window) ^ (1 / aggression))`.
fn slow_start_pick<'a>(
    level: &'a Level,
    slow: &SlowStart,
    random: &mut impl FnMut(usize) -> usize,
) -> Option<&'a Arc<Endpoint>> {
    const SCALE: f64 = 1000.0;
    let weights: Vec<u64> = level
        .hosts
        .iter()
        .map(|e| {
            let factor = match e.joined {
                Some(j) if j.elapsed() < slow.window => {
                    let t = j.elapsed().as_secs_f64() / slow.window.as_secs_f64();
                    t.powf(1.0 / slow.aggression)
                        .max(slow.min_weight_percent / 100.0)
                }
                _ => 1.0,
            };
            ((f64::from(e.model.weight) * factor * SCALE) as u64).max(1)
        })
        .collect();
    let total: u64 = weights.iter().sum();
    let mut point = random(total as usize) as u64;
    for (e, w) in level.hosts.iter().zip(&weights) {
        if point < *w {
            return Some(e);
        }
        point -= w;
    }
    level.hosts.last()
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
            locality: String::new(),
            locality_weight: 1,
            priority: 0,
            transport_match: Default::default(),
        }
    }

    fn rr() -> BalanceConfig {
        BalanceConfig::default()
    }

    #[test]
    fn round_robin_skips_unhealthy() {
        let set = EndpointSet::build(
            &[ep(1, 1, true), ep(2, 1, false), ep(3, 1, true)],
            None,
            &rr(),
        );
        let c = AtomicUsize::new(0);
        let picks: Vec<u16> = (0..4)
            .map(|_| set.pick(&rr(), &c, None, |_| 0).unwrap().address().port())
            .collect();
        assert_eq!(picks, vec![1, 3, 1, 3]);
    }

    #[test]
    fn weighted_round_robin_follows_weights() {
        let set = EndpointSet::build(&[ep(1, 3, true), ep(2, 1, true)], None, &rr());
        let c = AtomicUsize::new(0);
        let ones = (0..400)
            .filter(|_| set.pick(&rr(), &c, None, |_| 0).unwrap().address().port() == 1)
            .count();
        assert_eq!(ones, 300);
    }

    #[test]
    fn least_request_prefers_idle_endpoint() {
        let set = EndpointSet::build(&[ep(1, 1, true), ep(2, 1, true)], None, &rr());
        let _busy: Vec<_> = (0..5).map(|_| set.healthy[0].track()).collect();
        let c = AtomicUsize::new(0);
        let lr = BalanceConfig {
            lb: LbKind::LeastRequest { choices: 2 },
            ..rr()
        };
        let mut i = 0;
        // Random picks alternate between the two; the idle one must win.
        let pick = set
            .pick(&lr, &c, None, |_| {
                i += 1;
                i % 2
            })
            .unwrap();
        assert_eq!(pick.address().port(), 2);
    }

    #[test]
    fn no_healthy_endpoint() {
        let set = EndpointSet::build(&[ep(1, 1, false)], None, &rr());
        assert!(set.pick(&rr(), &AtomicUsize::new(0), None, |_| 0).is_none());
    }

    #[test]
    fn counters_survive_rebuild() {
        let a = EndpointSet::build(&[ep(1, 1, true)], None, &rr());
        let _g = a.healthy[0].track();
        let b = EndpointSet::build(&[ep(1, 1, true), ep(2, 1, true)], Some(&a), &rr());
        assert_eq!(b.all[0].active.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn panic_mode_uses_every_endpoint() {
        let cfg = BalanceConfig {
            panic_threshold: 50.0,
            ..rr()
        };
        let set = EndpointSet::build(&[ep(1, 1, false), ep(2, 1, false)], None, &cfg);
        assert!(set.panic);
        assert!(set.pick(&cfg, &AtomicUsize::new(0), None, |_| 0).is_some());
        // Threshold 0 (what translate sends) never panics.
        let set = EndpointSet::build(&[ep(1, 1, false), ep(2, 1, false)], None, &rr());
        assert!(!set.panic);
    }

    #[test]
    fn locality_weights_choose_the_locality_first() {
        let mut a = ep(1, 1, true);
        let mut b = ep(2, 1, true);
        let mut b2 = ep(3, 1, false);
        (a.locality, a.locality_weight) = ("r1/z1/".into(), 80);
        (b.locality, b.locality_weight) = ("r1/z2/".into(), 20);
        (b2.locality, b2.locality_weight) = ("r1/z2/".into(), 20);
        let cfg = BalanceConfig {
            locality_weighted: true,
            ..rr()
        };
        let c = AtomicUsize::new(0);
        let share = |set: &EndpointSet| {
            (0..100)
                .filter(|k| {
                    let p = set.pick(&cfg, &c, None, |n| k * n / 100).unwrap();
                    p.address().port() == 1
                })
                .count()
        };
        // Both fully healthy: 80/20 whatever the endpoint counts.
        let set = EndpointSet::build(&[a.clone(), b.clone()], None, &cfg);
        assert_eq!(share(&set), 80);
        // Half of z2 unhealthy: 20 x 0.7 = 14 against 80.
        let set = EndpointSet::build(&[a.clone(), b.clone(), b2], None, &cfg);
        assert_eq!(share(&set), 86);
        // Without locality weighting: plain round robin over both.
        let set = EndpointSet::build(&[a, b], None, &rr());
        assert_eq!(share(&set), 50);
    }

    #[test]
    fn priorities_fail_over() {
        let mut local = ep(1, 1, true);
        let mut remote = ep(2, 1, true);
        local.priority = 0;
        remote.priority = 1;
        let c = AtomicUsize::new(0);
        let set = EndpointSet::build(&[local.clone(), remote.clone()], None, &rr());
        let mut r = 0;
        for _ in 0..100 {
            let p = set.pick(&rr(), &c, None, |n| {
                r += 1;
                r % n
            });
            assert_eq!(p.unwrap().address().port(), 1);
        }
        local.healthy = false;
        let set = EndpointSet::build(&[local, remote], None, &rr());
        let p = set.pick(&rr(), &c, None, |n| n / 2).unwrap();
        assert_eq!(p.address().port(), 2);
    }

    #[test]
    fn hash_balancers_follow_the_hash() {
        for lb in [
            LbKind::RingHash {
                min_size: 1024,
                max_size: 1 << 20,
            },
            LbKind::Maglev { table_size: 65537 },
        ] {
            let cfg = BalanceConfig { lb, ..rr() };
            let set = EndpointSet::build(
                &[ep(1, 1, true), ep(2, 1, true), ep(3, 1, true)],
                None,
                &cfg,
            );
            let c = AtomicUsize::new(0);
            let mut seen = std::collections::HashSet::new();
            for key in 0..64u64 {
                let h = crate::hash::hash_key(&key.to_le_bytes());
                let a = set.pick(&cfg, &c, Some(h), |_| 0).unwrap().address();
                let b = set.pick(&cfg, &c, Some(h), |_| 1).unwrap().address();
                assert_eq!(a, b);
                seen.insert(a);
            }
            assert_eq!(seen.len(), 3, "{lb:?}");
        }
    }

    #[test]
    fn slow_start_gives_a_new_endpoint_little_traffic() {
        let cfg = BalanceConfig {
            slow_start: Some(SlowStart {
                window: std::time::Duration::from_secs(60),
                aggression: 1.0,
                min_weight_percent: 10.0,
            }),
            ..rr()
        };
        let first = EndpointSet::build(&[ep(1, 1, true)], None, &cfg);
        let set = EndpointSet::build(&[ep(1, 1, true), ep(2, 1, true)], Some(&first), &cfg);
        let c = AtomicUsize::new(0);
        let new = (0..1000)
            .filter(|_| {
                set.pick(&cfg, &c, None, |n| rand::random_range(0..n))
                    .unwrap()
                    .address()
                    .port()
                    == 2
            })
            .count();
        assert!(new < 200, "{new} of 1000 went to the warming endpoint");
    }
}
