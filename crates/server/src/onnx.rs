//! In-process ONNX backend: runs scikit-learn style tabular models through `tract-onnx`.
//!
//! A rollout can point a variant at an `.onnx` file instead of a model server; this module is the
//! only place that knows about tract. [`OnnxModel::load`] parses the file, pins its input to
//! `float32 [N, n_features]` with a symbolic batch dimension `N`, optimizes the graph once and keeps
//! the runnable plan. [`OnnxModel::predict`] is then a pure function of its rows, so one loaded
//! model is shared behind an `Arc` and called concurrently from `spawn_blocking` (the plan is
//! immutable; every call spawns its own execution state).
//!
//! Two things tract does not do the way scikit-learn does, and that are handled here:
//!
//! * **Classifier labels.** For binary tree ensembles exported by `skl2onnx` (all leaf weights on
//!   class 0), tract computes its `label` output from the raw score columns before expanding them
//!   to `[1 - p, p]`: for a random forest the label is always the first class, for gradient
//!   boosting it is inverted. Only the `probabilities` output is right, so the class is taken as
//!   their argmax (first maximum on ties, like `numpy.argmax`) and the label output is pruned from
//!   the plan. `skl2onnx` also writes a single `base_values` entry for binary gradient boosting,
//!   which tract rejects (it wants one per class label); the loader pads it with a zero, see
//!   `classifier_with_padded_base_values`.
//! * **Tree regressors.** tract-onnx 0.23 has no `TreeEnsembleRegressor` (what `skl2onnx` emits
//!   for `RandomForestRegressor` and `GradientBoostingRegressor`); the `tree_regressor` submodule
//!   registers one.
//!
//! The model's kind is detected from its outputs: a float `[N, C]` output next to a non-float
//! (label) output makes a classifier with `C` classes; a single float `[N]` or `[N, 1]` output makes
//! a regressor.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;

/// A loaded, optimized, runnable ONNX model. Cheap to share (`Send + Sync`); see the module doc.
pub struct OnnxModel {
    plan: Arc<TypedRunnableModel>,
    path: PathBuf,
    n_features: usize,
    kind: ModelKind,
    /// Name of the graph output the predictions are read from.
    output_name: String,
}

impl fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnnxModel")
            .field("path", &self.path)
            .field("n_features", &self.n_features)
            .field("kind", &self.kind)
            .field("output", &self.output_name)
            .finish_non_exhaustive()
    }
}

/// What a model predicts, detected from its outputs at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Outputs one probability per class; the class index is the argmax.
    Classifier { n_classes: usize },
    /// Outputs one value per row.
    Regressor,
}

/// Predictions for a batch, one entry per input row, in input order.
#[derive(Debug, Clone, PartialEq)]
pub enum OnnxPrediction {
    Classification {
        /// Argmax of `probabilities` for each row (an index into the model's classes).
        class_index: Vec<usize>,
        /// `n_classes` probabilities per row.
        probabilities: Vec<Vec<f32>>,
    },
    Regression {
        values: Vec<f32>,
    },
}

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The file is missing, unreadable, not ONNX, or uses operators tract cannot run.
    #[error("cannot load ONNX model {}: {message}", path.display())]
    Load { path: PathBuf, message: String },
    /// The model loads but is not a single-input tabular classifier or regressor.
    #[error("unsupported ONNX model {}: {message}", path.display())]
    Unsupported { path: PathBuf, message: String },
    /// A request row does not have the model's number of features.
    #[error("row {row} has {got} features, the model expects {expected}")]
    Shape {
        row: usize,
        expected: usize,
        got: usize,
    },
    /// tract failed while running the plan, or returned something unexpected.
    #[error("ONNX inference failed: {0}")]
    Run(String),
}

impl OnnxModel {
    /// Loads `path`, pins the input to `float32 [N, n_features]` (symbolic `N`), optimizes and
    /// builds the runnable plan. `n_features` comes from the model's declared input shape.
    pub fn load(path: &Path) -> Result<Self, OnnxError> {
        let load_err = |message: String| OnnxError::Load {
            path: path.to_owned(),
            message,
        };
        let unsupported = |message: String| OnnxError::Unsupported {
            path: path.to_owned(),
            message,
        };

        let mut model = framework()
            .model_for_path(path)
            .map_err(|e| load_err(format!("{e:#}")))?;

        let inputs = model
            .input_outlets()
            .map_err(|e| load_err(format!("{e:#}")))?
            .len();
        if inputs != 1 {
            return Err(unsupported(format!("expected 1 input, found {inputs}")));
        }
        let n_features = declared_n_features(&model).map_err(unsupported)?;

        let batch = model.symbols.sym("N");
        let input_fact = InferenceFact::dt_shape(
            f32::datum_type(),
            tvec!(batch.to_dim(), n_features.to_dim()),
        );
        model = model
            .with_input_fact(0, input_fact)
            .map_err(|e| load_err(format!("{e:#}")))?;

        let mut typed = model
            .into_typed()
            .map_err(|e| load_err(format!("type analysis failed: {e:#}")))?;

        let (output, kind) = select_output(&typed).map_err(unsupported)?;
        let output_name = typed
            .outlet_label(output)
            .map(str::to_owned)
            .unwrap_or_else(|| typed.node(output.node).name.clone());
        typed
            .select_output_outlets(&[output])
            .map_err(|e| load_err(format!("{e:#}")))?;

        let plan = typed
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| load_err(format!("optimization failed: {e:#}")))?;

