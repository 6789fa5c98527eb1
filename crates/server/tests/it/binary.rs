//! The Open Inference Protocol's binary tensor data extension at the gateway: a request whose
//! first `Inference-Header-Content-Length` bytes are JSON and whose raw tensor bytes follow is
//! served, routed, shadowed and logged exactly like the JSON request it stands for; outputs are
//! answered as raw bytes when asked; malformed binary bodies are refused naming the fault and
//! never counted; a backend that speaks the extension gets the bytes as they came.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::http::HeaderMap;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{json, Value};
use switchyard_core::Role;

use crate::support::{eventually, Reply, TestGateway};

const ROWS: [[f32; 8]; 3] = [
    [1.0, 50.0, 2.0, 40.0, 1.0, 2.0, 1.0, 1000.0],
    [0.0, 12.5, 3.0, 10.0, 0.0, 1.0, 2.0, 250.0],
    [2.0, 90.0, 1.0, 70.0, 1.0, 4.0, 0.0, 5000.0],
];

fn raw_rows() -> Vec<u8> {
    ROWS.iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect()
}

/// A binary request: `header` (JSON) then `raw`; returns the body and the header's length.
fn binary_body(header: &Value, raw: &[u8]) -> (Vec<u8>, usize) {
    let mut body = header.to_string().into_bytes();
    let n = body.len();
    body.extend_from_slice(raw);
    (body, n)
}

async fn post_binary(tg: &TestGateway, id: &str, header: &Value, raw: &[u8]) -> Reply {
    let (body, n) = binary_body(header, raw);
    let n = n.to_string();
    tg.client
        .send(
            "POST",
            &tg.url("/v2/models/yield/infer"),
            &[
                ("content-type", "application/octet-stream"),
                ("inference-header-content-length", n.as_str()),
                ("x-request-id", id),
            ],
            body,
        )
        .await
}

