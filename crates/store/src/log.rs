//! The single writer of the prediction log.
//!
//! One OS thread owns the SQLite connection. The request path hands it records with a
//! non-blocking `try_send` into a bounded queue (full → the record is dropped and counted);
//! feedback and flushes travel the same queue, so they see every record enqueued before them.
//! Each batch is one transaction; after it commits, its records are folded into the shared
//! [`Aggregates`]. A record is durable once its batch committed: `flush` returns after that.
//!
//! This module drives the writer and dispatches on the store's URL (the writer's sink,
//! [`disagreements_at`]); the SQL lives in the backends, `sqlite_log` and `pg_log`, which
//! depend on the neutral `log_rows` and never on this module or on each other.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::Connection;
use switchyard_core::provenance::VersionProvenance;
use switchyard_core::{Aggregates, Feedback, PredictionRecord};
use tokio::sync::{mpsc, oneshot};

use crate::artefacts::{ArtefactIds, StoredArtefact};
use crate::log_rows::{with_pairs, CapturedQuery, CapturedRequest, Disagreement, Prune, Sink};
use crate::sqlite_log::SqliteSink;
use crate::{pg, pg_log, sqlite, sqlite_log, StoreError, StoreUrl};

pub use crate::log_rows::FeedbackOutcome;
pub use crate::sqlite_log::{rebuild_aggregates, restore_aggregates};

/// Settings of the writer.
#[derive(Debug, Clone)]
pub struct LogWriterConfig {
    pub store: StoreUrl,
    /// Name of this gateway replica; with PostgreSQL each replica writes its own rows and
    /// rebuilds only its own aggregates at start-up.
    pub replica: String,
    pub queue_capacity: usize,
    pub batch_size: usize,
    /// Group commit: after a batch smaller than `batch_size` commits, the writer lets records
    /// gather for this long before it takes the next one (flushes and feedback wait too). Each
    /// commit rewrites the last pages of the table and its index, so one commit of a hundred
    /// records costs little more than one of three. Zero commits as soon as the queue is empty.
    pub commit_interval: std::time::Duration,
    /// Records and labels between two snapshots of the aggregates (0: none). A start-up
    /// restores the newest snapshot and replays only what came after it; the writer also
    /// snapshots when it stops.
    pub snapshot_every: u64,
    /// What the writer deletes from the log once a snapshot covers it (none when `None`).
    pub retention: Option<Retention>,
    /// SQLite: the largest the database file may grow (a quota; past it batches fail and their
    /// records are dropped and counted, as on a full disk). `None`: no limit but the disk's.
    pub max_size_bytes: Option<u64>,
    /// The versions this writer's records come from, with their artefacts: checked against
    /// the artefacts table when the writer opens the store (a changed artefact under a known
    /// version name refuses the start, [`StoreError::ArtefactChanged`]) and recorded; each
    /// record then names its version's row (`artefact_id`). A record of a version not listed
    /// names none.
    pub versions: Vec<VersionProvenance>,
}

/// How long the prediction log keeps records. A record is deleted when it is older than
/// `max_age_ms` or beyond the newest `max_records`, and only if the newest aggregate snapshot
/// covers it (start-up never needs it), no label of its request arrived after that snapshot,
/// and its routing epoch is older than every running rollout's first one (labels that still
/// arrive for a running rollout find their records). Deleted `batch` records at a time between
/// the writer's commits, so the writer never stalls for long; a label that arrives for a
/// deleted record is reported unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_age_ms: Option<u64>,
    pub max_records: Option<u64>,
    pub batch: usize,
}

/// Default of [`Retention::batch`].
pub const DEFAULT_RETENTION_BATCH: usize = 5_000;

/// Default of [`LogWriterConfig::snapshot_every`]: at 20k records a second, one every five
/// seconds; a start-up then replays at most that many.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 100_000;

/// Counters of the writer, readable without locks.
#[derive(Debug, Default)]
pub struct LogStats {
    pub enqueued: AtomicU64,
    pub dropped: AtomicU64,
    pub written: AtomicU64,
    pub batches: AtomicU64,
    pub write_errors: AtomicU64,
    /// Aggregate snapshots saved.
    pub snapshots: AtomicU64,
    /// Records deleted by the retention policy.
    pub pruned: AtomicU64,
    /// Why the last batch could not be written, while writes fail (the disk or the database is
    /// full, the file became read-only, PostgreSQL is down); `None` once a batch commits again.
    pub failing: Mutex<Option<String>>,
}

