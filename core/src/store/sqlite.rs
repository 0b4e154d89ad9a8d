//! The SQLite store (the default): opening, schema migrations,
//! transactions, error mapping.

use crate::db::{Param, Row, Tx, Value};
use crate::error::{Error, Result};
use crate::settings::Settings;
use crate::store::checkpoint;
use crate::store::log_writes;
use crate::store::schema::{SQLITE_MIGRATIONS, SQLITE_SCHEMA_VERSION};
use crate::store::statements::{Prepared, Statements};
use crate::store::Store;
use rusqlite::config::DbConfig;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags, ToSql};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The busy timeout of this process's connections, in microseconds: the
/// busy handler is a plain function, so it reads it from here.
static BUSY_TIMEOUT_US: AtomicU64 = AtomicU64::new(5_000_000);

/// The page size of a new database file. A `defer()` writes about three
/// and a half pages to the log (a task's row, its entry in the claim index,
/// its endpoint's count), each a whole page, so smaller pages write and
/// checksum less: `defer()` 7 % faster than with SQLite's 4 KiB. At 1 KiB,
/// pages split so often that it is slower again (see docs/architecture.md,
/// "The write-ahead log").
const PAGE_SIZE: i64 = 2048;

/// How long after a `stat` that found the database file in place the next
/// calls take it as still there: 1 ms. The `stat` took about 1.4 µs of a
/// `defer()`'s 17; a script or page deferring in a loop now makes one a
/// millisecond, and a process still notices a replaced file within a
/// millisecond, as it could not notice one replaced during its own
/// transaction before.
const RECHECK_AFTER: Duration = Duration::from_millis(1);

/// Naps this process has taken waiting for another writer's lock.
static BUSY_NAPS: AtomicU64 = AtomicU64::new(0);

/// How many times this process has waited for another writer's lock (each
/// nap of the busy handler counts once): a measure of write contention.
pub fn busy_naps() -> u64 {
    BUSY_NAPS.load(Ordering::Relaxed)
}

/// Microseconds spent napping before nap number `count` (see [`busy_wait`]).
fn napped_us(count: i32) -> u64 {
    match count {
        ..=0 => 0,
        1..=6 => 20 * ((1 << count) - 1),
        _ => 1260 + (count as u64 - 6) * 1000,
    }
}

/// Waits for another writer's lock in short naps (20 µs doubling to 1 ms)
/// rather than SQLite's default naps of 1 ms and more, which would dominate
/// these short transactions whenever two processes write at once. Gives up
/// once the busy timeout is spent.
fn busy_wait(count: i32) -> bool {
    let limit = match checkpoint::restarting() {
        true => checkpoint::RESTART_WAIT.as_micros() as u64,
        false => BUSY_TIMEOUT_US.load(Ordering::Relaxed),
    };
    if napped_us(count) >= limit {
        return false;
    }
    let nap = if count < 6 { 20u64 << count } else { 1000 };
    BUSY_NAPS.fetch_add(1, Ordering::Relaxed);
    std::thread::sleep(Duration::from_micros(nap));
    true
}

fn set_busy(conn: &Connection, seconds: f64) -> rusqlite::Result<()> {
    BUSY_TIMEOUT_US.store((seconds * 1e6) as u64, Ordering::Relaxed);
    conn.busy_handler(Some(busy_wait))
}

