//! Rollouts as pure state machines.
//!
//! A rollout moves one model from a current version to a candidate by one of four strategies
//! (shadow, canary, A/B, blue-green). [`start`], [`tick`] and [`command`] take the spec, the
//! current [`RolloutState`], [`Observations`] (statistics the driver merged from the aggregates)
//! and the time, and return the next state plus [`Action`]s for the driver to carry out: swap
//! the routing strategy, append audit events, send alerts, run a validation. Nothing here does
//! I/O or reads a clock.
//!
//! This file holds what every kind shares: the spec envelope ([`RolloutSpec`], [`RolloutKind`]),
//! the state, observations, actions and commands, the helpers that emit them, and the dispatch
//! of [`start`], [`tick`] and [`command`]. Each kind's spec, written form (read by
//! `rollout_config`), state machine and report live in its own file (`canary`, `shadow`,
//! `ab`, `blue_green`) and are re-exported here; `raw` holds the building blocks of the written
//! forms.
//!
//! Invariants (property-tested): terminal phases absorb every tick and command; no step
//! advances before its minimum requests and duration; no gate passes without data; every
//! strategy emitted is valid (weights in range and summing to the whole).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchyard_stats::power;
use switchyard_stats::sequential::SequentialMonitor;

use crate::aggregate::{PairStats, VariantStats};
use crate::audit::{AuditEvent, Detail, Details, Severity};
use crate::routing::{Colour, ShadowTarget, Strategy};

pub(crate) mod ab;
pub(crate) mod abn;
pub(crate) mod bandit;
pub(crate) mod blue_green;
pub(crate) mod canary;
pub(crate) mod external;
pub(crate) mod raw;
pub(crate) mod shadow;

pub use ab::{
    ab_report, arms_of, AbMetric, AbReport, AbSpec, AbVariant, BanditSettings, Correction,
    GuardLimit, Guardrail, MeanTest, RawBandit, RawGuardrail, RawVariant, StratifiedAb, Stratum,
    DEFAULT_GUARDRAIL_MIN_SAMPLES,
};
pub use abn::{
    abn_report, experiment_salt, is_extended, lower_is_better, metric_value, required_per_arm,
    value_sample, AbnOutcome, AbnReport, ArmDecision, ArmResult, ArmState, GuardrailCheck,
    MetricValue, PrimaryTest,
};
pub use blue_green::{
    BlueGreenSpec, LoadTest, LoadTestResult, RawLoadTest, DEFAULT_LOAD_CONCURRENCY,
    MAX_LOAD_REQUESTS,
};
pub use canary::{
    evaluate_gate, relative_change, step_strategy, CanarySpec, GatePolicy, GroupMember,
    RawGroupMember, Step, StepTarget, Underestimate, UnderestimateCheck, Verdict,
};
pub use external::{
    ExternalGate, ExternalReading, ExternalSource, GateTally, Judged, RawExternalGate,
    RawPrometheus, RawWebhook, Reading, DEFAULT_INCONCLUSIVE_LIMIT, DEFAULT_INTERVAL_MS,
    DEFAULT_TIMEOUT_MS,
};
pub use shadow::{
    shadow_report, LiveAlerts, OutputKind, RegressionTest, ShadowReport, ShadowRules, ShadowSpec,
};

use ab::{ab_strategy, tick_ab};
use blue_green::{blue_green, tick_blue_green};
use canary::{advance_canary, tick_canary};
use shadow::{chain, tick_shadow};

// ---------------------------------------------------------------------------------------------
// Specs.

/// The smallest p95 increase (ms) a latency check acts on, for gates and monitoring windows.
pub const DEFAULT_MIN_P95_INCREASE_MS: f64 = 2.0;

