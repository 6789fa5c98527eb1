//! Replicas sharing one PostgreSQL database: separate logs, merged statistics, one controller,
//! one routing table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use support::Db;
use switchyard_core::{Aggregates, Feedback, Outcome, PairRef, Prediction, PredictionRecord};
use switchyard_core::{Role, Truth};
use switchyard_stats::Moments;
use switchyard_store::wire::{decode_aggregates, encode_aggregates};
use switchyard_store::{spawn_log_writer, Cluster, LogWriterConfig, StoreUrl};

fn record(id: &str, role: Role, version: &str, class: &str, latency_us: u64) -> PredictionRecord {
    PredictionRecord {
        request_id: id.into(),
        ts_ms: 1_700_000_000_000,
        model: "yield".into(),
        epoch: 2,
        variant: if role == Role::Serving {
            "primary"
        } else {
            "shadow"
        }
        .into(),
        role,
        version: version.into(),
        key_hash: None,
        outcome: if latency_us.is_multiple_of(7) {
            Outcome::Timeout
        } else {
            Outcome::Ok
        },
        status: 200,
        latency_us,
        output: Prediction::Classes(vec![class.into()]),
        input: None,
        pair: (role == Role::Shadow).then(|| PairRef {
            version: "v1".into(),
            output: Prediction::Classes(vec!["1".into()]),
        }),
        // A lot per latency bucket, so the replicas' segment tables merge too.
        segments: vec![("lot".into(), format!("L{}", latency_us % 5))],
    }
}

/// The serving and shadow records of one request to a regression model.
fn regression(id: &str, i: u64) -> [PredictionRecord; 2] {
    let primary = Prediction::Values(vec![100.0 + (i % 13) as f64 * 0.9, (i % 7) as f64]);
    let mut serving = record(id, Role::Serving, "v1", "0", 700 + i);
    serving.model = "testtime".into();
    serving.output = primary.clone();
    let mut shadow = record(id, Role::Shadow, "v2", "0", 800 + i);
    shadow.model = "testtime".into();
    shadow.output = Prediction::Values(vec![99.0 + (i % 11) as f64, (i % 3) as f64 * 0.5]);
    shadow.pair = Some(PairRef {
        version: "v1".into(),
        output: primary,
    });
    [serving, shadow]
}

fn label(id: &str, class: &str, revenue: f64) -> Feedback {
    Feedback {
        request_id: id.into(),
        truth: Truth::Labels(vec![class.into()]),
        metrics: vec![("revenue".into(), revenue)],
    }
}

fn writer(
    url: &StoreUrl,
    replica: &str,
) -> (switchyard_store::LogHandle, std::thread::JoinHandle<()>) {
    spawn_log_writer(LogWriterConfig {
        store: url.clone(),
        replica: replica.into(),
        queue_capacity: 4096,
        batch_size: 64,
        commit_interval: std::time::Duration::from_millis(5),
        snapshot_every: 0,
        retention: None,
        max_size_bytes: None,
        versions: Vec::new(),
    })
    .unwrap()
}