/// One open connection to a SQLite database file.
pub struct SqliteStore {
    /// The connection, with its statements prepared once each.
    db: Prepared,
    path: PathBuf,
    /// Device and inode of the file opened: when the path names another
    /// file (replaced or deleted), this connection no longer serves it.
    file: (u64, u64),
    /// When [`Store::check`] last found the path naming that file.
    checked_at: Option<Instant>,
    busy_timeout: f64,
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        let message = match e.sqlite_error_code() {
            _ if is_busy(&e) => {
                "is locked by another writer for longer than the busy timeout".to_string()
            }
            Some(ErrorCode::NotADatabase) => "is not a SQLite database".to_string(),
            Some(ErrorCode::DatabaseCorrupt) => "is corrupt".to_string(),
            Some(ErrorCode::ReadOnly) => {
                "is read-only (check the permissions of the file and its directory)".to_string()
            }
            Some(ErrorCode::CannotOpen) => {
                "cannot be opened (check that its directory exists and is writable)".to_string()
            }
            Some(ErrorCode::DiskFull) => "cannot be written: the disk is full".to_string(),
            Some(ErrorCode::SystemIoFailure) => format!("cannot be read or written: {e}"),
            _ => format!("failed: {e}"),
        };
        Error::Storage(message)
    }
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database the settings name.
    pub fn open(settings: &Settings) -> Result<SqliteStore> {
        let path = settings.database_path()?;
        let ctx = |e: Error| contextualize(e, &path, settings.busy_timeout);
        check_location(&path)?;
        restrict_access(&path).map_err(ctx)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // A commit's log frames are written in two system calls (see
        // store/log_writes.rs).
        let conn = match log_writes::name() {
            Some(vfs) => Connection::open_with_flags_and_vfs(&path, flags, vfs),
            None => Connection::open_with_flags(&path, flags),
        }
        .map_err(|e| ctx(e.into()))?;
        // SQLite falls back to read-only when the file is not writable; such
        // a connection could never store a task, so it is refused rather
        // than kept for the life of the process.
        if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
            return Err(ctx(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
                None,
            )
            .into()));
        }
        set_busy(&conn, settings.busy_timeout).map_err(|e| ctx(e.into()))?;
        conn.wal_hook(Some(checkpoint::after_commit));
        let mut store = SqliteStore {
            db: Prepared::of(conn),
            file: file_id(&path).unwrap_or_default(),
            checked_at: None,
            path: path.clone(),
            busy_timeout: settings.busy_timeout,
        };
        store.prepare().map_err(ctx)?;
        Ok(store)
    }

    /// Switches the file to WAL and brings its schema up to date. When many
    /// processes open a new file at once, SQLite answers some of these steps
    /// "busy" at once, without calling the busy handler (changing the
    /// journal mode, reading a WAL another connection is creating): those
    /// steps are tried again with the busy handler's own naps, until the
    /// busy timeout is spent.
    fn prepare(&mut self) -> Result<()> {
        let mut naps = 0;
        loop {
            match self.db.with_dependent_mut(Self::prepare_once) {
                Ok(done) => return done,
                Err(e) if is_busy(&e) && busy_wait(naps) => naps += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// One try of [`prepare`](Self::prepare) on the store's connection: the
    /// outer error is SQLite's (perhaps worth another try), the inner one a
    /// refusal of the file.
    fn prepare_once<'c>(
        conn: &'c Connection,
        statements: &mut Statements<'c>,
    ) -> rusqlite::Result<Result<()>> {
        // Only a file with no pages yet takes it; one that has pages keeps theirs.
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Ok(Err(Error::Storage(format!(
                "cannot switch to WAL mode (got {mode})"
            ))));
        }
        // A small page cache: every PHP worker keeps its connections open,
        // and another process's write empties a connection's cache anyway.
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA cache_size = -512;")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version == SQLITE_SCHEMA_VERSION {
            return Ok(Ok(()));
        }
        if !(0..=SQLITE_SCHEMA_VERSION).contains(&version) {
            return Ok(Err(Error::Storage(format!(
                "has schema version {version}, newer than this extension supports \
                 ({SQLITE_SCHEMA_VERSION}); upgrade the extension"
            ))));
        }
        let tx = OpenTx::begin(conn, statements, true)?;
        // Another process may have migrated while we waited for the lock.
        let mut version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version == 0 {
            let tables: i64 = conn.query_row(
                "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'",
                [],
                |r| r.get(0),
            )?;
            if tables > 0 {
                return Ok(Err(Error::Storage(
                    "is a SQLite database of another application (it has tables but no \
                     async-engine schema); give async-engine a file of its own"
                        .into(),
                )));
            }
        }
        migrate(conn, &mut version)?;
        conn.pragma_update(None, "user_version", version)?;
        tx.commit(statements)?;
        Ok(Ok(()))
    }
}

