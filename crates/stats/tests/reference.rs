//! Compares every test of the statistics engine with reference values computed by
//! scipy/statsmodels (`tools/gen_stats_fixtures.py` writes `tests/fixtures/*.json`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use switchyard_stats::{
    bayes, chi2, mann_whitney, mcnemar, multiple, power, proportions, ttest, Proportion,
};

fn cases(name: &str) -> Vec<Value> {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: Value = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"].as_array().unwrap().clone();
    assert!(cases.len() >= 10, "{name}: only {} cases", cases.len());
    cases
}

fn f(case: &Value, key: &str) -> f64 {
    case[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {case}"))
}

fn u(case: &Value, key: &str) -> u64 {
    case[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {case}"))
}

fn floats(case: &Value, key: &str) -> Vec<f64> {
    case[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

/// Relative tolerance 1e-7 with an absolute floor of 1e-12: tight enough to catch a wrong
/// formula or convention, loose enough for different special-function implementations.
#[track_caller]
fn check(what: &str, case: &Value, actual: f64, expected: f64) {
    let tolerance = 1e-12 + 1e-7 * expected.abs();
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: got {actual:e}, expected {expected:e} (case {case})"
    );
}

fn arm(case: &Value, side: &str) -> Proportion {
    Proportion {
        successes: u(case, &format!("successes_{side}")),
        trials: u(case, &format!("trials_{side}")),
    }
}

#[test]
fn mcnemar_matches_statsmodels() {
    for case in cases("mcnemar") {
        let r = mcnemar::mcnemar(u(&case, "b"), u(&case, "c"));
        check("statistic", &case, r.statistic, f(&case, "statistic"));
        check("p_value", &case, r.p_value, f(&case, "p_value"));
        check(
            "exact_p_value",
            &case,
            r.exact_p_value,
            f(&case, "exact_p_value"),
        );
    }
}

#[test]
fn ztest_matches_statsmodels() {
    for case in cases("ztest") {
        let r =
            proportions::two_proportion_ztest(arm(&case, "a"), arm(&case, "b"), f(&case, "alpha"))
                .unwrap();
        for (key, value) in [
            ("z", r.z),
            ("p_value", r.p_value),
            ("diff", r.diff),
            ("ci_low", r.ci_low),
            ("ci_high", r.ci_high),
            ("newcombe_low", r.newcombe_low),
            ("newcombe_high", r.newcombe_high),
        ] {
            check(key, &case, value, f(&case, key));
        }
        match case["relative_lift"].as_f64() {
            Some(lift) => check("relative_lift", &case, r.relative_lift.unwrap(), lift),
            None => assert_eq!(r.relative_lift, None, "{case}"),
        }
    }
}

#[test]
fn sample_size_matches_formula_in_scipy() {
    for case in cases("sample_size") {
        let r = power::sample_size_two_proportions(
            f(&case, "baseline"),
            f(&case, "mde"),
            f(&case, "alpha"),
            f(&case, "power"),
        )
        .unwrap();
        assert_eq!(r.per_variant, u(&case, "per_variant"), "{case}");
        assert_eq!(r.total, 2 * r.per_variant);
    }
}

#[test]
fn power_matches_formula_in_scipy() {
    for case in cases("power") {
        let p1 = f(&case, "p1");
        let achieved =
            power::power_two_proportions(p1, f(&case, "p2") - p1, u(&case, "n"), f(&case, "alpha"))
                .unwrap();
        check("power", &case, achieved, f(&case, "power"));
    }
}

#[test]
fn paired_ttest_matches_scipy_from_samples_and_summary() {
    for case in cases("ttest_paired") {
        let from_samples = ttest::paired(&floats(&case, "a"), &floats(&case, "b")).unwrap();
        let from_summary =
            ttest::paired_from_summary(f(&case, "mean_diff"), f(&case, "sd_diff"), u(&case, "n"))
                .unwrap();
        for r in [from_samples, from_summary] {
            check("t", &case, r.t, f(&case, "t"));
            check("p_value", &case, r.p_value, f(&case, "p_value"));
            check("df", &case, r.df, f(&case, "df"));
        }
    }
}

#[test]
fn welch_matches_scipy() {
    for case in cases("welch") {
        let r = ttest::welch(&floats(&case, "a"), &floats(&case, "b")).unwrap();
        check("t", &case, r.t, f(&case, "t"));
        check("p_value", &case, r.p_value, f(&case, "p_value"));
        check("df", &case, r.df, f(&case, "df"));
    }
}

#[test]
fn chi2_contingency_matches_scipy() {
    for case in cases("chi2") {
        let table: Vec<Vec<u64>> = case["table"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect()
            })
            .collect();
        let r = chi2::contingency(&table).unwrap();
        check("statistic", &case, r.statistic, f(&case, "statistic"));
        check("p_value", &case, r.p_value, f(&case, "p_value"));
        assert_eq!(r.dof, u(&case, "dof"), "{case}");
    }
}

#[test]
fn srm_matches_scipy_chisquare() {
    for case in cases("srm") {
        let observed: Vec<u64> = case["observed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let r = chi2::sample_ratio_mismatch(&observed, &floats(&case, "weights"), 0.001).unwrap();
        check("statistic", &case, r.statistic, f(&case, "statistic"));
        check("p_value", &case, r.p_value, f(&case, "p_value"));
        assert_eq!(r.mismatch, f(&case, "p_value") < 0.001, "{case}");
    }
}

#[test]
fn mann_whitney_matches_scipy() {
    for case in cases("mannwhitney") {
        let r = mann_whitney::mann_whitney_u(&floats(&case, "a"), &floats(&case, "b")).unwrap();
        check("u", &case, r.u, f(&case, "u"));
        check("p_value", &case, r.p_value, f(&case, "p_value"));
    }
}

#[test]
fn bayes_matches_numerical_integration() {
    for case in cases("bayes") {
        let r = bayes::beta_binomial_ab(arm(&case, "a"), arm(&case, "b")).unwrap();
        // Losses are differences of near-equal terms for large counts: compare absolutely.
        for (key, value) in [
            ("prob_b_beats_a", r.prob_b_beats_a),
            ("expected_loss_a", r.expected_loss_a),
            ("expected_loss_b", r.expected_loss_b),
        ] {
            let expected = f(&case, key);
            assert!(
                (value - expected).abs() <= 1e-9,
                "{key}: got {value:e}, expected {expected:e} ({case})"
            );
        }
    }
}

#[test]
fn multiple_comparisons_match_statsmodels() {
    for case in cases("multiple") {
        let p = floats(&case, "p_values");
        let bonferroni = multiple::bonferroni(&p).unwrap();
        let holm = multiple::holm(&p).unwrap();
        for (i, (b, h)) in bonferroni.iter().zip(&holm).enumerate() {
            check("bonferroni", &case, *b, floats(&case, "bonferroni")[i]);
            check("holm", &case, *h, floats(&case, "holm")[i]);
        }
        assert_eq!(holm.len(), p.len());
    }
}
