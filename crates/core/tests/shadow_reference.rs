//! The shadow report end to end against reference values: each fixture case's predictions and
//! truths go through the aggregates as the gateway records them (a serving record, a shadow
//! record, late feedback), and the report's numbers are compared with numpy / scikit-learn /
//! scipy / statsmodels (`tools/gen_stats_fixtures.py` writes
//! `crates/stats/tests/fixtures/shadow_pairs.json`): the seed's numbers, the per-version
//! classification detail, the transitions, the chi-square of the prediction distributions and
//! the drift of the candidate's predictions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_yaml::Value;
use switchyard_core::classes::{classification_summary, ClassificationSummary, DriftBasis};
use switchyard_core::record::Tolerance;
use switchyard_core::rollout::{
    shadow_report, LiveAlerts, OutputKind, Recommendation, RegressionTest, ShadowReport,
    ShadowRules, ShadowSpec, Underestimate,
};
use switchyard_core::{
    Aggregates, Outcome, PairRef, Prediction, PredictionRecord, Role, Truth, VariantStats,
};

fn cases() -> Vec<Value> {
    let path = format!(
        "{}/../stats/tests/fixtures/shadow_pairs.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // JSON is YAML: the fixture is read with the YAML parser the crate already tests with.
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    let cases = doc["cases"].as_sequence().unwrap().clone();
    assert!(cases.len() >= 8, "only {} cases", cases.len());
    cases
}

fn f(case: &Value, key: &str) -> f64 {
    case[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {}", name(case)))
}

fn u(case: &Value, key: &str) -> u64 {
    case[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {}", name(case)))
}

fn name(case: &Value) -> &str {
    case["name"].as_str().unwrap()
}

fn floats(case: &Value, key: &str) -> Vec<f64> {
    case[key]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn strings(case: &Value, key: &str) -> Vec<String> {
    case[key]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// Relative 1e-7 with an absolute floor of 1e-12, as the statistics crate's reference tests.
#[track_caller]
fn check(what: &str, case: &Value, actual: Option<f64>, expected: f64) {
    let actual = actual.unwrap_or_else(|| panic!("{what} missing for {}", name(case)));
    let tolerance = 1e-12 + 1e-7 * expected.abs();
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what} of {}: got {actual:e}, expected {expected:e}",
        name(case)
    );
}

fn record(
    id: &str,
    role: Role,
    version: &str,
    output: Prediction,
    pair: Option<&Prediction>,
) -> PredictionRecord {
    PredictionRecord {
        request_id: id.into(),
        ts_ms: 0,
        model: "m".into(),
        epoch: 1,
        variant: if role == Role::Serving {
            "primary"
        } else {
            "shadow"
        }
        .into(),
        role,
        version: version.into(),
        key_hash: None,
        outcome: Outcome::Ok,
        status: 200,
        latency_us: 1_000,
        output,
        input: None,
        pair: pair.map(|p| PairRef {
            version: "v1".into(),
            output: p.clone(),
        }),
        segments: Vec::new(),
    }
}

/// One request: its two records and its truth.
type Request = (PredictionRecord, PredictionRecord, Truth);

/// The case as requests of `per_request` instances each.
fn requests(case: &Value, per_request: usize) -> Vec<Request> {
    let regression = case["kind"].as_str() == Some("regression");
    let n = case["truth"].as_sequence().unwrap().len();
    assert_eq!(n % per_request, 0);
    (0..n / per_request)
        .map(|r| {
            let at = r * per_request..(r + 1) * per_request;
            let (primary, shadow, truth) = if regression {
                (
                    Prediction::Values(floats(case, "primary")[at.clone()].to_vec()),
                    Prediction::Values(floats(case, "shadow")[at.clone()].to_vec()),
                    Truth::Values(floats(case, "truth")[at].to_vec()),
                )
            } else {
                (
                    Prediction::Classes(strings(case, "primary")[at.clone()].to_vec()),
                    Prediction::Classes(strings(case, "shadow")[at.clone()].to_vec()),
                    Truth::Labels(strings(case, "truth")[at].to_vec()),
                )
            };
            let id = format!("{}-{r:05}", name(case));
            (
                record(&id, Role::Serving, "v1", primary.clone(), None),
                record(&id, Role::Shadow, "v2", shadow, Some(&primary)),
                truth,
            )
        })
        .collect()
}

fn spec(case: &Value, test: RegressionTest) -> ShadowSpec {
    let mut rules = ShadowRules {
        test,
        ..Default::default()
    };
    if case["kind"].as_str() == Some("regression") {
        rules.agreement_tolerance = Tolerance {
            absolute: f(case, "absolute"),
            relative: f(case, "relative"),
        };
        rules.max_underestimate = Some(Underestimate {
            by: f(case, "underestimate_by"),
            share: 0.5,
        });
    }
    ShadowSpec {
        primary: "v1".into(),
        candidate: "v2".into(),
        sample: 10_000,
        min_labelled: 1,
        min_duration_ms: 0,
        alpha: 0.05,
        max_error_rate: 0.05,
        rules,
        then_canary: None,
        chain_requires_approval: false,
        approvals: 1,
        live_alerts: LiveAlerts::default(),
    }
}

fn report_of(agg: &Aggregates, spec: &ShadowSpec) -> ShadowReport {
    let pair = agg.pair("m", "v1", "v2", |_| true);
    let primary = agg.variant("m", "v1", Role::Serving, |_| true);
    let shadow: VariantStats = agg.variant("m", "v2", Role::Shadow, |_| true);
    shadow_report(spec, &pair, &primary, &shadow)
}

#[test]
fn shadow_reports_match_numpy_sklearn_scipy_and_statsmodels() {
    for case in cases() {
        // Several instances per request in one case: each is an instance of its own.
        let per_request = if name(&case) == "heavy_tails" { 3 } else { 1 };
        let mut agg = Aggregates::default();
        for (serving, shadow, truth) in requests(&case, per_request) {
            agg.record(&serving);
            agg.record(&shadow);
            agg.record_feedback(&[serving, shadow], &truth, &[]);
        }
        let r = report_of(&agg, &spec(&case, RegressionTest::TTest));
        let n = case["truth"].as_sequence().unwrap().len() as u64;
        assert_eq!((r.compared, r.labelled), (n, n), "{}", name(&case));
        check("agreement", &case, r.agreement, f(&case, "agreement"));
        let drift = r.drift.clone().expect("a drift");
        check("psi", &case, Some(drift.psi), f(&case, "psi"));
        check(
            "js_distance",
            &case,
            Some(drift.js_distance),
            f(&case, "js_distance"),
        );
        if case["kind"].as_str() == Some("classification") {
            assert_eq!(drift.basis, DriftBasis::Classes);
            let t = r.transitions.clone().expect("transitions");
            assert_eq!(t.classes, strings(&case, "predicted_classes"));
            assert!(!t.other);
            let want: Vec<Vec<u64>> = serde_yaml::from_value(case["transitions"].clone()).unwrap();
            assert_eq!(t.counts, want, "{}", name(&case));
            let chi = r.prediction_chi2.clone().expect("a chi-square");
            check(
                "chi2",
                &case,
                Some(chi.statistic),
                f(&case, "chi2_statistic"),
            );
            check("chi2 p", &case, Some(chi.p_value), f(&case, "chi2_p_value"));
            assert_eq!(chi.dof, u(&case, "chi2_dof"));
            let declared = case["declared"]
                .as_sequence()
                .map(|_| strings(&case, "declared"));
            for (role, version, key) in [
                (Role::Serving, "v1", "primary_detail"),
                (Role::Shadow, "v2", "shadow_detail"),
            ] {
                let stats = agg.variant("m", version, role, |_| true);
                let s = classification_summary(&stats.confusion, declared.as_deref()).unwrap();
                check_detail(&case, &case[key], &s);
            }
            assert_eq!(r.output, OutputKind::Classification);
            check(
                "primary accuracy",
                &case,
                r.primary_accuracy,
                f(&case, "primary_accuracy"),
            );
            check(
                "shadow accuracy",
                &case,
                r.shadow_accuracy,
                f(&case, "shadow_accuracy"),
            );
            let m = r.mcnemar.unwrap();
            assert_eq!((m.b, m.c), (u(&case, "mcnemar_b"), u(&case, "mcnemar_c")));
            check(
                "McNemar p",
                &case,
                Some(m.p_value),
                f(&case, "mcnemar_p_value"),
            );
            continue;
        }
        assert_eq!(r.output, OutputKind::Regression);
        assert_eq!(drift.basis, DriftBasis::Values);
        assert!(r.transitions.is_none() && r.prediction_chi2.is_none());
        // Under the sample size the agreement is exact.
        assert!(r.agreement_exact && r.agreement_sample == n, "{r:?}");
        for (what, got) in [
            ("primary_mae", r.primary_mae),
            ("shadow_mae", r.shadow_mae),
            ("primary_rmse", r.primary_rmse),
            ("shadow_rmse", r.shadow_rmse),
            ("primary_mape", r.primary_mape),
            ("shadow_mape", r.shadow_mape),
        ] {
            check(what, &case, got, f(&case, what));
        }
        assert_eq!(r.mape_skipped, u(&case, "mape_skipped"));
        let t = r.paired_t.unwrap();
        check("t", &case, Some(t.t), f(&case, "t"));
        check("t p", &case, Some(t.p_value), f(&case, "t_p_value"));
        check("p used", &case, r.p_value, f(&case, "t_p_value"));
        let w = r.wilcoxon.unwrap();
        assert_eq!(r.wilcoxon_sample, n);
        check(
            "Wilcoxon statistic",
            &case,
            Some(w.statistic),
            f(&case, "wilcoxon_statistic"),
        );
        check(
            "Wilcoxon p",
            &case,
            Some(w.p_value),
            f(&case, "wilcoxon_p_value"),
        );
        let under = r.underestimate.unwrap();
        assert_eq!(
            (under.count, under.labelled),
            (u(&case, "underestimates"), n),
            "{}",
            name(&case)
        );
        // The two shadows: v2 three times closer is promoted, a much worse one
        // rejected (both used to say INVESTIGATE: agreement 0% below 50%).
        let expected = match name(&case) {
            "three_times_closer" => Some(Recommendation::Promote),
            "much_worse" => Some(Recommendation::Reject),
            _ => None,
        };
        if let Some(expected) = expected {
            assert_eq!(r.recommendation, expected, "{}: {}", name(&case), r.reason);
        }
        // With `test: wilcoxon` the rules use Wilcoxon's p.
        let r = report_of(&agg, &spec(&case, RegressionTest::Wilcoxon));
        check("p used", &case, r.p_value, f(&case, "wilcoxon_p_value"));
    }
}

/// A version's confusion matrix, per-class scores and accuracy against scikit-learn's and
/// statsmodels'.
#[track_caller]
fn check_detail(case: &Value, want: &Value, s: &ClassificationSummary) {
    let seq = |key: &str| -> Vec<f64> {
        want[key]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    // scikit-learn's labels are sorted; ours follow the declared order, so compare by name.
    let classes: Vec<String> = serde_yaml::from_value(want["classes"].clone()).unwrap();
    let confusion: Vec<Vec<u64>> = serde_yaml::from_value(want["confusion"].clone()).unwrap();
    let mut ours = s.confusion.classes.clone();
    ours.sort();
    assert_eq!(ours, classes, "{}", name(case));
    assert!(!s.confusion.other);
    let at = |c: &str| s.confusion.classes.iter().position(|x| x == c).unwrap();
    for (i, ci) in classes.iter().enumerate() {
        for (j, cj) in classes.iter().enumerate() {
            assert_eq!(
                s.confusion.counts[at(ci)][at(cj)],
                confusion[i][j],
                "{}",
                name(case)
            );
        }
        let score = &s.scores[at(ci)];
        assert_eq!(&score.class, ci);
        check(
            "precision",
            case,
            Some(score.precision),
            seq("precision")[i],
        );
        check("recall", case, Some(score.recall), seq("recall")[i]);
        check("f1", case, Some(score.f1), seq("f1")[i]);
        assert_eq!(score.support, seq("support")[i] as u64);
    }
    let macro_ = seq("macro");
    check("macro precision", case, Some(s.macro_precision), macro_[0]);
    check("macro recall", case, Some(s.macro_recall), macro_[1]);
    check("macro f1", case, Some(s.macro_f1), macro_[2]);
    check(
        "accuracy",
        case,
        s.accuracy,
        want["accuracy"].as_f64().unwrap(),
    );
    let ci = seq("accuracy_ci");
    check("accuracy low", case, s.accuracy_low, ci[0]);
    check("accuracy high", case, s.accuracy_high, ci[1]);
    assert_eq!(
        s.unknown_labels,
        want["unknown_labels"].as_u64().unwrap(),
        "{}",
        name(case)
    );
}

/// Records spread over three replicas, each label accepted by a replica that did not log the
/// request: the merged windows give the report one window of everything gives, and the
/// samples are the same items.
#[test]
fn merged_replica_windows_report_what_one_window_reports() {
    for case in cases() {
        let mut one = Aggregates::default();
        let mut replicas = vec![Aggregates::default(); 3];
        for (i, (serving, shadow, truth)) in requests(&case, 1).into_iter().enumerate() {
            for agg in [&mut one, &mut replicas[i % 3]] {
                agg.record(&serving);
                agg.record(&shadow);
            }
            let both = [serving, shadow];
            one.record_feedback(&both, &truth, &[]);
            replicas[(i + 1) % 3].record_feedback(&both, &truth, &[]);
        }
        let mut merged = Aggregates::default();
        replicas.iter().rev().for_each(|r| merged.merge(r));
        let (a, b) = (
            one.pair("m", "v1", "v2", |_| true),
            merged.pair("m", "v1", "v2", |_| true),
        );
        assert_eq!(a.values, b.values);
        assert_eq!(a.labelled_values, b.labelled_values);
        assert_eq!(a.transitions, b.transitions);
        assert_eq!(
            (&a.primary_values, &a.shadow_values),
            (&b.primary_values, &b.shadow_values)
        );
        for (version, role) in [("v1", Role::Serving), ("v2", Role::Shadow)] {
            let (x, y) = (
                one.variant("m", version, role, |_| true),
                merged.variant("m", version, role, |_| true),
            );
            assert_eq!(
                (&x.confusion, &x.predicted, &x.values),
                (&y.confusion, &y.predicted, &y.values)
            );
        }
        let spec = spec(&case, RegressionTest::Wilcoxon);
        let (ra, rb) = (report_of(&one, &spec), report_of(&merged, &spec));
        assert_eq!(
            (ra.recommendation, ra.agreement, ra.labelled, ra.wilcoxon),
            (rb.recommendation, rb.agreement, rb.labelled, rb.wilcoxon)
        );
        assert_eq!(
            (&ra.transitions, &ra.prediction_chi2, &ra.drift),
            (&rb.transitions, &rb.prediction_chi2, &rb.drift)
        );
        for (x, y) in [
            (ra.primary_mae, rb.primary_mae),
            (ra.shadow_rmse, rb.shadow_rmse),
            (ra.p_value, rb.p_value),
        ] {
            if let (Some(x), Some(y)) = (x, y) {
                assert!((x - y).abs() <= 1e-9 * (1.0 + x.abs()), "{x} vs {y}");
            }
        }
    }
}
