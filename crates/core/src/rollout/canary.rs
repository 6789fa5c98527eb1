//! The canary: the candidate takes a growing share of traffic, step by step, while a health
//! gate compares it with the stable version and rolls back on the first failure.
//!
//! Its spec ([`CanarySpec`], [`Step`], [`GatePolicy`]; written as [`RawCanary`]), the gate
//! ([`evaluate_gate`]) and its state machine live here; a shadow chains into one on PROMOTE.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchyard_stats::{proportions, Moments, Proportion};

use super::external::{self, ExternalGate, RawExternalGate, Tallied};
use super::raw::{bp, raw_fields, required};
use super::{
    d, rollback, single, Observations, Out, Phase, RolloutState, DEFAULT_MIN_P95_INCREASE_MS,
};
use crate::aggregate::VariantStats;
use crate::audit::{Details, Severity};
use crate::classes::prediction_drift;
use crate::routing::{Strategy, Target, BUCKETS};
use crate::segments::{unpaired_breakdown, RawSegmentGate, SegmentGate};

/// One canary step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Canary share in basis points.
    pub weight: u32,
    pub min_requests: u64,
    pub min_duration_ms: u64,
    /// The step is applied only after an operator approves it.
    pub require_approval: bool,
    /// Distinct approvers the step needs when it requires approval.
    #[serde(default = "super::one")]
    pub approvals: u32,
    /// Serve the candidate only to requests whose segment value matches (`match:`); the
    /// targeted steps come first, then the steps that serve everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<StepTarget>,
}

/// A step's `match: { field: [values] }`: one of the model's segment fields and the values
/// it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTarget {
    pub field: String,
    pub values: Vec<String>,
}

impl StepTarget {
    /// `region=us-west|us-east`.
    pub fn describe(&self) -> String {
        format!("{}={}", self.field, self.values.join("|"))
    }
}

/// Thresholds of the canary health gate. `None` disables a check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatePolicy {
    /// Largest tolerated drop of accuracy, in absolute terms (0.05 = five points).
    pub max_accuracy_drop: Option<f64>,
    /// Largest tolerated relative increase of MAE (regression models): the gate fails when
    /// `(canary MAE − stable MAE) / stable MAE` exceeds it ([`relative_change`]).
    pub max_mae_increase: Option<f64>,
    /// Regression models: at most a share of the canary's labelled predictions may fall below
    /// the truth by more than a margin. Off unless written.
    #[serde(default)]
    pub max_underestimate: Option<Underestimate>,
    /// Labelled instances needed on each side before quality is judged.
    pub min_labelled: u64,
    /// Largest tolerated relative increase of p95 latency (0.5 = +50%).
    pub max_p95_increase: Option<f64>,
    /// Latency increases smaller than this (absolute, ms) never fail the gate: p95 of a few
    /// hundred fast requests moves by a millisecond on a busy machine.
    pub min_p95_increase_ms: f64,
    /// Largest tolerated ratio of error rates, canary over stable.
    pub max_error_ratio: Option<f64>,
    /// Error rates below this never fail the ratio check (so 1 error in 200 against 0 does
    /// not roll back).
    pub min_error_rate: f64,
    /// When set, an accuracy drop fails the gate only if a two-proportion z-test finds it
    /// significant at this level.
    pub significance: Option<f64>,
    /// Largest tolerated PSI of the canary's predictions (this step) from the stable's (the
    /// rollout): classes, or the deciles of the stable's values. Off unless written.
    #[serde(default)]
    pub max_psi: Option<f64>,
    /// No segment of the model's declared fields with enough labelled samples may regress by
    /// more than a limit (this step's canary against the stable). Off unless written.
    #[serde(default)]
    pub segment_gate: Option<SegmentGate>,
    /// Gates fed from outside (Prometheus queries, webhook checks); see `rollout::external`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external: Vec<ExternalGate>,
}

