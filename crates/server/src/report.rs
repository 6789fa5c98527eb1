//! Deployment reports: what a rollout did and the statistics behind it, as JSON, text,
//! Markdown or a self-contained HTML page.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};
use switchyard_core::rollout::{ab_report, shadow_report, RolloutKind};
use switchyard_core::{Prediction, Truth, VariantStats};

use crate::controller::Controller;
use crate::state::AppState;
use crate::views::{events_json, stats_json};

fn prediction_json(p: &Prediction) -> Value {
    match p {
        Prediction::Classes(c) => json!(c),
        Prediction::Values(v) => json!(v),
        Prediction::None => Value::Null,
    }
}

fn truth_json(t: &Option<Truth>) -> Value {
    match t {
        Some(Truth::Labels(l)) => json!(l),
        Some(Truth::Values(v)) => json!(v),
        _ => Value::Null,
    }
}

/// The full report of one rollout.
pub fn build(app: &AppState, controller: &Controller, name: &str) -> Option<Value> {
    let (spec, state, obs) = controller.observations(name)?;
    let view = controller.view(name)?;
    let events = controller.events(Some(name)).unwrap_or_default();
    let versions: BTreeMap<&String, Value> =
        obs.total.iter().map(|(v, s)| (v, stats_json(s))).collect();
    let mut analysis = json!({});
    match &spec.kind {
        RolloutKind::Shadow(s) => {
            let pair = obs.pair.clone().unwrap_or_default();
            let shadow = obs.shadow.clone().unwrap_or_default();
            let primary = obs.total.get(&s.primary).cloned().unwrap_or_default();
            let report = shadow_report(s, &pair, &primary, &shadow);
            let cases = switchyard_store::disagreements_at(
                &app.store,
                &spec.model,
                &s.primary,
                &s.candidate,
                20,
            )
            .unwrap_or_default();
            let latency = |v: &VariantStats| json!({"p50_ms": v.latency.p50().map(|u| u as f64 / 1000.0), "p95_ms": v.latency.p95().map(|u| u as f64 / 1000.0), "p99_ms": v.latency.p99().map(|u| u as f64 / 1000.0)});
            analysis = json!({
                "shadow": report,
                "shadow_stats": stats_json(&shadow),
                "latency": { "primary": latency(&primary), "shadow": latency(&shadow) },
                "disagreements": cases.iter().map(|c| json!({
                    "request_id": c.request_id,
                    "input": c.input.as_deref().and_then(|i| serde_json::from_str::<Value>(i).ok()),
                    "primary": prediction_json(&c.primary),
                    "shadow": prediction_json(&c.shadow),
                    "truth": truth_json(&c.truth),
                })).collect::<Vec<_>>(),
            });
        }
        RolloutKind::Ab(a) => {
            let r = ab_report(a, &obs);
            analysis = json!({ "ab": r, "observed_split": obs.by_variant });
        }
        RolloutKind::Canary(c) => {
            let current = obs.step.get(&c.candidate).map(stats_json);
            analysis = json!({
                "steps": c.steps.iter().map(|s| json!({"percent": f64::from(s.weight) / 100.0, "min_requests": s.min_requests, "min_duration_ms": s.min_duration_ms, "require_approval": s.require_approval})).collect::<Vec<_>>(),
                "gate": c.gate,
                "current_step": state.step + 1,
                "candidate_this_step": current,
            });
        }
        RolloutKind::BlueGreen(b) => {
            analysis = json!({
                "active": b.active, "candidate": b.candidate,
                "switches": events.iter().filter(|e| matches!(e.event.kind.as_str(), "switched" | "rolled_back" | "retired")).map(|e| json!({
                    "kind": e.event.kind, "ts_ms": e.event.ts_ms,
                    "routing_swap_us": e.event.details.iter().find(|(k, _)| k == "routing_swap_us").map(|(_, v)| v.clone()),
                })).collect::<Vec<_>>(),
            });
        }
    }
    Some(json!({
        "rollout": view,
        "versions": versions,
        "analysis": analysis,
        "events": events_json(&events),
    }))
}

fn num(v: &Value, digits: usize) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.digits$}"),
        None => v.as_str().map_or("—".to_string(), str::to_string),
    }
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("—".to_string(), |x| format!("{:.2}%", x * 100.0))
}

/// Key-value rows.
type Pairs = Vec<(String, String)>;
/// A table: the header row, then data rows.
type Table = Vec<Vec<String>>;

