//! Blue-green: the candidate is deployed to the idle colour, validated by a replay before it
//! takes any traffic, switched to all at once, watched through a monitoring window (switched
//! back on errors or latency), and the old colour is kept warm until the retention ends.
//!
//! Its spec ([`BlueGreenSpec`], written as [`RawBlueGreen`]) and state machine live here.

use serde::{Deserialize, Serialize};

use super::external::{self, ExternalGate, RawExternalGate, Tallied};
use super::raw::{nullable, raw_fields, required};
use super::{
    d, default_min_p95_increase_ms, frac, opt, rollback, single, Observations, Out, Phase,
    RolloutState,
};
use crate::audit::Severity;
use crate::routing::{Colour, Strategy};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlueGreenSpec {
    /// The version serving now (blue).
    pub active: String,
    /// The version deployed to the idle colour (green).
    pub candidate: String,
    /// Validation thresholds applied to the replay of the validation set.
    pub min_accuracy: Option<f64>,
    pub max_p95_ms: Option<f64>,
    /// Monitoring window after the switch: until both are reached.
    pub monitor_min_requests: u64,
    pub monitor_duration_ms: u64,
    pub max_error_rate: f64,
    /// Green's p95 over blue's p95 before the switch that triggers a switch back; `None`
    /// disables the latency check of the monitoring window.
    pub max_p95_ratio: Option<f64>,
    /// Latency increases smaller than this (absolute, ms) never trigger a switch back, like the
    /// canary gate's floor: p95 of a few ms moves by more than 50% with scheduling alone.
    #[serde(default = "default_min_p95_increase_ms")]
    pub min_p95_increase_ms: f64,
    /// How long the old colour stays warm after a good switch.
    pub retention_ms: u64,
    /// CSV (feature columns, then `label`) replayed against the candidate before the switch.
    pub validation_set: Option<String>,
    /// Requests of the replay that must all succeed before anything else is judged.
    pub smoke_requests: u64,
    /// A bounded-rate burst against green before the switch, with its limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_test: Option<LoadTest>,
    /// Gates fed from outside, read during the monitoring window (see `rollout::external`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external: Vec<ExternalGate>,
}

/// The blue-green load test: `rate` requests per second for `duration_ms` (at most
/// `concurrency` in flight) through green's backend, the validation set's rows in turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadTest {
    pub rate: f64,
    pub duration_ms: u64,
    pub concurrency: u32,
    /// Green's p95 during the burst must not exceed this; `None`: not judged.
    pub max_p95_ms: Option<f64>,
    /// Fraction of the burst's requests that may fail.
    pub max_error_rate: f64,
}

/// What the load test measured (the driver runs it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadTestResult {
    pub requests: u64,
    pub errors: u64,
    pub p95_ms: Option<f64>,
    /// Wall time of the burst, ms: `requests / elapsed` is the rate achieved.
    pub elapsed_ms: u64,
}

/// Default concurrency of the load test.
pub const DEFAULT_LOAD_CONCURRENCY: u32 = 32;
/// The most requests one load test may send (rate × duration).
pub const MAX_LOAD_REQUESTS: u64 = 1_000_000;

impl LoadTest {
    /// Requests of the burst: `rate × duration`, at least one.
    pub fn requests(&self) -> u64 {
        ((self.rate * self.duration_ms as f64 / 1000.0).round() as u64).max(1)
    }

    /// Why the burst fails its limits (empty: it passes).
    pub fn failures(&self, r: &LoadTestResult) -> Vec<String> {
        let mut reasons = Vec::new();
        let error_rate = if r.requests == 0 {
            1.0
        } else {
            r.errors as f64 / r.requests as f64
        };
        if error_rate > self.max_error_rate {
            reasons.push(format!(
                "load test: {} of {} requests failed ({:.2}%, limit {:.2}%)",
                r.errors,
                r.requests,
                error_rate * 100.0,
                self.max_error_rate * 100.0
            ));
        }
        if let (Some(max), Some(p95)) = (self.max_p95_ms, r.p95_ms) {
            if p95 > max {
                reasons.push(format!("load test: p95 {p95:.1} ms above {max:.1} ms"));
            }
        }
        reasons
    }

