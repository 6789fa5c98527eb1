//! Mergeable sufficient statistics for streams.
//!
//! The gateway keeps one of each per variant and window; the controller merges windows (and,
//! with several replicas, replicas) without rescanning the prediction log. Every `merge` is
//! exact: merging the summaries of any split of a stream equals the summary of the whole
//! stream (up to floating-point rounding for [`Moments`]). Property tests check this.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::StatsError;

/// Successes out of trials: accuracy, error rate, conversion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proportion {
    pub successes: u64,
    pub trials: u64,
}

impl Proportion {
    /// Counts with `successes <= trials`.
    pub fn new(successes: u64, trials: u64) -> Result<Self, StatsError> {
        if successes > trials {
            return Err(StatsError::invalid(
                "successes",
                format!("successes ({successes}) exceed trials ({trials})"),
            ));
        }
        Ok(Proportion { successes, trials })
    }

    /// Records one trial.
    pub fn record(&mut self, success: bool) {
        self.trials += 1;
        self.successes += u64::from(success);
    }

    /// The observed rate, `None` before the first trial.
    pub fn rate(&self) -> Option<f64> {
        (self.trials > 0).then(|| self.successes as f64 / self.trials as f64)
    }

    pub fn failures(&self) -> u64 {
        self.trials - self.successes
    }

    pub fn merge(&mut self, other: &Proportion) {
        self.successes += other.successes;
        self.trials += other.trials;
    }
}

/// Count, mean, variance, min and max by Welford's algorithm; merged by Chan et al.'s formula.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    count: u64,
    mean: f64,
    /// Sum of squared deviations from the mean.
    m2: f64,
    min: f64,
    max: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Moments {
            count: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Moments {
    pub fn new() -> Self {
        Self::default()
    }

    /// Summary of a slice in one pass.
    pub fn from_slice(values: &[f64]) -> Self {
        let mut m = Self::new();
        values.iter().for_each(|&v| m.push(v));
        m
    }

    /// Rebuilds a summary from stored parts (as written by [`Moments::parts`]).
    pub fn from_parts(count: u64, mean: f64, m2: f64, min: f64, max: f64) -> Self {
        if count == 0 {
            return Self::default();
        }
        Moments {
            count,
            mean,
            m2,
            min,
            max,
        }
    }

    /// `(count, mean, m2, min, max)`, for storage.
    pub fn parts(&self) -> (u64, f64, f64, f64, f64) {
        (self.count, self.mean, self.m2, self.min, self.max)
    }

    /// Adds one observation. Non-finite values are the caller's bug and are ignored.
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }

    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let n_a = self.count as f64;
        let n_b = other.count as f64;
        let n = n_a + n_b;
        let delta = other.mean - self.mean;
        self.mean += delta * n_b / n;
        self.m2 += other.m2 + delta * delta * n_a * n_b / n;
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> f64 {
        self.mean * self.count as f64
    }

    /// Mean, `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then_some(self.mean)
    }

    /// Sample variance (ddof = 1), `None` below two observations.
    pub fn variance(&self) -> Option<f64> {
        (self.count > 1).then(|| self.m2 / (self.count - 1) as f64)
    }

    /// Sample standard deviation (ddof = 1).
    pub fn std_dev(&self) -> Option<f64> {
        self.variance().map(f64::sqrt)
    }

    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }
}

/// Latency distribution in microseconds (1 µs .. 1 h, 3 significant digits).
///
/// The counts grow with the largest latency recorded (auto-resizing, 32-bit counters per
/// bucket): a series that saw at most a few milliseconds holds ~12 KB instead of the ~180 KB a
/// histogram sized up front for an hour takes, which matters because every routing epoch starts
/// new series (a gateway flipped blue-green a hundred times holds a few hundred of them).
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    inner: Histogram<u32>,
}

/// Equal when they hold the same observations (however far each has grown).
impl PartialEq for LatencyHistogram {
    fn eq(&self, other: &Self) -> bool {
        self.count() == other.count() && self.buckets() == other.buckets()
    }
}

