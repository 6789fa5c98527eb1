//! The errors of two regression models on the same labelled instances: what a shadow pair keeps
//! overall and per segment value.

use serde::Serialize;
use switchyard_stats::Moments;

/// The two regression outputs of one labelled instance, and its truth.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
pub struct LabelledValues {
    pub primary: f64,
    pub shadow: f64,
    pub truth: f64,
}

impl LabelledValues {
    /// `|primary − truth|`, `|shadow − truth|`.
    pub fn abs_errors(&self) -> (f64, f64) {
        (
            (self.primary - self.truth).abs(),
            (self.shadow - self.truth).abs(),
        )
    }
}

/// Errors of the primary and the shadow on the same labelled regression instances (both
/// answered, the truth arrived): exact, mergeable moments.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PairedErrors {
    /// `|primary − truth|`: the primary's MAE is its mean.
    pub primary_abs: Moments,
    pub shadow_abs: Moments,
    /// `(primary − truth)²`: the primary's RMSE is the square root of its mean.
    pub primary_sq: Moments,
    pub shadow_sq: Moments,
    /// `|primary − truth| / |truth|` where the truth is not zero: the primary's MAPE
    /// (a fraction) is its mean.
    pub primary_ape: Moments,
    pub shadow_ape: Moments,
    /// Labelled instances left out of MAPE because their truth is zero.
    pub ape_skipped: u64,
    /// `|primary − truth| − |shadow − truth|`: positive where the shadow is closer. The paired
    /// t-test runs on these.
    pub abs_diff: Moments,
}

impl PairedErrors {
    /// Accounts one labelled instance (finite values only).
    pub fn push(&mut self, v: &LabelledValues) {
        let (ep, es) = (v.primary - v.truth, v.shadow - v.truth);
        self.primary_abs.push(ep.abs());
        self.shadow_abs.push(es.abs());
        self.primary_sq.push(ep * ep);
        self.shadow_sq.push(es * es);
        if v.truth == 0.0 {
            self.ape_skipped += 1;
        } else {
            self.primary_ape.push(ep.abs() / v.truth.abs());
            self.shadow_ape.push(es.abs() / v.truth.abs());
        }
        self.abs_diff.push(ep.abs() - es.abs());
    }

    /// Labelled instances accounted.
    pub fn count(&self) -> u64 {
        self.abs_diff.count()
    }

    pub fn merge(&mut self, other: &PairedErrors) {
        self.primary_abs.merge(&other.primary_abs);
        self.shadow_abs.merge(&other.shadow_abs);
        self.primary_sq.merge(&other.primary_sq);
        self.shadow_sq.merge(&other.shadow_sq);
        self.primary_ape.merge(&other.primary_ape);
        self.shadow_ape.merge(&other.shadow_ape);
        self.ape_skipped += other.ape_skipped;
        self.abs_diff.merge(&other.abs_diff);
    }
}