        tracing::debug!(
            path = %path.display(),
            n_features,
            ?kind,
            output = %output_name,
            "loaded ONNX model"
        );
        Ok(OnnxModel {
            plan,
            path: path.to_owned(),
            n_features,
            kind,
            output_name,
        })
    }

    /// Number of features (columns) each input row must have.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Classifier (with its number of classes) or regressor.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// Runs the model on a batch of rows. Every row must have exactly [`n_features`] values;
    /// an empty batch gives an empty prediction without running the model.
    ///
    /// [`n_features`]: OnnxModel::n_features
    pub fn predict(&self, rows: &[Vec<f32>]) -> Result<OnnxPrediction, OnnxError> {
        if let Some((row, r)) = rows
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != self.n_features)
        {
            return Err(OnnxError::Shape {
                row,
                expected: self.n_features,
                got: r.len(),
            });
        }
        let n = rows.len();
        if n == 0 {
            return Ok(match self.kind {
                ModelKind::Classifier { .. } => OnnxPrediction::Classification {
                    class_index: Vec::new(),
                    probabilities: Vec::new(),
                },
                ModelKind::Regressor => OnnxPrediction::Regression { values: Vec::new() },
            });
        }

        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let input = Tensor::from_shape(&[n, self.n_features], &flat)
            .map_err(|e| OnnxError::Run(format!("{e:#}")))?;
        let outputs = self
            .plan
            .run(tvec!(input.into_tvalue()))
            .map_err(|e| OnnxError::Run(format!("{e:#}")))?;
        let output = outputs
            .first()
            .ok_or_else(|| OnnxError::Run("the model produced no output".to_owned()))?;
        let shape = output.shape().to_vec();
        let values = output
            .try_as_plain_ram()
            .and_then(|view| view.as_slice::<f32>().map(<[f32]>::to_vec))
            .map_err(|e| OnnxError::Run(format!("reading output: {e:#}")))?;

        match self.kind {
            ModelKind::Classifier { n_classes } => {
                if shape != [n, n_classes] {
                    return Err(OnnxError::Run(format!(
                        "probabilities have shape {shape:?}, expected [{n}, {n_classes}]"
                    )));
                }
                let probabilities: Vec<Vec<f32>> =
                    values.chunks(n_classes).map(<[f32]>::to_vec).collect();
                let class_index = probabilities.iter().map(|p| argmax(p)).collect();
                Ok(OnnxPrediction::Classification {
                    class_index,
                    probabilities,
                })
            }
            ModelKind::Regressor => {
                if values.len() != n {
                    return Err(OnnxError::Run(format!(
                        "output has shape {shape:?}, expected {n} values"
                    )));
                }
                Ok(OnnxPrediction::Regression { values })
            }
        }
    }
}

/// Index of the first maximum; NaN never wins (an all-NaN row gives 0).
fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] || (values[best].is_nan() && !v.is_nan()) {
            best = i;
        }
    }
    best
}

/// tract's ONNX framework plus the operator fixes this module needs.
fn framework() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    tree_regressor::register(&mut onnx);
    if let Some(original) = onnx.op_register.0.get("TreeEnsembleClassifier").copied() {
        onnx.op_register.insert(ORIGINAL_TREE_CLASSIFIER, original);
        onnx.op_register
            .insert("TreeEnsembleClassifier", classifier_with_padded_base_values);
    }
    onnx
}

/// Where [`framework`] keeps tract's own `TreeEnsembleClassifier` builder.
const ORIGINAL_TREE_CLASSIFIER: &str = "switchyard.TractTreeEnsembleClassifier";

