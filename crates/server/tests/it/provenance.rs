//! Provenance and cost end to end: what each version serves is recorded in the store at start
//! (the ONNX file's SHA-256, or the version an HTTP backend reports), every prediction row
//! names it, a changed artefact under a known version name refuses the start, and reports and
//! audit events name the artefacts and put cost beside latency.

use crate::support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::{eventually, oip_row, repo_root, TestGateway};
use switchyard_core::provenance::Artefact;
use switchyard_core::Role;
use switchyard_server::controller::ManualClock;
use switchyard_server::{parse_config, Gateway, StartOptions};

/// The SHA-256 of `bytes` in hex, computed here (not by the gateway).
fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The first row of the yield models' fixture, an input every yield version takes.
fn yield_row() -> Vec<f64> {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("models/fixtures/yield_v1.json")).unwrap(),
    )
    .unwrap();
    fixture["inputs"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

async fn serve_one(tg: &TestGateway, model: &str, id: &str, row: &[f64]) -> String {
    let r = tg
        .client
        .post_json(
            &tg.url(&format!("/v2/models/{model}/infer")),
            &[("x-request-id", id)],
            &oip_row(row),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.header("x-switchyard-model-version")
}

/// The artefact a logged request names, read with plain SQL: (kind, id, git_sha, registry).
fn artefact_of(
    store: &Path,
    request_id: &str,
) -> (String, Option<String>, Option<String>, Option<String>) {
    rusqlite::Connection::open(store)
        .unwrap()
        .query_row(
            "SELECT a.artefact_kind, a.artefact, a.git_sha, a.registry FROM predictions p
             JOIN artefacts a ON a.id = p.artefact_id WHERE p.request_id = ?1",
            [request_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap_or_else(|e| panic!("request {request_id}: {e}"))
}

fn artefact_rows(store: &Path) -> i64 {
    rusqlite::Connection::open(store)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM artefacts", [], |r| r.get(0))
        .unwrap()
}

/// `Gateway::start` on `store`, returning its error instead of panicking.
async fn start_on(yaml: &str, store: &Path) -> anyhow::Result<Gateway> {
    let config = parse_config(yaml, &repo_root(), "test config")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mut options = StartOptions::new(PathBuf::from(store));
    let clock = Arc::new(ManualClock::default());
    clock.advance(1_700_000_000_000);
    options.clock = Some(clock);
    options.controller_loop = false;
    options.base_dir = repo_root();
    Gateway::start(config, listener, options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_onnx_file_under_a_known_version_is_refused_and_a_new_name_serves_it() {
    let models = tempfile::tempdir().unwrap();
    let file = models.path().join("yield.onnx");
    let v1_bytes = std::fs::read(repo_root().join("models/yield_v1.onnx")).unwrap();
    let v2_bytes = std::fs::read(repo_root().join("models/yield_v2.onnx")).unwrap();
    let (v1_sha, v2_sha) = (hex_sha256(&v1_bytes), hex_sha256(&v2_bytes));
    assert_ne!(v1_sha, v2_sha);
    std::fs::write(&file, &v1_bytes).unwrap();
    let yaml = |version: &str| {
        format!(
            "models:\n  yield:\n    versions:\n      {version}: {{ onnx: {}, git_sha: 3f2c1ab, registry: \"mlflow:yield/6\" }}\n    serve: {{ kind: single, version: {version} }}\n",
            file.display()
        )
    };
    let row = yield_row();

    let tg = TestGateway::start(&yaml("v1")).await;
    assert_eq!(serve_one(&tg, "yield", "first", &row).await, "v1");
    tg.gateway.state.log.flush().await.unwrap();
    let TestGateway { gateway, dir, .. } = tg;
    gateway.shutdown().await.unwrap();
    let store = dir.path().join("switchyard.sqlite");
    assert_eq!(
        artefact_of(&store, "first"),
        (
            "sha256".to_string(),
            Some(v1_sha.clone()),
            Some("3f2c1ab".to_string()),
            Some("mlflow:yield/6".to_string())
        )
    );

    // The same name, another file: refused, naming the model, the version, both hashes and
    // what to do; nothing is recorded for it.
    std::fs::write(&file, &v2_bytes).unwrap();
    let err = start_on(&yaml("v1"), &store)
        .await
        .expect_err("a changed file under a known version name must not start");
    let message = format!("{err:#}");
    for part in [
        "model yield version v1",
        &format!(
            "its artefact was sha256:{} and is now sha256:{}",
            &v1_sha[..12],
            &v2_sha[..12]
        ),
        "give the new artefact a new version name",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    assert_eq!(artefact_rows(&store), 1);

    // Under a new name the file is a new version; the old records keep naming the old file.
    let tg = TestGateway::start_in(&yaml("v2"), None, dir).await;
    assert_eq!(serve_one(&tg, "yield", "second", &row).await, "v2");
    tg.gateway.state.log.flush().await.unwrap();
    assert_eq!(artefact_of(&store, "second").1, Some(v2_sha));
    assert_eq!(artefact_of(&store, "first").1, Some(v1_sha));
    assert_eq!(artefact_rows(&store), 2);
}

/// An OIP model server whose metadata reports `version` (changeable) and which answers class 1.
async fn versioned_backend(version: Arc<Mutex<String>>) -> String {
    let app = Router::new()
        .route(
            "/v2/models/{m}",
            get(move || {
                let v = version.lock().clone();
                async move { axum::Json(json!({"name": "m", "versions": [v], "platform": "test"})) }
            }),
        )
        .route(
            "/v2/models/{m}/infer",
            post(|| async {
                axum::Json(json!({"model_name": "m", "outputs": [{"name": "predict", "shape": [1], "datatype": "INT64", "data": [1]}]}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_backend_is_named_by_the_version_it_reports_and_a_changed_one_is_refused() {
    let reported = Arc::new(Mutex::new("7".to_string()));
    let url = versioned_backend(reported.clone()).await;
    let yaml = format!(
        "models:\n  m:\n    versions:\n      live: {{ url: \"{url}\" }}\n    serve: {{ kind: single, version: live }}\n"
    );
    let tg = TestGateway::start(&yaml).await;
    assert_eq!(
        tg.gateway.state.models["m"].provenance["live"].artefact,
        Artefact::BackendVersion("7".into())
    );
    serve_one(&tg, "m", "r1", &[1.0]).await;
    tg.gateway.state.log.flush().await.unwrap();
    let TestGateway { gateway, dir, .. } = tg;
    gateway.shutdown().await.unwrap();
    let store = dir.path().join("switchyard.sqlite");
    let (kind, id, _, _) = artefact_of(&store, "r1");
    assert_eq!(
        (kind.as_str(), id.as_deref()),
        ("backend_version", Some("7"))
    );

    *reported.lock() = "8".to_string();
    let message = format!("{:#}", start_on(&yaml, &store).await.unwrap_err());
    assert!(
        message.contains("model m version live: its artefact was backend:7 and is now backend:8"),
        "{message}"
    );
}

const PRICED: &str = r#"
models:
  yield:
    versions:
      v1: { onnx: models/yield_v1.onnx, git_sha: 1a2b3c4, cost_per_1k: 0.10 }
      v2: { onnx: models/yield_v2.onnx, git_sha: 9e8d7c6, registry: "mlflow:yield/7", cost_per_1k: 0.40 }
    serve: { kind: single, version: v1 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_and_audit_events_name_the_artefacts_and_put_cost_beside_latency() {
    let v1_sha = hex_sha256(&std::fs::read(repo_root().join("models/yield_v1.onnx")).unwrap());
    let v2_sha = hex_sha256(&std::fs::read(repo_root().join("models/yield_v2.onnx")).unwrap());
    let tg = TestGateway::start(PRICED).await;
    tg.apply("name: y-shadow\nmodel: yield\nkind: shadow\nprimary: v1\ncandidate: v2\n")
        .await;
    let row = yield_row();
    for i in 0..20 {
        serve_one(&tg, "yield", &format!("s{i}"), &row).await;
    }
    // Shadow calls run off the request path: wait until each is logged.
    assert!(
        eventually(Duration::from_secs(30), || {
            tg.gateway
                .state
                .log
                .aggregates()
                .lock()
                .variant("yield", "v2", Role::Shadow, |_| true)
                .requests
                == 20
        })
        .await
    );
    tg.gateway.state.log.flush().await.unwrap();
    // Shadow records name the candidate's file, serving records the primary's.
    let store = tg.store_path();
    let names: Vec<(String, String)> = rusqlite::Connection::open(&store)
        .unwrap()
        .prepare(
            "SELECT DISTINCT p.version, a.artefact FROM predictions p
             JOIN artefacts a ON a.id = p.artefact_id ORDER BY p.version",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        names,
        vec![
            ("v1".to_string(), v1_sha.clone()),
            ("v2".to_string(), v2_sha.clone())
        ]
    );

    // The routing change that started the rollout names the artefacts it routes to.
    let events = tg.events("y-shadow").await;
    let started = events.iter().find(|e| e.kind == "started").unwrap();
    assert_eq!(
        started.text("artefact.v1"),
        Some(format!("sha256:{v1_sha}").as_str())
    );
    assert_eq!(
        started.text("artefact.v2"),
        Some(format!("sha256:{v2_sha}").as_str())
    );
    assert_eq!(started.text("git_sha.v2"), Some("9e8d7c6"));
    assert_eq!(started.text("registry.v2"), Some("mlflow:yield/7"));
    assert_eq!(started.text("registry.v1"), None);

    let report = tg.admin().report("y-shadow").await.unwrap();
    let v2 = &report.provenance["v2"];
    assert_eq!(v2.artefact, Artefact::Sha256(v2_sha.clone()));
    assert_eq!(v2.registry.as_deref(), Some("mlflow:yield/7"));
    assert_eq!(v2.cost_per_1k, Some(0.40));
    assert_eq!(report.provenance["v1"].git_sha.as_deref(), Some("1a2b3c4"));
    let cost = report.cost.clone().expect("a cost comparison");
    assert_eq!(
        (cost.current.as_str(), cost.candidate.as_str()),
        ("v1", "v2")
    );
    assert_eq!(cost.cost_ratio, Some(4.0));
    assert!((cost.cost_difference_per_1k.unwrap() - 0.30).abs() < 1e-12);
    // The latency ratio is the candidate's shadow p95 over the primary's.
    let shadow = report.analysis.shadow.as_ref().unwrap();
    assert_eq!(
        cost.p95_ratio,
        Some(shadow.shadow_stats.p95_ms.unwrap() / shadow.primary_stats.p95_ms.unwrap())
    );

    let text = String::from_utf8(
        tg.admin()
            .report_as("y-shadow", "text")
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    for part in [
        "cost per 1,000 predictions, v1 → v2",
        "0.10 → 0.40 (4.00×, +0.30)",
        "latency p50 / p95, v2 ÷ v1",
        &format!("sha256:{}", &v2_sha[..12]),
        &format!("sha256:{v2_sha}"),
        "mlflow:yield/7",
        &format!("v2 sha256:{}", &v2_sha[..12]),
    ] {
        assert!(text.contains(part), "{part:?} missing from:\n{text}");
    }
    let markdown = String::from_utf8(
        tg.admin()
            .report_as("y-shadow", "markdown")
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(markdown.contains("### provenance"), "{markdown}");
}
