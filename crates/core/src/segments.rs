//! Segments: statistics per value of a request field a model declares (tester, lot,
//! product…), so a report can say where a candidate wins or loses and a gate can refuse a
//! candidate that is better overall but worse for one tester.
//!
//! The data plane reads each declared field of each request (a header or a JSON pointer; a
//! request without it has the empty value, shown as `(missing)`) and the records carry the
//! values ([`crate::record::PredictionRecord::segments`]). The aggregates keep, per series and
//! per shadow pair, one [`Bounded`] table per field: the first [`MAX_SEGMENT_VALUES`] values in
//! byte order exactly and everything else counted together as `other`, so memory is bounded
//! whatever the field's cardinality and any merge order gives one pass's result.
//!
//! At report time ([`paired_breakdown`] for a shadow, [`unpaired_breakdown`] for a canary or
//! an A/B test) each field becomes a [`SegmentBreakdown`]: the largest values by labelled
//! samples (at most [`REPORTED_VALUES`], the rest folded into `other`), each with the two
//! versions' accuracy or MAE, the change and its p-value, and a flag when the direction of the
//! segments holding most of the traffic is the opposite of the overall direction (a Simpson's
//! reversal). [`SegmentGate`] is the optional rule: no segment with enough samples may regress
//! by more than a limit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchyard_stats::{mcnemar, proportions, ttest, Moments, Proportion};

use crate::paired::PairedErrors;

/// Values of one field kept exactly per series; the rest are counted as `other`.
pub const MAX_SEGMENT_VALUES: usize = 256;
/// Values shown per field in a report (by labelled samples); the rest are folded into `other`.
pub const REPORTED_VALUES: usize = 10;
/// Fields a model may declare.
pub const MAX_SEGMENT_FIELDS: usize = 8;
/// Longest value kept (longer values are cut at a character boundary).
pub const MAX_SEGMENT_VALUE_BYTES: usize = 128;
/// How the empty value (the request did not carry the field) is shown.
pub const MISSING: &str = "(missing)";

/// What a segment table holds per value: summaries that merge.
pub trait Merge: Default {
    fn merge(&mut self, other: &Self);
}

/// Per value of one field, bounded: the first [`MAX_SEGMENT_VALUES`] values in byte order are
/// kept, every other value's statistics are merged into `other`. The kept set is always the
/// smallest values seen, so it does not depend on the order records arrive or tables merge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bounded<V> {
    values: BTreeMap<String, V>,
    other: V,
    /// Records (or merges) that went to `other`.
    other_hits: u64,
}

impl<V: Default> Default for Bounded<V> {
    fn default() -> Self {
        Bounded {
            values: BTreeMap::new(),
            other: V::default(),
            other_hits: 0,
        }
    }
}

impl<V: Merge> Bounded<V> {
    /// The statistics of `value` (or of `other` when the value is not kept). A value already
    /// kept costs one lookup, no allocation.
    pub fn entry(&mut self, value: &str) -> &mut V {
        if !self.values.contains_key(value) {
            if !self.admit(value) {
                self.other_hits += 1;
                return &mut self.other;
            }
            self.values.insert(value.to_string(), V::default());
        }
        // Kept now: `other` is only the type's fallback.
        match self.values.get_mut(value) {
            Some(stats) => stats,
            None => &mut self.other,
        }
    }

    /// Whether a value not yet kept may be: while there is room, or when it comes before the
    /// largest kept value in byte order (which then goes to `other`).
    fn admit(&mut self, value: &str) -> bool {
        if self.values.len() < MAX_SEGMENT_VALUES {
            return true;
        }
        match self.values.last_key_value() {
            Some((largest, _)) if value < largest.as_str() => {
                if let Some((_, evicted)) = self.values.pop_last() {
                    self.other.merge(&evicted);
                    self.other_hits += 1;
                }
                true
            }
            _ => false,
        }
    }

    pub fn merge(&mut self, other: &Bounded<V>) {
        for (value, stats) in &other.values {
            self.entry(value).merge(stats);
        }
        self.other.merge(&other.other);
        self.other_hits += other.other_hits;
    }

    /// The kept values.
    pub fn values(&self) -> &BTreeMap<String, V> {
        &self.values
    }

    /// Everything past the kept values.
    pub fn other(&self) -> &V {
        &self.other
    }

