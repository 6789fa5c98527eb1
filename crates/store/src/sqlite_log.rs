//! The prediction log in SQLite: row encoding, the log writer's sink (one transaction per
//! batch), feedback, and the reads (`read_log`, `disagreements`, recounts). It exists so that
//! the writer (`log`) only dispatches; like `pg_log`, it depends on the
//! neutral `log_rows` and on the SQLite plumbing (`sqlite`), never on the
//! other backend.

use rusqlite::{params, Connection, OptionalExtension};
use switchyard_core::{Aggregates, Feedback, Outcome, Prediction, PredictionRecord, Role, Truth};

use crate::error::corrupt;
use crate::log_rows::{
    feedback_from_json, feedback_to_json, fold_log, segments_from_text, segments_to_text,
    store_feedback, CapturedQuery, CapturedRequest, Disagreement, FeedbackRow, FeedbackTx,
    Labelled, LogRow, Prune, Sink, StreamFold,
};
use crate::wire::{decode_aggregates, encode_aggregates};
use crate::StoreError;

fn insert_record(
    stmt: &mut rusqlite::CachedStatement<'_>,
    rec: &PredictionRecord,
) -> Result<(), StoreError> {
    let output = serde_json::to_string(&rec.output).map_err(|e| corrupt("output", e))?;
    let segments = segments_to_text(&rec.segments)?;
    stmt.execute(params![
        rec.request_id,
        rec.ts_ms,
        rec.model,
        rec.epoch as i64,
        rec.variant,
        rec.role.as_str(),
        rec.version,
        rec.key_hash.map(|h| h as i64),
        rec.outcome.as_str(),
        rec.status,
        rec.latency_us as i64,
        output,
        rec.input,
        rec.pair.as_ref().map(|p| p.version.as_str()),
        segments,
    ])?;
    Ok(())
}

const INSERT_RECORD: &str = "INSERT INTO predictions
    (request_id, ts_ms, model, epoch, variant, role, version, key_hash, outcome, status,
     latency_us, output, input, paired_version, segments)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";

const SELECT_RECORD: &str = "SELECT request_id, ts_ms, model, epoch, variant, role, version,
    key_hash, outcome, status, latency_us, output, input, paired_version, segments
    FROM predictions";

fn row_to_record(row: &rusqlite::Row<'_>) -> Result<Result<LogRow, StoreError>, rusqlite::Error> {
    let role: String = row.get(5)?;
    let outcome: String = row.get(8)?;
    let output: String = row.get(11)?;
    let segments: Option<String> = row.get(14)?;
    let build = || -> Result<LogRow, StoreError> {
        Ok(LogRow {
            record: PredictionRecord {
                request_id: row.get(0)?,
                ts_ms: row.get(1)?,
                model: row.get(2)?,
                epoch: row.get::<_, i64>(3)? as u64,
                variant: row.get(4)?,
                role: Role::parse(&role).ok_or_else(|| corrupt("role", &role))?,
                version: row.get(6)?,
                key_hash: row.get::<_, Option<i64>>(7)?.map(|h| h as u64),
                outcome: Outcome::parse(&outcome).ok_or_else(|| corrupt("outcome", &outcome))?,
                status: row.get(9)?,
                latency_us: row.get::<_, i64>(10)? as u64,
                output: serde_json::from_str::<Prediction>(&output)
                    .map_err(|e| corrupt("output", e))?,
                input: row.get(12)?,
                pair: None,
                segments: segments_from_text(segments.as_deref())?,
            },
            paired_version: row.get(13)?,
        })
    };
    Ok(build())
}

/// Every record of one request, serving first.
fn records_of(conn: &Connection, request_id: &str) -> Result<Vec<LogRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT_RECORD} WHERE request_id = ?1 ORDER BY role DESC, id"
    ))?;
    let rows = stmt.query_map([request_id], row_to_record)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row??);
    }
    Ok(out)
}

