//! The statements prepared on a SQLite connection, each once, found again
//! by their text with a cheap hash. rusqlite's own cache hashes a text
//! twice with SipHash and copies it at every use: about 0.6 µs for a
//! 600-byte statement, several per transaction (see docs/architecture.md,
//! "Prepared statements").

use rusqlite::{Connection, PrepFlags, Statement};
use rustc_hash::FxHashMap;

/// Most statements kept. The engine's texts are constants, and a few are
/// built from a state's name; should more ever appear, all are dropped and
/// prepared again as they are used.
const MAX_KEPT: usize = 128;

/// The statements prepared on one connection, by their text.
#[derive(Default)]
pub(crate) struct Statements<'c>(FxHashMap<Box<str>, Statement<'c>>);

impl<'c> Statements<'c> {
    /// The statement for `sql`, prepared on `conn` the first time it is
    /// asked for. rusqlite resets a statement after each use and binds
    /// every parameter at the next, so nothing of one use reaches another.
    pub(crate) fn get(
        &mut self,
        conn: &'c Connection,
        sql: &str,
    ) -> rusqlite::Result<&mut Statement<'c>> {
        if !self.0.contains_key(sql) {
            if self.0.len() >= MAX_KEPT {
                self.0.clear();
            }
            let stmt = conn.prepare_with_flags(sql, PrepFlags::SQLITE_PREPARE_PERSISTENT)?;
            self.0.insert(sql.into(), stmt);
        }
        Ok(self.0.get_mut(sql).expect("prepared above"))
    }
}

self_cell::self_cell!(
    /// A connection and the statements prepared on it (dropped first, so
    /// the connection closes with none left open).
    pub(crate) struct Prepared {
        owner: Connection,
        #[not_covariant]
        dependent: Statements,
    }
);

// SAFETY: a connection is `Send` and its statements point only into it; the
// two move between threads together and are used through `&mut` by one
// thread at a time, as rusqlite's own statement cache is (it is `Send` on
// the same grounds).
unsafe impl Send for Prepared {}

impl Prepared {
    /// `conn`, with no statement prepared yet.
    pub(crate) fn of(conn: Connection) -> Prepared {
        Prepared::new(conn, |_| Statements::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_is_prepared_once_and_rebound_at_each_use() {
        let mut prepared = Prepared::of(Connection::open_in_memory().unwrap());
        prepared.with_dependent_mut(|conn, statements| {
            conn.execute_batch("CREATE TABLE t (a INTEGER)").unwrap();
            let sql = "INSERT INTO t (a) VALUES (?1)";
            for a in 1..=3 {
                statements.get(conn, sql).unwrap().execute([a]).unwrap();
            }
            assert_eq!(statements.0.len(), 1);
            let sum = "SELECT sum(a) FROM t WHERE a >= ?1";
            let mut read = |from: i64| -> i64 {
                let stmt = statements.get(conn, sum).unwrap();
                stmt.query_row([from], |r| r.get(0)).unwrap()
            };
            assert_eq!(read(1), 6);
            assert_eq!(read(3), 3);
        });
    }

    #[test]
    fn past_the_limit_all_are_dropped_and_prepared_again() {
        let mut prepared = Prepared::of(Connection::open_in_memory().unwrap());
        prepared.with_dependent_mut(|conn, statements| {
            for i in 0..MAX_KEPT + 1 {
                let sql = format!("SELECT {i}");
                let got: i64 = statements
                    .get(conn, &sql)
                    .unwrap()
                    .query_row([], |r| r.get(0))
                    .unwrap();
                assert_eq!(got, i as i64);
            }
            assert_eq!(statements.0.len(), 1);
        });
    }

    #[test]
    fn a_text_that_does_not_parse_is_an_error_and_keeps_nothing() {
        let mut prepared = Prepared::of(Connection::open_in_memory().unwrap());
        prepared.with_dependent_mut(|conn, statements| {
            assert!(statements.get(conn, "SELEC 1").is_err());
            assert!(statements.0.is_empty());
        });
    }
}
