//! A replica's aggregates as text, so the controller can merge every replica's window.
//!
//! Counts and histograms round-trip exactly (a histogram as its non-empty buckets); moments as
//! their parts (count, mean, M2, min, max), which `serde_json` writes in shortest round-trip
//! form; bottom-k samples (a pair's values, a series' metric values) as their size and
//! `(hash, values…)` entries; class counts as their
//! names and non-zero cells. Fields added since the first version default when absent, so a
//! window published by an older replica still reads.

use serde::{Deserialize, Serialize};
use switchyard_core::aggregate::{
    LabelledValues, PairKey, PairStats, PairedErrors, SeriesKey, ValuePair, ValueSample,
    VariantStats, METRIC_SAMPLE_SIZE,
};
use switchyard_core::segments::{Bounded, Merge, SegmentPairStats, SegmentStats, Segments};
use switchyard_core::{Aggregates, Role};
use switchyard_stats::classification::{
    ClassCounts, ClassCountsParts, ClassMatrix, ClassMatrixParts,
};
use switchyard_stats::sample::DEFAULT_SAMPLE_SIZE;
use switchyard_stats::summary::SignedHistogramParts;
use switchyard_stats::{BottomK, LatencyHistogram, Moments, Proportion, SignedLogHistogram};

use crate::error::corrupt;
use crate::StoreError;

type MomentParts = (u64, f64, f64, f64, f64);

#[derive(Serialize, Deserialize)]
struct WireAggregates {
    series: Vec<WireSeries>,
    pairs: Vec<WirePair>,
}

#[derive(Serialize, Deserialize)]
struct WireSeries {
    model: String,
    epoch: u64,
    version: String,
    role: String,
    variant: String,
    requests: u64,
    errors: u64,
    latency: Vec<(u64, u64)>,
    correct: Proportion,
    abs_error: Option<MomentParts>,
    sq_error: Option<MomentParts>,
    #[serde(default)]
    signed_error: Option<SignedHistogramParts>,
    metrics: Vec<(String, MomentParts)>,
    /// Each metric's sample of values, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    metric_samples: Vec<(String, WireSample<(u64, f64)>)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    abs_error_sample: Option<WireSample<(u64, f64)>>,
    #[serde(default)]
    confusion: Option<ClassMatrixParts>,
    #[serde(default)]
    predicted: Option<ClassCountsParts>,
    #[serde(default)]
    values: Option<SignedHistogramParts>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    segments: Vec<WireSegments<WireSegmentStats>>,
}

/// One field's segment table: kept values, `other` and how often it was hit.
#[derive(Serialize, Deserialize)]
struct WireSegments<E> {
    field: String,
    values: Vec<(String, E)>,
    other: E,
    other_hits: u64,
}

/// A version's segment: requests, errors, correct, absolute errors.
type WireSegmentStats = (u64, u64, Proportion, Option<MomentParts>);

#[derive(Serialize, Deserialize)]
struct WireSegmentPair {
    compared: u64,
    agreement: Proportion,
    cells: (u64, u64, u64, u64),
    errors: Option<WireErrors>,
}

fn segments_of<V: Merge, E>(s: &Segments<V>, entry: impl Fn(&V) -> E) -> Vec<WireSegments<E>> {
    s.iter()
        .map(|(field, t)| WireSegments {
            field: field.clone(),
            values: t
                .values()
                .iter()
                .map(|(k, v)| (k.clone(), entry(v)))
                .collect(),
            other: entry(t.other()),
            other_hits: t.other_hits(),
        })
        .collect()
}

fn segments<V: Merge, E>(w: Vec<WireSegments<E>>, item: impl Fn(E) -> V) -> Segments<V> {
    w.into_iter()
        .map(|f| {
            let values: Vec<(String, V)> =
                f.values.into_iter().map(|(k, e)| (k, item(e))).collect();
            (
                f.field,
                Bounded::from_parts(values, item(f.other), f.other_hits),
            )
        })
        .collect()
}

fn segment_stats_of(v: &SegmentStats) -> WireSegmentStats {
    (v.requests, v.errors, v.correct, parts(&v.abs_error))
}

fn segment_stats((requests, errors, correct, abs): WireSegmentStats) -> SegmentStats {
    SegmentStats {
        requests,
        errors,
        correct,
        abs_error: moments(abs),
    }
}

fn segment_pair_of(v: &SegmentPairStats) -> WireSegmentPair {
    WireSegmentPair {
        compared: v.compared,
        agreement: v.agreement,
        cells: (v.both_correct, v.primary_only, v.shadow_only, v.both_wrong),
        errors: errors_of(&v.errors),
    }
}

fn segment_pair(w: WireSegmentPair) -> SegmentPairStats {
    SegmentPairStats {
        compared: w.compared,
        agreement: w.agreement,
        both_correct: w.cells.0,
        primary_only: w.cells.1,
        shadow_only: w.cells.2,
        both_wrong: w.cells.3,
        errors: errors(w.errors),
    }
}

