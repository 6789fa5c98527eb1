//! The A/B test: a fixed split between control and treatment until the sample size computed
//! from the baseline and the minimum detectable effect is reached (or an mSPRT boundary is
//! crossed), guarded by a sample-ratio-mismatch check.
//!
//! Its spec ([`AbSpec`], [`AbMetric`], written as [`RawAb`]), report ([`ab_report`]) and state
//! machine live here. A spec with more arms, guardrails, a continuous metric or a bandit is run
//! by the k-arm machine in `abn` (and `bandit`); its written form is read here too.

use serde::{Deserialize, Serialize};
use switchyard_stats::chi2::{sample_ratio_mismatch, SampleRatioMismatch};
use switchyard_stats::sequential::MsprtConfig;
use switchyard_stats::stratified::{mantel_haenszel, MantelHaenszel};
use switchyard_stats::{bayes, power, proportions, ttest, Proportion};

use super::raw::{bp, raw_fields, required};
use super::{d, frac, unit, Observations, Out, Phase, Recommendation, RolloutState};
use crate::aggregate::VariantStats;
use crate::audit::{Details, Severity};
use crate::routing::{Arm, Strategy, BUCKETS};
use crate::segments::{Bounded, SegmentStats};

/// What an A/B test measures per arm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbMetric {
    /// Correct predictions among labelled ones.
    Accuracy,
    /// A 0/1 business metric posted as feedback (`metrics: {name: 1}`).
    Conversion(String),
    /// The mean of a continuous business metric posted as feedback (`metrics: {name: 12.5}`):
    /// revenue per request, test time. Compared by Welch's t-test.
    Mean(String),
    /// The absolute error of labelled regression predictions (`value` feedback): the MAE.
    AbsError,
    /// Model errors among requests.
    ErrorRate,
    /// The 95th percentile of latency (ms); a guardrail only.
    LatencyP95,
}

impl AbMetric {
    /// As written: `accuracy`, `conversion:<name>`, `mean:<name>`, `abs_error`, `error_rate`,
    /// `latency_p95`.
    pub fn parse(s: &str) -> Option<AbMetric> {
        match s {
            "accuracy" => Some(AbMetric::Accuracy),
            "abs_error" => Some(AbMetric::AbsError),
            "error_rate" => Some(AbMetric::ErrorRate),
            "latency_p95" => Some(AbMetric::LatencyP95),
            _ => {
                if let Some(name) = s.strip_prefix("conversion:").filter(|n| !n.is_empty()) {
                    Some(AbMetric::Conversion(name.into()))
                } else {
                    s.strip_prefix("mean:")
                        .filter(|n| !n.is_empty())
                        .map(|n| AbMetric::Mean(n.into()))
                }
            }
        }
    }

    /// The written form.
    pub fn name(&self) -> String {
        match self {
            AbMetric::Accuracy => "accuracy".into(),
            AbMetric::Conversion(n) => format!("conversion:{n}"),
            AbMetric::Mean(n) => format!("mean:{n}"),
            AbMetric::AbsError => "abs_error".into(),
            AbMetric::ErrorRate => "error_rate".into(),
            AbMetric::LatencyP95 => "latency_p95".into(),
        }
    }
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
    /// A/B/n: the arms beyond the control and the treatment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<AbVariant>,
    /// How the variants' p-values are adjusted (A/B/n).
    #[serde(default)]
    pub correction: Correction,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<Guardrail>,
    /// The primary metric's direction, when not its own (`mean:` metrics are higher-is-better
    /// unless this says otherwise; `abs_error` and `error_rate` are lower-is-better).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_is_better: Option<bool>,
    /// Samples per arm before a conclusion, instead of the power calculation (required for a
    /// continuous metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_per_arm: Option<u64>,
    /// `kind: bandit`: Thompson sampling moves the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandit: Option<BanditSettings>,
    /// Distinct approvers the conclusion (without `auto_promote`) and a manual promotion need.
    #[serde(default = "super::one")]
    pub approvals: u32,
    /// How a continuous primary metric is compared (`test:`): Welch's t (the default) or
    /// Mann-Whitney.
    #[serde(default, skip_serializing_if = "MeanTest::is_welch")]
    pub test: MeanTest,
    /// A segment field the two-arm test is also read within (`stratify_by:`): per value the
    /// arms' counts, their sample-ratio check and the metric, and the Cochran–Mantel–Haenszel
    /// test over the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stratify_by: Option<String>,
}

