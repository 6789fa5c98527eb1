//! The admin API's request and response bodies, as serde types: the server answers with
//! them, and the CLI, the demo and the tests read them back through the `client` module.
//!
//! One shape per statistic, wherever it is shown: a version's statistics are always
//! [`VersionStats`] (latencies in milliseconds, the unit in the field name), a shadow pair's
//! always [`PairView`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchyard_core::audit::Detail;
use switchyard_core::classes::{classification_summary, ClassificationSummary, PredictionDrift};
use switchyard_core::provenance::Artefact;
use switchyard_core::record::Tolerance;
use switchyard_core::rollout::{
    AbReport, AbnOutcome, AbnReport, ArmDecision, ArmResult, Correction, GatePolicy,
    GuardrailCheck, MetricValue, Phase, PrimaryTest, Recommendation, RolloutSpec, ShadowReport,
    ShadowSpec,
};
use switchyard_core::segments::SegmentBreakdown;
use switchyard_core::{ModelRoute, PairStats, Role, Strategy, VariantStats};
use switchyard_stats::mcnemar::McNemar;

/// The body of every refusal: `{"error": {"code", "message", "problems"?}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// Every problem, for validation errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Routing.

/// `GET /routes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutesView {
    pub epoch: u64,
    pub routes: BTreeMap<String, ModelRoute>,
}

/// `PUT /routes/{model}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteChanged {
    pub epoch: u64,
    pub route: Option<ModelRoute>,
}

// ---------------------------------------------------------------------------------------------
// Statistics.

/// Traffic, errors, latency and quality of one version (or one series of it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionStats {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    /// Labelled instances (classification or regression).
    pub labelled: u64,
    /// Correct labelled classifications.
    pub correct: u64,
    pub accuracy: Option<f64>,
    pub mae: Option<f64>,
    pub rmse: Option<f64>,
    /// Business metrics from feedback, by name.
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricSummary>,
    /// A classifier's labelled predictions in detail (confusion matrix, per-class scores,
    /// accuracy with its interval, unknown labels); in reports and model statistics, not in
    /// chart snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<ClassificationSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    pub count: u64,
    pub mean: Option<f64>,
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl From<&VariantStats> for VersionStats {
    fn from(s: &VariantStats) -> Self {
        VersionStats {
            requests: s.requests,
            errors: s.errors,
            error_rate: s.error_rate(),
            p50_ms: s.latency.p50().map(us_to_ms),
            p95_ms: s.latency.p95().map(us_to_ms),
            p99_ms: s.latency.p99().map(us_to_ms),
            mean_ms: s.latency.mean().map(|us| us / 1000.0),
            labelled: s.correct.trials.max(s.abs_error.count()),
            correct: s.correct.successes,
            accuracy: s.correct.rate(),
            mae: s.abs_error.mean(),
            rmse: s.sq_error.mean().map(f64::sqrt),
            metrics: s
                .metrics
                .iter()
                .map(|(k, m)| {
                    (
                        k.clone(),
                        MetricSummary {
                            count: m.count(),
                            mean: m.mean(),
                        },
                    )
                })
                .collect(),
            classification: None,
        }
    }
}

impl VersionStats {
    /// The statistics with the classification detail, `declared` being the model's classes
    /// when its configuration names them (labels of other classes are `unknown_labels`).
    pub fn with_classes(s: &VariantStats, declared: Option<&[String]>) -> Self {
        VersionStats {
            classification: classification_summary(&s.confusion, declared),
            ..VersionStats::from(s)
        }
    }
}

/// One series of a model: a version in a role under a routing variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesView {
    pub version: String,
    pub variant: String,
    pub role: Role,
    #[serde(flatten)]
    pub stats: VersionStats,
}

/// A serving version and its shadow, compared on the same requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairView {
    pub primary: String,
    pub shadow: String,
    /// Instances both answered comparably.
    pub compared: u64,
    /// Equal classes, or values within `agreement_tolerance`.
    pub agreement: Option<f64>,
    pub agreement_tolerance: Tolerance,
    /// Regression beyond the sample size: the agreement is a uniform-sample estimate.
    pub agreement_exact: bool,
    /// Labelled pairs: both answered and the truth arrived.
    pub labelled: u64,
    pub both_correct: u64,
    pub primary_only_correct: u64,
    pub shadow_only_correct: u64,
    pub both_wrong: u64,
    pub mcnemar: McNemar,
    /// Regression: mean absolute error of each on the labelled pairs.
    pub primary_mae: Option<f64>,
    pub shadow_mae: Option<f64>,
    pub shadow_calls: u64,
    pub shadow_errors: u64,
}

