//! Rollouts as pure state machines.
//!
//! A rollout moves one model from a current version to a candidate by one of four strategies
//! (shadow, canary, A/B, blue-green). [`start`], [`tick`] and [`command`] take the spec, the
//! current [`RolloutState`], [`Observations`] (statistics the driver merged from the aggregates)
//! and the time, and return the next state plus [`Action`]s for the driver to carry out: swap
//! the routing strategy, append audit events, send alerts, run a validation. Nothing here does
//! I/O or reads a clock.
//!
//! Invariants (property-tested): terminal phases absorb every tick and command; no step
//! advances before its minimum requests and duration; no gate passes without data; every
//! strategy emitted is valid (weights in range and summing to the whole).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchyard_stats::chi2::sample_ratio_mismatch;
use switchyard_stats::sequential::{MsprtConfig, SequentialMonitor};
use switchyard_stats::{bayes, mcnemar, power, proportions, ttest, Proportion};

use crate::aggregate::{PairStats, VariantStats};
use crate::audit::{AuditEvent, Detail, Details, Severity};
use crate::routing::{Arm, Colour, ShadowTarget, Strategy, BUCKETS};

// ---------------------------------------------------------------------------------------------
// Specs.

/// One canary step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Canary share in basis points.
    pub weight: u32,
    pub min_requests: u64,
    pub min_duration_ms: u64,
    /// The step is applied only after an operator approves it.
    pub require_approval: bool,
}

/// Thresholds of the canary health gate. `None` disables a check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatePolicy {
    /// Largest tolerated drop of accuracy, in absolute terms (0.05 = five points).
    pub max_accuracy_drop: Option<f64>,
    /// Largest tolerated relative increase of MAE (regression models).
    pub max_mae_increase: Option<f64>,
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
}

impl Default for GatePolicy {
    fn default() -> Self {
        GatePolicy {
            max_accuracy_drop: Some(0.05),
            max_mae_increase: Some(0.10),
            min_labelled: 30,
            max_p95_increase: Some(0.5),
            min_p95_increase_ms: DEFAULT_MIN_P95_INCREASE_MS,
            max_error_ratio: Some(2.0),
            min_error_rate: 0.01,
            significance: None,
        }
    }
}

/// The smallest p95 increase (ms) a latency check acts on, for gates and monitoring windows.
pub const DEFAULT_MIN_P95_INCREASE_MS: f64 = 2.0;

