//! The dashboard at `/ui`, tested in a real browser.
//!
//! A gateway runs in-process on the shipped ONNX models with an admin token; a shadow, two
//! canaries, an A/B test, a bandit and a blue-green switch are applied through the admin API and fed
//! real traffic and ground truth, with the controller ticked on an explicit clock so every
//! rollout has numbers and history. Then headless Chromium (Debian's `chromium`) is driven over
//! the DevTools protocol (a small WebSocket client below; no new dependency): the page asks for
//! the token, each view is opened by clicking its tab and must show the API's numbers and draw
//! its charts, the A/B numbers must update by polling without a reload, and clicking
//! "Roll back" (then confirming) must roll the canary back. Screenshots of every view go to
//! `target/ui-screenshots/` (or `$SWITCHYARD_UI_SCREENSHOTS`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::cdp;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::TestGateway;
use switchyard_server::api::Report;
use switchyard_wafer::{Die, WaferGenerator};

const TOKEN: &str = "ui-test-token-7f3a";

// ---------------------------------------------------------------------------------------------
// Data: wafer-test records from the distribution the shipped models were trained on
// (`switchyard-wafer`, the demo's generator), with their true bin and test time.

type Wafers = WaferGenerator;

fn gateway_yaml() -> String {
    r#"
log: { capture_inputs: 1.0, batch_size: 512 }
models:
  yield:
    routing_key: { header: x-wafer-id }
    versions:
      v1: { onnx: models/yield_v1.onnx }
      v2: { onnx: models/yield_v2.onnx }
      v3: { onnx: models/yield_v3.onnx }
    serve: { kind: single, version: v1 }
  yield-fab2:
    routing_key: { header: x-wafer-id }
    versions:
      v2: { onnx: models/yield_v2.onnx }
      v2r: { onnx: models/yield_v2.onnx }
    serve: { kind: single, version: v2 }
  yield-fab3:
    routing_key: { header: x-wafer-id }
    versions:
      v1: { onnx: models/yield_v1.onnx }
      v2: { onnx: models/yield_v2.onnx }
      v3: { onnx: models/yield_v3.onnx }
    serve: { kind: single, version: v2 }
  testtime:
    task: regression
    routing_key: { header: x-wafer-id }
    versions:
      v1: { onnx: models/testtime_v1.onnx }
      v2: { onnx: models/testtime_v2.onnx }
    serve: { kind: single, version: v1 }
"#
    .to_string()
}

const SHADOW: &str = "name: yield-v2-shadow\nmodel: yield\nkind: shadow\nprimary: v1\ncandidate: v2\nsample: 100\nmin_labelled: 700\nmin_duration_ms: 600000\n";
const CANARY_V3: &str = "name: yield-v3-canary\nmodel: yield\nkind: canary\nstable: v1\ncandidate: v3\nsteps: [{ weight: 20 }, { weight: 50 }, { weight: 100 }]\nmin_requests: 60\nmin_duration_ms: 60000\ngate: { min_labelled: 30, max_p95_increase: null }\n";
const CANARY_V2: &str = "name: yield-v2-canary\nmodel: yield\nkind: canary\nstable: v1\ncandidate: v2\nsteps: [{ weight: 20 }, { weight: 40 }, { weight: 60 }, { weight: 100 }]\nmin_requests: 40\nmin_duration_ms: 60000\ngate: { min_labelled: 20, max_p95_increase: null }\n";
const BLUE_GREEN: &str = "name: yield-fab2-bluegreen\nmodel: yield-fab2\nkind: blue_green\nactive: v2\ncandidate: v2r\nvalidation_set: models/validation_yield.csv\nmin_accuracy: 0.9\nsmoke_requests: 10\nmonitor_min_requests: 120\nmonitor_duration_ms: 60000\nmax_error_rate: 0.02\nmax_p95_ratio: null\n";
const BANDIT: &str = "name: yield-fab3-bandit\nmodel: yield-fab3\nkind: bandit\ncontrol: v2\ntreatment: v1\nvariants: [{version: v3}]\nmetric: accuracy\nguardrails: [{metric: error_rate, max: 0.02}]\nbandit: {min_samples: 20, reweight_every_ms: 30000, stop_at_p_best: 0.99999}\n";
const AB: &str = "name: testtime-ab\nmodel: testtime\nkind: ab\ncontrol: v1\ntreatment: v2\ntreatment_weight: 50\nmetric: conversion:within_spec\nbaseline: 0.45\nmde: 0.10\nalpha: 0.05\npower: 0.8\nauto_promote: true\n";

