//! Runs `switchyard stats …` as a process: JSON keys, the seed's worked examples against the
//! scipy/statsmodels fixtures, and every class of bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use serde_json::Value;

fn switchyard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .unwrap()
}

fn json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = switchyard(&all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The fixture case of `file` whose fields match `pick`.
fn fixture(file: &str, pick: impl Fn(&Value) -> bool) -> Value {
    let path = format!(
        "{}/../stats/tests/fixtures/{file}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| pick(c))
        .cloned()
        .unwrap()
}

#[track_caller]
fn close(actual: &Value, expected: &Value) {
    let (a, e) = (actual.as_f64().unwrap(), expected.as_f64().unwrap());
    assert!(
        (a - e).abs() <= 1e-12 + 1e-9 * e.abs(),
        "got {a}, expected {e}"
    );
}

#[test]
fn seed_mcnemar_example_b50_c30() {
    // The seed prints chi² = 5.0 (no continuity correction); statsmodels' corrected value is
    // 4.5125 with p = 0.0336.
    let out = json(&["stats", "mcnemar", "--b", "50", "--c", "30"]);
    let reference = fixture("mcnemar", |c| c["b"] == 50 && c["c"] == 30);
    for key in ["statistic", "p_value", "exact_p_value"] {
        close(&out[key], &reference[key]);
    }
}

#[test]
fn seed_ztest_example_90_vs_92_at_1000() {
    // The seed says Z = 1.88, p = 0.06; the pooled z-test gives z = 1.563, p = 0.118.
    let out = json(&[
        "stats",
        "ztest",
        "--successes-a",
        "900",
        "--trials-a",
        "1000",
        "--successes-b",
        "920",
        "--trials-b",
        "1000",
    ]);
    let reference = fixture("ztest", |c| {
        c["successes_a"] == 900
            && c["trials_a"] == 1000
            && c["successes_b"] == 920
            && c["alpha"] == 0.05
    });
    for key in [
        "z",
        "p_value",
        "diff",
        "ci_low",
        "ci_high",
        "newcombe_low",
        "newcombe_high",
        "relative_lift",
    ] {
        close(&out[key], &reference[key]);
    }
}

#[test]
fn seed_sample_size_table_is_corrected() {
    // The seed's table says 2,149 per variant for 90% → 92%; the formula gives 3,213.
    let out = json(&[
        "stats",
        "sample-size",
        "--baseline",
        "0.90",
        "--mde",
        "0.02",
    ]);
    let reference = fixture("sample_size", |c| {
        c["baseline"] == 0.9 && c["mde"] == 0.02 && c["alpha"] == 0.05 && c["power"] == 0.8
    });
    assert_eq!(out["per_variant"], reference["per_variant"]);
    assert_eq!(
        out["per_variant"].as_u64().unwrap() * 2,
        out["total"].as_u64().unwrap()
    );
    // A negative effect is a drop of the same size from the other side.
    let down = json(&[
        "stats",
        "sample-size",
        "--baseline",
        "0.92",
        "--mde",
        "-0.02",
    ]);
    assert_eq!(down["per_variant"], out["per_variant"]);
}

#[test]
fn every_subcommand_prints_its_json_keys() {
    let dir = tempdir();
    let a = dir.join("a.txt");
    let b = dir.join("b.txt");
    let pairs = dir.join("pairs.csv");
    std::fs::write(&a, "latency_ms\n12.1\n13.5\n11.9\n14.2\n12.8\n").unwrap();
    std::fs::write(&b, "# candidate\n15.0\n14.1\n16.3\n\n15.9\n").unwrap();
    std::fs::write(&pairs, "a,b\n1.0,0.5\n2.0,1.0\n3.5,3.0\n4.0,3.1\n").unwrap();
    let (a, b, pairs) = (
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        pairs.to_str().unwrap(),
    );
    let counts = [
        "--successes-a",
        "90",
        "--trials-a",
        "100",
        "--successes-b",
        "95",
        "--trials-b",
        "100",
    ];
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (
            vec!["mcnemar", "--b", "3", "--c", "9"],
            &["statistic", "p_value", "exact_p_value"],
        ),
        (
            [&["ztest"][..], &counts].concat(),
            &[
                "z",
                "p_value",
                "diff",
                "ci_low",
                "ci_high",
                "newcombe_low",
                "newcombe_high",
                "relative_lift",
            ],
        ),
        (
            vec!["sample-size", "--baseline", "0.1", "--mde", "0.01"],
            &["per_variant", "total"],
        ),
        (
            vec![
                "ttest-paired",
                "--mean-diff",
                "0.3",
                "--sd-diff",
                "1.2",
                "--n",
                "40",
            ],
            &["t", "p_value", "df"],
        ),
        (
            vec!["ttest-paired", "--file", pairs],
            &["t", "p_value", "df"],
        ),
        (
            vec!["welch", "--file-a", a, "--file-b", b],
            &["t", "p_value", "df"],
        ),
        (
            vec!["mann-whitney", "--file-a", a, "--file-b", b],
            &["u", "p_value"],
        ),
        (
            vec!["chi2", "--table", "50,30;20,40"],
            &["statistic", "p_value", "dof"],
        ),
        (
            vec!["srm", "--observed", "5100,4900", "--weights", "0.5,0.5"],
            &["statistic", "p_value", "mismatch"],
        ),
        (
            [&["bayes"][..], &counts].concat(),
            &["prob_b_beats_a", "expected_loss_a", "expected_loss_b"],
        ),
    ];
    for (args, keys) in cases {
        let out = json(&[&["stats"][..], &args].concat());
        for key in keys {
            assert!(!out[key].is_null(), "{args:?}: missing {key} in {out}");
        }
        // The human form names the test and prints without error too.
        let human = switchyard(&[&["stats"][..], &args].concat());
        assert!(human.status.success());
        assert!(!human.stdout.is_empty());
    }
    // The paired file really was read as pairs: mean difference of (0.5, 1.0, 0.5, 0.9).
    let paired = json(&["stats", "ttest-paired", "--file", pairs]);
    close(&paired["mean_diff"], &serde_json::json!(0.725));
    assert_eq!(paired["df"], 3.0);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-cli-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn bad_input_names_the_flag_and_exits_non_zero() {
    let dir = tempdir();
    let ragged = dir.join("ragged.csv");
    std::fs::write(&ragged, "1,2\n3\n").unwrap();
    let words = dir.join("words.txt");
    std::fs::write(&words, "1.0\n2.0\nabc\n").unwrap();
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "# nothing\n").unwrap();
    let missing = dir.join("missing.txt");
    let (ragged, words, empty, missing) = (
        ragged.to_str().unwrap(),
        words.to_str().unwrap(),
        empty.to_str().unwrap(),
        missing.to_str().unwrap(),
    );
    let ztest = |sa: &'static str, na: &'static str, alpha: &'static str| {
        vec![
            "ztest",
            "--successes-a",
            sa,
            "--trials-a",
            na,
            "--successes-b",
            "5",
            "--trials-b",
            "10",
            "--alpha",
            alpha,
        ]
    };
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["mcnemar", "--b", "-3", "--c", "2"],
            "--b",
            "non-negative",
        ),
        (
            vec!["mcnemar", "--b", "2.5", "--c", "2"],
            "--b",
            "whole number",
        ),
        (ztest("-1", "10", "0.05"), "--successes-a", "non-negative"),
        (ztest("11", "10", "0.05"), "--successes-a", "exceed"),
        (ztest("1", "0", "0.05"), "--trials-a", "at least 1"),
        (ztest("1", "10", "1.5"), "--alpha", "between 0 and 1"),
        (ztest("1", "10", "0"), "--alpha", "between 0 and 1"),
        (
            vec![
                "bayes",
                "--successes-a",
                "3",
                "--trials-a",
                "2",
                "--successes-b",
                "1",
                "--trials-b",
                "2",
            ],
            "--successes-a",
            "exceed",
        ),
        (
            vec!["sample-size", "--baseline", "0.9", "--mde", "0.2"],
            "--mde",
            "between 0 and 1",
        ),
        (
            vec!["sample-size", "--baseline", "1.2", "--mde", "0.01"],
            "--baseline",
            "between 0 and 1",
        ),
        (
            vec![
                "sample-size",
                "--baseline",
                "0.5",
                "--mde",
                "0.1",
                "--power",
                "1",
            ],
            "--power",
            "between 0 and 1",
        ),
        (
            vec![
                "sample-size",
                "--baseline",
                "0.5",
                "--mde",
                "0.1",
                "--alpha",
                "-0.1",
            ],
            "--alpha",
            "between 0 and 1",
        ),
        (vec!["chi2", "--table", "1,2;3"], "--table", "ragged"),
        (vec!["chi2", "--table", ""], "--table", "empty"),
        (vec!["chi2", "--table", "1,x;3,4"], "--table", "row 1"),
        (vec!["chi2", "--table", "0,0;3,4"], "--table", "all zeros"),
        (
            vec!["srm", "--observed", "5100,4900", "--weights", "0.5,0.6"],
            "--weights",
            "sum to 1",
        ),
        (
            vec!["srm", "--observed", "5100,4900", "--weights", "0.3,0.3,0.4"],
            "--weights",
            "has 3 values",
        ),
        (
            vec!["srm", "--observed", "5100,-4", "--weights", "0.5,0.5"],
            "--observed",
            "non-negative",
        ),
        (
            vec![
                "ttest-paired",
                "--mean-diff",
                "0.1",
                "--sd-diff",
                "-1",
                "--n",
                "10",
            ],
            "--sd-diff",
            ">= 0",
        ),
        (
            vec![
                "ttest-paired",
                "--mean-diff",
                "0.1",
                "--sd-diff",
                "1",
                "--n",
                "1",
            ],
            "--n",
            "at least 2",
        ),
        (
            vec!["ttest-paired", "--mean-diff", "0.1"],
            "--mean-diff",
            "give all three",
        ),
        (
            vec!["ttest-paired", "--file", ragged],
            "--file",
            "expected 2 columns",
        ),
        (
            vec!["welch", "--file-a", missing, "--file-b", words],
            "--file-a",
            "cannot read",
        ),
        (
            vec!["welch", "--file-a", words, "--file-b", words],
            "--file-a",
            "line 3",
        ),
        (
            vec!["mann-whitney", "--file-a", empty, "--file-b", words],
            "--file-a",
            "no values",
        ),
    ];
    for (args, flag, words) in cases {
        let out = switchyard(&[&["stats"][..], &args].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(flag),
            "{args:?}: stderr does not name {flag}: {stderr}"
        );
        assert!(
            stderr.contains(words),
            "{args:?}: stderr does not say '{words}': {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?} printed a result");
    }
}