    /// Whether anything was counted as `other`.
    pub fn has_other(&self) -> bool {
        self.other_hits > 0
    }

    /// Records (or merges) counted as `other`.
    pub fn other_hits(&self) -> u64 {
        self.other_hits
    }

    /// A table from its parts (as [`Bounded::values`], [`Bounded::other`] and
    /// [`Bounded::other_hits`] gave them); values past the bound go to `other`.
    pub fn from_parts(
        values: impl IntoIterator<Item = (String, V)>,
        other: V,
        other_hits: u64,
    ) -> Self {
        let mut table = Bounded {
            values: BTreeMap::new(),
            other,
            other_hits,
        };
        for (value, stats) in values {
            table.entry(&value).merge(&stats);
        }
        table
    }
}

/// Tables per field name.
pub type Segments<V> = BTreeMap<String, Bounded<V>>;

/// The statistics of `field`'s `value` in `segments` (see [`Bounded::entry`]).
pub fn value_mut<'a, V: Merge>(
    segments: &'a mut Segments<V>,
    field: &str,
    value: &str,
) -> &'a mut V {
    segments.entry(field.to_string()).or_default().entry(value)
}

/// Merges `from` into `into`, field by field.
pub fn merge_segments<V: Merge>(into: &mut Segments<V>, from: &Segments<V>) {
    for (field, table) in from {
        into.entry(field.clone()).or_default().merge(table);
    }
}

/// One version's traffic and quality for one segment value.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SegmentStats {
    pub requests: u64,
    pub errors: u64,
    /// Labelled classification instances: successes are correct predictions.
    pub correct: Proportion,
    /// Absolute error of labelled regression instances.
    pub abs_error: Moments,
}

impl Merge for SegmentStats {
    fn merge(&mut self, other: &Self) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.correct.merge(&other.correct);
        self.abs_error.merge(&other.abs_error);
    }
}

/// A shadow pair on the requests of one segment value.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SegmentPairStats {
    /// Instances both versions answered comparably (classes or finite values).
    pub compared: u64,
    /// Compared classification instances: successes are agreements.
    pub agreement: Proportion,
    pub both_correct: u64,
    /// McNemar's b and c.
    pub primary_only: u64,
    pub shadow_only: u64,
    pub both_wrong: u64,
    /// Labelled regression instances.
    pub errors: PairedErrors,
}

impl SegmentPairStats {
    fn labelled_classes(&self) -> u64 {
        self.both_correct + self.primary_only + self.shadow_only + self.both_wrong
    }
}

impl Merge for SegmentPairStats {
    fn merge(&mut self, other: &Self) {
        self.compared += other.compared;
        self.agreement.merge(&other.agreement);
        self.both_correct += other.both_correct;
        self.primary_only += other.primary_only;
        self.shadow_only += other.shadow_only;
        self.both_wrong += other.both_wrong;
        self.errors.merge(&other.errors);
    }
}

/// Cuts a value to [`MAX_SEGMENT_VALUE_BYTES`] at a character boundary.
pub fn clip_value(value: &str) -> &str {
    if value.len() <= MAX_SEGMENT_VALUE_BYTES {
        return value;
    }
    let mut end = MAX_SEGMENT_VALUE_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

// ---------------------------------------------------------------------------------------------
// Reports.

/// What a breakdown compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentMetric {
    /// Share of correct labelled predictions; the change is in points (candidate − baseline).
    Accuracy,
    /// Mean absolute error; the change is relative ((candidate − baseline) / baseline).
    Mae,
}

/// Which way a change goes for the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Better,
    Worse,
    Same,
}

/// One value of a field (or `other`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRow {
    /// The value; `(missing)` for requests without the field.
    pub value: String,
    /// Whether this row folds several values (past the kept or the reported ones).
    pub other: bool,
    /// Labelled instances compared (a shadow: labelled pairs; else the smaller side).
    pub samples: u64,
    /// Requests of the candidate in this segment (serving or mirrored).
    pub requests: u64,
    /// The baseline's (primary's, stable's, A's) accuracy or MAE.
    pub baseline: Option<f64>,
    pub candidate: Option<f64>,
    /// Accuracy: points (0.05 = five points up); MAE: relative (−0.2 = 20% lower).
    pub change: Option<f64>,
    /// McNemar or paired t (a shadow), two-proportion z or Welch (else).
    pub p_value: Option<f64>,
    pub direction: Direction,
}

