//! Per-endpoint task queues: every task state change, each inside the
//! caller's transaction.

use crate::clock::Millis;
use crate::error::{Error, Result};
use crate::retry::backoff_ms;
use crate::task::{clip_error, Claimed, State, TaskInfo};
use rusqlite::{params, OptionalExtension, Transaction};

/// A task to insert, already validated.
#[derive(Debug, Clone)]
pub struct NewTask<'a> {
    /// Endpoint path.
    pub endpoint: &'a str,
    /// Task name.
    pub name: &'a str,
    /// Args as JSON text.
    pub args: &'a str,
    /// Higher runs first.
    pub priority: i64,
    /// When it is due.
    pub due_at: Millis,
    /// Attempts before dead.
    pub max_attempts: u32,
    /// Lease in milliseconds.
    pub timeout: Millis,
    /// Deduplication key.
    pub unique: Option<&'a str>,
}

/// Inserts a task (or finds the live one with its unique key); returns its
/// id and whether it was created (false: the live task with that key).
pub(crate) fn insert(
    tx: &Transaction<'_>,
    id: &str,
    t: &NewTask<'_>,
    now: Millis,
) -> Result<(String, bool)> {
    if let Some(key) = t.unique {
        let existing: Option<String> = tx
            .prepare_cached(
                "SELECT id FROM tasks WHERE unique_key = ?1 AND state IN ('queued', 'running')",
            )?
            .query_row([key], |r| r.get(0))
            .optional()?;
        if let Some(id) = existing {
            return Ok((id, false));
        }
    }
    tx.prepare_cached(
        "INSERT INTO tasks (id, endpoint, name, args, state, priority, due_at, max_attempts,
                            timeout, unique_key, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
    )?
    .execute(params![
        id,
        t.endpoint,
        t.name,
        t.args,
        t.priority,
        t.due_at,
        t.max_attempts,
        t.timeout,
        t.unique,
        now
    ])?;
    lower_next_due(tx, t.endpoint, t.due_at)?;
    Ok((id.to_string(), true))
}

/// Makes the endpoint due no later than `due_at`.
pub(crate) fn lower_next_due(tx: &Transaction<'_>, endpoint: &str, due_at: Millis) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO endpoints (endpoint, next_due) VALUES (?1, ?2)
         ON CONFLICT (endpoint) DO UPDATE SET next_due = excluded.next_due
         WHERE next_due IS NULL OR excluded.next_due < next_due",
    )?
    .execute(params![endpoint, due_at])?;
    Ok(())
}

/// Sets the endpoint's next due time from its queue (NULL when empty).
pub(crate) fn recompute_next_due(tx: &Transaction<'_>, endpoint: &str) -> Result<()> {
    tx.prepare_cached(
        "UPDATE endpoints SET next_due =
            (SELECT min(due_at) FROM tasks WHERE state = 'queued' AND endpoint = ?1)
         WHERE endpoint = ?1",
    )?
    .execute([endpoint])?;
    Ok(())
}

/// SQL selecting `$cols` of an endpoint's next due task (`?1` the endpoint,
/// `?2` now), in the queue's one order: priority first, then due time.
/// Walks the claim index in that order and stops at the first due task;
/// left to itself SQLite picks the (endpoint, due_at) index and sorts every
/// due task, which made each claim cost grow with the queue's depth.
macro_rules! next_due_task {
    ($cols:literal) => {
        concat!(
            "SELECT ",
            $cols,
            " FROM tasks INDEXED BY tasks_claim
              WHERE state = 'queued' AND endpoint = ?1 AND due_at <= ?2
              ORDER BY priority DESC, due_at, id LIMIT 1"
        )
    };
}

/// Claims the endpoint's next due task (priority first, then due time) for
/// the request holding `slot`, under a lease.
pub(crate) fn claim(
    tx: &Transaction<'_>,
    endpoint: &str,
    slot: &str,
    now: Millis,
) -> Result<Option<Claimed>> {
    let row = tx
        .prepare_cached(next_due_task!("id, name, args, attempt, timeout"))?
        .query_row(params![endpoint, now], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, Millis>(4)?,
            ))
        })
        .optional()?;
    let Some((id, name, args, attempt, timeout)) = row else {
        recompute_next_due(tx, endpoint)?;
        return Ok(None);
    };
    let lease = crate::id::random_hex(16);
    let lease_until = now + timeout;
    tx.prepare_cached(
        "UPDATE tasks SET state = 'running', attempt = attempt + 1, lease = ?2, lease_until = ?3,
                          slot_id = ?4, started_at = ?5, updated_at = ?5
         WHERE id = ?1",
    )?
    .execute(params![id, lease, lease_until, slot, now])?;
    crate::slots::hold_until(tx, slot, lease_until)?;
    recompute_next_due(tx, endpoint)?;
    Ok(Some(Claimed {
        id,
        endpoint: endpoint.to_string(),
        name,
        args,
        attempt: attempt + 1,
        lease,
    }))
}

