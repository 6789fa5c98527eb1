//! Which model version serves a request, and which versions see a mirrored copy.
//!
//! Assignment hashes the request's routing key (a user, wafer or device id) with a per-rollout
//! salt into one of [`BUCKETS`] buckets with xxh3, a stable hash: the same key, salt and weights
//! give the same variant on every replica and after restarts. Weights are in basis points
//! (1/100 of a percent). Arms own contiguous bucket ranges in declaration order, and a canary
//! always owns the lowest buckets, so raising its weight only moves keys *into* the canary.
//!
//! The gateway holds the table behind an `ArcSwap`: a new table (a canary step, a rollback, a
//! blue-green switch) takes effect for the next request without a lock on the request path.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Number of hash buckets; weights are expressed in these units (basis points).
pub const BUCKETS: u32 = 10_000;

/// Bucket of a routing key under a salt, in `0..BUCKETS`.
pub fn bucket(salt: &str, key: &[u8]) -> u32 {
    bucket_seeded(salt_seed(salt), key)
}

fn salt_seed(salt: &str) -> u64 {
    xxh3_64_with_seed(salt.as_bytes(), 0x5717_c4a2d)
}

fn bucket_seeded(seed: u64, key: &[u8]) -> u32 {
    (xxh3_64_with_seed(key, seed) % u64::from(BUCKETS)) as u32
}

/// Mixed into the salt's seed for shadow sampling, so the sampled slice of keys is independent
/// of any split under the same salt.
const SHADOW_SEED_MIX: u64 = 0x9e37_79b9_7f4a_7c15;

/// Stable 64-bit hash of a routing key, logged instead of the key itself.
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, 0)
}

/// One weighted arm of a split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm {
    /// Variant name as reported in `x-switchyard-variant` and the log: `a`, `b`, `stable`,
    /// `canary`, …
    pub variant: String,
    pub version: String,
    /// Share of traffic in basis points.
    pub weight: u32,
}

/// A version that receives a mirrored copy of a sample of requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowTarget {
    pub version: String,
    /// Share of requests mirrored, in basis points.
    pub sample: u32,
}

/// Blue-green colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    Blue,
    Green,
}

impl Colour {
    pub fn as_str(self) -> &'static str {
        match self {
            Colour::Blue => "blue",
            Colour::Green => "green",
        }
    }

    pub fn other(self) -> Colour {
        match self {
            Colour::Blue => Colour::Green,
            Colour::Green => Colour::Blue,
        }
    }
}

/// How one model's traffic is served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Strategy {
    /// One version serves everything.
    Single { version: String },
    /// `primary` serves; each shadow gets a mirrored copy of its sample.
    Shadow {
        primary: String,
        shadows: Vec<ShadowTarget>,
    },
    /// Weighted arms (A/B tests, canaries); weights sum to [`BUCKETS`].
    Split { arms: Vec<Arm> },
    /// All traffic to the active colour.
    BlueGreen {
        blue: String,
        green: String,
        active: Colour,
    },
}

impl Strategy {
    /// A canary split: the canary owns buckets `0..weight`, the stable version the rest.
    pub fn canary(stable: &str, canary: &str, weight: u32) -> Strategy {
        let weight = weight.min(BUCKETS);
        Strategy::Split {
            arms: vec![
                Arm {
                    variant: "canary".into(),
                    version: canary.into(),
                    weight,
                },
                Arm {
                    variant: "stable".into(),
                    version: stable.into(),
                    weight: BUCKETS - weight,
                },
            ],
        }
    }

    /// The versions that answer clients under this strategy (not the mirrored ones): what
    /// must be up for the model to be ready.
    pub fn serving_versions(&self) -> Vec<&str> {
        match self {
            Strategy::Single { version } => vec![version],
            Strategy::Shadow { primary, .. } => vec![primary],
            Strategy::Split { arms } => arms
                .iter()
                .filter(|a| a.weight > 0)
                .map(|a| a.version.as_str())
                .collect(),
            Strategy::BlueGreen {
                blue,
                green,
                active,
            } => vec![match active {
                Colour::Blue => blue,
                Colour::Green => green,
            }],
        }
    }

