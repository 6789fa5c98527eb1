//! Sequential tests that stay valid when the data are looked at after every observation: the
//! mixture sequential probability ratio test (mSPRT) of Johari, Pekelis and Walsh ("Always
//! valid inference", 2017; "Peeking at A/B tests", KDD 2017) with a normal mixing distribution
//! `N(0, τ²)` over the difference, and the confidence sequences it gives.
//!
//! With an estimate `θ̂` of a difference and its variance `V` (`s²`),
//!
//! ```text
//! Λ(θ) = √(V / (V + τ²)) · exp(τ² (θ̂ − θ)² / (2 V (V + τ²)))
//! ```
//!
//! and H₀: θ = 0 is rejected the first time `Λ(0) ≥ 1/α`. By Ville's inequality the chance of
//! that ever happening under H₀ is at most α, however often one peeks. Inverting the test gives
//! a confidence sequence (Howard, Ramdas, McAuliffe and Sekhon, "Time-uniform, nonparametric,
//! nonasymptotic confidence sequences", 2021, normal mixture boundary): the set of θ with
//! `Λ(θ) < 1/α` is
//!
//! ```text
//! θ̂ ± √( 2 V (V + τ²) / τ² · (ln(1/α) + ½ ln((V + τ²) / V)) )
//! ```
//!
//! and covers the true difference at every look at once with probability at least `1 − α`, so
//! the interval shown is valid at the moment it is read ([`confidence_sequence`]).
//!
//! Three estimates are provided: two proportions (`p̂B − p̂A`, `V = p̂A(1−p̂A)/nA + p̂B(1−p̂B)/nB`,
//! [`msprt_two_proportions`]), two means with estimated variances (`x̄B − x̄A`,
//! `V = s²A/nA + s²B/nB`, [`msprt_two_means`]) and two means with known variances
//! ([`msprt_two_means_known_variance`], exact for normal data). The plug-in variances make the
//! first two asymptotic: no look is taken before `min_trials` per arm.
//! `tests/sequential_sim.rs` checks the false-positive rate and the coverage under continuous
//! peeking by simulation, against a fixed-horizon test and interval peeked the same way.

use serde::{Deserialize, Serialize};

use crate::{check_open_unit, Moments, Proportion, StatsError};

/// Settings of the mSPRT.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MsprtConfig {
    /// Bound on the probability of ever rejecting a true null.
    pub alpha: f64,
    /// Standard deviation of the mixing distribution over the difference: about the size of
    /// effect one expects to find. Small τ favours small effects, large τ large ones.
    pub tau: f64,
    /// Looks before both arms have this many trials are not evaluated (the normal
    /// approximation of the variance needs a few observations).
    pub min_trials: u64,
}

impl Default for MsprtConfig {
    fn default() -> Self {
        MsprtConfig {
            alpha: 0.05,
            tau: 0.05,
            min_trials: 30,
        }
    }
}

impl MsprtConfig {
    pub fn validate(&self) -> Result<(), StatsError> {
        check_open_unit("alpha", self.alpha)?;
        check_tau(self.tau)
    }
}

/// One look at the data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SequentialLook {
    /// The estimated difference, `b − a` (`p̂B − p̂A` or `x̄B − x̄A`).
    pub diff: f64,
    /// Mixture likelihood ratio Λ.
    pub likelihood_ratio: f64,
    /// `1/α`.
    pub threshold: f64,
    /// `min(1, 1/Λ)` at this look; the always-valid p-value is the running minimum of these
    /// (see [`SequentialMonitor`]).
    pub p_value: f64,
    /// Confidence sequence for the difference at this look (valid simultaneously over all
    /// looks; [`SequentialMonitor`] keeps the running intersection, which is valid too).
    pub ci_low: f64,
    pub ci_high: f64,
    /// `Λ ≥ 1/α`.
    pub reject: bool,
}

/// The normal-mixture confidence sequence around `estimate` whose variance is `variance`:
/// `(low, high)`, valid simultaneously over every look at level `1 − alpha` (see the module
/// documentation). `tau` is the mixing standard deviation, in the estimate's units.
pub fn confidence_sequence(
    estimate: f64,
    variance: f64,
    tau: f64,
    alpha: f64,
) -> Result<(f64, f64), StatsError> {
    check_open_unit("alpha", alpha)?;
    check_tau(tau)?;
    if !estimate.is_finite() {
        return Err(StatsError::invalid(
            "estimate",
            format!("must be finite, got {estimate}"),
        ));
    }
    if !(variance.is_finite() && variance > 0.0) {
        return Err(StatsError::invalid(
            "variance",
            format!("must be > 0, got {variance}"),
        ));
    }
    let half = half_width(variance, tau * tau, alpha);
    Ok((estimate - half, estimate + half))
}

