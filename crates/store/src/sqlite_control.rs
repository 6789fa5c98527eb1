//! Rollout state, the audit chain, alerts and their deliveries in SQLite: the tables (with
//! append-only triggers on `audit_events`) and every query the control store runs on one
//! connection. It exists so that `control::ControlStore` only dispatches; like
//! `pg_control`, it depends on the neutral `audit_chain` (chain, rows) and on
//! the SQLite plumbing (`sqlite`), never on the other backend.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use switchyard_core::audit::{Alert, AuditEvent};

use crate::audit_chain::{
    alert_from_parts, chain, seq_to_sql, DeliveryRow, RawEvent, RolloutRow, StoredEvent,
};
use crate::error::corrupt;
use crate::StoreError;

const CONTROL_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rollouts (
    name        TEXT PRIMARY KEY,
    spec        TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    updated_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rollout_results (
    name        TEXT PRIMARY KEY,
    aggregates  TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_events (
    seq         INTEGER PRIMARY KEY,
    rollout     TEXT    NOT NULL CHECK (rollout <> ''),
    ts_ms       INTEGER NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind <> ''),
    actor       TEXT    NOT NULL CHECK (actor <> ''),
    message     TEXT    NOT NULL,
    details     TEXT    NOT NULL,
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_events_rollout ON audit_events(rollout, seq);
CREATE TRIGGER IF NOT EXISTS audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER IF NOT EXISTS audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TABLE IF NOT EXISTS alerts (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout     TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    title       TEXT    NOT NULL,
    ts_ms       INTEGER NOT NULL,
    details     TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_deliveries (
    id          INTEGER PRIMARY KEY,
    alert_seq   INTEGER NOT NULL,
    url         TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    ts_ms       INTEGER NOT NULL,
    status      INTEGER,
    error       TEXT,
    delivered   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_deliveries_alert ON alert_deliveries(alert_seq);
";

/// How long `ControlStore::open` retries a file that is locked while being set up.
pub const OPEN_RETRY_FOR: Duration = Duration::from_secs(5);

/// Opens (creating if needed) the control tables in the SQLite file at `path`, with the same
/// connection settings as the prediction log (WAL, busy timeout).
///
/// Connections opening a new SQLite file at the same moment (log writer, controller and
/// alert sender at start-up) can find it locked while one of them switches it to WAL or
/// creates tables, and SQLite does not use the busy timeout for that; such failures are
/// retried for up to [`OPEN_RETRY_FOR`].
pub(crate) fn open(path: &Path) -> Result<Connection, StoreError> {
    let deadline = Instant::now() + OPEN_RETRY_FOR;
    let mut wait = Duration::from_millis(2);
    loop {
        match try_open(path) {
            Err(e) if is_locked(&e) && Instant::now() < deadline => {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(100));
            }
            result => return result,
        }
    }
}

fn try_open(path: &Path) -> Result<Connection, StoreError> {
    let conn = crate::sqlite::open(path)?;
    init(&conn)?;
    Ok(conn)
}

fn is_locked(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Creates the control tables, indexes and append-only triggers if they do not exist.
/// Runs under the write lock (taken with the busy timeout), so that it never has to upgrade a
/// read snapshot that another connection's DDL made stale.
fn init(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(&format!("BEGIN IMMEDIATE;{CONTROL_SCHEMA}COMMIT;"))?;
    Ok(())
}

fn raw_event_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawEvent> {
    Ok(RawEvent {
        seq: r.get(0)?,
        rollout: r.get(1)?,
        ts_ms: r.get(2)?,
        kind: r.get(3)?,
        actor: r.get(4)?,
        message: r.get(5)?,
        details: r.get(6)?,
        prev_hash: r.get(7)?,
        hash: r.get(8)?,
    })
}

fn rollout_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RolloutRow> {
    Ok(RolloutRow {
        name: r.get(0)?,
        spec: r.get(1)?,
        state: r.get(2)?,
        updated_ms: r.get(3)?,
    })
}

/// Appends `events` to the chain inside `tx`, which must hold the write lock.
fn append_in(
    tx: &rusqlite::Transaction<'_>,
    events: &[AuditEvent],
) -> Result<Vec<StoredEvent>, StoreError> {
    let head: Option<(i64, String)> = tx
        .query_row(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO audit_events
            (seq, rollout, ts_ms, kind, actor, message, details, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut stored = Vec::with_capacity(events.len());
    for (s, details_json) in chain(head, events)? {
        stmt.execute(params![
            seq_to_sql(s.seq)?,
            s.event.rollout,
            s.event.ts_ms,
            s.event.kind,
            s.event.actor,
            s.event.message,
            details_json,
            s.prev_hash,
            s.hash,
        ])?;
        stored.push(s);
    }
    Ok(stored)
}

/// Upserts the rollout row and appends `events` to the audit chain in one transaction.
pub(crate) fn save(
    conn: &mut Connection,
    name: &str,
    spec_json: &str,
    state_json: &str,
    now_ms: i64,
    events: &[AuditEvent],
) -> Result<Vec<StoredEvent>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.prepare_cached(
        "INSERT INTO rollouts (name, spec, state, updated_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(name) DO UPDATE SET
            spec = excluded.spec, state = excluded.state, updated_ms = excluded.updated_ms",
    )?
    .execute(params![name, spec_json, state_json, now_ms])?;
    let stored = append_in(&tx, events)?;
    tx.commit()?;
    Ok(stored)
}

/// Appends events that come without a state change.
pub(crate) fn append_events(
    conn: &mut Connection,
    events: &[AuditEvent],
) -> Result<Vec<StoredEvent>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let stored = append_in(&tx, events)?;
    tx.commit()?;
    Ok(stored)
}

/// Every rollout, by name.
pub(crate) fn rollouts(conn: &Connection) -> Result<Vec<RolloutRow>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT name, spec, state, updated_ms FROM rollouts ORDER BY name")?;
    let rows = stmt.query_map([], rollout_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn rollout(conn: &Connection, name: &str) -> Result<Option<RolloutRow>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT name, spec, state, updated_ms FROM rollouts WHERE name = ?1")?
        .query_row([name], rollout_from_row)
        .optional()?)
}

/// Forgets a rollout's state; its audit events stay. `true` when it existed.
pub(crate) fn delete_rollout(conn: &mut Connection, name: &str) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM rollouts WHERE name = ?1")?
        .execute([name])?;
    Ok(n > 0)
}

/// Audit rows in sequence order, all of them or one rollout's.
pub(crate) fn raw_events(
    conn: &Connection,
    rollout: Option<&str>,
) -> Result<Vec<RawEvent>, StoreError> {
    let sql = match rollout {
        Some(_) => format!(
            "SELECT {} FROM audit_events WHERE rollout = ?1 ORDER BY seq",
            RawEvent::COLUMNS
        ),
        None => format!(
            "SELECT {} FROM audit_events ORDER BY seq",
            RawEvent::COLUMNS
        ),
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = match rollout {
        Some(name) => stmt.query_map([name], raw_event_from_row)?,
        None => stmt.query_map([], raw_event_from_row)?,
    };
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Every audit row in sequence order, for `audit_chain::verify_rows` (an uncached
/// statement: it runs rarely).
pub(crate) fn chain_rows(conn: &Connection) -> Result<Vec<RawEvent>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {} FROM audit_events ORDER BY seq",
        RawEvent::COLUMNS
    ))?;
    let rows = stmt
        .query_map([], raw_event_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Stores an alert whose details are already encoded; returns its id.
pub(crate) fn record_alert(
    conn: &mut Connection,
    alert: &Alert,
    details: &str,
) -> Result<u64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO alerts (rollout, severity, kind, title, ts_ms, details)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        alert.rollout,
        alert.severity.as_str(),
        alert.kind,
        alert.title,
        alert.ts_ms,
        details,
    ])?;
    u64::try_from(conn.last_insert_rowid()).map_err(|e| corrupt("alert seq", e))
}

/// Stores one delivery attempt.
pub(crate) fn record_delivery(conn: &mut Connection, row: &DeliveryRow) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO alert_deliveries
            (alert_seq, url, attempt, ts_ms, status, error, delivered)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        seq_to_sql(row.alert_seq)?,
        row.url,
        row.attempt,
        row.ts_ms,
        row.status,
        row.error,
        row.delivered,
    ])?;
    Ok(())
}

