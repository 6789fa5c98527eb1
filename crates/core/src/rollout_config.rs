//! Rollout specs as written by operators (YAML through `switchyard apply -f`, or JSON through
//! the admin API): raw serde shapes, defaults from the seed notebook, and validation that
//! returns every problem at once. Unknown fields are reported by the parsing edge (through
//! `serde_ignored`) together with the validation problems.
//!
//! Percentages are written as percent (`weight: 5`), durations in milliseconds.

use serde::Deserialize;

use crate::rollout::{
    AbMetric, AbSpec, BlueGreenSpec, CanarySpec, GatePolicy, RolloutKind, RolloutSpec, ShadowSpec,
    Step,
};

#[derive(Debug, Clone, Deserialize)]
pub struct RawStep {
    /// Percent of traffic to the canary.
    pub weight: f64,
    pub min_requests: Option<u64>,
    pub min_duration_ms: Option<u64>,
    #[serde(default)]
    pub require_approval: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawGate {
    /// Absolute accuracy drop (0.05 = 5 points); `null` disables.
    #[serde(default = "some_accuracy_drop")]
    pub max_accuracy_drop: Option<f64>,
    #[serde(default = "some_mae_increase")]
    pub max_mae_increase: Option<f64>,
    pub min_labelled: Option<u64>,
    #[serde(default = "some_p95_increase")]
    pub max_p95_increase: Option<f64>,
    pub min_p95_increase_ms: Option<f64>,
    #[serde(default = "some_error_ratio")]
    pub max_error_ratio: Option<f64>,
    pub min_error_rate: Option<f64>,
    pub significance: Option<f64>,
}

fn some_accuracy_drop() -> Option<f64> {
    GatePolicy::default().max_accuracy_drop
}
fn some_mae_increase() -> Option<f64> {
    GatePolicy::default().max_mae_increase
}
fn some_p95_increase() -> Option<f64> {
    GatePolicy::default().max_p95_increase
}
fn some_p95_ratio() -> Option<f64> {
    Some(DEFAULT_MAX_P95_RATIO)
}
fn some_error_ratio() -> Option<f64> {
    GatePolicy::default().max_error_ratio
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawCanary {
    pub stable: Option<String>,
    pub candidate: Option<String>,
    pub steps: Option<Vec<RawStep>>,
    pub min_requests: Option<u64>,
    pub min_duration_ms: Option<u64>,
    pub gate: Option<RawGate>,
    pub step_deadline_ms: Option<u64>,
    #[serde(default)]
    pub rollback_on_deadline: bool,
}

/// A rollout spec as written.
#[derive(Debug, Clone, Deserialize)]
pub struct RawRollout {
    pub name: String,
    pub model: String,
    pub kind: String,
    // canary
    pub stable: Option<String>,
    pub candidate: Option<String>,
    pub steps: Option<Vec<RawStep>>,
    pub min_requests: Option<u64>,
    pub min_duration_ms: Option<u64>,
    pub gate: Option<RawGate>,
    pub step_deadline_ms: Option<u64>,
    #[serde(default)]
    pub rollback_on_deadline: bool,
    // shadow
    pub primary: Option<String>,
    pub sample: Option<f64>,
    pub min_labelled: Option<u64>,
    pub min_improvement: Option<f64>,
    pub max_drop: Option<f64>,
    pub alpha: Option<f64>,
    pub min_agreement: Option<f64>,
    pub max_error_rate: Option<f64>,
    pub then_canary: Option<RawCanary>,
    #[serde(default)]
    pub chain_requires_approval: bool,
    // a/b
    pub control: Option<String>,
    pub treatment: Option<String>,
    pub treatment_weight: Option<f64>,
    /// `accuracy` or `conversion:<metric name>`.
    pub metric: Option<String>,
    pub baseline: Option<f64>,
    pub mde: Option<f64>,
    pub power: Option<f64>,
    #[serde(default)]
    pub sequential: bool,
    #[serde(default)]
    pub auto_promote: bool,
    pub srm_threshold: Option<f64>,
    // blue-green
    pub active: Option<String>,
    pub min_accuracy: Option<f64>,
    pub max_p95_ms: Option<f64>,
    pub monitor_min_requests: Option<u64>,
    pub monitor_duration_ms: Option<u64>,
    /// Green's p95 over blue's that switches back; `null` disables the latency check.
    #[serde(default = "some_p95_ratio")]
    pub max_p95_ratio: Option<f64>,
    /// Blue-green: p95 increases below this many ms never switch back.
    pub min_p95_increase_ms: Option<f64>,
    pub retention_ms: Option<u64>,
    pub validation_set: Option<String>,
    pub smoke_requests: Option<u64>,
}

/// The seed's canary steps: 5 → 25 → 50 → 100%.
pub const DEFAULT_STEPS: [f64; 4] = [5.0, 25.0, 50.0, 100.0];
/// Default minimum requests and duration per step (the seed asks for 50–100 requests).
pub const DEFAULT_STEP_REQUESTS: u64 = 100;
pub const DEFAULT_STEP_DURATION_MS: u64 = 60_000;
pub const DEFAULT_RETENTION_MS: u64 = 24 * 3_600_000;
/// Blue-green: green's p95 over blue's that switches back.
pub const DEFAULT_MAX_P95_RATIO: f64 = 1.5;

fn bp(name: &str, percent: f64, problems: &mut Vec<String>) -> u32 {
    if !(percent.is_finite() && (0.0..=100.0).contains(&percent)) {
        problems.push(format!(
            "{name}: must be a percentage in [0, 100], got {percent}"
        ));
        return 0;
    }
    (percent * 100.0).round() as u32
}

fn required(field: &Option<String>, name: &str, kind: &str, problems: &mut Vec<String>) -> String {
    field.clone().unwrap_or_else(|| {
        problems.push(format!("{name}: required for a {kind} rollout"));
        String::new()
    })
}

fn gate(raw: Option<RawGate>, problems: &mut Vec<String>) -> GatePolicy {
    let d = GatePolicy::default();
    let Some(g) = raw else { return d };
    if let Some(s) = g.significance {
        if !(s > 0.0 && s < 1.0) {
            problems.push(format!(
                "gate.significance: must be strictly between 0 and 1, got {s}"
            ));
        }
    }
    GatePolicy {
        max_accuracy_drop: g.max_accuracy_drop,
        max_mae_increase: g.max_mae_increase,
        min_labelled: g.min_labelled.unwrap_or(d.min_labelled),
        max_p95_increase: g.max_p95_increase,
        min_p95_increase_ms: g.min_p95_increase_ms.unwrap_or(d.min_p95_increase_ms),
        max_error_ratio: g.max_error_ratio,
        min_error_rate: g.min_error_rate.unwrap_or(d.min_error_rate),
        significance: g.significance,
    }
}

fn canary(raw: RawCanary, problems: &mut Vec<String>, prefix: &str) -> CanarySpec {
    let min_requests = raw.min_requests.unwrap_or(DEFAULT_STEP_REQUESTS);
    let min_duration_ms = raw.min_duration_ms.unwrap_or(DEFAULT_STEP_DURATION_MS);
    let steps = match raw.steps {
        Some(steps) => steps
            .iter()
            .enumerate()
            .map(|(i, s)| Step {
                weight: bp(&format!("{prefix}steps[{i}].weight"), s.weight, problems),
                min_requests: s.min_requests.unwrap_or(min_requests),
                min_duration_ms: s.min_duration_ms.unwrap_or(min_duration_ms),
                require_approval: s.require_approval,
            })
            .collect(),
        None => DEFAULT_STEPS
            .iter()
            .map(|&w| Step {
                weight: (w * 100.0) as u32,
                min_requests,
                min_duration_ms,
                require_approval: false,
            })
            .collect(),
    };
    CanarySpec {
        stable: required(&raw.stable, &format!("{prefix}stable"), "canary", problems),
        candidate: required(
            &raw.candidate,
            &format!("{prefix}candidate"),
            "canary",
            problems,
        ),
        steps,
        gate: gate(raw.gate, problems),
        step_deadline_ms: raw.step_deadline_ms,
        rollback_on_deadline: raw.rollback_on_deadline,
    }
}

impl RawRollout {
    /// Builds the spec, checking it against the model's declared versions. Every problem is
    /// returned, each prefixed with the rollout's name.
    pub fn validate(self, declared: &[&str]) -> Result<RolloutSpec, Vec<String>> {
        let mut problems = Vec::new();
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            problems.push(format!(
                "name: '{}' must use letters, digits, '-', '_' and '.'",
                self.name
            ));
        }
        let kind = match self.kind.as_str() {
            "canary" => RolloutKind::Canary(canary(
                RawCanary {
                    stable: self.stable,
                    candidate: self.candidate,
                    steps: self.steps,
                    min_requests: self.min_requests,
                    min_duration_ms: self.min_duration_ms,
                    gate: self.gate,
                    step_deadline_ms: self.step_deadline_ms,
                    rollback_on_deadline: self.rollback_on_deadline,
                },
                &mut problems,
                "",
            )),
            "shadow" => RolloutKind::Shadow(ShadowSpec {
                primary: required(&self.primary, "primary", "shadow", &mut problems),
                candidate: required(&self.candidate, "candidate", "shadow", &mut problems),
                sample: bp("sample", self.sample.unwrap_or(100.0), &mut problems),
                min_labelled: self.min_labelled.unwrap_or(1_000),
                min_duration_ms: self.min_duration_ms.unwrap_or(0),
                min_improvement: self.min_improvement.unwrap_or(0.02),
                max_drop: self.max_drop.unwrap_or(0.01),
                alpha: self.alpha.unwrap_or(0.05),
                min_agreement: self.min_agreement.unwrap_or(0.5),
                max_error_rate: self.max_error_rate.unwrap_or(0.05),
                then_canary: self
                    .then_canary
                    .map(|c| canary(c, &mut problems, "then_canary.")),
                chain_requires_approval: self.chain_requires_approval,
            }),
            "ab" => {
                let metric = match self.metric.as_deref() {
                    None | Some("accuracy") => AbMetric::Accuracy,
                    Some(m) => match m.strip_prefix("conversion:") {
                        Some(name) if !name.is_empty() => AbMetric::Conversion(name.to_string()),
                        _ => {
                            problems.push(format!(
                                "metric: '{m}' is not accuracy or conversion:<metric name>"
                            ));
                            AbMetric::Accuracy
                        }
                    },
                };
                let tw = bp(
                    "treatment_weight",
                    self.treatment_weight.unwrap_or(50.0),
                    &mut problems,
                );
                RolloutKind::Ab(AbSpec {
                    control: required(&self.control, "control", "ab", &mut problems),
                    treatment: required(&self.treatment, "treatment", "ab", &mut problems),
                    treatment_weight: tw,
                    metric,
                    baseline: self.baseline.unwrap_or_else(|| {
                        problems.push(
                            "baseline: required for an ab rollout (the expected control rate)"
                                .into(),
                        );
                        0.5
                    }),
                    mde: self.mde.unwrap_or_else(|| {
                        problems.push(
                            "mde: required for an ab rollout (the smallest effect worth detecting)"
                                .into(),
                        );
                        0.05
                    }),
                    alpha: self.alpha.unwrap_or(0.05),
                    power: self.power.unwrap_or(0.8),
                    sequential: self.sequential,
                    auto_promote: self.auto_promote,
                    srm_threshold: self
                        .srm_threshold
                        .unwrap_or(switchyard_stats::chi2::DEFAULT_SRM_THRESHOLD),
                })
            }
            "blue_green" => RolloutKind::BlueGreen(BlueGreenSpec {
                active: required(&self.active, "active", "blue_green", &mut problems),
                candidate: required(&self.candidate, "candidate", "blue_green", &mut problems),
                min_accuracy: self.min_accuracy,
                max_p95_ms: self.max_p95_ms,
                monitor_min_requests: self.monitor_min_requests.unwrap_or(100),
                monitor_duration_ms: self.monitor_duration_ms.unwrap_or(300_000),
                max_error_rate: self.max_error_rate.unwrap_or(0.05),
                max_p95_ratio: self.max_p95_ratio,
                min_p95_increase_ms: self
                    .min_p95_increase_ms
                    .unwrap_or(crate::rollout::DEFAULT_MIN_P95_INCREASE_MS),
                retention_ms: self.retention_ms.unwrap_or(DEFAULT_RETENTION_MS),
                validation_set: self.validation_set,
                smoke_requests: self.smoke_requests.unwrap_or(10),
            }),
            other => {
                problems.push(format!(
                    "kind: '{other}' is not one of shadow, canary, ab, blue_green"
                ));
                return Err(problems);
            }
        };
        let spec = RolloutSpec {
            name: self.name,
            model: self.model,
            kind,
        };
        problems.extend(spec.problems(declared));
        if problems.is_empty() {
            Ok(spec)
        } else {
            Err(problems)
        }
    }
}
