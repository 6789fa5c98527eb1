//! The compiled tree-ensemble engine: ONNX-ML `TreeEnsembleClassifier` and
//! `TreeEnsembleRegressor` evaluated with onnxruntime's semantics.
//!
//! [`TreeEnsemble::compile`] turns the operator's attributes ([`RawEnsemble`], read from the
//! ONNX node by the parent module or built in memory by tests) into flat arrays once, at load:
//! every tree is laid out depth-first (true child first) in one `Vec<Node>` of 20-byte nodes;
//! each leaf's `(class, weight)` pairs are a range of one weight array, and a leaf's children are
//! itself. Evaluation walks those arrays with no allocation per row: the caller hands in the
//! output buffer, which doubles as the score accumulator. A batch is processed in chunks of
//! [`CHUNK_ROWS`] rows, trees in the outer loop and rows in the inner one (a tree's nodes stay in
//! cache while every row of the chunk goes through it), four rows walking a tree in lockstep
//! (independent chains of loads the core overlaps; a row that reached its leaf steps onto
//! itself). A row's scores are accumulated in tree order either way, so one row alone and the
//! same row inside a batch give bit-identical results.
//!
//! # Semantics (onnxruntime 1.x, `tree_ensemble_common.h` / `tree_ensemble_aggregator.h` /
//! `ml_common.h`)
//!
//! * A tree's root is the first node listed for its tree id; trees are taken in the order their
//!   ids first appear. A branch goes to its true child when `x <mode> threshold` holds, or when `x`
//!   is NaN and `nodes_missing_value_tracks_true` is 1 for that node (so a NaN takes the false
//!   branch of every mode except `BRANCH_NEQ`, where `NaN != v` is true).
//! * Scores are `f32` sums in tree order (and, within a leaf, in attribute order).
//! * Regressors (one target): each reached leaf contributes its *first* weight; `SUM`, `AVERAGE`
//!   (sum / number of trees), `MIN`, `MAX`; then `base_values[0]`; `PROBIT` or `NONE`.
//! * Classifiers always sum. With three or more classes, `base_values` are added, the label is the
//!   first class with the largest raw score among the classes that received a score, and
//!   `post_transform` is applied to all scores. With two classes the binary conventions apply:
//!   when every weight is on a single class (skl2onnx, LightGBM, XGBoost) and class 1 received no
//!   score, the single score `s` is expanded to `[1 - s, s]` (all weights non-negative: a
//!   probability, label 1 iff `s > 0.5`) or to `[logistic(-s), logistic(s)]` / `[-s, s]` (mixed
//!   signs: a margin, label 1 iff `s > 0`); a single `base_values` entry is added to `s` first.
//!
//! Anything outside these rules (double-precision `*_as_tensor` attributes, unknown modes or
//! transforms, `PROBIT` where onnxruntime would leave an output unwritten, ...) is a load error
//! that names the node and the attribute, never a guess.

use std::collections::{HashMap, HashSet};

/// Rows per chunk in a batch: the per-chunk scores stay in L1 while every tree goes over them.
pub const CHUNK_ROWS: usize = 128;

/// Which ONNX-ML operator a [`RawEnsemble`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnsembleOp {
    Classifier,
    Regressor,
}

impl EnsembleOp {
    pub fn name(self) -> &'static str {
        match self {
            EnsembleOp::Classifier => "TreeEnsembleClassifier",
            EnsembleOp::Regressor => "TreeEnsembleRegressor",
        }
    }

    /// Prefix of the leaf attributes: `class_*` for classifiers, `target_*` for regressors.
    fn leaf_prefix(self) -> &'static str {
        match self {
            EnsembleOp::Classifier => "class",
            EnsembleOp::Regressor => "target",
        }
    }
}

/// The attributes of one tree-ensemble node, as written in the ONNX file (absent lists empty).
/// Leaf attributes are `class_*` for a classifier and `target_*` for a regressor; they are
/// stored here under one name.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEnsemble {
    /// The ONNX node's name (for error messages).
    pub name: String,
    pub op: EnsembleOp,
    /// Regressor only: `n_targets`.
    pub n_targets: Option<i64>,
    /// Classifier only: the number of entries in `classlabels_int64s` or `classlabels_strings`.
    pub n_classes: Option<usize>,
    pub aggregate_function: Option<String>,
    pub post_transform: Option<String>,
    pub base_values: Vec<f32>,
    pub nodes_treeids: Vec<i64>,
    pub nodes_nodeids: Vec<i64>,
    pub nodes_featureids: Vec<i64>,
    pub nodes_values: Vec<f32>,
    pub nodes_modes: Vec<String>,
    pub nodes_truenodeids: Vec<i64>,
    pub nodes_falsenodeids: Vec<i64>,
    pub nodes_missing_value_tracks_true: Vec<i64>,
    pub leaf_treeids: Vec<i64>,
    pub leaf_nodeids: Vec<i64>,
    pub leaf_ids: Vec<i64>,
    pub leaf_weights: Vec<f32>,
}

