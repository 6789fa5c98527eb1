//! Snapshots of each rollout's statistics over time, for the dashboard's charts: at most one
//! every [`HISTORY_EVERY`] of real time, the last [`HISTORY_POINTS`] kept.

use std::collections::VecDeque;
use std::time::Instant;

use switchyard_core::rollout::{self, Observations, RolloutKind, RolloutSpec, RolloutState};

use switchyard_core::record::Tolerance;

use crate::api::{AbPoint, ArmPoint, HistoryPoint, PairPoint, VersionStats};

/// Snapshots kept per rollout, and how often one is taken.
pub(super) const HISTORY_POINTS: usize = 600;
pub(super) const HISTORY_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The snapshots of one rollout.
#[derive(Debug, Default)]
pub(super) struct History {
    points: VecDeque<HistoryPoint>,
    last: Option<Instant>,
}

impl History {
    /// Records a snapshot for the charts, at most every [`HISTORY_EVERY`] of real time.
    pub(super) fn sample(
        &mut self,
        spec: &RolloutSpec,
        state: &RolloutState,
        obs: &Observations,
        now: i64,
    ) {
        let h = self;
        if h.last.is_some_and(|t: Instant| t.elapsed() < HISTORY_EVERY) {
            return;
        }
        h.last = Some(Instant::now());
        let (_, candidate) = spec.versions();
        let weight = match &state.strategy {
            switchyard_core::Strategy::Split { arms, .. } => arms
                .iter()
                .find(|a| a.version == candidate)
                .map_or(0, |a| a.weight),
            switchyard_core::Strategy::Single { version } if version == candidate => {
                switchyard_core::routing::BUCKETS
            }
            switchyard_core::Strategy::BlueGreen {
                active: switchyard_core::routing::Colour::Green,
                ..
            } => switchyard_core::routing::BUCKETS,
            _ => 0,
        };
        let ab = match &spec.kind {
            RolloutKind::Ab(a) if rollout::is_extended(a) => Some(abn_point(a, state, obs)),
            RolloutKind::Ab(a) => {
                let r = rollout::ab_report(a, obs);
                Some(AbPoint {
                    control_rate: r.control.rate(),
                    treatment_rate: r.treatment.rate(),
                    control_trials: r.control.trials,
                    treatment_trials: r.treatment.trials,
                    p_value: r.test.map(|t| t.p_value),
                    prob_b_beats_a: r.bayes.map(|b| b.prob_b_beats_a),
                    srm_p: r.srm.as_ref().map(|s| s.p_value),
                    observed_split: obs.by_variant.clone(),
                    arms: Vec::new(),
                })
            }
            _ => None,
        };
        let tolerance = match &spec.kind {
            RolloutKind::Shadow(s) => s.rules.agreement_tolerance,
            _ => Tolerance::DEFAULT,
        };
        let point = HistoryPoint {
            ts_ms: now,
            phase: state.phase,
            step: state.step + 1,
            candidate_percent: f64::from(weight) / 100.0,
            versions: obs
                .total
                .iter()
                .map(|(v, s)| (v.clone(), VersionStats::from(s)))
                .collect(),
            pair: obs.pair.as_ref().map(|pair| {
                let agreement = pair.agreement_within(&tolerance);
                PairPoint {
                    agreement: agreement.rate,
                    compared: agreement.compared,
                    labelled: pair.labelled(),
                    b: pair.primary_only,
                    c: pair.shadow_only,
                    mcnemar_p: switchyard_stats::mcnemar::mcnemar(
                        pair.primary_only,
                        pair.shadow_only,
                    )
                    .p_value,
                }
            }),
            ab,
        };
        h.points.push_back(point);
        while h.points.len() > HISTORY_POINTS {
            h.points.pop_front();
        }
    }

    /// Oldest first.
    pub(super) fn points(&self) -> Vec<HistoryPoint> {
        self.points.iter().cloned().collect()
    }
}

/// An A/B/n test or bandit in a history point: every arm's weight and metric, and the first
/// variant's test against the control in the two-arm fields.
fn abn_point(a: &rollout::AbSpec, state: &RolloutState, obs: &Observations) -> AbPoint {
    let r = rollout::abn_report(a, state, obs);
    let arms: Vec<ArmPoint> = r
        .arms
        .iter()
        .enumerate()
        .map(|(i, arm)| ArmPoint {
            variant: arm.variant.clone(),
            version: arm.version.clone(),
            weight_percent: f64::from(arm.weight) / 100.0,
            samples: arm.metric.samples(),
            value: arm.metric.value().filter(|v| v.is_finite()),
            p_best: r.p_best.as_ref().and_then(|p| p.get(i).copied()),
            decision: arm.decision,
        })
        .collect();
    let (control, treatment) = (r.arms.first(), r.arms.get(1));
    AbPoint {
        control_rate: control.and_then(|c| c.metric.value()),
        treatment_rate: treatment.and_then(|t| t.metric.value()),
        control_trials: control.map_or(0, |c| c.metric.samples()),
        treatment_trials: treatment.map_or(0, |t| t.metric.samples()),
        p_value: treatment.and_then(|t| t.p_value),
        prob_b_beats_a: None,
        srm_p: r.srm.as_ref().map(|s| s.p_value),
        observed_split: obs.by_variant.clone(),
        arms,
    }
}
