//! Start-up of the aggregates from a long prediction log: time and memory of the restore from
//! the newest snapshot plus the log's tail (`restore_aggregates`, what a gateway runs at
//! start), the streamed recount of the whole log (`rebuild_aggregates`) and the former
//! in-memory recount (`rebuild_aggregates_in_memory`: every record and every label read
//! first), on the same SQLite file, each in a fresh process so its peak and resident memory
//! are its own.
//!
//!     cargo bench -p switchyard-store --bench rebuild -- 1000000
//!     cargo bench -p switchyard-store --bench rebuild -- 10000000 stream,snapshot
//!     cargo bench -p switchyard-store --bench rebuild -- 10000000 snapshot --keep /tmp/log.sqlite
//!     cargo bench -p switchyard-store --bench rebuild -- 1000000 disagreements
//!     cargo bench -p switchyard-store --bench rebuild -- 1000000 prune
//!     cargo bench -p switchyard-store --bench rebuild -- 20000 snapshot --counter-ids
//!
//! Writes N requests (one serving record each, every fifth also shadowed, a captured input on
//! each, labels for a third of them) through the log writer into a temp file, snapshotting
//! every 100 000 records and labels as a gateway does, then a tail of 100 000 more requests
//! with no snapshot (a crash just before the next one: the most a restore replays). Then runs
//! each start-up in a child process and prints elapsed time, peak RSS (VmHWM) and RSS with the
//! aggregates built (VmRSS). Every start-up must give the same aggregates. `disagreements` times
//! instead what a shadow rollout's report reads: no shadow answer differs, so the whole log;
//! `prune` a retention policy deleting the older half of the log and its labels (it changes
//! the file: run it last). `--counter-ids`: the requests' ids are a client's zero-padded
//! counter (32 digits, so of the generated form, its millisecond the epoch's) instead.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    clippy::print_stdout
)]

use std::process::Command;
use std::time::{Duration, Instant};

use switchyard_core::{Feedback, Outcome, PairRef, Prediction, PredictionRecord, Role, Truth};
use switchyard_store::{spawn_log_writer, LogWriterConfig, StoreUrl};

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Whether request ids are counters (`--counter-ids`).
static COUNTER_IDS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Request `i`'s id, of the form the gateway generates (its millisecond, then 20 more hex
/// digits), 50 requests a millisecond; or a zero-padded counter.
fn request_id(i: u64) -> String {
    if COUNTER_IDS.load(std::sync::atomic::Ordering::Relaxed) {
        format!("{i:032}")
    } else {
        format!("{:012x}{i:020x}", 1_700_000_000_000 + i / 50)
    }
}