impl RawEnsemble {
    /// An empty description of `op` named `name` (every list empty, every option unset).
    pub fn new(name: impl Into<String>, op: EnsembleOp) -> RawEnsemble {
        RawEnsemble {
            name: name.into(),
            op,
            n_targets: None,
            n_classes: None,
            aggregate_function: None,
            post_transform: None,
            base_values: Vec::new(),
            nodes_treeids: Vec::new(),
            nodes_nodeids: Vec::new(),
            nodes_featureids: Vec::new(),
            nodes_values: Vec::new(),
            nodes_modes: Vec::new(),
            nodes_truenodeids: Vec::new(),
            nodes_falsenodeids: Vec::new(),
            nodes_missing_value_tracks_true: Vec::new(),
            leaf_treeids: Vec::new(),
            leaf_nodeids: Vec::new(),
            leaf_ids: Vec::new(),
            leaf_weights: Vec::new(),
        }
    }
}

/// Why a tree ensemble cannot be compiled: names the node, the attribute and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op} node {node:?}, attribute {attribute}: {message}")]
pub struct TreeError {
    pub op: &'static str,
    pub node: String,
    pub attribute: String,
    pub message: String,
}

/// A branch's comparison. `Leaf` marks leaves (stored in the same `mode` byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Leq = 0,
    Lt = 1,
    Gte = 2,
    Gt = 3,
    Eq = 4,
    Neq = 5,
    Leaf = 6,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "BRANCH_LEQ" => Mode::Leq,
            "BRANCH_LT" => Mode::Lt,
            "BRANCH_GTE" => Mode::Gte,
            "BRANCH_GT" => Mode::Gt,
            "BRANCH_EQ" => Mode::Eq,
            "BRANCH_NEQ" => Mode::Neq,
            "LEAF" => Mode::Leaf,
            _ => return None,
        })
    }

    /// Whether `x` takes the true branch against threshold `v`, NaN included (IEEE comparisons:
    /// only `!=` holds for NaN).
    #[inline(always)]
    pub fn test(self, x: f32, v: f32) -> bool {
        match self {
            Mode::Leq => x <= v,
            Mode::Lt => x < v,
            Mode::Gte => x >= v,
            Mode::Gt => x > v,
            Mode::Eq => x == v,
            Mode::Neq => x != v,
            Mode::Leaf => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostTransform {
    None,
    Logistic,
    Softmax,
    SoftmaxZero,
    Probit,
}

/// One node. Branch: `a`/`b` are the true/false children (indices into the node array).
/// Leaf: `value` is its first weight and `a` = `b` = its own index, so a step from a leaf stays
/// on it (rows walking a tree in lockstep need no per-row exit); its weights are in
/// `TreeEnsemble::leaf_range`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Node {
    value: f32,
    feature: u32,
    a: u32,
    b: u32,
    mode: Mode,
    missing_true: bool,
}

/// What the ensemble predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnsembleKind {
    Classifier { n_classes: usize },
    Regressor,
}

/// How a tree is walked, chosen once at load from the modes used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    Leq,
    LeqMissing,
    Lt,
    LtMissing,
    Mixed,
}

/// A node waiting to be laid out: original position, depth, and the parent's new index with
/// whether this node is its true child.
type Pending = (usize, usize, Option<(usize, bool)>);

/// A compiled, validated tree ensemble. Immutable, `Send + Sync`.
#[derive(Debug, Clone)]
pub struct TreeEnsemble {
    kind: EnsembleKind,
    /// Scores per row: the number of classes, or 1 for a regressor.
    n_out: usize,
    /// Largest feature index any branch reads, plus one.
    min_features: usize,
    aggregate: Aggregate,
    post: PostTransform,
    base_values: Vec<f32>,
    roots: Vec<u32>,
    nodes: Vec<Node>,
    weight_class: Vec<u32>,
    weight_value: Vec<f32>,
    /// Per node: a leaf's (first, count) in the weight arrays; (0, 0) for branches.
    leaf_range: Vec<(u32, u32)>,
    walk: Walk,
    /// Classifier: every weight is on one class (onnxruntime's `binary_case_` with 2 classes).
    single_weight_class: bool,
    weights_all_positive: bool,
    /// Classifier: whether a class has a score after the trees is known at load
    /// (`Some(per class)`) or must be tracked per row (`None`).
    static_has: Option<Vec<bool>>,
    max_depth: usize,
    /// Sum over trees of each tree's depth: a bound on the nodes one row visits.
    depth_sum: usize,
}

fn err(raw: &RawEnsemble, attribute: &str, message: impl Into<String>) -> TreeError {
    TreeError {
        op: raw.op.name(),
        node: raw.name.clone(),
        attribute: attribute.to_owned(),
        message: message.into(),
    }
}

