//! A standard Open Inference Protocol client from PyPI (tritonclient's HTTP client, installed by
//! README's test command) against the gateway: health, readiness, server and model metadata,
//! JSON inference, a pinned version and an error all work as against MLServer or Triton; so do
//! the binary tensor data extension's binary inputs and outputs (`binary_data=True`), which
//! answer exactly what JSON does.

use crate::support::{run_tool, TestGateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_oip_client_uses_the_gateway_as_a_model_server() {
    let yaml = r#"
models:
  yield:
    versions:
      v1: { onnx: models/yield_v1.onnx }
      v2: { onnx: models/yield_v2.onnx }
    serve: { kind: ab, arms: [{ version: v1, weight: 50 }, { version: v2, weight: 50 }] }
"#;
    let tg = TestGateway::start(yaml).await;
    let host = tg.gateway.addr.to_string();
    run_tool(
        "oip_client_check.py",
        &[host.as_str(), "yield", "8"],
        &[
            "live ok",
            "ready ok",
            "model metadata ok",
            "infer ok",
            "pinned infer ok v2",
            "error ok",
            "binary infer ok",
            "pinned binary infer ok v2",
        ],
    )
    .await;
    // The client's requests were served and logged like any other.
    tg.gateway.state.log.flush().await.unwrap();
    let agg = tg.gateway.state.log.aggregates().lock().clone();
    let served: u64 = agg.series.values().map(|s| s.requests).sum();
    assert_eq!(
        served, 7,
        "one routed and one pinned JSON inference, four routed binary and one pinned binary"
    );
}
