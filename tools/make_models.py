#!/usr/bin/env python3
"""Generate the demo models, their fixtures and a validation set for switchyard.

Run from the repository root:

    pip install -r tools/requirements-models.txt
    python3 tools/make_models.py

Everything is deterministic (numpy ``default_rng`` seeded with SEED below; every
estimator gets a fixed ``random_state``), so re-running the script rewrites the
same files. Nothing in the Rust build needs Python: the outputs are committed.

Outputs (all under ``models/``)
-------------------------------
yield_v1.onnx      RandomForestClassifier, deliberately weak (10 trees of depth 6).
yield_v2.onnx      GradientBoostingClassifier, the best classifier.
yield_v3.onnx      RandomForestClassifier trained on partly corrupted labels (a
                   "regressed" retrain: labels of hot-tester records, temp > 78 C,
                   were inverted), clearly worse than v1 and v2 on clean data.
testtime_v1.onnx   RandomForestRegressor, shallow (higher MAE).
testtime_v2.onnx   GradientBoostingRegressor (lower MAE).
yield_et.onnx      ExtraTreesClassifier (binary).
yield_hgb.onnx     HistGradientBoostingClassifier (binary; writes missing-value tracking).
yield_lgbm.onnx    LightGBM LGBMClassifier (binary), exported with onnxmltools.
yield_logreg.onnx  StandardScaler + LogisticRegression pipeline (not a tree ensemble: runs
                   through tract).
bin_v1.onnx        GradientBoostingClassifier on the 4 die bins (multiclass, SOFTMAX).
bin_v2.onnx        XGBoost XGBClassifier on the 4 die bins, exported with onnxmltools.
fixtures/<model>.json
                   200 held-out rows with scikit-learn's own ``predict`` (and
                   ``predict_proba`` for classifiers) outputs (for LightGBM / XGBoost:
                   the library's own outputs, under the same key), onnxruntime's
                   outputs for the same rows, the rows' ground truth (``truth``: the
                   label, the die bin or the test time the model was scored
                   against), and held-out metrics; the Rust tests compare switchyard
                   against both and use the truth as feedback.
validation_yield.csv
                   1000 fresh rows (8 features + ``label``) for blue-green
                   validation replay.

Every model takes one input named ``input``: float32 [N, 8] with the features in
FEATURES order. Classifiers are exported with ``zipmap=False``, so their outputs
are ``label`` (int64 [N]) and ``probabilities`` (float32 [N, 2]); regressors output
``variable`` (float32 [N, 1]).

Generative model (port this exactly; the random streams need not match)
-----------------------------------------------------------------------
Each record is drawn independently:

    vdd      ~ Normal(mean=1.0,  sd=0.03)        supply voltage, V
    idd      ~ Normal(mean=50.0, sd=5.0)         supply current, mA
    freq     ~ Normal(mean=2.0,  sd=0.15)        max frequency, GHz
    temp     ~ Uniform(25.0, 85.0)               test temperature, deg C
    die_x    ~ UniformInteger(-10, 10)           inclusive both ends, stored as float
    die_y    ~ UniformInteger(-10, 10)           inclusive both ends, stored as float
    leakage  = exp(Normal(mean=0.0, sd=0.5))     lognormal, uA (median 1.0)
    ring_osc ~ Normal(mean=1000.0, sd=40.0)      ring-oscillator count

Standardized features and die radius:

    z_vdd  = (vdd - 1.0) / 0.03
    z_idd  = (idd - 50.0) / 5.0
    z_freq = (freq - 2.0) / 0.15
    z_temp = (temp - 55.0) / 30.0                (in [-1, 1])
    z_leak = ln(leakage) / 0.5
    z_ro   = (ring_osc - 1000.0) / 40.0
    r      = sqrt(die_x^2 + die_y^2) / 10.0      (0 at the centre, ~1.41 in a corner)

Classification label ``pass`` (binning: 1 = good die):

    score  = 12 + 3*z_vdd - 3*z_idd + 4*z_freq - 2*z_temp - 5*z_leak + 3*z_ro
                - 25 * max(0, r - 0.9)
    p_pass = 1 / (1 + exp(-score))
    pass   = 1 if Uniform(0, 1) < p_pass else 0

This gives a pass rate of about 87% and a Bayes-optimal accuracy of about 97%.

Die bin ``bin`` (4 classes, the multiclass models): 0 for a passing die, else the
failure's dominant cause among

    1 leakage   5 * z_leak
    2 speed     -(4*z_freq + 3*z_ro)
    3 edge      25 * max(0, r - 0.9)

(the largest of the three; first on ties).

Regression target ``test_time_ms``:

    test_time_ms = 120 + 0.4*(temp - 55) + 20*r^2 - 6*z_freq
                       + 8*max(0, z_leak) + Normal(0, 3)

All features are computed in float64 from the draws above, the labels/targets
from those float64 values, and the features are then rounded to float32 (the
models' input type).
"""

