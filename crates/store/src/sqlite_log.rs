//! The prediction log in SQLite: row encoding, the log writer's sink (one transaction per
//! batch), feedback, and the reads (`read_log`, `disagreements`, recounts). It exists so that
//! the writer (`log`) only dispatches; like `pg_log`, it depends on the
//! neutral `log_rows` and on the SQLite plumbing (`sqlite`), never on the
//! other backend.

use std::collections::HashMap;

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
use crate::spans::{millisecond_rows, named_rows, request_ms, span_rows, stray_names, SpanBuilder};
use crate::wire::{decode_aggregates, encode_aggregates};
use crate::StoreError;

/// What records of one lane share besides their model and version (see `sqlite::LOG_TABLES`).
/// [`same_lane`] compares the same fields.
#[derive(Debug)]
struct LaneKey {
    epoch: u64,
    variant: String,
    role: Role,
    outcome: Outcome,
    paired_version: Option<String>,
    artefact_id: Option<i64>,
}

impl LaneKey {
    fn of(rec: &PredictionRecord, artefact_id: Option<i64>) -> Self {
        LaneKey {
            epoch: rec.epoch,
            variant: rec.variant.clone(),
            role: rec.role,
            outcome: rec.outcome,
            paired_version: rec.pair.as_ref().map(|p| p.version.clone()),
            artefact_id,
        }
    }

    fn matches(&self, rec: &PredictionRecord, artefact_id: Option<i64>) -> bool {
        self.epoch == rec.epoch
            && self.role == rec.role
            && self.outcome == rec.outcome
            && self.artefact_id == artefact_id
            && self.variant == rec.variant
            && self.paired_version.as_deref() == rec.pair.as_ref().map(|p| p.version.as_str())
    }
}

/// Lane ids by model and version, looked up per record on the writer thread (two hash
/// lookups and a short scan, no allocation). The sink keeps those of lanes it has committed
/// records to; a batch's new lanes are gathered in one of their own and merged only once the
/// batch commits, so a rolled-back batch leaves no id of a row that does not exist.
#[derive(Debug, Default)]
pub(crate) struct LaneIds(switchyard_core::NameMap<switchyard_core::NameMap<Vec<(LaneKey, i64)>>>);

impl LaneIds {
    fn get(&self, rec: &PredictionRecord, artefact_id: Option<i64>) -> Option<i64> {
        self.0
            .get(&rec.model)?
            .get(&rec.version)?
            .iter()
            .find(|(k, _)| k.matches(rec, artefact_id))
            .map(|(_, id)| *id)
    }

    fn insert(&mut self, model: &str, version: &str, key: LaneKey, id: i64) {
        self.0
            .entry(model.to_string())
            .or_default()
            .entry(version.to_string())
            .or_default()
            .push((key, id));
    }

    fn merge(&mut self, other: LaneIds) {
        for (model, versions) in other.0 {
            let into = self.0.entry(model).or_default();
            for (version, lanes) in versions {
                into.entry(version).or_default().extend(lanes);
            }
        }
    }
}