/// `skl2onnx` exports a binary gradient-boosting classifier with one `base_values` entry (the
/// score of the positive class, which it keeps in column 0 of its single-column layout); tract
/// demands one per class label. Padding with zeros for the other classes gives exactly the ONNX
/// semantics (tract adds the base to column 0 before the logistic, and ignores the other column
/// in that layout). Every other node goes to tract's builder unchanged.
fn classifier_with_padded_base_values(
    ctx: &tract_onnx::model::ParsingContext,
    node: &tract_onnx::pb::NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let Some(original) = ctx
        .framework
        .op_register
        .0
        .get(ORIGINAL_TREE_CLASSIFIER)
        .copied()
    else {
        bail!("TreeEnsembleClassifier builder missing from the registry");
    };
    let n_labels = node
        .get_attr_opt_slice::<i64>("classlabels_int64s")?
        .map(<[i64]>::len)
        .or(node
            .get_attr_opt_tvec::<&str>("classlabels_strings")?
            .map(|v| v.len()));
    let base_len = node
        .get_attr_opt_slice::<f32>("base_values")?
        .map(<[f32]>::len);
    match (n_labels, base_len) {
        (Some(2), Some(1)) => {
            let mut node = node.clone();
            for attr in node.attribute.iter_mut() {
                if attr.name == "base_values" {
                    attr.floats.push(0.0);
                }
            }
            original(ctx, &node)
        }
        _ => original(ctx, node),
    }
}

/// The number of features from the model's declared input shape `[batch, n_features]`.
fn declared_n_features(model: &InferenceModel) -> Result<usize, String> {
    let fact = model.input_fact(0).map_err(|e| format!("{e:#}"))?;
    if let Some(dt) = fact.datum_type.concretize() {
        if dt != f32::datum_type() {
            return Err(format!("input must be float32, the model declares {dt:?}"));
        }
    }
    let rank = fact.shape.rank().concretize();
    if rank != Some(2) {
        return Err(format!(
            "input must be declared as [batch, n_features], the model declares {:?}",
            fact.shape
        ));
    }
    fact.shape
        .dim(1)
        .and_then(|d| d.concretize())
        .and_then(|d| d.to_usize().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            format!(
                "the number of features (input dimension 1) must be fixed, the model declares {:?}",
                fact.shape
            )
        })
}

/// Picks the output predictions are read from and classifies the model (see the module doc).
fn select_output(model: &TypedModel) -> Result<(OutletId, ModelKind), String> {
    let outlets = model.output_outlets().map_err(|e| format!("{e:#}"))?;
    let mut described = Vec::new();
    let mut float_outputs = Vec::new();
    let mut has_non_float = false;
    for &outlet in outlets {
        let fact = model.outlet_fact(outlet).map_err(|e| format!("{e:#}"))?;
        let name = model.outlet_label(outlet).unwrap_or("?");
        described.push(format!("{name}: {fact:?}"));
        if fact.datum_type == f32::datum_type() {
            float_outputs.push((outlet, name, fact.shape.clone()));
        } else {
            has_non_float = true;
        }
    }
    let describe = || described.join(", ");
    let batch_dim = |shape: &ShapeFact| shape.rank() >= 1 && shape[0].to_usize().is_err();

    if has_non_float {
        // Classifier: label + probabilities. Prefer skl2onnx's output name.
        let candidates: Vec<_> = float_outputs
            .iter()
            .filter(|(_, _, s)| s.rank() == 2 && batch_dim(s) && s[1].to_usize().is_ok())
            .collect();
        let chosen = candidates
            .iter()
            .find(|(_, name, _)| *name == "probabilities")
            .or_else(|| {
                if candidates.len() == 1 {
                    candidates.first()
                } else {
                    None
                }
            });
        return match chosen {
            Some((outlet, _, shape)) => {
                let n_classes = shape[1].to_usize().map_err(|e| format!("{e:#}"))?;
                if n_classes < 2 {
                    return Err(format!("classifier with {n_classes} class: {}", describe()));
                }
                Ok((*outlet, ModelKind::Classifier { n_classes }))
            }
            None => Err(format!(
                "cannot find a float [N, n_classes] probabilities output among: {}",
                describe()
            )),
        };
    }
    match float_outputs.as_slice() {
        [(outlet, _, shape)]
            if batch_dim(shape)
                && (shape.rank() == 1
                    || (shape.rank() == 2 && shape[1].to_usize().ok() == Some(1))) =>
        {
            Ok((*outlet, ModelKind::Regressor))
        }
        _ => Err(format!(
            "expected a classifier (label + probabilities) or a regressor (one float [N] or \
             [N, 1] output), found: {}",
            describe()
        )),
    }
}

