//! The prediction log apart from any database: rows as read back, the [`Sink`] interface the
//! log writer drives, and the logic both backends share (the feedback transaction's loop, the
//! folds of rows into [`Aggregates`], shadow pairings, the JSON of feedback and
//! disagreements). It exists so that the SQLite (`sqlite_log`) and PostgreSQL
//! (`pg_log`) log backends depend on it and never on each other or on the writer
//! (`log`) that dispatches to them.

use std::collections::HashMap;

use switchyard_core::provenance::VersionProvenance;
use switchyard_core::{Aggregates, Feedback, PairRef, Prediction, PredictionRecord, Role, Truth};

use crate::artefacts::ArtefactIds;
use crate::error::corrupt;
use crate::StoreError;

/// A stored record; shadow records name the version they were paired with.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    pub record: PredictionRecord,
    pub paired_version: Option<String>,
}

/// What a prune may delete: the snapshot's position and the policy's cut-offs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prune {
    /// The newest snapshot covers records up to this id and labels up to this position.
    pub last_prediction: i64,
    pub last_feedback: i64,
    /// Records older than this (ms since the epoch) may go (`i64::MIN`: no age limit).
    pub before_ts_ms: i64,
    /// Records this far behind the newest may go (`None`: no count limit).
    pub keep_records: Option<i64>,
    /// Records of this routing epoch or later stay.
    pub protect_from_epoch: i64,
    pub batch: usize,
}

/// Feedback of one request as stored: id, truth, business metrics.
pub type FeedbackRow = (String, Truth, Vec<(String, f64)>);

/// What happened to a batch of feedback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedbackOutcome {
    /// Newly attached.
    pub accepted: u64,
    /// Request ids that already had feedback (the first one stays; idempotent).
    pub duplicates: u64,
    /// Request ids with no prediction in the log.
    pub unknown: Vec<String>,
    /// Request ids of models the caller may not label (nothing stored).
    pub forbidden: Vec<String>,
}

/// What storing feedback did, and every record of each newly labelled request.
pub(crate) type Labelled = (FeedbackOutcome, Vec<(Vec<LogRow>, Feedback)>);

/// Where a writer commits batches: a SQLite file or a PostgreSQL session.
pub(crate) trait Sink {
    /// Checks the versions this writer serves against the artefacts table and records the new
    /// ones (see `artefacts`); refuses a changed artefact under a known version name.
    fn register_artefacts(
        &mut self,
        versions: &[VersionProvenance],
        now_ms: i64,
    ) -> Result<ArtefactIds, StoreError>;
    /// Writes the batch in one transaction, each record naming its version's artefact.
    fn write_batch(
        &mut self,
        batch: &[PredictionRecord],
        artefacts: &ArtefactIds,
    ) -> Result<(), StoreError>;
    /// Stores feedback and returns, per newly labelled request, every record of it.
    fn feedback(
        &mut self,
        items: Vec<Feedback>,
        models: Option<&[String]>,
        now_ms: i64,
    ) -> Result<Labelled, StoreError>;
    /// Saves `agg`, which must be exactly what the log holds now (the writer's own aggregates
    /// between two commits), with the log position it covers; replaces the previous snapshot.
    /// Returns that position: the last record id and the last label's.
    fn snapshot(&mut self, agg: &Aggregates, now_ms: i64) -> Result<(i64, i64), StoreError>;
    /// Deletes up to `prune.batch` records the retention policy lets go (and the labels of
    /// requests with no record left); returns the records deleted.
    fn prune(&mut self, prune: &Prune) -> Result<u64, StoreError>;
}

/// The two statements of a feedback transaction, run once per item by [`store_feedback`]: the
/// SQL differs between SQLite and PostgreSQL, the loop does not.
pub(crate) trait FeedbackTx {
    /// Every record of one request, serving first.
    fn records_of(&mut self, request_id: &str) -> Result<Vec<LogRow>, StoreError>;
    /// Stores feedback unless the request already has some; `true` when it was new.
    fn insert_feedback(&mut self, item: &Feedback, now_ms: i64) -> Result<bool, StoreError>;
}

/// Stores each item whose request is in the log, inside the caller's transaction (the caller
/// commits): the first feedback of a request is kept, later ones count as duplicates, requests
/// with no record as unknown, requests of a model outside `models` (when given) as forbidden.
/// Returns every record of each newly labelled request.
pub(crate) fn store_feedback(
    tx: &mut impl FeedbackTx,
    items: Vec<Feedback>,
    models: Option<&[String]>,
    now_ms: i64,
) -> Result<Labelled, StoreError> {
    let mut outcome = FeedbackOutcome::default();
    let mut newly_labelled = Vec::new();
    for item in items {
        let rows = tx.records_of(&item.request_id)?;
        if rows.is_empty() {
            outcome.unknown.push(item.request_id);
            continue;
        }
        if let Some(allowed) = models {
            if !rows.iter().all(|r| allowed.contains(&r.record.model)) {
                outcome.forbidden.push(item.request_id);
                continue;
            }
        }
        if tx.insert_feedback(&item, now_ms)? {
            outcome.accepted += 1;
            newly_labelled.push((rows, item));
        } else {
            outcome.duplicates += 1;
        }
    }
    Ok((outcome, newly_labelled))
}

