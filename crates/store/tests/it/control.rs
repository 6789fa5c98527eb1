//! Rollout state, the audit hash chain, alerts and deliveries, against a real SQLite file and
//! a real PostgreSQL database (each test runs on both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use support::Db;
use switchyard_core::audit::{Alert, AuditEvent, Detail, Severity};
use switchyard_store::control::GENESIS_HASH;
use switchyard_store::{ControlStore, DeliveryRow, StoreError};

on_both!(
    save_and_reload_round_trip,
    delete_rollout_keeps_its_events,
    state_and_events_commit_together_or_not_at_all,
    intact_chain_verifies,
    triggers_block_plain_update_and_delete,
    edited_details_are_detected_at_the_right_seq,
    edit_with_recomputed_hash_breaks_the_next_link,
    deleted_middle_row_is_detected,
    renumbered_rows_are_detected,
    swapped_rows_are_detected,
    events_filter_by_rollout,
    alerts_and_deliveries_round_trip,
    non_finite_details_are_stored_as_text,
    concurrent_writers_keep_one_chain,
);

fn event(rollout: &str, kind: &str, ts_ms: i64) -> AuditEvent {
    AuditEvent {
        rollout: rollout.into(),
        ts_ms,
        kind: kind.into(),
        actor: "controller".into(),
        message: format!("{rollout} {kind}"),
        details: vec![
            ("p_value".into(), Detail::Num(0.012_345_678_901_234_5)),
            ("n".into(), Detail::from(1_234u64)),
            ("passed".into(), Detail::Bool(true)),
            ("gate".into(), Detail::from("error_rate")),
        ],
    }
}

/// A store with `n` events alternating between rollouts `a` and `b` (seq 1..=n).
fn store_with_events(db: &Db, n: usize) -> ControlStore {
    let mut store = ControlStore::open(db.url()).unwrap();
    let events: Vec<_> = (0..n)
        .map(|i| {
            let rollout = if i % 2 == 0 { "a" } else { "b" };
            event(rollout, "step_advanced", 1_000 + i as i64)
        })
        .collect();
    store.append_events(&events).unwrap();
    store
}

