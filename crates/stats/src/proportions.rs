//! Comparing two proportions (A/B tests, canary error rates).
//!
//! References: statsmodels `proportions_ztest` (pooled z-test, two-sided),
//! `confint_proportions_2indep(method="wald")` (unpooled Wald interval of the difference) and
//! `method="newcomb"` (Newcombe's hybrid score interval from two Wilson intervals),
//! `proportion_confint(method="wilson")`. Differences are always `b − a`: the candidate minus
//! the baseline.

use serde::{Deserialize, Serialize};

use crate::{check_open_unit, normal, Proportion, StatsError};

/// Result of comparing arm B against arm A.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TwoProportionTest {
    pub p_a: f64,
    pub p_b: f64,
    /// `p_b − p_a`.
    pub diff: f64,
    /// Pooled z statistic for `p_b − p_a`; 0 when both arms are all successes or all failures.
    pub z: f64,
    /// Two-sided p-value; 1 when `z` is 0.
    pub p_value: f64,
    pub alpha: f64,
    /// Unpooled Wald interval of `diff` at level `1 − alpha`.
    pub ci_low: f64,
    pub ci_high: f64,
    /// Newcombe (Wilson score) interval of `diff`.
    pub newcombe_low: f64,
    pub newcombe_high: f64,
    /// `(p_b − p_a) / p_a`; `None` when `p_a = 0`.
    pub relative_lift: Option<f64>,
}

fn check_arm(
    successes_field: &'static str,
    trials_field: &'static str,
    arm: Proportion,
) -> Result<f64, StatsError> {
    if arm.trials == 0 {
        return Err(StatsError::invalid(trials_field, "must be at least 1"));
    }
    crate::check_successes(successes_field, &arm)?;
    Ok(arm.successes as f64 / arm.trials as f64)
}

/// Pooled two-proportion z-test of B against A, with intervals for the difference.
pub fn two_proportion_ztest(
    a: Proportion,
    b: Proportion,
    alpha: f64,
) -> Result<TwoProportionTest, StatsError> {
    let p_a = check_arm("successes_a", "trials_a", a)?;
    let p_b = check_arm("successes_b", "trials_b", b)?;
    check_open_unit("alpha", alpha)?;
    let (n_a, n_b) = (a.trials as f64, b.trials as f64);
    let diff = p_b - p_a;

    let pooled = (a.successes + b.successes) as f64 / (n_a + n_b);
    let se_pooled = (pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)).sqrt();
    let z = if se_pooled > 0.0 {
        diff / se_pooled
    } else {
        0.0
    };
    let p_value = normal::two_sided_p(z);

    let crit = normal::ppf(1.0 - alpha / 2.0);
    let se_wald = (p_a * (1.0 - p_a) / n_a + p_b * (1.0 - p_b) / n_b).sqrt();
    let (wilson_a_low, wilson_a_high) = wilson(p_a, n_a, crit);
    let (wilson_b_low, wilson_b_high) = wilson(p_b, n_b, crit);
    let newcombe_low = diff - ((p_b - wilson_b_low).powi(2) + (wilson_a_high - p_a).powi(2)).sqrt();
    let newcombe_high =
        diff + ((wilson_b_high - p_b).powi(2) + (p_a - wilson_a_low).powi(2)).sqrt();

    Ok(TwoProportionTest {
        p_a,
        p_b,
        diff,
        z,
        p_value,
        alpha,
        ci_low: diff - crit * se_wald,
        ci_high: diff + crit * se_wald,
        newcombe_low,
        newcombe_high,
        relative_lift: (p_a > 0.0).then(|| diff / p_a),
    })
}

/// Wilson score interval of a proportion at level `1 − alpha`, as statsmodels
/// `proportion_confint(successes, trials, alpha, method="wilson")`.
pub fn wilson_interval(p: Proportion, alpha: f64) -> Result<(f64, f64), StatsError> {
    check_open_unit("alpha", alpha)?;
    let rate = check_arm("successes", "trials", p)?;
    let (low, high) = wilson(rate, p.trials as f64, normal::ppf(1.0 - alpha / 2.0));
    Ok((low.max(0.0), high.min(1.0)))
}

/// Wilson score interval for a proportion `p` observed on `n` trials, with critical value `crit`.
pub fn wilson(p: f64, n: f64, crit: f64) -> (f64, f64) {
    let crit2 = crit * crit;
    let denom = 1.0 + crit2 / n;
    let center = (p + crit2 / (2.0 * n)) / denom;
    let dist = crit * (p * (1.0 - p) / n + crit2 / (4.0 * n * n)).sqrt() / denom;
    (center - dist, center + dist)
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
    fn bad_counts_name_the_field() {
        let err = two_proportion_ztest(arm(5, 4), arm(1, 2), 0.05).unwrap_err();
        assert_eq!(err.field(), Some("successes_a"));
        let err = two_proportion_ztest(arm(1, 2), arm(0, 0), 0.05).unwrap_err();
        assert_eq!(err.field(), Some("trials_b"));
        for alpha in [0.0, 1.0, -0.1, f64::NAN] {
            let err = two_proportion_ztest(arm(1, 2), arm(1, 2), alpha).unwrap_err();
            assert_eq!(err.field(), Some("alpha"));
        }
    }

    #[test]
    fn identical_degenerate_arms_are_not_significant() {
        // statsmodels returns nan here; we report "no evidence of a difference".
        for (a, b) in [(arm(0, 10), arm(0, 20)), (arm(10, 10), arm(7, 7))] {
            let r = two_proportion_ztest(a, b, 0.05).unwrap();
            assert_eq!(r.z, 0.0);
            assert_eq!(r.p_value, 1.0);
            assert_eq!(r.diff, 0.0);
        }
    }
}