fn default_min_p95_increase_ms() -> f64 {
    DEFAULT_MIN_P95_INCREASE_MS
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RolloutKind {
    Shadow(ShadowSpec),
    Canary(CanarySpec),
    Ab(AbSpec),
    BlueGreen(BlueGreenSpec),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutSpec {
    pub name: String,
    pub model: String,
    #[serde(flatten)]
    pub kind: RolloutKind,
}

impl RolloutSpec {
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            RolloutKind::Shadow(_) => "shadow",
            RolloutKind::Canary(_) => "canary",
            RolloutKind::Ab(a) if a.bandit.is_some() => "bandit",
            RolloutKind::Ab(_) => "ab",
            RolloutKind::BlueGreen(_) => "blue_green",
        }
    }

    /// The models the rollout routes: its own, then a group's members.
    pub fn models(&self) -> Vec<&str> {
        let mut models = vec![self.model.as_str()];
        if let RolloutKind::Canary(c) = &self.kind {
            models.extend(c.group.iter().map(|m| m.model.as_str()));
        }
        models
    }

    /// Every model's strategy when the rollout's own model has `lead`: a group member gets the
    /// same split with its own stable and candidate in place of the rollout's (one entry for a
    /// rollout that is not a group).
    pub fn routes(&self, lead: &Strategy) -> Vec<(String, Strategy)> {
        let mut routes = vec![(self.model.clone(), lead.clone())];
        if let RolloutKind::Canary(c) = &self.kind {
            for m in &c.group {
                let member = lead.with_versions(|v| {
                    if v == c.stable {
                        m.stable.clone()
                    } else if v == c.candidate {
                        m.candidate.clone()
                    } else {
                        v.to_string()
                    }
                });
                routes.push((m.model.clone(), member));
            }
        }
        routes
    }

    /// The version serving before the rollout, and the candidate.
    pub fn versions(&self) -> (&str, &str) {
        match &self.kind {
            RolloutKind::Shadow(s) => (&s.primary, &s.candidate),
            RolloutKind::Canary(c) => (&c.stable, &c.candidate),
            RolloutKind::Ab(a) => (&a.control, &a.treatment),
            RolloutKind::BlueGreen(b) => (&b.active, &b.candidate),
        }
    }

    /// Distinct approvers the approval a rollout in `state` waits for needs: the next canary
    /// step's `approvals`, or the spec's for a shadow's chained canary and an A/B conclusion.
    pub fn approvals_needed(&self, state: &RolloutState) -> u32 {
        match &self.kind {
            RolloutKind::Canary(c) => c
                .steps
                .get(state.step + 1)
                .map_or(c.approvals, |s| s.approvals),
            RolloutKind::Shadow(s) => s.approvals,
            RolloutKind::Ab(a) => a.approvals,
            RolloutKind::BlueGreen(_) => 1,
        }
        .max(1)
    }

    /// Distinct approvers a manual `promote` needs: the most any approval of the spec asks
    /// for, so that nobody promotes alone past a step that needs several.
    pub fn promote_approvals(&self) -> u32 {
        match &self.kind {
            RolloutKind::Canary(c) => c
                .steps
                .iter()
                .filter(|s| s.require_approval)
                .map(|s| s.approvals)
                .fold(c.approvals, u32::max),
            RolloutKind::Shadow(s) => s.approvals,
            RolloutKind::Ab(a) => a.approvals,
            RolloutKind::BlueGreen(_) => 1,
        }
        .max(1)
    }

    /// Every problem with the spec, given the model's declared versions.
    pub fn problems(&self, declared: &[&str]) -> Vec<String> {
        let mut p = Vec::new();
        let (current, candidate) = self.versions();
        for v in [current, candidate] {
            if !declared.contains(&v) {
                p.push(format!(
                    "unknown version '{v}' of model '{}' (declared: {})",
                    self.model,
                    declared.join(", ")
                ));
            }
        }
        if current == candidate {
            p.push(format!(
                "the candidate '{candidate}' is the version already serving"
            ));
        }
        match &self.kind {
            RolloutKind::Canary(c) => canary::problems(c, &mut p),
            RolloutKind::Shadow(s) => shadow::problems(self, s, declared, &mut p),
            RolloutKind::Ab(a) => ab::problems(a, declared, &mut p),
            RolloutKind::BlueGreen(b) => blue_green::problems(b, &mut p),
        }
        p
    }

    /// Problems of the spec's segment gates against the model's declared segment fields.
    pub fn segment_problems(&self, declared: &[&str]) -> Vec<String> {
        let mut p = Vec::new();
        let (own, chained) = match &self.kind {
            RolloutKind::Canary(c) => (c.gate.segment_gate.as_ref(), None),
            RolloutKind::Shadow(s) => (
                s.rules.segment_gate.as_ref(),
                s.then_canary
                    .as_ref()
                    .and_then(|c| c.gate.segment_gate.as_ref()),
            ),
            RolloutKind::Ab(_) | RolloutKind::BlueGreen(_) => (None, None),
        };
        let at = match self.kind {
            RolloutKind::Canary(_) => "gate.segment_gate",
            _ => "segment_gate",
        };
        if let Some(g) = own {
            g.problems(at, declared, &mut p);
        }
        if let Some(g) = chained {
            g.problems("then_canary.gate.segment_gate", declared, &mut p);
        }
        // A targeted step matches on one of the model's segment fields.
        let canaries = match &self.kind {
            RolloutKind::Canary(c) => vec![("", c)],
            RolloutKind::Shadow(s) => s
                .then_canary
                .as_deref()
                .map(|c| vec![("then_canary.", c)])
                .unwrap_or_default(),
            RolloutKind::Ab(_) | RolloutKind::BlueGreen(_) => Vec::new(),
        };
        if let RolloutKind::Ab(a) = &self.kind {
            if let Some(field) = a.stratify_by.as_deref() {
                if !field.is_empty() && !declared.contains(&field) {
                    p.push(format!(
                        "stratify_by: '{field}' is not a segment field of model '{}' (declared: {}); declare it under the model's `segments`",
                        self.model,
                        if declared.is_empty() { "none".to_string() } else { declared.join(", ") }
                    ));
                }
            }
        }
        for (prefix, c) in canaries {
            for (i, step) in c.steps.iter().enumerate() {
                if let Some(t) = step.target.as_ref() {
                    if !declared.contains(&t.field.as_str()) {
                        p.push(format!(
                            "{prefix}steps[{i}].match.{}: not a segment field of model '{}' (declared: {}); declare it under the model's `segments`",
                            t.field,
                            self.model,
                            if declared.is_empty() { "none".to_string() } else { declared.join(", ") }
                        ));
                    }
                }
            }
        }
        p
    }
}

