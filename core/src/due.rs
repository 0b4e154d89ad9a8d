//! Each endpoint's row of the endpoints table: how many tasks it has
//! queued, when it is next due (what the dispatcher reads), and the backoff
//! after failed deliveries. Kept in step by `queue.rs` and `schedules.rs`.

use crate::clock::Millis;
use crate::db::{args, Tx};
use crate::error::Result;
use crate::task::clip_error;

/// Counts a task that became queued (`?1` site, `?2` endpoint, `?3` its
/// due time, `?4` the limit); see [`became_queued`].
pub(crate) const BECAME_QUEUED: &str =
    "INSERT INTO endpoints (site, endpoint, next_due, queued) VALUES (?1, ?2, ?3, 1)
     ON CONFLICT (site, endpoint) DO UPDATE SET queued = endpoints.queued + 1,
         next_due = CASE
             WHEN endpoints.retry_at > (CASE WHEN endpoints.next_due IS NULL
                     OR excluded.next_due < endpoints.next_due
                     THEN excluded.next_due ELSE endpoints.next_due END)
                 THEN endpoints.retry_at
             WHEN endpoints.next_due IS NULL OR excluded.next_due < endpoints.next_due
                 THEN excluded.next_due
             ELSE endpoints.next_due END
     WHERE endpoints.queued < ?4";

/// The text of [`COUNTED_QUEUED`] with `$and` added to its conditions
/// (parameters from `?5` on are the caller's).
macro_rules! counted_queued {
    ($and:literal) => {
        concat!(
            "UPDATE endpoints SET queued = queued + 1
     WHERE site = ?1 AND endpoint = ?2 AND queued < ?4
       AND ((next_due <= ?3 AND (retry_at IS NULL OR retry_at <= next_due))
            OR retry_at = next_due)",
            $and
        )
    };
}
pub(crate) use counted_queued;

/// [`BECAME_QUEUED`] where it would leave the due time as it is: the
/// endpoint is already due no later than the new task and no backoff holds
/// it past that, or a backoff holds it until its due time. Only the count
/// changes, so SQLite does not rewrite the endpoint's entry in
/// `endpoints_due` (a page less per `defer()`).
pub(crate) const COUNTED_QUEUED: &str = counted_queued!("");

/// Counts a task that became queued, due at `due_at`, on its endpoint: one
/// more queued, and the endpoint due no later than then (nor before a
/// delivery backoff ends). False, and nothing counted, when the endpoint
/// already holds `limit` queued tasks. The due time is written only when
/// it changes (on SQLite; a PostgreSQL round trip costs more than it saves).
pub(crate) fn became_queued(
    tx: &mut dyn Tx,
    site: &str,
    endpoint: &str,
    due_at: Millis,
    limit: i64,
) -> Result<bool> {
    let args = args![site, endpoint, due_at, limit];
    if tx.in_process() && tx.execute(COUNTED_QUEUED, args)? > 0 {
        return Ok(true);
    }
    Ok(tx.execute(BECAME_QUEUED, args)? > 0)
}

/// Sets the endpoint's next due time from its queue (NULL when empty; not
/// before a delivery backoff ends) and adds `delta` to its queued count (a
/// task claimed or cancelled: -1). An empty queue counts 0 whatever the
/// count said, so a count can never drift for long.
pub(crate) fn recompute_next_due(
    tx: &mut dyn Tx,
    site: &str,
    endpoint: &str,
    delta: i64,
) -> Result<()> {
    if tx.recompute_in_one_trip(site, endpoint, delta)? {
        return Ok(());
    }
    tx.lock_endpoint(site, endpoint)?;
    let due = earliest_due(tx, site, endpoint)?;
    tx.execute(SET_NEXT_DUE, args![site, endpoint, due, delta])?;
    Ok(())
}

/// SQL of [`recompute_next_due`]'s write: endpoint `?2` (site `?1`) next due
/// at `?3` (NULL: nothing queued), not before its backoff ends, with `?4`
/// added to its queued count.
pub(crate) const SET_NEXT_DUE: &str = "UPDATE endpoints SET
     next_due = CASE WHEN CAST(?3 AS BIGINT) IS NULL THEN NULL
                     WHEN retry_at > ?3 THEN retry_at ELSE ?3 END,
     queued = CASE WHEN CAST(?3 AS BIGINT) IS NULL OR queued + ?4 < 0 THEN 0
                   ELSE queued + ?4 END
 WHERE site = ?1 AND endpoint = ?2";

/// The earliest due time of an endpoint's queued tasks, None when it has
/// none. The claim index orders them by priority, then due time, so the
/// earliest is the first of some priority: one index seek per priority in
/// the queue, whatever its depth.
pub(crate) fn earliest_due(tx: &mut dyn Tx, site: &str, endpoint: &str) -> Result<Option<Millis>> {
    let (mut earliest, mut below) = (None::<Millis>, Millis::MAX);
    while let Some(row) = tx.row(EARLIEST_BELOW, args![site, endpoint, below])? {
        let (priority, due) = (row.int(0)?, row.int(1)?);
        earliest = Some(earliest.map_or(due, |e| e.min(due)));
        below = priority;
    }
    Ok(earliest)
}

