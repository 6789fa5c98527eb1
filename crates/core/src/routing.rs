//! Which model version serves a request, and which versions see a mirrored copy.
//!
//! Assignment hashes the request's routing key (a user, wafer or device id) with a per-rollout
//! salt into one of [`BUCKETS`] buckets with xxh3, a stable hash: the same key, salt and weights
//! give the same variant on every replica and after restarts. Weights are in basis points
//! (1/100 of a percent). Arms own contiguous bucket ranges in declaration order, and a canary
//! always owns the lowest buckets, so raising its weight only moves keys *into* the canary.
//!
//! A split whose weights change while it runs (a bandit re-weighting, an A/B/n arm stopped)
//! carries an explicit `layout` of bucket ranges instead: [`Strategy::reweighted`] releases
//! buckets only from the arms that shrink and hands them only to the arms that grow, so a key
//! changes arm only when its arm gave up its bucket, and the share of keys that moved is the
//! sum of the weight increases ([`Strategy::moved_buckets`]). An experiment's split may carry
//! its own `salt`, used instead of the model's: two experiments in a row then assign keys
//! independently instead of putting the same keys in the same arms again.
//!
//! The gateway holds the table behind an `ArcSwap`: a new table (a canary step, a rollback, a
//! blue-green switch) takes effect for the next request without a lock on the request path.

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

/// Buckets `start..end` belong to `arms[arm]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRange {
    pub start: u32,
    pub end: u32,
    pub arm: u32,
}

/// The contiguous layout of weights in declaration order (empty arms own no range).
fn contiguous(weights: &[u32]) -> Vec<BucketRange> {
    let mut start = 0u32;
    let mut layout = Vec::new();
    for (i, &w) in weights.iter().enumerate() {
        let end = start.saturating_add(w).min(BUCKETS);
        if end > start {
            layout.push(BucketRange {
                start,
                end,
                arm: i as u32,
            });
        }
        start = end;
    }
    layout
}

/// Sorts by start and joins neighbouring ranges of the same arm.
fn tidy(mut layout: Vec<BucketRange>) -> Vec<BucketRange> {
    layout.retain(|s| s.end > s.start);
    layout.sort_by_key(|s| s.start);
    let mut out: Vec<BucketRange> = Vec::with_capacity(layout.len());
    for s in layout {
        match out.last_mut() {
            Some(last) if last.arm == s.arm && last.end == s.start => last.end = s.end,
            _ => out.push(s),
        }
    }
    out
}

/// A version that receives a mirrored copy of a sample of requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowTarget {
    pub version: String,
    /// Share of requests mirrored, in basis points.
    pub sample: u32,
}

/// Who a targeted canary's first steps serve: requests whose value of the model's segment
/// `field` is one of `values` get the first arm (the canary) when their bucket is below
/// `weight`; other requests follow the arms' weights. The bucket is the request's usual one,
/// so a key that reaches the canary under a target stays there when the target is widened to
/// everyone at an equal or higher weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub field: String,
    pub values: Vec<String>,
    /// The first arm's share of matching requests, in basis points.
    pub weight: u32,
}

