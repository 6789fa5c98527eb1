//! The rollout state machines, driven with synthetic observations and explicit time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use proptest::strategy::Strategy as _;
use switchyard_core::aggregate::{PairStats, VariantStats};
use switchyard_core::audit::{Detail, Severity};
use switchyard_core::rollout::{
    command, evaluate_gate, start, tick, AbMetric, AbSpec, Action, BlueGreenSpec, CanarySpec,
    Command, GatePolicy, LiveAlerts, Observations, Phase, Recommendation, RolloutKind, RolloutSpec,
    RolloutState, ShadowRules, ShadowSpec, Step, Underestimate, Validation, Verdict,
};
use switchyard_core::routing::{Strategy, BUCKETS};
use switchyard_core::{Aggregates, Outcome, PairRef, Prediction, PredictionRecord, Role, Truth};
use switchyard_stats::Proportion;

fn steps() -> Vec<Step> {
    [500, 2500, 5000, 10_000]
        .into_iter()
        .map(|weight| Step {
            weight,
            min_requests: 100,
            min_duration_ms: 60_000,
            require_approval: false,
            approvals: 1,
            target: None,
        })
        .collect()
}

fn canary_spec() -> RolloutSpec {
    RolloutSpec {
        name: "yield-v2".into(),
        model: "yield".into(),
        kind: RolloutKind::Canary(CanarySpec {
            stable: "v1".into(),
            candidate: "v2".into(),
            steps: steps(),
            gate: GatePolicy::default(),
            step_deadline_ms: Some(600_000),
            rollback_on_deadline: false,
            approvals: 1,
            group: vec![],
        }),
    }
}

/// Statistics of `requests` calls with the given error count, latency and accuracy.
fn stats(requests: u64, errors: u64, latency_us: u64, labelled: u64, correct: u64) -> VariantStats {
    let mut s = VariantStats {
        requests,
        errors,
        ..Default::default()
    };
    s.latency.record_n(latency_us, requests);
    s.correct = Proportion {
        successes: correct,
        trials: labelled,
    };
    s
}

fn obs(canary: VariantStats, stable: VariantStats) -> Observations {
    let mut o = Observations::default();
    o.step.insert("v2".into(), canary.clone());
    o.total.insert("v2".into(), canary);
    o.step.insert("v1".into(), stable.clone());
    o.total.insert("v1".into(), stable);
    o
}

fn strategies(actions: &[Action]) -> Vec<Strategy> {
    actions
        .iter()
        .filter_map(|a| {
            if let Action::SetStrategy(s) = a {
                Some(s.clone())
            } else {
                None
            }
        })
        .collect()
}

fn canary_weight(s: &Strategy) -> u32 {
    match s {
        Strategy::Split { arms, .. } => arms
            .iter()
            .find(|a| a.variant == "canary")
            .map_or(0, |a| a.weight),
        Strategy::Single { version } if version == "v2" => BUCKETS,
        _ => 0,
    }
}

