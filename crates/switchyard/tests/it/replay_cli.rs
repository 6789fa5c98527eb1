//! `switchyard replay` end to end: the binary builds the models from a configuration file,
//! replays a recorded JSONL file through both versions and prints the shadow report; with
//! `--exit-code` a REJECT exits 4; a bad line exits 2 naming it.

use std::path::Path;
use std::process::Command;

use serde_json::json;
use switchyard_core::rollout::Recommendation;
use switchyard_server::api::ReplayReport;

use crate::support::repo;

fn replay(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("replay")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The 1 000 labelled rows of the shipped validation set as JSONL (bare OIP v2 bodies with a
/// `label` beside them).
fn recorded(path: &Path) {
    let text = std::fs::read_to_string(repo().join("models/validation_yield.csv")).unwrap();
    let lines: Vec<String> = text
        .lines()
        .skip(1)
        .take(1_000)
        .map(|line| {
            let cells: Vec<f64> = line.split(',').map(|c| c.parse().unwrap()).collect();
            let (label, features) = cells.split_last().unwrap();
            json!({
                "inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": features}],
                "label": *label as i64,
            })
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn replay_judges_a_candidate_on_a_recorded_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    let models = repo().join("models");
    std::fs::write(
        &config,
        format!(
            "models:\n  yield:\n    versions:\n      v1: {{ onnx: {m}/yield_v1.onnx }}\n      v2: {{ onnx: {m}/yield_v2.onnx }}\n      v3: {{ onnx: {m}/yield_v3.onnx }}\n    serve: {{ kind: single, version: v1 }}\n",
            m = models.display()
        ),
    )
    .unwrap();
    let file = dir.path().join("recorded.jsonl");
    recorded(&file);
    let (config, file) = (config.to_str().unwrap(), file.to_str().unwrap());

    // JSON: the typed report.
    let (code, stdout, stderr) = replay(&[
        "-c",
        config,
        "--model",
        "yield",
        "--primary",
        "v1",
        "--candidate",
        "v2",
        "--input",
        file,
        "--rate",
        "5000",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: ReplayReport = serde_json::from_str(&stdout).unwrap();
    assert_eq!((report.requests, report.labelled_requests), (1_000, 1_000));
    let s = &report.analysis.report;
    assert_eq!(s.labelled, 1_000);
    assert_eq!(s.recommendation, Recommendation::Promote, "{}", s.reason);
    assert!(s.shadow_accuracy > s.primary_accuracy, "{s:?}");

    // Text, with a spec file: the rules' lines and the recommendation.
    let spec = dir.path().join("shadow.yaml");
    std::fs::write(
        &spec,
        "name: v3-check\nmodel: yield\nkind: shadow\nprimary: v1\ncandidate: v3\nalpha: 0.01\n",
    )
    .unwrap();
    let (code, stdout, stderr) = replay(&[
        "-c",
        config,
        "--spec",
        spec.to_str().unwrap(),
        "--input",
        file,
        "--exit-code",
    ]);
    assert_eq!(code, 4, "REJECT with --exit-code exits 4: {stdout}{stderr}");
    assert!(stderr.contains("the replay recommends REJECT"), "{stderr}");
    for needle in [
        "v1 (primary) → v3 (candidate)",
        "1000 replayed, 1000 labelled",
        "McNemar",
        "recommendation   REJECT",
    ] {
        assert!(stdout.contains(needle), "missing '{needle}' in:\n{stdout}");
    }

    // Markdown to a file.
    let md = dir.path().join("replay.md");
    let (code, _, stderr) = replay(&[
        "-c",
        config,
        "--model",
        "yield",
        "--primary",
        "v1",
        "--candidate",
        "v2",
        "--input",
        file,
        "--format",
        "md",
        "-o",
        md.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(text.starts_with("# Replay: v1 → v2 on yield"), "{text}");
    assert!(text.contains("| recommendation | PROMOTE |"), "{text}");

    // Bad input: the line that is wrong, exit 2, no report.
    let broken = dir.path().join("broken.jsonl");
    let good = std::fs::read_to_string(file).unwrap();
    let first = good.lines().next().unwrap();
    std::fs::write(&broken, format!("{first}\n{{\"inputs\": 3\n")).unwrap();
    let (code, stdout, stderr) = replay(&[
        "-c",
        config,
        "--model",
        "yield",
        "--primary",
        "v1",
        "--candidate",
        "v2",
        "--input",
        broken.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("--input") && stderr.contains("broken.jsonl line 2"),
        "{stderr}"
    );
    let (code, _, stderr) = replay(&[
        "-c",
        config,
        "--model",
        "yield",
        "--primary",
        "v1",
        "--candidate",
        "v9",
        "--input",
        file,
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("unknown version 'v9'"), "{stderr}");
    let (code, _, stderr) = replay(&[
        "-c",
        config,
        "--model",
        "yield",
        "--primary",
        "v1",
        "--candidate",
        "v2",
        "--input",
        dir.path().join("absent.jsonl").to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");
}