/// A rollout's phase, step and why it is there (its last event's reason), so that a failed
/// assertion on the phase explains itself.
async fn phase(tg: &TestGateway, name: &str) -> (String, usize, String) {
    let v = tg.admin().rollout(name).await.unwrap();
    let last = tg
        .events(name)
        .await
        .last()
        .map(|e| format!("last event {}: {}", e.kind, e.message))
        .unwrap_or_default();
    (
        v.phase.as_str().to_string(),
        v.step,
        format!("reason {:?}; {last}", v.reason),
    )
}

/// Sends `n` dies to `model` (8 at a time), then their ground truth through `/v1/feedback`.
async fn traffic(tg: &TestGateway, wafers: &parking_lot::Mutex<Wafers>, model: &str, n: usize) {
    let dies: Vec<(String, Die)> = {
        let mut w = wafers.lock();
        (0..n)
            .map(|_| {
                let die = w.die();
                (format!("{model}-{}", die.id), die)
            })
            .collect()
    };
    let dies = Arc::new(dies);
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let (client, url, dies) = (
                tg.client.clone(),
                tg.url(&format!("/v2/models/{model}/infer")),
                dies.clone(),
            );
            let regression = model == "testtime";
            tokio::spawn(async move {
                let mut labels = Vec::new();
                for (id, die) in dies.iter().skip(t).step_by(8) {
                    let body = json!({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": die.features}]});
                    let wafer = format!("W{}", &id[id.len() - 6..]);
                    let r = client
                        .post_json(&url, &[("x-wafer-id", &wafer), ("x-request-id", id)], &body)
                        .await;
                    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                    labels.push(if regression {
                        let predicted = r.json()["outputs"][0]["data"][0].as_f64().unwrap();
                        let within = u8::from((predicted - die.test_time_ms).abs() <= 5.0);
                        json!({"request_id": id, "value": die.test_time_ms, "metrics": {"within_spec": within}})
                    } else {
                        json!({"request_id": id, "label": die.pass})
                    });
                }
                labels
            })
        })
        .collect();
    let mut labels = Vec::new();
    for t in tasks {
        labels.extend(t.await.unwrap());
    }
    // Labels need a credential with the feedback role once the gateway has credentials.
    let bearer = format!("Bearer {TOKEN}");
    let r = tg
        .client
        .post_json(
            &tg.url("/v1/feedback"),
            &[("authorization", &bearer)],
            &Value::Array(labels),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    tg.gateway.state.log.flush().await.unwrap();
}

/// One controller tick after `advance_ms` of simulated time; waits long enough in real time
/// for the controller to record a history point (it keeps one per 250 ms).
async fn tick(tg: &TestGateway, advance_ms: i64) {
    tokio::time::sleep(Duration::from_millis(260)).await;
    tg.tick(advance_ms).await;
}

/// Plays every rollout far enough for each view to have numbers and history.
async fn scenario(tg: &TestGateway, wafers: &parking_lot::Mutex<Wafers>) {
    // 1. Shadow of yield v2 behind v1, until it concludes.
    tg.apply(SHADOW).await;
    for round in 0.. {
        traffic(tg, wafers, "yield", 100).await;
        tick(tg, 60_000).await;
        let (p, _, why) = phase(tg, "yield-v2-shadow").await;
        if p != "running" {
            assert_eq!(p, "completed", "the shadow ended: {why}");
            break;
        }
        assert!(round < 30, "the shadow did not conclude: {why}");
    }
    // 2. Canary of the regressed v3: its gate fails and it is rolled back.
    tg.apply(CANARY_V3).await;
    for round in 0.. {
        traffic(tg, wafers, "yield", 100).await;
        tick(tg, 30_000).await;
        let (p, _, why) = phase(tg, "yield-v3-canary").await;
        if p != "running" {
            assert_eq!(p, "rolled_back", "the v3 canary ended: {why}");
            assert!(
                why.contains("accuracy"),
                "v3 rolled back on accuracy: {why}"
            );
            break;
        }
        assert!(round < 30, "the v3 canary did not end: {why}");
    }
    // 3. Canary of v2, left running at its third step (60%).
    tg.apply(CANARY_V2).await;
    for round in 0.. {
        traffic(tg, wafers, "yield", 80).await;
        tick(tg, 30_000).await;
        let (p, step, why) = phase(tg, "yield-v2-canary").await;
        assert_eq!(p, "running", "the v2 canary left running: {why}");
        if step >= 3 {
            break;
        }
        assert!(round < 40, "the v2 canary did not reach step 3: {why}");
    }
    // 4. Blue-green on the second fab's deployment: validate, switch, monitor, retain.
    traffic(tg, wafers, "yield-fab2", 120).await;
    tg.apply(BLUE_GREEN).await;
    for round in 0.. {
        let (p, _, why) = phase(tg, "yield-fab2-bluegreen").await;
        if p == "retaining" {
            break;
        }
        assert!(
            matches!(p.as_str(), "validating" | "monitoring" | "running"),
            "blue-green ended in {p}: {why}"
        );
        // The validation replays 1000 rows against green in the background: light traffic to
        // blue meanwhile.
        if p == "validating" {
            traffic(tg, wafers, "yield-fab2", 16).await;
            tick(tg, 5_000).await;
        } else {
            traffic(tg, wafers, "yield-fab2", 60).await;
            tick(tg, 20_000).await;
        }
        assert!(round < 200, "blue-green did not switch: {why}");
    }
    // 5. A/B test of the test-time regressor, short of its sample size (it keeps running).
    tg.apply(AB).await;
    for _ in 0..6 {
        traffic(tg, wafers, "testtime", 48).await;
        tick(tg, 30_000).await;
    }
    let (p, _, why) = phase(tg, "testtime-ab").await;
    assert_eq!(p, "running", "the A/B test: {why}");
    // 6. A bandit over three yield models, re-weighted a few times.
    tg.apply(BANDIT).await;
    for _ in 0..4 {
        traffic(tg, wafers, "yield-fab3", 90).await;
        tick(tg, 30_000).await;
    }
    // Paused, so that the ticks while the browser looks add no re-weighting to the trail.
    tg.admin()
        .command("yield-fab3-bandit", "pause")
        .await
        .unwrap();
}

fn new_wafers(seed: u64) -> parking_lot::Mutex<Wafers> {
    parking_lot::Mutex::new(WaferGenerator::new(seed))
}

// ---------------------------------------------------------------------------------------------
// The assets, without a browser.

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary_without_the_token() {
    let tg = TestGateway::start_with_token(&gateway_yaml(), Some(TOKEN)).await;
    for path in ["/ui", "/ui/"] {
        let r = tg.client.get(&tg.url(path)).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
        let csp = r.header("content-security-policy");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
            "{csp}"
        );
        let html = String::from_utf8_lossy(&r.body).to_string();
        assert!(
            html.contains("/ui/ui.js") && html.contains("/ui/ui.css"),
            "{html}"
        );
    }
    let js = tg.client.get(&tg.url("/ui/ui.js")).await;
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").starts_with("text/javascript"));
    let css = tg.client.get(&tg.url("/ui/ui.css")).await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").starts_with("text/css"));
    assert_eq!(tg.client.get(&tg.url("/ui/nope.js")).await.status, 404);
    // The page's data needs the token; the page itself holds none.
    assert_eq!(
        tg.client.get(&tg.url("/admin/v1/rollouts")).await.status,
        401
    );
    // Nothing is fetched from elsewhere, and no data is ever parsed as HTML.
    for (name, body) in [
        ("ui.html", switchyard_server::ui::HTML),
        ("ui.js", switchyard_server::ui::JS),
        ("ui.css", switchyard_server::ui::CSS),
    ] {
        let external = body
            .match_indices("http")
            .map(|(i, _)| &body[i..(i + 40).min(body.len())])
            .filter(|s| !s.starts_with("http://www.w3.org/2000/svg"))
            .collect::<Vec<_>>();
        assert!(external.is_empty(), "{name} refers to {external:?}");
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!body.contains(banned), "{name} uses {banned}");
        }
    }
    assert!(switchyard_server::ui::JS.contains("sessionStorage"));
    assert!(!switchyard_server::ui::JS.contains("localStorage"));
}