fn default_min_p95_increase_ms() -> f64 {
    DEFAULT_MIN_P95_INCREASE_MS
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowSpec {
    pub primary: String,
    pub candidate: String,
    /// Share of requests mirrored, basis points.
    pub sample: u32,
    pub min_labelled: u64,
    pub min_duration_ms: u64,
    /// Accuracy gain (absolute) needed, with significance, to recommend promotion.
    pub min_improvement: f64,
    /// Accuracy loss (absolute) that gets the candidate rejected.
    pub max_drop: f64,
    pub alpha: f64,
    /// Agreement below this, or a shadow error rate above `max_error_rate`, needs a human.
    pub min_agreement: f64,
    pub max_error_rate: f64,
    /// On PROMOTE, continue with this canary.
    pub then_canary: Option<CanarySpec>,
    /// Wait for an operator before starting `then_canary`.
    pub chain_requires_approval: bool,
}

/// What an A/B test measures per arm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbMetric {
    /// Correct predictions among labelled ones.
    Accuracy,
    /// A 0/1 business metric posted as feedback (`metrics: {name: 1}`).
    Conversion(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbSpec {
    pub control: String,
    pub treatment: String,
    /// Treatment share, basis points.
    pub treatment_weight: u32,
    pub metric: AbMetric,
    /// Expected control rate and minimum detectable effect (absolute) for the sample size.
    pub baseline: f64,
    pub mde: f64,
    pub alpha: f64,
    pub power: f64,
    /// Stop early on an mSPRT boundary.
    pub sequential: bool,
    /// Route everything to the winner when the test concludes.
    pub auto_promote: bool,
    pub srm_threshold: f64,
}

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
        match self.kind {
            RolloutKind::Shadow(_) => "shadow",
            RolloutKind::Canary(_) => "canary",
            RolloutKind::Ab(_) => "ab",
            RolloutKind::BlueGreen(_) => "blue_green",
        }
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
        let frac = |name: &str, v: f64, p: &mut Vec<String>| {
            if !(v.is_finite() && v >= 0.0) {
                p.push(format!("{name} must be a non-negative number, got {v}"));
            }
        };
        let unit = |name: &str, v: f64, p: &mut Vec<String>| {
            if !(v.is_finite() && v > 0.0 && v < 1.0) {
                p.push(format!("{name} must be strictly between 0 and 1, got {v}"));
            }
        };
        match &self.kind {
            RolloutKind::Canary(c) => {
                if c.steps.is_empty() {
                    p.push("a canary needs at least one step".into());
                }
                let mut last = 0;
                for (i, s) in c.steps.iter().enumerate() {
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
                }
                if c.steps.last().is_some_and(|s| s.weight != BUCKETS) {
                    p.push("the last step must send 100% to the candidate".into());
                }
                gate_problems(&c.gate, &mut p);
            }
            RolloutKind::Shadow(s) => {
                if s.sample == 0 || s.sample > BUCKETS {
                    p.push(format!(
                        "sample must be in (0, 100]%, got {}%",
                        f64::from(s.sample) / 100.0
                    ));
                }
                frac("min_improvement", s.min_improvement, &mut p);
                frac("max_drop", s.max_drop, &mut p);
                unit("alpha", s.alpha, &mut p);
                frac("min_agreement", s.min_agreement, &mut p);
                frac("max_error_rate", s.max_error_rate, &mut p);
                if let Some(c) = &s.then_canary {
                    let chained = RolloutSpec {
                        name: self.name.clone(),
                        model: self.model.clone(),
                        kind: RolloutKind::Canary(c.clone()),
                    };
                    p.extend(
                        chained
                            .problems(declared)
                            .into_iter()
                            .map(|e| format!("then_canary: {e}")),
                    );
                }
            }
            RolloutKind::Ab(a) => {
                if a.treatment_weight == 0 || a.treatment_weight >= BUCKETS {
                    p.push(format!(
                        "treatment weight must be in (0, 100)%, got {}%",
                        f64::from(a.treatment_weight) / 100.0
                    ));
                }
                if let Err(e) =
                    power::sample_size_two_proportions(a.baseline, a.mde, a.alpha, a.power)
                {
                    p.push(format!("sample size: {e}"));
                }
                unit("srm_threshold", a.srm_threshold, &mut p);
            }
            RolloutKind::BlueGreen(b) => {
                if let Some(acc) = b.min_accuracy {
                    if !(0.0..=1.0).contains(&acc) {
                        p.push(format!("min_accuracy must be in [0, 1], got {acc}"));
                    }
                }
                if let Some(ms) = b.max_p95_ms {
                    frac("max_p95_ms", ms, &mut p);
                }
                frac("max_error_rate", b.max_error_rate, &mut p);
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
            }
        }
        p
    }
}