    fn problems(&self, p: &mut Vec<String>) {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            p.push(format!(
                "load_test.rate must be a positive number of requests per second, got {}",
                self.rate
            ));
        } else if self.duration_ms == 0 {
            p.push("load_test.duration_ms must be at least 1".into());
        } else if self.requests() > MAX_LOAD_REQUESTS {
            p.push(format!(
                "load_test: rate × duration is {} requests, more than {MAX_LOAD_REQUESTS}",
                self.requests()
            ));
        }
        if self.concurrency == 0 {
            p.push("load_test.concurrency must be at least 1".into());
        }
        if let Some(ms) = self.max_p95_ms {
            frac("load_test.max_p95_ms", ms, p);
        }
        if !(self.max_error_rate.is_finite() && (0.0..=1.0).contains(&self.max_error_rate)) {
            p.push(format!(
                "load_test.max_error_rate must be a fraction in [0, 1], got {}",
                self.max_error_rate
            ));
        }
    }
}

/// `load_test:` as written.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawLoadTest {
    /// Requests per second.
    pub rate: Option<f64>,
    pub duration_ms: Option<u64>,
    pub concurrency: Option<u32>,
    pub max_p95_ms: Option<f64>,
    pub max_error_rate: Option<f64>,
}

// ---------------------------------------------------------------------------------------------
// As written (`rollout_config`): durations in milliseconds.

/// Default retention of the old colour after a good switch.
pub const DEFAULT_RETENTION_MS: u64 = 24 * 3_600_000;
/// Blue-green: green's p95 over blue's that switches back.
pub const DEFAULT_MAX_P95_RATIO: f64 = 1.5;

raw_fields! {
    /// A blue-green rollout as written.
    pub struct RawBlueGreen {
        active: Option<String>,
        candidate: Option<String>,
        min_accuracy: Option<f64>,
        max_p95_ms: Option<f64>,
        monitor_min_requests: Option<u64>,
        monitor_duration_ms: Option<u64>,
        max_error_rate: Option<f64>,
        /// Green's p95 over blue's that switches back: not written, the default; `null`
        /// disables the latency check.
        max_p95_ratio: Option<Option<f64>> = nullable,
        /// p95 increases below this many ms never switch back.
        min_p95_increase_ms: Option<f64>,
        retention_ms: Option<u64>,
        validation_set: Option<String>,
        smoke_requests: Option<u64>,
        /// `{rate, duration_ms, concurrency, max_p95_ms, max_error_rate}`.
        load_test: Option<RawLoadTest>,
        /// External gates of the monitoring window.
        external: Option<Vec<RawExternalGate>>,
    }
}

impl RawBlueGreen {
    /// Builds the spec, adding its problems.
    pub(crate) fn validate(self, problems: &mut Vec<String>) -> BlueGreenSpec {
        BlueGreenSpec {
            active: required(&self.active, "active", "blue_green", problems),
            candidate: required(&self.candidate, "candidate", "blue_green", problems),
            min_accuracy: self.min_accuracy,
            max_p95_ms: self.max_p95_ms,
            monitor_min_requests: self.monitor_min_requests.unwrap_or(100),
            monitor_duration_ms: self.monitor_duration_ms.unwrap_or(300_000),
            max_error_rate: self.max_error_rate.unwrap_or(0.05),
            max_p95_ratio: self.max_p95_ratio.unwrap_or(Some(DEFAULT_MAX_P95_RATIO)),
            min_p95_increase_ms: self
                .min_p95_increase_ms
                .unwrap_or(super::DEFAULT_MIN_P95_INCREASE_MS),
            retention_ms: self.retention_ms.unwrap_or(DEFAULT_RETENTION_MS),
            validation_set: self.validation_set,
            smoke_requests: self.smoke_requests.unwrap_or(10),
            load_test: self.load_test.map(|l| {
                if l.rate.is_none() {
                    problems.push("load_test.rate: required (requests per second)".into());
                }
                if l.duration_ms.is_none() {
                    problems.push("load_test.duration_ms: required".into());
                }
                LoadTest {
                    rate: l.rate.unwrap_or(1.0),
                    duration_ms: l.duration_ms.unwrap_or(1),
                    concurrency: l.concurrency.unwrap_or(DEFAULT_LOAD_CONCURRENCY),
                    max_p95_ms: l.max_p95_ms,
                    max_error_rate: l.max_error_rate.unwrap_or(0.0),
                }
            }),
            external: self.external.map_or_else(Vec::new, |raw| {
                external::validate(raw, "external", problems)
            }),
        }
    }
}