enum Command {
    /// A record, and who waits for its commit (durability `sync`): told `true` once its batch
    /// committed, `false` if the batch was lost.
    Record(Box<PredictionRecord>, Option<oneshot::Sender<bool>>),
    Feedback {
        items: Vec<Feedback>,
        /// Only requests of these models may be labelled (`None`: any).
        models: Option<Vec<String>>,
        now_ms: i64,
        reply: oneshot::Sender<Result<FeedbackOutcome, StoreError>>,
    },
    Flush(oneshot::Sender<()>),
}

/// Cheap to clone; every clone feeds the same writer.
#[derive(Debug, Clone)]
pub struct LogHandle {
    tx: mpsc::Sender<Command>,
    capacity: usize,
    stats: Arc<LogStats>,
    aggregates: Arc<Mutex<Aggregates>>,
    /// The oldest routing epoch a running rollout still reads (`u64::MAX`: none runs).
    protected_epoch: Arc<AtomicU64>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Record(r, _) => write!(f, "Record({})", r.request_id),
            Command::Feedback { items, .. } => write!(f, "Feedback({} items)", items.len()),
            Command::Flush(_) => write!(f, "Flush"),
        }
    }
}

impl LogHandle {
    /// Enqueues a record without waiting. Returns `false` (and counts a drop) when the queue
    /// is full or the writer has stopped.
    pub fn record(&self, rec: PredictionRecord) -> bool {
        match self.tx.try_send(Command::Record(Box::new(rec), None)) {
            Ok(()) => {
                self.stats.enqueued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Enqueues a record and returns once it is committed (durability `sync`): waits for room
    /// when the queue is full rather than drop it. An error means the record is not on disk.
    pub async fn record_durable(&self, rec: PredictionRecord) -> Result<(), StoreError> {
        let (reply, committed) = oneshot::channel();
        self.tx
            .send(Command::Record(Box::new(rec), Some(reply)))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        self.stats.enqueued.fetch_add(1, Ordering::Relaxed);
        match committed.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::NotCommitted),
            Err(_) => Err(StoreError::WriterStopped),
        }
    }

    /// Attaches feedback; waits for the writer (feedback is not on the prediction path).
    pub async fn feedback(
        &self,
        items: Vec<Feedback>,
        now_ms: i64,
    ) -> Result<FeedbackOutcome, StoreError> {
        self.feedback_for(items, None, now_ms).await
    }

    /// Attaches feedback to requests of `models` only (`None`: any model); the others are
    /// counted as [`FeedbackOutcome::forbidden`] and nothing of them is stored.
    pub async fn feedback_for(
        &self,
        items: Vec<Feedback>,
        models: Option<Vec<String>>,
        now_ms: i64,
    ) -> Result<FeedbackOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Feedback {
                items,
                models,
                now_ms,
                reply,
            })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        rx.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Returns once every record enqueued before the call is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Flush(reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        rx.await.map_err(|_| StoreError::WriterStopped)
    }