/// SQL of [`earliest_due`]: the first queued task of endpoint `?2` (site
/// `?1`) in claim order among priorities below `?3`.
pub(crate) const EARLIEST_BELOW: &str = "SELECT priority, due_at FROM tasks INDEXED BY tasks_claim
     WHERE state = 'queued' AND site = ?1 AND endpoint = ?2 AND priority < ?3
     ORDER BY priority DESC, due_at LIMIT 1";

/// Records a failed delivery to an endpoint (its request never reached
/// `accept()`): the endpoint backs off (1 s, 2 s, 4 s, … up to
/// [`MAX_DELIVERY_BACKOFF_MS`]) and keeps the error; its tasks stay queued
/// with their attempts untouched. Returns the failures in a row and when
/// the next delivery is tried.
pub(crate) fn delivery_failed(
    tx: &mut dyn Tx,
    site: &str,
    endpoint: &str,
    reason: &str,
    now: Millis,
) -> Result<(i64, Millis)> {
    let failures = tx
        .int(
            "SELECT failures FROM endpoints WHERE site = ?1 AND endpoint = ?2",
            args![site, endpoint],
        )?
        .unwrap_or(0)
        + 1;
    let exp = (failures - 1).clamp(0, 20) as u32;
    let retry_at = now + (1000i64 << exp).min(MAX_DELIVERY_BACKOFF_MS);
    tx.execute(
        "UPDATE endpoints SET failures = ?3, retry_at = ?4, last_error = ?5
         WHERE site = ?1 AND endpoint = ?2",
        args![site, endpoint, failures, retry_at, &*clip_error(reason)],
    )?;
    recompute_next_due(tx, site, endpoint, 0)?;
    Ok((failures, retry_at))
}

/// Longest pause between deliveries to an endpoint that keeps failing.
pub const MAX_DELIVERY_BACKOFF_MS: Millis = 300_000;

/// Clears an endpoint's delivery failures: a request reached `accept()`.
pub(crate) fn delivered(tx: &mut dyn Tx, site: &str, endpoint: &str) -> Result<()> {
    tx.execute(
        "UPDATE endpoints SET failures = 0, retry_at = NULL, last_error = NULL
         WHERE site = ?1 AND endpoint = ?2 AND failures > 0",
        args![site, endpoint],
    )?;
    Ok(())
}

/// An endpoint whose deliveries are failing, as `stats()` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailingEndpoint {
    /// The endpoint's path.
    pub endpoint: String,
    /// Failed deliveries in a row.
    pub failures: i64,
    /// The last delivery's error.
    pub last_error: String,
    /// When the next delivery is tried.
    pub retry_at: Millis,
}

/// The endpoints of `site` whose last deliveries failed.
pub(crate) fn failing_endpoints(tx: &mut dyn Tx, site: &str) -> Result<Vec<FailingEndpoint>> {
    tx.query(
        "SELECT endpoint, failures, last_error, retry_at FROM endpoints
         WHERE site = ?1 AND failures > 0 ORDER BY endpoint LIMIT 100",
        args![site],
    )?
    .into_iter()
    .map(|mut r| {
        Ok(FailingEndpoint {
            endpoint: r.text(0)?,
            failures: r.int(1)?,
            last_error: r.opt_text(2)?.unwrap_or_default(),
            retry_at: r.opt_int(3)?.unwrap_or_default(),
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::Store;

    /// Counting without writing the due time ends exactly as
    /// [`BECAME_QUEUED`] alone does, in every state an endpoint can be in.
    #[test]
    fn counting_a_task_ends_as_the_full_statement_in_every_case() {
        let (dir, settings) = crate::store::sqlite::scratch("due");
        let mut store: Box<dyn Store> = Box::new(SqliteStore::open(&settings).unwrap());
        let times = [None, Some(100i64), Some(200), Some(300)];
        let mut cases = 0;
        for row in times
            .iter()
            .flat_map(|n| times.map(|r| Some((*n, r))))
            .chain([None])
        {
            for queued in [0i64, 4, 5] {
                for due in [100i64, 200, 300] {
                    let mut run = |fast: bool| {
                        store
                            .write(|tx| {
                                tx.execute("DELETE FROM endpoints", args![])?;
                                if let Some((next_due, retry_at)) = row {
                                    tx.execute(
                                        "INSERT INTO endpoints (site, endpoint, next_due, queued, retry_at)
                                         VALUES ('', '/e', ?1, ?2, ?3)",
                                        args![next_due, queued, retry_at],
                                    )?;
                                }
                                let counted = match fast {
                                    true => became_queued(tx, "", "/e", due, 5)?,
                                    false => tx.execute(BECAME_QUEUED, args!["", "/e", due, 5i64])? > 0,
                                };
                                let after = tx.row("SELECT next_due, queued, retry_at FROM endpoints", args![])?;
                                Ok((counted, after))
                            })
                            .unwrap()
                    };
                    let (fast, full) = (run(true), run(false));
                    assert_eq!(
                        fast, full,
                        "endpoint {row:?}, {queued} queued, task due at {due}"
                    );
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 17 * 3 * 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