#[derive(Serialize, Deserialize)]
struct WirePair {
    model: String,
    epoch: u64,
    primary: String,
    shadow: String,
    agreement: Proportion,
    both_correct: u64,
    primary_only: u64,
    shadow_only: u64,
    both_wrong: u64,
    #[serde(default)]
    values_compared: u64,
    #[serde(default)]
    values: Option<WireSample<(u64, f64, f64)>>,
    #[serde(default)]
    errors: Option<WireErrors>,
    #[serde(default)]
    labelled_values: Option<WireSample<(u64, f64, f64, f64)>>,
    shadow_errors: u64,
    shadow_calls: u64,
    #[serde(default)]
    transitions: Option<ClassMatrixParts>,
    #[serde(default)]
    primary_values: Option<SignedHistogramParts>,
    #[serde(default)]
    shadow_values: Option<SignedHistogramParts>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    segments: Vec<WireSegments<WireSegmentPair>>,
}

/// A bottom-k sample: its size and its entries.
#[derive(Serialize, Deserialize)]
struct WireSample<E> {
    k: usize,
    entries: Vec<E>,
}

#[derive(Serialize, Deserialize)]
struct WireErrors {
    primary_abs: Option<MomentParts>,
    shadow_abs: Option<MomentParts>,
    primary_sq: Option<MomentParts>,
    shadow_sq: Option<MomentParts>,
    primary_ape: Option<MomentParts>,
    shadow_ape: Option<MomentParts>,
    ape_skipped: u64,
    abs_diff: Option<MomentParts>,
}

fn sample_of<T, E>(s: &BottomK<T>, entry: impl Fn(u64, &T) -> E) -> Option<WireSample<E>> {
    (!s.is_empty()).then(|| WireSample {
        k: s.k(),
        entries: s.iter().map(|(h, v)| entry(h, v)).collect(),
    })
}

fn sample<T: Clone + PartialOrd, E>(
    w: Option<WireSample<E>>,
    item: impl Fn(E) -> (u64, T),
) -> BottomK<T> {
    w.map_or_else(BottomK::default, |w| {
        BottomK::from_entries(
            w.k.min(DEFAULT_SAMPLE_SIZE),
            w.entries.into_iter().map(item),
        )
    })
}

fn value_sample_of(s: &ValueSample) -> Option<WireSample<(u64, f64)>> {
    sample_of(&s.0, |h, v| (h, *v))
}

/// A series' sample of values: at most [`METRIC_SAMPLE_SIZE`], whatever the text says.
fn value_sample(w: Option<WireSample<(u64, f64)>>) -> ValueSample {
    w.map_or_else(ValueSample::default, |w| {
        ValueSample(BottomK::from_entries(
            w.k.min(METRIC_SAMPLE_SIZE),
            w.entries,
        ))
    })
}

fn errors_of(e: &PairedErrors) -> Option<WireErrors> {
    (e.count() > 0 || e.ape_skipped > 0).then(|| WireErrors {
        primary_abs: parts(&e.primary_abs),
        shadow_abs: parts(&e.shadow_abs),
        primary_sq: parts(&e.primary_sq),
        shadow_sq: parts(&e.shadow_sq),
        primary_ape: parts(&e.primary_ape),
        shadow_ape: parts(&e.shadow_ape),
        ape_skipped: e.ape_skipped,
        abs_diff: parts(&e.abs_diff),
    })
}

fn errors(w: Option<WireErrors>) -> PairedErrors {
    w.map_or_else(PairedErrors::default, |w| PairedErrors {
        primary_abs: moments(w.primary_abs),
        shadow_abs: moments(w.shadow_abs),
        primary_sq: moments(w.primary_sq),
        shadow_sq: moments(w.shadow_sq),
        primary_ape: moments(w.primary_ape),
        shadow_ape: moments(w.shadow_ape),
        ape_skipped: w.ape_skipped,
        abs_diff: moments(w.abs_diff),
    })
}

fn histogram_parts(h: &SignedLogHistogram) -> Option<SignedHistogramParts> {
    (h.count() > 0).then(|| h.parts())
}

fn histogram(p: Option<SignedHistogramParts>) -> SignedLogHistogram {
    p.map_or_else(SignedLogHistogram::default, SignedLogHistogram::from_parts)
}

fn matrix_parts(m: &ClassMatrix) -> Option<ClassMatrixParts> {
    (m.total() > 0).then(|| m.parts())
}

fn matrix(p: Option<ClassMatrixParts>) -> Result<ClassMatrix, StoreError> {
    p.map_or_else(
        || Ok(ClassMatrix::default()),
        |p| ClassMatrix::from_parts(p).map_err(|e| corrupt("aggregates", e)),
    )
}

fn counts(p: Option<ClassCountsParts>) -> Result<ClassCounts, StoreError> {
    p.map_or_else(
        || Ok(ClassCounts::default()),
        |p| ClassCounts::from_parts(p).map_err(|e| corrupt("aggregates", e)),
    )
}

fn parts(m: &Moments) -> Option<MomentParts> {
    (m.count() > 0).then(|| m.parts())
}

