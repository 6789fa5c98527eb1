//! Rollout state and the audit trail: what the controller must find again after a crash, and
//! the record of every decision, kept tamper-evident.
//!
//! Both live in the same SQLite file as the prediction log, on their own connection (the log
//! writer thread has another one; WAL mode and the busy timeout set by `open` let
//! them share the file), or in PostgreSQL.
//!
//! This module only dispatches: [`ControlStore`] holds either backend and calls the SQLite or
//! the PostgreSQL module (`sqlite_control`, `pg_control`); both depend on a neutral module,
//! `audit_chain` (the chain and the rows, re-exported here), and never on each other.
//!
//! # Atomicity
//!
//! [`ControlStore::save`] upserts a rollout's state and appends its audit events in one
//! transaction: a state change and the events that explain it are committed together or not
//! at all, so after a `kill -9` the recorded step always has its audit trail.
//!
//! # Tamper evidence
//!
//! Audit events form a hash chain. Event `seq` (1, 2, 3, … with no gaps) stores
//! `hash = hex(sha256(prev_hash || "\n" || canonical))`, where `prev_hash` is the hash of event
//! `seq - 1` (64 zeros for the first event) and `canonical` is the JSON array
//! `[seq, rollout, ts_ms, kind, actor, message, details]`, with `details` embedded exactly as
//! stored (so re-reading floats can never make a sound chain look broken).
//!
//! Triggers make the `audit_events` table append-only for ordinary SQL: an `UPDATE` or `DELETE`
//! aborts. Someone with write access to the file can drop the triggers, which is what
//! [`ControlStore::verify_chain`] is for: it recomputes every hash in order and names the first
//! event that was edited, removed or moved. Two limits remain, as with any chain without an
//! external anchor: removing events from the *end* leaves a valid (shorter) chain, and someone
//! who rewrites every hash from the edited event onwards produces a valid chain. Publishing the
//! head hash elsewhere (logs, alerts) closes both.

use switchyard_core::audit::{Alert, AuditEvent};
use switchyard_core::Aggregates;

use crate::audit_chain::{details_to_json, normalize_details, verify_rows, RawEvent};
use crate::pg::PgConn;
use crate::wire::{decode_aggregates, encode_aggregates};
use crate::{pg_control, sqlite_control, StoreError, StoreUrl};

pub use crate::audit_chain::{ChainReport, DeliveryRow, RolloutRow, StoredEvent, GENESIS_HASH};
pub use crate::sqlite_control::OPEN_RETRY_FOR;

/// Rollout state, audit trail, alerts and their deliveries, on one SQLite connection or one
/// PostgreSQL session.
#[derive(Debug)]
pub struct ControlStore {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Sqlite(rusqlite::Connection),
    Postgres(PgConn),
}

impl ControlStore {
    /// Opens (creating if needed) the store at `url`: a SQLite file (a path converts) with the
    /// same connection settings as the prediction log (WAL, busy timeout), or a PostgreSQL
    /// database (a session on its own thread).
    ///
    /// Connections opening a new SQLite file at the same moment (log writer, controller and
    /// alert sender at start-up) can find it locked while one of them switches it to WAL or
    /// creates tables, and SQLite does not use the busy timeout for that; such failures are
    /// retried for up to [`OPEN_RETRY_FOR`].
    pub fn open(url: impl Into<StoreUrl>) -> Result<Self, StoreError> {
        let inner = match url.into() {
            StoreUrl::Postgres(url) => Inner::Postgres(PgConn::open(&url)?),
            StoreUrl::Sqlite(path) => Inner::Sqlite(sqlite_control::open(&path)?),
        };
        Ok(ControlStore { inner })
    }

    /// A control store on an existing PostgreSQL session (the cluster's, so that the
    /// controller's writes go through the session holding the controller lock).
    pub(crate) fn on_session(conn: PgConn) -> Self {
        ControlStore {
            inner: Inner::Postgres(conn),
        }
    }

    /// Upserts the rollout row and appends `events` to the audit chain in one transaction.
    /// Returns the stored events (non-finite numbers in details are stored as text). With
    /// PostgreSQL, a session that held the controller lock and lost it refuses to write.
    pub fn save(
        &mut self,
        name: &str,
        spec_json: &str,
        state_json: &str,
        now_ms: i64,
        events: &[AuditEvent],
    ) -> Result<Vec<StoredEvent>, StoreError> {
        match &mut self.inner {
            Inner::Sqlite(conn) => {
                sqlite_control::save(conn, name, spec_json, state_json, now_ms, events)
            }
            Inner::Postgres(pg) => {
                let (name, spec, state, events) = (
                    name.to_string(),
                    spec_json.to_string(),
                    state_json.to_string(),
                    events.to_vec(),
                );
                pg.with(move |c| pg_control::save(c, &name, &spec, &state, now_ms, &events))
            }
        }
    }

    /// Appends events that come without a state change.
    pub fn append_events(&mut self, events: &[AuditEvent]) -> Result<Vec<StoredEvent>, StoreError> {
        match &mut self.inner {
            Inner::Sqlite(conn) => sqlite_control::append_events(conn, events),
            Inner::Postgres(pg) => {
                let events = events.to_vec();
                pg.with(move |c| pg_control::append_events(c, &events))
            }
        }
    }

