//! The shipped models' fixtures (`models/fixtures/<model>.json`, written by
//! `tools/make_models.py`): held-out rows with the training library's outputs and
//! onnxruntime's.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Fixture {
    /// The model file, in `models/`.
    pub model: String,
    /// `classifier` or `regressor`.
    pub kind: String,
    pub features: Vec<String>,
    pub inputs: Vec<Vec<f32>>,
    /// scikit-learn's (or LightGBM's, XGBoost's) own outputs.
    pub sklearn: Library,
    pub onnxruntime: Ort,
}

#[derive(Debug, Deserialize)]
pub struct Library {
    pub predictions: Vec<f64>,
    #[serde(default)]
    pub probabilities: Option<Vec<Vec<f64>>>,
    #[serde(default)]
    pub classes: Option<Vec<i64>>,
}

#[derive(Debug, Deserialize)]
pub struct Ort {
    #[serde(default)]
    pub label: Option<Vec<i64>>,
    #[serde(default)]
    pub probabilities: Option<Vec<Vec<f64>>>,
    #[serde(default)]
    pub predictions: Option<Vec<f64>>,
}

pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

/// (fixture name, fixture) for every file in `models/fixtures`, sorted by name.
pub fn fixtures() -> Vec<(String, Fixture)> {
    let dir = models_dir().join("fixtures");
    let mut out: Vec<(String, Fixture)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let fixture: Fixture = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("parsing {}: {e}", p.display()));
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                fixture,
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 5,
        "expected at least the 5 demo fixtures in {}, found {}",
        dir.display(),
        out.len()
    );
    out
}
