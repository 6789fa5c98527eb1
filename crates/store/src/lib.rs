//! Durable state of switchyard in SQLite: the prediction log, feedback, and (with the
//! controller) rollout state and the audit trail. The only crate that knows SQL.
//!
//! Writes go through one writer thread ([`log::spawn_log_writer`]) fed by a bounded queue:
//! the request path only ever does a non-blocking `try_send`, and records that do not fit are
//! dropped and counted, never waited for. The writer commits in batches (one transaction per
//! batch, WAL mode) and then folds the committed records into the in-memory
//! [`switchyard_core::Aggregates`] that the controller reads.

pub mod control;
mod error;
pub mod log;
mod schema;

pub use control::{ChainReport, ControlStore, DeliveryRow, RolloutRow, StoredEvent};
pub use error::StoreError;
pub use log::{
    open_reader, rebuild_aggregates, spawn_log_writer, FeedbackOutcome, LogHandle, LogStats,
    LogWriterConfig,
};
pub use schema::{count_records, disagreements, open, read_log, Disagreement, FeedbackRow, LogRow};