    /// Every rollout, by name.
    pub fn rollouts(&self) -> Result<Vec<RolloutRow>, StoreError> {
        match &self.inner {
            Inner::Sqlite(conn) => sqlite_control::rollouts(conn),
            Inner::Postgres(pg) => pg.with(|c| pg_control::rollouts(c, None)),
        }
    }

    pub fn rollout(&self, name: &str) -> Result<Option<RolloutRow>, StoreError> {
        match &self.inner {
            Inner::Sqlite(conn) => sqlite_control::rollout(conn, name),
            Inner::Postgres(pg) => {
                let name = name.to_string();
                pg.with(move |c| Ok(pg_control::rollouts(c, Some(&name))?.pop()))
            }
        }
    }

    /// Keeps a finished rollout's statistics (its model's series and pairs from its first
    /// routing epoch, as they stood when it ended), so its report outlives the in-memory
    /// aggregates, which fold old epochs together.
    pub fn save_result(&mut self, name: &str, aggregates: &Aggregates) -> Result<(), StoreError> {
        let text = encode_aggregates(aggregates)?;
        match &mut self.inner {
            Inner::Sqlite(conn) => sqlite_control::save_result(conn, name, &text),
            Inner::Postgres(pg) => {
                let name = name.to_string();
                pg.with(move |c| pg_control::save_result(c, &name, &text))
            }
        }
    }

    /// A finished rollout's statistics, when kept.
    pub fn result(&self, name: &str) -> Result<Option<Aggregates>, StoreError> {
        let text = match &self.inner {
            Inner::Sqlite(conn) => sqlite_control::result(conn, name)?,
            Inner::Postgres(pg) => {
                let name = name.to_string();
                pg.with(move |c| pg_control::result(c, &name))?
            }
        };
        text.map(|t| decode_aggregates(&t)).transpose()
    }

    /// The rollouts whose statistics are kept.
    pub fn result_names(&self) -> Result<Vec<String>, StoreError> {
        match &self.inner {
            Inner::Sqlite(conn) => sqlite_control::result_names(conn),
            Inner::Postgres(pg) => pg.with(pg_control::result_names),
        }
    }

    /// Forgets a rollout's state; its audit events stay. `true` when it existed.
    pub fn delete_rollout(&mut self, name: &str) -> Result<bool, StoreError> {
        match &mut self.inner {
            Inner::Sqlite(conn) => sqlite_control::delete_rollout(conn, name),
            Inner::Postgres(pg) => {
                let name = name.to_string();
                pg.with(move |c| pg_control::delete_rollout(c, &name))
            }
        }
    }

    /// Audit events in sequence order, all of them or one rollout's.
    pub fn events(&self, rollout: Option<&str>) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = match &self.inner {
            Inner::Sqlite(conn) => sqlite_control::raw_events(conn, rollout)?,
            Inner::Postgres(pg) => {
                let rollout = rollout.map(str::to_string);
                pg.with(move |c| pg_control::raw_events(c, rollout.as_deref()))?
            }
        };
        rows.into_iter().map(RawEvent::into_stored).collect()
    }

    /// Recomputes the whole chain in sequence order and reports the first break: a gap in the
    /// sequence (a deleted event), a `prev_hash` that does not match the previous event's hash
    /// (deleted or reordered), or a hash that does not match the event's content (edited).
    pub fn verify_chain(&self) -> Result<ChainReport, StoreError> {
        match &self.inner {
            Inner::Sqlite(conn) => verify_rows(sqlite_control::chain_rows(conn)?),
            Inner::Postgres(pg) => verify_rows(pg.with(|c| pg_control::raw_events(c, None))?),
        }
    }

    /// Stores an alert; returns its id (used as `alert_id` in webhook payloads).
    pub fn record_alert(&mut self, alert: &Alert) -> Result<u64, StoreError> {
        let details = details_to_json(&normalize_details(&alert.details))?;
        match &mut self.inner {
            Inner::Sqlite(conn) => sqlite_control::record_alert(conn, alert, &details),
            Inner::Postgres(pg) => {
                let alert = alert.clone();
                pg.with(move |c| pg_control::record_alert(c, &alert, &details))
            }
        }
    }

    /// Stores one delivery attempt.
    pub fn record_delivery(&mut self, row: &DeliveryRow) -> Result<(), StoreError> {
        match &mut self.inner {
            Inner::Sqlite(conn) => sqlite_control::record_delivery(conn, row),
            Inner::Postgres(pg) => {
                let row = row.clone();
                pg.with(move |c| pg_control::record_delivery(c, &row))
            }
        }
    }

    /// Every delivery attempt, in the order they were recorded.
    pub fn deliveries(&self) -> Result<Vec<DeliveryRow>, StoreError> {
        match &self.inner {
            Inner::Sqlite(conn) => sqlite_control::deliveries(conn),
            Inner::Postgres(pg) => pg.with(pg_control::deliveries),
        }
    }

    /// Every alert with its id, oldest first.
    pub fn alerts(&self) -> Result<Vec<(u64, Alert)>, StoreError> {
        match &self.inner {
            Inner::Sqlite(conn) => sqlite_control::alerts(conn),
            Inner::Postgres(pg) => pg.with(pg_control::alerts),
        }
    }
}
