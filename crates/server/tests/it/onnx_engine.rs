#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every shipped model, every fixture row: switchyard's answer must equal onnxruntime's (saved
//! in the fixture by `tools/make_models.py`) and the training library's (scikit-learn,
//! LightGBM or XGBoost): labels exactly, probabilities within 1e-5. Tree ensembles must run on
//! the compiled tree engine, everything else on tract. Bad models fail at load, naming the
//! file, the node and the attribute.

use crate::support::fixtures::{fixtures, models_dir};
use prost::Message;
use switchyard_server::onnx::proto as pb;
use switchyard_server::onnx::{EngineKind, ModelKind, OnnxError, OnnxModel, OnnxPrediction};

const PROB_TOLERANCE: f64 = 1e-5;
/// Regressors: relative to max(|value|, 1). onnxruntime sums in f32 in the same order as the
/// engine; the libraries sum in f64.
const ORT_REL_TOLERANCE: f64 = 1e-6;
const LIBRARY_REL_TOLERANCE: f64 = 1e-4;

/// Models that are not tree ensembles (they run through tract).
const TRACT_MODELS: [&str; 1] = ["yield_logreg"];

#[test]
fn the_shipped_models_are_all_there() {
    let names: Vec<String> = fixtures().into_iter().map(|(n, _)| n).collect();
    for expected in [
        "bin_v1",
        "bin_v2",
        "testtime_v1",
        "testtime_v2",
        "yield_et",
        "yield_hgb",
        "yield_lgbm",
        "yield_logreg",
        "yield_v1",
        "yield_v2",
        "yield_v3",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    // Every .onnx file in models/ has a fixture.
    for entry in std::fs::read_dir(models_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "onnx") {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(names.contains(&stem), "{} has no fixture", path.display());
        }
    }
}

#[test]
fn every_row_of_every_model_matches_onnxruntime_and_the_library() {
    for (name, fixture) in fixtures() {
        let model =
            OnnxModel::load(&models_dir().join(&fixture.model)).unwrap_or_else(|e| panic!("{e}"));
        let expected_engine = if TRACT_MODELS.contains(&name.as_str()) {
            EngineKind::Tract
        } else {
            EngineKind::Trees
        };
        assert_eq!(model.engine(), expected_engine, "{name}");
        let prediction = model.predict(&fixture.inputs).unwrap();
        match (fixture.kind.as_str(), &prediction) {
            (
                "classifier",
                OnnxPrediction::Classification {
                    class_index,
                    probabilities,
                },
            ) => {
                let classes = fixture.sklearn.classes.as_ref().unwrap();
                assert_eq!(
                    model.kind(),
                    ModelKind::Classifier {
                        n_classes: classes.len()
                    },
                    "{name}"
                );
                let lib_proba = fixture.sklearn.probabilities.as_ref().unwrap();
                let ort_label = fixture.onnxruntime.label.as_ref().unwrap();
                let ort_proba = fixture.onnxruntime.probabilities.as_ref().unwrap();
                assert_eq!(class_index.len(), fixture.inputs.len(), "{name}");
                for (row, (class, proba)) in class_index.iter().zip(probabilities).enumerate() {
                    let label = classes[*class];
                    assert_eq!(
                        label, ort_label[row],
                        "{name} row {row}: label {label}, onnxruntime {} ({proba:?} vs {:?})",
                        ort_label[row], ort_proba[row]
                    );
                    assert_eq!(
                        label as f64, fixture.sklearn.predictions[row],
                        "{name} row {row}: label {label}, library {} ({proba:?} vs {:?})",
                        fixture.sklearn.predictions[row], lib_proba[row]
                    );
                    for (who, expected) in [
                        ("onnxruntime", &ort_proba[row]),
                        ("library", &lib_proba[row]),
                    ] {
                        assert_eq!(proba.len(), expected.len(), "{name} row {row}");
                        for (p, q) in proba.iter().zip(expected) {
                            assert!(
                                (f64::from(*p) - q).abs() <= PROB_TOLERANCE,
                                "{name} row {row}: {proba:?} vs {who} {expected:?}"
                            );
                        }
                    }
                }
            }
            ("regressor", OnnxPrediction::Regression { values }) => {
                assert_eq!(model.kind(), ModelKind::Regressor, "{name}");
                let ort = fixture.onnxruntime.predictions.as_ref().unwrap();
                assert_eq!(values.len(), fixture.inputs.len(), "{name}");
                for (row, v) in values.iter().enumerate() {
                    for (who, expected, tolerance) in [
                        ("onnxruntime", ort[row], ORT_REL_TOLERANCE),
                        (
                            "library",
                            fixture.sklearn.predictions[row],
                            LIBRARY_REL_TOLERANCE,
                        ),
                    ] {
                        let rel = (f64::from(*v) - expected).abs() / expected.abs().max(1.0);
                        assert!(
                            rel <= tolerance,
                            "{name} row {row}: {v} vs {who} {expected} (relative {rel:e})"
                        );
                    }
                }
            }
            (kind, other) => panic!("{name}: fixture says {kind}, got {other:?}"),
        }
    }
}