/// The blue-green rollout's own problems.
pub(super) fn problems(b: &BlueGreenSpec, p: &mut Vec<String>) {
    if let Some(acc) = b.min_accuracy {
        if !(0.0..=1.0).contains(&acc) {
            p.push(format!("min_accuracy must be in [0, 1], got {acc}"));
        }
    }
    if let Some(ms) = b.max_p95_ms {
        frac("max_p95_ms", ms, p);
    }
    frac("max_error_rate", b.max_error_rate, p);
    if let Some(ratio) = b.max_p95_ratio {
        if !(ratio.is_finite() && ratio >= 1.0) {
            p.push(format!("max_p95_ratio must be at least 1, got {ratio}"));
        }
    }
    if !(b.min_p95_increase_ms.is_finite() && b.min_p95_increase_ms >= 0.0) {
        p.push(format!(
            "min_p95_increase_ms must be a non-negative number, got {}",
            b.min_p95_increase_ms
        ));
    }
    if let Some(l) = &b.load_test {
        l.problems(p);
    }
}

pub(super) fn blue_green(b: &BlueGreenSpec, active: Colour) -> Strategy {
    Strategy::BlueGreen {
        blue: b.active.clone(),
        green: b.candidate.clone(),
        active,
    }
}

pub(super) fn tick_blue_green(
    b: &BlueGreenSpec,
    state: &mut RolloutState,
    obs: &Observations,
    out: &mut Out<'_>,
) {
    match state.phase {
        Phase::Validating => {
            let Some(v) = &obs.validation else {
                state.reason = Some("validating the candidate".into());
                return;
            };
            let mut details = vec![
                d("smoke_ok", v.smoke_ok),
                d("samples", v.samples),
                opt("accuracy", v.accuracy),
                opt("p95_ms", v.p95_ms),
                opt("min_accuracy", b.min_accuracy),
                opt("max_p95_ms", b.max_p95_ms),
            ];
            if let Some(r) = &v.load_test {
                details.extend([
                    d("load_requests", r.requests),
                    d("load_errors", r.errors),
                    opt("load_p95_ms", r.p95_ms),
                    d("load_elapsed_ms", r.elapsed_ms),
                ]);
                if let Some(l) = &b.load_test {
                    details.extend([
                        d("load_rate", l.rate),
                        opt("load_max_p95_ms", l.max_p95_ms),
                        d("load_max_error_rate", l.max_error_rate),
                    ]);
                }
            }
            if !v.passed {
                out.set(state, single(&b.active));
                state.phase = Phase::Aborted;
                state.reason = Some(format!("validation failed: {}", v.reason));
                out.event(
                    "validation_failed",
                    format!("validation of {} failed: {}", b.candidate, v.reason),
                    details.clone(),
                );
                out.alert(
                    Severity::P2,
                    "validation_failed",
                    format!(
                        "{}: {} failed validation: {}",
                        out.spec.name, b.candidate, v.reason
                    ),
                    details,
                );
                return;
            }
            out.event(
                "validated",
                format!("{} passed validation", b.candidate),
                details,
            );
            // Blue's latency is a baseline only when it rests on enough requests.
            let blue = obs.total_of(&b.active);
            state.baseline_p95_us = if blue.requests >= b.monitor_min_requests {
                blue.latency.p95()
            } else {
                None
            };
            out.set(state, blue_green(b, Colour::Green));
            state.phase = Phase::Monitoring;
            state.switched_ms = Some(out.now);
            state.step_started_ms = out.now;
            state.reason = None;
            out.event(
                "switched",
                format!("traffic switched to green ({})", b.candidate),
                vec![d("active", "green"), d("version", b.candidate.as_str())],
            );
            out.alert(
                Severity::P3,
                "switch_done",
                format!("{}: switched to {}", out.spec.name, b.candidate),
                vec![],
            );
        }
        Phase::Monitoring => {
            match external::tally(&b.external, state, obs) {
                Tallied::Continue => {}
                Tallied::Rollback { reason, details } => {
                    out.event("monitor_failed", reason.clone(), details.clone());
                    rollback(
                        state,
                        out,
                        blue_green(b, Colour::Blue),
                        &format!("switched back to blue: {reason}"),
                        Severity::P0,
                        details,
                    );
                    return;
                }
                Tallied::Pause { reason, details } => {
                    external::pause(state, out, &reason, details);
                    return;
                }
            }
            let green = obs.step_of(&b.candidate);
            let elapsed = (out.now - state.step_started_ms).max(0) as u64;
            let error_rate = green.error_rate().unwrap_or(0.0);
            let p95 = green.latency.p95();
            let mut details = vec![
                d("green_requests", green.requests),
                d("green_error_rate", error_rate),
                d("max_error_rate", b.max_error_rate),
            ];
            if let Some(p) = p95 {
                details.push(d("green_p95_us", p));
            }
            if let Some(base) = state.baseline_p95_us {
                details.push(d("blue_p95_us", base));
            }
            // Errors need a handful of requests to be meaningful; latency needs the window.
            let min_for_errors = (b.monitor_min_requests / 10).max(10);
            let error_fail = green.requests >= min_for_errors && error_rate > b.max_error_rate;
            let latency_limit_us = match (b.max_p95_ratio, state.baseline_p95_us) {
                (Some(ratio), Some(base)) if base > 0 => {
                    Some((base as f64 * ratio).max(base as f64 + b.min_p95_increase_ms * 1000.0))
                }
                _ => None,
            };
            if let Some(limit) = latency_limit_us {
                details.push(d("p95_limit_us", limit));
            }
            let latency_fail = green.requests >= b.monitor_min_requests
                && matches!((p95, latency_limit_us), (Some(p), Some(limit)) if p as f64 > limit);
            if error_fail || latency_fail {
                let reason = if error_fail {
                    format!(
                        "green error rate {:.1}% above {:.1}%",
                        error_rate * 100.0,
                        b.max_error_rate * 100.0
                    )
                } else {
                    format!(
                        "green p95 {:.1} ms above {:.1} ms (blue's {:.1} ms, limit {:.1}x or +{} ms)",
                        p95.unwrap_or(0) as f64 / 1000.0,
                        latency_limit_us.unwrap_or(0.0) / 1000.0,
                        state.baseline_p95_us.unwrap_or(0) as f64 / 1000.0,
                        b.max_p95_ratio.unwrap_or(0.0),
                        b.min_p95_increase_ms
                    )
                };
                out.event("monitor_failed", reason.clone(), details.clone());
                rollback(
                    state,
                    out,
                    blue_green(b, Colour::Blue),
                    &format!("switched back to blue: {reason}"),
                    Severity::P0,
                    details,
                );
                return;
            }
            let window_done =
                green.requests >= b.monitor_min_requests && elapsed >= b.monitor_duration_ms;
            if !window_done {
                state.reason = Some(format!(
                    "monitoring: {}/{} requests, {elapsed}/{} ms",
                    green.requests, b.monitor_min_requests, b.monitor_duration_ms
                ));
                return;
            }
            match external::step_passes(&b.external, obs, state.step_started_ms) {
                Err(waiting) => state.reason = Some(format!("monitoring: {waiting}")),
                Ok(readings) => {
                    details.extend(readings);
                    state.phase = Phase::Retaining;
                    state.reason = Some(format!(
                        "blue ({}) kept warm for {} ms",
                        b.active, b.retention_ms
                    ));
                    out.event("monitor_passed", "monitoring window passed", details);
                }
            }
        }
        Phase::Retaining => {
            let since = state.switched_ms.unwrap_or(state.step_started_ms);
            if out.now - since >= b.retention_ms as i64 {
                out.set(state, single(&b.candidate));
                state.phase = Phase::Completed;
                state.reason = Some(format!("{} retired", b.active));
                out.event(
                    "retired",
                    format!("blue ({}) retired after the retention period", b.active),
                    vec![d("retention_ms", b.retention_ms)],
                );
                out.alert(
                    Severity::P3,
                    "completed",
                    format!("{}: {} is now the only colour", out.spec.name, b.candidate),
                    vec![],
                );
            }
        }
        _ => {}
    }
}
