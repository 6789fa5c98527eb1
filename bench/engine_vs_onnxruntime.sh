#!/usr/bin/env bash
# switchyard's in-process engine next to onnxruntime, same models, same fixture rows, one run.
#
#   bench/engine_vs_onnxruntime.sh            (from the repository root)
#
# Needs Python with onnxruntime and numpy (pip install -r tools/requirements-models.txt).
# Builds the bench in release mode (cargo bench profile), runs it, runs
# bench/onnxruntime_bench.py, then prints one table with the ratios engine / onnxruntime
# (below 1 = switchyard faster). Results go to bench/results/engine_vs_onnxruntime.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/results
mkdir -p "$out"
# The bench runs in crates/server: give it an absolute path.
cargo bench -p switchyard-server --bench onnx_engine -- --json "$PWD/$out/engine.json"
python3 bench/onnxruntime_bench.py --json "$out/onnxruntime.json"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
engine = json.load(open(f"{out}/engine.json"))
ort = json.load(open(f"{out}/onnxruntime.json"))
by_name = {m["model"]: m for m in ort["models"]}
lines = [
    f"onnxruntime {ort['onnxruntime']} (1 thread, timed from Python) vs switchyard's engine; "
    f"spawn_blocking hand-off {engine['handoff_us']:.1f} µs",
    "",
    "| model | engine | 1 row: switchyard (µs) | 1 row: onnxruntime (µs) | ratio "
    "| 200 rows, per row: switchyard (µs) | 200 rows, per row: onnxruntime (µs) | ratio |",
    "|---|---|---|---|---|---|---|---|",
]
for m in engine["models"]:
    o = by_name.get(m["model"])
    if o is None:
        continue
    r1 = m["single_row_us"] / o["single_row_us"]
    rb = m["batch200_per_row_us"] / o["batch200_per_row_us"]
    lines.append(
        f"| {m['model']} | {m['engine']} | {m['single_row_us']:.2f} | {o['single_row_us']:.2f} "
        f"| {r1:.2f} | {m['batch200_per_row_us']:.3f} | {o['batch200_per_row_us']:.3f} | {rb:.2f} |"
    )
text = "\n".join(lines)
print()
print(text)
open(f"{out}/engine_vs_onnxruntime.md", "w").write(text + "\n")
PY