/// Which way most of the traffic goes when the whole goes the other way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reversal {
    pub overall: Direction,
    /// The direction of the segments that together hold more than half the samples.
    pub majority: Direction,
    /// Their share of the samples.
    pub majority_share: f64,
    pub summary: String,
}

/// One field's segments compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentBreakdown {
    pub field: String,
    /// Which two versions, when a report compares more than one pair (an A/B/n: each arm
    /// against the control), as `candidate vs baseline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compared: Option<String>,
    pub metric: SegmentMetric,
    /// The largest values by samples, then `other` when anything was folded.
    pub rows: Vec<SegmentRow>,
    /// Values seen and kept exactly (at most [`MAX_SEGMENT_VALUES`]).
    pub values: usize,
    /// Over every segment of the field.
    pub overall: SegmentRow,
    pub reversal: Option<Reversal>,
}

fn direction(metric: SegmentMetric, change: Option<f64>) -> Direction {
    match change {
        Some(c) if c > 0.0 => match metric {
            SegmentMetric::Accuracy => Direction::Better,
            SegmentMetric::Mae => Direction::Worse,
        },
        Some(c) if c < 0.0 => match metric {
            SegmentMetric::Accuracy => Direction::Worse,
            SegmentMetric::Mae => Direction::Better,
        },
        _ => Direction::Same,
    }
}

fn relative(baseline: f64, candidate: f64) -> Option<f64> {
    (baseline > 0.0).then(|| (candidate - baseline) / baseline)
}

/// A shadow pair's row for one value.
fn paired_row(value: &str, other: bool, s: &SegmentPairStats, metric: SegmentMetric) -> SegmentRow {
    let mut row = SegmentRow {
        value: shown(value),
        other,
        samples: 0,
        requests: s.compared,
        baseline: None,
        candidate: None,
        change: None,
        p_value: None,
        direction: Direction::Same,
    };
    match metric {
        SegmentMetric::Accuracy => {
            let n = s.labelled_classes();
            row.samples = n;
            if n > 0 {
                let pa = (s.both_correct + s.primary_only) as f64 / n as f64;
                let sa = (s.both_correct + s.shadow_only) as f64 / n as f64;
                row.baseline = Some(pa);
                row.candidate = Some(sa);
                row.change = Some(sa - pa);
                row.p_value = Some(mcnemar::mcnemar(s.primary_only, s.shadow_only).p_value);
            }
        }
        SegmentMetric::Mae => {
            let e = &s.errors;
            row.samples = e.count();
            row.baseline = e.primary_abs.mean();
            row.candidate = e.shadow_abs.mean();
            row.change = row
                .baseline
                .zip(row.candidate)
                .and_then(|(b, c)| relative(b, c));
            row.p_value = ttest::paired_from_moments(&e.abs_diff)
                .ok()
                .map(|t| t.p_value);
        }
    }
    row.direction = direction(metric, row.change);
    row
}

/// A canary's or an A/B test's row for one value: two independent samples.
fn unpaired_row(
    value: &str,
    other: bool,
    baseline: &SegmentStats,
    candidate: &SegmentStats,
    metric: SegmentMetric,
) -> SegmentRow {
    let mut row = SegmentRow {
        value: shown(value),
        other,
        samples: 0,
        requests: candidate.requests,
        baseline: None,
        candidate: None,
        change: None,
        p_value: None,
        direction: Direction::Same,
    };
    match metric {
        SegmentMetric::Accuracy => {
            let (b, c) = (baseline.correct, candidate.correct);
            row.samples = b.trials.min(c.trials);
            row.baseline = b.rate();
            row.candidate = c.rate();
            row.change = row.baseline.zip(row.candidate).map(|(b, c)| c - b);
            row.p_value = proportions::two_proportion_ztest(b, c, 0.05)
                .ok()
                .map(|z| z.p_value);
        }
        SegmentMetric::Mae => {
            let (b, c) = (&baseline.abs_error, &candidate.abs_error);
            row.samples = b.count().min(c.count());
            row.baseline = b.mean();
            row.candidate = c.mean();
            row.change = row
                .baseline
                .zip(row.candidate)
                .and_then(|(b, c)| relative(b, c));
            row.p_value = ttest::welch_from_moments(c, b).ok().map(|t| t.p_value);
        }
    }
    row.direction = direction(metric, row.change);
    row
}

