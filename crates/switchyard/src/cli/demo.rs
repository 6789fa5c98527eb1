//! `switchyard demo`: the whole story on shipped models, through the real gateway, controller
//! and store.
//!
//! The demo writes the embedded ONNX models into a data directory, starts the gateway on an
//! ephemeral loopback port with a webhook listener for alerts, and plays: a shadow comparison
//! of yield v1 and v2 that chains into a canary of v2, a canary of the regressed v3 that is
//! rolled back, a shadow of the test-time regressor decided on MAE, an A/B test of it, a
//! Thompson-sampling bandit over the three yield models, and a blue-green switch with a
//! rollback drill. Rollouts are applied and inspected through the admin HTTP API, traffic and labels go
//! through the data plane, and the controller runs its normal loop on a clock that runs
//! `--scale` times faster than real time.

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};
use switchyard_server::api::{EventView, Report, RolloutView};
use switchyard_server::client::AdminClient;
use switchyard_server::controller::ScaledClock;
use switchyard_server::{parse_config, Gateway, StartOptions};

use switchyard_wafer::WaferGenerator;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Smaller samples (for tests and a quick look).
    #[arg(long)]
    fast: bool,
    /// Simulated seconds per real second for the controller's clock.
    #[arg(long, default_value_t = 120.0)]
    scale: f64,
    /// Keep the store and reports here (default: a temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep the gateway running after the story, until Ctrl-C.
    #[arg(long)]
    serve: bool,
    /// Seed of the synthetic wafer data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Latency increases (p95, ms) below this never fail a canary gate or switch a blue-green
    /// back, and the blue-green validation allows a p95 of at least this (else 250 ms). The
    /// default is the rollouts' own. The demo's test sets it far above anything a loaded
    /// machine produces: its verdicts are about accuracy.
    #[arg(long, default_value_t = switchyard_core::rollout::DEFAULT_MIN_P95_INCREASE_MS)]
    p95_floor_ms: f64,
}

const MODELS: [(&str, &[u8]); 5] = [
    (
        "yield_v1.onnx",
        include_bytes!("../../../../models/yield_v1.onnx"),
    ),
    (
        "yield_v2.onnx",
        include_bytes!("../../../../models/yield_v2.onnx"),
    ),
    (
        "yield_v3.onnx",
        include_bytes!("../../../../models/yield_v3.onnx"),
    ),
    (
        "testtime_v1.onnx",
        include_bytes!("../../../../models/testtime_v1.onnx"),
    ),
    (
        "testtime_v2.onnx",
        include_bytes!("../../../../models/testtime_v2.onnx"),
    ),
];
const VALIDATION_SET: &[u8] = include_bytes!("../../../../models/validation_yield.csv");

/// Sample sizes of the story.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    batch: u64,
    shadow_labelled: u64,
    step_requests: u64,
    monitor_requests: u64,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(demo(args))
}

struct Demo {
    base: String,
    admin: AdminClient,
    client: Client<HttpConnector, Full<Bytes>>,
    wafers: WaferGenerator,
    rng: StdRng,
    /// Labels not yet sent: they arrive late and in random order.
    pending: Vec<Value>,
    alerts: Arc<Mutex<Vec<Value>>>,
    sizes: Sizes,
}

struct Reply {
    status: u16,
    version: String,
    body: Value,
}

