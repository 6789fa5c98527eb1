//! Experiments beyond two arms: A/B/n with guardrails, the bandit, and the per-experiment salt,
//! driven through `start`/`tick` with synthetic observations and explicit time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_yaml::Value;
use switchyard_core::aggregate::{Aggregates, VariantStats};
use switchyard_core::audit::{Detail, Severity};
use switchyard_core::rollout::{
    abn_report, command, start, tick, AbMetric, AbSpec, AbVariant, Action, ArmDecision,
    BanditSettings, Command, Correction, GuardLimit, Guardrail, MeanTest, Observations, Phase,
    PrimaryTest, Recommendation, RolloutKind, RolloutSpec,
};
use switchyard_core::routing::{bucket, ModelRoute, Strategy, BUCKETS};
use switchyard_core::{PredictionRecord, Role, Truth};
use switchyard_stats::rng::SeededRng;
use switchyard_stats::Proportion;

fn spec(kind: AbSpec) -> RolloutSpec {
    RolloutSpec {
        name: "yield-abn".into(),
        model: "yield".into(),
        kind: RolloutKind::Ab(kind),
    }
}

fn abn(variants: &[&str], guardrails: Vec<Guardrail>) -> AbSpec {
    AbSpec {
        control: "v1".into(),
        treatment: "v2".into(),
        treatment_weight: 2_500,
        metric: AbMetric::Accuracy,
        baseline: 0.80,
        mde: 0.05,
        alpha: 0.05,
        power: 0.8,
        sequential: false,
        auto_promote: true,
        srm_threshold: 0.001,
        variants: variants
            .iter()
            .map(|v| AbVariant {
                version: (*v).into(),
                weight: 2_500,
            })
            .collect(),
        correction: Correction::Holm,
        guardrails,
        lower_is_better: None,
        min_per_arm: None,
        bandit: None,
        approvals: 1,
        test: MeanTest::Welch,
        stratify_by: None,
    }
}

/// `requests` calls, `errors` of them failed, `correct` of `labelled` right.
fn arm(requests: u64, errors: u64, labelled: u64, correct: u64) -> VariantStats {
    let mut s = VariantStats {
        requests,
        errors,
        ..Default::default()
    };
    s.latency.record_n(2_000, requests);
    s.correct = Proportion {
        successes: correct,
        trials: labelled,
    };
    s
}

fn observe(arms: &[(&str, VariantStats)]) -> Observations {
    let mut o = Observations::default();
    for (i, (version, s)) in arms.iter().enumerate() {
        o.step.insert((*version).into(), s.clone());
        o.total.insert((*version).into(), s.clone());
        let variant = ((b'a' + i as u8) as char).to_string();
        o.by_variant.insert(variant, s.requests);
    }
    o
}

fn events(actions: &[Action]) -> Vec<(String, Vec<(String, Detail)>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(e) => Some((e.kind.clone(), e.details.clone())),
            _ => None,
        })
        .collect()
}

fn split_weights(s: &Strategy) -> Vec<u32> {
    match s {
        Strategy::Split { arms, .. } => arms.iter().map(|a| a.weight).collect(),
        _ => vec![],
    }
}

