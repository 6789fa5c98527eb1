//! The prediction log in SQLite: row encoding, the log writer's sink (one transaction per
//! batch), feedback, and the reads (`read_log`, `disagreements`, recounts). It exists so that
//! the writer (`log`) only dispatches; like `pg_log`, it depends on the
//! neutral `log_rows` and on the SQLite plumbing (`sqlite`), never on the
//! other backend.

use rusqlite::{params, Connection, OptionalExtension};
use switchyard_core::provenance::{Artefact, VersionProvenance};
use switchyard_core::{Aggregates, Feedback, Outcome, Prediction, PredictionRecord, Role, Truth};

use crate::artefacts::{register, ArtefactIds, ArtefactTx, StoredArtefact};
use crate::error::corrupt;
use crate::log_rows::{
    feedback_from_json, feedback_to_json, fold_log, segments_from_text, segments_to_text,
    store_feedback, CapturedQuery, CapturedRequest, Disagreement, FeedbackRow, FeedbackTx,
    Labelled, LogRow, Prune, Sink, StreamFold,
};
use crate::wire::{decode_aggregates, encode_aggregates};
use crate::StoreError;

/// Binds `rec`'s 16 columns to `stmt` from parameter `first` (1-based) on.
fn bind_record(
    stmt: &mut rusqlite::CachedStatement<'_>,
    first: usize,
    rec: &PredictionRecord,
    artefact_id: Option<i64>,
) -> Result<(), StoreError> {
    let output = serde_json::to_string(&rec.output).map_err(|e| corrupt("output", e))?;
    let segments = segments_to_text(&rec.segments)?;
    let values: [&dyn rusqlite::ToSql; RECORD_COLUMNS] = [
        &rec.request_id,
        &rec.ts_ms,
        &rec.model,
        &(rec.epoch as i64),
        &rec.variant,
        &rec.role.as_str(),
        &rec.version,
        &rec.key_hash.map(|h| h as i64),
        &rec.outcome.as_str(),
        &rec.status,
        &(rec.latency_us as i64),
        &output,
        &rec.input,
        &rec.pair.as_ref().map(|p| p.version.as_str()),
        &segments,
        &artefact_id,
    ];
    for (i, value) in values.into_iter().enumerate() {
        stmt.raw_bind_parameter(first + i, value)?;
    }
    Ok(())
}

/// Inserts `batch` with as few statements as it takes: [`ROWS_PER_INSERT`] rows per
/// `INSERT … VALUES (…), (…), …` and one statement per leftover row. A multi-row statement
/// pays SQLite's per-statement work (reset, the transaction and cursor opcodes) once for all
/// its rows (BENCHMARKS.md, "Proxy cost").
fn insert_records(
    tx: &rusqlite::Transaction<'_>,
    batch: &[PredictionRecord],
    artefacts: &ArtefactIds,
) -> Result<(), StoreError> {
    let mut chunks = batch.chunks_exact(ROWS_PER_INSERT);
    if chunks.len() > 0 {
        let mut stmt = tx.prepare_cached(&INSERT_MANY)?;
        for chunk in chunks.by_ref() {
            for (i, rec) in chunk.iter().enumerate() {
                bind_record(
                    &mut stmt,
                    1 + i * RECORD_COLUMNS,
                    rec,
                    artefacts.get(&rec.model, &rec.version),
                )?;
            }
            stmt.raw_execute()?;
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut stmt = tx.prepare_cached(&INSERT_ONE)?;
        for rec in rest {
            bind_record(&mut stmt, 1, rec, artefacts.get(&rec.model, &rec.version))?;
            stmt.raw_execute()?;
        }
    }
    Ok(())
}

/// Columns written per record.
const RECORD_COLUMNS: usize = 16;
/// Rows per multi-row insert (16 × 16 = 256 parameters, far below SQLite's limit).
const ROWS_PER_INSERT: usize = 16;

const INSERT_COLUMNS: &str = "INSERT INTO predictions
    (request_id, ts_ms, model, epoch, variant, role, version, key_hash, outcome, status,
     latency_us, output, input, paired_version, segments, artefact_id) VALUES ";

/// `(?, ?, …)` × `rows`, for [`INSERT_COLUMNS`].
fn insert_sql(rows: usize) -> String {
    let one = format!("({})", vec!["?"; RECORD_COLUMNS].join(", "));
    format!("{INSERT_COLUMNS}{}", vec![one; rows].join(", "))
}

static INSERT_ONE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| insert_sql(1));
static INSERT_MANY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| insert_sql(ROWS_PER_INSERT));

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
/// The artefacts table's two statements, inside a transaction of a SQLite connection.
struct SqliteArtefacts<'a>(&'a Connection);

const SELECT_ARTEFACT: &str =
    "SELECT id, model, version, artefact_kind, artefact, git_sha, registry, first_seen_ms
     FROM artefacts";

fn row_to_artefact(
    row: &rusqlite::Row<'_>,
) -> Result<Result<StoredArtefact, StoreError>, rusqlite::Error> {
    let kind: String = row.get(3)?;
    let Some(artefact) = Artefact::from_parts(&kind, row.get(4)?) else {
        return Ok(Err(corrupt("artefact", kind)));
    };
    Ok(Ok(StoredArtefact {
        id: row.get(0)?,
        provenance: VersionProvenance {
            model: row.get(1)?,
            version: row.get(2)?,
            artefact,
            git_sha: row.get(5)?,
            registry: row.get(6)?,
        },
        first_seen_ms: row.get(7)?,
    }))
}

