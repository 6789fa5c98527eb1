//! The shadow: the candidate sees a sample of live traffic mirrored, its answers are compared
//! with the primary's (agreement, McNemar on labelled pairs, a paired t-test for regression)
//! and never served; the comparison ends in a recommendation, and on PROMOTE it may chain a
//! canary.
//!
//! Its spec ([`ShadowSpec`], written as [`RawShadow`]), report ([`shadow_report`]) and state
//! machine live here.

use serde::{Deserialize, Serialize};
use switchyard_stats::{mcnemar, ttest};

use super::canary::RawCanary;
use super::raw::{bp, raw_fields, required};
use super::{
    d, frac, opt, single, unit, Action, CanarySpec, Observations, Out, Phase, Recommendation,
    RolloutKind, RolloutSpec, RolloutState,
};
use crate::aggregate::{PairStats, VariantStats};
use crate::audit::Severity;
use crate::routing::BUCKETS;

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

// ---------------------------------------------------------------------------------------------
// As written (`rollout_config`): percentages in percent, durations in milliseconds.

raw_fields! {
    /// A shadow as written.
    pub struct RawShadow {
        primary: Option<String>,
        candidate: Option<String>,
        /// Percent of requests mirrored.
        sample: Option<f64>,
        min_labelled: Option<u64>,
        min_duration_ms: Option<u64>,
        min_improvement: Option<f64>,
        max_drop: Option<f64>,
        alpha: Option<f64>,
        min_agreement: Option<f64>,
        max_error_rate: Option<f64>,
        /// Takes a canary's fields.
        then_canary: Option<RawCanary>,
        chain_requires_approval: Option<bool>,
    }
}

impl RawShadow {
    /// Builds the spec, adding its problems.
    pub(crate) fn validate(self, problems: &mut Vec<String>) -> ShadowSpec {
        ShadowSpec {
            primary: required(&self.primary, "primary", "shadow", problems),
            candidate: required(&self.candidate, "candidate", "shadow", problems),
            sample: bp("sample", self.sample.unwrap_or(100.0), problems),
            min_labelled: self.min_labelled.unwrap_or(1_000),
            min_duration_ms: self.min_duration_ms.unwrap_or(0),
            min_improvement: self.min_improvement.unwrap_or(0.02),
            max_drop: self.max_drop.unwrap_or(0.01),
            alpha: self.alpha.unwrap_or(0.05),
            min_agreement: self.min_agreement.unwrap_or(0.5),
            max_error_rate: self.max_error_rate.unwrap_or(0.05),
            then_canary: self
                .then_canary
                .map(|c| c.validate(problems, "then_canary.")),
            chain_requires_approval: self.chain_requires_approval.unwrap_or(false),
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
    frac("min_improvement", s.min_improvement, p);
    frac("max_drop", s.max_drop, p);
    unit("alpha", s.alpha, p);
    frac("min_agreement", s.min_agreement, p);
    frac("max_error_rate", s.max_error_rate, p);
    if let Some(c) = &s.then_canary {
        let chained = RolloutSpec {
            name: spec.name.clone(),
            model: spec.model.clone(),
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

/// Shadow-mode comparison of the candidate against the primary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
