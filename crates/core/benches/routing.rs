//! Micro-benchmarks of the routing decision on the request path.
//!
//! Run with `cargo bench -p switchyard-core --bench routing`. The `baseline/default_hasher`
//! case hashes the same 12-byte key with std's `DefaultHasher` (SipHash-1-3), so results can
//! be read as a ratio against a hash every Rust program already pays for in a `HashMap`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard_core::routing::{bucket, Arm, ShadowTarget};
use switchyard_core::{ModelRoute, Strategy};

/// A 12-byte routing key, as a wafer or user id would be.
const KEY: &[u8; 12] = b"wafer-004217";
const SALT: &str = "yield-rollout-1";

fn route(strategy: Strategy) -> ModelRoute {
    ModelRoute {
        salt: SALT.into(),
        strategy,
    }
}

fn ab3() -> Strategy {
    let arm = |variant: &str, version: &str, weight| Arm {
        variant: variant.into(),
        version: version.into(),
        weight,
    };
    Strategy::Split {
        arms: vec![
            arm("a", "v1", 3334),
            arm("b", "v2", 3333),
            arm("c", "v3", 3333),
        ],
        layout: Vec::new(),
        salt: None,
        target: None,
    }
}

fn shadow() -> Strategy {
    Strategy::Shadow {
        primary: "v1".into(),
        shadows: vec![ShadowTarget {
            version: "v2".into(),
            sample: 10_000,
        }],
    }
}

fn routing(c: &mut Criterion) {
    let canary = route(Strategy::canary("v1", "v2", 500));
    let ab = route(ab3());
    let shadow = route(shadow());
    assert!(canary.strategy.problems().is_empty());
    assert!(ab.strategy.problems().is_empty());
    assert!(shadow.strategy.problems().is_empty());

    let mut g = c.benchmark_group("routing");
    g.bench_function("baseline/default_hasher", |b| {
        b.iter(|| {
            let mut h = DefaultHasher::new();
            black_box(&KEY[..]).hash(&mut h);
            h.finish()
        })
    });
    g.bench_function("bucket", |b| {
        b.iter(|| bucket(black_box(SALT), black_box(&KEY[..])))
    });
    g.bench_function("decide/canary_keyed", |b| {
        b.iter(|| black_box(&canary).decide(Some(black_box(&KEY[..])), black_box(0)))
    });
    g.bench_function("decide/ab3_keyed", |b| {
        b.iter(|| black_box(&ab).decide(Some(black_box(&KEY[..])), black_box(0)))
    });
    g.bench_function("decide/shadow_keyed", |b| {
        b.iter(|| black_box(&shadow).decide(Some(black_box(&KEY[..])), black_box(0)))
    });
    let mut random = 0u32;
    g.bench_function("decide/canary_keyless", |b| {
        b.iter(|| {
            random = random.wrapping_add(7919);
            black_box(&canary).decide(None, black_box(random))
        })
    });
    g.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