/// Runs the migrations from `version` to [`SQLITE_SCHEMA_VERSION`],
/// counting `version` up. Migration 11 rewrites a CHECK through
/// `writable_schema`, which SQLite's defensive mode (on by default in some
/// builds) refuses; the mode is off while they run and as it was after.
fn migrate(conn: &Connection, version: &mut i64) -> rusqlite::Result<()> {
    let defensive = conn.db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, false)?;
    let mut run = || {
        while *version < SQLITE_SCHEMA_VERSION {
            conn.execute_batch(SQLITE_MIGRATIONS[*version as usize])?;
            *version += 1;
        }
        Ok(())
    };
    let ran = run();
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, defensive)?;
    ran
}

impl Store for SqliteStore {
    fn run(&mut self, write: bool, f: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()> {
        let SqliteStore {
            db,
            path,
            busy_timeout,
            ..
        } = self;
        db.with_dependent_mut(|conn, statements| {
            let tx = OpenTx::begin(conn, statements, write)?;
            f(&mut SqliteTx { conn, statements })?;
            tx.commit(statements)?;
            Ok(())
        })
        .map_err(|e| contextualize(e, path, *busy_timeout))
    }

    fn serves(&self, settings: &Settings) -> bool {
        settings.database_path().is_ok_and(|p| p == self.path)
    }

    /// Refuses to go on when the path no longer names the file this
    /// connection opened (one `stat`, skipped within [`RECHECK_AFTER`] of
    /// the last one that passed). Writing on would store tasks in a file no
    /// other process sees; opening the new file beside the old one's live
    /// WAL could mix the two. Every process must start afresh.
    fn check(&mut self) -> Result<()> {
        let now = Instant::now();
        if self
            .checked_at
            .is_some_and(|at| now.duration_since(at) < RECHECK_AFTER)
        {
            return Ok(());
        }
        if file_id(&self.path) == Some(self.file) {
            self.checked_at = Some(now);
            return Ok(());
        }
        Err(Error::Storage(format!(
            "database '{}' was replaced or deleted after this process opened it; \
             restart PHP (php-fpm, Apache, php -S) so that every process opens the file anew",
            self.path.display()
        )))
    }

    fn checkpoint(&mut self) -> Result<()> {
        checkpoint::run(self.db.borrow_owner())
            .map_err(|e| contextualize(e.into(), &self.path, self.busy_timeout))
    }

    fn set_busy_timeout(&mut self, seconds: f64) -> Result<()> {
        if seconds != self.busy_timeout {
            set_busy(self.db.borrow_owner(), seconds)?;
            self.busy_timeout = seconds;
        }
        Ok(())
    }
}

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Param::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Param::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(v)),
            Param::Bool(v) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(v))),
            Param::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
        })
    }
}

/// An open transaction on a connection, for every transaction this store
/// runs (migrations included). `BEGIN` and `COMMIT` are prepared once per
/// connection like every other statement (rusqlite's own `Transaction`
/// parses them anew each time, two parses per `defer()`).
/// Dropped without [`commit`](Self::commit), after an error or a panic, it
/// rolls back.
struct OpenTx<'a> {
    conn: &'a Connection,
    committed: bool,
}

impl<'a> OpenTx<'a> {
    /// Begins a transaction: `IMMEDIATE` (the write lock at once) for a write.
    fn begin(
        conn: &'a Connection,
        statements: &mut Statements<'a>,
        write: bool,
    ) -> rusqlite::Result<Self> {
        let sql = if write { "BEGIN IMMEDIATE" } else { "BEGIN" };
        statements.get(conn, sql)?.execute([])?;
        Ok(OpenTx {
            conn,
            committed: false,
        })
    }