fn shown(value: &str) -> String {
    if value.is_empty() {
        MISSING.to_string()
    } else {
        value.to_string()
    }
}

/// The rows of a field, largest first, with what is past [`REPORTED_VALUES`] (and past the
/// kept values) folded into one `other` row; the overall row; the reversal flag.
fn breakdown<V: Merge + Clone>(
    field: &str,
    metric: SegmentMetric,
    values: Vec<(String, V)>,
    other: Option<V>,
    row: impl Fn(&str, bool, &V) -> SegmentRow,
) -> SegmentBreakdown {
    let kept = values.len();
    let mut all = V::default();
    values.iter().for_each(|(_, v)| all.merge(v));
    if let Some(o) = &other {
        all.merge(o);
    }
    let overall = row("all", false, &all);
    // Rows of every kept value (and the unkept ones together), for the reversal.
    let mut rows: Vec<SegmentRow> = values.iter().map(|(k, v)| row(k, false, v)).collect();
    if let Some(o) = &other {
        rows.push(row("other", true, o));
    }
    let reversal = reversal(&overall, &rows);
    // What is shown: the largest kept values, then everything else as `other`.
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| {
        rows[b]
            .samples
            .cmp(&rows[a].samples)
            .then(rows[b].requests.cmp(&rows[a].requests))
            .then(values[a].0.cmp(&values[b].0))
    });
    let mut shown_rows: Vec<SegmentRow> = order
        .iter()
        .take(REPORTED_VALUES)
        .map(|&i| rows[i].clone())
        .collect();
    let mut rest = other.unwrap_or_default();
    let mut folded = false;
    for &i in order.iter().skip(REPORTED_VALUES) {
        rest.merge(&values[i].1);
        folded = true;
    }
    if folded || rows.last().is_some_and(|r| r.other) {
        shown_rows.push(row("other", true, &rest));
    }
    SegmentBreakdown {
        field: field.to_string(),
        compared: None,
        metric,
        rows: shown_rows,
        values: kept,
        overall,
        reversal,
    }
}

/// The reversal flag: the segments going one way hold more than half the samples, and the
/// whole goes the other way. With equal segment mixes on both sides (a shadow, a hashed split)
/// this means a few segments moved the total against most of the traffic; with unequal mixes it
/// is Simpson's paradox proper. Either way the overall number alone misleads.
fn reversal(overall: &SegmentRow, rows: &[SegmentRow]) -> Option<Reversal> {
    if overall.direction == Direction::Same {
        return None;
    }
    let total: u64 = rows.iter().map(|r| r.samples).sum();
    if total == 0 {
        return None;
    }
    let opposite = match overall.direction {
        Direction::Better => Direction::Worse,
        _ => Direction::Better,
    };
    let against: u64 = rows
        .iter()
        .filter(|r| r.direction == opposite)
        .map(|r| r.samples)
        .sum();
    let share = against as f64 / total as f64;
    (share > 0.5).then(|| Reversal {
        overall: overall.direction,
        majority: opposite,
        majority_share: share,
        summary: format!(
            "overall the candidate is {} but segments holding {:.0}% of the samples say {}",
            word(overall.direction),
            share * 100.0,
            word(opposite)
        ),
    })
}

fn word(d: Direction) -> &'static str {
    match d {
        Direction::Better => "better",
        Direction::Worse => "worse",
        Direction::Same => "the same",
    }
}

/// Whether a pair's segments compare classes (else values): by which kind has labels, then
/// which was compared.
fn pair_metric(table: &Bounded<SegmentPairStats>) -> SegmentMetric {
    let mut all = SegmentPairStats::default();
    table.values().values().for_each(|v| all.merge(v));
    all.merge(table.other());
    if all.labelled_classes() > 0 || (all.errors.count() == 0 && all.agreement.trials > 0) {
        SegmentMetric::Accuracy
    } else {
        SegmentMetric::Mae
    }
}

/// A shadow's segments: the candidate against the primary on the same requests.
pub fn paired_breakdown(segments: &Segments<SegmentPairStats>) -> Vec<SegmentBreakdown> {
    segments
        .iter()
        .map(|(field, table)| {
            let metric = pair_metric(table);
            breakdown(
                field,
                metric,
                table
                    .values()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                table.has_other().then(|| table.other().clone()),
                |value, other, v| paired_row(value, other, v, metric),
            )
        })
        .collect()
}