/// The error for an operation on a task this request no longer holds.
fn not_held(tx: &Transaction<'_>, id: &str) -> Result<Error> {
    let state: Option<String> = tx
        .prepare_cached("SELECT state FROM tasks WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(Error::NotHeld(match state {
        None => format!("task {id} does not exist (it was purged)"),
        Some(s) => format!(
            "task {id} is not held by this request any more (it is {s}: it was already \
             completed or failed, or its lease expired and it was reaped)"
        ),
    }))
}

/// Marks a running task held under `lease` as done.
pub(crate) fn complete(tx: &Transaction<'_>, id: &str, lease: &str, now: Millis) -> Result<()> {
    let n = tx
        .prepare_cached(
            "UPDATE tasks SET state = 'done', lease = NULL, lease_until = NULL, slot_id = NULL,
                              finished_at = ?3, updated_at = ?3
             WHERE id = ?1 AND state = 'running' AND lease = ?2",
        )?
        .execute(params![id, lease, now])?;
    if n == 0 {
        return Err(not_held(tx, id)?);
    }
    Ok(())
}

/// Fails a running task: back to the queue after a backoff (or `retry_in`
/// ms), or dead once its attempts are spent. Returns the new state.
/// `lease` of `None` fails whatever holds it (reaping).
pub(crate) fn fail(
    tx: &Transaction<'_>,
    id: &str,
    lease: Option<&str>,
    error: &str,
    retry_in: Option<Millis>,
    now: Millis,
) -> Result<State> {
    let row = tx
        .prepare_cached(
            "SELECT endpoint, attempt, max_attempts FROM tasks
             WHERE id = ?1 AND state = 'running' AND (?2 IS NULL OR lease = ?2)",
        )?
        .query_row(params![id, lease], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, u32>(2)?,
            ))
        })
        .optional()?;
    let Some((endpoint, attempt, max_attempts)) = row else {
        return Err(not_held(tx, id)?);
    };
    let failed = Attempt {
        id,
        endpoint: &endpoint,
        number: attempt,
        max_attempts,
    };
    record_failure(tx, &failed, error, retry_in, now)
}

/// A task's failed attempt.
struct Attempt<'a> {
    id: &'a str,
    endpoint: &'a str,
    /// The attempt's number, from 1.
    number: u32,
    max_attempts: u32,
}

/// Records a failed attempt with `error`: the task is dead once its
/// attempts are spent, else queued again after `retry_in` ms (default:
/// exponential backoff). Returns the new state.
fn record_failure(
    tx: &Transaction<'_>,
    a: &Attempt<'_>,
    error: &str,
    retry_in: Option<Millis>,
    now: Millis,
) -> Result<State> {
    let error = clip_error(error);
    if a.number >= a.max_attempts {
        tx.prepare_cached(
            "UPDATE tasks SET state = 'dead', attempt = ?2, last_error = ?3, lease = NULL,
                              lease_until = NULL, slot_id = NULL, finished_at = ?4, updated_at = ?4
             WHERE id = ?1",
        )?
        .execute(params![a.id, a.number, error, now])?;
        return Ok(State::Dead);
    }
    let due = now + retry_in.unwrap_or_else(|| backoff_ms(a.number, crate::id::random_unit()));
    tx.prepare_cached(
        "UPDATE tasks SET state = 'queued', attempt = ?2, last_error = ?3, lease = NULL,
                          lease_until = NULL, slot_id = NULL, due_at = ?4, updated_at = ?5
         WHERE id = ?1",
    )?
    .execute(params![a.id, a.number, error, due, now])?;
    lower_next_due(tx, a.endpoint, due)?;
    Ok(State::Queued)
}

/// Records a failed delivery on the endpoint's next due task: the request
/// meant to run it never reached `accept()`. The attempt counts; the task
/// retries after a backoff, or is dead once its attempts are spent.
pub(crate) fn fail_delivery(
    tx: &Transaction<'_>,
    endpoint: &str,
    reason: &str,
    now: Millis,
) -> Result<()> {
    let row = tx
        .prepare_cached(next_due_task!("id, attempt, max_attempts"))?
        .query_row(params![endpoint, now], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)? + 1,
                r.get::<_, u32>(2)?,
            ))
        })
        .optional()?;
    if let Some((id, number, max_attempts)) = row {
        let failed = Attempt {
            id: &id,
            endpoint,
            number,
            max_attempts,
        };
        record_failure(tx, &failed, reason, None, now)?;
    }
    Ok(())
}

