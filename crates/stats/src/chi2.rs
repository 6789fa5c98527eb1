//! Chi-square tests: independence on an r×c table and goodness of fit (sample-ratio mismatch).
//!
//! References: scipy `chi2_contingency(table)` with its defaults (Yates' correction when the
//! table has one degree of freedom) and `chisquare(observed, f_exp)`.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF};

use crate::StatsError;

/// Result of a chi-square test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChiSquare {
    pub statistic: f64,
    pub p_value: f64,
    pub dof: u64,
    /// Expected counts under the null hypothesis, in the input's shape (one row for a fit).
    pub expected: Vec<Vec<f64>>,
}

fn chi2_sf(statistic: f64, dof: u64) -> Result<f64, StatsError> {
    if dof == 0 {
        return Ok(1.0);
    }
    let dist = ChiSquared::new(dof as f64)
        .map_err(|e| StatsError::Undefined(format!("chi-square with {dof} dof: {e}")))?;
    Ok(dist.sf(statistic))
}

/// Test of independence of the rows and columns of a contingency table.
pub fn contingency(table: &[Vec<u64>]) -> Result<ChiSquare, StatsError> {
    let rows = table.len();
    let cols = table.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        return Err(StatsError::invalid("table", "is empty"));
    }
    if let Some(i) = table.iter().position(|r| r.len() != cols) {
        return Err(StatsError::invalid(
            "table",
            format!(
                "row {} has {} cells but row 1 has {cols}",
                i + 1,
                table[i].len()
            ),
        ));
    }
    let row_sums: Vec<f64> = table.iter().map(|r| r.iter().sum::<u64>() as f64).collect();
    let col_sums: Vec<f64> = (0..cols)
        .map(|j| table.iter().map(|r| r[j]).sum::<u64>() as f64)
        .collect();
    let total: f64 = row_sums.iter().sum();
    if let Some(i) = row_sums.iter().position(|&s| s == 0.0) {
        return Err(StatsError::invalid(
            "table",
            format!("row {} is all zeros", i + 1),
        ));
    }
    if let Some(j) = col_sums.iter().position(|&s| s == 0.0) {
        return Err(StatsError::invalid(
            "table",
            format!("column {} is all zeros", j + 1),
        ));
    }
    let expected: Vec<Vec<f64>> = row_sums
        .iter()
        .map(|r| col_sums.iter().map(|c| r * c / total).collect())
        .collect();
    let dof = ((rows - 1) * (cols - 1)) as u64;
    let yates = dof == 1;
    let mut statistic = 0.0;
    for (observed_row, expected_row) in table.iter().zip(&expected) {
        for (&o, &e) in observed_row.iter().zip(expected_row) {
            let mut diff = o as f64 - e;
            if yates {
                // Move each observation toward its expectation by at most 0.5, as scipy does.
                diff = diff.signum() * (diff.abs() - 0.5).max(0.0);
            }
            statistic += diff * diff / e;
        }
    }
    if dof == 0 {
        statistic = 0.0;
    }
    Ok(ChiSquare {
        statistic,
        p_value: chi2_sf(statistic, dof)?,
        dof,
        expected,
    })
}

