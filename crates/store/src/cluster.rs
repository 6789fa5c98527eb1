//! Coordination of gateway replicas that share one PostgreSQL database.
//!
//! - **One controller.** A replica leads while its session holds a session-level advisory
//!   lock ([`Cluster::try_lead`]). The lock is released by PostgreSQL when that session ends —
//!   at once when the process dies (its socket closes), within the keepalive time (≈25 s) when
//!   the replica vanishes from the network. The controller's state and audit writes go through
//!   the same session ([`Cluster::control_store`]), so a replica that lost its session cannot
//!   write as controller: the session refuses to reconnect silently while it held the lock.
//! - **One routing table.** Changes are made under a row lock on `routing_table`, each one
//!   advancing the shared epoch; replicas poll it ([`Cluster::routing`]) and install newer
//!   tables.
//! - **Statistics over all traffic.** Each replica publishes its aggregates
//!   ([`Cluster::publish_aggregates`]); the controller merges every replica's latest window
//!   ([`Cluster::aggregate_windows`]).

use switchyard_core::Aggregates;

use crate::error::corrupt;
use crate::pg::{PgConn, CONTROLLER_LOCK};
use crate::wire::{decode_aggregates, encode_aggregates};
use crate::{ControlStore, StoreError, StoreUrl};

/// The replica currently recorded as controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub replica: String,
    /// Where its admin API answers (commands sent to other replicas are forwarded there).
    pub admin_url: String,
    /// Increases with every change of leader.
    pub term: i64,
    pub since_ms: i64,
}

/// One replica's handle on the shared database.
#[derive(Debug, Clone)]
pub struct Cluster {
    conn: PgConn,
    replica: String,
}

impl Cluster {
    /// Connects (creating the schema if needed). Only PostgreSQL stores are shared.
    pub fn open(url: &StoreUrl, replica: &str) -> Result<Self, StoreError> {
        let StoreUrl::Postgres(url) = url else {
            return Err(StoreError::Url(
                "replicas need a postgres:// store; a SQLite file belongs to one gateway".into(),
            ));
        };
        if replica.trim().is_empty() {
            return Err(StoreError::Url("the replica name is empty".into()));
        }
        Ok(Cluster {
            conn: PgConn::open(url)?,
            replica: replica.to_string(),
        })
    }

    /// A control store on this replica's session: the one that holds the controller lock.
    pub fn control_store(&self) -> ControlStore {
        ControlStore::on_session(self.conn.clone())
    }