fn moments(p: Option<MomentParts>) -> Moments {
    p.map_or_else(Moments::default, |(n, mean, m2, min, max)| {
        Moments::from_parts(n, mean, m2, min, max)
    })
}

pub fn encode_aggregates(agg: &Aggregates) -> Result<String, StoreError> {
    let wire = WireAggregates {
        series: agg
            .series
            .iter()
            .map(|(k, v)| WireSeries {
                model: k.model.clone(),
                epoch: k.epoch,
                version: k.version.clone(),
                role: k.role.as_str().to_string(),
                variant: k.variant.clone(),
                requests: v.requests,
                errors: v.errors,
                latency: v.latency.buckets(),
                correct: v.correct,
                abs_error: parts(&v.abs_error),
                sq_error: parts(&v.sq_error),
                signed_error: histogram_parts(&v.signed_error),
                metrics: v
                    .metrics
                    .iter()
                    .filter_map(|(n, m)| Some((n.clone(), parts(m)?)))
                    .collect(),
                metric_samples: v
                    .metric_samples
                    .iter()
                    .filter_map(|(n, s)| Some((n.clone(), value_sample_of(s)?)))
                    .collect(),
                abs_error_sample: value_sample_of(&v.abs_error_sample),
                confusion: matrix_parts(&v.confusion),
                predicted: (v.predicted.total() > 0).then(|| v.predicted.parts()),
                values: histogram_parts(&v.values),
                segments: segments_of(&v.segments, segment_stats_of),
            })
            .collect(),
        pairs: agg
            .pairs
            .iter()
            .map(|(k, p)| WirePair {
                model: k.model.clone(),
                epoch: k.epoch,
                primary: k.primary.clone(),
                shadow: k.shadow.clone(),
                agreement: p.agreement,
                both_correct: p.both_correct,
                primary_only: p.primary_only,
                shadow_only: p.shadow_only,
                both_wrong: p.both_wrong,
                values_compared: p.values_compared,
                values: sample_of(&p.values, |h, v| (h, v.primary, v.shadow)),
                errors: errors_of(&p.errors),
                labelled_values: sample_of(&p.labelled_values, |h, v| {
                    (h, v.primary, v.shadow, v.truth)
                }),
                shadow_errors: p.shadow_errors,
                shadow_calls: p.shadow_calls,
                transitions: matrix_parts(&p.transitions),
                primary_values: histogram_parts(&p.primary_values),
                shadow_values: histogram_parts(&p.shadow_values),
                segments: segments_of(&p.segments, segment_pair_of),
            })
            .collect(),
    };
    serde_json::to_string(&wire).map_err(|e| corrupt("aggregates", e))
}

pub fn decode_aggregates(text: &str) -> Result<Aggregates, StoreError> {
    let bad = |reason: String| corrupt("aggregates", reason);
    let wire: WireAggregates = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let mut agg = Aggregates::default();
    for s in wire.series {
        let role = Role::parse(&s.role).ok_or_else(|| bad(format!("role '{}'", s.role)))?;
        agg.series.insert(
            SeriesKey {
                model: s.model,
                epoch: s.epoch,
                version: s.version,
                role,
                variant: s.variant,
            },
            VariantStats {
                requests: s.requests,
                errors: s.errors,
                latency: LatencyHistogram::from_buckets(&s.latency),
                correct: s.correct,
                abs_error: moments(s.abs_error),
                sq_error: moments(s.sq_error),
                signed_error: histogram(s.signed_error),
                metrics: s
                    .metrics
                    .into_iter()
                    .map(|(n, p)| (n, moments(Some(p))))
                    .collect(),
                metric_samples: s
                    .metric_samples
                    .into_iter()
                    .map(|(n, w)| (n, value_sample(Some(w))))
                    .collect(),
                abs_error_sample: value_sample(s.abs_error_sample),
                confusion: matrix(s.confusion)?,
                predicted: counts(s.predicted)?,
                values: histogram(s.values),
                segments: segments(s.segments, segment_stats),
            },
        );
    }
    for p in wire.pairs {
        agg.pairs.insert(
            PairKey {
                model: p.model,
                epoch: p.epoch,
                primary: p.primary,
                shadow: p.shadow,
            },
            PairStats {
                agreement: p.agreement,
                both_correct: p.both_correct,
                primary_only: p.primary_only,
                shadow_only: p.shadow_only,
                both_wrong: p.both_wrong,
                values_compared: p.values_compared,
                values: sample(p.values, |(h, primary, shadow)| {
                    (h, ValuePair { primary, shadow })
                }),
                errors: errors(p.errors),
                labelled_values: sample(p.labelled_values, |(h, primary, shadow, truth)| {
                    (
                        h,
                        LabelledValues {
                            primary,
                            shadow,
                            truth,
                        },
                    )
                }),
                shadow_errors: p.shadow_errors,
                shadow_calls: p.shadow_calls,
                transitions: matrix(p.transitions)?,
                primary_values: histogram(p.primary_values),
                shadow_values: histogram(p.shadow_values),
                segments: segments(p.segments, segment_pair),
            },
        );
    }
    Ok(agg)
}