impl PairView {
    /// The pair's numbers, regression outputs agreeing within `tolerance`.
    pub fn of(primary: &str, shadow: &str, p: &PairStats, tolerance: Tolerance) -> Self {
        let agreement = p.agreement_within(&tolerance);
        PairView {
            primary: primary.to_string(),
            shadow: shadow.to_string(),
            compared: agreement.compared,
            agreement: agreement.rate,
            agreement_tolerance: tolerance,
            agreement_exact: agreement.exact,
            labelled: p.labelled(),
            both_correct: p.both_correct,
            primary_only_correct: p.primary_only,
            shadow_only_correct: p.shadow_only,
            both_wrong: p.both_wrong,
            mcnemar: switchyard_stats::mcnemar::mcnemar(p.primary_only, p.shadow_only),
            primary_mae: p.errors.primary_abs.mean(),
            shadow_mae: p.errors.shadow_abs.mean(),
            shadow_calls: p.shadow_calls,
            shadow_errors: p.shadow_errors,
        }
    }
}

/// `GET /models/{model}/stats[?epoch=N]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelStats {
    pub model: String,
    pub epoch: Option<u64>,
    pub variants: Vec<SeriesView>,
    pub pairs: Vec<PairView>,
}

// ---------------------------------------------------------------------------------------------
// Rollouts.

/// One rollout as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutView {
    pub name: String,
    pub model: String,
    /// `shadow`, `canary`, `ab` or `blue_green`.
    pub kind: String,
    pub current: String,
    pub candidate: String,
    pub phase: Phase,
    /// The current step, counted from 1.
    pub step: usize,
    /// The routing strategy the rollout holds now.
    pub strategy: Strategy,
    pub recommendation: Option<Recommendation>,
    pub reason: Option<String>,
    pub started_ms: i64,
    /// Who approved what the rollout waits for, so far (distinct credential names).
    #[serde(default)]
    pub approved_by: Vec<String>,
    /// Distinct approvers what the rollout waits for needs (when it awaits approval).
    #[serde(default)]
    pub approvals_needed: Option<u32>,
    /// Who asked for a promotion that needs several approvers, so far.
    #[serde(default)]
    pub promote_requested_by: Vec<String>,
    pub spec: RolloutSpec,
    /// A/B/n and bandit: every arm's version, control first (empty for other kinds and
    /// two-arm A/B tests, whose arms are `current` and `candidate`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arms: Vec<String>,
}

/// `GET /rollouts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutList {
    pub rollouts: Vec<RolloutView>,
}

/// `POST /rollouts?dry_run=true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DryRun {
    pub valid: bool,
    pub spec: RolloutSpec,
}

/// One audit event with its place in the hash chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    pub seq: u64,
    pub ts_ms: i64,
    pub kind: String,
    pub actor: String,
    pub message: String,
    pub details: BTreeMap<String, Detail>,
    pub hash: String,
}

impl EventView {
    /// A numeric detail.
    pub fn num(&self, key: &str) -> Option<f64> {
        match self.details.get(key) {
            Some(Detail::Num(x)) => Some(*x),
            _ => None,
        }
    }

    /// A text detail.
    pub fn text(&self, key: &str) -> Option<&str> {
        match self.details.get(key) {
            Some(Detail::Text(s)) => Some(s),
            _ => None,
        }
    }
}

impl From<&switchyard_store::StoredEvent> for EventView {
    fn from(e: &switchyard_store::StoredEvent) -> Self {
        EventView {
            seq: e.seq,
            ts_ms: e.event.ts_ms,
            kind: e.event.kind.clone(),
            actor: e.event.actor.clone(),
            message: e.event.message.clone(),
            details: e.event.details.iter().cloned().collect(),
            hash: e.hash.clone(),
        }
    }
}

/// `GET /rollouts/{name}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutEvents {
    pub rollout: String,
    pub events: Vec<EventView>,
}

/// `GET /audit/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainCheck {
    /// Events read.
    pub events: u64,
    pub ok: bool,
    /// Where the chain first breaks.
    pub first_bad_seq: Option<u64>,
    pub problem: Option<String>,
}

