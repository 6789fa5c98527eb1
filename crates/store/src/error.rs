//! Errors of the store.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot create {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("corrupt {what} in the log: {reason}")]
    Corrupt { what: &'static str, reason: String },
    #[error("the log writer has stopped")]
    WriterStopped,
}
