//! In-process model timings on the shipped models and their fixture rows: the tree engine (and
//! tract for non-tree models) per row for a single-row call and a 200-row batch, plus the cost
//! of a `spawn_blocking` hand-off against running inline on the async worker.
//!
//! `cargo bench -p switchyard-server --bench onnx_engine [-- --json PATH]`
//!
//! A plain timing program (no criterion), median of repeated runs; `bench/engine_vs_onnxruntime.sh`
//! runs it next to `bench/onnxruntime_bench.py` and prints the side-by-side table.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_server::onnx::{EngineKind, OnnxModel};

/// Repeats of each measurement; the median is reported.
const REPEATS: usize = 15;
/// Minimum wall time of one repeat (loops are sized to reach it).
const MIN_REPEAT: Duration = Duration::from_millis(40);

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

fn inputs(fixture: &Path) -> (String, Vec<Vec<f32>>) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let model = v["model"].as_str().unwrap().to_owned();
    let rows = v["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    (model, rows)
}

/// Median over `REPEATS` of the time per call of `f`, in nanoseconds.
fn time_per_call(mut f: impl FnMut()) -> f64 {
    // Size the loop: at least MIN_REPEAT per repeat.
    let mut iters = 1usize;
    loop {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        if start.elapsed() >= MIN_REPEAT || iters > 1 << 24 {
            break;
        }
        iters *= 2;
    }
    let mut samples: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[REPEATS / 2]
}

fn main() {
    let mut json_out: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--json" {
            json_out = args.next().map(PathBuf::from);
        }
    }

    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(models_dir().join("fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    fixtures.sort();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // The hand-off itself: an empty closure through spawn_blocking, awaited from a worker.
    let handoff_ns = runtime.block_on(async {
        let mut samples = Vec::new();
        for _ in 0..REPEATS {
            let n = 2000;
            let start = Instant::now();
            for _ in 0..n {
                tokio::task::spawn_blocking(|| black_box(1)).await.unwrap();
            }
            samples.push(start.elapsed().as_nanos() as f64 / n as f64);
        }
        samples.sort_by(f64::total_cmp);
        samples[REPEATS / 2]
    });

    println!(
        "spawn_blocking hand-off (empty closure, awaited on a 2-worker runtime): {:.1} µs",
        handoff_ns / 1e3
    );
    println!();
    println!(
        "| model | engine | trees | nodes | depth sum | 1 row (µs) | 200 rows, per row (µs) | ns per estimated node visit | 1 row via spawn_blocking (µs) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");

    let mut records = Vec::new();
    for fixture in &fixtures {
        let (model_file, rows) = inputs(fixture);
        let name = model_file.trim_end_matches(".onnx").to_owned();
        let model = Arc::new(OnnxModel::load(&models_dir().join(&model_file)).unwrap());
        let engine = match model.engine() {
            EngineKind::Trees => "trees",
            EngineKind::Tract => "tract",
        };
        let (trees, nodes) = match model.tree_ensemble() {
            Some(t) => (t.n_trees().to_string(), t.n_nodes().to_string()),
            None => ("-".to_owned(), "-".to_owned()),
        };

        // Single row: every fixture row in turn, one call each.
        let single_rows: Vec<Vec<Vec<f32>>> = rows.iter().map(|r| vec![r.clone()]).collect();
        let mut i = 0;
        let single_ns = time_per_call(|| {
            let out = model.predict(&single_rows[i % single_rows.len()]).unwrap();
            black_box(out);
            i += 1;
        });
        let batch_ns = time_per_call(|| {
            black_box(model.predict(&rows).unwrap());
        }) / rows.len() as f64;
        let visits = model.node_visits_per_row();
        let ns_per_visit = visits.map(|v| batch_ns / v as f64);

        // One row through spawn_blocking, awaited from a worker (what the backend did always).
        let spawned_ns = runtime.block_on(async {
            let mut samples = Vec::new();
            for _ in 0..REPEATS {
                let n = 1000;
                let start = Instant::now();
                for k in 0..n {
                    let m = model.clone();
                    let row = single_rows[k % single_rows.len()].clone();
                    let out = tokio::task::spawn_blocking(move || m.predict(&row))
                        .await
                        .unwrap()
                        .unwrap();
                    black_box(out);
                }
                samples.push(start.elapsed().as_nanos() as f64 / n as f64);
            }
            samples.sort_by(f64::total_cmp);
            samples[REPEATS / 2]
        });

        println!(
            "| {name} | {engine} | {trees} | {nodes} | {} | {:.2} | {:.3} | {} | {:.2} |",
            visits.map_or("-".to_owned(), |v| v.to_string()),
            single_ns / 1e3,
            batch_ns / 1e3,
            ns_per_visit.map_or("-".to_owned(), |v| format!("{v:.2}")),
            spawned_ns / 1e3,
        );
        records.push(serde_json::json!({
            "model": name,
            "engine": engine,
            "depth_sum": visits,
            "single_row_us": single_ns / 1e3,
            "batch200_per_row_us": batch_ns / 1e3,
            "batch200_us": batch_ns * rows.len() as f64 / 1e3,
            "single_row_spawn_blocking_us": spawned_ns / 1e3,
        }));
    }
    if let Some(path) = json_out {
        let doc = serde_json::json!({
            "handoff_us": handoff_ns / 1e3,
            "models": records,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        println!();
        println!("wrote {}", path.display());
    }
}
