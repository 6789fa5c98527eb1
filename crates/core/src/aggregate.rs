//! Incrementally maintained statistics per model version, role and routing epoch, and per
//! serving/shadow pair.
//!
//! Built from the mergeable summaries of `switchyard-stats`, so the controller reads them
//! without rescanning the prediction log, and two `Aggregates` (two windows, two replicas)
//! merge exactly.
//!
//! Aggregates are built where no rollout spec is known (the log writer, a replica), so nothing
//! here may depend on a spec's thresholds. What a threshold chosen later needs is kept in a
//! form that answers for any threshold: the agreement of regression outputs within a
//! tolerance comes from a bounded uniform sample of the compared pairs ([`PairStats::values`],
//! a bottom-k sample keyed by a stable hash of the request id), "how many predictions
//! fell short of the truth by more than X" from a histogram of signed errors
//! ([`VariantStats::signed_error`]), and a rank test (Mann-Whitney) a spec may choose from a
//! bounded uniform sample of each continuous metric's values ([`VariantStats::metric_samples`],
//! [`VariantStats::abs_error_sample`]).
//!
//! Classes are counted by name with bounded memory: a version's confusion matrix (true ×
//! predicted class, from labelled instances), its predicted classes, and a pair's transitions
//! (primary's × candidate's class) each keep at most
//! [`switchyard_stats::classification::MAX_CLASSES`] names and count the rest as `other`. A
//! model's declared classes are not known here (the gateway's config is not), so a label no
//! model declares is counted like any other and set apart when the report is made (in the
//! classes module). Regression outputs are kept in log-bucket histograms per version and per
//! pair, for the drift of the prediction distributions.

use std::collections::BTreeMap;

use serde::Serialize;
use switchyard_stats::classification::{ClassCounts, ClassMatrix};
use switchyard_stats::{BottomK, LatencyHistogram, Moments, Proportion, SignedLogHistogram};
use xxhash_rust::xxh3::Xxh3Default;

pub use crate::paired::{LabelledValues, PairedErrors};
use crate::record::{score, Prediction, PredictionRecord, Role, Scored, Tolerance, Truth};
use crate::segments::{merge_segments, value_mut, SegmentPairStats, SegmentStats, Segments};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SeriesKey {
    pub model: String,
    pub epoch: u64,
    pub version: String,
    pub role: Role,
    pub variant: String,
}

impl SeriesKey {
    pub fn of(rec: &PredictionRecord) -> Self {
        SeriesKey {
            model: rec.model.clone(),
            epoch: rec.epoch,
            version: rec.version.clone(),
            role: rec.role,
            variant: rec.variant.clone(),
        }
    }
}

/// A series key's fields, borrowed, in [`SeriesKey`]'s order: the series map is searched
/// with a record's fields (`dyn SeriesParts`, which `SeriesKey` borrows as) and a key is
/// built only for a new series. Building one per record cost three allocations and copies on
/// the log writer's thread.
pub trait SeriesParts {
    fn parts(&self) -> (&str, u64, &str, Role, &str);
}

impl SeriesParts for SeriesKey {
    fn parts(&self) -> (&str, u64, &str, Role, &str) {
        (
            &self.model,
            self.epoch,
            &self.version,
            self.role,
            &self.variant,
        )
    }
}

impl SeriesParts for PredictionRecord {
    fn parts(&self) -> (&str, u64, &str, Role, &str) {
        (
            &self.model,
            self.epoch,
            &self.version,
            self.role,
            &self.variant,
        )
    }
}

impl<'a> std::borrow::Borrow<dyn SeriesParts + 'a> for SeriesKey {
    fn borrow(&self) -> &(dyn SeriesParts + 'a) {
        self
    }
}

impl PartialEq for dyn SeriesParts + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn SeriesParts + '_ {}

impl PartialOrd for dyn SeriesParts + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn SeriesParts + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

/// Traffic, errors, latency and quality of one series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VariantStats {
    pub requests: u64,
    /// Calls that failed because of the model (any non-ok outcome).
    pub errors: u64,
    pub latency: LatencyHistogram,
    /// Labelled instances: successes are correct predictions.
    pub correct: Proportion,
    /// Absolute error of labelled regression instances.
    pub abs_error: Moments,
    /// Squared error of labelled regression instances.
    pub sq_error: Moments,
    /// Signed error (`prediction − truth`) of labelled regression instances, for limits on
    /// underestimates chosen by a spec (`max_underestimate`).
    pub signed_error: SignedLogHistogram,
    /// Business metrics by name.
    pub metrics: BTreeMap<String, Moments>,
    /// A uniform sample of each business metric's values, by name (bottom-k by
    /// [`sample_hash`] of the request id), for a rank test.
    pub metric_samples: BTreeMap<String, ValueSample>,
    /// A uniform sample of the absolute errors of labelled regression instances (bottom-k by
    /// [`sample_hash`] of the request id and the instance).
    pub abs_error_sample: ValueSample,
    /// Labelled classification instances by (true class, predicted class).
    pub confusion: ClassMatrix,
    /// Every class predicted, labelled or not (the prediction distribution).
    pub predicted: ClassCounts,
    /// Every finite regression output (the prediction distribution).
    pub values: SignedLogHistogram,
    /// Requests, errors and quality per value of each segment field the records carry.
    pub segments: Segments<SegmentStats>,
}