fn gate_problems(g: &GatePolicy, p: &mut Vec<String>) {
    for (name, v) in [
        ("gate.max_accuracy_drop", g.max_accuracy_drop),
        ("gate.max_mae_increase", g.max_mae_increase),
        ("gate.max_p95_increase", g.max_p95_increase),
        ("gate.max_error_ratio", g.max_error_ratio),
        ("gate.significance", g.significance),
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
    pub recommendation: Option<Recommendation>,
    /// Why the rollout ended, or what it is waiting for.
    pub reason: Option<String>,
    /// Blue-green: when the switch happened and blue's p95 just before it.
    pub switched_ms: Option<i64>,
    pub baseline_p95_us: Option<u64>,
    pub sequential: Option<SequentialMonitor>,
    /// The strategy currently installed for the model.
    pub strategy: Strategy,
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
        self.actions.push(Action::SetStrategy(strategy));
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

fn ab_strategy(a: &AbSpec) -> Strategy {
    Strategy::Split {
        arms: vec![
            Arm {
                variant: "a".into(),
                version: a.control.clone(),
                weight: BUCKETS - a.treatment_weight,
            },
            Arm {
                variant: "b".into(),
                version: a.treatment.clone(),
                weight: a.treatment_weight,
            },
        ],
    }
}

fn blue_green(b: &BlueGreenSpec, active: Colour) -> Strategy {
    Strategy::BlueGreen {
        blue: b.active.clone(),
        green: b.candidate.clone(),
        active,
    }
}

/// The strategy in force when the rollout starts.
fn initial_strategy(spec: &RolloutSpec) -> Strategy {
    match &spec.kind {
        RolloutKind::Shadow(s) => Strategy::Shadow {
            primary: s.primary.clone(),
            shadows: vec![ShadowTarget {
                version: s.candidate.clone(),
                sample: s.sample,
            }],
        },
        RolloutKind::Canary(c) => Strategy::canary(
            &c.stable,
            &c.candidate,
            c.steps.first().map_or(0, |s| s.weight),
        ),
        RolloutKind::Ab(a) => ab_strategy(a),
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
        recommendation: None,
        reason: None,
        switched_ms: None,
        baseline_p95_us: None,
        sequential: None,
        strategy: single(current),
    };
    let strategy = initial_strategy(spec);
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
        }
        RolloutKind::Ab(a) => {
            if let Ok(n) = power::sample_size_two_proportions(a.baseline, a.mde, a.alpha, a.power) {
                details.push(d("required_per_arm", n.per_variant));
            }
            if a.sequential {
                state.sequential = Some(SequentialMonitor::default());
            }
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
        RolloutKind::Ab(a) => tick_ab(a, &mut next, obs, &mut out),
        RolloutKind::BlueGreen(b) => tick_blue_green(b, &mut next, obs, &mut out),
    }
    (next, out.actions)
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

/// Compares the canary (this step) with the stable version (whole rollout).
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
    } else if let Some(max_increase) = gate.max_mae_increase {
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
        if cm > sm * (1.0 + max_increase) {
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
    Verdict::Pass(details)
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

fn tick_canary(c: &CanarySpec, state: &mut RolloutState, obs: &Observations, out: &mut Out<'_>) {
    if state.phase != Phase::Running {
        return;
    }
    let Some(step) = c.steps.get(state.step) else {
        return;
    };
    let elapsed = (out.now - state.step_started_ms).max(0) as u64;
    let canary = obs.step_of(&c.candidate);
    let stable = obs.total_of(&c.stable);
    let ready = canary.requests >= step.min_requests && elapsed >= step.min_duration_ms;
    let verdict = if ready {
        evaluate_gate(&c.gate, &canary, &stable)
    } else {
        Verdict::Hold(format!(
            "step {} needs {} requests and {} ms: has {} requests after {} ms",
            state.step + 1,
            step.min_requests,
            step.min_duration_ms,
            canary.requests,
            elapsed
        ))
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
                Some(next) => advance_canary(c, state, out, next.weight),
            }
        }
    }
}

fn advance_canary(c: &CanarySpec, state: &mut RolloutState, out: &mut Out<'_>, weight: u32) {
    state.step += 1;
    state.step_started_ms = out.now;
    state.stuck_alerted = false;
    state.phase = Phase::Running;
    state.reason = None;
    out.set(state, Strategy::canary(&c.stable, &c.candidate, weight));
    out.event(
        "step_advanced",
        format!(
            "canary at {}% (step {} of {})",
            f64::from(weight) / 100.0,
            state.step + 1,
            c.steps.len()
        ),
        vec![
            d("step", (state.step + 1) as u64),
            d("weight_percent", f64::from(weight) / 100.0),
        ],
    );
}

/// Shadow-mode comparison of the candidate against the primary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowReport {
    pub compared: u64,
    pub agreement: Option<f64>,
    pub labelled: u64,
    pub primary_accuracy: Option<f64>,
    pub shadow_accuracy: Option<f64>,
    pub improvement: Option<f64>,
    pub mcnemar: Option<mcnemar::McNemar>,
    /// Regression: mean absolute error of each and the paired t-test on |e_p| − |e_s|.
    pub primary_mae: Option<f64>,
    pub shadow_mae: Option<f64>,
    pub paired_t: Option<ttest::TTest>,
    pub shadow_error_rate: Option<f64>,
    pub recommendation: Recommendation,
    pub reason: String,
}