// ---------------------------------------------------------------------------------------------
// The dashboard in a real browser.

fn pct(v: Option<f64>) -> String {
    format!("{}%", to_fixed(v.expect("a rate") * 100.0, 1))
}

fn pval(p: f64) -> String {
    if p != 0.0 && p < 1e-4 {
        format!("{p:.2e}")
    } else {
        to_fixed(p, 4)
    }
}

fn ms(v: Option<f64>) -> String {
    format!("{} ms", to_fixed(v.expect("milliseconds"), 2))
}

/// `x.toFixed(digits)` as the page's JavaScript prints it: the exact binary value rounded half
/// up. Rust's `{:.2}` rounds an exact tie to even (0.125 -> "0.12" where the page shows
/// "0.13"), which sub-millisecond latencies in whole microseconds hit often.
fn to_fixed(x: f64, digits: usize) -> String {
    assert!(
        (0.0..1e12).contains(&x),
        "to_fixed is for small non-negative numbers: {x}"
    );
    let exact = format!("{x:.60}");
    let (int, frac) = exact.split_once('.').unwrap();
    let kept: u128 = format!("{int}{}", &frac[..digits]).parse().unwrap();
    let up = frac.as_bytes()[digits] >= b'5';
    let n = kept + u128::from(up);
    let scale = 10u128.pow(digits as u32);
    if digits == 0 {
        n.to_string()
    } else {
        format!("{}.{:0digits$}", n / scale, n % scale)
    }
}