impl ArtefactTx for SqliteArtefacts<'_> {
    fn rows_of(&mut self, model: &str, version: &str) -> Result<Vec<StoredArtefact>, StoreError> {
        let mut stmt = self.0.prepare_cached(&format!(
            "{SELECT_ARTEFACT} WHERE model = ?1 AND version = ?2 ORDER BY id"
        ))?;
        let rows = stmt.query_map([model, version], row_to_artefact)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row??);
        }
        Ok(out)
    }

    fn insert(&mut self, p: &VersionProvenance, now_ms: i64) -> Result<i64, StoreError> {
        self.0.execute(
            "INSERT INTO artefacts
             (model, version, artefact_kind, artefact, git_sha, registry, first_seen_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                p.model,
                p.version,
                p.artefact.kind(),
                p.artefact.id(),
                p.git_sha,
                p.registry,
                now_ms
            ],
        )?;
        Ok(self.0.last_insert_rowid())
    }
}

/// Checks `versions` against the artefacts table and (with `write`) records the new ones, in
/// one transaction; see [`crate::artefacts`].
pub(crate) fn register_artefacts(
    conn: &mut Connection,
    versions: &[VersionProvenance],
    now_ms: i64,
    write: bool,
) -> Result<ArtefactIds, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let ids = register(&mut SqliteArtefacts(&tx), versions, now_ms, write)?;
    if write {
        tx.commit()?;
    }
    Ok(ids)
}

/// Every row of the artefacts table, oldest first.
pub fn artefacts(conn: &Connection) -> Result<Vec<StoredArtefact>, StoreError> {
    let mut stmt = conn.prepare(&format!("{SELECT_ARTEFACT} ORDER BY id"))?;
    let rows = stmt.query_map([], row_to_artefact)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row??);
    }
    Ok(out)
}

pub(crate) struct SqliteSink(pub(crate) Connection);

impl Sink for SqliteSink {
    fn register_artefacts(
        &mut self,
        versions: &[VersionProvenance],
        now_ms: i64,
    ) -> Result<ArtefactIds, StoreError> {
        register_artefacts(&mut self.0, versions, now_ms, true)
    }

    fn write_batch(
        &mut self,
        batch: &[PredictionRecord],
        artefacts: &ArtefactIds,
    ) -> Result<(), StoreError> {
        // IMMEDIATE: take the write lock first (waiting out the busy timeout while the control
        // store's connection writes), never upgrade a read snapshot.
        let tx = self
            .0
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        insert_records(&tx, batch, artefacts)?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use switchyard_core::PairRef;

    /// Record `i`, every optional field set or not by a different residue of `i`, so that the
    /// rows of one multi-row statement all differ.
    fn record(i: usize) -> PredictionRecord {
        PredictionRecord {
            request_id: format!("req-{i:03}"),
            ts_ms: 1_700_000_000_000 + i as i64,
            model: if i.is_multiple_of(2) { "a" } else { "b" }.into(),
            epoch: i as u64 / 10,
            variant: format!("variant-{}", i % 3),
            role: if i % 4 == 3 {
                Role::Shadow
            } else {
                Role::Serving
            },
            version: format!("v{}", i % 5),
            key_hash: (!i.is_multiple_of(3)).then_some(u64::MAX - i as u64),
            outcome: if i.is_multiple_of(7) {
                Outcome::UpstreamStatus
            } else {
                Outcome::Ok
            },
            status: if i.is_multiple_of(7) { 502 } else { 200 },
            latency_us: 1_000 + i as u64,
            output: if i.is_multiple_of(2) {
                Prediction::Classes(vec![format!("c{i}")])
            } else {
                Prediction::Values(vec![i as f64 + 0.25])
            },
            input: (i % 4 == 1).then(|| format!("{{\"x\":{i}}}")),
            pair: (i % 4 == 3).then(|| PairRef {
                version: format!("p{i}"),
                output: Prediction::None,
            }),
            segments: if i.is_multiple_of(5) {
                Vec::new()
            } else {
                vec![("region".into(), format!("r{i}"))]
            },
        }
    }

    /// 37 records: two 16-row statements and five single-row ones, read back field by field
    /// in order (the reader drops `pair`, whose version is its own column).
    #[test]
    fn a_batch_written_by_multi_row_statements_reads_back_row_by_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = crate::sqlite::open(&dir.path().join("log.db")).unwrap();
        let batch: Vec<PredictionRecord> = (0..37).map(record).collect();
        let tx = conn.transaction().unwrap();
        insert_records(&tx, &batch, &ArtefactIds::default()).unwrap();
        tx.commit().unwrap();
        let (rows, feedback) = read_log(&conn).unwrap();
        assert!(feedback.is_empty());
        assert_eq!(rows.len(), 37);
        for (row, written) in rows.iter().zip(&batch) {
            let mut expected = written.clone();
            expected.pair = None;
            assert_eq!(row.record, expected);
            assert_eq!(
                row.paired_version,
                written.pair.as_ref().map(|p| p.version.clone())
            );
        }
    }
}