impl Default for GatePolicy {
    fn default() -> Self {
        GatePolicy {
            max_accuracy_drop: Some(0.05),
            max_mae_increase: Some(0.10),
            max_underestimate: None,
            min_labelled: 30,
            max_p95_increase: Some(0.5),
            min_p95_increase_ms: DEFAULT_MIN_P95_INCREASE_MS,
            max_error_ratio: Some(2.0),
            min_error_rate: 0.01,
            significance: None,
            max_psi: None,
            segment_gate: None,
            external: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanarySpec {
    pub stable: String,
    pub candidate: String,
    pub steps: Vec<Step>,
    pub gate: GatePolicy,
    /// A step held longer than this raises an alert (and rolls back when `rollback_on_deadline`).
    pub step_deadline_ms: Option<u64>,
    pub rollback_on_deadline: bool,
    /// Distinct approvers each approval needs (a step's own `approvals` overrides it), and a
    /// manual promotion.
    #[serde(default = "super::one")]
    pub approvals: u32,
    /// Other models moving with this one (`group:`): each through the same steps, its own
    /// stable and candidate, its own gate; one routing swap moves them all, and any failure
    /// rolls them all back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group: Vec<GroupMember>,
}

/// A model of a rollout group, with its own stable version and candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    pub model: String,
    pub stable: String,
    pub candidate: String,
}

/// A group member as written.
#[derive(Debug, Clone, Deserialize)]
pub struct RawGroupMember {
    pub model: Option<String>,
    pub stable: Option<String>,
    pub candidate: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// As written (`rollout_config`): percentages in percent, durations in milliseconds.

#[derive(Debug, Clone, Deserialize)]
pub struct RawStep {
    /// Percent of traffic to the canary.
    pub weight: f64,
    pub min_requests: Option<u64>,
    pub min_duration_ms: Option<u64>,
    /// Default `true` when `approvals` is written, else `false`.
    pub require_approval: Option<bool>,
    /// Distinct approvers this step needs (default: the canary's `approvals`, 1).
    pub approvals: Option<u64>,
    /// `{ region: [us-west] }`: the step serves the candidate to these requests only.
    #[serde(rename = "match")]
    pub matches: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawGate {
    /// Absolute accuracy drop (0.05 = 5 points); `null` disables.
    #[serde(default = "some_accuracy_drop")]
    pub max_accuracy_drop: Option<f64>,
    #[serde(default = "some_mae_increase")]
    pub max_mae_increase: Option<f64>,
    /// `{by, share}`; absent or `null` disables.
    pub max_underestimate: Option<Underestimate>,
    pub min_labelled: Option<u64>,
    #[serde(default = "some_p95_increase")]
    pub max_p95_increase: Option<f64>,
    pub min_p95_increase_ms: Option<f64>,
    #[serde(default = "some_error_ratio")]
    pub max_error_ratio: Option<f64>,
    pub min_error_rate: Option<f64>,
    pub significance: Option<f64>,
    /// Off unless written.
    pub max_psi: Option<f64>,
    /// `{fields, max_accuracy_drop, max_mae_increase, min_samples}`; off unless written.
    pub segment_gate: Option<RawSegmentGate>,
    /// `[{name, prometheus: {url, query} | webhook: {url}, max | min, interval_ms, ...}]`.
    pub external: Option<Vec<RawExternalGate>>,
}

fn some_accuracy_drop() -> Option<f64> {
    GatePolicy::default().max_accuracy_drop
}
fn some_mae_increase() -> Option<f64> {
    GatePolicy::default().max_mae_increase
}
fn some_p95_increase() -> Option<f64> {
    GatePolicy::default().max_p95_increase
}
fn some_error_ratio() -> Option<f64> {
    GatePolicy::default().max_error_ratio
}

raw_fields! {
    /// A canary as written, alone or as a shadow's `then_canary`.
    pub struct RawCanary {
        stable: Option<String>,
        candidate: Option<String>,
        steps: Option<Vec<RawStep>>,
        /// Defaults of every step.
        min_requests: Option<u64>,
        min_duration_ms: Option<u64>,
        gate: Option<RawGate>,
        step_deadline_ms: Option<u64>,
        rollback_on_deadline: Option<bool>,
        /// Distinct approvers each approval (and a manual promotion) needs.
        approvals: Option<u64>,
        /// Other models moving with this one: `[{ model, stable, candidate }]`.
        group: Option<Vec<RawGroupMember>>,
    }
}

/// The seed's canary steps: 5 → 25 → 50 → 100%.
pub const DEFAULT_STEPS: [f64; 4] = [5.0, 25.0, 50.0, 100.0];
/// Default minimum requests and duration per step (the seed asks for 50–100 requests).
pub const DEFAULT_STEP_REQUESTS: u64 = 100;
pub const DEFAULT_STEP_DURATION_MS: u64 = 60_000;

fn gate(raw: Option<RawGate>, prefix: &str, problems: &mut Vec<String>) -> GatePolicy {
    let d = GatePolicy::default();
    let Some(g) = raw else { return d };
    if let Some(s) = g.significance {
        if !(s > 0.0 && s < 1.0) {
            problems.push(format!(
                "gate.significance: must be strictly between 0 and 1, got {s}"
            ));
        }
    }
    GatePolicy {
        max_accuracy_drop: g.max_accuracy_drop,
        max_mae_increase: g.max_mae_increase,
        max_underestimate: g.max_underestimate,
        min_labelled: g.min_labelled.unwrap_or(d.min_labelled),
        max_p95_increase: g.max_p95_increase,
        min_p95_increase_ms: g.min_p95_increase_ms.unwrap_or(d.min_p95_increase_ms),
        max_error_ratio: g.max_error_ratio,
        min_error_rate: g.min_error_rate.unwrap_or(d.min_error_rate),
        significance: g.significance,
        max_psi: g.max_psi,
        segment_gate: g
            .segment_gate
            .map(|r| r.validate("gate.segment_gate", problems)),
        external: g.external.map_or_else(Vec::new, |raw| {
            external::validate(raw, &format!("{prefix}gate.external"), problems)
        }),
    }
}

impl RawCanary {
    /// Builds the spec, adding its problems (each field's name prefixed with `prefix`).
    pub(crate) fn validate(self, problems: &mut Vec<String>, prefix: &str) -> CanarySpec {
        let min_requests = self.min_requests.unwrap_or(DEFAULT_STEP_REQUESTS);
        let min_duration_ms = self.min_duration_ms.unwrap_or(DEFAULT_STEP_DURATION_MS);
        let approvals = approvals_count(self.approvals);
        let steps = match self.steps {
            Some(steps) => steps
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    if s.require_approval == Some(false) && s.approvals.is_some() {
                        problems.push(format!(
                            "{prefix}steps[{i}].approvals: the step has require_approval: false"
                        ));
                    }
                    Step {
                        weight: bp(&format!("{prefix}steps[{i}].weight"), s.weight, problems),
                        min_requests: s.min_requests.unwrap_or(min_requests),
                        min_duration_ms: s.min_duration_ms.unwrap_or(min_duration_ms),
                        require_approval: s.require_approval.unwrap_or(s.approvals.is_some()),
                        approvals: s.approvals.map_or(approvals, |n| approvals_count(Some(n))),
                        target: s.matches.as_ref().and_then(|m| {
                            step_target(&format!("{prefix}steps[{i}].match"), m, problems)
                        }),
                    }
                })
                .collect(),
            None => DEFAULT_STEPS
                .iter()
                .map(|&w| Step {
                    weight: (w * 100.0) as u32,
                    min_requests,
                    min_duration_ms,
                    require_approval: false,
                    approvals,
                    target: None,
                })
                .collect(),
        };
        CanarySpec {
            stable: required(&self.stable, &format!("{prefix}stable"), "canary", problems),
            candidate: required(
                &self.candidate,
                &format!("{prefix}candidate"),
                "canary",
                problems,
            ),
            steps,
            gate: gate(self.gate, prefix, problems),
            step_deadline_ms: self.step_deadline_ms,
            rollback_on_deadline: self.rollback_on_deadline.unwrap_or(false),
            approvals,
            group: self
                .group
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(i, m)| {
                    let mut field = |value: Option<String>, name: &str| {
                        value.unwrap_or_else(|| {
                            problems.push(format!(
                                "{prefix}group[{i}].{name}: required for a group member"
                            ));
                            String::new()
                        })
                    };
                    GroupMember {
                        model: field(m.model, "model"),
                        stable: field(m.stable, "stable"),
                        candidate: field(m.candidate, "candidate"),
                    }
                })
                .collect(),
        }
    }
}

/// A step's `match:` as written: one segment field and its values.
fn step_target(
    at: &str,
    written: &BTreeMap<String, Vec<String>>,
    problems: &mut Vec<String>,
) -> Option<StepTarget> {
    if written.len() != 1 {
        problems.push(format!(
            "{at}: must name exactly one segment field (e.g. {{ region: [us-west] }}), got {}",
            written.len()
        ));
    }
    // With several, the first stands for the step, so its order is still checked.
    let (field, values) = written.iter().next()?;
    if values.is_empty() || values.iter().any(String::is_empty) {
        problems.push(format!(
            "{at}.{field}: must list the values served, none of them empty"
        ));
        return None;
    }
    let mut values = values.clone();
    values.sort();
    values.dedup();
    Some(StepTarget {
        field: field.clone(),
        values,
    })
}

/// The routing of step `step` of a canary. A targeted step gives the candidate its weight of
/// the matching requests and nothing of the rest; a step serving everyone after targeted
/// ones keeps the highest targeted weight for the matching requests while it is the larger,
/// so no key leaves the candidate when the target widens.
pub fn step_strategy(c: &CanarySpec, step: usize) -> Strategy {
    let this = c.steps.get(step);
    let weight = this.map_or(BUCKETS, |s| s.weight);
    let targeted = c
        .steps
        .iter()
        .take(step + 1)
        .filter_map(|s| s.target.as_ref().map(|t| (t, s.weight)))
        .max_by_key(|(_, w)| *w);
    let target = |t: &StepTarget, weight: u32| Target {
        field: t.field.clone(),
        values: t.values.clone(),
        weight,
    };
    match (this.and_then(|s| s.target.as_ref()), targeted) {
        (Some(t), _) => Strategy::targeted_canary(&c.stable, &c.candidate, 0, target(t, weight)),
        (None, Some((t, top))) if top > weight => {
            Strategy::targeted_canary(&c.stable, &c.candidate, weight, target(t, top))
        }
        _ => Strategy::canary(&c.stable, &c.candidate, weight),
    }
}

/// A written count of approvers (default 1; a count beyond `u32` is kept too large, so
/// [`super::RolloutSpec::problems`] names it).
pub(super) fn approvals_count(written: Option<u64>) -> u32 {
    written.map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// The canary's own problems (the versions are checked by [`super::RolloutSpec::problems`]).
pub(super) fn problems(c: &CanarySpec, p: &mut Vec<String>) {
    if c.steps.is_empty() {
        p.push("a canary needs at least one step".into());
    }
    let mut last = 0;
    let mut first_target: Option<&StepTarget> = None;
    let mut everyone = false;
    for (i, s) in c.steps.iter().enumerate() {
        match (&s.target, first_target) {
            (Some(_), _) if everyone => p.push(format!(
                "steps[{i}].match: targeted steps come first, before the steps that serve everyone"
            )),
            (Some(t), Some(first)) if t != first => p.push(format!(
                "steps[{i}].match: every targeted step matches the same field and values ({}), got {}",
                first.describe(),
                t.describe()
            )),
            (Some(t), _) => first_target = Some(t),
            (None, _) => {
                if first_target.is_some() && !everyone {
                    // Widening to everyone starts a new ladder of weights.
                    last = 0;
                }
                everyone = true;
            }
        }
        if s.weight == 0 || s.weight > BUCKETS {
            p.push(format!(
                "steps[{i}]: weight must be in (0, 100]%, got {}%",
                f64::from(s.weight) / 100.0
            ));
        }
        if s.weight <= last {
            p.push(format!(
                "steps[{i}]: weights must increase ({}% after {}%)",
                f64::from(s.weight) / 100.0,
                f64::from(last) / 100.0
            ));
        }
        last = s.weight;
        if s.require_approval {
            super::approvals(&format!("steps[{i}].approvals"), s.approvals, p);
        }
    }
    super::approvals("approvals", c.approvals, p);
    if !c.group.is_empty() && c.steps.iter().any(|s| s.target.is_some()) {
        p.push(
            "group: a group's steps cannot match (each model has its own segment fields)".into(),
        );
    }
    for (i, m) in c.group.iter().enumerate() {
        if m.stable == m.candidate && !m.stable.is_empty() {
            p.push(format!(
                "group[{i}]: the candidate '{}' is the version already serving",
                m.candidate
            ));
        }
    }
    if c.steps.last().is_some_and(|s| s.weight != BUCKETS) {
        p.push("the last step must send 100% to the candidate".into());
    } else if c.steps.last().is_some_and(|s| s.target.is_some()) {
        p.push("the last step must serve everyone (no match)".into());
    }
    gate_problems(&c.gate, p);
}

fn gate_problems(g: &GatePolicy, p: &mut Vec<String>) {
    for (name, v) in [
        ("gate.max_accuracy_drop", g.max_accuracy_drop),
        ("gate.max_mae_increase", g.max_mae_increase),
        ("gate.max_p95_increase", g.max_p95_increase),
        ("gate.max_error_ratio", g.max_error_ratio),
        ("gate.significance", g.significance),
        ("gate.max_psi", g.max_psi),
    ] {
        if let Some(v) = v {
            if !(v.is_finite() && v >= 0.0) {
                p.push(format!("{name} must be a non-negative number, got {v}"));
            }
        }
    }
    if !(g.min_error_rate.is_finite() && g.min_error_rate >= 0.0) {
        p.push(format!(
            "gate.min_error_rate must be a non-negative number, got {}",
            g.min_error_rate
        ));
    }
    if let Some(u) = &g.max_underestimate {
        u.problems("gate.max_underestimate", p);
    }
}

/// An asymmetric limit on a regression candidate, the seed's "never underestimate test time by
/// more than X": at most `share` of its labelled predictions may fall below the truth by more
/// than `by`. The same definition serves the shadow (→ REJECT) and the canary gate (→ roll
/// back).
///
/// Counted from [`VariantStats::signed_error`], a mergeable histogram of `prediction − truth`
/// in 1%-wide buckets: every prediction short by more than `by` counts, and one short by
/// slightly less (within 1% of `by`) may count too, so the check errs on the safe side.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Underestimate {
    /// Margin, in the output's unit (e.g. ms of test time).
    pub by: f64,
    /// Largest tolerated fraction of labelled predictions short by more than `by` (0.01 = 1%).
    pub share: f64,
}

/// How a candidate fares against an [`Underestimate`] limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UnderestimateCheck {
    /// The limit's margin (output unit) and largest share (fraction).
    pub by: f64,
    pub max_share: f64,
    /// Labelled predictions below the truth by more than `by`.
    pub count: u64,
    /// Labelled regression predictions of the candidate.
    pub labelled: u64,
    /// `count / labelled` (fraction).
    pub share: f64,
    pub exceeded: bool,
}

