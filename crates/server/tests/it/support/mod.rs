//! Helpers shared by the integration tests: a configurable mock model server on a real socket,
//! a gateway started on `127.0.0.1:0` with a temp store, and a small HTTP client.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod cdp;
pub mod fixtures;
pub mod pki;
pub mod prometheus;
pub mod webhook;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use switchyard_server::alerts::RetryPolicy;
use switchyard_server::api::{EventView, RolloutView};
use switchyard_server::client::AdminClient;
use switchyard_server::controller::ManualClock;
use switchyard_server::{parse_config, Gateway, StartOptions};

/// How the mock model server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// A fixed Open Inference Protocol answer: class `label`.
    Ok = 0,
    /// 500 with a text body.
    Fail = 1,
    /// 200 with a body that is not JSON.
    Garbage = 2,
    /// Never answers (until the client gives up).
    Hang = 3,
    /// Answers after `delay_ms`.
    Slow = 4,
}

#[derive(Debug)]
pub struct MockModel {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    pub calls: Arc<AtomicU64>,
    delay_ms: Arc<AtomicU64>,
}

#[derive(Clone)]
struct MockState {
    mode: Arc<AtomicU8>,
    calls: Arc<AtomicU64>,
    delay_ms: Arc<AtomicU64>,
    label: i64,
}

async fn mock_infer(State(s): State<MockState>, body: Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    s.calls.fetch_add(1, Ordering::SeqCst);
    // Echo the number of rows so callers can tell answers apart.
    let rows = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| {
            v["inputs"][0]["shape"][0]
                .as_u64()
                .or_else(|| v["instances"].as_array().map(|a| a.len() as u64))
        })
        .unwrap_or(1) as usize;
    let ok = || {
        let data = vec![s.label; rows];
        axum::Json(serde_json::json!({"model_name": "m", "outputs": [{"name": "predict", "shape": [rows], "datatype": "INT64", "data": data}]}))
            .into_response()
    };
    match s.mode.load(Ordering::SeqCst) {
        0 => ok(),
        1 => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "model exploded",
        )
            .into_response(),
        2 => (axum::http::StatusCode::OK, "<html>not json</html>").into_response(),
        3 => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            ok()
        }
        _ => {
            tokio::time::sleep(Duration::from_millis(s.delay_ms.load(Ordering::SeqCst))).await;
            ok()
        }
    }
}