/// Computes the shadow report and its recommendation from the pair statistics.
pub fn shadow_report(
    s: &ShadowSpec,
    pair: &PairStats,
    primary: &VariantStats,
    shadow: &VariantStats,
) -> ShadowReport {
    let labelled = pair.labelled();
    let shadow_error_rate =
        (pair.shadow_calls > 0).then(|| pair.shadow_errors as f64 / pair.shadow_calls as f64);
    let mut r = ShadowReport {
        compared: pair.agreement.trials,
        agreement: pair.agreement.rate(),
        labelled,
        primary_accuracy: None,
        shadow_accuracy: None,
        improvement: None,
        mcnemar: None,
        primary_mae: primary.abs_error.mean(),
        shadow_mae: shadow.abs_error.mean(),
        paired_t: None,
        shadow_error_rate,
        recommendation: Recommendation::Neutral,
        reason: String::new(),
    };
    let (improvement, p_value) = if labelled > 0 {
        let pa = (pair.both_correct + pair.primary_only) as f64 / labelled as f64;
        let sa = (pair.both_correct + pair.shadow_only) as f64 / labelled as f64;
        let m = mcnemar::mcnemar(pair.primary_only, pair.shadow_only);
        r.primary_accuracy = Some(pa);
        r.shadow_accuracy = Some(sa);
        r.improvement = Some(sa - pa);
        r.mcnemar = Some(m);
        (sa - pa, m.p_value)
    } else if pair.error_diff.count() >= 2 {
        // Positive differences mean the shadow's errors are smaller.
        let t = ttest::paired_from_moments(&pair.error_diff).ok();
        r.paired_t = t;
        let rel = match (r.primary_mae, r.shadow_mae) {
            (Some(p), Some(s)) if p > 0.0 => (p - s) / p,
            _ => 0.0,
        };
        r.improvement = Some(rel);
        (rel, t.map_or(1.0, |t| t.p_value))
    } else {
        r.reason = "no labelled pairs".into();
        return r;
    };
    (r.recommendation, r.reason) = if shadow_error_rate.is_some_and(|e| e > s.max_error_rate) {
        (
            Recommendation::Investigate,
            format!(
                "shadow error rate {:.1}% above {:.1}%",
                shadow_error_rate.unwrap_or(0.0) * 100.0,
                s.max_error_rate * 100.0
            ),
        )
    } else if r.agreement.is_some_and(|a| a < s.min_agreement) {
        (
            Recommendation::Investigate,
            format!(
                "agreement {:.1}% below {:.1}%",
                r.agreement.unwrap_or(0.0) * 100.0,
                s.min_agreement * 100.0
            ),
        )
    } else if improvement > s.min_improvement && p_value < s.alpha {
        (
            Recommendation::Promote,
            format!(
                "improvement {:+.2} points, p = {p_value:.2e}",
                improvement * 100.0
            ),
        )
    } else if improvement < -s.max_drop {
        (
            Recommendation::Reject,
            format!("drop of {:.2} points", -improvement * 100.0),
        )
    } else {
        (
            Recommendation::Neutral,
            format!(
                "improvement {:+.2} points, p = {p_value:.2e}: not conclusive",
                improvement * 100.0
            ),
        )
    };
    r
}

