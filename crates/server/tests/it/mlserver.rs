//! switchyard in front of a real model server: MLServer (`mlserver` + `mlserver-sklearn`, see
//! `tools/requirements-test.txt`) serving the scikit-learn model of `models/mlserver/` over the
//! Open Inference Protocol v2.
//!
//! The test starts `mlserver start` on free ports, starts a gateway whose `yield` model is
//! served by MLServer (`v1`) and shadowed by the in-process ONNX export of the same estimator
//! (`models/yield_v1.onnx`), then checks that:
//! - every OIP v2 request is answered by MLServer with scikit-learn's own class;
//! - a KServe v1 request is translated to OIP for MLServer and answered in v1 form;
//! - the prediction log counts every request against v1 with no error, and the shadow pairs
//!   agree on every instance (both backends hold the same trees);
//! - tritonclient's HTTP client with binary inputs and outputs (the binary tensor data
//!   extension, which MLServer's REST server does not speak: the gateway decodes the binary
//!   inputs into JSON for it and encodes its JSON answer for the client) gets scikit-learn's
//!   classes, exactly as with JSON.
//!
//! `models/mlserver/fixture.json` (written by `tools/make_mlserver_model.py`) holds 50 rows with
//! scikit-learn's `predict`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::{json, Value};
use support::{oip_row, repo_root, TestGateway};
use switchyard_core::Role;

/// How long MLServer may take to load the model and report ready.
const READY_LIMIT: Duration = Duration::from_secs(60);
const INSTALL_HINT: &str =
    "MLServer is needed for this test: run `pip install -r tools/requirements-test.txt`";

#[derive(Debug, Deserialize)]
struct Fixture {
    model: String,
    inputs: Vec<Vec<f64>>,
    sklearn: Sklearn,
}

#[derive(Debug, Deserialize)]
struct Sklearn {
    predictions: Vec<i64>,
}

fn fixture() -> Fixture {
    let path = repo_root().join("models/mlserver/fixture.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let fixture: Fixture =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    assert_eq!(fixture.inputs.len(), 50);
    assert_eq!(fixture.sklearn.predictions.len(), fixture.inputs.len());
    assert!(fixture.inputs.iter().all(|r| r.len() == 8));
    fixture
}

/// The command that runs the `mlserver` CLI: the console script on PATH, or the same entry
/// point through `python3` (the package has no `__main__`, so `python3 -m mlserver` cannot work).
fn mlserver_command() -> Command {
    let works = |mut cmd: Command| {
        cmd.arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains("mlserver")
            })
    };
    let script = || Command::new("mlserver");
    let python = || {
        let mut c = Command::new("python3");
        c.args([
            "-c",
            "import sys; from mlserver.cli import main; sys.argv[0] = 'mlserver'; sys.exit(main())",
        ]);
        c
    };
    if works(script()) {
        script()
    } else if works(python()) {
        python()
    } else {
        panic!(
            "neither `mlserver` nor `python3 -c 'from mlserver.cli import main'` works. \
             {INSTALL_HINT}"
        )
    }
}

