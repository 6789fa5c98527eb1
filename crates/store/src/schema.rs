//! Schema, connection settings and row encoding of the prediction log.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use switchyard_core::{Outcome, Prediction, PredictionRecord, Role, Truth};

use crate::error::corrupt;
use crate::StoreError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS predictions (
    id          INTEGER PRIMARY KEY,
    request_id  TEXT    NOT NULL,
    ts_ms       INTEGER NOT NULL,
    model       TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    variant     TEXT    NOT NULL,
    role        TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    key_hash    INTEGER,
    outcome     TEXT    NOT NULL,
    status      INTEGER NOT NULL,
    latency_us  INTEGER NOT NULL,
    output      TEXT    NOT NULL,
    input       TEXT,
    paired_version TEXT
);
CREATE INDEX IF NOT EXISTS predictions_request ON predictions(request_id);
CREATE TABLE IF NOT EXISTS feedback (
    request_id  TEXT PRIMARY KEY,
    ts_ms       INTEGER NOT NULL,
    truth       TEXT    NOT NULL,
    metrics     TEXT    NOT NULL
);
";

/// Opens (creating if needed) the store at `path`, in WAL mode.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // Durable at commit in WAL mode except for the last transactions before a power loss;
    // a process crash (kill -9) loses nothing committed.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

pub(crate) fn insert_record(
    stmt: &mut rusqlite::CachedStatement<'_>,
    rec: &PredictionRecord,
) -> Result<(), StoreError> {
    let output = serde_json::to_string(&rec.output).map_err(|e| corrupt("output", e))?;
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
    ])?;
    Ok(())
}

pub(crate) const INSERT_RECORD: &str = "INSERT INTO predictions
    (request_id, ts_ms, model, epoch, variant, role, version, key_hash, outcome, status,
     latency_us, output, input, paired_version)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";

const SELECT_RECORD: &str = "SELECT request_id, ts_ms, model, epoch, variant, role, version,
    key_hash, outcome, status, latency_us, output, input, paired_version FROM predictions";

/// A stored record; shadow records name the version they were paired with.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    pub record: PredictionRecord,
    pub paired_version: Option<String>,
}

fn row_to_record(row: &rusqlite::Row<'_>) -> Result<Result<LogRow, StoreError>, rusqlite::Error> {
    let role: String = row.get(5)?;
    let outcome: String = row.get(8)?;
    let output: String = row.get(11)?;
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
            },
            paired_version: row.get(13)?,
        })
    };
    Ok(build())
}

/// Every record of one request, serving first.
pub(crate) fn records_of(conn: &Connection, request_id: &str) -> Result<Vec<LogRow>, StoreError> {
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

/// Feedback of one request as stored: id, truth, business metrics.
pub type FeedbackRow = (String, Truth, Vec<(String, f64)>);

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
        let truth: Truth = serde_json::from_str(&truth).map_err(|e| corrupt("truth", e))?;
        let metrics: Vec<(String, f64)> =
            serde_json::from_str(&metrics).map_err(|e| corrupt("metrics", e))?;
        feedback.push((id, truth, metrics));
    }
    Ok((records, feedback))
}

/// Stores feedback unless the request already has some; `true` when it was new.
pub(crate) fn insert_feedback(
    conn: &Connection,
    request_id: &str,
    ts_ms: i64,
    truth: &Truth,
    metrics: &[(String, f64)],
) -> Result<bool, StoreError> {
    let truth = serde_json::to_string(truth).map_err(|e| corrupt("truth", e))?;
    let metrics = serde_json::to_string(metrics).map_err(|e| corrupt("metrics", e))?;
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

/// A request on which the serving version and its shadow answered differently.
#[derive(Debug, Clone, PartialEq)]
pub struct Disagreement {
    pub request_id: String,
    pub ts_ms: i64,
    /// The captured request body, when input capture sampled it.
    pub input: Option<String>,
    pub primary: Prediction,
    pub shadow: Prediction,
    pub truth: Option<Truth>,
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
        out.push(Disagreement {
            request_id,
            ts_ms,
            input,
            primary: serde_json::from_str(&p).map_err(|e| corrupt("output", e))?,
            shadow: serde_json::from_str(&s).map_err(|e| corrupt("output", e))?,
            truth: t
                .map(|t| serde_json::from_str(&t))
                .transpose()
                .map_err(|e| corrupt("truth", e))?,
        });
    }
    Ok(out)
}

/// [`disagreements`] in whichever store `url` names (PostgreSQL is queried from a thread of
/// its own, so this may be called from async code).
pub fn disagreements_at(
    url: &crate::StoreUrl,
    model: &str,
    primary: &str,
    shadow: &str,
    limit: usize,
) -> Result<Vec<Disagreement>, StoreError> {
    match url {
        crate::StoreUrl::Sqlite(path) => disagreements(&open(path)?, model, primary, shadow, limit),
        crate::StoreUrl::Postgres(url) => {
            let (url, model, primary, shadow) = (
                url.clone(),
                model.to_string(),
                primary.to_string(),
                shadow.to_string(),
            );
            std::thread::spawn(move || {
                let mut client = crate::pg::connect(&url)?;
                crate::pg_log::disagreements(&mut client, &model, &primary, &shadow, limit)
            })
            .join()
            .map_err(|_| StoreError::WriterStopped)?
        }
    }
}