fn check_len<T>(raw: &RawEnsemble, attribute: &str, v: &[T], n: usize) -> Result<(), TreeError> {
    if v.len() == n {
        Ok(())
    } else {
        Err(err(
            raw,
            attribute,
            format!("has {} entries, expected {n}", v.len()),
        ))
    }
}

fn to_u32(raw: &RawEnsemble, attribute: &str, v: i64) -> Result<u32, TreeError> {
    u32::try_from(v).map_err(|_| err(raw, attribute, format!("value {v} out of range")))
}

impl TreeEnsemble {
    /// Validates `raw` and builds the flat arrays. `n_features` is the model's declared input
    /// width; a branch reading past it is an error.
    pub fn compile(raw: &RawEnsemble, n_features: usize) -> Result<TreeEnsemble, TreeError> {
        let leaf = raw.op.leaf_prefix();
        let leaf_attr = |suffix: &str| format!("{leaf}_{suffix}");

        let (kind, n_out) = match raw.op {
            EnsembleOp::Classifier => {
                let n = raw.n_classes.ok_or_else(|| {
                    err(
                        raw,
                        "classlabels_int64s",
                        "missing (neither classlabels_int64s nor classlabels_strings is set)",
                    )
                })?;
                if n < 2 {
                    return Err(err(
                        raw,
                        "classlabels_int64s",
                        format!("{n} class label(s); a classifier needs at least 2"),
                    ));
                }
                (EnsembleKind::Classifier { n_classes: n }, n)
            }
            EnsembleOp::Regressor => {
                let n = raw.n_targets.unwrap_or(1);
                if n != 1 {
                    return Err(err(
                        raw,
                        "n_targets",
                        format!("{n} targets; only single-target regressors are supported"),
                    ));
                }
                (EnsembleKind::Regressor, 1)
            }
        };

        let aggregate = match (raw.op, raw.aggregate_function.as_deref()) {
            (EnsembleOp::Classifier, None) => Aggregate::Sum,
            (EnsembleOp::Classifier, Some(_)) => {
                return Err(err(
                    raw,
                    "aggregate_function",
                    "not an attribute of TreeEnsembleClassifier (classifiers always sum)",
                ))
            }
            (EnsembleOp::Regressor, None | Some("SUM")) => Aggregate::Sum,
            (EnsembleOp::Regressor, Some("AVERAGE")) => Aggregate::Average,
            (EnsembleOp::Regressor, Some("MIN")) => Aggregate::Min,
            (EnsembleOp::Regressor, Some("MAX")) => Aggregate::Max,
            (EnsembleOp::Regressor, Some(other)) => {
                return Err(err(
                    raw,
                    "aggregate_function",
                    format!("unknown value {other:?} (SUM, AVERAGE, MIN, MAX)"),
                ))
            }
        };
        let post = match raw.post_transform.as_deref().unwrap_or("NONE") {
            "NONE" => PostTransform::None,
            "LOGISTIC" => PostTransform::Logistic,
            "SOFTMAX" => PostTransform::Softmax,
            "SOFTMAX_ZERO" => PostTransform::SoftmaxZero,
            "PROBIT" => PostTransform::Probit,
            other => {
                return Err(err(
                    raw,
                    "post_transform",
                    format!(
                        "unknown value {other:?} (NONE, LOGISTIC, SOFTMAX, SOFTMAX_ZERO, PROBIT)"
                    ),
                ))
            }
        };
        if raw.op == EnsembleOp::Regressor
            && !matches!(post, PostTransform::None | PostTransform::Probit)
        {
            // onnxruntime silently skips these for a single target; refuse rather than guess.
            return Err(err(
                raw,
                "post_transform",
                format!("{post:?} on a single-target regressor is not supported (NONE or PROBIT)"),
            ));
        }
        let base_ok = match raw.op {
            EnsembleOp::Regressor => raw.base_values.len() <= 1,
            EnsembleOp::Classifier if n_out == 2 => raw.base_values.len() <= 2,
            EnsembleOp::Classifier => raw.base_values.is_empty() || raw.base_values.len() == n_out,
        };
        if !base_ok {
            return Err(err(
                raw,
                "base_values",
                format!("{} entries for {n_out} outputs", raw.base_values.len()),
            ));
        }

        // Node attributes.
        let n_nodes = raw.nodes_treeids.len();
        if n_nodes == 0 {
            return Err(err(raw, "nodes_treeids", "no tree nodes"));
        }
        if n_nodes >= u32::MAX as usize / 2 {
            return Err(err(raw, "nodes_treeids", "too many nodes"));
        }
        check_len(raw, "nodes_nodeids", &raw.nodes_nodeids, n_nodes)?;
        check_len(raw, "nodes_featureids", &raw.nodes_featureids, n_nodes)?;
        check_len(raw, "nodes_values", &raw.nodes_values, n_nodes)?;
        check_len(raw, "nodes_modes", &raw.nodes_modes, n_nodes)?;
        check_len(raw, "nodes_truenodeids", &raw.nodes_truenodeids, n_nodes)?;
        check_len(raw, "nodes_falsenodeids", &raw.nodes_falsenodeids, n_nodes)?;
        if !raw.nodes_missing_value_tracks_true.is_empty() {
            check_len(
                raw,
                "nodes_missing_value_tracks_true",
                &raw.nodes_missing_value_tracks_true,
                n_nodes,
            )?;
        }
        let n_weights = raw.leaf_treeids.len();
        check_len(raw, &leaf_attr("nodeids"), &raw.leaf_nodeids, n_weights)?;
        check_len(raw, &leaf_attr("ids"), &raw.leaf_ids, n_weights)?;
        check_len(raw, &leaf_attr("weights"), &raw.leaf_weights, n_weights)?;

        let mut modes = Vec::with_capacity(n_nodes);
        for (i, m) in raw.nodes_modes.iter().enumerate() {
            modes.push(Mode::parse(m).ok_or_else(|| {
                err(
                    raw,
                    "nodes_modes",
                    format!(
                        "node {} of tree {}: unknown mode {m:?}",
                        raw.nodes_nodeids[i], raw.nodes_treeids[i]
                    ),
                )
            })?);
        }

        // (tree, node id) -> position; trees must be listed contiguously (onnxruntime starts a
        // new tree, rooted at the first node listed, wherever the tree id changes).
        let mut index: HashMap<(i64, i64), usize> = HashMap::with_capacity(n_nodes);
        let mut root_pos: Vec<usize> = Vec::new();
        let mut trees_seen: HashSet<i64> = HashSet::new();
        for i in 0..n_nodes {
            let key = (raw.nodes_treeids[i], raw.nodes_nodeids[i]);
            if index.insert(key, i).is_some() {
                return Err(err(
                    raw,
                    "nodes_nodeids",
                    format!("node {} of tree {} is listed twice", key.1, key.0),
                ));
            }
            if i == 0 || raw.nodes_treeids[i] != raw.nodes_treeids[i - 1] {
                if !trees_seen.insert(key.0) {
                    return Err(err(
                        raw,
                        "nodes_treeids",
                        format!("the nodes of tree {} are not listed contiguously", key.0),
                    ));
                }
                root_pos.push(i);
            }
        }

        // Leaf weights grouped by node position, attribute order kept.
        let mut weights_of: Vec<Vec<(u32, f32)>> = vec![Vec::new(); n_nodes];
        let mut weight_classes: Vec<bool> = vec![false; n_out];
        let mut weights_all_positive = true;
        for w in 0..n_weights {
            let key = (raw.leaf_treeids[w], raw.leaf_nodeids[w]);
            let Some(&at) = index.get(&key) else {
                return Err(err(
                    raw,
                    &leaf_attr("nodeids"),
                    format!(
                        "weight {w} refers to missing node {} of tree {}",
                        key.1, key.0
                    ),
                ));
            };
            let class = raw.leaf_ids[w];
            let Some(seen) = usize::try_from(class)
                .ok()
                .and_then(|c| weight_classes.get_mut(c))
            else {
                return Err(err(
                    raw,
                    &leaf_attr("ids"),
                    format!("weight {w} is for output {class}, the node has {n_out}"),
                ));
            };
            *seen = true;
            if raw.leaf_weights[w] < 0.0 {
                weights_all_positive = false;
            }
            // onnxruntime ignores weights attached to branches (old onnxmltools wrote some).
            if modes[at] == Mode::Leaf {
                weights_of[at].push((class as u32, raw.leaf_weights[w]));
            }
        }

        // Lay every tree out depth-first from its root (true child first), checking that every
        // child exists in the same tree and that no node is reached twice (no cycles, no
        // sharing), so that every walk ends at a leaf within `max_depth` steps.
        let mut nodes: Vec<Node> = Vec::with_capacity(n_nodes);
        let mut weight_class = Vec::with_capacity(n_weights);
        let mut weight_value = Vec::with_capacity(n_weights);
        let mut leaf_range: Vec<(u32, u32)> = Vec::with_capacity(n_nodes);
        let mut new_pos: Vec<u32> = vec![u32::MAX; n_nodes];
        let mut roots = Vec::with_capacity(root_pos.len());
        let mut min_features = 0usize;
        let mut max_depth = 0usize;
        let mut has_missing = false;
        let mut branch_modes: Vec<Mode> = Vec::new();
        // (original position, depth, parent's new index and whether this is its true child)
        let mut stack: Vec<Pending> = Vec::new();
        let mut depth_sum = 0usize;
        for &root in &root_pos {
            roots.push(nodes.len() as u32);
            stack.push((root, 1, None));
            let mut tree_depth = 0usize;
            while let Some((at, depth, parent)) = stack.pop() {
                let tree = raw.nodes_treeids[at];
                let id = raw.nodes_nodeids[at];
                if new_pos[at] != u32::MAX {
                    return Err(err(
                        raw,
                        "nodes_truenodeids",
                        format!(
                            "node {id} of tree {tree} is reached twice (a cycle or a shared node)"
                        ),
                    ));
                }
                let me = nodes.len();
                new_pos[at] = me as u32;
                max_depth = max_depth.max(depth);
                tree_depth = tree_depth.max(depth);
                if let Some((p, is_true)) = parent {
                    if is_true {
                        nodes[p].a = me as u32;
                    } else {
                        nodes[p].b = me as u32;
                    }
                }
                let mode = modes[at];
                if mode == Mode::Leaf {
                    let ws = &weights_of[at];
                    let Some(&(_, first)) = ws.first() else {
                        return Err(err(
                            raw,
                            &leaf_attr("weights"),
                            format!("leaf {id} of tree {tree} has no weight"),
                        ));
                    };
                    nodes.push(Node {
                        value: first,
                        feature: 0,
                        a: me as u32,
                        b: me as u32,
                        mode,
                        missing_true: false,
                    });
                    leaf_range.push((weight_class.len() as u32, ws.len() as u32));
                    for &(c, w) in ws {
                        weight_class.push(c);
                        weight_value.push(w);
                    }
                    continue;
                }
                let feature = raw.nodes_featureids[at];
                let feature_ok = usize::try_from(feature).ok().filter(|f| *f < n_features);
                let Some(feature) = feature_ok else {
                    return Err(err(
                        raw,
                        "nodes_featureids",
                        format!(
                            "node {id} of tree {tree} reads feature {feature}, the input has \
                             {n_features}"
                        ),
                    ));
                };
                min_features = min_features.max(feature + 1);
                let missing_true = raw
                    .nodes_missing_value_tracks_true
                    .get(at)
                    .is_some_and(|m| *m == 1);
                has_missing |= missing_true;
                if !branch_modes.contains(&mode) {
                    branch_modes.push(mode);
                }
                let child = |attr: &str, cid: i64| -> Result<usize, TreeError> {
                    index.get(&(tree, cid)).copied().ok_or_else(|| {
                        err(
                            raw,
                            attr,
                            format!("node {id} of tree {tree} points to missing node {cid}"),
                        )
                    })
                };
                let t = child("nodes_truenodeids", raw.nodes_truenodeids[at])?;
                let f = child("nodes_falsenodeids", raw.nodes_falsenodeids[at])?;
                leaf_range.push((0, 0));
                nodes.push(Node {
                    value: raw.nodes_values[at],
                    feature: to_u32(raw, "nodes_featureids", feature as i64)?,
                    a: u32::MAX,
                    b: u32::MAX,
                    mode,
                    missing_true,
                });
                // Pushed false first so that the true child is laid out right after its parent.
                stack.push((f, depth + 1, Some((me, false))));
                stack.push((t, depth + 1, Some((me, true))));
            }
            depth_sum += tree_depth;
        }

        let walk = match (branch_modes.as_slice(), has_missing) {
            ([] | [Mode::Leq], false) => Walk::Leq,
            ([Mode::Leq], true) => Walk::LeqMissing,
            ([Mode::Lt], false) => Walk::Lt,
            ([Mode::Lt], true) => Walk::LtMissing,
            _ => Walk::Mixed,
        };

        // Which classes get a score: `always` if some tree gives every one of its leaves a
        // weight for it, `never` if no reachable leaf has a weight for it.
        let mut always = vec![false; n_out];
        let mut ever = vec![false; n_out];
        let mut in_every_leaf = vec![true; n_out];
        for (t, &root) in roots.iter().enumerate() {
            let end = roots.get(t + 1).map_or(nodes.len(), |r| *r as usize);
            in_every_leaf.iter_mut().for_each(|x| *x = true);
            for (node, &(first, count)) in nodes[root as usize..end]
                .iter()
                .zip(&leaf_range[root as usize..end])
            {
                if node.mode != Mode::Leaf {
                    continue;
                }
                let range = first as usize..(first + count) as usize;
                for (c, flag) in in_every_leaf.iter_mut().enumerate() {
                    let has = weight_class[range.clone()].contains(&(c as u32));
                    ever[c] |= has;
                    *flag &= has;
                }
            }
            for (a, e) in always.iter_mut().zip(&in_every_leaf) {
                *a |= *e;
            }
        }
        let static_has = always
            .iter()
            .zip(&ever)
            .all(|(a, e)| *a || !*e)
            .then(|| always.clone());

        let single_weight_class = weight_classes.iter().filter(|c| **c).count() == 1;
        if let EnsembleKind::Classifier { n_classes: 2 } = kind {
            // Where onnxruntime would expand a single score to two columns, make sure it
            // would write both: PROBIT and a lone base value without the binary convention
            // leave the second column unwritten.
            let can_pop = raw.base_values.len() != 2 && !always[1];
            if can_pop && post == PostTransform::Probit {
                return Err(err(
                    raw,
                    "post_transform",
                    "PROBIT on a binary classifier with a single score column is undefined",
                ));
            }
            if can_pop && !single_weight_class && raw.base_values.len() == 1 {
                return Err(err(
                    raw,
                    "base_values",
                    "a single base value on a binary classifier with weights on both classes \
                     is undefined",
                ));
            }
        }
        if kind == EnsembleKind::Regressor && weight_classes.first() != Some(&true) {
            return Err(err(raw, &leaf_attr("weights"), "no weights"));
        }

        Ok(TreeEnsemble {
            kind,
            n_out,
            // Leaves read feature 0 when stepped (and ignore it): every row needs one value.
            min_features: min_features.max(1),
            aggregate,
            post,
            base_values: raw.base_values.clone(),
            roots,
            nodes,
            weight_class,
            weight_value,
            leaf_range,
            walk,
            single_weight_class,
            weights_all_positive,
            static_has,
            max_depth,
            depth_sum,
        })
    }

