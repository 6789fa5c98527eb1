//! External analysis gates and the blue-green load test, end to end: a real Prometheus
//! scraping the gateway's `/metrics`, a real webhook check on a socket, real backends with
//! injected failures and delays. The controller runs on an explicit clock; the tests wait on
//! conditions (the admin API, Prometheus' API) with deadlines, never on fixed sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};
use switchyard_core::rollout::Phase;
use switchyard_server::api::RolloutView;

use crate::support::prometheus::Prometheus;
use crate::support::{self, MockModel, Mode, TestGateway};

fn gateway_yaml(stable: &str, candidate: &str) -> String {
    format!(
        r#"
models:
  m:
    routing_key: {{ header: x-key }}
    versions:
      stable: {{ url: "{stable}" }}
      candidate: {{ url: "{candidate}" }}
    serve: {{ kind: single, version: stable }}
"#
    )
}

/// Sends `n` requests with distinct keys (any answer will do: a failing candidate is the point).
async fn traffic(tg: &TestGateway, round: u64, n: u64) {
    let url = tg.url("/v2/models/m/infer");
    for i in 0..n {
        let key = format!("key-{round}-{i}");
        let r = tg
            .client
            .post_json(&url, &[("x-key", &key)], &support::oip_row(&[1.0]))
            .await;
        assert!(r.status == 200 || r.status == 502, "{}", r.status);
    }
    tg.gateway.state.log.flush().await.unwrap();
}

