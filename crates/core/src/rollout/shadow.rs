//! The shadow: the candidate sees a sample of live traffic mirrored, its answers are compared
//! with the primary's and never served; the comparison ends in a recommendation (the seed
//! notebook's rules, [`ShadowRules`]), and on PROMOTE it may chain a canary.
//!
//! Classification pairs are judged on accuracy (McNemar's test on the discordant labelled
//! pairs) and agreement; regression pairs on the paired errors of the labelled instances (MAE,
//! RMSE, MAPE, a paired t-test or Wilcoxon's signed-rank test on `|e_primary| − |e_shadow|`)
//! and agreement within the spec's tolerance. Both kinds also report the drift of the
//! candidate's prediction distribution from the primary's (PSI, Jensen–Shannon), which an
//! optional rule (`max_psi`) turns into INVESTIGATE; classifiers their transitions (primary's ×
//! candidate's class) and the seed's chi-square test of the two prediction distributions. Its
//! spec ([`ShadowSpec`], written as [`RawShadow`]), report ([`shadow_report`]) and state machine
//! live here.

use serde::{Deserialize, Serialize};
use switchyard_stats::chi2::ChiSquare;
use switchyard_stats::wilcoxon::{wilcoxon, Wilcoxon, WilcoxonMethod};
use switchyard_stats::{mcnemar, ttest, StatsError};

use super::canary::{relative_change, RawCanary, Underestimate, UnderestimateCheck};
use super::raw::{bp, raw_fields, required};
use super::{
    d, frac, opt, share, single, unit, Action, CanarySpec, Observations, Out, Phase,
    Recommendation, RolloutKind, RolloutSpec, RolloutState,
};
use crate::aggregate::{PairStats, VariantStats};
use crate::audit::{Details, Severity};
use crate::classes::{pair_drift, prediction_chi2, transition_table, ClassTable, PredictionDrift};
use crate::record::Tolerance;
use crate::routing::BUCKETS;
use crate::segments::{
    paired_breakdown, RawSegmentGate, SegmentBreakdown, SegmentFailure, SegmentGate,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowSpec {
    pub primary: String,
    pub candidate: String,
    /// Share of requests mirrored, basis points.
    pub sample: u32,
    /// Labelled pairs (classification or regression instances) to wait for.
    pub min_labelled: u64,
    pub min_duration_ms: u64,
    /// Significance level of McNemar's test and of the regression test.
    pub alpha: f64,
    /// A shadow error rate above this needs a human (INVESTIGATE), whatever the numbers say.
    pub max_error_rate: f64,
    /// The thresholds of the recommendation.
    #[serde(flatten)]
    pub rules: ShadowRules,
    /// On PROMOTE, continue with this canary.
    /// Boxed: a canary spec inside every shadow spec would make every rollout kind as large.
    pub then_canary: Option<Box<CanarySpec>>,
    /// Wait for an operator before starting `then_canary`.
    pub chain_requires_approval: bool,
    /// Distinct approvers the chained canary's start and a manual promotion need.
    #[serde(default = "super::one")]
    pub approvals: u32,
    /// Alerts while the shadow runs, before it concludes.
    #[serde(default)]
    pub live_alerts: LiveAlerts,
}

/// The seed's live checks while a shadow runs: each sends one alert (and one audit event) the
/// first time its condition holds, with its numbers, and none again for that rollout. They never
/// change the recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LiveAlerts {
    /// Agreement of the two versions below this (off unless written).
    pub min_agreement: Option<f64>,
    /// The shadow's p95 latency above this many milliseconds (off unless written).
    pub max_p95_ms: Option<f64>,
    /// The shadow's error rate above this (default: the spec's `max_error_rate`).
    pub max_error_rate: Option<f64>,
    /// Compared requests (or shadow calls) needed before any check speaks.
    pub min_samples: u64,
}

impl Default for LiveAlerts {
    fn default() -> Self {
        LiveAlerts {
            min_agreement: None,
            max_p95_ms: None,
            max_error_rate: None,
            min_samples: 100,
        }
    }
}

/// Which paired test decides a regression shadow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegressionTest {
    /// Paired t-test on `|e_primary| − |e_shadow|` (scipy `ttest_rel`), from exact moments.
    #[default]
    TTest,
    /// Wilcoxon signed-rank test on the same differences (scipy `wilcoxon`), on the sample of
    /// labelled pairs (every pair up to its size).
    Wilcoxon,
}

impl RegressionTest {
    pub fn as_str(self) -> &'static str {
        match self {
            RegressionTest::TTest => "t_test",
            RegressionTest::Wilcoxon => "wilcoxon",
        }
    }

    pub fn parse(s: &str) -> Option<RegressionTest> {
        match s {
            "t_test" => Some(RegressionTest::TTest),
            "wilcoxon" => Some(RegressionTest::Wilcoxon),
            _ => None,
        }
    }
}

/// The thresholds of the shadow's recommendation. The defaults are the seed notebook's
/// numbers; every change is relative, as in the seed (`(shadow − primary) / primary`), and
/// written as a fraction (0.02 = 2%). The rules themselves are on [`shadow_report`] and in the
/// README's table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShadowRules {
    /// Classification: PROMOTE when accuracy improves by more than this (relative) and
    /// McNemar's p < alpha. Seed: 2%.
    pub promote_min_improvement: f64,
    /// Classification: PROMOTE also when accuracy improves at all and agreement exceeds this.
    /// Seed: 95%.
    pub promote_min_agreement: f64,
    /// Both kinds: NEUTRAL when accuracy (MAE) changes by less than this, relative, and
    /// agreement exceeds `neutral_min_agreement`. Seed: 1% and 98%.
    pub neutral_max_change: f64,
    pub neutral_min_agreement: f64,
    /// Classification: REJECT when accuracy falls by more than this (relative). Seed: 1%.
    pub reject_max_drop: f64,
    /// Regression: PROMOTE when MAE falls by more than this (relative) with p < alpha.
    /// Seed: 10%.
    pub regression_promote_mae_decrease: f64,
    /// Regression: REJECT when MAE rises by more than this (relative) with p < alpha. The seed
    /// is silent; 10%, the mirror of the promotion rule (and the canary gate's default).
    pub regression_reject_mae_increase: f64,
    /// Regression: the paired test (`t_test` or `wilcoxon`).
    pub test: RegressionTest,
    /// Regression: how close the outputs must be to agree.
    pub agreement_tolerance: Tolerance,
    /// Regression: REJECT when more than a share of the candidate's labelled predictions fall
    /// below the truth by more than a margin. Off unless written.
    pub max_underestimate: Option<Underestimate>,
    /// Both kinds: a PROMOTE or NEUTRAL becomes INVESTIGATE when the PSI of the candidate's
    /// predictions from the primary's exceeds this (0.25 is the usual "major shift"). Off
    /// unless written.
    pub max_psi: Option<f64>,
    /// Both kinds: no segment with enough labelled pairs may regress by more than a limit; a
    /// segment past it turns any recommendation into REJECT. Off unless written.
    pub segment_gate: Option<SegmentGate>,
}

