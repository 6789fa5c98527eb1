//! Graphs that are not tree ensembles (e.g. a scaler + logistic regression pipeline), run by
//! `tract-onnx` (the `tract` feature): the input is pinned to `float32 [N, n_features]` with a
//! symbolic batch dimension `N`, the graph is optimized once and the runnable plan kept. See
//! the parent module's doc for how the model's kind is read from its outputs.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;

use super::{ModelKind, OnnxError, OnnxPrediction, TREE_OPS};

/// A runnable tract plan and the output its predictions are read from.
pub(super) struct TractPlan {
    plan: Arc<TypedRunnableModel>,
    /// Name of the graph output the predictions are read from.
    pub(super) output_name: String,
}

/// The tract path: parse, pin the input to `float32 [N, n_features]`, optimize, keep the plan.
pub(super) fn load(path: &Path) -> Result<(TractPlan, usize, ModelKind), OnnxError> {
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
        "loaded ONNX model through tract"
    );
    Ok((TractPlan { plan, output_name }, n_features, kind))
}

impl TractPlan {
    pub(super) fn predict(
        &self,
        rows: &[Vec<f32>],
        n_features: usize,
        kind: ModelKind,
    ) -> Result<OnnxPrediction, OnnxError> {
        let n = rows.len();
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let input = Tensor::from_shape(&[n, n_features], &flat)
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

        match kind {
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

/// tract's ONNX framework, with the tree-ensemble operators taken away: trees run on the
/// compiled engine only (`load_trees` refuses graphs it cannot take whole), so a tree that
/// reached tract would be a bug, reported as such rather than run slowly with a wrong label.
fn framework() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    for op in TREE_OPS {
        onnx.op_register.insert(op, refuse_tree_op);
    }
    onnx
}

fn refuse_tree_op(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    bail!(
        "{} node {:?}: tree ensembles run on switchyard's tree engine, not through tract",
        node.op_type,
        node.name
    )
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_first_maximum_and_skips_nan() {
        assert_eq!(argmax(&[0.5, 0.5]), 0);
        assert_eq!(argmax(&[0.2, 0.8]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.1]), 1);
        assert_eq!(argmax(&[0.3, f32::NAN, 0.7]), 2);
        assert_eq!(argmax(&[0.1, 0.6, 0.3]), 1);
    }
}