/// Goodness of fit of observed counts to expected proportions `weights` (which sum to 1).
pub fn goodness_of_fit(observed: &[u64], weights: &[f64]) -> Result<ChiSquare, StatsError> {
    if observed.len() < 2 {
        return Err(StatsError::invalid("observed", "needs at least 2 counts"));
    }
    if weights.len() != observed.len() {
        return Err(StatsError::invalid(
            "weights",
            format!(
                "has {} values but observed has {}",
                weights.len(),
                observed.len()
            ),
        ));
    }
    if let Some(w) = weights.iter().find(|w| !(w.is_finite() && **w > 0.0)) {
        return Err(StatsError::invalid(
            "weights",
            format!("must all be > 0, got {w}"),
        ));
    }
    let sum: f64 = weights.iter().sum();
    if (sum - 1.0).abs() > 1e-6 {
        return Err(StatsError::invalid(
            "weights",
            format!("must sum to 1, got {sum}"),
        ));
    }
    let total = observed.iter().sum::<u64>() as f64;
    if total == 0.0 {
        return Err(StatsError::invalid("observed", "all counts are zero"));
    }
    let expected: Vec<f64> = weights.iter().map(|w| w * total).collect();
    let statistic = observed
        .iter()
        .zip(&expected)
        .map(|(&o, &e)| (o as f64 - e).powi(2) / e)
        .sum();
    let dof = (observed.len() - 1) as u64;
    Ok(ChiSquare {
        statistic,
        p_value: chi2_sf(statistic, dof)?,
        dof,
        expected: vec![expected],
    })
}

/// Sample-ratio mismatch check: the observed split of traffic against the configured weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRatioMismatch {
    pub statistic: f64,
    pub p_value: f64,
    pub dof: u64,
    /// `p_value < threshold`: the split is broken and no conclusion should be drawn.
    pub mismatch: bool,
    pub threshold: f64,
    pub expected: Vec<f64>,
}

/// Default SRM threshold: SRM checks run continuously, so they use a strict level.
pub const DEFAULT_SRM_THRESHOLD: f64 = 0.001;

/// Flags a sample-ratio mismatch when the goodness-of-fit p-value is below `threshold`.
pub fn sample_ratio_mismatch(
    observed: &[u64],
    weights: &[f64],
    threshold: f64,
) -> Result<SampleRatioMismatch, StatsError> {
    crate::check_open_unit("threshold", threshold)?;
    let fit = goodness_of_fit(observed, weights)?;
    Ok(SampleRatioMismatch {
        statistic: fit.statistic,
        p_value: fit.p_value,
        dof: fit.dof,
        mismatch: fit.p_value < threshold,
        threshold,
        expected: fit.expected.into_iter().next().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_tables_are_rejected() {
        assert!(contingency(&[]).is_err());
        assert!(contingency(&[vec![]]).is_err());
        assert!(contingency(&[vec![1, 2], vec![3]])
            .unwrap_err()
            .to_string()
            .contains("row 2"));
        assert!(contingency(&[vec![0, 0], vec![3, 4]])
            .unwrap_err()
            .to_string()
            .contains("row 1"));
        assert!(contingency(&[vec![0, 2], vec![0, 4]])
            .unwrap_err()
            .to_string()
            .contains("column 1"));
    }

    #[test]
    fn single_row_has_no_degrees_of_freedom() {
        let r = contingency(&[vec![3, 4, 5]]).unwrap();
        assert_eq!((r.statistic, r.p_value, r.dof), (0.0, 1.0, 0));
    }

    #[test]
    fn bad_weights_are_rejected() {
        assert_eq!(
            goodness_of_fit(&[1, 2], &[0.5, 0.6]).unwrap_err().field(),
            Some("weights")
        );
        assert_eq!(
            goodness_of_fit(&[1, 2], &[1.0]).unwrap_err().field(),
            Some("weights")
        );
        assert_eq!(
            goodness_of_fit(&[1, 2], &[1.0, 0.0]).unwrap_err().field(),
            Some("weights")
        );
        assert_eq!(
            goodness_of_fit(&[0, 0], &[0.5, 0.5]).unwrap_err().field(),
            Some("observed")
        );
        assert_eq!(
            goodness_of_fit(&[4], &[1.0]).unwrap_err().field(),
            Some("observed")
        );
    }

    #[test]
    fn srm_flags_a_broken_split() {
        assert!(
            !sample_ratio_mismatch(&[5_000, 5_000], &[0.5, 0.5], 0.001)
                .unwrap()
                .mismatch
        );
        assert!(
            sample_ratio_mismatch(&[5_300, 4_700], &[0.5, 0.5], 0.001)
                .unwrap()
                .mismatch
        );
    }
}