/// The lane of `rec`: known, found or added earlier in this batch (`fresh`), found in the
/// table, or added to it.
fn lane_of(
    tx: &rusqlite::Transaction<'_>,
    known: &LaneIds,
    fresh: &mut LaneIds,
    rec: &PredictionRecord,
    artefact_id: Option<i64>,
) -> Result<i64, StoreError> {
    if let Some(id) = known
        .get(rec, artefact_id)
        .or_else(|| fresh.get(rec, artefact_id))
    {
        return Ok(id);
    }
    let key = LaneKey::of(rec, artefact_id);
    let params = params![
        rec.model,
        rec.version,
        key.epoch as i64,
        key.variant,
        key.role.as_str(),
        key.outcome.as_str(),
        key.paired_version,
        key.artefact_id
    ];
    let found: Option<i64> = tx
        .prepare_cached(
            "SELECT id FROM lanes WHERE model = ?1 AND version = ?2 AND epoch = ?3
               AND variant = ?4 AND role = ?5 AND outcome = ?6
               AND paired_version IS ?7 AND artefact_id IS ?8
             ORDER BY id LIMIT 1",
        )?
        .query_row(params, |r| r.get(0))
        .optional()?;
    let id = match found {
        Some(id) => id,
        None => {
            tx.prepare_cached(
                "INSERT INTO lanes
                 (model, version, epoch, variant, role, outcome, paired_version, artefact_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params)?;
            tx.last_insert_rowid()
        }
    };
    fresh.insert(&rec.model, &rec.version, key, id);
    Ok(id)
}

/// Binds `rec`'s row to `stmt` from parameter `first` (1-based) on.
fn bind_record(
    stmt: &mut rusqlite::CachedStatement<'_>,
    first: usize,
    rec: &PredictionRecord,
    lane: i64,
) -> Result<(), StoreError> {
    let output = serde_json::to_string(&rec.output).map_err(|e| corrupt("output", e))?;
    let segments = segments_to_text(&rec.segments)?;
    // One call per column with its own type: through `&dyn ToSql` each value cost a virtual
    // call and a `ToSqlOutput` match more.
    let at = |i: usize| first + i;
    stmt.raw_bind_parameter(at(0), rec.request_id.as_str())?;
    stmt.raw_bind_parameter(at(1), rec.ts_ms)?;
    stmt.raw_bind_parameter(at(2), lane)?;
    stmt.raw_bind_parameter(at(3), rec.key_hash.map(|h| h as i64))?;
    stmt.raw_bind_parameter(at(4), rec.status)?;
    stmt.raw_bind_parameter(at(5), rec.latency_us as i64)?;
    stmt.raw_bind_parameter(at(6), output.as_str())?;
    stmt.raw_bind_parameter(at(7), rec.input.as_deref())?;
    stmt.raw_bind_parameter(at(8), segments.as_deref())?;
    Ok(())
}

/// Inserts `batch` with as few statements as it takes: [`ROWS_PER_INSERT`] rows per
/// `INSERT … VALUES (…), (…), …` and one statement per leftover row. A multi-row statement
/// pays SQLite's per-statement work (reset, the transaction and cursor opcodes) once for all
/// its rows (BENCHMARKS.md, "Proxy cost"). Lanes the batch adds are gathered in `fresh`.
fn insert_records(
    tx: &rusqlite::Transaction<'_>,
    batch: &[PredictionRecord],
    artefacts: &ArtefactIds,
    lanes: &LaneIds,
    fresh: &mut LaneIds,
) -> Result<(), StoreError> {
    // Consecutive records mostly share a lane (every record of a single-version model does):
    // the previous record's lane is taken when the next one matches it field for field, which
    // skips the artefact and lane maps' four hash lookups.
    let mut last: Option<(&PredictionRecord, i64)> = None;
    let mut lane = |fresh: &mut LaneIds, rec| -> Result<i64, StoreError> {
        let id = match last {
            Some((prev, id)) if same_lane(prev, rec) => id,
            _ => lane_of(
                tx,
                lanes,
                fresh,
                rec,
                artefacts.get(&rec.model, &rec.version),
            )?,
        };
        last = Some((rec, id));
        Ok(id)
    };
    let mut chunks = batch.chunks_exact(ROWS_PER_INSERT);
    if chunks.len() > 0 {
        let mut stmt = tx.prepare_cached(&INSERT_MANY)?;
        for chunk in chunks.by_ref() {
            for (i, rec) in chunk.iter().enumerate() {
                let lane = lane(fresh, rec)?;
                bind_record(&mut stmt, 1 + i * RECORD_COLUMNS, rec, lane)?;
            }
            stmt.raw_execute()?;
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut stmt = tx.prepare_cached(&INSERT_ONE)?;
        for rec in rest {
            let lane = lane(fresh, rec)?;
            bind_record(&mut stmt, 1, rec, lane)?;
            stmt.raw_execute()?;
        }
    }
    Ok(())
}

/// The id of the newest record, 0 in an empty log.
fn newest_record(tx: &rusqlite::Transaction<'_>) -> Result<i64, StoreError> {
    Ok(tx
        .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM prediction_rows")?
        .query_row([], |r| r.get(0))?)
}

/// Files the records of `batch`, just inserted after record `before`, by request id
/// (`spans`). SQLite gives each new row the id after the table's largest, so within the
/// write transaction the batch holds ids `before + 1 ..`; that is checked, not assumed.
fn file_batch(
    tx: &rusqlite::Transaction<'_>,
    batch: &[PredictionRecord],
    before: i64,
) -> Result<(), StoreError> {
    let newest = newest_record(tx)?;
    if newest != before + batch.len() as i64 {
        return Err(corrupt(
            "prediction log",
            format!(
                "a batch of {} records after record {before} ended at record {newest}",
                batch.len()
            ),
        ));
    }
    crate::spans::drop_stale(tx, before)?;
    let mut spans = SpanBuilder::default();
    let mut named = Vec::new();
    for (id, rec) in (before + 1..).zip(batch) {
        if !spans.add(id, &rec.request_id, rec.ts_ms) {
            named.push((rec.request_id.as_str(), id));
        }
    }
    crate::spans::insert(tx, &spans.finish(), named)
}

/// Whether two records belong to one lane: the fields of [`LaneKey`] and the model and version
/// (which decide the artefact).
fn same_lane(a: &PredictionRecord, b: &PredictionRecord) -> bool {
    a.epoch == b.epoch
        && a.role == b.role
        && a.outcome == b.outcome
        && a.model == b.model
        && a.version == b.version
        && a.variant == b.variant
        && a.pair.as_ref().map(|p| &p.version) == b.pair.as_ref().map(|p| &p.version)
}

/// Columns written per record.
const RECORD_COLUMNS: usize = 9;
/// Rows per multi-row insert (16 × 9 = 144 parameters, far below SQLite's limit).
const ROWS_PER_INSERT: usize = 16;

/// `OR ROLLBACK`: a failed row fails the batch's whole transaction (which the writer drops on
/// any error anyway), so SQLite keeps no statement journal for a multi-row insert: under the
/// default (`ABORT`) it copied every page a statement touched first, in case one row of it
/// failed (~400 instructions a record, BENCHMARKS.md, "Proxy cost").
const INSERT_COLUMNS: &str = "INSERT OR ROLLBACK INTO prediction_rows
    (request_id, ts_ms, lane, key_hash, status, latency_us, output, input, segments) VALUES ";

/// `(?, ?, …)` × `rows`, for [`INSERT_COLUMNS`].
fn insert_sql(rows: usize) -> String {
    let one = format!("({})", ["?"; RECORD_COLUMNS].join(", "));
    format!("{INSERT_COLUMNS}{}", vec![one; rows].join(", "))
}

static INSERT_ONE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| insert_sql(1));
static INSERT_MANY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| insert_sql(ROWS_PER_INSERT));

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

/// The columns [`row_to_record`] reads, of the `predictions` view aliased `p`.
const P_RECORD: &str = "p.request_id, p.ts_ms, p.model, p.epoch, p.variant, p.role, p.version,
    p.key_hash, p.outcome, p.status, p.latency_us, p.output, p.input, p.paired_version,
    p.segments";

/// [`P_RECORD`] without the captured input (the recounts never read it).
const P_RECORD_NO_INPUT: &str = "p.request_id, p.ts_ms, p.model, p.epoch, p.variant, p.role,
    p.version, p.key_hash, p.outcome, p.status, p.latency_us, p.output, NULL, p.paired_version,
    p.segments";

