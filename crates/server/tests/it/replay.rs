//! Offline replay: a candidate judged on recorded requests (a JSONL or CSV file, or the
//! prediction log) reproduces the live shadow's report on the same requests; bad sources are
//! refused with the line that is wrong, before any call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use switchyard_core::rollout::{OutputKind, Phase, Recommendation, ShadowReport};
use switchyard_core::Role;
use switchyard_server::api::{ReplayReport, ReplayRequest, ReplaySource, Report};
use switchyard_server::backend::ModelRuntime;
use switchyard_server::client::ClientError;
use switchyard_server::parse_config;
use switchyard_server::replay::{self, ReplayError, ReplayOptions, Source};
use switchyard_store::StoreUrl;
use switchyard_wafer::WaferGenerator;

use crate::support::{repo_root, TestGateway};

const YIELD: &str = r#"
log: { capture_inputs: 1.0 }
models:
  yield:
    versions:
      v1: { onnx: models/yield_v1.onnx }
      v2: { onnx: models/yield_v2.onnx }
      v3: { onnx: models/yield_v3.onnx }
    serve: { kind: single, version: v1 }
"#;

const TESTTIME: &str = r#"
log: { capture_inputs: 1.0 }
models:
  testtime:
    versions:
      v1: { onnx: models/testtime_v1.onnx }
      v1-copy: { onnx: models/testtime_v1.onnx }
      v2: { onnx: models/testtime_v2.onnx }
    serve: { kind: single, version: v1 }
"#;

/// The backends of a configuration, built as `serve` builds them.
fn runtimes(yaml: &str) -> switchyard_core::NameMap<ModelRuntime> {
    let config = parse_config(yaml, &repo_root(), "test config").unwrap();
    replay::runtimes(&config).unwrap()
}

/// The first `n` rows of the shipped validation set: features and label.
fn validation_rows(n: usize) -> Vec<(Vec<f64>, String)> {
    let text = std::fs::read_to_string(repo_root().join("models/validation_yield.csv")).unwrap();
    text.lines()
        .skip(1)
        .take(n)
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            let (label, features) = cells.split_last().unwrap();
            (
                features.iter().map(|c| c.parse().unwrap()).collect(),
                label.to_string(),
            )
        })
        .collect()
}

fn v2_body(features: &[f64]) -> Value {
    json!({"inputs": [{"name": "input", "shape": [1, features.len()], "datatype": "FP32", "data": features}]})
}

/// Flushes the log until `n` shadow answers of `version` are logged (mirrored off the request
/// path), for at most 20 s of polling.
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

/// Runs a live shadow through the gateway on `requests` (id, body, feedback item without the
/// id), labels them all, concludes it and returns its report.
async fn live_shadow(
    tg: &TestGateway,
    spec: &str,
    name: &str,
    model: &str,
    candidate: &str,
    requests: &[(String, Value, Value)],
) -> Report {
    tg.apply(spec).await;
    let mut labels = Vec::new();
    for (id, body, label) in requests {
        let r = tg
            .client
            .post_json(
                &tg.url(&format!("/v2/models/{model}/infer")),
                &[("x-request-id", id)],
                body,
            )
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let mut item = label.clone();
        item["request_id"] = json!(id);
        labels.push(item);
    }
    let n = requests.len() as u64;
    assert_eq!(shadow_answers_logged(tg, model, candidate, n).await, n);
    let r = tg
        .client
        .post_json(&tg.url("/v1/feedback"), &[], &Value::Array(labels))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    tg.gateway.state.log.flush().await.unwrap();
    tg.tick(1_000).await;
    let view = tg.admin().rollout(name).await.unwrap();
    assert_eq!(view.phase, Phase::Completed, "{view:?}");
    tg.admin().report(name).await.unwrap()
}