/// The test of a continuous primary metric (`mean:<name>`, `abs_error`), variant against the
/// control.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeanTest {
    /// Welch's t on the means, with its interval, from every value's moments.
    #[default]
    Welch,
    /// Mann-Whitney U (two-sided, normal approximation with tie and continuity corrections),
    /// with the common-language effect size, on each arm's bounded uniform sample of values
    /// ([`crate::aggregate::ValueSample`]): robust to heavy tails, it tests whether one arm's
    /// values tend to be larger, not whether the means differ.
    MannWhitney,
}

impl MeanTest {
    /// As written: `welch` or `mann_whitney`.
    pub fn parse(s: &str) -> Option<MeanTest> {
        match s {
            "welch" => Some(MeanTest::Welch),
            "mann_whitney" => Some(MeanTest::MannWhitney),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MeanTest::Welch => "welch",
            MeanTest::MannWhitney => "mann_whitney",
        }
    }

    fn is_welch(&self) -> bool {
        *self == MeanTest::Welch
    }
}

/// A guardrail as written: a metric and exactly one of `max`, `min`, `max_increase`,
/// `max_decrease`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawGuardrail {
    pub metric: Option<String>,
    pub max: Option<f64>,
    pub min: Option<f64>,
    pub max_increase: Option<f64>,
    pub max_decrease: Option<f64>,
    pub min_samples: Option<u64>,
}

/// The bandit's settings as written (`kind: bandit`), percentages in percent.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawBandit {
    pub min_share: Option<f64>,
    pub max_step: Option<f64>,
    pub reweight_every_ms: Option<i64>,
    pub min_samples: Option<u64>,
    pub draws: Option<u32>,
    pub stop_at_p_best: Option<f64>,
}

/// An A/B/n arm as written.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawVariant {
    pub version: String,
    /// Percent; unwritten, the arms share equally.
    pub weight: Option<f64>,
}

/// How the p-values of the variants against the control are adjusted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Correction {
    /// Holm's step-down: as strict as Bonferroni on the smallest p-value, less on the rest.
    #[default]
    Holm,
    Bonferroni,
}

/// One further arm of an A/B/n test (beyond the control and the treatment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbVariant {
    pub version: String,
    /// Basis points.
    pub weight: u32,
}

/// A guardrail's limit and its direction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardLimit {
    /// The arm's value must not exceed this (error rate, p95 in ms, a mean).
    Max(f64),
    /// The arm's value must not fall below this.
    Min(f64),
    /// The arm's value must not exceed the control's by more than this fraction.
    MaxIncrease(f64),
    /// The arm's value must not fall below the control's by more than this fraction.
    MaxDecrease(f64),
}

/// A metric every variant must keep within a limit while the test runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guardrail {
    pub metric: AbMetric,
    pub limit: GuardLimit,
    /// Samples an arm (and, for limits relative to the control, the control) needs before the
    /// guardrail is checked.
    pub min_samples: u64,
}

/// The default `min_samples` of a guardrail.
pub const DEFAULT_GUARDRAIL_MIN_SAMPLES: u64 = 100;

