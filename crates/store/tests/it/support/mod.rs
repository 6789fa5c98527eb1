//! The same store tests run against SQLite and PostgreSQL: a [`Db`] is a fresh store of either
//! kind plus a raw client (no switchyard code) for what an operator or attacker could do.

#![allow(dead_code)]

use std::path::PathBuf;

use switchyard_store::StoreUrl;

pub enum Db {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres(StoreUrl),
}

impl Db {
    pub fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("switchyard.db");
        Db::Sqlite { _dir: dir, path }
    }

    /// A new, empty database on the test server (`SWITCHYARD_TEST_PG_URL`).
    pub fn postgres() -> Db {
        match switchyard_store::testing::fresh_postgres_database() {
            Ok(url) => Db::Postgres(url),
            Err(e) => panic!("{e}"),
        }
    }

    pub fn url(&self) -> StoreUrl {
        match self {
            Db::Sqlite { path, .. } => StoreUrl::Sqlite(path.clone()),
            Db::Postgres(url) => url.clone(),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// Runs SQL as a plain client; the error text on failure.
    pub fn exec(&self, sql: &str) -> Result<(), String> {
        match self {
            Db::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .and_then(|c| c.execute_batch(sql))
                .map_err(|e| e.to_string()),
            Db::Postgres(StoreUrl::Postgres(url)) => {
                let (url, sql) = (url.clone(), sql.to_string());
                std::thread::spawn(move || {
                    let mut c = postgres::Client::connect(&url, postgres::NoTls)
                        .map_err(|e| e.to_string())?;
                    c.batch_execute(&sql).map_err(|e| match e.as_db_error() {
                        Some(db) => db.message().to_string(),
                        None => e.to_string(),
                    })
                })
                .join()
                .unwrap()
            }
            Db::Postgres(_) => unreachable!(),
        }
    }

    /// The first column of the first row of `sql`, as text.
    pub fn query_text(&self, sql: &str) -> String {
        match self {
            Db::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .unwrap()
                .query_row(sql, [], |r| {
                    Ok(match r.get_ref(0)? {
                        rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                        rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into(),
                        other => format!("{other:?}"),
                    })
                })
                .unwrap(),
            Db::Postgres(StoreUrl::Postgres(url)) => {
                let (url, sql) = (url.clone(), format!("SELECT ({sql})::text"));
                std::thread::spawn(move || {
                    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                    c.query_one(&sql, &[]).unwrap().get::<_, String>(0)
                })
                .join()
                .unwrap()
            }
            Db::Postgres(_) => unreachable!(),
        }
    }

    /// Removes the append-only guards, as someone with full access to the database could.
    pub fn drop_guards(&self) {
        let sql = match self {
            Db::Sqlite { .. } => {
                "DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;"
            }
            Db::Postgres(_) => "ALTER TABLE audit_events DISABLE TRIGGER USER;",
        };
        self.exec(sql).unwrap();
    }
}

/// `name(&Db)` as two tests, `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[test]
            fn sqlite() {
                super::$name(&super::support::Db::sqlite())
            }
            #[test]
            fn postgres() {
                super::$name(&super::support::Db::postgres())
            }
        })*
    };
}

/// `async name(&Db)` as two tokio tests.
#[macro_export]
macro_rules! on_both_async {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(&super::support::Db::sqlite()).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(&super::support::Db::postgres()).await
            }
        })*
    };
}
