//! Class-level detail of a classifier and the drift of prediction distributions, computed when
//! a report or a gate needs them from the aggregates' bounded counts (`aggregate`).
//!
//! - [`classification_summary`]: a version's confusion matrix (true × predicted class), the
//!   per-class precision, recall, F1 and support and their macro means (scikit-learn's
//!   `confusion_matrix` and `precision_recall_fscore_support` with its default labels: the
//!   classes that occur as a truth or a prediction, `zero_division=0`), and accuracy with its
//!   Wilson 95% interval. Labels of a class the model does not declare are counted as
//!   `unknown_labels` and left out of the matrix.
//! - [`transition_table`] and [`prediction_chi2`]: a shadow pair's primary × candidate classes
//!   over the compared instances, and the seed's chi-square test of the two prediction
//!   distributions (scipy `chi2_contingency` on the 2 × k table of class counts).
//! - [`pair_drift`], [`prediction_drift`]: PSI and Jensen–Shannon of the candidate's predictions
//!   from the primary's (stable's): over classes, or over the deciles of the primary's values
//!   for a regressor (`switchyard_stats::drift::value_drift`).
//!
//! Classes past the aggregates' bound are shown as one `other` row and column; their instances
//! are counted, never dropped.

use serde::{Deserialize, Serialize};
use switchyard_stats::chi2::{self, ChiSquare};
use switchyard_stats::classification::{ClassMatrix, ConfusionMatrix};
use switchyard_stats::drift::{self, VALUE_BINS};
use switchyard_stats::{proportions, Proportion, SignedLogHistogram};

use crate::aggregate::{PairStats, VariantStats};

/// How the `other` row and column are named in tables.
pub const OTHER: &str = "(other)";

/// A table of counts by class: rows and columns are `classes`, then `other` when `other` is
/// set (the classes past the aggregates' bound, counted together).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassTable {
    pub classes: Vec<String>,
    /// The last row and column are [`OTHER`].
    pub other: bool,
    pub counts: Vec<Vec<u64>>,
}

impl ClassTable {
    /// Row and column names, [`OTHER`] last when present.
    pub fn labels(&self) -> Vec<String> {
        let mut l = self.classes.clone();
        if self.other {
            l.push(OTHER.to_string());
        }
        l
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    pub fn row_sums(&self) -> Vec<u64> {
        self.counts.iter().map(|r| r.iter().sum()).collect()
    }

    pub fn column_sums(&self) -> Vec<u64> {
        (0..self.counts.len())
            .map(|j| self.counts.iter().map(|r| r[j]).sum())
            .collect()
    }

    /// The same table with the `declared` classes first, in their order (the others after, as
    /// they were; `other` stays last).
    pub fn in_declared_order(&self, declared: Option<&[String]>) -> ClassTable {
        let Some(declared) = declared else {
            return self.clone();
        };
        let k = self.classes.len();
        let mut order: Vec<usize> = declared
            .iter()
            .filter_map(|d| self.classes.iter().position(|c| c == d))
            .collect();
        let rest: Vec<usize> = (0..k).filter(|i| !order.contains(i)).collect();
        order.extend(rest);
        if self.other {
            order.push(k);
        }
        ClassTable {
            classes: order
                .iter()
                .filter(|&&i| i < k)
                .map(|&i| self.classes[i].clone())
                .collect(),
            other: self.other,
            counts: order
                .iter()
                .map(|&i| order.iter().map(|&j| self.counts[i][j]).collect())
                .collect(),
        }
    }
}

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Labelled instances of this true class.
    pub support: u64,
}

/// A classifier's labelled predictions in detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationSummary {
    /// True class (rows) × predicted class (columns).
    pub confusion: ClassTable,
    /// One per class of `confusion` (not `other`), in its order.
    pub scores: Vec<ClassScore>,
    /// Unweighted means over `scores`.
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    /// Instances in the matrix, and those predicted right.
    pub labelled: u64,
    pub correct: u64,
    pub accuracy: Option<f64>,
    /// Wilson 95% interval of `accuracy`.
    pub accuracy_low: Option<f64>,
    pub accuracy_high: Option<f64>,
    /// Labels of a class the model does not declare: reported here, left out of the matrix.
    pub unknown_labels: u64,
}

/// Significance of the interval on accuracy.
const ACCURACY_ALPHA: f64 = 0.05;