/// The external gates the driver must read for a rollout in `state`: a running canary's (and
/// a blue-green's monitoring window's); none otherwise, so nothing is queried while a rollout
/// is paused, waits for approval, or has ended.
pub fn active_external_gates<'a>(
    spec: &'a RolloutSpec,
    state: &RolloutState,
) -> &'a [ExternalGate] {
    match (&spec.kind, state.phase) {
        (RolloutKind::Canary(c), Phase::Running) => &c.gate.external,
        (RolloutKind::BlueGreen(b), Phase::Monitoring) => &b.external,
        _ => &[],
    }
}

/// Checks a count of distinct approvers.
fn approvals(name: &str, v: u32, p: &mut Vec<String>) {
    if v == 0 {
        p.push(format!(
            "{name} must be at least 1 (distinct approvers needed), got 0"
        ));
    } else if v > MAX_APPROVALS {
        p.push(format!(
            "{name} must be at most {MAX_APPROVALS} (distinct approvers needed), got {v}"
        ));
    }
}

/// The most distinct approvers a spec may ask for.
pub const MAX_APPROVALS: u32 = 20;

fn one() -> u32 {
    1
}

/// Checks that `v` is a non-negative number.
fn frac(name: &str, v: f64, p: &mut Vec<String>) {
    if !(v.is_finite() && v >= 0.0) {
        p.push(format!("{name} must be a non-negative number, got {v}"));
    }
}

/// Checks that `v` is a fraction in [0, 1].
fn share(name: &str, v: f64, p: &mut Vec<String>) {
    if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
        p.push(format!("{name} must be a fraction in [0, 1], got {v}"));
    }
}

/// Checks that `v` lies strictly between 0 and 1.
fn unit(name: &str, v: f64, p: &mut Vec<String>) {
    if !(v.is_finite() && v > 0.0 && v < 1.0) {
        p.push(format!("{name} must be strictly between 0 and 1, got {v}"));
    }
}