impl From<switchyard_store::ChainReport> for ChainCheck {
    fn from(r: switchyard_store::ChainReport) -> Self {
        ChainCheck {
            events: r.events,
            ok: r.ok,
            first_bad_seq: r.first_bad_seq,
            problem: r.problem,
        }
    }
}

/// A snapshot of a rollout's statistics (for charts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    pub ts_ms: i64,
    pub phase: Phase,
    pub step: usize,
    pub candidate_percent: f64,
    pub versions: BTreeMap<String, VersionStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair: Option<PairPoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ab: Option<AbPoint>,
}

/// A shadow pair in a history point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairPoint {
    pub agreement: Option<f64>,
    pub compared: u64,
    pub labelled: u64,
    /// McNemar's b: the primary right, the shadow wrong.
    pub b: u64,
    /// McNemar's c: the primary wrong, the shadow right.
    pub c: u64,
    pub mcnemar_p: f64,
}

/// An A/B test in a history point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbPoint {
    pub control_rate: Option<f64>,
    pub treatment_rate: Option<f64>,
    pub control_trials: u64,
    pub treatment_trials: u64,
    pub p_value: Option<f64>,
    pub prob_b_beats_a: Option<f64>,
    pub srm_p: Option<f64>,
    pub observed_split: BTreeMap<String, u64>,
    /// A/B/n and bandit: every arm, control first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arms: Vec<ArmPoint>,
}

/// One arm of an A/B/n test or bandit in a history point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmPoint {
    pub variant: String,
    pub version: String,
    /// The arm's share of traffic at the time.
    pub weight_percent: f64,
    /// The primary metric's samples and value.
    pub samples: u64,
    pub value: Option<f64>,
    /// Bandit: the probability that the arm is best, at the last re-weighting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_best: Option<f64>,
    pub decision: ArmDecision,
}

/// `GET /rollouts/{name}/history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutHistory {
    pub rollout: String,
    pub points: Vec<HistoryPoint>,
}

// ---------------------------------------------------------------------------------------------
// Reports.

/// `GET /rollouts/{name}/report?format=json`: what a rollout did and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub rollout: RolloutView,
    /// Serving statistics of each version over the whole rollout.
    pub versions: BTreeMap<String, VersionStats>,
    /// What each version of the rollout serves and costs, as this gateway loaded it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub provenance: BTreeMap<String, VersionIdentity>,
    /// The candidate's latency and cost against the current version's, beside the accuracy
    /// difference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostComparison>,
    pub analysis: Analysis,
    pub events: Vec<EventView>,
}

/// What a version serves (its artefact, with the configured git SHA and registry reference)
/// and what 1,000 of its predictions cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionIdentity {
    /// `{"kind": "sha256", "id": "<64 hex digits>"}`, `{"kind": "backend_version", "id":
    /// "7"}`, or `{"kind": "unknown"}` (a backend that reported no version at start).
    pub artefact: Artefact,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_sha: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// The configured cost of 1,000 predictions (the operator's unit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_1k: Option<f64>,
}

/// The seed's question "is 3% accuracy worth 3× latency?" in numbers: the candidate against
/// the current version over the rollout. Ratios are candidate ÷ current, differences
/// candidate − current; each is absent when a side lacks the number (or a ratio's divisor is
/// zero). The accuracy difference is the observed one; the analysis holds its test.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CostComparison {
    pub current: String,
    pub candidate: String,
    pub p50_ratio: Option<f64>,
    pub p95_ratio: Option<f64>,
    pub current_cost_per_1k: Option<f64>,
    pub candidate_cost_per_1k: Option<f64>,
    pub cost_ratio: Option<f64>,
    pub cost_difference_per_1k: Option<f64>,
    pub accuracy_difference: Option<f64>,
    pub mae_difference: Option<f64>,
}

impl CostComparison {
    /// `candidate` against `current`, from their statistics and configured costs.
    pub fn of(
        (current, current_stats, current_cost): (&str, &VersionStats, Option<f64>),
        (candidate, candidate_stats, candidate_cost): (&str, &VersionStats, Option<f64>),
    ) -> CostComparison {
        let ratio = |new: Option<f64>, old: Option<f64>| match (new, old) {
            (Some(n), Some(o)) if o > 0.0 => Some(n / o),
            _ => None,
        };
        let difference = |new: Option<f64>, old: Option<f64>| Some(new? - old?);
        CostComparison {
            current: current.to_string(),
            candidate: candidate.to_string(),
            p50_ratio: ratio(candidate_stats.p50_ms, current_stats.p50_ms),
            p95_ratio: ratio(candidate_stats.p95_ms, current_stats.p95_ms),
            current_cost_per_1k: current_cost,
            candidate_cost_per_1k: candidate_cost,
            cost_ratio: ratio(candidate_cost, current_cost),
            cost_difference_per_1k: difference(candidate_cost, current_cost),
            accuracy_difference: difference(candidate_stats.accuracy, current_stats.accuracy),
            mae_difference: difference(candidate_stats.mae, current_stats.mae),
        }
    }
}

