//! Experiments beyond two arms and a 0/1 metric: A/B/n (k arms against a control, pairwise
//! tests adjusted by Holm or Bonferroni, a sample-ratio check over every arm, a decision per
//! arm and an overall outcome), continuous primary metrics (Welch's t with its interval, or
//! Mann-Whitney on each arm's bounded sample of values with `test: mann_whitney`),
//! guardrails (a limit in a direction; a breach stops the arm, or the test), and the bandit
//! (Thompson sampling re-weighting the arms every tick).
//!
//! An [`AbSpec`] is run here rather than by the two-arm machine in `ab` when it has more than
//! one variant, guardrails, a metric that is not a proportion, or a bandit ([`is_extended`]);
//! the two-arm written form keeps its behaviour. Arms are named `a` (the control), `b` (the
//! treatment), `c`, `d`, … in the order written; each arm's version is distinct, so the
//! statistics of an arm are its version's.
//!
//! Its split carries the experiment's own salt and, once weights change (an arm stopped, a
//! bandit re-weighting), a layout that moves only the changed mass (`routing`).

use serde::{Deserialize, Serialize};
use switchyard_stats::bandit::{prob_best, thompson_weights, Posterior};
use switchyard_stats::chi2::{sample_ratio_mismatch, SampleRatioMismatch};
use switchyard_stats::mann_whitney::{mann_whitney_u, MannWhitney};
use switchyard_stats::multiple::{bonferroni, holm};
use switchyard_stats::sequential::{MsprtConfig, SequentialMonitor};
use switchyard_stats::{power, proportions, ttest, Moments, Proportion};
use xxhash_rust::xxh3::xxh3_64;

use super::ab::{
    arms_of, metric_of, AbMetric, AbSpec, BanditSettings, Correction, GuardLimit, Guardrail,
    MeanTest,
};
use super::{d, single, Observations, Out, Phase, Recommendation, RolloutState};
use crate::aggregate::{ValueSample, VariantStats};
use crate::audit::{Details, Severity};
use crate::routing::{Strategy, BUCKETS};

/// Per-arm state kept between ticks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmState {
    pub variant: String,
    pub version: String,
    /// Why the arm was stopped (a guardrail), if it was.
    pub stopped: Option<String>,
    /// The arm's sequential test against the control (`sequential: true`).
    pub monitor: Option<SequentialMonitor>,
}

/// The decision for one arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArmDecision {
    Control,
    /// Significantly better than the control after the adjustment.
    Winner,
    /// Significantly worse than the control after the adjustment.
    Loser,
    Inconclusive,
    /// A guardrail stopped it.
    Stopped,
}

/// A value of a metric in one arm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricValue {
    Proportion(Proportion),
    Mean(Moments),
    /// p95 latency in ms over `samples` requests.
    P95 {
        ms: Option<f64>,
        samples: u64,
    },
}

impl MetricValue {
    pub fn value(&self) -> Option<f64> {
        match self {
            MetricValue::Proportion(p) => p.rate(),
            MetricValue::Mean(m) => m.mean(),
            MetricValue::P95 { ms, .. } => *ms,
        }
    }

    pub fn samples(&self) -> u64 {
        match self {
            MetricValue::Proportion(p) => p.trials,
            MetricValue::Mean(m) => m.count(),
            MetricValue::P95 { samples, .. } => *samples,
        }
    }
}

/// The value of `metric` in an arm's statistics.
pub fn metric_value(stats: &VariantStats, metric: &AbMetric) -> MetricValue {
    match metric {
        AbMetric::Accuracy | AbMetric::Conversion(_) => {
            MetricValue::Proportion(metric_of(stats, metric))
        }
        AbMetric::ErrorRate => MetricValue::Proportion(Proportion {
            successes: stats.errors.min(stats.requests),
            trials: stats.requests,
        }),
        AbMetric::Mean(name) => {
            MetricValue::Mean(stats.metrics.get(name).copied().unwrap_or_default())
        }
        AbMetric::AbsError => MetricValue::Mean(stats.abs_error),
        AbMetric::LatencyP95 => MetricValue::P95 {
            ms: stats.latency.p95().map(|us| us as f64 / 1000.0),
            samples: stats.latency.count(),
        },
    }
}

