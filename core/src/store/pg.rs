//! The PostgreSQL store, for several web servers sharing one queue:
//! connecting (and reconnecting), the schema, transactions, error mapping.
//!
//! Write transactions run at READ COMMITTED. Claims take a task with
//! `FOR UPDATE SKIP LOCKED`, so servers claiming at once never wait on each
//! other's rows; counting a server's slots and adding one happens under that
//! server's advisory lock; an endpoint's row is locked before its next due
//! time is computed; `unique` keys are enforced by a partial unique index.
//! A transaction the database aborts for a deadlock is run again.

use crate::db::{Param, Row, Tx, Value};
use crate::error::{Error, Result};
use crate::queue::queue_full;
use crate::settings::Settings;
use crate::slots::{Reserved, SENT_TTL_MS};
use crate::store::pg_one_trip;
use crate::store::schema::{PG_MIGRATIONS, PG_SCHEMA_VERSION};
use crate::store::{OneTripDefer, Store};
use postgres::error::SqlState;
use postgres::types::{IsNull, ToSql, Type};
use postgres::{Client, Config, NoTls, Statement};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

/// Advisory lock key held while the schema is created or migrated.
const MIGRATION_LOCK: i64 = 0x6173_796e_635f_6d69; // "async_mi"

/// Times a transaction aborted by a deadlock is run again.
const CONFLICT_RETRIES: u32 = 5;

/// One connection to a PostgreSQL database.
pub struct PgStore {
    client: Client,
    config: Config,
    /// The setting as given (compared by `serves`).
    url: String,
    /// The URL without its password, for messages.
    shown: String,
    busy_timeout: f64,
    /// Statements prepared on this connection, by their SQLite-dialect text.
    statements: HashMap<String, Statement>,
    /// Whether this session has the one-trip functions (see
    /// `pg_one_trip.rs`): None until first tried.
    one_trip: Option<bool>,
}

impl PgStore {
    /// Connects to the database `url` names and creates or migrates the schema.
    pub fn open(url: &str, busy_timeout: f64) -> Result<PgStore> {
        let mut config = Config::from_str(url).map_err(|e| {
            Error::Storage(format!(
                "database URL '{}' is not a valid PostgreSQL URL ({e}); use \
                 postgres://user:password@host:port/dbname",
                crate::settings::shown_database(url)
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs_f64(busy_timeout.max(1.0)));
        }
        if config.get_application_name().is_none() {
            config.application_name("async-engine");
        }
        let shown = shown_url(&config);
        let ctx = |e: Error| contextualize(e, &shown, busy_timeout);
        let mut client = connect(&config).map_err(ctx)?;
        set_lock_timeout(&mut client, busy_timeout).map_err(ctx)?;
        let mut store = PgStore {
            client,
            config,
            url: url.to_string(),
            shown: shown.clone(),
            busy_timeout,
            statements: HashMap::new(),
            one_trip: None,
        };
        store.migrate().map_err(ctx)?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<()> {
        let tx = &mut self.client;
        tx.batch_execute("BEGIN")?;
        let result = (|| -> Result<()> {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            let tables: Option<String> = tx
                .query_one(
                    "SELECT string_agg(relname::text, ', ' ORDER BY relname) FROM pg_class
                     WHERE relnamespace = current_schema()::regnamespace
                       AND relname IN ('meta', 'tasks', 'slots', 'endpoints', 'schedules') AND relkind = 'r'",
                    &[],
                )?
                .get(0);
            let mut version = 0;
            if let Some(tables) = tables {
                let stored = if tables.contains("meta") {
                    tx.query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])?
                        .and_then(|r| r.get::<_, String>(0).parse::<i64>().ok())
                } else {
                    None
                };
                version = stored.ok_or_else(|| {
                    Error::Storage(format!(
                        "already has tables of another application ({tables}); give \
                         async-engine a database or schema of its own (for a schema: \
                         ?options=-csearch_path%3Dasync_engine in the URL)"
                    ))
                })?;
            }
            if version > PG_SCHEMA_VERSION {
                return Err(Error::Storage(format!(
                    "has schema version {version}, newer than this extension supports \
                     ({PG_SCHEMA_VERSION}); upgrade the extension"
                )));
            }
            while version < PG_SCHEMA_VERSION {
                tx.batch_execute(PG_MIGRATIONS[version as usize])?;
                version += 1;
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&version.to_string()],
            )?;
            Ok(())
        })();
        finish(tx, result)
    }

