//! Micro-benchmarks of the aggregate updates the log writer makes after every committed batch
//! (`Aggregates::record`) and when feedback arrives (`Aggregates::record_feedback`).
//!
//! Run with `cargo bench -p switchyard-core --bench aggregates`. The aggregates hold 20 routing
//! epochs of a two-version model beforehand, as a gateway does after a few rollouts. The
//! `baseline/hashmap_count` case counts the same record in a `HashMap<String, u64>` keyed by a
//! clone of its model name: the cheapest per-record accounting that still owns its key, so the
//! other cases read as a ratio against it.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard_core::{Aggregates, Outcome, PairRef, Prediction, PredictionRecord, Role, Truth};

const EPOCH: u64 = 20;

fn record(role: Role, version: &str, epoch: u64, latency_us: u64) -> PredictionRecord {
    PredictionRecord {
        request_id: "0f8e4c7a9b2d4e6f8a1c3e5b7d9f1a2c".into(),
        ts_ms: 1_700_000_000_000,
        model: "yield".into(),
        epoch,
        variant: if role == Role::Serving {
            "primary".into()
        } else {
            "shadow".into()
        },
        role,
        version: version.into(),
        key_hash: Some(0x9e37_79b9_7f4a_7c15),
        outcome: Outcome::Ok,
        status: 200,
        latency_us,
        output: Prediction::Classes(vec!["pass".into()]),
        input: None,
        pair: (role == Role::Shadow).then(|| PairRef {
            version: "v1".into(),
            output: Prediction::Classes(vec!["pass".into()]),
        }),
        segments: Vec::new(),
    }
}

/// Aggregates after `EPOCH` routing epochs of serving and shadow traffic.
fn warmed() -> Aggregates {
    let mut agg = Aggregates::default();
    for epoch in 1..=EPOCH {
        for i in 0..100 {
            agg.record(&record(Role::Serving, "v1", epoch, 800 + i * 13));
            agg.record(&record(Role::Shadow, "v2", epoch, 1_200 + i * 17));
        }
    }
    agg
}

fn aggregates(c: &mut Criterion) {
    let serving = record(Role::Serving, "v1", EPOCH, 1_234);
    let shadow = record(Role::Shadow, "v2", EPOCH, 2_345);
    let both = [serving.clone(), shadow.clone()];
    let truth = Truth::Labels(vec!["pass".into()]);
    let metrics = [("yield_loss".to_string(), 0.25)];

    let mut g = c.benchmark_group("aggregates");
    let mut counts: HashMap<String, u64> = HashMap::new();
    g.bench_function("baseline/hashmap_count", |b| {
        b.iter(|| {
            let rec = black_box(&serving);
            *counts.entry(rec.model.clone()).or_insert(0) += 1;
        })
    });
    let mut agg = warmed();
    g.bench_function("record/serving", |b| {
        b.iter(|| agg.record(black_box(&serving)))
    });
    let mut agg = warmed();
    g.bench_function("record/shadow_with_pair", |b| {
        b.iter(|| agg.record(black_box(&shadow)))
    });
    let mut agg = warmed();
    g.bench_function("record_feedback/serving_and_shadow", |b| {
        b.iter(|| agg.record_feedback(black_box(&both), black_box(&truth), black_box(&metrics)))
    });
    let base = warmed();
    let other = warmed();
    g.bench_function("merge/20_epochs", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |a| a.merge(black_box(&other)),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, aggregates);
criterion_main!(benches);
