#!/usr/bin/env bash
# Runs the whole test suite N times (default 10) while a CPU hog keeps every core busy, and
# prints which tests failed in which run. A test whose verdict leans on the machine's speed
# shows up here long before it fails someone's CI run.
#
#     eval "$(bash tools/pg-test-env.sh)"      # the store tests need PostgreSQL
#     bash tools/suite-under-load.sh 10
#
# Logs go to target/suite-under-load/run-N.log. Exits non-zero if any run failed.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=${1:-10}
out=target/suite-under-load
mkdir -p "$out"

# Build once, before the hog starts, so every run tests the same binaries.
cargo test --workspace --locked --no-run >"$out/build.log" 2>&1 || {
  tail -n 30 "$out/build.log"
  exit 1
}

hogs=()
for _ in $(seq "$(nproc)"); do
  (while :; do :; done) &
  hogs+=($!)
done
trap 'kill "${hogs[@]}" 2>/dev/null' EXIT
echo "suite-under-load: ${#hogs[@]} busy loops on $(nproc) cores, $runs runs"

failed_runs=0
for i in $(seq "$runs"); do
  started=$(date +%s)
  cargo test --workspace --locked --no-fail-fast >"$out/run-$i.log" 2>&1
  rc=$?
  took=$(($(date +%s) - started))
  if [ "$rc" -eq 0 ]; then
    echo "run $i: ok (${took} s)"
  else
    failed_runs=$((failed_runs + 1))
    echo "run $i: FAILED (${took} s)"
    grep -E '^test .* \.\.\. FAILED$|^    [a-z_:]+$|panicked at' "$out/run-$i.log" | sed 's/^/    /'
  fi
done
echo "suite-under-load: $((runs - failed_runs))/$runs runs passed"
[ "$failed_runs" -eq 0 ]
