//! Helpers for tests that need a real PostgreSQL (used by this crate's and the binary's test
//! suites), behind the `testing` feature: no gateway build compiles them.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::StoreUrl;

/// The environment variable naming a PostgreSQL server the tests may create databases on
/// (`postgres://user:password@127.0.0.1:5432/postgres`; `tools/pg-test-env.sh` starts one).
pub const PG_URL_ENV: &str = "SWITCHYARD_TEST_PG_URL";

/// Creates an empty database for one test on the server named by [`PG_URL_ENV`] and returns
/// its URL. Every call gets a database of its own, so tests never see each other's rows or
/// locks.
pub fn fresh_postgres_database() -> Result<StoreUrl, String> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let admin = std::env::var(PG_URL_ENV).map_err(|_| {
        format!(
            "{PG_URL_ENV} is not set: the PostgreSQL tests need a server. Run \
             `eval \"$(bash tools/pg-test-env.sh)\"` first (README, Tests)."
        )
    })?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "sy_test_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let url = with_database(&admin, &name)?;
    let create = format!("CREATE DATABASE {name}");
    // The blocking client must not run on an async runtime's thread.
    std::thread::spawn(move || -> Result<(), String> {
        let mut client = crate::pg::connect(&admin).map_err(|e| e.to_string())?;
        client.batch_execute(&create).map_err(|e| e.to_string())
    })
    .join()
    .map_err(|_| "the database-creating thread panicked".to_string())??;
    StoreUrl::parse(&url).map_err(|e| e.to_string())
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> Result<String, String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).ok_or("no scheme")?;
    let host_part = &base[scheme_end..];
    let host_end = host_part.find('/').map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            super::with_database("postgres://u:p@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://u:p@127.0.0.1:5432/x"
        );
        assert_eq!(
            super::with_database("postgres://127.0.0.1:5432?sslmode=disable", "x").unwrap(),
            "postgres://127.0.0.1:5432/x?sslmode=disable"
        );
    }
}
