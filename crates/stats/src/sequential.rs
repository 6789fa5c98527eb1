//! A sequential test for the difference of two proportions that stays valid when the data are
//! looked at after every observation: the mixture sequential probability ratio test (mSPRT) of
//! Johari, Pekelis and Walsh ("Always valid inference", 2017) with a normal mixing distribution
//! `N(0, τ²)` over the difference.
//!
//! With `θ̂ = p̂B − p̂A` and its variance `s² = p̂A(1−p̂A)/nA + p̂B(1−p̂B)/nB`,
//!
//! ```text
//! Λ = √(s² / (s² + τ²)) · exp(τ² θ̂² / (2 s² (s² + τ²)))
//! ```
//!
//! and H₀: θ = 0 is rejected the first time `Λ ≥ 1/α`. By Ville's inequality the chance of
//! that ever happening under H₀ is at most α, however often one peeks. Inverting the test gives
//! a confidence sequence for θ. `tests/sequential_sim.rs` checks the false-positive rate by
//! simulation against a fixed-horizon z-test peeked the same way.

use serde::{Deserialize, Serialize};

use crate::{check_open_unit, Proportion, StatsError};

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
        if !(self.tau.is_finite() && self.tau > 0.0) {
            return Err(StatsError::invalid(
                "tau",
                format!("must be > 0, got {}", self.tau),
            ));
        }
        Ok(())
    }
}

/// One look at the data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SequentialLook {
    /// `p̂B − p̂A`.
    pub diff: f64,
    /// Mixture likelihood ratio Λ.
    pub likelihood_ratio: f64,
    /// `1/α`.
    pub threshold: f64,
    /// `min(1, 1/Λ)` at this look; the always-valid p-value is the running minimum of these
    /// (see [`SequentialMonitor`]).
    pub p_value: f64,
    /// Confidence sequence for `pB − pA` at this look (valid simultaneously over all looks).
    pub ci_low: f64,
    pub ci_high: f64,
    /// `Λ ≥ 1/α`.
    pub reject: bool,
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
    let min = a.trials.min(b.trials);
    if min < config.min_trials.max(1) {
        return Err(StatsError::Undefined(format!(
            "{min} trials in the smaller arm, need {}",
            config.min_trials.max(1)
        )));
    }
    let (n_a, n_b) = (a.trials as f64, b.trials as f64);
    let (p_a, p_b) = (a.successes as f64 / n_a, b.successes as f64 / n_b);
    let s2 = p_a * (1.0 - p_a) / n_a + p_b * (1.0 - p_b) / n_b;
    if s2 <= 0.0 {
        return Err(StatsError::Undefined("zero variance in both arms".into()));
    }
    let tau2 = config.tau * config.tau;
    let diff = p_b - p_a;
    let ln_ratio = 0.5 * (s2 / (s2 + tau2)).ln() + tau2 * diff * diff / (2.0 * s2 * (s2 + tau2));
    let likelihood_ratio = ln_ratio.exp();
    let threshold = 1.0 / config.alpha;
    // Λ(θ) < 1/α  ⇔  (θ̂ − θ)² < 2s²(s²+τ²)/τ² · (ln(1/α) + ½ ln((s²+τ²)/s²)).
    let half_width =
        (2.0 * s2 * (s2 + tau2) / tau2 * (threshold.ln() + 0.5 * ((s2 + tau2) / s2).ln())).sqrt();
    Ok(SequentialLook {
        diff,
        likelihood_ratio,
        threshold,
        p_value: (1.0 / likelihood_ratio).min(1.0),
        ci_low: diff - half_width,
        ci_high: diff + half_width,
        reject: ln_ratio >= threshold.ln(),
    })
}

/// Running state of a sequential test across looks: the always-valid p-value never increases
/// and a rejection is final.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SequentialMonitor {
    pub p_value: f64,
    pub rejected: bool,
    pub looks: u64,
}

impl Default for SequentialMonitor {
    fn default() -> Self {
        SequentialMonitor {
            p_value: 1.0,
            rejected: false,
            looks: 0,
        }
    }
}

impl SequentialMonitor {
    /// Takes one look; looks where the test is undefined leave the state unchanged.
    pub fn observe(
        &mut self,
        a: Proportion,
        b: Proportion,
        config: &MsprtConfig,
    ) -> Result<Option<SequentialLook>, StatsError> {
        match msprt_two_proportions(a, b, config) {
            Ok(look) => {
                self.looks += 1;
                self.p_value = self.p_value.min(look.p_value);
                self.rejected |= look.reject;
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
}
