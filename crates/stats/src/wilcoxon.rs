//! Wilcoxon signed-rank test on paired samples, e.g. the absolute errors of two regressors on
//! the same requests when their differences are far from normal.
//!
//! Reference: scipy `wilcoxon(x, y, zero_method="wilcox", correction=False,
//! alternative="two-sided", method=…)`. Zero differences are dropped; tied absolute differences
//! share their average rank. `statistic` is `min(R+, R-)`. `Approx` is the normal
//! approximation with scipy's tie correction of the variance; `Exact` is the exact null
//! distribution of R+ (defined only without ties or zeros); `Permutation` is the exact
//! distribution of R+ over every flip of the signs of the (average) ranks, which holds with
//! ties. `Auto` is scipy's choice: `Exact` for up to 50 differences without ties or zeros, else
//! `Permutation` for up to 13 non-zero differences, else `Approx`.

use serde::{Deserialize, Serialize};

use crate::{normal, StatsError};

/// How the p-value is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WilcoxonMethod {
    Auto,
    Exact,
    Permutation,
    Approx,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Wilcoxon {
    /// `min(R+, R-)`.
    pub statistic: f64,
    /// Sum of the ranks of the positive differences (`x - y > 0`).
    pub r_plus: f64,
    /// z of `R+` under the normal approximation (with the tie correction), whatever the method.
    pub z: f64,
    pub p_value: f64,
    /// Non-zero differences the test used.
    pub n: u64,
    /// The method that produced `p_value` (`Auto` resolved).
    pub method: WilcoxonMethod,
}

/// Largest number of differences `Auto` computes exactly when none is tied or zero (scipy's).
pub const EXACT_MAX_N: usize = 50;
/// Largest number of non-zero differences `Auto` runs the sign-flip distribution for when
/// some are tied or zero (scipy's).
pub const PERMUTATION_MAX_N: usize = 13;
/// Largest number of non-zero differences the exact and sign-flip distributions are built for.
pub const DISTRIBUTION_MAX_N: usize = 2_000;

/// Two-sided signed-rank test of `x - y`.
pub fn wilcoxon(x: &[f64], y: &[f64], method: WilcoxonMethod) -> Result<Wilcoxon, StatsError> {
    if x.len() != y.len() {
        return Err(StatsError::invalid(
            "y",
            format!("has {} values, x has {}", y.len(), x.len()),
        ));
    }
    for (field, xs) in [("x", x), ("y", y)] {
        if let Some(i) = xs.iter().position(|v| !v.is_finite()) {
            return Err(StatsError::invalid(
                field,
                format!("value #{} is not finite", i + 1),
            ));
        }
    }
    let mut d: Vec<f64> = x
        .iter()
        .zip(y)
        .map(|(a, b)| a - b)
        .filter(|v| *v != 0.0)
        .collect();
    let zeros = d.len() < x.len();
    if d.is_empty() {
        return Err(StatsError::Undefined(
            "every paired difference is zero".into(),
        ));
    }
    d.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
    let n = d.len();
    let (mut r_plus, mut r_minus, mut tie_term) = (0.0, 0.0, 0.0);
    let mut ties = false;
    // Twice every (average) rank: whole numbers, for the sign-flip distribution.
    let mut doubled = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && d[j].abs() == d[i].abs() {
            j += 1;
        }
        let rank = (i + 1 + j) as f64 / 2.0;
        doubled.extend(std::iter::repeat_n((i + 1 + j) as u64, j - i));
        for v in &d[i..j] {
            if *v > 0.0 {
                r_plus += rank;
            } else {
                r_minus += rank;
            }
        }
        let t = (j - i) as f64;
        if j - i > 1 {
            ties = true;
            tie_term += t * (t * t - 1.0);
        }
        i = j;
    }
    let nf = n as f64;
    let mean = nf * (nf + 1.0) / 4.0;
    let var = (nf * (nf + 1.0) * (2.0 * nf + 1.0) - 0.5 * tie_term) / 24.0;
    let z = if var > 0.0 {
        (r_plus - mean) / var.sqrt()
    } else {
        0.0
    };
    let statistic = r_plus.min(r_minus);
    let method = match method {
        WilcoxonMethod::Auto if x.len() <= EXACT_MAX_N && !ties && !zeros => WilcoxonMethod::Exact,
        WilcoxonMethod::Auto if n <= PERMUTATION_MAX_N => WilcoxonMethod::Permutation,
        WilcoxonMethod::Auto => WilcoxonMethod::Approx,
        WilcoxonMethod::Exact if ties || zeros => {
            return Err(StatsError::invalid(
                "method",
                "the exact distribution is defined only without tied or zero differences \
                 (use the permutation method)",
            ))
        }
        m => m,
    };
    let p_value = match method {
        WilcoxonMethod::Exact | WilcoxonMethod::Permutation => {
            sign_flip_two_sided(&doubled, (2.0 * r_plus).round() as u64)?
        }
        _ => normal::two_sided_p(z),
    };
    Ok(Wilcoxon {
        statistic,
        r_plus,
        z,
        p_value,
        n: n as u64,
        method,
    })
}

