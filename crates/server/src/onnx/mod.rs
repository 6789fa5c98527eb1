//! In-process ONNX backend for scikit-learn style tabular models.
//!
//! A rollout can point a variant at an `.onnx` file instead of a model server. [`OnnxModel::load`]
//! reads the file once and picks one of two engines:
//!
//! * **Tree ensembles** (an ONNX-ML `TreeEnsembleClassifier` or `TreeEnsembleRegressor` reading
//!   the graph input, followed only by `Identity`, `Cast` or `ZipMap` nodes, which is what
//!   skl2onnx and onnxmltools write for RandomForest, ExtraTrees, GradientBoosting,
//!   HistGradientBoosting, LightGBM and XGBoost) are compiled into flat arrays by the project's
//!   own engine, [`trees`], which reproduces onnxruntime's semantics (including its binary
//!   conventions and its label). tract never sees them: its `TreeEnsembleClassifier` gets the
//!   probabilities right but is 100-700x slower than onnxruntime and its label output disagrees
//!   with scikit-learn, and tract-onnx 0.23 has no `TreeEnsembleRegressor` at all. A graph that
//!   mixes a tree ensemble with other operators is refused at load.
//! * **Everything else** (e.g. a `StandardScaler` + `LogisticRegression` pipeline) goes through
//!   `tract-onnx` (`general`, compiled with the `tract` feature: the library's default, the
//!   `switchyard` binary's `--features tract`; a build without it refuses such a graph at load,
//!   saying so): the input is pinned to `float32 [N, n_features]` with a symbolic batch
//!   dimension `N`, the graph is optimized once and the runnable plan kept. The model's kind is
//!   detected from its outputs: a float `[N, C]` output next to a non-float (label) output makes
//!   a classifier with `C` classes, whose class is the argmax of the probabilities (first maximum
//!   on ties, like `numpy.argmax`; the label output is pruned from the plan); a single float `[N]`
//!   or `[N, 1]` output makes a regressor.
//!
//! The file itself is decoded by [`proto`] (the ONNX messages, declared with `prost`), so the
//! tree engine needs nothing of tract.
//!
//! [`OnnxModel::predict`] is a pure function of its rows either way, so one loaded model is
//! shared behind an `Arc` and called concurrently.

#[cfg(feature = "tract")]
mod general;
pub mod proto;
pub mod trees;

use std::fmt;
use std::path::{Path, PathBuf};

use prost::Message;
use proto as pb;
use proto::{AttributeProto, AttributeType, NodeProto};

use trees::{EnsembleKind, EnsembleOp, RawEnsemble, TreeEnsemble};

/// A loaded ONNX model, ready to run. Cheap to share (`Send + Sync`); see the module doc.
pub struct OnnxModel {
    engine: Engine,
    path: PathBuf,
    n_features: usize,
    kind: ModelKind,
    /// SHA-256 of the file's bytes as loaded, 64 lowercase hex digits: the version's artefact.
    sha256: String,
}

enum Engine {
    Trees(TreeEnsemble),
    #[cfg(feature = "tract")]
    Tract(general::TractPlan),
}

impl fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("OnnxModel");
        d.field("path", &self.path)
            .field("sha256", &self.sha256)
            .field("n_features", &self.n_features)
            .field("kind", &self.kind);
        match &self.engine {
            Engine::Trees(t) => d
                .field("engine", &"trees")
                .field("trees", &t.n_trees())
                .field("nodes", &t.n_nodes()),
            #[cfg(feature = "tract")]
            Engine::Tract(plan) => d
                .field("engine", &"tract")
                .field("output", &plan.output_name),
        };
        d.finish_non_exhaustive()
    }
}

/// What a model predicts, detected at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Outputs one probability per class and the class index.
    Classifier { n_classes: usize },
    /// Outputs one value per row.
    Regressor,
}

/// Which engine runs a loaded model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// The compiled tree-ensemble engine ([`trees`]).
    Trees,
    /// tract-onnx.
    Tract,
}

