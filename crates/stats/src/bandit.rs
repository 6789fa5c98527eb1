//! Thompson sampling for a multi-armed bandit over model versions: the probability that each
//! arm is the best, from each arm's posterior, and the traffic weights that follow from it
//! with a minimum share per arm and a limit on how far a weight moves at once.
//!
//! Posteriors: `Beta(successes + 1, failures + 1)` for a proportion (uniform prior), and for a
//! mean `Normal(x̄, s/√n)` (the large-sample posterior of a mean under a flat prior). The
//! probability that an arm is best is estimated by Monte Carlo from a [`SeededRng`] started at a
//! seed the caller passes in, so the same counts and seed give the same weights everywhere.
//!
//! Weights ([`thompson_weights`]) are integers (basis points, or any unit) that sum exactly to
//! the current total: the target gives each arm `min_share` and shares the rest in proportion
//! to its probability of being best; the step from the current weights towards the target is
//! scaled down as a whole until no weight moves by more than `max_step`. Scaling every move by
//! one factor keeps the sum, and the result is a mix of two allocations that both respect
//! the minimum, so it does too; rounding to integers (largest remainders) keeps both bounds,
//! since they are integers.

use serde::{Deserialize, Serialize};

use crate::rng::SeededRng;
use crate::{Moments, Proportion, StatsError};

/// The posterior of one arm's metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Posterior {
    /// A proportion's Beta posterior.
    Beta { alpha: f64, beta: f64 },
    /// A mean's normal posterior (`sd` is the standard error of the mean).
    Normal { mean: f64, sd: f64 },
}

impl Posterior {
    /// `Beta(successes + 1, failures + 1)`: the uniform prior updated by the counts.
    pub fn of_proportion(p: Proportion) -> Posterior {
        Posterior::Beta {
            alpha: p.successes as f64 + 1.0,
            beta: p.trials.saturating_sub(p.successes) as f64 + 1.0,
        }
    }

    /// `Normal(x̄, s/√n)`; `None` below two values (no variance to speak of).
    pub fn of_mean(m: &Moments) -> Option<Posterior> {
        let (mean, sd) = (m.mean()?, m.std_dev()?);
        Some(Posterior::Normal {
            mean,
            sd: sd / (m.count() as f64).sqrt(),
        })
    }

    fn check(&self) -> Result<(), StatsError> {
        let ok = match *self {
            Posterior::Beta { alpha, beta } => {
                alpha.is_finite() && beta.is_finite() && alpha > 0.0 && beta > 0.0
            }
            Posterior::Normal { mean, sd } => mean.is_finite() && sd.is_finite() && sd >= 0.0,
        };
        if ok {
            Ok(())
        } else {
            Err(StatsError::invalid(
                "posteriors",
                format!("{self:?} is not a valid posterior"),
            ))
        }
    }

    fn draw(&self, rng: &mut SeededRng) -> f64 {
        match *self {
            Posterior::Beta { alpha, beta } => rng.beta(alpha, beta),
            Posterior::Normal { mean, sd } => mean + sd * rng.normal(),
        }
    }
}

/// The probability that each arm's metric is the best (the highest, or with
/// `higher_is_better = false` the lowest), from `draws` joint draws of the posteriors. Ties
/// split their draw evenly. The result sums to 1.
pub fn prob_best(
    posteriors: &[Posterior],
    draws: u32,
    seed: u64,
    higher_is_better: bool,
) -> Result<Vec<f64>, StatsError> {
    if posteriors.is_empty() {
        return Err(StatsError::invalid("posteriors", "no arm"));
    }
    posteriors.iter().try_for_each(Posterior::check)?;
    if draws == 0 {
        return Err(StatsError::invalid("draws", "must be at least 1"));
    }
    let sign = if higher_is_better { 1.0 } else { -1.0 };
    let mut rng = SeededRng::new(seed);
    let mut wins = vec![0.0; posteriors.len()];
    let mut values = vec![0.0; posteriors.len()];
    for _ in 0..draws {
        for (v, p) in values.iter_mut().zip(posteriors) {
            *v = sign * p.draw(&mut rng);
        }
        let best = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let tied = values.iter().filter(|&&v| v == best).count() as f64;
        for (w, &v) in wins.iter_mut().zip(&values) {
            if v == best {
                *w += 1.0 / tied;
            }
        }
    }
    Ok(wins.iter().map(|w| w / f64::from(draws)).collect())
}

