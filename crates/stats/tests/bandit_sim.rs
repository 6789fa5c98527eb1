//! Seeded simulation of Thompson sampling as the controller runs it: traffic is split by
//! weights, and every tick the weights are recomputed from the counts so far (with a minimum
//! share per arm and a limit on each move). Over the same horizon it loses less than a fixed
//! equal split: cumulative (pseudo-)regret is the sum over requests of how much worse the arm
//! served was than the best arm.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchyard_stats::bandit::{prob_best, thompson_weights, Posterior};
use switchyard_stats::rng::SeededRng;
use switchyard_stats::Proportion;

const TOTAL: u32 = 10_000;
const TICKS: usize = 40;
const PER_TICK: usize = 250;
const MIN_SHARE: u32 = 500;
const MAX_STEP: u32 = 1_500;
const DRAWS: u32 = 1_000;

/// Cumulative regret of one run; `adaptive` re-weights every tick, otherwise equal weights.
fn run(rates: &[f64], seed: u64, adaptive: bool) -> f64 {
    let k = rates.len();
    let best = rates.iter().copied().fold(0.0, f64::max);
    let mut rng = SeededRng::new(seed);
    let mut counts = vec![Proportion::default(); k];
    let equal = TOTAL / k as u32;
    let mut weights = vec![equal; k];
    weights[0] += TOTAL - equal * k as u32;
    let mut regret = 0.0;
    for tick in 0..TICKS {
        if adaptive && tick > 0 {
            let posteriors: Vec<Posterior> = counts
                .iter()
                .map(|c| Posterior::of_proportion(*c))
                .collect();
            let p = prob_best(&posteriors, DRAWS, seed ^ tick as u64, true).unwrap();
            weights = thompson_weights(&p, &weights, MIN_SHARE, MAX_STEP).unwrap();
            assert_eq!(weights.iter().sum::<u32>(), TOTAL);
        }
        for _ in 0..PER_TICK {
            let bucket = (rng.next_u64() % u64::from(TOTAL)) as u32;
            let mut upper = 0;
            let arm = weights
                .iter()
                .position(|&w| {
                    upper += w;
                    bucket < upper
                })
                .unwrap_or(k - 1);
            counts[arm].record(rng.bernoulli(rates[arm]));
            regret += best - rates[arm];
        }
    }
    regret
}

#[test]
fn thompson_sampling_has_lower_regret_than_an_equal_split() {
    let rates = [0.10, 0.12, 0.16];
    let runs = 20;
    let (mut bandit, mut fixed, mut bandit_better) = (0.0, 0.0, 0);
    for seed in 0..runs {
        let b = run(&rates, 1000 + seed, true);
        let f = run(&rates, 1000 + seed, false);
        bandit += b;
        fixed += f;
        bandit_better += usize::from(b < f);
    }
    let (bandit, fixed) = (bandit / runs as f64, fixed / runs as f64);
    eprintln!(
        "mean cumulative regret over {} requests: Thompson {bandit:.1}, equal split {fixed:.1}; \
         Thompson lower in {bandit_better}/{runs} runs",
        TICKS * PER_TICK
    );
    // The equal split's regret is fixed by the rates: (0.06 + 0.04 + 0) / 3 per request.
    assert!((fixed / (TICKS * PER_TICK) as f64 - 0.1 / 3.0).abs() < 0.005);
    assert!(bandit < 0.6 * fixed, "Thompson {bandit} vs equal {fixed}");
    assert!(
        bandit_better >= 18,
        "Thompson lower in only {bandit_better} of {runs}"
    );
}

#[test]
fn with_equal_arms_the_weights_stay_near_equal_on_average() {
    // No arm is better: the bandit should not lock in on one (the minimum share and the step
    // limit keep exploration going); on average each arm keeps about a third.
    let rates = [0.2, 0.2, 0.2];
    let mut served = [0u64; 3];
    for seed in 0..10 {
        let mut rng = SeededRng::new(seed);
        let mut counts = [Proportion::default(); 3];
        let mut weights = vec![3334, 3333, 3333];
        for tick in 0..TICKS {
            let posteriors: Vec<Posterior> = counts
                .iter()
                .map(|c| Posterior::of_proportion(*c))
                .collect();
            let p = prob_best(&posteriors, DRAWS, seed ^ tick as u64, true).unwrap();
            weights = thompson_weights(&p, &weights, MIN_SHARE, MAX_STEP).unwrap();
            for _ in 0..PER_TICK {
                let bucket = (rng.next_u64() % u64::from(TOTAL)) as u32;
                let arm = if bucket < weights[0] {
                    0
                } else if bucket < weights[0] + weights[1] {
                    1
                } else {
                    2
                };
                counts[arm].record(rng.bernoulli(rates[arm]));
                served[arm] += 1;
            }
        }
    }
    let total: u64 = served.iter().sum();
    for s in served {
        let share = s as f64 / total as f64;
        assert!((0.2..0.47).contains(&share), "{served:?}");
    }
}
