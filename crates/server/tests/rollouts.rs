//! The control plane end to end: rollouts declared through the admin API, driven by the
//! controller on an explicit clock, against real backends on real sockets; alerts received by
//! a real webhook listener; the audit chain verified.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};
use support::{eventually, TestGateway};

/// A model server whose answers are right `accuracy`% of the time, fail `errors`% of the time
/// and take `delay_ms`. Rates are exact over the requests it receives (the n-th request fails
/// when floor((n+1)·p) passes an integer), so which keys a canary gets does not matter. The
/// truth of instance `i` (the request's only feature) is `i % 2`.
struct QualityModel {
    url: String,
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

fn truth(i: u64) -> u64 {
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
    async fn start(accuracy: u64, errors: u64, delay_ms: u64) -> QualityModel {
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

/// A webhook receiver that keeps every alert it is sent.
struct Webhook {
    url: String,
    received: Arc<Mutex<Vec<Value>>>,
}

impl Webhook {
    async fn start() -> Webhook {
        let received: Arc<Mutex<Vec<Value>>> = Arc::default();
        let app = Router::new()
            .route(
                "/hook",
                post(
                    |State(r): State<Arc<Mutex<Vec<Value>>>>, Json(v): Json<Value>| async move {
                        r.lock().push(v);
                        "ok"
                    },
                ),
            )
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Webhook { url, received }
    }

    fn kinds(&self) -> Vec<(String, String)> {
        self.received
            .lock()
            .iter()
            .map(|a| {
                (
                    a["severity"].as_str().unwrap_or("").to_string(),
                    a["kind"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
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

async fn admin(tg: &TestGateway, method: &str, path: &str, body: &str) -> support::Reply {
    tg.client
        .send(
            method,
            &tg.url(&format!("/admin/v1{path}")),
            &[
                ("content-type", "application/yaml"),
                ("x-switchyard-actor", "test"),
            ],
            body.to_string(),
        )
        .await
}

/// Sends `n` requests (8 at a time), then the ground truth for each.
async fn traffic(tg: &TestGateway, round: u64, n: u64) {
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
                    let r = client.post_json(&url, &[("x-key", &format!("key-{i}")), ("x-request-id", &id)], &body).await;
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

async fn phase(tg: &TestGateway, name: &str) -> Value {
    admin(tg, "GET", &format!("/rollouts/{name}"), "")
        .await
        .json()
}

/// Runs rounds of traffic and ticks until the rollout ends; returns its final view and the
/// canary weights seen after each tick.
async fn drive(tg: &TestGateway, name: &str) -> (Value, Vec<f64>) {
    let mut weights = vec![];
    for round in 0..30 {
        traffic(tg, round, 160).await;
        tg.tick(61_000).await;
        let view = phase(tg, name).await;
        let w = match view["strategy"]["kind"].as_str() {
            Some("split") => view["strategy"]["arms"][0]["weight"].as_f64().unwrap() / 100.0,
            Some("single") if view["strategy"]["version"] == "candidate" => 100.0,
            _ => 0.0,
        };
        weights.push(w);
        if matches!(
            view["phase"].as_str(),
            Some("completed" | "rolled_back" | "aborted")
        ) {
            return (view, weights);
        }
    }
    panic!("rollout {name} did not finish: {}", phase(tg, name).await);
}

/// The tests of this file compare latencies, so they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn audit_ok(tg: &TestGateway) {
    let v = admin(tg, "GET", "/audit/verify", "").await.json();
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["events"].as_u64().unwrap() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_candidate_walks_5_25_50_100_and_is_promoted() {
    let _serial = SERIAL.lock().await;
    let stable = QualityModel::start(90, 2, 5).await;
    let candidate = QualityModel::start(92, 2, 5).await;
    let hook = Webhook::start().await;
    let tg = TestGateway::start(&gateway_yaml(&stable.url, &candidate.url, &hook.url)).await;
    let r = admin(&tg, "POST", "/rollouts", CANARY).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let (view, weights) = drive(&tg, "m-canary").await;
    assert_eq!(view["phase"], "completed", "{view}");
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
    let events: Vec<String> = admin(&tg, "GET", "/rollouts/m-canary/events", "")
        .await
        .json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        events.iter().filter(|k| *k == "gate_passed").count(),
        4,
        "{events:?}"
    );
    assert!(events.contains(&"promoted".to_string()));
    // The controller kept snapshots for the dashboard's charts.
    let history = admin(&tg, "GET", "/rollouts/m-canary/history", "")
        .await
        .json();
    let points = history["points"].as_array().unwrap();
    assert!(
        points.iter().any(|p| p["candidate_percent"] == 5.0),
        "{history}"
    );
    assert!(
        points
            .iter()
            .all(|p| p["versions"]["stable"]["requests"].as_u64().is_some()),
        "{history}"
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
    let hook = Webhook::start().await;
    let tg = TestGateway::start(&gateway_yaml(&stable.url, &candidate.url, &hook.url)).await;
    let mut spec = CANARY.replace("min_requests: 20", &format!("min_requests: {min_requests}"));
    if reason == "p95 latency" {
        spec = spec.replace(", max_p95_increase: null", "");
    }
    assert_eq!(admin(&tg, "POST", "/rollouts", &spec).await.status, 201);
    let (view, weights) = drive(&tg, "m-canary").await;
    assert_eq!(view["phase"], "rolled_back", "{view}");
    let events = admin(&tg, "GET", "/rollouts/m-canary/events", "")
        .await
        .json();
    assert!(
        weights[..weights.len() - 1].iter().all(|w| *w == 5.0),
        "rolled back after the first step: {weights:?} {events:#}"
    );
    assert!(view["reason"].as_str().unwrap().contains(reason), "{view}");
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
    let events = admin(&tg, "GET", "/rollouts/m-canary/events", "")
        .await
        .json();
    let failed = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "gate_failed")
        .cloned()
        .expect("gate_failed event");
    assert!(
        failed["details"].as_object().unwrap().len() >= 4,
        "the event carries the gate's numbers: {failed}"
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
    let hook = Webhook::start().await;
    let tg = TestGateway::start(&gateway_yaml(&stable.url, &stable.url, &hook.url)).await;
    let bad = r#"
name: bad
model: m
kind: canary
stable: stable
candidate: nope
steps: [{ weight: 50 }, { weight: 20 }, { weight: 120 }]
gate: { max_accuracy_drop: -0.1 }
"#;
    let r = admin(&tg, "POST", "/rollouts", bad).await;
    assert_eq!(r.status, 422);
    let problems: Vec<String> = r.json()["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
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
    let r = admin(
        &tg,
        "POST",
        "/rollouts",
        "name: x\nmodel: ghost\nkind: canary\n",
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unknown model 'ghost'"));
    let r = admin(
        &tg,
        "POST",
        "/rollouts",
        "name: x\nmodel: m\nkind: canary\nstable: stable\ncandidate: candidate\nbogus: 1\n",
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("bogus"));
    // An unknown field does not hide the other mistakes.
    let r = admin(&tg, "POST", "/rollouts", "name: x\nmodel: m\nkind: canary\nstable: stable\ncandidate: nope\nbogus: 1\ngate: { max_acuracy_drop: 0.1 }\n").await;
    let problems = r.json()["error"]["problems"].clone();
    for expected in [
        "bogus: unknown field",
        "gate.max_acuracy_drop: unknown field",
        "unknown version 'nope'",
    ] {
        assert!(
            problems
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p.as_str().unwrap().contains(expected)),
            "missing '{expected}' in {problems}"
        );
    }
    // Dry run validates without starting.
    let r = tg
        .client
        .send(
            "POST",
            &tg.url("/admin/v1/rollouts?dry_run=true"),
            &[],
            CANARY.to_string(),
        )
        .await;
    assert_eq!((r.status, r.json()["valid"].as_bool()), (200, Some(true)));
    assert_eq!(
        admin(&tg, "GET", "/rollouts", "").await.json()["rollouts"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // Two rollouts on one model.
    assert_eq!(admin(&tg, "POST", "/rollouts", CANARY).await.status, 201);
    let r = admin(
        &tg,
        "POST",
        "/rollouts",
        &CANARY.replace("m-canary", "m-canary-2"),
    )
    .await;
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    // Commands out of place are refused; a terminal rollout refuses everything.
    assert_eq!(
        admin(&tg, "POST", "/rollouts/m-canary/approve", "")
            .await
            .status,
        409
    );
    assert_eq!(
        admin(&tg, "POST", "/rollouts/m-canary/rollback", "")
            .await
            .status,
        200
    );
    assert_eq!(
        admin(&tg, "POST", "/rollouts/m-canary/promote", "")
            .await
            .status,
        409
    );
    assert_eq!(
        admin(&tg, "POST", "/rollouts/ghost/pause", "").await.status,
        404
    );
    assert_eq!(
        admin(&tg, "POST", "/rollouts/m-canary/explode", "")
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_resumes_the_rollout_at_its_recorded_step() {
    let _serial = SERIAL.lock().await;
    let stable = QualityModel::start(90, 1, 1).await;
    let candidate = QualityModel::start(92, 1, 1).await;
    let hook = Webhook::start().await;
    let yaml = gateway_yaml(&stable.url, &candidate.url, &hook.url);
    let tg = TestGateway::start(&yaml).await;
    assert_eq!(admin(&tg, "POST", "/rollouts", CANARY).await.status, 201);
    let mut round = 0;
    while phase(&tg, "m-canary").await["step"] != 2 {
        traffic(&tg, round, 160).await;
        tg.tick(61_000).await;
        round += 1;
        assert!(round < 10, "never reached step 2");
    }
    let before = admin(&tg, "GET", "/routes", "").await.json()["routes"]["m"].clone();
    let TestGateway { gateway, dir, .. } = tg;
    gateway.shutdown().await.unwrap();
    let tg = TestGateway::start_in(&yaml, None, dir).await;
    let view = phase(&tg, "m-canary").await;
    assert_eq!(
        (view["phase"].as_str(), view["step"].as_u64()),
        (Some("running"), Some(2))
    );
    assert_eq!(
        admin(&tg, "GET", "/routes", "").await.json()["routes"]["m"],
        before,
        "same weights after restart"
    );
    audit_ok(&tg).await;
    // And it carries on to the end.
    let (view, _) = drive(&tg, "m-canary").await;
    assert_eq!(view["phase"], "completed");
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
    let hook = Webhook::start().await;
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
        hook.url, flaky.url
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
    assert_eq!(
        admin(
            &tg,
            "POST",
            "/rollouts",
            &blue_green
                .replace("CANDIDATE", "v3")
                .replace("yield-bg", "bg-v3")
        )
        .await
        .status,
        201
    );
    wait_validation(&tg, "bg-v3").await;
    let v = phase(&tg, "bg-v3").await;
    assert_eq!(v["phase"], "aborted", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("accuracy"), "{v}");
    assert_eq!(version(&tg).await, "v1");

    // v2 passes, traffic switches atomically to green, the window passes, blue stays warm.
    assert_eq!(
        admin(
            &tg,
            "POST",
            "/rollouts",
            &blue_green.replace("CANDIDATE", "v2")
        )
        .await
        .status,
        201
    );
    assert_eq!(
        version(&tg).await,
        "v1",
        "nothing switches before validation"
    );
    wait_validation(&tg, "yield-bg").await;
    assert_eq!(phase(&tg, "yield-bg").await["phase"], "monitoring");
    assert_eq!(version(&tg).await, "v2");
    for _ in 0..60 {
        version(&tg).await;
    }
    tg.gateway.state.log.flush().await.unwrap();
    tg.tick(61_000).await;
    assert_eq!(phase(&tg, "yield-bg").await["phase"], "retaining");
    // Rollback drill: switch back to blue by hand, instantly.
    assert_eq!(
        admin(&tg, "POST", "/rollouts/yield-bg/rollback", "")
            .await
            .status,
        200
    );
    assert_eq!(version(&tg).await, "v1");

    // A green that starts failing after the switch is switched back automatically.
    assert_eq!(
        admin(
            &tg,
            "POST",
            "/rollouts",
            &blue_green
                .replace("CANDIDATE", "flaky")
                .replace("yield-bg", "bg-flaky")
                .replace("min_accuracy: 0.85", "min_accuracy: 0.5")
        )
        .await
        .status,
        201
    );
    wait_validation(&tg, "bg-flaky").await;
    assert_eq!(phase(&tg, "bg-flaky").await["phase"], "monitoring");
    flaky.errors.store(100, Ordering::SeqCst);
    for _ in 0..20 {
        version(&tg).await;
    }
    tg.gateway.state.log.flush().await.unwrap();
    tg.tick(1_000).await;
    let v = phase(&tg, "bg-flaky").await;
    assert_eq!(v["phase"], "rolled_back", "{v}");
    assert_eq!(version(&tg).await, "v1");
    let events = admin(&tg, "GET", "/rollouts/yield-bg/events", "")
        .await
        .json();
    let switched = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "switched")
        .unwrap()
        .clone();
    assert!(
        switched["details"]["routing_swap_us"].as_f64().is_some(),
        "{switched}"
    );
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