/// `ai.onnx.ml` `TreeEnsembleRegressor`, which tract-onnx 0.23 lacks.
///
/// Semantics (ONNX-ML spec, as implemented by onnxruntime): each tree is walked from its root
/// (its node with the smallest node id, 0 for every converter we know of), comparing
/// `x[feature]` with the node value under the node's mode; a NaN feature goes to the true branch
/// iff `nodes_missing_value_tracks_true`. The reached leaf adds its `(target, weight)` pairs; per target the contributions of all trees are aggregated (`SUM`,
/// `AVERAGE` = sum / number of trees, `MIN`, `MAX`), then `base_values` are added. Only
/// `post_transform = NONE` is accepted (what regressors use).
///
/// The forest is validated when the node is parsed (every child exists, no node is reachable
/// twice, so walking always terminates), and evaluation uses checked indexing only.
mod tree_regressor {
    use std::collections::HashMap;
    use std::sync::Arc;

    use tract_onnx::model::ParsingContext;
    use tract_onnx::pb::NodeProto;
    use tract_onnx::prelude::tract_ndarray::{Array2, Axis, Ix2};
    use tract_onnx::tract_hir::internal::*;
    use tract_onnx::tract_hir::ops::expandable::{expand, Expansion};

    pub(super) fn register(onnx: &mut tract_onnx::Onnx) {
        onnx.op_register.insert("TreeEnsembleRegressor", build);
    }

    fn build(
        _ctx: &ParsingContext,
        node: &NodeProto,
    ) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
        let forest = Forest::from_node(node)?;
        Ok((
            expand(TreeEnsembleRegressor {
                forest: Arc::new(forest),
            }),
            vec![],
        ))
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Mode {
        Leq,
        Lt,
        Gte,
        Gt,
        Eq,
        Neq,
    }

    impl Mode {
        fn parse(s: &str) -> TractResult<Option<Mode>> {
            Ok(Some(match s {
                "BRANCH_LEQ" => Mode::Leq,
                "BRANCH_LT" => Mode::Lt,
                "BRANCH_GTE" => Mode::Gte,
                "BRANCH_GT" => Mode::Gt,
                "BRANCH_EQ" => Mode::Eq,
                "BRANCH_NEQ" => Mode::Neq,
                "LEAF" => return Ok(None),
                other => bail!("unsupported node mode {other}"),
            }))
        }

