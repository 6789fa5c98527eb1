//! Seeded simulation: under the null (both arms convert at the same rate) an analyst who looks
//! after every observation and stops at the first rejection must be wrong at most α of the time
//! with the mSPRT, while the same peeking with a fixed-horizon z-test is wrong far more often.
//! Likewise the confidence sequences: an analyst who reads the interval after every pair of
//! observations sees one that misses the true difference at some look in at most α of the
//! experiments, while the fixed-horizon interval read the same way misses far more often.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand::{rngs::StdRng, Rng, SeedableRng};
use switchyard_stats::proportions::two_proportion_ztest;
use switchyard_stats::rng::SeededRng;
use switchyard_stats::sequential::{
    msprt_two_means, msprt_two_means_known_variance, msprt_two_proportions, MsprtConfig,
    SequentialLook, SequentialMonitor,
};
use switchyard_stats::{Moments, Proportion};

const EXPERIMENTS: usize = 500;
const MAX_PER_ARM: u64 = 2_000;
const RATE: f64 = 0.3;
const ALPHA: f64 = 0.05;

/// Runs one null experiment; returns (mSPRT rejected, peeked z-test rejected).
fn run(rng: &mut StdRng, config: &MsprtConfig) -> (bool, bool) {
    let (mut a, mut b) = (Proportion::default(), Proportion::default());
    let mut monitor = SequentialMonitor::default();
    let mut z_rejected = false;
    for _ in 0..MAX_PER_ARM {
        a.record(rng.random_bool(RATE));
        b.record(rng.random_bool(RATE));
        monitor.observe(a, b, config).unwrap();
        if !z_rejected && a.trials >= config.min_trials {
            z_rejected = two_proportion_ztest(a, b, ALPHA).unwrap().p_value < ALPHA;
        }
        if monitor.rejected && z_rejected {
            break;
        }
    }
    (monitor.rejected, z_rejected)
}

#[test]
fn msprt_controls_false_positives_under_continuous_peeking() {
    let config = MsprtConfig {
        alpha: ALPHA,
        ..MsprtConfig::default()
    };
    let mut rng = StdRng::seed_from_u64(0x5717_c4a2d);
    let (mut msprt_fp, mut z_fp) = (0usize, 0usize);
    for _ in 0..EXPERIMENTS {
        let (m, z) = run(&mut rng, &config);
        msprt_fp += usize::from(m);
        z_fp += usize::from(z);
    }
    let msprt_rate = msprt_fp as f64 / EXPERIMENTS as f64;
    let z_rate = z_fp as f64 / EXPERIMENTS as f64;
    eprintln!("false-positive rate with peeking: mSPRT {msprt_rate:.3}, fixed z-test {z_rate:.3}");
    assert!(
        msprt_rate <= ALPHA,
        "mSPRT false-positive rate {msprt_rate} exceeds {ALPHA}"
    );
    // Peeking at a fixed-horizon test after every pair inflates its error several-fold.
    assert!(
        z_rate >= 3.0 * ALPHA,
        "peeked z-test false-positive rate only {z_rate}"
    );
}

#[test]
fn msprt_detects_a_real_difference() {
    let config = MsprtConfig {
        alpha: ALPHA,
        ..MsprtConfig::default()
    };
    let mut rng = StdRng::seed_from_u64(7);
    let mut detected = 0;
    for _ in 0..50 {
        let (mut a, mut b) = (Proportion::default(), Proportion::default());
        let mut monitor = SequentialMonitor::default();
        for _ in 0..MAX_PER_ARM {
            a.record(rng.random_bool(0.30));
            b.record(rng.random_bool(0.40));
            monitor.observe(a, b, &config).unwrap();
            if monitor.rejected {
                detected += 1;
                break;
            }
        }
    }
    // A 10-point lift at 2,000 per arm is detected almost always.
    assert!(detected >= 45, "detected only {detected} of 50");
}

// ---------------------------------------------------------------------------------------------
// Coverage of the confidence sequences under continuous peeking.

const COVERAGE_EXPERIMENTS: usize = 400;
const Z_975: f64 = 1.959_963_984_540_054;