/// Lengthens the lease of a running task held under `lease` to end
/// `seconds_ms` from now (a lease is never shortened).
pub(crate) fn extend(
    tx: &Transaction<'_>,
    id: &str,
    lease: &str,
    ms: Millis,
    now: Millis,
) -> Result<()> {
    let until = now + ms;
    let slot: Option<Option<String>> = tx
        .prepare_cached(
            "UPDATE tasks SET lease_until = max(lease_until, ?3), updated_at = ?4
             WHERE id = ?1 AND state = 'running' AND lease = ?2 RETURNING slot_id",
        )?
        .query_row(params![id, lease, until, now], |r| r.get(0))
        .optional()?;
    match slot {
        None => Err(not_held(tx, id)?),
        Some(slot) => {
            if let Some(slot) = slot {
                crate::slots::hold_until(tx, &slot, until)?;
            }
            Ok(())
        }
    }
}

/// Cancels a queued task, or gives up on a dead one (which then goes with
/// retention like any cancelled task); false if it is neither.
pub(crate) fn cancel(tx: &Transaction<'_>, id: &str, now: Millis) -> Result<bool> {
    let endpoint: Option<String> = tx
        .prepare_cached(
            "UPDATE tasks SET state = 'cancelled', finished_at = ?2, updated_at = ?2
             WHERE id = ?1 AND state IN ('queued', 'dead') RETURNING endpoint",
        )?
        .query_row(params![id, now], |r| r.get(0))
        .optional()?;
    match endpoint {
        Some(e) => {
            recompute_next_due(tx, &e)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Puts a dead task back in the queue, due now, with a fresh set of
/// attempts; false if it is not dead. Returns its endpoint when requeued.
pub(crate) fn retry(tx: &Transaction<'_>, id: &str, now: Millis) -> Result<Option<String>> {
    let endpoint: Option<String> = tx
        .prepare_cached(
            "UPDATE tasks SET state = 'queued', attempt = 0, due_at = ?2, finished_at = NULL,
                              updated_at = ?2
             WHERE id = ?1 AND state = 'dead' RETURNING endpoint",
        )?
        .query_row(params![id, now], |r| r.get(0))
        .optional()?;
    if let Some(e) = &endpoint {
        lower_next_due(tx, e, now)?;
    }
    Ok(endpoint)
}

/// Fails every running task whose lease ended before `now`; returns how many.
pub(crate) fn reap_leases(tx: &Transaction<'_>, now: Millis) -> Result<usize> {
    let expired: Vec<(String, Millis)> = tx
        .prepare_cached(
            "SELECT id, timeout FROM tasks WHERE state = 'running' AND lease_until < ?1 LIMIT 1000",
        )?
        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, timeout) in &expired {
        let error = format!(
            "lease expired: no complete() or fail() within {} s (the request running it \
             died, hung or was killed; raise the 'timeout' option or call extend())",
            crate::clock::ms_to_secs(*timeout)
        );
        fail(tx, id, None, &error, None, now)?;
    }
    Ok(expired.len())
}

/// Deletes up to `?3` done and cancelled tasks (and dead ones when `?2`)
/// that finished at or before `?1`. INDEXED BY: with `?2` a parameter SQLite
/// would otherwise OR two scans of the state index and read every done task
/// at the end of every request.
const PURGE: &str = "DELETE FROM tasks WHERE id IN (
    SELECT id FROM tasks INDEXED BY tasks_finished WHERE finished_at <= ?1
      AND (state IN ('done', 'cancelled') OR (?2 AND state = 'dead'))
    LIMIT ?3)";

/// Deletes up to `limit` done and cancelled tasks that finished at or before
/// `before`; returns how many. Dead tasks are kept until retried or purged
/// with `dead` set.
pub(crate) fn purge(tx: &Transaction<'_>, before: Millis, dead: bool, limit: u32) -> Result<usize> {
    let n = tx
        .prepare_cached(PURGE)?
        .execute(params![before, dead, limit])?;
    Ok(n)
}

const INFO_COLUMNS: &str = "id, endpoint, name, args, state, priority, attempt, max_attempts,
    timeout, unique_key, due_at, created_at, updated_at, started_at, finished_at, lease_until,
    last_error";

fn info_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskInfo> {
    let state: String = r.get(4)?;
    Ok(TaskInfo {
        id: r.get(0)?,
        endpoint: r.get(1)?,
        name: r.get(2)?,
        args: r.get(3)?,
        state: State::parse(&state).unwrap_or(State::Queued),
        priority: r.get(5)?,
        attempt: r.get(6)?,
        max_attempts: r.get(7)?,
        timeout: r.get(8)?,
        unique: r.get(9)?,
        due_at: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
        started_at: r.get(13)?,
        finished_at: r.get(14)?,
        lease_until: r.get(15)?,
        last_error: r.get(16)?,
    })
}

/// One task's record.
pub(crate) fn status(tx: &Transaction<'_>, id: &str) -> Result<Option<TaskInfo>> {
    let sql = format!("SELECT {INFO_COLUMNS} FROM tasks WHERE id = ?1");
    Ok(tx
        .prepare_cached(&sql)?
        .query_row([id], info_from_row)
        .optional()?)
}

/// SQL of [`list`]: `?1` the state, `?2` the limit.
fn list_sql() -> String {
    format!("SELECT {INFO_COLUMNS} FROM tasks WHERE state = ?1 ORDER BY id DESC LIMIT ?2")
}

/// Tasks in `state`, newest first, at most `limit`.
pub(crate) fn list(tx: &Transaction<'_>, state: State, limit: u32) -> Result<Vec<TaskInfo>> {
    let sql = list_sql();
    let rows = tx
        .prepare_cached(&sql)?
        .query_map(params![state.as_str(), limit], info_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Tasks that finished `done` and `dead` per `bucket` milliseconds since
/// `since`, as (bucket start, done, dead), only for buckets with any.
pub(crate) fn finished_per_bucket(
    tx: &Transaction<'_>,
    since: Millis,
    bucket: Millis,
) -> Result<Vec<(Millis, i64, i64)>> {
    let rows = tx
        .prepare_cached(
            "SELECT (finished_at / ?2) * ?2 AS b, sum(state = 'done'), sum(state = 'dead')
             FROM tasks WHERE finished_at >= ?1 GROUP BY b ORDER BY b",
        )?
        .query_map(params![since, bucket], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Task counts per state.
pub(crate) type Counts = Vec<(State, i64)>;

/// Task counts per state, the earliest due time of any queued task.
pub(crate) fn counts(tx: &Transaction<'_>) -> Result<(Counts, Option<Millis>)> {
    let mut counts: Vec<(State, i64)> = State::ALL.iter().map(|s| (*s, 0)).collect();
    let mut stmt = tx.prepare_cached("SELECT state, count(*) FROM tasks GROUP BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (state, n) = row?;
        if let Some(slot) = counts.iter_mut().find(|(s, _)| s.as_str() == state) {
            slot.1 = n;
        }
    }
    // Per endpoint through the (endpoint, due_at) index: cheap at any depth.
    let next_due: Option<Millis> = tx
        .prepare_cached(
            "SELECT min((SELECT min(due_at) FROM tasks
                         WHERE state = 'queued' AND tasks.endpoint = endpoints.endpoint))
             FROM endpoints",
        )?
        .query_row([], |r| r.get(0))?;
    Ok((counts, next_due))
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    /// SQLite's plan for `sql` on the schema, parameters bound (plans with
    /// literals can differ).
    fn plan(sql: &str, params: usize) -> String {
        let conn = Connection::open_in_memory().unwrap();
        for migration in crate::store::MIGRATIONS {
            conn.execute_batch(migration).unwrap();
        }
        let values = vec![rusqlite::types::Value::Integer(0); params];
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(values), |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap();
        rows.join("\n")
    }

    /// The claim walks its index however deep the queue: no sort of the due tasks.
    #[test]
    fn the_claim_query_walks_the_claim_index_without_sorting() {
        let plan = plan(next_due_task!("id, name, args, attempt, timeout"), 2);
        assert!(plan.contains("USING INDEX tasks_claim"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    /// A state's newest tasks come from the index, not from sorting them all.
    #[test]
    fn listing_a_state_walks_the_state_index_without_sorting() {
        let plan = plan(&super::list_sql(), 2);
        assert!(plan.contains("USING INDEX tasks_state (state=?)"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    /// Retention purge at every request's end reads only tasks old enough,
    /// not every finished task.
    #[test]
    fn the_purge_query_walks_the_finished_index() {
        let plan = plan(super::PURGE, 3);
        assert!(
            plan.contains("USING INDEX tasks_finished (finished_at<?)"),
            "{plan}"
        );
        assert!(!plan.contains("tasks_state"), "{plan}");
    }
}
