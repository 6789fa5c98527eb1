//! Throughput of the prediction log writer into a fresh SQLite file.
//!
//! Run with `cargo bench -p switchyard-store --bench log_writer`. Each iteration enqueues
//! [`N`] records with `LogHandle::record` and waits for `LogHandle::flush`; the temp dir, the
//! writer thread and the records themselves are set up outside the timed region. The
//! `baseline/serde_json` case serializes the same records as JSON lines into a `Vec<u8>`
//! (no SQLite, no thread), so the SQLite path can be read as a ratio against it.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use switchyard_core::provenance::{Artefact, VersionProvenance};
use switchyard_core::{Outcome, PairRef, Prediction, PredictionRecord, Role};
use switchyard_store::{spawn_log_writer, LogWriterConfig};

/// Records per iteration.
const N: usize = 100_000;
const BATCH_SIZES: [usize; 2] = [1_024, 4_096];

/// A request stream as the gateway logs it: four serving records for every shadow record
/// (the shadow paired with its request's serving answer), a captured input body on each, a
/// one-instance class output, and a routing-key hash.
fn records() -> Vec<PredictionRecord> {
    (0..N)
        .map(|i| {
            let shadow = i % 5 == 4;
            let request = if shadow { i - 1 } else { i };
            let class = if request % 3 == 0 { "1" } else { "0" };
            PredictionRecord {
                request_id: format!("01J9Z3KQ4V{request:016}"),
                ts_ms: 1_700_000_000_000 + i as i64,
                model: "yield".into(),
                epoch: 3,
                variant: if shadow { "shadow" } else { "primary" }.into(),
                role: if shadow { Role::Shadow } else { Role::Serving },
                version: if shadow { "v2" } else { "v1" }.into(),
                key_hash: Some(0x9e37_79b9_7f4a_7c15 ^ request as u64),
                outcome: Outcome::Ok,
                status: 200,
                latency_us: 800 + (i % 1_000) as u64,
                output: Prediction::Classes(vec![class.into()]),
                input: Some(format!(
                    "{{\"wafer\":\"w-{request:06}\",\"features\":[0.12,3.4,56.7,0.089,1.0,2.25]}}"
                )),
                pair: shadow.then(|| PairRef {
                    version: "v1".into(),
                    output: Prediction::Classes(vec![class.into()]),
                }),
                segments: Vec::new(),
            }
        })
        .collect()
}

/// Writes `N` records into a fresh store with the given batch size; returns the time from the
/// first `record` to the return of `flush`.
fn write_once(
    rt: &tokio::runtime::Runtime,
    batch_size: usize,
    recs: Vec<PredictionRecord>,
) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let (log, thread) = spawn_log_writer(LogWriterConfig {
        store: switchyard_store::StoreUrl::sqlite(dir.path().join("log.sqlite")),
        replica: "bench".into(),
        // Large enough that nothing is dropped: this measures the writer, not the drop policy.
        queue_capacity: N + 16,
        batch_size,
        // Commit throughput of the writer itself: no pause between batches.
        commit_interval: Duration::ZERO,
        snapshot_every: 0,
        retention: None,
        max_size_bytes: None,
        // Both versions registered, as the gateway does: each row names its artefact.
        versions: ["v1", "v2"]
            .into_iter()
            .map(|v| VersionProvenance {
                model: "yield".into(),
                version: v.into(),
                artefact: Artefact::Sha256(format!("{v:0>64}")),
                git_sha: None,
                registry: None,
            })
            .collect(),
    })
    .unwrap();
    let start = Instant::now();
    for rec in recs {
        assert!(log.record(rec), "record dropped");
    }
    rt.block_on(log.flush()).unwrap();
    let elapsed = start.elapsed();
    let stats = log.stats();
    assert_eq!(stats.written.load(Ordering::Relaxed), N as u64);
    assert_eq!(stats.write_errors.load(Ordering::Relaxed), 0);
    drop(log);
    thread.join().unwrap();
    elapsed
}

fn log_writer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let template = records();

    let mut g = c.benchmark_group("log_writer");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements(N as u64));

    g.bench_function("baseline/serde_json", |b| {
        b.iter(|| {
            let mut buf = Vec::new();
            for rec in black_box(&template) {
                serde_json::to_writer(&mut buf, rec).unwrap();
                buf.push(b'\n');
            }
            buf
        })
    });

    for batch_size in BATCH_SIZES {
        g.bench_with_input(
            BenchmarkId::new("sqlite", batch_size),
            &batch_size,
            |b, &batch_size| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        // The clone is outside the timed region (taken inside write_once).
                        total += write_once(&rt, batch_size, template.clone());
                    }
                    total
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, log_writer);
criterion_main!(benches);