    /// Every version this strategy may send traffic to (serving or mirrored).
    pub fn versions(&self) -> Vec<&str> {
        match self {
            Strategy::Single { version } => vec![version],
            Strategy::Shadow { primary, shadows } => std::iter::once(primary.as_str())
                .chain(shadows.iter().map(|s| s.version.as_str()))
                .collect(),
            Strategy::Split { arms } => arms.iter().map(|a| a.version.as_str()).collect(),
            Strategy::BlueGreen { blue, green, .. } => vec![blue, green],
        }
    }

    /// Configured serving share of each variant, in basis points (for sample-ratio checks).
    pub fn serving_weights(&self) -> Vec<(&str, u32)> {
        match self {
            Strategy::Single { .. } | Strategy::Shadow { .. } => vec![("primary", BUCKETS)],
            Strategy::Split { arms } => arms
                .iter()
                .map(|a| (a.variant.as_str(), a.weight))
                .collect(),
            Strategy::BlueGreen { active, .. } => vec![(active.as_str(), BUCKETS)],
        }
    }

    /// Problems with this strategy, all of them.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self {
            Strategy::Single { .. } | Strategy::BlueGreen { .. } => {}
            Strategy::Shadow { primary, shadows } => {
                if shadows.is_empty() {
                    problems.push("shadow strategy needs at least one shadow".into());
                }
                for s in shadows {
                    if s.sample > BUCKETS {
                        problems.push(format!(
                            "shadow {} samples {} bp, above {BUCKETS}",
                            s.version, s.sample
                        ));
                    }
                    if &s.version == primary {
                        problems.push(format!("version {primary} cannot shadow itself"));
                    }
                }
            }
            Strategy::Split { arms } => {
                if arms.len() < 2 {
                    problems.push("a split needs at least two arms".into());
                }
                let total: u64 = arms.iter().map(|a| u64::from(a.weight)).sum();
                if total != u64::from(BUCKETS) {
                    problems.push(format!("arm weights sum to {total} bp, not {BUCKETS}"));
                }
                let mut names: Vec<&str> = arms.iter().map(|a| a.variant.as_str()).collect();
                names.sort_unstable();
                if names.windows(2).any(|w| w[0] == w[1]) {
                    problems.push("arm variant names must be distinct".into());
                }
            }
        }
        problems
    }
}

/// Routing of one model: its strategy and the salt that makes assignment independent across
/// rollouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRoute {
    pub salt: String,
    pub strategy: Strategy,
}

/// The variant recorded for a request that named its version (`/v2/models/{m}/versions/{v}/infer`):
/// it bypassed the routing, so rollouts leave it out of their statistics.
pub const PINNED_VARIANT: &str = "pinned";

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'a> {
    pub variant: &'a str,
    pub version: &'a str,
    /// Versions that get a mirrored copy.
    pub shadows: Vec<&'a str>,
}

impl ModelRoute {
    /// Decides for a request whose key hashed to `key_bucket`, or — without a key — for a
    /// uniformly random `random_bucket` in `0..BUCKETS` drawn by the caller.
    pub fn decide(&self, key: Option<&[u8]>, random_bucket: u32) -> Decision<'_> {
        let b = match key {
            Some(k) => bucket(&self.salt, k),
            None => random_bucket % BUCKETS,
        };
        match &self.strategy {
            Strategy::Single { version } => Decision {
                variant: "primary",
                version,
                shadows: vec![],
            },
            Strategy::Shadow { primary, shadows } => {
                // An independent bucket for sampling, so the sample is not the same slice of
                // keys as any split of the same salt.
                let sample_bucket = match key {
                    Some(k) => bucket_seeded(salt_seed(&self.salt) ^ SHADOW_SEED_MIX, k),
                    None => random_bucket.rotate_left(16) % BUCKETS,
                };
                let shadows = shadows
                    .iter()
                    .filter(|s| sample_bucket < s.sample)
                    .map(|s| s.version.as_str())
                    .collect();
                Decision {
                    variant: "primary",
                    version: primary,
                    shadows,
                }
            }
            Strategy::Split { arms } => {
                let mut upper = 0u32;
                for arm in arms {
                    upper = upper.saturating_add(arm.weight);
                    if b < upper {
                        return Decision {
                            variant: &arm.variant,
                            version: &arm.version,
                            shadows: vec![],
                        };
                    }
                }
                // Weights that sum short of BUCKETS (rejected by validation) fall to the last arm.
                let last = arms.last().map_or(("primary", ""), |a| {
                    (a.variant.as_str(), a.version.as_str())
                });
                Decision {
                    variant: last.0,
                    version: last.1,
                    shadows: vec![],
                }
            }
            Strategy::BlueGreen {
                blue,
                green,
                active,
            } => {
                let version = match active {
                    Colour::Blue => blue,
                    Colour::Green => green,
                };
                Decision {
                    variant: active.as_str(),
                    version,
                    shadows: vec![],
                }
            }
        }
    }
}