/// A record's segment values as stored: JSON `[[field, value], …]`, NULL when it has none.
pub(crate) fn segments_to_text(
    segments: &[(String, String)],
) -> Result<Option<String>, StoreError> {
    if segments.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(segments)
        .map(Some)
        .map_err(|e| corrupt("segments", e))
}

/// A record's segment values from their stored column.
pub(crate) fn segments_from_text(text: Option<&str>) -> Result<Vec<(String, String)>, StoreError> {
    match text {
        None => Ok(Vec::new()),
        Some(t) => serde_json::from_str(t).map_err(|e| corrupt("segments", e)),
    }
}

/// Truth and business metrics as stored (JSON text).
pub(crate) fn feedback_to_json(
    truth: &Truth,
    metrics: &[(String, f64)],
) -> Result<(String, String), StoreError> {
    let truth = serde_json::to_string(truth).map_err(|e| corrupt("truth", e))?;
    let metrics = serde_json::to_string(metrics).map_err(|e| corrupt("metrics", e))?;
    Ok((truth, metrics))
}

/// A feedback row from its stored columns.
pub(crate) fn feedback_from_json(
    request_id: String,
    truth: &str,
    metrics: &str,
) -> Result<FeedbackRow, StoreError> {
    let truth: Truth = serde_json::from_str(truth).map_err(|e| corrupt("truth", e))?;
    let metrics: Vec<(String, f64)> =
        serde_json::from_str(metrics).map_err(|e| corrupt("metrics", e))?;
    Ok((request_id, truth, metrics))
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

impl Disagreement {
    /// A disagreement from the columns the disagreements query returns (both backends):
    /// outputs and truth are JSON text.
    pub(crate) fn from_columns(
        request_id: String,
        ts_ms: i64,
        input: Option<String>,
        primary: &str,
        shadow: &str,
        truth: Option<String>,
    ) -> Result<Disagreement, StoreError> {
        Ok(Disagreement {
            request_id,
            ts_ms,
            input,
            primary: serde_json::from_str::<Prediction>(primary)
                .map_err(|e| corrupt("output", e))?,
            shadow: serde_json::from_str::<Prediction>(shadow).map_err(|e| corrupt("output", e))?,
            truth: truth
                .map(|t| serde_json::from_str(&t))
                .transpose()
                .map_err(|e| corrupt("truth", e))?,
        })
    }
}

/// Which captured requests a replay reads: one model's serving records whose request body was
/// captured (`log.capture_inputs`), in `[since_ms, until_ms)`, oldest first, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedQuery {
    pub model: String,
    /// Milliseconds since the Unix epoch, inclusive (`None`: from the first record).
    pub since_ms: Option<i64>,
    /// Exclusive (`None`: up to the last record).
    pub until_ms: Option<i64>,
    pub limit: usize,
}

impl CapturedQuery {
    /// The bounds as SQL parameters: `[since, until)`.
    pub(crate) fn window(&self) -> (i64, i64) {
        (
            self.since_ms.unwrap_or(i64::MIN),
            self.until_ms.unwrap_or(i64::MAX),
        )
    }

    pub(crate) fn sql_limit(&self) -> i64 {
        i64::try_from(self.limit).unwrap_or(i64::MAX)
    }
}

/// A served request whose body the log captured, with its label when feedback gave one.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedRequest {
    pub request_id: String,
    pub ts_ms: i64,
    /// The request body as captured (cut at `log.max_input_bytes`, so possibly not whole).
    pub input: String,
    /// The request's segment values, as its serving record carries them.
    pub segments: Vec<(String, String)>,
    /// The label or value of the request's feedback (`None`: none, or business metrics only).
    pub truth: Option<Truth>,
}

impl CapturedRequest {
    /// A captured request from the columns the captured-requests query returns (both
    /// backends): segments and truth are JSON text.
    pub(crate) fn from_columns(
        request_id: String,
        ts_ms: i64,
        input: String,
        segments: Option<&str>,
        truth: Option<&str>,
    ) -> Result<CapturedRequest, StoreError> {
        let truth = truth
            .map(serde_json::from_str::<Truth>)
            .transpose()
            .map_err(|e| corrupt("truth", e))?
            .filter(|t| *t != Truth::None);
        Ok(CapturedRequest {
            request_id,
            ts_ms,
            input,
            segments: segments_from_text(segments)?,
            truth,
        })
    }
}