fn save_and_reload_round_trip(db: &Db) {
    {
        let mut store = ControlStore::open(db.url()).unwrap();
        let stored = store
            .save(
                "fraud",
                r#"{"model":"fraud","steps":[5,25,100]}"#,
                r#"{"step":0}"#,
                1_000,
                &[
                    event("fraud", "created", 1_000),
                    event("fraud", "started", 1_001),
                ],
            )
            .unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].seq, 1);
        assert_eq!(stored[0].prev_hash, GENESIS_HASH);
        assert_eq!(stored[1].seq, 2);
        assert_eq!(stored[1].prev_hash, stored[0].hash);
        // A later save replaces the state and extends the chain.
        store
            .save(
                "fraud",
                r#"{"model":"fraud","steps":[5,25,100]}"#,
                r#"{"step":1}"#,
                2_000,
                &[event("fraud", "step_advanced", 2_000)],
            )
            .unwrap();
        store
            .save("churn", r#"{"model":"churn"}"#, r#"{"step":0}"#, 1_500, &[])
            .unwrap();
    }
    // Reopen: everything is still there.
    let store = ControlStore::open(db.url()).unwrap();
    let rows = store.rollouts().unwrap();
    assert_eq!(
        rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["churn", "fraud"]
    );
    let fraud = store.rollout("fraud").unwrap().unwrap();
    assert_eq!(fraud.state, r#"{"step":1}"#);
    assert_eq!(fraud.spec, r#"{"model":"fraud","steps":[5,25,100]}"#);
    assert_eq!(fraud.updated_ms, 2_000);
    assert!(store.rollout("nope").unwrap().is_none());

    let events = store.events(None).unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(events[0].event, event("fraud", "created", 1_000));
    assert_eq!(events[2].event, event("fraud", "step_advanced", 2_000));
    assert!(store.verify_chain().unwrap().ok);
}

fn delete_rollout_keeps_its_events(db: &Db) {
    let mut store = ControlStore::open(db.url()).unwrap();
    store
        .save("r", "{}", "{}", 1, &[event("r", "created", 1)])
        .unwrap();
    assert!(store.delete_rollout("r").unwrap());
    assert!(!store.delete_rollout("r").unwrap());
    assert!(store.rollout("r").unwrap().is_none());
    assert_eq!(store.events(Some("r")).unwrap().len(), 1);
}

fn state_and_events_commit_together_or_not_at_all(db: &Db) {
    let mut store = ControlStore::open(db.url()).unwrap();
    store
        .save("r", "{}", r#"{"step":0}"#, 1, &[event("r", "created", 1)])
        .unwrap();

    // The second event violates the table's constraints (an event must have a kind): the
    // rollout row was already upserted and the first event inserted inside the transaction,
    // and both must be rolled back.
    let bad = AuditEvent {
        kind: String::new(),
        ..event("r", "x", 2)
    };
    let err = store
        .save(
            "r",
            "{}",
            r#"{"step":1}"#,
            2,
            &[event("r", "step_advanced", 2), bad],
        )
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Sqlite(_) | StoreError::Postgres(_)),
        "{err}"
    );
    assert_eq!(store.rollout("r").unwrap().unwrap().state, r#"{"step":0}"#);
    assert_eq!(store.rollout("r").unwrap().unwrap().updated_ms, 1);
    assert_eq!(store.events(None).unwrap().len(), 1);

    // A write failure from below (full disk, I/O error) injected with a trigger on the events
    // table: same outcome, and a fresh rollout is not created either.
    db.exec(if db.is_postgres() {
        "CREATE FUNCTION fail_insert() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'disk full'; END $$;
         CREATE TRIGGER fail_insert BEFORE INSERT ON audit_events FOR EACH ROW
         WHEN (NEW.kind = 'promoted') EXECUTE FUNCTION fail_insert();"
    } else {
        "CREATE TRIGGER fail_insert BEFORE INSERT ON audit_events
         WHEN NEW.kind = 'promoted'
         BEGIN SELECT RAISE(ABORT, 'disk full'); END;"
    })
    .unwrap();
    let err = store
        .save("r", "{}", r#"{"step":2}"#, 3, &[event("r", "promoted", 3)])
        .unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    let err = store
        .save("new", "{}", "{}", 3, &[event("new", "promoted", 3)])
        .unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(store.rollout("r").unwrap().unwrap().state, r#"{"step":0}"#);
    assert!(store.rollout("new").unwrap().is_none());
    assert_eq!(store.events(None).unwrap().len(), 1);

    // Once the failure is gone, the next save lands with the next seq: no gap was left.
    db.exec(if db.is_postgres() {
        "DROP TRIGGER fail_insert ON audit_events;"
    } else {
        "DROP TRIGGER fail_insert;"
    })
    .unwrap();
    let stored = store
        .save("r", "{}", r#"{"step":2}"#, 4, &[event("r", "promoted", 4)])
        .unwrap();
    assert_eq!(stored[0].seq, 2);
    assert_eq!(store.rollout("r").unwrap().unwrap().state, r#"{"step":2}"#);
    assert!(store.verify_chain().unwrap().ok);
}

fn intact_chain_verifies(db: &Db) {
    let mut store = store_with_events(db, 10);
    // Appends in several transactions continue the same chain.
    store.append_events(&[event("c", "paused", 5)]).unwrap();
    store
        .save("c", "{}", "{}", 6, &[event("c", "resumed", 6)])
        .unwrap();
    let report = store.verify_chain().unwrap();
    assert_eq!(report.events, 12);
    assert!(report.ok, "{report:?}");
    assert_eq!(report.first_bad_seq, None);
    assert_eq!(report.problem, None);

    let other = if db.is_postgres() {
        Db::postgres()
    } else {
        Db::sqlite()
    };
    let empty = ControlStore::open(other.url()).unwrap();
    let report = empty.verify_chain().unwrap();
    assert!(report.ok);
    assert_eq!(report.events, 0);
}

fn triggers_block_plain_update_and_delete(db: &Db) {
    let _store = store_with_events(db, 3);
    let err = db
        .exec("UPDATE audit_events SET message = 'nothing happened' WHERE seq = 2")
        .unwrap_err();
    assert!(err.contains("append-only"), "{err}");
    let err = db
        .exec("DELETE FROM audit_events WHERE seq = 2")
        .unwrap_err();
    assert!(err.contains("append-only"), "{err}");
    if db.is_postgres() {
        let err = db.exec("TRUNCATE audit_events").unwrap_err();
        assert!(err.contains("append-only"), "{err}");
    }
    assert_eq!(db.query_text("SELECT COUNT(*) FROM audit_events"), "3");
}

fn edited_details_are_detected_at_the_right_seq(db: &Db) {
    let store = store_with_events(db, 6);
    db.drop_guards();
    db.exec("UPDATE audit_events SET details = replace(details, 'true', 'false') WHERE seq = 4")
        .unwrap();
    let report = store.verify_chain().unwrap();
    assert!(!report.ok);
    assert_eq!(report.events, 6);
    assert_eq!(report.first_bad_seq, Some(4));
    assert!(report.problem.unwrap().contains("modified"));
}

fn edit_with_recomputed_hash_breaks_the_next_link(db: &Db) {
    use sha2::{Digest, Sha256};

    let store = store_with_events(db, 5);
    db.drop_guards();
    // The attacker edits event 2 and rewrites its hash to match the new content: event 2 now
    // checks out on its own, but event 3's prev_hash still names the original.
    let prev = db.query_text("SELECT prev_hash FROM audit_events WHERE seq = 2");
    let details = db.query_text("SELECT details FROM audit_events WHERE seq = 2");
    let canonical = format!(r#"[2,"b",1001,"step_advanced","controller","edited",{details}]"#);
    let digest = Sha256::digest(format!("{prev}\n{canonical}").as_bytes());
    let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    db.exec(&format!(
        "UPDATE audit_events SET message = 'edited', hash = '{hash}' WHERE seq = 2"
    ))
    .unwrap();
    let report = store.verify_chain().unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_bad_seq, Some(3), "{report:?}");
    assert!(report.problem.unwrap().contains("prev_hash"));
}

fn deleted_middle_row_is_detected(db: &Db) {
    let store = store_with_events(db, 5);
    db.drop_guards();
    db.exec("DELETE FROM audit_events WHERE seq = 3").unwrap();
    let report = store.verify_chain().unwrap();
    assert!(!report.ok);
    assert_eq!(report.events, 4);
    assert_eq!(report.first_bad_seq, Some(3));
    assert!(report.problem.unwrap().contains("missing"));
}

fn renumbered_rows_are_detected(db: &Db) {
    let store = store_with_events(db, 5);
    db.drop_guards();
    // Delete event 3 and close the gap by renumbering 4 and 5: seq is continuous again, but
    // the links are not.
    db.exec(
        "DELETE FROM audit_events WHERE seq = 3;
         UPDATE audit_events SET seq = 3 WHERE seq = 4;
         UPDATE audit_events SET seq = 4 WHERE seq = 5;",
    )
    .unwrap();
    let report = store.verify_chain().unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_bad_seq, Some(3));
    assert!(report.problem.unwrap().contains("prev_hash"));
}

fn swapped_rows_are_detected(db: &Db) {
    let store = store_with_events(db, 5);
    db.drop_guards();
    // Swap the contents of events 2 and 3 (including their hashes) by renumbering.
    db.exec(
        "UPDATE audit_events SET seq = 100 WHERE seq = 2;
         UPDATE audit_events SET seq = 2 WHERE seq = 3;
         UPDATE audit_events SET seq = 3 WHERE seq = 100;",
    )
    .unwrap();
    let report = store.verify_chain().unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_bad_seq, Some(2));
}

fn events_filter_by_rollout(db: &Db) {
    let store = store_with_events(db, 7);
    let a = store.events(Some("a")).unwrap();
    let b = store.events(Some("b")).unwrap();
    assert_eq!(a.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 3, 5, 7]);
    assert_eq!(b.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 4, 6]);
    assert!(a.iter().all(|e| e.event.rollout == "a"));
    assert!(store.events(Some("zzz")).unwrap().is_empty());
    assert_eq!(store.events(None).unwrap().len(), 7);
}

fn alerts_and_deliveries_round_trip(db: &Db) {
    let alert = Alert {
        rollout: "fraud".into(),
        severity: Severity::P0,
        kind: "rollback".into(),
        title: "fraud rolled back: error rate 4.1% > 2%".into(),
        ts_ms: 1_700_000_000_000,
        details: vec![
            ("error_rate".into(), Detail::Num(0.041)),
            ("version".into(), Detail::from("v2")),
        ],
    };
    let other = Alert {
        severity: Severity::P3,
        kind: "completed".into(),
        ..alert.clone()
    };
    let (a1, a2);
    {
        let mut store = ControlStore::open(db.url()).unwrap();
        a1 = store.record_alert(&alert).unwrap();
        a2 = store.record_alert(&other).unwrap();
        assert!(a2 > a1);
        store
            .record_delivery(&DeliveryRow {
                alert_seq: a1,
                url: "http://127.0.0.1:9/hook".into(),
                attempt: 1,
                ts_ms: 10,
                status: Some(500),
                error: Some("HTTP 500".into()),
                delivered: false,
            })
            .unwrap();
        store
            .record_delivery(&DeliveryRow {
                alert_seq: a1,
                url: "http://127.0.0.1:9/hook".into(),
                attempt: 2,
                ts_ms: 20,
                status: Some(204),
                error: None,
                delivered: true,
            })
            .unwrap();
        store
            .record_delivery(&DeliveryRow {
                alert_seq: a2,
                url: "http://127.0.0.1:1/dead".into(),
                attempt: 1,
                ts_ms: 30,
                status: None,
                error: Some("connection refused".into()),
                delivered: false,
            })
            .unwrap();
    }
    let store = ControlStore::open(db.url()).unwrap();
    assert_eq!(store.alerts().unwrap(), vec![(a1, alert), (a2, other)]);
    let d = store.deliveries().unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(
        (d[0].alert_seq, d[0].attempt, d[0].status),
        (a1, 1, Some(500))
    );
    assert!(!d[0].delivered);
    assert_eq!(
        (d[1].attempt, d[1].status, d[1].delivered),
        (2, Some(204), true)
    );
    assert_eq!(d[1].error, None);
    assert_eq!(d[2].alert_seq, a2);
    assert_eq!(d[2].status, None);
    assert_eq!(d[2].error.as_deref(), Some("connection refused"));
    // Alerts are not audit events: the chain is untouched.
    assert_eq!(store.verify_chain().unwrap().events, 0);
}

fn non_finite_details_are_stored_as_text(db: &Db) {
    let mut store = ControlStore::open(db.url()).unwrap();
    let mut e = event("r", "gate_held", 1);
    e.details = vec![("ratio".into(), Detail::Num(f64::NAN))];
    let stored = store.append_events(&[e]).unwrap();
    assert_eq!(stored[0].event.details[0].1, Detail::Text("NaN".into()));
    let read = store.events(None).unwrap();
    assert_eq!(read, stored);
    assert!(store.verify_chain().unwrap().ok);
}

/// Two control connections (controller, alert sender; with PostgreSQL, possibly two replicas)
/// appending from separate threads still form one chain with no gaps.
fn concurrent_writers_keep_one_chain(db: &Db) {
    let mut first = ControlStore::open(db.url()).unwrap();
    let mut second = ControlStore::open(db.url()).unwrap();
    let writers = [
        std::thread::spawn(move || {
            for i in 0..50 {
                first
                    .save("a", "{}", "{}", i, &[event("a", "step_advanced", i)])
                    .unwrap();
            }
        }),
        std::thread::spawn(move || {
            for i in 0..50 {
                second.append_events(&[event("b", "gate_held", i)]).unwrap();
            }
        }),
    ];
    for w in writers {
        w.join().unwrap();
    }
    let store = ControlStore::open(db.url()).unwrap();
    let report = store.verify_chain().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events, 100);
    let seqs: Vec<u64> = store.events(None).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
}

