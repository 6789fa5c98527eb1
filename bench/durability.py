#!/usr/bin/env python3
"""log.durability group vs sync, side by side in one run.

Starts a release `switchyard serve` per mode (same config but `log.durability`, an in-process
ONNX model so the log is most of the work), drives each with oha in alternating rounds: max
throughput at 16 connections, and latency at a fixed 2,000 req/s (--latency-correction).
Prints a Markdown table of medians over the rounds.

    cargo build --release -p switchyard && python3 bench/durability.py [--rounds 3] [--seconds 6]
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile

BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32",
                               "data": [1.0, 50.0, 2.0, 40.0, 1.0, 2.0, 1.0, 1000.0]}]})
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def serve(binary, mode, tmp):
    cfg = os.path.join(tmp, f"{mode}.yaml")
    with open(cfg, "w") as f:
        f.write(f"log: {{ durability: {mode} }}\nmodels:\n  yield:\n    versions:\n"
                f"      v1: {{ onnx: {ROOT}/models/yield_v1.onnx }}\n"
                f"    serve: {{ kind: single, version: v1 }}\n")
    proc = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--config", cfg,
                             "--data-dir", os.path.join(tmp, mode)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in proc.stderr:
        m = re.search(r"switchyard listening on (\S+)", line)
        if m:
            return proc, m.group(1)
    raise RuntimeError(f"{mode}: serve exited before listening")


def oha(oha_bin, url, seconds, conns, rate=None):
    argv = [oha_bin, "--no-tui", "--output-format", "json", "-m", "POST",
            "-H", "content-type: application/json", "-d", BODY, "-c", str(conns),
            "-z", f"{seconds}s", "--wait-ongoing-requests-after-deadline"]
    if rate:
        argv += ["-q", str(rate), "--latency-correction"]
    out = subprocess.run(argv + [url + "/v2/models/yield/infer"], capture_output=True,
                         text=True, check=True).stdout
    data = json.loads(out)
    codes = {int(k): v for k, v in (data.get("statusCodeDistribution") or {}).items()}
    ok = sum(v for k, v in codes.items() if 200 <= k < 300)
    pct = data.get("latencyPercentiles") or {}
    return {"rps": ok / data["summary"]["total"], "non2xx": sum(codes.values()) - ok,
            "p50_ms": pct.get("p50", 0) * 1e3, "p99_ms": pct.get("p99", 0) * 1e3}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/switchyard"))
    ap.add_argument("--oha", default=shutil.which("oha") or os.path.expanduser("~/.cargo/bin/oha"))
    args = ap.parse_args()
    results = {m: {"max": [], "fixed": []} for m in ("group", "sync")}
    with tempfile.TemporaryDirectory() as tmp:
        procs = {m: serve(args.binary, m, tmp) for m in ("group", "sync")}
        try:
            for url in (u for _, u in procs.values()):
                oha(args.oha, url, 1, 8)  # warm-up
            for _ in range(args.rounds):
                for mode, (_, url) in procs.items():
                    results[mode]["max"].append(oha(args.oha, url, args.seconds, 16))
                    results[mode]["fixed"].append(oha(args.oha, url, args.seconds, 16, rate=2000))
        finally:
            for p, _ in procs.values():
                p.kill()
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    print("| log.durability | max req/s (16 conns) | p50 / p99 at max (ms) | p50 / p99 at 2,000 req/s (ms) | non-2xx |")
    print("|---|---|---|---|---|")
    for mode, r in results.items():
        print(f"| {mode} | {med(r['max'], 'rps'):,.0f} | {med(r['max'], 'p50_ms'):.2f} / {med(r['max'], 'p99_ms'):.2f} "
              f"| {med(r['fixed'], 'p50_ms'):.2f} / {med(r['fixed'], 'p99_ms'):.2f} "
              f"| {sum(x['non2xx'] for x in r['max'] + r['fixed'])} |")


if __name__ == "__main__":
    main()