impl VariantStats {
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    pub fn merge(&mut self, other: &VariantStats) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
        self.correct.merge(&other.correct);
        self.abs_error.merge(&other.abs_error);
        self.sq_error.merge(&other.sq_error);
        self.signed_error.merge(&other.signed_error);
        for (name, m) in &other.metrics {
            if keeps_metric(&self.metrics, name) {
                self.metrics.entry(name.clone()).or_default().merge(m);
            }
        }
        for (name, s) in &other.metric_samples {
            if keeps_metric(&self.metric_samples, name) {
                self.metric_samples
                    .entry(name.clone())
                    .or_default()
                    .merge(s);
            }
        }
        self.abs_error_sample.merge(&other.abs_error_sample);
        self.confusion.merge(&other.confusion);
        self.predicted.merge(&other.predicted);
        self.values.merge(&other.values);
        merge_segments(&mut self.segments, &other.segments);
    }
}

/// Business metric names kept per series: feedback names them freely, and each name costs a
/// [`ValueSample`] (about 50 KB), so a client inventing names cannot grow the aggregates without
/// bound. Past it a new name is not kept (the names already kept go on counting); 64 is far
/// more than an experiment declares.
pub const MAX_METRIC_NAMES: usize = 64;

fn keeps_metric<V>(kept: &BTreeMap<String, V>, name: &str) -> bool {
    kept.len() < MAX_METRIC_NAMES || kept.contains_key(name)
}

/// Values kept per arm and continuous metric for a rank test: 2 048, a bound on memory
/// (16 bytes a value, about 50 KB with the map's nodes, per series and metric, whatever the
/// traffic) that still gives Mann-Whitney a sample where a shift of 0.1 standard deviations of
/// normal values is found with probability about 0.88 at α = 0.05 (two samples of 2 048).
pub const METRIC_SAMPLE_SIZE: usize = 2048;

/// A bounded uniform sample of one metric's values: a [`BottomK`] of at most
/// [`METRIC_SAMPLE_SIZE`] values keyed by [`sample_hash`]. Merging two keeps the smallest
/// hashes of their union, which is the sample one pass over both would have kept, so windows,
/// replicas and compacted epochs merge exactly in any order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueSample(pub BottomK<f64>);

impl Default for ValueSample {
    fn default() -> Self {
        ValueSample(BottomK::new(METRIC_SAMPLE_SIZE))
    }
}

impl ValueSample {
    /// Offers one value (finite values only).
    pub fn offer(&mut self, hash: u64, value: f64) {
        if value.is_finite() {
            self.0.offer(hash, value);
        }
    }

    pub fn merge(&mut self, other: &ValueSample) {
        self.0.merge(&other.0);
    }

    /// The kept values, smallest hash first.
    pub fn values(&self) -> Vec<f64> {
        self.0.values().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PairKey {
    pub model: String,
    pub epoch: u64,
    pub primary: String,
    pub shadow: String,
}

/// The key of one instance of one request in the bottom-k samples: xxh3 (64 bits) of the
/// request id's bytes followed by the instance's index as 8 little-endian bytes. Stable across
/// processes and replicas (never a per-process randomized hash), so every replica keeps the
/// same items. (Not the index as xxh3's seed: for short inputs xxh3 folds the seed into a few
/// bits of the key, and `("v14", 1)` then hashes like `("v15", 0)`.)
pub fn sample_hash(request_id: &str, instance: usize) -> u64 {
    let mut h = Xxh3Default::new();
    h.update(request_id.as_bytes());
    h.update(&(instance as u64).to_le_bytes());
    h.digest()
}

/// The two regression outputs of one compared instance.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
pub struct ValuePair {
    pub primary: f64,
    pub shadow: f64,
}

/// Agreement of a pair, as far as it can be known.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Agreement {
    /// Share of the instances looked at on which the two agree (fraction).
    pub rate: Option<f64>,
    /// Instances both answered comparably.
    pub compared: u64,
    /// Instances the rate was computed on: `compared`, or a uniform sample of them.
    pub sample: u64,
    /// Whether `sample` is every compared instance.
    pub exact: bool,
}

/// Comparison of a serving version and its shadow on the same requests.
///
/// Classification pairs are counted exactly: agreement and the McNemar cells. Regression pairs
/// keep their count, a bounded uniform sample of the compared outputs (agreement is computed
/// from it with the tolerance a spec chooses), exact moments of the paired errors of the
/// labelled ones, and a bounded uniform sample of those (for the Wilcoxon test). Each sample
/// holds at most [`switchyard_stats::sample::DEFAULT_SAMPLE_SIZE`] instances, so a pair's
/// memory is bounded (about 350 KB at most, whatever the traffic). Classification pairs also
/// keep their transitions (at most 65 × 65 counts), regression pairs a histogram of each side's
/// outputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PairStats {
    /// Classification instances where both answered: successes are agreements.
    pub agreement: Proportion,
    /// Labelled instances by (primary correct, shadow correct).
    pub both_correct: u64,
    /// McNemar's b: the primary right and the shadow wrong.
    pub primary_only: u64,
    /// McNemar's c: the primary wrong and the shadow right.
    pub shadow_only: u64,
    pub both_wrong: u64,
    /// Regression instances where both answered with finite values.
    pub values_compared: u64,
    /// A uniform sample of those (bottom-k by [`sample_hash`]).
    pub values: BottomK<ValuePair>,
    /// Labelled regression instances: paired errors, exactly.
    pub errors: PairedErrors,
    /// A uniform sample of the labelled regression instances (bottom-k by [`sample_hash`]).
    /// Filled when the label arrives, so it holds up to k labelled instances whatever share of
    /// the traffic gets labels, and the replica that takes the label fills it.
    pub labelled_values: BottomK<LabelledValues>,
    /// Shadow calls that failed.
    pub shadow_errors: u64,
    pub shadow_calls: u64,
    /// Compared classification instances by (primary's class, candidate's class).
    pub transitions: ClassMatrix,
    /// The outputs of the compared regression instances, the primary's and the candidate's.
    pub primary_values: SignedLogHistogram,
    pub shadow_values: SignedLogHistogram,
    /// Agreement and labelled comparisons per value of each segment field.
    pub segments: Segments<SegmentPairStats>,
}

