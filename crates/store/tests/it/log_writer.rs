//! The log writer against a real SQLite file in a temp dir and a real PostgreSQL database
//! (each test runs on both), and replicas sharing PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use support::Db;
use switchyard_core::provenance::{Artefact, VersionProvenance};
use switchyard_core::{Feedback, Outcome, PairRef, Prediction, PredictionRecord, Role, Truth};
use switchyard_store::{
    artefacts_at, captured_requests_at, check_artefacts_at, disagreements_at, spawn_log_writer,
    CapturedQuery, LogWriterConfig, Retention, StoreError, StoreUrl,
};

on_both_async!(
    feedback_joins_by_id_and_aggregates_match_a_recount,
    a_full_queue_drops_and_counts_instead_of_blocking,
    records_arriving_within_the_commit_interval_share_one_commit,
    a_restart_restores_the_snapshot_and_replays_only_the_tail,
    retention_deletes_covered_records_but_never_those_a_rollout_reads,
    feedback_limited_to_models_labels_only_their_requests,
    captured_requests_are_the_served_bodies_with_their_labels,
    retention_sweeps_labels_whose_records_an_operator_deleted,
    disagreements_are_the_newest_differing_shadow_answers_of_the_pair,
    artefacts_are_recorded_named_by_records_and_never_swapped,
);

fn config(
    url: StoreUrl,
    replica: &str,
    queue_capacity: usize,
    batch_size: usize,
) -> LogWriterConfig {
    LogWriterConfig {
        store: url,
        replica: replica.into(),
        queue_capacity,
        batch_size,
        commit_interval: Duration::from_millis(5),
        snapshot_every: 0,
        retention: None,
        max_size_bytes: None,
        versions: Vec::new(),
    }
}

fn record(
    id: &str,
    role: Role,
    version: &str,
    class: &str,
    pair: Option<&str>,
) -> PredictionRecord {
    PredictionRecord {
        request_id: id.into(),
        ts_ms: 1_700_000_000_000,
        model: "yield".into(),
        epoch: 3,
        variant: if role == Role::Serving {
            "primary".into()
        } else {
            "shadow".into()
        },
        role,
        version: version.into(),
        key_hash: Some(u64::MAX - 7),
        outcome: Outcome::Ok,
        status: 200,
        latency_us: 1_234,
        output: Prediction::Classes(vec![class.into()]),
        input: Some("{\"x\":1}".into()),
        pair: pair.map(|p| PairRef {
            version: "v1".into(),
            output: Prediction::Classes(vec![p.into()]),
        }),
        // Two testers, by the id's parity.
        segments: vec![(
            "tester".into(),
            if id.ends_with(['0', '2', '4', '6', '8']) {
                "even".into()
            } else {
                "odd".into()
            },
        )],
    }
}

fn label(id: &str, class: &str) -> Feedback {
    Feedback {
        request_id: id.into(),
        truth: Truth::Labels(vec![class.into()]),
        metrics: vec![("revenue".into(), 2.5)],
    }
}

async fn feedback_limited_to_models_labels_only_their_requests(db: &Db) {
    let (log, thread) = spawn_log_writer(config(db.url(), "r1", 1024, 7)).unwrap();
    assert!(log.record(record("y1", Role::Serving, "v1", "1", None)));
    let mut other = record("o1", Role::Serving, "v1", "1", None);
    other.model = "other".into();
    assert!(log.record(other));
    log.flush().await.unwrap();
    let only_other = Some(vec!["other".to_string()]);
    let outcome = log
        .feedback_for(
            vec![label("y1", "1"), label("o1", "1"), label("nope", "1")],
            only_other.clone(),
            1_700_000_100_000,
        )
        .await
        .unwrap();
    assert_eq!(outcome.accepted, 1);
    assert_eq!(outcome.forbidden, vec!["y1".to_string()]);
    assert_eq!(outcome.unknown, vec!["nope".to_string()]);
    // Nothing was stored for the forbidden request: a credential for its model may label it.
    let outcome = log
        .feedback_for(
            vec![label("y1", "0")],
            Some(vec!["yield".to_string()]),
            1_700_000_100_001,
        )
        .await
        .unwrap();
    assert_eq!((outcome.accepted, outcome.duplicates), (1, 0));
    log.flush().await.unwrap();
    let agg = log.aggregates().lock().clone();
    let y = agg.variant("yield", "v1", Role::Serving, |_| true);
    assert_eq!(
        (y.correct.trials, y.correct.successes),
        (1, 0),
        "the label of the allowed call counts"
    );
    drop(log);
    thread.join().unwrap();
}