/// The bounded uniform sample of a continuous metric's values in an arm's statistics.
pub fn value_sample<'a>(stats: &'a VariantStats, metric: &AbMetric) -> Option<&'a ValueSample> {
    match metric {
        AbMetric::Mean(name) => stats.metric_samples.get(name),
        AbMetric::AbsError => Some(&stats.abs_error_sample),
        _ => None,
    }
}

/// The test that compares each variant with the control on the primary metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrimaryTest {
    /// Wald z-test of two proportions.
    #[default]
    ZTest,
    /// Welch's t on the means.
    Welch,
    /// Mann-Whitney U on the arms' samples of values.
    MannWhitney,
}

impl PrimaryTest {
    pub fn of(a: &AbSpec) -> Self {
        match (&a.metric, a.test) {
            (AbMetric::Mean(_) | AbMetric::AbsError, MeanTest::Welch) => PrimaryTest::Welch,
            (AbMetric::Mean(_) | AbMetric::AbsError, MeanTest::MannWhitney) => {
                PrimaryTest::MannWhitney
            }
            _ => PrimaryTest::ZTest,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PrimaryTest::ZTest => "z_test",
            PrimaryTest::Welch => "welch",
            PrimaryTest::MannWhitney => "mann_whitney",
        }
    }
}

/// One guardrail checked on one arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardrailCheck {
    pub metric: String,
    pub limit: GuardLimit,
    pub value: Option<f64>,
    pub control_value: Option<f64>,
    pub samples: u64,
    /// Past the limit with enough samples.
    pub breached: bool,
}

/// One arm of the analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmResult {
    pub variant: String,
    pub version: String,
    /// Current weight, basis points.
    pub weight: u32,
    pub metric: MetricValue,
    /// `variant − control` of the primary metric (with Mann-Whitney, of the means).
    pub diff: Option<f64>,
    /// Fixed-horizon `1 − α` interval of `diff` (Wald for proportions, Welch for means; none
    /// with Mann-Whitney, which tests ranks, not means).
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// z (proportions), Welch's t (means) or Mann-Whitney's U (of the variant).
    pub statistic: Option<f64>,
    pub p_value: Option<f64>,
    /// After Holm or Bonferroni over the variants still running.
    pub adjusted_p_value: Option<f64>,
    /// Always-valid p-value and confidence sequence (`sequential: true`): valid at the moment
    /// they are read, however often the test was looked at.
    pub sequential_p_value: Option<f64>,
    pub cs_low: Option<f64>,
    pub cs_high: Option<f64>,
    /// `test: mann_whitney`: the test of the variant's sample of values (`a`, `n_a`) against
    /// the control's (`b`, `n_b`): U, z, the p-value and the common-language effect size
    /// P(variant > control) + ½ P(tie), the decision's direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mann_whitney: Option<MannWhitney>,
    pub guardrails: Vec<GuardrailCheck>,
    pub decision: ArmDecision,
    pub stopped: Option<String>,
}

impl ArmResult {
    /// How much better than the control the arm looks, signed so that positive is better: the
    /// common-language effect size's excess over ½ under Mann-Whitney, else the difference.
    fn gain(&self, lower_is_better: bool) -> Option<f64> {
        let up = match &self.mann_whitney {
            Some(m) => m.common_language - 0.5,
            None => self.diff?,
        };
        Some(if lower_is_better { -up } else { up })
    }
}

/// Overall outcome of an A/B/n test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "version")]
pub enum AbnOutcome {
    /// The best of the winning variants.
    Winner(String),
    /// Every variant is worse or stopped.
    ControlWins,
    NoDifference,
}