fn tick_shadow(s: &ShadowSpec, state: &mut RolloutState, obs: &Observations, out: &mut Out<'_>) {
    if state.phase != Phase::Running {
        return;
    }
    let pair = obs.pair.clone().unwrap_or_default();
    let labelled = pair.labelled().max(pair.error_diff.count());
    let elapsed = (out.now - state.started_ms).max(0) as u64;
    if labelled < s.min_labelled || elapsed < s.min_duration_ms {
        state.reason = Some(format!(
            "{labelled}/{} labelled pairs after {elapsed}/{} ms",
            s.min_labelled, s.min_duration_ms
        ));
        return;
    }
    let report = shadow_report(
        s,
        &pair,
        &obs.total_of(&s.primary),
        &obs.shadow.clone().unwrap_or_default(),
    );
    let mut details = vec![
        d("labelled_pairs", report.labelled),
        opt("agreement", report.agreement),
        opt("primary_accuracy", report.primary_accuracy),
        opt("shadow_accuracy", report.shadow_accuracy),
        opt("primary_mae", report.primary_mae),
        opt("shadow_mae", report.shadow_mae),
        opt("improvement", report.improvement),
        d("recommendation", report.recommendation.as_str()),
    ];
    if let Some(m) = report.mcnemar {
        details.push(d("mcnemar_b", m.b));
        details.push(d("mcnemar_c", m.c));
        details.push(d("mcnemar_statistic", m.statistic));
        details.push(d("mcnemar_p_value", m.p_value));
    }
    if let Some(t) = report.paired_t {
        details.push(d("paired_t", t.t));
        details.push(d("paired_t_p_value", t.p_value));
    }
    state.recommendation = Some(report.recommendation);
    state.reason = Some(report.reason.clone());
    out.event(
        "shadow_concluded",
        format!(
            "shadow comparison concluded: {} ({})",
            report.recommendation.as_str(),
            report.reason
        ),
        details.clone(),
    );
    // Stop mirroring: the primary keeps serving.
    out.set(state, single(&s.primary));
    match (&s.then_canary, report.recommendation) {
        (Some(_), Recommendation::Promote) if s.chain_requires_approval => {
            state.phase = Phase::AwaitingApproval;
            out.event(
                "awaiting_approval",
                "PROMOTE recommended: approve to start the canary",
                vec![],
            );
            out.alert(
                Severity::P3,
                "approval_needed",
                format!(
                    "{}: shadow recommends PROMOTE; approve to start the canary",
                    out.spec.name
                ),
                details,
            );
        }
        (Some(canary), Recommendation::Promote) => {
            state.phase = Phase::Completed;
            chain(out, canary);
        }
        _ => {
            state.phase = Phase::Completed;
            out.alert(
                Severity::P3,
                "completed",
                format!(
                    "{}: shadow comparison says {}",
                    out.spec.name,
                    report.recommendation.as_str()
                ),
                details,
            );
        }
    }
}

fn chain(out: &mut Out<'_>, canary: &CanarySpec) {
    let spec = RolloutSpec {
        name: format!("{}-canary", out.spec.name),
        model: out.spec.model.clone(),
        kind: RolloutKind::Canary(canary.clone()),
    };
    out.event(
        "chained",
        format!("starting canary {}", spec.name),
        vec![d("rollout", spec.name.as_str())],
    );
    out.actions.push(Action::Chain(Box::new(spec)));
}

/// A/B analysis of the configured metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AbReport {
    pub control: Proportion,
    pub treatment: Proportion,
    pub required_per_arm: Option<u64>,
    pub test: Option<proportions::TwoProportionTest>,
    pub bayes: Option<bayes::BayesAb>,
    pub srm: Option<switchyard_stats::chi2::SampleRatioMismatch>,
    /// Welch test on absolute errors (regression models), treatment − control.
    pub mae_welch: Option<ttest::TTest>,
}

