//! Synthetic wafer-test records: the same distribution the shipped models were trained on
//! (`tools/make_models.py`, formula in `models/README.md`), ported so the demo and the tests
//! need no Python. Each die comes with its ground truth (pass/fail and test time).
//! Deterministic for a seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One die's test record with its true bin and test time.
#[derive(Debug, Clone)]
pub struct Die {
    pub id: u64,
    /// vdd, idd, freq, temp, die_x, die_y, leakage, ring_osc.
    pub features: [f32; 8],
    /// 1 = pass.
    pub pass: u8,
    pub test_time_ms: f64,
}

#[derive(Debug)]
pub struct WaferGenerator {
    rng: StdRng,
    next_id: u64,
}

impl WaferGenerator {
    pub fn new(seed: u64) -> Self {
        WaferGenerator {
            rng: StdRng::seed_from_u64(seed),
            next_id: 0,
        }
    }

    fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        // Box-Muller.
        let u1: f64 = self.rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = self.rng.random();
        mean + sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    pub fn die(&mut self) -> Die {
        let vdd = self.normal(1.0, 0.03);
        let idd = self.normal(50.0, 5.0);
        let freq = self.normal(2.0, 0.15);
        let temp = self.rng.random_range(25.0..85.0);
        let die_x = f64::from(self.rng.random_range(-10i32..=10));
        let die_y = f64::from(self.rng.random_range(-10i32..=10));
        let leakage = self.normal(0.0, 0.5).exp();
        let ring_osc = self.normal(1000.0, 40.0);
        let z_vdd = (vdd - 1.0) / 0.03;
        let z_idd = (idd - 50.0) / 5.0;
        let z_freq = (freq - 2.0) / 0.15;
        let z_temp = (temp - 55.0) / 30.0;
        let z_leak = leakage.ln() / 0.5;
        let z_ro = (ring_osc - 1000.0) / 40.0;
        let r = (die_x * die_x + die_y * die_y).sqrt() / 10.0;
        let score = 12.0 + 3.0 * z_vdd - 3.0 * z_idd + 4.0 * z_freq - 2.0 * z_temp - 5.0 * z_leak
            + 3.0 * z_ro
            - 25.0 * (r - 0.9).max(0.0);
        let p_pass = 1.0 / (1.0 + (-score).exp());
        let pass = u8::from(self.rng.random::<f64>() < p_pass);
        let test_time_ms = 120.0 + 0.4 * (temp - 55.0) + 20.0 * r * r - 6.0 * z_freq
            + 8.0 * z_leak.max(0.0)
            + self.normal(0.0, 3.0);
        self.next_id += 1;
        Die {
            id: self.next_id,
            features: [vdd, idd, freq, temp, die_x, die_y, leakage, ring_osc].map(|x| x as f32),
            pass,
            test_time_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pass_rate_matches_the_training_distribution() {
        // models/README.md: the pass rate is about 87% (always-pass scores 0.866).
        let mut g = WaferGenerator::new(7);
        let n = 20_000;
        let passes: u32 = (0..n).map(|_| u32::from(g.die().pass)).sum();
        let rate = f64::from(passes) / f64::from(n);
        assert!((0.84..0.90).contains(&rate), "pass rate {rate}");
        let mut a = WaferGenerator::new(3);
        let mut b = WaferGenerator::new(3);
        assert_eq!(
            a.die().features,
            b.die().features,
            "deterministic for a seed"
        );
    }
}
