#!/usr/bin/env bash
# The OIP gRPC endpoint vs REST through one release gateway against the same mock-backend
# (crates/server/benches/grpc_vs_rest.rs prints the table; BENCHMARKS.md has a run).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p switchyard-mock-backend
cargo bench --locked -p switchyard-server --bench grpc_vs_rest --no-run
target="${CARGO_TARGET_DIR:-target}"
out=$(mktemp)
"$target/release/mock-backend" --listen 127.0.0.1:0 --threads 1 >"$out" &
mock=$!
trap 'kill $mock 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.05; done
MOCK_BACKEND=$(head -1 "$out") cargo bench --locked -p switchyard-server --bench grpc_vs_rest