/// The analysis of the rollout's kind: exactly one part is present.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowAnalysis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ab: Option<AbAnalysis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryAnalysis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenAnalysis>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowAnalysis {
    pub report: ShadowReport,
    /// The candidate's own statistics as a shadow.
    pub shadow_stats: VersionStats,
    pub primary_stats: VersionStats,
    /// Up to 20 requests where the two disagreed (different classes, or values outside the
    /// agreement tolerance), newest first, among the last 500 whose answers differ.
    pub disagreements: Vec<Disagreement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disagreement {
    pub request_id: String,
    /// The request body as logged, when inputs are logged.
    pub input: Option<serde_json::Value>,
    pub primary: Vec<serde_json::Value>,
    pub shadow: Vec<serde_json::Value>,
    pub truth: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbAnalysis {
    /// The two-arm analysis (a spec without variants, guardrails, a continuous metric or a
    /// bandit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<AbReport>,
    /// The k-arm analysis (A/B/n, guardrails, a continuous metric, a bandit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abn: Option<AbnView>,
    /// Requests per arm (`a`, `b`, `c`, …) over the whole test.
    pub observed_split: BTreeMap<String, u64>,
    /// The treatment (arm `b`) against the control per value of each segment field the model
    /// declares.
    #[serde(default)]
    pub segments: Vec<SegmentBreakdown>,
}

/// The k-arm analysis of an A/B/n test or a bandit: each variant against the control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbnView {
    /// The primary metric as written (`accuracy`, `mean:revenue`, …).
    pub metric: String,
    /// The test of each variant against the control: `z_test`, `welch` or `mann_whitney`.
    #[serde(default)]
    pub test: PrimaryTest,
    pub lower_is_better: bool,
    pub correction: Correction,
    pub alpha: f64,
    pub sequential: bool,
    pub bandit: bool,
    pub required_per_arm: Option<u64>,
    /// Control first.
    pub arms: Vec<ArmView>,
    /// Sample-ratio check over every arm with traffic, on the requests since the weights last
    /// changed.
    pub srm: Option<switchyard_stats::chi2::SampleRatioMismatch>,
    pub outcome: AbnOutcome,
    /// Bandit: every re-weighting recorded in the audit trail, oldest first.
    #[serde(default)]
    pub reweightings: Vec<Reweighting>,
}

/// One arm of the k-arm analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmView {
    /// `a` (the control), `b`, `c`, …
    pub variant: String,
    pub version: String,
    /// The arm's current share of traffic.
    pub weight_percent: f64,
    /// Samples of the primary metric (labelled predictions, feedback values or requests).
    pub samples: u64,
    /// The primary metric: a rate or a mean.
    pub value: Option<f64>,
    /// Proportions: the successes among `samples`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successes: Option<u64>,
    /// Means: the standard deviation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std_dev: Option<f64>,
    /// `variant − control` with its fixed-horizon interval (Wald or Welch; with Mann-Whitney
    /// the difference of the means, without an interval).
    pub diff: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// z, Welch's t or Mann-Whitney's U.
    pub statistic: Option<f64>,
    pub p_value: Option<f64>,
    /// After Holm or Bonferroni over the variants still running: of `p_value`, or of
    /// `sequential_p_value` when the test is sequential.
    pub adjusted_p_value: Option<f64>,
    /// `sequential: true`: the always-valid p-value and confidence sequence, valid whenever
    /// read.
    pub sequential_p_value: Option<f64>,
    pub cs_low: Option<f64>,
    pub cs_high: Option<f64>,
    /// Mann-Whitney: P(variant > control) + ½ P(tie) (the common-language effect size, 0.5 is
    /// no shift), estimated on the ranked values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_language: Option<f64>,
    /// Mann-Whitney: the values ranked, the variant's and the control's (every value while an
    /// arm has at most `METRIC_SAMPLE_SIZE`, else that many in a uniform sample).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranked: Option<(u64, u64)>,
    pub guardrails: Vec<GuardrailCheck>,
    pub decision: ArmDecision,
    /// Why a guardrail stopped the arm.
    pub stopped: Option<String>,
    /// Bandit: the probability that the arm is best, at the last re-weighting.
    pub p_best: Option<f64>,
}

