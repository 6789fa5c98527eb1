//! The prediction log in PostgreSQL: every replica appends its own rows (tagged with its name)
//! in one round trip per batch, and rebuilds only its own aggregates at start-up. It exists so
//! that the writer (`log`) only dispatches; like `sqlite_log`, it depends on
//! the neutral `log_rows` and the PostgreSQL plumbing (`pg`), never on the
//! SQLite backend or on the writer.

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Statement, Transaction};
use switchyard_core::provenance::{Artefact, VersionProvenance};
use switchyard_core::{Aggregates, Feedback, Outcome, Prediction, PredictionRecord, Role};

use crate::artefacts::{register, ArtefactIds, ArtefactTx, StoredArtefact};
use crate::error::corrupt;
use crate::log_rows::{
    feedback_from_json, feedback_to_json, segments_from_text, segments_to_text, store_feedback,
    CapturedQuery, CapturedRequest, Disagreement, FeedbackTx, Labelled, LogRow, Prune, Sink,
    StreamFold,
};
use crate::pg;
use crate::wire::{decode_aggregates, encode_aggregates};
use crate::StoreError;

const SELECT_RECORD: &str = "SELECT p.request_id, p.ts_ms, p.model, p.epoch, p.variant, p.role,
    p.version, p.key_hash, p.outcome, p.status, p.latency_us, p.output, p.input, p.paired_version,
    p.segments FROM predictions p";

/// The columns of `SELECT_RECORD` without the captured input (the rebuild does not need it);
/// callers add the `FROM`.
const SELECT_STREAMED: &str = "SELECT p.request_id, p.ts_ms, p.model, p.epoch, p.variant, p.role,
    p.version, p.key_hash, p.outcome, p.status, p.latency_us, p.output, NULL::text, p.paired_version,
    p.segments";

/// One batch, as one `INSERT … SELECT FROM unnest(arrays)`.
const INSERT_BATCH: &str = "INSERT INTO predictions
    (replica, request_id, ts_ms, model, epoch, variant, role, version, key_hash, outcome,
     status, latency_us, output, input, paired_version, segments, artefact_id)
    SELECT $1, * FROM unnest($2::text[], $3::int8[], $4::text[], $5::int8[], $6::text[],
        $7::text[], $8::text[], $9::int8[], $10::text[], $11::int4[], $12::int8[], $13::text[],
        $14::text[], $15::text[], $16::text[], $17::int8[])";

const SELECT_ARTEFACT: &str =
    "SELECT id, model, version, artefact_kind, artefact, git_sha, registry, first_seen_ms
     FROM artefacts";

fn row_to_artefact(row: &postgres::Row) -> Result<StoredArtefact, StoreError> {
    let kind: String = row.try_get(3)?;
    let artefact =
        Artefact::from_parts(&kind, row.try_get(4)?).ok_or_else(|| corrupt("artefact", &kind))?;
    Ok(StoredArtefact {
        id: row.try_get(0)?,
        provenance: VersionProvenance {
            model: row.try_get(1)?,
            version: row.try_get(2)?,
            artefact,
            git_sha: row.try_get(5)?,
            registry: row.try_get(6)?,
        },
        first_seen_ms: row.try_get(7)?,
    })
}

/// The artefacts table's two statements inside a PostgreSQL transaction.
struct PgArtefacts<'a, 'b>(&'a mut Transaction<'b>);

impl ArtefactTx for PgArtefacts<'_, '_> {
    fn rows_of(&mut self, model: &str, version: &str) -> Result<Vec<StoredArtefact>, StoreError> {
        self.0
            .query(
                &format!("{SELECT_ARTEFACT} WHERE model = $1 AND version = $2 ORDER BY id"),
                &[&model, &version],
            )?
            .iter()
            .map(row_to_artefact)
            .collect()
    }

    fn insert(&mut self, p: &VersionProvenance, now_ms: i64) -> Result<i64, StoreError> {
        Ok(self
            .0
            .query_one(
                "INSERT INTO artefacts
                 (model, version, artefact_kind, artefact, git_sha, registry, first_seen_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    &p.model,
                    &p.version,
                    &p.artefact.kind(),
                    &p.artefact.id(),
                    &p.git_sha,
                    &p.registry,
                    &now_ms,
                ],
            )?
            .try_get(0)?)
    }
}

