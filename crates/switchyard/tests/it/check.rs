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

/// `check` compares the configuration's files with the artefacts an existing store recorded
/// under the same version names (without writing to it), as `serve` would at start.
#[test]
fn check_refuses_a_changed_file_under_a_version_name_the_store_knows() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("yield.onnx");
    std::fs::copy(repo().join("models/yield_v1.onnx"), &file).unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "data_dir: {}\nmodels:\n  yield:\n    versions:\n      v1: {{ onnx: {}, git_sha: 3f2c1ab }}\n    serve: {{ kind: single, version: v1 }}\n",
            data.display(),
            file.display()
        ),
    )
    .unwrap();
    // No store yet: nothing to compare with, and none is created.
    let (code, stdout, stderr) = check(&config);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("sha256:"), "{stdout}");
    assert!(!data.exists());

    // A store that served this file as yield/v1 (what a gateway's start records).
    let sha = switchyard_server::onnx::OnnxModel::load(&file)
        .unwrap()
        .sha256()
        .to_string();
    let store = switchyard_store::StoreUrl::sqlite(data.join("switchyard.sqlite"));
    let (log, writer) = switchyard_store::spawn_log_writer(switchyard_store::LogWriterConfig {
        store: store.clone(),
        replica: "local".into(),
        queue_capacity: 16,
        batch_size: 16,
        commit_interval: std::time::Duration::ZERO,
        snapshot_every: 0,
        retention: None,
        max_size_bytes: None,
        versions: vec![switchyard_core::provenance::VersionProvenance {
            model: "yield".into(),
            version: "v1".into(),
            artefact: switchyard_core::provenance::Artefact::Sha256(sha.clone()),
            git_sha: Some("3f2c1ab".into()),
            registry: None,
        }],
    })
    .unwrap();
    drop(log);
    writer.join().unwrap();
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 0, "the same file passes: {stderr}");

    std::fs::copy(repo().join("models/yield_v2.onnx"), &file).unwrap();
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 2, "{stderr}");
    for needle in [
        "model yield version v1",
        &format!("its artefact was sha256:{}", &sha[..12]),
        "new version name",
    ] {
        assert!(stderr.contains(needle), "missing '{needle}' in:\n{stderr}");
    }
    assert_eq!(
        switchyard_store::artefacts_at(&store).unwrap().len(),
        1,
        "check writes nothing"
    );
}
