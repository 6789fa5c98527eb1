//! Writes `crates/server/src/grpc_wire/inference.rs` from `crates/server/proto/grpc_predict_v2.proto`.
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let proto_dir = root.join("crates/server/proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(root.join("crates/server/src/grpc_wire"))
        .compile_protos(&[proto_dir.join("grpc_predict_v2.proto")], &[proto_dir])?;
    Ok(())
}
