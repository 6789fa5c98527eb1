//! `switchyard check`: a configuration whose in-process models cannot load fails with every bad
//! model named (model, version, file and why), exit code 2; a good one prints each model's
//! engine.

use std::process::Command;

use crate::support::repo;

fn check(config: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "-c"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_loads_every_model_and_names_each_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = repo().join("models/yield_v1.onnx");
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, "this is not a model\n").unwrap();
    let config = dir.path().join("bad.yaml");
    std::fs::write(
        &config,
        format!(
            "models:\n  yield:\n    versions:\n      v1: {{ onnx: {} }}\n      cut: {{ onnx: {} }}\n      junk: {{ onnx: {} }}\n    serve: {{ kind: single, version: v1 }}\n",
            good.display(),
            truncated.display(),
            garbage.display()
        ),
    )
    .unwrap();
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 2, "{stderr}");
    for needle in [
        "model yield version cut",
        "truncated.onnx",
        "model yield version junk",
        "garbage.onnx",
    ] {
        assert!(stderr.contains(needle), "missing '{needle}' in:\n{stderr}");
    }
    assert!(
        !stderr.contains("version v1"),
        "the good model is not blamed:\n{stderr}"
    );

    let config = dir.path().join("good.yaml");
    std::fs::write(
        &config,
        format!(
            "models:\n  yield:\n    versions:\n      v1: {{ onnx: {} }}\n    serve: {{ kind: single, version: v1 }}\n",
            good.display()
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = check(&config);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ok (1 model(s): yield)"), "{stdout}");
    assert!(
        stdout.contains("yield/v1") && stdout.contains("Trees"),
        "{stdout}"
    );
}
