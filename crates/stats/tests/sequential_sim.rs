//! Seeded simulation: under the null (both arms convert at the same rate) an analyst who looks
//! after every observation and stops at the first rejection must be wrong at most α of the time
//! with the mSPRT, while the same peeking with a fixed-horizon z-test is wrong far more often.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand::{rngs::StdRng, Rng, SeedableRng};
use switchyard_stats::proportions::two_proportion_ztest;
use switchyard_stats::sequential::{MsprtConfig, SequentialMonitor};
use switchyard_stats::Proportion;

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