/// Runs experiments of `pairs` observations per arm; after every pair, `look` gives the
/// sequence's interval and the variance of the difference (for the fixed-horizon interval).
/// Returns the share of experiments in which every look's interval held `truth`, for the
/// confidence sequence and for the fixed-horizon interval peeked the same way.
fn coverage<S>(
    seed: u64,
    pairs: usize,
    truth: f64,
    mut new: impl FnMut() -> S,
    mut draw: impl FnMut(&mut SeededRng, &mut S),
    mut look: impl FnMut(&S) -> Option<(SequentialLook, f64)>,
) -> (f64, f64) {
    let mut rng = SeededRng::new(seed);
    let (mut cs_held, mut fixed_held) = (0usize, 0usize);
    for _ in 0..COVERAGE_EXPERIMENTS {
        let mut state = new();
        let (mut cs_ok, mut fixed_ok) = (true, true);
        for _ in 0..pairs {
            draw(&mut rng, &mut state);
            if let Some((l, s2)) = look(&state) {
                cs_ok &= l.ci_low <= truth && truth <= l.ci_high;
                fixed_ok &= (l.diff - truth).abs() <= Z_975 * s2.sqrt();
            }
            if !cs_ok && !fixed_ok {
                break;
            }
        }
        cs_held += usize::from(cs_ok);
        fixed_held += usize::from(fixed_ok);
    }
    let n = COVERAGE_EXPERIMENTS as f64;
    (cs_held as f64 / n, fixed_held as f64 / n)
}

#[track_caller]
fn assert_coverage(what: &str, (cs, fixed): (f64, f64)) {
    eprintln!(
        "{what}: coverage under continuous peeking: sequence {cs:.3}, fixed-horizon {fixed:.3}"
    );
    assert!(cs >= 1.0 - ALPHA, "{what}: sequence covered only {cs}");
    assert!(
        fixed <= 0.85,
        "{what}: the peeked fixed interval covered {fixed}"
    );
}

#[test]
fn mean_sequence_with_known_variance_covers_under_continuous_peeking() {
    let (sd_a, sd_b, truth) = (1.0, 2.0, 0.25);
    let config = MsprtConfig {
        alpha: ALPHA,
        tau: 0.1,
        min_trials: 1,
    };
    let result = coverage(
        11,
        1_000,
        truth,
        || (Moments::new(), Moments::new()),
        |rng, (a, b)| {
            a.push(sd_a * rng.normal());
            b.push(truth + sd_b * rng.normal());
        },
        |(a, b)| {
            let l = msprt_two_means_known_variance(a, sd_a * sd_a, b, sd_b * sd_b, &config).ok()?;
            let s2 = sd_a * sd_a / a.count() as f64 + sd_b * sd_b / b.count() as f64;
            Some((l, s2))
        },
    );
    assert_coverage("normal means, known variance", result);
}

fn welch_s2(a: &Moments, b: &Moments) -> f64 {
    a.variance().unwrap_or(0.0) / a.count() as f64 + b.variance().unwrap_or(0.0) / b.count() as f64
}

#[test]
fn mean_sequence_with_estimated_variance_covers_under_continuous_peeking() {
    let truth = -0.4;
    let config = MsprtConfig {
        alpha: ALPHA,
        tau: 0.2,
        min_trials: 30,
    };
    // Skewed data (exponential, as revenue or test time): the normal approximation of the
    // difference is what is relied on.
    let result = coverage(
        12,
        1_000,
        truth,
        || (Moments::new(), Moments::new()),
        |rng, (a, b)| {
            a.push(-(1.0 - rng.uniform()).ln() * 2.0);
            b.push(-(1.0 - rng.uniform()).ln() * 1.6);
        },
        |(a, b)| Some((msprt_two_means(a, b, &config).ok()?, welch_s2(a, b))),
    );
    assert_coverage("exponential means, estimated variance", result);
}

#[test]
fn proportion_sequence_covers_under_continuous_peeking() {
    let (p_a, p_b) = (0.30, 0.36);
    let config = MsprtConfig {
        alpha: ALPHA,
        ..MsprtConfig::default()
    };
    let result = coverage(
        13,
        2_000,
        p_b - p_a,
        || (Proportion::default(), Proportion::default()),
        |rng, (a, b)| {
            a.record(rng.bernoulli(p_a));
            b.record(rng.bernoulli(p_b));
        },
        |(a, b)| {
            let l = msprt_two_proportions(*a, *b, &config).ok()?;
            let (ra, rb) = (a.rate()?, b.rate()?);
            let s2 = ra * (1.0 - ra) / a.trials as f64 + rb * (1.0 - rb) / b.trials as f64;
            Some((l, s2))
        },
    );
    assert_coverage("proportions", result);
}
