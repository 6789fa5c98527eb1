#!/usr/bin/env bash
# Soak: drive SOAK_REQUESTS (default 1,000,000) requests with a 100% shadow through the release
# build of `switchyard serve`, then report responses vs prediction records (the dropped counter
# must explain every difference), RSS at start, peak and end, and errors.
#
#   bench/soak.sh                      # needs wrk (Debian: apt-get install -y wrk)
#   SOAK_REQUESTS=200000 bench/soak.sh
#
# The backend is the in-process ONNX model yield v1 for both the primary and the shadow, so the
# gateway itself (routing, shadow dispatch, logging) is what is exercised, not a model server.
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${SOAK_REQUESTS:-1000000}"
threads=2
connections="${SOAK_CONNECTIONS:-32}"
command -v wrk >/dev/null || { echo "soak needs wrk: apt-get install -y wrk" >&2; exit 2; }

cargo build --release -p switchyard --quiet
bin=target/release/switchyard
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/soak.yaml" <<YAML
log: { queue_capacity: 262144, batch_size: 4096 }
shadow: { queue_capacity: 65536, concurrency: 64 }
models:
  yield:
    routing_key: { header: x-wafer-id }
    versions:
      v1: { onnx: $PWD/models/yield_v1.onnx }
      v1shadow: { onnx: $PWD/models/yield_v1.onnx }
    serve: { kind: shadow, primary: v1, shadows: [{ version: v1shadow, sample: 100 }] }
YAML
"$bin" serve --config "$work/soak.yaml" --listen 127.0.0.1:0 --data-dir "$work/data" 2> "$work/serve.log" &
pid=$!
for _ in $(seq 100); do
  url=$(sed -n 's/^switchyard listening on \(http:[^ ]*\).*/\1/p' "$work/serve.log")
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { cat "$work/serve.log"; exit 1; }

rss() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
rss_start=$(rss)
peak=$rss_start
( while kill -0 "$pid" 2>/dev/null; do r=$(rss 2>/dev/null || echo 0); echo "$r"; sleep 2; done ) > "$work/rss.log" &
sampler=$!

start=$(date +%s)
# wrk stops each thread after its share (bench/soak.lua) but then still waits for -d, so the
# script watches the gateway's serving counter and interrupts wrk once every request was served.
served_now() { curl -s "$url/metrics" | awk 'index($0, "switchyard_model_calls_total{model=\"yield\",version=\"v1\",role=\"serving\"") == 1 {s += $NF} END {printf "%d", s}'; }
SOAK_PER_THREAD=$(( requests / threads )) wrk -t "$threads" -c "$connections" -d 3600s --timeout 10s \
  -s bench/soak.lua "$url/v2/models/yield/infer" > "$work/wrk.log" &
wrk_pid=$!
while kill -0 "$wrk_pid" 2>/dev/null; do
  sleep 1
  if [ "$(served_now)" -ge "$requests" ]; then kill -INT "$wrk_pid" 2>/dev/null || true; fi
done
wait "$wrk_pid" || true
cat "$work/wrk.log"
elapsed=$(( $(date +%s) - start ))
[ "$elapsed" -gt 0 ] || elapsed=1

# Let the last shadow calls finish, then read the counters.
sleep 2
metrics=$(curl -s "$url/metrics")
get() { echo "$metrics" | awk -v k="$1" 'index($0, k) == 1 {s += $NF} END {printf "%d", s}'; }
served=$(get 'switchyard_model_calls_total{model="yield",version="v1",role="serving"')
shadowed=$(get 'switchyard_model_calls_total{model="yield",version="v1shadow",role="shadow"')
shadow_skipped=$(get 'switchyard_shadow_skipped_total')
errors=$(echo "$metrics" | awk 'index($0, "switchyard_model_calls_total") == 1 && $0 !~ /outcome="ok"/ {s += $NF} END {printf "%d", s}')
rss_end=$(rss)
kill "$sampler" 2>/dev/null || true
peak=$(sort -n "$work/rss.log" | tail -1)
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
kill -TERM "$pid"; wait "$pid" || true
dropped=$(echo "$metrics" | awk 'index($0, "switchyard_log_dropped_records_total") == 1 {print $NF}')
records=$(python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('select count(*) from predictions').fetchone()[0]); print(c.execute(\"select count(*) from predictions where role='serving'\").fetchone()[0])" "$work/data/switchyard.sqlite")
records_total=$(echo "$records" | sed -n 1p)
records_serving=$(echo "$records" | sed -n 2p)

cat <<OUT

| measure | value |
|---|---|
| requests sent (wrk) | $(grep -o 'wrk: [0-9]* requests' "$work/wrk.log" | awk '{print $2}') |
| responses served (serving calls) | $served |
| shadow calls | $shadowed |
| shadow calls skipped (queue full / breaker) | $shadow_skipped |
| model errors (non-ok outcomes) | $errors |
| prediction records in SQLite (serving / all) | $records_serving / $records_total |
| records dropped by the log queue | ${dropped:-0} |
| served + shadowed − records − dropped | $(( served + shadowed - records_total - ${dropped:-0} )) |
| elapsed | ${elapsed} s ($(( served / elapsed )) responses/s) |
| RSS start / peak (sampled) / end / VmHWM | $(( rss_start / 1024 )) / $(( peak / 1024 )) / $(( rss_end / 1024 )) / $(( hwm / 1024 )) MiB |
OUT