/// A canary's or an A/B test's segments: the candidate's against the baseline's, each on its
/// own requests.
pub fn unpaired_breakdown(
    baseline: &Segments<SegmentStats>,
    candidate: &Segments<SegmentStats>,
) -> Vec<SegmentBreakdown> {
    let fields: std::collections::BTreeSet<&String> =
        baseline.keys().chain(candidate.keys()).collect();
    let empty = Bounded::<SegmentStats>::default();
    fields
        .into_iter()
        .map(|field| {
            let b = baseline.get(field).unwrap_or(&empty);
            let c = candidate.get(field).unwrap_or(&empty);
            let labelled_classes = b
                .values()
                .values()
                .chain(c.values().values())
                .chain([b.other(), c.other()])
                .any(|s| s.correct.trials > 0);
            let labelled_values = b
                .values()
                .values()
                .chain(c.values().values())
                .chain([b.other(), c.other()])
                .any(|s| s.abs_error.count() > 0);
            let metric = if labelled_values && !labelled_classes {
                SegmentMetric::Mae
            } else {
                SegmentMetric::Accuracy
            };
            // Both sides' values side by side; a value kept on one side only compares with
            // nothing on the other.
            let keys: std::collections::BTreeSet<&String> =
                b.values().keys().chain(c.values().keys()).collect();
            let values: Vec<(String, (SegmentStats, SegmentStats))> = keys
                .into_iter()
                .map(|k| {
                    (
                        k.clone(),
                        (
                            b.values().get(k).cloned().unwrap_or_default(),
                            c.values().get(k).cloned().unwrap_or_default(),
                        ),
                    )
                })
                .collect();
            let other =
                (b.has_other() || c.has_other()).then(|| (b.other().clone(), c.other().clone()));
            breakdown(field, metric, values, other, |value, other, (bs, cs)| {
                unpaired_row(value, other, bs, cs, metric)
            })
        })
        .collect()
}

impl Merge for (SegmentStats, SegmentStats) {
    fn merge(&mut self, other: &Self) {
        self.0.merge(&other.0);
        self.1.merge(&other.1);
    }
}

// ---------------------------------------------------------------------------------------------
// The gate.

/// No segment with at least `min_samples` labelled samples may regress by more than a limit:
/// accuracy by more than `max_accuracy_drop` points, MAE by more than `max_mae_increase`
/// (relative). `fields` limits it to some of the model's fields (all when empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SegmentGate {
    pub fields: Vec<String>,
    pub max_accuracy_drop: f64,
    pub max_mae_increase: f64,
    pub min_samples: u64,
}

impl Default for SegmentGate {
    fn default() -> Self {
        SegmentGate {
            fields: Vec::new(),
            max_accuracy_drop: 0.05,
            max_mae_increase: 0.10,
            min_samples: 100,
        }
    }
}

/// A segment gate as written: every part defaults on its own.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawSegmentGate {
    pub fields: Option<Vec<String>>,
    pub max_accuracy_drop: Option<f64>,
    pub max_mae_increase: Option<f64>,
    pub min_samples: Option<u64>,
}

impl RawSegmentGate {
    pub fn validate(self, at: &str, problems: &mut Vec<String>) -> SegmentGate {
        let d = SegmentGate::default();
        let gate = SegmentGate {
            fields: self.fields.unwrap_or_default(),
            max_accuracy_drop: self.max_accuracy_drop.unwrap_or(d.max_accuracy_drop),
            max_mae_increase: self.max_mae_increase.unwrap_or(d.max_mae_increase),
            min_samples: self.min_samples.unwrap_or(d.min_samples),
        };
        for (name, v) in [
            ("max_accuracy_drop", gate.max_accuracy_drop),
            ("max_mae_increase", gate.max_mae_increase),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                problems.push(format!(
                    "{at}.{name} must be a non-negative number, got {v}"
                ));
            }
        }
        if gate.min_samples == 0 {
            problems.push(format!("{at}.min_samples must be greater than 0"));
        }
        if gate.fields.iter().any(String::is_empty) {
            problems.push(format!("{at}.fields: empty field name"));
        }
        gate
    }
}

