//! The OIP gRPC endpoint against REST through the same gateway and the same `mock-backend`, at
//! a fixed concurrency: requests per second, p50 and p99, side by side, rounds interleaved.
//!
//! `bash bench/grpc_vs_rest.sh` builds and starts `mock-backend` and runs this program
//! (`MOCK_BACKEND=http://ADDR cargo bench -p switchyard-server --bench grpc_vs_rest`). The
//! gateway runs in this process on its own runtime (the bench profile is the release build);
//! the clients run on another. Both front ends send one 8-feature FP32 row to model `m`, whose
//! one version is the mock over REST OIP; the prediction log is on, as in production.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use switchyard_server::grpc_wire::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use switchyard_server::grpc_wire::inference::model_infer_request::InferInputTensor;
use switchyard_server::grpc_wire::inference::ModelInferRequest;
use switchyard_server::{parse_config, Gateway, StartOptions};

const CONCURRENCY: usize = 32;
const ROUND: Duration = Duration::from_secs(6);
const WARMUP: Duration = Duration::from_secs(1);
const ROUNDS: usize = 3;
const ROW: [f32; 8] = [1.0, 50.0, 2.0, 40.0, 1.0, 2.0, 1.0, 1000.0];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Arm {
    Rest,
    Grpc,
}

#[derive(Debug)]
struct Result {
    rps: f64,
    p50_us: u64,
    p99_us: u64,
    errors: u64,
}

fn quantile(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

async fn run(arm: Arm, rest_url: String, grpc_url: String, duration: Duration) -> Result {
    let body = Bytes::from(
        serde_json::json!({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": ROW}]})
            .to_string(),
    );
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let rest: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(http);
    // gRPC: a few HTTP/2 connections, requests multiplexed on them (as a gRPC client does).
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(
            GrpcInferenceServiceClient::connect(grpc_url.clone())
                .await
                .unwrap(),
        );
    }
    let request = ModelInferRequest {
        model_name: "m".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 8],
            ..Default::default()
        }],
        raw_input_contents: vec![ROW.iter().flat_map(|x| x.to_le_bytes()).collect()],
        ..Default::default()
    };
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CONCURRENCY {
        let rest = rest.clone();
        let url = rest_url.clone();
        let body = body.clone();
        let mut grpc = channels[i % channels.len()].clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = match arm {
                    Arm::Rest => {
                        let req = hyper::Request::post(&url)
                            .header("content-type", "application/json")
                            .body(Full::new(body.clone()))
                            .unwrap();
                        match rest.request(req).await {
                            Ok(resp) => {
                                let ok = resp.status().is_success();
                                let _ = resp.into_body().collect().await;
                                ok
                            }
                            Err(_) => false,
                        }
                    }
                    Arm::Grpc => grpc.model_infer(request.clone()).await.is_ok(),
                };
                if ok {
                    latencies.push(t.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    Result {
        rps: all.len() as f64 / elapsed,
        p50_us: quantile(&all, 0.5),
        p99_us: quantile(&all, 0.99),
        errors,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let backend = std::env::var("MOCK_BACKEND")
        .expect("MOCK_BACKEND=http://ADDR of a running mock-backend (bench/grpc_vs_rest.sh)");
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "grpc_listen: 127.0.0.1:0\nmodels:\n  m:\n    versions:\n      v1: {{ url: \"{backend}\", protocol: oip, remote_model: mock }}\n    serve: {{ kind: single, version: v1 }}\n"
    );
    let config = parse_config(&yaml, dir.path(), "bench").unwrap();
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let gateway = server_rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut options = StartOptions::new(dir.path().join("bench.sqlite"));
        options.controller_loop = false;
        Gateway::start(config, listener, options).await.unwrap()
    });
    let rest_url = format!("{}/v2/models/m/infer", gateway.url());
    let grpc_url = format!("http://{}", gateway.grpc_addr.unwrap());
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut results: Vec<(Arm, Result)> = Vec::new();
    client_rt.block_on(async {
        for arm in [Arm::Rest, Arm::Grpc] {
            run(arm, rest_url.clone(), grpc_url.clone(), WARMUP).await;
        }
        for round in 0..ROUNDS {
            let order = if round % 2 == 0 {
                [Arm::Rest, Arm::Grpc]
            } else {
                [Arm::Grpc, Arm::Rest]
            };
            for arm in order {
                let r = run(arm, rest_url.clone(), grpc_url.clone(), ROUND).await;
                println!(
                    "round {round} {arm:?}: {:.0} req/s, p50 {} µs, p99 {} µs, errors {}",
                    r.rps, r.p50_us, r.p99_us, r.errors
                );
                results.push((arm, r));
            }
        }
    });
    println!("\n| front end | requests/s | p50 (µs) | p99 (µs) | errors |");
    println!("|---|---:|---:|---:|---:|");
    for arm in [Arm::Rest, Arm::Grpc] {
        let mine: Vec<&Result> = results
            .iter()
            .filter(|(a, _)| *a == arm)
            .map(|(_, r)| r)
            .collect();
        let name = match arm {
            Arm::Rest => "REST (HTTP/1.1 JSON)",
            Arm::Grpc => "gRPC (HTTP/2, raw contents)",
        };
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {} |",
            median(mine.iter().map(|r| r.rps).collect()),
            median(mine.iter().map(|r| r.p50_us as f64).collect()),
            median(mine.iter().map(|r| r.p99_us as f64).collect()),
            mine.iter().map(|r| r.errors).sum::<u64>()
        );
    }
    println!(
        "\nconcurrency {CONCURRENCY}, {ROUNDS} rounds × {} s per front end, interleaved; medians of rounds",
        ROUND.as_secs()
    );
    server_rt.block_on(async { gateway.shutdown().await.unwrap() });
}