/// The end-to-end case: control v1; v2 better, v3 worse on a guardrail (stopped), v4
/// equal (inconclusive). The guardrail stops v3 first (its traffic goes to the control and
/// only its keys move); at the sample size v2 wins and v4 stays inconclusive.
#[test]
fn three_variants_one_better_one_stopped_by_a_guardrail_one_equal() {
    let error_guard = Guardrail {
        metric: AbMetric::ErrorRate,
        limit: GuardLimit::Max(0.05),
        min_samples: 200,
    };
    let spec = spec(abn(&["v3", "v4"], vec![error_guard]));
    let (state, actions) = start(&spec, 1_000, "cli");
    assert_eq!(split_weights(&state.strategy), vec![2_500; 4]);
    let salt = state.salt.clone().unwrap();
    assert_eq!(salt, "yield-abn@1000");
    assert!(
        matches!(&actions[0], Action::SetStrategy(Strategy::Split { salt: Some(s), .. }) if *s == salt)
    );
    assert_eq!(state.arms.len(), 4);

    // Early: v3 fails 12% of its calls.
    let early = observe(&[
        ("v1", arm(300, 3, 200, 160)),
        ("v2", arm(300, 2, 200, 176)),
        ("v3", arm(300, 36, 200, 160)),
        ("v4", arm(300, 3, 200, 161)),
    ]);
    let (state, actions) = tick(&spec, &state, &early, 2_000);
    assert_eq!(state.phase, Phase::Running);
    let kinds: Vec<String> = events(&actions).into_iter().map(|e| e.0).collect();
    assert_eq!(kinds, vec!["arm_stopped", "reweighted"]);
    let (_, details) = &events(&actions)[0];
    let num = |name: &str| {
        details
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(num("version"), Detail::Text("v3".into()));
    assert_eq!(num("value"), Detail::Num(0.12));
    assert_eq!(num("samples"), Detail::Num(300.0));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Alert { severity: Severity::P1, kind, .. } if kind == "guardrail"
    )));
    // v3's quarter went to the control, and only v3's keys moved.
    assert_eq!(split_weights(&state.strategy), vec![5_000, 2_500, 0, 2_500]);
    let (_, reweighted) = &events(&actions)[1];
    assert!(reweighted.contains(&("moved_fraction".into(), Detail::Num(0.25))));
    assert!(state.arms[2].stopped.is_some());
    assert!(state.strategy.problems().is_empty());

    // At the sample size (1 565 per arm for 80% → 85% at α/3): v2 is clearly better, v4 the
    // same as the control. Step counts follow the new weights (no sample-ratio mismatch).
    let mut done = observe(&[
        ("v1", arm(3_300, 30, 1_600, 1_280)),
        ("v2", arm(1_650, 10, 1_600, 1_408)),
        ("v3", arm(300, 36, 200, 160)),
        ("v4", arm(1_650, 15, 1_600, 1_285)),
    ]);
    done.step.insert("v3".into(), VariantStats::default());
    let report = abn_report(
        match &spec.kind {
            RolloutKind::Ab(a) => a,
            _ => unreachable!(),
        },
        &state,
        &done,
    );
    let decisions: Vec<ArmDecision> = report.arms.iter().map(|a| a.decision).collect();
    assert_eq!(
        decisions,
        vec![
            ArmDecision::Control,
            ArmDecision::Winner,
            ArmDecision::Stopped,
            ArmDecision::Inconclusive
        ]
    );
    assert!(!report.srm.unwrap().mismatch);
    let (state, actions) = tick(&spec, &state, &done, 3_000);
    assert_eq!(
        (state.phase, state.recommendation, state.winner.as_deref()),
        (Phase::Completed, Some(Recommendation::Promote), Some("v2"))
    );
    let concluded = events(&actions);
    assert_eq!(concluded[0].0, "ab_concluded");
    assert!(concluded[0]
        .1
        .contains(&("d_decision".into(), Detail::Text("inconclusive".into()))));
    assert!(concluded[0]
        .1
        .contains(&("b_decision".into(), Detail::Text("winner".into()))));
    assert_eq!(
        state.strategy,
        Strategy::Single {
            version: "v2".into()
        }
    );
}

#[test]
fn a_continuous_metric_is_compared_by_welch_and_srm_covers_every_arm() {
    let mut a = abn(&["v3"], vec![]);
    a.metric = AbMetric::Mean("revenue".into());
    a.min_per_arm = Some(500);
    a.treatment_weight = 3_333;
    a.variants[0].weight = 3_333;
    let spec = spec(a.clone());
    let (state, _) = start(&spec, 0, "cli");
    let mut rng = SeededRng::new(5);
    let revenue = |rng: &mut SeededRng, n: u64, mean: f64| {
        let mut s = arm(n, 0, 0, 0);
        let m = s.metrics.entry("revenue".into()).or_default();
        for _ in 0..n {
            m.push(-(1.0 - rng.uniform()).ln() * mean);
        }
        s
    };
    let o = observe(&[
        ("v1", revenue(&mut rng, 600, 2.0)),
        ("v2", revenue(&mut rng, 600, 2.6)),
        ("v3", revenue(&mut rng, 600, 2.0)),
    ]);
    let report = abn_report(&a, &state, &o);
    let b = &report.arms[1];
    assert_eq!(b.decision, ArmDecision::Winner, "{b:?}");
    assert!(b.ci_low.unwrap() > 0.0 && b.diff.unwrap() > 0.3);
    assert_eq!(report.arms[2].decision, ArmDecision::Inconclusive);
    // A skewed split over the three arms is a mismatch: no conclusion, one alert.
    let skewed = observe(&[
        ("v1", revenue(&mut rng, 900, 2.0)),
        ("v2", revenue(&mut rng, 600, 2.6)),
        ("v3", revenue(&mut rng, 600, 2.0)),
    ]);
    let (s, actions) = tick(&spec, &state, &skewed, 1);
    assert_eq!(s.phase, Phase::Running);
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Alert { kind, .. } if kind == "srm")));
}

