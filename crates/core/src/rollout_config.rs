//! Rollout specs as written by operators (YAML through `switchyard apply -f`, or JSON through
//! the admin API): raw serde shapes, defaults from the seed notebook, and validation that
//! returns every problem at once. Unknown fields are reported by the parsing edge (through
//! `serde_ignored`) together with the validation problems.
//!
//! Each kind has its own raw struct, beside its spec in `rollout::<kind>` ([`RawCanary`],
//! [`RawShadow`], [`RawAb`], [`RawBlueGreen`]). A spec is one flat mapping whose `kind` may come
//! last, so [`RawRollout`] reads the fields every kind shares and hands each other field to the
//! kinds that take it; a field only other kinds take is a problem that names them ("steps: a
//! canary field; a shadow rollout does not take it"), a field no kind takes is left to the
//! parsing edge.
//!
//! Percentages are written as percent (`weight: 5`), durations in milliseconds.

use std::fmt;

use serde::de::{Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use crate::rollout::raw::{Field, RawFields};
use crate::rollout::{RolloutKind, RolloutSpec};

pub use crate::rollout::ab::RawAb;
pub use crate::rollout::blue_green::{RawBlueGreen, DEFAULT_MAX_P95_RATIO, DEFAULT_RETENTION_MS};
pub use crate::rollout::canary::{
    RawCanary, RawGate, RawStep, DEFAULT_STEPS, DEFAULT_STEP_DURATION_MS, DEFAULT_STEP_REQUESTS,
};
pub use crate::rollout::shadow::RawShadow;

/// A rollout spec as written: the fields every kind shares, and the others read into each kind
/// that takes them.
#[derive(Debug, Clone, Default)]
pub struct RawRollout {
    pub name: String,
    pub model: String,
    pub kind: String,
    pub canary: RawCanary,
    pub shadow: RawShadow,
    pub ab: RawAb,
    pub blue_green: RawBlueGreen,
    /// Every field written besides `name`, `model` and `kind`, in order.
    pub written: Vec<String>,
}

/// Each kind with the fields it takes.
fn kinds() -> [(&'static str, &'static [&'static str]); 4] {
    [
        ("shadow", RawShadow::FIELDS),
        ("canary", RawCanary::FIELDS),
        ("ab", RawAb::FIELDS),
        ("blue_green", RawBlueGreen::FIELDS),
    ]
}

impl<'de> Deserialize<'de> for RawRollout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RolloutVisitor)
    }
}

struct RolloutVisitor;

impl<'de> Visitor<'de> for RolloutVisitor {
    type Value = RawRollout;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a rollout spec (name, model, kind and the kind's fields)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRollout, A::Error> {
        let mut raw = RawRollout::default();
        let (mut name, mut model, mut kind) = (None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "name" => set(&mut name, "name", map.next_value()?)?,
                "model" => set(&mut model, "model", map.next_value()?)?,
                "kind" => set(&mut kind, "kind", map.next_value()?)?,
                _ if raw.written.contains(&key) => {
                    return Err(A::Error::custom(format_args!("duplicate field `{key}`")))
                }
                // Fields several kinds take: read once, given to each.
                "candidate" => {
                    let v: Option<String> = map.next_value()?;
                    raw.canary.candidate.clone_from(&v);
                    raw.shadow.candidate.clone_from(&v);
                    raw.blue_green.candidate = v;
                }
                "min_duration_ms" => {
                    let v: Option<u64> = map.next_value()?;
                    raw.canary.min_duration_ms = v;
                    raw.shadow.min_duration_ms = v;
                }
                "alpha" => {
                    let v: Option<f64> = map.next_value()?;
                    raw.shadow.alpha = v;
                    raw.ab.alpha = v;
                }
                "approvals" => {
                    let v: Option<u64> = map.next_value()?;
                    raw.canary.approvals = v;
                    raw.shadow.approvals = v;
                    raw.ab.approvals = v;
                }
                "test" => {
                    let v: Option<String> = map.next_value()?;
                    raw.shadow.test.clone_from(&v);
                    raw.ab.test = v;
                }
                "max_error_rate" => {
                    let v: Option<f64> = map.next_value()?;
                    raw.shadow.max_error_rate = v;
                    raw.blue_green.max_error_rate = v;
                }
                k if RawCanary::FIELDS.contains(&k) => map.next_value_seed(Field {
                    raw: &mut raw.canary,
                    key: k,
                })?,
                k if RawShadow::FIELDS.contains(&k) => map.next_value_seed(Field {
                    raw: &mut raw.shadow,
                    key: k,
                })?,
                k if RawAb::FIELDS.contains(&k) => map.next_value_seed(Field {
                    raw: &mut raw.ab,
                    key: k,
                })?,
                k if RawBlueGreen::FIELDS.contains(&k) => map.next_value_seed(Field {
                    raw: &mut raw.blue_green,
                    key: k,
                })?,
                // Unknown to every kind: skipped here, reported by a `serde_ignored` edge.
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            if !matches!(key.as_str(), "name" | "model" | "kind") {
                raw.written.push(key);
            }
        }
        raw.name = name.ok_or_else(|| A::Error::missing_field("name"))?;
        raw.model = model.ok_or_else(|| A::Error::missing_field("model"))?;
        raw.kind = kind.ok_or_else(|| A::Error::missing_field("kind"))?;
        Ok(raw)
    }
}

