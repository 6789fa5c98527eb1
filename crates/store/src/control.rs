//! Rollout state and the audit trail: what the controller must find again after a crash, and
//! the record of every decision, kept tamper-evident.
//!
//! Both live in the same SQLite file as the prediction log, on their own connection (the log
//! writer thread has another one; WAL mode and the busy timeout set by [`crate::open`] let
//! them share the file).
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

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use sha2::{Digest, Sha256};
use switchyard_core::audit::{Alert, AuditEvent, Detail, Details, Severity};

use crate::error::corrupt;
use crate::pg::PgConn;
use crate::{pg_control, StoreError, StoreUrl};

const CONTROL_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rollouts (
    name        TEXT PRIMARY KEY,
    spec        TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    updated_ms  INTEGER NOT NULL
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

/// `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An audit event as stored, with its place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

/// The durable state of one rollout. `spec` and `state` are JSON text owned by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRow {
    pub name: String,
    pub spec: String,
    pub state: String,
    pub updated_ms: i64,
}

/// Outcome of [`ControlStore::verify_chain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Events read.
    pub events: u64,
    pub ok: bool,
    /// The first sequence number at which the chain breaks: an edited or moved event, or the
    /// first missing one.
    pub first_bad_seq: Option<u64>,
    pub problem: Option<String>,
}

/// One attempt to deliver an alert to a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub alert_seq: u64,
    pub url: String,
    /// 1-based.
    pub attempt: u32,
    pub ts_ms: i64,
    /// HTTP status, when the webhook answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub delivered: bool,
}

/// Rollout state, audit trail, alerts and their deliveries, on one SQLite connection.
#[derive(Debug)]
pub struct ControlStore {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Sqlite(Connection),
    Postgres(PgConn),
}

/// Details as stored: JSON has no NaN or infinity (serde_json would write `null`, which does
/// not read back as a [`Detail`]), so non-finite numbers are kept as their text.
pub(crate) fn normalize_details(details: &Details) -> Details {
    details
        .iter()
        .map(|(name, value)| {
            let value = match value {
                Detail::Num(x) if !x.is_finite() => Detail::Text(x.to_string()),
                other => other.clone(),
            };
            (name.clone(), value)
        })
        .collect()
}

pub(crate) fn details_to_json(details: &Details) -> Result<String, StoreError> {
    serde_json::to_string(details).map_err(|e| corrupt("details", e))
}

pub(crate) fn details_from_json(text: &str) -> Result<Details, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt("details", e))
}

fn json_str(s: &str) -> Result<String, StoreError> {
    serde_json::to_string(s).map_err(|e| corrupt("audit event", e))
}

/// The bytes an event's hash covers, apart from `prev_hash`.
pub(crate) fn canonical(
    seq: u64,
    rollout: &str,
    ts_ms: i64,
    kind: &str,
    actor: &str,
    message: &str,
    details_json: &str,
) -> Result<String, StoreError> {
    Ok(format!(
        "[{seq},{},{ts_ms},{},{},{},{details_json}]",
        json_str(rollout)?,
        json_str(kind)?,
        json_str(actor)?,
        json_str(message)?,
    ))
}

