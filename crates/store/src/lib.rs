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

mod artefacts;
mod audit_chain;
pub mod cluster;
pub mod control;
mod error;
pub mod log;
mod log_rows;
mod pg;
mod pg_control;
mod pg_log;
mod spans;
mod sqlite;
mod sqlite_control;
mod sqlite_log;
#[cfg(feature = "testing")]
pub mod testing;
mod url;
pub mod wire;

pub use artefacts::StoredArtefact;
pub use cluster::{Cluster, Leader};
pub use control::{ChainReport, ControlStore, DeliveryRow, RolloutRow, StoredEvent};
pub use error::StoreError;
pub use log::{
    artefacts_at, captured_requests_at, check_artefacts_at, disagreements_at, open_reader,
    rebuild_aggregates, restore_aggregates, spawn_log_writer, FeedbackOutcome, LogHandle, LogStats,
    LogWriterConfig, Retention, DEFAULT_RETENTION_BATCH, DEFAULT_SNAPSHOT_EVERY,
};
pub use log_rows::{CapturedQuery, CapturedRequest, Disagreement, FeedbackRow, LogRow};
pub use sqlite::open;
pub use sqlite_log::{
    artefacts, captured_requests, count_records, disagreements, read_log,
    rebuild_aggregates_in_memory,
};
pub use url::StoreUrl;