/// Predictions for a batch, one entry per input row, in input order.
#[derive(Debug, Clone, PartialEq)]
pub enum OnnxPrediction {
    Classification {
        /// The predicted class of each row (an index into the model's classes).
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
    /// The model loads but is not a single-input tabular classifier or regressor, or uses
    /// something the tree engine does not support (the message names the node and attribute).
    #[error("unsupported ONNX model {}: {message}", path.display())]
    Unsupported { path: PathBuf, message: String },
    /// A request row does not have the model's number of features.
    #[error("row {row} has {got} features, the model expects {expected}")]
    Shape {
        row: usize,
        expected: usize,
        got: usize,
    },
    /// The engine failed while running, or returned something unexpected.
    #[error("ONNX inference failed: {0}")]
    Run(String),
}

impl OnnxModel {
    /// Loads `path`: a tree ensemble is compiled by the tree engine, anything else goes through
    /// tract (see the module doc). `n_features` comes from the model's declared input shape.
    pub fn load(path: &Path) -> Result<Self, OnnxError> {
        let load_err = |message: String| OnnxError::Load {
            path: path.to_owned(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| load_err(e.to_string()))?;
        let proto = pb::ModelProto::decode(&bytes[..])
            .map_err(|e| load_err(format!("not a valid ONNX file: {e}")))?;
        let sha256 = crate::auth::sha256_hex(&bytes);
        let mut model = match load_trees(path, &proto)? {
            Some(model) => model,
            None => load_general(path)?,
        };
        model.sha256 = sha256;
        Ok(model)
    }

    /// SHA-256 of the file's bytes as loaded (64 lowercase hex digits). tract reads the file
    /// once more to build its plan; a file replaced between the two reads is not detected.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Number of features (columns) each input row must have.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Classifier (with its number of classes) or regressor.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// Which engine runs this model.
    pub fn engine(&self) -> EngineKind {
        match self.engine {
            Engine::Trees(_) => EngineKind::Trees,
            #[cfg(feature = "tract")]
            Engine::Tract(_) => EngineKind::Tract,
        }
    }

    /// The compiled tree ensemble, for a model that runs on the tree engine.
    pub fn tree_ensemble(&self) -> Option<&TreeEnsemble> {
        match &self.engine {
            Engine::Trees(t) => Some(t),
            #[cfg(feature = "tract")]
            Engine::Tract(_) => None,
        }
    }

    /// A load-time estimate of the work per row, in tree-node visits: the sum over trees of
    /// their depth (an upper bound on the nodes one row visits). `None` for tract models, whose
    /// cost is not known before running them. See [`OnnxModel::runs_inline`].
    pub fn node_visits_per_row(&self) -> Option<usize> {
        match &self.engine {
            Engine::Trees(t) => Some(t.depth_sum()),
            #[cfg(feature = "tract")]
            Engine::Tract(_) => None,
        }
    }

    /// Whether a call on `n_rows` rows is cheap enough to run on the async worker itself rather
    /// than through `spawn_blocking`: only tree models, and only when the estimated node visits
    /// (rows x [`node_visits_per_row`](OnnxModel::node_visits_per_row)) stay under
    /// [`INLINE_MAX_NODE_VISITS`]. The threshold and the measurements behind it are in
    /// BENCHMARKS.md ("Where inference runs").
    pub fn runs_inline(&self, n_rows: usize) -> bool {
        self.node_visits_per_row()
            .is_some_and(|v| v.saturating_mul(n_rows) <= INLINE_MAX_NODE_VISITS)
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
        match &self.engine {
            Engine::Trees(trees) => predict_trees(trees, rows),
            #[cfg(feature = "tract")]
            Engine::Tract(plan) => plan.predict(rows, self.n_features, self.kind),
        }
    }
}

/// A graph that is not a tree ensemble: tract's, when this build has it.
#[cfg(feature = "tract")]
fn load_general(path: &Path) -> Result<OnnxModel, OnnxError> {
    let (plan, n_features, kind) = general::load(path)?;
    Ok(OnnxModel {
        engine: Engine::Tract(plan),
        path: path.to_owned(),
        n_features,
        kind,
        sha256: String::new(),
    })
}

/// A graph that is not a tree ensemble, in a build without tract: refused, saying how to get
/// a build that runs it.
#[cfg(not(feature = "tract"))]
fn load_general(path: &Path) -> Result<OnnxModel, OnnxError> {
    Err(OnnxError::Unsupported {
        path: path.to_owned(),
        message: format!(
            "the graph is not a tree ensemble (no {} node), and this switchyard was built \
             without the `tract` feature that runs other ONNX graphs; rebuild with \
             `cargo build --release -p switchyard --features tract`",
            TREE_OPS[..2].join(" or ")
        ),
    })
}

/// Upper bound on the estimated tree-node visits (rows x depth sum) of a call run inline on the
/// async worker (see [`OnnxModel::runs_inline`]). Measured (BENCHMARKS.md, "Where inference
/// runs"): a `spawn_blocking` hand-off costs 21-35 µs on the 2-vCPU bench machine, the engine
/// 6-15 ns per estimated visit (same conditions), so 5,000 visits is 30-75 µs: every call
/// cheaper than a hand-off runs inline, and none holds the worker for more than about two.
pub const INLINE_MAX_NODE_VISITS: usize = 5_000;

fn predict_trees(trees: &TreeEnsemble, rows: &[Vec<f32>]) -> Result<OnnxPrediction, OnnxError> {
    let k = trees.n_outputs();
    let mut out = vec![0.0f32; rows.len() * k];
    match trees.kind() {
        EnsembleKind::Classifier { .. } => {
            let mut labels = vec![0usize; rows.len()];
            trees
                .predict(rows, &mut out, &mut labels)
                .map_err(OnnxError::Run)?;
            Ok(OnnxPrediction::Classification {
                class_index: labels,
                probabilities: out.chunks(k).map(<[f32]>::to_vec).collect(),
            })
        }
        EnsembleKind::Regressor => {
            trees
                .predict(rows, &mut out, &mut [])
                .map_err(OnnxError::Run)?;
            Ok(OnnxPrediction::Regression { values: out })
        }
    }
}

/// Operators allowed after a tree ensemble: they only rename, convert or re-package its
/// outputs (skl2onnx and onnxmltools add them), so the ensemble's own outputs are the answer.
/// onnxmltools' LightGBM converter also multiplies the probabilities by a constant 1
/// ([`is_all_ones`]).
const PASS_THROUGH_OPS: [&str; 3] = ["Identity", "Cast", "ZipMap"];
const TREE_OPS: [&str; 3] = [
    "TreeEnsembleClassifier",
    "TreeEnsembleRegressor",
    "TreeEnsemble",
];

/// The tree engine's model for `proto` if its graph is a tree ensemble (`Ok(None)` if it has
/// no tree ensemble at all: tract's turn).
fn load_trees(path: &Path, proto: &pb::ModelProto) -> Result<Option<OnnxModel>, OnnxError> {
    let unsupported = |message: String| OnnxError::Unsupported {
        path: path.to_owned(),
        message,
    };
    let Some(graph) = proto.graph.as_ref() else {
        return Err(OnnxError::Load {
            path: path.to_owned(),
            message: "the file has no graph".to_owned(),
        });
    };
    let is_tree = |n: &NodeProto| TREE_OPS.contains(&n.op_type.as_str());
    let tree_nodes: Vec<&NodeProto> = graph.node.iter().filter(|n| is_tree(n)).collect();
    let tree = match tree_nodes.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        many => {
            return Err(unsupported(format!(
                "{} tree-ensemble nodes ({}); the tree engine runs graphs with exactly one",
                many.len(),
                many.iter()
                    .map(|n| format!("{:?}", n.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    if tree.op_type == "TreeEnsemble" {
        return Err(unsupported(format!(
            "node {:?} is an ai.onnx.ml opset 5 TreeEnsemble, which is not supported; export \
             with ai.onnx.ml opset 3 or lower (TreeEnsembleClassifier / TreeEnsembleRegressor)",
            tree.name
        )));
    }
    let passes_through = |n: &NodeProto| {
        PASS_THROUGH_OPS.contains(&n.op_type.as_str())
            || (n.op_type == "Mul"
                && n.input.iter().any(|i| {
                    graph
                        .initializer
                        .iter()
                        .any(|t| &t.name == i && is_all_ones(t))
                }))
    };
    if let Some(other) = graph
        .node
        .iter()
        .find(|n| !is_tree(n) && !passes_through(n))
    {
        return Err(unsupported(format!(
            "node {:?} ({}) sits next to tree ensemble {:?}; only Identity, Cast, ZipMap (and a \
             multiplication by one) may follow a tree ensemble, and nothing may precede it",
            other.name, other.op_type, tree.name
        )));
    }

    let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(&i.name.as_str()))
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(unsupported(format!(
            "expected 1 input, found {}",
            inputs.len()
        )));
    };
    if tree.input.first() != Some(&input.name) || tree.input.len() != 1 {
        return Err(unsupported(format!(
            "tree ensemble {:?} must read the graph input {:?} directly, it reads {:?}",
            tree.name, input.name, tree.input
        )));
    }
    let n_features = declared_input_width(input).map_err(unsupported)?;

    let raw = raw_ensemble(tree).map_err(unsupported)?;
    let trees = TreeEnsemble::compile(&raw, n_features).map_err(|e| unsupported(e.to_string()))?;
    let kind = match trees.kind() {
        EnsembleKind::Classifier { n_classes } => ModelKind::Classifier { n_classes },
        EnsembleKind::Regressor => ModelKind::Regressor,
    };
    tracing::debug!(
        path = %path.display(),
        n_features,
        ?kind,
        trees = trees.n_trees(),
        nodes = trees.n_nodes(),
        "loaded ONNX tree ensemble"
    );
    Ok(Some(OnnxModel {
        engine: Engine::Trees(trees),
        path: path.to_owned(),
        n_features,
        kind,
        sha256: String::new(),
    }))
}

/// Whether an initializer is a float32 tensor of ones.
fn is_all_ones(t: &pb::TensorProto) -> bool {
    const FLOAT: i32 = 1;
    if t.data_type != FLOAT {
        return false;
    }
    if !t.float_data.is_empty() {
        return t.float_data.iter().all(|v| *v == 1.0);
    }
    !t.raw_data.is_empty()
        && t.raw_data.len().is_multiple_of(4)
        && t.raw_data
            .chunks_exact(4)
            .all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) == 1.0)
}

/// `n_features` from a graph input declared as float32 `[batch, n_features]`.
fn declared_input_width(input: &pb::ValueInfoProto) -> Result<usize, String> {
    use pb::tensor_shape_proto::dimension::Value as Dim;
    use pb::type_proto::Value as Type;
    const FLOAT: i32 = 1;
    let Some(Type::TensorType(tensor)) = input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(format!("input {:?} is not a tensor", input.name));
    };
    if tensor.elem_type != FLOAT {
        return Err(format!(
            "input {:?} must be float32, the model declares element type {}",
            input.name, tensor.elem_type
        ));
    }
    let dims = tensor
        .shape
        .as_ref()
        .map(|s| s.dim.as_slice())
        .unwrap_or(&[]);
    if dims.len() != 2 {
        return Err(format!(
            "input {:?} must be declared as [batch, n_features] (rank 2), the model declares \
             rank {}",
            input.name,
            dims.len()
        ));
    }
    match dims.get(1).and_then(|d| d.value.as_ref()) {
        Some(Dim::DimValue(n)) if *n > 0 => usize::try_from(*n).map_err(|e| e.to_string()),
        other => Err(format!(
            "the number of features (input dimension 1) must be fixed, the model declares \
             {other:?}"
        )),
    }
}

/// Reads a tree-ensemble node's attributes. Unknown attributes and the double-precision
/// `*_as_tensor` variants are refused, by name.
fn raw_ensemble(node: &NodeProto) -> Result<RawEnsemble, String> {
    let op = match node.op_type.as_str() {
        "TreeEnsembleClassifier" => EnsembleOp::Classifier,
        _ => EnsembleOp::Regressor,
    };
    let mut raw = RawEnsemble::new(node.name.clone(), op);
    let refuse = |a: &AttributeProto, why: &str| {
        format!(
            "{} node {:?}, attribute {}: {why}",
            node.op_type, node.name, a.name
        )
    };
    let ints = |a: &AttributeProto| -> Result<Vec<i64>, String> {
        match AttributeType::try_from(a.r#type) {
            Ok(AttributeType::Ints) => Ok(a.ints.clone()),
            _ => Err(refuse(a, "expected a list of integers")),
        }
    };
    let floats = |a: &AttributeProto| -> Result<Vec<f32>, String> {
        match AttributeType::try_from(a.r#type) {
            Ok(AttributeType::Floats) => Ok(a.floats.clone()),
            _ => Err(refuse(a, "expected a list of floats")),
        }
    };
    let strings = |a: &AttributeProto| -> Result<Vec<String>, String> {
        match AttributeType::try_from(a.r#type) {
            Ok(AttributeType::Strings) => Ok(a
                .strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()),
            _ => Err(refuse(a, "expected a list of strings")),
        }
    };
    let string = |a: &AttributeProto| -> Result<String, String> {
        match AttributeType::try_from(a.r#type) {
            Ok(AttributeType::String) => Ok(String::from_utf8_lossy(&a.s).into_owned()),
            _ => Err(refuse(a, "expected a string")),
        }
    };
    let classifier = op == EnsembleOp::Classifier;
    for a in &node.attribute {
        match (a.name.as_str(), classifier) {
            ("nodes_treeids", _) => raw.nodes_treeids = ints(a)?,
            ("nodes_nodeids", _) => raw.nodes_nodeids = ints(a)?,
            ("nodes_featureids", _) => raw.nodes_featureids = ints(a)?,
            ("nodes_values", _) => raw.nodes_values = floats(a)?,
            ("nodes_modes", _) => raw.nodes_modes = strings(a)?,
            ("nodes_truenodeids", _) => raw.nodes_truenodeids = ints(a)?,
            ("nodes_falsenodeids", _) => raw.nodes_falsenodeids = ints(a)?,
            ("nodes_missing_value_tracks_true", _) => {
                raw.nodes_missing_value_tracks_true = ints(a)?
            }
            // Not used for inference (onnxruntime ignores them too).
            ("nodes_hitrates", _) => {}
            ("post_transform", _) => raw.post_transform = Some(string(a)?),
            ("base_values", _) => raw.base_values = floats(a)?,
            ("class_treeids", true) | ("target_treeids", false) => raw.leaf_treeids = ints(a)?,
            ("class_nodeids", true) | ("target_nodeids", false) => raw.leaf_nodeids = ints(a)?,
            ("class_ids", true) | ("target_ids", false) => raw.leaf_ids = ints(a)?,
            ("class_weights", true) | ("target_weights", false) => raw.leaf_weights = floats(a)?,
            ("classlabels_int64s", true) => raw.n_classes = Some(ints(a)?.len()),
            ("classlabels_strings", true) => raw.n_classes = Some(strings(a)?.len()),
            ("n_targets", false) => match AttributeType::try_from(a.r#type) {
                Ok(AttributeType::Int) => raw.n_targets = Some(a.i),
                _ => return Err(refuse(a, "expected an integer")),
            },
            ("aggregate_function", _) => raw.aggregate_function = Some(string(a)?),
            (name, _) if name.ends_with("_as_tensor") => {
                return Err(refuse(
                    a,
                    "double-precision tensors are not supported (the engine computes in float32)",
                ))
            }
            _ => return Err(refuse(a, "unknown attribute")),
        }
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<OnnxModel>();
        assert_send_sync::<std::sync::Arc<OnnxModel>>();
    }

    /// A build without tract (`cargo test -p switchyard-server --no-default-features --lib`,
    /// run by `.ci/run`) still runs every tree model, and refuses a graph that is not a tree
    /// ensemble at load, naming the file and the feature.
    #[cfg(not(feature = "tract"))]
    #[test]
    fn without_tract_trees_load_and_other_graphs_are_refused_naming_the_feature() {
        let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let trees = OnnxModel::load(&models.join("yield_v2.onnx")).expect("a tree model loads");
        assert_eq!(trees.engine(), EngineKind::Trees);
        let err = OnnxModel::load(&models.join("yield_logreg.onnx")).expect_err("not a tree");
        let text = err.to_string();
        assert!(matches!(err, OnnxError::Unsupported { .. }), "{err:?}");
        for needle in [
            "yield_logreg.onnx",
            "not a tree ensemble",
            "--features tract",
        ] {
            assert!(text.contains(needle), "{needle:?} not in: {text}");
        }
    }
}
