//! External gates in the canary and blue-green state machines: readings handed in through
//! `Observations::external`, judged against their limits, counted once each.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchyard_core::aggregate::VariantStats;
use switchyard_core::audit::{Detail, Severity};
use switchyard_core::rollout::{
    command, start, tick, Action, BlueGreenSpec, CanarySpec, Command, ExternalGate,
    ExternalReading, ExternalSource, GatePolicy, Judged, LoadTest, LoadTestResult, Observations,
    Phase, Reading, RolloutKind, RolloutSpec, RolloutState, Step, Validation,
};
use switchyard_stats::Proportion;

fn prometheus_gate(max: f64) -> ExternalGate {
    ExternalGate {
        name: "errors".into(),
        source: ExternalSource::Prometheus {
            url: "http://prom:9090".into(),
            query: "sum(errors)".into(),
        },
        max: Some(max),
        min: None,
        interval_ms: 1_000,
        timeout_ms: 500,
        failure_limit: 0,
        inconclusive_limit: Some(2),
    }
}

fn canary(gates: Vec<ExternalGate>) -> RolloutSpec {
    RolloutSpec {
        name: "c".into(),
        model: "m".into(),
        kind: RolloutKind::Canary(CanarySpec {
            stable: "v1".into(),
            candidate: "v2".into(),
            steps: [500, 10_000]
                .into_iter()
                .map(|weight| Step {
                    weight,
                    min_requests: 10,
                    min_duration_ms: 1_000,
                    require_approval: false,
                    approvals: 1,
                    target: None,
                })
                .collect(),
            gate: GatePolicy {
                external: gates,
                ..GatePolicy::default()
            },
            step_deadline_ms: None,
            rollback_on_deadline: false,
            approvals: 1,
            group: vec![],
        }),
    }
}

/// Healthy statistics on both sides: the built-in gate passes.
fn healthy() -> Observations {
    let mut s = VariantStats {
        requests: 100,
        ..Default::default()
    };
    s.latency.record_n(1_000, 100);
    s.correct = Proportion {
        successes: 95,
        trials: 100,
    };
    let mut o = Observations::default();
    for v in ["v1", "v2"] {
        o.step.insert(v.into(), s.clone());
        o.total.insert(v.into(), s.clone());
    }
    o
}

fn with(mut o: Observations, gate: &str, at_ms: i64, reading: Reading) -> Observations {
    o.external
        .insert(gate.into(), ExternalReading { at_ms, reading });
    o
}

fn value(v: f64) -> Reading {
    Reading::Value { value: v }
}

fn no_data(why: &str) -> Reading {
    Reading::NoData { reason: why.into() }
}

fn events(actions: &[Action]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(e) => Some((e.kind.clone(), e.message.clone())),
            _ => None,
        })
        .collect()
}

