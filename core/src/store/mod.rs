//! The engine's database behind one trait: SQLite (a file path, the
//! default) or PostgreSQL (a `postgres://` URL, shared by several servers).

use crate::clock::Millis;
use crate::db::Tx;
use crate::error::{Error, Result};
use crate::queue::NewTask;
use crate::settings::Settings;
use crate::slots::Reserved;

pub(crate) mod checkpoint;
mod log_writes;
pub mod pg;
mod pg_one_trip;
pub(crate) mod schema;
pub mod sqlite;
mod statements;

pub use schema::{PG_SCHEMA_VERSION, SQLITE_SCHEMA_VERSION};

/// One open connection to the engine's database.
pub trait Store: Send {
    /// Runs `f` in one transaction: a write transaction (exclusive of other
    /// writers on SQLite) when `write`, else one consistent snapshot.
    /// Commits when `f` returns `Ok`, rolls back otherwise. A backend may run
    /// `f` again when the database aborted the transaction for a conflict
    /// with another (a deadlock, a lost connection before anything ran).
    fn run(&mut self, write: bool, f: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()>;

    /// Whether this connection was opened for these settings' database.
    fn serves(&self, settings: &Settings) -> bool;

    /// Refuses to go on when the database this connection opened is no
    /// longer the one its settings name (a replaced SQLite file).
    fn check(&mut self) -> Result<()>;

    /// Applies a changed busy timeout (how long to wait for another
    /// writer's lock) to the open connection.
    fn set_busy_timeout(&mut self, seconds: f64) -> Result<()>;

    /// Runs the checkpoint a commit in another thread left to its caller
    /// (see `checkpoint.rs`); nothing on a backend without one.
    fn checkpoint(&mut self) -> Result<()> {
        Ok(())
    }

    /// Stores a task and reserves a slot for it as one transaction would
    /// (`queue::insert`, then `delivery::reserve`), in one round trip to the
    /// database. `Ok(None)`: this backend or this case needs the
    /// transaction, which the caller then runs; nothing was stored.
    fn defer_in_one_trip(&mut self, _defer: &OneTripDefer<'_>) -> Result<Option<Option<Reserved>>> {
        Ok(None)
    }
}

/// A task without a unique key for [`Store::defer_in_one_trip`].
pub struct OneTripDefer<'a> {
    /// Its id.
    pub id: &'a str,
    /// The task.
    pub task: &'a NewTask<'a>,
    /// The `max_queued` setting.
    pub max_queued: u64,
    /// The time of the call.
    pub now: Millis,
    /// When the task is due now and its request may go at once: the
    /// server whose slot to reserve and its `max_workers`.
    pub reserve: Option<(&'a str, u32)>,
}

impl dyn Store {
    /// Runs `f` in one write transaction and returns what it returned.
    pub fn write<T>(&mut self, mut f: impl FnMut(&mut dyn Tx) -> Result<T>) -> Result<T> {
        self.returning(true, &mut f)
    }

    /// Runs read-only queries in `f` against one consistent snapshot.
    pub fn read<T>(&mut self, mut f: impl FnMut(&mut dyn Tx) -> Result<T>) -> Result<T> {
        self.returning(false, &mut f)
    }

    fn returning<T>(
        &mut self,
        write: bool,
        f: &mut dyn FnMut(&mut dyn Tx) -> Result<T>,
    ) -> Result<T> {
        let mut out = None;
        self.run(write, &mut |tx| {
            out = Some(f(tx)?);
            Ok(())
        })?;
        Ok(out.expect("a committed transaction ran its body"))
    }
}

/// Whether the `database` setting names a PostgreSQL database.
pub fn is_postgres_url(database: &str) -> bool {
    let lower = database.get(..13).unwrap_or(database).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// Opens (creating and migrating if needed) the database the settings name.
pub fn open(settings: &Settings) -> Result<Box<dyn Store>> {
    let database = settings.database()?;
    if is_postgres_url(database) {
        return Ok(Box::new(pg::PgStore::open(
            database,
            settings.busy_timeout,
        )?));
    }
    // A mistyped URL must not fall through to a SQLite file named after it.
    if let Some((scheme, _)) = database.split_once("://") {
        return Err(Error::Storage(format!(
            "database '{}' has the unknown scheme '{}'; use a file path for SQLite or a \
             postgres:// URL for PostgreSQL",
            crate::settings::shown_database(database),
            scheme.escape_default()
        )));
    }
    Ok(Box::new(sqlite::SqliteStore::open(settings)?))
}