/// The next weights of the arms, summing exactly to the current weights' total: towards
/// `min_share + p_best · (total − k · min_share)` per arm, no weight moving by more than
/// `max_step`. `p_best` need not be normalised (all zeros share equally).
pub fn thompson_weights(
    p_best: &[f64],
    current: &[u32],
    min_share: u32,
    max_step: u32,
) -> Result<Vec<u32>, StatsError> {
    let k = current.len();
    if k < 2 {
        return Err(StatsError::invalid("current", "needs at least two arms"));
    }
    if p_best.len() != k {
        return Err(StatsError::invalid(
            "p_best",
            format!("{} probabilities for {k} arms", p_best.len()),
        ));
    }
    if let Some(p) = p_best.iter().find(|p| !(p.is_finite() && **p >= 0.0)) {
        return Err(StatsError::invalid(
            "p_best",
            format!("{p} is not a probability"),
        ));
    }
    let total: u64 = current.iter().map(|&w| u64::from(w)).sum();
    if u64::from(min_share) * k as u64 > total {
        return Err(StatsError::invalid(
            "min_share",
            format!("{k} arms of at least {min_share} exceed the total {total}"),
        ));
    }
    let sum: f64 = p_best.iter().sum();
    let share = |p: f64| if sum > 0.0 { p / sum } else { 1.0 / k as f64 };
    let free = (total - u64::from(min_share) * k as u64) as f64;
    let target: Vec<f64> = p_best
        .iter()
        .map(|&p| f64::from(min_share) + share(p) * free)
        .collect();
    let largest_move = target
        .iter()
        .zip(current)
        .map(|(t, &c)| (t - f64::from(c)).abs())
        .fold(0.0, f64::max);
    let scale = if largest_move > f64::from(max_step) {
        f64::from(max_step) / largest_move
    } else {
        1.0
    };
    let next: Vec<f64> = target
        .iter()
        .zip(current)
        .map(|(t, &c)| f64::from(c) + scale * (t - f64::from(c)))
        .collect();
    Ok(round_to_total(&next, total, current, max_step))
}