/// Thompson sampling settings of a `kind: bandit` rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BanditSettings {
    /// Smallest share of an active arm, basis points.
    pub min_share: u32,
    /// Largest change of any weight at one re-weighting, basis points.
    pub max_step: u32,
    /// Time between re-weightings (ms).
    pub reweight_every_ms: i64,
    /// Samples every active arm needs before the first re-weighting.
    pub min_samples: u64,
    /// Monte Carlo draws for the probability that each arm is best.
    pub draws: u32,
    /// The bandit concludes when one arm is best with this probability (and every active arm
    /// has `min_per_arm` samples, if set).
    pub stop_at_p_best: f64,
}

impl Default for BanditSettings {
    fn default() -> Self {
        BanditSettings {
            min_share: 500,
            max_step: 1_000,
            reweight_every_ms: 60_000,
            min_samples: 30,
            draws: 10_000,
            stop_at_p_best: 0.95,
        }
    }
}

/// Every arm as `(variant, version, weight)`, control first.
pub fn arms_of(a: &AbSpec) -> Vec<Arm> {
    let others: u32 = a.treatment_weight + a.variants.iter().map(|v| v.weight).sum::<u32>();
    let mut arms = vec![
        Arm {
            variant: "a".into(),
            version: a.control.clone(),
            weight: BUCKETS.saturating_sub(others),
        },
        Arm {
            variant: "b".into(),
            version: a.treatment.clone(),
            weight: a.treatment_weight,
        },
    ];
    for (i, v) in a.variants.iter().enumerate() {
        arms.push(Arm {
            variant: arm_name(i + 2),
            version: v.version.clone(),
            weight: v.weight,
        });
    }
    arms
}

fn arm_name(i: usize) -> String {
    if i < 26 {
        ((b'a' + i as u8) as char).to_string()
    } else {
        format!("arm{i}")
    }
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
        /// `accuracy`, `conversion:<name>`, `mean:<name>`, `abs_error` or `error_rate`.
        metric: Option<String>,
        /// A/B/n: the variants after the treatment (`{version, weight}`; unwritten weights
        /// share 100% equally with the control and the treatment, the control taking the rest).
        variants: Option<Vec<RawVariant>>,
        /// `holm` (default) or `bonferroni`.
        correction: Option<String>,
        guardrails: Option<Vec<RawGuardrail>>,
        lower_is_better: Option<bool>,
        min_per_arm: Option<u64>,
        /// `kind: bandit` only.
        bandit: Option<RawBandit>,
        baseline: Option<f64>,
        mde: Option<f64>,
        alpha: Option<f64>,
        power: Option<f64>,
        sequential: Option<bool>,
        auto_promote: Option<bool>,
        srm_threshold: Option<f64>,
        approvals: Option<u64>,
        /// A continuous metric's test: `welch` (default) or `mann_whitney`.
        test: Option<String>,
        /// A segment field to read the test within (two arms; accuracy or error_rate).
        stratify_by: Option<String>,
    }
}

