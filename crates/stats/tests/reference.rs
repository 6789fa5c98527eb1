//! Compares every test of the statistics engine with reference values computed by
//! scipy/statsmodels (`tools/gen_stats_fixtures.py` writes `tests/fixtures/*.json`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use switchyard_stats::classification::ConfusionMatrix;
use switchyard_stats::sequential::{self, MsprtConfig};
use switchyard_stats::wilcoxon::{wilcoxon, WilcoxonMethod};
use switchyard_stats::{
    bayes, chi2, drift, mann_whitney, mcnemar, multiple, power, proportions, stratified, ttest,
    Moments, Proportion,
};

fn cases(name: &str) -> Vec<Value> {
    cases_at_least(name, 10)
}

fn cases_at_least(name: &str, min: usize) -> Vec<Value> {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: Value = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"].as_array().unwrap().clone();
    assert!(cases.len() >= min, "{name}: only {} cases", cases.len());
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

/// For interval ends, which may cross zero: relative 1e-7 of the interval's scale.
#[track_caller]
fn check_abs(what: &str, case: &Value, actual: f64, expected: f64) {
    let scale = 1e-9 + f(case, "ci_high").abs().max(f(case, "ci_low").abs());
    assert!(
        (actual - expected).abs() <= 1e-7 * scale,
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
        let (lo, hi) = r.confidence_interval(0.05).unwrap();
        check_abs("ci_low", &case, lo, f(&case, "ci_low"));
        check_abs("ci_high", &case, hi, f(&case, "ci_high"));
        let (lo, hi) = r.confidence_interval(0.10).unwrap();
        check_abs("ci90_low", &case, lo, f(&case, "ci90_low"));
        check_abs("ci90_high", &case, hi, f(&case, "ci90_high"));
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
fn mantel_haenszel_matches_statsmodels_stratified_table() {
    let arm = |v: &Value| Proportion {
        successes: v[0].as_u64().unwrap(),
        trials: v[1].as_u64().unwrap(),
    };
    for case in cases("stratified") {
        let strata: Vec<(Proportion, Proportion)> = case["strata"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (arm(&s[0]), arm(&s[1])))
            .collect();
        let r = stratified::mantel_haenszel(&strata, f(&case, "alpha")).unwrap();
        assert_eq!(r.strata as u64, u(&case, "used"), "{case}");
        for (name, got) in [
            ("odds_ratio", r.odds_ratio),
            ("ci_low", r.ci_low),
            ("ci_high", r.ci_high),
            ("statistic", r.statistic),
            ("p_value", r.p_value),
        ] {
            check(name, &case, got, f(&case, name));
        }
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

/// U, the p-value and the common-language effect size `U / (n_a n_b)` on larger samples, heavy
/// tails, ties and a mass at zero; and on the arms of a heavy-tailed A/B/n (each variant
/// against the control, as the A/B/n compares them), with Holm and Bonferroni over them.
#[test]
fn mann_whitney_and_its_effect_size_match_scipy() {
    for case in cases_at_least("rank_tests", 6) {
        let runs: Vec<(Vec<f64>, Vec<f64>, usize)> = match case["kind"].as_str().unwrap() {
            "pair" => vec![(floats(&case, "a"), floats(&case, "b"), 0)],
            _ => {
                let arms: Vec<Vec<f64>> = serde_json::from_value(case["arms"].clone()).unwrap();
                (1..arms.len())
                    .map(|i| (arms[i].clone(), arms[0].clone(), i - 1))
                    .collect()
            }
        };
        let mut ps = Vec::new();
        for (a, b, i) in runs {
            let r = mann_whitney::mann_whitney_u(&a, &b).unwrap();
            let (u, p, cl) = if case["kind"] == "pair" {
                (
                    f(&case, "u"),
                    f(&case, "p_value"),
                    f(&case, "common_language"),
                )
            } else {
                let m = &case["mann_whitney"];
                (
                    floats(m, "statistic")[i],
                    floats(m, "p_values")[i],
                    floats(m, "common_language")[i],
                )
            };
            check("u", &case, r.u, u);
            check("p_value", &case, r.p_value, p);
            check("common_language", &case, r.common_language, cl);
            assert_eq!((r.n_a, r.n_b), (a.len() as u64, b.len() as u64));
            ps.push(r.p_value);
        }
        if case["kind"] == "arms" {
            let m = &case["mann_whitney"];
            for (method, adjusted) in [
                ("holm", multiple::holm(&ps).unwrap()),
                ("bonferroni", multiple::bonferroni(&ps).unwrap()),
            ] {
                for (got, want) in adjusted.iter().zip(floats(m, method)) {
                    check(method, &case, *got, want);
                }
            }
        }
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

#[test]
fn wilcoxon_matches_scipy_exact_approx_and_auto() {
    for case in cases_at_least("wilcoxon", 6) {
        let (x, y) = (floats(&case, "x"), floats(&case, "y"));
        let approx = wilcoxon(&x, &y, WilcoxonMethod::Approx).unwrap();
        assert_eq!(approx.n, u(&case, "n"), "{case}");
        check("statistic", &case, approx.statistic, f(&case, "statistic"));
        check("|z|", &case, approx.z.abs(), f(&case, "z_abs"));
        check("p_approx", &case, approx.p_value, f(&case, "p_approx"));
        match case.get("p_exact") {
            Some(p) => {
                let exact = wilcoxon(&x, &y, WilcoxonMethod::Exact).unwrap();
                check("p_exact", &case, exact.p_value, p.as_f64().unwrap());
            }
            None => assert!(wilcoxon(&x, &y, WilcoxonMethod::Exact).is_err()),
        }
        let auto = wilcoxon(&x, &y, WilcoxonMethod::Auto).unwrap();
        check("p_auto", &case, auto.p_value, f(&case, "p_auto"));
    }
}

fn indices(case: &Value, key: &str) -> Vec<usize> {
    case[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect()
}

#[test]
fn confusion_matrix_and_scores_match_scikit_learn() {
    for case in cases_at_least("classification", 6) {
        let k = u(&case, "k") as usize;
        let m =
            ConfusionMatrix::from_pairs(k, &indices(&case, "truth"), &indices(&case, "predicted"))
                .unwrap();
        let want: Vec<Vec<u64>> = serde_json::from_value(case["counts"].clone()).unwrap();
        assert_eq!(m.counts, want, "{case}");
        let scores = m.scores();
        for (c, s) in scores.iter().enumerate() {
            check(
                "precision",
                &case,
                s.precision,
                floats(&case, "precision")[c],
            );
            check("recall", &case, s.recall, floats(&case, "recall")[c]);
            check("f1", &case, s.f1, floats(&case, "f1")[c]);
            assert_eq!(s.support, indices(&case, "support")[c] as u64);
        }
        let (p, r, f1) = m.macro_scores().unwrap();
        let macro_ = floats(&case, "macro");
        check("macro precision", &case, p, macro_[0]);
        check("macro recall", &case, r, macro_[1]);
        check("macro f1", &case, f1, macro_[2]);
        check(
            "accuracy",
            &case,
            m.accuracy().unwrap(),
            f(&case, "accuracy"),
        );
        let right = (0..k).map(|i| m.counts[i][i]).sum();
        let (lo, hi) =
            proportions::wilson_interval(Proportion::new(right, m.total()).unwrap(), 0.05).unwrap();
        let ci = floats(&case, "accuracy_ci");
        check("accuracy ci low", &case, lo, ci[0]);
        check("accuracy ci high", &case, hi, ci[1]);
    }
}

/// The bounded, named counts give the matrix and scores scikit-learn gives on the same pairs.
#[test]
fn named_class_matrices_match_scikit_learn() {
    use switchyard_stats::classification::ClassMatrix;
    for case in cases_at_least("classification", 6) {
        let k = u(&case, "k") as usize;
        let mut m = ClassMatrix::default();
        // Names that sort like the indices: c0, c1, …
        for (t, p) in indices(&case, "truth")
            .iter()
            .zip(indices(&case, "predicted"))
        {
            m.add(&format!("c{t}"), &format!("c{p}"));
        }
        let want: Vec<Vec<u64>> = serde_json::from_value(case["counts"].clone()).unwrap();
        // Kept classes are those seen; sklearn's rows cover 0..k.
        let seen: Vec<usize> = (0..k)
            .filter(|&i| m.classes().contains(&format!("c{i}")))
            .collect();
        for (a, &i) in seen.iter().enumerate() {
            for (b, &j) in seen.iter().enumerate() {
                assert_eq!(m.counts()[a][b], want[i][j], "{case}");
            }
        }
        assert_eq!(m.total(), want.iter().flatten().sum::<u64>());
        assert_eq!(m.same(), (0..k).map(|i| want[i][i]).sum::<u64>());
    }
}

#[test]
fn drift_matches_scipy_jensenshannon_and_the_psi_formula() {
    for case in cases_at_least("drift", 6) {
        let d = drift::drift(&floats(&case, "expected"), &floats(&case, "actual")).unwrap();
        check("psi", &case, d.psi, f(&case, "psi"));
        check("js_distance", &case, d.js_distance, f(&case, "js_distance"));
    }
}

#[test]
fn value_drift_matches_numpy_deciles_and_scipy_jensenshannon() {
    for case in cases_at_least("value_drift", 6) {
        let hist = |key: &str| {
            let mut h = switchyard_stats::SignedLogHistogram::default();
            floats(&case, key).iter().for_each(|&x| h.record(x));
            h
        };
        let d = drift::value_drift(&hist("expected"), &hist("actual")).unwrap();
        let bins = |key: &str| -> Vec<u64> { serde_json::from_value(case[key].clone()).unwrap() };
        assert_eq!(d.expected, bins("expected_bins"), "{}", case["name"]);
        assert_eq!(d.actual, bins("actual_bins"), "{}", case["name"]);
        check("psi", &case, d.drift.psi, f(&case, "psi"));
        check(
            "js_distance",
            &case,
            d.drift.js_distance,
            f(&case, "js_distance"),
        );
    }
}

#[test]
fn signed_histogram_counts_underestimates_as_numpy() {
    let mut checked = 0;
    for case in cases_at_least("shadow_pairs", 6) {
        if case["kind"] != "regression" {
            continue;
        }
        let mut h = switchyard_stats::SignedLogHistogram::default();
        for (s, t) in floats(&case, "shadow").iter().zip(floats(&case, "truth")) {
            h.record(s - t);
        }
        // `by` is at least 2% away from every error: no bucket straddles it.
        assert_eq!(
            h.count_below(-f(&case, "underestimate_by")),
            u(&case, "underestimates"),
            "{}",
            case["name"]
        );
        checked += 1;
    }
    assert!(checked >= 5);
}

fn bools(case: &Value, key: &str) -> Vec<bool> {
    case[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_bool().unwrap())
        .collect()
}

/// k arms against the first: the per-variant tests, then Holm and Bonferroni over them, as
/// scipy and statsmodels.
#[test]
fn abn_tests_and_adjustments_match_scipy_and_statsmodels() {
    for case in cases_at_least("abn", 6) {
        let alpha = f(&case, "alpha");
        let p: Vec<f64> = match case["kind"].as_str().unwrap() {
            "mean" => {
                let arms: Vec<Vec<f64>> = serde_json::from_value(case["arms"].clone()).unwrap();
                let control = Moments::from_slice(&arms[0]);
                arms[1..]
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let r =
                            ttest::welch_from_moments(&Moments::from_slice(v), &control).unwrap();
                        check("t", &case, r.t, floats(&case, "t")[i]);
                        let (lo, hi) = r.confidence_interval(0.05).unwrap();
                        let scale =
                            floats(&case, "ci_high")[i].abs() + floats(&case, "ci_low")[i].abs();
                        assert!(
                            (lo - floats(&case, "ci_low")[i]).abs() <= 1e-7 * scale,
                            "{case}"
                        );
                        assert!(
                            (hi - floats(&case, "ci_high")[i]).abs() <= 1e-7 * scale,
                            "{case}"
                        );
                        r.p_value
                    })
                    .collect()
            }
            _ => {
                let (s, n) = (indices(&case, "successes"), indices(&case, "trials"));
                let arm = |i: usize| Proportion::new(s[i] as u64, n[i] as u64).unwrap();
                (1..s.len())
                    .map(|i| {
                        let r = proportions::two_proportion_ztest(arm(0), arm(i), alpha).unwrap();
                        check("z", &case, r.z, floats(&case, "z")[i - 1]);
                        r.p_value
                    })
                    .collect()
            }
        };
        for (i, (got, want)) in p.iter().zip(floats(&case, "p_values")).enumerate() {
            check(&format!("p_values[{i}]"), &case, *got, want);
        }
        for (method, adjusted) in [
            ("holm", multiple::holm(&p).unwrap()),
            ("bonferroni", multiple::bonferroni(&p).unwrap()),
        ] {
            for (i, (got, want)) in adjusted.iter().zip(floats(&case, method)).enumerate() {
                check(&format!("{method}[{i}]"), &case, *got, want);
            }
            let rejected: Vec<bool> = adjusted.iter().map(|q| *q <= alpha).collect();
            assert_eq!(
                rejected,
                bools(&case, &format!("reject_{method}")),
                "{method} {}",
                case["name"]
            );
        }
    }
}

/// The closed-form confidence sequence equals the roots scipy finds of `Λ(θ) = 1/α`.
#[test]
fn confidence_sequences_match_the_roots_of_the_mixture_boundary() {
    for case in cases_at_least("confidence_sequence", 6) {
        let (tau, alpha) = (f(&case, "tau"), f(&case, "alpha"));
        let config = MsprtConfig {
            alpha,
            tau,
            min_trials: 2,
        };
        let (lo, hi, p) = match case["kind"].as_str().unwrap() {
            "bare" => {
                let (lo, hi) = sequential::confidence_sequence(
                    f(&case, "diff"),
                    f(&case, "variance"),
                    tau,
                    alpha,
                )
                .unwrap();
                (lo, hi, None)
            }
            "means" => {
                let look = sequential::msprt_two_means(
                    &Moments::from_slice(&floats(&case, "a")),
                    &Moments::from_slice(&floats(&case, "b")),
                    &config,
                )
                .unwrap();
                check("diff", &case, look.diff, f(&case, "diff"));
                (look.ci_low, look.ci_high, Some(look.p_value))
            }
            _ => {
                let look =
                    sequential::msprt_two_proportions(arm(&case, "a"), arm(&case, "b"), &config)
                        .unwrap();
                check("diff", &case, look.diff, f(&case, "diff"));
                (look.ci_low, look.ci_high, Some(look.p_value))
            }
        };
        check_abs("ci_low", &case, lo, f(&case, "ci_low"));
        check_abs("ci_high", &case, hi, f(&case, "ci_high"));
        if let Some(p) = p {
            check("p_value", &case, p, f(&case, "p_value"));
        }
    }
}