fn metric_of(stats: &VariantStats, metric: &AbMetric) -> Proportion {
    match metric {
        AbMetric::Accuracy => stats.correct,
        AbMetric::Conversion(name) => stats.metrics.get(name).map_or(Proportion::default(), |m| {
            let trials = m.count();
            let successes = (m.mean().unwrap_or(0.0) * trials as f64)
                .round()
                .clamp(0.0, trials as f64) as u64;
            Proportion { successes, trials }
        }),
    }
}

pub fn ab_report(a: &AbSpec, obs: &Observations) -> AbReport {
    let (c, t) = (obs.total_of(&a.control), obs.total_of(&a.treatment));
    let (control, treatment) = (metric_of(&c, &a.metric), metric_of(&t, &a.metric));
    let observed = [
        obs.by_variant.get("a").copied().unwrap_or(0),
        obs.by_variant.get("b").copied().unwrap_or(0),
    ];
    let wb = f64::from(a.treatment_weight) / f64::from(BUCKETS);
    AbReport {
        control,
        treatment,
        required_per_arm: power::sample_size_two_proportions(a.baseline, a.mde, a.alpha, a.power)
            .ok()
            .map(|s| s.per_variant),
        test: (control.trials > 0 && treatment.trials > 0)
            .then(|| proportions::two_proportion_ztest(control, treatment, a.alpha).ok())
            .flatten(),
        bayes: bayes::beta_binomial_ab(control, treatment).ok(),
        srm: (observed.iter().sum::<u64>() > 0)
            .then(|| sample_ratio_mismatch(&observed, &[1.0 - wb, wb], a.srm_threshold).ok())
            .flatten(),
        mae_welch: ttest::welch_from_moments(&t.abs_error, &c.abs_error).ok(),
    }
}