/// `2 min(P(S <= s), P(S >= s))` (capped at 1), where S is the sum of a random subset of
/// `weights` (every sign flip equally likely) and `s` the observed one; the subsets are counted
/// per sum. Without ties the weights are `2, 4, …, 2n` and this is the exact distribution.
fn sign_flip_two_sided(weights: &[u64], observed: u64) -> Result<f64, StatsError> {
    if weights.len() > DISTRIBUTION_MAX_N {
        return Err(StatsError::invalid(
            "method",
            format!(
                "the exact distribution is limited to {DISTRIBUTION_MAX_N} differences, got {}",
                weights.len()
            ),
        ));
    }
    let max: u64 = weights.iter().sum();
    // counts[s]: subsets with weight sum s, as f64 (2^n overflows integers; only ratios count).
    let mut counts = vec![0.0f64; max as usize + 1];
    counts[0] = 1.0;
    let mut reach = 0usize;
    for &w in weights {
        let w = w as usize;
        reach += w;
        for s in (w..=reach).rev() {
            counts[s] += counts[s - w];
        }
    }
    let total: f64 = counts.iter().sum();
    let at = (observed.min(max)) as usize;
    let below: f64 = counts[..=at].iter().sum();
    let above: f64 = counts[at..].iter().sum();
    Ok((2.0 * below.min(above) / total).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_inputs_are_errors() {
        assert!(wilcoxon(&[1.0], &[1.0, 2.0], WilcoxonMethod::Auto).is_err());
        assert!(wilcoxon(&[f64::NAN], &[1.0], WilcoxonMethod::Auto).is_err());
        assert!(matches!(
            wilcoxon(&[1.0, 2.0], &[1.0, 2.0], WilcoxonMethod::Auto),
            Err(StatsError::Undefined(_))
        ));
        // Tied |differences| have no exact distribution (the sign-flip one holds).
        assert!(wilcoxon(&[1.0, 3.0], &[0.0, 2.0], WilcoxonMethod::Exact).is_err());
        assert!(wilcoxon(&[1.0, 3.0], &[0.0, 2.0], WilcoxonMethod::Permutation).is_ok());
    }

    #[test]
    fn the_exact_distribution_of_three_differences() {
        // Sums of subsets of {1, 2, 3}: 0,1,2,3,3,4,5,6 -> P(R+ <= 0) = 1/8, two-sided 1/4.
        let w = wilcoxon(&[1.0, 2.0, 3.0], &[0.0, 0.0, 0.0], WilcoxonMethod::Exact).unwrap();
        assert_eq!(w.statistic, 0.0);
        assert!((w.p_value - 0.25).abs() < 1e-12);
    }
}