    /// Whether this session has the one-trip functions, created at the
    /// first call, outside any transaction. Creating them fails without
    /// the TEMP right on the database: the statements then serve every
    /// call of this connection.
    fn has_one_trip_functions(&mut self) -> bool {
        if self.one_trip.is_none() {
            let created = self
                .client
                .batch_execute(&pg_one_trip::create_functions())
                .is_ok();
            self.one_trip = Some(created);
        }
        self.one_trip == Some(true)
    }

    /// Connects again after the connection was lost (the server restarted).
    fn reconnect(&mut self) -> Result<()> {
        self.client = connect(&self.config)?;
        self.statements.clear();
        self.one_trip = None;
        set_lock_timeout(&mut self.client, self.busy_timeout)
    }

    /// Begins a transaction, a write one after making sure of the session's
    /// one-trip functions (created outside any transaction): whether the
    /// transaction may call them.
    fn begin(&mut self, write: bool) -> std::result::Result<bool, postgres::Error> {
        let one_trip = write && self.has_one_trip_functions();
        self.client.batch_execute(if write {
            "BEGIN"
        } else {
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        })?;
        Ok(one_trip)
    }

    fn attempt(
        &mut self,
        write: bool,
        f: &mut dyn FnMut(&mut dyn Tx) -> Result<()>,
    ) -> std::result::Result<(), (Error, Option<SqlState>)> {
        if self.client.is_closed() {
            self.reconnect().map_err(|e| (e, None))?;
        }
        let one_trip = match self.begin(write) {
            Ok(one_trip) => one_trip,
            // A connection the server closed (restarted, terminated it) shows
            // only now; nothing ran yet, so connecting again and starting
            // over is safe. The new session has none of the old one's
            // functions until it creates them.
            Err(_) => {
                self.reconnect().map_err(|e| (e, None))?;
                self.begin(write).map_err(|e| (e.into(), None))?
            }
        };
        let mut tx = PgTx {
            client: &mut self.client,
            statements: &mut self.statements,
            failed: None,
            one_trip,
        };
        let result = f(&mut tx);
        let failed = tx.failed.take();
        finish(&mut self.client, result).map_err(|e| (e, failed))
    }
}

/// Commits when `result` is `Ok`, rolls back otherwise.
fn finish(client: &mut Client, result: Result<()>) -> Result<()> {
    match result {
        Ok(()) => Ok(client.batch_execute("COMMIT")?),
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK");
            Err(e)
        }
    }
}

fn connect(config: &Config) -> Result<Client> {
    Ok(config.connect(NoTls)?)
}

fn set_lock_timeout(client: &mut Client, seconds: f64) -> Result<()> {
    let ms = (seconds * 1000.0).round().max(1.0) as i64;
    client.batch_execute(&format!("SET lock_timeout = {ms}"))?;
    Ok(())
}

impl Store for PgStore {
    fn run(&mut self, write: bool, f: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()> {
        let mut tries = 0;
        loop {
            match self.attempt(write, f) {
                Ok(()) => return Ok(()),
                Err((_, Some(code)))
                    if tries < CONFLICT_RETRIES
                        && (code == SqlState::T_R_DEADLOCK_DETECTED
                            || code == SqlState::T_R_SERIALIZATION_FAILURE) =>
                {
                    tries += 1;
                }
                Err((e, _)) => return Err(contextualize(e, &self.shown, self.busy_timeout)),
            }
        }
    }

    fn serves(&self, settings: &Settings) -> bool {
        settings.database.as_deref() == Some(self.url.as_str())
    }

    fn check(&mut self) -> Result<()> {
        Ok(())
    }

    fn defer_in_one_trip(&mut self, d: &OneTripDefer<'_>) -> Result<Option<Option<Reserved>>> {
        if self.client.is_closed() || !self.has_one_trip_functions() {
            return Ok(None);
        }
        let slot = d.reserve.map(|_| crate::id::random_hex(16));
        let lock = d.reserve.map(|(server, _)| lock_key("slots", server));
        let holder = d.reserve.and_then(|_| crate::holder::this_process());
        let params = pg_one_trip::params(d, lock, slot.as_deref(), holder.as_deref());
        let mut tx = PgTx {
            client: &mut self.client,
            statements: &mut self.statements,
            failed: None,
            one_trip: true,
        };
        let result = tx.query(pg_one_trip::CALL, &params);
        let failed = tx.failed.take();
        match result {
            Ok(rows) => {
                let endpoint = match rows.into_iter().next() {
                    Some(mut row) => row.opt_text(0)?,
                    None => None,
                };
                Ok(Some(endpoint.map(|endpoint| Reserved {
                    slot: slot.expect("a slot id when one was reserved"),
                    endpoint,
                })))
            }
            Err(e) => match failed {
                Some(code) if code.code() == pg_one_trip::QUEUE_FULL => {
                    Err(queue_full(d.task.endpoint, d.max_queued))
                }
                // Expired slots to reap, a conflict to retry, a server going
                // away: the transaction handles each, and nothing was stored.
                Some(code)
                    if code.code() == pg_one_trip::REAP_FIRST
                        || code.code().starts_with("57")
                        || code == SqlState::T_R_DEADLOCK_DETECTED
                        || code == SqlState::T_R_SERIALIZATION_FAILURE =>
                {
                    Ok(None)
                }
                None if self.client.is_closed() => Ok(None),
                _ => Err(contextualize(e, &self.shown, self.busy_timeout)),
            },
        }
    }

    fn set_busy_timeout(&mut self, seconds: f64) -> Result<()> {
        if seconds != self.busy_timeout {
            set_lock_timeout(&mut self.client, seconds)
                .map_err(|e| contextualize(e, &self.shown, seconds))?;
            self.busy_timeout = seconds;
        }
        Ok(())
    }
}

/// A PostgreSQL transaction as the queue logic sees it.
struct PgTx<'a> {
    client: &'a mut Client,
    statements: &'a mut HashMap<String, Statement>,
    /// The SQLSTATE of the statement that failed, if one did.
    failed: Option<SqlState>,
    /// Whether the session has the one-trip functions.
    one_trip: bool,
}

