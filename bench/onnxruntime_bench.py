#!/usr/bin/env python3
"""Time onnxruntime (1 thread, in-process) on the shipped models and their fixture rows.

    python3 bench/onnxruntime_bench.py [--json PATH]

Same models and rows as switchyard's `cargo bench -p switchyard-server --bench onnx_engine`:
per row for a single-row call (each of the 200 fixture rows in turn, input arrays built
beforehand) and for one 200-row batch. Median of 15 repeats, each at least 40 ms of calls.
The time is `InferenceSession.run` as called from Python (the Python call overhead included,
which is how an in-process Python service would pay it). `bench/engine_vs_onnxruntime.sh` runs
both and prints ratios.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time

import numpy as np
import onnxruntime as ort

REPEATS = 15
MIN_REPEAT_S = 0.040


def per_call(fn) -> float:
    """Median over REPEATS of the seconds per call of ``fn``."""
    iters = 1
    while True:
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        if time.perf_counter() - start >= MIN_REPEAT_S or iters > 1 << 22:
            break
        iters *= 2
    samples = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        samples.append((time.perf_counter() - start) / iters)
    samples.sort()
    return samples[REPEATS // 2]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--models", default="models", help="directory of the models")
    args = parser.parse_args()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    records = []
    print(f"onnxruntime {ort.__version__}, 1 thread")
    print("| model | 1 row (µs) | 200 rows, per row (µs) |")
    print("|---|---|---|")
    for path in sorted(glob.glob(os.path.join(args.models, "fixtures", "*.json"))):
        with open(path) as f:
            fixture = json.load(f)
        name = fixture["model"].removesuffix(".onnx")
        sess = ort.InferenceSession(
            os.path.join(args.models, fixture["model"]),
            sess_options=opts,
            providers=["CPUExecutionProvider"],
        )
        outputs = [o.name for o in sess.get_outputs()]
        rows = np.array(fixture["inputs"], dtype=np.float32)
        singles = [rows[i : i + 1].copy() for i in range(len(rows))]
        state = {"i": 0}

        def one():
            sess.run(outputs, {"input": singles[state["i"] % len(singles)]})
            state["i"] += 1

        single = per_call(one)
        batch = per_call(lambda: sess.run(outputs, {"input": rows})) / len(rows)
        print(f"| {name} | {single * 1e6:.2f} | {batch * 1e6:.3f} |")
        records.append(
            {
                "model": name,
                "single_row_us": single * 1e6,
                "batch200_per_row_us": batch * 1e6,
                "batch200_us": batch * len(rows) * 1e6,
            }
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"onnxruntime": ort.__version__, "models": records}, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