impl RawAb {
    /// Builds the spec, adding its problems. `bandit` when the kind is `bandit`.
    pub(crate) fn validate(self, problems: &mut Vec<String>, bandit: bool) -> AbSpec {
        let mut metric_written_ok = true;
        let metric = match self.metric.as_deref() {
            None => AbMetric::Accuracy,
            Some(m) => match AbMetric::parse(m).filter(|m| *m != AbMetric::LatencyP95) {
                Some(metric) => metric,
                None => {
                    metric_written_ok = false;
                    problems.push(format!(
                        "metric: '{m}' is not accuracy, conversion:<name>, mean:<name>, abs_error or error_rate"
                    ));
                    AbMetric::Accuracy
                }
            },
        };
        let continuous = matches!(metric, AbMetric::Mean(_) | AbMetric::AbsError);
        let variants_written = self.variants.as_ref().is_some_and(|v| !v.is_empty());
        // Weights: the two-arm form's treatment_weight; with variants, each arm's own or an
        // equal share of 100% among all arms (the control takes the rest).
        let k = 2 + self.variants.as_ref().map_or(0, Vec::len);
        let equal = 100.0 / k as f64;
        let default_tw = if variants_written || bandit {
            equal
        } else {
            50.0
        };
        let tw = bp(
            "treatment_weight",
            self.treatment_weight.unwrap_or(default_tw),
            problems,
        );
        let variants: Vec<AbVariant> = self
            .variants
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, v)| AbVariant {
                weight: bp(
                    &format!("variants[{i}].weight"),
                    v.weight.unwrap_or(equal),
                    problems,
                ),
                version: v.version,
            })
            .collect();
        let correction = match self.correction.as_deref() {
            None | Some("holm") => Correction::Holm,
            Some("bonferroni") => Correction::Bonferroni,
            Some(other) => {
                problems.push(format!(
                    "correction: must be holm or bonferroni, got '{other}'"
                ));
                Correction::Holm
            }
        };
        let guardrails = self
            .guardrails
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, g)| guardrail(i, g, problems))
            .collect();
        let bandit_settings = match (bandit, self.bandit) {
            (true, raw) => Some(bandit_settings(raw.unwrap_or_default(), problems)),
            (false, Some(_)) => {
                problems.push(
                    "bandit: a bandit field; an ab rollout does not take it (use kind: bandit)"
                        .into(),
                );
                None
            }
            (false, None) => None,
        };
        let proportion = !continuous;
        // The power calculation needs a baseline and an effect for a proportion of a
        // fixed-horizon test; a bandit or a written min_per_arm does without.
        let needs_plan = proportion && !bandit && self.min_per_arm.is_none();
        let test = match self.test.as_deref() {
            None => MeanTest::Welch,
            Some(t) => match MeanTest::parse(t) {
                None => {
                    problems.push(format!("test: must be welch or mann_whitney, got '{t}'"));
                    MeanTest::Welch
                }
                Some(_) if !continuous => {
                    let written = self.metric.as_deref().unwrap_or("accuracy");
                    problems.push(format!(
                        "test: {t} compares the values of a continuous metric (mean:<name> or \
                         abs_error), and metric '{written}' is not one{}",
                        if metric_written_ok {
                            " (a proportion is compared by the two-proportion z-test)"
                        } else {
                            ""
                        }
                    ));
                    MeanTest::Welch
                }
                Some(_) if bandit => {
                    problems.push(format!(
                        "test: {t}: a bandit concludes by Thompson sampling's P(best), not by a test"
                    ));
                    MeanTest::Welch
                }
                Some(MeanTest::MannWhitney) if self.sequential == Some(true) => {
                    problems.push(
                        "test: mann_whitney is a fixed-horizon test; sequential: true monitors \
                         the means (mSPRT), so write one or the other"
                            .into(),
                    );
                    MeanTest::Welch
                }
                Some(test) => test,
            },
        };
        if continuous && !bandit && self.min_per_arm.is_none() {
            problems.push(format!(
                "min_per_arm: required for a {} metric (the samples per arm before a conclusion)",
                metric.name()
            ));
        }
        AbSpec {
            control: required(&self.control, "control", "ab", problems),
            treatment: required(&self.treatment, "treatment", "ab", problems),
            treatment_weight: tw,
            metric,
            baseline: self.baseline.unwrap_or_else(|| {
                if needs_plan {
                    problems.push(
                        "baseline: required for an ab rollout (the expected control rate)".into(),
                    );
                }
                0.5
            }),
            mde: self.mde.unwrap_or_else(|| {
                if needs_plan {
                    problems.push(
                        "mde: required for an ab rollout (the smallest effect worth detecting)"
                            .into(),
                    );
                }
                0.05
            }),
            alpha: self.alpha.unwrap_or(0.05),
            power: self.power.unwrap_or(0.8),
            sequential: self.sequential.unwrap_or(false),
            auto_promote: self.auto_promote.unwrap_or(false),
            srm_threshold: self
                .srm_threshold
                .unwrap_or(switchyard_stats::chi2::DEFAULT_SRM_THRESHOLD),
            variants,
            correction,
            guardrails,
            lower_is_better: self.lower_is_better,
            min_per_arm: self.min_per_arm,
            bandit: bandit_settings,
            approvals: super::canary::approvals_count(self.approvals),
            test,
            stratify_by: self.stratify_by.clone(),
        }
    }
}