impl PairStats {
    /// Labelled pairs: classification (McNemar cells) and regression instances.
    pub fn labelled(&self) -> u64 {
        self.both_correct
            + self.primary_only
            + self.shadow_only
            + self.both_wrong
            + self.errors.count()
    }

    /// Whether the pair compares classes (else values); by which kind has more compared
    /// instances.
    pub fn is_classification(&self) -> bool {
        self.agreement.trials > 0 && self.agreement.trials >= self.values_compared
    }

    /// Agreement of the regression outputs within `tolerance`, from the sample: exact while
    /// every compared instance fits in it, a uniform-sample estimate beyond.
    pub fn value_agreement(&self, tolerance: &Tolerance) -> Agreement {
        let mut agree = Proportion::default();
        self.values
            .values()
            .for_each(|v| agree.record(tolerance.agree(v.primary, v.shadow)));
        Agreement {
            rate: agree.rate(),
            compared: self.values_compared,
            sample: agree.trials,
            exact: agree.trials >= self.values_compared,
        }
    }

    /// Agreement of the pair: exact counts for classes, [`PairStats::value_agreement`] for
    /// values.
    pub fn agreement_within(&self, tolerance: &Tolerance) -> Agreement {
        if self.is_classification() {
            Agreement {
                rate: self.agreement.rate(),
                compared: self.agreement.trials,
                sample: self.agreement.trials,
                exact: true,
            }
        } else {
            self.value_agreement(tolerance)
        }
    }

    /// Accounts the labelled regression instances of one request (finite values only).
    fn record_labelled_values(
        &mut self,
        request_id: &str,
        primary: &[f64],
        shadow: &[f64],
        truth: &[f64],
    ) {
        let instances = primary.iter().zip(shadow).zip(truth);
        for (i, ((&primary, &shadow), &truth)) in instances.enumerate() {
            if primary.is_finite() && shadow.is_finite() && truth.is_finite() {
                let v = LabelledValues {
                    primary,
                    shadow,
                    truth,
                };
                self.errors.push(&v);
                self.labelled_values.offer(sample_hash(request_id, i), v);
            }
        }
    }

    pub fn merge(&mut self, other: &PairStats) {
        self.agreement.merge(&other.agreement);
        self.both_correct += other.both_correct;
        self.primary_only += other.primary_only;
        self.shadow_only += other.shadow_only;
        self.both_wrong += other.both_wrong;
        self.values_compared += other.values_compared;
        self.values.merge(&other.values);
        self.errors.merge(&other.errors);
        self.labelled_values.merge(&other.labelled_values);
        self.shadow_errors += other.shadow_errors;
        self.shadow_calls += other.shadow_calls;
        self.transitions.merge(&other.transitions);
        self.primary_values.merge(&other.primary_values);
        self.shadow_values.merge(&other.shadow_values);
        merge_segments(&mut self.segments, &other.segments);
    }
}

/// All aggregates of a gateway.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Aggregates {
    pub series: BTreeMap<SeriesKey, VariantStats>,
    pub pairs: BTreeMap<PairKey, PairStats>,
}

