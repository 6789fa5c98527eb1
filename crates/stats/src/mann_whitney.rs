//! Mann-Whitney U test (two-sided), e.g. for latency distributions that are far from normal.
//!
//! Reference: scipy `mannwhitneyu(a, b, alternative="two-sided", method="asymptotic",
//! use_continuity=True)`: normal approximation with tie correction. `u` is U of the first
//! sample.
//!
//! The effect size is the common-language effect size (McGraw & Wong; the "probability of
//! superiority"): `U / (n_a n_b)`, the probability that a value drawn from `a` exceeds one drawn
//! from `b`, ties counting half. 0.5 is no shift; above 0.5, `a` tends to be larger.

use serde::{Deserialize, Serialize};

use crate::{normal, StatsError};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MannWhitney {
    /// U statistic of sample `a`.
    pub u: f64,
    pub z: f64,
    pub p_value: f64,
    /// P(a > b) + ½ P(a = b): `u / (n_a n_b)`.
    pub common_language: f64,
    pub n_a: u64,
    pub n_b: u64,
}

pub fn mann_whitney_u(a: &[f64], b: &[f64]) -> Result<MannWhitney, StatsError> {
    for (field, xs) in [("a", a), ("b", b)] {
        if xs.is_empty() {
            return Err(StatsError::invalid(field, "is empty"));
        }
        if let Some(i) = xs.iter().position(|x| !x.is_finite()) {
            return Err(StatsError::invalid(
                field,
                format!("value #{} is not finite", i + 1),
            ));
        }
    }
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let n = n1 + n2;

    // Average ranks over the pooled sample; collect the tie-group sizes on the way.
    let mut pooled: Vec<(f64, bool)> = a
        .iter()
        .map(|&x| (x, true))
        .chain(b.iter().map(|&x| (x, false)))
        .collect();
    pooled.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut rank_sum_a = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < pooled.len() {
        let mut j = i + 1;
        while j < pooled.len() && pooled[j].0 == pooled[i].0 {
            j += 1;
        }
        // Positions i..j (0-based) share the average of ranks i+1..=j.
        let rank = (i + 1 + j) as f64 / 2.0;
        let in_a = pooled[i..j].iter().filter(|(_, from_a)| *from_a).count() as f64;
        rank_sum_a += rank * in_a;
        let t = (j - i) as f64;
        tie_term += t * t * t - t;
        i = j;
    }

    let u1 = rank_sum_a - n1 * (n1 + 1.0) / 2.0;
    let u2 = n1 * n2 - u1;
    let u = u1.max(u2);
    let mu = n1 * n2 / 2.0;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    let (z, p_value) = if variance > 0.0 {
        let z = (u - mu - 0.5) / variance.sqrt();
        (z, (2.0 * normal::sf(z)).clamp(0.0, 1.0))
    } else {
        // Every value tied (or a single observation): no evidence of a shift.
        (0.0, 1.0)
    };
    Ok(MannWhitney {
        u: u1,
        z,
        p_value,
        common_language: u1 / (n1 * n2),
        n_a: a.len() as u64,
        n_b: b.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_and_non_finite_samples() {
        assert_eq!(mann_whitney_u(&[], &[1.0]).unwrap_err().field(), Some("a"));
        assert_eq!(
            mann_whitney_u(&[1.0], &[f64::INFINITY])
                .unwrap_err()
                .field(),
            Some("b")
        );
    }

    #[test]
    fn all_tied_is_not_significant() {
        let r = mann_whitney_u(&[2.0, 2.0], &[2.0, 2.0, 2.0]).unwrap();
        assert_eq!(r.p_value, 1.0);
        assert_eq!(r.u, 3.0);
        assert_eq!(r.common_language, 0.5);
        assert_eq!((r.n_a, r.n_b), (2, 3));
    }
}