async fn feedback_joins_by_id_and_aggregates_match_a_recount(db: &Db) {
    let (log, thread) = spawn_log_writer(config(db.url(), "r1", 1024, 7)).unwrap();
    // 40 requests: the primary says 1 on even ids; the shadow says 1 on multiples of 3.
    for i in 0..40 {
        let p = if i % 2 == 0 { "1" } else { "0" };
        let s = if i % 3 == 0 { "1" } else { "0" };
        assert!(log.record(record(&rid('r', i), Role::Serving, "v1", p, None)));
        assert!(log.record(record(&rid('r', i), Role::Shadow, "v2", s, Some(p))));
    }
    // Labels arrive out of order (reverse), some twice, some for unknown ids.
    let mut items: Vec<Feedback> = (0..40)
        .rev()
        .map(|i| label(&rid('r', i), if i % 5 == 0 { "0" } else { "1" }))
        .collect();
    items.push(label(&rid('r', 3), "0"));
    items.push(label("nope", "1"));
    // Unknown too: an id of the generated form, its millisecond that of filed requests.
    let unfiled = format!("{}{:020x}", &rid('r', 1)[..12], 999);
    items.push(label(&unfiled, "1"));
    let outcome = log.feedback(items, 1_700_000_100_000).await.unwrap();
    assert_eq!(outcome.accepted, 40);
    assert_eq!(outcome.duplicates, 1);
    assert_eq!(outcome.unknown, vec!["nope".to_string(), unfiled]);
    // Re-sending is idempotent.
    let again = log
        .feedback(vec![label("r0", "1")], 1_700_000_200_000)
        .await
        .unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 1));

    log.flush().await.unwrap();
    let incremental = log.aggregates().lock().clone();
    // Count by hand what the pairs must be.
    let (mut b, mut c, mut agree) = (0, 0, 0);
    for i in 0..40 {
        let (p, s, t) = (i % 2 == 0, i % 3 == 0, i % 5 != 0);
        agree += u64::from(p == s);
        match (p == t, s == t) {
            (true, false) => b += 1,
            (false, true) => c += 1,
            _ => {}
        }
    }
    let pair = incremental.pair("yield", "v1", "v2", |_| true);
    assert_eq!(
        (
            pair.primary_only,
            pair.shadow_only,
            pair.agreement.successes,
            pair.agreement.trials
        ),
        (b, c, agree, 40)
    );
    // The same pairs per tester: the even ids (the primary always says 1) and the odd ones.
    let testers = &pair.segments["tester"];
    for (tester, parity) in [("even", 0), ("odd", 1)] {
        let seg = &testers.values()[tester];
        let (mut b, mut c) = (0, 0);
        for i in (0..40).filter(|i| i % 2 == parity) {
            let (p, s, t) = (i % 2 == 0, i % 3 == 0, i % 5 != 0);
            match (p == t, s == t) {
                (true, false) => b += 1,
                (false, true) => c += 1,
                _ => {}
            }
        }
        assert_eq!(
            (seg.compared, seg.primary_only, seg.shadow_only),
            (20, b, c),
            "{tester}"
        );
    }

    drop(log);
    thread.join().unwrap();
    assert_eq!(db.query_text("SELECT COUNT(*) FROM predictions"), "80");
    // A restarted writer rebuilds the same aggregates from the store.
    let (log, thread) = spawn_log_writer(config(db.url(), "r1", 16, 7)).unwrap();
    let recount = log.aggregates().lock().clone();
    assert_eq!(recount.pairs, incremental.pairs);
    assert_eq!(recount.series, incremental.series);
    drop(log);
    thread.join().unwrap();
}

async fn a_full_queue_drops_and_counts_instead_of_blocking(db: &Db) {
    let (log, thread) = spawn_log_writer(config(db.url(), "r1", 4, 2)).unwrap();
    let mut accepted = 0u64;
    for i in 0..5_000 {
        accepted += u64::from(log.record(record(&format!("r{i}"), Role::Serving, "v1", "1", None)));
    }
    log.flush().await.unwrap();
    let stats = log.stats();
    let dropped = stats.dropped.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(accepted + dropped, 5_000);
    assert!(
        dropped > 0,
        "a queue of 4 cannot take 5000 records without waiting"
    );
    drop(log);
    thread.join().unwrap();
    assert_eq!(
        db.query_text("SELECT COUNT(*) FROM predictions"),
        accepted.to_string()
    );
}

