//! The consistent-hash load balancers' hot path: one pick from a ring-hash
//! or Maglev table (100 endpoints), and the cost of building each table
//! (paid on every endpoint or health change).

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;

use criterion::{Criterion, criterion_group, criterion_main};
use meshwork_proxy::balance::{BalanceConfig, EndpointSet};
use meshwork_proxy::hash::hash_key;
use meshwork_proxy::model::cluster::{EndpointModel, LbKind};

fn endpoints(n: u16) -> Vec<EndpointModel> {
    (0..n)
        .map(|i| EndpointModel {
            address: SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 8080)),
            hostname: None,
            weight: 1,
            healthy: true,
            workload: None,
            locality: String::new(),
            locality_weight: 1,
            priority: 0,
            transport_match: Default::default(),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let models = endpoints(100);
    for (name, lb) in [
        (
            "ring_hash",
            LbKind::RingHash {
                min_size: 1024,
                max_size: 8 << 20,
            },
        ),
        ("maglev", LbKind::Maglev { table_size: 65537 }),
    ] {
        let cfg = BalanceConfig {
            lb,
            ..Default::default()
        };
        let set = EndpointSet::build(&models, None, &cfg);
        let counter = AtomicUsize::new(0);
        let mut key = 0u64;
        c.bench_function(&format!("{name}_pick_100"), |b| {
            b.iter(|| {
                key = key.wrapping_add(1);
                let h = hash_key(&key.to_le_bytes());
                black_box(set.pick(&cfg, &counter, Some(h), |n| n / 2))
            })
        });
        c.bench_function(&format!("{name}_build_100"), |b| {
            b.iter(|| black_box(EndpointSet::build(&models, None, &cfg)))
        });
    }
    c.bench_function("hash_header_value", |b| {
        b.iter(|| black_box(hash_key(black_box(b"user-1234567"))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