        /// Whether `x` takes the true branch against threshold `v` (NaN handled by the caller).
        fn test(self, x: f32, v: f32) -> bool {
            match self {
                Mode::Leq => x <= v,
                Mode::Lt => x < v,
                Mode::Gte => x >= v,
                Mode::Gt => x > v,
                Mode::Eq => x == v,
                Mode::Neq => x != v,
            }
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Aggregate {
        Sum,
        Average,
        Min,
        Max,
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Node {
        Branch {
            mode: Mode,
            feature: usize,
            threshold: f32,
            nan_is_true: bool,
            /// Indices into `Forest::nodes`.
            if_true: usize,
            if_false: usize,
        },
        /// `Forest::leaf_weights[start..end]`.
        Leaf { start: usize, end: usize },
    }

    /// A parsed, validated tree ensemble.
    #[derive(Debug, Clone, PartialEq)]
    struct Forest {
        n_targets: usize,
        /// Largest feature index used by a branch, plus one.
        min_features: usize,
        aggregate: Aggregate,
        base_values: Vec<f32>,
        /// Index of each tree's root in `nodes`.
        roots: Vec<usize>,
        nodes: Vec<Node>,
        /// `(target, weight)` pairs referenced by leaves.
        leaf_weights: Vec<(usize, f32)>,
    }

    fn attr_len<T>(node: &NodeProto, name: &str, values: &[T], n: usize) -> TractResult<()> {
        if values.len() != n {
            bail!(
                "{}: attribute {name} has {} entries, expected {n}",
                node.name,
                values.len()
            );
        }
        Ok(())
    }

    impl Forest {
        fn from_node(node: &NodeProto) -> TractResult<Forest> {
            let n_targets: usize = node.get_attr("n_targets")?;
            if n_targets == 0 {
                bail!("{}: n_targets must be positive", node.name);
            }
            let post_transform = node
                .get_attr_opt::<&str>("post_transform")?
                .unwrap_or("NONE");
            if post_transform != "NONE" {
                bail!(
                    "{}: post_transform {post_transform} is not supported for regressors",
                    node.name
                );
            }
            let aggregate = match node
                .get_attr_opt::<&str>("aggregate_function")?
                .unwrap_or("SUM")
            {
                "SUM" => Aggregate::Sum,
                "AVERAGE" => Aggregate::Average,
                "MIN" => Aggregate::Min,
                "MAX" => Aggregate::Max,
                other => bail!("{}: unsupported aggregate_function {other}", node.name),
            };
            let base_values = match node.get_attr_opt_vec::<f32>("base_values")? {
                Some(v) => {
                    attr_len(node, "base_values", &v, n_targets)?;
                    v
                }
                None => vec![0.0; n_targets],
            };
            for unsupported in [
                "nodes_values_as_tensor",
                "target_weights_as_tensor",
                "base_values_as_tensor",
            ] {
                if node.attribute.iter().any(|a| a.name == unsupported) {
                    bail!(
                        "{}: attribute {unsupported} (double precision) is not supported",
                        node.name
                    );
                }
            }

            let tree_ids = node.get_attr_vec::<usize>("nodes_treeids")?;
            let n_nodes = tree_ids.len();
            if n_nodes == 0 {
                bail!("{}: no tree nodes", node.name);
            }
            let node_ids = node.get_attr_vec::<usize>("nodes_nodeids")?;
            let feature_ids = node.get_attr_vec::<usize>("nodes_featureids")?;
            let values = node.get_attr_vec::<f32>("nodes_values")?;
            let modes = node.get_attr_vec::<&str>("nodes_modes")?;
            let true_ids = node.get_attr_vec::<usize>("nodes_truenodeids")?;
            let false_ids = node.get_attr_vec::<usize>("nodes_falsenodeids")?;
            attr_len(node, "nodes_nodeids", &node_ids, n_nodes)?;
            attr_len(node, "nodes_featureids", &feature_ids, n_nodes)?;
            attr_len(node, "nodes_values", &values, n_nodes)?;
            attr_len(node, "nodes_modes", &modes, n_nodes)?;
            attr_len(node, "nodes_truenodeids", &true_ids, n_nodes)?;
            attr_len(node, "nodes_falsenodeids", &false_ids, n_nodes)?;
            let nan_is_true =
                match node.get_attr_opt_vec::<bool>("nodes_missing_value_tracks_true")? {
                    Some(v) => {
                        attr_len(node, "nodes_missing_value_tracks_true", &v, n_nodes)?;
                        v
                    }
                    None => vec![false; n_nodes],
                };

            let leaf_tree_ids = node.get_attr_vec::<usize>("target_treeids")?;
            let n_weights = leaf_tree_ids.len();
            let leaf_node_ids = node.get_attr_vec::<usize>("target_nodeids")?;
            let leaf_targets = node.get_attr_vec::<usize>("target_ids")?;
            let leaf_values = node.get_attr_vec::<f32>("target_weights")?;
            attr_len(node, "target_nodeids", &leaf_node_ids, n_weights)?;
            attr_len(node, "target_ids", &leaf_targets, n_weights)?;
            attr_len(node, "target_weights", &leaf_values, n_weights)?;
            if let Some(t) = leaf_targets.iter().find(|t| **t >= n_targets) {
                bail!(
                    "{}: target id {t} out of range (n_targets = {n_targets})",
                    node.name
                );
            }

            // Index nodes by (tree, node id); trees are numbered by first appearance.
            let mut index: HashMap<(usize, usize), usize> = HashMap::with_capacity(n_nodes);
            for (i, key) in tree_ids
                .iter()
                .copied()
                .zip(node_ids.iter().copied())
                .enumerate()
            {
                if index.insert(key, i).is_some() {
                    bail!(
                        "{}: duplicate node (tree {}, node {})",
                        node.name,
                        key.0,
                        key.1
                    );
                }
            }
            let mut root_of: std::collections::BTreeMap<usize, (usize, usize)> = Default::default();
            for (i, (&tree, &id)) in tree_ids.iter().zip(&node_ids).enumerate() {
                let root = root_of.entry(tree).or_insert((id, i));
                if id < root.0 {
                    *root = (id, i);
                }
            }
            let roots: Vec<usize> = root_of.values().map(|&(_, i)| i).collect();

            // Group leaf weights by leaf node.
            let mut weights_of: HashMap<usize, Vec<(usize, f32)>> = HashMap::new();
            for i in 0..n_weights {
                let key = (leaf_tree_ids[i], leaf_node_ids[i]);
                let Some(&at) = index.get(&key) else {
                    bail!(
                        "{}: weight for unknown node (tree {}, node {})",
                        node.name,
                        key.0,
                        key.1
                    );
                };
                weights_of
                    .entry(at)
                    .or_default()
                    .push((leaf_targets[i], leaf_values[i]));
            }

            let mut nodes = Vec::with_capacity(n_nodes);
            let mut leaf_weights = Vec::with_capacity(n_weights);
            let mut min_features = 0;
            for i in 0..n_nodes {
                let tree = tree_ids[i];
                let child = |id: usize| -> TractResult<usize> {
                    match index.get(&(tree, id)) {
                        Some(c) => Ok(*c),
                        None => bail!(
                            "{}: node {} of tree {tree} points to missing node {id}",
                            node.name,
                            node_ids[i]
                        ),
                    }
                };
                nodes.push(match Mode::parse(modes[i])? {
                    Some(mode) => {
                        min_features = min_features.max(feature_ids[i] + 1);
                        Node::Branch {
                            mode,
                            feature: feature_ids[i],
                            threshold: values[i],
                            nan_is_true: nan_is_true[i],
                            if_true: child(true_ids[i])?,
                            if_false: child(false_ids[i])?,
                        }
                    }
                    None => {
                        let start = leaf_weights.len();
                        if let Some(w) = weights_of.remove(&i) {
                            leaf_weights.extend(w);
                        }
                        Node::Leaf {
                            start,
                            end: leaf_weights.len(),
                        }
                    }
                });
            }
            if let Some(at) = weights_of.keys().next() {
                bail!("{}: weights attached to branch node index {at}", node.name);
            }

            let forest = Forest {
                n_targets,
                min_features,
                aggregate,
                base_values,
                roots,
                nodes,
                leaf_weights,
            };
            forest.check_is_forest(&node.name)?;
            Ok(forest)
        }

        /// Every node is reachable from at most one root by one path: no cycles, no sharing.
        fn check_is_forest(&self, name: &str) -> TractResult<()> {
            let mut seen = vec![false; self.nodes.len()];
            let mut stack: Vec<usize> = Vec::new();
            for &root in &self.roots {
                stack.push(root);
                while let Some(i) = stack.pop() {
                    match seen.get_mut(i) {
                        Some(s) if !*s => *s = true,
                        _ => bail!("{name}: tree nodes form a cycle or are shared"),
                    }
                    if let Some(Node::Branch {
                        if_true, if_false, ..
                    }) = self.nodes.get(i)
                    {
                        stack.push(*if_true);
                        stack.push(*if_false);
                    }
                }
            }
            Ok(())
        }

        /// Adds the prediction for one row to `out` (length `n_targets`, zeroed by the caller).
        fn eval_row(&self, row: &[f32], out: &mut [f32]) -> TractResult<()> {
            if row.len() < self.min_features || out.len() != self.n_targets {
                bail!(
                    "tree ensemble needs {} features and {} outputs, got {} and {}",
                    self.min_features,
                    self.n_targets,
                    row.len(),
                    out.len()
                );
            }
            let mut seen = vec![false; self.n_targets];
            for &root in &self.roots {
                let mut at = root;
                // The forest check guarantees termination; the bound keeps that local.
                for _ in 0..=self.nodes.len() {
                    match self.nodes.get(at) {
                        Some(Node::Branch {
                            mode,
                            feature,
                            threshold,
                            nan_is_true,
                            if_true,
                            if_false,
                        }) => {
                            let x = row.get(*feature).copied().unwrap_or(f32::NAN);
                            let go_true = if x.is_nan() {
                                *nan_is_true
                            } else {
                                mode.test(x, *threshold)
                            };
                            at = if go_true { *if_true } else { *if_false };
                        }
                        Some(Node::Leaf { start, end }) => {
                            let weights = self.leaf_weights.get(*start..*end).unwrap_or(&[]);
                            for &(target, w) in weights {
                                let (Some(o), Some(s)) =
                                    (out.get_mut(target), seen.get_mut(target))
                                else {
                                    continue;
                                };
                                *o = if !*s {
                                    w
                                } else {
                                    match self.aggregate {
                                        Aggregate::Sum | Aggregate::Average => *o + w,
                                        Aggregate::Min => o.min(w),
                                        Aggregate::Max => o.max(w),
                                    }
                                };
                                *s = true;
                            }
                            break;
                        }
                        None => bail!("tree node index {at} out of range"),
                    }
                }
            }
            let n_trees = self.roots.len() as f32;
            for (o, base) in out.iter_mut().zip(&self.base_values) {
                if self.aggregate == Aggregate::Average {
                    *o /= n_trees;
                }
                *o += base;
            }
            Ok(())
        }
    }

    /// The parse-time (inference) op: fixes types and shapes, then wires [`TreeRegressorOp`].
    #[derive(Debug, Clone)]
    struct TreeEnsembleRegressor {
        forest: Arc<Forest>,
    }

    impl Expansion for TreeEnsembleRegressor {
        fn name(&self) -> StaticName {
            "TreeEnsembleRegressor".into()
        }

        fn rules<'r, 'p: 'r, 's: 'r>(
            &'s self,
            s: &mut Solver<'r>,
            inputs: &'p [TensorProxy],
            outputs: &'p [TensorProxy],
        ) -> InferenceResult {
            check_input_arity(inputs, 1)?;
            check_output_arity(outputs, 1)?;
            s.equals(&inputs[0].datum_type, DatumType::F32)?;
            s.equals(&inputs[0].rank, 2)?;
            s.equals(&outputs[0].datum_type, DatumType::F32)?;
            s.equals(&outputs[0].rank, 2)?;
            s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
            s.equals(&outputs[0].shape[1], self.forest.n_targets.to_dim())?;
            Ok(())
        }

        fn wire(
            &self,
            prefix: &str,
            model: &mut TypedModel,
            inputs: &[OutletId],
        ) -> TractResult<TVec<OutletId>> {
            model.wire_node(
                prefix,
                TreeRegressorOp {
                    forest: self.forest.clone(),
                },
                inputs,
            )
        }
    }

    /// The typed, runnable op: float32 `[N, F]` to float32 `[N, n_targets]`.
    #[derive(Debug, Clone)]
    struct TreeRegressorOp {
        forest: Arc<Forest>,
    }

    // Identity of the shared forest: cheap, and never claims two different forests are equal.
    impl PartialEq for TreeRegressorOp {
        fn eq(&self, other: &Self) -> bool {
            Arc::ptr_eq(&self.forest, &other.forest)
        }
    }
    impl Eq for TreeRegressorOp {}

    impl Op for TreeRegressorOp {
        fn name(&self) -> StaticName {
            "switchyard.TreeEnsembleRegressor".into()
        }

        op_as_typed_op!();
    }

    impl EvalOp for TreeRegressorOp {
        op_out_of_plan!();

        fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
            let input = args_1!(inputs);
            let input = input.to_plain_array_view::<f32>()?;
            let input = input.into_dimensionality::<Ix2>()?;
            let n_targets = self.forest.n_targets;
            let mut output = Array2::<f32>::zeros((input.nrows(), n_targets));
            let mut row_buf = Vec::with_capacity(input.ncols());
            for (row, mut out) in input.axis_iter(Axis(0)).zip(output.axis_iter_mut(Axis(0))) {
                row_buf.clear();
                row_buf.extend(row.iter().copied());
                let Some(out) = out.as_slice_mut() else {
                    bail!("non-contiguous output row");
                };
                self.forest.eval_row(&row_buf, out)?;
            }
            Ok(tvec!(output.into_tvalue()))
        }
    }