#[test]
fn batches_of_every_size_equal_one_row_at_a_time() {
    // Across the engine's chunk boundary (128 rows) too.
    for (name, fixture) in fixtures() {
        let model = OnnxModel::load(&models_dir().join(&fixture.model)).unwrap();
        let singles: Vec<OnnxPrediction> = fixture
            .inputs
            .iter()
            .map(|r| model.predict(std::slice::from_ref(r)).unwrap())
            .collect();
        for (start, end) in [(0, 200), (3, 131), (127, 129), (0, 128), (199, 200)] {
            let batch = model.predict(&fixture.inputs[start..end]).unwrap();
            for (i, single) in singles[start..end].iter().enumerate() {
                let same = match (single, &batch) {
                    (
                        OnnxPrediction::Classification {
                            class_index: c1,
                            probabilities: p1,
                        },
                        OnnxPrediction::Classification {
                            class_index: c,
                            probabilities: p,
                        },
                    ) => c1[..] == c[i..=i] && p1[..] == p[i..=i],
                    (
                        OnnxPrediction::Regression { values: v1 },
                        OnnxPrediction::Regression { values: v },
                    ) => v1[..] == v[i..=i],
                    _ => false,
                };
                assert!(same, "{name} row {}: {single:?} alone", start + i);
            }
        }
    }
}

// ---- Bad models -------------------------------------------------------------------------------

fn read_proto(name: &str) -> pb::ModelProto {
    let bytes = std::fs::read(models_dir().join(name)).unwrap();
    pb::ModelProto::decode(&bytes[..]).unwrap()
}

/// Writes `proto` to a temporary file and loads it; returns the error text.
fn load_error(dir: &tempfile::TempDir, file: &str, proto: &pb::ModelProto) -> String {
    let path = dir.path().join(file);
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    let err = OnnxModel::load(&path).expect_err("the model must not load");
    let text = err.to_string();
    assert!(text.contains(file), "error does not name the file: {text}");
    text
}

fn tree_node(proto: &mut pb::ModelProto) -> &mut pb::NodeProto {
    proto
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type.starts_with("TreeEnsemble"))
        .unwrap()
}

fn attribute<'a>(node: &'a mut pb::NodeProto, name: &str) -> &'a mut pb::AttributeProto {
    node.attribute.iter_mut().find(|a| a.name == name).unwrap()
}

fn assert_contains(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "expected {needle:?} in: {text}");
    }
}

#[test]
fn truncated_and_garbage_files_fail_at_load() {
    let dir = tempfile::tempdir().unwrap();
    for model in ["yield_v1.onnx", "bin_v1.onnx", "testtime_v2.onnx"] {
        let bytes = std::fs::read(models_dir().join(model)).unwrap();
        for cut in [bytes.len() / 2, bytes.len() - 3, 10] {
            let path = dir.path().join(format!("cut_{cut}_{model}"));
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let err = OnnxModel::load(&path).unwrap_err();
            assert!(matches!(err, OnnxError::Load { .. }), "{err:?}");
            assert_contains(&err.to_string(), &[&format!("cut_{cut}_{model}")]);
        }
    }
}

