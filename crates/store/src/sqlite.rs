//! SQLite plumbing: the connection settings (WAL, `synchronous=NORMAL`, busy timeout) and the
//! prediction log's tables, the counterpart of `pg`. It exists so that the SQLite log
//! (`sqlite_log`) and the SQLite control store (`sqlite_control`) open the
//! shared file the same way without depending on each other.

use std::path::Path;

use rusqlite::Connection;

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
    paired_version TEXT,
    segments    TEXT,
    artefact_id INTEGER
);
CREATE INDEX IF NOT EXISTS predictions_request ON predictions(request_id);
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
    add_column(&conn, "segments", "TEXT")?;
    add_column(&conn, "artefact_id", "INTEGER")?;
    Ok(conn)
}

/// Logs written before records carried segment values (or named their artefact) lack the
/// `segments` (`artefact_id`) column: it is added, NULL for the old rows, which then have no
/// segments (no known artefact). Two connections opening the same old file at once may both
/// try; the loser finds the column there.
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