impl PgTx<'_> {
    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let prepared = self
            .client
            .prepare(&translate(sql))
            .map_err(|e| self.note(e))?;
        self.statements.insert(sql.to_string(), prepared.clone());
        Ok(prepared)
    }

    fn note(&mut self, e: postgres::Error) -> Error {
        self.failed = e.code().cloned();
        e.into()
    }

    fn rows(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<postgres::Row>> {
        let stmt = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        self.client.query(&stmt, &refs).map_err(|e| self.note(e))
    }
}

impl Tx for PgTx<'_> {
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<usize> {
        let stmt = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let n = self
            .client
            .execute(&stmt, &refs)
            .map_err(|e| self.note(e))?;
        Ok(n as usize)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        self.rows(sql, params)?.iter().map(read_row).collect()
    }

    fn reserve_in_one_trip(
        &mut self,
        server: &str,
        site: &str,
        max_workers: u32,
        busy: Option<&str>,
        now: i64,
    ) -> Result<Option<Option<(String, String)>>> {
        if !self.one_trip {
            return Ok(None);
        }
        let slot = crate::id::random_hex(16);
        let holder = crate::holder::this_process();
        let params = [
            Param::Text(site),
            Param::Text(server),
            Param::Int(i64::from(max_workers)),
            busy.map_or(Param::Null, Param::Text),
            Param::Text(&slot),
            Param::Int(now + SENT_TTL_MS),
            Param::Int(now),
            holder.as_deref().map_or(Param::Null, Param::Text),
        ];
        let Some(mut row) = self
            .query(pg_one_trip::RESERVE, &params)?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        if row.int(0)? != 0 {
            return Ok(None);
        }
        Ok(Some(row.opt_text(1)?.map(|endpoint| (slot, endpoint))))
    }

    fn recompute_in_one_trip(&mut self, site: &str, endpoint: &str, delta: i64) -> Result<bool> {
        if !self.one_trip {
            return Ok(false);
        }
        let params = [Param::Text(site), Param::Text(endpoint), Param::Int(delta)];
        self.rows(pg_one_trip::RECOMPUTE, &params)?;
        Ok(true)
    }

    fn lock_slots(&mut self, server: &str) -> Result<()> {
        let key = lock_key("slots", server);
        self.rows("SELECT pg_advisory_xact_lock(?1)", &[Param::Int(key)])?;
        Ok(())
    }

    fn lock_named(&mut self, name: &str) -> Result<()> {
        let key = lock_key("named", name);
        self.rows("SELECT pg_advisory_xact_lock(?1)", &[Param::Int(key)])?;
        Ok(())
    }

    fn lock_endpoint(&mut self, site: &str, endpoint: &str) -> Result<()> {
        self.rows(LOCK_ENDPOINT, &[Param::Text(site), Param::Text(endpoint)])?;
        Ok(())
    }
}

/// Locks endpoint `?2`'s row (site `?1`) until the transaction ends.
pub(super) const LOCK_ENDPOINT: &str =
    "SELECT 1 FROM endpoints WHERE site = ?1 AND endpoint = ?2 FOR UPDATE";

