//! What the queue and slot logic sees of a database: one transaction that
//! runs SQL with parameters and returns rows of plain values. SQLite and
//! PostgreSQL each implement [`Tx`], so every state change is written once.
//!
//! SQL is written in the dialect both understand, with SQLite's `?N`
//! parameters. Two SQLite-only clauses are allowed, which the PostgreSQL
//! backend rewrites: `INDEXED BY name` (dropped) and the comment
//! `/*skip locked*/` after a `SELECT`'s `LIMIT` (becomes `FOR UPDATE SKIP
//! LOCKED`: the row is taken, and rows other transactions hold are passed by).

use crate::error::{Error, Result};

/// A parameter of a statement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param<'a> {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A boolean (an integer 0 or 1 in SQLite).
    Bool(bool),
    /// Text.
    Text(&'a str),
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Param::Null, Param::Int)
    }
}

impl From<u32> for Param<'_> {
    fn from(v: u32) -> Self {
        Param::Int(i64::from(v))
    }
}

impl From<bool> for Param<'_> {
    fn from(v: bool) -> Self {
        Param::Bool(v)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(v: Option<&'a str>) -> Self {
        v.map_or(Param::Null, Param::Text)
    }
}

/// The parameters of a statement: `args![a, b]` is `&[Param::from(a), ...]`.
macro_rules! args {
    ($($v:expr),* $(,)?) => { &[$($crate::db::Param::from($v)),*][..] };
}
pub(crate) use args;

/// A value read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer (booleans read as 0 and 1).
    Int(i64),
    /// Text.
    Text(String),
}

/// One row of a result.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

fn column_error(i: usize, wanted: &str, got: &Value) -> Error {
    Error::Storage(format!(
        "returned an unexpected value in column {i}: wanted {wanted}, got {got:?}"
    ))
}

impl Row {
    /// Column `i` as an integer, or `None` for NULL.
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.0.get(i) {
            Some(Value::Int(v)) => Ok(Some(*v)),
            Some(Value::Null) => Ok(None),
            other => Err(column_error(i, "an integer", other.unwrap_or(&Value::Null))),
        }
    }

    /// Column `i` as an integer.
    pub fn int(&self, i: usize) -> Result<i64> {
        self.opt_int(i)?
            .ok_or_else(|| column_error(i, "an integer", &Value::Null))
    }

    /// Column `i` as an unsigned 32-bit count (attempts).
    pub fn count(&self, i: usize) -> Result<u32> {
        let v = self.int(i)?;
        u32::try_from(v).map_err(|_| column_error(i, "a count", &Value::Int(v)))
    }

    /// Column `i` as text, or `None` for NULL.
    pub fn opt_text(&mut self, i: usize) -> Result<Option<String>> {
        match self.0.get_mut(i) {
            Some(Value::Text(v)) => Ok(Some(std::mem::take(v))),
            Some(Value::Null) => Ok(None),
            other => Err(column_error(i, "text", other.map_or(&Value::Null, |v| v))),
        }
    }

    /// Column `i` as text (taken out of the row).
    pub fn text(&mut self, i: usize) -> Result<String> {
        self.opt_text(i)?
            .ok_or_else(|| column_error(i, "text", &Value::Null))
    }
}

/// One open transaction on the engine's database.
pub trait Tx {
    /// Runs a statement; returns how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<usize>;

    /// Runs a query; returns its rows.
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>>;

    /// Takes this server's slot lock until the transaction ends, so that
    /// counting its slots and adding one is atomic. SQLite's write
    /// transactions already exclude each other; PostgreSQL takes an
    /// advisory lock. Call it before the transaction locks any endpoint's
    /// row (by counting, claiming or reserving), so that no two
    /// transactions wait for each other in a circle.
    fn lock_slots(&mut self, _server: &str) -> Result<()> {
        Ok(())
    }

    /// Takes the lock called `name` until the transaction ends, so that
    /// transactions taking it run one after another (PostgreSQL's advisory
    /// locks; SQLite's write transactions already do).
    fn lock_named(&mut self, _name: &str) -> Result<()> {
        Ok(())
    }

    /// Locks an endpoint's row before its next due time is computed from
    /// the queue, so the computation sees every task committed before it
    /// (PostgreSQL; SQLite's write transactions already exclude each other).
    fn lock_endpoint(&mut self, _site: &str, _endpoint: &str) -> Result<()> {
        Ok(())
    }

    /// Recomputes an endpoint's next due time and adds `delta` to its queued
    /// count as `due::recompute_next_due` does, in one round trip, where the
    /// backend can (PostgreSQL, with its session's function): the endpoint's
    /// row is then locked for that call and the commit only. False when it
    /// cannot: the caller then runs the statements.
    fn recompute_in_one_trip(&mut self, _site: &str, _endpoint: &str, _delta: i64) -> Result<bool> {
        Ok(false)
    }

    /// Reserves a slot of the locked `server` as `delivery::reserve` does,
    /// in one round trip, where the backend can (PostgreSQL, with its
    /// session's function): the slot and endpoint reserved, if any. `None`
    /// when it cannot, or when expired slots must be reaped first: the
    /// caller then runs the statements.
    fn reserve_in_one_trip(
        &mut self,
        _server: &str,
        _site: &str,
        _max_workers: u32,
        _busy: Option<&str>,
        _now: i64,
    ) -> Result<Option<Option<(String, String)>>> {
        Ok(None)
    }

    /// Whether a statement runs in this process, with no round trip
    /// (SQLite): then a cheap statement that may change nothing is worth
    /// trying before a dearer one.
    fn in_process(&self) -> bool {
        false
    }

    /// Whether the database counts finished tasks per site and state in
    /// `task_counts` (SQLite, schema 10: triggers keep it).
    fn counts_finished(&self) -> bool {
        false
    }
}

impl dyn Tx + '_ {
    /// The first row of a query, if any.
    pub fn row(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The first column of the first row of a query: an integer, `None`
    /// for no row or NULL.
    pub fn int(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<i64>> {
        match self.row(sql, params)? {
            Some(r) => r.opt_int(0),
            None => Ok(None),
        }
    }

    /// The first column of the first row of a query: text, `None` for no
    /// row or NULL.
    pub fn text(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<String>> {
        match self.row(sql, params)? {
            Some(mut r) => r.opt_text(0),
            None => Ok(None),
        }
    }
}
