//! Incrementally maintained statistics per model version, role and routing epoch, and per
//! serving/shadow pair.
//!
//! Built from the mergeable summaries of `switchyard-stats`, so the controller reads them
//! without rescanning the prediction log, and two `Aggregates` (two windows, two replicas)
//! merge exactly.

use std::collections::BTreeMap;

use serde::Serialize;
use switchyard_stats::{LatencyHistogram, Moments, Proportion};

use crate::record::{score, PredictionRecord, Role, Scored, Truth};

/// Tolerance under which two regression outputs count as agreeing.
pub const VALUE_AGREEMENT_TOLERANCE: f64 = 1e-6;

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
    /// Business metrics by name.
    pub metrics: BTreeMap<String, Moments>,
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
        for (name, m) in &other.metrics {
            self.metrics.entry(name.clone()).or_default().merge(m);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PairKey {
    pub model: String,
    pub epoch: u64,
    pub primary: String,
    pub shadow: String,
}

/// Comparison of a serving version and its shadow on the same requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PairStats {
    /// Instances where both answered: successes are agreements.
    pub agreement: Proportion,
    /// Labelled instances by (primary correct, shadow correct).
    pub both_correct: u64,
    /// McNemar's b: the primary right and the shadow wrong.
    pub primary_only: u64,
    /// McNemar's c: the primary wrong and the shadow right.
    pub shadow_only: u64,
    pub both_wrong: u64,
    /// `|error of primary| − |error of shadow|` per labelled regression instance.
    pub error_diff: Moments,
    /// Shadow calls that failed.
    pub shadow_errors: u64,
    pub shadow_calls: u64,
}

impl PairStats {
    pub fn labelled(&self) -> u64 {
        self.both_correct + self.primary_only + self.shadow_only + self.both_wrong
    }

    pub fn merge(&mut self, other: &PairStats) {
        self.agreement.merge(&other.agreement);
        self.both_correct += other.both_correct;
        self.primary_only += other.primary_only;
        self.shadow_only += other.shadow_only;
        self.both_wrong += other.both_wrong;
        self.error_diff.merge(&other.error_diff);
        self.shadow_errors += other.shadow_errors;
        self.shadow_calls += other.shadow_calls;
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
        let stats = self.series.entry(SeriesKey::of(rec)).or_default();
        stats.requests += 1;
        stats.errors += u64::from(rec.outcome.counts_against_model());
        stats.latency.record(rec.latency_us);
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
                if let Some(matches) = pair
                    .output
                    .agreement(&rec.output, VALUE_AGREEMENT_TOLERANCE)
                {
                    matches.into_iter().for_each(|m| p.agreement.record(m));
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
            let stats = self.series.entry(SeriesKey::of(rec)).or_default();
            if rec.role == Role::Serving {
                for (name, value) in metrics {
                    stats.metrics.entry(name.clone()).or_default().push(*value);
                }
            }
            match score(&rec.output, truth) {
                Some(Scored::Correct(c)) => c.into_iter().for_each(|ok| stats.correct.record(ok)),
                Some(Scored::Errors(e)) => e.into_iter().for_each(|err| {
                    stats.abs_error.push(err);
                    stats.sq_error.push(err * err);
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
                        match (pa, sb) {
                            (true, true) => p.both_correct += 1,
                            (true, false) => p.primary_only += 1,
                            (false, true) => p.shadow_only += 1,
                            (false, false) => p.both_wrong += 1,
                        }
                    }
                }
                (Some(Scored::Errors(a)), Some(Scored::Errors(b))) => {
                    a.iter()
                        .zip(&b)
                        .for_each(|(ea, eb)| p.error_diff.push(ea - eb));
                }
                _ => {}
            }
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
        }
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
    }
}