/// The rows of request `request_id` that `filter` keeps (`AND …` over the view aliased `p`,
/// its parameters `extra`, bound from `?3` on), `columns` read by `map`, in id order, each
/// record once: those filed under its id's millisecond ([`span_rows`], when it carries one)
/// and those filed by name ([`named_rows`]). Statements from the connection's cache.
fn request_rows_of<T>(
    conn: &Connection,
    request_id: &str,
    columns: &str,
    filter: &str,
    extra: &[&dyn rusqlite::ToSql],
    mut map: impl FnMut(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let ms = request_ms(request_id);
    let mut out: Vec<(i64, T)> = Vec::new();
    if ms.is_some() {
        let sql = span_rows(columns, filter);
        rows_by_id(conn, &sql, request_id, ms, extra, &mut map, &mut out)?;
    }
    let sql = named_rows(columns, filter);
    rows_by_id(conn, &sql, request_id, ms, extra, &mut map, &mut out)?;
    Ok(in_id_order(out))
}

/// Rows by record id: in id order, each record once (two spans, or a span and a name, may
/// hold the same record), the ids dropped.
fn in_id_order<T>(mut rows: Vec<(i64, T)>) -> Vec<T> {
    rows.sort_by_key(|(id, _)| *id);
    rows.dedup_by_key(|(id, _)| *id);
    rows.into_iter().map(|(_, t)| t).collect()
}

/// Runs lookup `sql` ([`span_rows`] or [`named_rows`]) of request `request_id`, adding each
/// row's id (its last column) and `map` of it to `out`.
fn rows_by_id<T>(
    conn: &Connection,
    sql: &str,
    request_id: &str,
    ms: Option<i64>,
    extra: &[&dyn rusqlite::ToSql],
    map: &mut impl FnMut(&rusqlite::Row<'_>) -> Result<T, StoreError>,
    out: &mut Vec<(i64, T)>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut params: Vec<&dyn rusqlite::ToSql> = vec![&request_id, &ms];
    params.extend_from_slice(extra);
    let last = stmt.column_count() - 1;
    let mut rows = stmt.query(params.as_slice())?;
    while let Some(row) = rows.next()? {
        out.push((row.get(last)?, map(row)?));
    }
    Ok(())
}

/// [`row_to_record`] flattened for [`request_rows_of`].
fn to_log_row(row: &rusqlite::Row<'_>) -> Result<LogRow, StoreError> {
    row_to_record(row)?
}

/// Every record of one request, serving first, each role in id order.
fn records_of(conn: &Connection, request_id: &str) -> Result<Vec<LogRow>, StoreError> {
    let mut rows = request_rows_of(conn, request_id, P_RECORD, "", &[], to_log_row)?;
    rows.sort_by_key(|r| r.record.role != Role::Serving);
    Ok(rows)
}

/// Reads the whole log in insertion order, with feedback per request id (for recounts,
/// rebuilding aggregates after a restart, and reports).
pub fn read_log(conn: &Connection) -> Result<(Vec<LogRow>, Vec<FeedbackRow>), StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {P_RECORD} FROM predictions p ORDER BY p.id"
    ))?;
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
        .query_row("SELECT COUNT(*) FROM prediction_rows", [], |r| r.get(0))
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
    // The serving records newest first, each with its shadow records found by request id.
    let mut servings = conn.prepare_cached(
        "SELECT p.request_id, p.ts_ms, p.input, p.output FROM predictions p
         WHERE p.model = ?1 AND p.role = 'serving' AND p.version = ?2 AND p.outcome = 'ok'
         ORDER BY p.id DESC",
    )?;
    let mut truth = conn.prepare_cached("SELECT truth FROM feedback WHERE request_id = ?1")?;
    let mut shadows = ByMillisecond::new(
        "p.output",
        "AND p.role = 'shadow' AND p.version = ?3 AND p.paired_version = ?4 AND p.outcome = 'ok'",
    );
    let mut out = Vec::new();
    let mut rows = servings.query(params![model, primary])?;
    while out.len() < limit {
        let Some(row) = rows.next()? else { break };
        let request_id: String = row.get(0)?;
        let primary_output: String = row.get(3)?;
        let answers = shadows.take(conn, &request_id, &[&shadow, &primary], |r| Ok(r.get(0)?))?;
        let differing: Vec<&String> = answers.iter().filter(|s| **s != primary_output).collect();
        if differing.is_empty() {
            continue;
        }
        let t: Option<String> = truth.query_row([&request_id], |r| r.get(0)).optional()?;
        let (ts_ms, input): (i64, Option<String>) = (row.get(1)?, row.get(2)?);
        for shadow_output in differing.into_iter().take(limit - out.len()) {
            out.push(Disagreement::from_columns(
                request_id.clone(),
                ts_ms,
                input.clone(),
                &primary_output,
                shadow_output,
                t.clone(),
            )?);
        }
    }
    Ok(out)
}

/// The rows of requests looked up one request at a time in an order that mostly follows their
/// generated ids' milliseconds ([`disagreements`]: serving records newest first; the restore:
/// the tail sorted by request id), read a millisecond at a time: one query reads each of the
/// millisecond's records once, where a lookup per request ([`request_rows_of`]) read them
/// again for each of its ~50 requests under load (BENCHMARKS.md, "Proxy cost"). The last
/// [`Self::KEPT`] milliseconds are kept for requests that come out of order; ids a client
/// chose are looked up by name, and so are the requests of a millisecond holding more than
/// `max_rows` records (a log written before [`crate::spans::filing_ms`] may hold a
/// client's ids of the generated form with a constant prefix in one millisecond: it is not
/// held in memory). When the log files any id of the generated form by name, each such
/// request's named rows are read too.
struct ByMillisecond<T> {
    columns: &'static str,
    /// `AND …` over `p`, its parameters from `?3` on (as for [`request_rows_of`]).
    filter: &'static str,
    max_rows: usize,
    /// Whether ids of the generated form are filed by name too (asked at the first lookup).
    strays: Option<bool>,
    /// Each millisecond read: its requests' rows with their record ids.
    read: Vec<(i64, RowsByRequest<T>)>,
    /// Milliseconds found to hold more than `max_rows` records (the last few).
    too_big: Vec<i64>,
}

/// A millisecond's rows by request id, each with its record id (in read order: `take` puts
/// them in id order).
type RowsByRequest<T> = HashMap<String, Vec<(i64, T)>>;

impl<T> ByMillisecond<T> {
    const KEPT: usize = 8;
    /// Records of one millisecond read at once, at most (~50 under load).
    const MAX_ROWS: usize = 65_536;

    fn new(columns: &'static str, filter: &'static str) -> Self {
        Self::with_max_rows(columns, filter, Self::MAX_ROWS)
    }

    fn with_max_rows(columns: &'static str, filter: &'static str, max_rows: usize) -> Self {
        ByMillisecond {
            columns,
            filter,
            max_rows,
            strays: None,
            read: Vec::new(),
            too_big: Vec::new(),
        }
    }