/// The A/B/n analysis at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbnReport {
    pub metric: AbMetric,
    /// The test of each variant against the control.
    #[serde(default)]
    pub test: PrimaryTest,
    pub lower_is_better: bool,
    pub correction: Correction,
    pub alpha: f64,
    pub required_per_arm: Option<u64>,
    /// Control first.
    pub arms: Vec<ArmResult>,
    /// Over the arms that receive traffic, on the requests since the weights last changed.
    pub srm: Option<SampleRatioMismatch>,
    pub outcome: AbnOutcome,
    /// Bandit: the probability that each arm (in `arms` order) is best, at the last look.
    pub p_best: Option<Vec<f64>>,
}

// ---------------------------------------------------------------------------------------------

/// Whether the spec runs on the k-arm machine (and is reported by [`abn_report`]) rather than
/// the two-arm one.
pub fn is_extended(a: &AbSpec) -> bool {
    !a.variants.is_empty()
        || !a.guardrails.is_empty()
        || a.bandit.is_some()
        || !matches!(a.metric, AbMetric::Accuracy | AbMetric::Conversion(_))
}

/// The salt of an experiment: its name and start time, so that experiments run one after
/// another on the same model assign keys independently.
pub fn experiment_salt(name: &str, started_ms: i64) -> String {
    format!("{name}@{started_ms}")
}

pub(crate) fn initial_arm_states(a: &AbSpec) -> Vec<ArmState> {
    arms_of(a)
        .into_iter()
        .map(|arm| ArmState {
            variant: arm.variant,
            version: arm.version,
            stopped: None,
            monitor: a.sequential.then(SequentialMonitor::default),
        })
        .collect()
}

/// The metric's direction: `true` when smaller is better.
pub fn lower_is_better(a: &AbSpec) -> bool {
    a.lower_is_better.unwrap_or(matches!(
        a.metric,
        AbMetric::ErrorRate | AbMetric::AbsError | AbMetric::LatencyP95
    ))
}

fn weights_of(strategy: &Strategy, arms: usize) -> Vec<u32> {
    match strategy {
        Strategy::Split { arms: a, .. } if a.len() == arms => a.iter().map(|x| x.weight).collect(),
        _ => vec![0; arms],
    }
}

fn check_guardrail(g: &Guardrail, arm: &VariantStats, control: &VariantStats) -> GuardrailCheck {
    let v = metric_value(arm, &g.metric);
    let c = metric_value(control, &g.metric);
    let (value, control_value, samples) = (v.value(), c.value(), v.samples());
    let enough = samples >= g.min_samples;
    let breached = match (g.limit, value) {
        (_, None) => false,
        (GuardLimit::Max(limit), Some(x)) => enough && x > limit,
        (GuardLimit::Min(limit), Some(x)) => enough && x < limit,
        (GuardLimit::MaxIncrease(f), Some(x)) => {
            enough
                && c.samples() >= g.min_samples
                && control_value.is_some_and(|cv| x > cv + f * cv.abs())
        }
        (GuardLimit::MaxDecrease(f), Some(x)) => {
            enough
                && c.samples() >= g.min_samples
                && control_value.is_some_and(|cv| x < cv - f * cv.abs())
        }
    };
    GuardrailCheck {
        metric: g.metric.name(),
        limit: g.limit,
        value,
        control_value,
        samples,
        breached,
    }
}

fn limit_text(l: GuardLimit) -> String {
    match l {
        GuardLimit::Max(x) => format!("max {x}"),
        GuardLimit::Min(x) => format!("min {x}"),
        GuardLimit::MaxIncrease(f) => format!("max increase {:.1}%", f * 100.0),
        GuardLimit::MaxDecrease(f) => format!("max decrease {:.1}%", f * 100.0),
    }
}

