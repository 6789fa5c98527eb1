//! The switchyard gateway: the data plane in front of model backends, shadow dispatch, the
//! prediction log feed, metrics and the admin API.
//!
//! Only this crate (and the CLI) knows HTTP and JSON. Behaviour that can be pure lives in
//! `switchyard-core`; SQL lives in `switchyard-store`.

pub mod admin;
pub mod alerts;
pub mod api;
pub mod app;
pub mod auth;
pub mod backend;
pub mod client;
pub mod config_file;
pub mod conn_pool;
pub mod controller;
pub mod cores;
pub mod dataplane;
pub mod error;
pub mod feedback;
pub mod grpc;
pub mod grpc_wire;
pub mod hot_http1;
pub mod http_util;
pub mod json_scan;
pub mod metrics;
pub mod oip;
pub mod onnx;
pub mod protocol;
pub mod replay;
pub mod report;
pub mod runtime;
pub mod shadow;
pub mod state;
pub mod tensor;
pub mod tls;
pub mod ui;

pub use app::{Gateway, StartOptions};
pub use config_file::{load_config, parse_config, ConfigError};