/// Reads the whole log in insertion order, with feedback per request id (for recounts,
/// rebuilding aggregates after a restart, and reports).
pub fn read_log(conn: &Connection) -> Result<(Vec<LogRow>, Vec<FeedbackRow>), StoreError> {
    let mut stmt = conn.prepare(&format!("{SELECT_RECORD} ORDER BY id"))?;
    let rows = stmt.query_map([], row_to_record)?;
    let mut records = Vec::new();
    for row in rows {
        records.push(row??);
    }
    let mut stmt =
        conn.prepare("SELECT request_id, truth, metrics FROM feedback ORDER BY ts_ms, request_id")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut feedback = Vec::new();
    for row in rows {
        let (id, truth, metrics) = row?;
        feedback.push(feedback_from_json(id, &truth, &metrics)?);
    }
    Ok((records, feedback))
}

/// Stores feedback unless the request already has some; `true` when it was new.
fn insert_feedback(
    conn: &Connection,
    request_id: &str,
    ts_ms: i64,
    truth: &Truth,
    metrics: &[(String, f64)],
) -> Result<bool, StoreError> {
    let (truth, metrics) = feedback_to_json(truth, metrics)?;
    let changed = conn
        .prepare_cached("INSERT OR IGNORE INTO feedback (request_id, ts_ms, truth, metrics) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![request_id, ts_ms, truth, metrics])?;
    Ok(changed == 1)
}

/// Number of prediction records.
pub fn count_records(conn: &Connection) -> Result<u64, StoreError> {
    let n: Option<i64> = conn
        .query_row("SELECT COUNT(*) FROM predictions", [], |r| r.get(0))
        .optional()?;
    Ok(n.unwrap_or(0) as u64)
}

/// The most recent disagreements between `primary` and `shadow` of `model`.
pub fn disagreements(
    conn: &Connection,
    model: &str,
    primary: &str,
    shadow: &str,
    limit: usize,
) -> Result<Vec<Disagreement>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT p.request_id, p.ts_ms, p.input, p.output, s.output, f.truth
         FROM predictions p
         JOIN predictions s ON s.request_id = p.request_id AND s.role = 'shadow' AND s.version = ?3
              AND s.paired_version = p.version AND s.outcome = 'ok'
         LEFT JOIN feedback f ON f.request_id = p.request_id
         WHERE p.model = ?1 AND p.role = 'serving' AND p.version = ?2 AND p.outcome = 'ok' AND p.output != s.output
         ORDER BY p.id DESC LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![model, primary, shadow, limit as i64], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, Option<String>>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (request_id, ts_ms, input, p, s, t) = row?;
        out.push(Disagreement::from_columns(
            request_id, ts_ms, input, &p, &s, t,
        )?);
    }
    Ok(out)
}

/// The serving records of a model whose request body was captured, with their labels (see
/// [`CapturedQuery`]).
pub fn captured_requests(
    conn: &Connection,
    q: &CapturedQuery,
) -> Result<Vec<CapturedRequest>, StoreError> {
    let (since, until) = q.window();
    let mut stmt = conn.prepare_cached(
        "SELECT p.request_id, p.ts_ms, p.input, p.segments, f.truth
         FROM predictions p
         LEFT JOIN feedback f ON f.request_id = p.request_id
         WHERE p.model = ?1 AND p.role = 'serving' AND p.input IS NOT NULL
               AND p.ts_ms >= ?2 AND p.ts_ms < ?3
         ORDER BY p.id LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![q.model, since, until, q.sql_limit()], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (request_id, ts_ms, input, segments, truth) = row?;
        out.push(CapturedRequest::from_columns(
            request_id,
            ts_ms,
            input,
            segments.as_deref(),
            truth.as_deref(),
        )?);
    }
    Ok(out)
}

/// The log writer's SQLite connection.
pub(crate) struct SqliteSink(pub(crate) Connection);

