//! PostgreSQL plumbing: connecting, the schema, and a connection owned by its own thread.
//!
//! The blocking `postgres` client drives its own small runtime and must not be called from
//! inside tokio's. The log writer already is an OS thread; everything else talks to
//! PostgreSQL through a [`PgConn`], a session owned by a dedicated thread that runs one job at
//! a time (the same shape as the SQLite connection behind a mutex).

use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

use postgres::{Client, NoTls};

use crate::StoreError;

/// Advisory-lock keys (one 64-bit namespace per database).
pub(crate) const SCHEMA_LOCK: i64 = 0x5359_0001;
pub(crate) const AUDIT_LOCK: i64 = 0x5359_0002;
pub(crate) const CONTROLLER_LOCK: i64 = 0x5359_0003;
/// Registering versions' artefacts (replicas starting together take turns).
pub(crate) const ARTEFACTS_LOCK: i64 = 0x5359_0004;

pub(crate) const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS predictions (
    id          BIGSERIAL PRIMARY KEY,
    replica     TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    ts_ms       BIGINT  NOT NULL,
    model       TEXT    NOT NULL,
    epoch       BIGINT  NOT NULL,
    variant     TEXT    NOT NULL,
    role        TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    key_hash    BIGINT,
    outcome     TEXT    NOT NULL,
    status      INTEGER NOT NULL,
    latency_us  BIGINT  NOT NULL,
    output      TEXT    NOT NULL,
    input       TEXT,
    paired_version TEXT,
    segments    TEXT,
    artefact_id BIGINT
);
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS segments TEXT;
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS artefact_id BIGINT;
CREATE TABLE IF NOT EXISTS artefacts (
    id            BIGSERIAL PRIMARY KEY,
    model         TEXT   NOT NULL,
    version       TEXT   NOT NULL,
    artefact_kind TEXT   NOT NULL,
    artefact      TEXT,
    git_sha       TEXT,
    registry      TEXT,
    first_seen_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS artefacts_version ON artefacts(model, version);
CREATE INDEX IF NOT EXISTS predictions_request ON predictions(request_id);
CREATE INDEX IF NOT EXISTS predictions_replica ON predictions(replica, id);
CREATE TABLE IF NOT EXISTS feedback (
    request_id  TEXT PRIMARY KEY,
    replica     TEXT    NOT NULL,
    ts_ms       BIGINT  NOT NULL,
    truth       TEXT    NOT NULL,
    metrics     TEXT    NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS feedback_seq;
ALTER TABLE feedback ADD COLUMN IF NOT EXISTS seq BIGINT NOT NULL DEFAULT nextval('feedback_seq');
CREATE INDEX IF NOT EXISTS feedback_replica_seq ON feedback(replica, seq);
CREATE TABLE IF NOT EXISTS aggregate_snapshots (
    replica         TEXT PRIMARY KEY,
    ts_ms           BIGINT NOT NULL,
    last_prediction BIGINT NOT NULL,
    last_feedback   BIGINT NOT NULL,
    aggregates      TEXT   NOT NULL
);
CREATE TABLE IF NOT EXISTS rollouts (
    name        TEXT PRIMARY KEY,
    spec        TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    updated_ms  BIGINT  NOT NULL
);
CREATE TABLE IF NOT EXISTS rollout_results (
    name        TEXT PRIMARY KEY,
    aggregates  TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_events (
    seq         BIGINT PRIMARY KEY,
    rollout     TEXT    NOT NULL CHECK (rollout <> ''),
    ts_ms       BIGINT  NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind <> ''),
    actor       TEXT    NOT NULL CHECK (actor <> ''),
    message     TEXT    NOT NULL,
    details     TEXT    NOT NULL,
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_events_rollout ON audit_events(rollout, seq);
CREATE OR REPLACE FUNCTION switchyard_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END $$;
CREATE OR REPLACE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION switchyard_append_only();
CREATE OR REPLACE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION switchyard_append_only();
CREATE TABLE IF NOT EXISTS alerts (
    seq         BIGSERIAL PRIMARY KEY,
    rollout     TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    title       TEXT    NOT NULL,
    ts_ms       BIGINT  NOT NULL,
    details     TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_deliveries (
    id          BIGSERIAL PRIMARY KEY,
    alert_seq   BIGINT  NOT NULL,
    url         TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    ts_ms       BIGINT  NOT NULL,
    status      INTEGER,
    error       TEXT,
    delivered   BOOLEAN NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_deliveries_alert ON alert_deliveries(alert_seq);
CREATE TABLE IF NOT EXISTS routing_table (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    epoch       BIGINT  NOT NULL,
    body        TEXT    NOT NULL,
    updated_ms  BIGINT  NOT NULL
);
CREATE TABLE IF NOT EXISTS replica_aggregates (
    replica     TEXT PRIMARY KEY,
    updated_ms  BIGINT  NOT NULL,
    body        TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS controller_leader (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    replica     TEXT    NOT NULL,
    admin_url   TEXT    NOT NULL,
    term        BIGINT  NOT NULL,
    since_ms    BIGINT  NOT NULL
);
";

/// Opens a session with keepalives on both ends, so a vanished peer is noticed in tens of
/// seconds rather than hours: the server then ends the session and releases its locks.
pub(crate) fn connect(url: &str) -> Result<Client, StoreError> {
    let mut config = postgres::Config::from_str(url)?;
    config
        .connect_timeout(Duration::from_secs(5))
        .application_name("switchyard")
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10));
    let mut client = config.connect(NoTls)?;
    client.batch_execute(
        "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3;",
    )?;
    Ok(client)
}

/// Creates every table if missing; concurrent replicas starting together take turns.
pub(crate) fn init(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
    tx.batch_execute(PG_SCHEMA)?;
    tx.commit()?;
    Ok(())
}

/// A session and what it holds.
pub(crate) struct Session {
    url: String,
    client: Option<Client>,
    /// This session holds the controller lock.
    pub(crate) leading: bool,
}

impl Session {
    /// The live client, reconnecting if the previous connection closed. A session that held the
    /// controller lock does not silently reconnect: the lock went with the old connection, so
    /// the caller is told it lost the lead (and the next call reconnects).
    pub(crate) fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
            if std::mem::take(&mut self.leading) {
                return Err(StoreError::LostLead(
                    "the connection to PostgreSQL closed".into(),
                ));
            }
        }
        if self.client.is_none() {
            self.client = Some(connect(&self.url)?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Postgres("no connection".into()))
    }

    /// After a failed job: a connection that no longer answers is dropped (with the lead).
    fn check_alive(&mut self) {
        let dead = match &mut self.client {
            Some(c) => c.is_closed() || c.is_valid(Duration::from_secs(2)).is_err(),
            None => false,
        };
        if dead {
            self.client = None;
            self.leading = false;
        }
    }
}

type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// A PostgreSQL session on its own thread; cheap to clone, every clone uses the same session.
#[derive(Debug, Clone)]
pub(crate) struct PgConn {
    tx: mpsc::Sender<Job>,
}

impl PgConn {
    /// Connects (and creates the schema) before returning, so a bad URL or a server that is
    /// down is reported at start-up.
    pub(crate) fn open(url: &str) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let url = url.to_string();
        std::thread::Builder::new()
            .name("switchyard-pg".into())
            .spawn(move || {
                let mut session = Session {
                    url: url.clone(),
                    client: None,
                    leading: false,
                };
                let opened = session.client().and_then(init);
                let ok = opened.is_ok();
                let _ = ready_tx.send(opened);
                if !ok {
                    return;
                }
                while let Ok(job) = rx.recv() {
                    job(&mut session);
                }
            })
            .map_err(|source| StoreError::Io {
                path: "postgres session thread".into(),
                source,
            })?;
        ready_rx.recv().map_err(|_| StoreError::WriterStopped)??;
        Ok(PgConn { tx })
    }

    /// Runs `f` on the session and waits for its result.
    pub(crate) fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Session) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        self.tx
            .send(Box::new(move |session: &mut Session| {
                let result = f(session);
                if result.is_err() {
                    session.check_alive();
                }
                let _ = reply_tx.send(result);
            }))
            .map_err(|_| StoreError::WriterStopped)?;
        reply_rx.recv().map_err(|_| StoreError::WriterStopped)?
    }

    /// Runs `f` on the live client.
    pub(crate) fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Client) -> Result<T, StoreError> + Send + 'static,
    {
        self.call(move |s| f(s.client()?))
    }
}