fn half_width(s2: f64, tau2: f64, alpha: f64) -> f64 {
    // Λ(θ) < 1/α  ⇔  (θ̂ − θ)² < 2s²(s²+τ²)/τ² · (ln(1/α) + ½ ln((s²+τ²)/s²)).
    (2.0 * s2 * (s2 + tau2) / tau2 * ((1.0 / alpha).ln() + 0.5 * ((s2 + tau2) / s2).ln())).sqrt()
}

fn check_tau(tau: f64) -> Result<(), StatsError> {
    if tau.is_finite() && tau > 0.0 {
        Ok(())
    } else {
        Err(StatsError::invalid(
            "tau",
            format!("must be > 0, got {tau}"),
        ))
    }
}

/// One look of the mSPRT at the estimate `diff` with variance `s2` (both already checked).
fn look(diff: f64, s2: f64, config: &MsprtConfig) -> SequentialLook {
    let tau2 = config.tau * config.tau;
    let ln_ratio = 0.5 * (s2 / (s2 + tau2)).ln() + tau2 * diff * diff / (2.0 * s2 * (s2 + tau2));
    let likelihood_ratio = ln_ratio.exp();
    let threshold = 1.0 / config.alpha;
    let half = half_width(s2, tau2, config.alpha);
    SequentialLook {
        diff,
        likelihood_ratio,
        threshold,
        p_value: (1.0 / likelihood_ratio).min(1.0),
        ci_low: diff - half,
        ci_high: diff + half,
        reject: ln_ratio >= threshold.ln(),
    }
}

fn check_min_trials(n_a: u64, n_b: u64, config: &MsprtConfig) -> Result<(), StatsError> {
    let min = n_a.min(n_b);
    if min < config.min_trials.max(1) {
        return Err(StatsError::Undefined(format!(
            "{min} trials in the smaller arm, need {}",
            config.min_trials.max(1)
        )));
    }
    Ok(())
}

/// Evaluates the mSPRT on the current counts. `Undefined` before `min_trials` per arm or
/// while the estimated variance is zero (all successes or all failures in both arms).
pub fn msprt_two_proportions(
    a: Proportion,
    b: Proportion,
    config: &MsprtConfig,
) -> Result<SequentialLook, StatsError> {
    config.validate()?;
    if a.successes > a.trials || b.successes > b.trials {
        return Err(StatsError::invalid("successes", "exceed trials"));
    }
    check_min_trials(a.trials, b.trials, config)?;
    let (n_a, n_b) = (a.trials as f64, b.trials as f64);
    let (p_a, p_b) = (a.successes as f64 / n_a, b.successes as f64 / n_b);
    let s2 = p_a * (1.0 - p_a) / n_a + p_b * (1.0 - p_b) / n_b;
    if s2 <= 0.0 {
        return Err(StatsError::Undefined("zero variance in both arms".into()));
    }
    Ok(look(p_b - p_a, s2, config))
}

/// The mSPRT for the difference of two means, `mean(b) − mean(a)`, with the variance of the
/// difference estimated from the samples (`s²A/nA + s²B/nB`, as Welch's test). `tau` is in
/// the metric's units. `Undefined` before `min_trials` (and at least 2) per arm or while both
/// samples have zero variance.
pub fn msprt_two_means(
    a: &Moments,
    b: &Moments,
    config: &MsprtConfig,
) -> Result<SequentialLook, StatsError> {
    config.validate()?;
    check_min_trials(a.count(), b.count(), config)?;
    let (Some(mean_a), Some(var_a)) = (a.mean(), a.variance()) else {
        return Err(StatsError::Undefined("fewer than 2 values in a".into()));
    };
    let (Some(mean_b), Some(var_b)) = (b.mean(), b.variance()) else {
        return Err(StatsError::Undefined("fewer than 2 values in b".into()));
    };
    let s2 = var_a / a.count() as f64 + var_b / b.count() as f64;
    if !(s2 > 0.0 && s2.is_finite()) {
        return Err(StatsError::Undefined(
            "both samples have zero variance".into(),
        ));
    }
    Ok(look(mean_b - mean_a, s2, config))
}