fn tick_ab(a: &AbSpec, state: &mut RolloutState, obs: &Observations, out: &mut Out<'_>) {
    if state.phase != Phase::Running {
        return;
    }
    let report = ab_report(a, obs);
    let total_requests: u64 = obs.by_variant.values().sum();
    if let Some(srm) = &report.srm {
        if srm.mismatch && total_requests >= 100 {
            if !state.srm_alerted {
                state.srm_alerted = true;
                let details = vec![
                    d("chi_square", srm.statistic),
                    d("p_value", srm.p_value),
                    d("threshold", srm.threshold),
                ];
                out.event(
                    "srm_detected",
                    "sample-ratio mismatch: the observed split differs from the configured weights",
                    details.clone(),
                );
                out.alert(
                    Severity::P1,
                    "srm",
                    format!(
                        "{}: sample-ratio mismatch (p = {:.2e}); results are not trustworthy",
                        out.spec.name, srm.p_value
                    ),
                    details,
                );
            }
            state.reason = Some("sample-ratio mismatch: no conclusion is drawn".into());
            return;
        }
    }
    let required = report.required_per_arm.unwrap_or(u64::MAX);
    let mut early = false;
    if let Some(monitor) = state.sequential.as_mut() {
        let config = MsprtConfig {
            alpha: a.alpha,
            ..MsprtConfig::default()
        };
        if let Ok(Some(_)) = monitor.observe(report.control, report.treatment, &config) {
            early = monitor.rejected;
        }
    }
    let enough = report.control.trials >= required && report.treatment.trials >= required;
    if !(enough || early) {
        state.reason = Some(format!(
            "{}/{required} and {}/{required} per arm",
            report.control.trials, report.treatment.trials
        ));
        return;
    }
    let Some(test) = report.test else { return };
    let significant = if early { true } else { test.p_value < a.alpha };
    let winner = match (significant, test.diff > 0.0) {
        (true, true) => Some(a.treatment.as_str()),
        (true, false) => Some(a.control.as_str()),
        (false, _) => None,
    };
    state.recommendation = Some(match winner {
        Some(w) if w == a.treatment => Recommendation::Promote,
        Some(_) => Recommendation::Reject,
        None => Recommendation::Neutral,
    });
    let mut details = vec![
        d("control_successes", report.control.successes),
        d("control_trials", report.control.trials),
        d("treatment_successes", report.treatment.successes),
        d("treatment_trials", report.treatment.trials),
        d("diff", test.diff),
        d("z", test.z),
        d("p_value", test.p_value),
        d("ci_low", test.ci_low),
        d("ci_high", test.ci_high),
        d("required_per_arm", required),
        d("stopped_early_by_sequential_test", early),
    ];
    if let Some(b) = report.bayes {
        details.push(d("prob_b_beats_a", b.prob_b_beats_a));
    }
    if let Some(m) = state.sequential {
        details.push(d("sequential_p_value", m.p_value));
    }
    let verdict = winner.map_or("no significant difference".to_string(), |w| {
        format!("{w} wins")
    });
    state.reason = Some(verdict.clone());
    out.event(
        "ab_concluded",
        format!("A/B concluded: {verdict}"),
        details.clone(),
    );
    if a.auto_promote {
        let keep = winner.unwrap_or(&a.control).to_string();
        out.set(state, single(&keep));
        state.phase = Phase::Completed;
        out.event(
            "promoted",
            format!("{keep} serves all traffic"),
            vec![d("version", keep.as_str())],
        );
        out.alert(
            Severity::P3,
            "completed",
            format!("{}: {verdict}; {keep} serves all traffic", out.spec.name),
            details,
        );
    } else {
        state.phase = Phase::AwaitingApproval;
        out.alert(
            Severity::P3,
            "approval_needed",
            format!("{}: {verdict}; promote or roll back", out.spec.name),
            details,
        );
    }
}

fn tick_blue_green(
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
            let details = vec![
                d("smoke_ok", v.smoke_ok),
                d("samples", v.samples),
                opt("accuracy", v.accuracy),
                opt("p95_ms", v.p95_ms),
                opt("min_accuracy", b.min_accuracy),
                opt("max_p95_ms", b.max_p95_ms),
            ];
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
            if green.requests >= b.monitor_min_requests && elapsed >= b.monitor_duration_ms {
                state.phase = Phase::Retaining;
                state.reason = Some(format!(
                    "blue ({}) kept warm for {} ms",
                    b.active, b.retention_ms
                ));
                out.event("monitor_passed", "monitoring window passed", details);
            } else {
                state.reason = Some(format!(
                    "monitoring: {}/{} requests, {elapsed}/{} ms",
                    green.requests, b.monitor_min_requests, b.monitor_duration_ms
                ));
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
            out.set(&mut next, single(candidate));
            next.phase = Phase::Completed;
            next.reason = Some(format!("{candidate} promoted by {actor}"));
            out.event(
                "promoted",
                format!("{candidate} promoted by {actor}"),
                vec![d("version", candidate)],
            );
        }
        Command::Approve => {
            if state.phase != Phase::AwaitingApproval {
                return Err(refuse());
            }
            out.event("approved", format!("approved by {actor}"), vec![]);
            match &spec.kind {
                RolloutKind::Canary(c) => {
                    let weight = c.steps.get(state.step + 1).map_or(BUCKETS, |s| s.weight);
                    advance_canary(c, &mut next, &mut out, weight);
                }
                RolloutKind::Shadow(s) => {
                    next.phase = Phase::Completed;
                    if let Some(c) = &s.then_canary {
                        chain(&mut out, c);
                    }
                }
                RolloutKind::Ab(a) => {
                    let keep = match next.recommendation {
                        Some(Recommendation::Promote) => a.treatment.clone(),
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