/// The advisory lock key of `name` in a kind of locks (FNV-1a of both):
/// `slots` of a server, or a `named` lock.
fn lock_key(kind: &str, name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let prefix = format!("async-engine {kind}\0");
    for b in prefix.as_bytes().iter().chain(name.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

fn read_row(r: &postgres::Row) -> Result<Row> {
    let mut values = Vec::with_capacity(r.len());
    for (i, column) in r.columns().iter().enumerate() {
        let ty = column.type_();
        let value = if *ty == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)?.map(Value::Int)
        } else if *ty == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(i64::from(v)))
        } else if *ty == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(i64::from(v)))
        } else if *ty == Type::VOID {
            None
        } else {
            r.try_get::<_, Option<String>>(i)?.map(Value::Text)
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Param::Null => Ok(IsNull::Yes),
            Param::Text(v) => v.to_sql(ty, out),
            Param::Bool(v) if *ty == Type::BOOL => v.to_sql(ty, out),
            Param::Bool(v) => Param::Int(i64::from(v)).to_sql(ty, out),
            Param::Int(v) if *ty == Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
            Param::Int(v) if *ty == Type::BOOL => (v != 0).to_sql(ty, out),
            Param::Int(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// Rewrites SQL in the shared dialect (see [`crate::db`]) for PostgreSQL:
/// `?N` becomes `$N`, `INDEXED BY name` goes, `/*skip locked*/` becomes
/// `FOR UPDATE SKIP LOCKED`.
pub(super) fn translate(sql: &str) -> String {
    let sql = sql.replace("/*skip locked*/", "FOR UPDATE SKIP LOCKED");
    let mut out = String::with_capacity(sql.len());
    let mut words = sql.split_inclusive(char::is_whitespace).peekable();
    while let Some(word) = words.next() {
        if word.trim_end() == "INDEXED" {
            // "INDEXED BY name": skip this word and the next two.
            let mut skipped = 0;
            while skipped < 2 {
                match words.next() {
                    Some(w) if w.trim().is_empty() => {}
                    Some(_) => skipped += 1,
                    None => break,
                }
            }
            continue;
        }
        out.push_str(word);
    }
    out.replace('?', "$")
}

/// `postgres://user@host:port/db` from a parsed URL, without the password.
fn shown_url(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or_default()
    )
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            return Error::Storage(if e.is_closed() {
                "lost its connection (the server restarted or closed it); the next \
                 call connects again"
                    .into()
            } else {
                format!("cannot be reached: {e} (is PostgreSQL running and listening there?)")
            });
        };
        let code = db.code();
        let detail = db.message();
        Error::Storage(
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                format!("refused the login: {detail} (check the user and password in the URL)")
            } else if *code == SqlState::INVALID_CATALOG_NAME {
                format!("does not exist: {detail} (create it, or fix the name in the URL)")
            } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
                format!(
                    "refused an operation for lack of permission: {detail} (grant the user \
                 CREATE and USAGE on the schema and rights on the engine's tables)"
                )
            } else if *code == SqlState::LOCK_NOT_AVAILABLE {
                "is locked by another writer for longer than the busy timeout".into()
            } else if *code == SqlState::DISK_FULL {
                "cannot be written: the disk is full".into()
            } else if *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
            {
                format!("is shutting down or starting up: {detail}; the next call connects again")
            } else {
                format!("failed: {detail} (SQLSTATE {})", code.code())
            },
        )
    }
}

/// Prefixes a storage error with the database it concerns.
fn contextualize(e: Error, shown: &str, busy_timeout: f64) -> Error {
    match e {
        Error::Storage(m) if m.starts_with("database") => Error::Storage(m),
        Error::Storage(m) if m.starts_with("is locked") => Error::Storage(format!(
            "database '{shown}' {m} ({busy_timeout} s; setting busy_timeout)"
        )),
        Error::Storage(m) => Error::Storage(format!("database '{shown}' {m}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_dialect_is_rewritten() {
        assert_eq!(
            translate(
                "SELECT id FROM tasks INDEXED BY tasks_claim\n  WHERE a = ?1 AND b <= ?12 LIMIT 1 /*skip locked*/"
            ),
            "SELECT id FROM tasks   WHERE a = $1 AND b <= $12 LIMIT 1 FOR UPDATE SKIP LOCKED"
        );
    }

    #[test]
    fn passwords_are_hidden() {
        let config = Config::from_str("postgres://u:secret@127.0.0.1:5433/db").unwrap();
        assert_eq!(shown_url(&config), "postgres://u@127.0.0.1:5433/db");
    }

    #[test]
    fn lock_keys_differ_per_server() {
        assert_ne!(lock_key("slots", "a"), lock_key("slots", "b"));
        assert_ne!(lock_key("slots", "a"), lock_key("named", "a"));
        assert_eq!(lock_key("slots", "a"), lock_key("slots", "a"));
    }
}
