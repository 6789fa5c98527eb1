//! McNemar's test for paired correct/incorrect outcomes (shadow mode).
//!
//! Reference: statsmodels `mcnemar(table, exact=False, correction=True)` for the chi-square
//! statistic and `exact=True` for the binomial p-value. Only the discordant counts matter:
//! `b` = primary right and shadow wrong, `c` = primary wrong and shadow right.

use serde::{Deserialize, Serialize};
use statrs::distribution::{Binomial, ContinuousCDF, DiscreteCDF};

/// Result of McNemar's test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct McNemar {
    pub b: u64,
    pub c: u64,
    /// `(|b − c| − 1)² / (b + c)`, continuity corrected; 0 when `b + c = 0`.
    pub statistic: f64,
    /// Chi-square (1 df) p-value of `statistic`; 1 when `b + c = 0`.
    pub p_value: f64,
    /// Two-sided exact binomial p-value, `min(1, 2·P(X ≤ min(b, c)))`, `X ~ Bin(b + c, ½)`.
    pub exact_p_value: f64,
}

/// McNemar's test on the discordant pair counts.
pub fn mcnemar(b: u64, c: u64) -> McNemar {
    let n = b + c;
    if n == 0 {
        return McNemar {
            b,
            c,
            statistic: 0.0,
            p_value: 1.0,
            exact_p_value: 1.0,
        };
    }
    let diff = b.abs_diff(c) as f64;
    let statistic = (diff - 1.0).powi(2) / n as f64;
    let p_value = chi2_1df_sf(statistic);
    let exact_p_value = match Binomial::new(0.5, n) {
        Ok(binomial) => (2.0 * binomial.cdf(b.min(c))).min(1.0),
        // n > 0 and p = 0.5 are always valid parameters.
        Err(_) => f64::NAN,
    };
    McNemar {
        b,
        c,
        statistic,
        p_value,
        exact_p_value,
    }
}

fn chi2_1df_sf(x: f64) -> f64 {
    match statrs::distribution::ChiSquared::new(1.0) {
        Ok(dist) => dist.sf(x),
        Err(_) => f64::NAN,
    }
}