fn alerts(actions: &[Action]) -> Vec<(Severity, String)> {
    actions
        .iter()
        .filter_map(|a| {
            if let Action::Alert { severity, kind, .. } = a {
                Some((*severity, kind.clone()))
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn a_good_candidate_walks_every_step_and_is_promoted() {
    let spec = canary_spec();
    let (mut state, actions) = start(&spec, 0, "cli");
    assert_eq!(canary_weight(&strategies(&actions)[0]), 500);
    let good = obs(
        stats(200, 1, 10_000, 100, 95),
        stats(2_000, 10, 10_000, 500, 470),
    );
    let mut now = 0;
    let mut weights = vec![];
    for _ in 0..10 {
        now += 61_000;
        let (next, actions) = tick(&spec, &state, &good, now);
        weights.extend(strategies(&actions).iter().map(canary_weight));
        state = next;
        if state.phase.is_terminal() {
            break;
        }
    }
    assert_eq!(state.phase, Phase::Completed);
    assert_eq!(weights, vec![2500, 5000, 10_000, 10_000]);
    assert_eq!(
        state.strategy,
        Strategy::Single {
            version: "v2".into()
        }
    );
}

#[test]
fn no_step_advances_before_its_minimum_requests_and_duration() {
    let spec = canary_spec();
    let (state, _) = start(&spec, 0, "cli");
    // Enough time, too few requests.
    let (s, a) = tick(
        &spec,
        &state,
        &obs(
            stats(99, 0, 10_000, 99, 99),
            stats(2_000, 0, 10_000, 500, 470),
        ),
        120_000,
    );
    assert_eq!((s.step, s.phase), (0, Phase::Running));
    assert!(strategies(&a).is_empty());
    // Enough requests, too little time.
    let (s, a) = tick(
        &spec,
        &state,
        &obs(
            stats(500, 0, 10_000, 99, 99),
            stats(2_000, 0, 10_000, 500, 470),
        ),
        59_999,
    );
    assert_eq!(s.step, 0);
    assert!(strategies(&a).is_empty());
}

#[test]
fn no_gate_passes_without_data() {
    let spec = canary_spec();
    let (state, _) = start(&spec, 0, "cli");
    let (s, a) = tick(&spec, &state, &Observations::default(), 10_000_000);
    assert_eq!((s.step, s.phase), (0, Phase::Running));
    assert!(strategies(&a).is_empty());
    // Traffic but no labels: the accuracy check holds the gate.
    let (s, _) = tick(
        &spec,
        &state,
        &obs(stats(500, 0, 10_000, 0, 0), stats(5_000, 0, 10_000, 0, 0)),
        10_000_000,
    );
    assert_eq!(s.step, 0);
    assert!(s.reason.unwrap().contains("waiting for labels"));
}

/// `pass`/`fail` predictions in these numbers.
fn predicting(mut s: VariantStats, pass: u64, fail: u64) -> VariantStats {
    s.predicted.add_n("pass", pass);
    s.predicted.add_n("fail", fail);
    s
}

#[test]
fn a_canary_whose_predictions_moved_is_rolled_back_only_when_max_psi_is_set() {
    // Stable says "fail" for 10% of the dies, the canary for 40%: PSI 0.538, as accurate.
    let moved = obs(
        predicting(stats(200, 0, 10_000, 100, 95), 120, 80),
        predicting(stats(2_000, 0, 10_000, 500, 475), 1_800, 200),
    );
    let (canary, stable) = (&moved.step["v2"], &moved.total["v1"]);
    let Verdict::Pass(details) = evaluate_gate(&GatePolicy::default(), canary, stable) else {
        panic!("off by default")
    };
    let psi = details
        .iter()
        .find(|(k, _)| k == "psi")
        .map(|(_, v)| v.clone());
    // PSI = (0.4 − 0.1) ln 4 + (0.6 − 0.9) ln(2/3).
    let want = 0.3 * 4f64.ln() - 0.3 * (2.0f64 / 3.0).ln();
    assert!(
        matches!(psi, Some(Detail::Num(p)) if (p - want).abs() < 1e-12),
        "{psi:?}"
    );
    let gate = GatePolicy {
        max_psi: Some(0.25),
        ..Default::default()
    };
    let Verdict::Fail {
        reason, severity, ..
    } = evaluate_gate(&gate, canary, stable)
    else {
        panic!("PSI {want} above 0.25")
    };
    assert!(
        reason.contains("PSI 0.538 above 0.25 over 2 bins"),
        "{reason}"
    );
    assert_eq!(severity, Severity::P1);
    // The state machine rolls back on it.
    let mut spec = canary_spec();
    if let RolloutKind::Canary(c) = &mut spec.kind {
        c.gate = gate.clone();
    }
    let (state, _) = start(&spec, 0, "cli");
    let (s, _) = tick(&spec, &state, &moved, 61_000);
    assert_eq!(s.phase, Phase::RolledBack, "{:?}", s.reason);
    // The same prediction mix passes.
    let same = obs(
        predicting(stats(200, 0, 10_000, 100, 95), 180, 20),
        predicting(stats(2_000, 0, 10_000, 500, 475), 1_800, 200),
    );
    assert!(matches!(
        evaluate_gate(&gate, &same.step["v2"], &same.total["v1"]),
        Verdict::Pass(_)
    ));
}

#[test]
fn a_step_held_past_its_deadline_alerts_once() {
    let spec = canary_spec();
    let (state, _) = start(&spec, 0, "cli");
    let (s, a) = tick(&spec, &state, &Observations::default(), 700_000);
    assert_eq!(alerts(&a), vec![(Severity::P2, "stuck_step".to_string())]);
    let (_, a) = tick(&spec, &s, &Observations::default(), 800_000);
    assert!(alerts(&a).is_empty());
}

#[test]
fn bad_candidates_are_rolled_back_at_the_first_gate() {
    let stable = stats(2_000, 20, 10_000, 500, 460); // 92% accurate, 1% errors, 10 ms
    let cases = [
        (
            "10 points less accurate",
            stats(200, 2, 10_000, 100, 82),
            Severity::P0,
        ),
        (
            "doubled latency",
            stats(200, 2, 20_000, 100, 92),
            Severity::P1,
        ),
        ("3x errors", stats(200, 6, 10_000, 100, 92), Severity::P0),
    ];
    for (what, canary, severity) in cases {
        let spec = canary_spec();
        let (state, _) = start(&spec, 0, "cli");
        let (s, a) = tick(&spec, &state, &obs(canary, stable.clone()), 61_000);
        assert_eq!(s.phase, Phase::RolledBack, "{what}");
        assert_eq!(
            strategies(&a),
            vec![Strategy::Single {
                version: "v1".into()
            }],
            "{what}"
        );
        assert_eq!(
            alerts(&a),
            vec![(severity, "rollback".to_string())],
            "{what}"
        );
        assert!(a.iter().any(|x| matches!(x, Action::Event(e) if e.kind == "gate_failed" && !e.details.is_empty())), "{what}");
    }
}

#[test]
fn approval_holds_a_step_until_approved() {
    let mut spec = canary_spec();
    if let RolloutKind::Canary(c) = &mut spec.kind {
        c.steps[1].require_approval = true;
    }
    let (state, _) = start(&spec, 0, "cli");
    let good = obs(
        stats(200, 0, 10_000, 100, 95),
        stats(2_000, 0, 10_000, 500, 470),
    );
    let (s, a) = tick(&spec, &state, &good, 61_000);
    assert_eq!(s.phase, Phase::AwaitingApproval);
    assert!(strategies(&a).is_empty(), "nothing changes before approval");
    let (s2, _) = tick(&spec, &s, &good, 200_000);
    assert_eq!(s2.phase, Phase::AwaitingApproval);
    let (s3, a) = command(&spec, &s2, Command::Approve, "alice", 210_000).unwrap();
    assert_eq!((s3.phase, s3.step), (Phase::Running, 1));
    assert_eq!(canary_weight(&strategies(&a)[0]), 2500);
    assert!(command(&spec, &s3, Command::Approve, "alice", 210_001).is_err());
}

fn events(actions: &[Action]) -> Vec<(String, String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(e) => Some((e.kind.clone(), e.actor.clone(), e.message.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_step_needing_two_approvers_advances_only_on_the_second_distinct_name() {
    let mut spec = canary_spec();
    if let RolloutKind::Canary(c) = &mut spec.kind {
        c.steps[1].require_approval = true;
        c.steps[1].approvals = 2;
    }
    let (state, _) = start(&spec, 0, "cli");
    let good = obs(
        stats(200, 0, 10_000, 100, 95),
        stats(2_000, 0, 10_000, 500, 470),
    );
    let (waiting, _) = tick(&spec, &state, &good, 61_000);
    assert_eq!(waiting.phase, Phase::AwaitingApproval);
    assert_eq!(spec.approvals_needed(&waiting), 2);

    // The first approval is recorded and changes nothing else.
    let (one, a) = command(&spec, &waiting, Command::Approve, "alice", 62_000).unwrap();
    assert_eq!((one.phase, one.step), (Phase::AwaitingApproval, 0));
    assert_eq!(one.approved_by, vec!["alice".to_string()]);
    assert!(strategies(&a).is_empty());
    let ev = events(&a);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(
        (ev[0].0.as_str(), ev[0].1.as_str()),
        ("approval_recorded", "alice")
    );
    assert!(ev[0].2.contains("1 of 2"), "{ev:?}");

    // The same name again is not a second approver; the audit trail says so.
    let (again, a) = command(&spec, &one, Command::Approve, "alice", 63_000).unwrap();
    assert_eq!((again.phase, again.step), (Phase::AwaitingApproval, 0));
    assert_eq!(again.approved_by, vec!["alice".to_string()]);
    assert!(strategies(&a).is_empty());
    let ev = events(&a);
    assert_eq!(ev[0].0, "approval_repeated", "{ev:?}");
    assert!(ev[0].2.contains("not counted twice"), "{ev:?}");

    // A tick while waiting keeps the approvals.
    let (still, _) = tick(&spec, &again, &good, 64_000);
    assert_eq!(still.approved_by, vec!["alice".to_string()]);

    // The second distinct name advances the step, naming both.
    let (moved, a) = command(&spec, &still, Command::Approve, "bob", 65_000).unwrap();
    assert_eq!((moved.phase, moved.step), (Phase::Running, 1));
    assert!(moved.approved_by.is_empty());
    assert_eq!(canary_weight(&strategies(&a)[0]), 2500);
    let ev = events(&a);
    assert_eq!(ev[0].0, "approved");
    assert_eq!(ev[0].1, "bob");
    assert_eq!(ev[0].2, "approved by alice and bob");
    let approvers = a.iter().find_map(|x| match x {
        Action::Event(e) if e.kind == "approved" => e
            .details
            .iter()
            .find(|(k, _)| k == "approvers")
            .map(|(_, v)| v.clone()),
        _ => None,
    });
    assert_eq!(approvers, Some(Detail::Text("alice, bob".into())));
}

#[test]
fn a_manual_promotion_needs_as_many_approvers_as_the_spec_asks_for() {
    let mut spec = canary_spec();
    if let RolloutKind::Canary(c) = &mut spec.kind {
        c.approvals = 2;
    }
    assert_eq!(spec.promote_approvals(), 2);
    let (state, _) = start(&spec, 0, "cli");
    let (one, a) = command(&spec, &state, Command::Promote, "carol", 1).unwrap();
    assert_eq!(one.phase, Phase::Running);
    assert!(strategies(&a).is_empty());
    assert_eq!(one.promote_requested_by, vec!["carol".to_string()]);
    let (same, _) = command(&spec, &one, Command::Promote, "carol", 2).unwrap();
    assert_eq!(same.phase, Phase::Running);
    let (done, a) = command(&spec, &same, Command::Promote, "dave", 3).unwrap();
    assert_eq!(done.phase, Phase::Completed);
    assert_eq!(
        strategies(&a),
        vec![Strategy::Single {
            version: "v2".into()
        }]
    );
    let ev = events(&a);
    assert_eq!(ev[0].0, "promotion_approved");
    assert!(ev[0].2.contains("carol and dave"), "{ev:?}");

    // A step needing three makes a manual promotion need three too; one approver is the
    // default, and promotes at once.
    if let RolloutKind::Canary(c) = &mut spec.kind {
        c.approvals = 1;
        c.steps[2].require_approval = true;
        c.steps[2].approvals = 3;
    }
    assert_eq!(spec.promote_approvals(), 3);
    let plain = canary_spec();
    assert_eq!(plain.promote_approvals(), 1);
    let (state, _) = start(&plain, 0, "cli");
    let (done, _) = command(&plain, &state, Command::Promote, "carol", 1).unwrap();
    assert_eq!(done.phase, Phase::Completed);
}

#[test]
fn pause_freezes_and_resume_continues() {
    let spec = canary_spec();
    let (state, _) = start(&spec, 0, "cli");
    let (paused, _) = command(&spec, &state, Command::Pause, "bob", 1).unwrap();
    let good = obs(
        stats(200, 0, 10_000, 100, 95),
        stats(2_000, 0, 10_000, 500, 470),
    );
    let (still, a) = tick(&spec, &paused, &good, 100_000);
    assert_eq!((still.phase, still.step), (Phase::Paused, 0));
    assert!(a.is_empty());
    let (resumed, _) = command(&spec, &still, Command::Resume, "bob", 100_001).unwrap();
    let (moved, _) = tick(&spec, &resumed, &good, 100_002);
    assert_eq!(moved.step, 1);
}

fn shadow_spec() -> RolloutSpec {
    RolloutSpec {
        name: "yield-shadow".into(),
        model: "yield".into(),
        kind: RolloutKind::Shadow(ShadowSpec {
            primary: "v1".into(),
            candidate: "v2".into(),
            sample: BUCKETS,
            min_labelled: 200,
            min_duration_ms: 1_000,
            alpha: 0.05,
            max_error_rate: 0.05,
            rules: ShadowRules::default(),
            then_canary: None,
            chain_requires_approval: false,
            approvals: 1,
            live_alerts: LiveAlerts::default(),
        }),
    }
}

fn pair(both: u64, b: u64, c: u64, neither: u64) -> Observations {
    let mut p = PairStats {
        both_correct: both,
        primary_only: b,
        shadow_only: c,
        both_wrong: neither,
        ..Default::default()
    };
    let n = both + b + c + neither;
    p.agreement = Proportion {
        successes: both + neither,
        trials: n,
    };
    p.shadow_calls = n;
    Observations {
        pair: Some(p),
        shadow: Some(VariantStats::default()),
        ..Default::default()
    }
}

#[test]
fn shadow_recommendations_follow_the_seed_thresholds() {
    let spec = shadow_spec();
    let (state, _) = start(&spec, 0, "cli");
    // Not enough labelled pairs yet.
    let (s, _) = tick(&spec, &state, &pair(100, 5, 10, 5), 5_000);
    assert_eq!(s.phase, Phase::Running);
    for (o, expected) in [
        // 82% → 88%: +7.3% relative, McNemar p tiny.
        (pair(800, 20, 80, 100), Recommendation::Promote),
        // 86% → 84%: −2.3% relative.
        (pair(800, 60, 40, 100), Recommendation::Reject),
        // 90.2% → 90.6%: +0.4% relative with agreement 99.2% above 95%.
        (pair(900, 2, 6, 92), Recommendation::Promote),
        // 90.6% → 90.2%: −0.4% relative with agreement 99.2% above 98%.
        (pair(900, 6, 2, 92), Recommendation::Neutral),
        // 83% → 83.5%: +0.6% relative, but agreement 93% is neither 95% nor 98%.
        (pair(800, 30, 35, 100), Recommendation::Investigate),
        // 40% → 45%: +12.5% relative, McNemar p = 0.055, agreement 35%.
        (pair(100, 300, 350, 250), Recommendation::Investigate),
    ] {
        let (s, _) = tick(&spec, &state, &o, 5_000);
        assert_eq!(
            (s.phase, s.recommendation),
            (Phase::Completed, Some(expected)),
            "{o:?}"
        );
    }
}

/// Regression shadow observations: `n` labelled requests where v1 is within ±6 of the truth
/// and v2 within ±2.
fn regression_obs(n: usize) -> Observations {
    let wiggle = |i: usize, scale: f64| ((i as f64 * 12.9898).sin() * 43_758.545_3).fract() * scale;
    let mut agg = Aggregates::default();
    for i in 0..n {
        let t = 120.0 + wiggle(i, 25.0);
        let (p, s) = (t + wiggle(i + 1_000, 6.0), t + wiggle(i + 2_000, 2.0));
        let rec = |role, version: &str, v: f64, pair: Option<f64>| PredictionRecord {
            request_id: format!("r{i}"),
            ts_ms: 0,
            model: "yield".into(),
            epoch: 1,
            variant: "x".into(),
            role,
            version: version.into(),
            key_hash: None,
            outcome: Outcome::Ok,
            status: 200,
            latency_us: 1_000,
            output: Prediction::Values(vec![v]),
            input: None,
            pair: pair.map(|p| PairRef {
                version: "v1".into(),
                output: Prediction::Values(vec![p]),
            }),
            segments: Vec::new(),
        };
        let serving = rec(Role::Serving, "v1", p, None);
        let shadow = rec(Role::Shadow, "v2", s, Some(p));
        agg.record(&serving);
        agg.record(&shadow);
        agg.record_feedback(&[serving, shadow], &Truth::Values(vec![t]), &[]);
    }
    let mut o = Observations {
        pair: Some(agg.pair("yield", "v1", "v2", |_| true)),
        shadow: Some(agg.variant("yield", "v2", Role::Shadow, |_| true)),
        ..Default::default()
    };
    o.total.insert(
        "v1".into(),
        agg.variant("yield", "v1", Role::Serving, |_| true),
    );
    o
}

#[test]
fn regression_shadows_wait_for_labelled_pairs_then_conclude_with_their_numbers() {
    let spec = shadow_spec();
    let (state, _) = start(&spec, 0, "cli");
    let (s, a) = tick(&spec, &state, &regression_obs(150), 5_000);
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(
        s.reason.as_deref(),
        Some("150/200 labelled pairs after 5000/1000 ms")
    );
    assert!(a.is_empty());
    let (s, a) = tick(&spec, &state, &regression_obs(250), 5_000);
    assert_eq!(
        (s.phase, s.recommendation),
        (Phase::Completed, Some(Recommendation::Promote)),
        "{:?}",
        s.reason
    );
    let concluded = a
        .iter()
        .find_map(|x| match x {
            Action::Event(e) if e.kind == "shadow_concluded" => Some(e),
            _ => None,
        })
        .unwrap();
    let detail = |name: &str| {
        concluded
            .details
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} missing in {:?}", concluded.details))
    };
    assert_eq!(detail("labelled_pairs"), Detail::Num(250.0));
    assert_eq!(detail("output"), Detail::Text("regression".into()));
    assert_eq!(detail("test"), Detail::Text("t_test".into()));
    for name in [
        "agreement",
        "primary_mae",
        "shadow_mae",
        "primary_rmse",
        "shadow_rmse",
        "primary_mape",
        "shadow_mape",
        "mae_change",
        "p_value",
        "paired_t",
        "wilcoxon_p_value",
    ] {
        assert!(matches!(detail(name), Detail::Num(_)), "{name}");
    }
}

#[test]
fn a_canary_that_underestimates_too_often_is_rolled_back() {
    // MAEs within 10% of each other (1.88 and 1.75); the canary is short of the truth by 3 on
    // 10% of its answers.
    let regression = |under: usize| {
        let mut s = stats(200, 0, 10_000, 0, 0);
        for i in 0..100 {
            let e = if i < under {
                -3.0
            } else if i % 2 == 0 {
                2.0
            } else {
                -1.5
            };
            s.abs_error.push(f64::abs(e));
            s.sq_error.push(e * e);
            s.signed_error.record(e);
        }
        s
    };
    let gate = GatePolicy {
        max_underestimate: Some(Underestimate {
            by: 2.5,
            share: 0.05,
        }),
        ..Default::default()
    };
    match evaluate_gate(&gate, &regression(10), &regression(0)) {
        Verdict::Fail {
            reason,
            severity,
            details,
        } => {
            assert_eq!(severity, Severity::P0);
            assert_eq!(
                reason,
                "10.0% of 100 labelled predictions are below the truth by more than 2.5 (limit 5.0%)"
            );
            assert!(details.iter().any(|(n, _)| n == "underestimate_share"));
        }
        v => panic!("{v:?}"),
    }
    assert!(matches!(
        evaluate_gate(&gate, &regression(4), &regression(0)),
        Verdict::Pass(_)
    ));
    // Off by default.
    assert!(matches!(
        evaluate_gate(&GatePolicy::default(), &regression(10), &regression(0)),
        Verdict::Pass(_)
    ));
}

fn ab_spec() -> RolloutSpec {
    RolloutSpec {
        name: "tt-ab".into(),
        model: "testtime".into(),
        kind: RolloutKind::Ab(AbSpec {
            control: "v1".into(),
            treatment: "v2".into(),
            treatment_weight: 5_000,
            metric: AbMetric::Accuracy,
            baseline: 0.6,
            mde: 0.1,
            alpha: 0.05,
            power: 0.8,
            sequential: false,
            auto_promote: true,
            srm_threshold: 0.001,
            variants: vec![],
            correction: Default::default(),
            guardrails: vec![],
            lower_is_better: None,
            min_per_arm: None,
            bandit: None,
            approvals: 1,
            test: Default::default(),
            stratify_by: None,
        }),
    }
}

fn ab_obs(a_req: u64, b_req: u64, a: (u64, u64), b: (u64, u64)) -> Observations {
    let mut o = Observations::default();
    o.by_variant.insert("a".into(), a_req);
    o.by_variant.insert("b".into(), b_req);
    o.total
        .insert("v1".into(), stats(a_req, 0, 1_000, a.1, a.0));
    o.total
        .insert("v2".into(), stats(b_req, 0, 1_000, b.1, b.0));
    o
}

#[test]
fn ab_waits_for_the_sample_size_then_promotes_a_significant_winner() {
    let spec = ab_spec();
    let (state, _) = start(&spec, 0, "cli");
    let (s, _) = tick(&spec, &state, &ab_obs(300, 300, (180, 300), (210, 300)), 1);
    assert_eq!(
        s.phase,
        Phase::Running,
        "below the required n of 356 per arm"
    );
    let (s, a) = tick(&spec, &state, &ab_obs(400, 400, (240, 400), (300, 400)), 2);
    assert_eq!(
        (s.phase, s.recommendation),
        (Phase::Completed, Some(Recommendation::Promote))
    );
    assert_eq!(
        strategies(&a),
        vec![Strategy::Single {
            version: "v2".into()
        }]
    );
}

#[test]
fn an_ab_conclusion_needing_two_approvers_keeps_the_split_until_the_second() {
    let mut spec = ab_spec();
    if let RolloutKind::Ab(a) = &mut spec.kind {
        a.auto_promote = false;
        a.approvals = 2;
    }
    let (state, _) = start(&spec, 0, "cli");
    let (s, _) = tick(&spec, &state, &ab_obs(400, 400, (240, 400), (300, 400)), 2);
    assert_eq!(
        (s.phase, s.recommendation),
        (Phase::AwaitingApproval, Some(Recommendation::Promote))
    );
    let (s, a) = command(&spec, &s, Command::Approve, "product-owner", 3).unwrap();
    assert_eq!(s.phase, Phase::AwaitingApproval);
    assert!(
        strategies(&a).is_empty(),
        "the split stays until the second name"
    );
    let (s, a) = command(&spec, &s, Command::Approve, "senior-engineer", 4).unwrap();
    assert_eq!(s.phase, Phase::Completed);
    assert_eq!(
        strategies(&a),
        vec![Strategy::Single {
            version: "v2".into()
        }]
    );
    assert_eq!(
        events(&a)[0].2,
        "approved by product-owner and senior-engineer"
    );
}

#[test]
fn ab_never_concludes_under_sample_ratio_mismatch() {
    let spec = ab_spec();
    let (state, _) = start(&spec, 0, "cli");
    let (s, a) = tick(
        &spec,
        &state,
        &ab_obs(5_600, 4_400, (3_000, 5_000), (3_500, 5_000)),
        1,
    );
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(alerts(&a), vec![(Severity::P1, "srm".to_string())]);
    let (_, a) = tick(
        &spec,
        &s,
        &ab_obs(5_600, 4_400, (3_000, 5_000), (3_500, 5_000)),
        2,
    );
    assert!(alerts(&a).is_empty(), "the SRM alert is sent once");
}

fn bg_spec() -> RolloutSpec {
    RolloutSpec {
        name: "yield-bg".into(),
        model: "yield".into(),
        kind: RolloutKind::BlueGreen(BlueGreenSpec {
            active: "v1".into(),
            candidate: "v2".into(),
            min_accuracy: Some(0.9),
            max_p95_ms: Some(50.0),
            monitor_min_requests: 100,
            monitor_duration_ms: 60_000,
            max_error_rate: 0.05,
            max_p95_ratio: Some(2.0),
            min_p95_increase_ms: 2.0,
            retention_ms: 86_400_000,
            validation_set: None,
            smoke_requests: 10,
            load_test: None,
            external: vec![],
        }),
    }
}

fn validation(passed: bool) -> Validation {
    Validation {
        passed,
        smoke_ok: true,
        samples: 1000,
        accuracy: Some(if passed { 0.95 } else { 0.8 }),
        p95_ms: Some(5.0),
        reason: if passed {
            "ok".into()
        } else {
            "accuracy 80% below 90%".into()
        },
        load_test: None,
    }
}

#[test]
fn blue_green_validates_switches_monitors_retains_and_retires() {
    let spec = bg_spec();
    let (state, actions) = start(&spec, 0, "cli");
    assert!(actions.iter().any(|a| matches!(a, Action::Validate { .. })));
    assert_eq!(state.phase, Phase::Validating);
    let mut o = Observations {
        validation: Some(validation(true)),
        ..Default::default()
    };
    o.total.insert("v1".into(), stats(1000, 0, 5_000, 0, 0));
    let (s, a) = tick(&spec, &state, &o, 10);
    assert_eq!(s.phase, Phase::Monitoring);
    assert!(
        matches!(&strategies(&a)[0], Strategy::BlueGreen { active, .. } if active.as_str() == "green")
    );
    o.step.insert("v2".into(), stats(150, 0, 6_000, 0, 0));
    let (s, _) = tick(&spec, &s, &o, 70_000);
    assert_eq!(s.phase, Phase::Retaining);
    let (s, a) = tick(&spec, &s, &o, 86_400_010);
    assert_eq!(s.phase, Phase::Completed);
    assert_eq!(
        strategies(&a),
        vec![Strategy::Single {
            version: "v2".into()
        }]
    );
}

#[test]
fn blue_green_aborts_on_failed_validation_and_switches_back_on_errors() {
    let spec = bg_spec();
    let (state, _) = start(&spec, 0, "cli");
    let (s, a) = tick(
        &spec,
        &state,
        &Observations {
            validation: Some(validation(false)),
            ..Default::default()
        },
        10,
    );
    assert_eq!(s.phase, Phase::Aborted);
    assert_eq!(
        strategies(&a),
        vec![Strategy::Single {
            version: "v1".into()
        }]
    );

    let mut o = Observations {
        validation: Some(validation(true)),
        ..Default::default()
    };
    o.total.insert("v1".into(), stats(1000, 0, 5_000, 0, 0));
    let (s, _) = tick(&spec, &state, &o, 10);
    o.step.insert("v2".into(), stats(20, 5, 6_000, 0, 0));
    let (s, a) = tick(&spec, &s, &o, 20);
    assert_eq!(s.phase, Phase::RolledBack);
    assert!(
        matches!(&strategies(&a)[0], Strategy::BlueGreen { active, .. } if active.as_str() == "blue")
    );
    assert_eq!(alerts(&a)[0].0, Severity::P0);
}

/// Green's latency after the switch against blue's before it: the ratio and the absolute floor
/// must both be exceeded, and `max_p95_ratio: None` turns the check off.
#[test]
fn blue_green_switches_back_on_latency_beyond_both_the_ratio_and_the_floor() {
    let check = |ratio: Option<f64>, floor_ms: f64, blue_us: u64, green_us: u64| -> Phase {
        let mut spec = bg_spec();
        if let RolloutKind::BlueGreen(b) = &mut spec.kind {
            b.max_p95_ratio = ratio;
            b.min_p95_increase_ms = floor_ms;
        }
        let (state, _) = start(&spec, 0, "cli");
        let mut o = Observations {
            validation: Some(validation(true)),
            ..Default::default()
        };
        o.total.insert("v1".into(), stats(1000, 0, blue_us, 0, 0));
        let (s, _) = tick(&spec, &state, &o, 10);
        assert_eq!(s.phase, Phase::Monitoring);
        o.step.insert("v2".into(), stats(150, 0, green_us, 0, 0));
        let (s, a) = tick(&spec, &s, &o, 70_000);
        if s.phase == Phase::RolledBack {
            assert!(
                s.reason.as_deref().unwrap_or("").contains("green p95"),
                "{:?}",
                s.reason
            );
            assert_eq!(alerts(&a)[0].0, Severity::P0);
        }
        s.phase
    };
    // 1 ms -> 2.5 ms: 2.5x blue's, but only +1.5 ms, under the 2 ms floor.
    assert_eq!(check(Some(2.0), 2.0, 1_000, 2_500), Phase::Retaining);
    // 1 ms -> 3.5 ms: over 2x and over +2 ms.
    assert_eq!(check(Some(2.0), 2.0, 1_000, 3_500), Phase::RolledBack);
    // 10 ms -> 19 ms: +9 ms but under 2x.
    assert_eq!(check(Some(2.0), 2.0, 10_000, 19_000), Phase::Retaining);
    // 10 ms -> 21 ms: over both.
    assert_eq!(check(Some(2.0), 2.0, 10_000, 21_000), Phase::RolledBack);
    // A floor of 100 ms holds a 10 ms -> 100 ms increase, not 10 ms -> 120 ms.
    assert_eq!(check(Some(2.0), 100.0, 10_000, 100_000), Phase::Retaining);
    assert_eq!(check(Some(2.0), 100.0, 10_000, 120_000), Phase::RolledBack);
    // No ratio: latency is not watched at all.
    assert_eq!(check(None, 2.0, 1_000, 900_000), Phase::Retaining);
}

#[test]
fn invalid_specs_list_every_problem() {
    let mut spec = canary_spec();
    if let RolloutKind::Canary(c) = &mut spec.kind {
        c.candidate = "v9".into();
        c.steps = vec![
            Step {
                weight: 2500,
                min_requests: 1,
                min_duration_ms: 0,
                require_approval: false,
                approvals: 1,
                target: None,
            },
            Step {
                weight: 500,
                min_requests: 1,
                min_duration_ms: 0,
                require_approval: false,
                approvals: 1,
                target: None,
            },
            Step {
                weight: 20_000,
                min_requests: 1,
                min_duration_ms: 0,
                require_approval: false,
                approvals: 1,
                target: None,
            },
        ];
        c.gate.max_accuracy_drop = Some(-0.1);
    }
    let problems = spec.problems(&["v1", "v2"]);
    for expected in [
        "unknown version 'v9'",
        "steps[1]: weights must increase",
        "steps[2]: weight must be in",
        "last step",
        "max_accuracy_drop",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "missing {expected}: {problems:#?}"
        );
    }
}

fn any_obs() -> impl proptest::strategy::Strategy<Value = Observations> {
    (
        0u64..400,
        0u64..50,
        1_000u64..50_000,
        0u64..200,
        0u64..3000,
        0u64..50,
        1_000u64..50_000,
    )
        .prop_map(|(cr, ce, cl, lab, sr, se, sl)| {
            let ce = ce.min(cr);
            let se = se.min(sr);
            obs(
                stats(cr, ce, cl, lab, lab * 9 / 10),
                stats(sr, se, sl, lab * 2, lab * 2 * 9 / 10),
            )
        })
}

fn any_command() -> impl proptest::strategy::Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Promote),
        Just(Command::Rollback),
        Just(Command::Pause),
        Just(Command::Resume),
        Just(Command::Approve),
        Just(Command::Abort)
    ]
}

proptest! {
    #[test]
    fn canary_invariants_hold_under_any_sequence(
        events in proptest::collection::vec((any_obs(), proptest::option::of(any_command()), 0i64..200_000), 1..40)
    ) {
        let spec = canary_spec();
        let (mut state, _): (RolloutState, _) = start(&spec, 0, "cli");
        let mut now = 0;
        let mut last_weight = 500;
        for (o, cmd, dt) in events {
            now += dt;
            let was_terminal = state.phase.is_terminal();
            let before = state.clone();
            let (next, actions) = match cmd {
                Some(c) => match command(&spec, &state, c, "op", now) {
                    Ok(r) => r,
                    Err(_) => (state.clone(), vec![]),
                },
                None => tick(&spec, &state, &o, now),
            };
            if was_terminal {
                prop_assert_eq!(&next, &before, "terminal phases absorb");
                prop_assert!(actions.is_empty());
            }
            for s in strategies(&actions) {
                prop_assert!(s.problems().is_empty(), "invalid strategy {:?}", s);
                let w = canary_weight(&s);
                prop_assert!(w <= BUCKETS);
                // The controller only ever raises the canary, unless it ends the rollout.
                if !next.phase.is_terminal() && cmd.is_none() {
                    prop_assert!(w >= last_weight, "weight fell from {} to {}", last_weight, w);
                }
                last_weight = w;
            }
            // A tick advances a step only with its minimums met.
            if cmd.is_none() && next.step > before.step {
                let step = &steps()[before.step];
                prop_assert!(o.step["v2"].requests >= step.min_requests);
                prop_assert!(now - before.step_started_ms >= step.min_duration_ms as i64);
            }
            state = next;
        }
    }
}

/// The shadow spec with live alerts: agreement below 90%, p95 above 50 ms, errors above the
/// spec's 5%, after 50 samples.
fn shadow_with_live_alerts() -> RolloutSpec {
    let mut spec = shadow_spec();
    if let RolloutKind::Shadow(s) = &mut spec.kind {
        s.live_alerts = LiveAlerts {
            min_agreement: Some(0.9),
            max_p95_ms: Some(50.0),
            max_error_rate: None,
            min_samples: 50,
        };
    }
    spec
}

#[test]
fn a_running_shadow_alerts_once_per_condition_and_keeps_running() {
    let spec = shadow_with_live_alerts();
    let (state, _) = start(&spec, 0, "cli");
    // 100 compared, 60 agree (below 90%); 10 of 100 shadow calls failed (above 5%); the
    // shadow's p95 is 80 ms (above 50 ms). Too few labels to conclude (min_labelled 200).
    let mut obs = pair(50, 20, 20, 10);
    if let Some(p) = obs.pair.as_mut() {
        p.shadow_errors = 10;
    }
    let mut shadow = VariantStats {
        requests: 100,
        ..Default::default()
    };
    shadow.latency.record_n(80_000, 100);
    obs.shadow = Some(shadow);
    let (state, actions) = tick(&spec, &state, &obs, 10_000);
    assert_eq!(state.phase, Phase::Running, "live alerts never decide");
    let mut kinds: Vec<String> = alerts(&actions).into_iter().map(|(_, k)| k).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["shadow_agreement", "shadow_errors", "shadow_latency"]
    );
    assert!(alerts(&actions).iter().all(|(s, _)| *s == Severity::P2));
    let events: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(e) if e.kind == "shadow_alert" => Some(e.message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(
        events
            .iter()
            .any(|m| m.contains("agreement 60.0% below 90.0%")),
        "{events:?}"
    );
    // The same conditions on the next tick: no second alert.
    let (state, actions) = tick(&spec, &state, &obs, 20_000);
    assert!(alerts(&actions).is_empty(), "{actions:?}");
    assert_eq!(state.shadow_alerts.len(), 3);
}

#[test]
fn live_alerts_wait_for_their_samples_and_are_off_unless_written() {
    // Below min_samples: nothing, however bad the numbers.
    let spec = shadow_with_live_alerts();
    let (state, _) = start(&spec, 0, "cli");
    let mut obs = pair(10, 10, 10, 10);
    if let Some(p) = obs.pair.as_mut() {
        p.shadow_errors = 20;
    }
    let (_, actions) = tick(&spec, &state, &obs, 10_000);
    assert!(alerts(&actions).is_empty(), "{actions:?}");
    // Defaults: agreement and latency checks off, the error check at the spec's max_error_rate.
    let spec = shadow_spec();
    let (state, _) = start(&spec, 0, "cli");
    let mut obs = pair(50, 20, 20, 10);
    if let Some(p) = obs.pair.as_mut() {
        p.shadow_errors = 4;
    }
    let (state, actions) = tick(&spec, &state, &obs, 10_000);
    assert!(
        alerts(&actions).is_empty(),
        "4% errors, 60% agreement: {actions:?}"
    );
    if let Some(p) = obs.pair.as_mut() {
        p.shadow_errors = 6;
    }
    let (_, actions) = tick(&spec, &state, &obs, 20_000);
    let kinds: Vec<String> = alerts(&actions).into_iter().map(|(_, k)| k).collect();
    assert_eq!(kinds, ["shadow_errors"]);
}

/// A stratified A/B (`stratify_by: region`): the arms' counts within each region, their
/// sample-ratio check, and the Cochran–Mantel–Haenszel reading, checked against statsmodels
/// (the `stratified` fixture of the statistics crate, its case of a reversed mix).
#[test]
fn a_stratified_ab_reads_the_test_within_each_region_as_statsmodels_does() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../stats/tests/fixtures/stratified.json"
    );
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // Case 1: B looks far better overall only through its mix of regions.
    let case = &doc["cases"][1];
    let strata = case["strata"].as_sequence().unwrap();
    let mut spec = ab_spec();
    if let RolloutKind::Ab(a) = &mut spec.kind {
        a.stratify_by = Some("region".into());
    }
    let RolloutKind::Ab(a) = &spec.kind else {
        unreachable!()
    };
    let mut obs = Observations::default();
    for (arm, version) in [(0, "v1"), (1, "v2")] {
        let mut v = VariantStats::default();
        for (i, s) in strata.iter().enumerate() {
            let (successes, trials) = (s[arm][0].as_u64().unwrap(), s[arm][1].as_u64().unwrap());
            let region = ["us-west", "eu"][i];
            *v.segments.entry("region".into()).or_default().entry(region) =
                switchyard_core::segments::SegmentStats {
                    requests: trials,
                    correct: Proportion { successes, trials },
                    ..Default::default()
                };
            v.requests += trials;
            v.correct.merge(&Proportion { successes, trials });
        }
        obs.by_variant.insert(["a", "b"][arm].into(), v.requests);
        obs.total.insert(version.into(), v);
    }
    let report = switchyard_core::rollout::ab_report(a, &obs);
    // Pooled, B gains 40 points; within each region it loses one.
    assert!(report.test.unwrap().diff > 0.35, "{report:?}");
    let st = report.stratified.expect("stratified");
    assert_eq!(st.field, "region");
    let rows: Vec<(&str, u64, u64)> = st
        .strata
        .iter()
        .map(|s| (s.value.as_str(), s.control_requests, s.treatment_requests))
        .collect();
    assert_eq!(rows, vec![("eu", 1000, 100), ("us-west", 100, 1000)]);
    // A 50/50 split with 100 against 1,000 in a region: the split is not what it says there.
    assert!(st.strata.iter().all(|s| s.srm.as_ref().unwrap().mismatch));
    let mh = st.mantel_haenszel.unwrap();
    let want = |k: &str| case[k].as_f64().unwrap();
    for (got, name) in [
        (mh.odds_ratio, "odds_ratio"),
        (mh.ci_low, "ci_low"),
        (mh.ci_high, "ci_high"),
        (mh.p_value, "p_value"),
    ] {
        assert!(
            (got - want(name)).abs() < 1e-9 * want(name).abs().max(1.0),
            "{name}: {got} vs {}",
            want(name)
        );
    }
    assert!(mh.odds_ratio < 1.0);
}

