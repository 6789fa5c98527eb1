//! Blue-green validation: the validation set (and smoke requests) replayed against a backend
//! that takes no traffic yet, judged against the spec's thresholds; then, when the spec asks
//! for one, a load test: a bounded-rate burst of the validation set's rows (at most
//! `concurrency` in flight), its p95 and error rate judged against the load test's limits.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::json;
use switchyard_core::rollout::{LoadTest, LoadTestResult, Validation};
use switchyard_core::VariantStats;

use crate::backend::Call;
use crate::protocol::{self, Wire};

/// Replays a validation set (and smoke requests) against a backend that takes no traffic yet.
#[allow(clippy::too_many_arguments)]
pub(super) async fn validate(
    backend: &crate::backend::Backend,
    model: &str,
    version: &str,
    task: switchyard_core::config::Task,
    classes: Option<&[String]>,
    path: Option<&Path>,
    smoke: u64,
    min_accuracy: Option<f64>,
    max_p95_ms: Option<f64>,
    load_test: Option<&LoadTest>,
) -> Validation {
    let fail = |reason: String| Validation {
        passed: false,
        smoke_ok: false,
        samples: 0,
        accuracy: None,
        p95_ms: None,
        reason,
        load_test: None,
    };
    let rows: Vec<(Vec<f32>, String)> = match path {
        Some(p) => match read_validation_set(p) {
            Ok(rows) => rows,
            Err(e) => return fail(e),
        },
        None => return fail("no validation_set given".into()),
    };
    let mut latency = VariantStats::default().latency;
    let (mut correct, mut samples) = (0u64, 0u64);
    for (i, (row, label)) in rows.iter().enumerate() {
        let body = protocol::JsonBody::from_value(protocol::rows_to_request(
            Wire::V2,
            std::slice::from_ref(row),
        ));
        let call = Call {
            wire: Wire::V2,
            model,
            version,
            body: &body,
            task,
            classes,
        };
        let started = Instant::now();
        let result = backend.call(&call, backend.timeout()).await;
        latency.record(started.elapsed().as_micros() as u64);
        match result {
            Ok(reply) => {
                samples += 1;
                if let switchyard_core::Prediction::Classes(c) = &reply.prediction {
                    correct += u64::from(c.first() == Some(label));
                }
            }
            Err(e) if (i as u64) < smoke => {
                return fail(format!("smoke request {} failed: {e}", i + 1))
            }
            Err(_) => {}
        }
    }
    let accuracy = (samples > 0).then(|| correct as f64 / samples as f64);
    let p95_ms = latency.p95().map(|us| us as f64 / 1000.0);
    let mut reasons = Vec::new();
    if let (Some(min), Some(acc)) = (min_accuracy, accuracy) {
        if acc < min {
            reasons.push(format!(
                "accuracy {:.1}% below {:.1}%",
                acc * 100.0,
                min * 100.0
            ));
        }
    }
    if let (Some(max), Some(p95)) = (max_p95_ms, p95_ms) {
        if p95 > max {
            reasons.push(format!("p95 {p95:.2} ms above {max:.2} ms"));
        }
    }
    if samples < rows.len() as u64 {
        reasons.push(format!(
            "{} of {} requests failed",
            rows.len() as u64 - samples,
            rows.len()
        ));
    }
    // The burst only for a candidate that passed the replay.
    let mut load = None;
    if let (Some(limits), true) = (load_test, reasons.is_empty()) {
        let features: Vec<Vec<f32>> = rows.into_iter().map(|(row, _)| row).collect();
        let result = burst(backend, model, version, task, classes, &features, limits).await;
        reasons.extend(limits.failures(&result));
        load = Some(result);
    }
    Validation {
        passed: reasons.is_empty(),
        smoke_ok: true,
        samples,
        accuracy,
        p95_ms,
        load_test: load,
        reason: if reasons.is_empty() {
            "all thresholds met".into()
        } else {
            reasons.join("; ")
        },
    }
}

/// The load test: `limits.requests()` calls through `backend`, the n-th due `n / rate` seconds
/// after the first, at most `concurrency` in flight (a call that would pass the bound waits
/// for one to finish, so an overloaded backend lowers the rate achieved rather than piling up
/// requests: `elapsed_ms` tells). Each call's latency runs from its send to its answer.
async fn burst(
    backend: &crate::backend::Backend,
    model: &str,
    version: &str,
    task: switchyard_core::config::Task,
    classes: Option<&[String]>,
    rows: &[Vec<f32>],
    limits: &LoadTest,
) -> LoadTestResult {
    let bodies: Vec<protocol::JsonBody> = rows
        .iter()
        .map(|row| {
            protocol::JsonBody::from_value(protocol::rows_to_request(
                Wire::V2,
                std::slice::from_ref(row),
            ))
        })
        .collect();
    if bodies.is_empty() {
        return LoadTestResult {
            requests: 0,
            errors: 0,
            p95_ms: None,
            elapsed_ms: 0,
        };
    }
    let total = limits.requests();
    let concurrency = limits.concurrency.max(1) as usize;
    let timeout = backend.timeout();
    let one = |n: u64| {
        let body = &bodies[(n % bodies.len() as u64) as usize];
        async move {
            let call = Call {
                wire: Wire::V2,
                model,
                version,
                body,
                task,
                classes,
            };
            let sent = Instant::now();
            let ok = backend.call(&call, timeout).await.is_ok();
            (sent.elapsed().as_micros() as u64, ok)
        }
    };
    let mut latency = VariantStats::default().latency;
    let (mut errors, mut done, mut sent) = (0u64, 0u64, 0u64);
    let mut in_flight = FuturesUnordered::new();
    let started = tokio::time::Instant::now();
    while done < total {
        let can_send = sent < total && in_flight.len() < concurrency;
        let due = started + Duration::from_secs_f64(sent as f64 / limits.rate);
        tokio::select! {
            _ = tokio::time::sleep_until(due), if can_send => {
                in_flight.push(one(sent));
                sent += 1;
            }
            Some((us, ok)) = in_flight.next(), if !in_flight.is_empty() => {
                latency.record(us);
                errors += u64::from(!ok);
                done += 1;
            }
        }
    }
    LoadTestResult {
        requests: done,
        errors,
        p95_ms: latency.p95().map(|us| us as f64 / 1000.0),
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

/// Reads a CSV whose last column is the label and the others numeric features.
pub fn read_validation_set(path: &Path) -> Result<Vec<(Vec<f32>, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let Some((label, features)) = cells.split_last() else {
            continue;
        };
        let features = features
            .iter()
            .map(|c| {
                c.parse::<f32>().map_err(|_| {
                    format!("{} line {}: '{c}' is not a number", path.display(), n + 1)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let label = label
            .parse::<f64>()
            .ok()
            .and_then(|f| protocol::label_of(&json!(f)))
            .unwrap_or_else(|| label.to_string());
        rows.push((features, label));
    }
    if rows.is_empty() {
        return Err(format!("{} holds no rows", path.display()));
    }
    Ok(rows)
}
