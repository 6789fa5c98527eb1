//! The control plane end to end: rollouts declared through the admin API, driven by the
//! controller on an explicit clock, against real backends on real sockets; alerts received by
//! a real webhook listener; the audit chain verified.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use hyper::Method;
use serde_json::{json, Value};
use support::webhook::WebhookReceiver;
use support::{eventually, TestGateway};
use switchyard_core::rollout::{OutputKind, Phase, Recommendation};
use switchyard_core::{Role, Strategy};
use switchyard_server::api::{ErrorDetail, Report, RolloutView};
use switchyard_server::client::ClientError;
use switchyard_wafer::WaferGenerator;

/// A model server whose answers are right `accuracy`% of the time, fail `errors`% of the time
/// and take `delay_ms`. Rates are exact over the requests it receives (the n-th request fails
/// when floor((n+1)·p) passes an integer), so which keys a canary gets does not matter. The
/// truth of instance `i` (the request's only feature) is `i % 2`.
pub(crate) struct QualityModel {
    pub(crate) url: String,
    errors: Arc<AtomicU64>,
}

#[derive(Clone)]
struct Quality {
    accuracy: u64,
    errors: Arc<AtomicU64>,
    delay_ms: u64,
    served: Arc<AtomicU64>,
}

/// Whether the n-th event of a process with rate `percent` is a hit.
fn nth_hit(n: u64, percent: u64) -> bool {
    ((n + 1) * percent) / 100 > (n * percent) / 100
}

pub(crate) fn truth(i: u64) -> u64 {
    i % 2
}

async fn answer(State(q): State<Quality>, Json(body): Json<Value>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let i = body["inputs"][0]["data"][0].as_f64().unwrap_or(0.0) as u64;
    let n = q.served.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(q.delay_ms)).await;
    if nth_hit(n, q.errors.load(Ordering::SeqCst)) {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
    }
    let right = !nth_hit(n, 100 - q.accuracy);
    let label = if right { truth(i) } else { 1 - truth(i) };
    Json(json!({"outputs": [{"name": "predict", "shape": [1], "datatype": "INT64", "data": [label]}]})).into_response()
}

impl QualityModel {
    pub(crate) async fn start(accuracy: u64, errors: u64, delay_ms: u64) -> QualityModel {
        let errors = Arc::new(AtomicU64::new(errors));
        let app = Router::new()
            .route("/v2/models/{m}/infer", post(answer))
            .with_state(Quality {
                accuracy,
                errors: errors.clone(),
                delay_ms,
                served: Arc::default(),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        QualityModel { url, errors }
    }
}

fn gateway_yaml(stable: &str, candidate: &str, webhook: &str) -> String {
    format!(
        r#"
alerts: {{ webhooks: [{{ url: "{webhook}", min_severity: P3 }}] }}
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

/// The latency gate is off: only the test about latency turns it on, with delays far apart.
const CANARY: &str = r#"
name: m-canary
model: m
kind: canary
stable: stable
candidate: candidate
min_requests: 20
min_duration_ms: 60000
gate: { min_labelled: 15, max_p95_increase: null }
"#;

/// The status and error body of a call the gateway must refuse.
fn refusal<T: std::fmt::Debug>(answer: Result<T, ClientError>) -> (u16, ErrorDetail) {
    match answer {
        Err(ClientError::Refused { status, error }) => (status.as_u16(), error),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Sends `n` requests (8 at a time), then the ground truth for each.
async fn traffic(tg: &TestGateway, round: u64, n: u64) {
    traffic_with(tg, round, n, |_| None).await
}

/// [`traffic`] with an `x-region` header chosen by the request's number.
async fn traffic_with(
    tg: &TestGateway,
    round: u64,
    n: u64,
    region: fn(u64) -> Option<&'static str>,
) {
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let client = tg.client.clone();
            let url = tg.url("/v2/models/m/infer");
            tokio::spawn(async move {
                let mut labels = Vec::new();
                for k in (t..n).step_by(8) {
                    let i = round * 10_000 + k;
                    let id = format!("r{i}");
                    let body = json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [i as f64]}]});
                    let key = format!("key-{i}");
                    let mut headers = vec![("x-key", key.as_str()), ("x-request-id", id.as_str())];
                    if let Some(r) = region(i) {
                        headers.push(("x-region", r));
                    }
                    let r = client.post_json(&url, &headers, &body).await;
                    assert!(r.status == 200 || r.status == 502, "{}", r.status);
                    labels.push(json!({"request_id": id, "label": truth(i)}));
                }
                labels
            })
        })
        .collect();
    let mut labels = Vec::new();
    for t in tasks {
        labels.extend(t.await.unwrap());
    }
    let r = tg
        .client
        .post_json(&tg.url("/v1/feedback"), &[], &Value::Array(labels))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    tg.gateway.state.log.flush().await.unwrap();
}

async fn phase(tg: &TestGateway, name: &str) -> RolloutView {
    tg.admin().rollout(name).await.unwrap()
}

/// Runs rounds of traffic and ticks until the rollout ends; returns its final view and the
/// canary weights seen after each tick.
async fn drive(tg: &TestGateway, name: &str) -> (RolloutView, Vec<f64>) {
    let mut weights = vec![];
    for round in 0..30 {
        traffic(tg, round, 160).await;
        tg.tick(61_000).await;
        let view = phase(tg, name).await;
        let w = match &view.strategy {
            Strategy::Split { arms, .. } => f64::from(arms[0].weight) / 100.0,
            Strategy::Single { version } if version == "candidate" => 100.0,
            _ => 0.0,
        };
        weights.push(w);
        if matches!(
            view.phase,
            Phase::Completed | Phase::RolledBack | Phase::Aborted
        ) {
            return (view, weights);
        }
    }
    panic!("rollout {name} did not finish: {:?}", phase(tg, name).await);
}

/// The tests of this file compare latencies, so they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn audit_ok(tg: &TestGateway) {
    let v = tg.admin().audit_verify().await.unwrap();
    assert!(v.ok, "{v:?}");
    assert!(v.events >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_candidate_walks_5_25_50_100_and_is_promoted() {
    let _serial = SERIAL.lock().await;
    let stable = QualityModel::start(90, 2, 5).await;
    let candidate = QualityModel::start(92, 2, 5).await;
    let hook = WebhookReceiver::start(0, false).await;
    let tg = TestGateway::start(&gateway_yaml(&stable.url, &candidate.url, &hook.url())).await;
    // Started rollouts answer 201 Created.
    let r = tg
        .admin()
        .send(Method::POST, "/rollouts", Some(CANARY.to_string()))
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let (view, weights) = drive(&tg, "m-canary").await;
    assert_eq!(view.phase, Phase::Completed, "{view:?}");
    let mut steps: Vec<f64> = weights.clone();
    steps.dedup();
    assert_eq!(steps.first(), Some(&5.0), "{weights:?}");
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "weights only rise: {weights:?}"
    );
    for expected in [25.0, 50.0, 100.0] {
        assert!(
            steps.contains(&expected),
            "{expected}% never reached: {weights:?}"
        );
    }
    // Traffic now goes to the candidate alone.
    let r = tg
        .client
        .post_json(
            &tg.url("/v2/models/m/infer"),
            &[("x-key", "anyone")],
            &support::oip_row(&[1.0]),
        )
        .await;
    assert_eq!(r.header("x-switchyard-model-version"), "candidate");
    let events: Vec<String> = tg
        .events("m-canary")
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        events.iter().filter(|k| *k == "gate_passed").count(),
        4,
        "{events:?}"
    );
    assert!(events.contains(&"promoted".to_string()));
    // The controller kept snapshots for the dashboard's charts.
    let history = tg.admin().history("m-canary").await.unwrap();
    let points = &history.points;
    assert!(
        points.iter().any(|p| p.candidate_percent == 5.0),
        "{history:?}"
    );
    assert!(
        points
            .iter()
            .all(|p| p.versions.get("stable").is_some_and(|s| s.requests > 0)),
        "{history:?}"
    );
    audit_ok(&tg).await;
    tg.gateway.controller.alerts().flush().await;
    assert!(
        hook.kinds().contains(&("P3".into(), "completed".into())),
        "{:?}",
        hook.kinds()
    );
}