from __future__ import annotations

import csv
import json
import os
import sys

import lightgbm
import numpy as np
import onnxmltools
from onnxmltools.convert.common.data_types import FloatTensorType as MltFloatTensorType
import onnxruntime as ort
import sklearn
import xgboost
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, mean_absolute_error
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

SEED = 20260611
FEATURES = ["vdd", "idd", "freq", "temp", "die_x", "die_y", "leakage", "ring_osc"]
N_TRAIN = 20_000
N_TEST = 10_000
N_FIXTURE = 200
N_VALIDATION = 1_000
# Upper bounds for the exported opsets: ONNX 13 (tract is tested on 9..18) and ai.onnx.ml 3
# (ml 5 replaces the TreeEnsemble* operators with one tract does not know). skl2onnx writes
# the lowest version each node needs, which is ai.onnx.ml 1 for these tree ensembles.
# Note: tract-onnx 0.23 has no TreeEnsembleRegressor; switchyard's loader
# (crates/server/src/onnx.rs) registers one.
TARGET_OPSET = {"": 13, "ai.onnx.ml": 3}
MAX_BYTES = 500_000
# v3's training labels are inverted for records above this temperature.
CORRUPT_TEMP_ABOVE = 78.0

OUT_DIR = "models"
FIXTURE_DIR = os.path.join(OUT_DIR, "fixtures")


def generate(
    rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``n`` wafer-test records: (X float32 [n, 8], pass int64 [n], test_time_ms float64 [n],
    bin int64 [n])."""
    vdd = rng.normal(1.0, 0.03, n)
    idd = rng.normal(50.0, 5.0, n)
    freq = rng.normal(2.0, 0.15, n)
    temp = rng.uniform(25.0, 85.0, n)
    die_x = rng.integers(-10, 11, n).astype(np.float64)
    die_y = rng.integers(-10, 11, n).astype(np.float64)
    leakage = np.exp(rng.normal(0.0, 0.5, n))
    ring_osc = rng.normal(1000.0, 40.0, n)

    z_vdd = (vdd - 1.0) / 0.03
    z_idd = (idd - 50.0) / 5.0
    z_freq = (freq - 2.0) / 0.15
    z_temp = (temp - 55.0) / 30.0
    z_leak = np.log(leakage) / 0.5
    z_ro = (ring_osc - 1000.0) / 40.0
    r = np.sqrt(die_x**2 + die_y**2) / 10.0

    score = (
        12.0
        + 3.0 * z_vdd
        - 3.0 * z_idd
        + 4.0 * z_freq
        - 2.0 * z_temp
        - 5.0 * z_leak
        + 3.0 * z_ro
        - 25.0 * np.maximum(0.0, r - 0.9)
    )
    p_pass = 1.0 / (1.0 + np.exp(-score))
    passed = (rng.uniform(0.0, 1.0, n) < p_pass).astype(np.int64)

    test_time_ms = (
        120.0
        + 0.4 * (temp - 55.0)
        + 20.0 * r**2
        - 6.0 * z_freq
        + 8.0 * np.maximum(0.0, z_leak)
        + rng.normal(0.0, 3.0, n)
    )

    causes = np.column_stack(
        [5.0 * z_leak, -(4.0 * z_freq + 3.0 * z_ro), 25.0 * np.maximum(0.0, r - 0.9)]
    )
    bins = np.where(passed == 1, 0, 1 + np.argmax(causes, axis=1)).astype(np.int64)

    X = np.column_stack([vdd, idd, freq, temp, die_x, die_y, leakage, ring_osc]).astype(np.float32)
    return X, passed, test_time_ms, bins


def to_onnx(model, name: str) -> bytes:
    initial_types = [("input", FloatTensorType([None, len(FEATURES)]))]
    # onnxmltools checks for its own FloatTensorType class.
    mlt_types = [("input", MltFloatTensorType([None, len(FEATURES)]))]
    if isinstance(model, lightgbm.LGBMClassifier):
        onx = onnxmltools.convert_lightgbm(
            model, name=name, initial_types=mlt_types, zipmap=False, target_opset=13
        )
        onx.doc_string = f"switchyard demo model {name}; generated by tools/make_models.py"
        return onx.SerializeToString()
    if isinstance(model, xgboost.XGBClassifier):
        onx = onnxmltools.convert_xgboost(
            model, name=name, initial_types=mlt_types, target_opset=13
        )
        onx.doc_string = f"switchyard demo model {name}; generated by tools/make_models.py"
        return onx.SerializeToString()
    options = {id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None
    if hasattr(model, "named_steps"):
        # A pipeline: zipmap goes to the final classifier; the scaler is written as plain
        # Sub / Div instead of ai.onnx.ml Scaler, which tract-onnx 0.23 cannot type.
        options = {}
        for step in model.named_steps.values():
            if isinstance(step, StandardScaler):
                options[id(step)] = {"div": "div"}
            elif hasattr(step, "predict_proba"):
                options[id(step)] = {"zipmap": False}
    onx = convert_sklearn(
        model,
        name=name,
        initial_types=initial_types,
        options=options,
        target_opset=TARGET_OPSET,
    )
    onx.doc_string = f"switchyard demo model {name}; generated by tools/make_models.py"
    return onx.SerializeToString()


def ort_session(blob: bytes) -> ort.InferenceSession:
    """onnxruntime on one thread (the reference outputs do not depend on it, timings do)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])