    pub fn kind(&self) -> EnsembleKind {
        self.kind
    }

    /// Scores written per row by [`TreeEnsemble::predict`]: the number of classes, or 1.
    pub fn n_outputs(&self) -> usize {
        self.n_out
    }

    /// Largest feature index read by a branch, plus one.
    pub fn min_features(&self) -> usize {
        self.min_features
    }

    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    pub fn n_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Sum over trees of each tree's depth (in nodes): a bound on the nodes one row visits.
    pub fn depth_sum(&self) -> usize {
        self.depth_sum
    }

    /// Longest root-to-leaf path, in nodes.
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// Runs every row. `out` must hold `rows.len() * n_outputs()` values and `labels`
    /// `rows.len()` entries (classifier: the class index onnxruntime's label output gives;
    /// regressor: left untouched, may be empty). Every row must have at least
    /// [`min_features`](TreeEnsemble::min_features) values.
    pub fn predict<R: AsRef<[f32]>>(
        &self,
        rows: &[R],
        out: &mut [f32],
        labels: &mut [usize],
    ) -> Result<(), String> {
        let n_out = self.n_out;
        if out.len() != rows.len() * n_out {
            return Err(format!(
                "output buffer holds {} values, expected {}",
                out.len(),
                rows.len() * n_out
            ));
        }
        if self.kind != EnsembleKind::Regressor && labels.len() != rows.len() {
            return Err(format!(
                "label buffer holds {} entries, expected {}",
                labels.len(),
                rows.len()
            ));
        }
        if let Some((i, r)) = rows
            .iter()
            .enumerate()
            .find(|(_, r)| r.as_ref().len() < self.min_features)
        {
            return Err(format!(
                "row {i} has {} features, the trees read {}",
                r.as_ref().len(),
                self.min_features
            ));
        }
        out.fill(0.0);
        let mut has = match (&self.static_has, self.kind) {
            (Some(_), _) | (None, EnsembleKind::Regressor) => Vec::new(),
            (None, _) => vec![false; out.len()],
        };
        for (c, chunk) in rows.chunks(CHUNK_ROWS).enumerate() {
            let start = c * CHUNK_ROWS;
            let out = &mut out[start * n_out..(start + chunk.len()) * n_out];
            let has = if has.is_empty() {
                &mut has[..]
            } else {
                &mut has[start * n_out..(start + chunk.len()) * n_out]
            };
            match self.walk {
                Walk::Leq => self.accumulate(chunk, out, has, |n: &Node, r: &[f32]| {
                    if r[n.feature as usize] <= n.value {
                        n.a
                    } else {
                        n.b
                    }
                }),
                Walk::LeqMissing => self.accumulate(chunk, out, has, |n: &Node, r: &[f32]| {
                    let x = r[n.feature as usize];
                    if (x <= n.value) | (n.missing_true & x.is_nan()) {
                        n.a
                    } else {
                        n.b
                    }
                }),
                Walk::Lt => self.accumulate(chunk, out, has, |n: &Node, r: &[f32]| {
                    if r[n.feature as usize] < n.value {
                        n.a
                    } else {
                        n.b
                    }
                }),
                Walk::LtMissing => self.accumulate(chunk, out, has, |n: &Node, r: &[f32]| {
                    let x = r[n.feature as usize];
                    if (x < n.value) | (n.missing_true & x.is_nan()) {
                        n.a
                    } else {
                        n.b
                    }
                }),
                Walk::Mixed => self.accumulate(chunk, out, has, |n: &Node, r: &[f32]| {
                    let x = r[n.feature as usize];
                    if n.mode.test(x, n.value) | (n.missing_true & x.is_nan()) {
                        n.a
                    } else {
                        n.b
                    }
                }),
            }
        }
        match self.kind {
            EnsembleKind::Regressor => {
                for v in out.iter_mut() {
                    *v = self.finalize_regression(*v);
                }
            }
            EnsembleKind::Classifier { .. } => {
                let mut on_stack = [false; 32];
                let mut on_heap = Vec::new();
                let row_has: &mut [bool] = if n_out <= on_stack.len() {
                    &mut on_stack[..n_out]
                } else {
                    on_heap.resize(n_out, false);
                    &mut on_heap
                };
                for (r, (scores, label)) in out.chunks_mut(n_out).zip(labels.iter_mut()).enumerate()
                {
                    match &self.static_has {
                        Some(s) => row_has.copy_from_slice(s),
                        None => row_has.copy_from_slice(&has[r * n_out..(r + 1) * n_out]),
                    }
                    *label = self.finalize_classification(scores, row_has);
                }
            }
        }
        Ok(())
    }

