//! The data plane end to end: real gateway, real sockets, real SQLite, real ONNX models and
//! mock model servers on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use support::{eventually, oip_row, repo_root, MockModel, Mode, TestGateway};
use switchyard_core::Role;

/// Binomial bound: |observed − n·p| within 5 standard deviations.
fn within_binomial(observed: u64, n: u64, p: f64) -> bool {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (observed as f64 - mean).abs() <= 5.0 * sd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_are_proportional_sticky_and_ramps_only_move_keys_into_the_canary() {
    let (a, b) = (MockModel::start(0).await, MockModel::start(1).await);
    let yaml = format!(
        r#"
models:
  ab:
    routing_key: {{ header: x-user }}
    versions:
      a: {{ url: "{a}" }}
      b: {{ url: "{b}" }}
    serve: {{ kind: ab, arms: [{{ version: a, weight: 50 }}, {{ version: b, weight: 50 }}] }}
  canary:
    routing_key: {{ json_pointer: /parameters/wafer_id }}
    versions:
      stable: {{ url: "{a}" }}
      next: {{ url: "{b}" }}
    serve: {{ kind: canary, stable: stable, canary: next, weight: 20 }}
"#,
        a = a.url(),
        b = b.url()
    );
    let tg = TestGateway::start(&yaml).await;
    let n = 1_500u64;

    // A/B by header: proportional, and the same user always lands in the same arm.
    let mut arm_of = HashMap::new();
    for i in 0..n {
        let user = format!("user-{i}");
        let r = tg
            .client
            .post_json(
                &tg.url("/v2/models/ab/infer"),
                &[("x-user", &user)],
                &oip_row(&[1.0]),
            )
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        arm_of.insert(user, r.header("x-switchyard-variant"));
    }
    let in_a = arm_of.values().filter(|v| *v == "a").count() as u64;
    assert!(within_binomial(in_a, n, 0.5), "{in_a} of {n} in arm a");
    for i in (0..n).step_by(7) {
        let user = format!("user-{i}");
        let r = tg
            .client
            .post_json(
                &tg.url("/v2/models/ab/infer"),
                &[("x-user", &user)],
                &oip_row(&[1.0]),
            )
            .await;
        assert_eq!(
            r.header("x-switchyard-variant"),
            arm_of[&user],
            "{user} switched arms"
        );
        // The version header matches the arm and the answer comes from that arm's model.
        let expected_label = if arm_of[&user] == "a" { 0 } else { 1 };
        assert_eq!(r.json()["outputs"][0]["data"][0], expected_label);
    }

    // Canary by a JSON field of the body.
    let body = |wafer: u64| {
        let mut v = oip_row(&[1.0]);
        v["parameters"] = json!({ "wafer_id": format!("W{wafer}") });
        v
    };
    let mut canary_before = Vec::new();
    for w in 0..n {
        let r = tg
            .client
            .post_json(&tg.url("/v2/models/canary/infer"), &[], &body(w))
            .await;
        if r.header("x-switchyard-variant") == "canary" {
            assert_eq!(r.header("x-switchyard-model-version"), "next");
            canary_before.push(w);
        }
    }
    assert!(
        within_binomial(canary_before.len() as u64, n, 0.2),
        "{} of {n} in canary",
        canary_before.len()
    );

    // Ramp to 50% through the admin API while the table is live.
    let changed = tg
        .admin()
        .put_route(
            "canary",
            &json!({"kind": "canary", "stable": "stable", "canary": "next", "weight": 50})
                .to_string(),
        )
        .await
        .unwrap();
    assert_eq!(changed.epoch, 2);
    let mut canary_after = 0u64;
    for w in 0..n {
        let r = tg
            .client
            .post_json(&tg.url("/v2/models/canary/infer"), &[], &body(w))
            .await;
        let in_canary = r.header("x-switchyard-variant") == "canary";
        canary_after += u64::from(in_canary);
        if canary_before.contains(&w) {
            assert!(
                in_canary,
                "wafer W{w} moved back from canary to stable when the canary grew"
            );
        }
    }
    assert!(
        within_binomial(canary_after, n, 0.5),
        "{canary_after} of {n} in canary after ramp"
    );

    // Requests without a key are split at random, still in proportion.
    let mut keyless_a = 0;
    for _ in 0..600 {
        let r = tg
            .client
            .post_json(&tg.url("/v2/models/ab/infer"), &[], &oip_row(&[1.0]))
            .await;
        keyless_a += u64::from(r.header("x-switchyard-variant") == "a");
    }
    assert!(
        within_binomial(keyless_a, 600, 0.5),
        "{keyless_a} of 600 keyless requests in a"
    );
    tg.gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_shadow_does_not_delay_or_change_the_primary() {
    let primary = MockModel::start(1).await;
    let hang = MockModel::start(0).await;
    hang.set(Mode::Hang);
    let yaml = format!(
        r#"
shadow: {{ timeout_ms: 600000 }}
models:
  m:
    versions:
      p: {{ url: "{}" }}
      h: {{ url: "{}", timeout_ms: 600000 }}
    serve: {{ kind: shadow, primary: p, shadows: [{{ version: h }}] }}
"#,
        primary.url(),
        hang.url()
    );
    let tg = TestGateway::start(&yaml).await;
    let direct = tg
        .client
        .post_json(
            &format!("{}/v2/models/m/infer", primary.url()),
            &[],
            &oip_row(&[3.0]),
        )
        .await;
    for _ in 0..20 {
        let r = tg
            .client
            .post_json(&tg.url("/v2/models/m/infer"), &[], &oip_row(&[3.0]))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body, direct.body,
            "the primary's answer must pass through unchanged"
        );
    }
    // Every response came back while the shadow calls are still hanging (their timeout is ten
    // minutes): the primary never waited for them.
    assert!(
        eventually(Duration::from_secs(10), || hang.calls() == 20).await,
        "shadow calls made: {}",
        hang.calls()
    );
    tg.gateway.state.log.flush().await.unwrap();
    let agg = tg.gateway.state.log.aggregates().lock().clone();
    assert_eq!(agg.variant("m", "p", Role::Serving, |_| true).requests, 20);
    assert_eq!(
        agg.variant("m", "h", Role::Shadow, |_| true).requests,
        0,
        "no shadow call has finished"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_shadows_are_logged_and_the_breaker_opens_and_recovers() {
    let primary = MockModel::start(1).await;
    let failing = MockModel::start(0).await;
    let garbage = MockModel::start(0).await;
    let slow = MockModel::start(0).await;
    failing.set(Mode::Fail);
    garbage.set(Mode::Garbage);
    slow.set_delay(5_000);
    let yaml = format!(
        r#"
shadow: {{ timeout_ms: 100, breaker_failures: 3, breaker_open_ms: 1000, concurrency: 8 }}
models:
  m:
    versions:
      p: {{ url: "{}" }}
      fail: {{ url: "{}" }}
      junk: {{ url: "{}" }}
      slow: {{ url: "{}" }}
    serve: {{ kind: shadow, primary: p, shadows: [{{ version: fail }}, {{ version: junk }}, {{ version: slow }}] }}
"#,
        primary.url(),
        failing.url(),
        garbage.url(),
        slow.url()
    );
    let tg = TestGateway::start(&yaml).await;
    let direct = tg
        .client
        .post_json(
            &format!("{}/v2/models/m/infer", primary.url()),
            &[],
            &oip_row(&[3.0]),
        )
        .await;
    for _ in 0..30 {
        let r = tg
            .client
            .post_json(&tg.url("/v2/models/m/infer"), &[], &oip_row(&[3.0]))
            .await;
        assert_eq!((r.status, &r.body), (200, &direct.body));
        assert_eq!(r.header("x-switchyard-model-version"), "p");
    }
    let metrics = || async {
        String::from_utf8(tg.client.get(&tg.url("/metrics")).await.body.to_vec()).unwrap()
    };
    // Each failing shadow trips its breaker after 3 failures; later calls are skipped.
    // Polled for up to 30 s: on a loaded machine the timeouts of the slow shadow come late.
    let mut text = String::new();
    for _ in 0..1500 {
        text = metrics().await;
        if ["fail", "junk", "slow"].iter().all(|v| text.contains(&format!("switchyard_shadow_skipped_total{{model=\"m\",version=\"{v}\",reason=\"breaker_open\"}}"))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for v in ["fail", "junk", "slow"] {
        assert!(text.contains(&format!("switchyard_shadow_skipped_total{{model=\"m\",version=\"{v}\",reason=\"breaker_open\"}}")), "{v}: {text}");
    }
    assert!(
        failing.calls() < 30,
        "the breaker should have stopped calls ({} made)",
        failing.calls()
    );
    tg.gateway.state.log.flush().await.unwrap();
    {
        let agg = tg.gateway.state.log.aggregates().lock().clone();
        for v in ["fail", "junk", "slow"] {
            let s = agg.variant("m", v, Role::Shadow, |_| true);
            assert!(
                s.requests >= 3 && s.errors == s.requests,
                "{v}: {} requests, {} errors",
                s.requests,
                s.errors
            );
        }
        let p = agg.variant("m", "p", Role::Serving, |_| true);
        assert_eq!(
            (p.requests, p.errors),
            (30, 0),
            "shadow failures never count against the primary"
        );
    }
    let outcomes = {
        let conn = rusqlite::Connection::open(tg.store_path()).unwrap();
        let mut stmt = conn
            .prepare("SELECT version, outcome FROM predictions WHERE role = 'shadow'")
            .unwrap();
        let rows: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    };
    assert!(outcomes
        .iter()
        .any(|(v, o)| v == "fail" && o == "upstream_status"));
    assert!(outcomes
        .iter()
        .any(|(v, o)| v == "junk" && o == "malformed_response"));
    assert!(outcomes.iter().any(|(v, o)| v == "slow" && o == "timeout"));

    // The failing shadow recovers: after the cool-down a probe succeeds and the breaker closes.
    failing.set(Mode::Ok);
    let before = failing.calls();
    let mut closed = false;
    for _ in 0..300 {
        tg.client
            .post_json(&tg.url("/v2/models/m/infer"), &[], &oip_row(&[3.0]))
            .await;
        if metrics()
            .await
            .contains("switchyard_shadow_breaker_open{model=\"m\",version=\"fail\"} 0")
        {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "breaker never closed again");
    assert!(failing.calls() > before);
}

/// The class label a response carries (first output's first datum).
fn class_of(r: &support::Reply) -> String {
    let v = &r.json()["outputs"][0]["data"][0];
    v.as_i64()
        .map(|i| i.to_string())
        .unwrap_or_else(|| v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_out_of_order_join_by_id_and_aggregates_match_a_recount() {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("models/fixtures/yield_v1.json")).unwrap(),
    )
    .unwrap();
    let v2_fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("models/fixtures/yield_v2.json")).unwrap(),
    )
    .unwrap();
    let inputs = fixture["inputs"].as_array().unwrap().clone();
    let v1_pred: Vec<String> = fixture["sklearn"]["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let v2_pred: Vec<String> = v2_fixture["sklearn"]["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let yaml = r#"
models:
  yield:
    routing_key: { header: x-wafer }
    versions:
      v1: { onnx: models/yield_v1.onnx }
      v2: { onnx: models/yield_v2.onnx }
    serve: { kind: shadow, primary: v1, shadows: [{ version: v2, sample: 100 }] }
"#;
    let tg = TestGateway::start(yaml).await;
    for (i, row) in inputs.iter().enumerate() {
        let row: Vec<f64> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let id = format!("req-{i}");
        let r = tg
            .client
            .post_json(
                &tg.url("/v2/models/yield/infer"),
                &[("x-request-id", &id), ("x-wafer", &format!("W{i}"))],
                &oip_row(&row),
            )
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("x-request-id"), id);
        assert_eq!(
            class_of(&r),
            v1_pred[i],
            "row {i}: switchyard's answer differs from scikit-learn's"
        );
    }
    // Wait until every shadow answered (they run after the responses).
    assert!(
        eventually(Duration::from_secs(30), || {
            tg.gateway
                .state
                .log
                .aggregates()
                .lock()
                .variant("yield", "v2", Role::Shadow, |_| true)
                .requests
                == inputs.len() as u64
        })
        .await
    );
    // An arbitrary truth, known to the test: 0 on multiples of 3, else 1.
    let truth = |i: usize| if i.is_multiple_of(3) { "0" } else { "1" };
    // Labels arrive late and in reverse order, split between a JSON array and JSON lines, with
    // duplicates, an unknown id and an invalid item.
    let mut first: Vec<Value> = (100..inputs.len()).rev().map(|i| json!({"request_id": format!("req-{i}"), "label": truth(i).parse::<i64>().unwrap()})).collect();
    first.push(json!({"request_id": "req-150", "label": 0}));
    first.push(json!({"request_id": "nobody", "label": 1}));
    first.push(json!({"request_id": "req-7", "value": "NaN"}));
    let r = tg
        .client
        .post_json(&tg.url("/v1/feedback"), &[], &Value::Array(first))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(body["accepted"], 100);
    assert_eq!(body["duplicates"], 1);
    assert_eq!(body["unknown"], json!(["nobody"]));
    assert_eq!(body["invalid"][0]["index"], 102);
    let lines: String = (0..100)
        .rev()
        .map(|i| {
            format!(
                "{}\n",
                json!({"request_id": format!("req-{i}"), "label": truth(i)})
            )
        })
        .collect();
    let r = tg
        .client
        .send(
            "POST",
            &tg.url("/v1/feedback"),
            &[("content-type", "application/x-ndjson")],
            lines,
        )
        .await;
    assert_eq!(
        r.json()["accepted"],
        100,
        "{}",
        String::from_utf8_lossy(&r.body)
    );

    // What the counts must be, from scikit-learn's predictions and the truth.
    let (mut agree, mut b, mut c, mut v1_right, mut v2_right) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for i in 0..inputs.len() {
        let (p, s, t) = (&v1_pred[i], &v2_pred[i], truth(i));
        agree += u64::from(p == s);
        v1_right += u64::from(p == t);
        v2_right += u64::from(s == t);
        match (p == t, s == t) {
            (true, false) => b += 1,
            (false, true) => c += 1,
            _ => {}
        }
    }
    let stats = tg.admin().model_stats("yield", None).await.unwrap();
    let pair = &stats.pairs[0];
    assert_eq!(pair.compared, inputs.len() as u64);
    assert_eq!(pair.agreement, Some(agree as f64 / inputs.len() as f64));
    assert_eq!(
        (pair.primary_only_correct, pair.shadow_only_correct),
        (b, c)
    );
    let mcnemar = switchyard_stats::mcnemar::mcnemar(b, c);
    assert_eq!(pair.mcnemar.p_value, mcnemar.p_value);
    let variant = |version: &str| {
        stats
            .variants
            .iter()
            .find(|v| v.version == version)
            .unwrap()
            .stats
            .clone()
    };
    assert_eq!(variant("v1").correct, v1_right);
    assert_eq!(variant("v2").correct, v2_right);

    // The incremental aggregates equal a recount from the log on disk.
    let incremental = tg.gateway.state.log.aggregates().lock().clone();
    let path = tg.store_path();
    tg.gateway.shutdown().await.unwrap();
    let recount =
        switchyard_store::rebuild_aggregates(&switchyard_store::open_reader(&path).unwrap())
            .unwrap();
    assert_eq!(recount.pairs, incremental.pairs);
    assert_eq!(recount.series, incremental.series);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_of_a_concurrent_burst_is_logged() {
    // The default: connections on the data-plane threads (one per tokio worker).
    concurrent_burst_is_logged("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_of_a_burst_is_logged_on_three_data_plane_threads_or_on_the_shared_runtime()
{
    concurrent_burst_is_logged("runtime: { data_plane_threads: 3 }").await;
    concurrent_burst_is_logged("runtime: { data_plane_threads: 0 }").await;
}

/// 16 connections × 125 requests with a 50% shadow: every response answered 200 and logged,
/// every mirror logged, nothing dropped, the log complete after a graceful shutdown.
async fn concurrent_burst_is_logged(runtime: &str) {
    let primary = MockModel::start(1).await;
    let shadow = MockModel::start(0).await;
    let yaml = format!(
        r#"
{runtime}
log: {{ queue_capacity: 100000, batch_size: 512 }}
shadow: {{ queue_capacity: 100000, concurrency: 32 }}
models:
  m:
    versions:
      p: {{ url: "{}" }}
      s: {{ url: "{}" }}
    serve: {{ kind: shadow, primary: p, shadows: [{{ version: s, sample: 50 }}] }}
"#,
        primary.url(),
        shadow.url()
    );
    let tg = TestGateway::start(&yaml).await;
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let client = tg.client.clone();
            let url = tg.url("/v2/models/m/infer");
            tokio::spawn(async move {
                let mut ok = 0u64;
                for i in 0..125 {
                    let r = client
                        .post_json(
                            &url,
                            &[("x-request-id", &format!("t{t}-{i}"))],
                            &oip_row(&[1.0, 2.0]),
                        )
                        .await;
                    ok += u64::from(r.status == 200);
                }
                ok
            })
        })
        .collect();
    let mut responses = 0;
    for t in tasks {
        responses += t.await.unwrap();
    }
    assert_eq!(responses, 2_000);
    // Shadows finish after the responses; wait for the mock to have answered them all.
    let state = tg.gateway.state.clone();
    assert!(
        eventually(Duration::from_secs(30), || {
            state
                .log
                .aggregates()
                .lock()
                .variant("m", "s", Role::Shadow, |_| true)
                .requests
                == shadow.calls()
        })
        .await
    );
    state.log.flush().await.unwrap();
    let shadow_calls = shadow.calls();
    assert!(
        within_binomial(shadow_calls, 2_000, 0.5),
        "{shadow_calls} mirrored at a 50% sample"
    );
    let dropped = state
        .log
        .stats()
        .dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(dropped, 0);
    let path = tg.store_path();
    tg.gateway.shutdown().await.unwrap();
    let records =
        switchyard_store::count_records(&switchyard_store::open_reader(&path).unwrap()).unwrap();
    assert_eq!(
        records,
        responses + shadow_calls,
        "log records must equal responses plus shadow calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_4xx_and_never_count_against_a_model() {
    let yaml = r#"
limits: { max_body_bytes: 2048 }
models:
  yield:
    versions:
      v1: { onnx: models/yield_v1.onnx }
    serve: { kind: single, version: v1 }
"#;
    let tg = TestGateway::start(yaml).await;
    let url = tg.url("/v2/models/yield/infer");
    let good = oip_row(&[1.0, 50.0, 2.0, 40.0, 1.0, 2.0, 1.0, 1000.0]);
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "invalid json",
            vec![("content-type", "application/json")],
            "{\"inputs\": [".into(),
            400,
            "invalid_json",
        ),
        (
            "not an object",
            vec![("content-type", "application/json")],
            "[1, 2]".into(),
            400,
            "invalid_request",
        ),
        (
            "wrong content type",
            vec![("content-type", "text/plain")],
            good.to_string(),
            415,
            "unsupported_media_type",
        ),
        (
            "oversized",
            vec![("content-type", "application/json")],
            format!("{{\"pad\": \"{}\"}}", "x".repeat(4096)),
            413,
            "body_too_large",
        ),
        (
            "wrong width",
            vec![("content-type", "application/json")],
            oip_row(&[1.0, 2.0, 3.0]).to_string(),
            400,
            "",
        ),
        (
            "no tensor",
            vec![("content-type", "application/json")],
            "{\"inputs\": []}".into(),
            400,
            "",
        ),
    ];
    for (what, headers, body, status, code) in cases {
        let r = tg.client.send("POST", &url, &headers, body).await;
        assert_eq!(
            r.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        // The inference protocol's error form: `error` is the message.
        let json = r.json();
        assert!(
            json["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {json}"
        );
        if !code.is_empty() {
            assert_eq!(json["code"], code, "{what}");
        }
        assert!(
            !r.header("x-request-id").is_empty(),
            "{what}: no request id"
        );
    }
    let r = tg
        .client
        .post_json(&tg.url("/v2/models/nope/infer"), &[], &good)
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str().unwrap()),
        (404, "unknown_model")
    );
    let r = tg
        .client
        .post_json(
            &tg.url("/v1/models/yield"),
            &[],
            &json!({"instances": [[1.0]]}),
        )
        .await;
    assert_eq!(r.status, 404);
    // A good request still works, in both protocols.
    let r = tg.client.post_json(&url, &[], &good).await;
    assert_eq!(r.status, 200);
    let r = tg
        .client
        .post_json(
            &tg.url("/v1/models/yield:predict"),
            &[],
            &json!({"instances": [[1.0, 50.0, 2.0, 40.0, 1.0, 2.0, 1.0, 1000.0]]}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.json()["predictions"].is_array());

    tg.gateway.state.log.flush().await.unwrap();
    let s = tg
        .gateway
        .state
        .log
        .aggregates()
        .lock()
        .variant("yield", "v1", Role::Serving, |_| true);
    assert_eq!(s.errors, 0, "client mistakes counted against the model");
    let metrics =
        String::from_utf8(tg.client.get(&tg.url("/metrics")).await.body.to_vec()).unwrap();
    for reason in [
        "invalid_json",
        "unsupported_media_type",
        "body_too_large",
        "unknown_model",
    ] {
        assert!(
            metrics.contains(&format!(
                "switchyard_rejected_requests_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_failures_become_502_and_504_and_count_against_the_version() {
    let fail = MockModel::start(0).await;
    let junk = MockModel::start(0).await;
    let hang = MockModel::start(0).await;
    fail.set(Mode::Fail);
    junk.set(Mode::Garbage);
    hang.set(Mode::Hang);
    // A port with nothing listening: bind, read, close.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // A server that promises 1000 bytes of body, sends 10 and closes the connection.
    let cut = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for sock in l.incoming() {
                let Ok(mut sock) = sock else { return };
                let mut buf = vec![0u8; 4096];
                let _ = sock.read(&mut buf);
                let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"outputs\"");
            }
        });
        addr
    };
    let yaml = format!(
        r#"
models:
  fail: {{ versions: {{ v: {{ url: "{}" }} }}, serve: {{ kind: single, version: v }} }}
  junk: {{ versions: {{ v: {{ url: "{}" }} }}, serve: {{ kind: single, version: v }} }}
  hang: {{ versions: {{ v: {{ url: "{}", timeout_ms: 150 }} }}, serve: {{ kind: single, version: v }} }}
  down: {{ versions: {{ v: {{ url: "http://{}" }} }}, serve: {{ kind: single, version: v }} }}
  reset: {{ versions: {{ v: {{ url: "http://{}" }} }}, serve: {{ kind: single, version: v }} }}
"#,
        fail.url(),
        junk.url(),
        hang.url(),
        closed,
        cut
    );
    let tg = TestGateway::start(&yaml).await;
    for (model, status, code) in [
        ("fail", 502, "upstream_error"),
        ("junk", 502, "upstream_malformed"),
        ("hang", 504, "upstream_timeout"),
        ("down", 502, "upstream_unreachable"),
        ("reset", 502, "upstream_unreachable"),
    ] {
        let r = tg
            .client
            .post_json(
                &tg.url(&format!("/v2/models/{model}/infer")),
                &[],
                &oip_row(&[1.0]),
            )
            .await;
        assert_eq!(
            r.status,
            status,
            "{model}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["code"], code, "{model}");
        assert_eq!(r.header("x-switchyard-model-version"), "v");
    }
    tg.gateway.state.log.flush().await.unwrap();
    let agg = tg.gateway.state.log.aggregates().lock().clone();
    for model in ["fail", "junk", "hang", "down", "reset"] {
        let s = agg.variant(model, "v", Role::Serving, |_| true);
        assert_eq!((s.requests, s.errors), (1, 1), "{model}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_the_token_and_health_endpoints_answer() {
    let m = MockModel::start(1).await;
    let yaml = format!("models:\n  m:\n    versions: {{ a: {{ url: \"{0}\" }}, b: {{ url: \"{0}\" }} }}\n    serve: {{ kind: single, version: a }}\n", m.url());
    let tg = TestGateway::start_with_token(&yaml, Some("s3cret-token")).await;
    let put = |auth: Option<&'static str>, body: Value| {
        let client = tg.client.clone();
        let url = tg.url("/admin/v1/routes/m");
        async move {
            let mut headers = vec![("content-type", "application/json")];
            if let Some(a) = auth {
                headers.push(("authorization", a));
            }
            client.send("PUT", &url, &headers, body.to_string()).await
        }
    };
    let to_b = json!({"kind": "single", "version": "b"});
    assert_eq!(put(None, to_b.clone()).await.status, 401);
    assert_eq!(put(Some("Bearer wrong"), to_b.clone()).await.status, 401);
    let bad = put(Some("Bearer s3cret-token"), json!({"kind": "ab", "arms": [{"version": "a", "weight": 70}, {"version": "zzz", "weight": 70}]})).await;
    assert_eq!(bad.status, 422);
    let msg = bad.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("unknown version 'zzz'") && msg.contains("sum to 14000"),
        "{msg}"
    );
    assert_eq!(put(Some("Bearer s3cret-token"), to_b).await.status, 200);
    let r = tg
        .client
        .post_json(&tg.url("/v2/models/m/infer"), &[], &oip_row(&[1.0]))
        .await;
    assert_eq!(
        r.header("x-switchyard-model-version"),
        "b",
        "the swapped table serves the next request"
    );
    assert_eq!(tg.client.get(&tg.url("/healthz")).await.status, 200);
    let ready = tg.client.get(&tg.url("/readyz")).await;
    assert_eq!(
        (ready.status, ready.json()["ready"].as_bool()),
        (200, Some(true))
    );
}

// ---------------------------------------------------------------------------------------------
// The Open Inference Protocol's REST surface: what a standard OIP client calls besides infer.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oip_health_readiness_and_metadata_answer_as_the_protocol_says() {
    let mock = MockModel::start(1).await;
    // A port nothing listens on: the backend of a model that is down.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let yaml = format!(
        r#"
models:
  yield:
    versions:
      v1: {{ onnx: models/yield_v1.onnx }}
      v2: {{ onnx: models/yield_v2.onnx }}
    serve: {{ kind: single, version: v1 }}
  remote:
    versions:
      a: {{ url: "{}" }}
    serve: {{ kind: single, version: a }}
  down:
    versions:
      a: {{ url: "http://{closed}", timeout_ms: 500 }}
    serve: {{ kind: single, version: a }}
"#,
        mock.url()
    );
    let tg = TestGateway::start(&yaml).await;
    let get = |path: &str| {
        let (client, url) = (tg.client.clone(), tg.url(path));
        async move { client.get(&url).await }
    };

    let r = get("/v2").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "switchyard");
    assert!(r.json()["extensions"].is_array());
    assert_eq!(get("/v2/health/live").await.status, 200);
    // One model is down: the server is not ready, and says which model.
    let r = get("/v2/health/ready").await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["not_ready"], json!(["down"]));
    assert_eq!(get("/v2/models/yield/ready").await.status, 200);
    assert_eq!(get("/v2/models/remote/ready").await.status, 200);
    assert_eq!(get("/v2/models/down/ready").await.status, 400);
    assert_eq!(get("/v2/models/yield/versions/v2/ready").await.status, 200);
    // A failing backend is not ready either.
    mock.set(Mode::Fail);
    assert_eq!(get("/v2/models/remote/ready").await.status, 400);
    mock.set(Mode::Ok);
    // KServe v1's readiness.
    let r = get("/v1/models/yield").await;
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"name": "yield", "ready": true}))
    );
    assert_eq!(get("/v1/models/down").await.status, 503);

    // Metadata from the ONNX model: its features and outputs.
    let r = get("/v2/models/yield").await;
    assert_eq!(r.status, 200);
    let m = r.json();
    assert_eq!(m["name"], "yield");
    assert_eq!(m["versions"], json!(["v1", "v2"]));
    assert_eq!(
        m["inputs"],
        json!([{"name": "input", "datatype": "FP32", "shape": [-1, 8]}])
    );
    assert_eq!(m["outputs"][1]["name"], "probabilities");
    assert_eq!(m["outputs"][1]["shape"], json!([-1, 2]));
    // From the backend's own metadata route, under the gateway's name.
    let m = get("/v2/models/remote/versions/a").await.json();
    assert_eq!(
        (m["name"].as_str(), m["platform"].as_str()),
        (Some("remote"), Some("mock"))
    );
    assert_eq!(m["inputs"][0]["name"], "x");

    // Errors in the protocol's form: `error` is a string.
    for (path, code) in [
        ("/v2/models/nope", "unknown_model"),
        ("/v2/models/nope/ready", "unknown_model"),
        ("/v2/models/yield/versions/zzz", "unknown_version"),
        ("/v2/models/yield/versions/zzz/ready", "unknown_version"),
        ("/v2/no/such/route", "not_found"),
    ] {
        let r = get(path).await;
        assert_eq!(r.status, 404, "{path}");
        let e = r.json();
        assert!(
            e["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{path}: {e}"
        );
        assert_eq!(e["code"], code, "{path}");
    }
    // The admin API keeps its own error form.
    let r = get("/admin/v1/no/such/route").await;
    assert_eq!(r.json()["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_version_serves_and_is_logged_outside_every_split() {
    let yaml = r#"
models:
  yield:
    versions:
      v1: { onnx: models/yield_v1.onnx }
      v2: { onnx: models/yield_v2.onnx }
    serve: { kind: shadow, primary: v1, shadows: [{ version: v2, sample: 100 }] }
"#;
    let tg = TestGateway::start(yaml).await;
    let row = oip_row(&[1.0, 50.0, 2.0, 40.0, 1.0, 2.0, 1.0, 1000.0]);
    let r = tg
        .client
        .post_json(
            &tg.url("/v2/models/yield/versions/v2/infer"),
            &[("x-request-id", "pinned-1")],
            &row,
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-model-version"), "v2");
    assert_eq!(r.header("x-switchyard-variant"), "pinned");
    let r = tg
        .client
        .post_json(&tg.url("/v2/models/yield/versions/v9/infer"), &[], &row)
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (404, Some("unknown_version"))
    );
    tg.gateway.state.log.flush().await.unwrap();
    let agg = tg.gateway.state.log.aggregates().lock().clone();
    let pinned: Vec<_> = agg
        .series
        .keys()
        .filter(|k| k.variant == "pinned")
        .map(|k| (k.version.as_str(), k.role))
        .collect();
    assert_eq!(pinned, [("v2", Role::Serving)], "logged as pinned");
    // No shadow copy of a pinned request.
    assert!(
        agg.series.keys().all(|k| k.role != Role::Shadow),
        "{:?}",
        agg.series.keys()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tensor_declarations_are_refused_naming_the_input_and_never_counted() {
    let yaml = r#"
models:
  yield:
    versions:
      v1: { onnx: models/yield_v1.onnx }
    serve: { kind: single, version: v1 }
"#;
    let tg = TestGateway::start(yaml).await;
    let url = tg.url("/v2/models/yield/infer");
    let eight = json!([1.0, 50.0, 2.0, 40.0, 1.0, 2.0, 1.0, 1000.0]);
    let tensor = |shape: Value, datatype: &str, data: Value| json!({"inputs": [{"name": "features", "shape": shape, "datatype": datatype, "data": data}]});
    let cases = [
        (
            "too few values",
            tensor(json!([2, 8]), "FP32", eight.clone()),
            "needs 16 values, data holds 8",
        ),
        (
            "a wildcard shape",
            tensor(json!([-1, 8]), "FP32", eight.clone()),
            "negative dimension",
        ),
        (
            "an absurd shape",
            tensor(json!([1_000_000_000u64, 8]), "FP32", eight.clone()),
            "declares more than 4294967296 elements",
        ),
        (
            "an overflowing shape",
            tensor(json!([u64::MAX, 8]), "FP32", eight.clone()),
            "integers",
        ),
        (
            "an unknown datatype",
            tensor(json!([1, 8]), "QQQ", eight.clone()),
            "unknown datatype 'QQQ'",
        ),
        (
            "strings as FP32",
            tensor(json!([1, 2]), "FP32", json!(["a", "b"])),
            "FP32 data must hold numbers",
        ),
        (
            "numbers as BYTES",
            tensor(json!([2]), "BYTES", json!([1, 2])),
            "BYTES data must hold strings",
        ),
        (
            "a nested shape mismatch",
            tensor(json!([1, 8]), "FP32", json!([[1.0, 2.0], [3.0]])),
            "needs 8 values, data holds 3",
        ),
        (
            "no shape",
            json!({"inputs": [{"name": "features", "datatype": "FP32", "data": [1.0]}]}),
            "needs a \"shape\"",
        ),
        (
            "no name",
            json!({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1.0]}]}),
            "inputs[0] needs a \"name\"",
        ),
        (
            "binary data",
            json!({"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32", "parameters": {"binary_data_size": 32}}]}),
            "no Inference-Header-Content-Length",
        ),
    ];
    for (what, body, says) in cases {
        let r = tg.client.post_json(&url, &[], &body).await;
        assert_eq!(
            r.status,
            400,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let e = r.json();
        let message = e["error"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{what}: {message}");
        if what != "no name" {
            assert!(
                message.contains("'features'"),
                "{what} names the input: {message}"
            );
        }
        assert_eq!(e["code"], "invalid_tensor", "{what}");
    }
    // Nested data of the right size and a good request still work.
    let nested = tensor(json!([2, 8]), "FP32", json!([eight.clone(), eight.clone()]));
    let r = tg.client.post_json(&url, &[], &nested).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    tg.gateway.state.log.flush().await.unwrap();
    let s = tg
        .gateway
        .state
        .log
        .aggregates()
        .lock()
        .variant("yield", "v1", Role::Serving, |_| true);
    assert_eq!(
        (s.requests, s.errors),
        (1, 0),
        "refusals never reach the model's numbers"
    );
}

/// A bare HTTP/1.1 model server on a raw socket that counts its connections, answers every
/// request with a one-label OIP answer naming the request's `data[0]`, and either keeps the
/// connection open or closes it after each answer (`Connection: close`).
async fn raw_backend(mode: Framing) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let close_each = matches!(mode, Framing::CloseEach | Framing::UntilClose);
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = std::sync::Arc::new(AtomicU64::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut inferred = false;
                loop {
                    // One request: the head, then content-length bytes of body.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < head_end + length {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let close = if close_each {
                        "connection: close\r\n"
                    } else {
                        ""
                    };
                    // Origin-form targets only, as uvicorn (MLServer) expects.
                    let response = if head.starts_with("post /") {
                        // The connections that carried inference are the ones counted (the
                        // gateway's start-up metadata question comes on its own).
                        if !inferred {
                            inferred = true;
                            counted.fetch_add(1, Ordering::SeqCst);
                        }
                        let body: Value =
                            serde_json::from_slice(&buf[head_end..head_end + length]).unwrap();
                        let label = body["inputs"][0]["data"][0].as_f64().unwrap() as i64;
                        let answer = json!({"outputs": [{"name": "label", "shape": [1], "datatype": "INT64", "data": [label]}]}).to_string();
                        match mode {
                            Framing::KeepOpen | Framing::CloseEach => format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{close}\r\n{answer}",
                                answer.len()
                            ),
                            // Two chunks (one with an extension) and a trailer field.
                            Framing::Chunked => {
                                let (a, b) = answer.split_at(answer.len() / 2);
                                format!(
                                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
                                     {:x}\r\n{a}\r\n{:X};ext=1\r\n{b}\r\n0\r\nx-trailer: t\r\n\r\n",
                                    a.len(),
                                    b.len()
                                )
                            }
                            // No length: the body ends when the connection does.
                            Framing::UntilClose => format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{answer}"
                            ),
                        }
                    } else {
                        format!("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n{close}\r\n")
                    };
                    buf.drain(..head_end + length);
                    if stream.write_all(response.as_bytes()).await.is_err() || close_each {
                        return;
                    }
                }
            });
        }
    });
    (url, connections)
}