/// A segment that failed the gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentFailure {
    pub field: String,
    pub value: String,
    pub samples: u64,
    pub baseline: f64,
    pub candidate: f64,
    pub change: f64,
    pub limit: f64,
    pub metric: SegmentMetric,
}

impl SegmentFailure {
    pub fn describe(&self) -> String {
        match self.metric {
            SegmentMetric::Accuracy => format!(
                "segment {}={}: accuracy {:.1}% vs {:.1}% ({:+.1} points, limit {:.1}) over {} labelled",
                self.field,
                self.value,
                self.candidate * 100.0,
                self.baseline * 100.0,
                self.change * 100.0,
                self.limit * 100.0,
                self.samples
            ),
            SegmentMetric::Mae => format!(
                "segment {}={}: MAE {:.4} vs {:.4} ({:+.1}%, limit +{:.1}%) over {} labelled",
                self.field,
                self.value,
                self.candidate,
                self.baseline,
                self.change * 100.0,
                self.limit * 100.0,
                self.samples
            ),
        }
    }
}

impl SegmentGate {
    /// The worst segment past its limit (by how far past), if any. Kept values only: `other`
    /// mixes values and is not judged.
    pub fn check(&self, breakdowns: &[SegmentBreakdown]) -> Option<SegmentFailure> {
        breakdowns
            .iter()
            .filter(|b| self.fields.is_empty() || self.fields.contains(&b.field))
            .flat_map(|b| b.rows.iter().map(move |r| (b, r)))
            .filter(|(_, r)| !r.other && r.samples >= self.min_samples)
            .filter_map(|(b, r)| {
                let (baseline, candidate, change) = (r.baseline?, r.candidate?, r.change?);
                let (limit, excess) = match b.metric {
                    SegmentMetric::Accuracy => {
                        (self.max_accuracy_drop, -change - self.max_accuracy_drop)
                    }
                    SegmentMetric::Mae => (self.max_mae_increase, change - self.max_mae_increase),
                };
                (excess > 0.0).then(|| {
                    (
                        excess,
                        SegmentFailure {
                            field: b.field.clone(),
                            value: r.value.clone(),
                            samples: r.samples,
                            baseline,
                            candidate,
                            change,
                            limit,
                            metric: b.metric,
                        },
                    )
                })
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, f)| f)
    }