    impl TypedOp for TreeRegressorOp {
        fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
            let input = inputs[0];
            if input.rank() != 2 {
                bail!(
                    "TreeEnsembleRegressor input must be rank 2, got {:?}",
                    input.shape
                );
            }
            if let Ok(width) = input.shape[1].to_usize() {
                if width < self.forest.min_features {
                    bail!(
                        "TreeEnsembleRegressor uses feature #{} but the input has {width}",
                        self.forest.min_features - 1
                    );
                }
            }
            Ok(tvec!(f32::fact(&[
                input.shape[0].clone(),
                self.forest.n_targets.to_dim()
            ])))
        }

        as_op!();
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use tract_onnx::pb::attribute_proto::AttributeType;
        use tract_onnx::pb::AttributeProto;

        fn ints(name: &str, v: &[i64]) -> AttributeProto {
            AttributeProto {
                name: name.into(),
                r#type: AttributeType::Ints as i32,
                ints: v.to_vec(),
                ..Default::default()
            }
        }

        fn floats(name: &str, v: &[f32]) -> AttributeProto {
            AttributeProto {
                name: name.into(),
                r#type: AttributeType::Floats as i32,
                floats: v.to_vec(),
                ..Default::default()
            }
        }

        fn strings(name: &str, v: &[&str]) -> AttributeProto {
            AttributeProto {
                name: name.into(),
                r#type: AttributeType::Strings as i32,
                strings: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
                ..Default::default()
            }
        }