/// Ticks (moving the clock by `step_ms` each time) until `done` holds for the rollout's view.
async fn tick_until(
    tg: &TestGateway,
    name: &str,
    step_ms: i64,
    what: &str,
    done: impl Fn(&RolloutView) -> bool,
) -> RolloutView {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        tg.tick(step_ms).await;
        let view = tg.admin().rollout(name).await.unwrap();
        if done(&view) {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never happened: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The candidate's model errors as Prometheus counts them (0 before the first).
const ERRORS: &str = r#"sum(switchyard_model_calls_total{model="m",version="candidate",role="serving",outcome!="ok"}) or vector(0)"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_gate_rolls_the_canary_back_when_its_query_crosses_the_threshold() {
    let stable = MockModel::start(1).await;
    let candidate = MockModel::start(1).await;
    let tg = TestGateway::start(&gateway_yaml(&stable.url(), &candidate.url())).await;
    let prometheus =
        Prometheus::start(&[tg.gateway.url().trim_start_matches("http://").to_string()]).await;
    // Prometheus scrapes the gateway.
    prometheus
        .wait_for(r#"up{job="switchyard"}"#, "the gateway up", |v| v == 1.0)
        .await;
    // Only the external gate decides: the built-in checks are off.
    let spec = format!(
        r#"
name: m-canary
model: m
kind: canary
stable: stable
candidate: candidate
steps: [{{ weight: 20 }}, {{ weight: 50 }}, {{ weight: 100 }}]
min_requests: 5
min_duration_ms: 0
gate:
  max_error_ratio: null
  max_p95_increase: null
  max_accuracy_drop: null
  max_mae_increase: null
  external:
    - name: candidate-errors
      prometheus: {{ url: "{}", query: '{ERRORS}' }}
      max: 3
      interval_ms: 100
      timeout_ms: 5000
"#,
        prometheus.url
    );
    tg.apply(&spec).await;
    // No errors: the query answers 0, below its max, and the first step passes.
    traffic(&tg, 0, 100).await;
    let view = tick_until(&tg, "m-canary", 200, "the first step passing", |v| {
        v.step >= 2
    })
    .await;
    assert_eq!(view.phase, Phase::Running, "{view:?}");
    let passed = tg
        .events("m-canary")
        .await
        .into_iter()
        .find(|e| e.kind == "gate_passed")
        .unwrap();
    assert_eq!(
        passed.num("external.candidate-errors"),
        Some(0.0),
        "{passed:?}"
    );

    // The candidate fails; once Prometheus has scraped its errors, the next reading rolls back.
    candidate.set(Mode::Fail);
    traffic(&tg, 1, 60).await;
    let errors = prometheus
        .wait_for(ERRORS, "more than 3 candidate errors", |v| v > 3.0)
        .await;
    let view = tick_until(&tg, "m-canary", 200, "the rollback", |v| {
        v.phase.is_terminal()
    })
    .await;
    assert_eq!(view.phase, Phase::RolledBack, "{view:?}");
    let reason = view.reason.unwrap();
    assert!(
        reason.starts_with("external gate 'candidate-errors': ")
            && reason.ends_with(" above its max 3"),
        "{reason}"
    );
    let rolled_back = tg
        .events("m-canary")
        .await
        .into_iter()
        .find(|e| e.kind == "rolled_back")
        .unwrap();
    assert_eq!(rolled_back.text("gate"), Some("candidate-errors"));
    assert_eq!(rolled_back.text("source"), Some("prometheus"));
    assert_eq!(rolled_back.num("max"), Some(3.0));
    assert!(
        rolled_back.num("value").unwrap() >= errors,
        "{rolled_back:?}"
    );
    // The stable version serves everything again.
    let r = tg
        .client
        .post_json(
            &tg.url("/v2/models/m/infer"),
            &[("x-key", "after")],
            &support::oip_row(&[1.0]),
        )
        .await;
    assert_eq!(r.header("x-switchyard-model-version"), "stable");
    assert!(tg.admin().audit_verify().await.unwrap().ok);
}

/// How the check answers.
#[derive(Clone)]
struct Check {
    /// 0: `{"pass": true}`, 1: `{"pass": false}`, 2: never (until the caller gives up),
    /// 3: HTTP 503.
    mode: Arc<AtomicU8>,
    hits: Arc<AtomicU64>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

async fn check(State(c): State<Check>, Json(body): Json<Value>) -> axum::response::Response {
    use axum::response::IntoResponse;
    c.hits.fetch_add(1, Ordering::SeqCst);
    c.bodies.lock().push(body);
    match c.mode.load(Ordering::SeqCst) {
        0 => Json(json!({"pass": true})).into_response(),
        1 => Json(json!({"pass": false, "why": "integration tests red"})).into_response(),
        2 => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Json(json!({"pass": true})).into_response()
        }
        _ => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "checks down").into_response(),
    }
}

impl Check {
    async fn start() -> (Check, String) {
        let c = Check {
            mode: Arc::default(),
            hits: Arc::default(),
            bodies: Arc::default(),
        };
        let app = Router::new()
            .route("/check", post(check))
            .with_state(c.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/check", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (c, url)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gate_holds_without_an_answer_pauses_past_its_limit_passes_and_fails() {
    let stable = MockModel::start(1).await;
    let candidate = MockModel::start(1).await;
    let tg = TestGateway::start(&gateway_yaml(&stable.url(), &candidate.url())).await;
    let (check, url) = Check::start().await;
    check.mode.store(2, Ordering::SeqCst);
    let spec = format!(
        r#"
name: m-canary
model: m
kind: canary
stable: stable
candidate: candidate
steps: [{{ weight: 20 }}, {{ weight: 50 }}, {{ weight: 100 }}]
min_requests: 5
min_duration_ms: 0
gate:
  max_error_ratio: null
  max_p95_increase: null
  max_accuracy_drop: null
  max_mae_increase: null
  external:
    - name: ci
      webhook: {{ url: "{url}" }}
      interval_ms: 100
      timeout_ms: 200
      inconclusive_limit: 4
"#
    );
    tg.apply(&spec).await;
    traffic(&tg, 0, 60).await;
    // No answer within the timeout is no data: the step holds, then the rollout pauses.
    let view = tick_until(&tg, "m-canary", 200, "a no-data reading", |v| {
        v.reason.as_deref().unwrap_or("").contains("no data")
    })
    .await;
    assert_eq!((view.phase, view.step), (Phase::Running, 1), "{view:?}");
    assert!(
        view.reason
            .as_deref()
            .unwrap()
            .contains("no answer within 200ms"),
        "{view:?}"
    );
    let view = tick_until(&tg, "m-canary", 200, "the pause", |v| {
        v.phase == Phase::Paused
    })
    .await;
    assert_eq!(view.step, 1, "no data never passes a step");
    assert!(
        view.reason
            .as_deref()
            .unwrap()
            .contains("external gate 'ci' gave no data 5 times in a row (limit 4)"),
        "{view:?}"
    );
    let paused = tg
        .events("m-canary")
        .await
        .into_iter()
        .find(|e| e.kind == "paused")
        .unwrap();
    assert_eq!(paused.num("inconclusive_limit"), Some(4.0), "{paused:?}");
    // An error status is no data too; once the check passes, the step does.
    check.mode.store(3, Ordering::SeqCst);
    tg.admin().command("m-canary", "resume").await.unwrap();
    let view = tick_until(&tg, "m-canary", 200, "an HTTP 503 reading", |v| {
        v.reason
            .as_deref()
            .unwrap_or("")
            .contains("HTTP 503: checks down")
    })
    .await;
    assert_eq!(view.step, 1);
    check.mode.store(0, Ordering::SeqCst);
    let view = tick_until(&tg, "m-canary", 200, "the first step passing", |v| {
        v.step >= 2
    })
    .await;
    assert_eq!(view.phase, Phase::Running);
    // The check was told what it judges.
    let body = check.bodies.lock().last().cloned().unwrap();
    assert_eq!(body["rollout"], "m-canary");
    assert_eq!(body["gate"], "ci");
    assert_eq!(body["candidate"], "candidate");
    // A check answering fail rolls back.
    check.mode.store(1, Ordering::SeqCst);
    let view = tick_until(&tg, "m-canary", 200, "the rollback", |v| {
        v.phase.is_terminal()
    })
    .await;
    assert_eq!(view.phase, Phase::RolledBack);
    assert_eq!(
        view.reason.as_deref(),
        Some("external gate 'ci': the check answered fail")
    );
    // Ended: no more queries (one started before the end may still arrive).
    let hits = check.hits.load(Ordering::SeqCst);
    for _ in 0..3 {
        tg.tick(10_000).await;
    }
    assert!(check.hits.load(Ordering::SeqCst) <= hits + 1);
}

// ---------------------------------------------------------------------------------------------
// The blue-green load test.

const LOAD_TESTED: &str = r#"
name: NAME
model: yield
kind: blue_green
active: v1
candidate: CANDIDATE
validation_set: VALIDATION
smoke_requests: 1
monitor_min_requests: 50
monitor_duration_ms: 60000
load_test: { rate: 50, duration_ms: 400, concurrency: 4, max_p95_ms: 200, max_error_rate: 0 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blue_green_load_test_switches_a_fast_green_and_aborts_a_slow_one() {
    let fast = MockModel::start(1).await;
    let slow = MockModel::start(1).await;
    // Far beyond the limit of 200 ms, so the verdict never depends on the machine's speed.
    slow.set_delay(600);
    let yaml = format!(
        r#"
models:
  yield:
    versions:
      v1: {{ onnx: models/yield_v1.onnx }}
      fast: {{ url: "{}" }}
      slow: {{ url: "{}" }}
    serve: {{ kind: single, version: v1 }}
"#,
        fast.url(),
        slow.url()
    );
    let tg = TestGateway::start(&yaml).await;
    // Three rows of the shipped validation set: the burst cycles through them.
    let validation = tg.dir.path().join("validation_3.csv");
    let rows: Vec<String> =
        std::fs::read_to_string(support::repo_root().join("models/validation_yield.csv"))
            .unwrap()
            .lines()
            .take(4)
            .map(str::to_string)
            .collect();
    std::fs::write(&validation, rows.join("\n") + "\n").unwrap();
    let spec = |name: &str, candidate: &str| {
        LOAD_TESTED
            .replace("NAME", name)
            .replace("CANDIDATE", candidate)
            .replace("VALIDATION", validation.to_str().unwrap())
    };
    let validated = |name: &'static str| {
        let c = tg.gateway.controller.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while c.phase(name) == Some(Phase::Validating) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "validation never finished"
                );
                c.tick_all().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    let calls = fast.calls();
    tg.apply(&spec("bg-fast", "fast")).await;
    validated("bg-fast").await;
    let view = tg.admin().rollout("bg-fast").await.unwrap();
    assert_eq!(view.phase, Phase::Monitoring, "{view:?}");
    // 3 replayed rows, then 50 × 0.4 = 20 burst requests, all through green's backend.
    assert_eq!(fast.calls() - calls, 3 + 20);
    let ev = tg.events("bg-fast").await;
    let ok = ev.iter().find(|e| e.kind == "validated").unwrap();
    assert_eq!(ok.num("load_requests"), Some(20.0), "{ok:?}");
    assert_eq!(ok.num("load_errors"), Some(0.0));
    assert!(ok.num("load_p95_ms").unwrap() <= 200.0, "{ok:?}");
    assert_eq!(ok.num("load_max_p95_ms"), Some(200.0));
    tg.admin().command("bg-fast", "abort").await.unwrap();

    tg.apply(&spec("bg-slow", "slow")).await;
    validated("bg-slow").await;
    let view = tg.admin().rollout("bg-slow").await.unwrap();
    assert_eq!(view.phase, Phase::Aborted, "{view:?}");
    let reason = view.reason.unwrap();
    assert!(
        reason.starts_with("validation failed: load test: p95 ")
            && reason.ends_with(" ms above 200.0 ms"),
        "{reason}"
    );
    let failed = tg
        .events("bg-slow")
        .await
        .into_iter()
        .find(|e| e.kind == "validation_failed")
        .unwrap();
    assert!(failed.num("load_p95_ms").unwrap() >= 500.0, "{failed:?}");
    assert_eq!(failed.num("load_requests"), Some(20.0));
    // Nothing switched: blue serves.
    let r = tg
        .client
        .post_json(
            &tg.url("/v2/models/yield/infer"),
            &[],
            &support::oip_row(&[1.0, 50.0, 2.0, 40.0, 1.0, 2.0, 1.0, 1000.0]),
        )
        .await;
    assert_eq!(r.header("x-switchyard-model-version"), "v1");
}