/// Every delivery attempt, in the order they were recorded.
pub(crate) fn deliveries(conn: &Connection) -> Result<Vec<DeliveryRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT alert_seq, url, attempt, ts_ms, status, error, delivered
         FROM alert_deliveries ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            DeliveryRow {
                alert_seq: 0,
                url: r.get(1)?,
                attempt: r.get(2)?,
                ts_ms: r.get(3)?,
                status: r.get(4)?,
                error: r.get(5)?,
                delivered: r.get(6)?,
            },
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, row) = row?;
        out.push(DeliveryRow {
            alert_seq: u64::try_from(seq).map_err(|e| corrupt("alert seq", e))?,
            ..row
        });
    }
    Ok(out)
}

/// Every alert with its id, oldest first.
pub(crate) fn alerts(conn: &Connection) -> Result<Vec<(u64, Alert)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, rollout, severity, kind, title, ts_ms, details FROM alerts ORDER BY seq",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, String>(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, rollout, severity, kind, title, ts_ms, details) = row?;
        out.push(alert_from_parts(
            seq, rollout, &severity, kind, title, ts_ms, &details,
        )?);
    }
    Ok(out)
}

/// Keeps (replaces) a finished rollout's statistics.
pub(crate) fn save_result(
    conn: &Connection,
    name: &str,
    aggregates: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO rollout_results (name, aggregates) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET aggregates = excluded.aggregates",
    )?
    .execute([name, aggregates])?;
    Ok(())
}

/// A finished rollout's statistics, when kept.
pub(crate) fn result(conn: &Connection, name: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT aggregates FROM rollout_results WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

/// The rollouts whose statistics are kept.
pub(crate) fn result_names(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT name FROM rollout_results ORDER BY name")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
