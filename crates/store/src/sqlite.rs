//! SQLite plumbing: the connection settings (WAL, `synchronous=NORMAL`, busy timeout) and the
//! prediction log's tables, the counterpart of `pg`. It exists so that the SQLite log
//! (`sqlite_log`) and the SQLite control store (`sqlite_control`) open the
//! shared file the same way without depending on each other.

use std::path::Path;

use rusqlite::Connection;

use crate::error::corrupt;
use crate::StoreError;

/// The prediction log's tables. A record is a row of `prediction_rows`: what differs from
/// request to request (its id, time, key hash, status, latency, answer, captured input and
/// segment values) and its `lane`, the row of `lanes` naming what records share (model, epoch,
/// variant, role, version, outcome, the version it was paired with, the artefact). Readers
/// read the `predictions` view, which joins the two into the record's 17 columns; a row per
/// record with seven text values cost the log writer a quarter more per record
/// (BENCHMARKS.md, "Proxy cost"). Deleting from the view deletes the records. `lane` is not
/// declared a foreign key: the check cost ~600 instructions a record, and lanes are never
/// deleted and only named once committed (`sqlite_log::LaneIds`).
///
/// `request_id` has no index (one cost the writer ~3,000 instructions a record, a third of
/// its time). A request's records are found instead through what the writer adds per batch:
/// an id the gateway generates (32 hex digits, the first 12 its time in milliseconds) through
/// `request_spans`, the id ranges of the batch holding records whose id carries that
/// millisecond (one row per millisecond per batch, not per record); any other id through
/// `named_requests`, one row per record (the `spans` module).
const LOG_TABLES: &str = "
CREATE TABLE IF NOT EXISTS lanes (
    id             INTEGER PRIMARY KEY,
    model          TEXT    NOT NULL,
    epoch          INTEGER NOT NULL,
    variant        TEXT    NOT NULL,
    role           TEXT    NOT NULL,
    version        TEXT    NOT NULL,
    outcome        TEXT    NOT NULL,
    paired_version TEXT,
    artefact_id    INTEGER
);
CREATE INDEX IF NOT EXISTS lanes_key ON lanes(model, version, epoch, variant, role, outcome);
CREATE TABLE IF NOT EXISTS prediction_rows (
    id          INTEGER PRIMARY KEY,
    request_id  TEXT    NOT NULL,
    ts_ms       INTEGER NOT NULL,
    lane        INTEGER NOT NULL,
    key_hash    INTEGER,
    status      INTEGER NOT NULL,
    latency_us  INTEGER NOT NULL,
    output      TEXT    NOT NULL,
    input       TEXT,
    segments    TEXT
);
CREATE TABLE IF NOT EXISTS request_spans (
    first_id INTEGER PRIMARY KEY,
    last_id  INTEGER NOT NULL,
    ms       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS request_spans_ms ON request_spans(ms);
CREATE TABLE IF NOT EXISTS named_requests (
    request_id TEXT    NOT NULL,
    id         INTEGER NOT NULL,
    PRIMARY KEY (request_id, id)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS prediction_rows_delete AFTER DELETE ON prediction_rows
BEGIN
    DELETE FROM named_requests WHERE request_id = OLD.request_id AND id = OLD.id;
END;
";

/// The `predictions` view over [`LOG_TABLES`], and what deleting from it does.
const LOG_VIEW: &str = "
CREATE VIEW IF NOT EXISTS predictions AS
    SELECT r.id AS id, r.request_id AS request_id, r.ts_ms AS ts_ms, l.model AS model,
           l.epoch AS epoch, l.variant AS variant, l.role AS role, l.version AS version,
           r.key_hash AS key_hash, l.outcome AS outcome, r.status AS status,
           r.latency_us AS latency_us, r.output AS output, r.input AS input,
           l.paired_version AS paired_version, r.segments AS segments,
           l.artefact_id AS artefact_id
    FROM prediction_rows r JOIN lanes l ON l.id = r.lane;
CREATE TRIGGER IF NOT EXISTS predictions_delete INSTEAD OF DELETE ON predictions
BEGIN
    DELETE FROM prediction_rows WHERE id = OLD.id;
END;
";

/// Moves a log written before lanes (one `predictions` table) into `lanes` and
/// `prediction_rows`, keeping every record's id (aggregate snapshots name ids), then drops the
/// table; the view takes its name. The copy is checked row for row before the table goes.
const MIGRATE_TO_LANES: &str = "
INSERT INTO lanes (model, epoch, variant, role, version, outcome, paired_version, artefact_id)
    SELECT DISTINCT model, epoch, variant, role, version, outcome, paired_version, artefact_id
    FROM predictions;
INSERT INTO prediction_rows
    (id, request_id, ts_ms, lane, key_hash, status, latency_us, output, input, segments)
    SELECT p.id, p.request_id, p.ts_ms, l.id, p.key_hash, p.status, p.latency_us, p.output,
           p.input, p.segments
    FROM predictions p JOIN lanes l INDEXED BY lanes_key
         ON l.model = p.model AND l.version = p.version AND l.epoch = p.epoch
        AND l.variant = p.variant AND l.role = p.role AND l.outcome = p.outcome
        AND l.paired_version IS p.paired_version AND l.artefact_id IS p.artefact_id;
";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS artefacts (
    id            INTEGER PRIMARY KEY,
    model         TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    artefact_kind TEXT    NOT NULL,
    artefact      TEXT,
    git_sha       TEXT,
    registry      TEXT,
    first_seen_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS artefacts_version ON artefacts(model, version);
CREATE TABLE IF NOT EXISTS feedback (
    request_id  TEXT PRIMARY KEY,
    ts_ms       INTEGER NOT NULL,
    truth       TEXT    NOT NULL,
    metrics     TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS aggregate_snapshots (
    id              INTEGER PRIMARY KEY,
    ts_ms           INTEGER NOT NULL,
    last_prediction INTEGER NOT NULL,
    last_feedback   INTEGER NOT NULL,
    aggregates      TEXT    NOT NULL
);
";

/// Records filed per span-building pass when an older log's records are filed at open: about
/// the writer's batch at full load.
const FILING_CHUNK: usize = 512;

/// Prepared statements a connection keeps (see [`open`]).
const STATEMENT_CACHE: usize = 64;

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens (creating if needed) the store at `path`, in WAL mode.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let conn = Connection::open(path)?;
    // rusqlite keeps 16 prepared statements by default; the log writer alone runs more than
    // that (records, lanes, spans, feedback, retention), and an evicted statement is parsed
    // again the next time.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Plans that do not depend on the values bound: otherwise SQLite may plan a statement for
    // its parameters' values and prepare it again each time they change, which the request
    // lookups did before every label of a feedback batch (BENCHMARKS.md, "Proxy cost").
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    wal_mode(&conn)?;
    // Durable at commit in WAL mode except for the last transactions before a power loss;
    // a process crash (kill -9) loses nothing committed.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    log_tables(&conn)?;
    Ok(conn)
}

/// Puts the file in WAL mode. Switching a file from the rollback journal needs it to itself,
/// and SQLite fails the switch at once (no busy handler) while another connection opening the
/// same new or old file holds a lock: tried again until the busy timeout.
fn wal_mode(conn: &Connection) -> Result<(), StoreError> {
    let start = std::time::Instant::now();
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && start.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            result => return Ok(result?),
        }
    }
}

