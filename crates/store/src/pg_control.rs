//! Rollout state, the audit chain and alerts in PostgreSQL: the same tables and rules as in
//! SQLite (`sqlite_control`), written by whichever replica holds the controller lock.
//! It exists so that `control::ControlStore` only dispatches; it depends on the
//! neutral `audit_chain` and the PostgreSQL plumbing (`pg`), never on the
//! SQLite backend or on the dispatcher.
//!
//! The audit chain is appended under a transaction-scoped advisory lock, so two writers can
//! never both read the same head and fork the chain; triggers make the table append-only for
//! ordinary SQL (`UPDATE`, `DELETE`, `TRUNCATE`).

use postgres::{Client, Transaction};
use switchyard_core::audit::{Alert, AuditEvent};

use crate::audit_chain::{
    alert_from_parts, chain, seq_to_sql, DeliveryRow, RawEvent, RolloutRow, StoredEvent,
};
use crate::error::corrupt;
use crate::pg::AUDIT_LOCK;
use crate::StoreError;

pub(crate) fn save(
    client: &mut Client,
    name: &str,
    spec: &str,
    state: &str,
    now_ms: i64,
    events: &[AuditEvent],
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut tx = client.transaction()?;
    tx.execute(
        "INSERT INTO rollouts (name, spec, state, updated_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO UPDATE SET
            spec = excluded.spec, state = excluded.state, updated_ms = excluded.updated_ms",
        &[&name, &spec, &state, &now_ms],
    )?;
    let stored = append_in(&mut tx, events)?;
    tx.commit()?;
    Ok(stored)
}

/// Appends events that come without a state change.
pub(crate) fn append_events(
    client: &mut Client,
    events: &[AuditEvent],
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut tx = client.transaction()?;
    let stored = append_in(&mut tx, events)?;
    tx.commit()?;
    Ok(stored)
}

fn append_in(
    tx: &mut Transaction<'_>,
    events: &[AuditEvent],
) -> Result<Vec<StoredEvent>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])?;
    let head = tx
        .query_opt(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
            &[],
        )?
        .map(|r| -> Result<(i64, String), StoreError> { Ok((r.try_get(0)?, r.try_get(1)?)) })
        .transpose()?;
    let insert = tx.prepare(
        "INSERT INTO audit_events
            (seq, rollout, ts_ms, kind, actor, message, details, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )?;
    let mut stored = Vec::with_capacity(events.len());
    for (s, details_json) in chain(head, events)? {
        tx.execute(
            &insert,
            &[
                &seq_to_sql(s.seq)?,
                &s.event.rollout,
                &s.event.ts_ms,
                &s.event.kind,
                &s.event.actor,
                &s.event.message,
                &details_json,
                &s.prev_hash,
                &s.hash,
            ],
        )?;
        stored.push(s);
    }
    Ok(stored)
}

pub(crate) fn rollouts(
    client: &mut Client,
    name: Option<&str>,
) -> Result<Vec<RolloutRow>, StoreError> {
    let rows = match name {
        Some(name) => client.query(
            "SELECT name, spec, state, updated_ms FROM rollouts WHERE name = $1",
            &[&name],
        )?,
        None => client.query(
            "SELECT name, spec, state, updated_ms FROM rollouts ORDER BY name",
            &[],
        )?,
    };
    rows.iter()
        .map(|r| {
            Ok(RolloutRow {
                name: r.try_get(0)?,
                spec: r.try_get(1)?,
                state: r.try_get(2)?,
                updated_ms: r.try_get(3)?,
            })
        })
        .collect()
}

/// Forgets a rollout's state; its audit events stay. `true` when it existed.
pub(crate) fn delete_rollout(client: &mut Client, name: &str) -> Result<bool, StoreError> {
    Ok(client.execute("DELETE FROM rollouts WHERE name = $1", &[&name])? > 0)
}