/// Summary, versions, events and analysis, shared by the text, Markdown and HTML renderings.
fn tables(r: &Value) -> (Pairs, Table, Table, Pairs) {
    let ro = &r["rollout"];
    let summary = vec![
        ("rollout".into(), num(&ro["name"], 0)),
        ("model".into(), num(&ro["model"], 0)),
        ("kind".into(), num(&ro["kind"], 0)),
        (
            "versions".into(),
            format!("{} → {}", num(&ro["current"], 0), num(&ro["candidate"], 0)),
        ),
        ("phase".into(), num(&ro["phase"], 0)),
        ("recommendation".into(), num(&ro["recommendation"], 0)),
        ("reason".into(), num(&ro["reason"], 0)),
    ];
    let mut versions = vec![vec![
        "version".into(),
        "requests".into(),
        "errors".into(),
        "p50 ms".into(),
        "p95 ms".into(),
        "p99 ms".into(),
        "labelled".into(),
        "accuracy".into(),
        "MAE".into(),
    ]];
    if let Some(map) = r["versions"].as_object() {
        for (v, s) in map {
            versions.push(vec![
                v.clone(),
                num(&s["requests"], 0),
                num(&s["errors"], 0),
                num(&s["p50_ms"], 2),
                num(&s["p95_ms"], 2),
                num(&s["p99_ms"], 2),
                num(&s["labelled"], 0),
                pct(&s["accuracy"]),
                num(&s["mae"], 3),
            ]);
        }
    }
    let mut events = vec![vec![
        "seq".into(),
        "time (ms)".into(),
        "event".into(),
        "by".into(),
        "message".into(),
    ]];
    for e in r["events"].as_array().into_iter().flatten() {
        events.push(vec![
            num(&e["seq"], 0),
            num(&e["ts_ms"], 0),
            num(&e["kind"], 0),
            num(&e["actor"], 0),
            num(&e["message"], 0),
        ]);
    }
    let a = &r["analysis"];
    let mut analysis = Vec::new();
    if let Some(s) = a.get("shadow") {
        analysis.push(("agreement".into(), pct(&s["agreement"])));
        analysis.push(("labelled pairs".into(), num(&s["labelled"], 0)));
        analysis.push(("primary accuracy".into(), pct(&s["primary_accuracy"])));
        analysis.push(("shadow accuracy".into(), pct(&s["shadow_accuracy"])));
        analysis.push((
            "McNemar χ² (b, c)".into(),
            format!(
                "{} ({}, {})",
                num(&s["mcnemar"]["statistic"], 3),
                num(&s["mcnemar"]["b"], 0),
                num(&s["mcnemar"]["c"], 0)
            ),
        ));
        analysis.push((
            "McNemar p (exact p)".into(),
            format!(
                "{} ({})",
                num(&s["mcnemar"]["p_value"], 4),
                num(&s["mcnemar"]["exact_p_value"], 4)
            ),
        ));
        analysis.push((
            "primary / shadow p95 ms".into(),
            format!(
                "{} / {}",
                num(&a["latency"]["primary"]["p95_ms"], 2),
                num(&a["latency"]["shadow"]["p95_ms"], 2)
            ),
        ));
        analysis.push((
            "disagreement cases shown".into(),
            a["disagreements"]
                .as_array()
                .map_or(0, Vec::len)
                .to_string(),
        ));
        analysis.push(("recommendation".into(), num(&s["recommendation"], 0)));
    }
    if let Some(ab) = a.get("ab") {
        analysis.push((
            "control (successes/trials)".into(),
            format!(
                "{}/{}",
                num(&ab["control"]["successes"], 0),
                num(&ab["control"]["trials"], 0)
            ),
        ));
        analysis.push((
            "treatment (successes/trials)".into(),
            format!(
                "{}/{}",
                num(&ab["treatment"]["successes"], 0),
                num(&ab["treatment"]["trials"], 0)
            ),
        ));
        analysis.push(("required per arm".into(), num(&ab["required_per_arm"], 0)));
        analysis.push((
            "difference (z, p)".into(),
            format!(
                "{} ({}, {})",
                num(&ab["test"]["diff"], 4),
                num(&ab["test"]["z"], 3),
                num(&ab["test"]["p_value"], 4)
            ),
        ));
        analysis.push((
            "95% CI".into(),
            format!(
                "[{}, {}]",
                num(&ab["test"]["ci_low"], 4),
                num(&ab["test"]["ci_high"], 4)
            ),
        ));
        analysis.push(("P(B > A)".into(), num(&ab["bayes"]["prob_b_beats_a"], 4)));
        analysis.push((
            "SRM p-value (mismatch)".into(),
            format!(
                "{} ({})",
                num(&ab["srm"]["p_value"], 4),
                ab["srm"]["mismatch"]
            ),
        ));
        if !ab["mae_welch"].is_null() {
            analysis.push((
                "MAE diff B−A (Welch t, p)".into(),
                format!(
                    "{} ({}, {})",
                    num(&ab["mae_welch"]["mean_diff"], 3),
                    num(&ab["mae_welch"]["t"], 3),
                    num(&ab["mae_welch"]["p_value"], 4)
                ),
            ));
        }
    }
    if let Some(steps) = a.get("steps").and_then(Value::as_array) {
        let list: Vec<String> = steps
            .iter()
            .map(|s| format!("{}%", num(&s["percent"], 0)))
            .collect();
        analysis.push(("steps".into(), list.join(" → ")));
        analysis.push(("current step".into(), num(&a["current_step"], 0)));
    }
    if let Some(sw) = a.get("switches").and_then(Value::as_array) {
        for s in sw {
            analysis.push((
                num(&s["kind"], 0),
                format!(
                    "at {} ms, routing swap {} µs",
                    num(&s["ts_ms"], 0),
                    num(&s["routing_swap_us"], 0)
                ),
            ));
        }
    }
    (summary, versions, events, analysis)
}