/// Two experiments in a row on the same model: with one salt per experiment about half of
/// the keys land in the same arm of a 50/50 split again (independent assignment), not all.
#[test]
fn consecutive_experiments_assign_keys_independently() {
    let two_arms = abn(&[], vec![]);
    let mut first = spec(two_arms.clone());
    first.kind = RolloutKind::Ab(AbSpec {
        treatment_weight: 5_000,
        ..two_arms
    });
    let mut second = first.clone();
    second.name = "yield-ab-2".into();
    let (s1, _) = start(&first, 1_000, "cli");
    let (s2, _) = start(&second, 90_000_000, "cli");
    assert_ne!(s1.salt, s2.salt);
    let route = |strategy: &Strategy| ModelRoute {
        salt: "yield".into(),
        strategy: strategy.clone(),
    };
    let (r1, r2) = (route(&s1.strategy), route(&s2.strategy));
    let keys = 20_000;
    let same = (0..keys)
        .filter(|i| {
            let key = format!("wafer-{i}");
            r1.decide(Some(key.as_bytes()), 0).variant == r2.decide(Some(key.as_bytes()), 0).variant
        })
        .count();
    let overlap = same as f64 / f64::from(keys);
    eprintln!("keys in the same arm in both experiments: {overlap:.3}");
    assert!((0.47..0.53).contains(&overlap), "overlap {overlap}");
    // With the model's salt for both (as before), every key would land in the same arm again.
    let shared = (0..1_000)
        .filter(|i| {
            let key = format!("wafer-{i}");
            bucket("yield", key.as_bytes()) == bucket("yield", key.as_bytes())
        })
        .count();
    assert_eq!(shared, 1_000);
}

/// The bandit re-weights towards the better arm each tick, reports the keys that moved, keeps
/// keys sticky (only the changed mass moves) and respects the minimum share.
#[test]
fn the_bandit_reweights_with_an_event_each_time_and_moves_only_the_changed_mass() {
    let mut a = abn(&["v3"], vec![]);
    a.treatment_weight = 3_333;
    a.variants[0].weight = 3_333;
    a.bandit = Some(BanditSettings {
        min_share: 500,
        max_step: 1_000,
        reweight_every_ms: 60_000,
        min_samples: 30,
        draws: 2_000,
        stop_at_p_best: 0.999,
    });
    a.auto_promote = false;
    let spec = spec(a);
    assert_eq!(spec.kind_name(), "bandit");
    let (mut state, _) = start(&spec, 0, "cli");
    let rates = [0.80, 0.88, 0.78];
    let mut rng = SeededRng::new(9);
    let mut counts = [arm(0, 0, 0, 0), arm(0, 0, 0, 0), arm(0, 0, 0, 0)];
    let versions = ["v1", "v2", "v3"];
    let mut reweights = 0;
    for t in 1..=12 {
        // 300 requests split by the current weights.
        let weights = split_weights(&state.strategy);
        for _ in 0..300 {
            let b = (rng.next_u64() % u64::from(BUCKETS)) as u32;
            let mut upper = 0;
            let i = weights
                .iter()
                .position(|&w| {
                    upper += w;
                    b < upper
                })
                .unwrap_or(2);
            counts[i].requests += 1;
            counts[i].correct.record(rng.bernoulli(rates[i]));
        }
        let mut o = Observations::default();
        for (v, c) in versions.iter().zip(&counts) {
            o.total.insert((*v).into(), c.clone());
            o.step.insert((*v).into(), c.clone());
        }
        let before = state.strategy.clone();
        let (next, actions) = tick(&spec, &state, &o, t * 60_000);
        for (kind, details) in events(&actions) {
            if kind == "reweighted" {
                reweights += 1;
                let moved = details
                    .iter()
                    .find(|(k, _)| k == "moved_fraction")
                    .map(|(_, v)| v.clone())
                    .unwrap();
                let Detail::Num(moved) = moved else { panic!() };
                let increases: u32 = split_weights(&before)
                    .iter()
                    .zip(split_weights(&next.strategy))
                    .map(|(a, b)| b.saturating_sub(*a))
                    .sum();
                assert_eq!(moved, f64::from(increases) / f64::from(BUCKETS));
                assert!(details.iter().any(|(k, _)| k == "seed"));
            }
        }
        for (w0, w1) in split_weights(&before)
            .iter()
            .zip(split_weights(&next.strategy))
        {
            assert!(
                w0.abs_diff(w1) <= 1_000 && w1 >= 500,
                "{before:?} -> {:?}",
                next.strategy
            );
        }
        assert!(
            next.strategy.problems().is_empty() || !matches!(next.strategy, Strategy::Split { .. })
        );
        state = next;
        if state.phase != Phase::Running {
            break;
        }
    }
    eprintln!(
        "{reweights} re-weightings, phase {:?}, weights {:?}, P(best) {:?}",
        state.phase,
        split_weights(&state.strategy),
        state.p_best
    );
    assert!(reweights >= 3, "{reweights} re-weightings");
    assert!(state.p_best.as_ref().unwrap()[1] > 0.5);
    match state.phase {
        // Concluded: v2 is best, waiting for the operator with traffic as it was.
        Phase::AwaitingApproval => {
            assert_eq!(state.winner.as_deref(), Some("v2"));
            assert_eq!(state.recommendation, Some(Recommendation::Promote));
        }
        _ => {
            let w = split_weights(&state.strategy);
            assert!(w[1] > w[0] && w[1] > w[2], "{w:?}");
        }
    }
}

