//! The data plane against slow and abusive clients, on raw sockets: trickled headers, stalled
//! bodies, huge headers, and a saturated prediction log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{eventually, oip_row, TestGateway};
use tokio::net::TcpStream;

/// Short limits so the tests are quick; a generous bound on how long anything may take.
const CONFIG: &str = r#"
limits: { header_read_timeout_ms: 300, body_read_timeout_ms: 300, max_header_bytes: 16384 }
models:
  yield:
    versions:
      v1: { onnx: models/yield_v1.onnx }
    serve: { kind: single, version: v1 }
"#;
const BOUND: Duration = Duration::from_secs(5);

fn good_row() -> Value {
    oip_row(&[1.0, 50.0, 2.0, 40.0, 1.0, 2.0, 1.0, 1000.0])
}

/// Requests recorded for `model` (after a flush, so the log has caught up).
async fn recorded(tg: &TestGateway, model: &str) -> u64 {
    tg.gateway.state.log.flush().await.unwrap();
    let agg = tg.gateway.state.log.aggregates().lock().clone();
    agg.series
        .iter()
        .filter(|(k, _)| k.model == model)
        .map(|(_, s)| s.requests)
        .sum()
}

/// The gateway still answers a good prediction.
async fn still_serving(tg: &TestGateway) {
    let r = tg
        .client
        .post_json(&tg.url("/v2/models/yield/infer"), &[], &good_row())
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

// Raw socket I/O without tokio's `io-util` (not enabled in this workspace).

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn read(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads until the peer closes the connection (or resets it); returns what was read.
async fn read_to_close(stream: &TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match read(stream, &mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one HTTP/1.1 response with a `content-length`: (status, body).
async fn read_response(stream: &TcpStream) -> (u16, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = read(stream, &mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before a response: {}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = read(stream, &mut buf).await.unwrap();
        assert!(n > 0, "closed in the middle of the body");
        data.extend_from_slice(&buf[..n]);
    }
    (status, data[head_end..head_end + length].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_headers_is_dropped_and_others_are_served() {
    let tg = TestGateway::start(CONFIG).await;
    let slow = TcpStream::connect(tg.gateway.addr).await.unwrap();
    let started = Instant::now();
    write_all(&slow, b"POST /v2/models/yield/in").await.unwrap();

    // While the slow client stalls, others are served.
    still_serving(&tg).await;

    let rest = tokio::time::timeout(BOUND, read_to_close(&slow))
        .await
        .expect("the server never closed the trickling connection");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}, before the header timeout"
    );
    // Closed silently, or after a 408: never a response to a request that never arrived.
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.is_empty() || rest.starts_with("HTTP/1.1 408"),
        "unexpected answer: {rest}"
    );

    // A connection that never sends anything is closed too.
    let idle = TcpStream::connect(tg.gateway.addr).await.unwrap();
    tokio::time::timeout(BOUND, read_to_close(&idle))
        .await
        .expect("the server never closed the idle connection");

    still_serving(&tg).await;
    assert_eq!(recorded(&tg, "yield").await, 2);

    // A stalled client does not hold up a graceful shutdown for longer than the timeout.
    let _stalled = {
        let s = TcpStream::connect(tg.gateway.addr).await.unwrap();
        write_all(&s, b"GET /heal").await.unwrap();
        s
    };
    tokio::time::timeout(BOUND, tg.gateway.shutdown())
        .await
        .expect("shutdown waited on a stalled client")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_is_not_counted_against_the_model() {
    let tg = TestGateway::start(CONFIG).await;
    still_serving(&tg).await;
    assert_eq!(recorded(&tg, "yield").await, 1);

    for path in ["/v2/models/yield/infer", "/v1/feedback"] {
        let stream = TcpStream::connect(tg.gateway.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
             content-length: 200\r\n\r\n{{\"inputs\": ["
        );
        write_all(&stream, head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let (status, body) = tokio::time::timeout(BOUND, read_response(&stream))
            .await
            .expect("no answer to a stalled body");
        let waited = started.elapsed();
        assert_eq!(status, 408, "{path}: {}", String::from_utf8_lossy(&body));
        assert!(
            waited >= Duration::from_millis(250),
            "{path}: 408 after {waited:?}, before the body timeout"
        );
        let json: Value = serde_json::from_slice(&body).unwrap();
        // The inference protocol's error form on /v2, switchyard's elsewhere.
        let (code, message) = if path.starts_with("/v2/") {
            (&json["code"], &json["error"])
        } else {
            (&json["error"]["code"], &json["error"]["message"])
        };
        assert_eq!(code, "body_timeout", "{path}: {json}");
        assert!(
            message.as_str().is_some_and(|m| m.contains("300 ms")),
            "{path}: {json}"
        );
    }

    still_serving(&tg).await;
    // The good requests count; the stalled one does not.
    assert_eq!(recorded(&tg, "yield").await, 2);
    let agg = tg.gateway.state.log.aggregates().lock().clone();
    assert!(agg.series.values().all(|s| s.errors == 0), "{agg:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_headers_get_431_or_a_closed_connection_never_a_crash() {
    let tg = TestGateway::start(CONFIG).await;
    for (name, size) in [("x-big", 200 * 1024), ("x-medium", 17 * 1024)] {
        let stream = TcpStream::connect(tg.gateway.addr).await.unwrap();
        let request = format!(
            "POST /v2/models/yield/infer HTTP/1.1\r\nhost: gateway\r\n{name}: {}\r\n\
             content-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}",
            "a".repeat(size)
        );
        // The server may close before it has read everything: a failed write is fine.
        let _ = write_all(&stream, request.as_bytes()).await;
        let answer = tokio::time::timeout(BOUND, read_to_close(&stream))
            .await
            .expect("the server kept a connection with oversized headers open");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{name}: unexpected answer: {}",
            &answer[..answer.len().min(200)]
        );
    }
    // Headers just under the limit are fine.
    let r = tg
        .client
        .send(
            "POST",
            &tg.url("/v2/models/yield/infer"),
            &[
                ("content-type", "application/json"),
                ("x-padding", &"a".repeat(8 * 1024)),
            ],
            good_row().to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = tg.client.get(&tg.url("/healthz")).await;
    assert_eq!(r.status, 200);
    still_serving(&tg).await;
    assert_eq!(recorded(&tg, "yield").await, 2);
}

// The lock is held across requests on purpose: it is what keeps the log writer busy.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_while_the_log_queue_is_saturated() {
    let yaml = format!("{CONFIG}log: {{ queue_capacity: 4, batch_size: 1 }}\n");
    let tg = TestGateway::start(&yaml).await;
    let r = tg.client.get(&tg.url("/readyz")).await;
    assert_eq!((r.status, r.json()["ready"].as_bool()), (200, Some(true)));

    // Hold the writer: after committing a batch it folds the records into the shared
    // aggregates, so while the test holds their lock, nothing leaves the queue after the
    // first record.
    let aggregates = tg.gateway.state.log.aggregates().clone();
    let guard = aggregates.lock();
    still_serving(&tg).await;
    // The writer has taken that first record and is stuck folding it in.
    assert!(eventually(BOUND, || tg.gateway.state.log.queue_depth() == 0).await);
    for _ in 0..7 {
        still_serving(&tg).await;
    }
    let r = tg.client.get(&tg.url("/readyz")).await;
    let json = r.json();
    assert_eq!(r.status, 503, "{json}");
    assert_eq!(json["ready"], false);
    assert_eq!(json["log_queue_depth"], 4);
    assert_eq!(json["log_queue_capacity"], 4);
    // 1 taken by the writer, 4 queued, the rest dropped (and counted).
    assert_eq!(json["log_dropped"], 3);

    drop(guard);
    assert!(eventually(BOUND, || tg.gateway.state.log.queue_depth() == 0).await);
    let r = tg.client.get(&tg.url("/readyz")).await;
    assert_eq!((r.status, r.json()["ready"].as_bool()), (200, Some(true)));
    assert_eq!(recorded(&tg, "yield").await, 5);
}