pub fn render_text(r: &Value) -> String {
    let (summary, versions, events, analysis) = tables(r);
    let mut out = String::new();
    for (k, v) in &summary {
        let _ = writeln!(out, "{k:<16} {v}");
    }
    out.push('\n');
    let widths: Vec<usize> = (0..versions[0].len())
        .map(|i| {
            versions
                .iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &versions {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  "));
    }
    if !analysis.is_empty() {
        out.push('\n');
        for (k, v) in &analysis {
            let _ = writeln!(out, "{k:<28} {v}");
        }
    }
    out.push_str("\nevents\n");
    for row in events.iter().skip(1) {
        let _ = writeln!(
            out,
            "  #{:<4} {:<18} {:<12} {}",
            row[0], row[2], row[3], row[4]
        );
    }
    out
}

pub fn render_markdown(r: &Value) -> String {
    let (summary, versions, events, analysis) = tables(r);
    let mut out = format!("# Deployment report: {}\n\n", num(&r["rollout"]["name"], 0));
    let table = |rows: &[Vec<String>], out: &mut String| {
        if let Some(head) = rows.first() {
            let _ = writeln!(out, "| {} |", head.join(" | "));
            let _ = writeln!(out, "|{}|", vec!["---"; head.len()].join("|"));
            for row in &rows[1..] {
                let _ = writeln!(
                    out,
                    "| {} |",
                    row.iter()
                        .map(|c| c.replace('|', "\\|"))
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
            }
        }
    };
    let kv: Vec<Vec<String>> = std::iter::once(vec!["".to_string(), "".to_string()])
        .chain(summary.into_iter().map(|(k, v)| vec![k, v]))
        .collect();
    table(&kv, &mut out);
    out.push_str("\n## Versions\n\n");
    table(&versions, &mut out);
    if !analysis.is_empty() {
        out.push_str("\n## Analysis\n\n");
        let kv: Vec<Vec<String>> =
            std::iter::once(vec!["statistic".to_string(), "value".to_string()])
                .chain(analysis.into_iter().map(|(k, v)| vec![k, v]))
                .collect();
        table(&kv, &mut out);
    }
    out.push_str("\n## Audit trail\n\n");
    table(&events, &mut out);
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn render_html(r: &Value) -> String {
    let (summary, versions, events, analysis) = tables(r);
    let table = |rows: &[Vec<String>]| -> String {
        let mut t = String::from("<table>");
        for (i, row) in rows.iter().enumerate() {
            let tag = if i == 0 { "th" } else { "td" };
            t.push_str("<tr>");
            for c in row {
                let _ = write!(t, "<{tag}>{}</{tag}>", escape(c));
            }
            t.push_str("</tr>");
        }
        t.push_str("</table>");
        t
    };
    let kv = |pairs: &[(String, String)]| -> String {
        let rows: Vec<Vec<String>> = pairs
            .iter()
            .map(|(k, v)| vec![k.clone(), v.clone()])
            .collect();
        let mut t = String::from("<table>");
        for row in rows {
            let _ = write!(
                t,
                "<tr><th>{}</th><td>{}</td></tr>",
                escape(&row[0]),
                escape(&row[1])
            );
        }
        t.push_str("</table>");
        t
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>switchyard report: {name}</title><style>\
body{{font-family:system-ui,sans-serif;margin:2rem;color:#1d2330}}table{{border-collapse:collapse;margin:.5rem 0 1.5rem}}\
td,th{{border:1px solid #d0d5dd;padding:.3rem .6rem;text-align:left}}th{{background:#f2f4f7}}h1{{font-size:1.4rem}}</style></head><body>\
<h1>Deployment report: {name}</h1>{summary}<h2>Versions</h2>{versions}<h2>Analysis</h2>{analysis}<h2>Audit trail</h2>{events}</body></html>",
        name = escape(&num(&r["rollout"]["name"], 0)),
        summary = kv(&summary),
        versions = table(&versions),
        analysis = kv(&analysis),
        events = table(&events),
    )
}