    /// Records waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.capacity.saturating_sub(self.tx.capacity())
    }

    pub fn queue_capacity(&self) -> usize {
        self.capacity
    }

    pub fn stats(&self) -> &LogStats {
        &self.stats
    }

    /// The aggregates of every committed record and feedback.
    pub fn aggregates(&self) -> &Arc<Mutex<Aggregates>> {
        &self.aggregates
    }

    /// Why records cannot be written right now (`None` while the log is healthy).
    pub fn failing(&self) -> Option<String> {
        self.stats.failing.lock().clone()
    }

    /// Tells the retention policy which routing epochs running rollouts still read: records
    /// of `epoch` and later are kept (`None`: no rollout runs).
    pub fn protect_from_epoch(&self, epoch: Option<u64>) {
        self.protected_epoch
            .store(epoch.unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// Opens the store, rebuilds the aggregates from what it holds, and starts the writer thread.
/// The thread ends once every [`LogHandle`] is dropped, after committing what was queued.
pub fn spawn_log_writer(
    config: LogWriterConfig,
) -> Result<(LogHandle, std::thread::JoinHandle<()>), StoreError> {
    let aggregates = Arc::new(Mutex::new(Aggregates::default()));
    // Until the controller says otherwise, nothing may be deleted.
    let protected_epoch = Arc::new(AtomicU64::new(0));
    let writer_protected = protected_epoch.clone();
    let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
    let stats = Arc::new(LogStats::default());
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let (batch_size, commit_interval, shared, writer_stats) = (
        config.batch_size.max(1),
        config.commit_interval,
        aggregates.clone(),
        stats.clone(),
    );
    // The sink is opened on the writer thread: PostgreSQL's blocking client must not run
    // inside the caller's async runtime.
    let thread = std::thread::Builder::new()
        .name("switchyard-log".into())
        .spawn(move || {
            let opened: Result<Box<dyn Sink>, StoreError> = match &config.store {
                StoreUrl::Sqlite(path) => sqlite::open(path).and_then(|conn| {
                    if let Some(bytes) = config.max_size_bytes {
                        sqlite::limit_size(&conn, bytes)?;
                    }
                    *shared.lock() = restore_aggregates(&conn)?;
                    Ok(Box::new(SqliteSink::new(conn)) as Box<dyn Sink>)
                }),
                StoreUrl::Postgres(url) => {
                    pg_log::PgSink::open(url, &config.replica).and_then(|mut sink| {
                        *shared.lock() = sink.restore_aggregates()?;
                        Ok(Box::new(sink) as Box<dyn Sink>)
                    })
                }
            };
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let opened = opened.and_then(|mut sink| {
                let ids = sink.register_artefacts(&config.versions, now_ms)?;
                Ok((sink, ids))
            });
            let (sink, artefacts) = match opened {
                Ok(opened) => {
                    let _ = ready_tx.send(Ok(()));
                    opened
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            Writer {
                sink,
                artefacts,
                rx,
                batch_size,
                commit_interval,
                stats: writer_stats,
                aggregates: shared,
                snapshot_every: config.snapshot_every,
                since_snapshot: 0,
                retention: config.retention,
                protected_epoch: writer_protected,
                covered: None,
                prune_pending: false,
                last_protected: 0,
            }
            .run()
        })
        .map_err(|source| StoreError::Io {
            path: "log writer thread".into(),
            source,
        })?;
    ready_rx.recv().map_err(|_| StoreError::WriterStopped)??;
    Ok((
        LogHandle {
            tx,
            capacity: config.queue_capacity.max(1),
            stats,
            aggregates,
            protected_epoch,
        },
        thread,
    ))
}

/// The records of the next transaction, and the requests waiting for it to commit.
struct Batch {
    records: Vec<PredictionRecord>,
    waiters: Vec<oneshot::Sender<bool>>,
}

struct Writer {
    sink: Box<dyn Sink>,
    /// Each served version's row of the artefacts table.
    artefacts: ArtefactIds,
    rx: mpsc::Receiver<Command>,
    batch_size: usize,
    commit_interval: std::time::Duration,
    stats: Arc<LogStats>,
    aggregates: Arc<Mutex<Aggregates>>,
    snapshot_every: u64,
    /// Records and labels accounted since the last snapshot.
    since_snapshot: u64,
    retention: Option<Retention>,
    protected_epoch: Arc<AtomicU64>,
    /// What the newest snapshot this writer saved covers (last record id, last label).
    covered: Option<(i64, i64)>,
    /// Whether the last prune deleted a full batch (so there may be more).
    prune_pending: bool,
    /// The protected epoch the last prune saw.
    last_protected: u64,
}

impl Writer {
    fn run(mut self) {
        let mut batch = Batch {
            records: Vec::with_capacity(self.batch_size),
            waiters: Vec::new(),
        };
        while let Some(first) = self.next_command() {
            let mut next = Some(first);
            // Drain what is already queued, up to a batch, without waiting.
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Record(rec, waiter) => {
                        batch.records.push(*rec);
                        batch.waiters.extend(waiter);
                    }
                    Command::Feedback {
                        items,
                        models,
                        now_ms,
                        reply,
                    } => {
                        self.commit(&mut batch);
                        let _ = reply.send(self.feedback(items, models.as_deref(), now_ms));
                    }
                    Command::Flush(reply) => {
                        self.commit(&mut batch);
                        let _ = reply.send(());
                    }
                }
                if batch.records.len() >= self.batch_size {
                    self.commit(&mut batch);
                }
                next = self.rx.try_recv().ok();
            }
            let committed = batch.records.len();
            self.commit(&mut batch);
            // The queue ran dry with a partial batch: let the next records gather.
            if committed > 0 && committed < self.batch_size && !self.commit_interval.is_zero() {
                std::thread::sleep(self.commit_interval);
            }
        }
        self.commit(&mut batch);
        if self.snapshot_every > 0 && self.since_snapshot > 0 {
            self.snapshot();
        }
    }

    /// The next command; while the queue is empty and the retention policy has records to
    /// delete, deletes them a batch at a time in between.
    fn next_command(&mut self) -> Option<Command> {
        loop {
            let protected = self.protected_epoch.load(Ordering::Relaxed);
            if protected != self.last_protected && self.retention.is_some() {
                self.last_protected = protected;
                self.prune_pending = self.covered.is_some();
            }
            if !self.prune_pending {
                return self.rx.blocking_recv();
            }
            match self.rx.try_recv() {
                Ok(cmd) => return Some(cmd),
                Err(mpsc::error::TryRecvError::Empty) => self.prune(),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
            }
        }
    }

    /// Saves the aggregates (a copy, so readers are not held up while it is written) with the
    /// log position they cover. A failure is logged and retried at the next occasion; the
    /// previous snapshot stays valid.
    fn snapshot(&mut self) {
        let agg = self.aggregates.lock().clone();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        match self.sink.snapshot(&agg, now_ms) {
            Ok(covered) => {
                self.since_snapshot = 0;
                self.stats.snapshots.fetch_add(1, Ordering::Relaxed);
                self.covered = Some(covered);
                if self.retention.is_some() {
                    self.prune();
                }
            }
            Err(e) => tracing::warn!(error = %e, "aggregate snapshot failed"),
        }
    }

    /// Deletes one batch of what the retention policy lets go.
    fn prune(&mut self) {
        let (Some(policy), Some((last_prediction, last_feedback))) = (self.retention, self.covered)
        else {
            self.prune_pending = false;
            return;
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let protected = self.protected_epoch.load(Ordering::Relaxed);
        let prune = Prune {
            last_prediction,
            last_feedback,
            before_ts_ms: policy
                .max_age_ms
                .map_or(i64::MIN, |age| now_ms.saturating_sub(age as i64)),
            keep_records: policy.max_records.map(|n| n as i64),
            protect_from_epoch: i64::try_from(protected).unwrap_or(i64::MAX),
            batch: policy.batch.max(1),
        };
        match self.sink.prune(&prune) {
            Ok(deleted) => {
                self.stats.pruned.fetch_add(deleted, Ordering::Relaxed);
                self.prune_pending = deleted as usize >= prune.batch;
            }
            Err(e) => {
                tracing::warn!(error = %e, "pruning the prediction log failed");
                self.prune_pending = false;
            }
        }
    }

    fn commit(&mut self, batch: &mut Batch) {
        if batch.records.is_empty() {
            return;
        }
        let records = &batch.records;
        let ok = match self.sink.write_batch(records, &self.artefacts) {
            Ok(()) => {
                self.stats
                    .written
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                let mut agg = self.aggregates.lock();
                records.iter().for_each(|rec| agg.record(rec));
                self.since_snapshot += records.len() as u64;
                true
            }
            Err(e) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .dropped
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                // Said once when writes start failing, not once per batch.
                let mut failing = self.stats.failing.lock();
                if failing.is_none() {
                    tracing::error!(error = %e, "the prediction log cannot be written; records are dropped and counted until it can");
                }
                *failing = Some(e.to_string());
                false
            }
        };
        if ok {
            let mut failing = self.stats.failing.lock();
            if let Some(was) = failing.take() {
                tracing::warn!(error = %was, "the prediction log is written again");
            }
        }
        for waiter in batch.waiters.drain(..) {
            let _ = waiter.send(ok);
        }
        batch.records.clear();
        self.snapshot_when_due();
    }

    fn snapshot_when_due(&mut self) {
        if self.snapshot_every > 0 && self.since_snapshot >= self.snapshot_every {
            self.snapshot();
        }
    }

    fn feedback(
        &mut self,
        items: Vec<Feedback>,
        models: Option<&[String]>,
        now_ms: i64,
    ) -> Result<FeedbackOutcome, StoreError> {
        let (outcome, newly_labelled) = self.sink.feedback(items, models, now_ms)?;
        {
            let mut agg = self.aggregates.lock();
            self.since_snapshot += newly_labelled.len() as u64;
            for (rows, item) in newly_labelled {
                let records = with_pairs(rows);
                agg.record_feedback(&records, &item.truth, &item.metrics);
            }
        }
        self.snapshot_when_due();
        Ok(outcome)
    }
}

/// Opens a read connection to a store written by a writer (for reports and tests).
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    sqlite::open(path)
}

/// Every row of the artefacts table (which artefact each version served, first seen when) in
/// whichever store `url` names; a SQLite file that does not exist has none.
pub fn artefacts_at(url: &StoreUrl) -> Result<Vec<StoredArtefact>, StoreError> {
    match url {
        StoreUrl::Sqlite(path) if !path.exists() => Ok(Vec::new()),
        StoreUrl::Sqlite(path) => sqlite_log::artefacts(&sqlite::open(path)?),
        StoreUrl::Postgres(url) => {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut client = pg::connect(&url)?;
                pg::init(&mut client)?;
                pg_log::artefacts(&mut client)
            })
            .join()
            .map_err(|_| StoreError::WriterStopped)?
        }
    }
}