/// The pairwise test of one variant against the control on the primary metric:
/// `(diff, ci_low, ci_high, statistic, p)`.
fn pairwise(
    control: &MetricValue,
    arm: &MetricValue,
    alpha: f64,
) -> Option<(f64, f64, f64, f64, f64)> {
    match (control, arm) {
        (MetricValue::Proportion(c), MetricValue::Proportion(v)) => {
            if c.trials == 0 || v.trials == 0 {
                return None;
            }
            let t = proportions::two_proportion_ztest(*c, *v, alpha).ok()?;
            Some((t.diff, t.ci_low, t.ci_high, t.z, t.p_value))
        }
        (MetricValue::Mean(c), MetricValue::Mean(v)) => {
            let t = ttest::welch_from_moments(v, c).ok()?;
            let (lo, hi) = t.confidence_interval(alpha).ok()?;
            Some((t.mean_diff, lo, hi, t.t, t.p_value))
        }
        _ => None,
    }
}

/// The sample size per arm: `min_per_arm` if written, else for a proportion the two-proportion
/// power calculation at `α / (k − 1)` (Bonferroni over the variants, conservative for Holm).
pub fn required_per_arm(a: &AbSpec) -> Option<u64> {
    if let Some(n) = a.min_per_arm {
        return Some(n);
    }
    if !matches!(
        a.metric,
        AbMetric::Accuracy | AbMetric::Conversion(_) | AbMetric::ErrorRate
    ) {
        return None;
    }
    let m = (1 + a.variants.len()) as f64;
    power::sample_size_two_proportions(a.baseline, a.mde, a.alpha / m, a.power)
        .ok()
        .map(|s| s.per_variant)
}

fn msprt_config(a: &AbSpec, variants: usize) -> MsprtConfig {
    let base = MsprtConfig::default();
    MsprtConfig {
        // Bonferroni over the always-valid p-values of the variants.
        alpha: a.alpha / variants.max(1) as f64,
        tau: match metric_value(&VariantStats::default(), &a.metric) {
            MetricValue::Mean(_) if a.mde > 0.0 => a.mde,
            _ => base.tau,
        },
        min_trials: base.min_trials,
    }
}

