//! Bayesian A/B comparison of two proportions with Beta(1, 1) priors.
//!
//! With `s` successes in `n` trials the posterior is `Beta(1 + s, 1 + n − s)`. P(B > A) has a
//! closed form for integer parameters (Evan Miller, "Formulas for Bayesian A/B testing"):
//!
//! ```text
//! P(X > Y) = Σ_{i=0}^{αX−1} B(αY + i, βX + βY) / ((βX + i) · B(1 + i, βX) · B(αY, βY))
//! ```
//!
//! and the expected loss of choosing A, `E[max(pB − pA, 0)]`, follows from size-biasing:
//! `E[pB·1{pB > pA}] = E[pB] · P(B⁺ > A)` with `B⁺ ~ Beta(αB + 1, βB)`. Reference values come
//! from numerical integration in scipy.

use serde::{Deserialize, Serialize};
use statrs::function::beta::ln_beta;

use crate::{Proportion, StatsError};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BayesAb {
    /// P(pB > pA) under the posteriors.
    pub prob_b_beats_a: f64,
    /// `E[max(pB − pA, 0)]`: what is lost on average by keeping A.
    pub expected_loss_a: f64,
    /// `E[max(pA − pB, 0)]`: what is lost on average by choosing B.
    pub expected_loss_b: f64,
}

/// A Beta distribution with integer parameters.
#[derive(Debug, Clone, Copy)]
struct Posterior {
    alpha: u64,
    beta: u64,
}

impl Posterior {
    fn of(arm: Proportion) -> Self {
        Posterior {
            alpha: 1 + arm.successes,
            beta: 1 + arm.failures(),
        }
    }

    fn mean(self) -> f64 {
        self.alpha as f64 / (self.alpha + self.beta) as f64
    }

    fn size_biased(self) -> Self {
        Posterior {
            alpha: self.alpha + 1,
            beta: self.beta,
        }
    }
}

/// P(X > Y) for independent `X ~ Beta(x)`, `Y ~ Beta(y)`.
fn prob_greater(x: Posterior, y: Posterior) -> f64 {
    // The sum has αX terms; P(X > Y) = 1 − P(Y > X), so sum over the smaller α.
    if x.alpha > y.alpha {
        return 1.0 - prob_greater(y, x);
    }
    let bx = x.beta as f64;
    let (ay, by) = (y.alpha as f64, y.beta as f64);
    let ln_b_y = ln_beta(ay, by);
    let mut total = 0.0;
    for i in 0..x.alpha {
        let i = i as f64;
        let ln_term = ln_beta(ay + i, bx + by) - (bx + i).ln() - ln_beta(1.0 + i, bx) - ln_b_y;
        total += ln_term.exp();
    }
    // Rounding can push the sum a hair past the unit interval.
    total.clamp(0.0, 1.0)
}

/// Posterior comparison of B against A.
pub fn beta_binomial_ab(a: Proportion, b: Proportion) -> Result<BayesAb, StatsError> {
    crate::check_successes("successes_a", &a)?;
    crate::check_successes("successes_b", &b)?;
    let (pa, pb) = (Posterior::of(a), Posterior::of(b));
    let prob_b_beats_a = prob_greater(pb, pa);
    let expected_loss_a = pb.mean() * prob_greater(pb.size_biased(), pa)
        - pa.mean() * prob_greater(pb, pa.size_biased());
    let expected_loss_b = pa.mean() * prob_greater(pa.size_biased(), pb)
        - pb.mean() * prob_greater(pa, pb.size_biased());
    Ok(BayesAb {
        prob_b_beats_a,
        expected_loss_a: expected_loss_a.max(0.0),
        expected_loss_b: expected_loss_b.max(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_data_is_a_coin_flip() {
        let arm = Proportion {
            successes: 37,
            trials: 80,
        };
        let r = beta_binomial_ab(arm, arm).unwrap();
        assert!((r.prob_b_beats_a - 0.5).abs() < 1e-12);
        assert!((r.expected_loss_a - r.expected_loss_b).abs() < 1e-12);
    }

    #[test]
    fn rejects_impossible_counts() {
        let bad = Proportion {
            successes: 3,
            trials: 2,
        };
        let ok = Proportion {
            successes: 1,
            trials: 2,
        };
        assert_eq!(
            beta_binomial_ab(bad, ok).unwrap_err().field(),
            Some("successes_a")
        );
        assert_eq!(
            beta_binomial_ab(ok, bad).unwrap_err().field(),
            Some("successes_b")
        );
    }
}