/// Group commit: records that arrive while the writer waits out its commit interval go into
/// one transaction, and a flush still returns only once they are all committed.
async fn records_arriving_within_the_commit_interval_share_one_commit(db: &Db) {
    let mut cfg = config(db.url(), "r1", 1024, 4096);
    cfg.commit_interval = Duration::from_secs(1);
    let (log, thread) = spawn_log_writer(cfg).unwrap();
    let batches = |log: &switchyard_store::LogHandle| {
        log.stats()
            .batches
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(log.record(record("first", Role::Serving, "v1", "1", None)));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while batches(&log) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first record was never committed"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The writer now waits out its interval; these 99 gather meanwhile.
    for i in 0..99 {
        assert!(log.record(record(&format!("r{i}"), Role::Serving, "v1", "1", None)));
    }
    log.flush().await.unwrap();
    let written = log
        .stats()
        .written
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((written, batches(&log)), (100, 2));
    drop(log);
    thread.join().unwrap();
    assert_eq!(db.query_text("SELECT COUNT(*) FROM predictions"), "100");
}

/// Feedback reads the log and then writes: while another connection to the same SQLite file
/// (the control store's) holds the write lock and then commits, feedback must wait for the lock,
/// not fail with "database is locked" because its read snapshot went stale.
#[tokio::test]
async fn feedback_waits_for_another_connection_writing_the_same_sqlite_file() {
    let db = Db::sqlite();
    let (log, thread) = spawn_log_writer(config(db.url(), "local", 16, 8)).unwrap();
    assert!(log.record(record("r1", Role::Serving, "v1", "1", None)));
    log.flush().await.unwrap();

    let StoreUrl::Sqlite(path) = db.url() else {
        panic!("a sqlite store")
    };
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute_batch("BEGIN IMMEDIATE; CREATE TABLE other_writer (x INTEGER); INSERT INTO other_writer VALUES (1);")
        .unwrap();
    let holder = std::thread::spawn(move || {
        // Hold the write lock while the feedback starts, then commit: the lock is held for a
        // time, not until an event, because the writer thread gives no signal mid-transaction.
        std::thread::sleep(Duration::from_millis(300));
        other.execute_batch("COMMIT").unwrap();
    });
    let outcome = log
        .feedback(vec![label("r1", "1")], 1_700_000_100_000)
        .await;
    holder.join().unwrap();
    let outcome = outcome.expect("feedback waits for the lock instead of failing");
    assert_eq!(outcome.accepted, 1);
    drop(log);
    thread.join().unwrap();
    assert_eq!(db.query_text("SELECT COUNT(*) FROM feedback"), "1");
}

#[test]
fn an_unwritable_path_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let err = spawn_log_writer(config(
        StoreUrl::sqlite(file.join("log.sqlite")),
        "local",
        4,
        2,
    ))
    .unwrap_err();
    assert!(err.to_string().contains("cannot create"), "{err}");
}

#[test]
fn an_unreachable_postgres_is_an_error() {
    // Port 1 on loopback: nothing listens there.
    let url = StoreUrl::parse("postgres://sy:pw@127.0.0.1:1/none").unwrap();
    let err = spawn_log_writer(config(url, "r1", 4, 2)).unwrap_err();
    assert!(err.to_string().starts_with("postgres:"), "{err}");
}

/// A log written before records carried segments (no `segments` column) opens, gains the
/// column, keeps its old rows (counted without segments) and takes new ones with them.
#[tokio::test]
async fn a_log_from_before_segments_gains_the_column_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE predictions (
                id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, ts_ms INTEGER NOT NULL,
                model TEXT NOT NULL, epoch INTEGER NOT NULL, variant TEXT NOT NULL,
                role TEXT NOT NULL, version TEXT NOT NULL, key_hash INTEGER,
                outcome TEXT NOT NULL, status INTEGER NOT NULL, latency_us INTEGER NOT NULL,
                output TEXT NOT NULL, input TEXT, paired_version TEXT);
             INSERT INTO predictions (request_id, ts_ms, model, epoch, variant, role, version,
                outcome, status, latency_us, output)
             VALUES ('old', 1, 'yield', 3, 'primary', 'serving', 'v1', 'ok', 200, 10,
                '{\"classes\":[\"1\"]}');",
        )
        .unwrap();
    }
    let url = StoreUrl::parse(path.to_str().unwrap()).unwrap();
    let (log, thread) = spawn_log_writer(config(url.clone(), "r1", 16, 4)).unwrap();
    assert!(log.record(record("new1", Role::Serving, "v1", "1", None)));
    log.flush().await.unwrap();
    drop(log);
    thread.join().unwrap();
    let (log, thread) = spawn_log_writer(config(url, "r1", 16, 4)).unwrap();
    let agg = log.aggregates().lock().clone();
    let v1 = agg.variant("yield", "v1", Role::Serving, |_| true);
    assert_eq!(v1.requests, 2);
    let testers = &v1.segments["tester"];
    assert_eq!(testers.values().len(), 1);
    assert_eq!(testers.values()["odd"].requests, 1);
    drop(log);
    thread.join().unwrap();
}