impl Sink for SqliteSink {
    fn write_batch(&mut self, batch: &[PredictionRecord]) -> Result<(), StoreError> {
        // IMMEDIATE: take the write lock first (waiting out the busy timeout while the control
        // store's connection writes), never upgrade a read snapshot.
        let tx = self
            .0
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(INSERT_RECORD)?;
            for rec in batch {
                insert_record(&mut stmt, rec)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn feedback(
        &mut self,
        items: Vec<Feedback>,
        models: Option<&[String]>,
        now_ms: i64,
    ) -> Result<Labelled, StoreError> {
        // Reads then writes: a deferred transaction whose snapshot predates another
        // connection's commit cannot be upgraded (SQLITE_BUSY_SNAPSHOT, "database is locked",
        // without waiting), so the write lock is taken up front.
        let mut tx = self
            .0
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let labelled = store_feedback(&mut tx, items, models, now_ms)?;
        tx.commit()?;
        Ok(labelled)
    }

    fn snapshot(&mut self, agg: &Aggregates, now_ms: i64) -> Result<(i64, i64), StoreError> {
        let text = encode_aggregates(agg)?;
        let tx = self
            .0
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let last_prediction: i64 =
            tx.query_row("SELECT COALESCE(MAX(id), 0) FROM predictions", [], |r| {
                r.get(0)
            })?;
        let last_feedback: i64 =
            tx.query_row("SELECT COALESCE(MAX(rowid), 0) FROM feedback", [], |r| {
                r.get(0)
            })?;
        tx.execute("DELETE FROM aggregate_snapshots", [])?;
        tx.execute(
            "INSERT INTO aggregate_snapshots (ts_ms, last_prediction, last_feedback, aggregates)
             VALUES (?1, ?2, ?3, ?4)",
            params![now_ms, last_prediction, last_feedback, text],
        )?;
        tx.commit()?;
        Ok((last_prediction, last_feedback))
    }

    fn prune(&mut self, prune: &Prune) -> Result<u64, StoreError> {
        let tx = self
            .0
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let newest: i64 =
            tx.query_row("SELECT COALESCE(MAX(id), 0) FROM predictions", [], |r| {
                r.get(0)
            })?;
        // Never the newest row (SQLite would hand its id out again), never past the snapshot.
        let upto = prune.last_prediction.min(newest - 1);
        let count_cut = prune.keep_records.map_or(0, |keep| newest - keep);
        let deleted = tx.execute(
            "DELETE FROM predictions WHERE id IN (
                 SELECT p.id FROM predictions p
                 WHERE p.id <= ?1 AND p.epoch < ?2 AND (p.ts_ms < ?3 OR p.id <= ?4)
                   AND NOT EXISTS (SELECT 1 FROM feedback f
                                   WHERE f.request_id = p.request_id AND f.rowid > ?5)
                 ORDER BY p.id LIMIT ?6)",
            params![
                upto,
                prune.protect_from_epoch,
                prune.before_ts_ms,
                count_cut,
                prune.last_feedback,
                prune.batch as i64
            ],
        )?;
        // Labels whose request has no record left (never the newest label).
        tx.execute(
            "DELETE FROM feedback WHERE rowid IN (
                 SELECT f.rowid FROM feedback f
                 WHERE f.rowid <= ?1 AND f.rowid < (SELECT MAX(rowid) FROM feedback)
                   AND NOT EXISTS (SELECT 1 FROM predictions p WHERE p.request_id = f.request_id)
                 ORDER BY f.rowid LIMIT ?2)",
            params![prune.last_feedback, prune.batch as i64],
        )?;
        tx.commit()?;
        Ok(deleted as u64)
    }
}

/// The newest aggregate snapshot: the last prediction id and feedback rowid it covers, and the
/// aggregates.
fn latest_snapshot(conn: &Connection) -> Result<Option<(i64, i64, String)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT last_prediction, last_feedback, aggregates FROM aggregate_snapshots
             ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?)
}

