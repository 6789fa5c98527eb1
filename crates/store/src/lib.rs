//! Durable state of switchyard: the prediction log, feedback, rollout state and the audit
//! trail, in SQLite (one gateway) or PostgreSQL (several replicas). The only crate that knows
//! SQL.
//!
//! Writes go through one writer thread ([`log::spawn_log_writer`]) fed by a bounded queue:
//! the request path only ever does a non-blocking `try_send`, and records that do not fit are
//! dropped and counted, never waited for. The writer commits in batches (one transaction per
//! batch) and then folds the committed records into the in-memory
//! [`switchyard_core::Aggregates`] that the controller reads. With PostgreSQL, [`Cluster`]
//! coordinates replicas: one controller, one routing table, merged statistics.

mod audit_chain;
pub mod cluster;
pub mod control;
mod error;
pub mod log;
mod pg;
mod pg_control;
mod pg_log;
mod schema;
mod sqlite_control;
pub mod testing;
mod url;
pub mod wire;

pub use cluster::{Cluster, Leader};
pub use control::{ChainReport, ControlStore, DeliveryRow, RolloutRow, StoredEvent};
pub use error::StoreError;
pub use log::{
    open_reader, rebuild_aggregates, spawn_log_writer, FeedbackOutcome, LogHandle, LogStats,
    LogWriterConfig,
};
pub use schema::{
    count_records, disagreements, disagreements_at, open, read_log, Disagreement, FeedbackRow,
    LogRow,
};
pub use url::StoreUrl;