pub(crate) fn chain_hash(prev_hash: &str, canonical: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical.as_bytes());
    let digest = hasher.finalize();
    let mut out = String::with_capacity(64);
    for byte in digest.iter() {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// An audit row as read, before its details are parsed.
pub(crate) struct RawEvent {
    pub(crate) seq: i64,
    pub(crate) rollout: String,
    pub(crate) ts_ms: i64,
    pub(crate) kind: String,
    pub(crate) actor: String,
    pub(crate) message: String,
    pub(crate) details: String,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
}

impl RawEvent {
    pub(crate) const COLUMNS: &'static str =
        "seq, rollout, ts_ms, kind, actor, message, details, prev_hash, hash";

    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawEvent> {
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

    pub(crate) fn into_stored(self) -> Result<StoredEvent, StoreError> {
        let seq = u64::try_from(self.seq).map_err(|e| corrupt("audit seq", e))?;
        Ok(StoredEvent {
            seq,
            event: AuditEvent {
                rollout: self.rollout,
                ts_ms: self.ts_ms,
                kind: self.kind,
                actor: self.actor,
                message: self.message,
                details: details_from_json(&self.details)?,
            },
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

pub(crate) fn seq_to_sql(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|e| corrupt("audit seq", e))
}

/// Gives `events` their place in the chain after `head` (the last stored event's seq and
/// hash); returns each stored event with its details as stored.
pub(crate) fn chain(
    head: Option<(i64, String)>,
    events: &[AuditEvent],
) -> Result<Vec<(StoredEvent, String)>, StoreError> {
    let (mut seq, mut prev_hash) = match head {
        Some((seq, hash)) => (
            u64::try_from(seq).map_err(|e| corrupt("audit seq", e))?,
            hash,
        ),
        None => (0, GENESIS_HASH.to_string()),
    };
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        seq += 1;
        let details = normalize_details(&event.details);
        let details_json = details_to_json(&details)?;
        let text = canonical(
            seq,
            &event.rollout,
            event.ts_ms,
            &event.kind,
            &event.actor,
            &event.message,
            &details_json,
        )?;
        let hash = chain_hash(&prev_hash, &text);
        out.push((
            StoredEvent {
                seq,
                event: AuditEvent {
                    details,
                    ..event.clone()
                },
                prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
                hash,
            },
            details_json,
        ));
    }
    Ok(out)
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

/// Recomputes the chain over `rows` (in sequence order) and reports the first break: a gap in
/// the sequence (a deleted event), a `prev_hash` that does not match the previous event's hash
/// (deleted or reordered), or a hash that does not match the event's content (edited).
fn verify_rows(rows: impl IntoIterator<Item = RawEvent>) -> Result<ChainReport, StoreError> {
    let mut events = 0u64;
    let mut expected_seq = 1u64;
    let mut prev_hash = GENESIS_HASH.to_string();
    let mut first_bad: Option<(u64, String)> = None;
    for row in rows {
        events += 1;
        if first_bad.is_some() {
            continue;
        }
        let Ok(seq) = u64::try_from(row.seq) else {
            first_bad = Some((expected_seq, format!("event has invalid seq {}", row.seq)));
            continue;
        };
        if seq != expected_seq {
            let problem = if seq > expected_seq {
                format!(
                    "events {expected_seq}..{} are missing (next stored event is {seq})",
                    seq - 1
                )
            } else {
                format!("event {seq} appears where {expected_seq} was expected")
            };
            first_bad = Some((expected_seq, problem));
            continue;
        }
        if row.prev_hash != prev_hash {
            first_bad = Some((
                seq,
                format!(
                    "event {seq} does not follow event {}: its prev_hash is not that event's hash",
                    seq - 1
                ),
            ));
            continue;
        }
        let text = canonical(
            seq,
            &row.rollout,
            row.ts_ms,
            &row.kind,
            &row.actor,
            &row.message,
            &row.details,
        )?;
        let hash = chain_hash(&prev_hash, &text);
        if hash != row.hash {
            first_bad = Some((
                seq,
                format!("event {seq} was modified: its content does not match its hash"),
            ));
            continue;
        }
        prev_hash = row.hash;
        expected_seq += 1;
    }
    Ok(match first_bad {
        None => ChainReport {
            events,
            ok: true,
            first_bad_seq: None,
            problem: None,
        },
        Some((seq, problem)) => ChainReport {
            events,
            ok: false,
            first_bad_seq: Some(seq),
            problem: Some(problem),
        },
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
        let path = match url.into() {
            StoreUrl::Postgres(url) => {
                return Ok(ControlStore {
                    inner: Inner::Postgres(PgConn::open(&url)?),
                })
            }
            StoreUrl::Sqlite(path) => path,
        };
        let deadline = Instant::now() + OPEN_RETRY_FOR;
        let mut wait = Duration::from_millis(2);
        loop {
            match Self::try_open(&path) {
                Err(e) if is_locked(&e) && Instant::now() < deadline => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_millis(100));
                }
                result => return result,
            }
        }
    }

    fn try_open(path: &Path) -> Result<Self, StoreError> {
        let conn = crate::schema::open(path)?;
        init(&conn)?;
        Ok(ControlStore {
            inner: Inner::Sqlite(conn),
        })
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
            Inner::Sqlite(conn) => {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let stored = append_in(&tx, events)?;
                tx.commit()?;
                Ok(stored)
            }
            Inner::Postgres(pg) => {
                let events = events.to_vec();
                pg.with(move |c| {
                    let mut tx = c.transaction()?;
                    let stored = pg_control::append_in(&mut tx, &events)?;
                    tx.commit()?;
                    Ok(stored)
                })
            }
        }
    }

    /// Every rollout, by name.
    pub fn rollouts(&self) -> Result<Vec<RolloutRow>, StoreError> {
        match &self.inner {
            Inner::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(
                    "SELECT name, spec, state, updated_ms FROM rollouts ORDER BY name",
                )?;
                let rows = stmt.query_map([], rollout_from_row)?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
            Inner::Postgres(pg) => pg.with(|c| pg_control::rollouts(c, None)),
        }
    }

    pub fn rollout(&self, name: &str) -> Result<Option<RolloutRow>, StoreError> {
        match &self.inner {
            Inner::Sqlite(conn) => Ok(conn
                .prepare_cached(
                    "SELECT name, spec, state, updated_ms FROM rollouts WHERE name = ?1",
                )?
                .query_row([name], rollout_from_row)
                .optional()?),
            Inner::Postgres(pg) => {
                let name = name.to_string();
                pg.with(move |c| Ok(pg_control::rollouts(c, Some(&name))?.pop()))
            }
        }
    }

    /// Forgets a rollout's state; its audit events stay. `true` when it existed.
    pub fn delete_rollout(&mut self, name: &str) -> Result<bool, StoreError> {
        match &mut self.inner {
            Inner::Sqlite(conn) => {
                let n = conn
                    .prepare_cached("DELETE FROM rollouts WHERE name = ?1")?
                    .execute([name])?;
                Ok(n > 0)
            }
            Inner::Postgres(pg) => {
                let name = name.to_string();
                pg.with(move |c| {
                    Ok(c.execute("DELETE FROM rollouts WHERE name = $1", &[&name])? > 0)
                })
            }
        }
    }

    /// Audit events in sequence order, all of them or one rollout's.
    pub fn events(&self, rollout: Option<&str>) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = match &self.inner {
            Inner::Sqlite(conn) => {
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
                    Some(name) => stmt.query_map([name], RawEvent::from_row)?,
                    None => stmt.query_map([], RawEvent::from_row)?,
                };
                rows.collect::<Result<Vec<_>, _>>()?
            }
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
            Inner::Sqlite(conn) => {
                let mut stmt = conn.prepare(&format!(
                    "SELECT {} FROM audit_events ORDER BY seq",
                    RawEvent::COLUMNS
                ))?;
                let rows = stmt
                    .query_map([], RawEvent::from_row)?
                    .collect::<Result<Vec<_>, _>>()?;
                verify_rows(rows)
            }
            Inner::Postgres(pg) => verify_rows(pg.with(|c| pg_control::raw_events(c, None))?),
        }
    }

    /// Stores an alert; returns its id (used as `alert_id` in webhook payloads).
    pub fn record_alert(&mut self, alert: &Alert) -> Result<u64, StoreError> {
        let details = details_to_json(&normalize_details(&alert.details))?;
        match &mut self.inner {
            Inner::Sqlite(conn) => {
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
            Inner::Postgres(pg) => {
                let alert = alert.clone();
                pg.with(move |c| pg_control::record_alert(c, &alert, &details))
            }
        }
    }

    /// Stores one delivery attempt.
    pub fn record_delivery(&mut self, row: &DeliveryRow) -> Result<(), StoreError> {
        match &mut self.inner {
            Inner::Sqlite(conn) => {
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
            Inner::Postgres(pg) => {
                let row = row.clone();
                pg.with(move |c| pg_control::record_delivery(c, &row))
            }
        }
    }

    /// Every delivery attempt, in the order they were recorded.
    pub fn deliveries(&self) -> Result<Vec<DeliveryRow>, StoreError> {
        let conn = match &self.inner {
            Inner::Sqlite(conn) => conn,
            Inner::Postgres(pg) => return pg.with(pg_control::deliveries),
        };
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
    pub fn alerts(&self) -> Result<Vec<(u64, Alert)>, StoreError> {
        let conn = match &self.inner {
            Inner::Sqlite(conn) => conn,
            Inner::Postgres(pg) => return pg.with(pg_control::alerts),
        };
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
}

/// An alert row as read.
pub(crate) fn alert_from_parts(
    seq: i64,
    rollout: String,
    severity: &str,
    kind: String,
    title: String,
    ts_ms: i64,
    details: &str,
) -> Result<(u64, Alert), StoreError> {
    Ok((
        u64::try_from(seq).map_err(|e| corrupt("alert seq", e))?,
        Alert {
            rollout,
            severity: Severity::parse(severity)
                .ok_or_else(|| corrupt("alert severity", severity))?,
            kind,
            title,
            ts_ms,
            details: details_from_json(details)?,
        },
    ))
}

/// Creates the control tables, indexes and append-only triggers if they do not exist.
/// Runs under the write lock (taken with the busy timeout), so that it never has to upgrade a
/// read snapshot that another connection's DDL made stale.
pub(crate) fn init(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(&format!("BEGIN IMMEDIATE;{CONTROL_SCHEMA}COMMIT;"))?;
    Ok(())
}

/// How long [`ControlStore::open`] retries a file that is locked while being set up.
pub const OPEN_RETRY_FOR: Duration = Duration::from_secs(5);

fn is_locked(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_is_64_zeros() {
        assert_eq!(GENESIS_HASH.len(), 64);
        assert!(GENESIS_HASH.bytes().all(|b| b == b'0'));
    }

    #[test]
    fn chain_hash_is_sha256_hex() {
        // sha256("\n") with an empty prev hash and empty canonical text.
        assert_eq!(
            chain_hash("", ""),
            "01ba4719c80b6fe911b091a7c05124b64eeece964e09c058ef8f9805daca546b"
        );
    }

    #[test]
    fn canonical_has_fixed_field_order() {
        let text = canonical(7, "r\"1", -5, "promoted", "cli", "ok", "[[\"p\",0.5]]").unwrap();
        assert_eq!(text, r#"[7,"r\"1",-5,"promoted","cli","ok",[["p",0.5]]]"#);
    }

    #[test]
    fn non_finite_details_are_kept_as_text() {
        let d: Details = vec![
            ("nan".into(), Detail::Num(f64::NAN)),
            ("inf".into(), Detail::Num(f64::INFINITY)),
            ("x".into(), Detail::Num(1.5)),
        ];
        let back = details_from_json(&details_to_json(&normalize_details(&d)).unwrap()).unwrap();
        assert_eq!(
            back,
            vec![
                ("nan".to_string(), Detail::Text("NaN".into())),
                ("inf".to_string(), Detail::Text("inf".into())),
                ("x".to_string(), Detail::Num(1.5)),
            ]
        );
    }
}
