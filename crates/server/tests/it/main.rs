//! The gateway's integration tests, one binary (one link of the gateway and its engines):
//! real sockets, real SQLite files, real ONNX models, a real MLServer and a real browser.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod alerts;
mod auth;
mod binary;
mod dataplane;
mod disk;
mod experiments;
mod external_gates;
mod grpc;
mod limits;
mod mlserver;
mod oip_client;
mod onnx_engine;
mod onnx_sklearn;
mod provenance;
mod replay;
mod rollouts;
mod tls;
mod tree_engine_props;
mod ui;