/// Requests split over three replicas, labels sent to whichever replica (not the one that
/// served): each replica's published window merged equals one writer that saw everything.
#[tokio::test]
async fn merged_replica_windows_equal_one_writer_of_all_traffic() {
    let shared = Db::postgres();
    let single = Db::postgres();
    let url = shared.url();
    let replicas: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|r| (r, writer(&url, r)))
        .collect();
    let (all, all_thread) = writer(&single.url(), "only");
    for i in 0..300u64 {
        let id = format!("req-{i}");
        let class = if i % 3 == 0 { "0" } else { "1" };
        let recs = [
            record(&id, Role::Serving, "v1", "1", 500 + i * 13),
            record(&id, Role::Shadow, "v2", class, 900 + i * 11),
        ];
        let (_, (log, _)) = &replicas[(i % 3) as usize];
        for r in &recs {
            assert!(log.record(r.clone()));
            assert!(all.record(r.clone()));
        }
    }
    // A regression model shadowed the same way (two instances per request).
    for i in 0..300u64 {
        let recs = regression(&format!("tt-{i}"), i);
        let (_, (log, _)) = &replicas[(i % 3) as usize];
        for r in &recs {
            assert!(log.record(r.clone()));
            assert!(all.record(r.clone()));
        }
    }
    for (_, (log, _)) in &replicas {
        log.flush().await.unwrap();
    }
    all.flush().await.unwrap();
    // Feedback lands on the "next" replica, never the one that served the request.
    for i in (0..300u64).step_by(2) {
        let item = label(
            &format!("req-{i}"),
            if i % 4 == 0 { "1" } else { "0" },
            i as f64,
        );
        let (_, (log, _)) = &replicas[((i + 1) % 3) as usize];
        let out = log.feedback(vec![item.clone()], 5).await.unwrap();
        assert_eq!(out.accepted, 1);
        all.feedback(vec![item], 5).await.unwrap();
    }
    for i in (0..300u64).step_by(3) {
        let item = Feedback {
            request_id: format!("tt-{i}"),
            truth: Truth::Values(vec![100.0 + (i % 17) as f64, (i % 5) as f64]),
            metrics: vec![],
        };
        let (_, (log, _)) = &replicas[((i + 1) % 3) as usize];
        assert_eq!(
            log.feedback(vec![item.clone()], 5).await.unwrap().accepted,
            1
        );
        all.feedback(vec![item], 5).await.unwrap();
    }
    let tt = all
        .aggregates()
        .lock()
        .pair("testtime", "v1", "v2", |_| true);
    assert_eq!((tt.values.len(), tt.labelled_values.len()), (600, 200));
    // A duplicate label sent to a third replica is recognised as such.
    let (_, (log, _)) = &replicas[2];
    let dup = log
        .feedback(vec![label("req-0", "0", 1.0)], 6)
        .await
        .unwrap();
    assert_eq!((dup.accepted, dup.duplicates), (0, 1));

    let cluster = Cluster::open(&url, "observer").unwrap();
    for (name, (log, _)) in &replicas {
        let agg = log.aggregates().lock().clone();
        Cluster::open(&url, name)
            .unwrap()
            .publish_aggregates(10, &agg)
            .unwrap();
    }
    let windows = cluster.aggregate_windows().unwrap();
    assert_eq!(
        windows.iter().map(|w| w.0.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    let mut merged = Aggregates::default();
    windows.iter().for_each(|(_, _, agg)| merged.merge(agg));
    let expected = all.aggregates().lock().clone();
    assert_same(&merged, &expected);
    assert!(expected
        .series
        .values()
        .any(|s| s.metrics.contains_key("revenue")));
    // The samples for a rank test went through the wire too: 150 revenue values, 200 labelled
    // regression instances.
    let v1 = expected.variant("yield", "v1", Role::Serving, |_| true);
    assert_eq!(v1.metric_samples["revenue"].len(), 150);
    let tt = expected.variant("testtime", "v1", Role::Serving, |_| true);
    assert_eq!(tt.abs_error_sample.len(), 200);

    // Per-replica logs sum to the traffic.
    let counts = cluster.records_by_replica().unwrap();
    let serving: u64 = counts
        .iter()
        .filter(|c| c.1 == "serving")
        .map(|c| c.2)
        .sum();
    assert_eq!(serving, 600);
    assert!(counts.iter().all(|c| c.2 == 200), "{counts:?}");

    // A restarted replica rebuilds exactly its own window (its records, the labels it took).
    let before = replicas[1].1 .0.aggregates().lock().clone();
    for (_, (log, thread)) in replicas {
        drop(log);
        thread.join().unwrap();
    }
    let (b, b_thread) = writer(&url, "b");
    assert_same(&b.aggregates().lock(), &before);
    drop(b);
    b_thread.join().unwrap();
    drop(all);
    all_thread.join().unwrap();
}

/// Equal counts, histograms, proportions and samples; moments equal up to float rounding
/// (Welford's updates depend on the order values arrive in).
fn assert_same(got: &Aggregates, want: &Aggregates) {
    assert_eq!(
        got.pairs.keys().collect::<Vec<_>>(),
        want.pairs.keys().collect::<Vec<_>>()
    );
    for (key, w) in &want.pairs {
        let g = &got.pairs[key];
        assert_eq!(
            (
                g.agreement,
                g.both_correct,
                g.primary_only,
                g.shadow_only,
                g.both_wrong
            ),
            (
                w.agreement,
                w.both_correct,
                w.primary_only,
                w.shadow_only,
                w.both_wrong
            ),
            "{key:?}"
        );
        assert_eq!(
            (
                g.values_compared,
                g.shadow_errors,
                g.shadow_calls,
                g.errors.ape_skipped
            ),
            (
                w.values_compared,
                w.shadow_errors,
                w.shadow_calls,
                w.errors.ape_skipped
            ),
            "{key:?}"
        );
        assert_eq!(g.values, w.values, "{key:?}");
        assert_eq!(g.labelled_values, w.labelled_values, "{key:?}");
        for (gm, wm) in [
            (&g.errors.primary_abs, &w.errors.primary_abs),
            (&g.errors.shadow_sq, &w.errors.shadow_sq),
            (&g.errors.shadow_ape, &w.errors.shadow_ape),
            (&g.errors.abs_diff, &w.errors.abs_diff),
        ] {
            close(gm, wm);
        }
    }
    assert_eq!(
        got.series.keys().collect::<Vec<_>>(),
        want.series.keys().collect::<Vec<_>>()
    );
    for (key, w) in &want.series {
        let g = &got.series[key];
        assert_eq!((g.requests, g.errors), (w.requests, w.errors), "{key:?}");
        assert!(g.latency == w.latency, "latency of {key:?} differs");
        assert_eq!(g.correct, w.correct, "{key:?}");
        assert_eq!(
            g.metrics.keys().collect::<Vec<_>>(),
            w.metrics.keys().collect::<Vec<_>>()
        );
        assert_eq!(g.signed_error, w.signed_error, "{key:?}");
        assert_eq!(g.metric_samples, w.metric_samples, "{key:?}");
        assert_eq!(g.abs_error_sample, w.abs_error_sample, "{key:?}");
        close(&g.abs_error, &w.abs_error);
        for (name, wm) in &w.metrics {
            close(&g.metrics[name], wm);
        }
    }
}

fn close(g: &Moments, w: &Moments) {
    assert_eq!(g.count(), w.count());
    if w.count() > 0 {
        assert!((g.mean().unwrap() - w.mean().unwrap()).abs() < 1e-9);
    }
    if w.count() > 1 {
        assert!((g.variance().unwrap() - w.variance().unwrap()).abs() < 1e-6);
    }
}

#[test]
fn aggregates_survive_their_text_form() {
    let mut agg = Aggregates::default();
    for i in 0..50u64 {
        let r = record(&format!("x{i}"), Role::Shadow, "v2", "0", 10 + i * i);
        agg.record(&r);
        agg.record_feedback(
            &[r],
            &Truth::Labels(vec!["0".into()]),
            &[("m".into(), i as f64)],
        );
    }
    // Regression pairs: samples, paired errors and signed errors (with a zero truth, for MAPE).
    for i in 0..40u64 {
        let id = format!("v{i}");
        let (p, s, t) = (
            100.0 + i as f64 * 0.7,
            101.5 - i as f64 * 0.3,
            (i % 9) as f64 * 12.5,
        );
        let mut serving = record(&id, Role::Serving, "v1", "0", 10 + i);
        serving.output = Prediction::Values(vec![p, p / 3.0]);
        let mut shadow = record(&id, Role::Shadow, "v2", "0", 20 + i);
        shadow.output = Prediction::Values(vec![s, s / 3.0]);
        shadow.pair = Some(PairRef {
            version: "v1".into(),
            output: serving.output.clone(),
        });
        agg.record(&serving);
        agg.record(&shadow);
        agg.record_feedback(&[serving, shadow], &Truth::Values(vec![t, t / 3.0]), &[]);
    }
    // More class names than the aggregates keep: the rest travel as `other`.
    for i in 0..70u64 {
        let class = format!("c{i:02}");
        let r = record(&format!("k{i}"), Role::Shadow, "v2", &class, 11);
        agg.record(&r);
        agg.record_feedback(&[r], &Truth::Labels(vec![class]), &[]);
    }
    // More segment values than the aggregates keep: the rest travel as `other`.
    for i in 0..300u64 {
        let mut r = record(&format!("w{i}"), Role::Serving, "v1", "0", 13);
        r.segments = vec![("wafer".into(), format!("W{i:03}"))];
        agg.record(&r);
    }
    let wafers = &agg.variant("yield", "v1", Role::Serving, |_| true).segments["wafer"];
    assert!(wafers.has_other() && wafers.other().requests == 44);
    let shadow = agg.variant("yield", "v2", Role::Shadow, |_| true);
    assert_eq!(shadow.confusion.classes().len(), 64);
    assert!(shadow.confusion.other_same() > 0 && shadow.predicted.other() > 0);
    let pair = agg.pair("yield", "v1", "v2", |_| true);
    assert!(pair.transitions.total() > 0 && pair.primary_values.count() > 0);
    assert_eq!(
        (
            pair.values.len(),
            pair.labelled_values.len(),
            pair.errors.ape_skipped
        ),
        (80, 80, 10)
    );
    // A metric with more values than its sample keeps (the rank test's), and the absolute
    // errors of the regression instances above.
    let n = switchyard_core::aggregate::METRIC_SAMPLE_SIZE + 300;
    for i in 0..n {
        let r = record(&format!("m{i}"), Role::Serving, "v1", "0", 12);
        agg.record(&r);
        agg.record_feedback(&[r], &Truth::None, &[("revenue".into(), i as f64 * 0.25)]);
    }
    let v1 = agg.variant("yield", "v1", Role::Serving, |_| true);
    assert_eq!(
        (
            v1.metric_samples["revenue"].len(),
            v1.abs_error_sample.len()
        ),
        (switchyard_core::aggregate::METRIC_SAMPLE_SIZE, 80)
    );
    let text = encode_aggregates(&agg).unwrap();
    // Floats read back bit for bit (serde_json's `float_roundtrip`).
    assert_eq!(decode_aggregates(&text).unwrap(), agg);
    // A window written before the regression fields existed still reads.
    let old = r#"{"series":[],"pairs":[{"model":"m","epoch":1,"primary":"v1","shadow":"v2",
        "agreement":{"successes":1,"trials":2},"both_correct":1,"primary_only":0,"shadow_only":1,
        "both_wrong":0,"error_diff":null,"shadow_errors":0,"shadow_calls":2}]}"#;
    let back = decode_aggregates(old).unwrap();
    assert_eq!(back.pair("m", "v1", "v2", |_| true).labelled(), 2);
    let err = decode_aggregates("{\"series\": 3}").unwrap_err();
    assert!(err.to_string().contains("aggregates"), "{err}");
    // Class counts that do not decode are refused, not read as something else.
    let bad = r#"{"series":[],"pairs":[{"model":"m","epoch":1,"primary":"v1","shadow":"v2",
        "agreement":{"successes":1,"trials":2},"both_correct":1,"primary_only":0,"shadow_only":1,
        "both_wrong":0,"shadow_errors":0,"shadow_calls":2,
        "transitions":{"limit":64,"classes":["b","a"],"cells":[[0,0,1]],"other_same":0}}]}"#;
    let err = decode_aggregates(bad).unwrap_err();
    assert!(err.to_string().contains("sorted"), "{err}");
}