// ---------------------------------------------------------------------------------------------
// State, observations, actions.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Collecting data / stepping.
    Running,
    /// Waiting for an operator's `approve`.
    AwaitingApproval,
    Paused,
    /// Blue-green: waiting for the candidate's validation.
    Validating,
    /// Blue-green: watching the first traffic after the switch.
    Monitoring,
    /// Blue-green: switched; the old colour stays warm until the retention ends.
    Retaining,
    Completed,
    RolledBack,
    Aborted,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Completed | Phase::RolledBack | Phase::Aborted)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::AwaitingApproval => "awaiting_approval",
            Phase::Paused => "paused",
            Phase::Validating => "validating",
            Phase::Monitoring => "monitoring",
            Phase::Retaining => "retaining",
            Phase::Completed => "completed",
            Phase::RolledBack => "rolled_back",
            Phase::Aborted => "aborted",
        }
    }
}

/// A/B and shadow conclusions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Recommendation {
    Promote,
    Neutral,
    Reject,
    Investigate,
}

impl Recommendation {
    pub fn as_str(self) -> &'static str {
        match self {
            Recommendation::Promote => "PROMOTE",
            Recommendation::Neutral => "NEUTRAL",
            Recommendation::Reject => "REJECT",
            Recommendation::Investigate => "INVESTIGATE",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    pub phase: Phase,
    /// Index of the current canary step.
    pub step: usize,
    pub started_ms: i64,
    pub step_started_ms: i64,
    /// Observations count from this routing epoch on (set by the driver when it applies a
    /// strategy); `start_epoch` is the first epoch of the rollout.
    pub step_epoch: u64,
    pub start_epoch: u64,
    /// Phase to return to on `resume`.
    pub paused_from: Option<Phase>,
    /// The current step's deadline alert was sent.
    pub stuck_alerted: bool,
    pub srm_alerted: bool,
    /// Shadow: the live alerts already sent (`agreement`, `latency`, `errors`), each once.
    #[serde(default)]
    pub shadow_alerts: Vec<String>,
    pub recommendation: Option<Recommendation>,
    /// Why the rollout ended, or what it is waiting for.
    pub reason: Option<String>,
    /// Blue-green: when the switch happened and blue's p95 just before it.
    pub switched_ms: Option<i64>,
    pub baseline_p95_us: Option<u64>,
    pub sequential: Option<SequentialMonitor>,
    /// The strategy currently installed for the model.
    pub strategy: Strategy,
    /// A/B and bandit: the experiment's own assignment salt (its name and start time), also
    /// carried by its split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// A/B/n and bandit: each arm's state, control first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arms: Vec<ArmState>,
    /// A/B/n and bandit: the version kept when the test concluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner: Option<String>,
    /// Bandit: each arm's probability of being best at the last re-weighting, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_best: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reweight_ms: Option<i64>,
    /// Who approved what the rollout waits for (distinct names, in order); emptied when the
    /// approval is complete.
    #[serde(default)]
    pub approved_by: Vec<String>,
    /// Who asked for a manual promotion that needs several approvers (distinct names, in order).
    #[serde(default)]
    pub promote_requested_by: Vec<String>,
    /// External gates: what each gate's readings counted so far (by gate name).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external: BTreeMap<String, GateTally>,
}

/// Outcome of a blue-green validation run by the driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    pub passed: bool,
    pub smoke_ok: bool,
    pub samples: u64,
    pub accuracy: Option<f64>,
    pub p95_ms: Option<f64>,
    pub reason: String,
    /// The load test's measurements, when the spec asks for one and it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_test: Option<LoadTestResult>,
}