/// Sets a common field, refusing it written twice.
fn set<E: serde::de::Error>(
    slot: &mut Option<String>,
    name: &'static str,
    v: String,
) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(v);
    Ok(())
}

/// "a canary", "an ab".
fn article(word: &str) -> String {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {word}")
    } else {
        format!("a {word}")
    }
}

impl RawRollout {
    /// A problem for each field written that the rollout's kind does not take but another does.
    fn fields_of_other_kinds(&self) -> Vec<String> {
        let kinds = kinds();
        // A bandit is an A/B test whose weights move: it takes the ab fields.
        let kind = if self.kind == "bandit" {
            "ab"
        } else {
            self.kind.as_str()
        };
        let Some((_, own)) = kinds.iter().find(|(k, _)| *k == kind) else {
            return Vec::new();
        };
        self.written
            .iter()
            .filter(|f| !own.contains(&f.as_str()))
            .filter_map(|f| {
                let owners: Vec<&str> = kinds
                    .iter()
                    .filter(|(_, fields)| fields.contains(&f.as_str()))
                    .map(|(k, _)| *k)
                    .collect();
                let (last, rest) = owners.split_last()?;
                let owners = if rest.is_empty() {
                    last.to_string()
                } else {
                    format!("{} or {last}", rest.join(", "))
                };
                Some(format!(
                    "{f}: {} field; {} rollout does not take it",
                    article(&owners),
                    article(&self.kind)
                ))
            })
            .collect()
    }

    /// Builds the spec, checking it against the model's declared versions. Every problem is
    /// returned, each prefixed with the rollout's name.
    pub fn validate(self, declared: &[&str]) -> Result<RolloutSpec, Vec<String>> {
        self.validate_for(declared, None)
    }