impl Demo {
    async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: String,
    ) -> Result<Reply> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let resp = self
            .client
            .request(req.body(Full::new(Bytes::from(body)))?)
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status().as_u16();
        let version = resp
            .headers()
            .get("x-switchyard-model-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok(Reply {
            status,
            version,
            body,
        })
    }

    async fn apply(&self, spec: &str) -> Result<RolloutView> {
        self.admin
            .apply(spec)
            .await
            .context("the gateway refused a rollout of the demo")
    }

    async fn rollout(&self, name: &str) -> Result<RolloutView> {
        Ok(self.admin.rollout(name).await?)
    }

    async fn report(&self, name: &str) -> Result<Report> {
        Ok(self.admin.report(name).await?)
    }

    async fn events(&self, name: &str) -> Result<Vec<EventView>> {
        Ok(self.admin.events(name).await?.events)
    }

    /// Sends one batch of dies to `model`, 8 at a time; queues their ground truth.
    async fn batch(&mut self, model: &str, n: u64) -> Result<Vec<(String, Value)>> {
        let dies: Vec<_> = (0..n).map(|_| self.wafers.die()).collect();
        let mut sent = Vec::new();
        for chunk in dies.chunks(8) {
            let me: &Demo = self;
            let calls = chunk.iter().map(|d| {
                let body = json!({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": d.features}]}).to_string();
                let id = format!("{model}-{}", d.id);
                let headers = [("x-wafer-id", format!("W{}-{}", d.id / 400, d.id % 400)), ("x-request-id", id.clone())];
                async move { (id, me.call("POST", &format!("/v2/models/{model}/infer"), &headers, body).await) }
            });
            let replies = futures_join(calls).await;
            for ((id, reply), die) in replies.into_iter().zip(chunk) {
                let reply = reply?;
                if reply.status != 200 {
                    bail!("request {id} failed: {} {}", reply.status, reply.body);
                }
                let feedback = if model == "yield" {
                    json!({"request_id": id, "label": die.pass})
                } else {
                    let predicted = reply.body["outputs"][0]["data"][0]
                        .as_f64()
                        .unwrap_or(f64::NAN);
                    let within = u8::from((predicted - die.test_time_ms).abs() <= 5.0);
                    json!({"request_id": id, "value": die.test_time_ms, "metrics": {"within_spec": within}})
                };
                self.pending.push(feedback.clone());
                sent.push((reply.version, feedback));
            }
        }
        Ok(sent)
    }

    /// Posts a random part of the labels waiting, in random order; the rest arrive later.
    async fn deliver_labels(&mut self, all: bool) -> Result<u64> {
        self.pending.shuffle(&mut self.rng);
        let keep = if all { 0 } else { self.pending.len() / 4 };
        let send: Vec<Value> = self.pending.drain(keep..).collect();
        if send.is_empty() {
            return Ok(0);
        }
        let r = self
            .call("POST", "/v1/feedback", &[], Value::Array(send).to_string())
            .await?;
        if r.status != 200 {
            bail!("feedback refused: {}", r.body);
        }
        Ok(r.body["accepted"].as_u64().unwrap_or(0))
    }

    /// Drives traffic to `model` until rollout `name` leaves `running` phases (or `until`).
    async fn run_until(
        &mut self,
        model: &str,
        name: &str,
        until: &[&str],
        bar: &ProgressBar,
        label: impl Fn(&RolloutView) -> String,
    ) -> Result<RolloutView> {
        let started = Instant::now();
        loop {
            self.batch(model, self.sizes.batch).await?;
            self.deliver_labels(false).await?;
            // Let the controller's loop (running on the scaled clock) look at the new data.
            tokio::time::sleep(Duration::from_millis(60)).await;
            let view = self.rollout(name).await?;
            bar.set_message(label(&view));
            bar.inc(self.sizes.batch);
            let phase = view.phase.as_str();
            if until.contains(&phase) || matches!(phase, "completed" | "rolled_back" | "aborted") {
                self.deliver_labels(true).await?;
                return Ok(view);
            }
            if started.elapsed() > Duration::from_secs(180) {
                bail!(
                    "rollout {name} did not finish: {} ({})",
                    phase,
                    view.reason.as_deref().unwrap_or("")
                );
            }
        }
    }
}

/// Runs futures concurrently on the current task (each is short-lived and independent).
async fn futures_join<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    join_all(futures.into_iter().map(Box::pin).collect()).await
}

