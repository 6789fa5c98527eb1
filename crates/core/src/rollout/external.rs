//! External analysis gates: readings from outside switchyard (a PromQL query against a
//! Prometheus server, or an HTTP check that answers pass/fail or a value), in the manner of
//! Argo Rollouts' AnalysisTemplate and Flagger's metric templates.
//!
//! Nothing here queries anything: the driver runs each gate every `interval_ms` (of the
//! controller's clock), with its `timeout_ms`, and hands the latest [`ExternalReading`] of
//! every gate to the state machine in [`super::Observations::external`]. This module judges
//! them:
//!
//! - a reading past its limit (`max`/`min`, or a webhook's `{"pass": false}`) is a **failure**;
//!   the `failure_limit + 1`-th failure of the rollout rolls it back (Argo's `failureLimit`,
//!   default 0: the first failure rolls back), naming the gate, the value and the limit;
//! - no answer, an error or a result that is not one number is **no data**: it never passes,
//!   so a step holds; more than `inconclusive_limit` no-data readings in a row pause the rollout
//!   with an alert (Argo's `inconclusiveLimit`); `resume` starts the count again;
//! - a step passes only when every gate's latest reading was taken after the step began and
//!   passes (so a query whose range covers the step's traffic wants a `min_duration_ms` of at
//!   least its range and the scrape interval).
//!
//! Each reading is counted once: [`GateTally::last_at_ms`] (in the rollout's state) remembers
//! the newest one seen.

use serde::{Deserialize, Serialize};

use super::{d, Observations, Out, Phase, RolloutState};
use crate::audit::{Detail, Details, Severity};

/// Default time between two readings of a gate (ms of the controller's clock).
pub const DEFAULT_INTERVAL_MS: u64 = 30_000;
/// Default limit on one query or check.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Default number of no-data readings in a row tolerated before the rollout pauses.
pub const DEFAULT_INCONCLUSIVE_LIMIT: u32 = 3;

/// Where a gate's reading comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExternalSource {
    /// An instant PromQL query (`GET {url}/api/v1/query`): a vector of one sample, or a scalar.
    Prometheus { url: String, query: String },
    /// `POST {url}` with the rollout's context as JSON; answers `{"pass": bool}` or
    /// `{"value": number}`.
    Webhook { url: String },
}

impl ExternalSource {
    /// `prometheus` or `webhook`.
    pub fn kind(&self) -> &'static str {
        match self {
            ExternalSource::Prometheus { .. } => "prometheus",
            ExternalSource::Webhook { .. } => "webhook",
        }
    }
}

/// One external gate of a canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalGate {
    pub name: String,
    pub source: ExternalSource,
    /// A value above this fails the gate.
    pub max: Option<f64>,
    /// A value below this fails the gate.
    pub min: Option<f64>,
    /// Time between two readings (ms of the controller's clock).
    pub interval_ms: u64,
    /// Limit on one query or check; no answer by then is no data.
    pub timeout_ms: u64,
    /// Failed readings tolerated over the rollout; one more rolls it back.
    pub failure_limit: u32,
    /// No-data readings in a row tolerated; one more pauses the rollout. `None`: never pauses
    /// (the step holds until its deadline, if it has one).
    pub inconclusive_limit: Option<u32>,
}

/// What a query or check gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reading {
    /// One number (a Prometheus sample or scalar, or a webhook's `value`).
    Value { value: f64 },
    /// A webhook's own verdict.
    Verdict { pass: bool },
    /// No usable answer, and why.
    NoData { reason: String },
}

/// The latest reading of one gate, with the (controller clock) time its query started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalReading {
    pub at_ms: i64,
    pub reading: Reading,
}

/// How one reading fares against its gate.
#[derive(Debug, Clone, PartialEq)]
pub enum Judged {
    Pass,
    /// Past the limit: why, naming the gate, the value and the limit.
    Fail(String),
    NoData(String),
}

/// What the rollout's state remembers of one gate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GateTally {
    /// The newest reading counted (its `at_ms`).
    pub last_at_ms: Option<i64>,
    /// Failed readings over the rollout.
    pub failures: u32,
    /// No-data readings in a row.
    pub no_data_run: u32,
}

impl ExternalGate {
    /// Judges one reading.
    pub fn judge(&self, reading: &Reading) -> Judged {
        match reading {
            Reading::NoData { reason } => Judged::NoData(reason.clone()),
            Reading::Verdict { pass: true } => Judged::Pass,
            Reading::Verdict { pass: false } => Judged::Fail(format!(
                "external gate '{}': the check answered fail",
                self.name
            )),
            Reading::Value { value } if !value.is_finite() => {
                Judged::NoData(format!("the value is {value}, not a number to compare"))
            }
            Reading::Value { value } => match (self.max, self.min) {
                (Some(max), _) if *value > max => Judged::Fail(format!(
                    "external gate '{}': {value} above its max {max}",
                    self.name
                )),
                (_, Some(min)) if *value < min => Judged::Fail(format!(
                    "external gate '{}': {value} below its min {min}",
                    self.name
                )),
                (None, None) => Judged::NoData(format!(
                    "answered the value {value}, but the gate has no max or min to compare it with"
                )),
                _ => Judged::Pass,
            },
        }
    }