/// The A/B/n analysis of the observations, under the arms' state (stopped arms, monitors)
/// and the strategy in force.
pub fn abn_report(a: &AbSpec, state: &RolloutState, obs: &Observations) -> AbnReport {
    let arms = arms_of(a);
    let arm_states = if state.arms.len() == arms.len() {
        state.arms.clone()
    } else {
        initial_arm_states(a)
    };
    let weights = weights_of(&state.strategy, arms.len());
    let lower = lower_is_better(a);
    let control_stats = obs.total_of(&a.control);
    let control_metric = metric_value(&control_stats, &a.metric);
    let primary_test = PrimaryTest::of(a);
    let control_sample = value_sample(&control_stats, &a.metric).map(ValueSample::values);
    let mut results: Vec<ArmResult> = arms
        .iter()
        .zip(&arm_states)
        .zip(&weights)
        .enumerate()
        .map(|(i, ((arm, st), &weight))| {
            let stats = obs.total_of(&arm.version);
            let metric = metric_value(&stats, &a.metric);
            let ranks = (i > 0 && primary_test == PrimaryTest::MannWhitney)
                .then(|| {
                    let arm = value_sample(&stats, &a.metric)?.values();
                    mann_whitney_u(&arm, control_sample.as_deref()?).ok()
                })
                .flatten();
            let test = if primary_test == PrimaryTest::MannWhitney {
                // The difference of the means (every value's) beside the test of the ranks.
                ranks.map(|m| {
                    let diff = match (metric.value(), control_metric.value()) {
                        (Some(v), Some(c)) => v - c,
                        _ => f64::NAN,
                    };
                    (diff, f64::NAN, f64::NAN, m.u, m.p_value)
                })
            } else {
                (i > 0)
                    .then(|| pairwise(&control_metric, &metric, a.alpha))
                    .flatten()
            };
            let finite = |x: f64| x.is_finite().then_some(x);
            let guardrails = if i == 0 {
                Vec::new()
            } else {
                a.guardrails
                    .iter()
                    .map(|g| check_guardrail(g, &stats, &control_stats))
                    .collect()
            };
            ArmResult {
                variant: arm.variant.clone(),
                version: arm.version.clone(),
                weight,
                metric,
                diff: test.and_then(|t| finite(t.0)),
                ci_low: test.and_then(|t| finite(t.1)),
                ci_high: test.and_then(|t| finite(t.2)),
                statistic: test.map(|t| t.3),
                p_value: test.map(|t| t.4),
                adjusted_p_value: None,
                sequential_p_value: st.monitor.filter(|m| m.looks > 0).map(|m| m.p_value),
                cs_low: st.monitor.and_then(|m| m.ci_low),
                cs_high: st.monitor.and_then(|m| m.ci_high),
                mann_whitney: ranks,
                guardrails,
                decision: if i == 0 {
                    ArmDecision::Control
                } else if st.stopped.is_some() {
                    ArmDecision::Stopped
                } else {
                    ArmDecision::Inconclusive
                },
                stopped: st.stopped.clone(),
            }
        })
        .collect();
    // Adjust the p-values of the variants still running.
    let running: Vec<usize> = (1..results.len())
        .filter(|&i| results[i].decision == ArmDecision::Inconclusive)
        .collect();
    let ps: Vec<f64> = running
        .iter()
        .map(|&i| {
            if a.sequential {
                results[i].sequential_p_value.unwrap_or(1.0)
            } else {
                results[i].p_value.unwrap_or(1.0)
            }
        })
        .collect();
    let adjusted = match a.correction {
        Correction::Holm => holm(&ps),
        Correction::Bonferroni => bonferroni(&ps),
    }
    .unwrap_or_else(|_| vec![1.0; ps.len()]);
    for (&i, q) in running.iter().zip(adjusted) {
        let r = &mut results[i];
        r.adjusted_p_value = Some(q);
        if let Some(gain) = r.gain(lower) {
            let better = gain > 0.0;
            // Sequential p-values are already adjusted by Bonferroni in the monitors' α.
            let threshold = if a.sequential { 1.0 } else { a.alpha };
            let significant = if a.sequential {
                state
                    .arms
                    .get(i)
                    .and_then(|s| s.monitor)
                    .is_some_and(|m| m.rejected)
            } else {
                q < threshold
            };
            if significant {
                r.decision = if better {
                    ArmDecision::Winner
                } else {
                    ArmDecision::Loser
                };
            }
        }
    }
    let outcome = outcome_of(&results, lower);
    // SRM over the arms with traffic, on the requests since the strategy last changed.
    let live: Vec<(u64, f64)> = arms
        .iter()
        .zip(&weights)
        .filter(|(_, &w)| w > 0)
        .map(|(arm, &w)| (obs.step_of(&arm.version).requests, f64::from(w)))
        .collect();
    let observed: Vec<u64> = live.iter().map(|x| x.0).collect();
    let expected: Vec<f64> = live.iter().map(|x| x.1 / f64::from(BUCKETS)).collect();
    let srm = (live.len() >= 2 && observed.iter().sum::<u64>() > 0)
        .then(|| sample_ratio_mismatch(&observed, &expected, a.srm_threshold).ok())
        .flatten();
    AbnReport {
        metric: a.metric.clone(),
        test: primary_test,
        lower_is_better: lower,
        correction: a.correction,
        alpha: a.alpha,
        required_per_arm: required_per_arm(a),
        arms: results,
        srm,
        outcome,
        p_best: state.p_best.clone(),
    }
}

fn outcome_of(results: &[ArmResult], lower: bool) -> AbnOutcome {
    let gain = |r: &ArmResult| r.gain(lower).unwrap_or(0.0);
    if let Some(best) = results
        .iter()
        .filter(|r| r.decision == ArmDecision::Winner)
        .max_by(|x, y| gain(x).total_cmp(&gain(y)))
    {
        return AbnOutcome::Winner(best.version.clone());
    }
    let variants = &results[1.min(results.len())..];
    if !variants.is_empty()
        && variants
            .iter()
            .all(|r| matches!(r.decision, ArmDecision::Loser | ArmDecision::Stopped))
    {
        AbnOutcome::ControlWins
    } else {
        AbnOutcome::NoDifference
    }
}