fn record(i: u64, role: Role) -> PredictionRecord {
    let class = if i.is_multiple_of(3) { "1" } else { "0" };
    PredictionRecord {
        request_id: request_id(i),
        ts_ms: 1_700_000_000_000 + (i / 50) as i64,
        model: "yield".into(),
        epoch: 1 + i / 100_000,
        variant: if role == Role::Shadow { "shadow" } else { "primary" }.into(),
        role,
        version: if role == Role::Shadow { "v2" } else { "v1" }.into(),
        key_hash: Some(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        outcome: Outcome::Ok,
        status: 200,
        latency_us: 900 + i % 700,
        output: Prediction::Classes(vec![class.into()]),
        input: Some(format!(
            "{{\"inputs\":[{{\"name\":\"input\",\"shape\":[1,8],\"datatype\":\"FP32\",\"data\":[1.0,50.0,2.0,40.0,1.0,2.0,1.0,{i}]}}]}}"
        )),
        pair: (role == Role::Shadow).then(|| PairRef {
            version: "v1".into(),
            output: Prediction::Classes(vec![class.into()]),
        }),
        segments: Vec::new(),
    }
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// The writer the gateway runs (4,096-record batches, 5 ms group commit) on the file at `path`.
fn writer_config(
    path: &std::path::Path,
    snapshot_every: u64,
    retention: Option<switchyard_store::Retention>,
) -> LogWriterConfig {
    LogWriterConfig {
        store: StoreUrl::sqlite(path),
        replica: "bench".into(),
        queue_capacity: 1 << 20,
        batch_size: 4_096,
        commit_interval: Duration::from_millis(5),
        snapshot_every,
        retention,
        max_size_bytes: None,
        versions: Vec::new(),
    }
}

/// Writes `n` requests from `from` on; prints the CPU microseconds per record of each million
/// (the writer's cost as the table grows).
fn write_log(path: &std::path::Path, from: u64, n: u64, snapshot_every: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (log, thread) = spawn_log_writer(writer_config(path, snapshot_every, None)).unwrap();
    let mut cpu_at = cpu_seconds();
    runtime.block_on(async {
        for chunk in (from..from + n).collect::<Vec<_>>().chunks(100_000) {
            if chunk[0] > from && chunk[0].is_multiple_of(1_000_000) {
                let now = cpu_seconds();
                let records = 1_000_000.0 * 1.2;
                println!(
                    "  records {:>5.1} M-{:.1} M: {:.1} CPU µs per record (writer and generator)",
                    (chunk[0] - 1_000_000) as f64 * 1.2 / 1e6,
                    chunk[0] as f64 * 1.2 / 1e6,
                    (now - cpu_at) * 1e6 / records
                );
                cpu_at = now;
            }
            for &i in chunk {
                assert!(log.record(record(i, Role::Serving)));
                if i.is_multiple_of(5) {
                    assert!(log.record(record(i, Role::Shadow)));
                }
            }
            log.flush().await.unwrap();
            let labels: Vec<Feedback> = chunk
                .iter()
                .filter(|i| *i % 3 == 1)
                .map(|&i| Feedback {
                    request_id: request_id(i),
                    truth: Truth::Labels(vec![if i.is_multiple_of(7) { "0" } else { "1" }.into()]),
                    metrics: vec![],
                })
                .collect();
            log.feedback(labels, 1_700_000_100_000).await.unwrap();
        }
    });
    drop(log);
    thread.join().unwrap();
}

/// In the child: one rebuild, then its numbers on one line.
fn child(path: &str, mode: &str) {
    match mode {
        "disagreements" => return disagreements_child(path),
        "prune" => return prune_child(path),
        _ => {}
    }
    let conn = switchyard_store::open_reader(std::path::Path::new(path)).unwrap();
    let started = Instant::now();
    let agg = match mode {
        "snapshot" => switchyard_store::restore_aggregates(&conn).unwrap(),
        "stream" => switchyard_store::rebuild_aggregates(&conn).unwrap(),
        _ => switchyard_store::rebuild_aggregates_in_memory(&conn).unwrap(),
    };
    let elapsed = started.elapsed();
    let digest = format!(
        "{:?}",
        agg.pairs
            .values()
            .next()
            .map(|p| (p.agreement, p.both_correct, p.shadow_only))
    ) + &format!(
        "{:?}",
        agg.series
            .values()
            .map(|s| (s.requests, s.correct))
            .collect::<Vec<_>>()
    );
    println!(
        "{mode} {:.3} {} {} {:x}",
        elapsed.as_secs_f64(),
        status_kb("VmHWM:"),
        status_kb("VmRSS:"),
        digest
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
    );
}

/// In the child: what a shadow rollout's report asks the log for (the newest 500 answers that
/// differ, as `report.rs` scans), on a log where none differ: the whole log is read.
fn disagreements_child(path: &str) {
    let url = StoreUrl::Sqlite(path.into());
    let started = Instant::now();
    let found = switchyard_store::disagreements_at(&url, "yield", "v1", "v2", 500).unwrap();
    println!(
        "disagreements {:.3} {} {} -{}",
        started.elapsed().as_secs_f64(),
        status_kb("VmHWM:"),
        status_kb("VmRSS:"),
        found.len()
    );
}

/// In the child: a writer keeping the newest half of the log (`max_records`), from its first
/// snapshot until the older half is deleted, a retention batch a pass; with the labels of the
/// deleted requests. Prints the time, and the number deleted after the minus sign.
fn prune_child(path: &str) {
    let conn = switchyard_store::open_reader(std::path::Path::new(path)).unwrap();
    let records = switchyard_store::count_records(&conn).unwrap() + 1;
    drop(conn);
    let keep = records / 2;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let retention = switchyard_store::Retention {
        max_age_ms: None,
        max_records: Some(keep),
        batch: switchyard_store::DEFAULT_RETENTION_BATCH,
    };
    let (log, thread) = spawn_log_writer(writer_config(path.as_ref(), 1, Some(retention))).unwrap();
    // No rollout reads any epoch.
    log.protect_from_epoch(None);
    let started = Instant::now();
    // One more record: the writer snapshots, and the retention starts.
    runtime.block_on(async {
        assert!(log.record(record(u64::from(u32::MAX), Role::Serving)));
        log.flush().await.unwrap();
    });
    let expected = records - keep;
    let pruned = || {
        log.stats()
            .pruned
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    while pruned() < expected {
        assert!(
            started.elapsed() < Duration::from_secs(1_800),
            "{} of {expected} deleted",
            pruned()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed();
    drop(log);
    thread.join().unwrap();
    println!(
        "prune {:.3} {} {} -{expected}",
        elapsed.as_secs_f64(),
        status_kb("VmHWM:"),
        status_kb("VmRSS:"),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1], &args[i + 2]);
        return;
    }
    COUNTER_IDS.store(
        args.iter().any(|a| a == "--counter-ids"),
        std::sync::atomic::Ordering::Relaxed,
    );
    let n: u64 = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let modes: Vec<String> = args
        .iter()
        .skip(1)
        .find(|a| {
            ["stream", "snapshot", "memory", "disagreements", "prune"]
                .iter()
                .any(|m| a.contains(m))
        })
        .map_or_else(
            || vec!["memory".into(), "stream".into(), "snapshot".into()],
            |a| a.split(',').map(String::from).collect(),
        );
    // `--keep PATH`: write the log there and leave it (to start a gateway on it).
    let dir = tempfile::tempdir().unwrap();
    let path = args.iter().position(|a| a == "--keep").map_or_else(
        || dir.path().join("log.sqlite"),
        |i| args[i + 1].clone().into(),
    );
    let started = Instant::now();
    const TAIL: u64 = 100_000;
    write_log(&path, 0, n, switchyard_store::DEFAULT_SNAPSHOT_EVERY);
    write_log(&path, n, TAIL, 0);
    let n = n + TAIL;
    let records = n + n.div_ceil(5);
    println!(
        "wrote {n} requests ({records} records, {} labels) in {:.1} s, {:.0} MB on disk",
        n / 3,
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&path).unwrap().len() as f64 / 1e6
    );
    let exe = std::env::current_exe().unwrap();
    let mut digests = Vec::new();
    println!("rebuild      seconds   peak RSS MB   RSS after MB   bytes/record (after)");
    for mode in &modes {
        let mode = mode.as_str();
        let out = Command::new(&exe)
            .args(["--child", path.to_str().unwrap(), mode])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = line.split_whitespace().collect();
        let (secs, hwm, rss): (f64, f64, f64) = (
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
        );
        // A disagreements or prune line ends with a count, not a digest.
        if !f[4].starts_with('-') {
            digests.push(f[4].to_string());
        }
        println!(
            "{mode:<10} {secs:>9.2} {:>13.1} {:>14.1} {:>22.0}",
            hwm / 1024.0,
            rss / 1024.0,
            rss * 1024.0 / records as f64
        );
    }
    assert!(
        digests.windows(2).all(|w| w[0] == w[1]),
        "every start-up gives the same aggregates: {digests:?}"
    );
}