/// A binary answer as plain JSON: each binary output's raw bytes decoded into `data`.
fn decode_answer(reply: &Reply) -> Value {
    let n: usize = reply
        .header("inference-header-content-length")
        .parse()
        .unwrap_or_else(|_| panic!("no binary header on {reply:?}"));
    let mut answer: Value = serde_json::from_slice(&reply.body[..n]).unwrap();
    let mut at = n;
    for output in answer["outputs"].as_array_mut().unwrap() {
        let size = output["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
        let raw = &reply.body[at..at + size];
        at += size;
        output["data"] = match output["datatype"].as_str().unwrap() {
            "INT64" => json!(raw
                .chunks(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect::<Vec<_>>()),
            "FP32" => json!(raw
                .chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect::<Vec<_>>()),
            other => panic!("unexpected datatype {other}"),
        };
        output["parameters"]
            .as_object_mut()
            .unwrap()
            .remove("binary_data_size");
        if output["parameters"].as_object().unwrap().is_empty() {
            output.as_object_mut().unwrap().remove("parameters");
        }
    }
    assert_eq!(at, reply.body.len(), "the answer has no bytes left over");
    answer
}

#[derive(Debug, PartialEq)]
struct Row {
    role: String,
    variant: String,
    version: String,
    key_hash: Option<i64>,
    outcome: String,
    status: i64,
    output: String,
    paired: Option<String>,
    segments: Option<String>,
    input: Option<String>,
}

fn records(tg: &TestGateway, request_id: &str) -> Vec<Row> {
    let conn = rusqlite::Connection::open(tg.store_path()).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT role, variant, version, key_hash, outcome, status, output, paired_version, \
             segments, input FROM predictions WHERE request_id = ?1 ORDER BY role",
        )
        .unwrap();
    stmt.query_map([request_id], |r| {
        Ok(Row {
            role: r.get(0)?,
            variant: r.get(1)?,
            version: r.get(2)?,
            key_hash: r.get(3)?,
            outcome: r.get(4)?,
            status: r.get(5)?,
            output: r.get(6)?,
            paired: r.get(7)?,
            segments: r.get(8)?,
            input: r.get(9)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The numbers of a captured OIP request's first input, however they were written.
fn captured_data(input: &str) -> (Vec<f64>, Value) {
    let v: Value = serde_json::from_str(input).unwrap_or_else(|e| panic!("{e}: {input}"));
    let data = v["inputs"][0]["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data in {v}"))
        .iter()
        .flat_map(|x| match x {
            Value::Array(row) => row.iter().map(|y| y.as_f64().unwrap()).collect(),
            y => vec![y.as_f64().unwrap()],
        })
        .collect();
    (data, v["parameters"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_requests_are_served_routed_shadowed_and_logged_like_json_ones() {
    let yaml = r#"
log: { capture_inputs: 1.0 }
models:
  yield:
    routing_key: { json_pointer: /parameters/customer }
    segments:
      lot: { json_pointer: /parameters/lot }
    versions:
      v1: { onnx: models/yield_v1.onnx }
      v2: { onnx: models/yield_v2.onnx }
    serve: { kind: shadow, primary: v1, shadows: [{ version: v2, sample: 100 }] }
"#;
    let tg = TestGateway::start(yaml).await;
    let params = json!({"customer": "c-7", "lot": "L1"});
    let json_request = json!({
        "parameters": params,
        "inputs": [{"name": "features", "shape": [3, 8], "datatype": "FP32", "data": ROWS}],
    });
    let plain = tg
        .client
        .post_json(
            &tg.url("/v2/models/yield/infer"),
            &[("x-request-id", "as-json")],
            &json_request,
        )
        .await;
    assert_eq!(
        plain.status,
        200,
        "{}",
        String::from_utf8_lossy(&plain.body)
    );
    let plain = plain.json();

    // Binary inputs, binary outputs (every output: `binary_data_output`).
    let header = |binary_out: Value| {
        let mut p = params.clone();
        if binary_out != Value::Null {
            p["binary_data_output"] = binary_out;
        }
        json!({
            "parameters": p,
            "inputs": [{"name": "features", "shape": [3, 8], "datatype": "FP32",
                        "parameters": {"binary_data_size": 96}}],
        })
    };
    let reply = post_binary(&tg, "as-binary", &header(json!(true)), &raw_rows()).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("content-type"), "application/octet-stream");
    assert_eq!(reply.header("x-switchyard-model-version"), "v1");
    let answer = decode_answer(&reply);
    assert_eq!(
        answer["outputs"], plain["outputs"],
        "binary answers what JSON does"
    );

    // Binary inputs, JSON outputs; and one output asked binary by name.
    let reply = post_binary(&tg, "binary-in", &header(Value::Null), &raw_rows()).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(reply
        .headers
        .get("inference-header-content-length")
        .is_none());
    assert_eq!(reply.json()["outputs"], plain["outputs"]);
    let mut one = header(Value::Null);
    one["outputs"] = json!([{"name": "label", "parameters": {"binary_data": true}},
                            {"name": "probabilities", "parameters": {"binary_data": false}}]);
    let reply = post_binary(&tg, "label-binary", &one, &raw_rows()).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let n: usize = reply
        .header("inference-header-content-length")
        .parse()
        .unwrap();
    let head: Value = serde_json::from_slice(&reply.body[..n]).unwrap();
    assert_eq!(
        head["outputs"][0]["parameters"]["binary_data_size"], 24,
        "{head}"
    );
    assert_eq!(
        head["outputs"][1]["data"], plain["outputs"][1]["data"],
        "{head}"
    );

    // The log: the binary request's serving and shadow records are the JSON one's, its
    // captured input the same request with the raw tensor decoded.
    let log = &tg.gateway.state.log;
    assert!(
        eventually(std::time::Duration::from_secs(20), || {
            log.aggregates()
                .lock()
                .pair("yield", "v1", "v2", |_| true)
                .shadow_calls
                >= 4
        })
        .await,
        "every request shadowed"
    );
    log.flush().await.unwrap();
    let json_rows = records(&tg, "as-json");
    for id in ["as-binary", "binary-in", "label-binary"] {
        let rows = records(&tg, id);
        assert_eq!(
            rows.len(),
            2,
            "{id}: a serving and a shadow record: {rows:?}"
        );
        for (a, b) in json_rows.iter().zip(&rows) {
            let strip = |r: &Row| Row {
                input: None,
                role: r.role.clone(),
                variant: r.variant.clone(),
                version: r.version.clone(),
                key_hash: r.key_hash,
                outcome: r.outcome.clone(),
                status: r.status,
                output: r.output.clone(),
                paired: r.paired.clone(),
                segments: r.segments.clone(),
            };
            assert_eq!(strip(a), strip(b), "{id}");
        }
        let serving = rows.iter().find(|r| r.role == "serving").unwrap();
        let (data, captured_params) = captured_data(serving.input.as_deref().unwrap());
        let json_serving = json_rows.iter().find(|r| r.role == "serving").unwrap();
        let (want, _) = captured_data(json_serving.input.as_deref().unwrap());
        assert_eq!(
            data, want,
            "{id}: the captured input holds the decoded tensor"
        );
        assert_eq!(captured_params["customer"], "c-7", "{id}");
        assert!(
            !serving.input.as_deref().unwrap().contains("binary_data"),
            "{id}: {:?}",
            serving.input
        );
    }
    assert!(json_rows
        .iter()
        .any(|r| r.role == "shadow" && r.outcome == "ok"));
    assert!(json_rows[0].key_hash.is_some(), "the routing key was read");
    assert!(json_rows[0]
        .segments
        .as_deref()
        .unwrap_or("")
        .contains("L1"));
    let served = log
        .aggregates()
        .lock()
        .variant("yield", "v1", Role::Serving, |_| true);
    assert_eq!((served.requests, served.errors), (4, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_binary_bodies_are_refused_with_clear_messages_and_never_counted() {
    let yaml = r#"
models:
  yield:
    versions:
      v1: { onnx: models/yield_v1.onnx }
    serve: { kind: single, version: v1 }
"#;
    let tg = TestGateway::start(yaml).await;
    let url = tg.url("/v2/models/yield/infer");
    let declare = |size: u64, datatype: &str, shape: Value| {
        json!({"inputs": [{"name": "features", "shape": shape, "datatype": datatype,
                           "parameters": {"binary_data_size": size}}]})
    };
    let raw = raw_rows();
    let shape = json!([3, 8]);
    // (what, body, header value, expected message, names the input)
    let mut cases: Vec<(&str, Vec<u8>, String, &str, bool)> = Vec::new();
    let mut case = |what, header: Value, raw: &[u8], says, named| {
        let (body, n) = binary_body(&header, raw);
        cases.push((what, body, n.to_string(), says, named));
    };
    case(
        "too short",
        declare(96, "FP32", shape.clone()),
        &raw[..64],
        "binary_data_size 96 runs past the end of the body",
        true,
    );
    let mut long = raw.clone();
    long.extend_from_slice(&[0; 4]);
    case(
        "too long",
        declare(96, "FP32", shape.clone()),
        &long,
        "100 bytes of binary data after the JSON header but the inputs' binary_data_size declare 96",
        false,
    );
    case(
        "size not matching the shape",
        declare(64, "FP32", shape.clone()),
        &raw[..64],
        "binary_data_size 64 does not fit shape [3,8] of FP32",
        true,
    );
    case(
        "size not matching the datatype",
        declare(96, "FP64", shape.clone()),
        &raw,
        "does not fit shape [3,8] of FP64",
        true,
    );
    case(
        "a BYTES element past its tensor",
        declare(6, "BYTES", json!([1])),
        b"\x09\0\0\0ab",
        "runs past the end",
        true,
    );
    case(
        "data and binary_data_size",
        json!({"inputs": [{"name": "features", "shape": [1], "datatype": "FP32", "data": [1.0],
                           "parameters": {"binary_data_size": 4}}]}),
        &raw[..4],
        "has both \"data\" and binary_data_size",
        true,
    );
    let (good, good_n) = binary_body(&declare(96, "FP32", shape.clone()), &raw);
    cases.push((
        "a header length past the body",
        good.clone(),
        (good.len() + 1).to_string(),
        "runs past the end of the",
        false,
    ));
    cases.push((
        "a non-numeric header length",
        good.clone(),
        "12abc".into(),
        "Inference-Header-Content-Length '12abc' is not a byte count",
        false,
    ));
    cases.push((
        "a header cutting the JSON",
        good.clone(),
        (good_n - 3).to_string(),
        "not valid JSON",
        false,
    ));
    for (what, body, n, says, named) in cases {
        let r = tg
            .client
            .send(
                "POST",
                &url,
                &[
                    ("content-type", "application/octet-stream"),
                    ("inference-header-content-length", n.as_str()),
                ],
                body,
            )
            .await;
        assert_eq!(
            r.status,
            400,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let message = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(message.contains(says), "{what}: {message}");
        if named {
            assert!(
                message.contains("'features'"),
                "{what} names the input: {message}"
            );
        }
    }
    // Binary bodies need the header; octet-stream alone is not JSON.
    let r = tg
        .client
        .send(
            "POST",
            &url,
            &[("content-type", "application/octet-stream")],
            good.clone(),
        )
        .await;
    assert_eq!(r.status, 415, "{}", String::from_utf8_lossy(&r.body));
    // The same body with the right header is served.
    let good_n = good_n.to_string();
    let r = tg
        .client
        .send(
            "POST",
            &url,
            &[("inference-header-content-length", good_n.as_str())],
            good,
        )
        .await;
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

/// What the binary-speaking mock server received.
type Seen = Arc<Mutex<Vec<(Option<String>, Bytes)>>>;

/// A model server that speaks the extension: it answers `predict` = [1, 0, 1] as INT64 raw
/// bytes, and keeps every request's header and body.
async fn binary_server(seen: Seen) -> String {
    let app = axum::Router::new().route(
        "/v2/models/{m}/infer",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            async move {
                let header = headers
                    .get("inference-header-content-length")
                    .map(|v| v.to_str().unwrap().to_string());
                seen.lock().push((header, body));
                let raw: Vec<u8> = [1i64, 0, 1].iter().flat_map(|x| x.to_le_bytes()).collect();
                let head = json!({"model_name": "remote", "outputs": [{"name": "predict",
                    "datatype": "INT64", "shape": [3], "parameters": {"binary_data_size": 24}}]})
                .to_string();
                let n = head.len().to_string();
                let mut answer = head.into_bytes();
                answer.extend_from_slice(&raw);
                (
                    [
                        ("content-type", "application/octet-stream".to_string()),
                        ("inference-header-content-length", n),
                    ],
                    answer,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_speaks_the_extension_gets_the_bytes_as_they_came() {
    let seen: Seen = Arc::default();
    let url = binary_server(seen.clone()).await;
    let yaml = format!(
        r#"
models:
  yield:
    versions:
      v1: {{ url: "{url}", protocol: oip, binary_data: true }}
    serve: {{ kind: single, version: v1 }}
"#
    );
    let tg = TestGateway::start(&yaml).await;
    let header = json!({"parameters": {"binary_data_output": true},
        "inputs": [{"name": "features", "shape": [3, 8], "datatype": "FP32",
                    "parameters": {"binary_data_size": 96}}]});
    let (body, n) = binary_body(&header, &raw_rows());
    let reply = post_binary(&tg, "through", &header, &raw_rows()).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    {
        let seen = seen.lock();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, Some(n.to_string()), "the header travels");
        assert_eq!(seen[0].1, Bytes::from(body), "the body is untouched");
    }
    // The server's binary answer comes back as it came.
    let answer = decode_answer(&reply);
    assert_eq!(answer["outputs"][0]["data"], json!([1, 0, 1]));
    assert_eq!(answer["model_name"], "remote", "not rebuilt by the gateway");

    // A client that wants JSON gets the binary answer decoded.
    let mut json_out = header.clone();
    json_out["parameters"] = json!({});
    let reply = post_binary(&tg, "decoded", &json_out, &raw_rows()).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["outputs"][0]["data"], json!([1, 0, 1]));
    // A KServe v1 client: translated to OIP JSON, the binary answer read for it.
    let reply = tg
        .client
        .post_json(
            &tg.url("/v1/models/yield:predict"),
            &[("x-request-id", "v1-client")],
            &json!({"instances": ROWS}),
        )
        .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json(), json!({"predictions": [1, 0, 1]}));
    assert_eq!(
        seen.lock()[2].0,
        None,
        "a JSON request has no binary header"
    );

    // The records read the prediction out of the binary answers.
    tg.gateway.state.log.flush().await.unwrap();
    for id in ["through", "decoded", "v1-client"] {
        let rows = records(&tg, id);
        assert_eq!(rows.len(), 1, "{id}");
        assert_eq!(rows[0].outcome, "ok", "{id}");
        let output: Value = serde_json::from_str(&rows[0].output).unwrap();
        assert!(
            output.to_string().contains("\"1\",\"0\",\"1\""),
            "{id}: {output}"
        );
    }
}