/// Largest recorded latency; larger values are clamped to it.
pub const MAX_LATENCY_MICROS: u64 = 3_600_000_000;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        #[allow(clippy::expect_used)]
        let inner = Histogram::new(3).expect("3 significant digits are valid");
        LatencyHistogram { inner }
    }

    /// Records one latency; zero counts as 1 µs and values past the bound are clamped.
    pub fn record(&mut self, micros: u64) {
        self.record_n(micros, 1);
    }

    /// Records `count` observations of the same latency.
    pub fn record_n(&mut self, micros: u64, count: u64) {
        // `record_n` grows the histogram to fit the value (hdrhistogram's `saturating_*`
        // variants clamp to the current size instead) and saturates a bucket's count at
        // 2^32 - 1; with the value clamped to the bound it cannot fail.
        let _ = self.inner.record_n(
            micros.clamp(1, MAX_LATENCY_MICROS),
            u32::try_from(count).unwrap_or(u32::MAX),
        );
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        // Same precision, and `self` grows to hold `other`'s range, so addition cannot fail.
        let _ = self.inner.add(&other.inner);
    }

    pub fn count(&self) -> u64 {
        self.inner.len()
    }

    /// Latency at quantile `q` in [0, 1], `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        (self.count() > 0).then(|| self.inner.value_at_quantile(q.clamp(0.0, 1.0)))
    }

    pub fn p50(&self) -> Option<u64> {
        self.quantile(0.50)
    }

    pub fn p95(&self) -> Option<u64> {
        self.quantile(0.95)
    }

    pub fn p99(&self) -> Option<u64> {
        self.quantile(0.99)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count() > 0).then(|| self.inner.mean())
    }

    pub fn max(&self) -> Option<u64> {
        (self.count() > 0).then(|| self.inner.max())
    }

    /// Non-empty buckets as `(highest equivalent value, count)`, for storage. Recording each
    /// pair back with [`LatencyHistogram::record_n`] rebuilds an equal histogram.
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        self.inner
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), u64::from(v.count_at_value())))
            .collect()
    }

    /// Rebuilds a histogram from [`LatencyHistogram::buckets`].
    pub fn from_buckets(buckets: &[(u64, u64)]) -> Self {
        let mut h = Self::new();
        for &(value, count) in buckets {
            h.record_n(value, count);
        }
        h
    }
}

/// Relative width of a [`SignedLogHistogram`] bucket: values within 1% of each other may share
/// one.
pub const SIGNED_HISTOGRAM_RESOLUTION: f64 = 0.01;

/// Counts of signed values (errors `prediction − truth`) in logarithmic buckets of the
/// magnitude, 1% wide, one set per sign, plus exact zeros. Merges exactly (counts add), keeps
/// only the buckets it has seen (an error distribution spanning three decades fills at most
/// ~700 per sign), and answers "how many values lie below `x`" for an `x` chosen after the
/// fact (a spec's limit), to within one bucket of `x`: see [`SignedLogHistogram::count_below`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedLogHistogram {
    /// Buckets of negative values by the bucket index of their magnitude.
    negative: BTreeMap<i32, u64>,
    zero: u64,
    positive: BTreeMap<i32, u64>,
}

/// `(negative buckets, zeros, positive buckets)`, for storage.
pub type SignedHistogramParts = (Vec<(i32, u64)>, u64, Vec<(i32, u64)>);

impl SignedLogHistogram {
    /// Bucket `i` holds the magnitudes in `[(1 + r)^i, (1 + r)^(i + 1))`.
    fn bucket(magnitude: f64) -> i32 {
        (magnitude.ln() / SIGNED_HISTOGRAM_RESOLUTION.ln_1p()).floor() as i32
    }

    /// Adds one value. Non-finite values are the caller's bug and are ignored.
    pub fn record(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        if x == 0.0 {
            self.zero += 1;
        } else if x < 0.0 {
            *self.negative.entry(Self::bucket(-x)).or_default() += 1;
        } else {
            *self.positive.entry(Self::bucket(x)).or_default() += 1;
        }
    }

    pub fn merge(&mut self, other: &SignedLogHistogram) {
        for (mine, theirs) in [
            (&mut self.negative, &other.negative),
            (&mut self.positive, &other.positive),
        ] {
            for (b, n) in theirs {
                *mine.entry(*b).or_default() += n;
            }
        }
        self.zero += other.zero;
    }

    pub fn count(&self) -> u64 {
        self.negative.values().sum::<u64>() + self.zero + self.positive.values().sum::<u64>()
    }

    /// The number of values below `x`, never fewer: every value `< x` counts, and so may a
    /// value `>= x` that shares `x`'s bucket (within 1% of `x`). `x = 0` counts the negative
    /// values exactly; `x = −∞` counts none and `x = +∞` all.
    pub fn count_below(&self, x: f64) -> u64 {
        if x.is_nan() || x == f64::NEG_INFINITY {
            return 0;
        }
        if x == f64::INFINITY {
            return self.count();
        }
        let negatives: u64 = self.negative.values().sum();
        if x == 0.0 {
            return negatives;
        }
        let b = Self::bucket(x.abs());
        if x < 0.0 {
            // Magnitudes from x's bucket up.
            self.negative.range(b..).map(|(_, n)| n).sum()
        } else {
            negatives + self.zero + self.positive.range(..=b).map(|(_, n)| n).sum::<u64>()
        }
    }