/// Without `auto_promote` a concluded A/B/n waits for an operator; a promotion then promotes the
/// arm the test found best (here the third, v3), not the spec's second arm.
#[test]
fn a_manual_promotion_of_an_abn_promotes_its_winner() {
    let mut ab = abn(&["v3"], vec![]);
    ab.auto_promote = false;
    let spec = spec(ab);
    let (state, _) = start(&spec, 1_000, "cli");
    // The control holds half the traffic (the other two a quarter each).
    let done = observe(&[
        ("v1", arm(3_300, 20, 1_600, 1_280)),
        ("v2", arm(1_650, 10, 1_600, 1_285)),
        ("v3", arm(1_650, 10, 1_600, 1_408)),
    ]);
    let (state, _) = tick(&spec, &state, &done, 3_000);
    assert_eq!(
        (state.phase, state.winner.as_deref()),
        (Phase::AwaitingApproval, Some("v3"))
    );
    let (state, actions) =
        switchyard_core::rollout::command(&spec, &state, Command::Promote, "alice", 4_000).unwrap();
    assert_eq!(state.phase, Phase::Completed);
    assert_eq!(
        state.strategy,
        Strategy::Single {
            version: "v3".into()
        }
    );
    assert!(events(&actions).iter().any(|(kind, d)| kind == "promoted"
        && d.contains(&("version".into(), Detail::Text("v3".into())))));
}

/// The fixture `tools/gen_stats_fixtures.py` writes (`rank_tests.json`) with scipy and
/// statsmodels: revenue per request in three arms, the control with three whales.
fn whales_case() -> Value {
    let path = format!(
        "{}/../stats/tests/fixtures/rank_tests.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc["cases"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "revenue_with_whales")
        .unwrap()
        .clone()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_sequence()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[track_caller]
fn close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-12 + 1e-7 * want.abs(),
        "{what}: got {got:e}, scipy {want:e}"
    );
}