/// The JSONL a recorded session becomes: one `{"id", "request", "label"|"value"}` per line.
fn write_jsonl(path: &Path, requests: &[(String, Value, Value)]) {
    let lines: Vec<String> = requests
        .iter()
        .map(|(id, body, label)| {
            let mut line = label.clone();
            line["id"] = json!(id);
            line["request"] = body.clone();
            line.to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

async fn replay_source(
    models: &switchyard_core::NameMap<ModelRuntime>,
    spec: &str,
    source: Source,
) -> ReplayReport {
    let (model, spec) = replay::shadow_spec(models, Some(spec), None, None, None).unwrap();
    let runtime = &models[&model];
    let loaded = replay::load(&source, runtime, 100_000).unwrap();
    let options = ReplayOptions {
        rate: Some(2_000.0),
        concurrency: 8,
        shadow_timeout: None,
    };
    let done = std::sync::atomic::AtomicU64::new(0);
    let report = replay::run(runtime, &spec, loaded, &options, &|n| {
        done.store(n, std::sync::atomic::Ordering::SeqCst);
    })
    .await
    .unwrap();
    assert_eq!(
        done.load(std::sync::atomic::Ordering::SeqCst),
        report.requests,
        "progress reached every request"
    );
    report
}

/// The numbers a replay must reproduce: the recommendation and its reason, and every count and
/// rate behind them.
fn assert_same(what: &str, live: &ShadowReport, replayed: &ShadowReport) {
    assert_eq!(replayed.recommendation, live.recommendation, "{what}");
    assert_eq!(replayed.reason, live.reason, "{what}");
    assert_eq!(replayed.output, live.output, "{what}");
    assert_eq!(
        (replayed.compared, replayed.labelled, replayed.agreement),
        (live.compared, live.labelled, live.agreement),
        "{what}"
    );
    assert_eq!(
        (replayed.primary_accuracy, replayed.shadow_accuracy),
        (live.primary_accuracy, live.shadow_accuracy),
        "{what}"
    );
    assert_eq!(replayed.mcnemar, live.mcnemar, "{what}");
    assert_eq!(replayed.transitions, live.transitions, "{what}");
    assert_eq!(
        (replayed.primary_error_rate, replayed.shadow_error_rate),
        (live.primary_error_rate, live.shadow_error_rate),
        "{what}"
    );
    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
        (a, b) => a == b,
    };
    assert!(
        close(replayed.primary_mae, live.primary_mae)
            && close(replayed.shadow_mae, live.shadow_mae)
            && close(replayed.p_value, live.p_value),
        "{what}: MAE {:?}/{:?} p {:?} against live {:?}/{:?} p {:?}",
        replayed.primary_mae,
        replayed.shadow_mae,
        replayed.p_value,
        live.primary_mae,
        live.shadow_mae,
        live.p_value
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_the_recorded_requests_reproduces_the_live_shadows_recommendation() {
    let n = 1_000;
    let rows = validation_rows(n);
    let requests: Vec<(String, Value, Value)> = rows
        .iter()
        .enumerate()
        .map(|(i, (features, label))| {
            (
                format!("yield-{i}"),
                v2_body(features),
                json!({"label": label.parse::<i64>().unwrap()}),
            )
        })
        .collect();
    let spec = format!(
        "name: y-shadow\nmodel: yield\nkind: shadow\nprimary: v1\ncandidate: v2\nmin_labelled: {n}\n"
    );
    let tg = TestGateway::start(YIELD).await;
    let report = live_shadow(&tg, &spec, "y-shadow", "yield", "v2", &requests).await;
    let live = report.analysis.shadow.expect("a shadow analysis").report;
    assert_eq!(live.output, OutputKind::Classification);
    assert_eq!(live.labelled, n as u64);
    // v2 is the better retrain: the live shadow promotes it.
    assert_eq!(
        live.recommendation,
        Recommendation::Promote,
        "{}",
        live.reason
    );

    let dir = tempfile::tempdir().unwrap();
    let models = runtimes(YIELD);

    // The same requests and labels as JSONL.
    let jsonl = dir.path().join("recorded.jsonl");
    write_jsonl(&jsonl, &requests);
    let from_jsonl = replay_source(
        &models,
        &spec,
        Source::Jsonl {
            path: jsonl.clone(),
        },
    )
    .await;
    assert_eq!(
        (from_jsonl.requests, from_jsonl.labelled_requests),
        (n as u64, n as u64)
    );
    assert_same("JSONL", &live, &from_jsonl.analysis.report);

    // As CSV: a request id column, the features, the label.
    let csv = dir.path().join("recorded.csv");
    let mut text =
        String::from("request_id,vdd,idd,freq,temp,die_x,die_y,leakage,ring_osc,label\n");
    for (i, (features, label)) in rows.iter().enumerate() {
        let cells: Vec<String> = features.iter().map(f64::to_string).collect();
        text.push_str(&format!("yield-{i},{},{label}\n", cells.join(",")));
    }
    std::fs::write(&csv, text).unwrap();
    let from_csv = replay_source(
        &models,
        &spec,
        Source::Csv {
            path: csv,
            label_column: None,
        },
    )
    .await;
    assert_same("CSV", &live, &from_csv.analysis.report);

    // From the log: the captured bodies with their feedback labels.
    let from_log = replay_source(
        &models,
        &spec,
        Source::Log {
            store: StoreUrl::sqlite(tg.store_path()),
            since_ms: None,
            until_ms: None,
        },
    )
    .await;
    assert_eq!((from_log.requests, from_log.skipped), (n as u64, 0));
    assert_same("log", &live, &from_log.analysis.report);

    // The admin endpoint: the log against the serving gateway's own backends, and a file on
    // its host; the rules and versions given as flags this time (the defaults, as the spec's).
    let admin = tg.admin();
    let request = |source| ReplayRequest {
        spec: None,
        model: Some("yield".into()),
        primary: Some("v1".into()),
        candidate: Some("v2".into()),
        source,
        max_rows: Some(5_000),
        rate: None,
        concurrency: Some(4),
    };
    let via_admin = admin
        .replay(&request(ReplaySource::Log {
            since_ms: None,
            until_ms: None,
        }))
        .await
        .unwrap();
    assert_same("admin, log", &live, &via_admin.analysis.report);
    let via_admin = admin
        .replay(&request(ReplaySource::Jsonl {
            path: jsonl.display().to_string(),
        }))
        .await
        .unwrap();
    assert_same("admin, JSONL", &live, &via_admin.analysis.report);
    // A replay writes nothing: the live statistics still count n shadow answers.
    assert_eq!(
        shadow_answers_logged(&tg, "yield", "v2", n as u64).await,
        n as u64
    );

    // And a regressed candidate on the same recorded file is rejected.
    let bad = replay_source(
        &models,
        "name: y3\nmodel: yield\nkind: shadow\nprimary: v1\ncandidate: v3\n",
        Source::Jsonl { path: jsonl },
    )
    .await;
    assert_eq!(
        bad.analysis.report.recommendation,
        Recommendation::Reject,
        "{}",
        bad.analysis.report.reason
    );
    tg.gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regression_replay_reports_the_paired_errors_of_the_live_shadow() {
    let n = 200;
    let mut wafers = WaferGenerator::new(23);
    let requests: Vec<(String, Value, Value)> = (0..n)
        .map(|_| {
            let die = wafers.die();
            let features: Vec<f64> = die.features.iter().map(|&x| f64::from(x)).collect();
            (
                format!("tt-{}", die.id),
                v2_body(&features),
                json!({"value": die.test_time_ms}),
            )
        })
        .collect();
    let spec = format!(
        "name: tt-shadow\nmodel: testtime\nkind: shadow\nprimary: v1\ncandidate: v2\nmin_labelled: {n}\n"
    );
    let tg = TestGateway::start(TESTTIME).await;
    let report = live_shadow(&tg, &spec, "tt-shadow", "testtime", "v2", &requests).await;
    let live = report.analysis.shadow.expect("a shadow analysis").report;
    assert_eq!(live.output, OutputKind::Regression);

    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("testtime.jsonl");
    write_jsonl(&jsonl, &requests);
    let models = runtimes(TESTTIME);
    let replayed = replay_source(
        &models,
        &spec,
        Source::Jsonl {
            path: jsonl.clone(),
        },
    )
    .await;
    let r = &replayed.analysis.report;
    assert_eq!(r.output, OutputKind::Regression);
    assert_eq!(r.labelled, n as u64);
    // v2 is about three times closer to the truth: PROMOTE on the paired t-test.
    assert_eq!(r.recommendation, Recommendation::Promote, "{}", r.reason);
    assert!(
        r.shadow_mae.unwrap() < r.primary_mae.unwrap() / 2.0,
        "{r:?}"
    );
    assert!(r.paired_t.is_some());
    assert_same("regression JSONL", &live, r);

    // The same as CSV: the label column holds the measured values (the models are in-process
    // regressors, so a label is a value).
    let csv = dir.path().join("testtime.csv");
    let mut text =
        String::from("request_id,vdd,idd,freq,temp,die_x,die_y,leakage,ring_osc,label\n");
    for (id, body, label) in &requests {
        let features: Vec<String> = body["inputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(Value::to_string)
            .collect();
        text.push_str(&format!("{id},{},{}\n", features.join(","), label["value"]));
    }
    std::fs::write(&csv, text).unwrap();
    let from_csv = replay_source(
        &models,
        &spec,
        Source::Csv {
            path: csv,
            label_column: None,
        },
    )
    .await;
    assert_same("regression CSV", &live, &from_csv.analysis.report);

    // A copy of the primary: the same errors, p = 1, NEUTRAL.
    let copy = replay_source(
        &models,
        "name: tt-copy\nmodel: testtime\nkind: shadow\nprimary: v1\ncandidate: v1-copy\n",
        Source::Jsonl { path: jsonl },
    )
    .await;
    let c = &copy.analysis.report;
    assert_eq!(c.primary_mae, c.shadow_mae);
    assert_eq!(c.p_value, Some(1.0));
    assert_eq!(c.recommendation, Recommendation::Neutral, "{}", c.reason);
    tg.gateway.shutdown().await.unwrap();
}

fn load_error(models: &switchyard_core::NameMap<ModelRuntime>, source: Source) -> String {
    match replay::load(&source, &models["yield"], 1_000) {
        Ok(loaded) => panic!("{source:?} loaded {} rows", loaded.rows.len()),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sources_are_refused_with_the_line_that_is_wrong() {
    let models = runtimes(YIELD);
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let good = v2_body(&[1.0; 8]).to_string();

    let missing = dir.path().join("nowhere.jsonl");
    let e = load_error(&models, Source::Jsonl { path: missing });
    assert!(
        e.contains("cannot read") && e.contains("nowhere.jsonl"),
        "{e}"
    );

    let broken = file(
        "broken.jsonl",
        &format!("{good}\n\n{{\"inputs\": [\n{good}\n"),
    );
    let e = load_error(&models, Source::Jsonl { path: broken });
    assert!(e.contains("broken.jsonl line 3: not valid JSON"), "{e}");

    let no_request = file("shape.jsonl", "{\"rows\": [[1, 2]]}\n");
    let e = load_error(&models, Source::Jsonl { path: no_request });
    assert!(
        e.contains("line 1") && e.contains("neither `inputs`"),
        "{e}"
    );

    let bad_tensor = file(
        "tensor.jsonl",
        "{\"inputs\": [{\"name\": \"input\", \"shape\": [1, 8], \"datatype\": \"FP32\", \"data\": [1, 2]}]}\n",
    );
    let e = load_error(&models, Source::Jsonl { path: bad_tensor });
    assert!(e.contains("tensor.jsonl line 1"), "{e}");

    let bad_label = file(
        "label.jsonl",
        &format!("{{\"request\": {good}, \"label\": {{\"a\": 1}}}}\n"),
    );
    let e = load_error(&models, Source::Jsonl { path: bad_label });
    assert!(e.contains("line 1") && e.contains("label must be"), "{e}");

    let unknown_field = file(
        "field.jsonl",
        &format!("{{\"request\": {good}, \"lable\": 1}}\n"),
    );
    let e = load_error(
        &models,
        Source::Jsonl {
            path: unknown_field,
        },
    );
    assert!(e.contains("unknown field 'lable'"), "{e}");

    let text = file("text.csv", "a,b,label\n1,2,1\n3,x,0\n");
    let e = load_error(
        &models,
        Source::Csv {
            path: text,
            label_column: None,
        },
    );
    assert!(
        e.contains("text.csv line 3: column 'b': 'x' is not a number"),
        "{e}"
    );

    let ragged = file("ragged.csv", "a,b,label\n1,2,1\n3,0\n");
    let e = load_error(
        &models,
        Source::Csv {
            path: ragged.clone(),
            label_column: None,
        },
    );
    assert!(
        e.contains("line 3: 2 cells where the header has 3 columns"),
        "{e}"
    );

    let e = load_error(
        &models,
        Source::Csv {
            path: ragged,
            label_column: Some("truth".into()),
        },
    );
    assert!(e.contains("line 1: no column named 'truth'"), "{e}");

    let empty = file("empty.jsonl", "\n\n");
    let e = load_error(&models, Source::Jsonl { path: empty });
    assert!(e.contains("holds no requests to replay"), "{e}");
    let header_only = file("header.csv", "a,b,label\n");
    let e = load_error(
        &models,
        Source::Csv {
            path: header_only,
            label_column: None,
        },
    );
    assert!(e.contains("holds no requests to replay"), "{e}");

    // A log with no store, and a store whose records kept no inputs.
    let e = load_error(
        &models,
        Source::Log {
            store: StoreUrl::sqlite(dir.path().join("absent.sqlite")),
            since_ms: None,
            until_ms: None,
        },
    );
    assert!(e.contains("no prediction log at"), "{e}");
    assert!(
        !dir.path().join("absent.sqlite").exists(),
        "nothing created"
    );

    // Unknown model, unknown version, not a shadow, flags missing.
    let spec_error = |text: Option<&str>, flags: [Option<&str>; 3]| match replay::shadow_spec(
        &models, text, flags[0], flags[1], flags[2],
    ) {
        Ok(_) => panic!("{text:?} {flags:?} accepted"),
        Err(e) => e,
    };
    let e = spec_error(None, [Some("yeild"), Some("v1"), Some("v2")]);
    assert!(
        matches!(&e, ReplayError::UnknownModel { .. }) && e.to_string().contains("known: yield"),
        "{e}"
    );
    let e = spec_error(None, [Some("yield"), Some("v1"), Some("v9")]);
    assert!(e.to_string().contains("unknown version 'v9'"), "{e}");
    let e = spec_error(None, [Some("yield"), None, Some("v2")]);
    assert!(e.to_string().contains("primary: give it"), "{e}");
    let e = spec_error(
        Some("name: c\nmodel: yield\nkind: canary\nstable: v1\ncandidate: v2\n"),
        [None; 3],
    );
    assert!(
        e.to_string().contains("a replay takes a shadow spec"),
        "{e}"
    );
    let e = spec_error(
        Some("name: s\nmodel: yield\nkind: shadow\nprimary: v1\ncandidate: v2\n"),
        [None, None, Some("v3")],
    );
    assert!(
        e.to_string().contains("'v3' given, but the spec says 'v2'"),
        "{e}"
    );

    // Bad pacing is refused before any call.
    let (_, spec) =
        replay::shadow_spec(&models, None, Some("yield"), Some("v1"), Some("v2")).unwrap();
    let one = file("one.jsonl", &format!("{good}\n"));
    for options in [
        ReplayOptions {
            rate: Some(0.0),
            ..ReplayOptions::default()
        },
        ReplayOptions {
            concurrency: 0,
            ..ReplayOptions::default()
        },
    ] {
        let loaded =
            replay::load(&Source::Jsonl { path: one.clone() }, &models["yield"], 10).unwrap();
        let e = replay::run(&models["yield"], &spec, loaded, &options, &|_| {})
            .await
            .unwrap_err();
        assert!(matches!(e, ReplayError::Options(_)), "{e}");
    }

    // Through the admin API: clear 4xx answers, and a gateway whose log captured no inputs has
    // nothing to replay.
    let tg = TestGateway::start(&YIELD.replace("capture_inputs: 1.0", "capture_inputs: 0.0")).await;
    let r = tg
        .client
        .post_json(&tg.url("/v2/models/yield/infer"), &[], &v2_body(&[1.0; 8]))
        .await;
    assert_eq!(r.status, 200);
    tg.gateway.state.log.flush().await.unwrap();
    let admin = tg.admin();
    let refused = |e: ClientError| match e {
        ClientError::Refused { status, error } => (status.as_u16(), error.code, error.message),
        other => panic!("{other}"),
    };
    let base = ReplayRequest {
        spec: None,
        model: Some("yield".into()),
        primary: Some("v1".into()),
        candidate: Some("v2".into()),
        source: ReplaySource::Log {
            since_ms: None,
            until_ms: None,
        },
        max_rows: None,
        rate: None,
        concurrency: None,
    };
    let (status, code, message) = refused(admin.replay(&base).await.unwrap_err());
    assert_eq!(
        (status, code.as_str()),
        (400, "invalid_source"),
        "{message}"
    );
    assert!(message.contains("holds no requests"), "{message}");
    let (status, code, message) = refused(
        admin
            .replay(&ReplayRequest {
                source: ReplaySource::Jsonl {
                    path: dir.path().join("broken.jsonl").display().to_string(),
                },
                ..base.clone()
            })
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (status, code.as_str()),
        (400, "invalid_source"),
        "{message}"
    );
    assert!(message.contains("line 3"), "{message}");
    let (status, _, message) = refused(
        admin
            .replay(&ReplayRequest {
                max_rows: Some(1_000_000),
                ..base.clone()
            })
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 400, "{message}");
    assert!(
        message.contains("max_rows must be in [1, 10000]"),
        "{message}"
    );
    let (status, _, message) = refused(
        admin
            .replay(&ReplayRequest {
                source: ReplaySource::Jsonl {
                    path: dir.path().join("one.jsonl").display().to_string(),
                },
                max_rows: Some(10),
                rate: Some(0.01),
                ..base.clone()
            })
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("more than the 50 s"), "{message}");
    let (status, code, message) = refused(
        admin
            .replay(&ReplayRequest {
                candidate: Some("v9".into()),
                ..base.clone()
            })
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code.as_str()), (422, "invalid_spec"), "{message}");
    tg.gateway.shutdown().await.unwrap();
}