    /// Adds every tree's leaf weights to the chunk's scores: tree-major, rows four at a time
    /// in lockstep (independent dependency chains the CPU overlaps), the rest one by one. Each
    /// row's scores still add up in tree order, so batch and single-row results are identical.
    #[inline(always)]
    fn accumulate<R: AsRef<[f32]>>(
        &self,
        rows: &[R],
        out: &mut [f32],
        has: &mut [bool],
        step: impl Fn(&Node, &[f32]) -> u32,
    ) {
        let nodes = &self.nodes[..];
        let n_out = self.n_out;
        for (t, &root) in self.roots.iter().enumerate() {
            let root = root as usize;
            let mut r = 0;
            while r < rows.len() {
                let (leaves, k) = if r + 4 <= rows.len() {
                    let quad = [
                        rows[r].as_ref(),
                        rows[r + 1].as_ref(),
                        rows[r + 2].as_ref(),
                        rows[r + 3].as_ref(),
                    ];
                    (leaves_of_4(nodes, root, quad, &step), 4)
                } else {
                    ([leaf_of(nodes, root, rows[r].as_ref(), &step), 0, 0, 0], 1)
                };
                for (j, &leaf) in leaves[..k].iter().enumerate() {
                    let row = r + j;
                    let scores = &mut out[row * n_out..(row + 1) * n_out];
                    if n_out == 1 {
                        // One output: the leaf's first weight (onnxruntime's single-target
                        // path).
                        let w = nodes[leaf].value;
                        scores[0] = match self.aggregate {
                            Aggregate::Sum | Aggregate::Average => scores[0] + w,
                            Aggregate::Min if t > 0 => scores[0].min_ort(w),
                            Aggregate::Max if t > 0 => scores[0].max_ort(w),
                            Aggregate::Min | Aggregate::Max => w,
                        };
                        continue;
                    }
                    let (first, count) = self.leaf_range[leaf];
                    let range = first as usize..(first + count) as usize;
                    for (&c, &w) in self.weight_class[range.clone()]
                        .iter()
                        .zip(&self.weight_value[range.clone()])
                    {
                        scores[c as usize] += w;
                    }
                    if !has.is_empty() {
                        let has = &mut has[row * n_out..(row + 1) * n_out];
                        for &c in &self.weight_class[range] {
                            has[c as usize] = true;
                        }
                    }
                }
                r += k;
            }
        }
    }