/// Each arm's values posted as feedback metrics (`revenue`) through the aggregates, one
/// request each, as the gateway counts them: the observations of a test that began at epoch 1.
fn revenue_observations(arms: &[Vec<f64>]) -> Observations {
    let mut agg = Aggregates::default();
    for (i, values) in arms.iter().enumerate() {
        let version = format!("v{}", i + 1);
        let variant = ((b'a' + i as u8) as char).to_string();
        for (j, x) in values.iter().enumerate() {
            let rec = PredictionRecord {
                request_id: format!("{variant}-{j}"),
                ts_ms: 0,
                model: "yield".into(),
                epoch: 1,
                variant: variant.clone(),
                role: Role::Serving,
                version: version.clone(),
                key_hash: None,
                outcome: switchyard_core::record::Outcome::Ok,
                status: 200,
                latency_us: 1_000,
                output: switchyard_core::record::Prediction::None,
                input: None,
                pair: None,
                segments: Vec::new(),
            };
            agg.record(&rec);
            agg.record_feedback(&[rec], &Truth::None, &[("revenue".into(), *x)]);
        }
    }
    let mut o = Observations::default();
    for (i, values) in arms.iter().enumerate() {
        let version = format!("v{}", i + 1);
        let stats = agg.variant("yield", &version, Role::Serving, |_| true);
        assert_eq!(stats.metric_samples["revenue"].len(), values.len());
        o.total.insert(version.clone(), stats.clone());
        o.step.insert(version, stats);
        o.by_variant
            .insert(((b'a' + i as u8) as char).to_string(), values.len() as u64);
    }
    o
}

/// A heavy-tailed metric: three whales in the control swamp Welch's t (its mean and spread are
/// theirs, and the variant even looks worse on the means), so nothing is found; Mann-Whitney on
/// the same values finds the variant shifted up. Every number is scipy's / statsmodels' on the
/// same values (`rank_tests.json`), after the values went through the aggregates.
#[test]
fn a_heavy_tailed_metric_hides_a_shift_from_welch_that_mann_whitney_finds() {
    let case = whales_case();
    let arms: Vec<Vec<f64>> = serde_yaml::from_value(case["arms"].clone()).unwrap();
    let o = revenue_observations(&arms);
    let mut a = abn(&["v3"], vec![]);
    a.metric = AbMetric::Mean("revenue".into());
    a.min_per_arm = Some(500);
    a.treatment_weight = 3_333;
    a.variants[0].weight = 3_333;
    let welch_spec = spec(a.clone());
    let (state, _) = start(&welch_spec, 0, "cli");

    // Welch: inconclusive, as scipy says.
    let welch = abn_report(&a, &state, &o);
    assert_eq!(welch.test, PrimaryTest::Welch);
    let w = &case["welch"];
    for (i, arm) in welch.arms[1..].iter().enumerate() {
        close("t", arm.statistic.unwrap(), floats(&w["statistic"])[i]);
        close("p", arm.p_value.unwrap(), floats(&w["p_values"])[i]);
        close("holm", arm.adjusted_p_value.unwrap(), floats(&w["holm"])[i]);
        assert_eq!(arm.decision, ArmDecision::Inconclusive, "{arm:?}");
        assert!(arm.mann_whitney.is_none());
    }
    assert!(
        welch.arms[1].diff.unwrap() < 0.0,
        "the whales pull the control's mean up"
    );

    // Mann-Whitney: v2 wins, v3 stays inconclusive.
    a.test = MeanTest::MannWhitney;
    let ranks = abn_report(&a, &state, &o);
    assert_eq!(ranks.test, PrimaryTest::MannWhitney);
    let m = &case["mann_whitney"];
    for (i, arm) in ranks.arms[1..].iter().enumerate() {
        let mw = arm.mann_whitney.unwrap();
        close("U", mw.u, floats(&m["statistic"])[i]);
        close(
            "U as statistic",
            arm.statistic.unwrap(),
            floats(&m["statistic"])[i],
        );
        close("p", arm.p_value.unwrap(), floats(&m["p_values"])[i]);
        close("p", mw.p_value, floats(&m["p_values"])[i]);
        close(
            "common language",
            mw.common_language,
            floats(&m["common_language"])[i],
        );
        close("holm", arm.adjusted_p_value.unwrap(), floats(&m["holm"])[i]);
        // Every value is in the samples (fewer than METRIC_SAMPLE_SIZE).
        assert_eq!(
            (mw.n_a, mw.n_b),
            (arms[i + 1].len() as u64, arms[0].len() as u64)
        );
        assert!(arm.ci_low.is_none() && arm.ci_high.is_none());
    }
    let decisions: Vec<ArmDecision> = ranks.arms.iter().map(|a| a.decision).collect();
    assert_eq!(
        decisions,
        [
            ArmDecision::Control,
            ArmDecision::Winner,
            ArmDecision::Inconclusive
        ]
    );
    // Bonferroni adjusts the same p-values as statsmodels.
    a.correction = Correction::Bonferroni;
    let bonf = abn_report(&a, &state, &o);
    for (i, arm) in bonf.arms[1..].iter().enumerate() {
        close(
            "bonferroni",
            arm.adjusted_p_value.unwrap(),
            floats(&m["bonferroni"])[i],
        );
    }
    a.correction = Correction::Holm;

    // Ticking: the Welch test concludes with no difference, the rank test with v2.
    let (s, _) = tick(&welch_spec, &state, &o, 1);
    assert_eq!(
        (s.phase, s.recommendation, s.winner.as_deref()),
        (Phase::Completed, Some(Recommendation::Neutral), Some("v1"))
    );
    let ranks_spec = spec(a);
    let (state, _) = start(&ranks_spec, 0, "cli");
    let (s, actions) = tick(&ranks_spec, &state, &o, 1);
    assert_eq!(
        (s.phase, s.recommendation, s.winner.as_deref()),
        (Phase::Completed, Some(Recommendation::Promote), Some("v2"))
    );
    let (kind, details) = &events(&actions)[0];
    assert_eq!(kind, "ab_concluded");
    assert!(details.contains(&("test".into(), Detail::Text("mann_whitney".into()))));
    assert!(details.iter().any(|(k, _)| k == "b_common_language"));
}

