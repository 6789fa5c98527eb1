#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The tract backend must give scikit-learn's answers for the committed demo models.
//!
//! `models/fixtures/<model>.json` (written by `tools/make_models.py`) holds 200 held-out rows
//! with scikit-learn's own `predict` / `predict_proba` outputs; every model in that directory is
//! loaded from `models/<model>.onnx` and compared row by row.

use crate::support::fixtures::{fixtures, models_dir, Fixture};
use switchyard_server::onnx::{ModelKind, OnnxError, OnnxModel, OnnxPrediction};

const PROB_TOLERANCE: f32 = 1e-5;
const REGRESSION_REL_TOLERANCE: f64 = 1e-3;

fn load(fixture: &Fixture) -> OnnxModel {
    let path = models_dir().join(&fixture.model);
    OnnxModel::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// Compares one prediction (for `rows`, starting at fixture row `offset`) with scikit-learn.
fn check_against_sklearn(
    name: &str,
    fixture: &Fixture,
    offset: usize,
    prediction: &OnnxPrediction,
) {
    match prediction {
        OnnxPrediction::Classification {
            class_index,
            probabilities,
        } => {
            let classes = fixture.sklearn.classes.as_ref().expect("classes");
            let expected_proba = fixture
                .sklearn
                .probabilities
                .as_ref()
                .expect("probabilities");
            for (i, (class, proba)) in class_index.iter().zip(probabilities).enumerate() {
                let row = offset + i;
                let expected_class = fixture.sklearn.predictions[row] as i64;
                assert_eq!(
                    classes[*class], expected_class,
                    "{name} row {row}: class {} (probabilities {proba:?}) but sklearn predicts \
                     {expected_class} (probabilities {:?})",
                    classes[*class], expected_proba[row]
                );
                assert_eq!(proba.len(), expected_proba[row].len(), "{name} row {row}");
                for (p, q) in proba.iter().zip(&expected_proba[row]) {
                    assert!(
                        (f64::from(*p) - q).abs() <= f64::from(PROB_TOLERANCE),
                        "{name} row {row}: probabilities {proba:?} vs sklearn {:?}",
                        expected_proba[row]
                    );
                }
            }
        }
        OnnxPrediction::Regression { values } => {
            for (i, v) in values.iter().enumerate() {
                let row = offset + i;
                let expected = fixture.sklearn.predictions[row];
                let rel = (f64::from(*v) - expected).abs() / expected.abs().max(1.0);
                assert!(
                    rel <= REGRESSION_REL_TOLERANCE,
                    "{name} row {row}: {v} vs sklearn {expected} (relative error {rel:e})"
                );
            }
        }
    }
}

fn len(prediction: &OnnxPrediction) -> usize {
    match prediction {
        OnnxPrediction::Classification {
            class_index,
            probabilities,
        } => {
            assert_eq!(class_index.len(), probabilities.len());
            class_index.len()
        }
        OnnxPrediction::Regression { values } => values.len(),
    }
}

#[test]
fn every_model_matches_sklearn_on_every_row() {
    for (name, fixture) in fixtures() {
        let model = load(&fixture);
        assert_eq!(model.n_features(), fixture.features.len(), "{name}");
        match (fixture.kind.as_str(), model.kind()) {
            ("classifier", ModelKind::Classifier { n_classes }) => {
                assert_eq!(n_classes, fixture.sklearn.classes.as_ref().unwrap().len());
            }
            ("regressor", ModelKind::Regressor) => {}
            (expected, got) => panic!("{name}: fixture says {expected}, model is {got:?}"),
        }
        let prediction = model.predict(&fixture.inputs).unwrap();
        assert_eq!(len(&prediction), fixture.inputs.len(), "{name}");
        check_against_sklearn(&name, &fixture, 0, &prediction);
    }
}

#[test]
fn one_row_at_a_time_equals_the_whole_batch() {
    for (name, fixture) in fixtures() {
        let model = load(&fixture);
        let batch = model.predict(&fixture.inputs).unwrap();
        for (row, input) in fixture.inputs.iter().enumerate() {
            let single = model.predict(std::slice::from_ref(input)).unwrap();
            let same = match (&single, &batch) {
                (
                    OnnxPrediction::Classification {
                        class_index: c1,
                        probabilities: p1,
                    },
                    OnnxPrediction::Classification {
                        class_index: c,
                        probabilities: p,
                    },
                ) => c1 == &c[row..=row] && p1 == &p[row..=row],
                (
                    OnnxPrediction::Regression { values: v1 },
                    OnnxPrediction::Regression { values: v },
                ) => v1 == &v[row..=row],
                _ => false,
            };
            assert!(
                same,
                "{name} row {row}: alone {single:?}, in the batch {batch:?}"
            );
        }
        // An uneven sub-batch too.
        let sub = model.predict(&fixture.inputs[17..50]).unwrap();
        assert_eq!(len(&sub), 33);
        check_against_sklearn(&name, &fixture, 17, &sub);
    }
}

#[test]
fn empty_batch_gives_empty_prediction() {
    for (name, fixture) in fixtures() {
        let model = load(&fixture);
        let prediction = model.predict(&[]).unwrap();
        assert_eq!(len(&prediction), 0, "{name}");
    }
}

#[test]
fn wrong_width_row_is_rejected() {
    for (name, fixture) in fixtures() {
        let model = load(&fixture);
        let mut rows = fixture.inputs[..3].to_vec();
        rows[1].pop();
        let err = model.predict(&rows).unwrap_err();
        assert!(
            matches!(
                err,
                OnnxError::Shape {
                    row: 1,
                    expected: 8,
                    got: 7
                }
            ),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains("row 1 has 7 features"), "{err}");

        let mut wide = fixture.inputs[..1].to_vec();
        wide[0].push(0.0);
        assert!(matches!(
            model.predict(&wide),
            Err(OnnxError::Shape { got: 9, .. })
        ));
    }
}

#[test]
fn missing_file_is_a_load_error() {
    let path = models_dir().join("does_not_exist.onnx");
    let err = OnnxModel::load(&path).unwrap_err();
    assert!(matches!(err, OnnxError::Load { .. }), "{err:?}");
    assert!(err.to_string().contains("does_not_exist.onnx"), "{err}");
}

#[test]
fn corrupt_file_is_a_load_error() {
    let dir = tempfile::tempdir().unwrap();

    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"this is not a protobuf \xff\xfe\x00\x01 at all").unwrap();
    let err = OnnxModel::load(&garbage).unwrap_err();
    assert!(matches!(err, OnnxError::Load { .. }), "{err:?}");

    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    assert!(OnnxModel::load(&empty).is_err());

    // A real model cut in half.
    let bytes = std::fs::read(models_dir().join("yield_v2.onnx")).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = OnnxModel::load(&truncated).unwrap_err();
    assert!(matches!(err, OnnxError::Load { .. }), "{err:?}");
}

#[test]
fn models_can_be_shared_across_threads() {
    let (name, fixture) = fixtures()
        .into_iter()
        .find(|(n, _)| n == "yield_v2")
        .unwrap();
    let model = std::sync::Arc::new(load(&fixture));
    let expected = model.predict(&fixture.inputs).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let model = model.clone();
            let inputs = fixture.inputs.clone();
            std::thread::spawn(move || model.predict(&inputs).unwrap())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), expected, "{name}");
    }
}