#[test]
fn stratify_by_is_for_two_arm_proportion_tests_on_a_declared_field() {
    let yaml =
        "name: a\nmodel: m\nkind: ab\ncontrol: v1\ntreatment: v2\nbaseline: 0.5\nmde: 0.05\n";
    let check = |extra: &str, segments: &[&str]| -> Vec<String> {
        let raw: switchyard_core::rollout_config::RawRollout =
            serde_yaml::from_str(&format!("{yaml}{extra}")).unwrap();
        raw.validate_for(&["v1", "v2", "v3"], Some(segments))
            .err()
            .unwrap_or_default()
    };
    assert!(check("stratify_by: region\n", &["region"]).is_empty());
    let p = check("stratify_by: region\n", &["tier"]);
    assert!(
        p[0].contains("stratify_by: 'region' is not a segment field of model 'm' (declared: tier)"),
        "{p:?}"
    );
    let p = check(
        "stratify_by: region\nmetric: mean:revenue\nmin_per_arm: 10\nvariants: [{ version: v3 }]\n",
        &["region"],
    );
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p.iter().any(|x| x.contains("two-arm")), "{p:?}");
    assert!(p.iter().any(|x| x.contains("not mean:revenue")), "{p:?}");
}

/// A group: `yield` (v1 → v2) and `features` (f1 → f2) move through the same steps in one
/// swap each time; the members' gate is judged on their own versions; one failure rolls back
/// both in one swap.
#[test]
fn a_group_moves_its_models_together_and_rolls_both_back_when_one_fails() {
    let mut spec = canary_spec();
    if let RolloutKind::Canary(c) = &mut spec.kind {
        c.group = vec![switchyard_core::rollout::GroupMember {
            model: "features".into(),
            stable: "f1".into(),
            candidate: "f2".into(),
        }];
        c.gate.max_p95_increase = None;
    }
    assert_eq!(spec.models(), vec!["yield", "features"]);
    let routes = |actions: &[Action]| -> Vec<Vec<(String, Strategy)>> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::SetStrategies(r) => Some(r.clone()),
                Action::SetStrategy(_) => panic!("a group swaps all its models at once"),
                _ => None,
            })
            .collect()
    };
    let (state, actions) = start(&spec, 0, "cli");
    let first = routes(&actions);
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0],
        vec![
            ("yield".to_string(), Strategy::canary("v1", "v2", 500)),
            ("features".to_string(), Strategy::canary("f1", "f2", 500)),
        ]
    );
    // Both healthy: the step passes and both move to 25%.
    let member = |canary: VariantStats, stable: VariantStats| {
        let mut o = Observations::default();
        o.step.insert("f2".into(), canary.clone());
        o.total.insert("f2".into(), canary);
        o.step.insert("f1".into(), stable.clone());
        o.total.insert("f1".into(), stable);
        o
    };
    let healthy = || stats(200, 0, 1_000, 100, 90);
    let mut o = obs(healthy(), healthy());
    o.members
        .insert("features".into(), member(healthy(), healthy()));
    let (state, actions) = tick(&spec, &state, &o, 61_000);
    assert_eq!(state.phase, Phase::Running);
    let second = routes(&actions);
    assert_eq!(
        second[0][1],
        ("features".to_string(), Strategy::canary("f1", "f2", 2_500))
    );
    // The member's candidate has not been asked enough yet: the group holds.
    let mut o = obs(healthy(), healthy());
    o.members.insert(
        "features".into(),
        member(stats(10, 0, 1_000, 5, 4), healthy()),
    );
    let (held, actions) = tick(&spec, &state, &o, 122_000);
    assert_eq!(held.phase, Phase::Running);
    assert!(routes(&actions).is_empty());
    assert!(held.reason.unwrap().contains("group member features"));
    // The member's candidate errs 10× its stable: both models go back in one swap.
    let mut o = obs(healthy(), healthy());
    o.members.insert(
        "features".into(),
        member(
            stats(200, 40, 1_000, 100, 90),
            stats(200, 4, 1_000, 100, 90),
        ),
    );
    let (state, actions) = tick(&spec, &state, &o, 122_000);
    assert_eq!(state.phase, Phase::RolledBack);
    assert!(
        state
            .reason
            .as_deref()
            .unwrap()
            .contains("group member features"),
        "{:?}",
        state.reason
    );
    assert_eq!(
        routes(&actions),
        vec![vec![
            (
                "yield".to_string(),
                Strategy::Single {
                    version: "v1".into()
                }
            ),
            (
                "features".to_string(),
                Strategy::Single {
                    version: "f1".into()
                }
            ),
        ]]
    );
}