#[test]
fn one_controller_at_a_time_and_takeover_when_its_session_ends() {
    let db = Db::postgres();
    let a = Cluster::open(&db.url(), "a").unwrap();
    let b = Cluster::open(&db.url(), "b").unwrap();
    assert!(a.try_lead("http://a", 1).unwrap());
    assert!(
        a.try_lead("http://a", 2).unwrap(),
        "the leader stays leader"
    );
    assert!(!b.try_lead("http://b", 3).unwrap());
    let leader = b.leader().unwrap().unwrap();
    assert_eq!(
        (leader.replica.as_str(), leader.admin_url.as_str()),
        ("a", "http://a")
    );
    let term = leader.term;

    // The controller's session ends (as when its process dies): the lock goes with it.
    db.exec(
        "SELECT pg_terminate_backend(pid) FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND objid = 1398341635",
    )
    .unwrap();
    // `a` notices on its next attempt and does not silently take the lock back.
    let mut a_lost = false;
    for _ in 0..50 {
        if !a.try_lead("http://a", 4).unwrap_or(false) {
            a_lost = true;
            break;
        }
    }
    assert!(a_lost, "a must notice that its session (and lock) is gone");
    assert!(b.try_lead("http://b", 5).unwrap());
    let leader = a.leader().unwrap().unwrap();
    assert_eq!(leader.replica, "b");
    assert_eq!(leader.term, term + 1);
    assert!(
        !a.try_lead("http://a", 6).unwrap(),
        "one controller at a time"
    );

    // A clean resignation hands over at once.
    b.resign().unwrap();
    assert!(a.try_lead("http://a", 7).unwrap());
}