#[test]
fn to_fixed_rounds_exact_ties_up_like_javascript() {
    assert_eq!(to_fixed(0.125, 2), "0.13");
    assert_eq!(to_fixed(0.375, 2), "0.38");
    assert_eq!(to_fixed(0.145, 2), "0.14"); // 0.1449999… in binary
    assert_eq!(to_fixed(27.845, 2), "27.84"); // 27.84499…
    assert_eq!(to_fixed(9.999, 2), "10.00");
    assert_eq!(to_fixed(3.0, 0), "3");
}

/// A JavaScript expression: the text of `[data-k=key]` in the current view.
fn text_of(key: &str) -> String {
    format!(
        "(() => {{ const el = document.querySelector('#view .view [data-k=\"{key}\"]'); return el ? el.textContent : null; }})()"
    )
}

/// A JavaScript expression: rows of the table `[data-k=key]` in the current view.
fn rows_of(key: &str) -> String {
    format!(
        "(() => {{ const t = document.querySelector('#view .view table[data-k=\"{key}\"]'); \
         return t ? Array.from(t.tBodies[0].rows).filter((r) => !r.querySelector('td.empty')).map((r) => Array.from(r.cells).map((c) => c.textContent)) : null; }})()"
    )
}

/// A JavaScript expression: how many points each series of chart `id` has.
fn chart_points(id: &str) -> String {
    format!(
        "(() => {{ const svg = document.querySelector('#view svg[data-chart=\"{id}\"]'); if (!svg) return null; \
         return Array.from(svg.querySelectorAll('path.series')).map((p) => Number(p.getAttribute('data-points'))); }})()"
    )
}

/// Waits until `[data-k=key]` reads `want` in the view of rollout `rollout` (or any view).
fn expect_text(b: &mut cdp::Browser, key: &str, want: &str) {
    let js = format!(
        "(() => {{ const t = {}; return t === {} ? t : null; }})()",
        text_of(key),
        serde_json::to_string(want).unwrap()
    );
    let got = b.eval(&text_of(key));
    if got.as_str() != Some(want) {
        let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            b.wait_for(&format!("{key} = {want}"), &js, Duration::from_secs(10));
        }));
        if waited.is_err() {
            let now = b.eval(&text_of(key));
            panic!("[data-k={key}] shows {now}, expected {want:?}");
        }
    }
}

fn open_view(b: &mut cdp::Browser, view: &str, rollout: Option<&str>) {
    b.click(&format!("#nav a[data-view=\"{view}\"]"));
    b.wait_for(
        &format!("the {view} view"),
        &format!("document.querySelector('#view .view[data-view=\"{view}\"]') !== null"),
        Duration::from_secs(15),
    );
    if let Some(name) = rollout {
        let pill = format!(".pills a[href=\"#/{view}/{name}\"]");
        let on_it =
            format!("document.querySelector('#view .view[data-rollout=\"{name}\"]') !== null");
        if b.eval(&on_it) != Value::Bool(true) {
            b.click(&pill);
        }
        b.wait_for(
            &format!("the view of {name}"),
            &on_it,
            Duration::from_secs(15),
        );
    }
}

fn min_points(b: &mut cdp::Browser, chart: &str, series: usize, points: u64) {
    let counts = b.wait_for(
        &format!("chart {chart}"),
        &chart_points(chart),
        Duration::from_secs(10),
    );
    let counts: Vec<u64> = counts
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert!(
        counts.len() >= series && counts.iter().take(series).all(|&c| c >= points),
        "chart {chart}: series point counts {counts:?}, wanted {series} series of at least {points}"
    );
}

