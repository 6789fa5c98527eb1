//! Comparing two proportions within strata: the Cochran–Mantel–Haenszel test of a common odds
//! ratio of 1 and the Mantel–Haenszel pooled odds ratio with its Robins–Breslow–Greenland
//! interval. A stratified A/B test (arms compared within each region, tier, tester) reads its
//! overall effect here, so a different mix of strata between the arms cannot make one up.
//!
//! Reference: statsmodels `StratifiedTable`: `oddsratio_pooled`, `logodds_pooled_se`,
//! `oddsratio_pooled_confint` and `test_null_odds(correction=False)`, on the 2×2 tables
//! `[[b successes, b failures], [a successes, a failures]]` of each stratum, so the odds ratio
//! is B's odds over A's (the candidate against the baseline, as everywhere in this crate).

use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF};

use crate::{check_open_unit, normal, Proportion, StatsError};

/// The Mantel–Haenszel comparison of B against A over strata.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MantelHaenszel {
    /// Strata that count (at least two observations; both arms need not be present, but a
    /// stratum with one arm only adds nothing).
    pub strata: usize,
    /// The pooled odds ratio, B's odds over A's.
    pub odds_ratio: f64,
    /// Interval of the pooled odds ratio at level `1 − alpha`.
    pub ci_low: f64,
    pub ci_high: f64,
    /// The CMH statistic (χ², 1 degree of freedom, no continuity correction).
    pub statistic: f64,
    pub p_value: f64,
    pub alpha: f64,
}

/// The CMH test and the pooled odds ratio of B against A over `strata` (each one `(a, b)`).
pub fn mantel_haenszel(
    strata: &[(Proportion, Proportion)],
    alpha: f64,
) -> Result<MantelHaenszel, StatsError> {
    check_open_unit("alpha", alpha)?;
    for (a, b) in strata {
        crate::check_successes("a", a)?;
        crate::check_successes("b", b)?;
    }
    // Per stratum: the table [[s_b, f_b], [s_a, f_a]] = [[p, q], [r, t]].
    let (mut ad_n, mut bc_n, mut diff, mut var, mut used) = (0.0, 0.0, 0.0, 0.0, 0usize);
    let (mut rbg_ad, mut rbg_mid, mut rbg_bc) = (0.0, 0.0, 0.0);
    for (a, b) in strata {
        let (p, q) = (b.successes as f64, (b.trials - b.successes) as f64);
        let (r, t) = (a.successes as f64, (a.trials - a.successes) as f64);
        let n = p + q + r + t;
        if n < 2.0 {
            continue;
        }
        used += 1;
        let (ad, bc, apd) = (p * t, q * r, p + t);
        ad_n += ad / n;
        bc_n += bc / n;
        // Observed minus expected of the first cell, and its hypergeometric variance.
        diff += p - (p + q) * (p + r) / n;
        var += (p + q) * (p + r) * (q + t) * (r + t) / (n * n * (n - 1.0));
        rbg_ad += apd * ad / (n * n);
        rbg_mid += apd * bc / (n * n) + (1.0 - apd / n) * ad / n;
        rbg_bc += (1.0 - apd / n) * bc / n;
    }
    if ad_n <= 0.0 || bc_n <= 0.0 {
        return Err(StatsError::Undefined(
            "the pooled odds ratio needs discordant outcomes in both directions (a success of B against a failure of A and the reverse) in some stratum".into(),
        ));
    }
    if var <= 0.0 {
        return Err(StatsError::Undefined(
            "no stratum has both arms and both outcomes".into(),
        ));
    }
    let odds_ratio = ad_n / bc_n;
    let log_var = (rbg_ad / (ad_n * ad_n) + rbg_mid / (ad_n * bc_n) + rbg_bc / (bc_n * bc_n)) / 2.0;
    let half = normal::ppf(1.0 - alpha / 2.0) * log_var.sqrt();
    let statistic = diff * diff / var;
    let p_value = ChiSquared::new(1.0)
        .map_err(|e| StatsError::Undefined(e.to_string()))?
        .sf(statistic);
    Ok(MantelHaenszel {
        strata: used,
        odds_ratio,
        ci_low: (odds_ratio.ln() - half).exp(),
        ci_high: (odds_ratio.ln() + half).exp(),
        statistic,
        p_value,
        alpha,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn p(successes: u64, trials: u64) -> Proportion {
        Proportion { successes, trials }
    }

    #[test]
    fn bad_and_undefined_inputs_say_so() {
        let e = mantel_haenszel(&[(p(3, 2), p(1, 2))], 0.05).unwrap_err();
        assert_eq!(e.field(), Some("a"));
        let e = mantel_haenszel(&[(p(1, 2), p(1, 2))], 1.5).unwrap_err();
        assert_eq!(e.field(), Some("alpha"));
        // Every B a success and every A a success: no discordant pair.
        assert!(matches!(
            mantel_haenszel(&[(p(5, 5), p(5, 5))], 0.05),
            Err(StatsError::Undefined(_))
        ));
        assert!(matches!(
            mantel_haenszel(&[], 0.05),
            Err(StatsError::Undefined(_))
        ));
    }
}
