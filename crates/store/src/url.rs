//! Where the store lives: a SQLite file (the default) or a PostgreSQL database shared by
//! several gateway replicas.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::StoreError;

/// The store a gateway writes to, chosen by URL.
///
/// - `sqlite:///abs/path.sqlite`, `sqlite://relative/path.sqlite`, `sqlite:path`, or a plain
///   path: one SQLite file (one gateway);
/// - `postgres://user:password@host:port/db` (or `postgresql://`): a PostgreSQL database that
///   several replicas share.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl StoreUrl {
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        StoreUrl::Sqlite(path.into())
    }

    /// Parses a store URL; anything without a scheme is a SQLite path.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(StoreError::Url("the store URL is empty".into()));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            // Validate now so a typo is reported at start-up, not at the first write.
            postgres::Config::from_str(text)
                .map_err(|e| StoreError::Url(format!("invalid PostgreSQL URL: {e}")))?;
            return Ok(StoreUrl::Postgres(text.to_string()));
        }
        if let Some(rest) = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
        {
            if rest.is_empty() {
                return Err(StoreError::Url("sqlite: URL without a path".into()));
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(rest)));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(StoreError::Url(format!(
                "unsupported store scheme '{scheme}://' (use sqlite:// or postgres://)"
            )));
        }
        Ok(StoreUrl::Sqlite(PathBuf::from(text)))
    }

    /// The SQLite file, when the store is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            StoreUrl::Sqlite(p) => Some(p),
            StoreUrl::Postgres(_) => None,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, StoreUrl::Postgres(_))
    }

    /// The URL with any password replaced by `***`, for logs and messages.
    pub fn redacted(&self) -> String {
        match self {
            StoreUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
            StoreUrl::Postgres(url) => redact(url),
        }
    }
}

fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(parts) => parts,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({})", self.redacted())
    }
}

impl FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StoreUrl::parse(s)
    }
}

impl From<&Path> for StoreUrl {
    fn from(p: &Path) -> Self {
        StoreUrl::Sqlite(p.to_path_buf())
    }
}

impl From<PathBuf> for StoreUrl {
    fn from(p: PathBuf) -> Self {
        StoreUrl::Sqlite(p)
    }
}

impl From<&PathBuf> for StoreUrl {
    fn from(p: &PathBuf) -> Self {
        StoreUrl::Sqlite(p.clone())
    }
}

impl From<&StoreUrl> for StoreUrl {
    fn from(u: &StoreUrl) -> Self {
        u.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(
            StoreUrl::parse("data/s.sqlite").unwrap(),
            StoreUrl::sqlite("data/s.sqlite")
        );
        assert_eq!(
            StoreUrl::parse("sqlite:///tmp/x.sqlite").unwrap(),
            StoreUrl::sqlite("/tmp/x.sqlite")
        );
        assert_eq!(
            StoreUrl::parse("sqlite:rel.sqlite").unwrap(),
            StoreUrl::sqlite("rel.sqlite")
        );
        assert!(StoreUrl::parse("postgres://u:p@127.0.0.1:5432/db")
            .unwrap()
            .is_postgres());
        assert!(StoreUrl::parse("postgresql://127.0.0.1/db")
            .unwrap()
            .is_postgres());
    }

    #[test]
    fn bad_urls_are_explained() {
        let e = StoreUrl::parse("mysql://x").unwrap_err().to_string();
        assert!(e.contains("unsupported store scheme 'mysql://'"), "{e}");
        assert!(StoreUrl::parse("  ").is_err());
        assert!(StoreUrl::parse("sqlite://").is_err());
        let e = StoreUrl::parse("postgres://u@h:notaport/db")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid PostgreSQL URL"), "{e}");
    }

    #[test]
    fn passwords_are_redacted() {
        let u = StoreUrl::parse("postgres://sy:secret@127.0.0.1:5432/db").unwrap();
        assert_eq!(u.to_string(), "postgres://sy:***@127.0.0.1:5432/db");
        assert!(!format!("{u:?}").contains("secret"));
    }
}