/// Ports nobody listens on right now (all held at once, so they differ).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// A running `mlserver start`, killed when dropped (also when the test panics).
struct MlServer {
    child: Child,
    http_port: u16,
    grpc_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for MlServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl MlServer {
    /// Starts MLServer with a copy of `model_dir` (a directory holding `model-settings.json`).
    fn start(model_dir: &Path) -> MlServer {
        let dir = tempfile::tempdir().unwrap();
        let name = model_dir.file_name().unwrap();
        let target = dir.path().join(name);
        std::fs::create_dir(&target).unwrap();
        for entry in std::fs::read_dir(model_dir).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
        }
        let [http_port, grpc_port] = free_ports::<2>();
        let settings = json!({
            "host": "127.0.0.1",
            "http_port": http_port,
            "grpc_port": grpc_port,
            "metrics_endpoint": null,
            "metrics_dir": dir.path().join(".metrics"),
            "environments_dir": dir.path().join(".envs"),
            "parallel_workers": 0,
            "debug": false,
        });
        std::fs::write(dir.path().join("settings.json"), settings.to_string()).unwrap();
        let log = dir.path().join("mlserver.log");
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = mlserver_command();
        let child = cmd
            .arg("start")
            .arg(dir.path())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting mlserver: {e}. {INSTALL_HINT}"));
        MlServer {
            child,
            http_port,
            grpc_port,
            log,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `GET /v2/health/ready` (and the model's own ready endpoint) until both answer 200.
    async fn wait_ready(&mut self, model: &str) -> Duration {
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let started = Instant::now();
        let base = self.url();
        let ok = |path: String| {
            let client = client.clone();
            let uri = format!("{base}{path}");
            async move {
                let req = hyper::Request::get(uri).body(Empty::new()).unwrap();
                match tokio::time::timeout(Duration::from_secs(2), client.request(req)).await {
                    Ok(Ok(resp)) => {
                        let status = resp.status();
                        let _ = resp.into_body().collect().await;
                        status.is_success()
                    }
                    _ => false,
                }
            }
        };
        loop {
            if ok("/v2/health/ready".into()).await && ok(format!("/v2/models/{model}/ready")).await
            {
                return started.elapsed();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "mlserver exited ({status}) before it was ready. {INSTALL_HINT}\n\
                     --- mlserver log ---\n{}",
                    self.log_text()
                );
            }
            assert!(
                started.elapsed() < READY_LIMIT,
                "mlserver not ready after {READY_LIMIT:?}\n--- mlserver log ---\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The classes of an OIP v2 response: the flattened data of its `predict` output (MLServer's
/// scikit-learn runtime answers `predict`, INT64 of shape [rows, 1]).
fn oip_classes(body: &Value) -> Vec<i64> {
    let outputs = body["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("no outputs in {body}"));
    let output = outputs
        .iter()
        .find(|o| o["name"] == "predict")
        .unwrap_or_else(|| panic!("no `predict` output in {body}"));
    fn flat(v: &Value, out: &mut Vec<i64>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| flat(i, out)),
            other => out.push(
                other
                    .as_i64()
                    .unwrap_or_else(|| panic!("class {other} is not an integer")),
            ),
        }
    }
    let mut classes = Vec::new();
    flat(&output["data"], &mut classes);
    classes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchyard_serves_sklearn_through_mlserver() {
    let started = Instant::now();
    let fixture = fixture();
    let mut mlserver = MlServer::start(&repo_root().join("models/mlserver").join(&fixture.model));
    let ready_after = mlserver.wait_ready(&fixture.model).await;
    eprintln!("mlserver ready after {ready_after:?}");

    let yaml = format!(
        r#"
models:
  yield:
    versions:
      v1: {{ url: "{url}", protocol: oip, remote_model: {remote}, timeout_ms: 5000 }}
      onnx: {{ onnx: models/yield_v1.onnx }}
    serve: {{ kind: shadow, primary: v1, shadows: [{{ version: onnx, sample: 100 }}] }}
"#,
        url = mlserver.url(),
        remote = fixture.model,
    );
    let tg = TestGateway::start(&yaml).await;

    // Open Inference Protocol v2, one row per request: MLServer's answer passes through.
    for (i, (row, expected)) in fixture
        .inputs
        .iter()
        .zip(&fixture.sklearn.predictions)
        .enumerate()
    {
        let reply = tg
            .client
            .post_json(&tg.url("/v2/models/yield/infer"), &[], &oip_row(row))
            .await;
        assert_eq!(
            reply.status,
            200,
            "row {i}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(reply.header("x-switchyard-model-version"), "v1", "row {i}");
        let body = reply.json();
        assert_eq!(
            oip_classes(&body),
            vec![*expected],
            "row {i}: MLServer answered {body}"
        );
    }

    // KServe v1 with every row as one batch: translated to OIP [50, 8] for MLServer, and its
    // [50, 1] answer back to v1 predictions.
    let reply = tg
        .client
        .post_json(
            &tg.url("/v1/models/yield:predict"),
            &[],
            &json!({ "instances": fixture.inputs }),
        )
        .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("x-switchyard-model-version"), "v1");
    assert_eq!(
        reply.json(),
        json!({ "predictions": fixture.sklearn.predictions })
    );

    // The prediction log: 51 serving requests for v1, none failed.
    let log = &tg.gateway.state.log;
    log.flush().await.unwrap();
    let v1 = log
        .aggregates()
        .lock()
        .variant("yield", "v1", Role::Serving, |_| true);
    assert_eq!((v1.requests, v1.errors), (51, 0));

    // Shadow calls are asynchronous: wait (bounded) until all 51 are logged.
    let deadline = Instant::now() + Duration::from_secs(30);
    let pair = loop {
        log.flush().await.unwrap();
        let pair = log
            .aggregates()
            .lock()
            .pair("yield", "v1", "onnx", |_| true);
        if pair.shadow_calls >= 51 || Instant::now() > deadline {
            break pair;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((pair.shadow_calls, pair.shadow_errors), (51, 0), "{pair:?}");
    // One agreement per instance: 50 single rows and the 50-row batch. The ONNX shadow is the
    // same estimator as the pickled model MLServer serves, so they agree everywhere.
    assert_eq!(
        (pair.agreement.successes, pair.agreement.trials),
        (100, 100),
        "{pair:?}"
    );
    let onnx = log
        .aggregates()
        .lock()
        .variant("yield", "onnx", Role::Shadow, |_| true);
    assert_eq!((onnx.requests, onnx.errors), (51, 0));

    // The OIP surface in front of a real OIP server: readiness asks MLServer, and the
    // metadata are MLServer's own, under the gateway's model name.
    let ready = tg.client.get(&tg.url("/v2/models/yield/ready")).await;
    assert_eq!(
        ready.status,
        200,
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
    let meta = tg.client.get(&tg.url("/v2/models/yield/versions/v1")).await;
    assert_eq!(meta.status, 200, "{}", String::from_utf8_lossy(&meta.body));
    let meta = meta.json();
    assert_eq!(meta["name"], "yield", "{meta}");
    assert_eq!(meta["versions"], json!(["onnx", "v1"]), "{meta}");
    assert!(
        meta.get("platform").is_some(),
        "MLServer's metadata: {meta}"
    );

    // tritonclient, binary: the 50 fixture rows as JSON and as binary inputs and/or outputs.
    let script = repo_root().join("tools/oip_client_check.py");
    let host = tg.gateway.addr.to_string();
    let expected: Vec<String> = fixture
        .sklearn
        .predictions
        .iter()
        .map(i64::to_string)
        .collect();
    let rows = serde_json::to_vec(&fixture.inputs).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new("python3")
            .arg(script)
            .args([host.as_str(), "yield", "8", "binary", "predict"])
            .arg(expected.join(","))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        child.stdin.take().unwrap().write_all(&rows).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("binary infer ok"),
        "tritonclient binary through MLServer failed:\n{stdout}\n{}\n--- mlserver log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        mlserver.log_text()
    );
    log.flush().await.unwrap();
    let v1 = log
        .aggregates()
        .lock()
        .variant("yield", "v1", Role::Serving, |_| true);
    assert_eq!((v1.requests, v1.errors), (55, 0), "four more, none failed");

    drop(tg);
    drop(mlserver);
    eprintln!("mlserver test took {:?}", started.elapsed());
}

/// MLServer's gRPC port as a backend (`protocol: oip-grpc`) beside its REST port: a REST
/// client is served by the gRPC backend and a gRPC client by both, each answering
/// scikit-learn's classes; the records read the predictions; readiness and metadata are asked
/// over gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlserver_over_grpc_serves_rest_and_grpc_clients() {
    use crate::grpc::{grpc_client, infer_request};
    let fixture = fixture();
    let mut mlserver = MlServer::start(&repo_root().join("models/mlserver").join(&fixture.model));
    mlserver.wait_ready(&fixture.model).await;
    let yaml = format!(
        r#"
grpc_listen: 127.0.0.1:0
models:
  yield:
    versions:
      grpc: {{ url: "{grpc}", protocol: oip-grpc, remote_model: {remote}, timeout_ms: 5000 }}
      rest: {{ url: "{rest}", protocol: oip, remote_model: {remote}, timeout_ms: 5000 }}
    serve: {{ kind: single, version: grpc }}
"#,
        grpc = mlserver.grpc_url(),
        rest = mlserver.url(),
        remote = fixture.model,
    );
    let tg = TestGateway::start(&yaml).await;
    let mut client = grpc_client(&tg).await;
    let rows: Vec<Vec<f32>> = fixture.inputs[..10]
        .iter()
        .map(|r| r.iter().map(|x| *x as f32).collect())
        .collect();
    let expected = &fixture.sklearn.predictions[..10];
    let f64_rows: Vec<Vec<f64>> = fixture.inputs[..10].to_vec();

    // REST client, gRPC backend (routed to `grpc`), as JSON and KServe v1.
    let reply = tg
        .client
        .post_json(
            &tg.url("/v2/models/yield/infer"),
            &[],
            &json!({"inputs": [{"name": "input", "shape": [10, 8], "datatype": "FP64", "data": f64_rows}]}),
        )
        .await;
    assert_eq!(
        reply.status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&reply.body),
        mlserver.log_text()
    );
    assert_eq!(reply.header("x-switchyard-model-version"), "grpc");
    assert_eq!(oip_classes(&reply.json()), expected);
    let reply = tg
        .client
        .post_json(
            &tg.url("/v1/models/yield:predict"),
            &[],
            &json!({ "instances": f64_rows }),
        )
        .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json(), json!({ "predictions": expected }));

    // gRPC client, gRPC backend and REST backend (pinned).
    for version in ["grpc", "rest"] {
        let mut request = infer_request("yield", &rows, version == "rest");
        request.model_version = version.into();
        let answer = client
            .model_infer(request)
            .await
            .unwrap_or_else(|s| panic!("{version}: {s:?}\n{}", mlserver.log_text()));
        let answer = answer.get_ref();
        assert_eq!(answer.model_version, version);
        let predict = answer
            .outputs
            .iter()
            .position(|o| o.name == "predict")
            .unwrap();
        let classes: Vec<i64> = answer.raw_output_contents[predict]
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(classes, expected, "{version}");
    }

    // Readiness and metadata through the gRPC backend.
    let ready = tg
        .client
        .get(&tg.url("/v2/models/yield/versions/grpc/ready"))
        .await;
    assert_eq!(
        ready.status,
        200,
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
    let meta = tg
        .client
        .get(&tg.url("/v2/models/yield/versions/grpc"))
        .await
        .json();
    assert_eq!(meta["name"], "yield", "{meta}");

    let log = &tg.gateway.state.log;
    log.flush().await.unwrap();
    let agg = log.aggregates().lock().clone();
    let g = agg.variant("yield", "grpc", Role::Serving, |_| true);
    let r = agg.variant("yield", "rest", Role::Serving, |_| true);
    assert_eq!((g.requests, g.errors), (3, 0));
    assert_eq!((r.requests, r.errors), (1, 0));
    let conn = rusqlite::Connection::open(tg.store_path()).unwrap();
    let outputs: Vec<String> = conn
        .prepare("SELECT output FROM predictions ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let want: Vec<String> = expected.iter().map(|c| format!("\"{c}\"")).collect();
    for output in &outputs {
        assert!(
            output.contains(&want.join(",")),
            "the record reads the classes: {output}"
        );
    }
    drop(tg);
    drop(mlserver);
}