impl Underestimate {
    /// The check on the candidate's labelled predictions; `None` before the first label.
    pub fn check(&self, candidate: &VariantStats) -> Option<UnderestimateCheck> {
        let labelled = candidate.signed_error.count();
        if labelled == 0 {
            return None;
        }
        let count = candidate.signed_error.count_below(-self.by);
        let share = count as f64 / labelled as f64;
        Some(UnderestimateCheck {
            by: self.by,
            max_share: self.share,
            count,
            labelled,
            share,
            exceeded: share > self.share,
        })
    }

    pub(super) fn problems(&self, name: &str, p: &mut Vec<String>) {
        if !(self.by.is_finite() && self.by >= 0.0) {
            p.push(format!(
                "{name}.by must be a non-negative number, got {}",
                self.by
            ));
        }
        if !(self.share.is_finite() && (0.0..=1.0).contains(&self.share)) {
            p.push(format!(
                "{name}.share must be a fraction in [0, 1], got {}",
                self.share
            ));
        }
    }
}

impl UnderestimateCheck {
    /// "3.2% of 400 labelled predictions are below the truth by more than 50 (limit 1.0%)".
    pub fn describe(&self) -> String {
        format!(
            "{:.1}% of {} labelled predictions are below the truth by more than {} (limit {:.1}%)",
            self.share * 100.0,
            self.labelled,
            self.by,
            self.max_share * 100.0
        )
    }
}