pub(crate) fn raw_events(
    client: &mut Client,
    rollout: Option<&str>,
) -> Result<Vec<RawEvent>, StoreError> {
    let rows = match rollout {
        Some(name) => client.query(
            &format!(
                "SELECT {} FROM audit_events WHERE rollout = $1 ORDER BY seq",
                RawEvent::COLUMNS
            ),
            &[&name],
        )?,
        None => client.query(
            &format!(
                "SELECT {} FROM audit_events ORDER BY seq",
                RawEvent::COLUMNS
            ),
            &[],
        )?,
    };
    rows.iter()
        .map(|r| {
            Ok(RawEvent {
                seq: r.try_get(0)?,
                rollout: r.try_get(1)?,
                ts_ms: r.try_get(2)?,
                kind: r.try_get(3)?,
                actor: r.try_get(4)?,
                message: r.try_get(5)?,
                details: r.try_get(6)?,
                prev_hash: r.try_get(7)?,
                hash: r.try_get(8)?,
            })
        })
        .collect()
}

pub(crate) fn record_alert(
    client: &mut Client,
    alert: &Alert,
    details: &str,
) -> Result<u64, StoreError> {
    let row = client.query_one(
        "INSERT INTO alerts (rollout, severity, kind, title, ts_ms, details)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
        &[
            &alert.rollout,
            &alert.severity.as_str(),
            &alert.kind,
            &alert.title,
            &alert.ts_ms,
            &details,
        ],
    )?;
    let seq: i64 = row.try_get(0)?;
    u64::try_from(seq).map_err(|e| corrupt("alert seq", e))
}

pub(crate) fn record_delivery(client: &mut Client, row: &DeliveryRow) -> Result<(), StoreError> {
    client.execute(
        "INSERT INTO alert_deliveries (alert_seq, url, attempt, ts_ms, status, error, delivered)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &seq_to_sql(row.alert_seq)?,
            &row.url,
            &i32::try_from(row.attempt).unwrap_or(i32::MAX),
            &row.ts_ms,
            &row.status.map(i32::from),
            &row.error,
            &row.delivered,
        ],
    )?;
    Ok(())
}

pub(crate) fn deliveries(client: &mut Client) -> Result<Vec<DeliveryRow>, StoreError> {
    let rows = client.query(
        "SELECT alert_seq, url, attempt, ts_ms, status, error, delivered
         FROM alert_deliveries ORDER BY id",
        &[],
    )?;
    rows.iter()
        .map(|r| {
            Ok(DeliveryRow {
                alert_seq: u64::try_from(r.try_get::<_, i64>(0)?)
                    .map_err(|e| corrupt("alert seq", e))?,
                url: r.try_get(1)?,
                attempt: u32::try_from(r.try_get::<_, i32>(2)?)
                    .map_err(|e| corrupt("attempt", e))?,
                ts_ms: r.try_get(3)?,
                status: r
                    .try_get::<_, Option<i32>>(4)?
                    .map(u16::try_from)
                    .transpose()
                    .map_err(|e| corrupt("status", e))?,
                error: r.try_get(5)?,
                delivered: r.try_get(6)?,
            })
        })
        .collect()
}

pub(crate) fn alerts(client: &mut Client) -> Result<Vec<(u64, Alert)>, StoreError> {
    let rows = client.query(
        "SELECT seq, rollout, severity, kind, title, ts_ms, details FROM alerts ORDER BY seq",
        &[],
    )?;
    rows.iter()
        .map(|r| {
            let severity: String = r.try_get(2)?;
            let details: String = r.try_get(6)?;
            alert_from_parts(
                r.try_get(0)?,
                r.try_get(1)?,
                &severity,
                r.try_get(3)?,
                r.try_get(4)?,
                r.try_get(5)?,
                &details,
            )
        })
        .collect()
}

/// Keeps (replaces) a finished rollout's statistics.
pub(crate) fn save_result(
    client: &mut Client,
    name: &str,
    aggregates: &str,
) -> Result<(), StoreError> {
    client.execute(
        "INSERT INTO rollout_results (name, aggregates) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET aggregates = EXCLUDED.aggregates",
        &[&name, &aggregates],
    )?;
    Ok(())
}

/// A finished rollout's statistics, when kept.
pub(crate) fn result(client: &mut Client, name: &str) -> Result<Option<String>, StoreError> {
    Ok(client
        .query_opt(
            "SELECT aggregates FROM rollout_results WHERE name = $1",
            &[&name],
        )?
        .map(|r| r.try_get(0))
        .transpose()?)
}

/// The rollouts whose statistics are kept.
pub(crate) fn result_names(client: &mut Client) -> Result<Vec<String>, StoreError> {
    client
        .query("SELECT name FROM rollout_results ORDER BY name", &[])?
        .iter()
        .map(|r| Ok(r.try_get(0)?))
        .collect()
}