        fn string(name: &str, v: &str) -> AttributeProto {
            AttributeProto {
                name: name.into(),
                r#type: AttributeType::String as i32,
                s: v.as_bytes().to_vec(),
                ..Default::default()
            }
        }

        fn int(name: &str, v: i64) -> AttributeProto {
            AttributeProto {
                name: name.into(),
                r#type: AttributeType::Int as i32,
                i: v,
                ..Default::default()
            }
        }

        /// Tree 0: `x0 <= 0.5` (NaN goes true) ? 10 : (`x1 < 2` ? 20 : 30).
        /// Tree 1: a single leaf worth 1. Base value 100.
        fn node(aggregate: &str) -> NodeProto {
            NodeProto {
                name: "test".into(),
                op_type: "TreeEnsembleRegressor".into(),
                attribute: vec![
                    int("n_targets", 1),
                    string("aggregate_function", aggregate),
                    floats("base_values", &[100.0]),
                    ints("nodes_treeids", &[0, 0, 0, 0, 0, 1]),
                    ints("nodes_nodeids", &[0, 1, 2, 3, 4, 0]),
                    ints("nodes_featureids", &[0, 0, 1, 0, 0, 0]),
                    floats("nodes_values", &[0.5, 0.0, 2.0, 0.0, 0.0, 0.0]),
                    strings(
                        "nodes_modes",
                        &["BRANCH_LEQ", "LEAF", "BRANCH_LT", "LEAF", "LEAF", "LEAF"],
                    ),
                    ints("nodes_truenodeids", &[1, 0, 3, 0, 0, 0]),
                    ints("nodes_falsenodeids", &[2, 0, 4, 0, 0, 0]),
                    ints("nodes_missing_value_tracks_true", &[1, 0, 0, 0, 0, 0]),
                    ints("target_treeids", &[0, 0, 0, 1]),
                    ints("target_nodeids", &[1, 3, 4, 0]),
                    ints("target_ids", &[0, 0, 0, 0]),
                    floats("target_weights", &[10.0, 20.0, 30.0, 1.0]),
                ],
                ..Default::default()
            }
        }

