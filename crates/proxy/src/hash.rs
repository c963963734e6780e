//! Consistent-hash tables for Envoy's RING_HASH and MAGLEV load balancers.
//!
//! Written by hand: no maintained crate builds Envoy's weighted ring (many
//! virtual nodes per host, scaled to a minimum ring size) or its weighted
//! Maglev permutation table. Keys are hashed with xxHash64 as Envoy does, so
//! a key maps to the same host on every proxy with the same host set.

use std::sync::Arc;

use xxhash_rust::xxh64::xxh64;

use crate::balance::Endpoint;

/// Hashes a key (a header value, cookie, address …) as Envoy does.
pub fn hash_key(bytes: &[u8]) -> u64 {
    xxh64(bytes, 0)
}

/// A consistent-hash table over some hosts.
#[derive(Debug)]
pub enum HashTable {
    /// A sorted ring of (hash, host index).
    Ring(Vec<(u64, u32)>),
    /// A Maglev lookup table of host indices.
    Maglev(Vec<u32>),
}

impl HashTable {
    /// A ring with at least `min_size` (at most `max_size`) entries, each
    /// host getting a share proportional to its weight.
    pub fn ring(hosts: &[Arc<Endpoint>], min_size: u64, max_size: u64) -> Self {
        if hosts.is_empty() {
            return HashTable::Ring(Vec::new());
        }
        let total: f64 = hosts.iter().map(|h| f64::from(h.model.weight)).sum();
        let min_weight = hosts
            .iter()
            .map(|h| f64::from(h.model.weight) / total)
            .fold(1.0, f64::min);
        // Scale so the lightest host gets at least one entry.
        let scale = ((min_size as f64 * min_weight).ceil() / min_weight)
            .min(max_size.max(1) as f64)
            .max(1.0);
        let mut ring = Vec::with_capacity(scale as usize + hosts.len());
        let mut current = 0.0;
        let mut target = 0.0;
        for (i, h) in hosts.iter().enumerate() {
            let key = h.address().to_string();
            target += scale * f64::from(h.model.weight) / total;
            let mut n = 0u64;
            while current < target {
                let entry = format!("{key}_{n}");
                ring.push((hash_key(entry.as_bytes()), i as u32));
                n += 1;
                current += 1.0;
            }
        }
        ring.sort_unstable();
        HashTable::Ring(ring)
    }

    /// A Maglev table of `size` entries (Envoy requires a prime; any size
    /// works here, a prime spreads best). Heavier hosts fill more slots.
    pub fn maglev(hosts: &[Arc<Endpoint>], size: u64) -> Self {
        let m = size.max(1);
        if hosts.is_empty() {
            return HashTable::Maglev(Vec::new());
        }
        struct Entry {
            offset: u64,
            skip: u64,
            next: u64,
            weight: f64,
            target: f64,
        }
        let max_weight = hosts.iter().map(|h| h.model.weight).max().unwrap_or(1);
        let mut entries: Vec<Entry> = hosts
            .iter()
            .map(|h| {
                let key = h.address().to_string();
                Entry {
                    offset: xxh64(key.as_bytes(), 0) % m,
                    skip: if m > 1 {
                        xxh64(key.as_bytes(), 1) % (m - 1) + 1
                    } else {
                        1
                    },
                    next: 0,
                    weight: f64::from(h.model.weight) / f64::from(max_weight),
                    target: 0.0,
                }
            })
            .collect();
        let mut table = vec![u32::MAX; m as usize];
        let mut filled = 0u64;
        let mut iteration = 1u64;
        while filled < m {
            for (i, e) in entries.iter_mut().enumerate() {
                if filled >= m {
                    break;
                }
                // A host of the largest weight fills a slot every iteration,
                // one of a third of it every third iteration.
                if (iteration as f64) * e.weight < e.target {
                    continue;
                }
                e.target += 1.0;
                let mut c = (e.offset + e.skip * e.next) % m;
                while table[c as usize] != u32::MAX {
                    e.next += 1;
                    c = (e.offset + e.skip * e.next) % m;
                }
                table[c as usize] = i as u32;
                e.next += 1;
                filled += 1;
            }
            iteration += 1;
        }
        HashTable::Maglev(table)
    }

    /// The index of the host for `hash`, if there is any host.
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        match self {
            HashTable::Ring(ring) => {
                if ring.is_empty() {
                    return None;
                }
                let i = ring.partition_point(|(h, _)| *h < hash);
                let (_, host) = ring[if i == ring.len() { 0 } else { i }];
                Some(host as usize)
            }
            HashTable::Maglev(table) => {
                if table.is_empty() {
                    return None;
                }
                Some(table[(hash % table.len() as u64) as usize] as usize)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cluster::EndpointModel;
    use std::net::SocketAddr;

    fn hosts(weights: &[u32]) -> Vec<Arc<Endpoint>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                Arc::new(Endpoint::new(EndpointModel {
                    address: SocketAddr::from(([10, 0, 0, i as u8 + 1], 80)),
                    hostname: None,
                    weight: *w,
                    healthy: true,
                    workload: None,
                    locality: Default::default(),
                    locality_weight: 1,
                    priority: 0,
                    transport_match: Default::default(),
                }))
            })
            .collect()
    }

    fn shares(t: &HashTable, n: usize) -> Vec<f64> {
        let mut counts = vec![0u32; n];
        for k in 0..20_000u32 {
            counts[t.lookup(hash_key(&k.to_le_bytes())).unwrap()] += 1;
        }
        counts.iter().map(|c| f64::from(*c) / 20_000.0).collect()
    }

    #[test]
    fn ring_spreads_by_weight() {
        let h = hosts(&[1, 1, 2]);
        let s = shares(&HashTable::ring(&h, 1024, 8 << 20), 3);
        assert!((s[0] - 0.25).abs() < 0.06, "{s:?}");
        assert!((s[2] - 0.5).abs() < 0.06, "{s:?}");
    }

    #[test]
    fn maglev_spreads_by_weight_and_fills_the_table() {
        let h = hosts(&[1, 1, 2]);
        let t = HashTable::maglev(&h, 65537);
        let HashTable::Maglev(table) = &t else {
            unreachable!()
        };
        assert!(table.iter().all(|i| *i < 3));
        let s = shares(&t, 3);
        assert!((s[0] - 0.25).abs() < 0.05, "{s:?}");
        assert!((s[2] - 0.5).abs() < 0.05, "{s:?}");
    }

    #[test]
    fn removing_a_host_moves_few_keys() {
        let all = hosts(&[1, 1, 1, 1]);
        for (before, after) in [
            (
                HashTable::maglev(&all, 65537),
                HashTable::maglev(&all[..3], 65537),
            ),
            (
                HashTable::ring(&all, 1024, 8 << 20),
                HashTable::ring(&all[..3], 1024, 8 << 20),
            ),
        ] {
            let moved = (0..10_000u32)
                .filter(|k| {
                    let h = hash_key(&k.to_le_bytes());
                    let b = before.lookup(h).unwrap();
                    b != 3 && after.lookup(h).unwrap() != b
                })
                .count();
            // Keys of the surviving hosts mostly stay where they were.
            assert!(moved < 1_500, "{moved} keys moved");
        }
    }

    #[test]
    fn empty_tables_choose_nothing() {
        assert_eq!(HashTable::ring(&[], 1024, 1024).lookup(1), None);
        assert_eq!(HashTable::maglev(&[], 7).lookup(1), None);
    }
}
