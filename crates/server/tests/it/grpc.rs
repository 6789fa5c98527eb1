//! The Open Inference Protocol's gRPC endpoint (`grpc_listen`): a standard client from PyPI
//! (tritonclient's gRPC client) uses it as it would Triton's; a gRPC request goes through the
//! same request path as a REST one (a canary split and a shadow record it exactly alike); bad
//! inputs get the right status codes and count nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use switchyard_core::Role;
use switchyard_server::grpc_wire::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use switchyard_server::grpc_wire::inference::model_infer_request::InferInputTensor;
use switchyard_server::grpc_wire::inference::{InferTensorContents, ModelInferRequest};
use tonic::transport::Channel;

use switchyard_server::auth::sha256_hex;
use switchyard_server::grpc_wire::inference::ServerLiveRequest;

use crate::support::pki::{chain, Ca};
use crate::support::{eventually, run_tool, TestGateway};

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
    run_tool(
        "oip_grpc_client_check.py",
        &[host.as_str(), "yield", "8"],
        &[
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
        ],
    )
    .await;
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

/// A gRPC client over TLS trusting `ca` only (HTTP/2 by ALPN).
async fn grpc_tls_client(
    addr: std::net::SocketAddr,
    ca: &Ca,
) -> Result<GrpcInferenceServiceClient<Channel>, String> {
    let mut tls = crate::support::pki::trusting(&[&ca.der]);
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnector::from((http, tls));
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .connect_with_connector(connector)
        .await
        .map_err(|e| chain(&e))?;
    Ok(GrpcInferenceServiceClient::new(channel))
}

/// `grpc_listen` with `tls:` serves gRPC over TLS only; a gateway reaches it as an `oip-grpc`
/// backend at an `https://` URL with the CA in `ca_file` (and is refused without it); a
/// standard client (tritonclient) calls it over TLS with a bearer token in its metadata, and
/// without the token is refused as unauthenticated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_serves_trusting_clients_and_gateways_with_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("switchyard gRPC CA");
    let (cert, key) = ca.leaf("gateway").write(dir.path());
    let ca_file = ca.write(dir.path(), "ca.pem");
    let token = "tok-ines-0123456789";
    let upstream = TestGateway::start(&format!(
        r#"
grpc_listen: 127.0.0.1:0
tls: {{ cert: "{cert}", key: "{key}" }}
auth:
  credentials:
    - {{ name: ines, roles: [inference], token_sha256: "{sha}" }}
  data_plane: {{ require: true }}
models:
  yield:
    versions:
      v1: {{ onnx: models/yield_v1.onnx }}
    serve: {{ kind: single, version: v1 }}
"#,
        cert = cert.display(),
        key = key.display(),
        sha = sha256_hex(token),
    ))
    .await;
    let grpc = upstream.gateway.grpc_addr.unwrap();

    // A Rust client trusting the CA: the token gets an answer, no token a refusal.
    let mut client = grpc_tls_client(grpc, &ca).await.unwrap();
    let mut request = tonic::Request::new(infer_request("yield", &[ROW.to_vec()], true));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let answer = client.model_infer(request).await.unwrap().into_inner();
    assert_eq!(answer.model_name, "yield");
    let refused = client
        .model_infer(infer_request("yield", &[ROW.to_vec()], true))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    // A client trusting another CA fails the handshake; a plaintext HTTP/2 client gets no
    // answer from the TLS port.
    let stranger = Ca::new("another CA");
    let err = grpc_tls_client(grpc, &stranger).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    let plain = async {
        let mut c = GrpcInferenceServiceClient::connect(format!("http://{grpc}")).await?;
        c.server_live(ServerLiveRequest {})
            .await
            .map_err(|s| Box::new(s) as Box<dyn std::error::Error + Send + Sync>)
    };
    let plain = tokio::time::timeout(Duration::from_secs(30), plain)
        .await
        .expect("a plaintext client is answered or dropped, not left hanging");
    assert!(plain.is_err(), "plaintext gRPC was served: {plain:?}");

    // tritonclient (gRPC, ssl=True with the CA as its root) with and without the token.
    let (host, ca_arg) = (
        format!("127.0.0.1:{}", grpc.port()),
        ca_file.display().to_string(),
    );
    run_tool(
        "oip_grpc_tls_check.py",
        &[host.as_str(), "yield", ca_arg.as_str(), token],
        &["tls live ok", "tls infer ok", "tls unauthenticated ok"],
    )
    .await;

    upstream.gateway.shutdown().await.unwrap();

    // A gateway whose backend is such an endpoint (without auth) over https: trusted with
    // `ca_file`, refused (502 naming the unknown issuer) without.
    let open = TestGateway::start(&format!(
        r#"
grpc_listen: 127.0.0.1:0
tls: {{ cert: "{cert}", key: "{key}" }}
models:
  yield:
    versions:
      v1: {{ onnx: models/yield_v1.onnx }}
    serve: {{ kind: single, version: v1 }}
"#,
        cert = cert.display(),
        key = key.display(),
    ))
    .await;
    let grpc = open.gateway.grpc_addr.unwrap();
    let front = TestGateway::start(&format!(
        r#"
models:
  trusted:
    versions:
      v1: {{ url: "https://{grpc}", protocol: oip-grpc, remote_model: yield, ca_file: "{ca}" }}
    serve: {{ kind: single, version: v1 }}
  untrusted:
    versions:
      v1: {{ url: "https://{grpc}", protocol: oip-grpc, remote_model: yield }}
    serve: {{ kind: single, version: v1 }}
"#,
        ca = ca_file.display(),
    ))
    .await;
    let body =
        json!({"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32", "data": ROW}]});
    let r = front
        .client
        .post_json(&front.url("/v2/models/trusted/infer"), &[], &body)
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // The same row asked of the endpoint directly.
    let direct = grpc_tls_client(grpc, &ca)
        .await
        .unwrap()
        .model_infer(infer_request("yield", &[ROW.to_vec()], true))
        .await
        .unwrap()
        .into_inner();
    let at = direct
        .outputs
        .iter()
        .position(|o| o.name == "label")
        .unwrap();
    let direct_label = i64::from_le_bytes(direct.raw_output_contents[at][..8].try_into().unwrap());
    let answer = r.json();
    let label = answer["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "label")
        .unwrap()["data"]
        .clone();
    assert_eq!(label, json!([direct_label]), "{answer}");
    let r = front
        .client
        .post_json(&front.url("/v2/models/untrusted/infer"), &[], &body)
        .await;
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    let message = r.json()["error"].as_str().unwrap().to_string();
    assert!(message.contains("UnknownIssuer"), "{message}");
    front.gateway.shutdown().await.unwrap();
    open.gateway.shutdown().await.unwrap();
}