fn guardrail(i: usize, g: RawGuardrail, problems: &mut Vec<String>) -> Option<Guardrail> {
    let at = format!("guardrails[{i}]");
    let metric = match g.metric.as_deref().map(|m| (m, AbMetric::parse(m))) {
        Some((_, Some(m))) => m,
        Some((m, None)) => {
            problems.push(format!("{at}.metric: '{m}' is not a metric"));
            return None;
        }
        None => {
            problems.push(format!("{at}.metric: required"));
            return None;
        }
    };
    let limits: Vec<GuardLimit> = [
        g.max.map(GuardLimit::Max),
        g.min.map(GuardLimit::Min),
        g.max_increase.map(GuardLimit::MaxIncrease),
        g.max_decrease.map(GuardLimit::MaxDecrease),
    ]
    .into_iter()
    .flatten()
    .collect();
    let [limit] = limits[..] else {
        problems.push(format!(
            "{at}: needs exactly one of max, min, max_increase, max_decrease"
        ));
        return None;
    };
    match limit {
        GuardLimit::Max(x) | GuardLimit::Min(x) if !x.is_finite() => {
            problems.push(format!("{at}: the limit must be a number, got {x}"));
        }
        GuardLimit::MaxIncrease(x) | GuardLimit::MaxDecrease(x) => {
            frac(
                &format!(
                    "{at}.{}",
                    if matches!(limit, GuardLimit::MaxIncrease(_)) {
                        "max_increase"
                    } else {
                        "max_decrease"
                    }
                ),
                x,
                problems,
            );
        }
        _ => {}
    }
    Some(Guardrail {
        metric,
        limit,
        min_samples: g.min_samples.unwrap_or(DEFAULT_GUARDRAIL_MIN_SAMPLES),
    })
}

fn bandit_settings(raw: RawBandit, problems: &mut Vec<String>) -> BanditSettings {
    let default = BanditSettings::default();
    let settings = BanditSettings {
        min_share: raw
            .min_share
            .map_or(default.min_share, |p| bp("bandit.min_share", p, problems)),
        max_step: raw
            .max_step
            .map_or(default.max_step, |p| bp("bandit.max_step", p, problems)),
        reweight_every_ms: raw.reweight_every_ms.unwrap_or(default.reweight_every_ms),
        min_samples: raw.min_samples.unwrap_or(default.min_samples),
        draws: raw.draws.unwrap_or(default.draws),
        stop_at_p_best: raw.stop_at_p_best.unwrap_or(default.stop_at_p_best),
    };
    if settings.reweight_every_ms < 0 {
        problems.push("bandit.reweight_every_ms must not be negative".into());
    }
    if settings.draws == 0 {
        problems.push("bandit.draws must be at least 1".into());
    }
    unit("bandit.stop_at_p_best", settings.stop_at_p_best, problems);
    settings
}

