//! Experiments beyond two arms, end to end through a gateway: an A/B/n test whose arms are
//! real model servers (one better, one breaching a guardrail, one equal to the control) and a
//! Thompson-sampling bandit, driven by the controller on an explicit clock, with alerts at a
//! real webhook receiver and the reports read back through the admin API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use switchyard_core::rollout::{AbnOutcome, ArmDecision, Phase};
use switchyard_core::Strategy;
use switchyard_server::api::RolloutView;

use crate::rollouts::{truth, QualityModel};
use crate::support::webhook::WebhookReceiver;
use crate::support::{eventually, TestGateway};

/// A gateway serving model `m` with one version per `(name, url)`, alerts to `webhook`.
fn gateway_yaml(versions: &[(&str, &str)], webhook: &str) -> String {
    let mut yaml = format!(
        r#"
alerts: {{ webhooks: [{{ url: "{webhook}", min_severity: P3 }}] }}
models:
  m:
    routing_key: {{ header: x-key }}
    segments: {{ key: {{ header: x-key }} }}
    versions:
"#
    );
    for (name, url) in versions {
        yaml.push_str(&format!("      {name}: {{ url: \"{url}\" }}\n"));
    }
    yaml.push_str(&format!(
        "    serve: {{ kind: single, version: {} }}\n",
        versions[0].0
    ));
    yaml
}

/// Sends `n` labelled requests (8 at a time, keys `key-<round>-<k>`), then their ground truth;
/// waits until the log holds them.
async fn traffic(tg: &TestGateway, round: u64, n: u64) {
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let client = tg.client.clone();
            let url = tg.url("/v2/models/m/infer");
            tokio::spawn(async move {
                let mut labels = Vec::new();
                for k in (t..n).step_by(8) {
                    let i = round * 10_000 + k;
                    let id = format!("r{i}");
                    let body = json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [i as f64]}]});
                    let r = client
                        .post_json(&url, &[("x-key", &format!("key-{i}")), ("x-request-id", &id)], &body)
                        .await;
                    assert!(r.status == 200 || r.status == 502, "{}", r.status);
                    labels.push(json!({"request_id": id, "label": truth(i)}));
                }
                labels
            })
        })
        .collect();
    let mut labels = Vec::new();
    for t in tasks {
        labels.extend(t.await.unwrap());
    }
    let r = tg
        .client
        .post_json(&tg.url("/v1/feedback"), &[], &Value::Array(labels))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    tg.gateway.state.log.flush().await.unwrap();
}

/// The version serving each of `keys` probe keys now (unlabelled requests).
async fn probe(tg: &TestGateway, keys: u64) -> Vec<String> {
    let mut served = Vec::new();
    for j in 0..keys {
        let r = tg
            .client
            .post_json(
                &tg.url("/v2/models/m/infer"),
                &[("x-key", &format!("probe-{j}"))],
                &crate::support::oip_row(&[0.0]),
            )
            .await;
        assert!(r.status == 200 || r.status == 502, "{}", r.status);
        served.push(r.header("x-switchyard-model-version"));
    }
    served
}

/// The weight (basis points) of each version in the rollout's split.
fn weights(view: &RolloutView) -> BTreeMap<String, u32> {
    match &view.strategy {
        Strategy::Split { arms, .. } => {
            arms.iter().map(|a| (a.version.clone(), a.weight)).collect()
        }
        Strategy::Single { version } => [(version.clone(), 10_000)].into_iter().collect(),
        other => panic!("not a split: {other:?}"),
    }
}

fn terminal_or_waiting(p: Phase) -> bool {
    p.is_terminal() || p == Phase::AwaitingApproval
}