    fn finalize_regression(&self, score: f32) -> f32 {
        let origin = self.base_values.first().copied().unwrap_or(0.0);
        let v = match self.aggregate {
            Aggregate::Average => score / self.roots.len() as f32 + origin,
            _ => score + origin,
        };
        match self.post {
            PostTransform::Probit => probit(v),
            _ => v,
        }
    }

    /// onnxruntime's `TreeAggregatorClassifier::FinalizeScores` + `write_scores`: turns the
    /// summed scores into the probabilities output in place and returns the label's index.
    /// `has` says which classes received a weight.
    fn finalize_classification(&self, s: &mut [f32], has: &mut [bool]) -> usize {
        let n = s.len();
        let base = &self.base_values;
        if n > 2 {
            for (k, b) in base.iter().enumerate() {
                s[k] += b;
                has[k] = true;
            }
            let mut label: Option<usize> = None;
            for k in 0..n {
                if has[k] && label.is_none_or(|l| s[k] > s[l]) {
                    label = Some(k);
                }
            }
            apply_transform(self.post, s);
            return label.unwrap_or(0);
        }

        // Two classes.
        let has0 = has[0];
        let has1 = has[1];
        let mut columns = 2;
        let mut expand: Option<u8> = None;
        match base.as_slice() {
            [b0, b1] => {
                if has1 {
                    s[1] = b1 + s[0];
                    s[0] = -s[1];
                } else {
                    s[1] += b1;
                    s[0] += b0;
                }
            }
            [b0] => {
                s[0] += b0;
                if !has1 {
                    columns = 1;
                }
            }
            _ => {
                expand = Some(3);
                if !has1 {
                    columns = 1;
                }
            }
        }
        let pos = if columns == 2 && has1 {
            s[1]
        } else if has0 {
            s[0]
        } else {
            0.0
        };
        let label = if self.single_weight_class {
            if self.weights_all_positive {
                let positive = pos > 0.5;
                expand = Some(if positive { 0 } else { 1 });
                usize::from(positive)
            } else {
                let positive = pos > 0.0;
                expand = Some(if positive { 2 } else { 3 });
                usize::from(positive)
            }
        } else {
            usize::from(pos > 0.0)
        };
        if columns == 2 {
            apply_transform(self.post, s);
        } else {
            let v = s[0];
            match (expand, self.post) {
                (Some(0 | 1), _) => {
                    s[0] = 1.0 - v;
                    s[1] = v;
                }
                (_, PostTransform::Logistic) => {
                    s[0] = logistic(-v);
                    s[1] = logistic(v);
                }
                _ => {
                    s[0] = -v;
                    s[1] = v;
                }
            }
        }
        label
    }
}

