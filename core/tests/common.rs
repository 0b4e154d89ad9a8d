//! Helpers shared by the core's integration tests.
#![allow(dead_code)]

use async_engine_core::protocol::Incoming;
use async_engine_core::{DeferOptions, Dispatch, Engine, Settings, TaskSpec};
use std::path::PathBuf;

/// The admin URL of the test PostgreSQL cluster: set, the engine's tests
/// run on PostgreSQL (a fresh schema each) instead of SQLite.
pub const PG_ENV: &str = "ASYNC_ENGINE_TEST_PG";

/// A fresh temporary directory, removed when dropped, and a fresh database:
/// a SQLite file in it, or a PostgreSQL schema when [`PG_ENV`] is set.
pub struct TempDir(pub PathBuf, Option<String>);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "async-engine-test-{tag}-{}-{}",
            std::process::id(),
            async_engine_core::id::random_hex(4)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let schema = std::env::var(PG_ENV).ok().map(|admin| {
            let name = format!("t_{tag}_{}", async_engine_core::id::random_hex(6));
            pg_admin(&admin, &format!("CREATE SCHEMA {name}"));
            name
        });
        TempDir(dir, schema)
    }

    /// The test's database: a PostgreSQL URL or a SQLite path.
    pub fn db(&self) -> String {
        match (&self.1, std::env::var(PG_ENV)) {
            (Some(schema), Ok(admin)) => schema_url(&admin, schema),
            _ => self.sqlite_db(),
        }
    }

    /// A SQLite database file in the directory.
    pub fn sqlite_db(&self) -> String {
        self.0.join("engine.sqlite").to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        if let (Some(schema), Ok(admin)) = (&self.1, std::env::var(PG_ENV)) {
            // A test's background threads may still be writing there; a
            // drop that meets them in a deadlock is tried again.
            let drop = format!("DROP SCHEMA {schema} CASCADE");
            let mut client =
                postgres::Client::connect(&admin, postgres::NoTls).expect("test cluster");
            for attempt in 1.. {
                match client.batch_execute(&drop) {
                    Ok(()) => break,
                    Err(e) if attempt < 5 => {
                        eprintln!("dropping {schema} again: {e}");
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                    Err(e) => panic!("could not drop {schema}: {e}"),
                }
            }
        }
    }
}

/// The URL of `schema` in the cluster `admin` names.
pub fn schema_url(admin: &str, schema: &str) -> String {
    let sep = if admin.contains('?') { '&' } else { '?' };
    format!("{admin}{sep}options=-csearch_path%3D{schema}")
}

/// Runs SQL as the cluster's administrator.
pub fn pg_admin(admin: &str, sql: &str) {
    let mut client = postgres::Client::connect(admin, postgres::NoTls).expect("test cluster");
    client.batch_execute(sql).unwrap();
}

pub fn settings(db: &str) -> Settings {
    Settings {
        database: Some(db.to_string()),
        secret: Some("test-secret-0123456789".into()),
        ..Settings::default()
    }
}

pub const T0: i64 = 1_700_000_000_000;

/// The request an endpoint receives for a dispatch.
pub fn received(d: &Dispatch) -> Incoming {
    Incoming {
        method: "POST".into(),
        uri: d.endpoint.clone(),
        slot: Some(d.slot.clone()),
        time: Some(d.time.to_string()),
        signature: Some(d.signature.clone()),
    }
}

pub fn defer(
    e: &mut Engine,
    s: &Settings,
    endpoint: &str,
    name: &str,
    now: i64,
) -> async_engine_core::Deferred {
    try_defer(e, s, endpoint, name, &DeferOptions::default(), now).unwrap()
}

/// Defers a task with no args and `options`, sending when a slot is free.
pub fn try_defer(
    e: &mut Engine,
    s: &Settings,
    endpoint: &str,
    name: &str,
    options: &DeferOptions,
    now: i64,
) -> async_engine_core::Result<async_engine_core::Deferred> {
    e.defer(
        s,
        None,
        &TaskSpec::new(endpoint, name, "[]"),
        options,
        true,
        now,
    )
}

/// Runs `sql` (no parameters) on the test's database, either backend.
pub fn execute(db: &str, sql: &str) {
    if db.starts_with("postgres://") {
        let mut c = postgres::Client::connect(db, postgres::NoTls).unwrap();
        c.batch_execute(sql).unwrap();
    } else {
        rusqlite::Connection::open(db)
            .unwrap()
            .execute_batch(sql)
            .unwrap();
    }
}

/// The first column, as text, of each row `sql` returns, either backend.
pub fn texts(db: &str, sql: &str) -> Vec<String> {
    if db.starts_with("postgres://") {
        let mut c = postgres::Client::connect(db, postgres::NoTls).unwrap();
        c.query(sql, &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        let c = rusqlite::Connection::open(db).unwrap();
        let mut stmt = c.prepare(sql).unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    }
}