/// Past METRIC_SAMPLE_SIZE values an arm's test runs on its bounded sample: the sizes used are
/// reported, and the sample is the same whichever replica or window counted which value.
#[test]
fn mann_whitney_runs_on_the_bounded_samples_past_their_size() {
    use switchyard_core::aggregate::METRIC_SAMPLE_SIZE;
    let n = METRIC_SAMPLE_SIZE + 500;
    let mut rng = SeededRng::new(11);
    let arms: Vec<Vec<f64>> = [0.0, 0.3]
        .iter()
        .map(|shift| (0..n).map(|_| rng.uniform() + shift).collect())
        .collect();
    let o = revenue_observations_unchecked(&arms);
    let mut a = abn(&[], vec![]);
    a.metric = AbMetric::Mean("revenue".into());
    a.min_per_arm = Some(1_000);
    a.test = MeanTest::MannWhitney;
    let (state, _) = start(&spec(a.clone()), 0, "cli");
    let report = abn_report(&a, &state, &o);
    let b = &report.arms[1];
    let mw = b.mann_whitney.unwrap();
    assert_eq!(
        (mw.n_a, mw.n_b),
        (METRIC_SAMPLE_SIZE as u64, METRIC_SAMPLE_SIZE as u64)
    );
    // Every value counts in the moments.
    assert_eq!(b.metric.samples(), n as u64);
    assert_eq!(b.decision, ArmDecision::Winner);
    assert!(mw.common_language > 0.6, "{mw:?}");
}

/// [`revenue_observations`] without its check that every value is in the sample.
fn revenue_observations_unchecked(arms: &[Vec<f64>]) -> Observations {
    let mut agg = Aggregates::default();
    for (i, values) in arms.iter().enumerate() {
        let variant = ((b'a' + i as u8) as char).to_string();
        for (j, x) in values.iter().enumerate() {
            let rec = PredictionRecord {
                request_id: format!("{variant}-{j}"),
                ts_ms: 0,
                model: "yield".into(),
                epoch: 1,
                variant: variant.clone(),
                role: Role::Serving,
                version: format!("v{}", i + 1),
                key_hash: None,
                outcome: switchyard_core::record::Outcome::Ok,
                status: 200,
                latency_us: 1_000,
                output: switchyard_core::record::Prediction::None,
                input: None,
                pair: None,
                segments: Vec::new(),
            };
            agg.record(&rec);
            agg.record_feedback(&[rec], &Truth::None, &[("revenue".into(), *x)]);
        }
    }
    let mut o = Observations::default();
    for (i, values) in arms.iter().enumerate() {
        let version = format!("v{}", i + 1);
        let stats = agg.variant("yield", &version, Role::Serving, |_| true);
        o.total.insert(version.clone(), stats.clone());
        o.step.insert(version, stats);
        o.by_variant
            .insert(((b'a' + i as u8) as char).to_string(), values.len() as u64);
    }
    o
}