fn screenshot_dir() -> PathBuf {
    let dir = match std::env::var_os("SWITCHYARD_UI_SCREENSHOTS") {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| support::repo_root().join("target"))
            .join("ui-screenshots"),
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What the API says, for the page to show.
struct Expected {
    shadow: Report,
    canary: Report,
    canary_v3: Report,
    bluegreen: Report,
    ab: Report,
    rollouts: Vec<(String, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_every_rollout_and_rolls_back_in_headless_chromium() {
    // Fail early (not skip) when there is no browser.
    let chromium = cdp::chromium();
    let started = Instant::now();
    let tg = Arc::new(TestGateway::start_with_token(&gateway_yaml(), Some(TOKEN)).await);
    let wafers = Arc::new(new_wafers(7));
    scenario(&tg, &wafers).await;
    let data_secs = started.elapsed().as_secs_f64();

    let report = |name: &'static str| {
        let tg = tg.clone();
        async move { tg.admin().report(name).await.unwrap() }
    };
    let list = tg.admin().rollouts().await.unwrap();
    let expected = Expected {
        shadow: report("yield-v2-shadow").await,
        canary: report("yield-v2-canary").await,
        canary_v3: report("yield-v3-canary").await,
        bluegreen: report("yield-fab2-bluegreen").await,
        ab: report("testtime-ab").await,
        rollouts: list
            .rollouts
            .iter()
            .map(|r| (r.name.clone(), r.phase.as_str().to_string()))
            .collect(),
    };
    assert_eq!(expected.rollouts.len(), 6);

    // The A/B test keeps getting traffic, and the controller keeps ticking, while the browser
    // looks: the page must follow without a reload.
    let stop = Arc::new(AtomicBool::new(false));
    let live = {
        let (tg, wafers, stop) = (tg.clone(), wafers.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rounds = 0u32;
            // At most 120 more requests, so the A/B test stays short of its sample size (and
            // the audit trail does not move) however slow the browser is.
            while !stop.load(Ordering::SeqCst) && rounds < 600 {
                if rounds < 30 {
                    traffic(&tg, &wafers, "testtime", 4).await;
                }
                tick(&tg, 5_000).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                rounds += 1;
            }
        })
    };

    let url = tg.gateway.url();
    let shots = screenshot_dir();
    let profile = tempfile::tempdir().unwrap();
    let handle = tokio::runtime::Handle::current();
    let tg2 = tg.clone();
    let browser_started = Instant::now();
    let driven = tokio::task::spawn_blocking(move || {
        drive(
            &chromium,
            profile.path(),
            &url,
            &shots,
            &expected,
            &handle,
            &tg2,
        );
        drop(profile);
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    live.await.unwrap();
    if let Err(e) = driven {
        std::panic::resume_unwind(e.into_panic());
    }
    eprintln!(
        "dashboard test: data {data_secs:.1} s, browser {:.1} s, screenshots in {}",
        browser_started.elapsed().as_secs_f64(),
        screenshot_dir().display()
    );
}

fn drive(
    chromium: &Path,
    profile: &Path,
    url: &str,
    shots: &Path,
    x: &Expected,
    handle: &tokio::runtime::Handle,
    tg: &TestGateway,
) {
    let t0 = Instant::now();
    let mut b = cdp::Browser::launch(chromium, &profile.join("profile"));
    let step = |what: &str| eprintln!("  [{:>5.1} s] {what}", t0.elapsed().as_secs_f64());
    step("chromium started");

    // 1. The API answers 401: the page asks for the token, shows no data, and takes it.
    b.navigate(&format!("{url}/ui"));
    b.wait_for(
        "the token prompt",
        "(() => { const d = document.getElementById('token-dialog'); return d && !d.hidden; })()",
        Duration::from_secs(20),
    );
    assert_eq!(
        b.eval(&rows_of("rollouts")),
        Value::Null,
        "no data without the token"
    );
    b.screenshot(&shots.join("token.png"), 900);
    b.click("#token-input");
    b.type_text(TOKEN);
    b.click("#token-submit");
    b.wait_for(
        "the overview",
        &format!(
            "(() => {{ const r = {}; return r && r.length === 6; }})()",
            rows_of("rollouts")
        ),
        Duration::from_secs(20),
    );
    assert_eq!(
        b.eval("sessionStorage.getItem('switchyard.adminToken')"),
        json!(TOKEN),
        "the token is kept for the tab"
    );
    assert!(
        !b.eval("location.href").as_str().unwrap().contains(TOKEN),
        "the token is never put in the URL"
    );
    step("token accepted");

    // 2. Overview: every rollout with its phase, split, last event and alerts.
    let rows = b.eval(&rows_of("rollouts"));
    let rows = rows.as_array().unwrap();
    for (name, phase) in &x.rollouts {
        let row = rows
            .iter()
            .find(|r| r[0].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing from the overview: {rows:?}"));
        assert_eq!(row[4].as_str(), Some(phase.as_str()), "{name}: {row}");
        assert!(
            row[6].as_str().unwrap().len() > 5,
            "{name} has a last event: {row}"
        );
    }
    let v3 = rows.iter().find(|r| r[0] == "yield-v3-canary").unwrap();
    assert!(
        v3[7].as_str().unwrap().contains("rollback"),
        "alert of the v3 rollback: {v3}"
    );
    let canary_row = rows.iter().find(|r| r[0] == "yield-v2-canary").unwrap();
    assert!(
        canary_row[5].as_str().unwrap().contains("canary v2 60%"),
        "{canary_row}"
    );
    expect_text(&mut b, "rollout-count", "6");
    expect_text(&mut b, "alert-count", "1");
    let models = b.eval(&rows_of("models"));
    assert_eq!(models.as_array().unwrap().len(), 4, "{models}");
    b.screenshot(&shots.join("overview.png"), 1600);
    step("overview checked");

    // 3. Shadow.
    open_view(&mut b, "shadow", Some("yield-v2-shadow"));
    let shadow = x
        .shadow
        .analysis
        .shadow
        .as_ref()
        .expect("a shadow analysis");
    let s = &shadow.report;
    let m = s.mcnemar.expect("McNemar on labelled pairs");
    expect_text(&mut b, "agreement", &pct(s.agreement));
    expect_text(&mut b, "primary-accuracy", &pct(s.primary_accuracy));
    expect_text(&mut b, "shadow-accuracy", &pct(s.shadow_accuracy));
    expect_text(&mut b, "mcnemar-p", &pval(m.p_value));
    expect_text(&mut b, "shadow-recommendation", s.recommendation.as_str());
    expect_text(&mut b, "phase", "completed");
    let sub = b.eval(&text_of("mcnemar-p-sub"));
    assert!(
        sub.as_str()
            .unwrap()
            .contains(&format!("b {} / c {}", m.b, m.c)),
        "{sub}"
    );
    let cases = &shadow.disagreements;
    assert!(!cases.is_empty());
    let rows = b.eval(&rows_of("disagreements"));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), cases.len());
    assert_eq!(rows[0][0], cases[0].request_id.as_str());
    assert!(
        rows[0][1].as_str().unwrap().starts_with('['),
        "the input: {}",
        rows[0]
    );
    // The drift of the shadow's predictions, its transitions and per-class scores.
    let drift = s.drift.as_ref().expect("a prediction drift");
    expect_text(&mut b, "psi", &to_fixed(drift.psi, 3));
    let transitions = s.transitions.as_ref().expect("transitions");
    let rows = b.eval(&rows_of("transitions"));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), transitions.labels().len(), "{rows:?}");
    assert_eq!(
        rows[0][1],
        transitions.counts[0][0].to_string().as_str(),
        "{rows:?}"
    );
    let scores = shadow
        .shadow_stats
        .classification
        .as_ref()
        .expect("classes");
    let rows = b.eval(&rows_of("class-scores"));
    let rows = rows.as_array().unwrap();
    let last = rows.last().unwrap();
    assert_eq!(last[0], "macro");
    assert_eq!(last[6], to_fixed(scores.macro_f1, 3).as_str(), "{last}");
    min_points(&mut b, "agreement", 1, 3);
    min_points(&mut b, "gain", 1, 3);
    let bars =
        b.eval("document.querySelectorAll('#view svg[data-chart=\"latency\"] rect.bar').length");
    assert_eq!(bars, json!(6), "p50/p95/p99 bars of both versions");
    b.screenshot(&shots.join("shadow.png"), 1100);
    step("shadow checked");

    // 4. A/B, and live updates by polling.
    open_view(&mut b, "ab", Some("testtime-ab"));
    let ab =
        x.ab.analysis
            .ab
            .as_ref()
            .and_then(|a| a.report.as_ref())
            .expect("a two-arm A/B analysis");
    expect_text(&mut b, "configured-split", "50% / 50%");
    let required = ab.required_per_arm.expect("a sample-size plan");
    let req_text = b.eval(&text_of("required"));
    assert!(
        req_text
            .as_str()
            .unwrap()
            .contains(&format!("required per arm: {required}")),
        "{req_text}"
    );
    expect_text(&mut b, "srm", "ok");
    let prob: f64 = b
        .eval(&text_of("prob-b"))
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.0..=1.0).contains(&prob));
    assert!(b.eval(&text_of("p-value")).as_str().unwrap() != "—");
    assert!(b
        .eval(&text_of("diff-sub"))
        .as_str()
        .unwrap()
        .contains("95% CI ["));
    min_points(&mut b, "metric", 2, 3);
    min_points(&mut b, "prob", 1, 3);
    assert_eq!(
        b.eval("document.querySelectorAll('#view svg[data-chart=\"sample\"] rect.bar').length"),
        json!(2)
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#view svg[data-chart=\"ci\"] line.ci').length"),
        json!(3)
    );
    let observed = |b: &mut cdp::Browser| -> u64 {
        let t = b.eval(&text_of("observed-split"));
        t.as_str()
            .unwrap()
            .split(" / ")
            .map(|n| n.trim().parse::<u64>().unwrap())
            .sum()
    };
    b.eval("window.__notReloaded = true");
    let polls_before: u64 = b
        .eval("Number(document.getElementById('live').getAttribute('data-polls'))")
        .as_f64()
        .unwrap() as u64;
    let before = observed(&mut b);
    let deadline = Instant::now() + Duration::from_secs(20);
    while observed(&mut b) <= before {
        assert!(
            Instant::now() < deadline,
            "the A/B numbers did not update live ({before} requests)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        b.eval("window.__notReloaded === true"),
        json!(true),
        "updated without a reload"
    );
    let polls_after = b
        .eval("Number(document.getElementById('live').getAttribute('data-polls'))")
        .as_f64()
        .unwrap() as u64;
    assert!(
        polls_after > polls_before,
        "polled ({polls_before} → {polls_after})"
    );
    b.screenshot(&shots.join("ab.png"), 1600);
    step("A/B checked, updates live");

    // 4b. The bandit, in the A/B view: a row per arm with its decision, the weights over time.
    open_view(&mut b, "ab", Some("yield-fab3-bandit"));
    expect_text(&mut b, "arm-count", "3");
    let arms = b.wait_for(
        "the arms table",
        &format!(
            "(() => {{ const r = {}; return r && r.length === 3 ? r : null; }})()",
            rows_of("arms")
        ),
        Duration::from_secs(10),
    );
    let arms = arms.as_array().unwrap();
    let versions: Vec<&str> = arms.iter().map(|r| r[1].as_str().unwrap()).collect();
    assert_eq!(versions, ["v2", "v1", "v3"], "{arms:?}");
    assert_eq!(arms[0].as_array().unwrap().last().unwrap(), "control");
    let weights: f64 = arms
        .iter()
        .map(|r| {
            r[2].as_str()
                .unwrap()
                .trim_end_matches('%')
                .parse::<f64>()
                .unwrap()
        })
        .sum();
    assert!(
        (weights - 100.0).abs() < 0.1,
        "weights sum to 100%: {arms:?}"
    );
    min_points(&mut b, "weights", 3, 2);
    b.screenshot(&shots.join("bandit.png"), 1600);
    step("bandit checked");

    // 5. Canary: the running v2 canary, then the v3 one its gate rolled back.
    open_view(&mut b, "canary", Some("yield-v2-canary"));
    let c = &x.canary;
    let (stable, cand) = (&c.versions["v1"], &c.versions["v2"]);
    expect_text(&mut b, "weight", "60%");
    expect_text(&mut b, "weight-sub", "step 3 of 4");
    expect_text(&mut b, "stable-accuracy", &pct(stable.accuracy));
    expect_text(&mut b, "canary-accuracy", &pct(cand.accuracy));
    expect_text(
        &mut b,
        "p95",
        &format!("{} / {}", ms(stable.p95_ms), ms(cand.p95_ms)),
    );
    expect_text(&mut b, "gates", "2 passed · 0 failed");
    let canary_drift = c
        .analysis
        .canary
        .as_ref()
        .and_then(|a| a.drift.as_ref())
        .expect("the canary's prediction drift");
    expect_text(&mut b, "canary-psi", &to_fixed(canary_drift.psi, 3));
    let gates = b.eval(&rows_of("gates"));
    let gates = gates.as_array().unwrap();
    assert_eq!(gates.len(), 2);
    // Each gate's PSI (this step against the rollout's stable) from its event.
    let passed: Vec<_> = c
        .events
        .iter()
        .filter(|e| e.kind == "gate_passed")
        .collect();
    assert_eq!(passed.len(), 2);
    for event in passed {
        let psi = to_fixed(event.num("psi").expect("a gate's PSI"), 3);
        assert!(
            gates.iter().any(|row| row[9] == psi.as_str()),
            "{psi} in {gates:?}"
        );
    }
    assert!(gates.iter().all(|g| g[2] == "passed"), "{gates:?}");
    let steps = b.eval(&rows_of("steps"));
    let status: Vec<&str> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[5].as_str().unwrap())
        .collect();
    assert_eq!(status, ["passed", "passed", "current", "pending"]);
    min_points(&mut b, "weight", 1, 3);
    min_points(&mut b, "accuracy", 2, 3);
    min_points(&mut b, "latency", 6, 3);
    b.screenshot(&shots.join("canary.png"), 1100);
    b.screenshot(&shots.join("canary-full.png"), 4000);
    open_view(&mut b, "canary", Some("yield-v3-canary"));
    expect_text(&mut b, "phase", "rolled_back");
    let v3 = &x.canary_v3.versions;
    expect_text(&mut b, "canary-accuracy", &pct(v3["v3"].accuracy));
    expect_text(&mut b, "gates", "0 passed · 1 failed");
    let gates = b.eval(&rows_of("gates"));
    assert_eq!(gates[0][2], "failed", "{gates}");
    assert_eq!(
        b.eval("document.querySelector('#view button[data-action=\"rollback\"]').disabled"),
        json!(true),
        "no commands on a finished rollout"
    );
    b.screenshot(&shots.join("canary-v3.png"), 1600);
    step("canary views checked");

    // 6. Roll the v2 canary back with the button (and the confirmation).
    open_view(&mut b, "canary", Some("yield-v2-canary"));
    b.click("#view button[data-action=\"rollback\"][data-rollout=\"yield-v2-canary\"]");
    b.wait_for(
        "the confirmation",
        "!document.getElementById('confirm-dialog').hidden",
        Duration::from_secs(10),
    );
    b.screenshot(&shots.join("confirm-rollback.png"), 900);
    b.click("#confirm-ok");
    b.wait_for(
        "the canary to show rolled_back",
        &format!("{} === 'rolled_back'", text_of("phase")),
        Duration::from_secs(15),
    );
    let (phase_now, trail) = handle.block_on(async {
        (
            phase(tg, "yield-v2-canary").await.0,
            tg.events("yield-v2-canary").await,
        )
    });
    assert_eq!(
        phase_now, "rolled_back",
        "the button rolled the canary back"
    );
    let last = trail.last().unwrap();
    assert_eq!(last.kind, "rolled_back");
    assert_eq!(
        last.actor, "admin",
        "the page's command, under the name of the token's credential (its actor header is ignored)"
    );
    b.wait_for(
        "the rollback in the events table",
        &format!("(() => {{ const r = {}; return r && r.some((x) => x[2] === 'rolled_back' && x[3] === 'admin'); }})()", rows_of("events")),
        Duration::from_secs(10),
    );
    b.screenshot(&shots.join("canary-rolled-back.png"), 1100);
    step("rollback by button checked");

    // 7. Blue-green.
    open_view(&mut b, "bluegreen", Some("yield-fab2-bluegreen"));
    let bg = &x.bluegreen.versions;
    expect_text(&mut b, "active-colour", "green");
    expect_text(&mut b, "blue", "v2");
    expect_text(&mut b, "green", "v2r");
    expect_text(&mut b, "validation", "passed");
    expect_text(
        &mut b,
        "green-sub",
        &format!(
            "{} p95 · {}% errors",
            ms(bg["v2r"].p95_ms),
            to_fixed(bg["v2r"].error_rate.unwrap() * 100.0, 2)
        ),
    );
    expect_text(
        &mut b,
        "blue-sub",
        &format!(
            "{} p95 · {}% errors",
            ms(bg["v2"].p95_ms),
            to_fixed(bg["v2"].error_rate.unwrap() * 100.0, 2)
        ),
    );
    let switches = b.eval(&rows_of("switches"));
    let kinds: Vec<&str> = switches
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[1].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["validated", "switched", "monitor_passed"]);
    min_points(&mut b, "colour", 1, 3);
    min_points(&mut b, "latency", 2, 3);
    b.screenshot(&shots.join("bluegreen.png"), 1600);
    step("blue-green checked");

    // 8. Audit trail with its numbers, and the chain verified.
    open_view(&mut b, "audit", None);
    let total: usize = handle.block_on(async {
        let mut n = 0;
        for (name, _) in &x.rollouts {
            n += tg.events(name).await.len();
        }
        n
    });
    expect_text(&mut b, "event-count", &total.to_string());
    expect_text(&mut b, "chain", "verified");
    let audit = b.eval(&rows_of("events"));
    let audit = audit.as_array().unwrap();
    assert_eq!(audit.len(), total);
    let gate = audit
        .iter()
        .find(|r| r[3] == "gate_failed")
        .expect("the failed gate in the audit trail");
    assert!(
        gate[6].as_str().unwrap().contains("canary_accuracy"),
        "{gate}"
    );
    b.screenshot(&shots.join("audit.png"), 1600);
    step("audit checked");

    assert!(b.errors.is_empty(), "errors in the page: {:?}", b.errors);
    b.close();
}
