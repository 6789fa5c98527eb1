//! The A/B test: a fixed split between control and treatment until the sample size computed
//! from the baseline and the minimum detectable effect is reached (or an mSPRT boundary is
//! crossed), guarded by a sample-ratio-mismatch check.
//!
//! Its spec ([`AbSpec`], [`AbMetric`], written as [`RawAb`]), report ([`ab_report`]) and state
//! machine live here.

use serde::{Deserialize, Serialize};
use switchyard_stats::chi2::sample_ratio_mismatch;
use switchyard_stats::sequential::MsprtConfig;
use switchyard_stats::{bayes, power, proportions, ttest, Proportion};

use super::raw::{bp, raw_fields, required};
use super::{d, single, unit, Observations, Out, Phase, Recommendation, RolloutState};
use crate::aggregate::VariantStats;
use crate::audit::Severity;
use crate::routing::{Arm, Strategy, BUCKETS};

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
    /// Distinct approvers the conclusion (without `auto_promote`) and a manual promotion need.
    #[serde(default = "super::one")]
    pub approvals: u32,
}

// ---------------------------------------------------------------------------------------------
// As written (`rollout_config`): percentages in percent.

raw_fields! {
    /// An A/B test as written.
    pub struct RawAb {
        control: Option<String>,
        treatment: Option<String>,
        /// Percent of traffic to the treatment.
        treatment_weight: Option<f64>,
        /// `accuracy` or `conversion:<metric name>`.
        metric: Option<String>,
        baseline: Option<f64>,
        mde: Option<f64>,
        alpha: Option<f64>,
        power: Option<f64>,
        sequential: Option<bool>,
        auto_promote: Option<bool>,
        srm_threshold: Option<f64>,
        approvals: Option<u64>,
    }
}

impl RawAb {
    /// Builds the spec, adding its problems.
    pub(crate) fn validate(self, problems: &mut Vec<String>) -> AbSpec {
        let metric = match self.metric.as_deref() {
            None | Some("accuracy") => AbMetric::Accuracy,
            Some(m) => match m.strip_prefix("conversion:") {
                Some(name) if !name.is_empty() => AbMetric::Conversion(name.to_string()),
                _ => {
                    problems.push(format!(
                        "metric: '{m}' is not accuracy or conversion:<metric name>"
                    ));
                    AbMetric::Accuracy
                }
            },
        };
        let tw = bp(
            "treatment_weight",
            self.treatment_weight.unwrap_or(50.0),
            problems,
        );
        AbSpec {
            control: required(&self.control, "control", "ab", problems),
            treatment: required(&self.treatment, "treatment", "ab", problems),
            treatment_weight: tw,
            metric,
            baseline: self.baseline.unwrap_or_else(|| {
                problems.push(
                    "baseline: required for an ab rollout (the expected control rate)".into(),
                );
                0.5
            }),
            mde: self.mde.unwrap_or_else(|| {
                problems.push(
                    "mde: required for an ab rollout (the smallest effect worth detecting)".into(),
                );
                0.05
            }),
            alpha: self.alpha.unwrap_or(0.05),
            power: self.power.unwrap_or(0.8),
            sequential: self.sequential.unwrap_or(false),
            auto_promote: self.auto_promote.unwrap_or(false),
            srm_threshold: self
                .srm_threshold
                .unwrap_or(switchyard_stats::chi2::DEFAULT_SRM_THRESHOLD),
            approvals: super::canary::approvals_count(self.approvals),
        }
    }
}

/// The A/B test's own problems.
pub(super) fn problems(a: &AbSpec, p: &mut Vec<String>) {
    if a.treatment_weight == 0 || a.treatment_weight >= BUCKETS {
        p.push(format!(
            "treatment weight must be in (0, 100)%, got {}%",
            f64::from(a.treatment_weight) / 100.0
        ));
    }
    if let Err(e) = power::sample_size_two_proportions(a.baseline, a.mde, a.alpha, a.power) {
        p.push(format!("sample size: {e}"));
    }
    unit("srm_threshold", a.srm_threshold, p);
    super::approvals("approvals", a.approvals, p);
}

pub(super) fn ab_strategy(a: &AbSpec) -> Strategy {
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

/// A/B analysis of the configured metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

pub(super) fn tick_ab(a: &AbSpec, state: &mut RolloutState, obs: &Observations, out: &mut Out<'_>) {
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