/// Control, a better variant, one whose errors breach a guardrail and one equal to the control:
/// the better one wins, the faulty one is stopped (its keys go to the control, an `arm_stopped`
/// event and a P1 alert carry its numbers), the equal one is inconclusive; the report shows
/// every arm in JSON and text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_four_arm_test_finds_the_better_arm_stops_the_faulty_one_and_calls_the_equal_one_inconclusive(
) {
    let control = QualityModel::start(90, 0, 0).await;
    let better = QualityModel::start(99, 0, 0).await;
    let faulty = QualityModel::start(90, 10, 0).await;
    let equal = QualityModel::start(90, 0, 0).await;
    let hook = WebhookReceiver::start(0, false).await;
    let tg = TestGateway::start(&gateway_yaml(
        &[
            ("control", &control.url),
            ("better", &better.url),
            ("faulty", &faulty.url),
            ("equal", &equal.url),
        ],
        &hook.url(),
    ))
    .await;
    let spec = "name: m-abn\nmodel: m\nkind: ab\ncontrol: control\ntreatment: better\n\
        variants: [{version: faulty}, {version: equal}]\nmetric: accuracy\nmin_per_arm: 300\n\
        sequential: true\nauto_promote: true\n\
        guardrails: [{metric: error_rate, max: 0.02, min_samples: 50}]\n";
    let started = tg.apply(spec).await;
    assert_eq!(
        started.arms,
        vec!["control", "better", "faulty", "equal"],
        "{started:?}"
    );
    let w = weights(&started);
    assert_eq!(w.values().sum::<u32>(), 10_000);
    assert!(w.values().all(|&x| x == 2_500), "equal shares: {w:?}");
    let salt = match &started.strategy {
        Strategy::Split { salt, .. } => salt.clone(),
        _ => None,
    };
    assert!(
        salt.as_deref().is_some_and(|s| s.starts_with("m-abn@")),
        "the experiment's own salt: {:?}",
        started.strategy
    );
    let before = probe(&tg, 200).await;
    assert!(
        before.iter().any(|v| v == "faulty"),
        "some probe keys on the faulty arm: {before:?}"
    );

    let mut stopped_checked = false;
    let mut view = started;
    for round in 0..40 {
        traffic(&tg, round, 200).await;
        tg.tick(61_000).await;
        view = tg.admin().rollout("m-abn").await.unwrap();
        let stopped = tg
            .events("m-abn")
            .await
            .into_iter()
            .any(|e| e.kind == "arm_stopped");
        if stopped && !stopped_checked && view.phase == Phase::Running {
            // The faulty arm's keys went to the control; every other key stayed where it was.
            let w = weights(&view);
            assert_eq!(w.get("faulty").copied().unwrap_or(0), 0, "{w:?}");
            assert_eq!(w["control"], 5_000, "{w:?}");
            let after = probe(&tg, 200).await;
            for (j, (b, a)) in before.iter().zip(&after).enumerate() {
                if b == "faulty" {
                    assert_eq!(a, "control", "probe-{j} moved from the stopped arm");
                } else {
                    assert_eq!(a, b, "probe-{j} stays on its arm");
                }
            }
            // While it runs, the report checks the split over the arms still receiving traffic.
            let running = tg.admin().report("m-abn").await.unwrap();
            let abn = running.analysis.ab.unwrap().abn.unwrap();
            let srm = abn.srm.expect("a sample-ratio check over the arms");
            assert_eq!(srm.dof, 2, "three arms with traffic: {srm:?}");
            assert_eq!(abn.arms[2].decision, ArmDecision::Stopped);
            assert_eq!(abn.arms[0].weight_percent, 50.0);
            stopped_checked = true;
        }
        if terminal_or_waiting(view.phase) {
            break;
        }
    }
    assert!(
        stopped_checked,
        "the faulty arm was stopped while the test ran"
    );
    assert_eq!(view.phase, Phase::Completed, "{view:?}");
    assert_eq!(
        view.strategy,
        Strategy::Single {
            version: "better".into()
        }
    );

    // The audit trail: the stop with its numbers, the move of its traffic, the conclusion.
    let events = tg.events("m-abn").await;
    let stop = events
        .iter()
        .find(|e| e.kind == "arm_stopped")
        .expect("arm_stopped");
    assert_eq!(stop.text("version"), Some("faulty"), "{stop:?}");
    assert_eq!(stop.text("metric"), Some("error_rate"), "{stop:?}");
    let value = stop.num("value").unwrap();
    assert!(value > 0.02, "{stop:?}");
    assert!(stop.num("samples").unwrap() >= 50.0, "{stop:?}");
    let moved = events
        .iter()
        .find(|e| e.kind == "reweighted")
        .expect("the stopped arm's traffic moved");
    assert!(moved.num("moved_fraction").unwrap() > 0.0, "{moved:?}");
    assert!(events.iter().any(|e| e.kind == "ab_concluded"));
    let hook_has_guardrail = || {
        hook.bodies().iter().any(|a| {
            a["severity"] == "P1"
                && a["kind"] == "guardrail"
                && a["title"].as_str().unwrap_or("").contains("faulty")
        })
    };
    assert!(
        eventually(Duration::from_secs(10), hook_has_guardrail).await,
        "a P1 guardrail alert at the webhook: {:?}",
        hook.kinds()
    );
    let alert = hook
        .bodies()
        .into_iter()
        .find(|a| a["kind"] == "guardrail")
        .unwrap();
    assert!(
        alert["details"].to_string().contains("error_rate"),
        "{alert}"
    );

    // The report: every arm with its decision.
    let report = tg.admin().report("m-abn").await.unwrap();
    let ab = report.analysis.ab.as_ref().expect("an A/B analysis");
    assert!(ab.report.is_none(), "no two-arm analysis for four arms");
    let abn = ab.abn.as_ref().expect("the k-arm analysis");
    // Segments (the routing key, declared as a segment field): one breakdown per arm against
    // the control, each naming its pair.
    let compared: Vec<&str> = ab
        .segments
        .iter()
        .filter_map(|b| b.compared.as_deref())
        .collect();
    assert_eq!(compared.len(), ab.segments.len(), "{:?}", ab.segments);
    for arm in ["better", "faulty", "equal"] {
        assert!(
            compared.contains(&format!("{arm} vs control").as_str()),
            "{compared:?}"
        );
    }
    let decisions: Vec<(&str, ArmDecision)> = abn
        .arms
        .iter()
        .map(|a| (a.version.as_str(), a.decision))
        .collect();
    assert_eq!(
        decisions,
        vec![
            ("control", ArmDecision::Control),
            ("better", ArmDecision::Winner),
            ("faulty", ArmDecision::Stopped),
            ("equal", ArmDecision::Inconclusive),
        ],
        "{abn:#?}"
    );
    assert_eq!(abn.outcome, AbnOutcome::Winner("better".into()));
    for v in ["control", "better", "faulty", "equal"] {
        assert!(report.versions.contains_key(v), "{v} in the versions");
    }
    let better_arm = &abn.arms[1];
    assert!(better_arm.samples >= 300, "{better_arm:?}");
    let (diff, lo, hi) = (
        better_arm.diff.unwrap(),
        better_arm.ci_low.unwrap(),
        better_arm.ci_high.unwrap(),
    );
    assert!(lo < diff && diff < hi && lo > 0.0, "{better_arm:?}");
    // Sequential: the always-valid interval is wider than the fixed-horizon one and holds the
    // estimate; the adjusted p (Holm over the always-valid ones) is never below its own.
    let (cs_lo, cs_hi) = (better_arm.cs_low.unwrap(), better_arm.cs_high.unwrap());
    assert!(cs_lo <= lo && hi <= cs_hi && cs_lo > 0.0, "{better_arm:?}");
    assert!(
        better_arm.sequential_p_value.unwrap() < 0.05,
        "{better_arm:?}"
    );
    for arm in [&abn.arms[1], &abn.arms[3]] {
        assert!(
            arm.adjusted_p_value.unwrap() >= arm.sequential_p_value.unwrap() - 1e-12,
            "{arm:?}"
        );
    }
    let faulty_arm = &abn.arms[2];
    assert!(faulty_arm.stopped.is_some() && faulty_arm.guardrails[0].breached);
    assert!(
        ab.observed_split.contains_key("d"),
        "{:?}",
        ab.observed_split
    );

    let text = String::from_utf8(
        tg.admin()
            .report_as("m-abn", "text")
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    for needle in [
        "control (control) vs better, faulty, equal",
        "Arms (each variant against the control)",
        "winner",
        "stopped",
        "inconclusive",
        "BREACHED",
        "confidence sequence",
        "better wins",
        "arm_stopped",
    ] {
        assert!(
            text.contains(needle),
            "'{needle}' in the text report:\n{text}"
        );
    }
    let html = String::from_utf8(
        tg.admin()
            .report_as("m-abn", "html")
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(html.contains("Arms (each variant against the control)"));
    // The dashboard's history carries every arm.
    let history = tg.admin().history("m-abn").await.unwrap();
    let arms = history
        .points
        .iter()
        .filter_map(|p| p.ab.as_ref())
        .map(|ab| ab.arms.len())
        .max();
    assert_eq!(arms, Some(4));
    assert!(tg.admin().audit_verify().await.unwrap().ok);
}

/// A bandit over three arms, one clearly better: its weight grows at every re-weighting (each
/// a `reweighted` event with P(best), the weights and the fraction of keys moved), and a key
/// changes arm only when the weights change, from an arm that shrank to one that grew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bandit_moves_traffic_to_the_better_arm_and_keys_move_only_with_the_weights() {
    let control = QualityModel::start(80, 0, 0).await;
    let better = QualityModel::start(85, 0, 0).await;
    let other = QualityModel::start(80, 0, 0).await;
    let hook = WebhookReceiver::start(0, false).await;
    let tg = TestGateway::start(&gateway_yaml(
        &[
            ("control", &control.url),
            ("better", &better.url),
            ("other", &other.url),
        ],
        &hook.url(),
    ))
    .await;
    let spec = "name: m-bandit\nmodel: m\nkind: bandit\ncontrol: control\ntreatment: better\n\
        variants: [{version: other}]\n\
        bandit: {min_share: 5, max_step: 10, reweight_every_ms: 60000, min_samples: 30, stop_at_p_best: 0.99999}\n";
    let mut view = tg.apply(spec).await;
    assert_eq!(view.kind, "bandit");
    let mut w = weights(&view);
    let first_better = w["better"];
    let mut served = probe(&tg, 300).await;
    let mut changes = 0;
    for round in 0..6 {
        traffic(&tg, round, 240).await;
        tg.tick(61_000).await;
        view = tg.admin().rollout("m-bandit").await.unwrap();
        if view.phase != Phase::Running {
            break;
        }
        let now = weights(&view);
        let after = probe(&tg, 300).await;
        for (j, (b, a)) in served.iter().zip(&after).enumerate() {
            if a != b {
                assert!(
                    now[b] < w[b] && now[a] > w[a],
                    "probe-{j} moved {b} → {a} though {w:?} → {now:?}"
                );
            }
        }
        if now == w {
            assert_eq!(served, after, "no weight changed, no key moved");
        } else {
            changes += 1;
        }
        w = now;
        served = after;
    }
    assert!(changes >= 2, "the weights moved at least twice");
    let events = tg.events("m-bandit").await;
    let reweighted: Vec<_> = events.iter().filter(|e| e.kind == "reweighted").collect();
    assert!(reweighted.len() >= 2, "{events:#?}");
    for e in &reweighted {
        for key in [
            "a_p_best",
            "b_weight_percent",
            "c_weight_percent",
            "moved_fraction",
        ] {
            assert!(e.num(key).is_some(), "{key} in {e:?}");
        }
        assert!(e.text("seed").is_some(), "{e:?}");
    }
    let last = reweighted.last().unwrap();
    assert!(
        last.num("b_p_best").unwrap() > last.num("a_p_best").unwrap()
            && last.num("b_p_best").unwrap() > last.num("c_p_best").unwrap(),
        "{last:?}"
    );
    if view.phase == Phase::Running {
        assert!(w["better"] > first_better, "{first_better} → {w:?}");
    } else {
        assert_eq!(view.phase, Phase::AwaitingApproval, "{view:?}");
        assert!(
            view.reason.as_deref().unwrap_or("").contains("better"),
            "{view:?}"
        );
    }
    // The better arm served more than either other arm over the test (less regret than an
    // equal split).
    let report = tg.admin().report("m-bandit").await.unwrap();
    let ab = report.analysis.ab.as_ref().unwrap();
    let split = &ab.observed_split;
    assert!(
        split["b"] > split["a"] && split["b"] > split["c"],
        "{split:?}"
    );
    let abn = ab.abn.as_ref().expect("the k-arm analysis");
    assert!(abn.bandit);
    assert_eq!(abn.reweightings.len(), reweighted.len());
    assert!(abn.arms.iter().all(|a| a.p_best.is_some()), "{abn:#?}");
    let text = String::from_utf8(
        tg.admin()
            .report_as("m-bandit", "text")
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("Re-weightings") && text.contains("P(best)"),
        "{text}"
    );
    assert!(tg.admin().audit_verify().await.unwrap().ok);
}