/// The mSPRT for `mean(b) − mean(a)` when the variances of single observations are known
/// (`var_a`, `var_b`): exactly valid for normal observations, from the first look on.
pub fn msprt_two_means_known_variance(
    a: &Moments,
    var_a: f64,
    b: &Moments,
    var_b: f64,
    config: &MsprtConfig,
) -> Result<SequentialLook, StatsError> {
    config.validate()?;
    for (field, v) in [("var_a", var_a), ("var_b", var_b)] {
        if !(v.is_finite() && v > 0.0) {
            return Err(StatsError::invalid(field, format!("must be > 0, got {v}")));
        }
    }
    check_min_trials(a.count(), b.count(), config)?;
    let (Some(mean_a), Some(mean_b)) = (a.mean(), b.mean()) else {
        return Err(StatsError::Undefined("an arm has no value".into()));
    };
    let s2 = var_a / a.count() as f64 + var_b / b.count() as f64;
    Ok(look(mean_b - mean_a, s2, config))
}

/// Running state of a sequential test across looks: the always-valid p-value never increases,
/// a rejection is final, and the confidence sequence is the running intersection of the looks'
/// intervals (itself a confidence sequence at the same level, and never wider than any look's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SequentialMonitor {
    pub p_value: f64,
    pub rejected: bool,
    pub looks: u64,
    /// The running intersection of the looks' confidence sequences; `None` before the first
    /// look (and in states recorded before it was kept).
    #[serde(default)]
    pub ci_low: Option<f64>,
    #[serde(default)]
    pub ci_high: Option<f64>,
}

impl Default for SequentialMonitor {
    fn default() -> Self {
        SequentialMonitor {
            p_value: 1.0,
            rejected: false,
            looks: 0,
            ci_low: None,
            ci_high: None,
        }
    }
}

impl SequentialMonitor {
    /// Takes one look at two proportions; looks where the test is undefined leave the state
    /// unchanged.
    pub fn observe(
        &mut self,
        a: Proportion,
        b: Proportion,
        config: &MsprtConfig,
    ) -> Result<Option<SequentialLook>, StatsError> {
        self.take(msprt_two_proportions(a, b, config))
    }

    /// Takes one look at two means (estimated variances, [`msprt_two_means`]).
    pub fn observe_means(
        &mut self,
        a: &Moments,
        b: &Moments,
        config: &MsprtConfig,
    ) -> Result<Option<SequentialLook>, StatsError> {
        self.take(msprt_two_means(a, b, config))
    }

