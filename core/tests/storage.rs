//! Opening databases: good, missing, foreign, future, locked.

mod common;

use async_engine_core::{busy_naps, DeferOptions, Engine, Error, Settings, TaskSpec};
use common::*;
use rusqlite::Connection;

fn open_err(s: &Settings) -> String {
    match Engine::open(s) {
        Err(Error::Storage(m)) => m,
        Err(other) => panic!("expected StorageError, got {other:?}"),
        Ok(_) => panic!("expected StorageError, opened"),
    }
}

#[test]
fn creates_a_wal_database_with_the_current_schema() {
    let dir = TempDir::new("create");
    Engine::open(&settings(&dir.sqlite_db())).unwrap();
    let c = Connection::open(dir.sqlite_db()).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(version, async_engine_core::store::SQLITE_SCHEMA_VERSION);
    // Opening again (another process) leaves it as it is.
    Engine::open(&settings(&dir.sqlite_db())).unwrap();
}

#[test]
fn a_missing_directory_is_named() {
    let dir = TempDir::new("missing");
    let path = dir.0.join("no/such/dir/e.sqlite");
    let m = open_err(&settings(path.to_str().unwrap()));
    assert!(
        m.contains("does not exist") && m.contains("no/such/dir"),
        "{m}"
    );
    let m = open_err(&settings(dir.0.to_str().unwrap()));
    assert!(m.contains("is a directory"), "{m}");
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_alone() {
    let dir = TempDir::new("garbage");
    let garbage =
        b"this is not a database, it is a text file with some length to it.....".repeat(20);
    std::fs::write(dir.sqlite_db(), &garbage).unwrap();
    let m = open_err(&settings(&dir.sqlite_db()));
    assert!(m.contains("is not a SQLite database"), "{m}");
    assert_eq!(std::fs::read(dir.sqlite_db()).unwrap(), garbage);
}

#[test]
fn another_applications_database_and_a_future_schema_are_refused() {
    let dir = TempDir::new("foreign");
    Connection::open(dir.sqlite_db())
        .unwrap()
        .execute_batch("CREATE TABLE users (id INTEGER);")
        .unwrap();
    assert!(open_err(&settings(&dir.sqlite_db())).contains("another application"));
    let dir = TempDir::new("future");
    Engine::open(&settings(&dir.sqlite_db())).unwrap();
    Connection::open(dir.sqlite_db())
        .unwrap()
        .execute_batch("PRAGMA user_version = 99;")
        .unwrap();
    let m = open_err(&settings(&dir.sqlite_db()));
    assert!(
        m.contains("schema version 99") && m.contains("upgrade"),
        "{m}"
    );
}

#[test]
fn a_writer_holding_the_lock_past_the_busy_timeout_is_a_storage_error() {
    let dir = TempDir::new("locked");
    let mut s = settings(&dir.sqlite_db());
    s.busy_timeout = 0.2;
    let mut e = Engine::open(&s).unwrap();
    let holder = Connection::open(dir.sqlite_db()).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = std::time::Instant::now();
    let naps = busy_naps();
    let err = e
        .defer(
            &s,
            None,
            &TaskSpec::new("/w.php", "t", "[]"),
            &DeferOptions::default(),
            true,
            T0,
        )
        .unwrap_err();
    assert!(started.elapsed().as_secs_f64() >= 0.19);
    // 20 µs doubling to 1 ms: about 190 naps in 0.2 s (other tests may add theirs).
    assert!(busy_naps() - naps >= 100, "the waits are counted");
    match &err {
        Error::Storage(m) => assert!(m.contains("locked") && m.contains("busy_timeout"), "{m}"),
        other => panic!("{other:?}"),
    }
    holder.execute_batch("ROLLBACK").unwrap();
    let stats = e.stats(&s, T0).unwrap();
    assert!(
        stats.counts.iter().all(|(_, n)| *n == 0),
        "nothing half-written"
    );
    assert_eq!(stats.in_flight, 0);
}

#[test]
fn an_unwritable_directory_is_named() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("readonly");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o555)).unwrap();
    let probe = dir.0.join("probe");
    let privileged = std::fs::write(&probe, b"").is_ok();
    if !privileged {
        let m = open_err(&settings(&dir.sqlite_db()));
        assert!(m.contains("not writable"), "{m}");
    }
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn many_processes_opening_a_new_database_at_once_all_get_it() {
    // The first opener creates the file, switches it to WAL and writes the
    // schema while the others open it: none may fail for it (SQLite answers
    // some of these steps "busy" without calling the busy handler).
    for round in 0..40 {
        let dir = TempDir::new(&format!("race{round}"));
        let path = dir.sqlite_db();
        let start = std::sync::Arc::new(std::sync::Barrier::new(6));
        let openers: Vec<_> = (0..6)
            .map(|_| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    Engine::open(&settings(&path)).map(|_| ())
                })
            })
            .collect();
        for opener in openers {
            if let Err(e) = opener.join().unwrap() {
                panic!("round {round}: {e}");
            }
        }
    }
}

#[test]
fn the_write_ahead_log_starts_over_while_processes_read_and_write_without_pause() {
    let dir = TempDir::new("wal");
    let db = dir.sqlite_db();
    let wal = format!("{db}-wal");
    Engine::open(&settings(&db)).unwrap();
    // Four connections deferring and reading without pause, as busy
    // workers do: some read always holds a snapshot a few commits old, so
    // SQLite's own checkpoints stop there and its log never starts over.
    let largest = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (db, wal, largest) = (db.clone(), wal.clone(), largest.clone());
            std::thread::spawn(move || {
                let s = settings(&db);
                let mut e = Engine::open(&s).unwrap();
                for i in 0..2500 {
                    let spec = TaskSpec::new("/w.php", "t", "[]");
                    let now = T0 + i * 4 + w;
                    e.defer(&s, None, &spec, &DeferOptions::default(), false, now)
                        .unwrap();
                    e.stats(&s, now).unwrap();
                    let size = std::fs::metadata(&wal).unwrap().len();
                    largest.fetch_max(size, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().unwrap());
    // 10,000 defers write about 40,000 pages (160 MiB); the log starts
    // over after about 4,000 (16 MiB), 6,000 at most when readers held it.
    let largest = largest.load(std::sync::atomic::Ordering::Relaxed);
    assert!(largest < 40 << 20, "the log grew to {largest} bytes");
}
