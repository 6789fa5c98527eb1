#!/usr/bin/env bash
# Side-by-side load test of switchyard against a direct call and nginx, in one run
# (issue 7; figures in BENCHMARKS.md). Builds the binaries, then bench/harness.py starts the
# mock model backends, one switchyard gateway per mode and nginx, drives every arm with oha,
# and prints a markdown table (raw results under bench/out/).
#
#   bash bench/run.sh                       # full run: release build, 3 rounds × 8 s per arm
#   bash bench/run.sh --rounds 5 --duration 10 --rate 5000
#   bash bench/run.sh --smoke               # CI: debug build, ~1 s per arm, tiny load; fails
#                                           # unless every arm answered, records == responses
#                                           # and switches under load gave no non-2xx
#
# Needs nginx (Debian: apt-get install -y nginx), python3 and oha (installed here with
# `cargo install --locked oha` when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
for arg in "$@"; do
  [ "$arg" = "--smoke" ] && smoke=1
done

command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || {
  echo "bench/run.sh needs nginx: apt-get install -y nginx" >&2
  exit 2
}
export PATH="$PATH:/usr/sbin:${CARGO_HOME:-$HOME/.cargo}/bin"
if ! command -v oha >/dev/null 2>&1; then
  echo "installing oha (the load generator) with cargo install --locked oha" >&2
  cargo install --locked --quiet oha
fi

target_dir="${CARGO_TARGET_DIR:-target}"
if [ "$smoke" = 1 ]; then
  # Reuses the test build's artifacts; no second release build in CI.
  cargo build --locked --quiet -p switchyard -p switchyard-mock-backend
  bin_dir="$target_dir/debug"
else
  cargo build --locked --release --quiet -p switchyard -p switchyard-mock-backend
  bin_dir="$target_dir/release"
fi
exec python3 bench/harness.py --bin-dir "$bin_dir" --oha "$(command -v oha)" "$@"