#[test]
fn unsupported_contents_of_an_ensemble_fail_at_load_naming_node_and_attribute() {
    let dir = tempfile::tempdir().unwrap();
    let node_name = {
        let mut p = read_proto("yield_v1.onnx");
        tree_node(&mut p).name.clone()
    };

    // An unknown node mode.
    let mut p = read_proto("yield_v1.onnx");
    attribute(tree_node(&mut p), "nodes_modes").strings[0] = b"BRANCH_MAYBE".to_vec();
    let text = load_error(&dir, "mode.onnx", &p);
    assert_contains(&text, &[&node_name, "nodes_modes", "BRANCH_MAYBE"]);

    // An unknown post_transform.
    let mut p = read_proto("yield_v2.onnx");
    attribute(tree_node(&mut p), "post_transform").s = b"SQUASH".to_vec();
    let text = load_error(&dir, "post.onnx", &p);
    assert_contains(&text, &["post_transform", "SQUASH"]);

    // Double-precision thresholds.
    let mut p = read_proto("yield_v1.onnx");
    tree_node(&mut p).attribute.push(pb::AttributeProto {
        name: "nodes_values_as_tensor".into(),
        r#type: pb::AttributeType::Tensor as i32,
        ..Default::default()
    });
    let text = load_error(&dir, "as_tensor.onnx", &p);
    assert_contains(&text, &[&node_name, "nodes_values_as_tensor"]);

    // A branch reading past the input.
    let mut p = read_proto("yield_v1.onnx");
    attribute(tree_node(&mut p), "nodes_featureids").ints[0] = 8;
    let text = load_error(&dir, "feature.onnx", &p);
    assert_contains(&text, &["nodes_featureids", "feature 8"]);

    // A cycle: the root's first child points back at the root.
    let mut p = read_proto("yield_v1.onnx");
    let node = tree_node(&mut p);
    let first_child = attribute(node, "nodes_truenodeids").ints[0] as usize;
    attribute(node, "nodes_truenodeids").ints[first_child] = 0;
    let text = load_error(&dir, "cycle.onnx", &p);
    assert_contains(&text, &["reached twice"]);

    // A leaf pointing to a class the model does not have.
    let mut p = read_proto("bin_v1.onnx");
    attribute(tree_node(&mut p), "class_ids").ints[0] = 9;
    let text = load_error(&dir, "class.onnx", &p);
    assert_contains(&text, &["class_ids", "output 9"]);

    // The opset-5 TreeEnsemble operator.
    let mut p = read_proto("yield_v1.onnx");
    tree_node(&mut p).op_type = "TreeEnsemble".into();
    let text = load_error(&dir, "opset5.onnx", &p);
    assert_contains(&text, &["TreeEnsemble", "opset"]);
}

#[test]
fn other_operators_around_an_ensemble_fail_at_load() {
    let dir = tempfile::tempdir().unwrap();
    // A Softmax on the probabilities.
    let mut p = read_proto("bin_v1.onnx");
    let graph = p.graph.as_mut().unwrap();
    let out = graph
        .output
        .iter_mut()
        .find(|o| o.name == "probabilities")
        .unwrap();
    out.name = "softmaxed".into();
    graph.node.push(pb::NodeProto {
        name: "extra_softmax".into(),
        op_type: "Softmax".into(),
        input: vec!["probabilities".into()],
        output: vec!["softmaxed".into()],
        ..Default::default()
    });
    let text = load_error(&dir, "softmax.onnx", &p);
    assert_contains(&text, &["extra_softmax", "Softmax"]);

    // A Mul by something other than one.
    let mut p = read_proto("yield_lgbm.onnx");
    let graph = p.graph.as_mut().unwrap();
    let one = graph.initializer.iter_mut().find(|t| t.name == "one");
    if let Some(one) = one {
        one.float_data = vec![2.0];
        one.raw_data.clear();
        let text = load_error(&dir, "mul.onnx", &p);
        assert_contains(&text, &["Mul"]);
    } else {
        panic!("yield_lgbm.onnx no longer multiplies by an initializer named one");
    }
}

#[test]
fn wrong_input_rank_fails_at_load() {
    let dir = tempfile::tempdir().unwrap();
    for model in ["yield_v2.onnx", "yield_logreg.onnx"] {
        let mut p = read_proto(model);
        let input = &mut p.graph.as_mut().unwrap().input[0];
        let Some(pb::type_proto::Value::TensorType(t)) =
            input.r#type.as_mut().and_then(|t| t.value.as_mut())
        else {
            panic!("input is not a tensor");
        };
        let dims = &mut t.shape.as_mut().unwrap().dim;
        dims.push(dims[1].clone());
        let text = load_error(&dir, &format!("rank3_{model}"), &p);
        assert!(
            text.contains("rank") || text.contains("[batch, n_features]"),
            "{text}"
        );
    }
}

#[test]
fn non_tree_models_still_load_through_tract() {
    let model = OnnxModel::load(&models_dir().join("yield_logreg.onnx")).unwrap();
    assert_eq!(model.engine(), EngineKind::Tract);
    assert_eq!(model.kind(), ModelKind::Classifier { n_classes: 2 });
    assert_eq!(model.node_visits_per_row(), None);
    assert!(
        !model.runs_inline(1),
        "tract models always go to spawn_blocking"
    );
}

#[test]
fn the_inline_rule_follows_the_estimated_cost() {
    let small = OnnxModel::load(&models_dir().join("testtime_v1.onnx")).unwrap();
    let visits = small.node_visits_per_row().unwrap();
    assert!(visits > 0);
    assert!(small.runs_inline(1));
    let limit = switchyard_server::onnx::INLINE_MAX_NODE_VISITS;
    assert!(small.runs_inline(limit / visits));
    assert!(!small.runs_inline(limit / visits + 1));
}