    /// The limit, for details: `max` or `min`.
    fn limit_details(&self, details: &mut Details) {
        if let Some(max) = self.max {
            details.push(d("max", max));
        }
        if let Some(min) = self.min {
            details.push(d("min", min));
        }
    }
}

impl Reading {
    fn details(&self, details: &mut Details) {
        match self {
            Reading::Value { value } => details.push(d("value", *value)),
            Reading::Verdict { pass } => details.push(d("pass", *pass)),
            Reading::NoData { reason } => details.push(d("no_data", reason.as_str())),
        }
    }
}

/// What the new readings call for.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tallied {
    /// Nothing beyond the step's own judgement.
    Continue,
    /// A gate failed more often than it tolerates.
    Rollback { reason: String, details: Details },
    /// A gate gave no data more often in a row than it tolerates.
    Pause { reason: String, details: Details },
}

/// Counts every gate's reading that is newer than the last one counted, in the gates' order;
/// the first gate past its failure limit (else past its inconclusive limit) decides.
pub(super) fn tally(
    gates: &[ExternalGate],
    state: &mut RolloutState,
    obs: &Observations,
) -> Tallied {
    let mut verdict = Tallied::Continue;
    for gate in gates {
        let Some(r) = obs.external.get(&gate.name) else {
            continue;
        };
        let t = state.external.entry(gate.name.clone()).or_default();
        if t.last_at_ms.is_some_and(|last| r.at_ms <= last) {
            continue;
        }
        t.last_at_ms = Some(r.at_ms);
        let mut details = vec![
            d("gate", gate.name.as_str()),
            d("source", gate.source.kind()),
        ];
        r.reading.details(&mut details);
        gate.limit_details(&mut details);
        match gate.judge(&r.reading) {
            Judged::Pass => t.no_data_run = 0,
            Judged::Fail(reason) => {
                t.no_data_run = 0;
                t.failures += 1;
                details.push(d("failures", u64::from(t.failures)));
                details.push(d("failure_limit", u64::from(gate.failure_limit)));
                if t.failures > gate.failure_limit && !matches!(verdict, Tallied::Rollback { .. }) {
                    verdict = Tallied::Rollback { reason, details };
                }
            }
            Judged::NoData(why) => {
                t.no_data_run += 1;
                let Some(limit) = gate.inconclusive_limit else {
                    continue;
                };
                if t.no_data_run > limit && matches!(verdict, Tallied::Continue) {
                    details.push(d("no_data_in_a_row", u64::from(t.no_data_run)));
                    details.push(d("inconclusive_limit", u64::from(limit)));
                    verdict = Tallied::Pause {
                        reason: format!(
                            "external gate '{}' gave no data {} times in a row (limit {limit}): {why}",
                            gate.name, t.no_data_run
                        ),
                        details,
                    };
                }
            }
        }
    }
    if let Tallied::Pause { .. } = verdict {
        // After a resume the gates get their full allowance again.
        for t in state.external.values_mut() {
            t.no_data_run = 0;
        }
    }
    verdict
}

/// Pauses a rollout whose gate gave no data too often, with a P1 alert; `resume` continues.
pub(super) fn pause(state: &mut RolloutState, out: &mut Out<'_>, reason: &str, details: Details) {
    state.paused_from = Some(state.phase);
    state.phase = Phase::Paused;
    state.reason = Some(format!("paused: {reason}"));
    out.event("paused", format!("paused: {reason}"), details.clone());
    out.alert(
        Severity::P1,
        "external_no_data",
        format!("{} paused: {reason}", out.spec.name),
        details,
    );
}

/// Whether every gate passes for a step that began at `since`: its latest reading must have
/// been taken after the step began, and pass. `Err` says what the step waits for; `Ok` gives the values.
pub(super) fn step_passes(
    gates: &[ExternalGate],
    obs: &Observations,
    since: i64,
) -> Result<Details, String> {
    let mut details = Vec::new();
    for gate in gates {
        let reading = obs.external.get(&gate.name).filter(|r| r.at_ms > since);
        let Some(r) = reading else {
            return Err(format!(
                "waiting for external gate '{}': no reading since the step began",
                gate.name
            ));
        };
        match gate.judge(&r.reading) {
            Judged::Pass => {}
            Judged::Fail(reason) => return Err(format!("{reason} (within its failure limit)")),
            Judged::NoData(why) => {
                return Err(format!(
                    "waiting for external gate '{}': no data ({why})",
                    gate.name
                ))
            }
        }
        let key = format!("external.{}", gate.name);
        details.push(match &r.reading {
            Reading::Value { value } => (key, Detail::Num(*value)),
            Reading::Verdict { pass } => (key, Detail::Bool(*pass)),
            Reading::NoData { reason } => (key, Detail::Text(reason.clone())),
        });
    }
    Ok(details)
}

