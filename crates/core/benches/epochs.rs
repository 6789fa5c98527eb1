//! Memory of the aggregates after many routing changes. Each of N routing epochs (default
//! 1,000) gets 20 requests: 10 served by v1 and mirrored to v2 (a shadow pair), 10 served by v2
//! (a split), each labelled, with latencies spread over three decades, as a gateway whose
//! routes change N times. `keep` keeps every epoch apart (before compaction); `fold` folds the
//! epochs older than the current one after each change, as the controller does. Each runs in a
//! fresh process and prints its resident memory with the aggregates built.
//!
//!     cargo bench -p switchyard-core --bench epochs -- 1000

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    clippy::print_stdout
)]

use std::process::Command;

use switchyard_core::{Aggregates, Outcome, PairRef, Prediction, PredictionRecord, Role, Truth};

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn record(id: &str, epoch: u64, role: Role, version: &str, i: u64) -> PredictionRecord {
    let class = if i.is_multiple_of(3) { "fail" } else { "pass" };
    PredictionRecord {
        request_id: id.into(),
        ts_ms: 1_700_000_000_000,
        model: "yield".into(),
        epoch,
        variant: match (role, version) {
            (Role::Shadow, _) => "shadow".into(),
            (_, "v1") => "stable".into(),
            _ => "canary".into(),
        },
        role,
        version: version.into(),
        key_hash: None,
        outcome: Outcome::Ok,
        status: 200,
        latency_us: 200 + (i * 7_919) % 200_000,
        output: Prediction::Classes(vec![class.into()]),
        input: None,
        pair: (role == Role::Shadow).then(|| PairRef {
            version: "v1".into(),
            output: Prediction::Classes(vec!["pass".into()]),
        }),
        segments: Vec::new(),
    }
}

fn child(epochs: u64, fold: bool) {
    let before = rss_kb();
    let mut agg = Aggregates::default();
    for epoch in 1..=epochs {
        for i in 0..10 {
            let id = format!("e{epoch}-a{i}");
            let serving = record(&id, epoch, Role::Serving, "v1", epoch * 20 + i);
            let shadow = record(&id, epoch, Role::Shadow, "v2", epoch * 20 + i + 1);
            agg.record(&serving);
            agg.record(&shadow);
            agg.record_feedback(&[serving, shadow], &Truth::Labels(vec!["pass".into()]), &[]);
            let id = format!("e{epoch}-b{i}");
            let canary = record(&id, epoch, Role::Serving, "v2", epoch * 20 + 10 + i);
            agg.record(&canary);
            agg.record_feedback(&[canary], &Truth::Labels(vec!["fail".into()]), &[]);
        }
        if fold {
            agg.compact_before(epoch);
        }
    }
    let requests: u64 = agg.series.values().map(|s| s.requests).sum();
    println!(
        "{} {} {}",
        rss_kb().saturating_sub(before),
        agg.series.len() + agg.pairs.len(),
        requests
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(args[i + 1].parse().unwrap(), args[i + 2] == "fold");
        return;
    }
    let epochs: u64 = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000);
    let exe = std::env::current_exe().unwrap();
    println!("{epochs} routing epochs, 20 requests each");
    println!("mode   RSS growth MB   series+pairs   requests counted");
    let mut counted = Vec::new();
    for mode in ["keep", "fold"] {
        let out = Command::new(&exe)
            .args(["--child", &epochs.to_string(), mode])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = line.split_whitespace().collect();
        println!(
            "{mode:<6} {:>13.1} {:>14} {:>18}",
            f[0].parse::<f64>().unwrap() / 1024.0,
            f[1],
            f[2]
        );
        counted.push(f[2].to_string());
    }
    assert_eq!(
        counted[0], counted[1],
        "folding keeps every request counted"
    );
}
