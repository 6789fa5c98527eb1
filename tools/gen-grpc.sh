#!/usr/bin/env bash
# Regenerates the committed gRPC code of the Open Inference Protocol v2 service
# (crates/server/src/grpc_wire/inference.rs) from crates/server/proto/grpc_predict_v2.proto.
# Needs protoc (Debian: apt-get install protobuf-compiler). A normal build does not run this.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "protoc is needed: apt-get install protobuf-compiler" >&2; exit 1; }
CARGO_TARGET_DIR="${GEN_GRPC_TARGET_DIR:-target/gen-grpc}" \
  cargo run --quiet --locked --manifest-path tools/gen-grpc/Cargo.toml
rustfmt --edition 2021 crates/server/src/grpc_wire/inference.rs
echo "wrote crates/server/src/grpc_wire/inference.rs"
