//! The Open Inference Protocol's gRPC endpoint (`grpc_listen`): a standard client from PyPI
//! (tritonclient's gRPC client) uses it as it would Triton's; a gRPC request goes through the
//! same request path as a REST one (a canary split and a shadow record it exactly alike); bad
//! inputs get the right status codes and count nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use switchyard_core::Role;
use switchyard_server::grpc_wire::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use switchyard_server::grpc_wire::inference::model_infer_request::InferInputTensor;
use switchyard_server::grpc_wire::inference::{InferTensorContents, ModelInferRequest};
use tonic::transport::Channel;

use crate::support::{eventually, repo_root, TestGateway};

const ROW: [f32; 8] = [1.0, 50.0, 2.0, 40.0, 1.0, 2.0, 1.0, 1000.0];

pub async fn grpc_client(tg: &TestGateway) -> GrpcInferenceServiceClient<Channel> {
    let addr = tg.gateway.grpc_addr.expect("grpc_listen is set");
    GrpcInferenceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// A one-input FP32 request of `rows`, as raw contents or typed ones.
pub fn infer_request(model: &str, rows: &[Vec<f32>], raw: bool) -> ModelInferRequest {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let width = rows.first().map_or(0, Vec::len) as i64;
    let mut input = InferInputTensor {
        name: "features".into(),
        datatype: "FP32".into(),
        shape: vec![rows.len() as i64, width],
        ..Default::default()
    };
    let mut request = ModelInferRequest {
        model_name: model.into(),
        ..Default::default()
    };
    if raw {
        request.raw_input_contents = vec![flat.iter().flat_map(|x| x.to_le_bytes()).collect()];
    } else {
        input.contents = Some(InferTensorContents {
            fp32_contents: flat,
            ..Default::default()
        });
    }
    request.inputs = vec![input];
    request
}

fn with_id<T>(message: T, id: &str, key: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert("x-request-id", id.parse().unwrap());
    if let Some(k) = key {
        r.metadata_mut().insert("x-key", k.parse().unwrap());
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_grpc_client_uses_the_gateway_as_a_model_server() {
    let yaml = r#"
grpc_listen: 127.0.0.1:0
models:
  yield:
    versions:
      v1: { onnx: models/yield_v1.onnx }
      v2: { onnx: models/yield_v2.onnx }
    serve: { kind: ab, arms: [{ version: v1, weight: 50 }, { version: v2, weight: 50 }] }
"#;
    let tg = TestGateway::start(yaml).await;
    let host = tg.gateway.grpc_addr.unwrap().to_string();
    let script = repo_root().join("tools/oip_grpc_client_check.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .args([host.as_str(), "yield", "8"])
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the OIP gRPC client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "live ok",
        "ready ok",
        "model ready ok",
        "server metadata ok",
        "model metadata ok",
        "raw infer ok",
        "typed infer ok",
        "pinned infer ok v2",
        "error ok",
        "bad inputs ok",
    ] {
        assert!(stdout.contains(line), "missing '{line}' in:\n{stdout}");
    }
    tg.gateway.state.log.flush().await.unwrap();
    let agg = tg.gateway.state.log.aggregates().lock().clone();
    let served: u64 = agg.series.values().map(|s| s.requests).sum();
    let errors: u64 = agg.series.values().map(|s| s.errors).sum();
    assert_eq!(
        (served, errors),
        (3, 0),
        "raw, typed and pinned inferences; the refused ones never count"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_rest_requests_are_split_shadowed_and_recorded_alike() {
    let yaml = r#"
grpc_listen: 127.0.0.1:0
log: { capture_inputs: 1.0 }
models:
  split:
    routing_key: { header: x-key }
    segments: { lot: { header: x-key } }
    versions:
      v1: { onnx: models/yield_v1.onnx }
      v2: { onnx: models/yield_v2.onnx }
    serve: { kind: canary, stable: v1, canary: v2, weight: 50 }
  shadowed:
    versions:
      v1: { onnx: models/yield_v1.onnx }
      v2: { onnx: models/yield_v2.onnx }
    serve: { kind: shadow, primary: v1, shadows: [{ version: v2, sample: 100 }] }
"#;
    let tg = TestGateway::start(yaml).await;
    let mut grpc = grpc_client(&tg).await;
    let n = 16;
    let row = |i: usize| -> Vec<f32> {
        let mut r = ROW.to_vec();
        r[1] += i as f32 * 7.0;
        r[7] += i as f32 * 500.0;
        r
    };
    for model in ["split", "shadowed"] {
        for i in 0..n {
            let key = format!("k{i}");
            let rest = tg
                .client
                .post_json(
                    &tg.url(&format!("/v2/models/{model}/infer")),
                    &[("x-request-id", &format!("rest-{model}-{i}")), ("x-key", &key)],
                    &json!({"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32", "data": row(i)}]}),
                )
                .await;
            assert_eq!(rest.status, 200, "{}", String::from_utf8_lossy(&rest.body));
            let answer = grpc
                .model_infer(with_id(
                    infer_request(model, &[row(i)], i % 2 == 0),
                    &format!("grpc-{model}-{i}"),
                    Some(&key),
                ))
                .await
                .unwrap();
            assert_eq!(
                answer.metadata().get("x-request-id").unwrap(),
                &format!("grpc-{model}-{i}")
            );
            assert_eq!(
                answer.metadata().get("x-switchyard-model-version").unwrap(),
                rest.header("x-switchyard-model-version").as_str(),
                "{model} {i}: the same key picks the same version"
            );
            let label = answer
                .get_ref()
                .outputs
                .iter()
                .position(|o| o.name == "label")
                .unwrap();
            let got = i64::from_le_bytes(
                answer.get_ref().raw_output_contents[label][..8]
                    .try_into()
                    .unwrap(),
            );
            assert_eq!(
                json!([got]),
                rest.json()["outputs"][0]["data"],
                "{model} {i}"
            );
        }
    }
    let log = &tg.gateway.state.log;
    assert!(
        eventually(Duration::from_secs(20), || {
            log.aggregates()
                .lock()
                .pair("shadowed", "v1", "v2", |_| true)
                .shadow_calls
                >= 2 * n as u64
        })
        .await
    );
    log.flush().await.unwrap();

    // Record by record, a gRPC request is its REST twin.
    let conn = rusqlite::Connection::open(tg.store_path()).unwrap();
    let rows = |prefix: &str, model: &str| -> Vec<String> {
        let mut stmt = conn
            .prepare(
                "SELECT substr(request_id, length(?1) + 1), role, variant, version, key_hash, \
                 outcome, status, output, paired_version, segments, input IS NOT NULL \
                 FROM predictions WHERE request_id LIKE ?1 || '%' AND model = ?2 \
                 ORDER BY request_id, role",
            )
            .unwrap();
        stmt.query_map(rusqlite::params![prefix, model], |r| {
            Ok(format!(
                "{}|{}|{}|{}|{:?}|{}|{}|{}|{:?}|{:?}|{}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, Option<String>>(8)?,
                r.get::<_, Option<String>>(9)?,
                r.get::<_, bool>(10)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    for model in ["split", "shadowed"] {
        let rest = rows(&format!("rest-{model}-"), model);
        let grpc = rows(&format!("grpc-{model}-"), model);
        let per_request = if model == "shadowed" { 2 } else { 1 };
        assert_eq!(rest.len(), n * per_request, "{model}: {rest:#?}");
        assert_eq!(rest, grpc, "{model}");
    }
    // Both variants of the split served, and the statistics hold each request twice.
    let agg = log.aggregates().lock().clone();
    let v1 = agg.variant("split", "v1", Role::Serving, |_| true);
    let v2 = agg.variant("split", "v2", Role::Serving, |_| true);
    assert!(v1.requests > 0 && v2.requests > 0, "{v1:?} {v2:?}");
    assert_eq!(v1.requests % 2, 0, "REST and gRPC twins on the same arm");
    assert_eq!(v1.requests + v2.requests, 2 * n as u64);
    let pair = agg.pair("shadowed", "v1", "v2", |_| true);
    assert_eq!((pair.shadow_calls, pair.shadow_errors), (2 * n as u64, 0));
    assert_eq!(pair.agreement.trials, 2 * n as u64);
    assert_eq!(pair.agreement.successes % 2, 0, "twins agree alike");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_grpc_requests_get_their_status_codes_and_count_nothing() {
    let yaml = r#"
grpc_listen: 127.0.0.1:0
models:
  yield:
    versions:
      v1: { onnx: models/yield_v1.onnx }
    serve: { kind: single, version: v1 }
"#;
    let tg = TestGateway::start(yaml).await;
    let mut grpc = grpc_client(&tg).await;
    let good = infer_request("yield", &[ROW.to_vec()], true);
    let mut cases: Vec<(&str, ModelInferRequest, tonic::Code, &str)> = Vec::new();
    let mut unknown = good.clone();
    unknown.model_name = "nope".into();
    cases.push((
        "unknown model",
        unknown,
        tonic::Code::NotFound,
        "no model named 'nope'",
    ));
    let mut version = good.clone();
    version.model_version = "v7".into();
    cases.push((
        "unknown version",
        version,
        tonic::Code::NotFound,
        "no version 'v7'",
    ));
    let mut shape = good.clone();
    shape.inputs[0].shape = vec![2, 8];
    cases.push((
        "a shape the data do not fill",
        shape,
        tonic::Code::InvalidArgument,
        "inputs[0] ('features'): binary_data_size 32 does not fit shape [2,8] of FP32",
    ));
    let mut datatype = good.clone();
    datatype.inputs[0].datatype = "FP8".into();
    cases.push((
        "an unknown datatype",
        datatype,
        tonic::Code::InvalidArgument,
        "inputs[0] ('features'): unknown datatype 'FP8'",
    ));
    let mut typed = infer_request("yield", &[ROW.to_vec()], false);
    typed.inputs[0].datatype = "INT64".into();
    cases.push((
        "typed contents of another type",
        typed,
        tonic::Code::InvalidArgument,
        "'features'",
    ));
    let mut extra = good.clone();
    extra.raw_input_contents.push(vec![0; 4]);
    cases.push((
        "more raw contents than inputs",
        extra,
        tonic::Code::InvalidArgument,
        "raw_input_contents holds 2 tensors for 1 inputs",
    ));
    for (what, request, code, says) in cases {
        let status = grpc
            .model_infer(with_id(request, "bad", None))
            .await
            .expect_err(what);
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            status.message().contains(says),
            "{what}: {}",
            status.message()
        );
        assert_eq!(
            status.metadata().get("x-request-id").unwrap(),
            "bad",
            "{what}"
        );
    }
    // The width the model does not take reaches the model and is refused there (counted as
    // the client's error, as over REST).
    let ok = grpc.model_infer(good).await.unwrap();
    assert_eq!(ok.get_ref().model_version, "v1");
    tg.gateway.state.log.flush().await.unwrap();
    let s = tg
        .gateway
        .state
        .log
        .aggregates()
        .lock()
        .variant("yield", "v1", Role::Serving, |_| true);
    assert_eq!((s.requests, s.errors), (1, 0), "refusals never count");
}
