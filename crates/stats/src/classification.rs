//! Classification detail: confusion matrix and per-class precision, recall, F1 and support, and
//! the bounded, mergeable class counts the gateway keeps per version and per shadow pair.
//!
//! Reference: scikit-learn `confusion_matrix(y_true, y_pred, labels=range(k))` (rows are the
//! true class, columns the predicted one) and `precision_recall_fscore_support(…,
//! labels=range(k), zero_division=0)`; macro averages are the unweighted means over classes,
//! as `average="macro"`.
//!
//! [`ClassMatrix`] and [`ClassCounts`] count by class *name* with bounded memory: at most
//! `limit` names ([`MAX_CLASSES`] by default) keep a row and a column of their own, the rest are
//! counted together as `other`. The names kept are the `limit` first in byte order among every
//! name seen, so the choice does not depend on the order the counts arrived in, and merging
//! any split of a stream, in any order, gives exactly what one pass gives (property-tested),
//! like [`crate::BottomK`].

use serde::{Deserialize, Serialize};

use crate::StatsError;

/// Most class names a [`ClassMatrix`] or [`ClassCounts`] keeps by default; the others are
/// counted as `other`. A matrix holds at most `(MAX_CLASSES + 1)²` counts (about 34 KB).
pub const MAX_CLASSES: usize = 64;

/// Counts of (true class, predicted class), for `k` classes numbered `0..k`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    /// `counts[t][p]`: requests of true class `t` predicted as `p`.
    pub counts: Vec<Vec<u64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Requests whose true class is this one.
    pub support: u64,
}

impl ConfusionMatrix {
    pub fn new(k: usize) -> Self {
        ConfusionMatrix {
            counts: vec![vec![0; k]; k],
        }
    }

    pub fn classes(&self) -> usize {
        self.counts.len()
    }

    /// Counts one (true, predicted) pair; classes outside `0..k` are an error.
    pub fn add(&mut self, truth: usize, predicted: usize) -> Result<(), StatsError> {
        let k = self.classes();
        if truth >= k {
            return Err(StatsError::invalid(
                "truth",
                format!("class {truth} is not one of 0..{k}"),
            ));
        }
        if predicted >= k {
            return Err(StatsError::invalid(
                "predicted",
                format!("class {predicted} is not one of 0..{k}"),
            ));
        }
        self.counts[truth][predicted] += 1;
        Ok(())
    }

    /// Builds the matrix from paired class indices.
    pub fn from_pairs(k: usize, truth: &[usize], predicted: &[usize]) -> Result<Self, StatsError> {
        if truth.len() != predicted.len() {
            return Err(StatsError::invalid(
                "predicted",
                format!("has {} values, truth has {}", predicted.len(), truth.len()),
            ));
        }
        let mut m = ConfusionMatrix::new(k);
        for (t, p) in truth.iter().zip(predicted) {
            m.add(*t, *p)?;
        }
        Ok(m)
    }

