//! Crash safety: `kill -9` of `switchyard serve` in the middle of a canary (step 2) and of a
//! blue-green monitoring window. After a restart on the same data directory each rollout is at
//! its recorded state with the same routing, the audit chain verifies, and every prediction
//! record the log writer had committed before the kill is still there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Serve {
    child: Child,
    url: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Starts `switchyard serve` on an ephemeral port and reads the address it prints.
fn serve(config: &Path, data: &Path) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        if let Some(rest) = line.strip_prefix("switchyard listening on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Serve { child, url }
}

fn http(method: &str, url: &str, body: &str) -> (u16, Value) {
    // A minimal HTTP/1.1 client over std (the test needs no async runtime).
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status: u16 = response[9..12].parse().unwrap();
    let (head, payload) = response.split_once("\r\n\r\n").unwrap();
    let payload = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(payload)
    } else {
        payload.to_string()
    };
    (
        status,
        serde_json::from_str(&payload).unwrap_or(Value::String(payload)),
    )
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn metric(url: &str, name: &str) -> f64 {
    let (_, text) = http("GET", &format!("{url}/metrics"), "");
    text.as_str()
        .unwrap()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Sends `n` yield requests (plausible dies; `i` varies them).
fn traffic(url: &str, from: u64, n: u64) {
    for i in from..from + n {
        let row = [
            1.0 + (i % 7) as f64 * 0.01,
            50.0 - (i % 5) as f64,
            2.0,
            40.0 + (i % 30) as f64,
            (i % 9) as f64 - 4.0,
            (i % 11) as f64 - 5.0,
            1.0,
            1000.0,
        ];
        let body = json!({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": row}]});
        let (status, _) = http(
            "POST",
            &format!("{url}/v2/models/yield/infer"),
            &body.to_string(),
        );
        assert_eq!(status, 200);
    }
}

fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kill_9_mid_canary_and_mid_blue_green_resumes_at_the_recorded_state() {
    let dir = tempfile::tempdir().unwrap();
    let models = repo().join("models");
    let config = dir.path().join("switchyard.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
controller: {{ tick_ms: 50 }}
log: {{ batch_size: 64 }}
models:
  yield:
    versions:
      v1: {{ onnx: {m}/yield_v1.onnx }}
      v2: {{ onnx: {m}/yield_v2.onnx }}
    serve: {{ kind: single, version: v1 }}
  other:
    versions:
      blue: {{ onnx: {m}/yield_v1.onnx }}
      green: {{ onnx: {m}/yield_v2.onnx }}
    serve: {{ kind: single, version: blue }}
"#,
            m = models.display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let s = serve(&config, &data);

    // A canary without quality checks (no labels needed), 50 requests and 0.3 s per step, and a
    // blue-green whose monitoring window lasts an hour.
    let canary = "name: c\nmodel: yield\nkind: canary\nstable: v1\ncandidate: v2\nmin_requests: 50\nmin_duration_ms: 300\nsteps: [{weight: 50}, {weight: 90, min_duration_ms: 3600000}, {weight: 100}]\ngate: { max_accuracy_drop: null, max_mae_increase: null, max_p95_increase: null }\n";
    assert_eq!(
        http("POST", &format!("{}/admin/v1/rollouts", s.url), canary).0,
        201
    );
    let bg = format!(
        "name: bg\nmodel: other\nkind: blue_green\nactive: blue\ncandidate: green\nvalidation_set: {}/validation_yield.csv\nsmoke_requests: 3\nmonitor_min_requests: 1000000\nmonitor_duration_ms: 3600000\n",
        models.display()
    );
    assert_eq!(
        http("POST", &format!("{}/admin/v1/rollouts", s.url), &bg).0,
        201
    );
    let mut sent = 0;
    wait_for("the canary's step 2", Duration::from_secs(60), || {
        traffic(&s.url, sent, 40);
        sent += 40;
        http("GET", &format!("{}/admin/v1/rollouts/c", s.url), "").1["step"] == 2
    });
    wait_for("the blue-green switch", Duration::from_secs(60), || {
        http("GET", &format!("{}/admin/v1/rollouts/bg", s.url), "").1["phase"] == "monitoring"
    });
    let routes_before = http("GET", &format!("{}/admin/v1/routes", s.url), "").1["routes"].clone();
    let committed = metric(&s.url, "switchyard_log_written_records_total");
    assert!(committed > 0.0);

    // kill -9 (SIGKILL: no shutdown hook runs).
    let mut s = s;
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    drop(s);

    let s = serve(&config, &data);
    let c = http("GET", &format!("{}/admin/v1/rollouts/c", s.url), "").1;
    assert_eq!(
        (c["phase"].as_str(), c["step"].as_u64()),
        (Some("running"), Some(2)),
        "{c}"
    );
    let bg = http("GET", &format!("{}/admin/v1/rollouts/bg", s.url), "").1;
    assert_eq!(bg["phase"], "monitoring", "{bg}");
    let routes_after = http("GET", &format!("{}/admin/v1/routes", s.url), "").1["routes"].clone();
    assert_eq!(
        routes_after, routes_before,
        "the same weights and colours after the restart"
    );
    let audit = http("GET", &format!("{}/admin/v1/audit/verify", s.url), "").1;
    assert_eq!(audit["ok"], true, "{audit}");
    // Every record committed before the kill survived: the aggregates are rebuilt from the log
    // (only the yield model had traffic; blue-green validation calls are not logged).
    let stats = http("GET", &format!("{}/admin/v1/models/yield/stats", s.url), "").1;
    let recovered: u64 = stats["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["requests"].as_u64().unwrap())
        .sum();
    assert!(
        recovered as f64 >= committed,
        "recovered {recovered} of {committed} committed"
    );
    // And the rollouts carry on: traffic keeps flowing to the canary's weights.
    traffic(&s.url, sent, 20);
}