/// `min_requests` per step: a 3x error rate needs ~100 canary requests before a 6% rate stands
/// clear of a 2x-of-2% limit.
async fn rolled_back_at_first_gate(
    candidate: QualityModel,
    severity: &str,
    reason: &str,
    min_requests: u64,
    stable_delay_ms: u64,
) {
    let _serial = SERIAL.lock().await;
    let stable = QualityModel::start(90, 2, stable_delay_ms).await;
    let hook = WebhookReceiver::start(0, false).await;
    let tg = TestGateway::start(&gateway_yaml(&stable.url, &candidate.url, &hook.url())).await;
    let mut spec = CANARY.replace("min_requests: 20", &format!("min_requests: {min_requests}"));
    if reason == "p95 latency" {
        spec = spec.replace(", max_p95_increase: null", "");
    }
    tg.apply(&spec).await;
    let (view, weights) = drive(&tg, "m-canary").await;
    assert_eq!(view.phase, Phase::RolledBack, "{view:?}");
    assert!(
        weights[..weights.len() - 1].iter().all(|w| *w == 5.0),
        "rolled back after the first step: {weights:?} {:#?}",
        tg.events("m-canary").await
    );
    assert!(
        view.reason.as_deref().unwrap_or("").contains(reason),
        "{view:?}"
    );
    // Instant: the very next request goes to stable.
    for k in 0..50 {
        let r = tg
            .client
            .post_json(
                &tg.url("/v2/models/m/infer"),
                &[("x-key", &format!("after-{k}"))],
                &support::oip_row(&[1.0]),
            )
            .await;
        assert_eq!(r.header("x-switchyard-model-version"), "stable");
    }
    let failed = tg
        .events("m-canary")
        .await
        .into_iter()
        .find(|e| e.kind == "gate_failed")
        .expect("gate_failed event");
    assert!(
        failed.details.len() >= 4,
        "the event carries the gate's numbers: {failed:?}"
    );
    audit_ok(&tg).await;
    let hook_kinds = || hook.kinds();
    assert!(
        eventually(Duration::from_secs(10), || hook_kinds()
            .contains(&(severity.to_string(), "rollback".to_string())))
        .await,
        "{:?}",
        hook.kinds()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_10_points_less_accurate_is_rolled_back() {
    rolled_back_at_first_gate(QualityModel::start(80, 2, 5).await, "P0", "accuracy", 20, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_with_25x_latency_is_rolled_back() {
    // The default gate (+50%, at least +2 ms): 10 ms against 250 ms. Stable's p95 would have to
    // reach 167 ms on a busy machine for the canary to pass.
    rolled_back_at_first_gate(
        QualityModel::start(90, 2, 250).await,
        "P1",
        "p95 latency",
        20,
        10,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_with_3x_errors_is_rolled_back() {
    rolled_back_at_first_gate(
        QualityModel::start(90, 6, 5).await,
        "P0",
        "error rate",
        100,
        5,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_rejected_with_every_problem_and_conflicts_refused() {
    let _serial = SERIAL.lock().await;
    let stable = QualityModel::start(90, 0, 0).await;
    let hook = WebhookReceiver::start(0, false).await;
    let tg = TestGateway::start(&gateway_yaml(&stable.url, &stable.url, &hook.url())).await;
    let bad = r#"
name: bad
model: m
kind: canary
stable: stable
candidate: nope
steps: [{ weight: 50 }, { weight: 20 }, { weight: 120 }]
gate: { max_accuracy_drop: -0.1 }
"#;
    let (status, error) = refusal(tg.admin().apply(bad).await);
    assert_eq!(status, 422);
    let problems = error.problems;
    for expected in [
        "steps[2].weight",
        "weights must increase",
        "unknown version 'nope'",
        "max_accuracy_drop",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "missing '{expected}' in {problems:#?}"
        );
    }
    let (status, error) = refusal(
        tg.admin()
            .apply("name: x\nmodel: ghost\nkind: canary\n")
            .await,
    );
    assert_eq!(status, 422);
    assert!(error.message.contains("unknown model 'ghost'"), "{error:?}");
    let (status, error) = refusal(
        tg.admin()
            .apply(
                "name: x\nmodel: m\nkind: canary\nstable: stable\ncandidate: candidate\nbogus: 1\n",
            )
            .await,
    );
    assert_eq!(status, 422);
    assert!(error.message.contains("bogus"), "{error:?}");
    // An unknown field does not hide the other mistakes.
    let (_, error) = refusal(tg.admin().apply("name: x\nmodel: m\nkind: canary\nstable: stable\ncandidate: nope\nbogus: 1\ngate: { max_acuracy_drop: 0.1 }\n").await);
    let problems = error.problems;
    for expected in [
        "bogus: unknown field",
        "gate.max_acuracy_drop: unknown field",
        "unknown version 'nope'",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "missing '{expected}' in {problems:?}"
        );
    }
    // Dry run validates without starting.
    let checked = tg.admin().dry_run(CANARY).await.unwrap();
    assert!(checked.valid);
    assert_eq!(checked.spec.name, "m-canary");
    assert!(tg.admin().rollouts().await.unwrap().rollouts.is_empty());
    // Two rollouts on one model.
    tg.apply(CANARY).await;
    let (status, error) = refusal(
        tg.admin()
            .apply(&CANARY.replace("m-canary", "m-canary-2"))
            .await,
    );
    assert_eq!(status, 409, "{error:?}");
    // Commands out of place are refused; a terminal rollout refuses everything.
    let admin = tg.admin();
    assert_eq!(refusal(admin.command("m-canary", "approve").await).0, 409);
    assert_eq!(
        admin.command("m-canary", "rollback").await.unwrap().phase,
        Phase::RolledBack
    );
    assert_eq!(refusal(admin.command("m-canary", "promote").await).0, 409);
    assert_eq!(refusal(admin.command("ghost", "pause").await).0, 404);
    assert_eq!(refusal(admin.command("m-canary", "explode").await).0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_resumes_the_rollout_at_its_recorded_step() {
    let _serial = SERIAL.lock().await;
    let stable = QualityModel::start(90, 1, 1).await;
    let candidate = QualityModel::start(92, 1, 1).await;
    let hook = WebhookReceiver::start(0, false).await;
    let yaml = gateway_yaml(&stable.url, &candidate.url, &hook.url());
    let tg = TestGateway::start(&yaml).await;
    tg.apply(CANARY).await;
    let mut round = 0;
    while phase(&tg, "m-canary").await.step != 2 {
        traffic(&tg, round, 160).await;
        tg.tick(61_000).await;
        round += 1;
        assert!(round < 10, "never reached step 2");
    }
    let before = tg.admin().routes().await.unwrap().routes["m"].clone();
    let TestGateway { gateway, dir, .. } = tg;
    gateway.shutdown().await.unwrap();
    let tg = TestGateway::start_in(&yaml, None, dir).await;
    let view = phase(&tg, "m-canary").await;
    assert_eq!((view.phase, view.step), (Phase::Running, 2));
    assert_eq!(
        tg.admin().routes().await.unwrap().routes["m"],
        before,
        "same weights after restart"
    );
    audit_ok(&tg).await;
    // And it carries on to the end.
    let (view, _) = drive(&tg, "m-canary").await;
    assert_eq!(view.phase, Phase::Completed);
}

const BLUE_GREEN: &str = r#"
name: yield-bg
model: yield
kind: blue_green
active: v1
candidate: CANDIDATE
validation_set: models/validation_yield.csv
min_accuracy: 0.85
smoke_requests: 5
monitor_min_requests: 50
monitor_duration_ms: 60000
max_error_rate: 0.05
retention_ms: 3600000
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_switches_aborts_on_failed_validation_and_switches_back_on_errors() {
    let _serial = SERIAL.lock().await;
    let flaky = QualityModel::start(90, 0, 0).await;
    let hook = WebhookReceiver::start(0, false).await;
    let yaml = format!(
        r#"
alerts: {{ webhooks: [{{ url: "{}" }}] }}
models:
  yield:
    versions:
      v1: {{ onnx: models/yield_v1.onnx }}
      v2: {{ onnx: models/yield_v2.onnx }}
      v3: {{ onnx: models/yield_v3.onnx }}
      flaky: {{ url: "{}" }}
    serve: {{ kind: single, version: v1 }}
"#,
        hook.url(),
        flaky.url
    );
    let tg = TestGateway::start(&yaml).await;
    // The first 300 rows of the shipped validation set: enough to tell v3 (accuracy well below
    // 85%) from v2, and a replay whose length on a loaded machine stays well inside the wait.
    let validation = tg.dir.path().join("validation_300.csv");
    let rows: Vec<String> =
        std::fs::read_to_string(support::repo_root().join("models/validation_yield.csv"))
            .unwrap()
            .lines()
            .take(301)
            .map(str::to_string)
            .collect();
    std::fs::write(&validation, rows.join("\n") + "\n").unwrap();
    let blue_green =
        BLUE_GREEN.replace("models/validation_yield.csv", validation.to_str().unwrap());
    let row = support::oip_row(&[1.0, 50.0, 2.0, 40.0, 1.0, 2.0, 1.0, 1000.0]);
    let version = |tg: &TestGateway| {
        let (client, url, row) = (
            tg.client.clone(),
            tg.url("/v2/models/yield/infer"),
            row.clone(),
        );
        async move {
            client
                .post_json(&url, &[], &row)
                .await
                .header("x-switchyard-model-version")
        }
    };
    let wait_validation = |tg: &TestGateway, name: &'static str| {
        let c = tg.gateway.controller.clone();
        async move {
            // Generous: the replay competes for 2 shared cores with the rest of the suite
            // (at least 2 minutes of polling).
            for _ in 0..6000 {
                c.tick_all().await;
                if c.phase(name) != Some(switchyard_core::rollout::Phase::Validating) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("validation never finished");
        }
    };

    // v3 fails validation (accuracy well below 85%): aborted, v1 keeps serving.
    tg.apply(
        &blue_green
            .replace("CANDIDATE", "v3")
            .replace("yield-bg", "bg-v3"),
    )
    .await;
    wait_validation(&tg, "bg-v3").await;
    let v = phase(&tg, "bg-v3").await;
    assert_eq!(v.phase, Phase::Aborted, "{v:?}");
    assert!(
        v.reason.as_deref().unwrap_or("").contains("accuracy"),
        "{v:?}"
    );
    assert_eq!(version(&tg).await, "v1");

    // v2 passes, traffic switches atomically to green, the window passes, blue stays warm.
    tg.apply(&blue_green.replace("CANDIDATE", "v2")).await;
    assert_eq!(
        version(&tg).await,
        "v1",
        "nothing switches before validation"
    );
    wait_validation(&tg, "yield-bg").await;
    assert_eq!(phase(&tg, "yield-bg").await.phase, Phase::Monitoring);
    assert_eq!(version(&tg).await, "v2");
    for _ in 0..60 {
        version(&tg).await;
    }
    tg.gateway.state.log.flush().await.unwrap();
    tg.tick(61_000).await;
    assert_eq!(phase(&tg, "yield-bg").await.phase, Phase::Retaining);
    // Rollback drill: switch back to blue by hand, instantly.
    tg.admin().command("yield-bg", "rollback").await.unwrap();
    assert_eq!(version(&tg).await, "v1");

    // A green that starts failing after the switch is switched back automatically.
    tg.apply(
        &blue_green
            .replace("CANDIDATE", "flaky")
            .replace("yield-bg", "bg-flaky")
            .replace("min_accuracy: 0.85", "min_accuracy: 0.5"),
    )
    .await;
    wait_validation(&tg, "bg-flaky").await;
    assert_eq!(phase(&tg, "bg-flaky").await.phase, Phase::Monitoring);
    flaky.errors.store(100, Ordering::SeqCst);
    for _ in 0..20 {
        version(&tg).await;
    }
    tg.gateway.state.log.flush().await.unwrap();
    tg.tick(1_000).await;
    let v = phase(&tg, "bg-flaky").await;
    assert_eq!(v.phase, Phase::RolledBack, "{v:?}");
    assert_eq!(version(&tg).await, "v1");
    let switched = tg
        .events("yield-bg")
        .await
        .into_iter()
        .find(|e| e.kind == "switched")
        .unwrap();
    assert!(switched.num("routing_swap_us").is_some(), "{switched:?}");
    audit_ok(&tg).await;
    let kinds = || hook.kinds();
    assert!(
        eventually(Duration::from_secs(10), || kinds()
            .contains(&("P0".into(), "rollback".into())))
        .await,
        "{:?}",
        hook.kinds()
    );
    assert!(
        kinds().contains(&("P2".into(), "validation_failed".into())),
        "{:?}",
        hook.kinds()
    );
}

// ---------------------------------------------------------------------------------------------
// Regression shadows through the gateway: the shipped test-time models (v2, gradient boosting,
// is about three times closer to the truth than v1, a small random forest), real traffic,
// labels through /v1/feedback, spec defaults.

const REGRESSION_MODELS: &str = r#"
models:
  testtime:
    versions:
      v1: { onnx: models/testtime_v1.onnx }
      v1-copy: { onnx: models/testtime_v1.onnx }
      v2: { onnx: models/testtime_v2.onnx }
    serve: { kind: single, version: v1 }
"#;

/// Flushes the log until `n` shadow answers of `model`'s `version` are logged (they are
/// mirrored off the request path), for at most 20 s of polling; returns how many are.
async fn shadow_answers_logged(tg: &TestGateway, model: &str, version: &str, n: u64) -> u64 {
    let admin = tg.admin();
    let mut seen = 0;
    for _ in 0..2_000 {
        tg.gateway.state.log.flush().await.unwrap();
        seen = admin
            .model_stats(model, None)
            .await
            .unwrap()
            .variants
            .iter()
            .filter(|v| v.version == version && v.role == Role::Shadow)
            .map(|v| v.stats.requests)
            .sum::<u64>();
        if seen >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen
}

/// Runs a shadow of `candidate` behind `primary` over `n` dies with their measured test times as
/// labels, and returns the concluded rollout and its report.
async fn regression_shadow(
    tg: &TestGateway,
    wafers: &mut WaferGenerator,
    name: &str,
    primary: &str,
    candidate: &str,
    n: u64,
) -> (RolloutView, Report) {
    tg.apply(&format!(
            "name: {name}\nmodel: testtime\nkind: shadow\nprimary: {primary}\ncandidate: {candidate}\nmin_labelled: {n}\n"
        ),
    )
    .await;
    let mut labels = Vec::new();
    for _ in 0..n {
        let die = wafers.die();
        let id = format!("{name}-{}", die.id);
        let body = json!({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": die.features}]});
        let r = tg
            .client
            .post_json(
                &tg.url("/v2/models/testtime/infer"),
                &[("x-request-id", &id)],
                &body,
            )
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("x-switchyard-model-version"), primary);
        labels.push(json!({"request_id": id, "value": die.test_time_ms}));
    }
    // The shadow's answers are mirrored off the request path: wait until every one is logged
    // before the labels arrive.
    let admin = tg.admin();
    let seen = shadow_answers_logged(tg, "testtime", candidate, n).await;
    assert!(seen >= n, "{name}: {seen} of {n} shadow answers logged");
    let r = tg
        .client
        .post_json(&tg.url("/v1/feedback"), &[], &Value::Array(labels))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    tg.gateway.state.log.flush().await.unwrap();
    tg.tick(1_000).await;
    let view = phase(tg, name).await;
    assert_eq!(view.phase, Phase::Completed, "{name}: {view:?}");
    (view, admin.report(name).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_shadows_promote_a_better_model_reject_a_worse_one_and_call_a_copy_neutral() {
    let tg = TestGateway::start(REGRESSION_MODELS).await;
    let mut wafers = WaferGenerator::new(11);
    let n = 400;

    // Much better: v2 behind v1.
    let (view, report) = regression_shadow(&tg, &mut wafers, "tt-better", "v1", "v2", n).await;
    let analysis = report.analysis.shadow.expect("a shadow analysis");
    // The cases shown are answers outside the tolerance (5% of the primary's), not every
    // answer that differs in the last digit.
    assert!(!analysis.disagreements.is_empty());
    for case in &analysis.disagreements {
        let (p, c) = (
            case.primary[0].as_f64().unwrap(),
            case.shadow[0].as_f64().unwrap(),
        );
        assert!((c - p).abs() > 0.05 * p.abs(), "{case:?}");
    }
    let s = analysis.report;
    assert_eq!(s.output, OutputKind::Regression);
    assert_eq!(s.labelled, n, "{s:?}");
    let (pm, sm) = (s.primary_mae.unwrap(), s.shadow_mae.unwrap());
    assert!(
        sm < pm / 2.0,
        "v2 is much closer to the truth: {sm} vs {pm}"
    );
    assert!(s.mae_change.unwrap() < -0.10, "{s:?}");
    assert!(s.paired_t.unwrap().p_value < 0.05, "{s:?}");
    assert_eq!(
        view.recommendation,
        Some(Recommendation::Promote),
        "{view:?}"
    );
    assert_eq!(s.recommendation, Recommendation::Promote);
    let reason = view.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("MAE"),
        "the reason names the numbers: {reason}"
    );

    // Much worse: v1 behind v2 (the routing serves v2 first).
    tg.admin()
        .put_route("testtime", "kind: single\nversion: v2\n")
        .await
        .unwrap();
    let (view, report) = regression_shadow(&tg, &mut wafers, "tt-worse", "v2", "v1", n).await;
    let s = report.analysis.shadow.expect("a shadow analysis").report;
    assert!(s.mae_change.unwrap() > 0.10, "{s:?}");
    assert_eq!(
        view.recommendation,
        Some(Recommendation::Reject),
        "{view:?}"
    );

    // The same model under two names: identical answers, no difference at all.
    tg.admin()
        .put_route("testtime", "kind: single\nversion: v1\n")
        .await
        .unwrap();
    let (view, report) = regression_shadow(&tg, &mut wafers, "tt-same", "v1", "v1-copy", n).await;
    let analysis = report.analysis.shadow.expect("a shadow analysis");
    assert!(
        analysis.disagreements.is_empty(),
        "{:?}",
        analysis.disagreements
    );
    let s = analysis.report;
    assert_eq!(s.agreement, Some(1.0), "{s:?}");
    assert_eq!(s.mae_change, Some(0.0), "{s:?}");
    assert_eq!(
        view.recommendation,
        Some(Recommendation::Neutral),
        "{view:?}"
    );

    // The text report shows the regression numbers.
    let text = tg.admin().report_as("tt-better", "text").await.unwrap();
    let text = String::from_utf8_lossy(&text);
    for line in [
        "primary / shadow MAE",
        "primary / shadow RMSE",
        "primary / shadow MAPE",
        "paired t on |errors|",
    ] {
        assert!(text.contains(line), "missing '{line}' in\n{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Segments through the gateway: the test-time models with a tester (header) and a lot (JSON
// pointer into the request's parameters). On tester T1 the labels are the dies' measured test
// times (v2 is far closer); on tester T2 they are v1's own answer plus 1 ms, so there v1 is off
// by exactly 1 ms and v2 by however far it is from v1. Overall v2 wins; on T2 it loses.

const SEGMENTED_MODELS: &str = r#"
models:
  testtime:
    segments:
      tester: { header: X-Tester }
      lot: { json_pointer: /parameters/lot }
    versions:
      v1: { onnx: models/testtime_v1.onnx }
      v2: { onnx: models/testtime_v2.onnx }
    serve: { kind: single, version: v1 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_better_overall_but_worse_for_one_tester_is_rejected_by_the_segment_gate() {
    let tg = TestGateway::start(SEGMENTED_MODELS).await;
    let admin = tg.admin();

    // A gate naming a field the model does not declare is refused with the spec's other
    // problems.
    let bad = "name: bad\nmodel: testtime\nkind: shadow\nprimary: v1\ncandidate: v2\nalpha: 2\n\
               segment_gate: { fields: [operator], min_samples: 0 }\n";
    let (status, error) = refusal(admin.apply(bad).await);
    assert_eq!(status, 422);
    for want in [
        "alpha",
        "segment_gate.min_samples must be greater than 0",
        "no segment 'operator' (declared: lot, tester)",
    ] {
        assert!(
            error.problems.iter().any(|p| p.contains(want)),
            "missing '{want}' in {:?}",
            error.problems
        );
    }

    let n = 400u64;
    tg.apply(&format!(
        "name: tt-segments\nmodel: testtime\nkind: shadow\nprimary: v1\ncandidate: v2\n\
         min_labelled: {n}\nsegment_gate: {{ fields: [tester] }}\n"
    ))
    .await;
    let mut wafers = WaferGenerator::new(23);
    let mut labels = Vec::new();
    // Per tester: |v1 − truth| and |v2 − truth|, from the answers themselves (v2's through its
    // pinned route, which no rollout counts).
    let mut errors: std::collections::BTreeMap<&str, (Vec<f64>, Vec<f64>)> = Default::default();
    let mut lots: std::collections::BTreeMap<String, u64> = Default::default();
    for i in 0..n {
        let die = wafers.die();
        let id = format!("seg-{i}");
        let tester = if i % 4 == 0 { "T2" } else { "T1" };
        let lot = format!("L{}", i % 3);
        let body = json!({
            "inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": die.features}],
            "parameters": {"lot": lot},
        });
        let answer = |r: &support::Reply| r.json()["outputs"][0]["data"][0].as_f64().unwrap();
        let r = tg
            .client
            .post_json(
                &tg.url("/v2/models/testtime/infer"),
                &[("x-request-id", &id), ("x-tester", tester)],
                &body,
            )
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v1 = answer(&r);
        let r = tg
            .client
            .post_json(&tg.url("/v2/models/testtime/versions/v2/infer"), &[], &body)
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v2 = answer(&r);
        let truth = if tester == "T2" {
            v1 + 1.0
        } else {
            die.test_time_ms
        };
        let e = errors.entry(tester).or_default();
        e.0.push((v1 - truth).abs());
        e.1.push((v2 - truth).abs());
        *lots.entry(lot).or_default() += 1;
        labels.push(json!({"request_id": id, "value": truth}));
    }
    let seen = shadow_answers_logged(&tg, "testtime", "v2", n).await;
    assert_eq!(seen, n, "every shadow answer logged");
    let r = tg
        .client
        .post_json(&tg.url("/v1/feedback"), &[], &Value::Array(labels))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    tg.gateway.state.log.flush().await.unwrap();
    tg.tick(1_000).await;
    let view = phase(&tg, "tt-segments").await;
    assert_eq!(view.phase, Phase::Completed, "{view:?}");
    assert_eq!(
        view.recommendation,
        Some(Recommendation::Reject),
        "{view:?}"
    );
    let reason = view.reason.clone().unwrap_or_default();
    assert!(reason.contains("segment tester=T2"), "{reason}");
    assert!(reason.contains("PROMOTE would have said"), "{reason}");

    let report = admin.report("tt-segments").await.unwrap();
    let s = report.analysis.shadow.expect("a shadow analysis").report;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let tester = s
        .segments
        .iter()
        .find(|b| b.field == "tester")
        .expect("the tester breakdown");
    for (value, (e1, e2)) in &errors {
        let row = tester
            .rows
            .iter()
            .find(|r| r.value == *value)
            .unwrap_or_else(|| panic!("no row {value}: {tester:?}"));
        assert_eq!(row.samples, e1.len() as u64, "{value}");
        let (b, c) = (row.baseline.unwrap(), row.candidate.unwrap());
        // The answers as printed (f32 in JSON) and as logged differ by an f32 rounding at most.
        let near = |got: f64, want: f64| (got - want).abs() <= 1e-3 + 1e-6 * want;
        assert!(near(b, mean(e1)), "{value}: {b} vs {}", mean(e1));
        assert!(near(c, mean(e2)), "{value}: {c} vs {}", mean(e2));
    }
    let failure = s.segment_failure.as_ref().expect("T2 fails the gate");
    assert_eq!(
        (failure.field.as_str(), failure.value.as_str()),
        ("tester", "T2")
    );
    assert!(failure.change > 0.10, "{failure:?}");
    // The lot, read from the body: every value with its labelled pairs.
    let lot = s
        .segments
        .iter()
        .find(|b| b.field == "lot")
        .expect("the lot breakdown");
    let got: std::collections::BTreeMap<String, u64> = lot
        .rows
        .iter()
        .map(|r| (r.value.clone(), r.samples))
        .collect();
    assert_eq!(got, lots);

    // Every rendering shows the segments.
    let text = admin.report_as("tt-segments", "text").await.unwrap();
    let text = String::from_utf8_lossy(&text);
    for line in [
        "Segments: tester",
        "Segments: lot",
        "segment gate",
        "FAILED: segment tester=T2",
    ] {
        assert!(text.contains(line), "missing '{line}' in\n{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Classification depth through the gateway: the shipped die-bin models (v1 gradient boosting,
// v2 XGBoost, four bins) on the 200 held-out rows of their fixtures, with each row's true bin
// (`truth` in the fixture) as its label. The expected numbers are computed here from the
// fixtures' own predictions (scikit-learn's, which onnxruntime and the gateway's engine match
// row for row), never from the gateway's output.

const BIN_MODELS: &str = r#"
models:
  bins:
    classes: [pass, leakage, speed, edge]
    versions:
      v1: { onnx: models/bin_v1.onnx }
      v2: { onnx: models/bin_v2.onnx }
    serve: { kind: single, version: v1 }
"#;

const BINS: [&str; 4] = ["pass", "leakage", "speed", "edge"];

/// A fixture's rows, the library's predicted bins and the true bins.
fn bin_fixture(name: &str) -> (Vec<Value>, Vec<usize>, Vec<usize>) {
    let path = support::fixtures::models_dir().join(format!("fixtures/{name}.json"));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let ints = |v: &Value| -> Vec<usize> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect()
    };
    (
        doc["inputs"].as_array().unwrap().clone(),
        ints(&doc["sklearn"]["predictions"]),
        ints(&doc["truth"]),
    )
}

/// scikit-learn's `precision_recall_fscore_support(truth, predicted, zero_division=0)`: per
/// class of the sorted union of both, (class, precision, recall, F1, support).
fn sklearn_scores(truth: &[usize], predicted: &[usize]) -> Vec<(usize, f64, f64, f64, u64)> {
    let mut labels: Vec<usize> = truth.iter().chain(predicted).copied().collect();
    labels.sort_unstable();
    labels.dedup();
    labels
        .into_iter()
        .map(|c| {
            let pairs = || truth.iter().zip(predicted);
            let tp = pairs().filter(|(t, p)| **t == c && **p == c).count() as f64;
            let predicted_c = predicted.iter().filter(|p| **p == c).count() as f64;
            let support = truth.iter().filter(|t| **t == c).count() as u64;
            let ratio = |n: f64, d: f64| if d == 0.0 { 0.0 } else { n / d };
            let (precision, recall) = (ratio(tp, predicted_c), ratio(tp, support as f64));
            let f1 = ratio(2.0 * precision * recall, precision + recall);
            (c, precision, recall, f1, support)
        })
        .collect()
}

#[track_caller]
fn close(what: &str, got: f64, want: f64) {
    assert!((got - want).abs() <= 1e-12, "{what}: {got} vs {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multiclass_shadow_reports_confusion_matrices_per_class_scores_transitions_and_drift() {
    let (rows, v1, truth) = bin_fixture("bin_v1");
    let (rows2, v2, truth2) = bin_fixture("bin_v2");
    assert_eq!((rows.len(), &rows, &truth), (200, &rows2, &truth2));
    // Three more requests whose label names no declared bin (a typo upstream).
    const UNKNOWN: usize = 3;
    let n = rows.len() + UNKNOWN;
    let tg = TestGateway::start(BIN_MODELS).await;
    tg.apply(&format!(
        "name: bins-v2-shadow\nmodel: bins\nkind: shadow\nprimary: v1\ncandidate: v2\nmin_labelled: {n}\n"
    ))
    .await;
    let mut labels = Vec::new();
    for i in 0..n {
        let row = &rows[i % rows.len()];
        let id = format!("bins-{i}");
        let body = json!({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": row}]});
        let r = tg
            .client
            .post_json(
                &tg.url("/v2/models/bins/infer"),
                &[("x-request-id", &id)],
                &body,
            )
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let label = if i < rows.len() {
            BINS[truth[i]]
        } else {
            "leakgae"
        };
        labels.push(json!({"request_id": id, "label": label}));
    }
    let admin = tg.admin();
    let seen = shadow_answers_logged(&tg, "bins", "v2", n as u64).await;
    assert_eq!(seen, n as u64, "every shadow answer logged");
    let r = tg
        .client
        .post_json(&tg.url("/v1/feedback"), &[], &Value::Array(labels))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    tg.gateway.state.log.flush().await.unwrap();
    tg.tick(1_000).await;
    assert_eq!(phase(&tg, "bins-v2-shadow").await.phase, Phase::Completed);
    let report = admin.report("bins-v2-shadow").await.unwrap();
    let analysis = report.analysis.shadow.expect("a shadow analysis");
    let s = &analysis.report;
    assert_eq!(s.output, OutputKind::Classification);
    assert_eq!((s.compared, s.labelled), (n as u64, n as u64));

    // Per version: the confusion matrix holds the 200 labelled rows, the 3 unknown labels are
    // reported apart, and every per-class score is scikit-learn's on the same pairs.
    for (version, stats, predicted) in [
        ("v1", &analysis.primary_stats, &v1),
        ("v2", &analysis.shadow_stats, &v2),
    ] {
        let c = stats
            .classification
            .as_ref()
            .expect("classification detail");
        assert_eq!(c.unknown_labels, UNKNOWN as u64, "{version}");
        assert_eq!(c.labelled, rows.len() as u64, "{version}");
        assert_eq!(c.confusion.total(), rows.len() as u64, "{version}");
        assert!(!c.confusion.other);
        // Declared order, for the bins that occur.
        let want = sklearn_scores(&truth, predicted);
        let names: Vec<&str> = want.iter().map(|(k, ..)| BINS[*k]).collect();
        assert_eq!(c.confusion.classes, names, "{version}");
        for (i, &(k, precision, recall, f1, support)) in want.iter().enumerate() {
            let got = &c.scores[i];
            assert_eq!((got.class.as_str(), got.support), (BINS[k], support));
            close(
                &format!("{version} {} precision", BINS[k]),
                got.precision,
                precision,
            );
            close(&format!("{version} {} recall", BINS[k]), got.recall, recall);
            close(&format!("{version} {} F1", BINS[k]), got.f1, f1);
            // Row k of the matrix: the true bin k by predicted bin.
            for (j, &(kj, ..)) in want.iter().enumerate() {
                let count = truth
                    .iter()
                    .zip(predicted)
                    .filter(|(t, p)| **t == k && **p == kj)
                    .count() as u64;
                assert_eq!(c.confusion.counts[i][j], count, "{version} {k}→{kj}");
            }
        }
        let macro_f1 = want.iter().map(|w| w.3).sum::<f64>() / want.len() as f64;
        close(&format!("{version} macro F1"), c.macro_f1, macro_f1);
        let right = truth.iter().zip(predicted).filter(|(t, p)| t == p).count();
        assert_eq!(c.correct, right as u64);
        let (lo, hi) = (c.accuracy_low.unwrap(), c.accuracy_high.unwrap());
        assert!(
            lo < c.accuracy.unwrap() && c.accuracy.unwrap() < hi,
            "{c:?}"
        );
    }

    // The pair: transitions over every compared request, the chi-square of the two
    // prediction distributions and their drift.
    let t = s.transitions.as_ref().expect("transitions");
    assert_eq!(t.total(), n as u64);
    let bin_of = |i: usize, p: &[usize]| p[i % rows.len()];
    for (a, from) in t.classes.iter().enumerate() {
        for (b, to) in t.classes.iter().enumerate() {
            let count = (0..n)
                .filter(|&i| BINS[bin_of(i, &v1)] == from && BINS[bin_of(i, &v2)] == to)
                .count() as u64;
            assert_eq!(t.counts[a][b], count, "{from}→{to}");
        }
    }
    let chi = s.prediction_chi2.as_ref().expect("the seed's chi-square");
    assert_eq!(chi.dof, t.classes.len() as u64 - 1);
    assert!((0.0..=1.0).contains(&chi.p_value), "{chi:?}");
    let drift = s.drift.as_ref().expect("a prediction drift");
    let (rows_by, columns_by) = (t.row_sums(), t.column_sums());
    for (bin, (expected, actual)) in drift
        .bins
        .iter()
        .zip(drift.expected.iter().zip(&drift.actual))
    {
        let at = t.classes.iter().position(|c| c == bin).unwrap();
        assert_eq!((*expected, *actual), (rows_by[at], columns_by[at]), "{bin}");
    }
    assert!(drift.psi >= 0.0 && drift.js_distance >= 0.0, "{drift:?}");

    // The text report shows them.
    let text = admin.report_as("bins-v2-shadow", "text").await.unwrap();
    let text = String::from_utf8_lossy(&text);
    for line in [
        "Confusion matrix: v1 (true class in rows, predicted in columns)",
        "Per-class scores: v2",
        "Transitions: v1 (rows) → v2 (columns)",
        "χ² of the prediction distributions",
        "prediction drift: PSI / JS distance",
        "v1: unknown labels",
    ] {
        assert!(text.contains(line), "missing '{line}' in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_shadow_raises_a_live_alert_at_the_webhook_before_any_conclusion() {
    let _serial = SERIAL.lock().await;
    let stable = QualityModel::start(90, 0, 1).await;
    // A candidate failing 30% of its calls.
    let candidate = QualityModel::start(90, 30, 1).await;
    let hook = WebhookReceiver::start(0, false).await;
    let tg = TestGateway::start(&gateway_yaml(&stable.url, &candidate.url, &hook.url())).await;
    tg.apply(
        "name: m-shadow\nmodel: m\nkind: shadow\nprimary: stable\ncandidate: candidate\n\
         min_labelled: 100000\nlive_alerts: { min_samples: 50 }\n",
    )
    .await;
    let mut round = 0;
    let raised = loop {
        traffic(&tg, round, 80).await;
        tg.tick(1_000).await;
        tg.gateway.controller.alerts().flush().await;
        if hook
            .kinds()
            .contains(&("P2".into(), "shadow_errors".into()))
        {
            break true;
        }
        round += 1;
        if round > 20 {
            break false;
        }
    };
    assert!(raised, "no shadow_errors alert: {:?}", hook.kinds());
    let view = phase(&tg, "m-shadow").await;
    assert_eq!(
        view.phase,
        Phase::Running,
        "an alert does not conclude: {view:?}"
    );
    let alert = tg
        .events("m-shadow")
        .await
        .into_iter()
        .find(|e| e.kind == "shadow_alert")
        .expect("the alert is in the audit trail");
    assert!(alert.message.contains("shadow error rate"), "{alert:?}");
    assert!(
        alert.num("shadow_error_rate").is_some_and(|r| r > 0.05),
        "{alert:?}"
    );
    // Once per condition.
    traffic(&tg, 99, 80).await;
    tg.tick(1_000).await;
    tg.gateway.controller.alerts().flush().await;
    let sent = hook
        .kinds()
        .iter()
        .filter(|k| k.1 == "shadow_errors")
        .count();
    assert_eq!(sent, 1, "{:?}", hook.kinds());
}

// ---------------------------------------------------------------------------------------------
// Memory that does not grow with routing changes: the aggregates fold routing epochs older
// than every running rollout's first one together, and a finished rollout's report comes from
// the statistics kept in the store when it ended.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_routing_epochs_fold_together_and_a_finished_report_stays_as_it_ended() {
    let tg = TestGateway::start(REGRESSION_MODELS).await;
    let admin = tg.admin();
    let body = json!({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32",
        "data": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]}]});
    let mut sent = 0u64;
    let send = |n: u64| {
        let (tg, body) = (&tg, &body);
        async move {
            for _ in 0..n {
                let r = tg
                    .client
                    .post_json(&tg.url("/v2/models/testtime/infer"), &[], body)
                    .await;
                assert_eq!(r.status, 200);
            }
            tg.gateway.state.log.flush().await.unwrap();
        }
    };
    tg.apply(
        "name: tt-short\nmodel: testtime\nkind: canary\nstable: v1\ncandidate: v2\n\
         steps: [{ weight: 50, min_requests: 5, min_duration_ms: 0 }, { weight: 100, min_requests: 5, min_duration_ms: 0 }]\n\
         gate: { max_p95_increase: null, max_mae_increase: null }\n",
    )
    .await;
    for _ in 0..20 {
        send(40).await;
        sent += 40;
        tg.tick(1_000).await;
        if phase(&tg, "tt-short").await.phase.is_terminal() {
            break;
        }
    }
    assert_eq!(phase(&tg, "tt-short").await.phase, Phase::Completed);
    let ended = admin.report("tt-short").await.unwrap();
    assert!(ended.versions["v2"].requests > 0, "{:?}", ended.versions);

    // 200 routing changes, each with traffic.
    for i in 0..200 {
        let version = if i % 2 == 0 { "v1" } else { "v2" };
        admin
            .put_route("testtime", &format!("kind: single\nversion: {version}\n"))
            .await
            .unwrap();
        send(2).await;
        sent += 2;
    }
    tg.tick(1_000).await;
    let (series, epochs) = {
        let agg = tg.gateway.state.log.aggregates().lock();
        let epochs: std::collections::BTreeSet<u64> = agg.series.keys().map(|k| k.epoch).collect();
        (agg.series.len(), epochs)
    };
    // Everything before the current routing epoch is one entry per version and variant.
    assert!(series <= 6, "{series} series over epochs {epochs:?}");
    assert!(epochs.len() <= 2, "{epochs:?}");
    // Totals are exact.
    let stats = admin.model_stats("testtime", None).await.unwrap();
    let total: u64 = stats
        .variants
        .iter()
        .filter(|v| v.role == Role::Serving)
        .map(|v| v.stats.requests)
        .sum();
    assert_eq!(total, sent);
    // The finished rollout's report is what it was when it ended.
    let later = admin.report("tt-short").await.unwrap();
    assert_eq!(later.versions, ended.versions);
    assert_eq!(later.analysis, ended.analysis);
}

/// Even requests come from us-west, odd ones from eu.
fn west_or_eu(i: u64) -> Option<&'static str> {
    Some(if i.is_multiple_of(2) { "us-west" } else { "eu" })
}

/// Which version served each of `n` probe keys (region by [`west_or_eu`]), keyed by
/// (region, key).
async fn probe(tg: &TestGateway, n: u64) -> std::collections::BTreeMap<(String, u64), String> {
    let mut served = std::collections::BTreeMap::new();
    for i in 0..n {
        let region = west_or_eu(i).unwrap();
        let r = tg
            .client
            .post_json(
                &tg.url("/v2/models/m/infer"),
                &[("x-key", &format!("probe-{i}")), ("x-region", region)],
                &support::oip_row(&[i as f64]),
            )
            .await;
        assert_eq!(r.status, 200);
        served.insert(
            (region.to_string(), i),
            r.header("x-switchyard-model-version").to_string(),
        );
    }
    served
}

fn count(served: &std::collections::BTreeMap<(String, u64), String>, region: &str) -> u64 {
    served
        .iter()
        .filter(|((r, _), v)| r == region && *v == "candidate")
        .count() as u64
}

/// The seed's regional canary: us-west first (half of it, then all of it), then everyone at
/// 20% with us-west kept, then 100%. Counted on the answers: at step 1 no eu request reaches
/// the candidate; no key ever leaves the candidate once it got there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targeted_canary_serves_us_west_first_then_widens_without_moving_keys_back() {
    let _serial = SERIAL.lock().await;
    // Both always right: this test counts routing, not quality. (A model wrong on every 10th
    // request it serves is 90% right overall but not within a region: while the gate compares
    // us-west only, stable's share of the wrong answers that fall on us-west requests depends
    // on arrival order, and the accuracy gate then rolled back identical models now and then.)
    let stable = QualityModel::start(100, 0, 0).await;
    let candidate = QualityModel::start(100, 0, 0).await;
    let yaml = format!(
        r#"
models:
  m:
    routing_key: {{ header: x-key }}
    segments: {{ region: {{ header: x-region }} }}
    versions:
      stable: {{ url: "{}" }}
      candidate: {{ url: "{}" }}
    serve: {{ kind: single, version: stable }}
"#,
        stable.url, candidate.url
    );
    let tg = TestGateway::start(&yaml).await;
    let spec = r#"
name: west-first
model: m
kind: canary
stable: stable
candidate: candidate
min_requests: 20
min_duration_ms: 60000
gate: { min_labelled: 15, max_p95_increase: null }
steps:
  - { weight: 50, match: { region: [us-west] } }
  - { weight: 100, match: { region: [us-west] } }
  - { weight: 20 }
  - { weight: 100 }
"#;
    let r = tg
        .admin()
        .send(Method::POST, "/rollouts", Some(spec.to_string()))
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    // Step 1, counted: eu never reaches the candidate, about half of us-west does.
    let step1 = probe(&tg, 400).await;
    assert_eq!(count(&step1, "eu"), 0, "{step1:?}");
    let west = count(&step1, "us-west");
    assert!(
        (60..=140).contains(&west),
        "us-west on the candidate: {west} of 200"
    );
    let events = tg.events("west-first").await;
    assert!(events.iter().any(|e| e.kind == "started"), "{events:?}");

    let mut seen = vec![(1usize, step1)];
    for round in 0..30 {
        traffic_with(&tg, round, 160, west_or_eu).await;
        tg.tick(61_000).await;
        let view = phase(&tg, "west-first").await;
        if matches!(view.phase, Phase::RolledBack | Phase::Aborted) {
            panic!("{view:?}");
        }
        let step = if view.phase == Phase::Completed {
            5
        } else {
            view.step
        };
        if seen.last().is_some_and(|(s, _)| *s != step) {
            seen.push((step, probe(&tg, 400).await));
        }
        if view.phase == Phase::Completed {
            break;
        }
    }
    let steps: Vec<usize> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(steps[..3], [1, 2, 3], "steps probed: {steps:?}");
    assert_eq!(steps.last(), Some(&5), "completed: {steps:?}");
    let at = |i: usize| &seen[i].1;
    // Step 2: all of us-west, none of eu.
    assert_eq!((count(at(1), "us-west"), count(at(1), "eu")), (200, 0));
    // Step 3: us-west kept whole, eu at about 20%.
    assert_eq!(count(at(2), "us-west"), 200);
    let eu = count(at(2), "eu");
    assert!(
        (15..=70).contains(&eu),
        "eu on the candidate at 20%: {eu} of 200"
    );
    // Promoted: everyone.
    let last = seen.len() - 1;
    assert_eq!(
        (count(at(last), "us-west"), count(at(last), "eu")),
        (200, 200)
    );
    // No key ever went back.
    for pair in seen.windows(2) {
        for (key, version) in &pair[0].1 {
            if version == "candidate" {
                assert_eq!(
                    pair[1].1[key], "candidate",
                    "{key:?} moved back at step {}",
                    pair[1].0
                );
            }
        }
    }
    let advanced: Vec<String> = tg
        .events("west-first")
        .await
        .into_iter()
        .filter(|e| e.kind == "step_advanced")
        .map(|e| e.message)
        .collect();
    assert!(
        advanced[0].contains("canary at 100% of region=us-west (step 2 of 4)"),
        "{advanced:?}"
    );
    audit_ok(&tg).await;
}

/// A stratified A/B through the gateway: the report holds, per region, both arms' requests
/// (as sent), their rates and sample-ratio test, and the CMH reading, in JSON and in text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stratified_ab_reports_each_region_and_the_cmh_test() {
    let _serial = SERIAL.lock().await;
    let control = QualityModel::start(80, 0, 0).await;
    let treatment = QualityModel::start(90, 0, 0).await;
    let yaml = format!(
        r#"
models:
  m:
    routing_key: {{ header: x-key }}
    segments: {{ region: {{ header: x-region }} }}
    versions:
      a: {{ url: "{}" }}
      b: {{ url: "{}" }}
    serve: {{ kind: single, version: a }}
"#,
        control.url, treatment.url
    );
    let tg = TestGateway::start(&yaml).await;
    let spec = "name: strat\nmodel: m\nkind: ab\ncontrol: a\ntreatment: b\nbaseline: 0.8\nmde: 0.1\nstratify_by: region\n";
    let r = tg
        .admin()
        .send(Method::POST, "/rollouts", Some(spec.to_string()))
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    traffic_with(&tg, 0, 320, west_or_eu).await;
    let report = tg.admin().report("strat").await.unwrap();
    let ab = report.analysis.ab.unwrap().report.unwrap();
    let st = ab.stratified.expect("stratified");
    assert_eq!(st.field, "region");
    let per_region: Vec<(&str, u64)> = st
        .strata
        .iter()
        .map(|s| (s.value.as_str(), s.control_requests + s.treatment_requests))
        .collect();
    assert_eq!(per_region, vec![("eu", 160), ("us-west", 160)]);
    for s in &st.strata {
        assert_eq!(
            s.control.trials, s.control_requests,
            "every request labelled"
        );
        assert!(
            s.srm.is_some() && s.control.trials > 0 && s.treatment.trials > 0,
            "{s:?}"
        );
    }
    let mh = st
        .mantel_haenszel
        .expect("defined with both outcomes in both arms");
    assert_eq!(mh.strata, 2);
    assert!(
        mh.ci_low < mh.odds_ratio && mh.odds_ratio < mh.ci_high,
        "{mh:?}"
    );
    let text = tg.admin().report_as("strat", "text").await.unwrap();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("Strata: region"), "{text}");
    assert!(
        text.contains("within region (MH odds ratio B/A, 95% CI, CMH p)"),
        "{text}"
    );
}

/// The seed's "canary both models together — feature extractor + classifier — and if either
/// fails, roll back both": a group moves `m` and `feat` in one routing swap per step; `feat`'s
/// candidate fails a third of its calls, so its gate fails and both models go back to their
/// stable versions in one swap; a second rollout touching either model is refused meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_model_group_is_rolled_back_together_when_one_models_gate_fails() {
    let _serial = SERIAL.lock().await;
    let stable = QualityModel::start(90, 0, 0).await;
    let candidate = QualityModel::start(90, 0, 0).await;
    let f1 = QualityModel::start(90, 0, 0).await;
    let f2 = QualityModel::start(90, 33, 0).await;
    let yaml = format!(
        r#"
models:
  m:
    routing_key: {{ header: x-key }}
    versions:
      stable: {{ url: "{}" }}
      candidate: {{ url: "{}" }}
    serve: {{ kind: single, version: stable }}
  feat:
    routing_key: {{ header: x-key }}
    versions:
      f1: {{ url: "{}" }}
      f2: {{ url: "{}" }}
    serve: {{ kind: single, version: f1 }}
"#,
        stable.url, candidate.url, f1.url, f2.url
    );
    let tg = TestGateway::start(&yaml).await;
    let before = tg.gateway.state.table.load().epoch;
    let spec = r#"
name: extractor-and-classifier
model: m
kind: canary
stable: stable
candidate: candidate
group: [{ model: feat, stable: f1, candidate: f2 }]
min_requests: 20
min_duration_ms: 60000
steps: [{ weight: 50 }, { weight: 100 }]
gate: { min_labelled: 15, max_p95_increase: null }
"#;
    let r = tg
        .admin()
        .send(Method::POST, "/rollouts", Some(spec.to_string()))
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // One swap moved both models.
    let table = tg.gateway.state.table.load_full();
    assert_eq!(table.epoch, before + 1);
    for (model, canary) in [("m", "candidate"), ("feat", "f2")] {
        match &table.routes[model].strategy {
            Strategy::Split { arms, .. } => assert_eq!(
                (arms[0].version.as_str(), arms[0].weight),
                (canary, 5_000),
                "{model}"
            ),
            other => panic!("{model}: {other:?}"),
        }
    }
    // Either model is taken while the group runs.
    let other = "name: solo\nmodel: feat\nkind: canary\nstable: f1\ncandidate: f2\n";
    let (status, error) = refusal(tg.admin().apply(other).await);
    assert_eq!(status, 409, "{error:?}");
    assert!(
        error.message.contains("extractor-and-classifier"),
        "{error:?}"
    );
    // Invalid members are named.
    let bad = "name: bad\nmodel: m\nkind: canary\nstable: stable\ncandidate: candidate\n\
               group: [{ model: nope, stable: a, candidate: b }, { model: m, stable: stable, candidate: candidate }]\n";
    let (status, error) = refusal(tg.admin().dry_run(bad).await);
    assert_eq!(status, 422, "{error:?}");
    let text = format!("{error:?}");
    assert!(
        text.contains("group[0].model: unknown model 'nope'"),
        "{text}"
    );
    assert!(
        text.contains("group[1].model: 'm' is already in the rollout"),
        "{text}"
    );

    // A restart resumes the group with both models' routing.
    let routes = tg.admin().routes().await.unwrap().routes;
    let TestGateway { gateway, dir, .. } = tg;
    gateway.shutdown().await.unwrap();
    let tg = TestGateway::start_in(&yaml, None, dir).await;
    let after = tg.admin().routes().await.unwrap().routes;
    for model in ["m", "feat"] {
        assert_eq!(after[model], routes[model], "{model} after a restart");
    }
    let resumed = tg.gateway.state.table.load().epoch;

    // Traffic to both models; `feat`'s candidate fails a third of its calls.
    traffic(&tg, 0, 160).await;
    for i in 0..160u64 {
        let r = tg
            .client
            .post_json(
                &tg.url("/v2/models/feat/infer"),
                &[("x-key", &format!("key-{i}"))],
                &support::oip_row(&[i as f64]),
            )
            .await;
        assert!(r.status == 200 || r.status == 502, "{}", r.status);
    }
    tg.gateway.state.log.flush().await.unwrap();
    tg.tick(61_000).await;
    let view = phase(&tg, "extractor-and-classifier").await;
    assert_eq!(view.phase, Phase::RolledBack, "{view:?}");
    assert!(
        view.reason
            .as_deref()
            .unwrap_or("")
            .contains("group member feat"),
        "{view:?}"
    );
    let table = tg.gateway.state.table.load_full();
    assert_eq!(table.epoch, resumed + 1, "the rollback is one swap");
    for (model, stable) in [("m", "stable"), ("feat", "f1")] {
        assert_eq!(
            table.routes[model].strategy,
            Strategy::Single {
                version: stable.into()
            },
            "{model}"
        );
    }
    let failed = tg
        .events("extractor-and-classifier")
        .await
        .into_iter()
        .find(|e| e.kind == "gate_failed")
        .expect("gate_failed");
    assert!(
        failed.message.contains("group member feat"),
        "{}",
        failed.message
    );
    audit_ok(&tg).await;
}
