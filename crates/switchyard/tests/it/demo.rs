//! Runs `switchyard demo --fast` end to end as a process and checks its outcome from the summary
//! it writes: v2 recommended by the shadow comparison and promoted by the canary, the test-time
//! regressor's v2 recommended by its shadow on MAE, v3 rolled
//! back with an alert delivered to the demo's webhook listener, the A/B test concluded, the
//! bandit concluded on v2 after re-weighting its arms, and the audit chain verified.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;

#[test]
fn the_demo_tells_the_whole_story() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        // The story's verdicts are about accuracy and errors; latency limits far above what a
        // loaded machine can produce keep them independent of the box's speed.
        .args(["demo", "--fast", "--p95-floor-ms", "60000", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap();
    let phase = |name: &str| {
        summary["rollouts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["phase"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(summary["shadow_recommendation"], "PROMOTE", "{stdout}");
    // The regressor's shadow: v2 is about three times closer to the measured test times.
    assert_eq!(summary["regression_recommendation"], "PROMOTE", "{stdout}");
    assert_eq!(
        phase("yield-v2-shadow-canary"),
        "completed",
        "v2 promoted by its canary:\n{stdout}"
    );
    assert_eq!(
        phase("yield-v3-canary"),
        "rolled_back",
        "v3 rolled back:\n{stdout}"
    );
    assert_eq!(phase("testtime-ab"), "completed", "{stdout}");
    // The bandit over yield v2 (control), v1 and v3 concludes on v2 and re-weighted on the way.
    assert_eq!(phase("yield-bandit"), "completed", "{stdout}");
    let bandit = &summary["bandit"];
    assert!(
        bandit["reweightings"].as_u64().unwrap() >= 1,
        "{bandit}\n{stdout}"
    );
    assert!(
        bandit["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("v2 is best"),
        "{bandit}\n{stdout}"
    );
    let alerts = summary["alerts"].as_array().unwrap();
    assert!(
        alerts.iter().any(|a| a["rollout"] == "yield-v3-canary"
            && a["kind"] == "rollback"
            && a["severity"] == "P0"),
        "the rollback alert reached the webhook: {alerts:?}"
    );
    assert_eq!(summary["audit_ok"], true);
    let html = std::fs::read_to_string(dir.path().join("demo-report.html")).unwrap();
    assert!(html.contains("yield-v3-canary") && html.contains("<table"));
    for needle in [
        "McNemar",
        "PROMOTE",
        "paired t on |errors|",
        "rolled_back",
        "sample-size plan",
        "rollback drill",
        "re-weighting 1",
        "verified OK",
    ] {
        assert!(
            stdout.contains(needle),
            "the narrative lacks '{needle}':\n{stdout}"
        );
    }
}