/// `(after − before) / before`: the relative change of an error measure (MAE) from the current
/// version (`before`) to the candidate (`after`); negative when the candidate's errors are
/// smaller. `0` when both are zero and `+∞` when only `before` is, so a perfect current version
/// is never "matched" by a worse candidate. Used by the canary gate and the shadow rules alike.
pub fn relative_change(before: f64, after: f64) -> f64 {
    if before > 0.0 {
        (after - before) / before
    } else if after == before {
        0.0
    } else {
        f64::INFINITY
    }
}

/// The verdict of one canary gate.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass(Details),
    Fail {
        reason: String,
        severity: Severity,
        details: Details,
    },
    Hold(String),
}

/// Compares the canary (this step) with the stable version (whole rollout). Checks in order:
/// error ratio, p95 latency, prediction drift (`max_psi`), then accuracy (classification) or
/// MAE and underestimates (regression); the first that fails decides.
pub fn evaluate_gate(gate: &GatePolicy, canary: &VariantStats, stable: &VariantStats) -> Verdict {
    if canary.requests == 0 {
        return Verdict::Hold("no canary traffic yet".into());
    }
    if stable.requests == 0 {
        return Verdict::Hold("no stable traffic to compare with".into());
    }
    let mut details = vec![
        d("canary_requests", canary.requests),
        d("stable_requests", stable.requests),
    ];
    // Errors.
    let (ce, se) = (
        canary.error_rate().unwrap_or(0.0),
        stable.error_rate().unwrap_or(0.0),
    );
    details.push(d("canary_error_rate", ce));
    details.push(d("stable_error_rate", se));
    if let Some(ratio) = gate.max_error_ratio {
        let limit = (se * ratio).max(gate.min_error_rate);
        details.push(d("error_rate_limit", limit));
        if ce > limit {
            return Verdict::Fail {
                reason: format!(
                    "error rate {:.2}% exceeds {:.2}% ({ratio}x stable's {:.2}%)",
                    ce * 100.0,
                    limit * 100.0,
                    se * 100.0
                ),
                severity: Severity::P0,
                details,
            };
        }
    }
    // Latency.
    if let Some(increase) = gate.max_p95_increase {
        let (cp, sp) = (
            canary.latency.p95().unwrap_or(0),
            stable.latency.p95().unwrap_or(0),
        );
        details.push(d("canary_p95_us", cp));
        details.push(d("stable_p95_us", sp));
        let limit =
            (sp as f64 * (1.0 + increase)).max(sp as f64 + gate.min_p95_increase_ms * 1000.0);
        details.push(d("p95_limit_us", limit));
        if cp as f64 > limit {
            return Verdict::Fail {
                reason: format!(
                    "p95 latency {:.1} ms exceeds {:.1} ms (+{:.0}% over stable's {:.1} ms)",
                    cp as f64 / 1000.0,
                    limit / 1000.0,
                    increase * 100.0,
                    sp as f64 / 1000.0
                ),
                severity: Severity::P1,
                details,
            };
        }
    }
    // Prediction drift: in the details always, a failure only above `max_psi`.
    if let Some(drift) = prediction_drift(stable, canary) {
        details.push(d("psi", drift.psi));
        details.push(d("js_distance", drift.js_distance));
        if let Some(max) = gate.max_psi {
            details.push(d("max_psi", max));
            if drift.psi > max {
                return Verdict::Fail {
                    reason: format!(
                        "prediction distribution moved: PSI {:.3} above {max} over {} bins",
                        drift.psi,
                        drift.bins.len()
                    ),
                    severity: Severity::P1,
                    details,
                };
            }
        }
    }
    // Quality: classification if labels were scored as correct/incorrect, else regression.
    let classification = canary.correct.trials > 0 || stable.correct.trials > 0;
    if classification {
        if let Some(max_drop) = gate.max_accuracy_drop {
            let (c, s) = (canary.correct, stable.correct);
            details.push(d("canary_labelled", c.trials));
            details.push(d("stable_labelled", s.trials));
            if c.trials < gate.min_labelled || s.trials < gate.min_labelled {
                return Verdict::Hold(format!(
                    "waiting for labels: canary {}/{}, stable {}/{}",
                    c.trials, gate.min_labelled, s.trials, gate.min_labelled
                ));
            }
            let (ca, sa) = (c.rate().unwrap_or(0.0), s.rate().unwrap_or(0.0));
            details.push(d("canary_accuracy", ca));
            details.push(d("stable_accuracy", sa));
            details.push(d("max_accuracy_drop", max_drop));
            let mut significant = true;
            if let Some(alpha) = gate.significance {
                if let Ok(z) = proportions::two_proportion_ztest(s, c, alpha) {
                    details.push(d("z", z.z));
                    details.push(d("p_value", z.p_value));
                    significant = z.p_value < alpha;
                }
            }
            if sa - ca > max_drop && significant {
                return Verdict::Fail {
                    reason: format!(
                        "accuracy {:.1}% is {:.1} points below stable's {:.1}% (limit {:.1})",
                        ca * 100.0,
                        (sa - ca) * 100.0,
                        sa * 100.0,
                        max_drop * 100.0
                    ),
                    severity: Severity::P0,
                    details,
                };
            }
        }
    } else if gate.max_mae_increase.is_some() || gate.max_underestimate.is_some() {
        let (cn, sn) = (canary.abs_error.count(), stable.abs_error.count());
        if cn < gate.min_labelled || sn < gate.min_labelled {
            return Verdict::Hold(format!(
                "waiting for labels: canary {cn}/{}, stable {sn}/{}",
                gate.min_labelled, gate.min_labelled
            ));
        }
        let (cm, sm) = (
            canary.abs_error.mean().unwrap_or(0.0),
            stable.abs_error.mean().unwrap_or(0.0),
        );
        details.push(d("canary_mae", cm));
        details.push(d("stable_mae", sm));
        let change = relative_change(sm, cm);
        if change.is_finite() {
            details.push(d("mae_change", change));
        }
        if let Some(max_increase) = gate.max_mae_increase {
            if change > max_increase {
                return Verdict::Fail {
                    reason: format!(
                        "MAE {cm:.3} exceeds stable's {sm:.3} by more than {:.0}%",
                        max_increase * 100.0
                    ),
                    severity: Severity::P0,
                    details,
                };
            }
        }
        if let Some(check) = gate.max_underestimate.and_then(|u| u.check(canary)) {
            details.push(d("underestimate_by", check.by));
            details.push(d("underestimate_count", check.count));
            details.push(d("underestimate_share", check.share));
            details.push(d("underestimate_max_share", check.max_share));
            if check.exceeded {
                return Verdict::Fail {
                    reason: check.describe(),
                    severity: Severity::P0,
                    details,
                };
            }
        }
    }
    // Segments: the worst one past its limit fails the gate.
    if let Some(segment_gate) = &gate.segment_gate {
        let breakdown = unpaired_breakdown(&stable.segments, &canary.segments);
        if let Some(f) = segment_gate.check(&breakdown) {
            details.extend([
                d("segment_field", f.field.clone()),
                d("segment_value", f.value.clone()),
                d("segment_samples", f.samples),
                d("segment_stable", f.baseline),
                d("segment_canary", f.candidate),
                d("segment_change", f.change),
                d("segment_limit", f.limit),
            ]);
            return Verdict::Fail {
                reason: f.describe(),
                severity: Severity::P1,
                details,
            };
        }
    }
    Verdict::Pass(details)
}