    /// Fields it names that the model does not declare.
    pub fn problems(&self, at: &str, declared: &[&str], p: &mut Vec<String>) {
        if declared.is_empty() {
            p.push(format!(
                "{at}: the model declares no segments (add `segments:` to its configuration)"
            ));
            return;
        }
        for f in &self.fields {
            if !declared.contains(&f.as_str()) {
                p.push(format!(
                    "{at}.fields: the model declares no segment '{f}' (declared: {})",
                    declared.join(", ")
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(requests: u64, correct: u64, labelled: u64) -> SegmentStats {
        SegmentStats {
            requests,
            errors: 0,
            correct: Proportion {
                successes: correct,
                trials: labelled,
            },
            abs_error: Moments::default(),
        }
    }

    #[test]
    fn a_bounded_table_keeps_the_smallest_values_whatever_the_order() {
        let values: Vec<String> = (0..(MAX_SEGMENT_VALUES + 50))
            .map(|i| format!("lot-{:04}", (i * 7919) % 10_000))
            .collect();
        let mut one_pass = Bounded::<SegmentStats>::default();
        for v in &values {
            one_pass.entry(v).requests += 1;
        }
        // Reversed, in three parts merged in another order.
        let mut parts: Vec<Bounded<SegmentStats>> = vec![Bounded::default(); 3];
        for (i, v) in values.iter().rev().enumerate() {
            parts[i % 3].entry(v).requests += 1;
        }
        let mut merged = Bounded::<SegmentStats>::default();
        for p in parts.iter().rev() {
            merged.merge(p);
        }
        assert_eq!(merged.values(), one_pass.values());
        assert_eq!(merged.other().requests, one_pass.other().requests);
        assert_eq!(one_pass.values().len(), MAX_SEGMENT_VALUES);
        assert_eq!(one_pass.other().requests, 50);
        let mut sorted = values.clone();
        sorted.sort();
        assert_eq!(
            one_pass.values().keys().cloned().collect::<Vec<_>>(),
            sorted[..MAX_SEGMENT_VALUES]
        );
        // A value past the bound stays in `other` when it comes back.
        let largest = sorted.last().unwrap().clone();
        one_pass.entry(&largest).requests += 1;
        assert_eq!(one_pass.other().requests, 51);
    }

    /// Charig et al. (1986), the textbook Simpson's paradox: treatment A is better for small and
    /// for large kidney stones, B is better overall because A got most of the large ones.
    #[test]
    fn simpsons_paradox_is_flagged() {
        let mut b = Segments::<SegmentStats>::default();
        let mut a = Segments::<SegmentStats>::default();
        let field = || "stone".to_string();
        *b.entry(field()).or_default().entry("small") = stats(270, 234, 270);
        *b.entry(field()).or_default().entry("large") = stats(80, 55, 80);
        *a.entry(field()).or_default().entry("small") = stats(87, 81, 87);
        *a.entry(field()).or_default().entry("large") = stats(263, 192, 263);
        // B is the baseline (stable), A the candidate.
        let report = unpaired_breakdown(&b, &a);
        assert_eq!(report.len(), 1);
        let stone = &report[0];
        assert_eq!(stone.metric, SegmentMetric::Accuracy);
        // Overall: 273/350 = 78.0% against 289/350 = 82.6%.
        assert!((stone.overall.candidate.unwrap() - 273.0 / 350.0).abs() < 1e-12);
        assert!((stone.overall.baseline.unwrap() - 289.0 / 350.0).abs() < 1e-12);
        assert_eq!(stone.overall.direction, Direction::Worse);
        let row = |v: &str| stone.rows.iter().find(|r| r.value == v).unwrap();
        assert_eq!(row("small").direction, Direction::Better);
        assert_eq!(row("large").direction, Direction::Better);
        // Samples: the smaller side of each segment, 87 + 80.
        assert_eq!((row("small").samples, row("large").samples), (87, 80));
        let rev = stone.reversal.as_ref().expect("a reversal");
        assert_eq!(
            (rev.overall, rev.majority),
            (Direction::Worse, Direction::Better)
        );
        assert_eq!(rev.majority_share, 1.0);
        // The same data without the mix imbalance: no reversal.
        let mut even = Segments::<SegmentStats>::default();
        *even.entry(field()).or_default().entry("small") = stats(270, 252, 270);
        *even.entry(field()).or_default().entry("large") = stats(80, 58, 80);
        assert!(unpaired_breakdown(&b, &even)[0].reversal.is_none());
    }

    fn pair(cells: (u64, u64, u64, u64)) -> SegmentPairStats {
        let (both, b, c, neither) = cells;
        SegmentPairStats {
            compared: both + b + c + neither,
            agreement: Proportion {
                successes: both + neither,
                trials: both + b + c + neither,
            },
            both_correct: both,
            primary_only: b,
            shadow_only: c,
            both_wrong: neither,
            errors: PairedErrors::default(),
        }
    }

    #[test]
    fn a_shadow_breakdown_shows_each_value_and_the_gate_names_the_worst() {
        let mut segs = Segments::<SegmentPairStats>::default();
        let t = segs.entry("tester".into()).or_default();
        // T1: 300 pairs, the candidate 20 points better; T2: 150 pairs, 10 points worse;
        // T3: 40 pairs, 25 points worse (too few for the gate's default 100).
        *t.entry("T1") = pair((200, 10, 70, 20));
        *t.entry("T2") = pair((100, 20, 5, 25));
        *t.entry("T3") = pair((20, 12, 2, 6));
        *t.entry("") = pair((10, 0, 0, 0));
        let report = paired_breakdown(&segs);
        let tester = &report[0];
        assert_eq!(tester.metric, SegmentMetric::Accuracy);
        let values: Vec<&str> = tester.rows.iter().map(|r| r.value.as_str()).collect();
        assert_eq!(values, ["T1", "T2", "T3", MISSING]);
        let t2 = &tester.rows[1];
        assert_eq!(t2.samples, 150);
        assert!((t2.baseline.unwrap() - 120.0 / 150.0).abs() < 1e-12);
        assert!((t2.candidate.unwrap() - 105.0 / 150.0).abs() < 1e-12);
        assert!((t2.change.unwrap() + 0.1).abs() < 1e-12);
        assert_eq!(t2.direction, Direction::Worse);
        // Overall better: T1's gain outweighs; T1 holds 300 of 500 samples, so no reversal.
        assert_eq!(tester.overall.direction, Direction::Better);
        assert!(tester.reversal.is_none());
        let gate = SegmentGate::default();
        let failure = gate.check(&report).expect("T2 is past the limit");
        assert_eq!(
            (failure.field.as_str(), failure.value.as_str()),
            ("tester", "T2")
        );
        assert!(
            failure.describe().contains("tester=T2"),
            "{}",
            failure.describe()
        );
        // With a lower sample floor the worse T3 is named; with a wider limit nothing is.
        let low = SegmentGate {
            min_samples: 30,
            ..SegmentGate::default()
        };
        assert_eq!(low.check(&report).unwrap().value, "T3");
        let wide = SegmentGate {
            max_accuracy_drop: 0.5,
            ..SegmentGate::default()
        };
        assert!(wide.check(&report).is_none());
        let other_field = SegmentGate {
            fields: vec!["lot".into()],
            ..SegmentGate::default()
        };
        assert!(other_field.check(&report).is_none());
    }

    #[test]
    fn values_past_the_reported_ones_are_folded_into_other() {
        let mut segs = Segments::<SegmentPairStats>::default();
        let t = segs.entry("lot".into()).or_default();
        for i in 0..(REPORTED_VALUES as u64 + 5) {
            *t.entry(&format!("L{i:02}")) = pair((10 + i, 1, 1, 1));
        }
        let report = paired_breakdown(&segs);
        let lot = &report[0];
        assert_eq!(lot.values, REPORTED_VALUES + 5);
        assert_eq!(lot.rows.len(), REPORTED_VALUES + 1);
        let other = lot.rows.last().unwrap();
        assert!(other.other);
        // The five smallest (L00..L04: 13..17 pairs each) are folded.
        assert_eq!(other.samples, (13..18).sum::<u64>());
        assert_eq!(lot.rows[0].value, format!("L{:02}", REPORTED_VALUES + 4));
    }

    #[test]
    fn regression_segments_compare_mae() {
        let mut segs = Segments::<SegmentPairStats>::default();
        let t = segs.entry("product".into()).or_default();
        let v = t.entry("P1");
        // Primary off by 2, candidate by 3: MAE +50%.
        for i in 0..200 {
            let truth = 100.0 + f64::from(i % 7);
            let e = if i % 2 == 0 { 1.0 } else { -1.0 };
            v.errors.push(&crate::paired::LabelledValues {
                primary: truth + 2.0 * e,
                shadow: truth + 3.0 * e + 0.01 * f64::from(i % 3),
                truth,
            });
        }
        let report = paired_breakdown(&segs);
        let row = &report[0].rows[0];
        assert_eq!(report[0].metric, SegmentMetric::Mae);
        assert_eq!(row.samples, 200);
        assert!((row.baseline.unwrap() - 2.0).abs() < 1e-9);
        assert!((row.change.unwrap() - 0.5).abs() < 0.01, "{:?}", row.change);
        assert_eq!(row.direction, Direction::Worse);
        let f = SegmentGate::default().check(&report).unwrap();
        assert_eq!(f.metric, SegmentMetric::Mae);
        assert!(f.describe().contains("product=P1"));
    }

    #[test]
    fn bad_gates_and_unknown_fields_are_problems() {
        let mut p = Vec::new();
        let g = RawSegmentGate {
            fields: Some(vec!["tester".into(), String::new()]),
            max_accuracy_drop: Some(-0.1),
            max_mae_increase: Some(f64::NAN),
            min_samples: Some(0),
        }
        .validate("segment_gate", &mut p);
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].contains("segment_gate.max_accuracy_drop"), "{p:?}");
        let mut p = Vec::new();
        g.problems("segment_gate", &["lot"], &mut p);
        assert!(p.iter().any(|m| m.contains("no segment 'tester'")), "{p:?}");
        let mut p = Vec::new();
        g.problems("segment_gate", &[], &mut p);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("declares no segments"), "{p:?}");
    }

    #[test]
    fn long_values_are_cut_at_a_character_boundary() {
        let long = "é".repeat(100);
        let cut = clip_value(&long);
        assert!(cut.len() <= MAX_SEGMENT_VALUE_BYTES);
        assert!(long.starts_with(cut));
        assert_eq!(clip_value("T1"), "T1");
    }
}
