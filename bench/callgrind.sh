#!/usr/bin/env bash
# User-space instructions per request of the gateway, counted by valgrind's callgrind: a figure
# that, unlike req/s or CPU time, does not move with what else the machine is doing, so two
# builds can be compared on a shared box. Kernel work (the socket writes that are half of a
# proxy's CPU) is not counted.
#
#   bash bench/callgrind.sh [BIN_DIR] [N]       # BIN_DIR defaults to target/release
#   SY_YAML='runtime: { data_plane_threads: 0 }' bash bench/callgrind.sh   # extra top-level config
#
# Runs switchyard single (one mock backend) with the prediction log on and off: 500 warm-up
# requests, then counters zeroed, N requests (default 3000) at 8 connections with oha, counters
# dumped. Prints "log on|off: I instructions/request". Needs valgrind and oha.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${CARGO_TARGET_DIR:-target}/release}"
n="${2:-3000}"
command -v valgrind >/dev/null || { echo "needs valgrind: apt-get install -y valgrind" >&2; exit 2; }
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
command -v oha >/dev/null || { echo "needs oha: cargo install --locked oha" >&2; exit 2; }
body='{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[1.01,49.5,2.02,55.0,3.0,-4.0,1.1,1003.0]}]}'
work=${CG_KEEP:-$(mktemp -d)}
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; [ -n "${CG_KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

"$bin/mock-backend" --listen 127.0.0.1:0 --threads 1 >"$work/mock.out" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/mock.out" ] && break; sleep 0.05; done
mock=$(head -1 "$work/mock.out")

for log in true false; do
  dir="$work/log-$log"
  mkdir -p "$dir"
  cat >"$dir/sy.yaml" <<YAML
log: { enabled: $log }
${SY_YAML:-}
models:
  m:
    task: classification
    versions:
      v1: { url: "$mock", protocol: oip, remote_model: m, timeout_ms: 20000 }
    serve: { kind: single, version: v1 }
YAML
  TOKIO_WORKER_THREADS=2 RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
    "$bin/switchyard" serve --config "$dir/sy.yaml" --listen 127.0.0.1:0 --data-dir "$dir/data" \
    2>"$dir/serve.err" &
  sy=$!
  pids+=($sy)
  for _ in $(seq 600); do grep -q "listening on http[^ ]* " "$dir/serve.err" && break; sleep 0.1; done
  url=$(grep "listening on" "$dir/serve.err" | awk '{print $4}')
  [ -n "$url" ] || { cat "$dir/serve.err" >&2; exit 1; }
  load() { oha --no-tui -m POST -H 'content-type: application/json' -d "$body" -c 8 -n "$1" "$url/v2/models/m/infer" >/dev/null; }
  load 500
  sleep 0.5
  callgrind_control -z "$sy" >/dev/null 2>&1
  load "$n"
  sleep 0.5   # the log writer's last commit
  callgrind_control -d "$sy" >/dev/null 2>&1
  for _ in $(seq 100); do [ -s "$dir/cg.out.1" ] && break; sleep 0.1; done
  kill "$sy"
  wait "$sy" 2>/dev/null || true
  total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dir/cg.out.1")
  echo "log $( [ "$log" = true ] && echo on || echo off): $((total / n)) instructions/request"
done