// ---------------------------------------------------------------------------------------------
// As written.

/// `prometheus: { url, query }`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawPrometheus {
    pub url: Option<String>,
    pub query: Option<String>,
}

/// `webhook: { url }`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawWebhook {
    pub url: Option<String>,
}

/// One external gate as written (an item of a canary's `gate.external`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawExternalGate {
    pub name: Option<String>,
    pub prometheus: Option<RawPrometheus>,
    pub webhook: Option<RawWebhook>,
    pub max: Option<f64>,
    pub min: Option<f64>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub failure_limit: Option<u32>,
    /// `null` never pauses; not written, [`DEFAULT_INCONCLUSIVE_LIMIT`].
    #[serde(default, deserialize_with = "super::raw::nullable")]
    pub inconclusive_limit: Option<Option<u32>>,
}

/// Validates a list of gates written at `at` (e.g. `gate.external`), adding its problems.
pub(crate) fn validate(
    raw: Vec<RawExternalGate>,
    at: &str,
    problems: &mut Vec<String>,
) -> Vec<ExternalGate> {
    let mut names: Vec<String> = Vec::new();
    raw.into_iter()
        .enumerate()
        .map(|(i, g)| {
            let here = format!("{at}[{i}]");
            let name = match g.name.as_deref().map(str::trim) {
                Some(n) if !n.is_empty() => n.to_string(),
                _ => {
                    problems.push(format!("{here}.name: required"));
                    format!("external-{i}")
                }
            };
            if names.contains(&name) {
                problems.push(format!("{here}.name: '{name}' names another gate too"));
            }
            names.push(name.clone());
            let source = match (g.prometheus, g.webhook) {
                (Some(p), None) => {
                    let url = url(p.url, &format!("{here}.prometheus.url"), problems);
                    let query = match p.query.as_deref().map(str::trim) {
                        Some(q) if !q.is_empty() => q.to_string(),
                        _ => {
                            problems.push(format!(
                                "{here}.prometheus.query: required (a PromQL expression)"
                            ));
                            String::new()
                        }
                    };
                    ExternalSource::Prometheus { url, query }
                }
                (None, Some(w)) => ExternalSource::Webhook {
                    url: url(w.url, &format!("{here}.webhook.url"), problems),
                },
                (Some(_), Some(_)) => {
                    problems.push(format!(
                        "{here}: give either prometheus or webhook, not both"
                    ));
                    ExternalSource::Webhook { url: String::new() }
                }
                (None, None) => {
                    problems.push(format!(
                        "{here}: needs a source: prometheus: {{ url, query }} or webhook: {{ url }}"
                    ));
                    ExternalSource::Webhook { url: String::new() }
                }
            };
            for (field, v) in [("max", g.max), ("min", g.min)] {
                if let Some(v) = v {
                    if !v.is_finite() {
                        problems.push(format!("{here}.{field}: must be a number, got {v}"));
                    }
                }
            }
            match (&source, g.max, g.min) {
                (_, Some(_), Some(_)) => problems.push(format!(
                    "{here}: give either max or min, not both (a value above max, or below min, fails)"
                )),
                (ExternalSource::Prometheus { .. }, None, None) => problems.push(format!(
                    "{here}: a prometheus gate needs max or min (the limit its value must not cross)"
                )),
                _ => {}
            }
            let interval_ms = g.interval_ms.unwrap_or(DEFAULT_INTERVAL_MS);
            if interval_ms == 0 {
                problems.push(format!("{here}.interval_ms: must be at least 1"));
            }
            let timeout_ms = g.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
            if timeout_ms == 0 {
                problems.push(format!("{here}.timeout_ms: must be at least 1"));
            }
            ExternalGate {
                name,
                source,
                max: g.max,
                min: g.min,
                interval_ms,
                timeout_ms,
                failure_limit: g.failure_limit.unwrap_or(0),
                inconclusive_limit: g
                    .inconclusive_limit
                    .unwrap_or(Some(DEFAULT_INCONCLUSIVE_LIMIT)),
            }
        })
        .collect()
}

/// A URL as written: `http://` or `https://` with a host, no spaces.
fn url(written: Option<String>, at: &str, problems: &mut Vec<String>) -> String {
    let Some(url) = written else {
        problems.push(format!("{at}: required"));
        return String::new();
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        None => problems.push(format!("{at}: '{url}' is not an http:// or https:// URL")),
        Some(rest) if rest.split(['/', '?', '#']).next().is_none_or(str::is_empty) => {
            problems.push(format!("{at}: '{url}' has no host"))
        }
        Some(_) if url.chars().any(char::is_whitespace) => {
            problems.push(format!("{at}: '{url}' contains white space"))
        }
        Some(_) => {}
    }
    url
}