/// Creates the prediction log's tables, moving an older log's `predictions` table into them
/// first ([`MIGRATE_TO_LANES`]), in one transaction that holds the write lock, so two
/// connections opening an old file at once migrate it once. A file already in the current
/// layout is only read, so a reader never waits for the writer's lock (nor fails on a
/// read-only file).
fn log_tables(conn: &Connection) -> Result<(), StoreError> {
    let current: bool = conn.query_row(
        "SELECT COUNT(*) = 3 FROM sqlite_master
         WHERE (name = 'predictions' AND type = 'view')
            OR (name = 'predictions_delete' AND type = 'trigger')
            OR (name = 'request_spans' AND type = 'table')",
        [],
        |r| r.get(0),
    )?;
    if current {
        return Ok(());
    }
    // Another connection may be moving a long log (seconds per million records): wait for it
    // rather than fail after the usual busy timeout.
    conn.busy_timeout(std::time::Duration::from_secs(3600))?;
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let old_table: bool = tx.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = 'predictions' AND type = 'table'",
        [],
        |r| r.get(0),
    )?;
    let had_spans: bool = tx.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = 'request_spans' AND type = 'table'",
        [],
        |r| r.get(0),
    )?;
    tx.execute_batch(LOG_TABLES)?;
    if old_table {
        add_column(&tx, "segments", "TEXT")?;
        add_column(&tx, "artefact_id", "INTEGER")?;
        tx.execute_batch(MIGRATE_TO_LANES)?;
        let count = |table: &str| -> Result<i64, StoreError> {
            Ok(tx.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?)
        };
        let (old, new) = (count("predictions")?, count("prediction_rows")?);
        if old != new {
            return Err(corrupt(
                "prediction log",
                format!("moving it into lanes copied {new} of its {old} records; the file is left as it was"),
            ));
        }
        tx.execute_batch("DROP TABLE predictions;")?;
        tracing::info!(records = new, "moved the prediction log into lanes");
    }
    let mut moved = old_table;
    if !had_spans {
        // Records written before spans: filed now as the writer files a batch, then the
        // request-id index they were found by goes.
        let filed = crate::spans::file_existing(&tx, FILING_CHUNK)?;
        tx.execute_batch("DROP INDEX IF EXISTS prediction_rows_request;")?;
        if filed > 0 {
            moved = true;
            tracing::info!(
                records = filed,
                "filed the prediction log's records by request id"
            );
        }
    }
    tx.execute_batch(LOG_VIEW)?;
    tx.commit()?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if moved {
        // The move wrote the whole log to the WAL once more: fold it into the file now and
        // truncate it. The old table's pages stay in the file as free pages, which new
        // records take first (`VACUUM` gives them back to the disk).
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(())
}

/// Logs written before records carried segment values (or named their artefact) lack the
/// `segments` (`artefact_id`) column: it is added to the old table before it moves into
/// lanes, NULL for the old rows, which then have no segments (no known artefact).
fn add_column(conn: &Connection, name: &str, sql_type: &str) -> Result<(), StoreError> {
    let present: i64 = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('predictions') WHERE name = ?1",
        [name],
        |r| r.get(0),
    )?;
    if present == 0 {
        let alter = format!("ALTER TABLE predictions ADD COLUMN {name} {sql_type}");
        if let Err(e) = conn.execute(&alter, []) {
            if !e.to_string().contains("duplicate column") {
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// Caps the file this connection writes at `bytes` (rounded down to whole pages; never below
/// what the file already holds): past it a write fails with "database or disk is full", as
/// on a full disk.
pub(crate) fn limit_size(conn: &Connection, bytes: u64) -> Result<(), StoreError> {
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let pages = (bytes / page_size.max(1) as u64).max(1);
    conn.pragma_update(None, "max_page_count", pages as i64)?;
    Ok(())
}