/// Request `prefix``i`'s id: for odd `i` in the form the gateway generates (32 hex digits
/// starting with a millisecond, four requests to a millisecond); for `i` of 2 modulo 4 a
/// client's zero-padded counter (the same form, its millisecond the epoch's); else a name
/// a client chose. The SQLite log files the first under their millisecond, the others by name.
fn rid(prefix: char, i: usize) -> String {
    match i % 4 {
        1 | 3 => {
            let ms = 1_700_000_000_000 + u64::from(prefix) * 1_000 + i as u64 / 4;
            format!("{ms:012x}{i:020x}")
        }
        2 => format!("{:032}", u64::from(prefix) * 1_000_000 + i as u64),
        _ => format!("{prefix}{i}"),
    }
}

/// What a shadow rollout's report shows: the serving records of the primary newest first, each
/// with its `ok` shadow answers of the candidate paired with it that differ, up to the limit.
/// Shadow answers are logged before or after their serving record, some a batch apart (7
/// records a batch), half the ids generated ([`rid`]: several to a millisecond), a quarter
/// counters, a quarter named.
async fn disagreements_are_the_newest_differing_shadow_answers_of_the_pair(db: &Db) {
    let (log, thread) = spawn_log_writer(config(db.url(), "r1", 1024, 7)).unwrap();
    let mut expected: Vec<(String, String)> = Vec::new();
    for i in 0..80usize {
        let id = rid('d', i);
        let serving = record(&id, Role::Serving, "v1", "1", None);
        // Every third request's candidate differs; request 9 has two differing answers.
        let answers: Vec<&str> = match i {
            9 => vec!["0", "2"],
            _ if i % 3 == 0 => vec!["0"],
            _ => vec!["1"],
        };
        let shadows: Vec<PredictionRecord> = answers
            .iter()
            .map(|a| record(&id, Role::Shadow, "v2", a, Some("1")))
            .collect();
        // Noise that must not count: another candidate, a failed call, another pairing.
        let mut noise = vec![record(&id, Role::Shadow, "v3", "0", Some("1"))];
        let mut failed = record(&id, Role::Shadow, "v2", "0", Some("1"));
        failed.outcome = Outcome::Timeout;
        noise.push(failed);
        let mut other_pair = record(&id, Role::Shadow, "v2", "0", Some("1"));
        other_pair.pair.as_mut().unwrap().version = "v0".into();
        noise.push(other_pair);
        let shadow_first = i % 4 == 1;
        if shadow_first {
            shadows.iter().for_each(|r| assert!(log.record(r.clone())));
        }
        assert!(log.record(serving));
        noise.into_iter().for_each(|r| assert!(log.record(r)));
        if !shadow_first {
            shadows.iter().for_each(|r| assert!(log.record(r.clone())));
        }
        for a in answers.iter().filter(|a| **a != "1") {
            expected.push((id.clone(), (*a).to_string()));
        }
    }
    log.flush().await.unwrap();
    let outcome = log
        .feedback(vec![label(&rid('d', 9), "2")], 1_700_000_100_000)
        .await
        .unwrap();
    assert_eq!(outcome.accepted, 1);
    // Newest serving record first; one request's answers in the order they were logged.
    let mut newest_first: Vec<(String, String)> = Vec::new();
    for i in (0..80).rev() {
        let id = rid('d', i);
        newest_first.extend(expected.iter().filter(|(r, _)| *r == id).cloned());
    }
    assert_eq!(newest_first.len(), 28);
    let cases = |limit| {
        disagreements_at(&db.url(), "yield", "v1", "v2", limit)
            .unwrap()
            .into_iter()
            .map(|c| {
                let Prediction::Classes(shadow) = &c.shadow else {
                    panic!("{c:?}")
                };
                assert_eq!(c.primary, Prediction::Classes(vec!["1".into()]));
                assert_eq!(c.input.as_deref(), Some("{\"x\":1}"));
                let truth = (c.request_id == rid('d', 9)).then(|| Truth::Labels(vec!["2".into()]));
                assert_eq!(c.truth, truth, "{}", c.request_id);
                (c.request_id.clone(), shadow[0].clone())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(cases(100), newest_first);
    assert_eq!(cases(5), newest_first[..5]);
    assert!(disagreements_at(&db.url(), "yield", "v2", "v1", 100)
        .unwrap()
        .is_empty());
    drop(log);
    thread.join().unwrap();
}

/// Start-up from a snapshot: the first writer snapshots as it goes and when it stops; the
/// second takes a tail without snapshots (records of new requests, a shadow record of an old
/// request, labels of old and new requests); the rows the snapshot covers are then deleted.
/// A third writer must restore exactly what the second held, without those rows. Half the
/// requests have generated ids ([`rid`]); the old request's late shadow record is one of them.
async fn a_restart_restores_the_snapshot_and_replays_only_the_tail(db: &Db) {
    let mut cfg = config(db.url(), "r1", 1024, 16);
    cfg.snapshot_every = 50;
    let (log, thread) = spawn_log_writer(cfg).unwrap();
    for i in 0..40 {
        let p = if i % 2 == 0 { "1" } else { "0" };
        assert!(log.record(record(&rid('a', i), Role::Serving, "v1", p, None)));
        if i % 4 != 3 {
            assert!(log.record(record(&rid('a', i), Role::Shadow, "v2", "1", Some(p))));
        }
    }
    log.flush().await.unwrap();
    let labels = (0..20).map(|i| label(&rid('a', i), "1")).collect();
    log.feedback(labels, 1_700_000_100_000).await.unwrap();
    log.flush().await.unwrap();
    assert!(
        log.stats()
            .snapshots
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    drop(log);
    thread.join().unwrap();
    let covered = db.query_text("SELECT MAX(last_prediction) FROM aggregate_snapshots");
    assert_eq!(covered, db.query_text("SELECT MAX(id) FROM predictions"));

    // The tail, with no snapshot.
    let (log, thread) = spawn_log_writer(config(db.url(), "r1", 1024, 16)).unwrap();
    // The shadow the old request a3 never had, after its serving record was snapshotted.
    assert!(log.record(record(&rid('a', 3), Role::Shadow, "v2", "0", Some("0"))));
    for i in 0..10 {
        assert!(log.record(record(&rid('b', i), Role::Serving, "v1", "1", None)));
        assert!(log.record(record(&rid('b', i), Role::Shadow, "v2", "0", Some("1"))));
    }
    log.flush().await.unwrap();
    let mut labels: Vec<Feedback> = (20..40).map(|i| label(&rid('a', i), "0")).collect();
    labels.extend((0..5).map(|i| label(&rid('b', i), "1")));
    let outcome = log.feedback(labels, 1_700_000_200_000).await.unwrap();
    assert_eq!(
        (outcome.accepted, outcome.duplicates),
        (25, 0),
        "{outcome:?}"
    );
    log.flush().await.unwrap();
    let held = log.aggregates().lock().clone();
    drop(log);
    thread.join().unwrap();
    assert_eq!(
        held.variant("yield", "v1", Role::Serving, |_| true)
            .requests,
        50
    );

    // Start-up needs none of the rows the snapshot covers, except those of requests that took
    // something after it (a label, a shadow record): delete the others.
    let settled: Vec<String> = (0..20)
        .filter(|i| *i != 3)
        .map(|i| format!("'{}'", rid('a', i)))
        .collect();
    db.exec(&format!(
        "DELETE FROM predictions WHERE id <= {covered} AND request_id IN ({})",
        settled.join(", ")
    ))
    .unwrap();
    assert_eq!(db.query_text("SELECT COUNT(*) FROM predictions"), "57");
    let (log, thread) = spawn_log_writer(config(db.url(), "r1", 1024, 16)).unwrap();
    let restored = log.aggregates().lock().clone();
    // (Compared piecewise: a failing whole comparison prints every histogram bucket.)
    assert_eq!(
        restored.series.keys().collect::<Vec<_>>(),
        held.series.keys().collect::<Vec<_>>()
    );
    for (k, v) in &held.series {
        let r = &restored.series[k];
        assert_eq!(
            (r.requests, r.correct, &r.confusion, &r.segments),
            (v.requests, v.correct, &v.confusion, &v.segments),
            "{k:?}"
        );
    }
    for (k, v) in &held.pairs {
        let r = &restored.pairs[k];
        assert_eq!(
            (
                r.agreement,
                r.both_correct,
                r.primary_only,
                r.shadow_only,
                r.both_wrong
            ),
            (
                v.agreement,
                v.both_correct,
                v.primary_only,
                v.shadow_only,
                v.both_wrong
            ),
            "{k:?}"
        );
    }
    // The samples for a rank test: every label's revenue on the serving records (40 + 5),
    // the snapshot's and the tail's.
    assert_eq!(
        restored
            .variant("yield", "v1", Role::Serving, |_| true)
            .metric_samples["revenue"]
            .len(),
        45
    );
    assert!(restored == held);
    drop(log);
    thread.join().unwrap();
}

/// A snapshot that does not decode is not trusted: the whole log is recounted.
#[tokio::test]
async fn an_unreadable_snapshot_falls_back_to_a_recount() {
    let db = Db::sqlite();
    let mut cfg = config(db.url(), "r1", 1024, 16);
    cfg.snapshot_every = 10;
    let (log, thread) = spawn_log_writer(cfg).unwrap();
    for i in 0..30 {
        assert!(log.record(record(&format!("c{i}"), Role::Serving, "v1", "1", None)));
    }
    log.flush().await.unwrap();
    let held = log.aggregates().lock().clone();
    drop(log);
    thread.join().unwrap();
    db.exec("UPDATE aggregate_snapshots SET aggregates = '{\"series\": 3}'")
        .unwrap();
    let (log, thread) = spawn_log_writer(config(db.url(), "r1", 16, 4)).unwrap();
    assert_eq!(*log.aggregates().lock(), held);
    drop(log);
    thread.join().unwrap();
}

/// Retention: keep the newest 30 records. Nothing goes while a rollout reads their epoch or
/// before a snapshot covers them; then the older ones go in batches, the aggregates stay as
/// they were (in memory and after a restart), and a label for a deleted record is unknown.
async fn retention_deletes_covered_records_but_never_those_a_rollout_reads(db: &Db) {
    let mut cfg = config(db.url(), "r1", 1024, 16);
    cfg.snapshot_every = 20;
    cfg.retention = Some(Retention {
        max_age_ms: None,
        max_records: Some(30),
        batch: 7,
    });
    let (log, thread) = spawn_log_writer(cfg.clone()).unwrap();
    let count = || db.query_text("SELECT COUNT(*) FROM predictions");
    // A running rollout reads epoch 3 (every record's).
    log.protect_from_epoch(Some(3));
    for i in 0..100 {
        assert!(log.record(record(&format!("r{i}"), Role::Serving, "v1", "1", None)));
    }
    log.flush().await.unwrap();
    let labels = (0..10).map(|i| label(&format!("r{i}"), "1")).collect();
    log.feedback(labels, 1_700_000_100_000).await.unwrap();
    for i in 100..120 {
        assert!(log.record(record(&format!("r{i}"), Role::Serving, "v1", "1", None)));
    }
    log.flush().await.unwrap();
    let snapshots = log
        .stats()
        .snapshots
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(snapshots >= 2, "{snapshots} snapshots");
    assert_eq!(count(), "120");
    let held = log.aggregates().lock().clone();

    // The rollout ends: the writer deletes down to the newest 30, 7 at a time.
    log.protect_from_epoch(None);
    let mut rounds = 0;
    while count() != "30" {
        rounds += 1;
        assert!(rounds < 10_000, "still {} records", count());
        log.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
    assert_eq!(
        db.query_text("SELECT MIN(request_id) FROM predictions"),
        "r100"
    );
    assert_eq!(
        log.stats()
            .pruned
            .load(std::sync::atomic::Ordering::Relaxed),
        90
    );
    assert_eq!(*log.aggregates().lock(), held);
    // At most the newest label is kept (SQLite would reuse its position otherwise).
    let labels_left: u64 = db
        .query_text("SELECT COUNT(*) FROM feedback")
        .parse()
        .unwrap();
    assert!(labels_left <= 1, "{labels_left}");
    let late = log
        .feedback(vec![label("r0", "0")], 1_700_000_200_000)
        .await
        .unwrap();
    assert_eq!(late.unknown, vec!["r0".to_string()]);
    drop(log);
    thread.join().unwrap();
    let (log, thread) = spawn_log_writer(config(db.url(), "r1", 1024, 16)).unwrap();
    assert!(*log.aggregates().lock() == held);
    drop(log);
    thread.join().unwrap();
}

/// Labels whose records went another way than the retention (an operator's `DELETE`) are
/// swept by later retention passes, a batch of labels at a time, and only those: labels of
/// requests with records left stay.
async fn retention_sweeps_labels_whose_records_an_operator_deleted(db: &Db) {
    let mut cfg = config(db.url(), "r1", 1024, 16);
    cfg.snapshot_every = 5;
    // Nothing old enough or past the count to delete: each pass only sweeps labels.
    cfg.retention = Some(Retention {
        max_age_ms: None,
        max_records: Some(1_000),
        batch: 3,
    });
    let (log, thread) = spawn_log_writer(cfg).unwrap();
    log.protect_from_epoch(None);
    for i in 0..20 {
        assert!(log.record(record(&format!("r{i}"), Role::Serving, "v1", "1", None)));
    }
    log.flush().await.unwrap();
    let labels = (0..10).map(|i| label(&format!("r{i}"), "1")).collect();
    assert_eq!(
        log.feedback(labels, 1_700_000_100_000)
            .await
            .unwrap()
            .accepted,
        10
    );
    db.exec("DELETE FROM predictions WHERE request_id IN ('r1', 'r3', 'r6')")
        .unwrap();
    let labels = || {
        db.query_text(if db.is_postgres() {
            "SELECT string_agg(request_id, ' ' ORDER BY seq) FROM feedback"
        } else {
            "SELECT group_concat(request_id, ' ') FROM (SELECT request_id FROM feedback ORDER BY rowid)"
        })
    };
    let mut i = 20;
    while labels() != "r0 r2 r4 r5 r7 r8 r9" {
        // More records: snapshots, each followed by a retention pass.
        assert!(i < 2_000, "labels left: {}", labels());
        assert!(log.record(record(&format!("r{i}"), Role::Serving, "v1", "1", None)));
        log.flush().await.unwrap();
        i += 1;
    }
    assert_eq!(
        db.query_text("SELECT COUNT(*) FROM predictions"),
        (i - 3).to_string()
    );
    drop(log);
    thread.join().unwrap();
}

/// A replay's query: one model's serving records with a captured body, oldest first, in the
/// time window, with the truth of their feedback (business metrics alone are no label).
async fn captured_requests_are_the_served_bodies_with_their_labels(db: &Db) {
    let (log, thread) = spawn_log_writer(config(db.url(), "r1", 1024, 7)).unwrap();
    for i in 0..6i64 {
        let id = format!("c{i}");
        let mut serving = record(&id, Role::Serving, "v1", "1", None);
        serving.ts_ms = 1_000 + i;
        serving.input = (i != 3).then(|| format!("{{\"x\":{i}}}"));
        assert!(log.record(serving));
        // Shadow records are not requests to replay.
        assert!(log.record(record(&id, Role::Shadow, "v2", "0", Some("1"))));
    }
    let mut other = record("o1", Role::Serving, "v1", "1", None);
    other.model = "other".into();
    assert!(log.record(other));
    log.flush().await.unwrap();
    let outcome = log
        .feedback(
            vec![
                label("c1", "0"),
                Feedback {
                    request_id: "c2".into(),
                    truth: Truth::None,
                    metrics: vec![("revenue".into(), 1.0)],
                },
            ],
            1_700_000_100_000,
        )
        .await
        .unwrap();
    assert_eq!(outcome.accepted, 2);
    log.flush().await.unwrap();
    let query = |since_ms, until_ms, limit| CapturedQuery {
        model: "yield".into(),
        since_ms,
        until_ms,
        limit,
    };
    let all = captured_requests_at(&db.url(), &query(None, None, 100)).unwrap();
    let ids: Vec<&str> = all.iter().map(|c| c.request_id.as_str()).collect();
    assert_eq!(ids, ["c0", "c1", "c2", "c4", "c5"], "no body, no replay");
    assert_eq!(all[1].input, "{\"x\":1}");
    assert_eq!(all[1].truth, Some(Truth::Labels(vec!["0".into()])));
    assert_eq!(all[2].truth, None, "metrics only");
    assert_eq!(all[0].segments, vec![("tester".into(), "even".into())]);
    let window = captured_requests_at(&db.url(), &query(Some(1_001), Some(1_005), 100)).unwrap();
    let ids: Vec<&str> = window.iter().map(|c| c.request_id.as_str()).collect();
    assert_eq!(ids, ["c1", "c2", "c4"]);
    assert_eq!(
        captured_requests_at(&db.url(), &query(None, None, 2))
            .unwrap()
            .len(),
        2
    );
    drop(log);
    thread.join().unwrap();
}

#[test]
fn captured_requests_of_a_missing_sqlite_file_are_an_error_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.sqlite");
    let e = captured_requests_at(
        &StoreUrl::sqlite(path.clone()),
        &CapturedQuery {
            model: "yield".into(),
            since_ms: None,
            until_ms: None,
            limit: 10,
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("no prediction log at"), "{e}");
    assert!(!path.exists());
}

fn version(name: &str, artefact: Artefact, git_sha: Option<&str>) -> VersionProvenance {
    VersionProvenance {
        model: "yield".into(),
        version: name.into(),
        artefact,
        git_sha: git_sha.map(str::to_string),
        registry: None,
    }
}

async fn artefacts_are_recorded_named_by_records_and_never_swapped(db: &Db) {
    let sha_a = Artefact::Sha256("a".repeat(64));
    let sha_b = Artefact::Sha256("b".repeat(64));
    let served = vec![
        version("v1", sha_a.clone(), Some("3f2c1ab")),
        version("v2", Artefact::BackendVersion("7".into()), None),
    ];
    let mut cfg = config(db.url(), "r1", 1024, 7);
    cfg.versions = served.clone();
    let (log, thread) = spawn_log_writer(cfg).unwrap();
    assert!(log.record(record("y1", Role::Serving, "v1", "1", None)));
    assert!(log.record(record("y2", Role::Serving, "v2", "1", None)));
    assert!(log.record(record("y3", Role::Serving, "v3", "1", None)));
    log.flush().await.unwrap();
    drop(log);
    thread.join().unwrap();
    // Each record names its version's row; a version the writer was not told of names none.
    let artefact_of = |id: &str| {
        db.query_text(&format!(
            "SELECT a.artefact_kind || ':' || a.artefact FROM predictions p
             JOIN artefacts a ON a.id = p.artefact_id WHERE p.request_id = '{id}'"
        ))
    };
    assert_eq!(artefact_of("y1"), format!("sha256:{}", "a".repeat(64)));
    assert_eq!(artefact_of("y2"), "backend_version:7");
    assert_eq!(
        db.query_text(
            "SELECT COUNT(*) FROM predictions WHERE request_id = 'y3' AND artefact_id IS NULL"
        ),
        "1"
    );
    let stored = artefacts_at(&db.url()).unwrap();
    assert_eq!(
        stored
            .iter()
            .map(|a| a.provenance.clone())
            .collect::<Vec<_>>(),
        served
    );
    assert!(stored.iter().all(|a| a.first_seen_ms > 1_700_000_000_000));

    // The same file under the same name: no new row. A changed file under the same name: the
    // check and the start are refused, naming both hashes, and nothing is recorded.
    check_artefacts_at(&db.url(), &served).unwrap();
    let mut changed = served.clone();
    changed[0].artefact = sha_b.clone();
    let err = check_artefacts_at(&db.url(), &changed).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, StoreError::ArtefactChanged(ref c) if c.len() == 1),
        "{message}"
    );
    for part in [
        "model yield version v1",
        "was sha256:aaaaaaaaaaaa and is now sha256:bbbbbbbbbbbb",
        "new version name",
    ] {
        assert!(message.contains(part), "{part:?} missing from {message}");
    }
    let mut cfg = config(db.url(), "r1", 1024, 7);
    cfg.versions = changed;
    let err = spawn_log_writer(cfg).expect_err("a changed artefact is refused");
    assert!(
        err.to_string().contains("is now sha256:bbbbbbbbbbbb"),
        "{err}"
    );
    assert_eq!(artefacts_at(&db.url()).unwrap().len(), 2);

    // Under a new name it is a new version; a restart with the same versions adds nothing.
    let mut renamed = served.clone();
    renamed.push(version("v1-retrained", sha_b, Some("9e8d7c6")));
    for _ in 0..2 {
        let mut cfg = config(db.url(), "r1", 1024, 7);
        cfg.versions = renamed.clone();
        let (log, thread) = spawn_log_writer(cfg).unwrap();
        drop(log);
        thread.join().unwrap();
    }
    let stored = artefacts_at(&db.url()).unwrap();
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[2].provenance.version, "v1-retrained");
}
