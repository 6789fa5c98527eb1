//! Pure statistics for model rollouts.
//!
//! Everything here is a function of its arguments: no I/O, no clock, no global state. The
//! gateway and controller feed it counts and summaries; the `switchyard stats` CLI exposes it
//! directly. Every test is checked against reference values computed with scipy/statsmodels
//! (`tools/gen_stats_fixtures.py` writes them to `tests/fixtures/`).
//!
//! Conventions follow the references named in each module so that a number printed by
//! switchyard can be reproduced in a notebook.

pub mod bandit;
pub mod bayes;
pub mod chi2;
pub mod classification;
pub mod drift;
mod error;
pub mod mann_whitney;
pub mod mcnemar;
pub mod multiple;
pub mod power;
pub mod proportions;
pub mod rng;
pub mod sample;
pub mod sequential;
pub mod stratified;
pub mod summary;
pub mod ttest;
pub mod wilcoxon;

pub use error::StatsError;
pub use sample::BottomK;
pub use summary::{LatencyHistogram, Moments, Proportion, SignedLogHistogram};

/// Standard normal helpers shared by the tests.
pub(crate) mod normal {
    use statrs::distribution::{ContinuousCDF, Normal};

    fn standard() -> Normal {
        Normal::standard()
    }

    /// P(Z > z).
    pub(crate) fn sf(z: f64) -> f64 {
        standard().sf(z)
    }

    /// P(Z <= z).
    pub(crate) fn cdf(z: f64) -> f64 {
        standard().cdf(z)
    }

    /// The z with P(Z <= z) = p.
    pub(crate) fn ppf(p: f64) -> f64 {
        standard().inverse_cdf(p)
    }

    /// Two-sided p-value of a z statistic.
    pub(crate) fn two_sided_p(z: f64) -> f64 {
        (2.0 * sf(z.abs())).min(1.0)
    }
}

/// Checks that a proportion has no more successes than trials (`field` names the successes).
pub(crate) fn check_successes(field: &'static str, p: &Proportion) -> Result<(), StatsError> {
    if p.successes > p.trials {
        return Err(StatsError::invalid(
            field,
            format!("{} successes exceed the {} trials", p.successes, p.trials),
        ));
    }
    Ok(())
}

/// Checks that a probability-like parameter lies strictly inside (0, 1).
pub(crate) fn check_open_unit(name: &'static str, value: f64) -> Result<(), StatsError> {
    if value.is_finite() && value > 0.0 && value < 1.0 {
        Ok(())
    } else {
        Err(StatsError::invalid(
            name,
            format!("must be strictly between 0 and 1, got {value}"),
        ))
    }
}
