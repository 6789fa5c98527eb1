//! Crash safety: `kill -9` of `switchyard serve` in the middle of a canary (step 2) and of a
//! blue-green monitoring window. After a restart on the same data directory each rollout is at
//! its recorded state with the same routing, the audit chain verifies, and every prediction
//! record the log writer had committed before the kill is still there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use support::{http, metric, repo, request_body, wait_for, Admin};
use switchyard_core::rollout::Phase;

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

/// Starts `switchyard serve` on an ephemeral port with its store in `data`.
fn serve(config: &Path, data: &Path) -> Serve {
    let (child, url) = support::serve(config, &["--data-dir", data.to_str().unwrap()]);
    Serve { child, url }
}

/// Sends `n` yield requests (plausible dies; `i` varies them).
fn traffic(url: &str, from: u64, n: u64) {
    for i in from..from + n {
        let (status, _, _) = http(
            "POST",
            &format!("{url}/v2/models/yield/infer"),
            &request_body(i),
        );
        assert_eq!(status, 200);
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
    let admin = Admin::new(&s.url);
    admin.call(|a| a.apply(canary));
    // The first 100 rows of the shipped validation set: the replay's length in real time
    // depends on the machine, and this test is about the crash, not the validation.
    let validation = dir.path().join("validation_100.csv");
    let rows: Vec<String> = std::fs::read_to_string(models.join("validation_yield.csv"))
        .unwrap()
        .lines()
        .take(101)
        .map(str::to_string)
        .collect();
    std::fs::write(&validation, rows.join("\n") + "\n").unwrap();
    let bg = format!(
        "name: bg\nmodel: other\nkind: blue_green\nactive: blue\ncandidate: green\nvalidation_set: {}\nsmoke_requests: 3\nmonitor_min_requests: 1000000\nmonitor_duration_ms: 3600000\n",
        validation.display()
    );
    admin.call(|a| a.apply(&bg));
    let mut sent = 0;
    wait_for("the canary's step 2", Duration::from_secs(60), || {
        traffic(&s.url, sent, 40);
        sent += 40;
        admin.call(|a| a.rollout("c")).step == 2
    });
    wait_for("the blue-green switch", Duration::from_secs(180), || {
        admin.call(|a| a.rollout("bg")).phase == Phase::Monitoring
    });
    let routes_before = admin.call(|a| a.routes()).routes;
    let committed = metric(&s.url, "switchyard_log_written_records_total");
    assert!(committed > 0.0);

    // kill -9 (SIGKILL: no shutdown hook runs).
    let mut s = s;
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    drop(s);

    let s = serve(&config, &data);
    let admin = Admin::new(&s.url);
    let c = admin.call(|a| a.rollout("c"));
    assert_eq!((c.phase, c.step), (Phase::Running, 2), "{c:?}");
    let bg = admin.call(|a| a.rollout("bg"));
    assert_eq!(bg.phase, Phase::Monitoring, "{bg:?}");
    let routes_after = admin.call(|a| a.routes()).routes;
    assert_eq!(
        routes_after, routes_before,
        "the same weights and colours after the restart"
    );
    let audit = admin.call(|a| a.audit_verify());
    assert!(audit.ok, "{audit:?}");
    // Every record committed before the kill survived: the aggregates are rebuilt from the log
    // (only the yield model had traffic; blue-green validation calls are not logged).
    let stats = admin.call(|a| a.model_stats("yield", None));
    let recovered: u64 = stats.variants.iter().map(|v| v.stats.requests).sum();
    assert!(
        recovered as f64 >= committed,
        "recovered {recovered} of {committed} committed"
    );
    // And the rollouts carry on: traffic keeps flowing to the canary's weights.
    traffic(&s.url, sent, 20);
}

/// One inference with request id `id`; `None` when the connection fails or breaks (the
/// gateway is being killed).
fn try_infer(host: &str, id: &str, body: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(
        stream,
        "POST /v2/models/yield/infer HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nx-request-id: {id}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.get(9..12)?.parse().ok()
}

#[test]
fn with_sync_durability_every_answered_prediction_survives_kill_9() {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.yaml");
    std::fs::write(
        &config,
        format!(
            "log: {{ durability: sync, batch_size: 64 }}\nmodels:\n  yield:\n    versions:\n      v1: {{ onnx: {}/yield_v1.onnx }}\n    serve: {{ kind: single, version: v1 }}\n",
            repo().join("models").display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut s = serve(&config, &data);
    let host = s.url.strip_prefix("http://").unwrap().to_string();
    let answered = Arc::new(Mutex::new(BTreeSet::new()));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Four clients send until the gateway dies under them.
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (host, answered, sent, stop) =
                (host.clone(), answered.clone(), sent.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let id = format!("sync-{c}-{i}");
                    sent.fetch_add(1, Ordering::SeqCst);
                    match try_infer(&host, &id, &request_body(i)) {
                        Some(200) => {
                            answered.lock().unwrap().insert(id);
                        }
                        Some(other) => panic!("{id}: status {other}"),
                        None => return,
                    }
                    i += 1;
                }
            })
        })
        .collect();
    wait_for("400 answered predictions", Duration::from_secs(60), || {
        answered.lock().unwrap().len() >= 400
    });
    // kill -9 while the clients are still sending.
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    drop(s);
    let answered = answered.lock().unwrap().clone();
    let conn = switchyard_store::open_reader(&data.join("switchyard.sqlite")).unwrap();
    let (rows, _) = switchyard_store::read_log(&conn).unwrap();
    let logged: BTreeSet<String> = rows.into_iter().map(|r| r.record.request_id).collect();
    let lost: Vec<&String> = answered.difference(&logged).collect();
    assert!(
        lost.is_empty(),
        "{} of {} answered predictions are not in the log: {:?}",
        lost.len(),
        answered.len(),
        &lost[..lost.len().min(5)]
    );
    eprintln!(
        "sync durability: {} answered, {} logged, {} sent before the kill",
        answered.len(),
        logged.len(),
        sent.load(Ordering::SeqCst)
    );
}
