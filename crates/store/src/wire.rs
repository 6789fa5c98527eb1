//! A replica's aggregates as text, so the controller can merge every replica's window.
//!
//! Counts and histograms round-trip exactly (a histogram as its non-empty buckets); moments as
//! their parts (count, mean, M2, min, max), which `serde_json` writes in shortest round-trip
//! form.

use serde::{Deserialize, Serialize};
use switchyard_core::aggregate::{PairKey, PairStats, SeriesKey, VariantStats};
use switchyard_core::{Aggregates, Role};
use switchyard_stats::{LatencyHistogram, Moments, Proportion};

use crate::error::corrupt;
use crate::StoreError;

type MomentParts = (u64, f64, f64, f64, f64);

#[derive(Serialize, Deserialize)]
struct WireAggregates {
    series: Vec<WireSeries>,
    pairs: Vec<WirePair>,
}

#[derive(Serialize, Deserialize)]
struct WireSeries {
    model: String,
    epoch: u64,
    version: String,
    role: String,
    variant: String,
    requests: u64,
    errors: u64,
    latency: Vec<(u64, u64)>,
    correct: Proportion,
    abs_error: Option<MomentParts>,
    sq_error: Option<MomentParts>,
    metrics: Vec<(String, MomentParts)>,
}

#[derive(Serialize, Deserialize)]
struct WirePair {
    model: String,
    epoch: u64,
    primary: String,
    shadow: String,
    agreement: Proportion,
    both_correct: u64,
    primary_only: u64,
    shadow_only: u64,
    both_wrong: u64,
    error_diff: Option<MomentParts>,
    shadow_errors: u64,
    shadow_calls: u64,
}

fn parts(m: &Moments) -> Option<MomentParts> {
    (m.count() > 0).then(|| m.parts())
}

fn moments(p: Option<MomentParts>) -> Moments {
    p.map_or_else(Moments::default, |(n, mean, m2, min, max)| {
        Moments::from_parts(n, mean, m2, min, max)
    })
}

pub fn encode_aggregates(agg: &Aggregates) -> Result<String, StoreError> {
    let wire = WireAggregates {
        series: agg
            .series
            .iter()
            .map(|(k, v)| WireSeries {
                model: k.model.clone(),
                epoch: k.epoch,
                version: k.version.clone(),
                role: k.role.as_str().to_string(),
                variant: k.variant.clone(),
                requests: v.requests,
                errors: v.errors,
                latency: v.latency.buckets(),
                correct: v.correct,
                abs_error: parts(&v.abs_error),
                sq_error: parts(&v.sq_error),
                metrics: v
                    .metrics
                    .iter()
                    .filter_map(|(n, m)| Some((n.clone(), parts(m)?)))
                    .collect(),
            })
            .collect(),
        pairs: agg
            .pairs
            .iter()
            .map(|(k, p)| WirePair {
                model: k.model.clone(),
                epoch: k.epoch,
                primary: k.primary.clone(),
                shadow: k.shadow.clone(),
                agreement: p.agreement,
                both_correct: p.both_correct,
                primary_only: p.primary_only,
                shadow_only: p.shadow_only,
                both_wrong: p.both_wrong,
                error_diff: parts(&p.error_diff),
                shadow_errors: p.shadow_errors,
                shadow_calls: p.shadow_calls,
            })
            .collect(),
    };
    serde_json::to_string(&wire).map_err(|e| corrupt("aggregates", e))
}

pub fn decode_aggregates(text: &str) -> Result<Aggregates, StoreError> {
    let bad = |reason: String| corrupt("aggregates", reason);
    let wire: WireAggregates = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let mut agg = Aggregates::default();
    for s in wire.series {
        let role = Role::parse(&s.role).ok_or_else(|| bad(format!("role '{}'", s.role)))?;
        agg.series.insert(
            SeriesKey {
                model: s.model,
                epoch: s.epoch,
                version: s.version,
                role,
                variant: s.variant,
            },
            VariantStats {
                requests: s.requests,
                errors: s.errors,
                latency: LatencyHistogram::from_buckets(&s.latency),
                correct: s.correct,
                abs_error: moments(s.abs_error),
                sq_error: moments(s.sq_error),
                metrics: s
                    .metrics
                    .into_iter()
                    .map(|(n, p)| (n, moments(Some(p))))
                    .collect(),
            },
        );
    }
    for p in wire.pairs {
        agg.pairs.insert(
            PairKey {
                model: p.model,
                epoch: p.epoch,
                primary: p.primary,
                shadow: p.shadow,
            },
            PairStats {
                agreement: p.agreement,
                both_correct: p.both_correct,
                primary_only: p.primary_only,
                shadow_only: p.shadow_only,
                both_wrong: p.both_wrong,
                error_diff: moments(p.error_diff),
                shadow_errors: p.shadow_errors,
                shadow_calls: p.shadow_calls,
            },
        );
    }
    Ok(agg)
}
