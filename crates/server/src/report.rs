//! Deployment reports: what a rollout did and the statistics behind it, as JSON, text,
//! Markdown or a self-contained HTML page.

use std::fmt::Write as _;

use serde_json::{json, Value};
use switchyard_core::aggregate::METRIC_SAMPLE_SIZE;
use switchyard_core::classes::{prediction_drift, ClassTable, DriftBasis, PredictionDrift};
use switchyard_core::rollout::Observations;
use switchyard_core::rollout::{
    ab_report, abn_report, arms_of, is_extended, shadow_report, AbReport, AbnOutcome, ArmDecision,
    Correction, GuardLimit, GuardrailCheck, OutputKind, PrimaryTest, RolloutKind,
};
use switchyard_core::segments::{
    unpaired_breakdown, SegmentBreakdown, SegmentFailure, SegmentMetric,
};
use switchyard_core::{Prediction, Truth};

use crate::api::{
    AbAnalysis, AbnView, Analysis, BlueGreenAnalysis, CanaryAnalysis, CostComparison, Disagreement,
    EventView, ReplayReport, Report, Reweighting, ShadowAnalysis, StepView, SwitchView,
    VersionIdentity, VersionStats,
};
use crate::controller::Controller;
use crate::state::AppState;

fn prediction_json(p: &Prediction) -> Vec<Value> {
    match p {
        Prediction::Classes(c) => c.iter().map(|x| json!(x)).collect(),
        Prediction::Values(v) => v.iter().map(|x| json!(x)).collect(),
        Prediction::None => Vec::new(),
    }
}

fn truth_json(t: &Option<Truth>) -> Option<Vec<Value>> {
    match t {
        Some(Truth::Labels(l)) => Some(l.iter().map(|x| json!(x)).collect()),
        Some(Truth::Values(v)) => Some(v.iter().map(|x| json!(x)).collect()),
        _ => None,
    }
}

/// Disagreements a shadow report shows, and the most recent differing answers it looks at to
/// find them.
const DISAGREEMENTS_SHOWN: usize = 20;
const DISAGREEMENTS_SCANNED: usize = 500;