/// Statistics the driver hands to the state machine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observations {
    /// Serving statistics per version since the current step began.
    pub step: BTreeMap<String, VariantStats>,
    /// Serving statistics per version since the rollout began.
    pub total: BTreeMap<String, VariantStats>,
    /// Serving requests per variant name since the rollout began (for sample-ratio checks).
    pub by_variant: BTreeMap<String, u64>,
    /// Shadow: the candidate's shadow statistics and the pair comparison, since the start.
    pub shadow: Option<VariantStats>,
    pub pair: Option<PairStats>,
    /// Blue-green: the validation result once it is known.
    pub validation: Option<Validation>,
    /// A rollout group: each member model's own observations.
    pub members: BTreeMap<String, Observations>,
    /// External gates: the latest reading of each (by gate name), as the driver took them.
    pub external: BTreeMap<String, ExternalReading>,
}

impl Observations {
    fn step_of(&self, version: &str) -> VariantStats {
        self.step.get(version).cloned().unwrap_or_default()
    }

    fn total_of(&self, version: &str) -> VariantStats {
        self.total.get(version).cloned().unwrap_or_default()
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Install this strategy for the rollout's model, then set `step_epoch` to the new epoch.
    SetStrategy(Strategy),
    /// A rollout group: install these strategies, one per model (the rollout's own first), in
    /// one routing swap, then set `step_epoch` to the new epoch.
    SetStrategies(Vec<(String, Strategy)>),
    Event(AuditEvent),
    Alert {
        severity: Severity,
        kind: String,
        title: String,
        details: Details,
    },
    /// Blue-green: validate the candidate and report through `Observations::validation`.
    Validate {
        version: String,
    },
    /// Start another rollout (a canary chained after a shadow).
    Chain(Box<RolloutSpec>),
}

/// Operator commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Promote,
    Rollback,
    Pause,
    Resume,
    Approve,
    Abort,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        match s {
            "promote" => Some(Command::Promote),
            "rollback" => Some(Command::Rollback),
            "pause" => Some(Command::Pause),
            "resume" => Some(Command::Resume),
            "approve" => Some(Command::Approve),
            "abort" => Some(Command::Abort),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Promote => "promote",
            Command::Rollback => "rollback",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Approve => "approve",
            Command::Abort => "abort",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {command} rollout '{rollout}' while it is {phase}")]
pub struct CommandError {
    pub rollout: String,
    pub command: &'static str,
    pub phase: &'static str,
}

// ---------------------------------------------------------------------------------------------
// Helpers.

struct Out<'a> {
    spec: &'a RolloutSpec,
    now: i64,
    actor: &'a str,
    actions: Vec<Action>,
}

impl<'a> Out<'a> {
    fn new(spec: &'a RolloutSpec, now: i64, actor: &'a str) -> Self {
        Out {
            spec,
            now,
            actor,
            actions: Vec::new(),
        }
    }

    fn event(&mut self, kind: &str, message: impl Into<String>, details: Details) {
        self.actions.push(Action::Event(AuditEvent {
            rollout: self.spec.name.clone(),
            ts_ms: self.now,
            kind: kind.into(),
            actor: self.actor.into(),
            message: message.into(),
            details,
        }));
    }

    fn alert(
        &mut self,
        severity: Severity,
        kind: &str,
        title: impl Into<String>,
        details: Details,
    ) {
        self.actions.push(Action::Alert {
            severity,
            kind: kind.into(),
            title: title.into(),
            details,
        });
    }