    /// The non-empty buckets in the order of their values, each as `(key, count)`: a negative
    /// bucket `b` (magnitudes in `[(1 + r)^b, (1 + r)^(b + 1))`) has key `−(2³² + b)`, zero has
    /// key 0, a positive bucket `b` has key `2³² + b`. Keys order like the values they hold, so
    /// quantiles of the values can be taken on the keys (to within a bucket).
    pub fn ordered_buckets(&self) -> Vec<(i64, u64)> {
        const OFFSET: i64 = 1 << 32;
        let negative = self
            .negative
            .iter()
            .rev()
            .map(|(b, n)| (-(OFFSET + i64::from(*b)), *n));
        let zero = (self.zero > 0).then_some((0, self.zero));
        let positive = self
            .positive
            .iter()
            .map(|(b, n)| (OFFSET + i64::from(*b), *n));
        negative.chain(zero).chain(positive).collect()
    }

    /// The non-empty buckets, for storage.
    pub fn parts(&self) -> SignedHistogramParts {
        (
            self.negative.iter().map(|(b, n)| (*b, *n)).collect(),
            self.zero,
            self.positive.iter().map(|(b, n)| (*b, *n)).collect(),
        )
    }

    /// Rebuilds a histogram from [`SignedLogHistogram::parts`].
    pub fn from_parts(parts: SignedHistogramParts) -> Self {
        let (negative, zero, positive) = parts;
        let mut h = SignedLogHistogram {
            zero,
            ..Default::default()
        };
        for (b, n) in negative.into_iter().filter(|(_, n)| *n > 0) {
            *h.negative.entry(b).or_default() += n;
        }
        for (b, n) in positive.into_iter().filter(|(_, n)| *n > 0) {
            *h.positive.entry(b).or_default() += n;
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn moments_match_two_pass() {
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        let m = Moments::from_slice(&xs);
        assert_eq!(m.count(), 8);
        assert!(close(m.mean().unwrap(), 5.0));
        // Two-pass sample variance: sum of squared deviations 32 over 7.
        assert!(close(m.variance().unwrap(), 32.0 / 7.0));
        assert_eq!(m.min(), Some(2.0));
        assert_eq!(m.max(), Some(9.0));
        assert_eq!(Moments::new().mean(), None);
        assert_eq!(Moments::from_slice(&[1.0]).variance(), None);
    }

    #[test]
    fn proportion_rejects_more_successes_than_trials() {
        assert!(Proportion::new(3, 2).is_err());
        assert_eq!(Proportion::new(0, 0).unwrap().rate(), None);
    }

    #[test]
    fn a_histogram_grows_with_the_largest_latency_it_saw() {
        let mut h = LatencyHistogram::new();
        (1..=5_000).for_each(|v| h.record(v));
        let small = h.inner.distinct_values();
        // A few ms of latency fit in a few thousand 4-byte buckets (~16 KB).
        assert!(small <= 4_096, "{small} buckets for values up to 5 ms");
        assert_eq!(h.p50(), Some(h.inner.highest_equivalent(2_500)));
        h.record(2_000_000);
        assert!(h.inner.distinct_values() > small);
        assert_eq!(h.max(), Some(h.inner.highest_equivalent(2_000_000)));
        // Growing did not move what was recorded before.
        assert_eq!(h.p50(), Some(h.inner.highest_equivalent(2_500)));
        assert_eq!(h.count(), 5_001);
    }

    #[test]
    fn histograms_of_the_same_observations_are_equal_whatever_their_size() {
        let (mut grown, mut small) = (LatencyHistogram::new(), LatencyHistogram::new());
        let mut large = LatencyHistogram::new();
        large.record(3_000_000);
        grown.merge(&large);
        grown.inner.subtract(&large.inner).expect("same precision");
        for v in [10, 200, 3_000] {
            grown.record(v);
            small.record(v);
        }
        assert!(grown.inner.distinct_values() > small.inner.distinct_values());
        assert_eq!(grown, small);
        assert_eq!(small, grown);
        small.record(10);
        assert_ne!(grown, small);
    }

    #[test]
    fn histogram_round_trips_through_buckets() {
        let mut h = LatencyHistogram::new();
        for v in [0, 1, 250, 999, 1_000, 12_345, 5_000_000, u64::MAX] {
            h.record(v);
        }
        let back = LatencyHistogram::from_buckets(&h.buckets());
        assert_eq!(back.count(), h.count());
        for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(back.quantile(q), h.quantile(q));
        }
        assert_eq!(
            h.max(),
            Some(h.inner.highest_equivalent(MAX_LATENCY_MICROS))
        );
    }

    #[test]
    fn signed_histogram_counts_below_within_one_bucket_and_never_fewer() {
        let xs = [
            -80.0, -51.0, -50.2, -49.0, -10.0, -0.5, 0.0, 0.0, 0.3, 12.0, 50.0, 120.0,
        ];
        let mut h = SignedLogHistogram::default();
        xs.iter().for_each(|&x| h.record(x));
        h.record(f64::NAN);
        assert_eq!(h.count(), 12);
        let exact = |t: f64| xs.iter().filter(|&&x| x < t).count() as u64;
        // Thresholds away from every value (more than a bucket): exact.
        for t in [-100.0, -60.0, -30.0, -1.0, 0.0, 0.1, 1.0, 20.0, 80.0, 1e9] {
            assert_eq!(h.count_below(t), exact(t), "below {t}");
        }
        // -49.8 shares a bucket with -50.2 (1% wide): that value may count, never one fewer.
        let near = h.count_below(-49.8);
        assert!((exact(-49.8)..=exact(-49.8) + 1).contains(&near), "{near}");
        assert_eq!(h.count_below(f64::NEG_INFINITY), 0);
        assert_eq!(h.count_below(f64::INFINITY), 12);
        assert_eq!(h.count_below(f64::NAN), 0);
        assert_eq!(SignedLogHistogram::from_parts(h.parts()), h);
    }

    proptest! {
        #[test]
        fn signed_histogram_merge_is_exact_and_bounds_the_count(
            xs in proptest::collection::vec(-1e4f64..1e4, 0..300),
            cut in 0usize..300,
            t in -2e4f64..2e4,
        ) {
            let cut = cut.min(xs.len());
            let mut whole = SignedLogHistogram::default();
            xs.iter().for_each(|&x| whole.record(x));
            let (mut a, mut b) = (SignedLogHistogram::default(), SignedLogHistogram::default());
            xs[..cut].iter().for_each(|&x| a.record(x));
            xs[cut..].iter().for_each(|&x| b.record(x));
            b.merge(&a);
            prop_assert_eq!(&b, &whole);
            // Every value below t counts; a value at or above t counts only within 1% of t.
            let below = xs.iter().filter(|&&x| x < t).count() as u64;
            let slack = t.abs() * 1.011;
            let upper = xs.iter().filter(|&&x| x < t || (x - t).abs() <= slack - t.abs()).count() as u64;
            let got = whole.count_below(t);
            prop_assert!(below <= got && got <= upper, "{} <= {} <= {}", below, got, upper);
        }

        #[test]
        fn moments_merge_equals_one_pass(
            xs in proptest::collection::vec(-1e6f64..1e6, 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..6),
        ) {
            let whole = Moments::from_slice(&xs);
            let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c.min(xs.len())).collect();
            bounds.push(0);
            bounds.push(xs.len());
            bounds.sort_unstable();
            let parts: Vec<Moments> =
                bounds.windows(2).map(|w| Moments::from_slice(&xs[w[0]..w[1]])).collect();
            // Left fold and right fold must both equal the single pass.
            let mut left = Moments::new();
            parts.iter().for_each(|p| left.merge(p));
            let mut right = Moments::new();
            parts.iter().rev().for_each(|p| { let mut q = *p; q.merge(&right); right = q; });
            for merged in [left, right] {
                prop_assert_eq!(merged.count(), whole.count());
                prop_assert_eq!(merged.min(), whole.min());
                prop_assert_eq!(merged.max(), whole.max());
                if let (Some(a), Some(b)) = (merged.mean(), whole.mean()) {
                    prop_assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
                }
                if let (Some(a), Some(b)) = (merged.variance(), whole.variance()) {
                    prop_assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
                }
            }
        }

        #[test]
        fn histogram_merge_is_exact(
            xs in proptest::collection::vec(0u64..10_000_000, 0..300),
            cut in 0usize..300,
        ) {
            let cut = cut.min(xs.len());
            let mut whole = LatencyHistogram::new();
            xs.iter().for_each(|&x| whole.record(x));
            let (mut a, mut b) = (LatencyHistogram::new(), LatencyHistogram::new());
            xs[..cut].iter().for_each(|&x| a.record(x));
            xs[cut..].iter().for_each(|&x| b.record(x));
            let mut ab = a.clone();
            ab.merge(&b);
            let mut ba = b.clone();
            ba.merge(&a);
            prop_assert_eq!(&ab, &whole);
            prop_assert_eq!(&ba, &whole);
        }

        #[test]
        fn proportion_merge_is_exact(outcomes in proptest::collection::vec(any::<bool>(), 0..200), cut in 0usize..200) {
            let cut = cut.min(outcomes.len());
            let mut whole = Proportion::default();
            outcomes.iter().for_each(|&o| whole.record(o));
            let (mut a, mut b) = (Proportion::default(), Proportion::default());
            outcomes[..cut].iter().for_each(|&o| a.record(o));
            outcomes[cut..].iter().for_each(|&o| b.record(o));
            b.merge(&a);
            prop_assert_eq!(b, whole);
        }
    }
}