/// Checks `versions` against the artefacts table and (with `write`) records the new ones, in
/// one transaction under an advisory lock, so replicas starting together with different
/// artefacts under one name cannot both get in.
pub(crate) fn register_artefacts(
    client: &mut Client,
    versions: &[VersionProvenance],
    now_ms: i64,
    write: bool,
) -> Result<ArtefactIds, StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&pg::ARTEFACTS_LOCK])?;
    let ids = register(&mut PgArtefacts(&mut tx), versions, now_ms, write)?;
    if write {
        tx.commit()?;
    }
    Ok(ids)
}

/// Every row of the artefacts table, oldest first.
pub(crate) fn artefacts(client: &mut Client) -> Result<Vec<StoredArtefact>, StoreError> {
    client
        .query(&format!("{SELECT_ARTEFACT} ORDER BY id"), &[])?
        .iter()
        .map(row_to_artefact)
        .collect()
}

pub(crate) fn row_to_log_row(row: &postgres::Row) -> Result<LogRow, StoreError> {
    let role: String = row.try_get(5)?;
    let outcome: String = row.try_get(8)?;
    let output: String = row.try_get(11)?;
    let segments: Option<String> = row.try_get(14)?;
    Ok(LogRow {
        record: PredictionRecord {
            request_id: row.try_get(0)?,
            ts_ms: row.try_get(1)?,
            model: row.try_get(2)?,
            epoch: u64::try_from(row.try_get::<_, i64>(3)?).map_err(|e| corrupt("epoch", e))?,
            variant: row.try_get(4)?,
            role: Role::parse(&role).ok_or_else(|| corrupt("role", &role))?,
            version: row.try_get(6)?,
            key_hash: row.try_get::<_, Option<i64>>(7)?.map(|h| h as u64),
            outcome: Outcome::parse(&outcome).ok_or_else(|| corrupt("outcome", &outcome))?,
            status: u16::try_from(row.try_get::<_, i32>(9)?).map_err(|e| corrupt("status", e))?,
            latency_us: u64::try_from(row.try_get::<_, i64>(10)?)
                .map_err(|e| corrupt("latency", e))?,
            output: serde_json::from_str::<Prediction>(&output)
                .map_err(|e| corrupt("output", e))?,
            input: row.try_get(12)?,
            pair: None,
            segments: segments_from_text(segments.as_deref())?,
        },
        paired_version: row.try_get(13)?,
    })
}

/// The writer's PostgreSQL session.
pub(crate) struct PgSink {
    client: Client,
    url: String,
    replica: String,
    /// The label (`feedback.seq`) the retention's sweep for orphan labels reached.
    label_sweep: i64,
}

impl PgSink {
    pub(crate) fn open(url: &str, replica: &str) -> Result<Self, StoreError> {
        let mut client = pg::connect(url)?;
        pg::init(&mut client)?;
        Ok(PgSink {
            client,
            url: url.to_string(),
            replica: replica.to_string(),
            label_sweep: 0,
        })
    }