/// The A/B test's own problems.
pub(super) fn problems(a: &AbSpec, declared: &[&str], p: &mut Vec<String>) {
    if let Some(field) = &a.stratify_by {
        if field.is_empty() {
            p.push("stratify_by: names a segment field of the model, got ''".into());
        }
        if !a.variants.is_empty() || a.bandit.is_some() {
            p.push("stratify_by: applies to a two-arm A/B test (no variants, not a bandit)".into());
        }
        if !matches!(a.metric, AbMetric::Accuracy | AbMetric::ErrorRate) {
            p.push(format!(
                "stratify_by: applies to the accuracy and error_rate metrics (what segments keep), not {}",
                a.metric.name()
            ));
        }
    }
    let others =
        u64::from(a.treatment_weight) + a.variants.iter().map(|v| u64::from(v.weight)).sum::<u64>();
    if a.variants.is_empty() {
        if a.treatment_weight == 0 || a.treatment_weight >= BUCKETS {
            p.push(format!(
                "treatment weight must be in (0, 100)%, got {}%",
                f64::from(a.treatment_weight) / 100.0
            ));
        }
    } else if others >= u64::from(BUCKETS)
        || a.treatment_weight == 0
        || a.variants.iter().any(|v| v.weight == 0)
    {
        p.push(format!(
            "every arm needs a weight above 0% and the variants less than 100% together, got {}% for the variants",
            others as f64 / 100.0
        ));
    }
    let mut versions: Vec<&str> = vec![&a.control, &a.treatment];
    for v in &a.variants {
        if !declared.contains(&v.version.as_str()) {
            p.push(format!(
                "unknown version '{}' in variants (declared: {})",
                v.version,
                declared.join(", ")
            ));
        }
        versions.push(&v.version);
    }
    let mut sorted = versions.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) && a.variants.iter().any(|_| true) {
        p.push("every arm of an A/B/n test needs its own version".into());
    }
    let plan = matches!(
        a.metric,
        AbMetric::Accuracy | AbMetric::Conversion(_) | AbMetric::ErrorRate
    ) && a.bandit.is_none()
        && a.min_per_arm.is_none();
    if plan {
        if let Err(e) = power::sample_size_two_proportions(a.baseline, a.mde, a.alpha, a.power) {
            p.push(format!("sample size: {e}"));
        }
    }
    unit("srm_threshold", a.srm_threshold, p);
    super::approvals("approvals", a.approvals, p);
    if let Some(b) = &a.bandit {
        let k = 2 + a.variants.len() as u64;
        if u64::from(b.min_share) * k > u64::from(BUCKETS) {
            p.push(format!(
                "bandit.min_share: {k} arms of {}% exceed 100%",
                f64::from(b.min_share) / 100.0
            ));
        }
    }
}

/// The split of an A/B (or A/B/n) test under the experiment's salt.
pub(super) fn ab_strategy(a: &AbSpec, salt: Option<String>) -> Strategy {
    Strategy::split(arms_of(a), salt)
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
    /// With `stratify_by`: the test read within each value of the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stratified: Option<StratifiedAb>,
}

/// A two-arm test read within the values of one segment field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StratifiedAb {
    pub field: String,
    /// One row per value (the bounded values of the field, `other` last when present).
    pub strata: Vec<Stratum>,
    /// Over the strata with both arms: the pooled odds ratio (treatment's odds over the
    /// control's) and the CMH test; `None` while undefined (no discordant outcomes yet).
    pub mantel_haenszel: Option<MantelHaenszel>,
}

/// One value of a stratified test's field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stratum {
    pub value: String,
    pub control_requests: u64,
    pub treatment_requests: u64,
    /// The metric within the value.
    pub control: Proportion,
    pub treatment: Proportion,
    /// The arms' request counts against their weights within the value: a hashed split is
    /// balanced within every value of a field it does not see.
    pub srm: Option<SampleRatioMismatch>,
}

/// The metric of one segment value (the metrics a segment keeps: accuracy and error rate).
fn segment_metric(s: &SegmentStats, metric: &AbMetric) -> Proportion {
    match metric {
        AbMetric::ErrorRate => Proportion {
            successes: s.errors.min(s.requests),
            trials: s.requests,
        },
        _ => s.correct,
    }
}