    /// [`RawRollout::validate`], and when `segments` is given (the model's declared segment
    /// fields) the spec's segment gates are checked against them too.
    pub fn validate_for(
        self,
        declared: &[&str],
        segments: Option<&[&str]>,
    ) -> Result<RolloutSpec, Vec<String>> {
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
        problems.extend(self.fields_of_other_kinds());
        let kind = match self.kind.as_str() {
            "canary" => RolloutKind::Canary(self.canary.validate(&mut problems, "")),
            "shadow" => RolloutKind::Shadow(self.shadow.validate(&mut problems)),
            "ab" => RolloutKind::Ab(self.ab.validate(&mut problems, false)),
            "bandit" => RolloutKind::Ab(self.ab.validate(&mut problems, true)),
            "blue_green" => RolloutKind::BlueGreen(self.blue_green.validate(&mut problems)),
            other => {
                problems.push(format!(
                    "kind: '{other}' is not one of shadow, canary, ab, bandit, blue_green"
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
        if let Some(segments) = segments {
            problems.extend(spec.segment_problems(segments));
        }
        if problems.is_empty() {
            Ok(spec)
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Tolerance;
    use crate::rollout::{
        CanarySpec, ExternalGate, ExternalSource, GatePolicy, LiveAlerts, RegressionTest,
        ShadowRules, ShadowSpec, Step, Underestimate,
    };
    use crate::routing::{Strategy, Target};
    use crate::segments::SegmentGate;

    /// Parses `yaml` as the server's edge does (unknown fields listed by `serde_ignored`), then
    /// validates it against versions `v1` and `v2`.
    fn parse(yaml: &str) -> Result<RolloutSpec, Vec<String>> {
        let mut problems = Vec::new();
        let raw: RawRollout =
            serde_ignored::deserialize(serde_yaml::Deserializer::from_str(yaml), |path| {
                problems.push(format!(
                    "{}: unknown field",
                    path.to_string().replace(".?", "").replace("?.", "")
                ))
            })
            .map_err(|e| vec![e.to_string()])?;
        match raw.validate(&["v1", "v2"]) {
            Ok(spec) if problems.is_empty() => Ok(spec),
            Ok(_) => Err(problems),
            Err(more) => Err(problems.into_iter().chain(more).collect()),
        }
    }

    /// Every problem of `yaml`: each expected one is found, and there are no others.
    fn check(yaml: &str, expected: &[&str]) {
        let problems = parse(yaml).err().unwrap_or_default();
        for e in expected {
            assert!(
                problems.iter().any(|p| p.contains(e)),
                "missing '{e}' in {problems:#?} for\n{yaml}"
            );
        }
        assert_eq!(problems.len(), expected.len(), "{problems:#?} for\n{yaml}");
    }

    #[test]
    fn fields_of_another_kind_are_reported_with_every_other_problem() {
        for (yaml, expected) in [
            (
                "name: s\nmodel: m\nkind: shadow\nprimary: v1\ncandidate: v2\nsample: 0\n\
                 steps: [{ weight: 50 }]\nbogus: 1\n",
                &[
                    "steps: a canary field; a shadow rollout does not take it",
                    "sample must be in (0, 100]%, got 0%",
                    "bogus: unknown field",
                ][..],
            ),
            (
                "name: a\nmodel: m\nkind: ab\ncontrol: v1\ntreatment: nope\nbaseline: 0.1\n\
                 primary: v1\n",
                &[
                    "primary: a shadow field; an ab rollout does not take it",
                    "mde: required for an ab rollout",
                    "unknown version 'nope'",
                ],
            ),
            (
                "name: b\nmodel: m\nkind: blue_green\nactive: v1\ncandidate: v2\n\
                 gate: { max_accuracy_drop: 0.1 }\nmin_accuracy: 2\n",
                &[
                    "gate: a canary field; a blue_green rollout does not take it",
                    "min_accuracy must be in [0, 1], got 2",
                ],
            ),
            // The kind may come last; a field several kinds share names them all.
            (
                "name: c\nmodel: m\nstable: v1\ncandidate: v2\nalpha: 0.05\nsample: 10\n\
                 kind: canary\n",
                &[
                    "alpha: a shadow or ab field; a canary rollout does not take it",
                    "sample: a shadow field; a canary rollout does not take it",
                ],
            ),
            (
                "name: a\nmodel: m\nkind: ab\ncontrol: v1\ntreatment: v2\nbaseline: 0.1\n\
                 mde: 0.05\ncandidate: v2\nmax_p95_ratio: null\n",
                &[
                    "candidate: a shadow, canary or blue_green field; an ab rollout does not take it",
                    "max_p95_ratio: a blue_green field; an ab rollout does not take it",
                ],
            ),
            // Approver counts: at least 1, never on a step that says it needs no approval.
            (
                "name: c\nmodel: m\nkind: canary\nstable: v1\ncandidate: v2\napprovals: 0\n\
                 steps: [{ weight: 50, approvals: 0 }, { weight: 100, require_approval: false, approvals: 2 }]\n",
                &[
                    "approvals must be at least 1 (distinct approvers needed), got 0",
                    "steps[0].approvals must be at least 1",
                    "steps[1].approvals: the step has require_approval: false",
                ],
            ),
            (
                "name: a\nmodel: m\nkind: ab\ncontrol: v1\ntreatment: v2\nbaseline: 0.1\n\
                 mde: 0.05\napprovals: 0\n",
                &["approvals must be at least 1"],
            ),
            (
                "name: s\nmodel: m\nkind: shadow\nprimary: v1\ncandidate: v2\napprovals: 99\n",
                &["approvals must be at most 20 (distinct approvers needed), got 99"],
            ),
            (
                "name: b\nmodel: m\nkind: blue_green\nactive: v1\ncandidate: v2\napprovals: 2\n",
                &["approvals: a shadow, canary or ab field; a blue_green rollout does not take it"],
            ),
            // A shadow's chained canary takes canary fields only.
            (
                "name: s\nmodel: m\nkind: shadow\nprimary: v1\ncandidate: v2\n\
                 then_canary: { stable: v1, candidate: v2, steps: [{ weight: 50 }], sample: 5 }\n",
                &[
                    "then_canary.sample: unknown field",
                    "then_canary: the last step must send 100% to the candidate",
                ],
            ),
            // Unknown fields are still found at every depth, and an unknown kind is named.
            (
                "name: c\nmodel: m\nkind: canary\nstable: v1\ncandidate: nope\nbogus: 1\n\
                 gate: { max_acuracy_drop: 0.1 }\n",
                &[
                    "bogus: unknown field",
                    "gate.max_acuracy_drop: unknown field",
                    "unknown version 'nope'",
                ],
            ),
            (
                "name: x\nmodel: m\nkind: linear\nsteps: []\n",
                &["kind: 'linear' is not one of shadow, canary, ab, bandit, blue_green"],
            ),
            (
                "name: x\nmodel: m\nkind: canary\nstable: v1\nstable: v2\n",
                &["duplicate"],
            ),
            ("name: x\nmodel: m\nstable: v1\n", &["missing field `kind`"]),
        ] {
            check(yaml, expected);
        }
    }

    #[test]
    fn a_canary_takes_every_canary_field() {
        let yaml = "name: c\nmodel: m\nkind: canary\nstable: v1\ncandidate: v2\n\
            steps: [{ weight: 10, min_requests: 5, min_duration_ms: 6, require_approval: true },\n\
            \x20 { weight: 50, approvals: 3 }, { weight: 100 }]\n\
            min_requests: 7\nmin_duration_ms: 8\nstep_deadline_ms: 9\nrollback_on_deadline: true\n\
            approvals: 2\n\
            gate: { max_accuracy_drop: 0.1, max_mae_increase: null, min_labelled: 11,\n\
            \x20 max_p95_increase: 0.2, min_p95_increase_ms: 3, max_error_ratio: 4,\n\
            \x20 min_error_rate: 0.02, significance: 0.05, max_underestimate: { by: 50, share: 0.01 },\n\
            \x20 max_psi: 0.2, segment_gate: { fields: [tester], min_samples: 50 } }\n";
        let spec = parse(yaml).unwrap();
        assert_eq!(
            spec.kind,
            RolloutKind::Canary(CanarySpec {
                stable: "v1".into(),
                candidate: "v2".into(),
                steps: vec![
                    Step {
                        weight: 1_000,
                        min_requests: 5,
                        min_duration_ms: 6,
                        require_approval: true,
                        approvals: 2,
                        target: None,
                    },
                    Step {
                        weight: 5_000,
                        min_requests: 7,
                        min_duration_ms: 8,
                        require_approval: true,
                        approvals: 3,
                        target: None,
                    },
                    Step {
                        weight: 10_000,
                        min_requests: 7,
                        min_duration_ms: 8,
                        require_approval: false,
                        approvals: 2,
                        target: None,
                    },
                ],
                gate: GatePolicy {
                    max_accuracy_drop: Some(0.1),
                    max_mae_increase: None,
                    max_underestimate: Some(Underestimate {
                        by: 50.0,
                        share: 0.01
                    }),
                    min_labelled: 11,
                    max_p95_increase: Some(0.2),
                    min_p95_increase_ms: 3.0,
                    max_error_ratio: Some(4.0),
                    min_error_rate: 0.02,
                    significance: Some(0.05),
                    max_psi: Some(0.2),
                    // The limits keep their defaults.
                    segment_gate: Some(SegmentGate {
                        fields: vec!["tester".into()],
                        max_accuracy_drop: 0.05,
                        max_mae_increase: 0.10,
                        min_samples: 50,
                    }),
                    external: vec![],
                },
                step_deadline_ms: Some(9),
                rollback_on_deadline: true,
                approvals: 2,
                group: vec![],
            })
        );
    }

    #[test]
    fn a_shadow_takes_every_shadow_field() {
        let yaml = "name: s\nmodel: m\nkind: shadow\nprimary: v1\ncandidate: v2\nsample: 50\n\
            min_labelled: 400\nmin_duration_ms: 7\nalpha: 0.01\nmax_error_rate: 0.1\n\
            promote_min_improvement: 0.03\npromote_min_agreement: 0.9\nneutral_max_change: 0.02\n\
            neutral_min_agreement: 0.97\nreject_max_drop: 0.015\n\
            regression_promote_mae_decrease: 0.2\nregression_reject_mae_increase: 0.25\n\
            test: wilcoxon\nagreement_tolerance: { absolute: 0.5 }\n\
            max_underestimate: { by: 50, share: 0.02 }\nmax_psi: 0.25\nchain_requires_approval: true\napprovals: 2\n\
            segment_gate: { max_accuracy_drop: 0.02, max_mae_increase: 0.2 }\n\
            live_alerts: { min_agreement: 0.8, max_p95_ms: 50, min_samples: 30 }\n";
        let spec = parse(yaml).unwrap();
        assert_eq!(
            spec.kind,
            RolloutKind::Shadow(ShadowSpec {
                primary: "v1".into(),
                candidate: "v2".into(),
                sample: 5_000,
                min_labelled: 400,
                min_duration_ms: 7,
                alpha: 0.01,
                max_error_rate: 0.1,
                rules: ShadowRules {
                    promote_min_improvement: 0.03,
                    promote_min_agreement: 0.9,
                    neutral_max_change: 0.02,
                    neutral_min_agreement: 0.97,
                    reject_max_drop: 0.015,
                    regression_promote_mae_decrease: 0.2,
                    regression_reject_mae_increase: 0.25,
                    test: RegressionTest::Wilcoxon,
                    // The relative part keeps its default.
                    agreement_tolerance: Tolerance {
                        absolute: 0.5,
                        relative: 0.05
                    },
                    max_underestimate: Some(Underestimate {
                        by: 50.0,
                        share: 0.02
                    }),
                    max_psi: Some(0.25),
                    segment_gate: Some(SegmentGate {
                        fields: vec![],
                        max_accuracy_drop: 0.02,
                        max_mae_increase: 0.2,
                        min_samples: 100,
                    }),
                },
                then_canary: None,
                chain_requires_approval: true,
                approvals: 2,
                // max_error_rate unwritten: the spec's own applies.
                live_alerts: LiveAlerts {
                    min_agreement: Some(0.8),
                    max_p95_ms: Some(50.0),
                    max_error_rate: None,
                    min_samples: 30,
                },
            })
        );
        // Unwritten, the rules are the seed's.
        let spec = parse("name: s\nmodel: m\nkind: shadow\nprimary: v1\ncandidate: v2\n").unwrap();
        let RolloutKind::Shadow(s) = spec.kind else {
            panic!("{spec:?}")
        };
        assert_eq!(s.rules, ShadowRules::default());
        assert_eq!(
            (
                s.rules.promote_min_improvement,
                s.rules.promote_min_agreement,
                s.rules.neutral_max_change,
                s.rules.neutral_min_agreement,
                s.rules.reject_max_drop,
                s.rules.regression_promote_mae_decrease
            ),
            (0.02, 0.95, 0.01, 0.98, 0.01, 0.10)
        );
    }

    #[test]
    fn a_targeted_canary_serves_its_region_first_then_everyone_without_moving_keys_back() {
        let yaml = "name: c\nmodel: m\nkind: canary\nstable: v1\ncandidate: v2\nsteps:\n\
            \x20 - { weight: 10, match: { region: [us-west] } }\n\
            \x20 - { weight: 100, match: { region: [us-west] } }\n\
            \x20 - { weight: 25 }\n\
            \x20 - { weight: 100 }\n";
        let raw: RawRollout = serde_yaml::from_str(yaml).unwrap();
        let spec = raw.validate_for(&["v1", "v2"], Some(&["region"])).unwrap();
        let RolloutKind::Canary(c) = &spec.kind else {
            panic!("{spec:?}")
        };
        let west = crate::routing::Target {
            field: "region".into(),
            values: vec!["us-west".into()],
            weight: 0,
        };
        let expected = [
            Strategy::targeted_canary(
                "v1",
                "v2",
                0,
                Target {
                    weight: 1_000,
                    ..west.clone()
                },
            ),
            Strategy::targeted_canary(
                "v1",
                "v2",
                0,
                Target {
                    weight: 10_000,
                    ..west.clone()
                },
            ),
            Strategy::targeted_canary(
                "v1",
                "v2",
                2_500,
                Target {
                    weight: 10_000,
                    ..west
                },
            ),
            Strategy::canary("v1", "v2", 10_000),
        ];
        for (i, e) in expected.iter().enumerate() {
            assert_eq!(&crate::rollout::step_strategy(c, i), e, "step {i}");
        }
        // Against a model without that segment field.
        let raw: RawRollout = serde_yaml::from_str(yaml).unwrap();
        let problems = raw
            .validate_for(&["v1", "v2"], Some(&["tier"]))
            .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].contains(
                "steps[0].match.region: not a segment field of model 'm' (declared: tier)"
            ),
            "{problems:#?}"
        );
    }

    #[test]
    fn bad_targeted_steps_are_listed() {
        let head = "name: c\nmodel: m\nkind: canary\nstable: v1\ncandidate: v2\nsteps:\n";
        check(
            &format!(
                "{head}\x20 - {{ weight: 10, match: {{ region: [us-west], tier: [gold] }} }}\n\
                 \x20 - {{ weight: 20, match: {{ region: [us-west] }} }}\n\
                 \x20 - {{ weight: 100 }}\n"
            ),
            &["steps[0].match: must name exactly one segment field (e.g. { region: [us-west] }), got 2"],
        );
        check(
            &format!("{head}\x20 - {{ weight: 10, match: {{ region: [] }} }}\n\x20 - {{ weight: 100 }}\n"),
            &["steps[0].match.region: must list the values served"],
        );
        check(
            &format!(
                "{head}\x20 - {{ weight: 30, match: {{ region: [us-west] }} }}\n\
                 \x20 - {{ weight: 40, match: {{ region: [eu] }} }}\n\
                 \x20 - {{ weight: 50 }}\n\
                 \x20 - {{ weight: 60, match: {{ region: [us-west] }} }}\n\
                 \x20 - {{ weight: 100, match: {{ region: [us-west] }} }}\n"
            ),
            &[
                "steps[1].match: every targeted step matches the same field and values (region=us-west), got region=eu",
                "steps[3].match: targeted steps come first",
                "steps[4].match: targeted steps come first",
                "the last step must serve everyone",
            ],
        );
    }

    #[test]
    fn bad_shadow_thresholds_are_listed_with_the_other_problems() {
        check(
            "name: s\nmodel: m\nkind: shadow\nprimary: v1\ncandidate: v2\n\
             promote_min_improvement: -0.1\npromote_min_agreement: 1.5\n\
             neutral_min_agreement: -0.2\nregression_reject_mae_increase: .nan\n\
             test: anova\nagreement_tolerance: { absolute: -1, relative: -0.05, bogus: 1 }\n\
             max_underestimate: { by: -5, share: 2 }\nmax_error_rate: 1.5\nmax_psi: -0.1\n\
             then_canary: { stable: v1, candidate: v2, gate: { max_underestimate: { by: 1, share: -0.5 }, max_psi: -1 } }\n\
             min_improvement: 0.02\n\
             live_alerts: { min_agreement: 1.5, max_p95_ms: -1, max_error_rate: 2, often: 3 }\n",
            &[
                "promote_min_improvement must be a non-negative number, got -0.1",
                "promote_min_agreement must be a fraction in [0, 1], got 1.5",
                "neutral_min_agreement must be a fraction in [0, 1], got -0.2",
                "regression_reject_mae_increase must be a non-negative number, got NaN",
                "test: must be t_test or wilcoxon, got 'anova'",
                "agreement_tolerance.absolute must be a non-negative number, got -1",
                "agreement_tolerance.relative must be a non-negative number, got -0.05",
                "agreement_tolerance.bogus: unknown field",
                "max_underestimate.by must be a non-negative number, got -5",
                "max_underestimate.share must be a fraction in [0, 1], got 2",
                "max_error_rate must be a fraction in [0, 1], got 1.5",
                "max_psi must be a non-negative number, got -0.1",
                "then_canary: gate.max_psi must be a non-negative number, got -1",
                "then_canary: gate.max_underestimate.share must be a fraction in [0, 1], got -0.5",
                // The old, absolute threshold is no longer a field.
                "min_improvement: unknown field",
                "live_alerts.min_agreement must be a fraction in [0, 1], got 1.5",
                "live_alerts.max_p95_ms must be a non-negative number, got -1",
                "live_alerts.max_error_rate must be a fraction in [0, 1], got 2",
                "live_alerts.often: unknown field",
            ],
        );
    }

    #[test]
    fn shared_fields_reach_each_kind_that_takes_them() {
        let spec = parse("name: s\nmodel: m\nkind: shadow\nprimary: v1\ncandidate: v2\nalpha: 0.01\nmin_duration_ms: 5\nmax_error_rate: 0.2\n").unwrap();
        let RolloutKind::Shadow(s) = spec.kind else {
            panic!("{spec:?}")
        };
        assert_eq!(
            (
                s.candidate.as_str(),
                s.alpha,
                s.min_duration_ms,
                s.max_error_rate
            ),
            ("v2", 0.01, 5, 0.2)
        );
        let spec = parse("name: a\nmodel: m\nkind: ab\ncontrol: v1\ntreatment: v2\nbaseline: 0.1\nmde: 0.05\nalpha: 0.01\n").unwrap();
        let RolloutKind::Ab(a) = spec.kind else {
            panic!("{spec:?}")
        };
        assert_eq!(a.alpha, 0.01);
        let spec = parse("name: b\nmodel: m\nkind: blue_green\nactive: v1\ncandidate: v2\nmax_error_rate: 0.2\nmax_p95_ratio: null\n").unwrap();
        let RolloutKind::BlueGreen(b) = spec.kind else {
            panic!("{spec:?}")
        };
        assert_eq!(
            (b.candidate.as_str(), b.max_error_rate, b.max_p95_ratio),
            ("v2", 0.2, None)
        );
        let spec =
            parse("name: b\nmodel: m\nkind: blue_green\nactive: v1\ncandidate: v2\n").unwrap();
        let RolloutKind::BlueGreen(b) = spec.kind else {
            panic!("{spec:?}")
        };
        assert_eq!(b.max_p95_ratio, Some(DEFAULT_MAX_P95_RATIO));
    }

    /// `RawRollout`'s reader gives the fields several kinds take to each of them by name: the
    /// list there must be exactly these.
    #[test]
    fn the_shared_fields_are_those_the_reader_gives_to_several_kinds() {
        let mut shared: Vec<&str> = kinds()
            .iter()
            .flat_map(|(_, fields)| fields.iter().copied())
            .filter(|f| kinds().iter().filter(|(_, fs)| fs.contains(f)).count() > 1)
            .collect();
        shared.sort_unstable();
        shared.dedup();
        assert_eq!(
            shared,
            [
                "alpha",
                "approvals",
                "candidate",
                "max_error_rate",
                "min_duration_ms",
                "test"
            ]
        );
    }

    #[test]
    fn abn_and_bandit_written_forms() {
        use crate::rollout::{AbMetric, Correction, GuardLimit};
        let parse3 = |yaml: &str| {
            let raw: RawRollout = serde_yaml::from_str(yaml).unwrap();
            raw.validate(&["v1", "v2", "v3", "v4"])
        };
        let spec = parse3(
            "name: a\nmodel: m\nkind: ab\ncontrol: v1\ntreatment: v2\n\
             variants: [{ version: v3 }, { version: v4 }]\nmetric: mean:revenue\nmin_per_arm: 500\n\
             correction: bonferroni\n\
             guardrails: [{ metric: error_rate, max: 0.02 }, { metric: latency_p95, max_increase: 0.5, min_samples: 50 }]\n",
        )
        .unwrap();
        let RolloutKind::Ab(a) = &spec.kind else {
            panic!("{spec:?}")
        };
        assert_eq!(a.metric, AbMetric::Mean("revenue".into()));
        assert_eq!(a.correction, Correction::Bonferroni);
        assert_eq!(
            (
                a.treatment_weight,
                a.variants[0].weight,
                a.variants[1].weight
            ),
            (2_500, 2_500, 2_500)
        );
        assert_eq!(a.guardrails[0].limit, GuardLimit::Max(0.02));
        assert_eq!(a.guardrails[1].limit, GuardLimit::MaxIncrease(0.5));
        assert_eq!(a.guardrails[1].min_samples, 50);
        assert_eq!(spec.kind_name(), "ab");
        // The two-arm form is unchanged: no variants, no bandit.
        let two = parse3(
            "name: a\nmodel: m\nkind: ab\ncontrol: v1\ntreatment: v2\nbaseline: 0.1\nmde: 0.05\n",
        )
        .unwrap();
        let RolloutKind::Ab(a) = &two.kind else {
            panic!()
        };
        assert_eq!(
            (a.treatment_weight, a.variants.len(), a.bandit.is_none()),
            (5_000, 0, true)
        );
        let bandit = parse3(
            "name: b\nmodel: m\nkind: bandit\ncontrol: v1\ntreatment: v2\nvariants: [{ version: v3 }]\n\
             bandit: { min_share: 10, max_step: 5, reweight_every_ms: 1000 }\n",
        )
        .unwrap();
        assert_eq!(bandit.kind_name(), "bandit");
        let RolloutKind::Ab(a) = &bandit.kind else {
            panic!()
        };
        let b = a.bandit.as_ref().unwrap();
        assert_eq!(
            (b.min_share, b.max_step, b.reweight_every_ms),
            (1_000, 500, 1_000)
        );
        let problems = parse3(
            "name: a\nmodel: m\nkind: ab\ncontrol: v1\ntreatment: v2\nvariants: [{ version: v9 }]\n\
             metric: mean:x\ncorrection: sidak\nguardrails: [{ metric: error_rate }, { metric: nope, max: 1 }]\n\
             bandit: { min_share: 5 }\n",
        )
        .unwrap_err();
        for expected in [
            "unknown version 'v9' in variants",
            "min_per_arm: required for a mean:x metric",
            "correction: must be holm or bonferroni",
            "guardrails[0]: needs exactly one of max, min, max_increase, max_decrease",
            "guardrails[1].metric: 'nope' is not a metric",
            "bandit: a bandit field; an ab rollout does not take it",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected} not in {problems:#?}"
            );
        }
    }

    #[test]
    fn test_chooses_mann_whitney_for_a_continuous_metric_and_is_a_problem_elsewhere() {
        use crate::rollout::MeanTest;
        let parse = |yaml: &str| {
            let raw: RawRollout = serde_yaml::from_str(yaml).unwrap();
            raw.validate(&["v1", "v2", "v3"])
        };
        let head = "name: a\nmodel: m\nkind: ab\ncontrol: v1\ntreatment: v2\n";
        let test_of = |yaml: &str| {
            let spec = parse(yaml).unwrap();
            let RolloutKind::Ab(a) = &spec.kind else {
                panic!("{spec:?}")
            };
            a.test
        };
        assert_eq!(
            test_of(&format!(
                "{head}metric: mean:revenue\nmin_per_arm: 100\ntest: mann_whitney\n"
            )),
            MeanTest::MannWhitney
        );
        assert_eq!(
            test_of(&format!(
                "{head}metric: abs_error\nmin_per_arm: 100\ntest: mann_whitney\n"
            )),
            MeanTest::MannWhitney
        );
        // Unwritten: Welch.
        assert_eq!(
            test_of(&format!("{head}metric: mean:revenue\nmin_per_arm: 100\n")),
            MeanTest::Welch
        );
        // On a proportion, on latency, misspelt, on a bandit, with sequential: each a listed
        // problem beside the spec's others.
        for (yaml, expected) in [
            (
                format!("{head}metric: conversion:buy\nmin_per_arm: 100\ntest: mann_whitney\ntreatment_weight: 0\n"),
                vec![
                    "test: mann_whitney compares the values of a continuous metric (mean:<name> or abs_error), and metric 'conversion:buy' is not one (a proportion is compared by the two-proportion z-test)",
                    "treatment weight must be in (0, 100)%",
                ],
            ),
            (
                format!("{head}baseline: 0.5\nmde: 0.1\ntest: mann_whitney\n"),
                vec!["metric 'accuracy' is not one (a proportion"],
            ),
            (
                format!("{head}metric: latency_p95\nmin_per_arm: 100\ntest: mann_whitney\n"),
                vec![
                    "metric: 'latency_p95' is not accuracy",
                    "test: mann_whitney compares the values of a continuous metric (mean:<name> or abs_error), and metric 'latency_p95' is not one",
                ],
            ),
            (
                format!("{head}metric: mean:x\nmin_per_arm: 100\ntest: wilcoxon\n"),
                vec!["test: must be welch or mann_whitney, got 'wilcoxon'"],
            ),
            (
                format!("{head}metric: mean:x\nmin_per_arm: 100\ntest: mann_whitney\nsequential: true\n"),
                vec!["test: mann_whitney is a fixed-horizon test; sequential: true monitors the means"],
            ),
            (
                "name: b\nmodel: m\nkind: bandit\ncontrol: v1\ntreatment: v2\nmetric: mean:x\ntest: mann_whitney\n".to_string(),
                vec!["test: mann_whitney: a bandit concludes by Thompson sampling's P(best)"],
            ),
        ] {
            let problems = parse(&yaml).unwrap_err();
            for e in expected {
                assert!(
                    problems.iter().any(|p| p.contains(e)),
                    "{e} not in {problems:#?}"
                );
            }
        }
    }

    #[test]
    fn external_gates_as_written_and_their_problems_with_the_field_path() {
        let head = "name: c\nmodel: m\nkind: canary\nstable: v1\ncandidate: v2\n";
        let spec = parse(&format!(
            "{head}gate:\n  external:\n    - name: errors\n      prometheus: {{ url: 'http://prom:9090', query: 'sum(x)' }}\n      max: 5\n      interval_ms: 1000\n    - name: ci\n      webhook: {{ url: 'https://checks.example/api' }}\n      inconclusive_limit: null\n      failure_limit: 2\n"
        ))
        .unwrap();
        let RolloutKind::Canary(c) = spec.kind else {
            panic!("a canary")
        };
        assert_eq!(
            c.gate.external,
            vec![
                ExternalGate {
                    name: "errors".into(),
                    source: ExternalSource::Prometheus {
                        url: "http://prom:9090".into(),
                        query: "sum(x)".into()
                    },
                    max: Some(5.0),
                    min: None,
                    interval_ms: 1000,
                    timeout_ms: crate::rollout::DEFAULT_TIMEOUT_MS,
                    failure_limit: 0,
                    inconclusive_limit: Some(crate::rollout::DEFAULT_INCONCLUSIVE_LIMIT),
                },
                ExternalGate {
                    name: "ci".into(),
                    source: ExternalSource::Webhook {
                        url: "https://checks.example/api".into()
                    },
                    max: None,
                    min: None,
                    interval_ms: crate::rollout::DEFAULT_INTERVAL_MS,
                    timeout_ms: crate::rollout::DEFAULT_TIMEOUT_MS,
                    failure_limit: 2,
                    inconclusive_limit: None,
                },
            ]
        );
        check(
            &format!(
                "{head}gate:\n  external:\n    - name: a\n      prometheus: {{ url: 'prom:9090', query: ' ' }}\n      max: 1\n      min: 0\n    - name: a\n      prometheus: {{ url: 'http:///x', query: 'up' }}\n    - webhook: {{ url: 'https://h/x' }}\n      prometheus: {{ url: 'http://p', query: 'up' }}\n      interval_ms: 0\n    - name: d\n      max: 1\n      color: red\n"
            ),
            &[
                "gate.external[0].prometheus.url: 'prom:9090' is not an http:// or https:// URL",
                "gate.external[0].prometheus.query: required (a PromQL expression)",
                "gate.external[0]: give either max or min, not both",
                "gate.external[1].name: 'a' names another gate too",
                "gate.external[1].prometheus.url: 'http:///x' has no host",
                "gate.external[1]: a prometheus gate needs max or min",
                "gate.external[2].name: required",
                "gate.external[2]: give either prometheus or webhook, not both",
                "gate.external[2].interval_ms: must be at least 1",
                "gate.external[3]: needs a source: prometheus: { url, query } or webhook: { url }",
                "gate.external.3.color: unknown field",
            ],
        );
        // A shadow's chained canary names its own path.
        check(
            "name: s\nmodel: m\nkind: shadow\nprimary: v1\ncandidate: v2\nthen_canary:\n  stable: v1\n  candidate: v2\n  gate:\n    external:\n      - name: x\n        webhook: {}\n",
            &["then_canary.gate.external[0].webhook.url: required"],
        );
    }

    #[test]
    fn a_blue_green_load_test_and_monitoring_gates_as_written() {
        let head = "name: b\nmodel: m\nkind: blue_green\nactive: v1\ncandidate: v2\n";
        let spec = parse(&format!(
            "{head}load_test: {{ rate: 200, duration_ms: 2000, max_p95_ms: 50, max_error_rate: 0.01 }}\nexternal:\n  - name: e\n    webhook: {{ url: 'http://h' }}\n"
        ))
        .unwrap();
        let RolloutKind::BlueGreen(b) = spec.kind else {
            panic!("a blue-green")
        };
        let load = b.load_test.unwrap();
        assert_eq!(load.requests(), 400);
        assert_eq!(load.concurrency, crate::rollout::DEFAULT_LOAD_CONCURRENCY);
        assert_eq!(b.external.len(), 1);
        check(
            &format!("{head}load_test: {{ rate: -1, concurrency: 0, max_error_rate: 2 }}\n"),
            &[
                "load_test.duration_ms: required",
                "load_test.rate must be a positive number of requests per second, got -1",
                "load_test.concurrency must be at least 1",
                "load_test.max_error_rate must be a fraction in [0, 1], got 2",
            ],
        );
        check(
            &format!("{head}load_test: {{ rate: 100000, duration_ms: 600000 }}\n"),
            &["load_test: rate × duration is 60000000 requests, more than 1000000"],
        );
    }
}