    fn commit(mut self, statements: &mut Statements<'a>) -> rusqlite::Result<()> {
        statements.get(self.conn, "COMMIT")?.execute([])?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for OpenTx<'_> {
    fn drop(&mut self) {
        if !self.committed && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// A SQLite transaction as the queue logic sees it; statements are
/// prepared once per connection (see `store/statements.rs`).
struct SqliteTx<'t, 'c> {
    conn: &'c Connection,
    statements: &'t mut Statements<'c>,
}

impl Tx for SqliteTx<'_, '_> {
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<usize> {
        Ok(self
            .statements
            .get(self.conn, sql)?
            .execute(rusqlite::params_from_iter(params))?)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        let stmt = self.statements.get(self.conn, sql)?;
        let width = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Real(v) => Value::Int(v as i64),
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        Value::Text(String::from_utf8_lossy(t).into_owned())
                    }
                });
            }
            out.push(Row(values));
        }
        Ok(out)
    }

    fn in_process(&self) -> bool {
        true
    }

    fn counts_finished(&self) -> bool {
        true
    }
}

/// Whether SQLite refused for another connection's lock.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked)
    )
}

/// Device and inode of the file at `path`, if there is one.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Prefixes a storage error with the database it concerns.
fn contextualize(e: Error, path: &Path, busy_timeout: f64) -> Error {
    match e {
        Error::Storage(m) if m.starts_with("is locked") => Error::Storage(format!(
            "database '{}' {m} ({busy_timeout} s; setting busy_timeout)",
            path.display()
        )),
        Error::Storage(m) => Error::Storage(format!("database '{}' {m}", path.display())),
        other => other,
    }
}

/// Refuses a database path whose directory is missing or not a directory,
/// or that names a directory, before SQLite gives a vaguer error.
fn check_location(path: &Path) -> Result<()> {
    let shown = path.display();
    if path.is_dir() {
        return Err(Error::Storage(format!(
            "database '{shown}' is a directory; set async_engine.database to a file path"
        )));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::Storage(format!(
            "database directory '{}' does not exist (database '{shown}')",
            dir.display()
        )));
    }
    if !path.exists() && !writable(dir) {
        return Err(Error::Storage(format!(
            "database directory '{}' is not writable, so database '{shown}' cannot be created",
            dir.display()
        )));
    }
    Ok(())
}

/// Makes the database file (created here if missing) and its `-wal` and
/// `-shm` companions readable and writable by their owner only, or also by
/// their group when the directory is setgid (a group the site's users
/// share). SQLite gives the companions the main file's mode, so creating
/// the main file first is what keeps the secret and task args from other
/// local users. Existing files open to others lose those permissions.
fn restrict_access(path: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let shared_group = std::fs::metadata(dir).is_ok_and(|m| m.mode() & 0o2000 != 0);
    let mode = if shared_group { 0o660 } else { 0o600 };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
    {
        // The umask may have taken bits off; set exactly.
        Ok(f) => f
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::Storage(format!("cannot be created: {e}")))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::Storage(format!("cannot be created: {e}"))),
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let open_to_others = meta.mode() & 0o007 != 0;
        if open_to_others && meta.uid() == me {
            let tightened = meta.mode() & 0o7770 & !(if shared_group { 0 } else { 0o070 });
            let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(tightened));
        }
    }
    Ok(())
}

/// Whether this process may create files in `dir`.
fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".async-engine-probe-{}", crate::id::random_hex(6)));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            true
        }
        Err(_) => false,
    }
}