/// The detail of a version's labelled classifications (`confusion`, true × predicted), with
/// `declared` the model's classes when its configuration names them. `None` without any label.
///
/// Classes shown are those that occur as a truth or a prediction, in the declared order (then
/// any undeclared predicted class, sorted), as scikit-learn's default labels. A truth that
/// `declared` does not name is an unknown label; the `other` row is too when every declared
/// class has a row of its own (so only undeclared names can be in it).
pub fn classification_summary(
    m: &ClassMatrix,
    declared: Option<&[String]>,
) -> Option<ClassificationSummary> {
    if m.total() == 0 {
        return None;
    }
    let kept = m.classes();
    let k = kept.len();
    let mut counts: Vec<Vec<u64>> = m.counts().to_vec();
    let mut unknown_labels = 0;
    let mut other_same = m.other_same();
    if let Some(declared) = declared {
        let known = |c: &String| declared.contains(c);
        for (i, class) in kept.iter().enumerate() {
            if !known(class) {
                unknown_labels += counts[i].iter().sum::<u64>();
                counts[i].iter_mut().for_each(|c| *c = 0);
            }
        }
        // A declared class can be in `other` only if it has no row and sorts after every kept
        // class of a full matrix.
        let full = k >= m.limit();
        let declared_in_other = declared
            .iter()
            .any(|d| !kept.contains(d) && full && kept.last().is_some_and(|l| d > l));
        if !declared_in_other {
            unknown_labels += counts[k].iter().sum::<u64>();
            counts[k].iter_mut().for_each(|c| *c = 0);
            other_same = 0;
        }
    }
    let present =
        |i: usize| counts[i].iter().sum::<u64>() + counts.iter().map(|r| r[i]).sum::<u64>() > 0;
    let mut order: Vec<usize> = Vec::new();
    if let Some(declared) = declared {
        order.extend(
            declared
                .iter()
                .filter_map(|d| kept.iter().position(|c| c == d))
                .filter(|&i| present(i)),
        );
    }
    let rest: Vec<usize> = (0..k)
        .filter(|i| present(*i) && !order.contains(i))
        .collect();
    order.extend(rest);
    let other = present(k);
    let mut index = order.clone();
    if other {
        index.push(k);
    }
    let table: Vec<Vec<u64>> = index
        .iter()
        .map(|&i| index.iter().map(|&j| counts[i][j]).collect())
        .collect();
    let labelled: u64 = table.iter().flatten().sum();
    let named_right: u64 = (0..order.len()).map(|i| table[i][i]).sum();
    let correct = named_right + if other { other_same } else { 0 };
    let all = ConfusionMatrix {
        counts: table.clone(),
    };
    let scores: Vec<ClassScore> = all
        .scores()
        .into_iter()
        .zip(&order)
        .map(|(s, &i)| ClassScore {
            class: kept[i].clone(),
            precision: s.precision,
            recall: s.recall,
            f1: s.f1,
            support: s.support,
        })
        .collect();
    let mean = |f: fn(&ClassScore) -> f64| {
        if scores.is_empty() {
            0.0
        } else {
            scores.iter().map(f).sum::<f64>() / scores.len() as f64
        }
    };
    let interval = Proportion::new(correct, labelled)
        .ok()
        .and_then(|p| proportions::wilson_interval(p, ACCURACY_ALPHA).ok());
    Some(ClassificationSummary {
        confusion: ClassTable {
            classes: order.iter().map(|&i| kept[i].clone()).collect(),
            other,
            counts: table,
        },
        macro_precision: mean(|s| s.precision),
        macro_recall: mean(|s| s.recall),
        macro_f1: mean(|s| s.f1),
        scores,
        labelled,
        correct,
        accuracy: (labelled > 0).then(|| correct as f64 / labelled as f64),
        accuracy_low: interval.map(|i| i.0),
        accuracy_high: interval.map(|i| i.1),
        unknown_labels,
    })
}

/// A matrix as a table: the kept classes that occur, then `other` if it holds anything.
fn table_of(m: &ClassMatrix) -> ClassTable {
    let k = m.classes().len();
    let (rows, columns) = (m.row_sums(), m.column_sums());
    let index: Vec<usize> = (0..=k).filter(|&i| rows[i] + columns[i] > 0).collect();
    ClassTable {
        classes: index
            .iter()
            .filter(|&&i| i < k)
            .map(|&i| m.classes()[i].clone())
            .collect(),
        other: index.last() == Some(&k),
        counts: index
            .iter()
            .map(|&i| index.iter().map(|&j| m.counts()[i][j]).collect())
            .collect(),
    }
}

/// A shadow pair's compared classification instances by (primary's class, candidate's class).
pub fn transition_table(pair: &PairStats) -> Option<ClassTable> {
    (pair.transitions.total() > 0).then(|| table_of(&pair.transitions))
}