    fn set(&mut self, state: &mut RolloutState, strategy: Strategy) {
        state.strategy = strategy.clone();
        let action = match self.spec.routes(&strategy) {
            routes if routes.len() > 1 => Action::SetStrategies(routes),
            _ => Action::SetStrategy(strategy),
        };
        self.actions.push(action);
    }
}

fn d(name: &str, v: impl Into<Detail>) -> (String, Detail) {
    (name.to_string(), v.into())
}

fn opt(name: &str, v: Option<f64>) -> (String, Detail) {
    (
        name.to_string(),
        v.map_or(Detail::Text("n/a".into()), Detail::Num),
    )
}

fn single(version: &str) -> Strategy {
    Strategy::Single {
        version: version.to_string(),
    }
}

/// The strategy in force when the rollout starts (`salt`: an experiment's own).
fn initial_strategy(spec: &RolloutSpec, salt: Option<String>) -> Strategy {
    match &spec.kind {
        RolloutKind::Shadow(s) => Strategy::Shadow {
            primary: s.primary.clone(),
            shadows: vec![ShadowTarget {
                version: s.candidate.clone(),
                sample: s.sample,
            }],
        },
        RolloutKind::Canary(c) => step_strategy(c, 0),
        RolloutKind::Ab(a) => ab_strategy(a, salt),
        RolloutKind::BlueGreen(b) => blue_green(b, Colour::Blue),
    }
}

// ---------------------------------------------------------------------------------------------
// Transitions.

/// Starts a rollout.
pub fn start(spec: &RolloutSpec, now: i64, actor: &str) -> (RolloutState, Vec<Action>) {
    let mut out = Out::new(spec, now, actor);
    let (current, candidate) = spec.versions();
    let mut state = RolloutState {
        phase: Phase::Running,
        step: 0,
        started_ms: now,
        step_started_ms: now,
        step_epoch: 0,
        start_epoch: 0,
        paused_from: None,
        stuck_alerted: false,
        srm_alerted: false,
        shadow_alerts: Vec::new(),
        recommendation: None,
        reason: None,
        switched_ms: None,
        baseline_p95_us: None,
        sequential: None,
        strategy: single(current),
        salt: None,
        arms: Vec::new(),
        winner: None,
        p_best: None,
        last_reweight_ms: None,
        approved_by: Vec::new(),
        promote_requested_by: Vec::new(),
        external: BTreeMap::new(),
    };
    if matches!(spec.kind, RolloutKind::Ab(_)) {
        state.salt = Some(abn::experiment_salt(&spec.name, now));
    }
    let strategy = initial_strategy(spec, state.salt.clone());
    out.set(&mut state, strategy);
    let mut details = vec![
        d("model", spec.model.as_str()),
        d("current", current),
        d("candidate", candidate),
    ];
    match &spec.kind {
        RolloutKind::Canary(c) => {
            details.push(d(
                "first_step_percent",
                f64::from(c.steps.first().map_or(0, |s| s.weight)) / 100.0,
            ));
            if let Some(t) = c.steps.first().and_then(|s| s.target.as_ref()) {
                details.push(d("target", t.describe()));
            }
        }
        RolloutKind::Ab(a) if abn::is_extended(a) => {
            if let Some(n) = abn::required_per_arm(a) {
                details.push(d("required_per_arm", n));
            }
            state.arms = abn::initial_arm_states(a);
            details.push(d("arms", state.arms.len() as u64));
            details.push(d("salt", state.salt.clone().unwrap_or_default()));
        }
        RolloutKind::Ab(a) => {
            if let Ok(n) = power::sample_size_two_proportions(a.baseline, a.mde, a.alpha, a.power) {
                details.push(d("required_per_arm", n.per_variant));
            }
            if a.sequential {
                state.sequential = Some(SequentialMonitor::default());
            }
            details.push(d("salt", state.salt.clone().unwrap_or_default()));
        }
        RolloutKind::BlueGreen(b) => {
            state.phase = Phase::Validating;
            out.actions.push(Action::Validate {
                version: b.candidate.clone(),
            });
        }
        RolloutKind::Shadow(s) => details.push(d("sample_percent", f64::from(s.sample) / 100.0)),
    }
    out.event(
        "started",
        format!(
            "{} rollout of {} started: {current} → {candidate}",
            spec.kind_name(),
            spec.model
        ),
        details,
    );
    (state, out.actions)
}

/// Advances a rollout on new observations.
pub fn tick(
    spec: &RolloutSpec,
    state: &RolloutState,
    obs: &Observations,
    now: i64,
) -> (RolloutState, Vec<Action>) {
    let mut next = state.clone();
    let mut out = Out::new(spec, now, "controller");
    if state.phase.is_terminal() || state.phase == Phase::Paused {
        return (next, vec![]);
    }
    match &spec.kind {
        RolloutKind::Canary(c) => tick_canary(c, &mut next, obs, &mut out),
        RolloutKind::Shadow(s) => tick_shadow(s, &mut next, obs, &mut out),
        RolloutKind::Ab(a) if abn::is_extended(a) => {
            if let Some(active) = abn::tick_common(a, &mut next, obs, &mut out) {
                if a.bandit.is_some() {
                    bandit::tick_bandit(a, &mut next, obs, &mut out, &active);
                } else {
                    abn::conclude(a, &mut next, obs, &mut out, &active);
                }
            }
        }
        RolloutKind::Ab(a) => tick_ab(a, &mut next, obs, &mut out),
        RolloutKind::BlueGreen(b) => tick_blue_green(b, &mut next, obs, &mut out),
    }
    (next, out.actions)
}

fn rollback(
    state: &mut RolloutState,
    out: &mut Out<'_>,
    stable_strategy: Strategy,
    reason: &str,
    severity: Severity,
    details: Details,
) {
    out.set(state, stable_strategy);
    state.phase = Phase::RolledBack;
    state.reason = Some(reason.to_string());
    out.event(
        "rolled_back",
        format!("rolled back: {reason}"),
        details.clone(),
    );
    out.alert(
        severity,
        "rollback",
        format!(
            "{} on {} rolled back: {reason}",
            out.spec.name, out.spec.model
        ),
        details,
    );
}

/// The end of an A/B test or a bandit: with `auto_promote`, `keep` serves everything and the
/// rollout completes; otherwise it waits for an operator to promote or roll back.
fn promote_or_await(
    auto_promote: bool,
    state: &mut RolloutState,
    out: &mut Out<'_>,
    keep: &str,
    verdict: &str,
    details: Details,
) {
    if auto_promote {
        out.set(state, single(keep));
        state.phase = Phase::Completed;
        out.event(
            "promoted",
            format!("{keep} serves all traffic"),
            vec![d("version", keep)],
        );
        out.alert(
            Severity::P3,
            "completed",
            format!("{}: {verdict}; {keep} serves all traffic", out.spec.name),
            details,
        );
    } else {
        state.phase = Phase::AwaitingApproval;
        let needed = out.spec.approvals_needed(state);
        out.event(
            "awaiting_approval",
            if needed == 1 {
                format!("{verdict}; {keep} serves all traffic once approved")
            } else {
                format!(
                    "{verdict}; {keep} serves all traffic once {needed} distinct approvers approve"
                )
            },
            vec![d("version", keep), d("approvals_needed", u64::from(needed))],
        );
        out.alert(
            Severity::P3,
            "approval_needed",
            format!("{}: {verdict}; promote or roll back", out.spec.name),
            details,
        );
    }
}

/// Counts `actor`'s approval of `what` among the distinct names in `approvers`. Returns the
/// approvers (emptying `approvers`) once `needed` distinct names approved, and `None` while
/// more are needed; an approval repeated by the same name is not counted, and the audit trail
/// says so.
fn count_approval(
    approvers: &mut Vec<String>,
    needed: u32,
    actor: &str,
    out: &mut Out<'_>,
    what: &str,
) -> Option<Vec<String>> {
    let needed_n = needed as usize;
    let details = |approvers: &[String]| {
        vec![
            d("approvers", approvers.join(", ").as_str()),
            d("needed", u64::from(needed)),
        ]
    };
    if approvers.iter().any(|a| a == actor) {
        out.event(
            "approval_repeated",
            format!(
                "{actor} already approved this {what}; not counted twice ({} of {needed}, waiting for {} more)",
                approvers.len(),
                needed_n.saturating_sub(approvers.len())
            ),
            details(approvers),
        );
        return None;
    }
    approvers.push(actor.to_string());
    if approvers.len() < needed_n {
        out.event(
            "approval_recorded",
            format!(
                "{what} approved by {actor} ({} of {needed}); waiting for {} more",
                approvers.len(),
                needed_n - approvers.len()
            ),
            details(approvers),
        );
        return None;
    }
    Some(std::mem::take(approvers))
}

/// `a`, `a and b`, `a, b and c`.
fn names(list: &[String]) -> String {
    match list.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

/// Applies an operator command.
pub fn command(
    spec: &RolloutSpec,
    state: &RolloutState,
    cmd: Command,
    actor: &str,
    now: i64,
) -> Result<(RolloutState, Vec<Action>), CommandError> {
    let refuse = || CommandError {
        rollout: spec.name.clone(),
        command: cmd.as_str(),
        phase: state.phase.as_str(),
    };
    if state.phase.is_terminal() {
        return Err(refuse());
    }
    let mut next = state.clone();
    let mut out = Out::new(spec, now, actor);
    let (current, candidate) = spec.versions();
    match cmd {
        Command::Pause => {
            if state.phase == Phase::Paused {
                return Err(refuse());
            }
            next.paused_from = Some(state.phase);
            next.phase = Phase::Paused;
            out.event(
                "paused",
                format!("paused by {actor}; traffic stays as it is"),
                vec![],
            );
        }
        Command::Resume => {
            if state.phase != Phase::Paused {
                return Err(refuse());
            }
            next.phase = state.paused_from.unwrap_or(Phase::Running);
            next.paused_from = None;
            out.event("resumed", format!("resumed by {actor}"), vec![]);
        }
        Command::Rollback => {
            let back = match &spec.kind {
                RolloutKind::BlueGreen(b) => blue_green(b, Colour::Blue),
                _ => single(current),
            };
            rollback(
                &mut next,
                &mut out,
                back,
                &format!("manual rollback by {actor}"),
                Severity::P1,
                vec![d("actor", actor)],
            );
        }
        Command::Abort => {
            out.set(&mut next, single(current));
            next.phase = Phase::Aborted;
            next.reason = Some(format!("aborted by {actor}"));
            out.event(
                "aborted",
                format!("aborted by {actor}; {current} serves all traffic"),
                vec![],
            );
        }
        Command::Promote => {
            let needed = spec.promote_approvals();
            let mut by = actor.to_string();
            if needed > 1 {
                let Some(approvers) = count_approval(
                    &mut next.promote_requested_by,
                    needed,
                    actor,
                    &mut out,
                    "promotion",
                ) else {
                    return Ok((next, out.actions));
                };
                by = names(&approvers);
                out.event(
                    "promotion_approved",
                    format!("promotion approved by {by} ({needed} of {needed})"),
                    vec![
                        d("approvers", approvers.join(", ").as_str()),
                        d("needed", u64::from(needed)),
                    ],
                );
            }
            // A concluded A/B/n or bandit promotes the arm it found best, not its second arm.
            let promoted = state.winner.as_deref().unwrap_or(candidate);
            out.set(&mut next, single(promoted));
            next.phase = Phase::Completed;
            next.reason = Some(format!("{promoted} promoted by {by}"));
            out.event(
                "promoted",
                format!("{promoted} promoted by {by}"),
                vec![d("version", promoted)],
            );
        }
        Command::Approve => {
            if state.phase != Phase::AwaitingApproval {
                return Err(refuse());
            }
            let needed = spec.approvals_needed(state);
            let Some(approvers) =
                count_approval(&mut next.approved_by, needed, actor, &mut out, "approval")
            else {
                return Ok((next, out.actions));
            };
            out.event(
                "approved",
                format!("approved by {}", names(&approvers)),
                vec![
                    d("approvers", approvers.join(", ").as_str()),
                    d("needed", u64::from(needed)),
                ],
            );
            match &spec.kind {
                RolloutKind::Canary(c) => {
                    advance_canary(c, &mut next, &mut out);
                }
                RolloutKind::Shadow(s) => {
                    next.phase = Phase::Completed;
                    if let Some(c) = &s.then_canary {
                        chain(&mut out, c);
                    }
                }
                RolloutKind::Ab(a) => {
                    let keep = match (&next.winner, next.recommendation) {
                        (Some(w), _) => w.clone(),
                        (None, Some(Recommendation::Promote)) => a.treatment.clone(),
                        _ => a.control.clone(),
                    };
                    out.set(&mut next, single(&keep));
                    next.phase = Phase::Completed;
                    out.event(
                        "promoted",
                        format!("{keep} serves all traffic"),
                        vec![d("version", keep.as_str())],
                    );
                }
                RolloutKind::BlueGreen(_) => next.phase = Phase::Running,
            }
        }
    }
    Ok((next, out.actions))
}
