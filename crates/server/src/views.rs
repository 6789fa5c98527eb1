//! JSON views of core and store types shared by the admin API, the controller and the reports:
//! one shape per statistic, wherever it is shown.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use switchyard_core::VariantStats;
use switchyard_store::StoredEvent;

/// Events as JSON, with their hash-chain fields.
pub fn events_json(events: &[StoredEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            let details: BTreeMap<&str, &switchyard_core::audit::Detail> = e
                .event
                .details
                .iter()
                .map(|(k, v)| (k.as_str(), v))
                .collect();
            json!({
                "seq": e.seq,
                "ts_ms": e.event.ts_ms,
                "kind": e.event.kind,
                "actor": e.event.actor,
                "message": e.event.message,
                "details": details,
                "hash": e.hash,
            })
        })
        .collect()
}

/// Statistics of one version as JSON.
pub fn stats_json(s: &VariantStats) -> Value {
    json!({
        "requests": s.requests,
        "errors": s.errors,
        "error_rate": s.error_rate(),
        "p50_ms": s.latency.p50().map(|u| u as f64 / 1000.0),
        "p95_ms": s.latency.p95().map(|u| u as f64 / 1000.0),
        "p99_ms": s.latency.p99().map(|u| u as f64 / 1000.0),
        "labelled": s.correct.trials.max(s.abs_error.count()),
        "accuracy": s.correct.rate(),
        "mae": s.abs_error.mean(),
        "rmse": s.sq_error.mean().map(f64::sqrt),
    })
}