/// The seed's chi-square test of the two prediction distributions: scipy
/// `chi2_contingency([primary counts, candidate counts])` over the classes either predicted
/// (with Yates' correction when there are two). The rows are the same requests, so the test's
/// independence assumption does not hold; McNemar's test is the paired one.
pub fn prediction_chi2(pair: &PairStats) -> Option<ChiSquare> {
    let t = transition_table(pair)?;
    chi2::contingency(&[t.row_sums(), t.column_sums()]).ok()
}

/// What a drift was computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftBasis {
    /// Predicted classes.
    Classes,
    /// Regression outputs, in the deciles of the primary's (stable's).
    Values,
}

/// PSI and Jensen–Shannon of the candidate's predictions from the primary's (stable's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionDrift {
    pub basis: DriftBasis,
    /// Bin names: the classes, or `decile 1` … `decile 10` of the primary's values.
    pub bins: Vec<String>,
    /// Predictions per bin: the primary's (expected) and the candidate's (actual).
    pub expected: Vec<u64>,
    pub actual: Vec<u64>,
    /// Σ (a − e) ln(a / e) over the bins' shares, an empty bin's share taken as 1e-4.
    pub psi: f64,
    /// Jensen–Shannon divergence (natural log, at most ln 2) and its square root, the distance
    /// scipy's `jensenshannon` returns.
    pub js_divergence: f64,
    pub js_distance: f64,
}

fn class_drift(bins: Vec<String>, expected: Vec<u64>, actual: Vec<u64>) -> Option<PredictionDrift> {
    let float = |v: &[u64]| v.iter().map(|&c| c as f64).collect::<Vec<_>>();
    let d = drift::drift(&float(&expected), &float(&actual)).ok()?;
    Some(PredictionDrift {
        basis: DriftBasis::Classes,
        bins,
        expected,
        actual,
        psi: d.psi,
        js_divergence: d.js_divergence,
        js_distance: d.js_distance,
    })
}

fn values_drift(
    expected: &SignedLogHistogram,
    actual: &SignedLogHistogram,
) -> Option<PredictionDrift> {
    let d = drift::value_drift(expected, actual).ok()?;
    Some(PredictionDrift {
        basis: DriftBasis::Values,
        bins: (1..=VALUE_BINS).map(|i| format!("decile {i}")).collect(),
        expected: d.expected,
        actual: d.actual,
        psi: d.drift.psi,
        js_divergence: d.drift.js_divergence,
        js_distance: d.drift.js_distance,
    })
}

/// Drift of a shadow's predictions from the primary's on the same requests (the compared
/// instances): over the classes of the transitions, or the deciles of the primary's values.
pub fn pair_drift(pair: &PairStats) -> Option<PredictionDrift> {
    if let Some(t) = transition_table(pair) {
        return class_drift(t.labels(), t.row_sums(), t.column_sums());
    }
    values_drift(&pair.primary_values, &pair.shadow_values)
}