/// Whether the store at `url` would let a gateway serving `versions` start: the artefact
/// check the log writer makes at start ([`StoreError::ArtefactChanged`] naming every
/// conflict), without recording anything. A SQLite file that does not exist knows nothing.
pub fn check_artefacts_at(
    url: &StoreUrl,
    versions: &[VersionProvenance],
) -> Result<(), StoreError> {
    match url {
        StoreUrl::Sqlite(path) if !path.exists() => Ok(()),
        StoreUrl::Sqlite(path) => {
            sqlite_log::register_artefacts(&mut sqlite::open(path)?, versions, 0, false).map(drop)
        }
        StoreUrl::Postgres(url) => {
            let (url, versions) = (url.clone(), versions.to_vec());
            std::thread::spawn(move || {
                let mut client = pg::connect(&url)?;
                pg::init(&mut client)?;
                pg_log::register_artefacts(&mut client, &versions, 0, false).map(drop)
            })
            .join()
            .map_err(|_| StoreError::WriterStopped)?
        }
    }
}

/// `disagreements` in whichever store `url` names (PostgreSQL is queried from a
/// thread of its own, so this may be called from async code).
pub fn disagreements_at(
    url: &StoreUrl,
    model: &str,
    primary: &str,
    shadow: &str,
    limit: usize,
) -> Result<Vec<Disagreement>, StoreError> {
    match url {
        StoreUrl::Sqlite(path) => {
            sqlite_log::disagreements(&sqlite::open(path)?, model, primary, shadow, limit)
        }
        StoreUrl::Postgres(url) => {
            let (url, model, primary, shadow) = (
                url.clone(),
                model.to_string(),
                primary.to_string(),
                shadow.to_string(),
            );
            std::thread::spawn(move || {
                let mut client = pg::connect(&url)?;
                pg_log::disagreements(&mut client, &model, &primary, &shadow, limit)
            })
            .join()
            .map_err(|_| StoreError::WriterStopped)?
        }
    }
}

/// The captured requests of a model (see [`CapturedQuery`]) in whichever store `url` names,
/// read for a replay. A SQLite file that does not exist is an error, not a new empty store.
pub fn captured_requests_at(
    url: &StoreUrl,
    query: &CapturedQuery,
) -> Result<Vec<CapturedRequest>, StoreError> {
    match url {
        StoreUrl::Sqlite(path) => {
            if !path.is_file() {
                return Err(StoreError::Rejected(format!(
                    "no prediction log at {} (no such file)",
                    path.display()
                )));
            }
            sqlite_log::captured_requests(&sqlite::open(path)?, query)
        }
        StoreUrl::Postgres(url) => {
            let (url, query) = (url.clone(), query.clone());
            std::thread::spawn(move || {
                let mut client = pg::connect(&url)?;
                pg_log::captured_requests(&mut client, &query)
            })
            .join()
            .map_err(|_| StoreError::WriterStopped)?
        }
    }
}
