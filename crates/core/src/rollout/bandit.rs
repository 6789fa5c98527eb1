//! The bandit (`kind: bandit`): an [`AbSpec`] with [`BanditSettings`], run by the A/B/n machine
//! (`abn`) for its guardrails and sample-ratio check, whose weights Thompson sampling moves
//! towards the arms likely to be best every `reweight_every_ms`: each arm keeps `min_share`,
//! no weight moves more than `max_step` at once, and only the changed mass of buckets moves
//! (`Strategy::reweighted`), so a key changes arm only when its arm gave up its bucket. Every
//! re-weighting is an audit event with the probabilities, the weights, the seed of its Monte
//! Carlo and the fraction of keys that moved. The bandit concludes when one arm is best with
//! probability `stop_at_p_best` (after `min_per_arm` samples per running arm, if written).

use super::ab::{AbSpec, BanditSettings};
use super::abn::{bandit_step, seed_of};
use super::{d, Observations, Out, Recommendation, RolloutState};
use crate::routing::BUCKETS;

pub(super) fn tick_bandit(
    a: &AbSpec,
    state: &mut RolloutState,
    obs: &Observations,
    out: &mut Out<'_>,
    active: &[usize],
) {
    let Some(settings) = a.bandit.as_ref() else {
        return;
    };
    let now = out.now;
    let due = state
        .last_reweight_ms
        .is_none_or(|t| now - t >= settings.reweight_every_ms);
    let indices: Vec<usize> = std::iter::once(0).chain(active.iter().copied()).collect();
    let samples = |i: usize| {
        super::abn::metric_value(&obs.total_of(&state.arms[i].version), &a.metric).samples()
    };
    let fewest = indices.iter().map(|&i| samples(i)).min().unwrap_or(0);
    if fewest < settings.min_samples {
        state.reason = Some(format!(
            "{fewest} of {} samples in the smallest arm before the first re-weighting",
            settings.min_samples
        ));
        return;
    }
    if !due {
        return;
    }
    reweight(a, settings, state, obs, out, active, fewest);
}

fn reweight(
    a: &AbSpec,
    settings: &BanditSettings,
    state: &mut RolloutState,
    obs: &Observations,
    out: &mut Out<'_>,
    active: &[usize],
    fewest: u64,
) {
    let seed = seed_of(&out.spec.name, out.now);
    let Some((p_best, weights)) = bandit_step(a, settings, obs, state, active, seed) else {
        return;
    };
    state.last_reweight_ms = Some(out.now);
    state.p_best = Some(p_best.clone());
    let mut details = vec![d("seed", seed.to_string())];
    for (i, arm) in state.arms.iter().enumerate() {
        details.push(d(&format!("{}_p_best", arm.variant), p_best[i]));
        details.push(d(
            &format!("{}_weight_percent", arm.variant),
            f64::from(weights[i]) / 100.0,
        ));
    }
    if let Some(next) = state.strategy.reweighted(&weights) {
        let moved = state.strategy.moved_buckets(&next);
        details.push(d("moved_fraction", f64::from(moved) / f64::from(BUCKETS)));
        if moved > 0 {
            out.set(state, next);
        }
        out.event(
            "reweighted",
            format!(
                "Thompson sampling re-weighted the arms; {:.2}% of keys moved",
                f64::from(moved) / 100.0
            ),
            details.clone(),
        );
    }
    // Conclude when one arm is best with the required probability.
    let (best, p) = p_best
        .iter()
        .enumerate()
        .max_by(|x, y| x.1.total_cmp(y.1))
        .map_or((0, 0.0), |(i, p)| (i, *p));
    let enough = a.min_per_arm.is_none_or(|n| fewest >= n);
    if p >= settings.stop_at_p_best && enough {
        let version = state.arms[best].version.clone();
        let verdict = format!("{version} is best with probability {p:.3}");
        state.recommendation = Some(if best == 0 {
            Recommendation::Reject
        } else {
            Recommendation::Promote
        });
        state.winner = Some(version.clone());
        state.reason = Some(verdict.clone());
        out.event(
            "ab_concluded",
            format!("bandit concluded: {verdict}"),
            details.clone(),
        );
        super::promote_or_await(a.auto_promote, state, out, &version, &verdict, details);
    }
}