/// The stratified reading of a two-arm test over `field`.
fn stratified(
    a: &AbSpec,
    field: &str,
    control: &VariantStats,
    treatment: &VariantStats,
) -> StratifiedAb {
    let empty = Bounded::<SegmentStats>::default();
    let (c, t) = (
        control.segments.get(field).unwrap_or(&empty),
        treatment.segments.get(field).unwrap_or(&empty),
    );
    let mut values: Vec<&String> = c.values().keys().chain(t.values().keys()).collect();
    values.sort();
    values.dedup();
    let zero = SegmentStats::default();
    let mut rows: Vec<(String, &SegmentStats, &SegmentStats)> = values
        .into_iter()
        .map(|v| {
            (
                v.clone(),
                c.values().get(v).unwrap_or(&zero),
                t.values().get(v).unwrap_or(&zero),
            )
        })
        .collect();
    if c.has_other() || t.has_other() {
        rows.push(("other".to_string(), c.other(), t.other()));
    }
    let wb = f64::from(a.treatment_weight) / f64::from(BUCKETS);
    let strata: Vec<Stratum> = rows
        .into_iter()
        .map(|(value, c, t)| {
            let observed = [c.requests, t.requests];
            Stratum {
                value,
                control_requests: c.requests,
                treatment_requests: t.requests,
                control: segment_metric(c, &a.metric),
                treatment: segment_metric(t, &a.metric),
                srm: (observed.iter().sum::<u64>() > 0)
                    .then(|| {
                        sample_ratio_mismatch(&observed, &[1.0 - wb, wb], a.srm_threshold).ok()
                    })
                    .flatten(),
            }
        })
        .collect();
    let pairs: Vec<(Proportion, Proportion)> =
        strata.iter().map(|s| (s.control, s.treatment)).collect();
    StratifiedAb {
        field: field.to_string(),
        mantel_haenszel: mantel_haenszel(&pairs, a.alpha).ok(),
        strata,
    }
}

pub(crate) fn metric_of(stats: &VariantStats, metric: &AbMetric) -> Proportion {
    match metric {
        AbMetric::Accuracy => stats.correct,
        AbMetric::Conversion(name) => stats.metrics.get(name).map_or(Proportion::default(), |m| {
            let trials = m.count();
            let successes = (m.mean().unwrap_or(0.0) * trials as f64)
                .round()
                .clamp(0.0, trials as f64) as u64;
            Proportion { successes, trials }
        }),
        AbMetric::ErrorRate => Proportion {
            successes: stats.errors.min(stats.requests),
            trials: stats.requests,
        },
        AbMetric::Mean(_) | AbMetric::AbsError | AbMetric::LatencyP95 => Proportion::default(),
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
        stratified: a
            .stratify_by
            .as_deref()
            .map(|field| stratified(a, field, &c, &t)),
    }
}

/// A sample-ratio mismatch: said once (an `srm_detected` event with the test's numbers and
/// `extra`, and a P1 alert), and no conclusion while it lasts.
pub(super) fn hold_on_srm(
    state: &mut RolloutState,
    out: &mut Out<'_>,
    srm: &SampleRatioMismatch,
    extra: Details,
    message: &str,
) {
    if !state.srm_alerted {
        state.srm_alerted = true;
        let mut details = vec![
            d("chi_square", srm.statistic),
            d("p_value", srm.p_value),
            d("threshold", srm.threshold),
        ];
        details.extend(extra);
        out.event("srm_detected", message, details.clone());
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
}

pub(super) fn tick_ab(a: &AbSpec, state: &mut RolloutState, obs: &Observations, out: &mut Out<'_>) {
    if state.phase != Phase::Running {
        return;
    }
    let report = ab_report(a, obs);
    let total_requests: u64 = obs.by_variant.values().sum();
    if let Some(srm) = &report.srm {
        if srm.mismatch && total_requests >= 100 {
            hold_on_srm(
                state,
                out,
                srm,
                vec![],
                "sample-ratio mismatch: the observed split differs from the configured weights",
            );
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
        // The always-valid interval beside the fixed-horizon one.
        if let (Some(lo), Some(hi)) = (m.ci_low, m.ci_high) {
            details.push(d("cs_low", lo));
            details.push(d("cs_high", hi));
        }
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
    let keep = winner.unwrap_or(&a.control).to_string();
    super::promote_or_await(a.auto_promote, state, out, &keep, &verdict, details);
}