/// The lead model's verdict combined with every group member's, each judged by the same gate
/// on its own stable and candidate: the first failure fails the group (its reason naming the
/// model); a member that is not ready yet holds it; all must pass.
fn group_verdict(c: &CanarySpec, step: &Step, obs: &Observations, lead: Verdict) -> Verdict {
    let Verdict::Pass(mut details) = lead else {
        return lead;
    };
    for m in &c.group {
        let member = obs.members.get(&m.model).cloned().unwrap_or_default();
        let canary = member.step_of(&m.candidate);
        if canary.requests < step.min_requests {
            return Verdict::Hold(format!(
                "group member {}: the step at {}% needs {} requests, has {}",
                m.model,
                f64::from(step.weight) / 100.0,
                step.min_requests,
                canary.requests
            ));
        }
        match evaluate_gate(&c.gate, &canary, &member.total_of(&m.stable)) {
            Verdict::Pass(more) => details.extend(
                more.into_iter()
                    .map(|(k, v)| (format!("{}.{k}", m.model), v)),
            ),
            Verdict::Hold(reason) => {
                return Verdict::Hold(format!("group member {}: {reason}", m.model))
            }
            Verdict::Fail {
                reason,
                severity,
                details: more,
            } => {
                let mut all: Details = vec![d("group_member", m.model.as_str())];
                all.extend(more);
                return Verdict::Fail {
                    reason: format!("group member {}: {reason}", m.model),
                    severity,
                    details: all,
                };
            }
        }
    }
    Verdict::Pass(details)
}