impl MockModel {
    /// Starts a mock OIP model server answering class `label`.
    pub async fn start(label: i64) -> MockModel {
        let mode = Arc::new(AtomicU8::new(Mode::Ok as u8));
        let calls = Arc::new(AtomicU64::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let state = MockState {
            mode: mode.clone(),
            calls: calls.clone(),
            delay_ms: delay_ms.clone(),
            label,
        };
        let app = Router::new()
            .route("/v2/models/{m}/infer", post(mock_infer))
            .route("/v1/models/{m}", post(mock_infer))
            // The OIP model routes: ready unless failing, and metadata naming one tensor.
            .route(
                "/v2/models/{m}/ready",
                axum::routing::get(|State(s): State<MockState>| async move {
                    if s.mode.load(Ordering::SeqCst) == Mode::Fail as u8 {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        axum::http::StatusCode::OK
                    }
                }),
            )
            .route(
                "/v2/models/{m}",
                axum::routing::get(|UrlPath(m): UrlPath<String>| async move {
                    axum::Json(serde_json::json!({
                        "name": m, "platform": "mock",
                        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
                        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]}],
                    }))
                }),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        MockModel {
            addr,
            mode,
            calls,
            delay_ms,
        }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn set_delay(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
        self.set(Mode::Slow);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

/// The repository's root (for the committed models).
/// Runs `python3 tools/<script> <args>` off the runtime's workers and checks that it succeeded
/// and printed every one of `expect` (each a line's start or part); returns its output.
pub async fn run_tool(script: &str, args: &[&str], expect: &[&str]) -> String {
    let script = repo_root().join("tools").join(script);
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(&script)
            .args(&args)
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in expect {
        assert!(stdout.contains(line), "missing '{line}' in:\n{stdout}");
    }
    stdout
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A gateway on an ephemeral port with its store in a temp dir.
pub struct TestGateway {
    pub gateway: Gateway,
    pub dir: tempfile::TempDir,
    pub client: HttpClient,
    /// The controller's clock: tests move time explicitly and call `tick`.
    pub clock: Arc<ManualClock>,
    token: Option<String>,
}

impl TestGateway {
    pub async fn start(yaml: &str) -> TestGateway {
        Self::start_with_token(yaml, None).await
    }

    pub async fn start_with_token(yaml: &str, token: Option<&str>) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(yaml, token, dir).await
    }

    /// Starts on an existing directory (to restart a gateway on the same store).
    pub async fn start_in(yaml: &str, token: Option<&str>, dir: tempfile::TempDir) -> TestGateway {
        Self::start_with(yaml, token, dir, |_| {}).await
    }

    /// [`TestGateway::start_in`] with the start options adjusted by `adjust`.
    pub async fn start_with(
        yaml: &str,
        token: Option<&str>,
        dir: tempfile::TempDir,
        adjust: impl FnOnce(&mut StartOptions),
    ) -> TestGateway {
        let config =
            parse_config(yaml, &repo_root(), "test config").unwrap_or_else(|e| panic!("{e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let clock = Arc::new(ManualClock::default());
        clock.advance(1_700_000_000_000);
        let mut options = StartOptions::new(dir.path().join("switchyard.sqlite"));
        options.admin_token = token.map(str::to_string);
        options.clock = Some(clock.clone());
        options.controller_loop = false;
        options.base_dir = repo_root();
        options.retry = RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            timeout: Duration::from_secs(2),
        };
        adjust(&mut options);
        let gateway = Gateway::start(config, listener, options).await.unwrap();
        TestGateway {
            gateway,
            dir,
            client: HttpClient::new(),
            clock,
            token: token.map(str::to_string),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.gateway.url(), path)
    }

    /// Starts a rollout through the admin API; panics (naming the spec) if it is refused.
    pub async fn apply(&self, spec: &str) -> RolloutView {
        self.admin()
            .apply(spec)
            .await
            .unwrap_or_else(|e| panic!("applying {spec}: {e}"))
    }

    /// A rollout's audit events, oldest first.
    pub async fn events(&self, name: &str) -> Vec<EventView> {
        self.admin().events(name).await.unwrap().events
    }

    /// The admin API's client, with the gateway's token and `test` as the actor.
    pub fn admin(&self) -> AdminClient {
        let client = AdminClient::new(&self.gateway.url())
            .unwrap()
            .with_actor("test");
        match &self.token {
            Some(t) => client.with_token(t).unwrap(),
            None => client,
        }
    }

    /// Moves the controller's clock and evaluates every rollout once.
    pub async fn tick(&self, advance_ms: i64) {
        self.clock.advance(advance_ms);
        self.gateway.controller.tick_all().await;
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("switchyard.sqlite")
    }
}

/// A response reduced to what tests look at.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient {
    pub fn new() -> Self {
        HttpClient {
            inner: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }

    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut req = hyper::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .inner
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A GET whose failure (no answer) is returned, not a panic.
    pub async fn send_checked(&self, method: &str, url: &str) -> Result<u16, String> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(url)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = self.inner.request(req).await.map_err(|e| e.to_string())?;
        Ok(resp.status().as_u16())
    }

    pub async fn post_json(&self, url: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send("POST", url, &all, body.to_string()).await
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.send("GET", url, &[], Bytes::new()).await
    }
}

/// An OIP request with one row of `width` features.
pub fn oip_row(row: &[f64]) -> Value {
    serde_json::json!({"inputs": [{"name": "input", "shape": [1, row.len()], "datatype": "FP32", "data": row}]})
}

/// Polls `check` until it holds, for at most `limit` (a bounded wait for asynchronous effects,
/// not a fixed sleep).
pub async fn eventually<F: FnMut() -> bool>(limit: Duration, mut check: F) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