    /// The rows of `request_id` that the filter keeps, in id order, each record once. Meant to
    /// be asked once per request: a millisecond read whole hands each request's rows out once.
    fn take(
        &mut self,
        conn: &Connection,
        request_id: &str,
        extra: &[&dyn rusqlite::ToSql],
        mut map: impl FnMut(&rusqlite::Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let ms = request_ms(request_id);
        let read = match ms {
            Some(ms) if !self.too_big.contains(&ms) => {
                self.millisecond(conn, ms, extra, &mut map)?
            }
            _ => None,
        };
        let Some(at) = read else {
            return request_rows_of(conn, request_id, self.columns, self.filter, extra, map);
        };
        let mut rows = self.read[at].1.remove(request_id).unwrap_or_default();
        let strays = match self.strays {
            Some(strays) => strays,
            None => *self.strays.insert(stray_names(conn)?),
        };
        if strays {
            let sql = named_rows(self.columns, self.filter);
            rows_by_id(conn, &sql, request_id, ms, extra, &mut map, &mut rows)?;
        }
        Ok(in_id_order(rows))
    }

    /// Where millisecond `ms`'s rows are held, read now unless held already; `None` when it
    /// holds more than `max_rows` (then noted in `too_big`).
    fn millisecond(
        &mut self,
        conn: &Connection,
        ms: i64,
        extra: &[&dyn rusqlite::ToSql],
        map: &mut impl FnMut(&rusqlite::Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Option<usize>, StoreError> {
        if let Some(at) = self.read.iter().position(|(m, _)| *m == ms) {
            return Ok(Some(at));
        }
        let mut stmt = conn.prepare_cached(&millisecond_rows(self.columns, self.filter))?;
        let none: Option<i64> = None;
        let mut params: Vec<&dyn rusqlite::ToSql> = vec![&none, &ms];
        params.extend_from_slice(extra);
        let last = stmt.column_count() - 1;
        let mut rows = stmt.query(params.as_slice())?;
        let mut found: Vec<(i64, String, T)> = Vec::new();
        while let Some(row) = rows.next()? {
            if found.len() == self.max_rows {
                if self.too_big.len() == Self::KEPT {
                    self.too_big.remove(0);
                }
                self.too_big.push(ms);
                return Ok(None);
            }
            found.push((row.get(last)?, row.get(last - 1)?, map(row)?));
        }
        let mut by_request: RowsByRequest<T> = HashMap::new();
        for (id, request, t) in found {
            by_request.entry(request).or_default().push((id, t));
        }
        if self.read.len() == Self::KEPT {
            self.read.remove(0);
        }
        self.read.push((ms, by_request));
        Ok(Some(self.read.len() - 1))
    }
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

pub(crate) struct SqliteSink {
    conn: Connection,
    lanes: LaneIds,
    /// The label (`feedback` rowid) the retention's sweep for orphan labels reached.
    label_sweep: i64,
}

/// Labels whose request has no record left, for the retention to delete: those of the requests
/// whose rows it just deleted, and `batch` more swept from where the last pass's sweep stopped
/// (`sweep`; returned: where the next pass starts, the first label again after the last), for
/// labels left by an operator's `DELETE` or kept as the newest label by an earlier pass. Never
/// the newest label (SQLite would hand its rowid out again), never one after the snapshot's. A
/// pass checks at most twice `batch` labels, where checking every label each pass stalled the
/// writer for the whole label table (BENCHMARKS.md, "Proxy cost").
fn orphan_labels(
    tx: &rusqlite::Transaction<'_>,
    deleted_requests: &[String],
    prune: &Prune,
    sweep: i64,
) -> Result<(Vec<i64>, i64), StoreError> {
    let newest: i64 = tx.query_row("SELECT COALESCE(MAX(rowid), 0) FROM feedback", [], |r| {
        r.get(0)
    })?;
    let upto = prune.last_feedback.min(newest - 1);
    let mut candidates: Vec<(i64, String)> = Vec::new();
    let mut label_of =
        tx.prepare_cached("SELECT rowid FROM feedback WHERE request_id = ?1 AND rowid <= ?2")?;
    for request_id in deleted_requests {
        if let Some(rowid) = label_of
            .query_row(params![request_id, upto], |r| r.get::<_, i64>(0))
            .optional()?
        {
            candidates.push((rowid, request_id.clone()));
        }
    }
    let mut swept = tx.prepare_cached(
        "SELECT rowid, request_id FROM feedback WHERE rowid > ?1 AND rowid <= ?2
         ORDER BY rowid LIMIT ?3",
    )?;
    let swept: Vec<(i64, String)> = swept
        .query_map(params![sweep, upto, prune.batch as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let next = match swept.last() {
        Some((rowid, _)) if swept.len() == prune.batch => *rowid,
        _ => 0,
    };
    candidates.extend(swept);
    candidates.sort_unstable_by_key(|(rowid, _)| *rowid);
    candidates.dedup_by_key(|(rowid, _)| *rowid);
    let mut orphans = Vec::new();
    for (rowid, request_id) in candidates {
        if request_rows_of(tx, &request_id, "1", "", &[], |_| Ok(()))?.is_empty() {
            orphans.push(rowid);
        }
    }
    Ok((orphans, next))
}

impl SqliteSink {
    pub(crate) fn new(conn: Connection) -> Self {
        SqliteSink {
            conn,
            lanes: LaneIds::default(),
            label_sweep: 0,
        }
    }
}

impl Sink for SqliteSink {
    fn register_artefacts(
        &mut self,
        versions: &[VersionProvenance],
        now_ms: i64,
    ) -> Result<ArtefactIds, StoreError> {
        register_artefacts(&mut self.conn, versions, now_ms, true)
    }

    fn write_batch(
        &mut self,
        batch: &[PredictionRecord],
        artefacts: &ArtefactIds,
    ) -> Result<(), StoreError> {
        // IMMEDIATE: take the write lock first (waiting out the busy timeout while the control
        // store's connection writes), never upgrade a read snapshot.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut fresh = LaneIds::default();
        let before = newest_record(&tx)?;
        insert_records(&tx, batch, artefacts, &self.lanes, &mut fresh)?;
        file_batch(&tx, batch, before)?;
        tx.commit()?;
        self.lanes.merge(fresh);
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
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let labelled = store_feedback(&mut tx, items, models, now_ms)?;
        tx.commit()?;
        Ok(labelled)
    }

    fn snapshot(&mut self, agg: &Aggregates, now_ms: i64) -> Result<(i64, i64), StoreError> {
        let text = encode_aggregates(agg)?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let last_prediction: i64 = tx.query_row(
            "SELECT COALESCE(MAX(id), 0) FROM prediction_rows",
            [],
            |r| r.get(0),
        )?;
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
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let newest: i64 = tx.query_row(
            "SELECT COALESCE(MAX(id), 0) FROM prediction_rows",
            [],
            |r| r.get(0),
        )?;
        // Never the newest row (SQLite would hand its id out again), never past the snapshot.
        let upto = prune.last_prediction.min(newest - 1);
        let count_cut = prune.keep_records.map_or(0, |keep| newest - keep);
        // The request ids of the rows deleted, for their labels below.
        let mut deleted_requests: Vec<String> = {
            let mut delete = tx.prepare_cached(
                "DELETE FROM prediction_rows WHERE id IN (
                     SELECT p.id FROM predictions p
                     WHERE p.id <= ?1 AND p.epoch < ?2 AND (p.ts_ms < ?3 OR p.id <= ?4)
                       AND NOT EXISTS (SELECT 1 FROM feedback f
                                       WHERE f.request_id = p.request_id AND f.rowid > ?5)
                     ORDER BY p.id LIMIT ?6)
                 RETURNING request_id",
            )?;
            let rows = delete.query_map(
                params![
                    upto,
                    prune.protect_from_epoch,
                    prune.before_ts_ms,
                    count_cut,
                    prune.last_feedback,
                    prune.batch as i64
                ],
                |r| r.get(0),
            )?;
            rows.collect::<Result<_, _>>()?
        };
        let deleted = deleted_requests.len();
        deleted_requests.sort_unstable();
        deleted_requests.dedup();
        // Spans left with no record (those of records kept by a protected epoch or a label
        // stay, with ids below them).
        tx.execute(
            "DELETE FROM request_spans
             WHERE first_id < ?1 AND last_id < ?1",
            [tx.query_row(
                "SELECT COALESCE(MIN(id), ?1) FROM prediction_rows",
                [i64::MAX],
                |r| r.get::<_, i64>(0),
            )?],
        )?;
        let (orphans, sweep) = orphan_labels(&tx, &deleted_requests, prune, self.label_sweep)?;
        let mut delete = tx.prepare_cached("DELETE FROM feedback WHERE rowid = ?1")?;
        for rowid in orphans {
            delete.execute([rowid])?;
        }
        drop(delete);
        tx.commit()?;
        self.label_sweep = sweep;
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
    // The records after the snapshot by request, each request's earlier records (already
    // counted, needed to pair) found by its id and put first.
    let mut tail = conn.prepare(&format!(
        "SELECT {P_RECORD_NO_INPUT} FROM predictions p WHERE p.id > ?1 ORDER BY p.request_id, p.id"
    ))?;
    let mut rows = tail.query([last_prediction])?;
    let mut fold = StreamFold::onto(agg, true);
    let mut request: Option<String> = None;
    let mut earlier = ByMillisecond::new(P_RECORD_NO_INPUT, "AND p.id <= ?3");
    while let Some(row) = rows.next()? {
        let log_row = row_to_record(row)??;
        if request.as_deref() != Some(log_row.record.request_id.as_str()) {
            let id = log_row.record.request_id.clone();
            let before = earlier.take(conn, &id, &[&last_prediction], to_log_row)?;
            for row in before {
                fold.push_uncounted(row);
            }
            request = Some(id);
        }
        fold.push(log_row, None);
    }
    drop(rows);
    // The labels after the snapshot, each scored against its request's records.
    let mut labels = conn.prepare(
        "SELECT request_id, truth, metrics FROM feedback WHERE rowid > ?1 ORDER BY rowid",
    )?;
    let mut rows = labels.query([last_feedback])?;
    let mut scored = StreamFold::onto(fold.finish(), false);
    // One lookup per label: labels come in any order, and a millisecond read whole would
    // decode every record of it for one label.
    while let Some(row) = rows.next()? {
        let (id, truth, metrics) = feedback_from_json(
            row.get(0)?,
            &row.get::<_, String>(1)?,
            &row.get::<_, String>(2)?,
        )?;
        let mut label = Some((truth, metrics));
        for row in request_rows_of(conn, &id, P_RECORD_NO_INPUT, "", &[], to_log_row)? {
            scored.push(row, label.take());
        }
    }
    Ok(scored.finish())
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
/// aggregates against a recount. Streams the log in request-id order with each request's
/// feedback joined, so memory stays that of one request whatever the log's length (the order
/// is SQLite's sort, which spills to temporary files past its cache: the log has no
/// request-id index); captured inputs are not read.
pub fn rebuild_aggregates(conn: &Connection) -> Result<Aggregates, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {P_RECORD_NO_INPUT}, f.truth, f.metrics
         FROM predictions p LEFT JOIN feedback f ON f.request_id = p.request_id
         ORDER BY p.request_id, p.id"
    ))?;
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

    /// Reads the whole log back and checks it is `written`, field by field, in order (the
    /// reader drops `pair`, whose version is its own column).
    fn assert_log_is(conn: &Connection, written: &[PredictionRecord]) {
        let (rows, feedback) = read_log(conn).unwrap();
        assert!(feedback.is_empty());
        assert_eq!(rows.len(), written.len());
        for (row, written) in rows.iter().zip(written) {
            let mut expected = written.clone();
            expected.pair = None;
            assert_eq!(row.record, expected);
            assert_eq!(
                row.paired_version,
                written.pair.as_ref().map(|p| p.version.clone())
            );
        }
    }

    /// A sink on a new log file in a temp dir (kept while the dir lives).
    fn new_sink() -> (tempfile::TempDir, SqliteSink) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::sqlite::open(&dir.path().join("log.db")).unwrap();
        (dir, SqliteSink::new(conn))
    }

    fn lanes(conn: &Connection) -> i64 {
        conn.query_row("SELECT COUNT(*) FROM lanes", [], |r| r.get(0))
            .unwrap()
    }

    /// 37 records: two 16-row statements and five single-row ones, read back field by field
    /// in order; a second batch of the same lanes (from the writer's cache) adds no lane.
    #[test]
    fn a_batch_written_by_multi_row_statements_reads_back_row_by_row() {
        let (_dir, mut sink) = new_sink();
        let batch: Vec<PredictionRecord> = (0..37).map(record).collect();
        sink.write_batch(&batch, &ArtefactIds::default()).unwrap();
        let distinct: std::collections::HashSet<_> = batch
            .iter()
            .map(|r| {
                let pair = r.pair.as_ref().map(|p| p.version.clone());
                let (m, v, e, var) = (&r.model, &r.version, r.epoch, &r.variant);
                (m, v, e, var, r.role, r.outcome.as_str(), pair)
            })
            .collect();
        let first_lanes = lanes(&sink.conn);
        assert_eq!(first_lanes, distinct.len() as i64);
        let again: Vec<PredictionRecord> = (0..37)
            .map(|i| {
                let mut r = record(i);
                r.request_id = format!("again-{i:03}");
                r
            })
            .collect();
        sink.write_batch(&again, &ArtefactIds::default()).unwrap();
        assert_eq!(lanes(&sink.conn), first_lanes);
        let mut all = batch.clone();
        all.extend(again);
        assert_log_is(&sink.conn, &all);
    }

    /// Runs of records sharing a lane take the previous record's lane; a record differing from
    /// the one before in any one field of its lane gets its own. Every row is read back
    /// through the view, so a record given its predecessor's lane would read back wrong.
    #[test]
    fn a_record_takes_the_previous_lane_only_when_every_lane_field_matches() {
        let base = record(2);
        type Change = fn(&mut PredictionRecord);
        let changes: [Change; 8] = [
            |_| {},
            |r| r.epoch += 1,
            |r| r.role = Role::Shadow,
            |r| r.outcome = Outcome::Timeout,
            |r| r.model = "other-model".into(),
            |r| r.version = "other-version".into(),
            |r| r.variant = "other-variant".into(),
            |r| {
                r.pair = Some(PairRef {
                    version: "paired".into(),
                    output: Prediction::None,
                })
            },
        ];
        let mut batch = Vec::new();
        for (i, change) in changes.iter().enumerate() {
            // The changed record twice (the second from the shortcut), then the base again.
            for j in 0..3 {
                let mut r = base.clone();
                if j < 2 {
                    change(&mut r);
                }
                r.request_id = format!("r{i}-{j}");
                batch.push(r);
            }
        }
        let (_dir, mut sink) = new_sink();
        // A batch of single-row statements, then one of a 16-row statement and single rows.
        sink.write_batch(&batch[..5], &ArtefactIds::default())
            .unwrap();
        sink.write_batch(&batch[5..], &ArtefactIds::default())
            .unwrap();
        assert_log_is(&sink.conn, &batch);
        assert_eq!(lanes(&sink.conn), changes.len() as i64);
    }

    /// A batch that fails after adding a lane rolls the lane back; the writer must not keep
    /// its id, or the next batch's records would name a lane that does not exist and vanish
    /// from the `predictions` view.
    #[test]
    fn a_failed_batch_leaves_no_lane_behind() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::sqlite::open(&dir.path().join("log.db")).unwrap();
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        let mut sink = SqliteSink::new(conn);
        sink.conn
            .pragma_update(None, "max_page_count", pages + 2)
            .unwrap();
        let mut big = record(1);
        big.input = Some("x".repeat(64 * 1024));
        let err = sink
            .write_batch(&[record(1), big], &ArtefactIds::default())
            .unwrap_err();
        assert!(err.to_string().contains("full"), "{err}");
        assert_eq!(lanes(&sink.conn), 0);
        sink.conn
            .pragma_update(None, "max_page_count", 1_000_000)
            .unwrap();
        sink.write_batch(&[record(1)], &ArtefactIds::default())
            .unwrap();
        assert_log_is(&sink.conn, &[record(1)]);
    }

    /// A batch whose multi-row statement fails part-way (the file full at its last row) leaves
    /// nothing of itself, not the statement's first rows either (with `OR ROLLBACK` SQLite
    /// rolls back the transaction instead of the statement), and the next batch is written.
    #[test]
    fn a_multi_row_statement_failing_part_way_leaves_nothing() {
        let (_dir, mut sink) = new_sink();
        let first: Vec<PredictionRecord> = (0..3).map(record).collect();
        sink.write_batch(&first, &ArtefactIds::default()).unwrap();
        let pages: i64 = sink
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        sink.conn
            .pragma_update(None, "max_page_count", pages + 2)
            .unwrap();
        let mut failing: Vec<PredictionRecord> = (3..3 + ROWS_PER_INSERT).map(record).collect();
        failing[ROWS_PER_INSERT - 1].input = Some("x".repeat(64 * 1024));
        let err = sink
            .write_batch(&failing, &ArtefactIds::default())
            .unwrap_err();
        assert!(err.to_string().contains("full"), "{err}");
        assert_log_is(&sink.conn, &first);
        sink.conn
            .pragma_update(None, "max_page_count", 1_000_000)
            .unwrap();
        let next: Vec<PredictionRecord> = (100..100 + ROWS_PER_INSERT).map(record).collect();
        sink.write_batch(&next, &ArtefactIds::default()).unwrap();
        let mut all = first;
        all.extend(next);
        assert_log_is(&sink.conn, &all);
    }

    /// Request id `n` of the generated form, carrying millisecond `ms`.
    fn generated(ms: i64, n: usize) -> String {
        format!("{ms:012x}{n:020x}")
    }

    /// A client's id of the generated form whose millisecond is the epoch's.
    fn counter(n: u64) -> String {
        format!("{n:032x}")
    }

    /// Three batches of records: generated ids over a few milliseconds, interleaved, one
    /// millisecond's records spread wider than a span reaches; ids a client chose (one
    /// upper-case hex, one of another length, a zero-padded hex counter: the generated form,
    /// its millisecond far from its records' time); serving records whose shadow comes in a
    /// later batch, one such shadow logged an hour and more after its id's millisecond.
    /// Returns the records in write order.
    fn filed_batches(sink: &mut SqliteSink) -> Vec<PredictionRecord> {
        let ms = 1_700_000_000_000i64;
        let at = |id: String, role: Role| {
            let mut r = record(2);
            r.request_id = id;
            r.role = role;
            r
        };
        // Milliseconds 0, 2 and 4 interleaved; millisecond 1 every 100th record, further
        // apart than a span reaches.
        let m_of = |n: usize| {
            if n.is_multiple_of(100) {
                ms + 1
            } else {
                ms + (n as i64 % 3) * 2
            }
        };
        let mut first: Vec<PredictionRecord> = (0..300)
            .map(|n| at(generated(m_of(n), n), Role::Serving))
            .collect();
        first.push(at("order-42".into(), Role::Serving));
        first.push(at(generated(ms, 7).to_uppercase(), Role::Serving));
        first.push(at("x".repeat(31), Role::Serving));
        first.push(at(counter(42), Role::Serving));
        let mut second: Vec<PredictionRecord> = (300..340)
            .map(|n| at(generated(ms + 10, n), Role::Serving))
            .collect();
        // Late shadows of requests of the first batch, and of the client's order-42.
        second.push(at(generated(m_of(5), 5), Role::Shadow));
        second.push(at(generated(m_of(100), 100), Role::Shadow));
        second.push(at("order-42".into(), Role::Shadow));
        second.push(at(counter(42), Role::Shadow));
        let mut late = at(generated(m_of(20), 20), Role::Shadow);
        late.ts_ms = m_of(20) + 3_600_001;
        let third = vec![at(generated(m_of(10), 10), Role::Shadow), late];
        let mut all = Vec::new();
        for batch in [first, second, third] {
            sink.write_batch(&batch, &ArtefactIds::default()).unwrap();
            all.extend(batch);
        }
        all
    }

    /// What `records_of` must return, from the written records alone: the request's
    /// records, serving first, each role in write order.
    fn expected_records(all: &[PredictionRecord], id: &str) -> Vec<PredictionRecord> {
        let mut want: Vec<PredictionRecord> = all
            .iter()
            .filter(|r| r.request_id == id)
            .cloned()
            .map(|mut r| {
                r.pair = None;
                r
            })
            .collect();
        want.sort_by_key(|r| r.role != Role::Serving);
        want
    }

    fn assert_found(conn: &Connection, all: &[PredictionRecord], extra_absent: &[String]) {
        let mut ids: Vec<&str> = all.iter().map(|r| r.request_id.as_str()).collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            let got: Vec<PredictionRecord> = records_of(conn, id)
                .unwrap()
                .into_iter()
                .map(|r| r.record)
                .collect();
            assert_eq!(got, expected_records(all, id), "request {id}");
        }
        for id in extra_absent {
            assert!(records_of(conn, id).unwrap().is_empty(), "{id}");
        }
    }

    /// Ids never written: of the generated form (a filed millisecond, another one; the
    /// lower-case form of the upper-case id written) and a name.
    fn absent_ids() -> Vec<String> {
        vec![
            generated(1_700_000_000_000, 9_999),
            generated(1_600_000_000_000, 1),
            generated(1_700_000_000_000, 7),
            "order-43".into(),
            counter(43),
        ]
    }

    /// Every request's records are found by its id, whichever way it was filed, with its
    /// late shadow from another batch; ids never written find nothing; deleting records
    /// through the view removes their names.
    #[test]
    fn records_are_found_by_request_id_through_spans_and_names() {
        let (_dir, mut sink) = new_sink();
        let all = filed_batches(&mut sink);
        let count = |sql: &str| -> i64 { sink.conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        // Named: order-42 twice, the upper-case id, the 31-character one, the counter twice,
        // the late shadow.
        assert_eq!(count("SELECT COUNT(*) FROM named_requests"), 7);
        // Far fewer spans than records: one per millisecond per batch (seven), more for the
        // spread millisecond.
        let spans = count("SELECT COUNT(*) FROM request_spans");
        assert!((9..=20).contains(&spans), "{spans} spans");
        assert_found(&sink.conn, &all, &absent_ids());
        sink.conn
            .execute("DELETE FROM predictions WHERE request_id = 'order-42'", [])
            .unwrap();
        assert_eq!(count("SELECT COUNT(*) FROM named_requests"), 5);
        let kept: Vec<PredictionRecord> = all
            .into_iter()
            .filter(|r| r.request_id != "order-42")
            .collect();
        assert_found(&sink.conn, &kept, &["order-42".to_string()]);
    }

    /// An operator deletes the newest records (every record here) and SQLite hands their ids
    /// out again: the spans left by the deleted records neither stop the next batches (a
    /// span starting at a reused id is dropped) nor double a record they cover.
    #[test]
    fn record_ids_coming_back_after_a_delete_are_filed_again() {
        let (_dir, mut sink) = new_sink();
        let before = filed_batches(&mut sink);
        sink.conn.execute("DELETE FROM predictions", []).unwrap();
        let after = filed_batches(&mut sink);
        let first: i64 = sink
            .conn
            .query_row("SELECT MIN(id) FROM prediction_rows", [], |r| r.get(0))
            .unwrap();
        assert_eq!(first, 1, "ids did not come back");
        assert_found(&sink.conn, &after, &absent_ids());
        assert_eq!(after.len(), before.len());
    }

    /// Labels stored one after another in one transaction, as the writer stores a batch of
    /// feedback: each lookup (of either kind) reuses its prepared statement. Without the
    /// query planner stability guarantee (`sqlite::open`) SQLite prepared the lookup again
    /// after every change of its bound values, a parse per label.
    #[test]
    fn feedback_lookups_are_not_prepared_again_per_label() {
        let (_dir, mut sink) = new_sink();
        let all = filed_batches(&mut sink);
        let tx = sink.conn.transaction().unwrap();
        for rec in all.iter().filter(|r| r.role == Role::Serving) {
            assert!(!records_of(&tx, &rec.request_id).unwrap().is_empty());
            let truth = Truth::Labels(vec!["1".into()]);
            insert_feedback(&tx, &rec.request_id, 1, &truth, &[]).unwrap();
        }
        for sql in [span_rows(P_RECORD, ""), named_rows(P_RECORD, "")] {
            let stmt = tx.prepare_cached(&sql).unwrap();
            assert!(stmt.get_status(rusqlite::StatementStatus::Run) > 0);
            assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
        }
    }

    /// `ByMillisecond` gives each request what a lookup of its own gives, whether it reads
    /// the request's millisecond whole or finds it holds more than it reads at once, with ids
    /// of the generated form filed by name (a counter, a late shadow) and without.
    #[test]
    fn by_millisecond_gives_each_request_what_its_own_lookup_gives() {
        let (_dir, mut sink) = new_sink();
        let all = filed_batches(&mut sink);
        let mut ids: Vec<String> = all.iter().map(|r| r.request_id.clone()).collect();
        ids.sort();
        ids.dedup();
        let (columns, filter, upto) = ("p.id", "AND p.id <= ?3", 400i64);
        let id_of = |r: &rusqlite::Row<'_>| Ok(r.get::<_, i64>(0)?);
        for strays in [true, false] {
            if !strays {
                sink.conn
                    .execute(
                        "DELETE FROM predictions WHERE id IN (SELECT id FROM named_requests
                         WHERE length(request_id) = 32 AND request_id NOT GLOB '*[^0-9a-f]*')",
                        [],
                    )
                    .unwrap();
            }
            let mut found = 0;
            for max_rows in [ByMillisecond::<i64>::MAX_ROWS, 20] {
                let mut by_ms = ByMillisecond::with_max_rows(columns, filter, max_rows);
                for id in &ids {
                    let own = request_rows_of(&sink.conn, id, columns, filter, &[&upto], id_of);
                    let got = by_ms.take(&sink.conn, id, &[&upto], id_of).unwrap();
                    assert_eq!(got, own.unwrap(), "{id}");
                    found += got.len();
                }
                assert_eq!(by_ms.strays, Some(strays));
                // Milliseconds 0, 2 and 4 hold ~100 records each.
                assert_eq!(
                    by_ms.too_big.is_empty(),
                    max_rows > 100,
                    "{:?}",
                    by_ms.too_big
                );
            }
            // Every record at each limit; in the second round the three strays are gone.
            let left = all.len() - if strays { 0 } else { 3 };
            assert_eq!(found, 2 * left, "strays {strays}");
        }
    }

    /// A log written by the release before spans (lanes, and an index on `request_id`) is
    /// filed when opened: the index goes and every request is found as the writer's own.
    #[test]
    fn a_log_with_a_request_index_is_filed_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let mut sink = SqliteSink::new(crate::sqlite::open(&path).unwrap());
        let all = filed_batches(&mut sink);
        // Back to that release's layout.
        sink.conn
            .execute_batch(
                "DROP TRIGGER prediction_rows_delete; DROP TABLE named_requests;
                 DROP TABLE request_spans;
                 CREATE INDEX prediction_rows_request ON prediction_rows(request_id);",
            )
            .unwrap();
        drop(sink);
        let conn = crate::sqlite::open(&path).unwrap();
        let index: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'prediction_rows_request'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(index, 0);
        assert_found(&conn, &all, &absent_ids());
        assert_log_is(&conn, &all);
    }

