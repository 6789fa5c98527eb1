#!/usr/bin/env python3
"""A 200-row OIP v2 request through a release gateway against onnxruntime's 200-row batch.

    cargo build --release -p switchyard --features tract   # yield_logreg runs on tract
    python3 bench/gateway_vs_onnxruntime.py [--bin target/release/switchyard] [--json PATH]

For every shipped model with a fixture (`models/fixtures/*.json`): one `switchyard serve` with
each model as its own `single` model, and onnxruntime (1 thread, in-process) on the same model
and the same 200 fixture rows. The gateway's time is one `POST /v2/models/{m}/infer` carrying
all 200 rows as one FP32 tensor [200, 8] in JSON, over one keep-alive connection from this
process, from sending the request (encoded beforehand) to having read the whole answer (not
parsed), once as JSON and once with the binary tensor data extension (raw FP32 in, raw
outputs asked for): the gateway's decoding and encoding, the model, the routing and the prediction log are all
in it, and so is this client's share of the round trip (a few tens of µs of Python).
onnxruntime's is `InferenceSession.run` on the [200, 8] array. Both interleaved per model,
median of 15 repeats of at least 40 ms each. The ratio is the issue's target (≤ 3).
"""

from __future__ import annotations

import argparse
import glob
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
import onnxruntime as ort

from onnxruntime_bench import per_call  # same directory: the same timing loop

PORT = 18280


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default="target/release/switchyard")
    parser.add_argument("--models", default="models")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--log-off", action="store_true",
                        help="run the gateway with its prediction log off (log.enabled: false)")
    args = parser.parse_args()

    fixtures = {}
    for path in sorted(glob.glob(os.path.join(args.models, "fixtures", "*.json"))):
        with open(path) as f:
            fx = json.load(f)
        fixtures[fx["model"].removesuffix(".onnx")] = fx
    work = tempfile.mkdtemp()
    config = os.path.join(work, "gateway.yaml")
    with open(config, "w") as f:
        if args.log_off:
            f.write("log: { enabled: false }\n")
        f.write("models:\n")
        for name, fx in fixtures.items():
            model = os.path.abspath(os.path.join(args.models, fx["model"]))
            f.write(f"  {name}:\n")
            if fx.get("kind") == "regressor":
                f.write("    task: regression\n")
            f.write(f"    versions:\n      v1: {{ onnx: {model} }}\n")
            f.write("    serve: { kind: single, version: v1 }\n")
    gateway = subprocess.Popen(
        [args.bin, "serve", "-c", config, "--data-dir", os.path.join(work, "data"),
         "--listen", f"127.0.0.1:{PORT}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.02)
        else:
            sys.exit("the gateway did not become ready")
        conn = http.client.HTTPConnection("127.0.0.1", PORT)
        ort.set_default_logger_severity(3)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        records = []
        print(f"onnxruntime {ort.__version__}, 1 thread; gateway {args.bin}")

        def live():
            conn.request("GET", "/v2/health/live")
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                sys.exit(f"/v2/health/live: {r.status}")

        # The floor: the same client and connection asking the gateway something that takes
        # no model, no body and no record.
        floor = per_call(live)
        print(f"round trip floor (GET /v2/health/live, same connection): {floor * 1e6:.0f} µs")
        print("| model | gateway, 200-row JSON request (µs) | gateway, binary (µs) "
              "| onnxruntime, 200-row batch (µs) | ratio JSON | ratio binary |")
        print("|---|---|---|---|---|---|")
        for name, fx in fixtures.items():
            rows = np.array(fx["inputs"], dtype=np.float32)
            body = json.dumps({"inputs": [{"name": "input", "shape": list(rows.shape),
                                           "datatype": "FP32",
                                           "data": [float(x) for x in rows.ravel()]}]}).encode()
            headers = {"content-type": "application/json"}
            # The same rows with the binary tensor data extension, in and out: a JSON header
            # naming the sizes, then the raw little-endian FP32 bytes.
            raw = rows.astype("<f4").tobytes()
            header = json.dumps({"inputs": [{"name": "input", "shape": list(rows.shape),
                                             "datatype": "FP32",
                                             "parameters": {"binary_data_size": len(raw)}}],
                                 "parameters": {"binary_data_output": True}}).encode()
            binary_body = header + raw
            binary_headers = {"content-type": "application/octet-stream",
                              "inference-header-content-length": str(len(header))}

            def post(body, headers):
                conn.request("POST", f"/v2/models/{name}/infer", body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                if r.status != 200:
                    sys.exit(f"{name}: {r.status} {data[:200]!r}")
                return r

            def call():
                post(body, headers)

            def call_binary():
                post(binary_body, binary_headers)

            sess = ort.InferenceSession(os.path.join(args.models, fx["model"]),
                                        sess_options=opts, providers=["CPUExecutionProvider"])
            outputs = [o.name for o in sess.get_outputs()]
            call()
            if post(binary_body, binary_headers).getheader("inference-header-content-length") is None:
                sys.exit(f"{name}: the binary request was not answered in binary")
            gw = per_call(call)
            gwb = per_call(call_binary)
            rt = per_call(lambda: sess.run(outputs, {"input": rows}))
            print(f"| {name} | {gw * 1e6:.0f} | {gwb * 1e6:.0f} | {rt * 1e6:.0f} "
                  f"| {gw / rt:.2f} | {gwb / rt:.2f} |")
            records.append({"model": name, "gateway_us": gw * 1e6,
                            "gateway_binary_us": gwb * 1e6, "onnxruntime_us": rt * 1e6,
                            "ratio": gw / rt, "ratio_binary": gwb / rt})
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"onnxruntime": ort.__version__, "floor_us": floor * 1e6,
                       "models": records}, f, indent=2)
            print(f"\nwrote {args.json}")
    finally:
        gateway.terminate()
        gateway.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