    /// Reconnects when the previous connection closed (the batch in hand is retried once).
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.is_closed() {
            self.client = pg::connect(&self.url)?;
        }
        Ok(&mut self.client)
    }

    /// This replica's aggregates: its own records, and the feedback it accepted scored against
    /// the records of those requests, wherever they were served. Two streamed passes in
    /// request-id order (one request in memory at a time, captured inputs not read): this
    /// replica's records, then the labels it took joined to their requests' records.
    pub(crate) fn rebuild_aggregates(&mut self) -> Result<Aggregates, StoreError> {
        let replica = self.replica.clone();
        let client = self.client()?;
        let params = [&replica as &(dyn postgres::types::ToSql + Sync)];
        let mut records = StreamFold::default();
        let mut rows = client.query_raw(
            &format!(
                "{SELECT_STREAMED} FROM predictions p WHERE p.replica = $1
                 ORDER BY p.request_id, p.id"
            ),
            params,
        )?;
        while let Some(row) = rows.next()? {
            records.push(row_to_log_row(&row)?, None);
        }
        drop(rows);
        let mut labels = StreamFold::onto(records.finish(), false);
        let mut rows = client.query_raw(
            &format!(
                "{SELECT_STREAMED}, f.truth, f.metrics FROM predictions p
                 JOIN feedback f ON f.request_id = p.request_id
                 WHERE f.replica = $1 ORDER BY p.request_id, p.id"
            ),
            params,
        )?;
        while let Some(row) = rows.next()? {
            let (truth, metrics): (String, String) = (row.try_get(15)?, row.try_get(16)?);
            let (_, truth, metrics) = feedback_from_json(String::new(), &truth, &metrics)?;
            labels.push(row_to_log_row(&row)?, Some((truth, metrics)));
        }
        Ok(labels.finish())
    }

    /// This replica's aggregates at start-up: its newest snapshot, then what it took after it
    /// (its records after the snapshot's last one, counted, with their requests' earlier
    /// records for pairing; then the labels it took after the snapshot's last one, scored
    /// against their requests' records). Without a snapshot, or with one that does not decode,
    /// [`PgSink::rebuild_aggregates`].
    pub(crate) fn restore_aggregates(&mut self) -> Result<Aggregates, StoreError> {
        let replica = self.replica.clone();
        let client = self.client()?;
        let snapshot = client.query_opt(
            "SELECT last_prediction, last_feedback, aggregates FROM aggregate_snapshots
             WHERE replica = $1",
            &[&replica],
        )?;
        let Some(snapshot) = snapshot else {
            return self.rebuild_aggregates();
        };
        let (last_prediction, last_feedback): (i64, i64) =
            (snapshot.try_get(0)?, snapshot.try_get(1)?);
        let agg = match decode_aggregates(snapshot.try_get(2)?) {
            Ok(agg) => agg,
            Err(e) => {
                tracing::warn!(error = %e, "aggregate snapshot unreadable; recounting the whole log");
                return self.rebuild_aggregates();
            }
        };
        let params: [&(dyn postgres::types::ToSql + Sync); 2] = [&replica, &last_prediction];
        let mut records = StreamFold::onto(agg, true);
        let mut rows = client.query_raw(
            &format!(
                "{SELECT_STREAMED}, p.id > $2 FROM predictions p
                 WHERE p.replica = $1 AND p.request_id IN
                     (SELECT request_id FROM predictions WHERE replica = $1 AND id > $2)
                 ORDER BY p.request_id, p.id"
            ),
            params,
        )?;
        while let Some(row) = rows.next()? {
            let log_row = row_to_log_row(&row)?;
            if row.try_get::<_, bool>(15)? {
                records.push(log_row, None);
            } else {
                records.push_uncounted(log_row);
            }
        }
        drop(rows);
        let params: [&(dyn postgres::types::ToSql + Sync); 2] = [&replica, &last_feedback];
        let mut labels = StreamFold::onto(records.finish(), false);
        let mut rows = client.query_raw(
            &format!(
                "{SELECT_STREAMED}, f.truth, f.metrics FROM predictions p
                 JOIN feedback f ON f.request_id = p.request_id
                 WHERE f.replica = $1 AND f.seq > $2 ORDER BY p.request_id, p.id"
            ),
            params,
        )?;
        while let Some(row) = rows.next()? {
            let (truth, metrics): (String, String) = (row.try_get(15)?, row.try_get(16)?);
            let (_, truth, metrics) = feedback_from_json(String::new(), &truth, &metrics)?;
            labels.push(row_to_log_row(&row)?, Some((truth, metrics)));
        }
        Ok(labels.finish())
    }

    fn insert(
        &mut self,
        batch: &[PredictionRecord],
        artefacts: &ArtefactIds,
    ) -> Result<(), StoreError> {
        let outputs = batch
            .iter()
            .map(|r| serde_json::to_string(&r.output).map_err(|e| corrupt("output", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let request_id: Vec<&str> = batch.iter().map(|r| r.request_id.as_str()).collect();
        let ts: Vec<i64> = batch.iter().map(|r| r.ts_ms).collect();
        let model: Vec<&str> = batch.iter().map(|r| r.model.as_str()).collect();
        let epoch: Vec<i64> = batch.iter().map(|r| r.epoch as i64).collect();
        let variant: Vec<&str> = batch.iter().map(|r| r.variant.as_str()).collect();
        let role: Vec<&str> = batch.iter().map(|r| r.role.as_str()).collect();
        let version: Vec<&str> = batch.iter().map(|r| r.version.as_str()).collect();
        let key_hash: Vec<Option<i64>> =
            batch.iter().map(|r| r.key_hash.map(|h| h as i64)).collect();
        let outcome: Vec<&str> = batch.iter().map(|r| r.outcome.as_str()).collect();
        let status: Vec<i32> = batch.iter().map(|r| i32::from(r.status)).collect();
        let latency: Vec<i64> = batch
            .iter()
            .map(|r| i64::try_from(r.latency_us).unwrap_or(i64::MAX))
            .collect();
        let output: Vec<&str> = outputs.iter().map(String::as_str).collect();
        let input: Vec<Option<&str>> = batch.iter().map(|r| r.input.as_deref()).collect();
        let paired: Vec<Option<&str>> = batch
            .iter()
            .map(|r| r.pair.as_ref().map(|p| p.version.as_str()))
            .collect();
        let segments = batch
            .iter()
            .map(|r| segments_to_text(&r.segments))
            .collect::<Result<Vec<_>, _>>()?;
        let artefact_id: Vec<Option<i64>> = batch
            .iter()
            .map(|r| artefacts.get(&r.model, &r.version))
            .collect();
        let replica = self.replica.clone();
        self.client()?.execute(
            INSERT_BATCH,
            &[
                &replica,
                &request_id,
                &ts,
                &model,
                &epoch,
                &variant,
                &role,
                &version,
                &key_hash,
                &outcome,
                &status,
                &latency,
                &output,
                &input,
                &paired,
                &segments,
                &artefact_id,
            ],
        )?;
        Ok(())
    }
}

impl Sink for PgSink {
    fn snapshot(&mut self, agg: &Aggregates, now_ms: i64) -> Result<(i64, i64), StoreError> {
        let text = encode_aggregates(agg)?;
        let replica = self.replica.clone();
        let mut tx = self.client()?.transaction()?;
        let last_prediction: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(id), 0) FROM predictions WHERE replica = $1",
                &[&replica],
            )?
            .try_get(0)?;
        let last_feedback: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(seq), 0) FROM feedback WHERE replica = $1",
                &[&replica],
            )?
            .try_get(0)?;
        tx.execute(
            "INSERT INTO aggregate_snapshots
                 (replica, ts_ms, last_prediction, last_feedback, aggregates)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (replica) DO UPDATE SET ts_ms = EXCLUDED.ts_ms,
                 last_prediction = EXCLUDED.last_prediction,
                 last_feedback = EXCLUDED.last_feedback, aggregates = EXCLUDED.aggregates",
            &[&replica, &now_ms, &last_prediction, &last_feedback, &text],
        )?;
        tx.commit()?;
        Ok((last_prediction, last_feedback))
    }

    /// This replica's records only (each replica prunes what it wrote).
    fn prune(&mut self, prune: &Prune) -> Result<u64, StoreError> {
        let replica = self.replica.clone();
        let sweep_from = self.label_sweep;
        let mut tx = self.client()?.transaction()?;
        let newest: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(id), 0) FROM predictions WHERE replica = $1",
                &[&replica],
            )?
            .try_get(0)?;
        let count_cut = prune.keep_records.map_or(0, |keep| newest - keep);
        let batch = prune.batch as i64;
        // The request ids of the rows deleted, for their labels below.
        let deleted_requests: Vec<String> = tx
            .query(
                "DELETE FROM predictions WHERE id IN (
                     SELECT p.id FROM predictions p
                     WHERE p.replica = $1 AND p.id <= $2 AND p.epoch < $3
                       AND (p.ts_ms < $4 OR p.id <= $5)
                       AND NOT EXISTS (SELECT 1 FROM feedback f
                                       WHERE f.request_id = p.request_id AND f.seq > $6)
                     ORDER BY p.id LIMIT $7)
                 RETURNING request_id",
                &[
                    &replica,
                    &prune.last_prediction,
                    &prune.protect_from_epoch,
                    &prune.before_ts_ms,
                    &count_cut,
                    &prune.last_feedback,
                    &batch,
                ],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let deleted = deleted_requests.len() as u64;
        // Labels whose request has no record left: those of the requests just deleted, and a
        // batch more swept from where the last pass stopped (labels an operator's `DELETE`
        // left), rather than every label each pass (see `sqlite_log::orphan_labels`).
        tx.execute(
            "DELETE FROM feedback f
             WHERE f.replica = $1 AND f.seq <= $2 AND f.request_id = ANY($3)
               AND NOT EXISTS (SELECT 1 FROM predictions p WHERE p.request_id = f.request_id)",
            &[&replica, &prune.last_feedback, &deleted_requests],
        )?;
        let swept: Vec<i64> = tx
            .query(
                "SELECT seq FROM feedback WHERE replica = $1 AND seq > $2 AND seq <= $3
                 ORDER BY seq LIMIT $4",
                &[&replica, &sweep_from, &prune.last_feedback, &batch],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        tx.execute(
            "DELETE FROM feedback f
             WHERE f.seq = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM predictions p WHERE p.request_id = f.request_id)",
            &[&swept],
        )?;
        let sweep_to = match swept.last() {
            Some(seq) if swept.len() as i64 == batch => *seq,
            _ => 0,
        };
        tx.commit()?;
        self.label_sweep = sweep_to;
        Ok(deleted)
    }

    fn register_artefacts(
        &mut self,
        versions: &[VersionProvenance],
        now_ms: i64,
    ) -> Result<ArtefactIds, StoreError> {
        register_artefacts(self.client()?, versions, now_ms, true)
    }

    fn write_batch(
        &mut self,
        batch: &[PredictionRecord],
        artefacts: &ArtefactIds,
    ) -> Result<(), StoreError> {
        // One statement is its own transaction: the batch commits whole or not at all.
        match self.insert(batch, artefacts) {
            Err(e) if self.client.is_closed() => {
                tracing::warn!(error = %e, "PostgreSQL connection lost; reconnecting");
                self.insert(batch, artefacts)
            }
            other => other,
        }
    }

    fn feedback(
        &mut self,
        items: Vec<Feedback>,
        models: Option<&[String]>,
        now_ms: i64,
    ) -> Result<Labelled, StoreError> {
        let replica = self.replica.clone();
        let mut tx = self.client()?.transaction()?;
        let select = tx.prepare(&format!(
            "{SELECT_RECORD} WHERE p.request_id = $1 ORDER BY p.role, p.id"
        ))?;
        let insert = tx.prepare(
            "INSERT INTO feedback (request_id, replica, ts_ms, truth, metrics)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (request_id) DO NOTHING",
        )?;
        let labelled = store_feedback(
            &mut PgFeedback {
                tx: &mut tx,
                select,
                insert,
                replica: &replica,
            },
            items,
            models,
            now_ms,
        )?;
        tx.commit()?;
        Ok(labelled)
    }
}