/// A fresh directory for one test's database and the settings naming
/// `dir/name.sqlite` in it; the test removes the directory when done.
#[cfg(test)]
pub(crate) fn scratch(name: &str) -> (PathBuf, Settings) {
    let dir = std::env::temp_dir().join(format!("async-engine-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let settings = Settings {
        database: Some(
            dir.join(format!("{name}.sqlite"))
                .to_string_lossy()
                .into_owned(),
        ),
        ..Settings::default()
    };
    (dir, settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that fails or panics half way leaves nothing behind, and the
    /// connection takes the next transaction as usual.
    #[test]
    fn a_failed_or_panicking_write_rolls_back() {
        let (dir, settings) = scratch("rollback");
        let mut store: Box<dyn Store> = Box::new(SqliteStore::open(&settings).unwrap());
        let insert = |tx: &mut dyn Tx, key: &str| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, 'v')",
                crate::db::args![key],
            )
        };
        let failed = store.write(|tx| {
            insert(tx, "failed")?;
            Err::<(), _>(Error::Storage("half way".into()))
        });
        assert!(failed.is_err());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store.write::<()>(|tx| {
                insert(tx, "panicked")?;
                panic!("half way")
            })
        }));
        assert!(panicked.is_err());
        store.write(|tx| insert(tx, "kept").map(drop)).unwrap();
        let keys = store
            .read(|tx| tx.text("SELECT group_concat(key, ',') FROM meta", &[]))
            .unwrap();
        assert_eq!(keys.as_deref(), Some("kept"));
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn page_size(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap()
    }

    /// A new database has pages of [`PAGE_SIZE`], also when its file was
    /// made empty beforehand (to set its owner and mode), and keeps them.
    #[test]
    fn a_new_database_has_small_pages() {
        let (dir, settings) = scratch("pages");
        std::fs::File::create(settings.database_path().unwrap()).unwrap();
        for _ in 0..2 {
            let mut store = SqliteStore::open(&settings).unwrap();
            assert_eq!(page_size(store.db.borrow_owner()), PAGE_SIZE);
            (&mut store as &mut dyn Store)
                .write(|tx| {
                    tx.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('k', 'v')",
                        &[],
                    )
                    .map(drop)
                })
                .unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A replaced file is refused once [`RECHECK_AFTER`] has passed since
    /// the last look, and from then on.
    #[test]
    fn a_replaced_file_is_refused_a_millisecond_after_the_last_look() {
        let (dir, settings) = scratch("replaced");
        let path = settings.database_path().unwrap();
        let mut store = SqliteStore::open(&settings).unwrap();
        store.check().unwrap();
        std::fs::write(dir.join("other"), b"").unwrap();
        std::fs::rename(dir.join("other"), &path).unwrap();
        let looked = store.checked_at.unwrap();
        let early = store.check();
        if looked.elapsed() < RECHECK_AFTER {
            assert!(early.is_ok(), "{early:?}");
        }
        std::thread::sleep(RECHECK_AFTER);
        for _ in 0..2 {
            let refused = store.check().unwrap_err().to_string();
            assert!(refused.contains("was replaced or deleted"), "{refused}");
        }
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A version 1 database (as 0.1 releases wrote it) is migrated on open
    /// and keeps its tasks.
    #[test]
    fn a_version_1_database_is_migrated_with_its_tasks() {
        let (dir, settings) = scratch("migrate");
        let path = settings.database_path().unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SQLITE_MIGRATIONS[0]).unwrap();
            conn.execute_batch(
                "INSERT INTO tasks (id, endpoint, name, args, state, due_at, max_attempts, timeout,
                                    created_at, updated_at)
                 VALUES ('01A', '/w.php', 't', '[]', 'dead', 0, 5, 300000, 0, 0),
                        ('01B', '/w.php', 't', '[]', 'queued', 0, 5, 300000, 0, 0);
                 INSERT INTO endpoints (endpoint, next_due) VALUES ('/w.php', 0);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let mut store = SqliteStore::open(&settings).unwrap();
        let version: i64 = store
            .db
            .borrow_owner()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SQLITE_SCHEMA_VERSION);
        assert_eq!(
            page_size(store.db.borrow_owner()),
            4096,
            "an existing file keeps its pages"
        );
        let sql = |name: &str| -> String {
            store
                .db
                .borrow_owner()
                .query_row(
                    "SELECT sql FROM sqlite_master WHERE name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .unwrap()
        };
        let indexed = sql("tasks_state");
        assert!(indexed.contains("(state, site, id)"), "{indexed}");
        let table = sql("tasks");
        assert!(table.ends_with("WITHOUT ROWID"), "{table}");
        let dead = (&mut store as &mut dyn Store)
            .read(|tx| crate::queue::list(tx, "", crate::task::State::Dead, 10))
            .unwrap();
        assert_eq!(dead.len(), 1);
        let (queued, counts) = (&mut store as &mut dyn Store)
            .read(|tx| {
                Ok((
                    crate::queue::list(tx, "", crate::task::State::Queued, 10)?,
                    crate::queue::counts(tx, "")?,
                ))
            })
            .unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(counts.1, Some(0), "the queued task's due time");
        assert_eq!(
            counts.0.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
            [1, 0, 0, 1, 0]
        );
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// No table, index or trigger compares a value with a list of three or
    /// more constants, which SQLite tests through a temporary b-tree built
    /// each time (schema 11); the tasks table still refuses a state it does
    /// not know, and a database of schema 10 is rewritten so.
    #[test]
    fn the_schema_compares_states_without_temporary_lists() {
        let (dir, settings) = scratch("lists");
        let path = settings.database_path().unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            for migration in &SQLITE_MIGRATIONS[..10] {
                conn.execute_batch(migration).unwrap();
            }
            conn.pragma_update(None, "user_version", 10).unwrap();
        }
        let store = SqliteStore::open(&settings).unwrap();
        let conn = store.db.borrow_owner();
        let three = lists_of_three(conn);
        assert!(three.is_empty(), "{three:?}");
        conn.execute_batch(
            "INSERT INTO tasks (id, endpoint, name, args, state, due_at, max_attempts, timeout,
                                created_at, updated_at)
             VALUES ('01A', '/w.php', 't', '[]', 'queued', 0, 5, 300000, 0, 0)",
        )
        .unwrap();
        for state in ["running", "done", "dead", "cancelled", "queued"] {
            conn.execute("UPDATE tasks SET state = ?1", [state])
                .unwrap();
        }
        let refused = conn.execute("UPDATE tasks SET state = 'lost'", []);
        assert!(
            refused.is_err_and(|e| e.to_string().contains("CHECK")),
            "an unknown state was stored"
        );
        let program: Vec<String> = conn
            .prepare(&format!("EXPLAIN {}", crate::queue::INSERT_TASK))
            .unwrap()
            .query_map(rusqlite::params_from_iter([0; 11]), |r| r.get(1))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            !program.iter().any(|op| op == "OpenEphemeral"),
            "{program:?}"
        );
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A connection in SQLite's defensive mode (the default of some
    /// builds) migrates too, and is left in that mode.
    #[test]
    fn a_defensive_connection_migrates_and_stays_defensive() {
        let conn = Connection::open_in_memory().unwrap();
        for migration in &SQLITE_MIGRATIONS[..10] {
            conn.execute_batch(migration).unwrap();
        }
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
            .unwrap();
        let mut version = 10;
        migrate(&conn, &mut version).unwrap();
        assert_eq!(version, SQLITE_SCHEMA_VERSION);
        assert!(lists_of_three(&conn).is_empty());
        assert!(conn.db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE).unwrap());
    }

    /// The tables, indexes and triggers whose SQL holds an `IN (` list of
    /// three or more items.
    fn lists_of_three(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name, sql FROM sqlite_schema WHERE sql IS NOT NULL")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap();
        rows.into_iter()
            .filter(|(_, sql)| {
                sql.split("IN (").skip(1).any(|list| {
                    let list = &list[..list.find(')').unwrap_or(list.len())];
                    list.split(',').count() >= 3
                })
            })
            .map(|(name, _)| name)
            .collect()
    }
}