        fn eval(forest: &Forest, row: &[f32]) -> f32 {
            let mut out = [0.0];
            forest.eval_row(row, &mut out).unwrap();
            out[0]
        }

        fn with_attr(mut node: NodeProto, attr: AttributeProto) -> NodeProto {
            node.attribute.retain(|a| a.name != attr.name);
            node.attribute.push(attr);
            node
        }

        #[test]
        fn walks_trees_and_aggregates() {
            let sum = Forest::from_node(&node("SUM")).unwrap();
            assert_eq!(sum.min_features, 2);
            assert_eq!(eval(&sum, &[0.0, 0.0]), 111.0);
            assert_eq!(eval(&sum, &[0.5, 9.0]), 111.0, "LEQ is inclusive");
            assert_eq!(eval(&sum, &[1.0, 1.0]), 121.0);
            assert_eq!(eval(&sum, &[1.0, 2.0]), 131.0, "LT is strict");
            assert_eq!(eval(&sum, &[f32::NAN, 5.0]), 111.0, "NaN tracks true");
            assert_eq!(
                eval(&sum, &[1.0, f32::NAN]),
                131.0,
                "NaN goes false by default"
            );

            let avg = Forest::from_node(&node("AVERAGE")).unwrap();
            assert_eq!(eval(&avg, &[0.0, 0.0]), 105.5);
            let max = Forest::from_node(&node("MAX")).unwrap();
            assert_eq!(eval(&max, &[1.0, 3.0]), 130.0);
            let min = Forest::from_node(&node("MIN")).unwrap();
            assert_eq!(eval(&min, &[1.0, 3.0]), 101.0);
        }

        #[test]
        fn rejects_short_rows() {
            let forest = Forest::from_node(&node("SUM")).unwrap();
            let mut out = [0.0];
            assert!(forest.eval_row(&[1.0], &mut out).is_err());
        }

        #[test]
        fn rejects_malformed_forests() {
            let check = |node: NodeProto, needle: &str| {
                let err = format!("{:#}", Forest::from_node(&node).unwrap_err());
                assert!(err.contains(needle), "expected {needle:?} in {err:?}");
            };
            // Node 2 of tree 0 points back to the root.
            check(
                with_attr(node("SUM"), ints("nodes_truenodeids", &[1, 0, 0, 0, 0, 0])),
                "cycle",
            );
            check(
                with_attr(node("SUM"), ints("nodes_falsenodeids", &[7, 0, 4, 0, 0, 0])),
                "missing node 7",
            );
            check(
                with_attr(node("SUM"), ints("target_ids", &[0, 0, 3, 0])),
                "target id 3",
            );
            check(
                with_attr(node("SUM"), string("post_transform", "SOFTMAX")),
                "post_transform",
            );
            check(
                with_attr(node("SUM"), floats("nodes_values", &[0.5])),
                "nodes_values",
            );
            check(node("MEDIAN"), "aggregate_function");
            check(
                with_attr(node("SUM"), ints("target_nodeids", &[1, 3, 9, 0])),
                "unknown node",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<OnnxModel>();
        assert_send_sync::<Arc<OnnxModel>>();
    }

    #[test]
    fn argmax_takes_first_maximum_and_skips_nan() {
        assert_eq!(argmax(&[0.5, 0.5]), 0);
        assert_eq!(argmax(&[0.2, 0.8]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.1]), 1);
        assert_eq!(argmax(&[0.3, f32::NAN, 0.7]), 2);
        assert_eq!(argmax(&[0.1, 0.6, 0.3]), 1);
    }
}