/// A version's statistics on the requests a targeted step serves: requests, errors and the
/// labelled quality (accuracy, absolute errors) summed over the target's values of its field.
/// Latency, predicted classes and the rest stay the whole arm's (segments do not keep them).
/// A value past the field's bounded values (counted in `other`) cannot be told apart and is
/// left out.
pub(super) fn within(stats: &VariantStats, t: &StepTarget) -> VariantStats {
    let mut out = stats.clone();
    out.requests = 0;
    out.errors = 0;
    out.correct = Proportion::default();
    out.abs_error = Moments::default();
    if let Some(table) = stats.segments.get(&t.field) {
        for s in t.values.iter().filter_map(|v| table.values().get(v)) {
            out.requests += s.requests;
            out.errors += s.errors;
            out.correct.merge(&s.correct);
            out.abs_error.merge(&s.abs_error);
        }
    }
    out
}

pub(super) fn tick_canary(
    c: &CanarySpec,
    state: &mut RolloutState,
    obs: &Observations,
    out: &mut Out<'_>,
) {
    if state.phase != Phase::Running {
        return;
    }
    let Some(step) = c.steps.get(state.step) else {
        return;
    };
    let elapsed = (out.now - state.step_started_ms).max(0) as u64;
    let canary = obs.step_of(&c.candidate);
    let stable = match &step.target {
        // Like with like: the canary serves only the target's values.
        Some(t) => within(&obs.total_of(&c.stable), t),
        None => obs.total_of(&c.stable),
    };
    let ready = canary.requests >= step.min_requests && elapsed >= step.min_duration_ms;
    // External readings count as they come, whether the step is ready or not: a query past
    // its limit fails the gate at once.
    let verdict = match external::tally(&c.gate.external, state, obs) {
        Tallied::Rollback { reason, details } => Verdict::Fail {
            reason,
            severity: Severity::P0,
            details,
        },
        Tallied::Pause { reason, details } => {
            external::pause(state, out, &reason, details);
            return;
        }
        Tallied::Continue if ready => {
            match group_verdict(c, step, obs, evaluate_gate(&c.gate, &canary, &stable)) {
                Verdict::Pass(mut details) => {
                    match external::step_passes(&c.gate.external, obs, state.step_started_ms) {
                        Ok(more) => {
                            details.extend(more);
                            Verdict::Pass(details)
                        }
                        Err(waiting) => Verdict::Hold(waiting),
                    }
                }
                other => other,
            }
        }
        Tallied::Continue => Verdict::Hold(format!(
            "step {} needs {} requests and {} ms: has {} requests after {} ms",
            state.step + 1,
            step.min_requests,
            step.min_duration_ms,
            canary.requests,
            elapsed
        )),
    };
    match verdict {
        Verdict::Fail {
            reason,
            severity,
            mut details,
        } => {
            out.event(
                "gate_failed",
                format!("gate of step {} failed: {reason}", state.step + 1),
                details.clone(),
            );
            details.push(d("step_percent", f64::from(step.weight) / 100.0));
            rollback(state, out, single(&c.stable), &reason, severity, details);
        }
        Verdict::Hold(reason) => {
            state.reason = Some(reason.clone());
            if let Some(deadline) = c.step_deadline_ms {
                if elapsed > deadline && !state.stuck_alerted {
                    state.stuck_alerted = true;
                    let details = vec![
                        d("step", (state.step + 1) as u64),
                        d("elapsed_ms", elapsed),
                        d("deadline_ms", deadline),
                        d("waiting_for", reason.as_str()),
                    ];
                    out.event(
                        "step_stuck",
                        format!("step {} held past its deadline: {reason}", state.step + 1),
                        details.clone(),
                    );
                    out.alert(
                        Severity::P2,
                        "stuck_step",
                        format!(
                            "{} stuck at {}%: {reason}",
                            out.spec.name,
                            f64::from(step.weight) / 100.0
                        ),
                        details.clone(),
                    );
                    if c.rollback_on_deadline {
                        rollback(
                            state,
                            out,
                            single(&c.stable),
                            "step deadline passed",
                            Severity::P1,
                            details,
                        );
                    }
                }
            }
        }
        Verdict::Pass(details) => {
            out.event(
                "gate_passed",
                format!(
                    "gate of step {} ({}%) passed",
                    state.step + 1,
                    f64::from(step.weight) / 100.0
                ),
                details,
            );
            match c.steps.get(state.step + 1) {
                None => {
                    out.set(state, single(&c.candidate));
                    state.phase = Phase::Completed;
                    state.reason = Some(format!("{} promoted to 100%", c.candidate));
                    out.event(
                        "promoted",
                        format!("{} is now stable", c.candidate),
                        vec![d("version", c.candidate.as_str())],
                    );
                    out.alert(
                        Severity::P3,
                        "completed",
                        format!("{} completed: {} promoted", out.spec.name, c.candidate),
                        vec![],
                    );
                }
                Some(next) if next.require_approval => {
                    state.phase = Phase::AwaitingApproval;
                    state.reason = Some(format!(
                        "approve to go to {}%",
                        f64::from(next.weight) / 100.0
                    ));
                    out.event(
                        "awaiting_approval",
                        format!(
                            "step {} ({}%) needs approval",
                            state.step + 2,
                            f64::from(next.weight) / 100.0
                        ),
                        vec![],
                    );
                    out.alert(
                        Severity::P3,
                        "approval_needed",
                        format!(
                            "{} waits for approval to go to {}%",
                            out.spec.name,
                            f64::from(next.weight) / 100.0
                        ),
                        vec![],
                    );
                }
                Some(_) => advance_canary(c, state, out),
            }
        }
    }
}