impl Default for ShadowRules {
    fn default() -> Self {
        ShadowRules {
            promote_min_improvement: 0.02,
            promote_min_agreement: 0.95,
            neutral_max_change: 0.01,
            neutral_min_agreement: 0.98,
            reject_max_drop: 0.01,
            regression_promote_mae_decrease: 0.10,
            regression_reject_mae_increase: 0.10,
            test: RegressionTest::TTest,
            agreement_tolerance: Tolerance::DEFAULT,
            max_underestimate: None,
            max_psi: None,
            segment_gate: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// As written (`rollout_config`): percentages in percent, durations in milliseconds, thresholds
// of the rules as fractions.

/// A regression agreement tolerance as written; each part defaults on its own.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawTolerance {
    pub absolute: Option<f64>,
    pub relative: Option<f64>,
}

raw_fields! {
    /// A shadow as written.
    pub struct RawShadow {
        primary: Option<String>,
        candidate: Option<String>,
        /// Percent of requests mirrored.
        sample: Option<f64>,
        min_labelled: Option<u64>,
        min_duration_ms: Option<u64>,
        alpha: Option<f64>,
        max_error_rate: Option<f64>,
        promote_min_improvement: Option<f64>,
        promote_min_agreement: Option<f64>,
        neutral_max_change: Option<f64>,
        neutral_min_agreement: Option<f64>,
        reject_max_drop: Option<f64>,
        regression_promote_mae_decrease: Option<f64>,
        regression_reject_mae_increase: Option<f64>,
        /// `t_test` or `wilcoxon`.
        test: Option<String>,
        agreement_tolerance: Option<RawTolerance>,
        max_underestimate: Option<Underestimate>,
        max_psi: Option<f64>,
        /// `{fields, max_accuracy_drop, max_mae_increase, min_samples}`.
        segment_gate: Option<RawSegmentGate>,
        /// Takes a canary's fields.
        then_canary: Option<RawCanary>,
        chain_requires_approval: Option<bool>,
        /// Distinct approvers the chain approval and a manual promotion need.
        approvals: Option<u64>,
        /// `{min_agreement, max_p95_ms, max_error_rate, min_samples}`.
        live_alerts: Option<RawLiveAlerts>,
    }
}

raw_fields! {
    /// A shadow's live alerts as written.
    pub struct RawLiveAlerts {
        min_agreement: Option<f64>,
        max_p95_ms: Option<f64>,
        max_error_rate: Option<f64>,
        min_samples: Option<u64>,
    }
}

impl RawShadow {
    /// Builds the spec, adding its problems.
    pub(crate) fn validate(self, problems: &mut Vec<String>) -> ShadowSpec {
        let d = ShadowRules::default();
        let test = match self.test.as_deref() {
            None => d.test,
            Some(t) => RegressionTest::parse(t).unwrap_or_else(|| {
                problems.push(format!("test: must be t_test or wilcoxon, got '{t}'"));
                d.test
            }),
        };
        let tolerance = self.agreement_tolerance.unwrap_or_default();
        ShadowSpec {
            primary: required(&self.primary, "primary", "shadow", problems),
            candidate: required(&self.candidate, "candidate", "shadow", problems),
            sample: bp("sample", self.sample.unwrap_or(100.0), problems),
            min_labelled: self.min_labelled.unwrap_or(1_000),
            min_duration_ms: self.min_duration_ms.unwrap_or(0),
            alpha: self.alpha.unwrap_or(0.05),
            max_error_rate: self.max_error_rate.unwrap_or(0.05),
            rules: ShadowRules {
                promote_min_improvement: self
                    .promote_min_improvement
                    .unwrap_or(d.promote_min_improvement),
                promote_min_agreement: self
                    .promote_min_agreement
                    .unwrap_or(d.promote_min_agreement),
                neutral_max_change: self.neutral_max_change.unwrap_or(d.neutral_max_change),
                neutral_min_agreement: self
                    .neutral_min_agreement
                    .unwrap_or(d.neutral_min_agreement),
                reject_max_drop: self.reject_max_drop.unwrap_or(d.reject_max_drop),
                regression_promote_mae_decrease: self
                    .regression_promote_mae_decrease
                    .unwrap_or(d.regression_promote_mae_decrease),
                regression_reject_mae_increase: self
                    .regression_reject_mae_increase
                    .unwrap_or(d.regression_reject_mae_increase),
                test,
                agreement_tolerance: Tolerance {
                    absolute: tolerance.absolute.unwrap_or(d.agreement_tolerance.absolute),
                    relative: tolerance.relative.unwrap_or(d.agreement_tolerance.relative),
                },
                max_underestimate: self.max_underestimate,
                max_psi: self.max_psi,
                segment_gate: self
                    .segment_gate
                    .map(|g| g.validate("segment_gate", problems)),
            },
            then_canary: self
                .then_canary
                .map(|c| Box::new(c.validate(problems, "then_canary."))),
            chain_requires_approval: self.chain_requires_approval.unwrap_or(false),
            approvals: super::canary::approvals_count(self.approvals),
            live_alerts: self
                .live_alerts
                .map_or_else(LiveAlerts::default, |l| LiveAlerts {
                    min_agreement: l.min_agreement,
                    max_p95_ms: l.max_p95_ms,
                    max_error_rate: l.max_error_rate,
                    min_samples: l.min_samples.unwrap_or(LiveAlerts::default().min_samples),
                }),
        }
    }
}

/// The shadow's own problems, and its chained canary's prefixed with `then_canary: `.
pub(super) fn problems(spec: &RolloutSpec, s: &ShadowSpec, declared: &[&str], p: &mut Vec<String>) {
    if s.sample == 0 || s.sample > BUCKETS {
        p.push(format!(
            "sample must be in (0, 100]%, got {}%",
            f64::from(s.sample) / 100.0
        ));
    }
    unit("alpha", s.alpha, p);
    share("max_error_rate", s.max_error_rate, p);
    let r = &s.rules;
    frac("promote_min_improvement", r.promote_min_improvement, p);
    share("promote_min_agreement", r.promote_min_agreement, p);
    frac("neutral_max_change", r.neutral_max_change, p);
    share("neutral_min_agreement", r.neutral_min_agreement, p);
    frac("reject_max_drop", r.reject_max_drop, p);
    frac(
        "regression_promote_mae_decrease",
        r.regression_promote_mae_decrease,
        p,
    );
    frac(
        "regression_reject_mae_increase",
        r.regression_reject_mae_increase,
        p,
    );
    frac(
        "agreement_tolerance.absolute",
        r.agreement_tolerance.absolute,
        p,
    );
    frac(
        "agreement_tolerance.relative",
        r.agreement_tolerance.relative,
        p,
    );
    if let Some(u) = &r.max_underestimate {
        u.problems("max_underestimate", p);
    }
    if let Some(v) = r.max_psi {
        frac("max_psi", v, p);
    }
    let l = &s.live_alerts;
    if let Some(v) = l.min_agreement {
        share("live_alerts.min_agreement", v, p);
    }
    if let Some(v) = l.max_p95_ms {
        frac("live_alerts.max_p95_ms", v, p);
    }
    if let Some(v) = l.max_error_rate {
        share("live_alerts.max_error_rate", v, p);
    }
    super::approvals("approvals", s.approvals, p);
    if let Some(c) = &s.then_canary {
        if !c.group.is_empty() {
            p.push("then_canary.group: a shadow's chained canary moves its own model only".into());
        }
        let chained = RolloutSpec {
            name: spec.name.clone(),
            model: spec.model.clone(),
            kind: RolloutKind::Canary(c.as_ref().clone()),
        };
        p.extend(
            chained
                .problems(declared)
                .into_iter()
                .map(|e| format!("then_canary: {e}")),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The report and its recommendation.

/// What the two versions answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// Nothing comparable yet.
    None,
    Classification,
    Regression,
}

/// Shadow-mode comparison of the candidate against the primary. Fractions are fractions
/// (0.05 = 5%), errors are in the model's output unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowReport {
    /// Which rules applied.
    pub output: OutputKind,
    /// Instances both versions answered comparably.
    pub compared: u64,
    /// Share of those where they agree: equal classes, or values within `agreement_tolerance`.
    pub agreement: Option<f64>,
    /// Instances the agreement was computed on: every compared one, or (regression, beyond the
    /// sample size) a uniform sample of them.
    pub agreement_sample: u64,
    pub agreement_exact: bool,
    pub agreement_tolerance: Tolerance,
    /// Labelled pairs: both answered and the truth arrived.
    pub labelled: u64,
    pub primary_accuracy: Option<f64>,
    pub shadow_accuracy: Option<f64>,
    /// `shadow_accuracy − primary_accuracy` (0.05 = five points).
    pub accuracy_difference: Option<f64>,
    /// `(shadow_accuracy − primary_accuracy) / primary_accuracy`, the seed's improvement (0 when
    /// the primary's accuracy is 0, as in the seed).
    pub accuracy_improvement: Option<f64>,
    pub mcnemar: Option<mcnemar::McNemar>,
    /// Regression, on the labelled pairs: mean absolute error, root mean squared error, mean
    /// absolute percentage error (a fraction; instances whose truth is 0 are left out and
    /// counted in `mape_skipped`).
    pub primary_mae: Option<f64>,
    pub shadow_mae: Option<f64>,
    pub primary_rmse: Option<f64>,
    pub shadow_rmse: Option<f64>,
    pub primary_mape: Option<f64>,
    pub shadow_mape: Option<f64>,
    pub mape_skipped: u64,
    /// `(shadow_mae − primary_mae) / primary_mae`: negative when the shadow is closer to the
    /// truth. `None` when the primary's MAE is 0 and the shadow's is not.
    pub mae_change: Option<f64>,
    /// Paired t-test on `|e_primary| − |e_shadow|` (positive `t`: the shadow is closer).
    pub paired_t: Option<ttest::TTest>,
    /// Wilcoxon signed-rank test on the same differences, over `wilcoxon_sample` pairs.
    pub wilcoxon: Option<Wilcoxon>,
    pub wilcoxon_sample: u64,
    /// The regression test the rules use.
    pub test: RegressionTest,
    /// The p-value the rules used: McNemar's (classification) or `test`'s (regression). A
    /// regression test whose differences are all equal has no variance: p = 1 when they are
    /// all zero (the same answers), 0 otherwise.
    pub p_value: Option<f64>,
    /// The candidate against `max_underestimate`, when set and labels arrived.
    pub underestimate: Option<UnderestimateCheck>,
    /// Classification: the compared instances by (primary's class, candidate's class).
    #[serde(default)]
    pub transitions: Option<ClassTable>,
    /// Classification: the seed's chi-square test of the two prediction distributions (scipy
    /// `chi2_contingency` on the primary's and the candidate's class counts; the rows are the
    /// same requests, so it is indicative, McNemar's is the paired test).
    #[serde(default)]
    pub prediction_chi2: Option<ChiSquare>,
    /// PSI and Jensen–Shannon of the candidate's predictions from the primary's, over classes
    /// or the deciles of the primary's values.
    #[serde(default)]
    pub drift: Option<PredictionDrift>,
    /// Per segment field: the two versions on each value's labelled pairs, and the reversal
    /// flag.
    #[serde(default)]
    pub segments: Vec<SegmentBreakdown>,
    /// The worst segment past `segment_gate`'s limit, when the gate is set.
    #[serde(default)]
    pub segment_failure: Option<SegmentFailure>,
    /// Failed calls over calls, of the primary (serving) and of the shadow.
    pub primary_error_rate: Option<f64>,
    pub shadow_error_rate: Option<f64>,
    pub recommendation: Recommendation,
    pub reason: String,
}

/// The p-value of a test whose differences may all be equal (zero variance): 1 when they are
/// all zero, 0 when they are all the same non-zero number.
fn degenerate_p(all_zero: bool) -> f64 {
    if all_zero {
        1.0
    } else {
        0.0
    }
}

/// Computes the shadow report and its recommendation from the pair statistics, the primary's
/// serving statistics and the candidate's shadow statistics.
///
/// The rules, in order (thresholds from `s.rules`, defaults the seed's):
/// 1. the shadow's error rate above `max_error_rate` → INVESTIGATE;
/// 2. no labelled pair → INVESTIGATE;
/// 3. regression with `max_underestimate` exceeded → REJECT;
/// 4. classification, `Δ = (shadow_acc − primary_acc) / primary_acc`: `Δ >
///    promote_min_improvement` and McNemar p < alpha → PROMOTE; `Δ > 0` and agreement >
///    `promote_min_agreement` → PROMOTE; `|Δ| < neutral_max_change` and agreement >
///    `neutral_min_agreement` → NEUTRAL; `Δ < −reject_max_drop` → REJECT; else INVESTIGATE;
/// 5. regression, `Δ = (shadow_mae − primary_mae) / primary_mae`: `Δ <
///    −regression_promote_mae_decrease` and p < alpha → PROMOTE; `Δ >
///    regression_reject_mae_increase` and p < alpha → REJECT; `|Δ| < neutral_max_change` and
///    agreement > `neutral_min_agreement` → NEUTRAL; else INVESTIGATE;
/// 6. both kinds, when `max_psi` is set: a PROMOTE or NEUTRAL whose prediction drift has a PSI
///    above it → INVESTIGATE (a REJECT stays).
pub fn shadow_report(
    s: &ShadowSpec,
    pair: &PairStats,
    primary: &VariantStats,
    shadow: &VariantStats,
) -> ShadowReport {
    let rules = &s.rules;
    let tolerance = rules.agreement_tolerance;
    let agreement = pair.agreement_within(&tolerance);
    let labelled = pair.labelled();
    let output = if pair.is_classification() || pair.labelled() > pair.errors.count() {
        OutputKind::Classification
    } else if pair.values_compared > 0 || pair.errors.count() > 0 {
        OutputKind::Regression
    } else {
        OutputKind::None
    };
    let shadow_error_rate =
        (pair.shadow_calls > 0).then(|| pair.shadow_errors as f64 / pair.shadow_calls as f64);
    let mut r = ShadowReport {
        output,
        compared: agreement.compared,
        agreement: agreement.rate,
        agreement_sample: agreement.sample,
        agreement_exact: agreement.exact,
        agreement_tolerance: tolerance,
        labelled,
        primary_accuracy: None,
        shadow_accuracy: None,
        accuracy_difference: None,
        accuracy_improvement: None,
        mcnemar: None,
        primary_mae: None,
        shadow_mae: None,
        primary_rmse: None,
        shadow_rmse: None,
        primary_mape: None,
        shadow_mape: None,
        mape_skipped: 0,
        mae_change: None,
        paired_t: None,
        wilcoxon: None,
        wilcoxon_sample: 0,
        test: rules.test,
        p_value: None,
        underestimate: None,
        transitions: None,
        prediction_chi2: None,
        drift: pair_drift(pair),
        segments: paired_breakdown(&pair.segments),
        segment_failure: None,
        primary_error_rate: primary.error_rate(),
        shadow_error_rate,
        recommendation: Recommendation::Investigate,
        reason: String::new(),
    };
    match output {
        OutputKind::Classification => {
            classification_numbers(pair, &mut r);
            r.transitions = transition_table(pair);
            r.prediction_chi2 = prediction_chi2(pair);
        }
        OutputKind::Regression => {
            regression_numbers(pair, &mut r);
            r.underestimate = rules.max_underestimate.and_then(|u| u.check(shadow));
        }
        OutputKind::None => {}
    }
    r.segment_failure = rules
        .segment_gate
        .as_ref()
        .and_then(|g| g.check(&r.segments));
    (r.recommendation, r.reason) = recommend(s, &r);
    r
}

fn classification_numbers(pair: &PairStats, r: &mut ShadowReport) {
    let n = pair.both_correct + pair.primary_only + pair.shadow_only + pair.both_wrong;
    if n == 0 {
        return;
    }
    let pa = (pair.both_correct + pair.primary_only) as f64 / n as f64;
    let sa = (pair.both_correct + pair.shadow_only) as f64 / n as f64;
    let m = mcnemar::mcnemar(pair.primary_only, pair.shadow_only);
    r.primary_accuracy = Some(pa);
    r.shadow_accuracy = Some(sa);
    r.accuracy_difference = Some(sa - pa);
    // The seed: `(shadow − prod) / prod if prod > 0 else 0`.
    r.accuracy_improvement = Some(if pa > 0.0 { (sa - pa) / pa } else { 0.0 });
    r.mcnemar = Some(m);
    r.p_value = Some(m.p_value);
}

fn regression_numbers(pair: &PairStats, r: &mut ShadowReport) {
    let e = &pair.errors;
    if e.count() == 0 {
        return;
    }
    r.primary_mae = e.primary_abs.mean();
    r.shadow_mae = e.shadow_abs.mean();
    r.primary_rmse = e.primary_sq.mean().map(f64::sqrt);
    r.shadow_rmse = e.shadow_sq.mean().map(f64::sqrt);
    r.primary_mape = e.primary_ape.mean();
    r.shadow_mape = e.shadow_ape.mean();
    r.mape_skipped = e.ape_skipped;
    if let (Some(p), Some(s)) = (r.primary_mae, r.shadow_mae) {
        r.mae_change = Some(relative_change(p, s)).filter(|c| c.is_finite());
    }
    // Paired t-test on |e_p| − |e_s|, from the exact moments.
    let t_p = match ttest::paired_from_moments(&e.abs_diff) {
        Ok(t) => {
            r.paired_t = Some(t);
            Some(t.p_value)
        }
        Err(StatsError::Undefined(_)) => Some(degenerate_p(
            e.abs_diff.min() == Some(0.0) && e.abs_diff.max() == Some(0.0),
        )),
        Err(StatsError::InvalidInput { .. }) => None,
    };
    // Wilcoxon on the same differences, over the sample of labelled pairs.
    let (x, y): (Vec<f64>, Vec<f64>) = pair
        .labelled_values
        .values()
        .map(|v| v.abs_errors())
        .unzip();
    r.wilcoxon_sample = x.len() as u64;
    let w_p = match wilcoxon(&x, &y, WilcoxonMethod::Auto) {
        Ok(w) => {
            r.wilcoxon = Some(w);
            Some(w.p_value)
        }
        // Every difference zero: no evidence of a difference.
        Err(StatsError::Undefined(_)) if !x.is_empty() => Some(degenerate_p(true)),
        Err(_) => None,
    };
    r.p_value = match r.test {
        RegressionTest::TTest => t_p,
        RegressionTest::Wilcoxon => w_p,
    };
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

fn signed_pct(v: f64) -> String {
    format!("{:+.1}%", v * 100.0)
}

/// The recommendation and its reason (rules on [`shadow_report`]).
fn recommend(s: &ShadowSpec, r: &ShadowReport) -> (Recommendation, String) {
    let (recommendation, reason) = recommend_on_drift(s, r);
    match (&r.segment_failure, recommendation) {
        (
            Some(f),
            Recommendation::Promote | Recommendation::Neutral | Recommendation::Investigate,
        ) => (
            Recommendation::Reject,
            format!(
                "{} ({} would have said: {reason})",
                f.describe(),
                recommendation.as_str()
            ),
        ),
        _ => (recommendation, reason),
    }
}

/// Rule 6: a PROMOTE or NEUTRAL whose predictions moved past `max_psi` needs a human.
fn recommend_on_drift(s: &ShadowSpec, r: &ShadowReport) -> (Recommendation, String) {
    let (recommendation, reason) = recommend_on_quality(s, r);
    let shifted = s
        .rules
        .max_psi
        .zip(r.drift.as_ref())
        .filter(|(max, d)| d.psi > *max);
    match (recommendation, shifted) {
        (Recommendation::Promote | Recommendation::Neutral, Some((max, d))) => (
            Recommendation::Investigate,
            format!(
                "prediction distribution moved: PSI {:.3} above {max} ({} would have said: {reason})",
                d.psi,
                recommendation.as_str()
            ),
        ),
        _ => (recommendation, reason),
    }
}

fn recommend_on_quality(s: &ShadowSpec, r: &ShadowReport) -> (Recommendation, String) {
    use Recommendation::{Investigate, Neutral, Promote, Reject};
    let rules = &s.rules;
    if let Some(e) = r.shadow_error_rate.filter(|e| *e > s.max_error_rate) {
        return (
            Investigate,
            format!(
                "shadow error rate {} above {}",
                pct(e),
                pct(s.max_error_rate)
            ),
        );
    }
    if r.labelled == 0 {
        return (Investigate, "no labelled pairs".into());
    }
    let agreement = r.agreement.unwrap_or(0.0);
    let agreement_text = format!("agreement {}", pct(agreement));
    let p = r.p_value.unwrap_or(1.0);
    let significant = r.p_value.is_some_and(|p| p < s.alpha);
    match r.output {
        OutputKind::Classification => {
            let delta = r.accuracy_improvement.unwrap_or(0.0);
            let change = format!(
                "accuracy {} relative ({} → {})",
                signed_pct(delta),
                pct(r.primary_accuracy.unwrap_or(0.0)),
                pct(r.shadow_accuracy.unwrap_or(0.0))
            );
            if delta > rules.promote_min_improvement && significant {
                (
                    Promote,
                    format!(
                        "{change} above {}, McNemar p = {p:.2e} < {}",
                        signed_pct(rules.promote_min_improvement),
                        s.alpha
                    ),
                )
            } else if delta > 0.0 && agreement > rules.promote_min_agreement {
                (
                    Promote,
                    format!(
                        "{change} with {agreement_text} above {}",
                        pct(rules.promote_min_agreement)
                    ),
                )
            } else if delta.abs() < rules.neutral_max_change
                && agreement > rules.neutral_min_agreement
            {
                (
                    Neutral,
                    format!(
                        "{change} within ±{} with {agreement_text} above {}",
                        pct(rules.neutral_max_change),
                        pct(rules.neutral_min_agreement)
                    ),
                )
            } else if delta < -rules.reject_max_drop {
                (
                    Reject,
                    format!("{change} below {}", signed_pct(-rules.reject_max_drop)),
                )
            } else {
                (
                    Investigate,
                    format!("mixed results: {change}, McNemar p = {p:.2e}, {agreement_text}"),
                )
            }
        }
        OutputKind::Regression => {
            if let Some(u) = r.underestimate.filter(|u| u.exceeded) {
                return (Reject, u.describe());
            }
            let (pm, sm) = (r.primary_mae.unwrap_or(0.0), r.shadow_mae.unwrap_or(0.0));
            let delta = relative_change(pm, sm);
            let test = r.test.as_str();
            let change = if delta.is_finite() {
                format!("MAE {} ({pm:.4} → {sm:.4})", signed_pct(delta))
            } else {
                format!("MAE {pm:.4} → {sm:.4}")
            };
            if delta < -rules.regression_promote_mae_decrease && significant {
                (
                    Promote,
                    format!(
                        "{change}, a decrease of more than {}, {test} p = {p:.2e} < {}",
                        pct(rules.regression_promote_mae_decrease),
                        s.alpha
                    ),
                )
            } else if delta > rules.regression_reject_mae_increase && significant {
                (
                    Reject,
                    format!(
                        "{change}, an increase of more than {}, {test} p = {p:.2e} < {}",
                        pct(rules.regression_reject_mae_increase),
                        s.alpha
                    ),
                )
            } else if delta.abs() < rules.neutral_max_change
                && agreement > rules.neutral_min_agreement
            {
                (
                    Neutral,
                    format!(
                        "{change} within ±{} with {agreement_text} above {}",
                        pct(rules.neutral_max_change),
                        pct(rules.neutral_min_agreement)
                    ),
                )
            } else {
                (
                    Investigate,
                    format!("mixed results: {change}, {test} p = {p:.2e}, {agreement_text}"),
                )
            }
        }
        OutputKind::None => (Investigate, "nothing comparable".into()),
    }
}

/// The report's numbers as audit details.
fn report_details(r: &ShadowReport) -> Details {
    let mut details = vec![
        d("output", format!("{:?}", r.output).to_lowercase()),
        d("compared", r.compared),
        opt("agreement", r.agreement),
        d("agreement_sample", r.agreement_sample),
        d("agreement_exact", r.agreement_exact),
        d("labelled_pairs", r.labelled),
    ];
    match r.output {
        OutputKind::Classification => {
            details.extend([
                opt("primary_accuracy", r.primary_accuracy),
                opt("shadow_accuracy", r.shadow_accuracy),
                opt("accuracy_difference", r.accuracy_difference),
                opt("accuracy_improvement", r.accuracy_improvement),
            ]);
            if let Some(m) = r.mcnemar {
                details.extend([
                    d("mcnemar_b", m.b),
                    d("mcnemar_c", m.c),
                    d("mcnemar_statistic", m.statistic),
                    d("mcnemar_p_value", m.p_value),
                ]);
            }
        }
        OutputKind::Regression => {
            details.extend([
                d(
                    "agreement_tolerance_absolute",
                    r.agreement_tolerance.absolute,
                ),
                d(
                    "agreement_tolerance_relative",
                    r.agreement_tolerance.relative,
                ),
                opt("primary_mae", r.primary_mae),
                opt("shadow_mae", r.shadow_mae),
                opt("primary_rmse", r.primary_rmse),
                opt("shadow_rmse", r.shadow_rmse),
                opt("primary_mape", r.primary_mape),
                opt("shadow_mape", r.shadow_mape),
                d("mape_skipped", r.mape_skipped),
                opt("mae_change", r.mae_change),
                d("test", r.test.as_str()),
                opt("p_value", r.p_value),
            ]);
            if let Some(t) = r.paired_t {
                details.extend([d("paired_t", t.t), d("paired_t_p_value", t.p_value)]);
            }
            if let Some(w) = r.wilcoxon {
                details.extend([
                    d("wilcoxon_statistic", w.statistic),
                    d("wilcoxon_p_value", w.p_value),
                    d("wilcoxon_sample", r.wilcoxon_sample),
                ]);
            }
            if let Some(u) = r.underestimate {
                details.extend([
                    d("underestimate_by", u.by),
                    d("underestimate_count", u.count),
                    d("underestimate_share", u.share),
                    d("underestimate_max_share", u.max_share),
                ]);
            }
        }
        OutputKind::None => {}
    }
    if let Some(c) = &r.prediction_chi2 {
        details.extend([
            d("prediction_chi2", c.statistic),
            d("prediction_chi2_dof", c.dof),
            d("prediction_chi2_p_value", c.p_value),
        ]);
    }
    if let Some(drift) = &r.drift {
        details.extend([d("psi", drift.psi), d("js_distance", drift.js_distance)]);
    }
    if let Some(f) = &r.segment_failure {
        details.extend([
            d("segment_field", f.field.clone()),
            d("segment_value", f.value.clone()),
            d("segment_samples", f.samples),
            d("segment_primary", f.baseline),
            d("segment_candidate", f.candidate),
            d("segment_change", f.change),
            d("segment_limit", f.limit),
        ]);
    }
    for b in &r.segments {
        if let Some(rev) = &b.reversal {
            details.push(d(
                &format!("segment_reversal_{}", b.field),
                rev.summary.clone(),
            ));
        }
    }
    details.extend([
        opt("shadow_error_rate", r.shadow_error_rate),
        d("recommendation", r.recommendation.as_str()),
    ]);
    details
}

/// The live checks of a running shadow (see [`LiveAlerts`]).
fn live_alerts(
    s: &ShadowSpec,
    state: &mut RolloutState,
    pair: &PairStats,
    shadow: Option<&VariantStats>,
    out: &mut Out<'_>,
) {
    let l = &s.live_alerts;
    let mut fire = |state: &mut RolloutState, key: &str, title: String, details: Details| {
        if state.shadow_alerts.iter().any(|k| k == key) {
            return;
        }
        state.shadow_alerts.push(key.to_string());
        out.event("shadow_alert", title.clone(), details.clone());
        out.alert(
            Severity::P2,
            &format!("shadow_{key}"),
            format!("{}: {title}", out.spec.name),
            details,
        );
    };
    let agreement = pair.agreement_within(&s.rules.agreement_tolerance);
    if let (Some(min), Some(rate)) = (l.min_agreement, agreement.rate) {
        if agreement.compared >= l.min_samples && rate < min {
            fire(
                state,
                "agreement",
                format!(
                    "agreement {:.1}% below {:.1}% over {} compared requests",
                    rate * 100.0,
                    min * 100.0,
                    agreement.compared
                ),
                vec![
                    d("agreement", rate),
                    d("min_agreement", min),
                    d("compared", agreement.compared),
                ],
            );
        }
    }
    if let (Some(max_ms), Some(shadow)) = (l.max_p95_ms, shadow) {
        if let Some(p95_us) = shadow.latency.p95() {
            let p95_ms = p95_us as f64 / 1000.0;
            if shadow.requests >= l.min_samples && p95_ms > max_ms {
                fire(
                    state,
                    "latency",
                    format!("shadow p95 {p95_ms:.1} ms above {max_ms:.1} ms"),
                    vec![
                        d("shadow_p95_ms", p95_ms),
                        d("max_p95_ms", max_ms),
                        d("shadow_requests", shadow.requests),
                    ],
                );
            }
        }
    }
    let max_errors = l.max_error_rate.unwrap_or(s.max_error_rate);
    if pair.shadow_calls >= l.min_samples {
        let rate = pair.shadow_errors as f64 / pair.shadow_calls as f64;
        if rate > max_errors {
            fire(
                state,
                "errors",
                format!(
                    "shadow error rate {:.1}% above {:.1}% ({} of {} calls)",
                    rate * 100.0,
                    max_errors * 100.0,
                    pair.shadow_errors,
                    pair.shadow_calls
                ),
                vec![
                    d("shadow_error_rate", rate),
                    d("max_error_rate", max_errors),
                    d("shadow_calls", pair.shadow_calls),
                ],
            );
        }
    }
}

pub(super) fn tick_shadow(
    s: &ShadowSpec,
    state: &mut RolloutState,
    obs: &Observations,
    out: &mut Out<'_>,
) {
    if state.phase != Phase::Running {
        return;
    }
    let pair = obs.pair.clone().unwrap_or_default();
    live_alerts(s, state, &pair, obs.shadow.as_ref(), out);
    let labelled = pair.labelled();
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
    let details = report_details(&report);
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

pub(super) fn chain(out: &mut Out<'_>, canary: &CanarySpec) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Aggregates;
    use crate::record::{Outcome, PairRef, Prediction, PredictionRecord, Role, Truth};
    use switchyard_stats::Proportion;
    use Recommendation::{Investigate, Neutral, Promote, Reject};

    fn spec(rules: ShadowRules) -> ShadowSpec {
        ShadowSpec {
            primary: "v1".into(),
            candidate: "v2".into(),
            sample: BUCKETS,
            min_labelled: 1,
            min_duration_ms: 0,
            alpha: 0.05,
            max_error_rate: 0.05,
            rules,
            then_canary: None,
            chain_requires_approval: false,
            approvals: 1,
            live_alerts: LiveAlerts::default(),
        }
    }

    /// Labelled classification pairs by McNemar cell; the unlabelled compared instances agree
    /// as the labelled ones do.
    fn classes(both: u64, b: u64, c: u64, neither: u64) -> PairStats {
        let n = both + b + c + neither;
        PairStats {
            both_correct: both,
            primary_only: b,
            shadow_only: c,
            both_wrong: neither,
            agreement: Proportion {
                successes: both + neither,
                trials: n,
            },
            shadow_calls: n,
            ..Default::default()
        }
    }

    fn classify(pair: &PairStats, rules: ShadowRules) -> ShadowReport {
        shadow_report(
            &spec(rules),
            pair,
            &VariantStats::default(),
            &VariantStats::default(),
        )
    }

    #[track_caller]
    fn expect(r: &ShadowReport, rec: Recommendation, reason: &str) {
        assert_eq!(r.recommendation, rec, "{}", r.reason);
        assert!(
            r.reason.contains(reason),
            "'{reason}' not in '{}'",
            r.reason
        );
    }

    #[test]
    fn a_segment_past_the_gate_turns_a_promote_into_reject() {
        use crate::segments::{SegmentGate, SegmentPairStats};
        // Overall a clear improvement (McNemar on 50 vs 300), but on tester T2 (400 pairs) the
        // candidate is 10 points worse: 100 of its 200 discordant pairs go the primary's way.
        let mut pair = classes(3_800, 200, 300, 5_700);
        let cells = |both, b, c, neither| SegmentPairStats {
            compared: both + b + c + neither,
            both_correct: both,
            primary_only: b,
            shadow_only: c,
            both_wrong: neither,
            ..Default::default()
        };
        let t = pair.segments.entry("tester".into()).or_default();
        *t.entry("T1") = cells(3_600, 100, 290, 5_610);
        *t.entry("T2") = cells(200, 100, 10, 90);
        let without = classify(&pair, ShadowRules::default());
        expect(&without, Promote, "McNemar");
        assert_eq!(without.segments.len(), 1);
        assert!(without.segment_failure.is_none());
        let gated = ShadowRules {
            segment_gate: Some(SegmentGate::default()),
            ..ShadowRules::default()
        };
        let r = classify(&pair, gated);
        expect(&r, Reject, "segment tester=T2: accuracy 52.5% vs 75.0%");
        assert!(r.reason.contains("PROMOTE would have said"), "{}", r.reason);
        assert_eq!(r.segment_failure.as_ref().unwrap().samples, 400);
    }

    #[test]
    fn classification_promotes_a_significant_relative_improvement() {
        // 40% → 41%: one point, but +2.5% relative (the seed's measure) with McNemar
        // p = 1e-5; agreement exactly 95% is not above 95%, so only the first rule applies.
        let pair = classes(3_800, 200, 300, 5_700);
        let r = classify(&pair, ShadowRules::default());
        expect(&r, Promote, "McNemar p = ");
        assert!((r.accuracy_improvement.unwrap() - 0.025).abs() < 1e-12);
        assert!((r.accuracy_difference.unwrap() - 0.01).abs() < 1e-12);
        // The threshold is the spec's.
        let strict = ShadowRules {
            promote_min_improvement: 0.03,
            ..Default::default()
        };
        expect(&classify(&pair, strict), Investigate, "mixed results");
    }

    #[test]
    fn classification_promotes_any_improvement_with_high_agreement() {
        // 90.2% → 90.6% (+0.4%, not significant) with agreement 99.2% above 95%.
        let r = classify(&classes(900, 2, 6, 92), ShadowRules::default());
        expect(&r, Promote, "agreement 99.2% above 95.0%");
        assert!(r.p_value.unwrap() > 0.05);
    }

    #[test]
    fn classification_is_neutral_within_one_percent_at_high_agreement() {
        // 90.6% → 90.2% (−0.4%) with agreement 99.2% above 98%.
        let r = classify(&classes(900, 6, 2, 92), ShadowRules::default());
        expect(&r, Neutral, "within ±1.0%");
        // Agreement 97.9% is not above 98%: mixed.
        let r = classify(&classes(880, 13, 8, 99), ShadowRules::default());
        expect(&r, Investigate, "mixed results");
    }

    #[test]
    fn classification_rejects_a_drop_beyond_one_percent() {
        // 86% → 84%: −2.3% relative.
        let r = classify(&classes(800, 60, 40, 100), ShadowRules::default());
        expect(&r, Reject, "below -1.0%");
        // A laxer spec lets it through to INVESTIGATE.
        let lax = ShadowRules {
            reject_max_drop: 0.05,
            ..Default::default()
        };
        expect(
            &classify(&classes(800, 60, 40, 100), lax),
            Investigate,
            "mixed",
        );
    }

    #[test]
    fn classification_investigates_mixed_results() {
        // +0.6% with agreement 93%; +12.5% with p = 0.055 and agreement 35%.
        for pair in [classes(800, 30, 35, 100), classes(100, 300, 350, 250)] {
            expect(
                &classify(&pair, ShadowRules::default()),
                Investigate,
                "mixed",
            );
        }
    }

    #[test]
    fn a_failing_shadow_or_no_labels_needs_a_human() {
        let mut pair = classes(300, 10, 40, 50);
        pair.shadow_errors = pair.shadow_calls / 10;
        expect(
            &classify(&pair, ShadowRules::default()),
            Investigate,
            "shadow error rate 10.0% above 5.0%",
        );
        let mut unlabelled = PairStats::default();
        unlabelled.agreement.record(true);
        expect(
            &classify(&unlabelled, ShadowRules::default()),
            Investigate,
            "no labelled pairs",
        );
    }

    #[test]
    fn a_moved_prediction_distribution_needs_a_human_when_max_psi_is_set() {
        // PROMOTE on agreement; the candidate says "1" half the time, the primary 30%.
        let mut pair = classes(900, 2, 6, 92);
        pair.transitions.add_n("0", "0", 500);
        pair.transitions.add_n("1", "1", 300);
        pair.transitions.add_n("0", "1", 200);
        let r = classify(&pair, ShadowRules::default());
        expect(&r, Promote, "agreement");
        // PSI = (0.5 − 0.7) ln(5/7) + (0.5 − 0.3) ln(5/3).
        let psi = -0.2 * (5.0f64 / 7.0).ln() + 0.2 * (5.0f64 / 3.0).ln();
        assert!((r.drift.as_ref().unwrap().psi - psi).abs() < 1e-12);
        let t = r.transitions.as_ref().unwrap();
        assert_eq!(t.counts, vec![vec![500, 200], vec![0, 300]]);
        let chi = r.prediction_chi2.as_ref().unwrap();
        assert_eq!((chi.dof, chi.p_value < 1e-10), (1, true));
        let strict = ShadowRules {
            max_psi: Some(0.15),
            ..Default::default()
        };
        expect(
            &classify(&pair, strict.clone()),
            Investigate,
            "prediction distribution moved: PSI 0.169 above 0.15 (PROMOTE would have said",
        );
        let lax = ShadowRules {
            max_psi: Some(0.2),
            ..Default::default()
        };
        expect(&classify(&pair, lax), Promote, "agreement");
        // A REJECT stays a REJECT.
        let mut worse = classes(800, 60, 40, 100);
        worse.transitions = pair.transitions.clone();
        expect(&classify(&worse, strict), Reject, "below");
    }

    #[test]
    fn a_primary_that_is_never_right_gives_the_seeds_zero_improvement() {
        let r = classify(&classes(0, 0, 30, 70), ShadowRules::default());
        assert_eq!(r.accuracy_improvement, Some(0.0));
        assert_eq!(r.accuracy_difference, Some(0.3));
    }

    #[test]
    fn stored_specs_round_trip_and_older_ones_load_with_the_seeds_rules() {
        let spec = RolloutSpec {
            name: "s".into(),
            model: "m".into(),
            kind: RolloutKind::Shadow(spec(ShadowRules {
                test: RegressionTest::Wilcoxon,
                max_underestimate: Some(Underestimate {
                    by: 50.0,
                    share: 0.01,
                }),
                ..Default::default()
            })),
        };
        let text = serde_yaml::to_string(&spec).unwrap();
        assert_eq!(serde_yaml::from_str::<RolloutSpec>(&text).unwrap(), spec);
        // A spec stored before the rules were fields (JSON, as the control store keeps it).
        let old = r#"{"name":"s","model":"m","kind":"shadow","primary":"v1","candidate":"v2",
            "sample":10000,"min_labelled":1,"min_duration_ms":0,"min_improvement":0.02,
            "max_drop":0.01,"alpha":0.05,"min_agreement":0.5,"max_error_rate":0.05,
            "then_canary":null,"chain_requires_approval":false}"#;
        let loaded: RolloutSpec = serde_yaml::from_str(old).unwrap();
        let RolloutKind::Shadow(s) = loaded.kind else {
            panic!("{loaded:?}")
        };
        assert_eq!(s.rules, ShadowRules::default());
    }

    // ---- regression ----

    /// Deterministic noise in [−scale, scale].
    fn wiggle(i: usize, scale: f64) -> f64 {
        ((i as f64 * 12.9898).sin() * 43_758.545_3).fract() * scale
    }

    fn rec(id: &str, role: Role, version: &str, v: f64, pair: Option<f64>) -> PredictionRecord {
        PredictionRecord {
            request_id: id.into(),
            ts_ms: 0,
            model: "m".into(),
            epoch: 1,
            variant: role.as_str().into(),
            role,
            version: version.into(),
            key_hash: None,
            outcome: Outcome::Ok,
            status: 200,
            latency_us: 1_000,
            output: Prediction::Values(vec![v]),
            input: None,
            pair: pair.map(|p| PairRef {
                version: "v1".into(),
                output: Prediction::Values(vec![p]),
            }),
            segments: Vec::new(),
        }
    }

    /// The pair and the shadow's statistics after (primary, shadow, truth) per request.
    fn values(rows: impl IntoIterator<Item = (f64, f64, f64)>) -> (PairStats, VariantStats) {
        let mut agg = Aggregates::default();
        for (i, (p, s, t)) in rows.into_iter().enumerate() {
            let id = format!("r{i}");
            let serving = rec(&id, Role::Serving, "v1", p, None);
            let shadow = rec(&id, Role::Shadow, "v2", s, Some(p));
            agg.record(&serving);
            agg.record(&shadow);
            agg.record_feedback(&[serving, shadow], &Truth::Values(vec![t]), &[]);
        }
        (
            agg.pair("m", "v1", "v2", |_| true),
            agg.variant("m", "v2", Role::Shadow, |_| true),
        )
    }

    fn regress(data: &(PairStats, VariantStats), rules: ShadowRules) -> ShadowReport {
        shadow_report(&spec(rules), &data.0, &VariantStats::default(), &data.1)
    }

    fn truth(i: usize) -> f64 {
        120.0 + wiggle(i, 25.0)
    }

    /// v1 within ±6 of the truth, v2 within ±2: about three times closer.
    fn three_times_closer() -> (PairStats, VariantStats) {
        values((0..300).map(|i| {
            let t = truth(i);
            (t + wiggle(i + 1_000, 6.0), t + wiggle(i + 2_000, 2.0), t)
        }))
    }

    #[test]
    fn regression_promotes_a_significant_mae_decrease_beyond_ten_percent() {
        let data = three_times_closer();
        let r = regress(&data, ShadowRules::default());
        expect(&r, Promote, "a decrease of more than 10.0%, t_test p = ");
        assert_eq!((r.output, r.labelled), (OutputKind::Regression, 300));
        assert!(r.mae_change.unwrap() < -0.5, "{r:?}");
        // Both agree on well under 95% of the requests: agreement does not hold a better
        // regressor back (it did, with exact equality as the agreement).
        assert!(r.agreement.unwrap() < 0.95);
        // The same with Wilcoxon.
        let wilcoxon = ShadowRules {
            test: RegressionTest::Wilcoxon,
            ..Default::default()
        };
        expect(&regress(&data, wilcoxon), Promote, "wilcoxon p = ");
    }

    #[test]
    fn regression_rejects_a_significant_mae_increase_beyond_ten_percent() {
        let data = values((0..300).map(|i| {
            let t = truth(i);
            (t + wiggle(i + 2_000, 2.0), t + wiggle(i + 1_000, 6.0), t)
        }));
        expect(
            &regress(&data, ShadowRules::default()),
            Reject,
            "an increase of more than 10.0%",
        );
    }

    #[test]
    fn the_same_model_twice_is_neutral() {
        let data = values((0..300).map(|i| {
            let t = truth(i);
            let p = t + wiggle(i + 1_000, 6.0);
            (p, p, t)
        }));
        let r = regress(&data, ShadowRules::default());
        expect(&r, Neutral, "agreement 100.0%");
        // Every difference is zero: no t statistic, and no evidence of a difference.
        assert_eq!((r.paired_t, r.wilcoxon, r.p_value), (None, None, Some(1.0)));
        assert_eq!(r.mae_change, Some(0.0));
    }

    #[test]
    fn regression_investigates_a_small_or_unclear_change() {
        // Every error 5% smaller: significant, but neither a 10% decrease nor within 1%.
        let data = values((0..300).map(|i| {
            let t = truth(i);
            let e = wiggle(i + 1_000, 6.0);
            (t + e, t + 0.95 * e, t)
        }));
        let r = regress(&data, ShadowRules::default());
        expect(&r, Investigate, "mixed results: MAE -5.0%");
        assert!(r.p_value.unwrap() < 1e-10);
        // Within 1% and agreeing on 100% of the requests within 5%: neutral.
        let data = values((0..300).map(|i| {
            let t = truth(i);
            let e = wiggle(i + 1_000, 6.0);
            (t + e, t + 0.995 * e, t)
        }));
        expect(&regress(&data, ShadowRules::default()), Neutral, "within");
        // The same with a tolerance too tight for the 0.5% differences: mixed.
        let tight = ShadowRules {
            agreement_tolerance: Tolerance {
                absolute: 0.0,
                relative: 1e-6,
            },
            ..Default::default()
        };
        expect(&regress(&data, tight), Investigate, "mixed");
    }

    #[test]
    fn regression_rejects_a_candidate_that_underestimates_too_often() {
        // v2 is closer on average but always below the truth, by up to 3.
        let data = values((0..300).map(|i| {
            let t = truth(i);
            (
                t + wiggle(i + 1_000, 6.0),
                t - wiggle(i + 2_000, 3.0).abs(),
                t,
            )
        }));
        let limit = |share| ShadowRules {
            max_underestimate: Some(Underestimate { by: 2.0, share }),
            ..Default::default()
        };
        let r = regress(&data, limit(0.05));
        expect(&r, Reject, "below the truth by more than 2 (limit 5.0%)");
        let u = r.underestimate.unwrap();
        assert!(u.exceeded && u.labelled == 300 && u.share > 0.2, "{u:?}");
        // Allowed half of them, it is promoted on its MAE.
        expect(&regress(&data, limit(0.5)), Promote, "decrease");
    }

    #[test]
    fn the_spec_chooses_the_paired_test() {
        // Closer by 1 on 30 requests, 10 off on two: the t-test sees nothing (p = 0.52),
        // the signed-rank test does (p = 3e-5); MAE falls 16.7%.
        let data = values((0..32).map(|i| {
            let t = 100.0 + i as f64 * 0.5;
            if i < 30 {
                (t + 2.0, t + 1.0, t)
            } else {
                (t, t + 10.0, t)
            }
        }));
        let r = regress(&data, ShadowRules::default());
        expect(&r, Investigate, "t_test p = 5.18e-1");
        let wilcoxon = ShadowRules {
            test: RegressionTest::Wilcoxon,
            ..Default::default()
        };
        let r = regress(&data, wilcoxon);
        expect(&r, Promote, "wilcoxon p = 2.75e-5");
    }

    #[test]
    fn equal_nonzero_differences_are_conclusive() {
        // The shadow is exactly 1 closer every time: zero variance, p = 0.
        let data = values((0..50).map(|i| {
            let t = truth(i);
            (t + 2.0, t + 1.0, t)
        }));
        let r = regress(&data, ShadowRules::default());
        assert_eq!((r.paired_t, r.p_value), (None, Some(0.0)));
        expect(&r, Promote, "MAE -50.0%");
    }
}
