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
//!
//! Values (a regressor's outputs) are binned first ([`value_drift`]): both distributions are
//! kept as [`SignedLogHistogram`]s (1%-wide log buckets, mergeable, learned from nothing), and
//! the bins are [`VALUE_BINS`] groups of buckets cut at the deciles of the expected (stable)
//! distribution, the usual choice for PSI. Reference: numpy, with each value replaced by its
//! bucket key ([`SignedLogHistogram::ordered_buckets`]), the cut points `q_i` (i = 1..9) the
//! smallest key whose cumulative count reaches `i·n/10` (the inverted-CDF quantile), and each
//! value in bin `np.digitize(key, q, right=True)`.

use serde::{Deserialize, Serialize};

use crate::{SignedLogHistogram, StatsError};

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

/// Bins of [`value_drift`]: the deciles of the expected distribution.
pub const VALUE_BINS: usize = 10;

/// Drift of binned values, with the bins' counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinnedDrift {
    #[serde(flatten)]
    pub drift: Drift,
    /// Values per bin, expected (stable) and actual (candidate).
    pub expected: Vec<u64>,
    pub actual: Vec<u64>,
}

/// Drift of `actual` (candidate) values from `expected` (stable) values over [`VALUE_BINS`]
/// bins cut at the expected's deciles (see the module's documentation). Bins that deciles
/// share (many equal values) stay empty on both sides and add nothing.
pub fn value_drift(
    expected: &SignedLogHistogram,
    actual: &SignedLogHistogram,
) -> Result<BinnedDrift, StatsError> {
    let e = expected.ordered_buckets();
    let n: u64 = e.iter().map(|(_, c)| c).sum();
    if n == 0 {
        return Err(StatsError::Undefined("expected has no observations".into()));
    }
    // q_i: the smallest key whose cumulative count reaches i·n/10.
    let mut cuts = Vec::with_capacity(VALUE_BINS - 1);
    let mut cumulative = 0u64;
    let mut next = 1u64;
    for &(key, count) in &e {
        cumulative += count;
        while next < VALUE_BINS as u64 && cumulative * VALUE_BINS as u64 >= next * n {
            cuts.push(key);
            next += 1;
        }
    }
    let bin = |key: i64| cuts.iter().filter(|&&q| q < key).count();
    let mut exp = vec![0u64; VALUE_BINS];
    let mut act = vec![0u64; VALUE_BINS];
    e.iter().for_each(|&(key, c)| exp[bin(key)] += c);
    actual
        .ordered_buckets()
        .into_iter()
        .for_each(|(key, c)| act[bin(key)] += c);
    let float = |v: &[u64]| v.iter().map(|&c| c as f64).collect::<Vec<_>>();
    Ok(BinnedDrift {
        drift: drift(&float(&exp), &float(&act))?,
        expected: exp,
        actual: act,
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

    #[test]
    fn values_are_binned_at_the_expected_deciles() {
        let hist = |xs: &mut dyn Iterator<Item = f64>| {
            let mut h = SignedLogHistogram::default();
            xs.for_each(|x| h.record(x));
            h
        };
        // 100 distinct values 10% apart: ten per bin.
        let expected = hist(&mut (0..100).map(|i| 1.1f64.powi(i)));
        let d = value_drift(&expected, &expected).unwrap();
        assert_eq!(d.expected, vec![10; 10]);
        assert!(d.drift.psi.abs() < 1e-12);
        // Everything above the expected's largest value: the last bin.
        let shifted = hist(&mut (0..50).map(|i| 1e9 + f64::from(i)));
        let d = value_drift(&expected, &shifted).unwrap();
        assert_eq!(d.actual, [vec![0; 9], vec![50]].concat());
        assert!(d.drift.psi > 1.0);
        // Negative, zero and positive values order as numbers.
        let signed = hist(&mut [-5.0, -1.0, 0.0, 0.0, 2.0].into_iter());
        let keys: Vec<i64> = signed.ordered_buckets().iter().map(|(k, _)| *k).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert!(value_drift(&SignedLogHistogram::default(), &signed).is_err());
        assert!(value_drift(&signed, &SignedLogHistogram::default()).is_err());
    }
}