fn guardrail_details(arm: &ArmResult, check: &GuardrailCheck) -> Details {
    vec![
        d("variant", arm.variant.as_str()),
        d("version", arm.version.as_str()),
        d("metric", check.metric.as_str()),
        d("limit", limit_text(check.limit)),
        d("value", check.value.unwrap_or(f64::NAN)),
        d("control_value", check.control_value.unwrap_or(f64::NAN)),
        d("samples", check.samples),
    ]
}

/// Stops the arms whose guardrails are breached (their weight goes to the control, only their
/// buckets move); returns whether any arm was stopped.
fn apply_guardrails(state: &mut RolloutState, report: &AbnReport, out: &mut Out<'_>) -> bool {
    let mut weights = weights_of(&state.strategy, report.arms.len());
    let mut stopped_any = false;
    for (i, arm) in report.arms.iter().enumerate().skip(1) {
        if arm.stopped.is_some() {
            continue;
        }
        let Some(check) = arm.guardrails.iter().find(|c| c.breached) else {
            continue;
        };
        let reason = format!(
            "guardrail {} breached: {} against a limit of {} ({} samples)",
            check.metric,
            check.value.map_or("n/a".into(), |v| format!("{v:.4}")),
            limit_text(check.limit),
            check.samples
        );
        if let Some(st) = state.arms.get_mut(i) {
            st.stopped = Some(reason.clone());
        }
        weights[0] += weights[i];
        weights[i] = 0;
        stopped_any = true;
        let details = guardrail_details(arm, check);
        out.event(
            "arm_stopped",
            format!("arm {} ({}) stopped: {reason}", arm.variant, arm.version),
            details.clone(),
        );
        out.alert(
            Severity::P1,
            "guardrail",
            format!(
                "{}: arm {} ({}) stopped, {reason}; investigate",
                out.spec.name, arm.variant, arm.version
            ),
            details,
        );
    }
    if stopped_any {
        if let Some(next) = state.strategy.reweighted(&weights) {
            let moved = state.strategy.moved_buckets(&next);
            out.set(state, next);
            out.event(
                "reweighted",
                "stopped arms' traffic moved to the control",
                vec![
                    d("weights", weights_text(&weights)),
                    d("moved_fraction", f64::from(moved) / f64::from(BUCKETS)),
                ],
            );
        }
    }
    stopped_any
}

