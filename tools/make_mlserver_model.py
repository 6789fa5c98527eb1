#!/usr/bin/env python3
"""Write the scikit-learn model MLServer serves in switchyard's MLServer integration test.

Run from the repository root:

    pip install -r tools/requirements-models.txt -r tools/requirements-test.txt
    python3 tools/make_mlserver_model.py

The model is the same estimator as ``models/yield_v1.onnx``: the wafer data of
``tools/make_models.py`` (its ``generate`` function, the same seed, the same draw order)
and ``RandomForestClassifier(n_estimators=10, max_depth=6, random_state=1)``. So the
pickled model served by MLServer and the ONNX export switchyard runs in-process give the
same class on every row, which the test uses as a shadow with 100% expected agreement.

Deterministic: re-running rewrites byte-identical files with the pinned scikit-learn /
joblib versions (a pickled estimator must be loaded by the scikit-learn that wrote it,
so ``tools/requirements-test.txt`` pins the versions used here).

Outputs (under ``models/mlserver/``)
------------------------------------
yield-sklearn/model.joblib          the fitted estimator (joblib, < 300 KB)
yield-sklearn/model-settings.json   MLServer model settings (mlserver_sklearn.SKLearnModel)
fixture.json                        50 held-out rows (8 float32 features, as exact floats):
                                    the first 25 predicted 0 and the first 25 predicted 1,
                                    with scikit-learn's own ``predict`` for each
"""

from __future__ import annotations

import json
import os
import sys

import joblib
import numpy as np
import sklearn
from sklearn.ensemble import RandomForestClassifier

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import FEATURES, N_TEST, N_TRAIN, SEED, generate  # noqa: E402

MODEL_NAME = "yield-sklearn"
N_FIXTURE = 50
MAX_BYTES = 300_000
OUT_DIR = os.path.join("models", "mlserver")
MODEL_DIR = os.path.join(OUT_DIR, MODEL_NAME)


def write_json(path: str, obj, indent: int | None = None) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=indent, separators=(",", ": ") if indent else (",", ":"))
        f.write("\n")


def main() -> int:
    if not os.path.isdir("tools") or not os.path.isfile("Cargo.toml"):
        print("run from the repository root", file=sys.stderr)
        return 2
    os.makedirs(MODEL_DIR, exist_ok=True)

    # Same draws, in the same order, as tools/make_models.py.
    rng = np.random.default_rng(SEED)
    X_train, y_train, _ = generate(rng, N_TRAIN)
    X_test, y_test, _ = generate(rng, N_TEST)

    clf = RandomForestClassifier(n_estimators=10, max_depth=6, random_state=1)
    clf.fit(X_train, y_train)
    accuracy = float((clf.predict(X_test) == y_test).mean())

    model_path = os.path.join(MODEL_DIR, "model.joblib")
    joblib.dump(clf, model_path, compress=3)
    size = os.path.getsize(model_path)

    settings = {
        "name": MODEL_NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"},
    }
    write_json(os.path.join(MODEL_DIR, "model-settings.json"), settings, indent=2)

    # The first N_FIXTURE/2 held-out rows of each predicted class, in held-out order, so a
    # server answering a constant class cannot pass the test.
    all_pred = clf.predict(X_test)
    per_class = N_FIXTURE // len(clf.classes_)
    indices = np.sort(
        np.concatenate([np.flatnonzero(all_pred == c)[:per_class] for c in clf.classes_])
    )
    rows = X_test[indices]
    pred = clf.predict(rows)
    # models/yield_v1.onnx is the same estimator; its fixture holds the first held-out rows.
    onnx_fixture_path = os.path.join("models", "fixtures", "yield_v1.json")
    onnx_agrees = None
    if os.path.isfile(onnx_fixture_path):
        with open(onnx_fixture_path) as f:
            onnx_fixture = json.load(f)
        shared = [i for i in indices if i < len(onnx_fixture["inputs"])]
        onnx_agrees = all(
            onnx_fixture["inputs"][i] == [float(v) for v in X_test[i]]
            and onnx_fixture["sklearn"]["predictions"][i] == int(all_pred[i])
            for i in shared
        )

    fixture = {
        "model": MODEL_NAME,
        "kind": "classifier",
        "description": "RandomForestClassifier(n_estimators=10, max_depth=6, random_state=1), "
        "the estimator of models/yield_v1.onnx, pickled for MLServer",
        "versions": {"scikit-learn": sklearn.__version__, "joblib": joblib.__version__},
        "features": FEATURES,
        "test_indices": [int(i) for i in indices],
        "inputs": [[float(v) for v in row] for row in rows],
        "sklearn": {
            "classes": [int(c) for c in clf.classes_],
            "predictions": [int(p) for p in pred],
        },
        "metrics": {"accuracy": accuracy, "n_test": N_TEST},
    }
    write_json(os.path.join(OUT_DIR, "fixture.json"), fixture)

    print(
        f"{model_path}: {size} B, accuracy={accuracy:.4f}, "
        f"fixture rows {indices[0]}..{indices[-1]} of the held-out set, "
        f"same as yield_v1.onnx fixture={onnx_agrees}"
    )
    if size >= MAX_BYTES or onnx_agrees is False:
        print("FAILED: model too large or different from yield_v1", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