/// Largest-remainder rounding of `x` (which sums to `total`) to integers summing to `total`,
/// never further than `max_step` from `current`.
fn round_to_total(x: &[f64], total: u64, current: &[u32], max_step: u32) -> Vec<u32> {
    // A hair above each value so that one computed a rounding error below an integer bound
    // (the minimum share) still floors to it; any excess is taken back below.
    let mut out: Vec<u64> = x
        .iter()
        .map(|v| (v.max(0.0) + 1e-7).floor() as u64)
        .collect();
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&i, &j| (x[j] - x[j].floor()).total_cmp(&(x[i] - x[i].floor())));
    let mut missing = total.saturating_sub(out.iter().sum());
    // Floating-point sums may leave more than one unit per arm in rare cases: loop until done,
    // preferring the largest remainders and never passing an arm's upper bound.
    while missing > 0 {
        let before = missing;
        for &i in &order {
            if missing == 0 {
                break;
            }
            if out[i] < u64::from(current[i]) + u64::from(max_step) {
                out[i] += 1;
                missing -= 1;
            }
        }
        if missing == before {
            // Cannot happen when the bounds admit the total; give the rest to the first arm.
            out[0] += missing;
            break;
        }
    }
    let mut excess = out.iter().sum::<u64>().saturating_sub(total);
    while excess > 0 {
        let before = excess;
        for &i in order.iter().rev() {
            if excess == 0 {
                break;
            }
            if out[i] > 0 && out[i] + u64::from(max_step) > u64::from(current[i]) {
                out[i] -= 1;
                excess -= 1;
            }
        }
        if excess == before {
            break;
        }
    }
    out.iter()
        .map(|&w| u32::try_from(w).unwrap_or(u32::MAX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: u64, n: u64) -> Proportion {
        Proportion {
            successes: s,
            trials: n,
        }
    }

    #[test]
    fn prob_best_follows_the_evidence_and_is_reproducible() {
        let posteriors = [
            Posterior::of_proportion(p(100, 1000)),
            Posterior::of_proportion(p(150, 1000)),
            Posterior::of_proportion(p(100, 1000)),
        ];
        let probs = prob_best(&posteriors, 4000, 1, true).unwrap();
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(probs[1] > 0.99, "{probs:?}");
        assert_eq!(probs, prob_best(&posteriors, 4000, 1, true).unwrap());
        // Lower is better: the error rate of the second arm is the worst.
        let lower = prob_best(&posteriors, 4000, 1, false).unwrap();
        assert!(lower[1] < 0.01, "{lower:?}");
        // Equal arms share; point masses that tie split evenly.
        let same = [Posterior::Normal { mean: 1.0, sd: 0.0 }; 4];
        assert_eq!(prob_best(&same, 10, 3, true).unwrap(), vec![0.25; 4]);
        let m = Moments::from_slice(&[1.0, 2.0, 3.0]);
        assert_eq!(
            Posterior::of_mean(&m),
            Some(Posterior::Normal {
                mean: 2.0,
                sd: 1.0 / 3f64.sqrt()
            })
        );
        assert_eq!(Posterior::of_mean(&Moments::from_slice(&[1.0])), None);
    }

    #[test]
    fn bad_inputs_are_named() {
        assert_eq!(
            prob_best(&[], 10, 0, true).unwrap_err().field(),
            Some("posteriors")
        );
        let bad = [Posterior::Beta {
            alpha: 0.0,
            beta: 1.0,
        }];
        assert_eq!(
            prob_best(&bad, 10, 0, true).unwrap_err().field(),
            Some("posteriors")
        );
        assert_eq!(
            thompson_weights(&[0.5, 0.5], &[5000, 5000], 6000, 100)
                .unwrap_err()
                .field(),
            Some("min_share")
        );
        assert_eq!(
            thompson_weights(&[1.0], &[5000, 5000], 0, 100)
                .unwrap_err()
                .field(),
            Some("p_best")
        );
    }

    #[test]
    fn weights_move_towards_the_best_by_at_most_the_step() {
        let w = thompson_weights(&[0.0, 1.0, 0.0], &[3334, 3333, 3333], 500, 1000).unwrap();
        assert_eq!(w.iter().sum::<u32>(), 10_000);
        // The target is [500, 9000, 500]; the largest move (+5667) is cut to 1000.
        assert_eq!(w[1], 4333);
        assert!(w[0] < 3334 && w[2] < 3333);
        // Without a step limit the target is reached.
        let w = thompson_weights(&[0.0, 1.0, 0.0], &[3334, 3333, 3333], 500, 10_000).unwrap();
        assert_eq!(w, vec![500, 9000, 500]);
    }

    proptest! {
        #[test]
        fn weights_keep_the_total_the_floor_and_the_step(
            probs in proptest::collection::vec(0.0f64..1.0, 2..6),
            cuts in proptest::collection::vec(0u32..10_000, 5),
            min_share in 0u32..1_500,
            max_step in 0u32..4_000,
        ) {
            let k = probs.len();
            // Current weights: a split of 10 000 respecting the minimum.
            let free = 10_000 - min_share * k as u32;
            let mut points: Vec<u32> = cuts[..k - 1].iter().map(|c| c % (free + 1)).collect();
            points.push(0);
            points.push(free);
            points.sort_unstable();
            let current: Vec<u32> = points.windows(2).map(|w| w[1] - w[0] + min_share).collect();
            prop_assert_eq!(current.iter().sum::<u32>(), 10_000);
            let next = thompson_weights(&probs, &current, min_share, max_step).unwrap();
            prop_assert_eq!(next.iter().sum::<u32>(), 10_000);
            for (n, c) in next.iter().zip(&current) {
                prop_assert!(*n >= min_share, "{next:?} below {min_share}");
                prop_assert!(n.abs_diff(*c) <= max_step, "{current:?} -> {next:?} by more than {max_step}");
            }
        }
    }
}