fn alerts(actions: &[Action]) -> Vec<(Severity, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Alert { severity, kind, .. } => Some((*severity, kind.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn readings_are_judged_against_their_limit_and_anything_else_is_no_data() {
    let max = prometheus_gate(5.0);
    assert_eq!(max.judge(&value(5.0)), Judged::Pass);
    assert_eq!(
        max.judge(&value(12.0)),
        Judged::Fail("external gate 'errors': 12 above its max 5".into())
    );
    assert!(matches!(max.judge(&value(f64::NAN)), Judged::NoData(r) if r.contains("NaN")));
    assert!(matches!(max.judge(&no_data("timeout")), Judged::NoData(r) if r == "timeout"));
    let min = ExternalGate {
        max: None,
        min: Some(0.9),
        ..prometheus_gate(0.0)
    };
    assert_eq!(min.judge(&value(0.95)), Judged::Pass);
    assert_eq!(
        min.judge(&value(0.5)),
        Judged::Fail("external gate 'errors': 0.5 below its min 0.9".into())
    );
    let check = ExternalGate {
        name: "ci".into(),
        source: ExternalSource::Webhook {
            url: "http://h".into(),
        },
        max: None,
        ..prometheus_gate(0.0)
    };
    assert_eq!(check.judge(&Reading::Verdict { pass: true }), Judged::Pass);
    assert_eq!(
        check.judge(&Reading::Verdict { pass: false }),
        Judged::Fail("external gate 'ci': the check answered fail".into())
    );
    assert!(
        matches!(check.judge(&value(3.0)), Judged::NoData(r) if r.contains("no max or min")),
        "a value with nothing to compare it with is no data"
    );
}

#[test]
fn a_reading_past_its_max_rolls_the_canary_back_at_once_naming_gate_value_and_limit() {
    let spec = canary(vec![prometheus_gate(5.0)]);
    let (state, _) = start(&spec, 0, "op");
    // Mid-step (the step needs 1 000 ms): the failure does not wait for the step.
    let (state, actions) = tick(
        &spec,
        &state,
        &with(healthy(), "errors", 100, value(12.0)),
        200,
    );
    assert_eq!(state.phase, Phase::RolledBack);
    assert_eq!(
        state.reason.as_deref(),
        Some("external gate 'errors': 12 above its max 5")
    );
    let ev = events(&actions);
    assert_eq!(ev[0].0, "gate_failed");
    assert!(ev.iter().any(|(k, m)| k == "rolled_back"
        && m == "rolled back: external gate 'errors': 12 above its max 5"));
    assert_eq!(alerts(&actions), vec![(Severity::P0, "rollback".into())]);
    let details = actions
        .iter()
        .find_map(|a| match a {
            Action::Event(e) if e.kind == "rolled_back" => Some(e.details.clone()),
            _ => None,
        })
        .unwrap();
    for (k, v) in [
        ("gate", Detail::Text("errors".into())),
        ("source", Detail::Text("prometheus".into())),
        ("value", Detail::Num(12.0)),
        ("max", Detail::Num(5.0)),
    ] {
        assert!(details.contains(&(k.into(), v.clone())), "{k}: {details:?}");
    }
}

#[test]
fn no_data_never_passes_a_step_and_pauses_the_canary_past_the_inconclusive_limit() {
    let spec = canary(vec![prometheus_gate(5.0)]);
    let (mut state, _) = start(&spec, 0, "op");
    // Ready by requests and time, built-in gate healthy, but the gate has not answered yet.
    let (s, actions) = tick(&spec, &state, &healthy(), 2_000);
    assert_eq!(s.step, 0, "{actions:?}");
    assert_eq!(
        s.reason.as_deref(),
        Some("waiting for external gate 'errors': no reading since the step began")
    );
    state = s;
    // Two no-data readings (the limit) hold the step; the third in a row pauses.
    for (i, at) in [2_100, 3_100].into_iter().enumerate() {
        let o = with(healthy(), "errors", at, no_data("no answer within 500ms"));
        let (s, actions) = tick(&spec, &state, &o, at + 50);
        assert_eq!((s.phase, s.step), (Phase::Running, 0), "reading {i}");
        assert!(
            s.reason
                .as_deref()
                .unwrap()
                .contains("no data (no answer within 500ms)"),
            "{s:?}"
        );
        assert!(alerts(&actions).is_empty());
        state = s;
    }
    // The same reading seen again is not counted twice.
    let o = with(
        healthy(),
        "errors",
        3_100,
        no_data("no answer within 500ms"),
    );
    let (s, _) = tick(&spec, &state, &o, 3_500);
    assert_eq!(s.phase, Phase::Running);
    let o = with(
        healthy(),
        "errors",
        4_100,
        no_data("no answer within 500ms"),
    );
    let (s, actions) = tick(&spec, &state, &o, 4_150);
    assert_eq!(s.phase, Phase::Paused);
    assert_eq!(
        s.reason.as_deref(),
        Some("paused: external gate 'errors' gave no data 3 times in a row (limit 2): no answer within 500ms")
    );
    assert_eq!(
        alerts(&actions),
        vec![(Severity::P1, "external_no_data".into())]
    );
    // Paused: nothing moves; `resume` gives the gate its allowance again.
    let (s, actions) = command(&spec, &s, Command::Resume, "op", 5_000).unwrap();
    assert_eq!(s.phase, Phase::Running, "{actions:?}");
    let o = with(healthy(), "errors", 5_100, no_data("HTTP 503"));
    let (s, _) = tick(&spec, &s, &o, 5_150);
    assert_eq!(s.phase, Phase::Running);
    // A passing reading from this step lets it pass, with the value in the details.
    let o = with(healthy(), "errors", 6_100, value(1.0));
    let (s, actions) = tick(&spec, &s, &o, 6_150);
    assert_eq!((s.phase, s.step), (Phase::Running, 1));
    let passed = actions
        .iter()
        .find_map(|a| match a {
            Action::Event(e) if e.kind == "gate_passed" => Some(e.details.clone()),
            _ => None,
        })
        .unwrap();
    assert!(passed.contains(&("external.errors".into(), Detail::Num(1.0))));
    // The next step needs a reading of its own: the one from before it began does not pass it.
    let (s, _) = tick(&spec, &s, &o, 8_000);
    assert_eq!(s.step, 1);
    assert!(s
        .reason
        .as_deref()
        .unwrap()
        .contains("no reading since the step began"));
}

#[test]
fn a_failure_limit_tolerates_that_many_failed_readings_over_the_rollout() {
    let gate = ExternalGate {
        failure_limit: 1,
        ..prometheus_gate(5.0)
    };
    let spec = canary(vec![gate]);
    let (state, _) = start(&spec, 0, "op");
    let (state, _) = tick(
        &spec,
        &state,
        &with(healthy(), "errors", 1_000, value(9.0)),
        2_000,
    );
    assert_eq!(state.phase, Phase::Running);
    assert!(state
        .reason
        .as_deref()
        .unwrap()
        .contains("within its failure limit"));
    // A good reading in between does not reset the count (Argo's failureLimit).
    let (state, _) = tick(
        &spec,
        &state,
        &with(healthy(), "errors", 1_500, value(2.0)),
        2_100,
    );
    assert_eq!((state.phase, state.step), (Phase::Running, 1));
    let (state, _) = tick(
        &spec,
        &state,
        &with(healthy(), "errors", 2_500, value(9.0)),
        2_600,
    );
    assert_eq!(state.phase, Phase::RolledBack);
    assert_eq!(state.external["errors"].failures, 2);
}

#[test]
fn a_webhook_verdict_of_fail_switches_a_blue_green_back_during_monitoring() {
    let spec = RolloutSpec {
        name: "bg".into(),
        model: "m".into(),
        kind: RolloutKind::BlueGreen(BlueGreenSpec {
            active: "v1".into(),
            candidate: "v2".into(),
            min_accuracy: None,
            max_p95_ms: None,
            monitor_min_requests: 10,
            monitor_duration_ms: 1_000,
            max_error_rate: 0.05,
            max_p95_ratio: None,
            min_p95_increase_ms: 2.0,
            retention_ms: 10_000,
            validation_set: None,
            smoke_requests: 1,
            load_test: None,
            external: vec![ExternalGate {
                name: "ci".into(),
                source: ExternalSource::Webhook {
                    url: "http://h".into(),
                },
                max: None,
                ..prometheus_gate(0.0)
            }],
        }),
    };
    let validated = Observations {
        validation: Some(Validation {
            passed: true,
            smoke_ok: true,
            samples: 10,
            accuracy: None,
            p95_ms: Some(1.0),
            reason: "all thresholds met".into(),
            load_test: Some(LoadTestResult {
                requests: 400,
                errors: 0,
                p95_ms: Some(3.5),
                elapsed_ms: 2_000,
            }),
        }),
        ..healthy()
    };
    let (state, _) = start(&spec, 0, "op");
    let (state, actions) = tick(&spec, &state, &validated, 10);
    assert_eq!(state.phase, Phase::Monitoring);
    let details = actions
        .iter()
        .find_map(|a| match a {
            Action::Event(e) if e.kind == "validated" => Some(e.details.clone()),
            _ => None,
        })
        .unwrap();
    assert!(details.contains(&("load_requests".into(), Detail::Num(400.0))));
    assert!(details.contains(&("load_p95_ms".into(), Detail::Num(3.5))));
    // The window is over, but the check has not answered since the switch: it holds.
    let (state, _) = tick(&spec, &state, &validated, 2_000);
    assert_eq!(state.phase, Phase::Monitoring);
    assert!(state
        .reason
        .as_deref()
        .unwrap()
        .contains("'ci': no reading"));
    let o = with(validated, "ci", 2_100, Reading::Verdict { pass: false });
    let (state, actions): (RolloutState, _) = tick(&spec, &state, &o, 2_200);
    assert_eq!(state.phase, Phase::RolledBack);
    assert_eq!(
        state.reason.as_deref(),
        Some("switched back to blue: external gate 'ci': the check answered fail")
    );
    assert!(events(&actions).iter().any(|(k, _)| k == "monitor_failed"));
}

#[test]
fn a_load_test_fails_on_its_p95_or_its_error_rate() {
    let limits = LoadTest {
        rate: 200.0,
        duration_ms: 2_000,
        concurrency: 16,
        max_p95_ms: Some(50.0),
        max_error_rate: 0.01,
    };
    assert_eq!(limits.requests(), 400);
    let result = |errors, p95| LoadTestResult {
        requests: 400,
        errors,
        p95_ms: Some(p95),
        elapsed_ms: 2_000,
    };
    assert!(limits.failures(&result(4, 50.0)).is_empty());
    assert_eq!(
        limits.failures(&result(5, 80.0)),
        vec![
            "load test: 5 of 400 requests failed (1.25%, limit 1.00%)".to_string(),
            "load test: p95 80.0 ms above 50.0 ms".to_string(),
        ]
    );
    let nothing = LoadTestResult {
        requests: 0,
        errors: 0,
        p95_ms: None,
        elapsed_ms: 0,
    };
    assert_eq!(
        limits.failures(&nothing).len(),
        1,
        "a burst that sent nothing fails"
    );
}
