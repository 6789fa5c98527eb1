//! Classification detail: confusion matrix and per-class precision, recall, F1 and support.
//!
//! Reference: scikit-learn `confusion_matrix(y_true, y_pred, labels=range(k))` (rows are the
//! true class, columns the predicted one) and `precision_recall_fscore_support(…,
//! labels=range(k), zero_division=0)`; macro averages are the unweighted means over classes,
//! as `average="macro"`.

use serde::{Deserialize, Serialize};

use crate::StatsError;

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
    fn merging_adds_counts() {
        let mut a = ConfusionMatrix::from_pairs(2, &[0, 1], &[0, 0]).unwrap();
        let b = ConfusionMatrix::from_pairs(2, &[1, 1], &[1, 0]).unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a.counts, vec![vec![1, 0], vec![2, 1]]);
    }
}