impl Target {
    /// Whether a request with these segment values is targeted.
    pub fn matches(&self, segments: &[(String, String)]) -> bool {
        segments
            .iter()
            .any(|(f, v)| f == &self.field && self.values.iter().any(|t| t == v))
    }
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
    Split {
        arms: Vec<Arm>,
        /// Which arm owns which buckets, when not contiguous ranges in declaration order:
        /// ranges ordered by start, covering `0..BUCKETS`, each arm's ranges adding up to its
        /// weight. Made by [`Strategy::reweighted`].
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        layout: Vec<BucketRange>,
        /// The experiment's own salt, used instead of the model's ([`ModelRoute::salt`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        salt: Option<String>,
        /// A targeted canary: requests whose segment value matches get the first arm's share
        /// from the target instead (only with two arms and no layout).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<Target>,
    },
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
            layout: Vec::new(),
            salt: None,
            target: None,
        }
    }

    /// A canary split whose first steps serve only the requests `target` matches: the
    /// canary gets `target.weight` of those, and `weight` of the rest.
    pub fn targeted_canary(stable: &str, canary: &str, weight: u32, target: Target) -> Strategy {
        match Strategy::canary(stable, canary, weight) {
            Strategy::Split {
                arms, layout, salt, ..
            } => Strategy::Split {
                arms,
                layout,
                salt,
                target: Some(Target {
                    weight: target.weight.min(BUCKETS),
                    ..target
                }),
            },
            other => other,
        }
    }

    /// A split of `arms` in contiguous ranges, with the experiment's own salt if any.
    pub fn split(arms: Vec<Arm>, salt: Option<String>) -> Strategy {
        Strategy::Split {
            arms,
            layout: Vec::new(),
            salt,
            target: None,
        }
    }

    /// The same strategy with every version renamed by `rename` (a group member's routing
    /// from its lead's).
    pub fn with_versions(&self, rename: impl Fn(&str) -> String) -> Strategy {
        let mut next = self.clone();
        match &mut next {
            Strategy::Single { version } => *version = rename(version),
            Strategy::Shadow { primary, shadows } => {
                *primary = rename(primary);
                for s in shadows {
                    s.version = rename(&s.version);
                }
            }
            Strategy::Split { arms, .. } => {
                for a in arms {
                    a.version = rename(&a.version);
                }
            }
            Strategy::BlueGreen { blue, green, .. } => {
                *blue = rename(blue);
                *green = rename(green);
            }
        }
        next
    }

    /// The bucket ranges of a split (its layout, or contiguous ranges by weight); empty for
    /// any other strategy.
    pub fn segments(&self) -> Vec<BucketRange> {
        match self {
            Strategy::Split { arms, layout, .. } if layout.is_empty() => {
                contiguous(&arms.iter().map(|a| a.weight).collect::<Vec<_>>())
            }
            Strategy::Split { layout, .. } => layout.clone(),
            _ => Vec::new(),
        }
    }

    /// The same split with the arms' weights set to `weights` (one per arm, summing to
    /// [`BUCKETS`]), moving as few buckets as possible: each arm that shrinks gives up buckets
    /// from its highest ranges, and each arm that grows takes the lowest buckets given up.
    /// `None` for another strategy or weights that do not fit.
    pub fn reweighted(&self, weights: &[u32]) -> Option<Strategy> {
        let Strategy::Split { arms, salt, .. } = self else {
            return None;
        };
        if weights.len() != arms.len()
            || weights.iter().map(|&w| u64::from(w)).sum::<u64>() != u64::from(BUCKETS)
        {
            return None;
        }
        let mut kept = Vec::new();
        let mut freed = Vec::new();
        // Release from each shrinking arm, highest ranges first.
        let mut owned: Vec<Vec<BucketRange>> = vec![Vec::new(); arms.len()];
        for seg in self.segments() {
            owned.get_mut(seg.arm as usize)?.push(seg);
        }
        for (i, segs) in owned.iter_mut().enumerate() {
            let mut surplus = arms[i].weight.saturating_sub(weights[i]);
            while surplus > 0 {
                let Some(mut last) = segs.pop() else { break };
                let len = last.end - last.start;
                if len <= surplus {
                    surplus -= len;
                    freed.push(last);
                } else {
                    freed.push(BucketRange {
                        start: last.end - surplus,
                        end: last.end,
                        arm: last.arm,
                    });
                    last.end -= surplus;
                    surplus = 0;
                    segs.push(last);
                }
            }
            kept.append(segs);
        }
        // Hand the freed buckets, lowest first, to each growing arm in order.
        freed.sort_by_key(|s| s.start);
        let mut freed = freed.into_iter();
        let mut current = freed.next();
        for (i, arm) in arms.iter().enumerate() {
            let mut need = weights[i].saturating_sub(arm.weight);
            while need > 0 {
                let mut seg = current?;
                let len = seg.end - seg.start;
                if len <= need {
                    need -= len;
                    kept.push(BucketRange {
                        arm: i as u32,
                        ..seg
                    });
                    current = freed.next();
                } else {
                    kept.push(BucketRange {
                        start: seg.start,
                        end: seg.start + need,
                        arm: i as u32,
                    });
                    seg.start += need;
                    need = 0;
                    current = Some(seg);
                }
            }
        }
        let arms = arms
            .iter()
            .zip(weights)
            .map(|(a, &weight)| Arm {
                weight,
                ..a.clone()
            })
            .collect();
        Some(Strategy::Split {
            arms,
            layout: tidy(kept),
            salt: salt.clone(),
            target: None,
        })
    }

    /// How many buckets belong to a different arm (by position in `arms`) under `next` than
    /// under `self`: the keys that moved. Both must be splits over the same arms.
    pub fn moved_buckets(&self, next: &Strategy) -> u32 {
        let owner = |segs: &[BucketRange], b: u32| {
            let i = segs.partition_point(|s| s.end <= b);
            segs.get(i).map(|s| s.arm)
        };
        let (a, b) = (self.segments(), next.segments());
        // Compare at every boundary of either layout: ownership is constant in between.
        let mut cuts: Vec<u32> = a
            .iter()
            .chain(&b)
            .flat_map(|s| [s.start, s.end])
            .chain([0, BUCKETS])
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        cuts.windows(2)
            .filter(|w| owner(&a, w[0]) != owner(&b, w[0]))
            .map(|w| w[1] - w[0])
            .sum()
    }

    /// The versions that answer clients under this strategy (not the mirrored ones): what
    /// must be up for the model to be ready.
    pub fn serving_versions(&self) -> Vec<&str> {
        match self {
            Strategy::Single { version } => vec![version],
            Strategy::Shadow { primary, .. } => vec![primary],
            Strategy::Split { arms, .. } => arms
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
            Strategy::Split { arms, .. } => arms.iter().map(|a| a.version.as_str()).collect(),
            Strategy::BlueGreen { blue, green, .. } => vec![blue, green],
        }
    }

    /// Configured serving share of each variant, in basis points (for sample-ratio checks).
    pub fn serving_weights(&self) -> Vec<(&str, u32)> {
        match self {
            Strategy::Single { .. } | Strategy::Shadow { .. } => vec![("primary", BUCKETS)],
            Strategy::Split { arms, .. } => arms
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
            Strategy::Split {
                arms,
                layout,
                salt,
                target,
            } => {
                if salt.as_deref() == Some("") {
                    problems.push("a split's salt must not be empty".into());
                }
                if let Some(t) = target {
                    if arms.len() != 2 || !layout.is_empty() {
                        problems.push(
                            "a target applies to a two-arm split in contiguous ranges only".into(),
                        );
                    }
                    if t.weight > BUCKETS {
                        problems.push(format!(
                            "the target's weight {} bp is above {BUCKETS}",
                            t.weight
                        ));
                    }
                    if t.field.is_empty() || t.values.is_empty() {
                        problems.push("a target needs a segment field and its values".into());
                    }
                }
                if !layout.is_empty() {
                    let mut at = 0u32;
                    let mut owned = vec![0u64; arms.len()];
                    let ordered = layout.iter().all(|s| {
                        let ok = s.start == at && s.end > s.start && (s.arm as usize) < arms.len();
                        if ok {
                            owned[s.arm as usize] += u64::from(s.end - s.start);
                            at = s.end;
                        }
                        ok
                    });
                    if !ordered || at != BUCKETS {
                        problems.push(format!(
                            "the split's layout is not ordered ranges of its arms covering 0..{BUCKETS} (broken at bucket {at})"
                        ));
                    } else if owned
                        .iter()
                        .zip(arms)
                        .any(|(o, a)| *o != u64::from(a.weight))
                    {
                        problems
                            .push("the split's layout does not give each arm its weight".into());
                    }
                }
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
    /// The salt keys are hashed with: the split's own (an experiment's) or the model's.
    pub fn salt(&self) -> &str {
        match &self.strategy {
            Strategy::Split {
                salt: Some(salt), ..
            } => salt,
            _ => &self.salt,
        }
    }

    /// Decides for a request whose key hashed to `key_bucket`, or — without a key — for a
    /// uniformly random `random_bucket` in `0..BUCKETS` drawn by the caller; a request with no
    /// segment values (a targeted canary sends it by the arms' weights).
    pub fn decide(&self, key: Option<&[u8]>, random_bucket: u32) -> Decision<'_> {
        self.decide_for(key, random_bucket, &[])
    }

    /// [`ModelRoute::decide`] for a request with these values of the model's segment fields
    /// (what a targeted canary matches on).
    pub fn decide_for(
        &self,
        key: Option<&[u8]>,
        random_bucket: u32,
        segments: &[(String, String)],
    ) -> Decision<'_> {
        let b = match key {
            Some(k) => bucket(self.salt(), k),
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
            Strategy::Split { arms, layout, .. } if !layout.is_empty() => {
                let i = layout.partition_point(|s| s.end <= b);
                let arm = layout
                    .get(i)
                    .and_then(|s| arms.get(s.arm as usize))
                    .or(arms.last());
                Decision {
                    variant: arm.map_or("primary", |a| a.variant.as_str()),
                    version: arm.map_or("", |a| a.version.as_str()),
                    shadows: vec![],
                }
            }
            Strategy::Split {
                arms,
                target: Some(t),
                ..
            } if arms.len() == 2 && t.matches(segments) => {
                let arm = if b < t.weight { &arms[0] } else { &arms[1] };
                Decision {
                    variant: &arm.variant,
                    version: &arm.version,
                    shadows: vec![],
                }
            }
            Strategy::Split { arms, .. } => {
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
    pub routes: crate::NameMap<ModelRoute>,
}

impl RoutingTable {
    /// A copy with `model`'s strategy replaced and the epoch advanced.
    pub fn with_strategy(&self, model: &str, strategy: Strategy) -> RoutingTable {
        self.with_strategies(&[(model.to_string(), strategy)])
    }

    /// A copy with several models' strategies replaced at once, under one new epoch (a
    /// rollout group moves all its models in one swap).
    pub fn with_strategies(&self, routes: &[(String, Strategy)]) -> RoutingTable {
        let mut next = self.clone();
        next.epoch += 1;
        for (model, strategy) in routes {
            let salt = self
                .routes
                .get(model)
                .map_or_else(|| model.to_string(), |r| r.salt.clone());
            next.routes.insert(
                model.clone(),
                ModelRoute {
                    salt,
                    strategy: strategy.clone(),
                },
            );
        }
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
        let s = Strategy::split(
            vec![
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
            None,
        );
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
            let Strategy::Split { arms, .. } = &strategy else { unreachable!() };
            prop_assert_eq!(arms.iter().map(|a| a.weight).sum::<u32>(), BUCKETS);
            let r = route(strategy.clone());
            let canary = (0..BUCKETS).filter(|&b| r.decide(None, b).variant == "canary").count() as u32;
            prop_assert_eq!(canary, w);
        }
    }

    fn us_west(weight: u32) -> Target {
        Target {
            field: "region".into(),
            values: vec!["us-west".into()],
            weight,
        }
    }

    fn region(r: &str) -> Vec<(String, String)> {
        vec![
            ("tier".to_string(), "premium".to_string()),
            ("region".to_string(), r.to_string()),
        ]
    }

    #[test]
    fn a_targeted_canary_serves_only_matching_requests_their_share() {
        let r = route(Strategy::targeted_canary("v1", "v2", 0, us_west(2_500)));
        assert!(
            r.strategy.problems().is_empty(),
            "{:?}",
            r.strategy.problems()
        );
        let count = |segments: &[(String, String)]| {
            (0..BUCKETS)
                .filter(|&b| r.decide_for(None, b, segments).version == "v2")
                .count() as u32
        };
        assert_eq!(count(&region("us-west")), 2_500);
        assert_eq!(count(&region("eu")), 0);
        assert_eq!(count(&[]), 0, "no segment value: not targeted");
        // Everyone at 10% while us-west keeps its 25%.
        let r = route(Strategy::targeted_canary("v1", "v2", 1_000, us_west(2_500)));
        assert_eq!(
            (0..BUCKETS)
                .filter(|&b| r.decide_for(None, b, &region("eu")).variant == "canary")
                .count(),
            1_000
        );
        assert_eq!(
            (0..BUCKETS)
                .filter(|&b| r.decide_for(None, b, &region("us-west")).variant == "canary")
                .count(),
            2_500
        );
    }

    #[test]
    fn a_target_needs_a_two_arm_contiguous_split_and_values() {
        let mut s = Strategy::targeted_canary("v1", "v2", 0, us_west(BUCKETS + 1));
        if let Strategy::Split {
            target: Some(t), ..
        } = &mut s
        {
            t.weight = BUCKETS + 1;
            t.values.clear();
        }
        let problems = s.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("above"), "{problems:?}");
        assert!(problems[1].contains("its values"), "{problems:?}");
        let Strategy::Split { arms, .. } = three([3_000, 3_000, 4_000]) else {
            unreachable!()
        };
        let three_arms = Strategy::Split {
            arms,
            layout: Vec::new(),
            salt: None,
            target: Some(us_west(100)),
        };
        assert!(three_arms.problems()[0].contains("two-arm"));
    }

    proptest! {
        #[test]
        fn widening_a_target_never_moves_a_key_back(
            key in proptest::collection::vec(any::<u8>(), 1..32),
            targeted in 0u32..=BUCKETS,
            extra in 0u32..=BUCKETS,
            everyone in 0u32..=BUCKETS,
            west in any::<bool>(),
        ) {
            // Step 1 targets us-west at `targeted`; a later targeted step raises it; then
            // everyone at `everyone`, us-west keeping the higher of the two.
            let raised = targeted.saturating_add(extra).min(BUCKETS);
            let steps = [
                Strategy::targeted_canary("v1", "v2", 0, us_west(targeted)),
                Strategy::targeted_canary("v1", "v2", 0, us_west(raised)),
                if raised > everyone {
                    Strategy::targeted_canary("v1", "v2", everyone, us_west(raised))
                } else {
                    Strategy::canary("v1", "v2", everyone)
                },
                Strategy::canary("v1", "v2", BUCKETS),
            ];
            let segments = region(if west { "us-west" } else { "eu" });
            let mut was_canary = false;
            for s in steps {
                let is_canary = route(s).decide_for(Some(&key), 0, &segments).variant == "canary";
                prop_assert!(is_canary || !was_canary, "a key left the canary");
                was_canary = is_canary;
            }
            prop_assert!(was_canary);
        }
    }

    fn three(weights: [u32; 3]) -> Strategy {
        Strategy::split(
            ["a", "b", "c"]
                .iter()
                .zip(weights)
                .map(|(v, weight)| Arm {
                    variant: (*v).into(),
                    version: format!("v-{v}"),
                    weight,
                })
                .collect(),
            Some("exp-1".into()),
        )
    }

    /// Every bucket's arm under a strategy.
    fn owners(s: &Strategy) -> Vec<String> {
        let r = route(s.clone());
        (0..BUCKETS)
            .map(|b| r.decide(None, b).variant.to_string())
            .collect()
    }

    #[test]
    fn reweighting_moves_only_the_changed_mass() {
        // Contiguous ranges would move a→b and b→c (2 000 buckets); the layout moves a→c only.
        let before = three([3334, 3333, 3333]);
        let after = before.reweighted(&[2334, 3333, 4333]).unwrap();
        assert!(after.problems().is_empty(), "{:?}", after.problems());
        assert_eq!(before.moved_buckets(&after), 1000);
        let (o1, o2) = (owners(&before), owners(&after));
        let moved: Vec<(&str, &str)> = o1
            .iter()
            .zip(&o2)
            .filter(|(x, y)| x != y)
            .map(|(x, y)| (x.as_str(), y.as_str()))
            .collect();
        assert_eq!(moved.len(), 1000);
        assert!(moved.iter().all(|m| *m == ("a", "c")));
        // A stopped arm's buckets all go to the arm that takes its weight.
        let stopped = after.reweighted(&[5667, 0, 4333]).unwrap();
        assert!(stopped.problems().is_empty());
        assert_eq!(after.moved_buckets(&stopped), 3333);
        assert_eq!(stopped.serving_versions(), vec!["v-a", "v-c"]);
        // A bad layout is a problem.
        let Strategy::Split { arms, .. } = &stopped else {
            unreachable!()
        };
        let broken = Strategy::Split {
            arms: arms.clone(),
            layout: vec![BucketRange {
                start: 0,
                end: 9_000,
                arm: 0,
            }],
            salt: None,
            target: None,
        };
        assert_eq!(broken.problems().len(), 1, "{:?}", broken.problems());
        assert_eq!(before.reweighted(&[1, 2, 3]), None);
    }

    #[test]
    fn an_experiments_salt_is_used_instead_of_the_models() {
        let key = b"wafer-7";
        let with_salt = route(three([5000, 0, 5000]));
        assert_eq!(with_salt.salt(), "exp-1");
        let b = bucket("exp-1", key);
        let d = with_salt.decide(Some(key), 0);
        assert_eq!(d.variant, if b < 5000 { "a" } else { "c" });
        assert_eq!(
            route(Strategy::canary("v1", "v2", 10)).salt(),
            "yield-rollout-1"
        );
    }

    proptest! {
        #[test]
        fn reweighting_moves_exactly_the_increases(
            cuts1 in proptest::collection::vec(0u32..=BUCKETS, 3),
            cuts2 in proptest::collection::vec(0u32..=BUCKETS, 3),
            cuts3 in proptest::collection::vec(0u32..=BUCKETS, 3),
        ) {
            let weights = |cuts: &[u32]| {
                let mut c = cuts.to_vec();
                c.push(0);
                c.push(BUCKETS);
                c.sort_unstable();
                c.windows(2).map(|w| w[1] - w[0]).collect::<Vec<u32>>()
            };
            let arms = |w: &[u32]| w.iter().enumerate().map(|(i, &weight)| Arm {
                variant: format!("arm{i}"),
                version: format!("v{i}"),
                weight,
            }).collect::<Vec<_>>();
            let (w1, w2, w3) = (weights(&cuts1), weights(&cuts2), weights(&cuts3));
            let s1 = Strategy::split(arms(&w1), None);
            let s2 = s1.reweighted(&w2).unwrap();
            let s3 = s2.reweighted(&w3).unwrap();
            for (from, to, wa, wb) in [(&s1, &s2, &w1, &w2), (&s2, &s3, &w2, &w3)] {
                prop_assert!(to.problems().is_empty(), "{:?}", to.problems());
                let increases: u32 = wa.iter().zip(wb).map(|(a, b)| b.saturating_sub(*a)).sum();
                prop_assert_eq!(from.moved_buckets(to), increases);
                // Only keys of arms that shrank move, and only into arms that grew.
                let (o1, o2) = (owners(from), owners(to));
                for (x, y) in o1.iter().zip(&o2) {
                    if x != y {
                        let i: usize = x[3..].parse().unwrap();
                        let j: usize = y[3..].parse().unwrap();
                        prop_assert!(wb[i] < wa[i] && wb[j] > wa[j]);
                    }
                }
            }
        }
    }
}
