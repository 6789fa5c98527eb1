#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 30 s each).
#
#   tools/fuzz.sh [seconds] [target...]      targets: config rollout request feedback
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a C++ compiler. cargo-fuzz wants nightly;
# on a stable toolchain RUSTC_BOOTSTRAP=1 unlocks the flags it uses (set here unless a nightly
# toolchain is selected). The committed seeds in fuzz/corpus/<target> are read, never written:
# new inputs go to fuzz/target/corpus/<target>, crashes to fuzz/artifacts/<target>.
set -euo pipefail

seconds="${1:-30}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(config rollout request feedback)
fi

cd "$(dirname "$0")/../fuzz"
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

cargo fuzz build
status=0
for target in "${targets[@]}"; do
    work="target/corpus/${target}"
    mkdir -p "$work"
    echo "== ${target}: ${seconds}s"
    if ! cargo fuzz run "$target" "$work" "corpus/${target}" -- \
        -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1; then
        echo "!! ${target}: failure; see fuzz/artifacts/${target}" >&2
        status=1
    fi
done
exit "$status"