/// A feedback transaction in PostgreSQL, with its two statements prepared.
struct PgFeedback<'a, 'c> {
    tx: &'a mut Transaction<'c>,
    select: Statement,
    insert: Statement,
    replica: &'a str,
}

impl FeedbackTx for PgFeedback<'_, '_> {
    fn records_of(&mut self, request_id: &str) -> Result<Vec<LogRow>, StoreError> {
        self.tx
            .query(&self.select, &[&request_id])?
            .iter()
            .map(row_to_log_row)
            .collect()
    }

    fn insert_feedback(&mut self, item: &Feedback, now_ms: i64) -> Result<bool, StoreError> {
        let (truth, metrics) = feedback_to_json(&item.truth, &item.metrics)?;
        let n = self.tx.execute(
            &self.insert,
            &[&item.request_id, &self.replica, &now_ms, &truth, &metrics],
        )?;
        Ok(n == 1)
    }
}

/// `disagreements` in PostgreSQL.
pub(crate) fn disagreements(
    client: &mut Client,
    model: &str,
    primary: &str,
    shadow: &str,
    limit: usize,
) -> Result<Vec<Disagreement>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client.query(
        "SELECT p.request_id, p.ts_ms, p.input, p.output, s.output, f.truth
         FROM predictions p
         JOIN predictions s ON s.request_id = p.request_id AND s.role = 'shadow' AND s.version = $3
              AND s.paired_version = p.version AND s.outcome = 'ok'
         LEFT JOIN feedback f ON f.request_id = p.request_id
         WHERE p.model = $1 AND p.role = 'serving' AND p.version = $2 AND p.outcome = 'ok'
               AND p.output <> s.output
         ORDER BY p.id DESC LIMIT $4",
        &[&model, &primary, &shadow, &limit],
    )?;
    rows.iter()
        .map(|r| {
            let (p, s): (String, String) = (r.try_get(3)?, r.try_get(4)?);
            Disagreement::from_columns(
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                &p,
                &s,
                r.try_get(5)?,
            )
        })
        .collect()
}

/// `captured_requests` in PostgreSQL: every replica's records.
pub(crate) fn captured_requests(
    client: &mut Client,
    q: &CapturedQuery,
) -> Result<Vec<CapturedRequest>, StoreError> {
    let (since, until) = q.window();
    let rows = client.query(
        "SELECT p.request_id, p.ts_ms, p.input, p.segments, f.truth
         FROM predictions p
         LEFT JOIN feedback f ON f.request_id = p.request_id
         WHERE p.model = $1 AND p.role = 'serving' AND p.input IS NOT NULL
               AND p.ts_ms >= $2 AND p.ts_ms < $3
         ORDER BY p.id LIMIT $4",
        &[&q.model, &since, &until, &q.sql_limit()],
    )?;
    rows.iter()
        .map(|r| {
            let (segments, truth): (Option<String>, Option<String>) =
                (r.try_get(3)?, r.try_get(4)?);
            CapturedRequest::from_columns(
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                segments.as_deref(),
                truth.as_deref(),
            )
        })
        .collect()
}