/// `min`/`max` the way onnxruntime's aggregators compare (`w < score ? w : score`).
trait OrtMinMax {
    fn min_ort(self, w: f32) -> f32;
    fn max_ort(self, w: f32) -> f32;
}

impl OrtMinMax for f32 {
    #[inline(always)]
    fn min_ort(self, w: f32) -> f32 {
        if w < self {
            w
        } else {
            self
        }
    }
    #[inline(always)]
    fn max_ort(self, w: f32) -> f32 {
        if w > self {
            w
        } else {
            self
        }
    }
}

/// The leaf one row reaches. Terminates: the layout has no cycles.
#[inline(always)]
fn leaf_of(
    nodes: &[Node],
    mut at: usize,
    row: &[f32],
    step: impl Fn(&Node, &[f32]) -> u32,
) -> usize {
    loop {
        let node = &nodes[at];
        if node.mode == Mode::Leaf {
            return at;
        }
        at = step(node, row) as usize;
    }
}

/// The leaves four rows reach, walking in lockstep; a row on its leaf steps onto itself.
#[inline(always)]
fn leaves_of_4(
    nodes: &[Node],
    root: usize,
    rows: [&[f32]; 4],
    step: impl Fn(&Node, &[f32]) -> u32,
) -> [usize; 4] {
    let mut at = [root; 4];
    loop {
        let n = [&nodes[at[0]], &nodes[at[1]], &nodes[at[2]], &nodes[at[3]]];
        if (n[0].mode == Mode::Leaf)
            & (n[1].mode == Mode::Leaf)
            & (n[2].mode == Mode::Leaf)
            & (n[3].mode == Mode::Leaf)
        {
            return at;
        }
        for k in 0..4 {
            at[k] = step(n[k], rows[k]) as usize;
        }
    }
}