    /// Folds in one look computed elsewhere; an `Undefined` look leaves the state unchanged.
    pub fn take(
        &mut self,
        look: Result<SequentialLook, StatsError>,
    ) -> Result<Option<SequentialLook>, StatsError> {
        match look {
            Ok(look) => {
                self.looks += 1;
                self.p_value = self.p_value.min(look.p_value);
                self.rejected |= look.reject;
                self.ci_low = Some(self.ci_low.map_or(look.ci_low, |l| l.max(look.ci_low)));
                self.ci_high = Some(self.ci_high.map_or(look.ci_high, |h| h.min(look.ci_high)));
                Ok(Some(look))
            }
            Err(StatsError::Undefined(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(s: u64, n: u64) -> Proportion {
        Proportion {
            successes: s,
            trials: n,
        }
    }

    #[test]
    fn undefined_before_min_trials_and_without_variance() {
        let config = MsprtConfig::default();
        assert!(matches!(
            msprt_two_proportions(arm(5, 10), arm(5, 10), &config),
            Err(StatsError::Undefined(_))
        ));
        assert!(matches!(
            msprt_two_proportions(arm(0, 100), arm(0, 100), &config),
            Err(StatsError::Undefined(_))
        ));
        let bad = MsprtConfig { tau: 0.0, ..config };
        assert_eq!(
            msprt_two_proportions(arm(5, 100), arm(5, 100), &bad)
                .unwrap_err()
                .field(),
            Some("tau")
        );
    }

    #[test]
    fn confidence_sequence_excludes_zero_exactly_when_rejecting() {
        let config = MsprtConfig::default();
        for (a, b) in [
            (arm(300, 1000), arm(300, 1000)),
            (arm(300, 1000), arm(380, 1000)),
            (arm(3000, 10000), arm(3150, 10000)),
        ] {
            let look = msprt_two_proportions(a, b, &config).unwrap();
            let excludes_zero = look.ci_low > 0.0 || look.ci_high < 0.0;
            assert_eq!(excludes_zero, look.reject, "{look:?}");
        }
    }

    #[test]
    fn monitor_keeps_the_running_minimum() {
        let config = MsprtConfig::default();
        let mut monitor = SequentialMonitor::default();
        monitor
            .observe(arm(300, 1000), arm(360, 1000), &config)
            .unwrap();
        let after_first = monitor.p_value;
        monitor
            .observe(arm(600, 2000), arm(600, 2000), &config)
            .unwrap();
        assert_eq!(monitor.p_value, after_first);
        assert_eq!(monitor.looks, 2);
        assert_eq!(
            monitor.observe(arm(1, 2), arm(1, 2), &config).unwrap(),
            None
        );
        assert_eq!(monitor.looks, 2);
    }

    fn sample(values: &[f64]) -> Moments {
        Moments::from_slice(values)
    }

    #[test]
    fn means_confidence_sequence_excludes_zero_exactly_when_rejecting() {
        let config = MsprtConfig {
            tau: 0.5,
            min_trials: 2,
            ..MsprtConfig::default()
        };
        let a: Vec<f64> = (0..200).map(|i| f64::from(i % 7)).collect();
        for shift in [0.0, 0.3, 1.0, -2.0] {
            let b: Vec<f64> = a.iter().map(|x| x + shift + 0.1 * (x % 2.0)).collect();
            let look = msprt_two_means(&sample(&a), &sample(&b), &config).unwrap();
            let excludes_zero = look.ci_low > 0.0 || look.ci_high < 0.0;
            assert_eq!(excludes_zero, look.reject, "{look:?}");
            assert!(look.ci_low < look.diff && look.diff < look.ci_high);
        }
        assert!(matches!(
            msprt_two_means(&sample(&[1.0, 1.0]), &sample(&[2.0, 2.0]), &config),
            Err(StatsError::Undefined(_))
        ));
        assert!(matches!(
            msprt_two_means(&sample(&[1.0]), &sample(&[2.0, 3.0]), &config),
            Err(StatsError::Undefined(_))
        ));
    }

    #[test]
    fn known_variance_and_the_bare_sequence_agree() {
        let config = MsprtConfig {
            tau: 0.2,
            min_trials: 1,
            ..MsprtConfig::default()
        };
        let (a, b) = (sample(&[0.1, 0.4, -0.3]), sample(&[1.0, 0.2]));
        let look = msprt_two_means_known_variance(&a, 1.0, &b, 4.0, &config).unwrap();
        let s2 = 1.0 / 3.0 + 4.0 / 2.0;
        let (lo, hi) = confidence_sequence(look.diff, s2, 0.2, 0.05).unwrap();
        assert_eq!((look.ci_low, look.ci_high), (lo, hi));
        assert_eq!(
            msprt_two_means_known_variance(&a, 0.0, &b, 1.0, &config)
                .unwrap_err()
                .field(),
            Some("var_a")
        );
        assert_eq!(
            confidence_sequence(0.0, 0.0, 0.2, 0.05)
                .unwrap_err()
                .field(),
            Some("variance")
        );
        assert_eq!(
            confidence_sequence(0.0, 1.0, 0.2, 1.0).unwrap_err().field(),
            Some("alpha")
        );
        // Wider than the fixed-horizon interval at the same variance: the price of peeking.
        let fixed = 1.959_963_984_540_054 * s2.sqrt();
        assert!(hi - look.diff > fixed);
    }

    #[test]
    fn monitor_keeps_the_running_intersection() {
        let config = MsprtConfig::default();
        let mut monitor = SequentialMonitor::default();
        let first = monitor
            .observe(arm(300, 1000), arm(330, 1000), &config)
            .unwrap()
            .unwrap();
        assert_eq!(
            (monitor.ci_low, monitor.ci_high),
            (Some(first.ci_low), Some(first.ci_high))
        );
        let second = monitor
            .observe(arm(640, 2000), arm(640, 2000), &config)
            .unwrap()
            .unwrap();
        assert_eq!(monitor.ci_low, Some(first.ci_low.max(second.ci_low)));
        assert_eq!(monitor.ci_high, Some(first.ci_high.min(second.ci_high)));
        // A monitor recorded before the interval was kept still reads.
        let old: SequentialMonitor =
            serde_json::from_str(r#"{"p_value":0.5,"rejected":false,"looks":3}"#).unwrap();
        assert_eq!(old.ci_low, None);
    }
}