fn finite(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite())
}

impl ArmView {
    pub fn of(r: &ArmResult, p_best: Option<f64>) -> Self {
        let (successes, std_dev) = match &r.metric {
            MetricValue::Proportion(p) => (Some(p.successes), None),
            MetricValue::Mean(m) => (None, m.std_dev()),
            MetricValue::P95 { .. } => (None, None),
        };
        ArmView {
            variant: r.variant.clone(),
            version: r.version.clone(),
            weight_percent: f64::from(r.weight) / 100.0,
            samples: r.metric.samples(),
            value: finite(r.metric.value()),
            successes,
            std_dev: finite(std_dev),
            diff: finite(r.diff),
            ci_low: finite(r.ci_low),
            ci_high: finite(r.ci_high),
            statistic: finite(r.statistic),
            p_value: finite(r.p_value),
            adjusted_p_value: finite(r.adjusted_p_value),
            sequential_p_value: finite(r.sequential_p_value),
            cs_low: finite(r.cs_low),
            cs_high: finite(r.cs_high),
            common_language: finite(r.mann_whitney.map(|m| m.common_language)),
            ranked: r.mann_whitney.map(|m| (m.n_a, m.n_b)),
            guardrails: r.guardrails.clone(),
            decision: r.decision,
            stopped: r.stopped.clone(),
            p_best: finite(p_best),
        }
    }
}

impl AbnView {
    /// The view of a core report; `reweightings` from the audit trail.
    pub fn of(
        r: &AbnReport,
        sequential: bool,
        bandit: bool,
        reweightings: Vec<Reweighting>,
    ) -> Self {
        AbnView {
            metric: r.metric.name(),
            test: r.test,
            lower_is_better: r.lower_is_better,
            correction: r.correction,
            alpha: r.alpha,
            sequential,
            bandit,
            required_per_arm: r.required_per_arm,
            arms: r
                .arms
                .iter()
                .enumerate()
                .map(|(i, a)| ArmView::of(a, r.p_best.as_ref().and_then(|p| p.get(i).copied())))
                .collect(),
            srm: r.srm.clone(),
            outcome: r.outcome.clone(),
            reweightings,
        }
    }
}

/// One re-weighting of a bandit (or the move of stopped arms' traffic to the control), from
/// its `reweighted` audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reweighting {
    pub seq: u64,
    pub ts_ms: i64,
    /// Per arm (`a`, `b`, …): the weight set, percent.
    pub weight_percent: BTreeMap<String, f64>,
    /// Per arm: the probability of being best (bandit re-weightings only).
    pub p_best: BTreeMap<String, f64>,
    /// The fraction of keys that changed arm.
    pub moved_fraction: Option<f64>,
}