def reference_library(model) -> str:
    """Which library's outputs the fixture's ``sklearn`` key holds."""
    if isinstance(model, lightgbm.LGBMClassifier):
        return f"lightgbm {lightgbm.__version__}"
    if isinstance(model, xgboost.XGBClassifier):
        return f"xgboost {xgboost.__version__}"
    return f"scikit-learn {sklearn.__version__}"


def exact(x) -> float:
    """A Python float holding the exact value of a float32/float64 (round-trips through JSON)."""
    return float(x)


def main() -> int:
    if not os.path.isdir("tools") or not os.path.isfile("Cargo.toml"):
        print("run from the repository root", file=sys.stderr)
        return 2
    os.makedirs(FIXTURE_DIR, exist_ok=True)

    rng = np.random.default_rng(SEED)
    X_train, y_train, t_train, b_train = generate(rng, N_TRAIN)
    X_test, y_test, t_test, b_test = generate(rng, N_TEST)
    X_val, y_val, _, _ = generate(rng, N_VALIDATION)

    # v3: a retrain on data where the hot tester logged inverted bins.
    y_train_corrupt = y_train.copy()
    hot = X_train[:, FEATURES.index("temp")] > CORRUPT_TEMP_ABOVE
    y_train_corrupt[hot] = 1 - y_train_corrupt[hot]

    classifiers = {
        "yield_v1": (
            RandomForestClassifier(n_estimators=10, max_depth=6, random_state=1),
            y_train,
            "RandomForestClassifier(n_estimators=10, max_depth=6): deliberately weak",
        ),
        "yield_v2": (
            GradientBoostingClassifier(
                n_estimators=200, max_depth=3, learning_rate=0.1, random_state=2
            ),
            y_train,
            "GradientBoostingClassifier(n_estimators=200, max_depth=3, learning_rate=0.1)",
        ),
        "yield_v3": (
            RandomForestClassifier(
                n_estimators=30, max_depth=8, min_samples_leaf=5, random_state=3
            ),
            y_train_corrupt,
            "RandomForestClassifier(n_estimators=30, max_depth=8, min_samples_leaf=5) "
            f"trained on labels inverted where temp > {CORRUPT_TEMP_ABOVE:g}",
        ),
    }
    regressors = {
        "testtime_v1": (
            RandomForestRegressor(n_estimators=10, max_depth=4, random_state=4),
            "RandomForestRegressor(n_estimators=10, max_depth=4)",
        ),
        "testtime_v2": (
            GradientBoostingRegressor(
                n_estimators=200, max_depth=4, learning_rate=0.1, random_state=5
            ),
            "GradientBoostingRegressor(n_estimators=200, max_depth=4, learning_rate=0.1)",
        ),
    }

    fixture_rows = X_test[:N_FIXTURE]
    ok = True
    summary = []

    classifiers.update(
        {
            "yield_et": (
                ExtraTreesClassifier(n_estimators=15, max_depth=8, random_state=6),
                y_train,
                "ExtraTreesClassifier(n_estimators=15, max_depth=8)",
            ),
            "yield_hgb": (
                HistGradientBoostingClassifier(
                    max_iter=100, max_leaf_nodes=15, learning_rate=0.1, random_state=7
                ),
                y_train,
                "HistGradientBoostingClassifier(max_iter=100, max_leaf_nodes=15, learning_rate=0.1)",
            ),
            "yield_lgbm": (
                lightgbm.LGBMClassifier(
                    n_estimators=100,
                    num_leaves=15,
                    learning_rate=0.1,
                    random_state=8,
                    n_jobs=1,
                    verbose=-1,
                ),
                y_train,
                "lightgbm.LGBMClassifier(n_estimators=100, num_leaves=15, learning_rate=0.1), "
                "exported with onnxmltools",
            ),
            "yield_logreg": (
                make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
                y_train,
                "StandardScaler + LogisticRegression pipeline (runs through tract, not the tree "
                "engine)",
            ),
            "bin_v1": (
                GradientBoostingClassifier(
                    n_estimators=60, max_depth=3, learning_rate=0.1, random_state=9
                ),
                b_train,
                "GradientBoostingClassifier(n_estimators=60, max_depth=3, learning_rate=0.1) on "
                "the 4 die bins",
            ),
            "bin_v2": (
                xgboost.XGBClassifier(
                    n_estimators=60,
                    max_depth=4,
                    learning_rate=0.2,
                    random_state=10,
                    n_jobs=1,
                    tree_method="exact",
                ),
                b_train,
                "xgboost.XGBClassifier(n_estimators=60, max_depth=4, learning_rate=0.2) on the 4 "
                "die bins, exported with onnxmltools",
            ),
        }
    )

    for name, (clf, labels, description) in classifiers.items():
        truth = b_test if name.startswith("bin_") else y_test
        clf.fit(X_train, labels)
        acc = float(accuracy_score(truth, clf.predict(X_test)))
        blob = to_onnx(clf, name)
        path = os.path.join(OUT_DIR, f"{name}.onnx")
        with open(path, "wb") as f:
            f.write(blob)

        pred = clf.predict(fixture_rows)
        proba = clf.predict_proba(fixture_rows)
        sess = ort_session(blob)
        ort_label, ort_proba = sess.run(["label", "probabilities"], {"input": fixture_rows})
        agree = bool(np.array_equal(ort_label, pred)) and bool(
            np.allclose(ort_proba, proba, rtol=0, atol=1e-5)
        )
        max_diff = float(np.max(np.abs(ort_proba - proba)))

        fixture = {
            "model": f"{name}.onnx",
            "kind": "classifier",
            "description": description,
            "reference": reference_library(clf),
            "features": FEATURES,
            "inputs": [[exact(v) for v in row] for row in fixture_rows],
            "sklearn": {
                "classes": [int(c) for c in clf.classes_],
                "predictions": [int(p) for p in pred],
                "probabilities": [[exact(p) for p in row] for row in proba],
            },
            "onnxruntime": {
                "version": ort.__version__,
                "label": [int(p) for p in ort_label],
                "probabilities": [[exact(p) for p in row] for row in ort_proba],
            },
            "truth": [int(t) for t in truth[:N_FIXTURE]],
            "metrics": {"accuracy": acc, "n_test": N_TEST},
        }
        write_json(os.path.join(FIXTURE_DIR, f"{name}.json"), fixture)
        size = len(blob)
        ok &= agree and size < MAX_BYTES
        summary.append(
            f"{name:12s} {size:8d} B  accuracy={acc:.4f}  "
            f"onnxruntime agrees={agree} (max |dp|={max_diff:.2e})"
        )

    for name, (reg, description) in regressors.items():
        reg.fit(X_train, t_train)
        mae = float(mean_absolute_error(t_test, reg.predict(X_test)))
        blob = to_onnx(reg, name)
        path = os.path.join(OUT_DIR, f"{name}.onnx")
        with open(path, "wb") as f:
            f.write(blob)

        pred = reg.predict(fixture_rows)
        sess = ort_session(blob)
        (ort_pred,) = sess.run(["variable"], {"input": fixture_rows})
        ort_pred = ort_pred.reshape(-1)
        rel = np.abs(ort_pred - pred) / np.maximum(np.abs(pred), 1.0)
        agree = bool(np.all(rel <= 1e-4))

        fixture = {
            "model": f"{name}.onnx",
            "kind": "regressor",
            "description": description,
            "features": FEATURES,
            "inputs": [[exact(v) for v in row] for row in fixture_rows],
            "reference": reference_library(reg),
            "sklearn": {"predictions": [exact(p) for p in pred]},
            "onnxruntime": {
                "version": ort.__version__,
                "predictions": [exact(p) for p in ort_pred],
            },
            "truth": [float(t) for t in t_test[:N_FIXTURE]],
            "metrics": {"mae": mae, "n_test": N_TEST},
        }
        write_json(os.path.join(FIXTURE_DIR, f"{name}.json"), fixture)
        size = len(blob)
        ok &= agree and size < MAX_BYTES
        summary.append(
            f"{name:12s} {size:8d} B  MAE={mae:.3f} ms  "
            f"onnxruntime agrees={agree} (max rel diff={float(rel.max()):.2e})"
        )

    with open(os.path.join(OUT_DIR, "validation_yield.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(FEATURES + ["label"])
        for row, label in zip(X_val, y_val):
            w.writerow([str(np.float32(v)) for v in row] + [int(label)])

    print(f"train pass rate {y_train.mean():.4f}, test pass rate {y_test.mean():.4f}")
    for line in summary:
        print(line)
    if not ok:
        print("FAILED: a model disagrees with onnxruntime or is too large", file=sys.stderr)
        return 1
    return 0


def write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=None, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