/// Restores each shadow row's pairing with the serving row of its request.
pub(crate) fn with_pairs(rows: Vec<LogRow>) -> Vec<PredictionRecord> {
    let serving = rows
        .iter()
        .find(|r| r.record.role == Role::Serving)
        .map(|r| r.record.clone());
    rows.into_iter()
        .map(|row| {
            let mut rec = row.record;
            if rec.role == Role::Shadow {
                rec.pair = match (&serving, row.paired_version) {
                    (Some(s), Some(version)) if s.version == version => Some(PairRef {
                        version,
                        output: s.output.clone(),
                    }),
                    _ => None,
                };
            }
            rec
        })
        .collect()
}

/// Folds records (grouped by request, in first-seen order) and then feedback into fresh
/// aggregates, everything in memory: the former SQLite rebuild, kept as the baseline of the
/// rebuild benchmark (`StreamFold` is what runs).
pub(crate) fn fold_log(rows: Vec<LogRow>, feedback: Vec<FeedbackRow>) -> Aggregates {
    let mut agg = Aggregates::default();
    let mut paired = HashMap::new();
    for (id, records) in group_by_request(rows) {
        records.iter().for_each(|r| agg.record(r));
        paired.insert(id, records);
    }
    for (id, truth, metrics) in feedback {
        if let Some(records) = paired.get(&id) {
            agg.record_feedback(records, &truth, &metrics);
        }
    }
    agg
}

/// Folds a stream of rows sorted by request id, each with its request's feedback (when any),
/// into aggregates while holding only one request's rows at a time: the start-up rebuild's
/// memory no longer grows with the log (the in-memory `fold_log` held every record).
#[derive(Debug)]
pub(crate) struct StreamFold {
    agg: Aggregates,
    rows: Vec<LogRow>,
    /// Per row: whether it is counted (rows read only to pair a shadow with its serving record
    /// are not).
    counted: Vec<bool>,
    feedback: Option<(Truth, Vec<(String, f64)>)>,
    /// `false`: the rows only carry the records a label is scored against (they were counted
    /// by another pass, or on another replica).
    record_rows: bool,
}

impl Default for StreamFold {
    fn default() -> Self {
        StreamFold::onto(Aggregates::default(), true)
    }
}

impl StreamFold {
    /// Folds into `agg`; with `record_rows` false only the labels are accounted.
    pub(crate) fn onto(agg: Aggregates, record_rows: bool) -> Self {
        StreamFold {
            agg,
            rows: Vec::new(),
            counted: Vec::new(),
            feedback: None,
            record_rows,
        }
    }

    /// Adds one row; rows of one request must come together.
    pub(crate) fn push(&mut self, row: LogRow, feedback: Option<(Truth, Vec<(String, f64)>)>) {
        self.push_row(row, feedback, true);
    }

    /// Adds one row that pairs the request's other rows but is not counted itself (already in
    /// a snapshot).
    pub(crate) fn push_uncounted(&mut self, row: LogRow) {
        self.push_row(row, None, false);
    }

    fn push_row(
        &mut self,
        row: LogRow,
        feedback: Option<(Truth, Vec<(String, f64)>)>,
        counted: bool,
    ) {
        if self
            .rows
            .first()
            .is_some_and(|r| r.record.request_id != row.record.request_id)
        {
            self.flush();
        }
        if self.feedback.is_none() {
            self.feedback = feedback;
        }
        self.rows.push(row);
        self.counted.push(counted);
    }

    fn flush(&mut self) {
        let records = with_pairs(std::mem::take(&mut self.rows));
        let counted = std::mem::take(&mut self.counted);
        if self.record_rows {
            records
                .iter()
                .zip(counted)
                .filter(|(_, counted)| *counted)
                .for_each(|(r, _)| self.agg.record(r));
        }
        if let Some((truth, metrics)) = self.feedback.take() {
            self.agg.record_feedback(&records, &truth, &metrics);
        }
    }

    pub(crate) fn finish(mut self) -> Aggregates {
        if !self.rows.is_empty() {
            self.flush();
        }
        self.agg
    }
}

/// Rows grouped per request id in order of first appearance, with shadow pairings restored.
fn group_by_request(rows: Vec<LogRow>) -> Vec<(String, Vec<PredictionRecord>)> {
    let mut by_request: HashMap<String, Vec<LogRow>> = HashMap::new();
    let mut order = Vec::new();
    for row in rows {
        let id = row.record.request_id.clone();
        let entry = by_request.entry(id.clone()).or_default();
        if entry.is_empty() {
            order.push(id);
        }
        entry.push(row);
    }
    order
        .into_iter()
        .filter_map(|id| {
            let rows = by_request.remove(&id)?;
            Some((id, with_pairs(rows)))
        })
        .collect()
}
