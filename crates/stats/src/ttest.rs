//! t-tests: paired (from samples or from summary statistics) and Welch's unequal-variance test.
//!
//! References: scipy `ttest_rel(a, b)` / `ttest_1samp(a − b, 0)` and
//! `ttest_ind(a, b, equal_var=False)`; all two-sided, `t` for `a − b`.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::{Moments, StatsError};

/// Result of a t-test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TTest {
    pub t: f64,
    pub df: f64,
    pub p_value: f64,
    /// Mean of `a − b` (paired) or `mean(a) − mean(b)` (Welch).
    pub mean_diff: f64,
    /// Standard error of `mean_diff`.
    pub std_err: f64,
}

impl TTest {
    /// The two-sided `1 − alpha` confidence interval of `mean_diff`:
    /// `mean_diff ± t(1 − α/2, df) · std_err` (scipy's `TtestResult.confidence_interval`).
    pub fn confidence_interval(&self, alpha: f64) -> Result<(f64, f64), StatsError> {
        crate::check_open_unit("alpha", alpha)?;
        let dist = StudentsT::new(0.0, 1.0, self.df).map_err(|e| {
            StatsError::Undefined(format!("t distribution with {} df: {e}", self.df))
        })?;
        let half = dist.inverse_cdf(1.0 - alpha / 2.0) * self.std_err;
        Ok((self.mean_diff - half, self.mean_diff + half))
    }
}

fn two_sided_t_p(t: f64, df: f64) -> Result<f64, StatsError> {
    let dist = StudentsT::new(0.0, 1.0, df)
        .map_err(|e| StatsError::Undefined(format!("t distribution with {df} df: {e}")))?;
    Ok((2.0 * dist.sf(t.abs())).min(1.0))
}

/// Paired t-test from the mean and sample standard deviation (ddof = 1) of the differences.
pub fn paired_from_summary(mean_diff: f64, sd_diff: f64, n: u64) -> Result<TTest, StatsError> {
    if !mean_diff.is_finite() {
        return Err(StatsError::invalid(
            "mean_diff",
            format!("must be finite, got {mean_diff}"),
        ));
    }
    if !sd_diff.is_finite() || sd_diff < 0.0 {
        return Err(StatsError::invalid(
            "sd_diff",
            format!("must be >= 0, got {sd_diff}"),
        ));
    }
    if n < 2 {
        return Err(StatsError::invalid(
            "n",
            format!("needs at least 2 pairs, got {n}"),
        ));
    }
    if sd_diff == 0.0 {
        return Err(StatsError::Undefined(
            "the differences have zero variance".into(),
        ));
    }
    let std_err = sd_diff / (n as f64).sqrt();
    let t = mean_diff / std_err;
    let df = (n - 1) as f64;
    Ok(TTest {
        t,
        df,
        p_value: two_sided_t_p(t, df)?,
        mean_diff,
        std_err,
    })
}

/// Paired t-test from a summary of the differences `a − b`.
pub fn paired_from_moments(diffs: &Moments) -> Result<TTest, StatsError> {
    match (diffs.mean(), diffs.std_dev()) {
        (Some(mean), Some(sd)) => paired_from_summary(mean, sd, diffs.count()),
        _ => Err(StatsError::invalid(
            "n",
            format!("needs at least 2 pairs, got {}", diffs.count()),
        )),
    }
}

/// Paired t-test on two equally long samples.
pub fn paired(a: &[f64], b: &[f64]) -> Result<TTest, StatsError> {
    if a.len() != b.len() {
        return Err(StatsError::invalid(
            "b",
            format!(
                "paired samples differ in length ({} vs {})",
                a.len(),
                b.len()
            ),
        ));
    }
    check_finite("a", a)?;
    check_finite("b", b)?;
    let diffs = Moments::from_slice(&a.iter().zip(b).map(|(x, y)| x - y).collect::<Vec<_>>());
    paired_from_moments(&diffs)
}

fn check_finite(field: &'static str, xs: &[f64]) -> Result<(), StatsError> {
    match xs.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(StatsError::invalid(
            field,
            format!("value #{} is not finite", i + 1),
        )),
        None => Ok(()),
    }
}

/// Welch's t-test from summaries of the two samples.
pub fn welch_from_moments(a: &Moments, b: &Moments) -> Result<TTest, StatsError> {
    let (Some(mean_a), Some(var_a)) = (a.mean(), a.variance()) else {
        return Err(StatsError::invalid(
            "a",
            format!("needs at least 2 values, got {}", a.count()),
        ));
    };
    let (Some(mean_b), Some(var_b)) = (b.mean(), b.variance()) else {
        return Err(StatsError::invalid(
            "b",
            format!("needs at least 2 values, got {}", b.count()),
        ));
    };
    let (n_a, n_b) = (a.count() as f64, b.count() as f64);
    let (se2_a, se2_b) = (var_a / n_a, var_b / n_b);
    let se2 = se2_a + se2_b;
    if se2 <= 0.0 {
        return Err(StatsError::Undefined(
            "both samples have zero variance".into(),
        ));
    }
    let mean_diff = mean_a - mean_b;
    let std_err = se2.sqrt();
    let t = mean_diff / std_err;
    let df = se2 * se2 / (se2_a * se2_a / (n_a - 1.0) + se2_b * se2_b / (n_b - 1.0));
    Ok(TTest {
        t,
        df,
        p_value: two_sided_t_p(t, df)?,
        mean_diff,
        std_err,
    })
}

/// Welch's t-test on two samples.
pub fn welch(a: &[f64], b: &[f64]) -> Result<TTest, StatsError> {
    check_finite("a", a)?;
    check_finite("b", b)?;
    welch_from_moments(&Moments::from_slice(a), &Moments::from_slice(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degenerate_inputs_are_errors() {
        assert_eq!(paired(&[1.0, 2.0], &[1.0]).unwrap_err().field(), Some("b"));
        assert_eq!(paired(&[1.0], &[2.0]).unwrap_err().field(), Some("n"));
        assert!(matches!(
            paired(&[1.0, 2.0], &[0.0, 1.0]),
            Err(StatsError::Undefined(_))
        ));
        assert_eq!(
            paired(&[f64::NAN, 2.0], &[0.0, 1.0]).unwrap_err().field(),
            Some("a")
        );
        assert_eq!(
            paired_from_summary(0.1, -1.0, 10).unwrap_err().field(),
            Some("sd_diff")
        );
        assert_eq!(welch(&[1.0], &[1.0, 2.0]).unwrap_err().field(), Some("a"));
        assert!(matches!(
            welch(&[1.0, 1.0], &[2.0, 2.0]),
            Err(StatsError::Undefined(_))
        ));
        let r = welch(&[1.0, 2.0, 3.0], &[2.0, 4.0]).unwrap();
        assert_eq!(
            r.confidence_interval(0.0).unwrap_err().field(),
            Some("alpha")
        );
    }
}