async fn join_all<F: std::future::Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futures.iter_mut().enumerate() {
            if results[i].is_none() {
                match std::pin::Pin::new(f).poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

fn bar(len: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("  {prefix:>10} [{bar:30}] {pos:>6} requests  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}

fn f(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".to_string(), |x| format!("{x:.digits$}"))
}

fn label(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn pct(v: Option<f64>) -> String {
    v.map_or("—".into(), |x| format!("{:.1}%", x * 100.0))
}

fn heading(n: u32, title: &str) {
    println!("\n\x1b[1m{n}. {title}\x1b[0m");
}

fn write_models(dir: &Path) -> Result<()> {
    let models = dir.join("models");
    std::fs::create_dir_all(&models).with_context(|| format!("creating {}", models.display()))?;
    for (name, bytes) in MODELS {
        std::fs::write(models.join(name), bytes)?;
    }
    std::fs::write(models.join("validation_yield.csv"), VALIDATION_SET)?;
    Ok(())
}

async fn start_webhook(alerts: Arc<Mutex<Vec<Value>>>) -> Result<String> {
    let app = Router::new()
        .route(
            "/alerts",
            post(
                |State(a): State<Arc<Mutex<Vec<Value>>>>, Json(v): Json<Value>| async move {
                    a.lock().push(v);
                    "ok"
                },
            ),
        )
        .with_state(alerts);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/alerts", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

fn gateway_yaml(webhook: &str) -> String {
    format!(
        r#"
alerts: {{ webhooks: [{{ url: "{webhook}", min_severity: P3 }}] }}
controller: {{ tick_ms: 50 }}
log: {{ capture_inputs: 0.25, batch_size: 1024 }}
models:
  yield:
    routing_key: {{ header: x-wafer-id }}
    versions:
      v1: {{ onnx: models/yield_v1.onnx }}
      v2: {{ onnx: models/yield_v2.onnx }}
      v3: {{ onnx: models/yield_v3.onnx }}
      v2r: {{ onnx: models/yield_v2.onnx }}
    serve: {{ kind: single, version: v1 }}
  testtime:
    task: regression
    routing_key: {{ header: x-wafer-id }}
    versions:
      v1: {{ onnx: models/testtime_v1.onnx }}
      v2: {{ onnx: models/testtime_v2.onnx }}
    serve: {{ kind: single, version: v1 }}
"#
    )
}

async fn demo(args: DemoArgs) -> Result<()> {
    let temp;
    let dir = match &args.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let sizes = if args.fast {
        Sizes {
            batch: 200,
            shadow_labelled: 600,
            step_requests: 60,
            monitor_requests: 100,
        }
    } else {
        Sizes {
            batch: 400,
            shadow_labelled: 1500,
            step_requests: 150,
            monitor_requests: 300,
        }
    };
    let started = Instant::now();
    write_models(&dir)?;
    let alerts: Arc<Mutex<Vec<Value>>> = Arc::default();
    let webhook = start_webhook(alerts.clone()).await?;
    let config = parse_config(&gateway_yaml(&webhook), &dir, "demo config")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mut options = StartOptions::new(dir.join("switchyard.sqlite"));
    options.clock = Some(Arc::new(ScaledClock::new(args.scale)));
    options.base_dir = dir.clone();
    let gateway = Gateway::start(config, listener, options).await?;
    let mut d = Demo {
        base: gateway.url(),
        admin: AdminClient::new(&gateway.url())?.with_actor("demo"),
        client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        wafers: WaferGenerator::new(args.seed),
        rng: StdRng::seed_from_u64(args.seed ^ 0x5eed),
        pending: Vec::new(),
        alerts: alerts.clone(),
        sizes,
    };
    println!("\x1b[1mswitchyard demo\x1b[0m — safe rollouts of wafer-test models, on real traffic");
    println!(
        "  gateway  {}   (store: {})",
        gateway.url(),
        dir.join("switchyard.sqlite").display()
    );
    println!("  models   yield v1 (random forest), v2 (gradient boosting), v3 (trained on bad labels); testtime v1, v2");
    println!(
        "  clock    the controller's time runs {}x faster than real time",
        args.scale
    );
    println!(
        "  access   open mode (no credentials): admin API, feedback and inference take any caller"
    );

    // 1. Shadow → chained canary.
    heading(
        1,
        "Shadow: v1 serves, v2 gets a mirrored copy of every request",
    );
    println!("  Labels (pass/fail from final test) arrive late and out of order through POST /v1/feedback.");
    let shadow = format!(
        "name: yield-v2-shadow\nmodel: yield\nkind: shadow\nprimary: v1\ncandidate: v2\nsample: 100\nmin_labelled: {}\nmin_duration_ms: 300000\nthen_canary:\n  stable: v1\n  candidate: v2\n  min_requests: {}\n  min_duration_ms: 60000\n  gate: {{ min_labelled: 30, min_p95_increase_ms: {} }}\n",
        sizes.shadow_labelled, sizes.step_requests, args.p95_floor_ms
    );
    d.apply(&shadow).await?;
    let pb = bar(sizes.shadow_labelled, "shadow");
    d.run_until("yield", "yield-v2-shadow", &[], &pb, reason)
        .await?;
    pb.finish_and_clear();
    let report = d.report("yield-v2-shadow").await?;
    let analysis = report
        .analysis
        .shadow
        .context("the shadow's report has no shadow analysis")?;
    let s = &analysis.report;
    println!(
        "  compared {} requests, {} labelled pairs",
        s.compared, s.labelled
    );
    println!("  agreement            {}", pct(s.agreement));
    println!(
        "  accuracy             v1 {}   v2 {}   ({:+.2} points)",
        pct(s.primary_accuracy),
        pct(s.shadow_accuracy),
        s.accuracy_difference.unwrap_or(0.0) * 100.0
    );
    if let Some(m) = &s.mcnemar {
        println!(
            "  McNemar              b = {} (only v1 right), c = {} (only v2 right), χ² = {:.2}, p = {:.2e} (exact p = {:.2e})",
            m.b, m.c, m.statistic, m.p_value, m.exact_p_value
        );
    }
    let (p, c) = (&analysis.primary_stats, &analysis.shadow_stats);
    println!(
        "  latency p50 / p95    v1 {} / {} ms   v2 {} / {} ms",
        f(p.p50_ms, 2),
        f(p.p95_ms, 2),
        f(c.p50_ms, 2),
        f(c.p95_ms, 2)
    );
    for case in analysis
        .disagreements
        .iter()
        .filter(|c| c.input.is_some())
        .take(3)
    {
        let x = case
            .input
            .as_ref()
            .and_then(|i| i.pointer("/inputs/0/data"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let at = |i: usize| x.get(i).and_then(Value::as_f64).unwrap_or(0.0);
        println!(
            "  disagreement {:<14} v1 says {} · v2 says {} · truth {}   (vdd {:.3}, idd {:.1}, freq {:.2}, temp {:.0}°C, die ({}, {}))",
            case.request_id,
            first(&case.primary),
            first(&case.shadow),
            case.truth.as_deref().map_or_else(|| "—".to_string(), first),
            at(0),
            at(1),
            at(2),
            at(3),
            at(4),
            at(5)
        );
    }
    let rec = report
        .rollout
        .recommendation
        .map_or("?", |r| r.as_str())
        .to_string();
    println!(
        "  recommendation       \x1b[1m{rec}\x1b[0m ({})",
        report.rollout.reason.as_deref().unwrap_or("")
    );

    heading(
        2,
        "Canary of v2, chained on PROMOTE: 5% → 25% → 50% → 100%, a health gate at each step",
    );
    let canary_name = "yield-v2-shadow-canary";
    let pb = bar(4 * sizes.step_requests * 20, "canary v2");
    let view = d
        .run_until("yield", canary_name, &[], &pb, |v| {
            format!(
                "step {} · {}",
                v.step,
                v.reason.as_deref().unwrap_or("gate passed")
            )
        })
        .await?;
    pb.finish_and_clear();
    print_gates(&d, canary_name).await?;
    outcome(&view);

    heading(
        3,
        "Canary of v3 (retrained on mislabelled hot-tester data) against v2",
    );
    let v3 = format!("name: yield-v3-canary\nmodel: yield\nkind: canary\nstable: v2\ncandidate: v3\nmin_requests: {}\nmin_duration_ms: 60000\ngate: {{ min_labelled: 30, min_p95_increase_ms: {} }}\n", sizes.step_requests, args.p95_floor_ms);
    d.apply(&v3).await?;
    let pb = bar(sizes.step_requests * 20, "canary v3");
    let view = d
        .run_until("yield", "yield-v3-canary", &[], &pb, |v| {
            format!("step {} · {}", v.step, v.reason.as_deref().unwrap_or(""))
        })
        .await?;
    pb.finish_and_clear();
    print_gates(&d, "yield-v3-canary").await?;
    outcome(&view);
    let rollback_alert = wait_for_alert(&d.alerts, "yield-v3-canary", "rollback").await;
    match &rollback_alert {
        Some(a) => println!(
            "  webhook received     [{}] {}",
            a["severity"].as_str().unwrap_or(""),
            a["title"].as_str().unwrap_or("")
        ),
        None => println!("  webhook received     nothing (!)"),
    }

    heading(
        4,
        "Shadow of the test-time regressor: v2 (gradient boosting) behind v1 (random forest)",
    );
    println!("  Labels are the measured test times; the two agree when within 5% of each other.");
    let tt_shadow = format!(
        "name: testtime-v2-shadow\nmodel: testtime\nkind: shadow\nprimary: v1\ncandidate: v2\nsample: 100\nmin_labelled: {}\n",
        sizes.shadow_labelled / 2
    );
    d.apply(&tt_shadow).await?;
    let pb = bar(sizes.shadow_labelled / 2, "shadow");
    let view = d
        .run_until("testtime", "testtime-v2-shadow", &[], &pb, reason)
        .await?;
    pb.finish_and_clear();
    let report = d.report("testtime-v2-shadow").await?;
    let s = report
        .analysis
        .shadow
        .context("the shadow's report has no shadow analysis")?
        .report;
    println!(
        "  compared {} requests, {} labelled pairs, agreement {}",
        s.compared,
        s.labelled,
        pct(s.agreement)
    );
    println!(
        "  MAE                  v1 {} ms   v2 {} ms   ({} change)",
        f(s.primary_mae, 2),
        f(s.shadow_mae, 2),
        pct(s.mae_change)
    );
    println!(
        "  RMSE / MAPE          v1 {} ms / {}   v2 {} ms / {}",
        f(s.primary_rmse, 2),
        pct(s.primary_mape),
        f(s.shadow_rmse, 2),
        pct(s.shadow_mape)
    );
    if let Some(t) = &s.paired_t {
        println!(
            "  paired t on |errors| t = {:.2}, p = {:.2e} (rule: PROMOTE when MAE falls > 10% with p < 0.05)",
            t.t, t.p_value
        );
    }
    let regression_rec = view.recommendation.map_or("?", |r| r.as_str()).to_string();
    println!(
        "  recommendation       \x1b[1m{regression_rec}\x1b[0m ({})",
        view.reason.as_deref().unwrap_or("")
    );

    heading(
        5,
        "A/B test of the test-time regressor: v1 vs v2, split by wafer",
    );
    let ab = "name: testtime-ab\nmodel: testtime\nkind: ab\ncontrol: v1\ntreatment: v2\ntreatment_weight: 50\nmetric: conversion:within_spec\nbaseline: 0.45\nmde: 0.15\nalpha: 0.05\npower: 0.8\nsequential: true\nauto_promote: true\n";
    d.apply(ab).await?;
    let plan = d.report("testtime-ab").await?;
    println!("  metric               share of predictions within 5 ms of the measured test time");
    println!("  sample-size plan     {} per arm to detect 45% → 60% (α = 0.05, power 0.8); mSPRT may stop earlier", plan.analysis.ab.and_then(|a| a.report).and_then(|r| r.required_per_arm).map_or_else(|| "—".to_string(), |n| n.to_string()));
    let pb = bar(1_000, "A/B");
    let view = d
        .run_until("testtime", "testtime-ab", &[], &pb, reason)
        .await?;
    pb.finish_and_clear();
    let r = d.report("testtime-ab").await?;
    let analysis = r
        .analysis
        .ab
        .context("the A/B test's report has no A/B analysis")?;
    let a = analysis
        .report
        .as_ref()
        .context("the A/B test's report has no two-arm analysis")?;
    println!(
        "  arms                 v1 {}/{} within spec, v2 {}/{}",
        a.control.successes, a.control.trials, a.treatment.successes, a.treatment.trials
    );
    let split: Vec<String> = analysis
        .observed_split
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "  SRM check            observed split {} · p = {} · {}",
        split.join(" "),
        f(a.srm.as_ref().map(|s| s.p_value), 3),
        if a.srm.as_ref().is_some_and(|s| s.mismatch) {
            "MISMATCH"
        } else {
            "ok"
        }
    );
    if let Some(t) = &a.test {
        println!(
            "  z-test               diff {:+.1} points, z = {:.2}, p = {:.2e}, 95% CI [{:+.1}, {:+.1}] points",
            t.diff * 100.0,
            t.z,
            t.p_value,
            t.ci_low * 100.0,
            t.ci_high * 100.0
        );
    }
    println!(
        "  Bayesian             P(v2 beats v1) = {}",
        f(a.bayes.map(|b| b.prob_b_beats_a), 4)
    );
    if let Some(w) = &a.mae_welch {
        println!(
            "  MAE (Welch)          v2 − v1 = {:.2} ms, p = {:.2e}",
            w.mean_diff, w.p_value
        );
    }
    outcome(&view);

    heading(
        6,
        "Bandit over the three yield models: Thompson sampling moves traffic to the most accurate",
    );
    let bandit_result = bandit_act(&mut d).await?;

    heading(
        7,
        "Blue-green: v2 (blue) → v2r (green, the same model repackaged)",
    );
    let bg = format!("name: yield-bluegreen\nmodel: yield\nkind: blue_green\nactive: v2\ncandidate: v2r\nvalidation_set: models/validation_yield.csv\nmin_accuracy: 0.9\nmax_p95_ms: {}\nsmoke_requests: 10\nmonitor_min_requests: {}\nmonitor_duration_ms: 120000\nmax_error_rate: 0.02\nmin_p95_increase_ms: {}\n", args.p95_floor_ms.max(250.0), sizes.monitor_requests, args.p95_floor_ms);
    d.apply(&bg).await?;
    let pb = bar(sizes.monitor_requests * 4, "blue-green");
    let view = d
        .run_until("yield", "yield-bluegreen", &["retaining"], &pb, |v| {
            v.phase.as_str().to_string()
        })
        .await?;
    pb.finish_and_clear();
    for e in d.events("yield-bluegreen").await? {
        match e.kind.as_str() {
            "validated" => println!(
                "  validation           {} labelled rows replayed against green: accuracy {}, p95 {} ms",
                f(e.num("samples"), 0),
                pct(e.num("accuracy")),
                f(e.num("p95_ms"), 2)
            ),
            "switched" => println!("  switch               all traffic to green; routing table swapped in {} µs", f(e.num("routing_swap_us"), 0)),
            "monitor_passed" => println!("  monitoring window    passed: {} requests on green, error rate {}", f(e.num("green_requests"), 0), pct(e.num("green_error_rate"))),
            _ => {}
        }
    }
    println!(
        "  phase                {} (blue stays warm for 24 h)",
        view.phase.as_str()
    );
    let drill = Instant::now();
    d.admin.command("yield-bluegreen", "rollback").await?;
    let back = d.batch("yield", 20).await?;
    let on_blue = back.iter().filter(|(v, _)| v == "v2").count();
    let swap = d
        .events("yield-bluegreen")
        .await?
        .iter()
        .filter(|e| e.kind == "rolled_back")
        .map(|e| f(e.num("routing_swap_us"), 0))
        .next()
        .unwrap_or_default();
    println!(
        "  rollback drill       switched back to blue: routing swap {swap} µs, admin call + 20 requests in {:.1} ms, {on_blue}/20 served by blue",
        drill.elapsed().as_secs_f64() * 1000.0
    );
    d.deliver_labels(true).await?;

    // 8. Summary.
    heading(8, "Summary");
    let list = d.admin.rollouts().await?.rollouts;
    println!(
        "  {:<26} {:<11} {:<14} {:<12} outcome",
        "rollout", "kind", "versions", "phase"
    );
    let mut summary = Vec::new();
    for r in &list {
        println!(
            "  {:<26} {:<11} {:<14} {:<12} {}",
            r.name,
            r.kind,
            if r.arms.is_empty() {
                format!("{} → {}", r.current, r.candidate)
            } else {
                r.arms.join(" | ")
            },
            r.phase.as_str(),
            r.reason.as_deref().unwrap_or("")
        );
        summary.push(json!({"name": r.name, "kind": r.kind, "phase": r.phase, "recommendation": r.recommendation, "reason": r.reason}));
    }
    let audit = d.admin.audit_verify().await?;
    let audit_ok = audit.ok;
    println!(
        "  audit chain          {} ({} events, hash-chained)",
        if audit_ok { "verified OK" } else { "BROKEN" },
        audit.events
    );
    let alerts: Vec<Value> = d.alerts.lock().clone();
    println!(
        "  alerts received      {} by the demo's webhook listener",
        alerts.len()
    );
    let mut html = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>switchyard demo report</title></head><body>");
    for r in &list {
        let page = d.admin.report_as(&r.name, "html").await?;
        let text = String::from_utf8_lossy(&page);
        let text = text.as_ref();
        let body = text.split_once("<body>").map_or(text, |(_, b)| b);
        html.push_str(body.split_once("</body>").map_or(body, |(b, _)| b));
        html.push_str("<hr>");
    }
    html.push_str("</body></html>");
    let html_path = dir.join("demo-report.html");
    std::fs::write(&html_path, html)?;
    println!("  HTML report          {}", html_path.display());
    let summary = json!({
        "rollouts": summary,
        "audit_ok": audit_ok,
        "audit_events": audit.events,
        "alerts": alerts,
        "shadow_recommendation": rec,
        "regression_recommendation": regression_rec,
        "bandit": bandit_result,
        "seconds": started.elapsed().as_secs_f64(),
    });
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!("  finished in {:.1} s", started.elapsed().as_secs_f64());

    if args.serve {
        println!(
            "\n  The gateway stays up: {}/admin/v1/rollouts, {}/metrics — Ctrl-C to stop.",
            gateway.url(),
            gateway.url()
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    gateway.shutdown().await?;
    if !audit_ok {
        bail!("the audit chain did not verify");
    }
    Ok(())
}

/// Act 6: a bandit over yield v2 (serving, the control), v1 and v3 from equal shares. Returns
/// its result for the summary.
async fn bandit_act(d: &mut Demo) -> Result<Value> {
    let name = "yield-bandit";
    let spec = format!(
        "name: {name}\nmodel: yield\nkind: bandit\ncontrol: v2\ntreatment: v1\nvariants: [{{version: v3}}]\nmetric: accuracy\n\
         guardrails: [{{metric: error_rate, max: 0.02}}]\n\
         bandit: {{min_share: 5, max_step: 10, reweight_every_ms: 30000, min_samples: 40, stop_at_p_best: 0.999}}\nauto_promote: true\n"
    );
    let started = d.apply(&spec).await?;
    println!(
        "  arms                 {} from equal shares; every 30 s of controller time Thompson sampling re-weights them",
        started
            .arms
            .iter()
            .enumerate()
            .map(|(i, v)| if i == 0 { format!("{v} (control)") } else { v.clone() })
            .collect::<Vec<_>>()
            .join(" · ")
    );
    println!("  limits               each arm keeps 5%, no weight moves more than 10 points at once, a guardrail stops an arm above 2% errors");
    let pb = bar(3_000, "bandit");
    let view = d.run_until("yield", name, &[], &pb, reason).await?;
    pb.finish_and_clear();
    let report = d.report(name).await?;
    let ab = report
        .analysis
        .ab
        .context("the bandit's report has no A/B analysis")?;
    let abn = ab
        .abn
        .context("the bandit's report has no k-arm analysis")?;
    let versions: Vec<&str> = abn.arms.iter().map(|a| a.version.as_str()).collect();
    let shown = abn.reweightings.len();
    for (i, r) in abn.reweightings.iter().enumerate() {
        // The first three and the last.
        if i >= 3 && i + 1 < shown {
            if i == 3 {
                println!("  …");
            }
            continue;
        }
        let per = |m: &std::collections::BTreeMap<String, f64>, digits: usize, unit: &str| {
            abn.arms
                .iter()
                .filter_map(|a| {
                    m.get(&a.variant)
                        .map(|x| format!("{} {x:.digits$}{unit}", a.version))
                })
                .collect::<Vec<_>>()
                .join(" · ")
        };
        println!(
            "  re-weighting {:<7} {}   P(best) {}   keys moved {}",
            i + 1,
            per(&r.weight_percent, 1, "%"),
            per(&r.p_best, 3, ""),
            pct(r.moved_fraction)
        );
    }
    let total: u64 = abn
        .arms
        .iter()
        .map(|a| ab.observed_split.get(&a.variant).copied().unwrap_or(0))
        .sum();
    println!(
        "  accuracy             {}",
        abn.arms
            .iter()
            .map(|a| format!("{} {} of {}", a.version, pct(a.value), a.samples))
            .collect::<Vec<_>>()
            .join(" · ")
    );
    // Regret: wrong answers the bandit's split gave against those an equal split would have
    // given, at the arms' observed accuracies.
    let served = |a: &switchyard_server::api::ArmView| {
        ab.observed_split.get(&a.variant).copied().unwrap_or(0) as f64
    };
    let wrong: f64 = abn
        .arms
        .iter()
        .map(|a| served(a) * (1.0 - a.value.unwrap_or(0.0)))
        .sum();
    let equal_wrong: f64 = abn
        .arms
        .iter()
        .map(|a| total as f64 / abn.arms.len() as f64 * (1.0 - a.value.unwrap_or(0.0)))
        .sum();
    let best = abn
        .arms
        .iter()
        .max_by(|x, y| x.value.unwrap_or(0.0).total_cmp(&y.value.unwrap_or(0.0)))
        .map_or("", |a| a.version.as_str());
    let best_share = abn
        .arms
        .iter()
        .find(|a| a.version == best)
        .map_or(0.0, |a| served(a) / (total.max(1) as f64));
    println!(
        "  traffic              {best} served {} of {total} requests (an equal split: {}); about {:.0} wrong answers instead of {:.0}",
        pct(Some(best_share)),
        pct(Some(1.0 / abn.arms.len() as f64)),
        wrong,
        equal_wrong
    );
    outcome(&view);
    Ok(json!({
        "name": name,
        "arms": versions,
        "phase": view.phase,
        "reason": view.reason,
        "reweightings": shown,
        "best_share": best_share,
        "wrong_answers": wrong,
        "equal_split_wrong_answers": equal_wrong,
    }))
}

async fn print_gates(d: &Demo, name: &str) -> Result<()> {
    for e in d.events(name).await? {
        match e.kind.as_str() {
            "gate_passed" | "gate_failed" => println!(
                "  {:<20} {} · canary {} req, acc {} vs {}, p95 {} vs {} ms, errors {} vs {}",
                e.kind,
                e.message,
                f(e.num("canary_requests"), 0),
                pct(e.num("canary_accuracy")),
                pct(e.num("stable_accuracy")),
                f(e.num("canary_p95_us").map(|u| u / 1000.0), 2),
                f(e.num("stable_p95_us").map(|u| u / 1000.0), 2),
                pct(e.num("canary_error_rate")),
                pct(e.num("stable_error_rate")),
            ),
            "step_advanced" | "promoted" | "rolled_back" => {
                println!("  {:<20} {}", e.kind, e.message)
            }
            _ => {}
        }
    }
    Ok(())
}

fn reason(v: &RolloutView) -> String {
    v.reason.clone().unwrap_or_default()
}

fn outcome(view: &RolloutView) {
    println!(
        "  outcome              \x1b[1m{}\x1b[0m — {}",
        view.phase.as_str(),
        view.reason.as_deref().unwrap_or("")
    );
}

/// The first value of a prediction or label, as text.
fn first(values: &[Value]) -> String {
    values.first().map_or_else(|| "—".to_string(), label)
}

async fn wait_for_alert(alerts: &Mutex<Vec<Value>>, rollout: &str, kind: &str) -> Option<Value> {
    for _ in 0..200 {
        if let Some(a) = alerts
            .lock()
            .iter()
            .find(|a| a["rollout"] == rollout && a["kind"] == kind)
            .cloned()
        {
            return Some(a);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}