/// The aggregates at start-up: the newest snapshot, then what the log took after it (records
/// after its last prediction, counted, with their requests' earlier records for pairing; then
/// labels after its last feedback, scored against their requests' records), so the time is
/// that of the tail, not of the whole log. Without a snapshot, or with one that does not
/// decode, the whole log is recounted ([`rebuild_aggregates`]).
pub fn restore_aggregates(conn: &Connection) -> Result<Aggregates, StoreError> {
    let Some((last_prediction, last_feedback, text)) = latest_snapshot(conn)? else {
        return rebuild_aggregates(conn);
    };
    let agg = match decode_aggregates(&text) {
        Ok(agg) => agg,
        Err(e) => {
            tracing::warn!(error = %e, "aggregate snapshot unreadable; recounting the whole log");
            return rebuild_aggregates(conn);
        }
    };
    let mut stmt = conn.prepare(
        "SELECT p.request_id, p.ts_ms, p.model, p.epoch, p.variant, p.role, p.version,
                p.key_hash, p.outcome, p.status, p.latency_us, p.output, NULL, p.paired_version,
                p.segments, p.id > ?1
         FROM predictions p
         WHERE p.request_id IN (SELECT request_id FROM predictions WHERE id > ?1)
         ORDER BY p.request_id, p.id",
    )?;
    let mut rows = stmt.query([last_prediction])?;
    let mut fold = StreamFold::onto(agg, true);
    while let Some(row) = rows.next()? {
        let log_row = row_to_record(row)??;
        if row.get::<_, bool>(15)? {
            fold.push(log_row, None);
        } else {
            fold.push_uncounted(log_row);
        }
    }
    drop(rows);
    let mut stmt = conn.prepare(
        "SELECT p.request_id, p.ts_ms, p.model, p.epoch, p.variant, p.role, p.version,
                p.key_hash, p.outcome, p.status, p.latency_us, p.output, NULL, p.paired_version,
                p.segments, f.truth, f.metrics
         FROM feedback f CROSS JOIN predictions p ON p.request_id = f.request_id
         -- CROSS JOIN: SQLite keeps this join order, the labels after the snapshot (a rowid
         -- range) first, then their records by index; the other order scans every record.
         WHERE f.rowid > ?1
         ORDER BY p.request_id, p.id",
    )?;
    let mut rows = stmt.query([last_feedback])?;
    let mut labels = StreamFold::onto(fold.finish(), false);
    while let Some(row) = rows.next()? {
        let log_row = row_to_record(row)??;
        let (_, truth, metrics) = feedback_from_json(
            String::new(),
            &row.get::<_, String>(15)?,
            &row.get::<_, String>(16)?,
        )?;
        labels.push(log_row, Some((truth, metrics)));
    }
    Ok(labels.finish())
}

impl FeedbackTx for rusqlite::Transaction<'_> {
    fn records_of(&mut self, request_id: &str) -> Result<Vec<LogRow>, StoreError> {
        records_of(self, request_id)
    }

    fn insert_feedback(&mut self, item: &Feedback, now_ms: i64) -> Result<bool, StoreError> {
        insert_feedback(self, &item.request_id, now_ms, &item.truth, &item.metrics)
    }
}

/// Recomputes the aggregates from the log: used at start-up and to check the incremental
/// aggregates against a recount. Streams the log in request-id order (the `predictions_request`
/// index) with each request's feedback joined, so memory stays that of one request whatever
/// the log's length; captured inputs are not read.
pub fn rebuild_aggregates(conn: &Connection) -> Result<Aggregates, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT p.request_id, p.ts_ms, p.model, p.epoch, p.variant, p.role, p.version,
                p.key_hash, p.outcome, p.status, p.latency_us, p.output, NULL, p.paired_version,
                p.segments, f.truth, f.metrics
         FROM predictions p LEFT JOIN feedback f ON f.request_id = p.request_id
         ORDER BY p.request_id, p.id",
    )?;
    let mut rows = stmt.query([])?;
    let mut fold = StreamFold::default();
    while let Some(row) = rows.next()? {
        let log_row = row_to_record(row)??;
        let feedback = match (
            row.get::<_, Option<String>>(15)?,
            row.get::<_, Option<String>>(16)?,
        ) {
            (Some(truth), Some(metrics)) => {
                let (_, truth, metrics) = feedback_from_json(String::new(), &truth, &metrics)?;
                Some((truth, metrics))
            }
            _ => None,
        };
        fold.push(log_row, feedback);
    }
    Ok(fold.finish())
}

/// The rebuild as it was before it streamed: every record and every feedback read into memory,
/// then folded. Kept as the baseline of the rebuild benchmark (`benches/rebuild.rs`).
pub fn rebuild_aggregates_in_memory(conn: &Connection) -> Result<Aggregates, StoreError> {
    let (rows, feedback) = read_log(conn)?;
    Ok(fold_log(rows, feedback))
}
