//! Multiple-comparison adjustments of p-values (several arms, several metrics).
//!
//! Reference: statsmodels `multipletests(p, method="bonferroni" | "holm")[1]`.

use crate::StatsError;

fn check(p_values: &[f64]) -> Result<(), StatsError> {
    match p_values.iter().position(|p| !(0.0..=1.0).contains(p)) {
        Some(i) => Err(StatsError::invalid(
            "p_values",
            format!("value #{} ({}) is not a probability", i + 1, p_values[i]),
        )),
        None => Ok(()),
    }
}

/// Bonferroni: each p-value times the number of tests, capped at 1.
pub fn bonferroni(p_values: &[f64]) -> Result<Vec<f64>, StatsError> {
    check(p_values)?;
    let m = p_values.len() as f64;
    Ok(p_values.iter().map(|p| (p * m).min(1.0)).collect())
}

/// Holm's step-down adjustment, returned in the input's order.
pub fn holm(p_values: &[f64]) -> Result<Vec<f64>, StatsError> {
    check(p_values)?;
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p_values[i].total_cmp(&p_values[j]));
    let mut adjusted = vec![0.0; m];
    let mut running_max: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        let candidate = ((m - rank) as f64 * p_values[i]).min(1.0);
        running_max = running_max.max(candidate);
        adjusted[i] = running_max;
    }
    Ok(adjusted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_probabilities() {
        assert_eq!(holm(&[0.1, 1.5]).unwrap_err().field(), Some("p_values"));
        assert_eq!(
            bonferroni(&[f64::NAN]).unwrap_err().field(),
            Some("p_values")
        );
        assert_eq!(holm(&[]).unwrap(), Vec::<f64>::new());
    }
}