#[test]
fn shares_the_file_with_the_prediction_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    // The log's own connection and two control connections (controller, alert sender) on one
    // file, writing from separate threads.
    let log = switchyard_store::open(&path).unwrap();
    let mut first = ControlStore::open(&path).unwrap();
    let mut second = ControlStore::open(&path).unwrap();
    let writers = [
        std::thread::spawn(move || {
            for i in 0..50 {
                first
                    .save("a", "{}", "{}", i, &[event("a", "step_advanced", i)])
                    .unwrap();
            }
        }),
        std::thread::spawn(move || {
            for i in 0..50 {
                second.append_events(&[event("b", "gate_held", i)]).unwrap();
            }
        }),
        std::thread::spawn(move || {
            for i in 0..50 {
                log.execute(
                    "INSERT INTO feedback (request_id, ts_ms, truth, metrics) VALUES (?1, ?2, '\"x\"', '[]')",
                    rusqlite::params![format!("req-{i}"), i],
                )
                .unwrap();
            }
        }),
    ];
    for w in writers {
        w.join().unwrap();
    }
    let first = ControlStore::open(&path).unwrap();
    let report = first.verify_chain().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events, 100);
    let seqs: Vec<u64> = first.events(None).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
}

#[test]
fn concurrent_opens_of_a_new_file_succeed() {
    // The controller and the alert sender open their connections at start-up, at the same
    // moment, on a file that may not exist yet.
    for _ in 0..50 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let openers: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || ControlStore::open(&path).map(|_| ()))
            })
            .collect();
        for opener in openers {
            opener.join().unwrap().unwrap();
        }
    }
}