impl Aggregates {
    /// Accounts one prediction record (serving or shadow).
    pub fn record(&mut self, rec: &PredictionRecord) {
        let stats = match self.series.get_mut(rec as &dyn SeriesParts) {
            Some(stats) => stats,
            None => self.series.entry(SeriesKey::of(rec)).or_default(),
        };
        stats.requests += 1;
        stats.errors += u64::from(rec.outcome.counts_against_model());
        stats.latency.record(rec.latency_us);
        for (field, value) in &rec.segments {
            let seg = value_mut(&mut stats.segments, field, value);
            seg.requests += 1;
            seg.errors += u64::from(rec.outcome.counts_against_model());
        }
        match &rec.output {
            Prediction::Classes(c) => c.iter().for_each(|c| stats.predicted.add(c)),
            Prediction::Values(v) => v.iter().for_each(|&v| stats.values.record(v)),
            Prediction::None => {}
        }
        if rec.role == Role::Shadow {
            if let Some(pair) = &rec.pair {
                let key = PairKey {
                    model: rec.model.clone(),
                    epoch: rec.epoch,
                    primary: pair.version.clone(),
                    shadow: rec.version.clone(),
                };
                let p = self.pairs.entry(key).or_default();
                p.shadow_calls += 1;
                p.shadow_errors += u64::from(rec.outcome.counts_against_model());
                // Per segment: only for records that carry segments.
                let compared = (!rec.segments.is_empty())
                    .then(|| pair.output.agreement(&rec.output, &Tolerance::DEFAULT))
                    .flatten();
                for (field, value) in &rec.segments {
                    let seg = value_mut(&mut p.segments, field, value);
                    if let Some(matches) = &compared {
                        seg.compared += matches.len() as u64;
                        if matches!(rec.output, Prediction::Classes(_)) {
                            matches.iter().for_each(|m| seg.agreement.record(*m));
                        }
                    }
                }
                match (&pair.output, &rec.output) {
                    (Prediction::Values(a), Prediction::Values(b))
                        if a.len() == b.len() && !a.is_empty() =>
                    {
                        for (i, (&primary, &shadow)) in a.iter().zip(b).enumerate() {
                            if primary.is_finite() && shadow.is_finite() {
                                p.values_compared += 1;
                                p.primary_values.record(primary);
                                p.shadow_values.record(shadow);
                                p.values.offer(
                                    sample_hash(&rec.request_id, i),
                                    ValuePair { primary, shadow },
                                );
                            }
                        }
                    }
                    // Classes: exact counts (a tolerance applies to values only).
                    (primary, shadow) => {
                        if let Some(matches) = primary.agreement(shadow, &Tolerance::DEFAULT) {
                            matches.into_iter().for_each(|m| p.agreement.record(m));
                        }
                        if let (Prediction::Classes(a), Prediction::Classes(b)) = (primary, shadow)
                        {
                            if a.len() == b.len() {
                                a.iter().zip(b).for_each(|(a, b)| p.transitions.add(a, b));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Accounts the ground truth of one request, given every record of that request (the
    /// serving one and its shadows). Call once per request: feedback is idempotent upstream.
    pub fn record_feedback(
        &mut self,
        records: &[PredictionRecord],
        truth: &Truth,
        metrics: &[(String, f64)],
    ) {
        let serving = records.iter().find(|r| r.role == Role::Serving);
        for rec in records {
            let stats = match self.series.get_mut(rec as &dyn SeriesParts) {
                Some(stats) => stats,
                None => self.series.entry(SeriesKey::of(rec)).or_default(),
            };
            if rec.role == Role::Serving {
                let hash = sample_hash(&rec.request_id, 0);
                for (name, value) in metrics {
                    if !keeps_metric(&stats.metrics, name) {
                        continue;
                    }
                    stats.metrics.entry(name.clone()).or_default().push(*value);
                    stats
                        .metric_samples
                        .entry(name.clone())
                        .or_default()
                        .offer(hash, *value);
                }
            }
            let scored = score(&rec.output, truth);
            for (field, value) in &rec.segments {
                let seg = value_mut(&mut stats.segments, field, value);
                match &scored {
                    Some(Scored::Correct(c)) => c.iter().for_each(|ok| seg.correct.record(*ok)),
                    Some(Scored::Errors(e)) => {
                        e.iter().for_each(|err| seg.abs_error.push(err.abs()))
                    }
                    None => {}
                }
            }
            match scored {
                Some(Scored::Correct(c)) => {
                    c.into_iter().for_each(|ok| stats.correct.record(ok));
                    if let (Prediction::Classes(p), Truth::Labels(t)) = (&rec.output, truth) {
                        t.iter().zip(p).for_each(|(t, p)| stats.confusion.add(t, p));
                    }
                }
                Some(Scored::Errors(e)) => e.into_iter().enumerate().for_each(|(i, err)| {
                    stats.abs_error.push(err.abs());
                    stats
                        .abs_error_sample
                        .offer(sample_hash(&rec.request_id, i), err.abs());
                    stats.sq_error.push(err * err);
                    stats.signed_error.record(err);
                }),
                None => {}
            }
        }
        let Some(serving) = serving else { return };
        let primary_score = score(&serving.output, truth);
        for shadow in records.iter().filter(|r| r.role == Role::Shadow) {
            let key = PairKey {
                model: shadow.model.clone(),
                epoch: shadow.epoch,
                primary: serving.version.clone(),
                shadow: shadow.version.clone(),
            };
            let p = self.pairs.entry(key).or_default();
            match (&primary_score, score(&shadow.output, truth)) {
                (Some(Scored::Correct(a)), Some(Scored::Correct(b))) => {
                    for (pa, sb) in a.iter().zip(&b) {
                        let cell = match (pa, sb) {
                            (true, true) => &mut p.both_correct,
                            (true, false) => &mut p.primary_only,
                            (false, true) => &mut p.shadow_only,
                            (false, false) => &mut p.both_wrong,
                        };
                        *cell += 1;
                        for (field, value) in &serving.segments {
                            let seg = value_mut(&mut p.segments, field, value);
                            let cell = match (pa, sb) {
                                (true, true) => &mut seg.both_correct,
                                (true, false) => &mut seg.primary_only,
                                (false, true) => &mut seg.shadow_only,
                                (false, false) => &mut seg.both_wrong,
                            };
                            *cell += 1;
                        }
                    }
                }
                (Some(Scored::Errors(_)), Some(Scored::Errors(_))) => {
                    if let (Prediction::Values(a), Prediction::Values(b), Truth::Values(t)) =
                        (&serving.output, &shadow.output, truth)
                    {
                        p.record_labelled_values(&shadow.request_id, a, b, t);
                        for (field, value) in &serving.segments {
                            let seg = value_mut(&mut p.segments, field, value);
                            for ((&primary, &shadow), &truth) in a.iter().zip(b).zip(t) {
                                if primary.is_finite() && shadow.is_finite() && truth.is_finite() {
                                    seg.errors.push(&LabelledValues {
                                        primary,
                                        shadow,
                                        truth,
                                    });
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Folds every series and pair of a routing epoch before `floor` (epoch 0 excepted) into
    /// epoch 0 of the same model, version, role and variant (or pair): the totals stay exact,
    /// the split by epoch of the old ones goes. Memory then grows with the variants a model
    /// has, not with the routing changes it went through. Returns how many entries were folded.
    pub fn compact_before(&mut self, floor: u64) -> usize {
        let old: Vec<SeriesKey> = self
            .series
            .keys()
            .filter(|k| k.epoch > 0 && k.epoch < floor)
            .cloned()
            .collect();
        let old_pairs: Vec<PairKey> = self
            .pairs
            .keys()
            .filter(|k| k.epoch > 0 && k.epoch < floor)
            .cloned()
            .collect();
        let folded = old.len() + old_pairs.len();
        for key in old {
            if let Some(stats) = self.series.remove(&key) {
                let into = SeriesKey { epoch: 0, ..key };
                self.series.entry(into).or_default().merge(&stats);
            }
        }
        for key in old_pairs {
            if let Some(stats) = self.pairs.remove(&key) {
                let into = PairKey { epoch: 0, ..key };
                self.pairs.entry(into).or_default().merge(&stats);
            }
        }
        folded
    }

    /// The series and pairs of `model` from routing epoch `from` on: what a rollout that began
    /// at `from` reads.
    pub fn of_model_from(&self, model: &str, from: u64) -> Aggregates {
        Aggregates {
            series: self
                .series
                .iter()
                .filter(|(k, _)| k.model == model && k.epoch >= from)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            pairs: self
                .pairs
                .iter()
                .filter(|(k, _)| k.model == model && k.epoch >= from)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    pub fn merge(&mut self, other: &Aggregates) {
        for (k, v) in &other.series {
            self.series.entry(k.clone()).or_default().merge(v);
        }
        for (k, v) in &other.pairs {
            self.pairs.entry(k.clone()).or_default().merge(v);
        }
    }

    /// Merged statistics of `model`'s `version` in `role` over the epochs accepted by `epochs`.
    pub fn variant(
        &self,
        model: &str,
        version: &str,
        role: Role,
        epochs: impl Fn(u64) -> bool,
    ) -> VariantStats {
        let mut total = VariantStats::default();
        self.series
            .iter()
            .filter(|(k, _)| {
                k.model == model && k.version == version && k.role == role && epochs(k.epoch)
            })
            .for_each(|(_, v)| total.merge(v));
        total
    }

    /// Merged pair statistics of `model` over the epochs accepted by `epochs`.
    pub fn pair(
        &self,
        model: &str,
        primary: &str,
        shadow: &str,
        epochs: impl Fn(u64) -> bool,
    ) -> PairStats {
        let mut total = PairStats::default();
        self.pairs
            .iter()
            .filter(|(k, _)| {
                k.model == model && k.primary == primary && k.shadow == shadow && epochs(k.epoch)
            })
            .for_each(|(_, v)| total.merge(v));
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Outcome, PairRef, Prediction};

    fn rec(
        id: &str,
        role: Role,
        version: &str,
        output: &[&str],
        pair: Option<&[&str]>,
    ) -> PredictionRecord {
        PredictionRecord {
            request_id: id.into(),
            ts_ms: 0,
            model: "yield".into(),
            epoch: 1,
            variant: if role == Role::Serving {
                "primary".into()
            } else {
                "shadow".into()
            },
            role,
            version: version.into(),
            key_hash: None,
            outcome: Outcome::Ok,
            status: 200,
            latency_us: 1000,
            output: Prediction::Classes(output.iter().map(|s| s.to_string()).collect()),
            input: None,
            pair: pair.map(|p| PairRef {
                version: "v1".into(),
                output: Prediction::Classes(p.iter().map(|s| s.to_string()).collect()),
            }),
            segments: Vec::new(),
        }
    }

    fn value_rec(
        id: &str,
        role: Role,
        version: &str,
        v: &[f64],
        pair: Option<&[f64]>,
    ) -> PredictionRecord {
        PredictionRecord {
            output: Prediction::Values(v.to_vec()),
            pair: pair.map(|p| PairRef {
                version: "v1".into(),
                output: Prediction::Values(p.to_vec()),
            }),
            ..rec(id, role, version, &[], None)
        }
    }

    #[test]
    fn regression_pairs_are_labelled_pairs_and_agree_within_a_tolerance() {
        let mut agg = Aggregates::default();
        // (primary, shadow, truth) in two requests of two instances.
        let rows = [
            ([100.0, 10.0], [104.0, 10.7], [101.0, 0.0]),
            ([50.0, 0.0], [50.0, 0.1], [55.0, 0.2]),
        ];
        for (i, (p, s, t)) in rows.iter().enumerate() {
            let id = format!("r{i}");
            let serving = value_rec(&id, Role::Serving, "v1", p, None);
            let shadow = value_rec(&id, Role::Shadow, "v2", s, Some(p));
            agg.record(&serving);
            agg.record(&shadow);
            agg.record_feedback(&[serving, shadow], &Truth::Values(t.to_vec()), &[]);
        }
        let pair = agg.pair("yield", "v1", "v2", |_| true);
        assert_eq!((pair.labelled(), pair.values_compared), (4, 4));
        assert!(!pair.is_classification());
        // Within 5%: 104 vs 100 and 50 vs 50 agree; 10.7 vs 10 and 0.1 vs 0 do not; with 0.15
        // absolute slack besides, 0.1 vs 0 does too.
        let within = |absolute, relative| {
            pair.value_agreement(&Tolerance { absolute, relative })
                .rate
                .unwrap()
        };
        assert_eq!(within(0.0, 0.05), 0.5);
        assert_eq!(within(0.15, 0.05), 0.75);
        assert_eq!(within(0.0, 0.0), 0.25);
        let e = &pair.errors;
        // |e_p| = 1, 10, 5, 0.2 and |e_s| = 3, 10.7, 5, 0.1.
        assert!((e.primary_abs.mean().unwrap() - 16.2 / 4.0).abs() < 1e-12);
        assert!((e.shadow_abs.mean().unwrap() - 18.8 / 4.0).abs() < 1e-12);
        assert_eq!(e.ape_skipped, 1);
        assert_eq!(e.primary_ape.count(), 3);
        assert_eq!(pair.labelled_values.len(), 4);
        // The series keep signed errors: the shadow underestimated one instance by 5.
        let v2 = agg.variant("yield", "v2", Role::Shadow, |_| true);
        assert_eq!(v2.signed_error.count(), 4);
        assert_eq!(v2.signed_error.count_below(-1.0), 1);
        assert_eq!(v2.abs_error.count(), 4);
    }

    #[test]
    fn a_series_keeps_at_most_max_metric_names_and_goes_on_counting_the_kept_ones() {
        let mut agg = Aggregates::default();
        let mut other = Aggregates::default();
        for i in 0..MAX_METRIC_NAMES + 36 {
            let id = format!("r{i}");
            let serving = rec(&id, Role::Serving, "v1", &["pass"], None);
            agg.record(&serving);
            let metrics = [(format!("m{i:03}"), 1.0), ("m000".to_string(), 2.0)];
            agg.record_feedback(std::slice::from_ref(&serving), &Truth::None, &metrics);
            other.record(&serving);
            other.record_feedback(&[serving], &Truth::None, &[(format!("x{i:03}"), 1.0)]);
        }
        let v1 = agg.variant("yield", "v1", Role::Serving, |_| true);
        assert_eq!(v1.metrics.len(), MAX_METRIC_NAMES);
        assert_eq!(v1.metric_samples.len(), MAX_METRIC_NAMES);
        assert!(!v1
            .metrics
            .contains_key(&format!("m{:03}", MAX_METRIC_NAMES + 1)));
        // m000 is kept and counted on every request (once as its own name, then beside each).
        assert_eq!(v1.metrics["m000"].count(), (MAX_METRIC_NAMES + 37) as u64);
        // A merge of a series full of other names keeps the bound too.
        let mut merged = v1.clone();
        merged.merge(&other.variant("yield", "v1", Role::Serving, |_| true));
        assert_eq!(merged.metrics.len(), MAX_METRIC_NAMES);
        assert_eq!(merged.metric_samples.len(), MAX_METRIC_NAMES);
    }

    #[test]
    fn sample_hashes_are_xxh3_of_the_id_and_the_instance() {
        let one_shot = |id: &str, i: u64| {
            let mut bytes = id.as_bytes().to_vec();
            bytes.extend(i.to_le_bytes());
            xxhash_rust::xxh3::xxh3_64(&bytes)
        };
        assert_eq!(sample_hash("req-1", 3), one_shot("req-1", 3));
        // Short ids that differ in one bit, instances that differ in one bit: all distinct.
        let mut all: Vec<u64> = (0..100)
            .flat_map(|n| (0..4).map(move |i| sample_hash(&format!("v{n}"), i)))
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 400);
    }

    #[test]
    fn the_samples_stay_bounded_and_estimate_beyond_their_size() {
        let k = switchyard_stats::sample::DEFAULT_SAMPLE_SIZE;
        let n = 3 * k;
        let mut agg = Aggregates::default();
        for i in 0..n {
            let id = format!("req-{i:06}");
            // Every third shadow answer is 10% off.
            let s = if i % 3 == 0 { 110.0 } else { 100.0 };
            let serving = value_rec(&id, Role::Serving, "v1", &[100.0], None);
            let shadow = value_rec(&id, Role::Shadow, "v2", &[s], Some(&[100.0]));
            agg.record(&serving);
            agg.record(&shadow);
            agg.record_feedback(&[serving, shadow], &Truth::Values(vec![101.0]), &[]);
        }
        let pair = agg.pair("yield", "v1", "v2", |_| true);
        assert_eq!(pair.values.len(), k);
        assert_eq!(pair.labelled_values.len(), k);
        assert_eq!(pair.errors.count(), n as u64);
        let a = pair.value_agreement(&Tolerance::DEFAULT);
        assert_eq!((a.compared, a.sample, a.exact), (n as u64, k as u64, false));
        // A uniform sample of 4096 from a 2/3 rate: within 5 standard errors (0.0037 each).
        let rate = a.rate.unwrap();
        assert!((rate - 2.0 / 3.0).abs() < 0.02, "{rate}");
        // The kept items are the k smallest hashes of the request ids.
        let mut hashes: Vec<u64> = (0..n)
            .map(|i| sample_hash(&format!("req-{i:06}"), 0))
            .collect();
        hashes.sort_unstable();
        assert_eq!(
            pair.values.iter().map(|(h, _)| h).collect::<Vec<_>>(),
            hashes[..k]
        );
    }

    #[test]
    fn mcnemar_cells_come_from_labelled_pairs() {
        let mut agg = Aggregates::default();
        // (primary, shadow, truth): b = primary only right, c = shadow only right.
        let cases = [
            ("1", "0", "1"),
            ("0", "1", "1"),
            ("0", "1", "1"),
            ("1", "1", "1"),
            ("0", "0", "1"),
        ];
        for (i, (p, s, t)) in cases.iter().enumerate() {
            let id = format!("r{i}");
            let serving = rec(&id, Role::Serving, "v1", &[p], None);
            let shadow = rec(&id, Role::Shadow, "v2", &[s], Some(&[p]));
            agg.record(&serving);
            agg.record(&shadow);
            agg.record_feedback(&[serving, shadow], &Truth::Labels(vec![t.to_string()]), &[]);
        }
        let pair = agg.pair("yield", "v1", "v2", |_| true);
        assert_eq!(
            (
                pair.primary_only,
                pair.shadow_only,
                pair.both_correct,
                pair.both_wrong
            ),
            (1, 2, 1, 1)
        );
        assert_eq!(
            pair.agreement,
            Proportion {
                successes: 2,
                trials: 5
            }
        );
        let v1 = agg.variant("yield", "v1", Role::Serving, |_| true);
        assert_eq!(
            v1.correct,
            Proportion {
                successes: 2,
                trials: 5
            }
        );
        let v2 = agg.variant("yield", "v2", Role::Shadow, |_| true);
        assert_eq!(
            v2.correct,
            Proportion {
                successes: 3,
                trials: 5
            }
        );
        // Classes by name: truth × prediction per version, primary × candidate per pair.
        assert_eq!(v1.confusion.classes(), ["0", "1"]);
        assert_eq!(
            v1.confusion.counts(),
            [vec![0, 0, 0], vec![3, 2, 0], vec![0, 0, 0]]
        );
        assert_eq!((v1.predicted.get("0"), v1.predicted.get("1")), (3, 2));
        assert_eq!((v2.predicted.get("0"), v2.predicted.get("1")), (2, 3));
        assert_eq!(
            pair.transitions.counts(),
            [vec![1, 2, 0], vec![1, 1, 0], vec![0, 0, 0]]
        );
    }

    #[test]
    fn segments_are_counted_per_value_and_merge_like_one_pass() {
        // (tester, primary, shadow, truth)
        let cases = [
            ("T1", "1", "1", "1"),
            ("T1", "0", "1", "1"),
            ("T1", "1", "0", "0"),
            ("T2", "1", "0", "1"),
            ("T2", "1", "1", "1"),
            ("", "0", "0", "1"),
        ];
        let mut one = Aggregates::default();
        let mut halves = [Aggregates::default(), Aggregates::default()];
        for (i, (tester, p, s, t)) in cases.iter().enumerate() {
            let id = format!("r{i}");
            let segments = vec![("tester".to_string(), tester.to_string())];
            let serving = PredictionRecord {
                segments: segments.clone(),
                ..rec(&id, Role::Serving, "v1", &[p], None)
            };
            let shadow = PredictionRecord {
                segments,
                ..rec(&id, Role::Shadow, "v2", &[s], Some(&[p]))
            };
            let truth = Truth::Labels(vec![t.to_string()]);
            for agg in [&mut one, &mut halves[i % 2]] {
                agg.record(&serving);
                agg.record(&shadow);
                agg.record_feedback(&[serving.clone(), shadow.clone()], &truth, &[]);
            }
        }
        let pair = one.pair("yield", "v1", "v2", |_| true);
        let t1 = &pair.segments["tester"].values()["T1"];
        // T1: both right once, the candidate only right twice (b = 0, c = 2).
        assert_eq!(
            (
                t1.both_correct,
                t1.primary_only,
                t1.shadow_only,
                t1.both_wrong
            ),
            (1, 0, 2, 0)
        );
        assert_eq!((t1.compared, t1.agreement.successes), (3, 1));
        let missing = &pair.segments["tester"].values()[""];
        assert_eq!(missing.both_wrong, 1);
        let v1 = one.variant("yield", "v1", Role::Serving, |_| true);
        let t2 = &v1.segments["tester"].values()["T2"];
        assert_eq!(
            (t2.requests, t2.correct.successes, t2.correct.trials),
            (2, 2, 2)
        );
        let mut merged = Aggregates::default();
        merged.merge(&halves[1]);
        merged.merge(&halves[0]);
        assert_eq!(merged, one);
    }

    #[test]
    fn compaction_folds_old_epochs_and_keeps_the_totals() {
        let mut agg = Aggregates::default();
        for epoch in 1..=50u64 {
            for i in 0..3 {
                let id = format!("e{epoch}-{i}");
                let serving = PredictionRecord {
                    epoch,
                    ..rec(&id, Role::Serving, "v1", &["1"], None)
                };
                let shadow = PredictionRecord {
                    epoch,
                    ..rec(&id, Role::Shadow, "v2", &["0"], Some(&["1"]))
                };
                agg.record(&serving);
                agg.record(&shadow);
                agg.record_feedback(&[serving, shadow], &Truth::Labels(vec!["1".into()]), &[]);
            }
        }
        let before_v1 = agg.variant("yield", "v1", Role::Serving, |_| true);
        let before_pair = agg.pair("yield", "v1", "v2", |_| true);
        let recent = agg.pair("yield", "v1", "v2", |e| e >= 45);
        assert_eq!(agg.series.len(), 100);
        let folded = agg.compact_before(45);
        assert_eq!(folded, 44 * 3);
        // Epochs 45..=50 stay apart, the 44 before are one entry per series and pair.
        assert_eq!(agg.series.len(), 2 * 6 + 2);
        assert_eq!(agg.pairs.len(), 6 + 1);
        assert_eq!(
            agg.variant("yield", "v1", Role::Serving, |_| true),
            before_v1
        );
        assert_eq!(agg.pair("yield", "v1", "v2", |_| true), before_pair);
        assert_eq!(agg.pair("yield", "v1", "v2", |e| e >= 45), recent);
        // Again: nothing left to fold.
        assert_eq!(agg.compact_before(45), 0);
        let sub = agg.of_model_from("yield", 48);
        assert_eq!(sub.series.len(), 2 * 3);
        assert_eq!(agg.of_model_from("other", 0).series.len(), 0);
    }

    /// A serving record of request `id` at `epoch` with a `revenue` metric, and a labelled
    /// regression instance (for the absolute errors' sample).
    fn account(agg: &mut Aggregates, id: u64, epoch: u64, revenue: f64) {
        let serving = PredictionRecord {
            epoch,
            ..value_rec(&format!("r{id}"), Role::Serving, "v1", &[revenue], None)
        };
        agg.record(&serving);
        agg.record_feedback(
            &[serving],
            &Truth::Values(vec![revenue * 0.5]),
            &[("revenue".into(), revenue)],
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]
        /// The samples a rank test reads (each metric's values, the absolute errors) are the
        /// same whichever windows or replicas counted which request and in whatever order they
        /// merge, and compaction of the epochs keeps them: each is the bottom-k of one pass.
        #[test]
        fn value_samples_merge_like_one_pass_and_survive_compaction(
            n in 0usize..(METRIC_SAMPLE_SIZE + 700),
            parts in 1usize..5,
            epochs in 1u64..6,
            salt in 0u64..1_000,
        ) {
            let revenue = |i: u64| ((i * 7919 + salt) % 1_000) as f64 * 0.25 - 20.0;
            let mut one = Aggregates::default();
            let mut split = vec![Aggregates::default(); parts];
            for i in 0..n as u64 {
                let epoch = 1 + i % epochs;
                account(&mut one, i, epoch, revenue(i));
                let part = ((i ^ salt) as usize * 31) % parts;
                account(&mut split[part], i, epoch, revenue(i));
            }
            let mut forward = Aggregates::default();
            split.iter().for_each(|a| forward.merge(a));
            let mut backward = Aggregates::default();
            split.iter().rev().for_each(|a| backward.merge(a));
            let total = |a: &Aggregates| a.variant("yield", "v1", Role::Serving, |_| true);
            let whole = total(&one);
            let expected = n.min(METRIC_SAMPLE_SIZE);
            proptest::prop_assert_eq!(whole.abs_error_sample.len(), expected);
            if n > 0 {
                proptest::prop_assert_eq!(whole.metric_samples["revenue"].len(), expected);
            }
            // The bottom-k of the request ids' hashes, with their values.
            let mut by_hash: Vec<(u64, f64)> =
                (0..n as u64).map(|i| (sample_hash(&format!("r{i}"), 0), revenue(i))).collect();
            by_hash.sort_by_key(|x| x.0);
            by_hash.truncate(METRIC_SAMPLE_SIZE);
            let kept: Vec<(u64, f64)> = whole
                .metric_samples
                .get("revenue")
                .map_or_else(Vec::new, |s| s.0.iter().map(|(h, v)| (h, *v)).collect());
            proptest::prop_assert_eq!(kept, by_hash);
            for other in [total(&forward), total(&backward)] {
                proptest::prop_assert_eq!(&other.metric_samples, &whole.metric_samples);
                proptest::prop_assert_eq!(&other.abs_error_sample, &whole.abs_error_sample);
            }
            let mut compacted = one.clone();
            compacted.compact_before(epochs);
            let after = total(&compacted);
            proptest::prop_assert_eq!(&after.metric_samples, &whole.metric_samples);
            proptest::prop_assert_eq!(&after.abs_error_sample, &whole.abs_error_sample);
        }
    }

    #[test]
    fn values_are_kept_for_the_drift_of_predictions() {
        let mut agg = Aggregates::default();
        let serving = value_rec("r", Role::Serving, "v1", &[1.0, f64::NAN, 3.0], None);
        let shadow = value_rec(
            "r",
            Role::Shadow,
            "v2",
            &[1.5, 2.0, 3.5],
            Some(&[1.0, f64::NAN, 3.0]),
        );
        agg.record(&serving);
        agg.record(&shadow);
        let pair = agg.pair("yield", "v1", "v2", |_| true);
        // The instance the primary answered with NaN is not compared.
        assert_eq!(
            (pair.primary_values.count(), pair.shadow_values.count()),
            (2, 2)
        );
        assert_eq!(
            agg.variant("yield", "v2", Role::Shadow, |_| true)
                .values
                .count(),
            3
        );
        assert_eq!(
            agg.variant("yield", "v1", Role::Serving, |_| true)
                .values
                .count(),
            2
        );
        assert_eq!(pair.transitions.total(), 0);
    }

    /// The series map is searched through `dyn SeriesParts`: its order must be `SeriesKey`'s
    /// derived one, field for field, or lookups would miss series that are there.
    #[test]
    fn a_series_key_orders_as_its_borrowed_parts_do() {
        let mut keys = Vec::new();
        for model in ["a", "b", "ab"] {
            for epoch in [0, 1, 10] {
                for version in ["v1", "v10", "v2"] {
                    for role in [Role::Serving, Role::Shadow] {
                        for variant in ["", "primary", "candidate"] {
                            keys.push(SeriesKey {
                                model: model.into(),
                                epoch,
                                version: version.into(),
                                role,
                                variant: variant.into(),
                            });
                        }
                    }
                }
            }
        }
        for a in &keys {
            for b in &keys {
                let (da, db): (&dyn SeriesParts, &dyn SeriesParts) = (a, b);
                assert_eq!(a.cmp(b), da.cmp(db), "{a:?} {b:?}");
            }
        }
        // And records find their series, new and old.
        let mut agg = Aggregates::default();
        let mut rec = rec("r", Role::Serving, "v1", &["1"], None);
        for k in &keys {
            rec.model.clone_from(&k.model);
            rec.epoch = k.epoch;
            rec.version.clone_from(&k.version);
            rec.role = k.role;
            rec.variant.clone_from(&k.variant);
            agg.record(&rec);
            agg.record(&rec);
        }
        assert_eq!(agg.series.len(), keys.len());
        assert!(agg.series.values().all(|s| s.requests == 2));
    }
}
