//! Drift between two distributions of predictions (classes, or binned values): the population
//! stability index and the Jensen–Shannon divergence.
//!
//! Both take counts per bin, turn them into proportions, and replace an empty bin's share by
//! `EMPTY_BIN_SHARE` before taking logarithms (PSI is infinite otherwise).
//! PSI = Σ (aᵢ − eᵢ) ln(aᵢ / eᵢ) (a: actual/candidate, e: expected/stable); the usual reading is
//! < 0.1 stable, 0.1–0.25 moderate shift, > 0.25 major shift.
//! Jensen–Shannon: reference scipy `scipy.spatial.distance.jensenshannon(p, q, base)`, which
//! returns the *distance* (the square root of the divergence); both are given, natural log by
//! default. JS needs no smoothing: it is computed on the raw proportions.

use serde::{Deserialize, Serialize};

use crate::StatsError;

/// Share given to an empty bin in PSI.
pub const EMPTY_BIN_SHARE: f64 = 1e-4;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    pub psi: f64,
    /// Jensen–Shannon divergence (natural log; at most ln 2).
    pub js_divergence: f64,
    /// Its square root, as scipy's `jensenshannon`.
    pub js_distance: f64,
}

fn shares(field: &'static str, counts: &[f64]) -> Result<Vec<f64>, StatsError> {
    if let Some(i) = counts.iter().position(|c| !(c.is_finite() && *c >= 0.0)) {
        return Err(StatsError::invalid(
            field,
            format!("bin #{} is not a non-negative count", i + 1),
        ));
    }
    let total: f64 = counts.iter().sum();
    if total <= 0.0 {
        return Err(StatsError::Undefined(format!(
            "{field} has no observations"
        )));
    }
    Ok(counts.iter().map(|c| c / total).collect())
}

/// Drift of `actual` (candidate) from `expected` (stable), counts per bin in the same order.
pub fn drift(expected: &[f64], actual: &[f64]) -> Result<Drift, StatsError> {
    if expected.len() != actual.len() {
        return Err(StatsError::invalid(
            "actual",
            format!("has {} bins, expected has {}", actual.len(), expected.len()),
        ));
    }
    if expected.is_empty() {
        return Err(StatsError::invalid("expected", "has no bins"));
    }
    let (e, a) = (shares("expected", expected)?, shares("actual", actual)?);
    let psi = e
        .iter()
        .zip(&a)
        .map(|(&e, &a)| {
            let (e, a) = (e.max(EMPTY_BIN_SHARE), a.max(EMPTY_BIN_SHARE));
            (a - e) * (a / e).ln()
        })
        .sum();
    let kl = |p: &[f64], m: &[f64]| -> f64 {
        p.iter()
            .zip(m)
            .filter(|(p, _)| **p > 0.0)
            .map(|(p, m)| p * (p / m).ln())
            .sum()
    };
    let m: Vec<f64> = e.iter().zip(&a).map(|(e, a)| (e + a) / 2.0).collect();
    let js = ((kl(&e, &m) + kl(&a, &m)) / 2.0).max(0.0);
    Ok(Drift {
        psi,
        js_divergence: js,
        js_distance: js.sqrt(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_distributions_do_not_drift_and_bad_counts_are_errors() {
        let d = drift(&[10.0, 30.0], &[1.0, 3.0]).unwrap();
        assert!(d.psi.abs() < 1e-12 && d.js_distance.abs() < 1e-12);
        assert!(drift(&[1.0], &[1.0, 2.0]).is_err());
        assert!(drift(&[-1.0, 2.0], &[1.0, 2.0]).is_err());
        assert!(drift(&[0.0, 0.0], &[1.0, 2.0]).is_err());
        assert!(drift(&[], &[]).is_err());
    }

    #[test]
    fn disjoint_distributions_reach_the_js_bound() {
        let d = drift(&[1.0, 0.0], &[0.0, 1.0]).unwrap();
        assert!((d.js_divergence - std::f64::consts::LN_2).abs() < 1e-12);
    }
}