pub(super) fn advance_canary(c: &CanarySpec, state: &mut RolloutState, out: &mut Out<'_>) {
    state.step += 1;
    state.step_started_ms = out.now;
    state.stuck_alerted = false;
    state.phase = Phase::Running;
    state.reason = None;
    let step = c.steps.get(state.step);
    let weight = step.map_or(BUCKETS, |s| s.weight);
    out.set(state, step_strategy(c, state.step));
    let mut details = vec![
        d("step", (state.step + 1) as u64),
        d("weight_percent", f64::from(weight) / 100.0),
    ];
    let of = match step.and_then(|s| s.target.as_ref()) {
        Some(t) => {
            details.push(d("target", t.describe()));
            format!(" of {}", t.describe())
        }
        None => String::new(),
    };
    out.event(
        "step_advanced",
        format!(
            "canary at {}%{of} (step {} of {})",
            f64::from(weight) / 100.0,
            state.step + 1,
            c.steps.len()
        ),
        details,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segments::SegmentStats;

    /// A version with labelled requests per tester: (tester, correct, labelled).
    fn version(testers: &[(&str, u64, u64)]) -> VariantStats {
        let mut v = VariantStats::default();
        for &(tester, correct, labelled) in testers {
            v.requests += labelled;
            v.correct.merge(&Proportion {
                successes: correct,
                trials: labelled,
            });
            *v.segments.entry("tester".into()).or_default().entry(tester) = SegmentStats {
                requests: labelled,
                errors: 0,
                correct: Proportion {
                    successes: correct,
                    trials: labelled,
                },
                abs_error: Default::default(),
            };
        }
        v
    }

    #[test]
    fn the_segment_gate_fails_a_canary_worse_on_one_tester() {
        // Overall 90.0% against 89.3%: within the accuracy limit; T2 alone drops 12 points.
        let stable = version(&[("T1", 850, 1_000), ("T2", 490, 500)]);
        let canary = version(&[("T1", 900, 1_000), ("T2", 430, 500)]);
        let plain = GatePolicy::default();
        assert!(matches!(
            evaluate_gate(&plain, &canary, &stable),
            Verdict::Pass(_)
        ));
        let gated = GatePolicy {
            segment_gate: Some(SegmentGate::default()),
            ..GatePolicy::default()
        };
        match evaluate_gate(&gated, &canary, &stable) {
            Verdict::Fail {
                reason, details, ..
            } => {
                assert!(
                    reason.contains("segment tester=T2: accuracy 86.0% vs 98.0%"),
                    "{reason}"
                );
                assert!(details.iter().any(|(k, _)| k == "segment_value"));
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn a_targeted_step_is_judged_against_stable_on_the_same_values() {
        // Stable: 95% in us-west, 70% in eu (82.5% overall). The canary serves us-west only
        // and gets 85% there: better than stable overall, ten points worse where it serves.
        let mut stable = version(&[("us-west", 950, 1_000), ("eu", 700, 1_000)]);
        stable.segments = std::iter::once((
            "region".to_string(),
            stable.segments.remove("tester").unwrap(),
        ))
        .collect();
        let canary = version(&[("us-west", 170, 200)]);
        let gate = GatePolicy::default();
        assert!(matches!(
            evaluate_gate(&gate, &canary, &stable),
            Verdict::Pass(_)
        ));
        let west = StepTarget {
            field: "region".into(),
            values: vec!["us-west".into()],
        };
        let restricted = within(&stable, &west);
        assert_eq!(
            (
                restricted.requests,
                restricted.correct.successes,
                restricted.correct.trials
            ),
            (1_000, 950, 1_000)
        );
        match evaluate_gate(&gate, &canary, &restricted) {
            Verdict::Fail { reason, .. } => assert!(
                reason.contains("accuracy 85.0% is 10.0 points below stable's 95.0%"),
                "{reason}"
            ),
            other => panic!("expected a failure, got {other:?}"),
        }
        // A field the version has no segments for: nothing to compare yet.
        let tier = StepTarget {
            field: "tier".into(),
            values: vec!["gold".into()],
        };
        assert_eq!(within(&stable, &tier).correct.trials, 0);
    }
}