/// How `raw_backend` frames its answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `content-length`, connection kept open.
    KeepOpen,
    /// `content-length` and `connection: close`, then closes.
    CloseEach,
    /// `transfer-encoding: chunked`, connection kept open.
    Chunked,
    /// Neither: the body runs until the backend closes the connection.
    UntilClose,
}

/// The data plane's own backend connections (`conn_pool`): a backend that keeps connections
/// open gets at most one per data-plane thread for requests sent one after another, whether
/// its answers have a length or are chunked; one that closes each connection after its answer
/// (saying so, or ending a body that has no length) gets a fresh connection for every request
/// and no request fails; concurrent requests each get their own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_connections_are_reused_and_a_closed_one_is_replaced() {
    use std::sync::atomic::Ordering;
    for mode in [
        Framing::KeepOpen,
        Framing::CloseEach,
        Framing::Chunked,
        Framing::UntilClose,
    ] {
        let close_each = matches!(mode, Framing::CloseEach | Framing::UntilClose);
        let (url, connections) = raw_backend(mode).await;
        let yaml = format!(
            r#"
runtime: {{ data_plane_threads: 2 }}
models:
  m:
    task: classification
    versions:
      v1: {{ url: "{url}" }}
    serve: {{ kind: single, version: v1 }}
"#
        );
        let tg = TestGateway::start(&yaml).await;
        // One client connection, one after another.
        for i in 0..30 {
            let r = tg
                .client
                .post_json(&tg.url("/v2/models/m/infer"), &[], &oip_row(&[i as f64]))
                .await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            let answer: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(answer["outputs"][0]["data"][0], i, "{mode:?}");
        }
        let opened = connections.load(Ordering::SeqCst);
        if close_each {
            assert_eq!(opened, 30, "a closed connection is never reused");
        } else {
            // The test's client may open a second connection (its pool races a new connect
            // with the return of the idle one), landing on the other data-plane thread.
            assert!(
                (1..=2).contains(&opened),
                "{opened} backend connections for 30 requests: at most one per thread"
            );
        }
        // Concurrent: 8 client connections, each answer its own.
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let client = tg.client.clone();
                let url = tg.url("/v2/models/m/infer");
                tokio::spawn(async move {
                    for i in 0..25 {
                        let x = 1000 * (t + 1) + i;
                        let r = client.post_json(&url, &[], &oip_row(&[x as f64])).await;
                        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                        let answer: Value = serde_json::from_slice(&r.body).unwrap();
                        assert_eq!(answer["outputs"][0]["data"][0], x);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        tg.gateway.shutdown().await.unwrap();
    }
}

/// Reads one answer from a raw connection: status, head (lowercased), body (by its
/// `content-length`). Bytes after it stay in `buf`.
async fn read_raw_answer(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> (u16, String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed before an answer; read {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed inside an answer");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    (status, head, body)
}

/// The data plane's own HTTP/1.1 loop (`hot_http1`) on a raw client connection: pipelined
/// inference requests are answered in order; a request it does not serve (another route, a
/// chunked body) hands the connection to hyper, which answers that one and every later one on
/// it; `connection: close` is honoured; a head over the limit is still answered 431.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hot_loop_answers_pipelined_requests_in_order_and_hands_the_rest_to_hyper() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (url, _) = raw_backend(Framing::KeepOpen).await;
    let yaml = format!(
        r#"
runtime: {{ data_plane_threads: 2 }}
limits: {{ max_header_bytes: 16384 }}
models:
  m:
    task: classification
    versions:
      v1: {{ url: "{url}" }}
    serve: {{ kind: single, version: v1 }}
"#
    );
    let tg = TestGateway::start(&yaml).await;
    let addr = tg.url("").trim_start_matches("http://").to_string();
    let infer = |x: f64, extra: &str| {
        let body = oip_row(&[x]).to_string();
        format!(
            "POST /v2/models/m/infer HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n{extra}\r\n{body}",
            body.len()
        )
    };
    let label = |body: &[u8]| -> f64 {
        let v: Value = serde_json::from_slice(body).unwrap();
        v["outputs"][0]["data"][0].as_f64().unwrap()
    };

    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = Vec::new();
    // Three requests in one write: three answers, in order.
    let three = format!("{}{}{}", infer(1.0, ""), infer(2.0, ""), infer(3.0, ""));
    s.write_all(three.as_bytes()).await.unwrap();
    for x in [1.0, 2.0, 3.0] {
        let (status, head, body) = read_raw_answer(&mut s, &mut buf).await;
        assert_eq!(status, 200, "{head}");
        assert!(head.contains("x-switchyard-variant: primary"), "{head}");
        assert!(head.contains("\r\ndate: "), "{head}");
        assert_eq!(label(&body), x);
    }
    // Another route on the same connection: hyper's from here on.
    s.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: gw\r\n\r\n")
        .await
        .unwrap();
    let (status, head, body) = read_raw_answer(&mut s, &mut buf).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["live"],
        true
    );
    s.write_all(infer(4.0, "").as_bytes()).await.unwrap();
    let (status, _, body) = read_raw_answer(&mut s, &mut buf).await;
    assert_eq!((status, label(&body)), (200, 4.0));

    // A chunked body: hyper reads it.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = Vec::new();
    let body = oip_row(&[5.0]).to_string();
    let (a, b) = body.split_at(10);
    let chunked = format!(
        "POST /v2/models/m/infer HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    s.write_all(chunked.as_bytes()).await.unwrap();
    let (status, head, body) = read_raw_answer(&mut s, &mut buf).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(label(&body), 5.0);

    // `connection: close`: answered, said, closed.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(infer(6.0, "connection: close\r\n").as_bytes())
        .await
        .unwrap();
    let (status, head, body) = read_raw_answer(&mut s, &mut buf).await;
    assert_eq!((status, label(&body)), (200, 6.0));
    assert!(head.contains("connection: close"), "{head}");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the gateway closes the connection")
        .unwrap();
    assert_eq!(n, 0, "nothing after the answer");

    // A head over the limit: 431, as before.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = Vec::new();
    let big = format!("x-big: {}\r\n", "a".repeat(20_000));
    s.write_all(infer(7.0, &big).as_bytes()).await.unwrap();
    let (status, head, _) = read_raw_answer(&mut s, &mut buf).await;
    assert_eq!(status, 431, "{head}");

    tg.gateway.shutdown().await.unwrap();
}

/// Graceful shutdown through the hot loop: a request in flight when the gateway is told to
/// stop is still answered (saying `connection: close`), a kept-alive connection with nothing
/// in flight is closed at once, and the shutdown returns only after the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_the_request_in_flight_and_closes_idle_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = MockModel::start(1).await;
    mock.set_delay(400);
    mock.set(Mode::Slow);
    let yaml = format!(
        r#"
runtime: {{ data_plane_threads: 2 }}
models:
  m:
    task: classification
    versions:
      v1: {{ url: "{}" }}
    serve: {{ kind: single, version: v1 }}
"#,
        mock.url()
    );
    let tg = TestGateway::start(&yaml).await;
    let addr = tg.url("").trim_start_matches("http://").to_string();
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut busy = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = oip_row(&[1.0]).to_string();
    let request = format!(
        "POST /v2/models/m/infer HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let before = mock.calls();
    busy.write_all(request.as_bytes()).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || mock.calls() > before).await,
        "the request never reached the backend"
    );
    let shutdown = tokio::spawn(tg.gateway.shutdown());
    let mut buf = Vec::new();
    let (status, head, _) = read_raw_answer(&mut busy, &mut buf).await;
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut rest))
        .await
        .expect("the idle connection is closed")
        .unwrap();
    assert_eq!(n, 0);
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("the shutdown ends")
        .unwrap()
        .unwrap();
}