/// Drift of the candidate's predictions from the stable version's (each over its own
/// requests): over the classes either predicted, or the deciles of the stable's values. With
/// more classes than the aggregates keep, a class one side kept and the other counted as
/// `other` is compared as its count against 0, so the drift is then an upper bound.
pub fn prediction_drift(
    stable: &VariantStats,
    candidate: &VariantStats,
) -> Option<PredictionDrift> {
    let (s, c) = (&stable.predicted, &candidate.predicted);
    if s.total() > 0 && c.total() > 0 {
        let mut names: Vec<&String> = s.classes().iter().chain(c.classes()).collect();
        names.sort();
        names.dedup();
        let mut bins: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut expected: Vec<u64> = names.iter().map(|n| s.get(n)).collect();
        let mut actual: Vec<u64> = names.iter().map(|n| c.get(n)).collect();
        if s.other() + c.other() > 0 {
            bins.push(OTHER.to_string());
            expected.push(s.other());
            actual.push(c.other());
        }
        return class_drift(bins, expected, actual);
    }
    values_drift(&stable.values, &candidate.values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(pairs: &[(&str, &str)]) -> ClassMatrix {
        let mut m = ClassMatrix::default();
        pairs.iter().for_each(|(t, p)| m.add(t, p));
        m
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn unknown_labels_are_reported_and_left_out() {
        let m = matrix(&[
            ("pass", "pass"),
            ("pass", "edge"),
            ("edge", "edge"),
            ("edgy", "edge"),
            ("edgy", "pass"),
        ]);
        let declared = names(&["pass", "edge", "speed"]);
        let s = classification_summary(&m, Some(&declared)).unwrap();
        assert_eq!(s.unknown_labels, 2);
        assert_eq!(s.labelled, 3);
        // Declared order; `speed` never occurs, so it has no row (as scikit-learn's labels).
        assert_eq!(s.confusion.classes, names(&["pass", "edge"]));
        assert_eq!(s.confusion.counts, vec![vec![1, 1], vec![0, 1]]);
        assert_eq!((s.correct, s.accuracy), (2, Some(2.0 / 3.0)));
        let edge = &s.scores[1];
        assert_eq!((edge.precision, edge.recall, edge.support), (0.5, 1.0, 1));
        // Without declared classes every label counts.
        let all = classification_summary(&m, None).unwrap();
        assert_eq!((all.unknown_labels, all.labelled), (0, 5));
        assert_eq!(all.confusion.classes, names(&["edge", "edgy", "pass"]));
        assert!(classification_summary(&ClassMatrix::default(), None).is_none());
    }

    #[test]
    fn classes_past_the_bound_are_other_and_accuracy_stays_exact() {
        let mut m = ClassMatrix::new(2);
        for (t, p) in [("a", "a"), ("b", "a"), ("c", "c"), ("d", "c"), ("d", "d")] {
            m.add(t, p);
        }
        let s = classification_summary(&m, None).unwrap();
        assert!(s.confusion.other);
        assert_eq!(s.confusion.classes, names(&["a", "b"]));
        assert_eq!(s.confusion.labels().last().map(String::as_str), Some(OTHER));
        // a-a, c-c and d-d are right; c and d share `other`.
        assert_eq!((s.labelled, s.correct), (5, 3));
        // Declared classes that all have a row: `other` holds only unknown labels.
        let s = classification_summary(&m, Some(&names(&["a", "b"]))).unwrap();
        assert_eq!((s.unknown_labels, s.labelled, s.correct), (3, 2, 1));
        assert!(!s.confusion.other);
        // A declared class past the bound may be in `other`: it stays.
        let s = classification_summary(&m, Some(&names(&["a", "b", "c"]))).unwrap();
        assert_eq!((s.unknown_labels, s.labelled), (0, 5));
    }

    #[test]
    fn tables_follow_the_declared_order() {
        let mut m = ClassMatrix::new(3);
        for (a, b) in [
            ("speed", "pass"),
            ("pass", "pass"),
            ("edge", "speed"),
            ("zz", "zz"),
        ] {
            m.add(a, b);
        }
        let t = table_of(&m).in_declared_order(Some(&names(&["pass", "speed"])));
        assert_eq!(t.classes, names(&["pass", "speed", "edge"]));
        assert!(t.other);
        assert_eq!(
            t.counts,
            vec![
                vec![1, 0, 0, 0],
                vec![1, 0, 0, 0],
                vec![0, 1, 0, 0],
                vec![0, 0, 0, 1]
            ]
        );
    }

    #[test]
    fn drift_of_classes_and_values() {
        let mut stable = VariantStats::default();
        let mut canary = VariantStats::default();
        (0..90).for_each(|_| stable.predicted.add("pass"));
        (0..10).for_each(|_| stable.predicted.add("fail"));
        (0..60).for_each(|_| canary.predicted.add("pass"));
        (0..40).for_each(|_| canary.predicted.add("fail"));
        let d = prediction_drift(&stable, &canary).unwrap();
        assert_eq!(d.basis, DriftBasis::Classes);
        assert_eq!(
            (d.expected.clone(), d.actual.clone()),
            (vec![10, 90], vec![40, 60])
        );
        // PSI = (0.4 − 0.1) ln 4 + (0.6 − 0.9) ln(2/3).
        let want = 0.3 * 4f64.ln() - 0.3 * (2.0f64 / 3.0).ln();
        assert!((d.psi - want).abs() < 1e-12, "{}", d.psi);
        let mut stable = VariantStats::default();
        let mut canary = VariantStats::default();
        (1..=100).for_each(|i| stable.values.record(f64::from(i)));
        (1..=100).for_each(|i| canary.values.record(f64::from(i) * 1.5));
        let d = prediction_drift(&stable, &canary).unwrap();
        assert_eq!((d.basis, d.bins.len()), (DriftBasis::Values, VALUE_BINS));
        assert!(d.psi > 0.1, "{d:?}");
        assert!(prediction_drift(&VariantStats::default(), &canary).is_none());
    }
}