    /// A file in the table layout of every release before lanes (session 13's schema, every
    /// column present) holding records 0..37 (returned) with ids 100, 103, 106, … (gaps, as
    /// retention leaves them) and artefact ids on every other record.
    fn old_log() -> (tempfile::TempDir, std::path::PathBuf, Vec<PredictionRecord>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let written: Vec<PredictionRecord> = (0..37).map(record).collect();
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE predictions (
                id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, ts_ms INTEGER NOT NULL,
                model TEXT NOT NULL, epoch INTEGER NOT NULL, variant TEXT NOT NULL,
                role TEXT NOT NULL, version TEXT NOT NULL, key_hash INTEGER,
                outcome TEXT NOT NULL, status INTEGER NOT NULL,
                latency_us INTEGER NOT NULL, output TEXT NOT NULL, input TEXT,
                paired_version TEXT, segments TEXT, artefact_id INTEGER);
             CREATE INDEX predictions_request ON predictions(request_id);",
        )
        .unwrap();
        for (i, r) in written.iter().enumerate() {
            conn.execute(
                "INSERT INTO predictions (id, request_id, ts_ms, model, epoch, variant,
                    role, version, key_hash, outcome, status, latency_us, output, input,
                    paired_version, segments, artefact_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                    ?15, ?16, ?17)",
                params![
                    // Ids with gaps, as retention leaves them.
                    100 + 3 * i as i64,
                    r.request_id,
                    r.ts_ms,
                    r.model,
                    r.epoch as i64,
                    r.variant,
                    r.role.as_str(),
                    r.version,
                    r.key_hash.map(|h| h as i64),
                    r.outcome.as_str(),
                    r.status,
                    r.latency_us as i64,
                    serde_json::to_string(&r.output).unwrap(),
                    r.input,
                    r.pair.as_ref().map(|p| p.version.clone()),
                    segments_to_text(&r.segments).unwrap(),
                    (i % 2 == 0).then_some(i as i64 % 3),
                ],
            )
            .unwrap();
        }
        (dir, path, written)
    }

    /// A log in the table layout of every release before lanes (session 13's schema, every
    /// column present) moves into lanes with every field and id kept; the next record takes
    /// the next id; opening the file again changes nothing.
    #[test]
    fn a_log_from_before_lanes_moves_into_them_whole() {
        let (_dir, path, written) = old_log();
        let conn = crate::sqlite::open(&path).unwrap();
        assert_log_is(&conn, &written);
        let ids: Vec<(i64, Option<i64>)> = conn
            .prepare("SELECT id, artefact_id FROM predictions ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let expected: Vec<(i64, Option<i64>)> = (0..37)
            .map(|i| (100 + 3 * i, (i % 2 == 0).then_some(i % 3)))
            .collect();
        assert_eq!(ids, expected);
        let kind: String = conn
            .query_row(
                "SELECT type FROM sqlite_master WHERE name = 'predictions'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(kind, "view");
        drop(conn);

        let conn = crate::sqlite::open(&path).unwrap();
        let mut sink = SqliteSink::new(conn);
        sink.write_batch(&[record(40)], &ArtefactIds::default())
            .unwrap();
        let newest: i64 = sink
            .conn
            .query_row("SELECT MAX(id) FROM predictions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(newest, 100 + 3 * 36 + 1);
        let mut all = written.clone();
        all.push(record(40));
        assert_log_is(&sink.conn, &all);
        // Deleting through the view deletes the records.
        sink.conn
            .execute("DELETE FROM predictions WHERE id < 106", [])
            .unwrap();
        assert_log_is(&sink.conn, &all[2..]);
    }

    /// Two connections opening an old log at once (the log writer and the control store at
    /// start-up): one moves it, the other waits for the move and finds it done.
    #[test]
    fn two_openers_of_an_old_log_move_it_once() {
        let (_dir, path, written) = old_log();
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            let openers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        crate::sqlite::open(&path).map(drop)
                    })
                })
                .collect();
            for opener in openers {
                opener.join().unwrap().unwrap();
            }
        });
        assert_log_is(&crate::sqlite::open(&path).unwrap(), &written);
    }
}