impl Reweighting {
    /// The re-weighting an event records, if it is one.
    pub fn of(e: &EventView) -> Option<Self> {
        if e.kind != "reweighted" {
            return None;
        }
        let per_arm = |suffix: &str| -> BTreeMap<String, f64> {
            e.details
                .iter()
                .filter_map(|(k, v)| match v {
                    Detail::Num(x) => k.strip_suffix(suffix).map(|arm| (arm.to_string(), *x)),
                    _ => None,
                })
                .collect()
        };
        Some(Reweighting {
            seq: e.seq,
            ts_ms: e.ts_ms,
            weight_percent: per_arm("_weight_percent"),
            p_best: per_arm("_p_best"),
            moved_fraction: e.num("moved_fraction"),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryAnalysis {
    pub steps: Vec<StepView>,
    pub gate: GatePolicy,
    /// Counted from 1.
    pub current_step: usize,
    pub candidate_this_step: Option<VersionStats>,
    /// PSI and Jensen–Shannon of the candidate's predictions from the stable's, both over the
    /// rollout so far. Each gate's own (this step's predictions against the stable's, what
    /// `gate.max_psi` judges) is in its event's details (`psi`, `js_distance`).
    #[serde(default)]
    pub drift: Option<PredictionDrift>,
    /// The candidate against the stable per value of each segment field the model declares,
    /// both over the rollout so far (`gate.segment_gate` judges each step's).
    #[serde(default)]
    pub segments: Vec<SegmentBreakdown>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    pub percent: f64,
    pub min_requests: u64,
    pub min_duration_ms: u64,
    pub require_approval: bool,
    /// Distinct approvers the step needs when it requires approval.
    #[serde(default = "one")]
    pub approvals: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlueGreenAnalysis {
    pub active: String,
    pub candidate: String,
    pub switches: Vec<SwitchView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchView {
    /// `switched`, `rolled_back` or `retired`.
    pub kind: String,
    pub ts_ms: i64,
    pub routing_swap_us: Option<f64>,
}

// ---------------------------------------------------------------------------------------------
// Cluster.

/// `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    pub replica: String,
    pub store: String,
    pub is_controller: bool,
    #[serde(default)]
    pub controller: Option<LeaderView>,
    pub routing_epoch: u64,
    pub replicas: Vec<ReplicaView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderView {
    pub replica: String,
    pub admin_url: String,
    pub term: i64,
    pub since_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaView {
    pub replica: String,
    pub updated_ms: i64,
    pub serving_requests: u64,
}

// ---------------------------------------------------------------------------------------------
// Replay.

/// `POST /replay`: judge a candidate on recorded requests, with no live traffic. The shadow
/// rules come from `spec` (a shadow rollout spec, YAML or JSON), or are the defaults for
/// `model`, `primary` and `candidate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<String>,
    pub source: ReplaySource,
    /// Most requests replayed (the gateway's default and ceiling apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
    /// Requests started per second (default: as fast as `concurrency` allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Requests in flight at once (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
}

/// Where a replay's requests come from. Files are read on the gateway's host (paths relative
/// to its configuration's directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReplaySource {
    /// Feature columns and an optional label column (`label_column`, default `label`).
    Csv {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label_column: Option<String>,
    },
    /// One request body per line, with an optional label.
    Jsonl { path: String },
    /// The prediction log: the model's served requests whose inputs were captured, with their
    /// feedback labels.
    Log {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_ms: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until_ms: Option<i64>,
    },
}

/// What a replay found: the shadow analysis a live shadow's report holds, over the replayed
/// requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayReport {
    pub model: String,
    pub primary: String,
    pub candidate: String,
    /// Where the requests came from (`file.jsonl`, `file.csv`, `log of <store>`).
    pub source: String,
    /// Requests replayed: each sent to both versions.
    pub requests: u64,
    /// Of those, the ones with a label or value.
    pub labelled_requests: u64,
    /// Log rows left out: their captured body was cut at `log.max_input_bytes` or is not a
    /// request.
    pub skipped: u64,
    pub spec: ShadowSpec,
    /// The primary's calls and the candidate's.
    pub versions: BTreeMap<String, VersionStats>,
    pub analysis: ShadowAnalysis,
    pub elapsed_ms: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_cost_comparison_puts_ratios_and_differences_beside_each_other() {
        let current = VersionStats {
            p50_ms: Some(2.0),
            p95_ms: Some(4.0),
            accuracy: Some(0.90),
            ..VersionStats::default()
        };
        let candidate = VersionStats {
            p50_ms: Some(5.0),
            p95_ms: Some(12.0),
            accuracy: Some(0.93),
            ..VersionStats::default()
        };
        let c = CostComparison::of(("v1", &current, Some(0.10)), ("v2", &candidate, Some(0.40)));
        assert_eq!((c.p50_ratio, c.p95_ratio), (Some(2.5), Some(3.0)));
        assert_eq!(c.cost_ratio, Some(4.0));
        assert!((c.cost_difference_per_1k.unwrap() - 0.30).abs() < 1e-12);
        assert!((c.accuracy_difference.unwrap() - 0.03).abs() < 1e-12);
        assert_eq!(c.mae_difference, None);
        // A side without a cost (or a free current version) has no ratio.
        let c = CostComparison::of(("v1", &current, Some(0.0)), ("v2", &candidate, None));
        assert_eq!((c.cost_ratio, c.cost_difference_per_1k), (None, None));
        let c = CostComparison::of(("v1", &current, Some(0.0)), ("v2", &candidate, Some(1.0)));
        assert_eq!((c.cost_ratio, c.cost_difference_per_1k), (None, Some(1.0)));
    }
}