#[test]
fn controller_writes_go_through_the_lock_holding_session() {
    let db = Db::postgres();
    let a = Cluster::open(&db.url(), "a").unwrap();
    assert!(a.try_lead("http://a", 1).unwrap());
    let mut store = a.control_store();
    store.save("r", "{}", "{}", 1, &[]).unwrap();
    db.exec(
        "SELECT pg_terminate_backend(pid) FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND objid = 1398341635",
    )
    .unwrap();
    // The first write after losing the session is refused as a lost lead, not replayed on a
    // new session that holds no lock.
    let mut refused = None;
    for i in 0..50 {
        match store.save("r", "{}", "{\"step\":1}", 2 + i, &[]) {
            Err(e) => {
                refused = Some(e.to_string());
                break;
            }
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    let refused = refused.expect("a write on a terminated session must fail");
    assert!(
        refused.contains("lost the controller lock") || refused.starts_with("postgres:"),
        "{refused}"
    );
}

#[test]
fn routing_changes_advance_one_shared_epoch() {
    let db = Db::postgres();
    let a = Cluster::open(&db.url(), "a").unwrap();
    let b = Cluster::open(&db.url(), "b").unwrap();
    assert_eq!(a.routing().unwrap(), None);
    let first = a
        .update_routing(1, |cur| {
            assert!(cur.is_none());
            Ok(Some((1, "{\"epoch\":1}".into())))
        })
        .unwrap();
    assert_eq!(first.0, 1);
    assert_eq!(b.routing().unwrap(), Some((1, "{\"epoch\":1}".into())));
    let next = b
        .update_routing(2, |cur| {
            Ok(Some((cur.unwrap().0 + 1, "{\"epoch\":2}".into())))
        })
        .unwrap();
    assert_eq!(next.0, 2);
    // A writer that does not advance the epoch is refused, and nothing changes.
    let err = a
        .update_routing(3, |_| Ok(Some((2, "stale".into()))))
        .unwrap_err();
    assert!(err.to_string().contains("does not advance"), "{err}");
    let err = a
        .update_routing(3, |_| Err("no such model".into()))
        .unwrap_err();
    assert!(err.to_string().contains("no such model"), "{err}");
    assert_eq!(a.routing().unwrap(), Some((2, "{\"epoch\":2}".into())));
    // "No change" leaves the stored table and returns it.
    let same = a.update_routing(4, |_| Ok(None)).unwrap();
    assert_eq!(same, (2, "{\"epoch\":2}".into()));
}

#[test]
fn sqlite_cannot_be_shared_by_replicas() {
    let err = Cluster::open(&StoreUrl::sqlite("/tmp/x.sqlite"), "a").unwrap_err();
    assert!(err.to_string().contains("postgres://"), "{err}");
}
