//! Errors of the store.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(String),
    #[error("{0}")]
    Url(String),
    #[error("cannot create {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("corrupt {what} in the log: {reason}")]
    Corrupt { what: &'static str, reason: String },
    /// The batch holding a record waited for (durability `sync`) could not be written.
    #[error("the record could not be committed to the log")]
    NotCommitted,
    #[error("the log writer has stopped")]
    WriterStopped,
    /// A change the caller refused to make (its reason).
    #[error("{0}")]
    Rejected(String),
    #[error("lost the controller lock: {0}")]
    LostLead(String),
    /// A version's artefact (or git SHA, or registry reference) differs from the one the store
    /// knows under the same name: one message per version, naming both.
    #[error("refusing to serve a changed artefact under a known version name: {}", .0.join("; "))]
    ArtefactChanged(Vec<String>),
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        // The server's own message says what went wrong ("relation … does not exist").
        match e.as_db_error() {
            Some(db) => StoreError::Postgres(format!("{}: {}", db.severity(), db.message())),
            None => StoreError::Postgres(e.to_string()),
        }
    }
}

/// A value read back from the store (or about to be written) that does not decode: `what`
/// names the column or value, `reason` says why.
pub(crate) fn corrupt(what: &'static str, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what,
        reason: reason.to_string(),
    }
}