/// The routing of every model. Immutable once built; replaced whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingTable {
    /// Increases with every change; records carry the epoch they were routed under, so
    /// statistics of one canary step never mix with the previous step's.
    pub epoch: u64,
    pub routes: HashMap<String, ModelRoute>,
}

impl RoutingTable {
    /// A copy with `model`'s strategy replaced and the epoch advanced.
    pub fn with_strategy(&self, model: &str, strategy: Strategy) -> RoutingTable {
        let mut next = self.clone();
        next.epoch += 1;
        let salt = self
            .routes
            .get(model)
            .map_or_else(|| model.to_string(), |r| r.salt.clone());
        next.routes
            .insert(model.to_string(), ModelRoute { salt, strategy });
        next
    }
}

#[cfg(test)]
mod tests {
    use super::Strategy;
    use super::*;
    use proptest::prelude::*;

    fn route(strategy: Strategy) -> ModelRoute {
        ModelRoute {
            salt: "yield-rollout-1".into(),
            strategy,
        }
    }

    #[test]
    fn buckets_are_stable_across_processes() {
        // Pinned values: a change here re-assigns every user of every running experiment.
        assert_eq!(bucket("salt", b"wafer-42"), bucket("salt", b"wafer-42"));
        assert_ne!(bucket("salt", b"wafer-42"), bucket("other", b"wafer-42"));
        let b = bucket("yield-rollout-1", b"user-1");
        assert!(b < BUCKETS);
        let seed = xxh3_64_with_seed(b"yield-rollout-1", 0x5717_c4a2d);
        assert_eq!(
            u64::from(b),
            xxh3_64_with_seed(b"user-1", seed) % u64::from(BUCKETS)
        );
    }

    #[test]
    fn invalid_splits_are_reported() {
        let s = Strategy::Split {
            arms: vec![
                Arm {
                    variant: "a".into(),
                    version: "v1".into(),
                    weight: 6000,
                },
                Arm {
                    variant: "a".into(),
                    version: "v2".into(),
                    weight: 5000,
                },
            ],
        };
        let problems = s.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(Strategy::canary("v1", "v2", 500).problems().is_empty());
    }

    #[test]
    fn blue_green_serves_the_active_colour() {
        let r = route(Strategy::BlueGreen {
            blue: "v1".into(),
            green: "v2".into(),
            active: Colour::Green,
        });
        let d = r.decide(Some(b"k"), 0);
        assert_eq!((d.variant, d.version), ("green", "v2"));
    }

    proptest! {
        #[test]
        fn raising_canary_weight_never_moves_a_key_back(
            key in proptest::collection::vec(any::<u8>(), 1..32),
            w1 in 0u32..=BUCKETS,
            w2 in 0u32..=BUCKETS,
        ) {
            let (low, high) = (w1.min(w2), w1.max(w2));
            let before = route(Strategy::canary("v1", "v2", low));
            let after = route(Strategy::canary("v1", "v2", high));
            if before.decide(Some(&key), 0).variant == "canary" {
                prop_assert_eq!(after.decide(Some(&key), 0).variant, "canary");
            }
        }

        #[test]
        fn same_key_same_variant(key in proptest::collection::vec(any::<u8>(), 0..32), r1 in 0u32..BUCKETS, r2 in 0u32..BUCKETS) {
            let r = route(Strategy::canary("v1", "v2", 2500));
            prop_assert_eq!(r.decide(Some(&key), r1), r.decide(Some(&key), r2));
        }

        #[test]
        fn split_weights_are_respected_over_buckets(w in 0u32..=BUCKETS) {
            // Every bucket maps to exactly one arm and the canary owns exactly `w` of them.
            let strategy = Strategy::canary("v1", "v2", w);
            let Strategy::Split { arms } = &strategy else { unreachable!() };
            prop_assert_eq!(arms.iter().map(|a| a.weight).sum::<u32>(), BUCKETS);
            let r = route(strategy.clone());
            let canary = (0..BUCKETS).filter(|&b| r.decide(None, b).variant == "canary").count() as u32;
            prop_assert_eq!(canary, w);
        }
    }
}