    /// Adds another matrix of the same size (mergeable across windows and replicas).
    pub fn merge(&mut self, other: &ConfusionMatrix) -> Result<(), StatsError> {
        if other.classes() != self.classes() {
            return Err(StatsError::invalid(
                "other",
                format!(
                    "has {} classes, this matrix {}",
                    other.classes(),
                    self.classes()
                ),
            ));
        }
        for (row, o) in self.counts.iter_mut().zip(&other.counts) {
            for (c, x) in row.iter_mut().zip(o) {
                *c += x;
            }
        }
        Ok(())
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Share of the diagonal (`None` without any pair).
    pub fn accuracy(&self) -> Option<f64> {
        let total = self.total();
        let right: u64 = (0..self.classes()).map(|i| self.counts[i][i]).sum();
        (total > 0).then(|| right as f64 / total as f64)
    }

    /// Precision, recall, F1 and support of every class; 0 where a ratio has no denominator.
    pub fn scores(&self) -> Vec<ClassScores> {
        let k = self.classes();
        (0..k)
            .map(|c| {
                let tp = self.counts[c][c] as f64;
                let predicted: u64 = (0..k).map(|t| self.counts[t][c]).sum();
                let support: u64 = self.counts[c].iter().sum();
                let ratio = |num: f64, den: u64| if den == 0 { 0.0 } else { num / den as f64 };
                let (precision, recall) = (ratio(tp, predicted), ratio(tp, support));
                let f1 = if precision + recall == 0.0 {
                    0.0
                } else {
                    2.0 * precision * recall / (precision + recall)
                };
                ClassScores {
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect()
    }

    /// Unweighted means of precision, recall and F1 over the classes.
    pub fn macro_scores(&self) -> Option<(f64, f64, f64)> {
        let s = self.scores();
        if s.is_empty() {
            return None;
        }
        let n = s.len() as f64;
        Some((
            s.iter().map(|c| c.precision).sum::<f64>() / n,
            s.iter().map(|c| c.recall).sum::<f64>() / n,
            s.iter().map(|c| c.f1).sum::<f64>() / n,
        ))
    }
}

/// Where `name` would sit among the sorted `kept` names, or `None` when it belongs in `other`
/// (the names are full and it comes after all of them).
fn position(kept: &[String], limit: usize, name: &str) -> Result<usize, Option<usize>> {
    match kept.binary_search_by(|c| c.as_str().cmp(name)) {
        Ok(i) => Ok(i),
        Err(at) if limit == 0 || (kept.len() >= limit && at >= kept.len()) => Err(None),
        Err(at) => Err(Some(at)),
    }
}

/// Counts of (row class, column class) pairs by name, e.g. (true class, predicted class) or
/// (primary's class, candidate's class), keeping at most `limit` names (the first in byte
/// order) and counting every pair that involves another name in the `other` row or column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassMatrix {
    limit: usize,
    /// The kept names, sorted.
    classes: Vec<String>,
    /// `(k + 1) × (k + 1)` counts in the order of `classes`; index `k` is `other`.
    counts: Vec<Vec<u64>>,
    /// Pairs counted in `other × other` whose row and column were the same name (so an
    /// accuracy over the whole matrix stays exact).
    other_same: u64,
}

/// A [`ClassMatrix`] for storage: its limit, names, non-zero cells `(row, column, count)`
/// (index `classes.len()` is `other`) and `other_same`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassMatrixParts {
    pub limit: usize,
    pub classes: Vec<String>,
    pub cells: Vec<(usize, usize, u64)>,
    pub other_same: u64,
}

impl Default for ClassMatrix {
    fn default() -> Self {
        ClassMatrix::new(MAX_CLASSES)
    }
}

impl ClassMatrix {
    /// An empty matrix keeping at most `limit` names.
    pub fn new(limit: usize) -> Self {
        ClassMatrix {
            limit,
            classes: Vec::new(),
            counts: vec![vec![0]],
            other_same: 0,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The kept names, sorted; row and column `i` of [`ClassMatrix::counts`] are `classes()[i]`.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// `(k + 1) × (k + 1)` counts; the last row and column are `other`.
    pub fn counts(&self) -> &[Vec<u64>] {
        &self.counts
    }

    /// Pairs in `other × other` whose row and column were the same name.
    pub fn other_same(&self) -> u64 {
        self.other_same
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Pairs whose row and column are the same class (kept or not).
    pub fn same(&self) -> u64 {
        (0..self.classes.len())
            .map(|i| self.counts[i][i])
            .sum::<u64>()
            + self.other_same
    }

    fn index(&self, name: Option<&str>) -> usize {
        name.and_then(|n| self.classes.binary_search_by(|c| c.as_str().cmp(n)).ok())
            .unwrap_or(self.classes.len())
    }

    /// Gives `name` a row and a column if it is among the first `limit` names seen.
    fn admit(&mut self, name: &str) {
        let Err(Some(at)) = position(&self.classes, self.limit, name) else {
            return;
        };
        self.classes.insert(at, name.to_string());
        for row in &mut self.counts {
            row.insert(at, 0);
        }
        self.counts.insert(at, vec![0; self.classes.len() + 1]);
        if self.classes.len() > self.limit {
            self.evict_last();
        }
    }

    /// Folds the last kept name into `other`.
    fn evict_last(&mut self) {
        let k = self.classes.len() - 1;
        self.classes.pop();
        let row = self.counts.remove(k);
        for r in &mut self.counts {
            let v = r.remove(k);
            r[k] += v;
        }
        for (j, v) in row.into_iter().enumerate() {
            if j == k {
                self.other_same += v;
            }
            let j = if j > k { j - 1 } else { j };
            self.counts[k][j] += v;
        }
    }

    /// Counts `n` pairs of (`row`, `column`); `None` is `other`.
    fn add_named(&mut self, row: Option<&str>, column: Option<&str>, n: u64) {
        if n == 0 {
            return;
        }
        row.into_iter().chain(column).for_each(|c| self.admit(c));
        let (r, c) = (self.index(row), self.index(column));
        self.counts[r][c] += n;
        let other = self.classes.len();
        if r == other && c == other && row.is_some() && row == column {
            self.other_same += n;
        }
    }

    /// Counts one pair.
    pub fn add(&mut self, row: &str, column: &str) {
        self.add_named(Some(row), Some(column), 1);
    }

    /// Counts `n` pairs.
    pub fn add_n(&mut self, row: &str, column: &str, n: u64) {
        self.add_named(Some(row), Some(column), n);
    }

    /// Adds another matrix (windows, replicas): keeps the first `limit` names of both, the
    /// smaller of the two limits.
    pub fn merge(&mut self, other: &ClassMatrix) {
        if other.limit < self.limit {
            self.limit = other.limit;
            while self.classes.len() > self.limit {
                self.evict_last();
            }
        }
        let name = |i: usize| other.classes.get(i).map(String::as_str);
        for (i, row) in other.counts.iter().enumerate() {
            for (j, &n) in row.iter().enumerate() {
                self.add_named(name(i), name(j), n);
            }
        }
        self.other_same += other.other_same;
    }

    /// Sums of the rows, in order (the last is `other`).
    pub fn row_sums(&self) -> Vec<u64> {
        self.counts.iter().map(|r| r.iter().sum()).collect()
    }

    /// Sums of the columns, in order (the last is `other`).
    pub fn column_sums(&self) -> Vec<u64> {
        (0..=self.classes.len())
            .map(|j| self.counts.iter().map(|r| r[j]).sum())
            .collect()
    }

    pub fn parts(&self) -> ClassMatrixParts {
        let mut cells = Vec::new();
        for (i, row) in self.counts.iter().enumerate() {
            for (j, &n) in row.iter().enumerate() {
                if n > 0 {
                    cells.push((i, j, n));
                }
            }
        }
        ClassMatrixParts {
            limit: self.limit,
            classes: self.classes.clone(),
            cells,
            other_same: self.other_same,
        }
    }

    /// Rebuilds a matrix from [`ClassMatrix::parts`]; a limit above [`MAX_CLASSES`] is lowered
    /// to it. Unsorted or repeated names and cells outside the matrix are errors.
    pub fn from_parts(parts: ClassMatrixParts) -> Result<Self, StatsError> {
        check_names("classes", &parts.classes, parts.limit)?;
        let k = parts.classes.len();
        let mut m = ClassMatrix::new(parts.limit.min(MAX_CLASSES));
        let name = |i: usize| parts.classes.get(i).map(String::as_str);
        for &(i, j, n) in &parts.cells {
            if i > k || j > k {
                return Err(StatsError::invalid(
                    "cells",
                    format!("cell ({i}, {j}) is outside a matrix of {k} classes and other"),
                ));
            }
            m.add_named(name(i), name(j), n);
        }
        m.other_same += parts.other_same;
        Ok(m)
    }
}

fn check_names(field: &'static str, names: &[String], limit: usize) -> Result<(), StatsError> {
    if names.len() > limit {
        return Err(StatsError::invalid(
            field,
            format!("{} names, more than the limit {limit}", names.len()),
        ));
    }
    if let Some(w) = names.windows(2).find(|w| w[0] >= w[1]) {
        return Err(StatsError::invalid(
            field,
            format!(
                "'{}' before '{}': names must be sorted and distinct",
                w[0], w[1]
            ),
        ));
    }
    Ok(())
}

/// Counts by class name (a distribution of predictions), keeping at most `limit` names (the
/// first in byte order) and counting the others as `other`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassCounts {
    limit: usize,
    classes: Vec<String>,
    /// `k + 1` counts; the last is `other`.
    counts: Vec<u64>,
}

/// [`ClassCounts`] for storage: limit, names and `k + 1` counts (the last is `other`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassCountsParts {
    pub limit: usize,
    pub classes: Vec<String>,
    pub counts: Vec<u64>,
}

impl Default for ClassCounts {
    fn default() -> Self {
        ClassCounts::new(MAX_CLASSES)
    }
}

impl ClassCounts {
    pub fn new(limit: usize) -> Self {
        ClassCounts {
            limit,
            classes: Vec::new(),
            counts: vec![0],
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The kept names, sorted.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// One count per kept name, then `other`.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Count of `name` (0 when it is not kept).
    pub fn get(&self, name: &str) -> u64 {
        self.classes
            .binary_search_by(|c| c.as_str().cmp(name))
            .map_or(0, |i| self.counts[i])
    }

    /// Counted as `other`.
    pub fn other(&self) -> u64 {
        self.counts[self.classes.len()]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn evict_last(&mut self) {
        let k = self.classes.len() - 1;
        self.classes.pop();
        let v = self.counts.remove(k);
        self.counts[k] += v;
    }

    fn add_named(&mut self, name: Option<&str>, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(name) = name {
            if let Err(Some(at)) = position(&self.classes, self.limit, name) {
                self.classes.insert(at, name.to_string());
                self.counts.insert(at, 0);
                if self.classes.len() > self.limit {
                    self.evict_last();
                }
            }
        }
        let i = name
            .and_then(|c| self.classes.binary_search_by(|k| k.as_str().cmp(c)).ok())
            .unwrap_or(self.classes.len());
        self.counts[i] += n;
    }

    pub fn add(&mut self, name: &str) {
        self.add_named(Some(name), 1);
    }

    pub fn add_n(&mut self, name: &str, n: u64) {
        self.add_named(Some(name), n);
    }

    pub fn merge(&mut self, other: &ClassCounts) {
        if other.limit < self.limit {
            self.limit = other.limit;
            while self.classes.len() > self.limit {
                self.evict_last();
            }
        }
        for (i, &n) in other.counts.iter().enumerate() {
            self.add_named(other.classes.get(i).map(String::as_str), n);
        }
    }

    pub fn parts(&self) -> ClassCountsParts {
        ClassCountsParts {
            limit: self.limit,
            classes: self.classes.clone(),
            counts: self.counts.clone(),
        }
    }

    /// Rebuilds counts from [`ClassCounts::parts`] (see [`ClassMatrix::from_parts`]).
    pub fn from_parts(parts: ClassCountsParts) -> Result<Self, StatsError> {
        check_names("classes", &parts.classes, parts.limit)?;
        if parts.counts.len() != parts.classes.len() + 1 {
            return Err(StatsError::invalid(
                "counts",
                format!(
                    "{} counts for {} classes and other",
                    parts.counts.len(),
                    parts.classes.len()
                ),
            ));
        }
        let mut c = ClassCounts::new(parts.limit.min(MAX_CLASSES));
        for (i, &n) in parts.counts.iter().enumerate() {
            c.add_named(parts.classes.get(i).map(String::as_str), n);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_out_of_range_and_size_mismatches_are_errors() {
        assert!(ConfusionMatrix::from_pairs(2, &[0, 2], &[0, 1]).is_err());
        assert!(ConfusionMatrix::from_pairs(2, &[0], &[0, 1]).is_err());
        let mut a = ConfusionMatrix::new(2);
        assert!(a.merge(&ConfusionMatrix::new(3)).is_err());
        assert_eq!(a.accuracy(), None);
    }

    #[test]
    fn names_past_the_limit_are_counted_as_other() {
        let mut m = ClassMatrix::new(2);
        m.add("b", "b");
        m.add("c", "b");
        m.add("c", "c");
        assert_eq!(m.classes(), ["b", "c"]);
        // "a" comes first: "c" moves to other, its diagonal stays a same-class pair.
        m.add("a", "c");
        assert_eq!(m.classes(), ["a", "b"]);
        assert_eq!(m.counts(), [vec![0, 0, 1], vec![0, 1, 0], vec![0, 1, 1]]);
        assert_eq!((m.total(), m.same(), m.other_same()), (4, 2, 1));
        // "d" never gets a row; a d-d pair is same-class in other.
        m.add("d", "d");
        assert_eq!((m.counts()[2][2], m.other_same()), (2, 2));
        assert_eq!(m.row_sums(), [1, 1, 3]);
        assert_eq!(m.column_sums(), [0, 2, 3]);

        let mut c = ClassCounts::new(2);
        ["z", "y", "x", "y", "w"].iter().for_each(|n| c.add(n));
        assert_eq!(c.classes(), ["w", "x"]);
        assert_eq!((c.counts(), c.other(), c.get("y")), (&[1, 1, 3][..], 3, 0));
    }

    #[test]
    fn parts_round_trip_and_bad_parts_are_errors() {
        let mut m = ClassMatrix::new(3);
        for (t, p) in [("a", "b"), ("b", "b"), ("e", "e"), ("d", "a"), ("c", "c")] {
            m.add(t, p);
        }
        assert_eq!(ClassMatrix::from_parts(m.parts()).unwrap(), m);
        let mut bad = m.parts();
        bad.classes.swap(0, 1);
        assert!(ClassMatrix::from_parts(bad).is_err());
        let mut bad = m.parts();
        bad.cells.push((9, 0, 1));
        assert!(ClassMatrix::from_parts(bad).is_err());
        let mut c = ClassCounts::new(3);
        ["q", "p", "q"].iter().for_each(|n| c.add(n));
        assert_eq!(ClassCounts::from_parts(c.parts()).unwrap(), c);
        let mut bad = c.parts();
        bad.counts.pop();
        assert!(ClassCounts::from_parts(bad).is_err());
        // A stored limit above the bound is lowered to it.
        let mut big = c.parts();
        big.limit = 10_000;
        assert_eq!(ClassCounts::from_parts(big).unwrap().limit(), MAX_CLASSES);
    }

    #[test]
    fn merging_adds_counts() {
        let mut a = ConfusionMatrix::from_pairs(2, &[0, 1], &[0, 0]).unwrap();
        let b = ConfusionMatrix::from_pairs(2, &[1, 1], &[1, 0]).unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a.counts, vec![vec![1, 0], vec![2, 1]]);
    }

    use proptest::prelude::*;

    /// Pairs of names drawn from few letters, so that a small limit evicts.
    fn pairs() -> impl Strategy<Value = Vec<(u8, u8)>> {
        proptest::collection::vec((0u8..12, 0u8..12), 0..200)
    }

    fn name(i: u8) -> String {
        format!("c{i:02}")
    }

    proptest! {
        #[test]
        fn merge_of_any_split_equals_one_pass(
            pairs in pairs(),
            cuts in proptest::collection::vec(0usize..200, 0..5),
            limit in 0usize..8,
        ) {
            let fill = |ps: &[(u8, u8)]| {
                let (mut m, mut c) = (ClassMatrix::new(limit), ClassCounts::new(limit));
                for &(t, p) in ps {
                    m.add(&name(t), &name(p));
                    c.add(&name(p));
                }
                (m, c)
            };
            let (whole, whole_counts) = fill(&pairs);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(pairs.len())).collect();
            cuts.sort_unstable();
            let mut parts = Vec::new();
            let mut start = 0;
            for c in cuts.into_iter().chain([pairs.len()]) {
                parts.push(fill(&pairs[start..c]));
                start = c;
            }
            for order in [false, true] {
                let (mut m, mut c) = (ClassMatrix::new(limit), ClassCounts::new(limit));
                let mut ps: Vec<&(ClassMatrix, ClassCounts)> = parts.iter().collect();
                if order {
                    ps.reverse();
                }
                for (pm, pc) in ps {
                    m.merge(pm);
                    c.merge(pc);
                }
                prop_assert_eq!(&m, &whole);
                prop_assert_eq!(&c, &whole_counts);
            }
            // The kept names are the first `limit` seen; nothing is lost; same-class pairs
            // are counted exactly.
            let mut seen: Vec<String> = pairs.iter().flat_map(|&(t, p)| [name(t), name(p)]).collect();
            seen.sort();
            seen.dedup();
            seen.truncate(limit);
            prop_assert_eq!(whole.classes(), &seen[..]);
            prop_assert_eq!(whole.total(), pairs.len() as u64);
            prop_assert_eq!(whole.same(), pairs.iter().filter(|(t, p)| t == p).count() as u64);
            prop_assert_eq!(whole_counts.total(), pairs.len() as u64);
            prop_assert_eq!(ClassMatrix::from_parts(whole.parts()).unwrap(), whole);
        }
    }
}