/// A concluded A/B/n that asks for two approvers (`approvals: 2`, no `auto_promote`) keeps its
/// split until two distinct names approved, with an audit event for each; then its winner (not
/// the spec's second arm) serves everything.
#[test]
fn an_abn_conclusion_needing_two_approvers_promotes_its_winner_on_the_second_name() {
    let mut ab = abn(&["v3"], vec![]);
    ab.auto_promote = false;
    ab.approvals = 2;
    let spec = spec(ab);
    let (state, _) = start(&spec, 1_000, "cli");
    let done = observe(&[
        ("v1", arm(3_300, 20, 1_600, 1_280)),
        ("v2", arm(1_650, 10, 1_600, 1_285)),
        ("v3", arm(1_650, 10, 1_600, 1_408)),
    ]);
    let (state, actions) = tick(&spec, &state, &done, 3_000);
    assert_eq!(
        (state.phase, state.winner.as_deref()),
        (Phase::AwaitingApproval, Some("v3"))
    );
    let kinds: Vec<String> = events(&actions).into_iter().map(|e| e.0).collect();
    assert_eq!(kinds, ["ab_concluded", "awaiting_approval"]);
    let (_, waiting) = &events(&actions)[1];
    assert!(waiting.contains(&("approvals_needed".into(), Detail::Num(2.0))));
    assert!(waiting.contains(&("version".into(), Detail::Text("v3".into()))));
    assert_eq!(spec.approvals_needed(&state), 2);
    approve_twice(&spec, state, "v3");
}

/// The same for a bandit: its conclusion waits for two distinct approvers, then promotes the
/// arm it found best.
#[test]
fn a_bandit_conclusion_needing_two_approvers_promotes_its_best_arm_on_the_second_name() {
    let mut a = abn(&["v3"], vec![]);
    a.treatment_weight = 3_333;
    a.variants[0].weight = 3_333;
    a.bandit = Some(BanditSettings {
        draws: 4_000,
        stop_at_p_best: 0.95,
        ..BanditSettings::default()
    });
    a.auto_promote = false;
    a.approvals = 2;
    let spec = spec(a);
    let (state, _) = start(&spec, 0, "cli");
    let o = observe(&[
        ("v1", arm(1_000, 0, 1_000, 800)),
        ("v2", arm(1_000, 0, 1_000, 900)),
        ("v3", arm(1_000, 0, 1_000, 790)),
    ]);
    let (state, actions) = tick(&spec, &state, &o, 60_000);
    assert_eq!(
        (state.phase, state.winner.as_deref()),
        (Phase::AwaitingApproval, Some("v2"))
    );
    let kinds: Vec<String> = events(&actions).into_iter().map(|e| e.0).collect();
    assert_eq!(kinds, ["reweighted", "ab_concluded", "awaiting_approval"]);
    approve_twice(&spec, state, "v2");
}

/// alice approves (counted, the split stays), alice again (not counted), bob (the winner
/// serves everything).
fn approve_twice(spec: &RolloutSpec, state: switchyard_core::rollout::RolloutState, winner: &str) {
    let split = state.strategy.clone();
    let (state, actions) = command(spec, &state, Command::Approve, "alice", 4_000).unwrap();
    assert_eq!(state.phase, Phase::AwaitingApproval);
    assert_eq!(
        state.strategy, split,
        "the split stays until the second name"
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::SetStrategy(_))));
    assert_eq!(events(&actions)[0].0, "approval_recorded");
    let (state, actions) = command(spec, &state, Command::Approve, "alice", 4_500).unwrap();
    assert_eq!(state.phase, Phase::AwaitingApproval);
    assert_eq!(events(&actions)[0].0, "approval_repeated");
    let (state, actions) = command(spec, &state, Command::Approve, "bob", 5_000).unwrap();
    assert_eq!(state.phase, Phase::Completed);
    assert_eq!(
        state.strategy,
        Strategy::Single {
            version: winner.into()
        }
    );
    let kinds: Vec<String> = events(&actions).into_iter().map(|e| e.0).collect();
    assert_eq!(kinds, ["approved", "promoted"]);
    assert!(events(&actions)[1]
        .1
        .contains(&("version".into(), Detail::Text(winner.into()))));
}