/// The full report of one rollout.
pub fn build(app: &AppState, controller: &Controller, name: &str) -> Option<Report> {
    let (spec, state, obs) = controller.observations(name)?;
    let rollout = controller.view(name)?;
    let events: Vec<EventView> = controller
        .events(Some(name))
        .unwrap_or_default()
        .iter()
        .map(EventView::from)
        .collect();
    let declared = app
        .models
        .get(&spec.model)
        .and_then(|m| m.config.classes.as_deref());
    let mut versions: std::collections::BTreeMap<String, VersionStats> = obs
        .total
        .iter()
        .map(|(v, s)| (v.clone(), VersionStats::with_classes(s, declared)))
        .collect();
    // Every arm of an A/B/n test is listed, traffic or not.
    if let RolloutKind::Ab(a) = &spec.kind {
        for arm in arms_of(a) {
            versions.entry(arm.version).or_default();
        }
    }
    let mut analysis = Analysis::default();
    match &spec.kind {
        RolloutKind::Shadow(s) => {
            let pair = obs.pair.clone().unwrap_or_default();
            let shadow = obs.shadow.clone().unwrap_or_default();
            let primary = obs.total.get(&s.primary).cloned().unwrap_or_default();
            // The store finds answers that differ as text; regression answers within the
            // spec's tolerance agree, so the most recent differing ones are filtered here.
            let tolerance = s.rules.agreement_tolerance;
            let cases: Vec<_> = switchyard_store::disagreements_at(
                &app.store,
                &spec.model,
                &s.primary,
                &s.candidate,
                DISAGREEMENTS_SCANNED,
            )
            .unwrap_or_default()
            .into_iter()
            .filter(|c| {
                c.primary
                    .agreement(&c.shadow, &tolerance)
                    .is_some_and(|agree| agree.contains(&false))
            })
            .take(DISAGREEMENTS_SHOWN)
            .collect();
            let mut report = shadow_report(s, &pair, &primary, &shadow);
            report.transitions = report.transitions.map(|t| t.in_declared_order(declared));
            analysis.shadow = Some(ShadowAnalysis {
                report,
                shadow_stats: VersionStats::with_classes(&shadow, declared),
                primary_stats: VersionStats::with_classes(&primary, declared),
                disagreements: cases
                    .iter()
                    .map(|c| Disagreement {
                        request_id: c.request_id.clone(),
                        input: c
                            .input
                            .as_deref()
                            .and_then(|i| serde_json::from_str::<Value>(i).ok()),
                        primary: prediction_json(&c.primary),
                        shadow: prediction_json(&c.shadow),
                        truth: truth_json(&c.truth),
                    })
                    .collect(),
            });
        }
        RolloutKind::Ab(a) => {
            let extended = is_extended(a);
            analysis.ab = Some(AbAnalysis {
                report: (!extended).then(|| ab_report(a, &obs)),
                abn: extended.then(|| {
                    let mut view = AbnView::of(
                        &abn_report(a, &state, &obs),
                        a.sequential,
                        a.bandit.is_some(),
                        events.iter().filter_map(Reweighting::of).collect(),
                    );
                    if a.bandit.is_some() {
                        // A bandit has no power calculation: only a written minimum.
                        view.required_per_arm = a.min_per_arm;
                    }
                    view
                }),
                observed_split: obs.by_variant.clone(),
                segments: if a.variants.is_empty() {
                    segments_of(&obs, &a.control, &a.treatment)
                } else {
                    // Every arm against the control, each breakdown naming its pair.
                    std::iter::once(&a.treatment)
                        .chain(a.variants.iter().map(|v| &v.version))
                        .flat_map(|arm| {
                            segments_of(&obs, &a.control, arm)
                                .into_iter()
                                .map(move |mut b| {
                                    b.compared = Some(format!("{arm} vs {}", a.control));
                                    b
                                })
                        })
                        .collect()
                },
            });
        }
        RolloutKind::Canary(c) => {
            analysis.canary = Some(CanaryAnalysis {
                steps: c
                    .steps
                    .iter()
                    .map(|s| StepView {
                        percent: f64::from(s.weight) / 100.0,
                        min_requests: s.min_requests,
                        min_duration_ms: s.min_duration_ms,
                        require_approval: s.require_approval,
                        approvals: s.approvals,
                    })
                    .collect(),
                gate: c.gate.clone(),
                current_step: state.step + 1,
                candidate_this_step: obs.step.get(&c.candidate).map(VersionStats::from),
                drift: obs
                    .total
                    .get(&c.stable)
                    .zip(obs.total.get(&c.candidate))
                    .and_then(|(stable, candidate)| prediction_drift(stable, candidate)),
                segments: segments_of(&obs, &c.stable, &c.candidate),
            });
        }
        RolloutKind::BlueGreen(b) => {
            analysis.blue_green = Some(BlueGreenAnalysis {
                active: b.active.clone(),
                candidate: b.candidate.clone(),
                switches: events
                    .iter()
                    .filter(|e| matches!(e.kind.as_str(), "switched" | "rolled_back" | "retired"))
                    .map(|e| SwitchView {
                        kind: e.kind.clone(),
                        ts_ms: e.ts_ms,
                        routing_swap_us: e.num("routing_swap_us"),
                    })
                    .collect(),
            });
        }
    }
    let (current, candidate) = spec.versions();
    let runtime = app.models.get(&spec.model);
    let provenance: std::collections::BTreeMap<String, VersionIdentity> = runtime
        .map(|m| {
            versions
                .keys()
                .map(String::as_str)
                .chain([current, candidate])
                .filter_map(|v| {
                    let p = m.provenance.get(v)?;
                    Some((
                        v.to_string(),
                        VersionIdentity {
                            artefact: p.artefact.clone(),
                            git_sha: p.git_sha.clone(),
                            registry: p.registry.clone(),
                            cost_per_1k: m.config.version_info.get(v).and_then(|i| i.cost_per_1k),
                        },
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let cost_of = |v: &str| provenance.get(v).and_then(|p| p.cost_per_1k);
    let current_stats = versions.get(current).cloned().unwrap_or_default();
    // A shadow candidate serves nobody: its latency is its shadow calls'.
    let candidate_stats = match &analysis.shadow {
        Some(sa) => sa.shadow_stats.clone(),
        None => versions.get(candidate).cloned().unwrap_or_default(),
    };
    let cost = CostComparison::of(
        (current, &current_stats, cost_of(current)),
        (candidate, &candidate_stats, cost_of(candidate)),
    );
    Some(Report {
        rollout,
        versions,
        provenance,
        cost: Some(cost),
        analysis,
        events,
    })
}

/// A number with `digits` decimals, `—` when absent.
/// Two versions' serving statistics over the rollout compared per segment.
fn segments_of(obs: &Observations, baseline: &str, candidate: &str) -> Vec<SegmentBreakdown> {
    match (obs.total.get(baseline), obs.total.get(candidate)) {
        (Some(b), Some(c)) => unpaired_breakdown(&b.segments, &c.segments),
        _ => Vec::new(),
    }
}

/// One table per segment field, and the lines a reader must not miss: a reversal, a segment
/// past the gate.
fn segment_detail(
    breakdowns: &[SegmentBreakdown],
    baseline: &str,
    candidate: &str,
    failure: Option<&SegmentFailure>,
    analysis: &mut Pairs,
    detail: &mut Vec<(String, Table)>,
) {
    let value = |metric: SegmentMetric, v: Option<f64>| match metric {
        SegmentMetric::Accuracy => pct(v),
        SegmentMetric::Mae => num(v, 4),
    };
    let change = |metric: SegmentMetric, v: Option<f64>| match (metric, v) {
        (SegmentMetric::Accuracy, Some(c)) => format!("{:+.1} pts", c * 100.0),
        (SegmentMetric::Mae, Some(c)) => format!("{:+.1}%", c * 100.0),
        (_, None) => "—".into(),
    };
    for b in breakdowns {
        let metric = match b.metric {
            SegmentMetric::Accuracy => "accuracy",
            SegmentMetric::Mae => "MAE",
        };
        let mut rows = vec![vec![
            b.field.clone(),
            "labelled".into(),
            format!("{baseline} {metric}"),
            format!("{candidate} {metric}"),
            "change".into(),
            "p".into(),
        ]];
        for r in b.rows.iter().chain([&b.overall]) {
            rows.push(vec![
                r.value.clone(),
                int(r.samples),
                value(b.metric, r.baseline),
                value(b.metric, r.candidate),
                change(b.metric, r.change),
                num(r.p_value, 4),
            ]);
        }
        let (baseline, candidate) = match b.compared.as_deref().and_then(|c| c.split_once(" vs ")) {
            Some((candidate, baseline)) => (baseline, candidate),
            None => (baseline, candidate),
        };
        if let Some(header) = rows.first_mut() {
            header[2] = format!("{baseline} {metric}");
            header[3] = format!("{candidate} {metric}");
        }
        detail.push((
            format!(
                "Segments: {}{} ({} values, the largest {} shown)",
                b.field,
                b.compared
                    .as_deref()
                    .map_or_else(String::new, |c| format!(", {c}")),
                b.values,
                b.rows.iter().filter(|r| !r.other).count()
            ),
            rows,
        ));
        if let Some(rev) = &b.reversal {
            analysis.push((
                format!("segment reversal ({})", b.field),
                rev.summary.clone(),
            ));
        }
    }
    if let Some(f) = failure {
        analysis.push(("segment gate".into(), format!("FAILED: {}", f.describe())));
    }
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".to_string(), |x| format!("{x:.digits$}"))
}

fn int(v: u64) -> String {
    v.to_string()
}

fn pct(v: Option<f64>) -> String {
    v.map_or("—".to_string(), |x| format!("{:.2}%", x * 100.0))
}

fn text(v: Option<&str>) -> String {
    v.map_or_else(|| "—".to_string(), str::to_string)
}

/// Key-value rows.
type Pairs = Vec<(String, String)>;
/// A table: the header row, then data rows.
type Table = Vec<Vec<String>>;

/// What every rendering shows: summary, versions, analysis, detail tables and events.
struct Tables {
    summary: Pairs,
    versions: Table,
    events: Table,
    analysis: Pairs,
    /// Titled tables after the analysis: confusion matrices, per-class scores, transitions.
    detail: Vec<(String, Table)>,
}

/// A class table with its row and column names; `corner` names the axes.
fn class_table(corner: String, t: &ClassTable) -> Table {
    let labels = t.labels();
    let mut rows = vec![std::iter::once(corner).chain(labels.clone()).collect()];
    for (label, counts) in labels.iter().zip(&t.counts) {
        rows.push(
            std::iter::once(label.clone())
                .chain(counts.iter().map(|c| c.to_string()))
                .collect(),
        );
    }
    rows
}

/// What the drift was computed over.
fn drift_text(d: &PredictionDrift) -> String {
    let over = match d.basis {
        DriftBasis::Classes => format!("{} classes", d.bins.len()),
        DriftBasis::Values => format!("{} bins at the deciles of the reference", d.bins.len()),
    };
    format!(
        "{} / {} over {over}",
        num(Some(d.psi), 4),
        num(Some(d.js_distance), 4)
    )
}

/// A version's classification detail: accuracy, macro means and unknown labels as analysis
/// lines, the confusion matrix and the per-class scores as tables.
fn class_detail(
    version: &str,
    s: &VersionStats,
    analysis: &mut Pairs,
    detail: &mut Vec<(String, Table)>,
) {
    let Some(c) = &s.classification else { return };
    analysis.push((
        format!("{version}: accuracy (95% CI)"),
        format!(
            "{} [{}, {}] of {} labelled",
            pct(c.accuracy),
            pct(c.accuracy_low),
            pct(c.accuracy_high),
            c.labelled
        ),
    ));
    analysis.push((
        format!("{version}: macro precision / recall / F1"),
        format!(
            "{} / {} / {}",
            num(Some(c.macro_precision), 4),
            num(Some(c.macro_recall), 4),
            num(Some(c.macro_f1), 4)
        ),
    ));
    if c.unknown_labels > 0 {
        analysis.push((
            format!("{version}: unknown labels"),
            format!(
                "{} (no declared class; left out of the matrix)",
                c.unknown_labels
            ),
        ));
    }
    detail.push((
        format!("Confusion matrix: {version} (true class in rows, predicted in columns)"),
        class_table("true \\ predicted".into(), &c.confusion),
    ));
    let mut scores = vec![vec![
        "class".into(),
        "precision".into(),
        "recall".into(),
        "F1".into(),
        "support".into(),
    ]];
    for x in &c.scores {
        scores.push(vec![
            x.class.clone(),
            num(Some(x.precision), 4),
            num(Some(x.recall), 4),
            num(Some(x.f1), 4),
            int(x.support),
        ]);
    }
    scores.push(vec![
        "macro".into(),
        num(Some(c.macro_precision), 4),
        num(Some(c.macro_recall), 4),
        num(Some(c.macro_f1), 4),
        int(c.confusion.row_sums().iter().sum()),
    ]);
    detail.push((format!("Per-class scores: {version}"), scores));
}

/// The two-arm A/B test's analysis lines.
fn two_arm_lines(ab: &AbReport, analysis: &mut Pairs) {
    analysis.push((
        "control (successes/trials)".into(),
        format!("{}/{}", ab.control.successes, ab.control.trials),
    ));
    analysis.push((
        "treatment (successes/trials)".into(),
        format!("{}/{}", ab.treatment.successes, ab.treatment.trials),
    ));
    analysis.push((
        "required per arm".into(),
        ab.required_per_arm.map_or_else(|| "—".into(), int),
    ));
    analysis.push((
        "difference (z, p)".into(),
        format!(
            "{} ({}, {})",
            num(ab.test.map(|t| t.diff), 4),
            num(ab.test.map(|t| t.z), 3),
            num(ab.test.map(|t| t.p_value), 4)
        ),
    ));
    analysis.push((
        "95% CI".into(),
        format!(
            "[{}, {}]",
            num(ab.test.map(|t| t.ci_low), 4),
            num(ab.test.map(|t| t.ci_high), 4)
        ),
    ));
    analysis.push((
        "P(B > A)".into(),
        num(ab.bayes.map(|b| b.prob_b_beats_a), 4),
    ));
    analysis.push((
        "SRM p-value (mismatch)".into(),
        format!(
            "{} ({})",
            num(ab.srm.as_ref().map(|s| s.p_value), 4),
            ab.srm
                .as_ref()
                .map_or_else(|| "—".to_string(), |s| s.mismatch.to_string())
        ),
    ));
    if let Some(w) = &ab.mae_welch {
        analysis.push((
            "MAE diff B−A (Welch t, p)".into(),
            format!(
                "{} ({}, {})",
                num(Some(w.mean_diff), 3),
                num(Some(w.t), 3),
                num(Some(w.p_value), 4)
            ),
        ));
    }
}

/// A stratified A/B: the CMH line and one row per value of the field.
fn stratified_detail(
    st: &switchyard_core::rollout::StratifiedAb,
    analysis: &mut Pairs,
    detail: &mut Vec<(String, Table)>,
) {
    let mh = st.mantel_haenszel.as_ref();
    analysis.push((
        format!("within {} (MH odds ratio B/A, 95% CI, CMH p)", st.field),
        format!(
            "{} [{}, {}], {}",
            num(mh.map(|m| m.odds_ratio), 4),
            num(mh.map(|m| m.ci_low), 4),
            num(mh.map(|m| m.ci_high), 4),
            num(mh.map(|m| m.p_value), 4)
        ),
    ));
    let rate = |p: &switchyard_stats::Proportion| {
        (p.trials > 0).then(|| p.successes as f64 / p.trials as f64)
    };
    let mut rows = vec![vec![
        st.field.clone(),
        "A requests".into(),
        "B requests".into(),
        "A rate".into(),
        "B rate".into(),
        "SRM p (mismatch)".into(),
    ]];
    for s in &st.strata {
        rows.push(vec![
            s.value.clone(),
            int(s.control_requests),
            int(s.treatment_requests),
            num(rate(&s.control), 4),
            num(rate(&s.treatment), 4),
            s.srm.as_ref().map_or_else(
                || "—".into(),
                |m| format!("{} ({})", num(Some(m.p_value), 4), m.mismatch),
            ),
        ]);
    }
    detail.push((format!("Strata: {}", st.field), rows));
}

/// A rate as a percentage, a mean as a number.
fn metric_text(v: Option<f64>, proportion: bool) -> String {
    if proportion {
        pct(v)
    } else {
        num(v, 4)
    }
}

/// A difference: points for a rate, the metric's unit for a mean.
fn diff_text(v: Option<f64>, proportion: bool) -> String {
    match v {
        None => "—".into(),
        Some(x) if proportion => format!("{:+.2} pts", x * 100.0),
        Some(x) => format!("{x:+.4}"),
    }
}

fn interval_text(lo: Option<f64>, hi: Option<f64>, proportion: bool) -> String {
    match (lo, hi) {
        (Some(_), Some(_)) => format!(
            "[{}, {}]",
            diff_text(lo, proportion),
            diff_text(hi, proportion)
        ),
        _ => "—".into(),
    }
}

fn limit_text(l: &GuardLimit) -> String {
    match l {
        GuardLimit::Max(x) => format!("≤ {x}"),
        GuardLimit::Min(x) => format!("≥ {x}"),
        GuardLimit::MaxIncrease(f) => format!("≤ control +{:.1}%", f * 100.0),
        GuardLimit::MaxDecrease(f) => format!("≥ control −{:.1}%", f * 100.0),
    }
}

/// One arm's guardrail checks in a cell.
fn guardrails_text(checks: &[GuardrailCheck]) -> String {
    if checks.is_empty() {
        return "—".into();
    }
    checks
        .iter()
        .map(|c| {
            format!(
                "{} {} ({}, n {}){}",
                c.metric,
                num(c.value, 4),
                limit_text(&c.limit),
                c.samples,
                if c.breached { " BREACHED" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn decision_text(d: ArmDecision) -> &'static str {
    match d {
        ArmDecision::Control => "control",
        ArmDecision::Winner => "winner",
        ArmDecision::Loser => "loser",
        ArmDecision::Inconclusive => "inconclusive",
        ArmDecision::Stopped => "stopped",
    }
}

fn test_text(t: PrimaryTest) -> String {
    match t {
        PrimaryTest::ZTest => "two-proportion z-test (Wald interval)".into(),
        PrimaryTest::Welch => "Welch's t-test on the means (with its interval)".into(),
        PrimaryTest::MannWhitney => format!(
            "Mann-Whitney U (two-sided, normal approximation with tie and continuity corrections) \
             on each arm's values, a uniform sample of {METRIC_SAMPLE_SIZE} past that many; \
             effect size P(arm > control) + ½ P(tie)"
        ),
    }
}

fn outcome_text(o: &AbnOutcome, control: &str) -> String {
    match o {
        AbnOutcome::Winner(v) => format!("{v} wins"),
        AbnOutcome::ControlWins => {
            format!("{control} (control) wins: every variant is worse or stopped")
        }
        AbnOutcome::NoDifference => "no significant difference (yet)".into(),
    }
}

/// The k-arm analysis: its lines, the per-arm table and, for a bandit, the re-weightings.
fn abn_detail(abn: &AbnView, analysis: &mut Pairs, detail: &mut Vec<(String, Table)>) {
    let proportion = abn.arms.iter().any(|a| a.successes.is_some());
    let control = abn.arms.first().map_or("", |a| a.version.as_str());
    analysis.push((
        "primary metric".into(),
        format!(
            "{} ({} is better)",
            abn.metric,
            if abn.lower_is_better {
                "lower"
            } else {
                "higher"
            }
        ),
    ));
    analysis.push((
        "arms".into(),
        format!(
            "{} ({} vs control {control})",
            abn.arms.len(),
            abn.arms
                .iter()
                .skip(1)
                .map(|a| a.version.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));
    analysis.push(("test per variant".into(), test_text(abn.test)));
    if !abn.bandit {
        analysis.push((
            "multiple comparisons".into(),
            format!(
                "{} over the running variants, α = {}",
                match abn.correction {
                    Correction::Holm => "Holm",
                    Correction::Bonferroni => "Bonferroni",
                },
                abn.alpha
            ),
        ));
    }
    analysis.push((
        "required per arm".into(),
        abn.required_per_arm.map_or_else(|| "—".into(), int),
    ));
    analysis.push((
        "SRM over the arms (p, mismatch)".into(),
        abn.srm.as_ref().map_or_else(
            || "—".into(),
            |s| {
                format!(
                    "χ² {} ({} dof), p = {} ({})",
                    num(Some(s.statistic), 3),
                    s.dof,
                    num(Some(s.p_value), 4),
                    s.mismatch
                )
            },
        ),
    ));
    if abn.sequential {
        analysis.push((
            "sequential".into(),
            "mSPRT: the always-valid p and the confidence sequence hold whenever they are read"
                .into(),
        ));
    }
    analysis.push(("outcome".into(), outcome_text(&abn.outcome, control)));
    for a in abn.arms.iter().filter(|a| a.stopped.is_some()) {
        analysis.push((
            format!("stopped: {} ({})", a.variant, a.version),
            a.stopped.clone().unwrap_or_default(),
        ));
    }
    let ranks = abn.test == PrimaryTest::MannWhitney;
    let mut head = vec![
        "arm".to_string(),
        "version".into(),
        "weight".into(),
        "n".into(),
        abn.metric.clone(),
        if ranks {
            "diff of means vs control".into()
        } else {
            "diff vs control".into()
        },
    ];
    if ranks {
        head.push("U".into());
        head.push("P(arm > control)".into());
        head.push("values ranked".into());
    } else {
        head.push(format!("{:.0}% CI", (1.0 - abn.alpha) * 100.0));
    }
    head.extend([
        "p".into(),
        if abn.sequential {
            "adjusted always-valid p".into()
        } else {
            "adjusted p".into()
        },
    ]);
    if abn.sequential {
        head.push("always-valid p".into());
        head.push("confidence sequence".into());
    }
    if abn.bandit {
        head.push("P(best)".into());
    }
    head.push("guardrails".into());
    head.push("decision".into());
    let mut rows = vec![head];
    for a in &abn.arms {
        let mut row = vec![
            a.variant.clone(),
            a.version.clone(),
            format!("{:.2}%", a.weight_percent),
            int(a.samples),
            metric_text(a.value, proportion),
            diff_text(a.diff, proportion),
        ];
        if ranks {
            row.push(num(a.statistic, 1));
            row.push(num(a.common_language, 3));
            row.push(a.ranked.map_or_else(
                || "—".into(),
                |(n, control)| format!("{} vs {}", int(n), int(control)),
            ));
        } else {
            row.push(interval_text(a.ci_low, a.ci_high, proportion));
        }
        row.extend([num(a.p_value, 4), num(a.adjusted_p_value, 4)]);
        if abn.sequential {
            row.push(num(a.sequential_p_value, 4));
            row.push(interval_text(a.cs_low, a.cs_high, proportion));
        }
        if abn.bandit {
            row.push(num(a.p_best, 3));
        }
        row.push(guardrails_text(&a.guardrails));
        row.push(decision_text(a.decision).into());
        rows.push(row);
    }
    detail.push(("Arms (each variant against the control)".into(), rows));
    let with_arms: Vec<&Reweighting> = abn
        .reweightings
        .iter()
        .filter(|r| !r.weight_percent.is_empty())
        .collect();
    if !with_arms.is_empty() {
        let mut rows = vec![vec![
            "seq".to_string(),
            "time (ms)".into(),
            "weights".into(),
            "P(best)".into(),
            "keys moved".into(),
        ]];
        for r in with_arms {
            let per = |m: &std::collections::BTreeMap<String, f64>, f: &dyn Fn(f64) -> String| {
                abn.arms
                    .iter()
                    .filter_map(|a| {
                        m.get(&a.variant)
                            .map(|x| format!("{} {}", a.version, f(*x)))
                    })
                    .collect::<Vec<_>>()
                    .join(" · ")
            };
            rows.push(vec![
                int(r.seq),
                r.ts_ms.to_string(),
                per(&r.weight_percent, &|x| format!("{x:.1}%")),
                per(&r.p_best, &|x| format!("{x:.3}")),
                pct(r.moved_fraction),
            ]);
        }
        detail.push(("Re-weightings".into(), rows));
    }
}

/// An event's message, with the numbers of an arm stop or a re-weighting.
fn event_text(e: &EventView) -> String {
    match e.kind.as_str() {
        "arm_stopped" => format!("{} (control {})", e.message, num(e.num("control_value"), 4)),
        "reweighted" => {
            let mut arms: Vec<String> = e
                .details
                .keys()
                .filter_map(|k| k.strip_suffix("_weight_percent"))
                .map(|arm| {
                    let p = e
                        .num(&format!("{arm}_p_best"))
                        .map_or(String::new(), |p| format!(", P(best) {p:.3}"));
                    format!(
                        "{arm} {:.1}%{p}",
                        e.num(&format!("{arm}_weight_percent")).unwrap_or(0.0)
                    )
                })
                .collect();
            if arms.is_empty() {
                arms.extend(e.text("weights").map(str::to_string));
            }
            format!("{} · {}", e.message, arms.join(" · "))
        }
        _ => {
            // A routing change names the artefacts it routes to.
            let artefacts: Vec<String> = e
                .details
                .keys()
                .filter_map(|k| k.strip_prefix("artefact."))
                .filter_map(|v| {
                    let full = e.text(&format!("artefact.{v}"))?;
                    let short = switchyard_core::provenance::Artefact::from_full(full)
                        .map_or_else(|| full.to_string(), |a| a.short());
                    Some(format!("{v} {short}"))
                })
                .collect();
            if artefacts.is_empty() {
                e.message.clone()
            } else {
                format!("{} · {}", e.message, artefacts.join(" · "))
            }
        }
    }
}

/// A shadow analysis's lines and detail tables, `current` serving and `candidate` mirrored: a
/// shadow rollout's report and a replay's.
fn shadow_lines(
    sa: &ShadowAnalysis,
    current: &str,
    candidate: &str,
    analysis: &mut Pairs,
    detail: &mut Vec<(String, Table)>,
) {
    let s = &sa.report;
    let regression = s.output == OutputKind::Regression;
    let tol = &s.agreement_tolerance;
    let agreement = if regression {
        format!(
            "{} (within {} + {:.1}% of the primary; {} of {} compared{})",
            pct(s.agreement),
            tol.absolute,
            tol.relative * 100.0,
            s.agreement_sample,
            s.compared,
            if s.agreement_exact {
                ""
            } else {
                ", a uniform sample"
            }
        )
    } else {
        pct(s.agreement)
    };
    analysis.push(("agreement".into(), agreement));
    analysis.push(("labelled pairs".into(), int(s.labelled)));
    if !regression {
        analysis.push(("primary accuracy".into(), pct(s.primary_accuracy)));
        analysis.push(("shadow accuracy".into(), pct(s.shadow_accuracy)));
        analysis.push(("relative improvement".into(), pct(s.accuracy_improvement)));
    }
    if let Some(m) = &s.mcnemar {
        analysis.push((
            "McNemar χ² (b, c)".into(),
            format!("{} ({}, {})", num(Some(m.statistic), 3), m.b, m.c),
        ));
        analysis.push((
            "McNemar p (exact p)".into(),
            format!(
                "{} ({})",
                num(Some(m.p_value), 4),
                num(Some(m.exact_p_value), 4)
            ),
        ));
    }
    if regression {
        analysis.push((
            "primary / shadow MAE".into(),
            format!("{} / {}", num(s.primary_mae, 4), num(s.shadow_mae, 4)),
        ));
        analysis.push((
            "primary / shadow RMSE".into(),
            format!("{} / {}", num(s.primary_rmse, 4), num(s.shadow_rmse, 4)),
        ));
        analysis.push((
            "primary / shadow MAPE".into(),
            format!(
                "{} / {}{}",
                pct(s.primary_mape),
                pct(s.shadow_mape),
                if s.mape_skipped > 0 {
                    format!(" ({} with truth 0 left out)", s.mape_skipped)
                } else {
                    String::new()
                }
            ),
        ));
        analysis.push(("MAE change (shadow vs primary)".into(), pct(s.mae_change)));
        if let Some(t) = &s.paired_t {
            analysis.push((
                "paired t on |errors| (p)".into(),
                format!("{} ({})", num(Some(t.t), 3), num(Some(t.p_value), 4)),
            ));
        }
        if let Some(w) = &s.wilcoxon {
            analysis.push((
                "Wilcoxon signed-rank (p)".into(),
                format!(
                    "{} ({}), {} pairs",
                    num(Some(w.statistic), 1),
                    num(Some(w.p_value), 4),
                    s.wilcoxon_sample
                ),
            ));
        }
        if let Some(u) = &s.underestimate {
            analysis.push((
                format!("underestimates by > {}", u.by),
                format!(
                    "{} of {} ({}, limit {}){}",
                    u.count,
                    u.labelled,
                    pct(Some(u.share)),
                    pct(Some(u.max_share)),
                    if u.exceeded { ": EXCEEDED" } else { "" }
                ),
            ));
        }
    }
    if let Some(d) = &s.drift {
        analysis.push(("prediction drift: PSI / JS distance".into(), drift_text(d)));
    }
    if let Some(c) = &s.prediction_chi2 {
        analysis.push((
            "χ² of the prediction distributions (dof, p)".into(),
            format!(
                "{} ({}, {})",
                num(Some(c.statistic), 3),
                c.dof,
                num(Some(c.p_value), 4)
            ),
        ));
    }
    if let Some(t) = &s.transitions {
        detail.push((
            format!("Transitions: {current} (rows) → {candidate} (columns), compared requests"),
            class_table(format!("{current} \\ {candidate}"), t),
        ));
    }
    class_detail(current, &sa.primary_stats, analysis, detail);
    class_detail(candidate, &sa.shadow_stats, analysis, detail);
    segment_detail(
        &s.segments,
        current,
        candidate,
        s.segment_failure.as_ref(),
        analysis,
        detail,
    );
    analysis.push(("p-value the rules used".into(), num(s.p_value, 4)));
    analysis.push((
        "primary / shadow p95 ms".into(),
        format!(
            "{} / {}",
            num(sa.primary_stats.p95_ms, 2),
            num(sa.shadow_stats.p95_ms, 2)
        ),
    ));
    analysis.push((
        "disagreement cases shown".into(),
        sa.disagreements.len().to_string(),
    ));
    analysis.push((
        "recommendation".into(),
        s.recommendation.as_str().to_string(),
    ));
}

/// One row per version: traffic, errors, latency, quality; with `provenance`, each version's
/// artefact (short) and cost per 1,000 predictions too.
fn versions_table(
    stats: &std::collections::BTreeMap<String, VersionStats>,
    provenance: &std::collections::BTreeMap<String, VersionIdentity>,
) -> Table {
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
    for (v, s) in stats {
        versions.push(vec![
            v.clone(),
            int(s.requests),
            int(s.errors),
            num(s.p50_ms, 2),
            num(s.p95_ms, 2),
            num(s.p99_ms, 2),
            int(s.labelled),
            pct(s.accuracy),
            num(s.mae, 3),
        ]);
    }
    if !provenance.is_empty() {
        versions[0].extend(["cost /1k".to_string(), "artefact".to_string()]);
        for row in versions.iter_mut().skip(1) {
            let p = provenance.get(&row[0]);
            row.push(num(p.and_then(|p| p.cost_per_1k), 2));
            row.push(p.map_or_else(|| "—".to_string(), |p| p.artefact.short()));
        }
    }
    versions
}

/// Each version's full artefact, git SHA and registry reference.
fn provenance_table(provenance: &std::collections::BTreeMap<String, VersionIdentity>) -> Table {
    let mut rows = vec![vec![
        "version".to_string(),
        "artefact".to_string(),
        "git sha".to_string(),
        "registry".to_string(),
        "cost /1k".to_string(),
    ]];
    for (v, p) in provenance {
        rows.push(vec![
            v.clone(),
            p.artefact.full(),
            text(p.git_sha.as_deref()),
            text(p.registry.as_deref()),
            num(p.cost_per_1k, 2),
        ]);
    }
    rows
}

/// The candidate's accuracy, latency and cost against the current version's.
fn cost_lines(c: &CostComparison, analysis: &mut Pairs) {
    let (old, new) = (&c.current, &c.candidate);
    let signed =
        |v: Option<f64>, digits: usize| v.map_or("—".to_string(), |v| format!("{v:+.digits$}"));
    if c.accuracy_difference.is_some() {
        analysis.push((
            format!("accuracy, {new} − {old} (observed)"),
            c.accuracy_difference
                .map_or("—".to_string(), |d| format!("{:+.2} points", d * 100.0)),
        ));
    }
    if c.mae_difference.is_some() {
        analysis.push((format!("MAE, {new} − {old}"), signed(c.mae_difference, 3)));
    }
    let times = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2}×"));
    analysis.push((
        format!("latency p50 / p95, {new} ÷ {old}"),
        format!("{} / {}", times(c.p50_ratio), times(c.p95_ratio)),
    ));
    if c.current_cost_per_1k.is_some() || c.candidate_cost_per_1k.is_some() {
        analysis.push((
            format!("cost per 1,000 predictions, {old} → {new}"),
            format!(
                "{} → {} ({}, {})",
                num(c.current_cost_per_1k, 2),
                num(c.candidate_cost_per_1k, 2),
                times(c.cost_ratio),
                signed(c.cost_difference_per_1k, 2)
            ),
        ));
    }
}

/// Summary, versions, events and analysis, shared by the text, Markdown and HTML renderings.
fn tables(r: &Report) -> Tables {
    let ro = &r.rollout;
    let summary = vec![
        ("rollout".into(), ro.name.clone()),
        ("model".into(), ro.model.clone()),
        ("kind".into(), ro.kind.clone()),
        (
            "versions".into(),
            if ro.arms.is_empty() {
                format!("{} → {}", ro.current, ro.candidate)
            } else {
                format!("{} (control) vs {}", ro.current, ro.arms[1..].join(", "))
            },
        ),
        ("phase".into(), ro.phase.as_str().to_string()),
        (
            "recommendation".into(),
            text(ro.recommendation.map(|r| r.as_str())),
        ),
        ("reason".into(), text(ro.reason.as_deref())),
    ];
    let versions = versions_table(&r.versions, &r.provenance);
    let mut events = vec![vec![
        "seq".into(),
        "time (ms)".into(),
        "event".into(),
        "by".into(),
        "message".into(),
    ]];
    for e in &r.events {
        events.push(vec![
            int(e.seq),
            e.ts_ms.to_string(),
            e.kind.clone(),
            e.actor.clone(),
            event_text(e),
        ]);
    }
    let a = &r.analysis;
    let mut analysis = Vec::new();
    let mut detail = Vec::new();
    if let Some(sa) = &a.shadow {
        shadow_lines(sa, &ro.current, &ro.candidate, &mut analysis, &mut detail);
    }
    if let Some(aa) = &a.ab {
        if let Some(ab) = &aa.report {
            two_arm_lines(ab, &mut analysis);
            if let Some(st) = &ab.stratified {
                stratified_detail(st, &mut analysis, &mut detail);
            }
        }
        if let Some(abn) = &aa.abn {
            abn_detail(abn, &mut analysis, &mut detail);
        }
        segment_detail(
            &aa.segments,
            &ro.current,
            &ro.candidate,
            None,
            &mut analysis,
            &mut detail,
        );
    }
    if let Some(c) = &a.canary {
        let list: Vec<String> = c
            .steps
            .iter()
            .map(|s| format!("{}%", num(Some(s.percent), 0)))
            .collect();
        analysis.push(("steps".into(), list.join(" → ")));
        analysis.push(("current step".into(), c.current_step.to_string()));
        if let Some(d) = &c.drift {
            analysis.push((
                "prediction drift, canary vs stable over the rollout: PSI / JS distance".into(),
                drift_text(d),
            ));
        }
        segment_detail(
            &c.segments,
            &ro.current,
            &ro.candidate,
            None,
            &mut analysis,
            &mut detail,
        );
    }
    if a.shadow.is_none() {
        for (v, s) in &r.versions {
            class_detail(v, s, &mut analysis, &mut detail);
        }
    }
    if let Some(c) = &r.cost {
        cost_lines(c, &mut analysis);
    }
    if !r.provenance.is_empty() {
        detail.push(("provenance".to_string(), provenance_table(&r.provenance)));
    }
    if let Some(b) = &a.blue_green {
        for s in &b.switches {
            analysis.push((
                s.kind.clone(),
                format!(
                    "at {} ms, routing swap {} µs",
                    s.ts_ms,
                    num(s.routing_swap_us, 0)
                ),
            ));
        }
    }
    Tables {
        summary,
        versions,
        events,
        analysis,
        detail,
    }
}

/// A table as right-aligned columns.
fn aligned(rows: &Table, out: &mut String) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|row| row.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  "));
    }
}

pub fn render_text(r: &Report) -> String {
    let Tables {
        summary,
        versions,
        events,
        analysis,
        detail,
    } = tables(r);
    let mut out = String::new();
    for (k, v) in &summary {
        let _ = writeln!(out, "{k:<16} {v}");
    }
    out.push('\n');
    aligned(&versions, &mut out);
    if !analysis.is_empty() {
        out.push('\n');
        let w = analysis
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        for (k, v) in &analysis {
            let _ = writeln!(out, "{k:<w$} {v}");
        }
    }
    for (title, table) in &detail {
        let _ = writeln!(out, "\n{title}");
        aligned(table, &mut out);
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

pub fn render_markdown(r: &Report) -> String {
    let Tables {
        summary,
        versions,
        events,
        analysis,
        detail,
    } = tables(r);
    let mut out = format!("# Deployment report: {}\n\n", r.rollout.name);
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
    for (title, rows) in &detail {
        let _ = writeln!(out, "\n### {title}\n");
        table(rows, &mut out);
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

pub fn render_html(r: &Report) -> String {
    let Tables {
        summary,
        versions,
        events,
        analysis,
        detail,
    } = tables(r);
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
<h1>Deployment report: {name}</h1>{summary}<h2>Versions</h2>{versions}<h2>Analysis</h2>{analysis}{detail}<h2>Audit trail</h2>{events}</body></html>",
        name = escape(&r.rollout.name),
        summary = kv(&summary),
        versions = table(&versions),
        analysis = kv(&analysis),
        detail = detail
            .iter()
            .map(|(title, rows)| format!("<h3>{}</h3>{}", escape(title), table(rows)))
            .collect::<String>(),
        events = table(&events),
    )
}

// ---------------------------------------------------------------------------------------------
// Replays.

/// A replay's summary, versions, and the shadow analysis's lines and tables.
fn replay_tables(r: &ReplayReport) -> (Pairs, Table, Pairs, Vec<(String, Table)>) {
    let s = &r.analysis.report;
    let summary = vec![
        ("model".into(), r.model.clone()),
        (
            "versions".into(),
            format!("{} (primary) → {} (candidate)", r.primary, r.candidate),
        ),
        ("source".into(), r.source.clone()),
        (
            "requests".into(),
            format!(
                "{} replayed, {} labelled{}",
                r.requests,
                r.labelled_requests,
                if r.skipped > 0 {
                    format!(
                        ", {} log rows skipped (input cut or not a request)",
                        r.skipped
                    )
                } else {
                    String::new()
                }
            ),
        ),
        (
            "recommendation".into(),
            s.recommendation.as_str().to_string(),
        ),
        ("reason".into(), s.reason.clone()),
        (
            "elapsed".into(),
            format!("{:.1} s", r.elapsed_ms as f64 / 1000.0),
        ),
    ];
    let mut analysis = Vec::new();
    let mut detail = Vec::new();
    shadow_lines(
        &r.analysis,
        &r.primary,
        &r.candidate,
        &mut analysis,
        &mut detail,
    );
    (
        summary,
        versions_table(&r.versions, &Default::default()),
        analysis,
        detail,
    )
}

/// A replay report as aligned text (what `switchyard replay` prints).
pub fn render_replay_text(r: &ReplayReport) -> String {
    let (summary, versions, analysis, detail) = replay_tables(r);
    let mut out = String::new();
    for (k, v) in &summary {
        let _ = writeln!(out, "{k:<16} {v}");
    }
    out.push('\n');
    aligned(&versions, &mut out);
    out.push('\n');
    let w = analysis
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (k, v) in &analysis {
        let _ = writeln!(out, "{k:<w$} {v}");
    }
    for (title, table) in &detail {
        let _ = writeln!(out, "\n{title}");
        aligned(table, &mut out);
    }
    out
}

/// A Markdown table: the first row is the header.
fn markdown_table(rows: &[Vec<String>], out: &mut String) {
    if let Some(head) = rows.first() {
        let _ = writeln!(out, "| {} |", head.join(" | "));
        let _ = writeln!(out, "|{}|", vec!["---"; head.len()].join("|"));
        for row in &rows[1..] {
            let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
    }
}

/// A replay report in Markdown.
pub fn render_replay_markdown(r: &ReplayReport) -> String {
    let (summary, versions, analysis, detail) = replay_tables(r);
    let mut out = format!(
        "# Replay: {} → {} on {}\n\n",
        r.primary, r.candidate, r.model
    );
    let kv = |header: [&str; 2], pairs: Pairs| -> Table {
        std::iter::once(vec![header[0].to_string(), header[1].to_string()])
            .chain(pairs.into_iter().map(|(k, v)| vec![k, v]))
            .collect()
    };
    markdown_table(&kv(["", ""], summary), &mut out);
    out.push_str("\n## Versions\n\n");
    markdown_table(&versions, &mut out);
    out.push_str("\n## Analysis\n\n");
    markdown_table(&kv(["statistic", "value"], analysis), &mut out);
    for (title, rows) in &detail {
        let _ = writeln!(out, "\n### {title}\n");
        markdown_table(rows, &mut out);
    }
    out
}