/// onnxruntime's `ComputeLogistic`.
#[inline]
pub fn logistic(val: f32) -> f32 {
    let v = 1.0 / (1.0 + (-val.abs()).exp());
    if val < 0.0 {
        1.0 - v
    } else {
        v
    }
}

/// onnxruntime's `ErfInv` (Giles' approximation, in `f32`).
fn erf_inv(x: f32) -> f32 {
    let sgn = if x < 0.0 { -1.0f32 } else { 1.0 };
    let x = (1.0 - x) * (1.0 + x);
    let log = x.ln();
    // onnxruntime's own truncated pi, kept for bit-identical results.
    #[allow(clippy::approx_constant)]
    let v = 2.0 / (3.14159f32 * 0.147f32) + 0.5 * log;
    let v2 = 1.0 / 0.147f32 * log;
    let v3 = -v + (v * v - v2).sqrt();
    sgn * v3.sqrt()
}

/// onnxruntime's `ComputeProbit`.
#[inline]
pub fn probit(val: f32) -> f32 {
    std::f32::consts::SQRT_2 * erf_inv(2.0 * val - 1.0)
}

fn apply_transform(post: PostTransform, s: &mut [f32]) {
    match post {
        PostTransform::None => {}
        PostTransform::Logistic => s.iter_mut().for_each(|v| *v = logistic(*v)),
        PostTransform::Probit => s.iter_mut().for_each(|v| *v = probit(*v)),
        PostTransform::Softmax => {
            let mut v_max = -f32::MAX;
            for v in s.iter() {
                if *v > v_max {
                    v_max = *v;
                }
            }
            let mut sum = 0.0f32;
            for v in s.iter_mut() {
                *v = (*v - v_max).exp();
                sum += *v;
            }
            s.iter_mut().for_each(|v| *v /= sum);
        }
        PostTransform::SoftmaxZero => {
            let mut v_max = -f32::MAX;
            for v in s.iter() {
                if *v > v_max {
                    v_max = *v;
                }
            }
            let exp_neg_v_max = (-v_max).exp();
            let mut sum = 0.0f32;
            for v in s.iter_mut() {
                if *v > 0.000_000_1 || *v < -0.000_000_1 {
                    *v = (*v - v_max).exp();
                    sum += *v;
                } else {
                    *v *= exp_neg_v_max;
                }
            }
            s.iter_mut().for_each(|v| *v /= sum);
        }
    }
}