fn weights_text(weights: &[u32]) -> String {
    weights
        .iter()
        .map(|w| format!("{:.2}%", f64::from(*w) / 100.0))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Ends the test with everything on `keep`.
fn finish(
    a: &AbSpec,
    state: &mut RolloutState,
    out: &mut Out<'_>,
    keep: &str,
    verdict: String,
    details: Details,
) {
    state.reason = Some(verdict.clone());
    out.event(
        "ab_concluded",
        format!("A/B/n concluded: {verdict}"),
        details.clone(),
    );
    super::promote_or_await(a.auto_promote, state, out, keep, &verdict, details);
}

fn conclusion_details(report: &AbnReport) -> Details {
    let mut details = vec![
        d("metric", report.metric.name()),
        d("test", report.test.name()),
        d(
            "correction",
            format!("{:?}", report.correction).to_lowercase(),
        ),
        d("alpha", report.alpha),
    ];
    for r in &report.arms {
        let v = &r.variant;
        details.push(d(&format!("{v}_version"), r.version.as_str()));
        details.push(d(&format!("{v}_samples"), r.metric.samples()));
        if let Some(x) = r.metric.value() {
            details.push(d(&format!("{v}_value"), x));
        }
        if r.decision == ArmDecision::Control {
            continue;
        }
        details.push(d(
            &format!("{v}_decision"),
            format!("{:?}", r.decision).to_lowercase(),
        ));
        for (name, x) in [
            ("diff", r.diff),
            ("ci_low", r.ci_low),
            ("ci_high", r.ci_high),
            ("p_value", r.p_value),
            ("adjusted_p_value", r.adjusted_p_value),
            ("sequential_p_value", r.sequential_p_value),
            ("cs_low", r.cs_low),
            ("cs_high", r.cs_high),
        ] {
            if let Some(x) = x {
                details.push(d(&format!("{v}_{name}"), x));
            }
        }
        if let Some(m) = &r.mann_whitney {
            details.push(d(&format!("{v}_u"), m.u));
            details.push(d(&format!("{v}_common_language"), m.common_language));
            details.push(d(&format!("{v}_ranked_values"), m.n_a));
            details.push(d(&format!("{v}_control_ranked_values"), m.n_b));
        }
    }
    details
}

/// What every tick of an A/B/n test or a bandit does first: the guardrails (a breach stops
/// the arm), the end of the test when every variant is stopped, the sample-ratio check over
/// the arms and the sequential looks. Returns the running variants' indices when the tick may
/// go on to a conclusion (`conclude`) or a re-weighting (`bandit`).
pub(super) fn tick_common(
    a: &AbSpec,
    state: &mut RolloutState,
    obs: &Observations,
    out: &mut Out<'_>,
) -> Option<Vec<usize>> {
    if state.phase != Phase::Running {
        return None;
    }
    if state.arms.len() != arms_of(a).len() {
        state.arms = initial_arm_states(a);
    }
    // 1. Guardrails first: a breach stops the arm whatever else the data say.
    let report = abn_report(a, state, obs);
    let stopped = apply_guardrails(state, &report, out);
    let active: Vec<usize> = (1..state.arms.len())
        .filter(|&i| state.arms[i].stopped.is_none())
        .collect();
    if active.is_empty() {
        let reason = "every variant was stopped by a guardrail".to_string();
        out.set(state, single(&a.control));
        state.phase = Phase::RolledBack;
        state.recommendation = Some(Recommendation::Reject);
        state.reason = Some(reason.clone());
        out.event("rolled_back", format!("rolled back: {reason}"), vec![]);
        out.alert(
            Severity::P1,
            "rollback",
            format!(
                "{} on {} rolled back: {reason}",
                out.spec.name, out.spec.model
            ),
            vec![],
        );
        return None;
    }
    if stopped {
        // The weights just changed: the next look counts from the new split.
        return None;
    }
    // 2. The sample-ratio check over every arm with traffic.
    let report = abn_report(a, state, obs);
    let step_requests: u64 = report
        .arms
        .iter()
        .filter(|r| r.weight > 0)
        .map(|r| obs.step_of(&r.version).requests)
        .sum();
    if let Some(srm) = report
        .srm
        .as_ref()
        .filter(|s| s.mismatch && step_requests >= 100)
    {
        let arms = report.arms.iter().filter(|r| r.weight > 0).count() as u64;
        super::ab::hold_on_srm(
            state,
            out,
            srm,
            vec![d("arms", arms)],
            "sample-ratio mismatch over the arms: the observed split differs from the weights",
        );
        return None;
    }
    // 3. Sequential looks, one per running variant against the control.
    if a.sequential {
        let config = msprt_config(a, active.len());
        let control = metric_value(&obs.total_of(&a.control), &a.metric);
        for &i in &active {
            let arm = metric_value(&obs.total_of(&state.arms[i].version), &a.metric);
            let Some(monitor) = state.arms[i].monitor.as_mut() else {
                continue;
            };
            let _ = match (&control, &arm) {
                (MetricValue::Proportion(c), MetricValue::Proportion(v)) => {
                    monitor.observe(*c, *v, &config)
                }
                (MetricValue::Mean(c), MetricValue::Mean(v)) => {
                    monitor.observe_means(c, v, &config)
                }
                _ => Ok(None),
            };
        }
    }
    Some(active)
}

/// Concludes an A/B/n test once every running arm has its sample size, or every sequential
/// test has rejected.
pub(super) fn conclude(
    a: &AbSpec,
    state: &mut RolloutState,
    obs: &Observations,
    out: &mut Out<'_>,
    active: &[usize],
) {
    // 4. Conclude once every running arm has its sample size, or every sequential test has
    //    rejected.
    let report = abn_report(a, state, obs);
    let required = report.required_per_arm.unwrap_or(u64::MAX);
    let samples = |i: usize| report.arms[i].metric.samples();
    let enough = std::iter::once(0)
        .chain(active.iter().copied())
        .all(|i| samples(i) >= required);
    let early = a.sequential
        && active
            .iter()
            .all(|&i| state.arms[i].monitor.is_some_and(|m| m.rejected));
    if !(enough || early) {
        state.reason = Some(format!(
            "{} of {required} per arm in the smallest running arm",
            std::iter::once(0)
                .chain(active.iter().copied())
                .map(samples)
                .min()
                .unwrap_or(0)
        ));
        return;
    }
    let details = conclusion_details(&report);
    let (keep, verdict, recommendation) = match &report.outcome {
        AbnOutcome::Winner(v) => (v.clone(), format!("{v} wins"), Recommendation::Promote),
        AbnOutcome::ControlWins => (
            a.control.clone(),
            format!("{} wins: every variant is worse or stopped", a.control),
            Recommendation::Reject,
        ),
        AbnOutcome::NoDifference => (
            a.control.clone(),
            "no significant difference".to_string(),
            Recommendation::Neutral,
        ),
    };
    state.recommendation = Some(recommendation);
    state.winner = Some(keep.clone());
    finish(a, state, out, &keep, verdict, details);
}

/// Posteriors of the primary metric for the arms at `indices` (Beta for proportions, Normal
/// for means; an arm with fewer than two values borrows the pooled spread of all the arms).
pub(crate) fn posteriors(a: &AbSpec, obs: &Observations, versions: &[&str]) -> Vec<Posterior> {
    let values: Vec<MetricValue> = versions
        .iter()
        .map(|v| metric_value(&obs.total_of(v), &a.metric))
        .collect();
    let mut pooled = Moments::new();
    for v in &values {
        if let MetricValue::Mean(m) = v {
            pooled.merge(m);
        }
    }
    values
        .iter()
        .map(|v| match v {
            MetricValue::Proportion(p) => Posterior::of_proportion(*p),
            MetricValue::Mean(m) => Posterior::of_mean(m).unwrap_or(Posterior::Normal {
                mean: pooled.mean().unwrap_or(0.0),
                sd: pooled.std_dev().unwrap_or(1.0).max(1e-9),
            }),
            MetricValue::P95 { .. } => Posterior::Beta {
                alpha: 1.0,
                beta: 1.0,
            },
        })
        .collect()
}

/// A seed for the Monte Carlo of one re-weighting, recorded in its event.
pub(crate) fn seed_of(name: &str, now: i64) -> u64 {
    xxh3_64(format!("{name}@{now}").as_bytes())
}

pub(crate) fn bandit_step(
    a: &AbSpec,
    settings: &BanditSettings,
    obs: &Observations,
    state: &RolloutState,
    active: &[usize],
    seed: u64,
) -> Option<(Vec<f64>, Vec<u32>)> {
    let versions: Vec<&str> = std::iter::once(0)
        .chain(active.iter().copied())
        .map(|i| state.arms[i].version.as_str())
        .collect();
    let p = prob_best(
        &posteriors(a, obs, &versions),
        settings.draws,
        seed,
        !lower_is_better(a),
    )
    .ok()?;
    let all = weights_of(&state.strategy, state.arms.len());
    let idx: Vec<usize> = std::iter::once(0).chain(active.iter().copied()).collect();
    let current: Vec<u32> = idx.iter().map(|&i| all[i]).collect();
    let next = thompson_weights(&p, &current, settings.min_share, settings.max_step).ok()?;
    let mut weights = vec![0; state.arms.len()];
    let mut p_all = vec![0.0; state.arms.len()];
    for ((&i, w), pb) in idx.iter().zip(next).zip(p) {
        weights[i] = w;
        p_all[i] = pb;
    }
    Some((p_all, weights))
}
