//! Alert delivery to real webhook listeners on `127.0.0.1:0`, with a temp store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use switchyard_core::audit::{Alert, Detail, Severity};
use switchyard_server::alerts::{AlertSender, RetryPolicy, WebhookConfig};

use crate::support::webhook::WebhookReceiver as Listener;
use switchyard_store::{ControlStore, DeliveryRow};

/// A URL on which nothing listens.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/hook")
}

fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(5),
    }
}

fn alert(severity: Severity, kind: &str) -> Alert {
    Alert {
        rollout: "fraud".into(),
        severity,
        kind: kind.into(),
        title: format!("fraud: {kind}"),
        ts_ms: 1_700_000_000_000,
        details: vec![
            ("error_rate".into(), Detail::Num(0.041)),
            ("version".into(), Detail::from("v2")),
            ("automatic".into(), Detail::Bool(true)),
        ],
    }
}

fn store_path(dir: &Path) -> PathBuf {
    dir.join("switchyard.db")
}

fn deliveries(dir: &Path) -> Vec<DeliveryRow> {
    ControlStore::open(store_path(dir))
        .unwrap()
        .deliveries()
        .unwrap()
}

fn alerts(dir: &Path) -> Vec<(u64, Alert)> {
    ControlStore::open(store_path(dir))
        .unwrap()
        .alerts()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn severity_filter_admits_only_severe_enough_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Listener::start(0, false).await;
    let sender = AlertSender::spawn(
        vec![WebhookConfig {
            url: hook.url(),
            min_severity: Severity::P1,
            ca_file: None,
        }],
        store_path(dir.path()),
        fast_retry(3),
    );
    sender.send(alert(Severity::P0, "rollback"));
    sender.send(alert(Severity::P3, "completed"));
    sender.flush().await;

    // Both alerts are recorded; only the P0 one is delivered.
    let stored = alerts(dir.path());
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].1, alert(Severity::P0, "rollback"));
    assert_eq!(stored[1].1, alert(Severity::P3, "completed"));
    let p0_id = stored[0].0;

    assert_eq!(
        hook.bodies(),
        vec![json!({
            "rollout": "fraud",
            "severity": "P0",
            "kind": "rollback",
            "title": "fraud: rollback",
            "ts_ms": 1_700_000_000_000i64,
            "details": {"error_rate": 0.041, "version": "v2", "automatic": true},
            "alert_id": p0_id,
        })]
    );
    assert_eq!(*hook.content_types.lock(), ["application/json"]);
    assert_eq!(hook.hits.load(Ordering::SeqCst), 1);

    let rows = deliveries(dir.path());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].alert_seq, p0_id);
    assert_eq!(rows[0].url, hook.url());
    assert_eq!((rows[0].attempt, rows[0].status), (1, Some(200)));
    assert!(rows[0].delivered);
    assert_eq!(rows[0].error, None);
    assert_eq!(sender.dropped(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_listener_receives_the_alert_on_the_third_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Listener::start(2, false).await;
    let sender = AlertSender::spawn(
        vec![WebhookConfig {
            url: hook.url(),
            min_severity: Severity::P3,
            ca_file: None,
        }],
        store_path(dir.path()),
        fast_retry(5),
    );
    sender.send(alert(Severity::P2, "stuck_step"));
    sender.flush().await;

    assert_eq!(hook.hits.load(Ordering::SeqCst), 3);
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["kind"], "stuck_step");

    let rows = deliveries(dir.path());
    let summary: Vec<_> = rows
        .iter()
        .map(|r| (r.attempt, r.status, r.delivered))
        .collect();
    assert_eq!(
        summary,
        [
            (1, Some(500), false),
            (2, Some(500), false),
            (3, Some(200), true)
        ]
    );
    assert!(rows[0].error.as_deref().unwrap().contains("500"));
    assert_eq!(rows[2].error, None);
    // Attempts are in time order.
    assert!(rows.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_webhook_gives_up_after_the_configured_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let url = dead_url();
    let sender = AlertSender::spawn(
        vec![WebhookConfig {
            url: url.clone(),
            min_severity: Severity::P3,
            ca_file: None,
        }],
        store_path(dir.path()),
        fast_retry(4),
    );
    sender.send(alert(Severity::P0, "rollback"));
    sender.flush().await;

    let rows = deliveries(dir.path());
    assert_eq!(
        rows.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    for row in &rows {
        assert_eq!(row.url, url);
        assert!(!row.delivered);
        assert_eq!(row.status, None);
        assert!(row.error.is_some());
    }
}

/// `send` never waits: 1,000 alerts into a queue of 4 with a dead webhook finish at once (a
/// single-threaded runtime cannot run the delivery task during the loop), and what did not
/// fit is counted.
#[tokio::test]
async fn send_never_blocks_and_counts_dropped_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let sender = AlertSender::with_capacity(
        vec![WebhookConfig {
            url: dead_url(),
            min_severity: Severity::P3,
            ca_file: None,
        }],
        store_path(dir.path()),
        fast_retry(2),
        4,
    );
    for i in 0..1_000 {
        sender.send(Alert {
            ts_ms: i,
            ..alert(Severity::P0, "rollback")
        });
    }
    let dropped = sender.dropped();
    assert_eq!(dropped, 996);

    sender.flush().await;
    let stored = alerts(dir.path());
    assert_eq!(stored.len() as u64 + dropped, 1_000);
    // The alerts that were accepted are the first ones, each tried twice.
    assert_eq!(
        stored.iter().map(|(_, a)| a.ts_ms).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    let rows = deliveries(dir.path());
    assert_eq!(rows.len(), 8);
    assert!(rows.iter().all(|r| !r.delivered));
    assert_eq!(sender.dropped_deliveries(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_webhook_does_not_hold_up_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Listener::start(0, true).await;
    let fast = Listener::start(0, false).await;
    let sender = AlertSender::spawn(
        vec![
            WebhookConfig {
                url: slow.url(),
                min_severity: Severity::P3,
                ca_file: None,
            },
            WebhookConfig {
                url: fast.url(),
                min_severity: Severity::P3,
                ca_file: None,
            },
        ],
        store_path(dir.path()),
        RetryPolicy {
            timeout: Duration::from_secs(60),
            ..fast_retry(1)
        },
    );
    sender.send(alert(Severity::P1, "srm"));
    sender.send(alert(Severity::P1, "rollback"));

    // Both alerts reach the fast webhook and are recorded as delivered while the slow one is
    // still holding its requests (it cannot answer until the gate opens).
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let delivered = deliveries(dir.path())
                .iter()
                .filter(|r| r.delivered)
                .count();
            if delivered == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the fast webhook was held up by the slow one");
    let rows = deliveries(dir.path());
    assert!(rows.iter().all(|r| r.url == fast.url()));
    assert_eq!(fast.bodies().len(), 2);
    assert!(slow.bodies().is_empty());

    // Let the slow webhook answer; flush waits for it.
    slow.gate.as_ref().unwrap().add_permits(2);
    sender.flush().await;
    let mut kinds: Vec<String> = slow
        .bodies()
        .iter()
        .map(|b| b["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["rollback", "srm"]);
    let rows = deliveries(dir.path());
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r.delivered));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_scheme_is_recorded_once_without_retries() {
    let dir = tempfile::tempdir().unwrap();
    let sender = AlertSender::spawn(
        vec![WebhookConfig {
            url: "ftp://hooks.example.invalid/services/secret".into(),
            min_severity: Severity::P3,
            ca_file: None,
        }],
        store_path(dir.path()),
        fast_retry(5),
    );
    sender.send(alert(Severity::P0, "rollback"));
    sender.flush().await;
    let rows = deliveries(dir.path());
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].delivered);
    assert!(rows[0].error.as_deref().unwrap().contains("only http://"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_with_nothing_queued_returns() {
    let dir = tempfile::tempdir().unwrap();
    let sender = AlertSender::spawn(vec![], store_path(dir.path()), fast_retry(1));
    sender.flush().await;
    sender.send(alert(Severity::P0, "rollback"));
    sender.flush().await;
    sender.flush().await;
    assert_eq!(alerts(dir.path()).len(), 1);
    assert!(deliveries(dir.path()).is_empty());
}

/// Polls `f` once; `true` when it completed.
async fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> bool {
    tokio::select! {
        biased;
        _ = f => true,
        _ = std::future::ready(()) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_waits_for_everything_accepted_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Listener::start(0, true).await;
    let fast = Listener::start(0, false).await;
    let sender = AlertSender::spawn(
        vec![
            WebhookConfig {
                url: slow.url(),
                min_severity: Severity::P0,
                ca_file: None,
            },
            WebhookConfig {
                url: fast.url(),
                min_severity: Severity::P3,
                ca_file: None,
            },
        ],
        store_path(dir.path()),
        RetryPolicy {
            timeout: Duration::from_secs(60),
            ..fast_retry(1)
        },
    );
    // A goes to both (the slow one holds it); B only to the fast one. Each flush is queued
    // (polled once) in order between the sends.
    sender.send(alert(Severity::P0, "rollback"));
    let mut first = Box::pin(sender.flush());
    assert!(!poll_once(&mut first).await);
    let mut second = Box::pin(sender.flush());
    assert!(!poll_once(&mut second).await);
    sender.send(alert(Severity::P3, "completed"));
    let mut third = Box::pin(sender.flush());
    assert!(!poll_once(&mut third).await);

    // Wait until the fast webhook has both alerts recorded as delivered.
    tokio::time::timeout(Duration::from_secs(30), async {
        while deliveries(dir.path()).len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    // None of the flushes can be done: A is still held by the slow webhook.
    assert!(!poll_once(&mut first).await);
    assert!(!poll_once(&mut second).await);
    assert!(!poll_once(&mut third).await);

    slow.gate.as_ref().unwrap().add_permits(1);
    first.await;
    second.await;
    third.await;
    assert_eq!(deliveries(dir.path()).len(), 3);
    assert_eq!(slow.bodies().len(), 1);
    assert_eq!(fast.bodies().len(), 2);
}
