//! A prediction log that cannot be written (here: a SQLite file at its size quota, which fails
//! exactly as a full disk does): serving goes on, records are dropped and counted, `/readyz`
//! says why, running rollouts are held (an event and a P1 alert), and everything resumes once
//! space returns.

use crate::support;

use std::time::Duration;

use serde_json::json;
use support::webhook::WebhookReceiver;
use support::{eventually, TestGateway};
use switchyard_core::rollout::Phase;

fn yaml(webhook: &str) -> String {
    format!(
        r#"
alerts: {{ webhooks: [{{ url: "{webhook}", min_severity: P3 }}] }}
log: {{ max_size_mb: 0.3, commit_interval_ms: 0, batch_size: 64 }}
models:
  testtime:
    versions:
      v1: {{ onnx: models/testtime_v1.onnx }}
      v2: {{ onnx: models/testtime_v2.onnx }}
    serve: {{ kind: single, version: v1 }}
"#
    )
}

const CANARY: &str = "name: tt-canary\nmodel: testtime\nkind: canary\nstable: v1\ncandidate: v2\n\
    steps: [{ weight: 10, min_requests: 1, min_duration_ms: 0 }, { weight: 100 }]\n\
    gate: { max_p95_increase: null, max_mae_increase: null }\n";

/// Sends `n` requests; every one must be answered.
async fn traffic(tg: &TestGateway, n: usize) {
    let body = json!({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32",
        "data": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]}]});
    for _ in 0..n {
        let r = tg
            .client
            .post_json(&tg.url("/v2/models/testtime/infer"), &[], &body)
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    tg.gateway.state.log.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_drops_and_counts_holds_the_rollouts_and_recovers_when_space_returns() {
    let hook = WebhookReceiver::start(0, false).await;
    let tg = TestGateway::start(&yaml(&hook.url())).await;
    let admin = tg.admin();
    // Hold the canary at its first step: the rollout is running, and nothing else decides.
    tg.apply(CANARY).await;
    let step = admin.rollout("tt-canary").await.unwrap().step;

    // Fill the quota: about 300 KB of records.
    let mut rounds = 0;
    loop {
        traffic(&tg, 100).await;
        let r = tg.client.get(&tg.url("/readyz")).await;
        if r.status == 503 {
            let body = r.json();
            let why = body["log_error"].as_str().unwrap_or_default().to_string();
            assert!(why.contains("full"), "{body}");
            assert_eq!(body["ready"], false, "{body}");
            break;
        }
        rounds += 1;
        assert!(rounds < 100, "the quota never filled: {}", r.json());
    }
    // Serving went on; the lost records are counted.
    traffic(&tg, 50).await;
    let dropped = tg
        .gateway
        .state
        .log
        .stats()
        .dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(dropped >= 50, "{dropped}");
    let metrics =
        String::from_utf8_lossy(&tg.client.get(&tg.url("/metrics")).await.body).into_owned();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_log_dropped_records_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );

    // The controller holds: one `held` event and one P1 alert, no step taken however long.
    for _ in 0..3 {
        tg.tick(60_000).await;
    }
    let view = admin.rollout("tt-canary").await.unwrap();
    assert_eq!((view.phase, view.step), (Phase::Running, step), "{view:?}");
    let held: Vec<_> = tg
        .events("tt-canary")
        .await
        .into_iter()
        .filter(|e| e.kind == "held")
        .collect();
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(held[0].message.contains("full"), "{:?}", held[0]);
    assert!(
        eventually(Duration::from_secs(10), || hook
            .kinds()
            .contains(&("P1".into(), "log_failing".into())))
        .await,
        "{:?}",
        hook.kinds()
    );

    // Space returns (an operator deletes old rows): the next batch commits, the replica is
    // ready again and the rollouts decide again.
    // (`predictions` is a view: SQLite counts no changes for a delete through its trigger,
    // so the rows are counted before and after.)
    let reader = switchyard_store::open_reader(&tg.store_path()).unwrap();
    let count = || -> i64 {
        reader
            .query_row("SELECT COUNT(*) FROM predictions", [], |r| r.get(0))
            .unwrap()
    };
    assert!(count() > 0);
    reader.execute("DELETE FROM predictions", []).unwrap();
    assert_eq!(count(), 0);
    drop(reader);
    traffic(&tg, 10).await;
    let r = tg.client.get(&tg.url("/readyz")).await;
    assert_eq!(r.status, 200, "{}", r.json());
    tg.tick(60_000).await;
    let kinds: Vec<String> = tg
        .events("tt-canary")
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&"hold_lifted".to_string()), "{kinds:?}");
    let view = admin.rollout("tt-canary").await.unwrap();
    assert!(view.step > step || view.phase != Phase::Running, "{view:?}");
}