    /// Becomes the controller if no replica is, or confirms that this one still is. On
    /// becoming it, records this replica (and a new term) in `controller_leader`.
    pub fn try_lead(&self, admin_url: &str, now_ms: i64) -> Result<bool, StoreError> {
        let (replica, admin_url) = (self.replica.clone(), admin_url.to_string());
        self.conn.call(move |session| {
            if session.leading {
                // Still our session? (`client` reports a closed one as a lost lead.)
                let client = match session.client() {
                    Ok(c) => c,
                    Err(StoreError::LostLead(_)) => return Ok(false),
                    Err(e) => return Err(e),
                };
                client.simple_query("SELECT 1")?;
                return Ok(true);
            }
            let client = session.client()?;
            let got: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&CONTROLLER_LOCK])?
                .try_get(0)?;
            if !got {
                return Ok(false);
            }
            client.execute(
                "INSERT INTO controller_leader (id, replica, admin_url, term, since_ms)
                 VALUES (1, $1, $2, 1, $3)
                 ON CONFLICT (id) DO UPDATE SET replica = excluded.replica,
                    admin_url = excluded.admin_url, term = controller_leader.term + 1,
                    since_ms = excluded.since_ms",
                &[&replica, &admin_url, &now_ms],
            )?;
            session.leading = true;
            Ok(true)
        })
    }

    /// Gives up the controller lock (a clean shutdown lets another replica take over at once).
    pub fn resign(&self) -> Result<(), StoreError> {
        self.conn.call(|session| {
            if std::mem::take(&mut session.leading) {
                session
                    .client()?
                    .execute("SELECT pg_advisory_unlock($1)", &[&CONTROLLER_LOCK])?;
            }
            Ok(())
        })
    }

    /// The replica recorded as controller (it may have died since; see [`Leader::term`]).
    pub fn leader(&self) -> Result<Option<Leader>, StoreError> {
        self.conn.with(|c| {
            c.query_opt(
                "SELECT replica, admin_url, term, since_ms FROM controller_leader WHERE id = 1",
                &[],
            )?
            .map(|r| {
                Ok(Leader {
                    replica: r.try_get(0)?,
                    admin_url: r.try_get(1)?,
                    term: r.try_get(2)?,
                    since_ms: r.try_get(3)?,
                })
            })
            .transpose()
        })
    }

    /// The shared routing table: its epoch and its JSON text.
    pub fn routing(&self) -> Result<Option<(u64, String)>, StoreError> {
        self.conn.with(|c| {
            c.query_opt("SELECT epoch, body FROM routing_table WHERE id = 1", &[])?
                .map(|r| Ok((epoch_of(r.try_get(0)?)?, r.try_get(1)?)))
                .transpose()
        })
    }

    /// Changes the shared routing table under its row lock: `change` gets the current table
    /// (if any) and returns the next one, whose epoch must be higher, or `None` to leave it as
    /// it is. Returns the table now stored.
    pub fn update_routing<F>(&self, now_ms: i64, change: F) -> Result<(u64, String), StoreError>
    where
        F: FnOnce(Option<(u64, String)>) -> Result<Option<(u64, String)>, String> + Send + 'static,
    {
        self.conn.with(move |c| {
            let mut tx = c.transaction()?;
            // Serialise writers, including the very first insert.
            tx.execute("LOCK TABLE routing_table IN SHARE ROW EXCLUSIVE MODE", &[])?;
            let current = tx
                .query_opt(
                    "SELECT epoch, body FROM routing_table WHERE id = 1 FOR UPDATE",
                    &[],
                )?
                .map(|r| -> Result<(u64, String), StoreError> {
                    Ok((epoch_of(r.try_get(0)?)?, r.try_get(1)?))
                })
                .transpose()?;
            let floor = current.as_ref().map(|(e, _)| *e);
            let unchanged = current.clone();
            let Some((epoch, body)) = change(current).map_err(StoreError::Rejected)? else {
                return unchanged
                    .ok_or_else(|| corrupt("routing table", "no table to leave unchanged"));
            };
            if floor.is_some_and(|f| epoch <= f) {
                return Err(corrupt(
                    "routing table",
                    format!("epoch {epoch} does not advance past {floor:?}"),
                ));
            }
            let epoch_sql = i64::try_from(epoch).map_err(|e| corrupt("routing epoch", e))?;
            tx.execute(
                "INSERT INTO routing_table (id, epoch, body, updated_ms) VALUES (1, $1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET epoch = excluded.epoch, body = excluded.body,
                    updated_ms = excluded.updated_ms",
                &[&epoch_sql, &body, &now_ms],
            )?;
            tx.commit()?;
            Ok((epoch, body))
        })
    }

    /// Publishes this replica's aggregates (replacing its previous window).
    pub fn publish_aggregates(&self, now_ms: i64, agg: &Aggregates) -> Result<(), StoreError> {
        let body = encode_aggregates(agg)?;
        let replica = self.replica.clone();
        self.conn.with(move |c| {
            c.execute(
                "INSERT INTO replica_aggregates (replica, updated_ms, body) VALUES ($1, $2, $3)
                 ON CONFLICT (replica) DO UPDATE SET updated_ms = excluded.updated_ms,
                    body = excluded.body",
                &[&replica, &now_ms, &body],
            )?;
            Ok(())
        })
    }

    /// Every replica's latest published aggregates: name, when, aggregates.
    pub fn aggregate_windows(&self) -> Result<Vec<(String, i64, Aggregates)>, StoreError> {
        let rows = self.conn.with(|c| {
            c.query(
                "SELECT replica, updated_ms, body FROM replica_aggregates ORDER BY replica",
                &[],
            )?
            .iter()
            .map(|r| -> Result<(String, i64, String), StoreError> {
                Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
            })
            .collect::<Result<Vec<_>, _>>()
        })?;
        rows.into_iter()
            .map(|(replica, ts, body)| Ok((replica, ts, decode_aggregates(&body)?)))
            .collect()
    }

    /// Logged records per replica and role (`serving`/`shadow`), for operators and tests.
    pub fn records_by_replica(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        self.conn.with(|c| {
            c.query(
                "SELECT replica, role, COUNT(*) FROM predictions GROUP BY replica, role
                 ORDER BY replica, role",
                &[],
            )?
            .iter()
            .map(|r| {
                let n: i64 = r.try_get(2)?;
                Ok((r.try_get(0)?, r.try_get(1)?, n.max(0) as u64))
            })
            .collect()
        })
    }
}

fn epoch_of(e: i64) -> Result<u64, StoreError> {
    u64::try_from(e).map_err(|e| corrupt("routing epoch", e))
}
