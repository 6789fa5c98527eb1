//! The switchyard gateway: the data plane in front of model backends, shadow dispatch, the
//! prediction log feed, metrics and the admin API.
//!
//! Only this crate (and the CLI) knows HTTP and JSON. Behaviour that can be pure lives in
//! `switchyard-core`; SQL lives in `switchyard-store`.

pub mod admin;
pub mod alerts;
pub mod app;
pub mod backend;
pub mod config_file;
pub mod controller;
pub mod dataplane;
pub mod error;
pub mod feedback;
pub mod metrics;
pub mod onnx;
pub mod protocol;
pub mod report;
pub mod shadow;
pub mod ui;

pub use app::{Gateway, StartOptions};
pub use config_file::{load_config, parse_config, ConfigError};

/// Runs `f`, which waits on the store (an SQLite commit that may queue behind the log writer's,
/// a PostgreSQL round trip), without stalling the data plane: on a multi-threaded runtime the
/// calling worker first hands its queued requests to another worker
/// (`tokio::task::block_in_place`). Elsewhere (a current-thread runtime, as in most tests)
/// `f` simply runs.
pub(crate) fn off_the_request_path<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
