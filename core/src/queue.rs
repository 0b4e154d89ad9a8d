//! Per-endpoint task queues: every task state change, each inside the
//! caller's transaction.

use crate::clock::Millis;
use crate::db::{args, Row, Tx};
use crate::due::{became_queued, recompute_next_due};
use crate::error::{Error, Result};
use crate::retry::backoff_ms;
use crate::schedules;
use crate::task::{clip_error, Claimed, State, TaskInfo};

/// A task to insert, already validated.
#[derive(Debug, Clone)]
pub struct NewTask<'a> {
    /// The site it belongs to (see the `site` setting).
    pub site: &'a str,
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

/// Inserts a queued task: `?1` id, `?2` endpoint, `?3` name, `?4` args,
/// `?5` priority, `?6` due time, `?7` max attempts, `?8` timeout, `?9`
/// unique key, `?10` now, `?11` site. A live task holding the unique key
/// makes it insert nothing.
pub(crate) const INSERT_TASK: &str =
    "INSERT INTO tasks (id, site, endpoint, name, args, state, priority, due_at,
                        max_attempts, timeout, unique_key, created_at, updated_at)
     VALUES (?1, ?11, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8, ?9, ?10, ?10)
     ON CONFLICT (site, unique_key)
         WHERE unique_key IS NOT NULL AND state IN ('queued', 'running')
         DO NOTHING";

/// The live task of `site` holding `unique`, if any.
fn live_unique(tx: &mut dyn Tx, site: &str, unique: Option<&str>) -> Result<Option<String>> {
    tx.text(
        "SELECT id FROM tasks
         WHERE site = ?1 AND unique_key = ?2 AND state IN ('queued', 'running')",
        args![site, unique],
    )
}

/// Inserts a task (or finds the live one with its unique key); returns its
/// id and whether it was created (false: the live task with that key).
/// A QueueFull error, and nothing stored, when its endpoint already holds
/// `max_queued` queued tasks.
pub(crate) fn insert(
    tx: &mut dyn Tx,
    id: &str,
    t: &NewTask<'_>,
    max_queued: u64,
    now: Millis,
) -> Result<(String, bool)> {
    let (id, created) = insert_uncounted(tx, id, t, now)?;
    if created {
        count_queued(tx, t, max_queued)?;
    }
    Ok((id, created))
}

/// [`insert`] but for the count: a created task must be counted on its
/// endpoint in the same transaction, by [`count_queued`] or a statement
/// that ends as it does.
pub(crate) fn insert_uncounted(
    tx: &mut dyn Tx,
    id: &str,
    t: &NewTask<'_>,
    now: Millis,
) -> Result<(String, bool)> {
    // A live task with the same unique key makes the insert do nothing (the
    // partial unique index decides, so two processes cannot both insert);
    // that task is returned instead. Should it finish between the two
    // statements (PostgreSQL), the insert is tried again.
    let mut tries = 0;
    loop {
        let inserted = tx.execute(
            INSERT_TASK,
            args![
                id,
                t.endpoint,
                t.name,
                t.args,
                t.priority,
                t.due_at,
                t.max_attempts,
                t.timeout,
                t.unique,
                now,
                t.site
            ],
        )?;
        if inserted > 0 {
            break;
        }
        if let Some(existing) = live_unique(tx, t.site, t.unique)? {
            return Ok((existing, false));
        }
        tries += 1;
        if tries == 3 {
            return Err(Error::Storage(format!(
                "kept refusing task {id} with unique key {:?} although no live task holds it",
                t.unique
            )));
        }
    }
    Ok((id.to_string(), true))
}

/// Counts a task just inserted on its endpoint, by the same statement that
/// lowers the due time; a full queue refuses the count with a QueueFull
/// error, which rolls the whole transaction back.
pub(crate) fn count_queued(tx: &mut dyn Tx, t: &NewTask<'_>, max_queued: u64) -> Result<()> {
    match became_queued(tx, t.site, t.endpoint, t.due_at, max_queued as i64)? {
        true => Ok(()),
        false => Err(queue_full(t.endpoint, max_queued)),
    }
}

/// The error of a task refused because `endpoint`'s queue is full.
pub(crate) fn queue_full(endpoint: &str, max_queued: u64) -> Error {
    Error::QueueFull(format!(
        "the queue of {endpoint} already holds {max_queued} queued tasks, the limit (setting \
         max_queued); nothing was stored"
    ))
}

/// SQL selecting `$cols` of an endpoint's next due task (`?1` the endpoint,
/// `?2` now, `?3` the site), in the queue's one order: priority first, then due time.
/// On PostgreSQL the row is locked, and tasks other servers are claiming
/// are passed by (`SKIP LOCKED`). On SQLite the query
/// walks the claim index in that order and stops at the first due task;
/// left to itself SQLite picks the (endpoint, due_at) index and sorts every
/// due task, which made each claim cost grow with the queue's depth.
macro_rules! next_due_task {
    ($cols:literal) => {
        concat!(
            "SELECT ",
            $cols,
            " FROM tasks INDEXED BY tasks_claim
              WHERE state = 'queued' AND site = ?3 AND endpoint = ?1 AND due_at <= ?2
              ORDER BY priority DESC, due_at, id LIMIT 1 /*skip locked*/"
        )
    };
}

/// How many of `site`'s `endpoint`'s queued tasks are due at `now`,
/// counting at most `limit` (the claim index is walked no further).
pub(crate) fn due_count(
    tx: &mut dyn Tx,
    site: &str,
    endpoint: &str,
    limit: i64,
    now: Millis,
) -> Result<i64> {
    Ok(tx
        .int(DUE_COUNT, args![site, endpoint, now, limit])?
        .unwrap_or(0))
}

/// How many of site `?1`'s endpoint `?2`'s tasks are due at `?3`, counted
/// no further than `?4`.
pub(crate) const DUE_COUNT: &str =
    "SELECT count(*) FROM (SELECT 1 FROM tasks INDEXED BY tasks_claim
                WHERE state = 'queued' AND site = ?1 AND endpoint = ?2 AND due_at <= ?3
                LIMIT ?4) AS due";

/// Claims the endpoint's next due tasks (priority first, then due time),
/// up to `max`, for the request holding `slot`, each under a lease. A
/// schedule's pending occurrence queues the schedule's next one in the same
/// transaction, or is skipped (cancelled, with the reason) when its schedule
/// says so. The first task's lease runs its timeout; the others' run
/// `head_start` ms longer (they wait for the ones before them). The
/// endpoint's next due time and the slot's hold are written once.
pub(crate) fn claim(
    tx: &mut dyn Tx,
    site: &str,
    endpoint: &str,
    slot: &str,
    max: usize,
    head_start: Millis,
    now: Millis,
) -> Result<Vec<Claimed>> {
    let mut claimed: Vec<Claimed> = Vec::new();
    while claimed.len() < max {
        let row = tx.row(
            next_due_task!(
                "id, name, args, attempt, timeout, schedule, scheduled_at, started_at IS NULL"
            ),
            args![endpoint, now, site],
        )?;
        let Some(mut row) = row else {
            break;
        };
        let (id, name, args, attempt, timeout) = (
            row.text(0)?,
            row.text(1)?,
            row.text(2)?,
            row.count(3)?,
            row.int(4)?,
        );
        // A schedule's occurrence starting for the first time.
        let occurrence = match (row.opt_text(5)?, row.opt_int(6)?, row.int(7)? != 0) {
            (Some(schedule), Some(at), true) => {
                schedules::decide(tx, site, &schedule, &id, at, now)?.map(|d| (schedule, d))
            }
            _ => None,
        };
        if let Some((schedule, decision)) = &occurrence {
            if let Some(reason) = &decision.skip {
                tx.execute(
                    "UPDATE tasks SET state = 'cancelled', last_error = ?2, finished_at = ?3,
                                      updated_at = ?3
                     WHERE id = ?1",
                    args![&id, reason, now],
                )?;
                recompute_next_due(tx, site, endpoint, -1)?;
                schedules::advance(tx, site, schedule, decision, now)?;
                continue;
            }
        }
        let lease = crate::id::random_hex(16);
        let wait = if claimed.is_empty() { 0 } else { head_start };
        let lease_until = now + timeout + wait;
        tx.execute(
            "UPDATE tasks SET state = 'running', attempt = attempt + 1, lease = ?2, lease_until = ?3,
                              slot_id = ?4, started_at = ?5, updated_at = ?5
             WHERE id = ?1",
            args![&id, &lease, lease_until, slot, now],
        )?;
        if let Some((schedule, decision)) = &occurrence {
            schedules::advance(tx, site, schedule, decision, now)?;
        }
        claimed.push(Claimed {
            id,
            endpoint: endpoint.to_string(),
            name,
            args,
            attempt: attempt + 1,
            lease,
            timeout,
            lease_until,
        });
    }
    if let Some(until) = claimed.iter().map(|c| c.lease_until).max() {
        crate::slots::hold_until(tx, slot, until)?;
    }
    recompute_next_due(tx, site, endpoint, -(claimed.len() as i64))?;
    Ok(claimed)
}

/// Puts a task claimed ahead that never started back in the queue as it
/// was: its attempt unspent, its due time unchanged. Nothing happens when
/// `task`'s lease no longer holds it (reaped meanwhile).
pub(crate) fn give_back(tx: &mut dyn Tx, site: &str, task: &Claimed, now: Millis) -> Result<()> {
    let due = tx.int(
        "UPDATE tasks SET state = 'queued', attempt = attempt - 1, lease = NULL,
                          lease_until = NULL, slot_id = NULL, updated_at = ?3
         WHERE id = ?1 AND state = 'running' AND lease = ?2 RETURNING due_at",
        args![&task.id, &task.lease, now],
    )?;
    if let Some(due) = due {
        // A task that was queued before is never refused a place back.
        became_queued(tx, site, &task.endpoint, due, i64::MAX)?;
    }
    Ok(())
}

/// The error for an operation on a task this request no longer holds.
fn not_held(tx: &mut dyn Tx, id: &str) -> Result<Error> {
    let state = tx.text("SELECT state FROM tasks WHERE id = ?1", args![id])?;
    Ok(Error::NotHeld(match state {
        None => format!("task {id} does not exist (it was purged)"),
        Some(s) => format!(
            "task {id} is not held by this request any more (it is {s}: it was already \
             completed or failed, or its lease expired and it was reaped)"
        ),
    }))
}

/// Whether task `id` is running under `lease` (held by the caller).
pub(crate) fn holds(tx: &mut dyn Tx, id: &str, lease: &str) -> Result<bool> {
    Ok(tx.int(
        "SELECT count(*) FROM tasks WHERE id = ?1 AND state = 'running' AND lease = ?2",
        args![id, lease],
    )? > Some(0))
}

/// Marks a running task held under `lease` as done.
pub(crate) fn complete(tx: &mut dyn Tx, id: &str, lease: &str, now: Millis) -> Result<()> {
    let n = tx.execute(
        "UPDATE tasks SET state = 'done', lease = NULL, lease_until = NULL, slot_id = NULL,
                          finished_at = ?3, updated_at = ?3
         WHERE id = ?1 AND state = 'running' AND lease = ?2",
        args![id, lease, now],
    )?;
    if n == 0 {
        return Err(not_held(tx, id)?);
    }
    Ok(())
}

/// Fails a running task: back to the queue after a backoff (or `retry_in`
/// ms), or dead once its attempts are spent. Returns the new state.
/// `lease` of `None` fails whatever holds it (reaping).
pub(crate) fn fail(
    tx: &mut dyn Tx,
    id: &str,
    lease: Option<&str>,
    error: &str,
    retry_in: Option<Millis>,
    now: Millis,
) -> Result<State> {
    // Reaping (no lease) takes whatever holds the task.
    let row = match lease {
        Some(lease) => tx.row(
            "SELECT endpoint, attempt, max_attempts, site FROM tasks
             WHERE id = ?1 AND state = 'running' AND lease = ?2",
            args![id, lease],
        )?,
        None => tx.row(
            "SELECT endpoint, attempt, max_attempts, site FROM tasks
             WHERE id = ?1 AND state = 'running'",
            args![id],
        )?,
    };
    let Some(mut row) = row else {
        return Err(not_held(tx, id)?);
    };
    let (endpoint, attempt, max_attempts) = (row.text(0)?, row.count(1)?, row.count(2)?);
    let site = row.text(3)?;
    let failed = Attempt {
        id,
        site: &site,
        endpoint: &endpoint,
        number: attempt,
        max_attempts,
    };
    record_failure(tx, &failed, error, retry_in, now)
}

/// A task's failed attempt.
struct Attempt<'a> {
    id: &'a str,
    site: &'a str,
    endpoint: &'a str,
    /// The attempt's number, from 1.
    number: u32,
    max_attempts: u32,
}

/// Records a failed attempt with `error`: the task is dead once its
/// attempts are spent, else queued again after `retry_in` ms (default:
/// exponential backoff). Returns the new state.
fn record_failure(
    tx: &mut dyn Tx,
    a: &Attempt<'_>,
    error: &str,
    retry_in: Option<Millis>,
    now: Millis,
) -> Result<State> {
    let error = clip_error(error);
    if a.number >= a.max_attempts {
        tx.execute(
            "UPDATE tasks SET state = 'dead', attempt = ?2, last_error = ?3, lease = NULL,
                              lease_until = NULL, slot_id = NULL, finished_at = ?4, updated_at = ?4
             WHERE id = ?1",
            args![a.id, a.number, &*error, now],
        )?;
        crate::log::emit(format!(
            "task {} at {} is dead after {} attempt(s): {error}",
            a.id, a.endpoint, a.number
        ));
        return Ok(State::Dead);
    }
    let due = now + retry_in.unwrap_or_else(|| backoff_ms(a.number, crate::id::random_unit()));
    tx.execute(
        "UPDATE tasks SET state = 'queued', attempt = ?2, last_error = ?3, lease = NULL,
                          lease_until = NULL, slot_id = NULL, due_at = ?4, updated_at = ?5
         WHERE id = ?1",
        args![a.id, a.number, &*error, due, now],
    )?;
    // A task that was queued before is never refused a place back.
    became_queued(tx, a.site, a.endpoint, due, i64::MAX)?;
    Ok(State::Queued)
}

/// Lengthens the lease of a running task held under `lease` to end
/// `seconds_ms` from now (a lease is never shortened).
pub(crate) fn extend(
    tx: &mut dyn Tx,
    id: &str,
    lease: &str,
    ms: Millis,
    now: Millis,
) -> Result<()> {
    let until = now + ms;
    let row = tx.row(
        "UPDATE tasks SET updated_at = ?4,
                          lease_until = CASE WHEN lease_until > ?3 THEN lease_until ELSE ?3 END
         WHERE id = ?1 AND state = 'running' AND lease = ?2 RETURNING slot_id",
        args![id, lease, until, now],
    )?;
    let Some(mut row) = row else {
        return Err(not_held(tx, id)?);
    };
    if let Some(slot) = row.opt_text(0)? {
        crate::slots::hold_until(tx, &slot, until)?;
    }
    Ok(())
}

/// Cancels a queued task, or gives up on a dead one (which then goes with
/// retention like any cancelled task); false if it is neither.
pub(crate) fn cancel(tx: &mut dyn Tx, site: &str, id: &str, now: Millis) -> Result<bool> {
    let Some(mut row) = tx.row(
        "SELECT state, endpoint, schedule, scheduled_at, started_at IS NULL FROM tasks
         WHERE id = ?1 AND site = ?2 AND state IN ('queued', 'dead')",
        args![id, site],
    )?
    else {
        return Ok(false);
    };
    let (state, endpoint) = (row.text(0)?, row.text(1)?);
    let pending_occurrence = match (row.opt_text(2)?, row.opt_int(3)?, row.int(4)? != 0) {
        (Some(schedule), Some(at), true) if state == "queued" => Some((schedule, at)),
        _ => None,
    };
    tx.execute(
        "UPDATE tasks SET state = 'cancelled', finished_at = ?2, updated_at = ?2 WHERE id = ?1",
        args![id, now],
    )?;
    if state == "queued" {
        recompute_next_due(tx, site, &endpoint, -1)?;
    }
    // Cancelling a schedule's pending occurrence skips it; the schedule goes on.
    if let Some((schedule, at)) = pending_occurrence {
        schedules::cancelled(tx, site, &schedule, at, now)?;
    }
    Ok(true)
}

/// Puts a dead task back in the queue, due now, with a fresh set of
/// attempts; false if it is not dead. Returns its endpoint when requeued.
pub(crate) fn retry(tx: &mut dyn Tx, site: &str, id: &str, now: Millis) -> Result<Option<String>> {
    let endpoint = tx.text(
        "UPDATE tasks SET state = 'queued', attempt = 0, due_at = ?2, finished_at = NULL,
                          updated_at = ?2
         WHERE id = ?1 AND site = ?3 AND state = 'dead' RETURNING endpoint",
        args![id, now, site],
    )?;
    if let Some(e) = &endpoint {
        became_queued(tx, site, e, now, i64::MAX)?;
    }
    Ok(endpoint)
}

/// Running tasks whose lease ended before `?1`, found through the state
/// index (running tasks are few). Tasks another server is reaping or
/// finishing right now are passed by.
const REAP: &str = "SELECT id, timeout FROM tasks INDEXED BY tasks_state
     WHERE state = 'running' AND state <> 'queued' AND lease_until < ?1
     LIMIT 1000 /*skip locked*/";

/// Fails every task running under `slot` (a request whose worker died)
/// with `error`, as if its lease had ended; returns how many.
pub(crate) fn fail_running_under(
    tx: &mut dyn Tx,
    slot: &str,
    error: &str,
    now: Millis,
) -> Result<usize> {
    let running = tx.query(
        "SELECT id FROM tasks INDEXED BY tasks_state
         WHERE state = 'running' AND state <> 'queued' AND slot_id = ?1",
        args![slot],
    )?;
    let n = running.len();
    for mut row in running {
        fail(tx, &row.text(0)?, None, error, None, now)?;
    }
    Ok(n)
}

/// Fails every running task whose lease ended before `now`; returns how many.
pub(crate) fn reap_leases(tx: &mut dyn Tx, now: Millis) -> Result<usize> {
    let expired = tx.query(REAP, args![now])?;
    let reaped = expired.len();
    for mut row in expired {
        let (id, timeout) = (row.text(0)?, row.int(1)?);
        let error = format!(
            "lease expired: no complete() or fail() within {} s (the request running it \
             died, hung or was killed; raise the 'timeout' option or call extend())",
            crate::clock::ms_to_secs(timeout)
        );
        fail(tx, &id, None, &error, None, now)?;
    }
    Ok(reaped)
}

/// Deletes up to `?3` done and cancelled tasks that finished at or before
/// `?1`, and dead ones that died at or before `?2`; `?4` is the later of
/// the two. INDEXED BY: SQLite would otherwise OR two scans of the state
/// index and read every done task at the end of every request.
const PURGE: &str = "DELETE FROM tasks WHERE id IN (
    SELECT id FROM tasks INDEXED BY tasks_finished WHERE finished_at <= ?4
      AND ((state IN ('done', 'cancelled') AND finished_at <= ?1)
           OR (state = 'dead' AND finished_at <= ?2))
    LIMIT ?3)";

/// Deletes up to `limit` done and cancelled tasks that finished at or before
/// `before`, and dead ones that died at or before `dead_before`; returns how many.
pub(crate) fn purge(
    tx: &mut dyn Tx,
    before: Millis,
    dead_before: Millis,
    limit: u32,
) -> Result<usize> {
    tx.execute(
        PURGE,
        args![before, dead_before, limit, before.max(dead_before)],
    )
}

const INFO_COLUMNS: &str = "id, endpoint, name, args, state, priority, attempt, max_attempts,
    timeout, unique_key, due_at, created_at, updated_at, started_at, finished_at, lease_until,
    last_error, schedule, scheduled_at";

fn info_from_row(mut r: Row) -> Result<TaskInfo> {
    Ok(TaskInfo {
        id: r.text(0)?,
        endpoint: r.text(1)?,
        name: r.text(2)?,
        args: r.text(3)?,
        state: State::parse(&r.text(4)?).unwrap_or(State::Queued),
        priority: r.int(5)?,
        attempt: r.count(6)?,
        max_attempts: r.count(7)?,
        timeout: r.int(8)?,
        unique: r.opt_text(9)?,
        due_at: r.int(10)?,
        created_at: r.int(11)?,
        updated_at: r.int(12)?,
        started_at: r.opt_int(13)?,
        finished_at: r.opt_int(14)?,
        lease_until: r.opt_int(15)?,
        last_error: r.opt_text(16)?,
        schedule: r.opt_text(17)?,
        scheduled_at: r.opt_int(18)?,
    })
}

/// One task's record.
pub(crate) fn status(tx: &mut dyn Tx, site: &str, id: &str) -> Result<Option<TaskInfo>> {
    let sql = format!("SELECT {INFO_COLUMNS} FROM tasks WHERE id = ?1 AND site = ?2");
    tx.row(&sql, args![id, site])?
        .map(info_from_row)
        .transpose()
}

/// SQL of [`list`]: `?1` the site, `?2` the limit, `?3` the state (not
/// for queued). Queued tasks are read through the claim index and the
/// newest `?2` kept: they are not in the state index, so that `defer()`
/// writes one index less. The others walk the state index newest first.
fn list_sql(state: State) -> String {
    let (index, wanted) = match state {
        State::Queued => ("tasks_claim", "state = 'queued'"),
        _ => ("tasks_state", "state = ?3 AND state <> 'queued'"),
    };
    format!(
        "SELECT {INFO_COLUMNS} FROM tasks INDEXED BY {index}
         WHERE site = ?1 AND {wanted} ORDER BY id DESC LIMIT ?2"
    )
}

/// Tasks of `site` in `state`, newest first, at most `limit`.
pub(crate) fn list(tx: &mut dyn Tx, site: &str, state: State, limit: u32) -> Result<Vec<TaskInfo>> {
    let params = match state {
        State::Queued => args![site, limit],
        _ => args![site, limit, state.as_str()],
    };
    tx.query(&list_sql(state), params)?
        .into_iter()
        .map(info_from_row)
        .collect()
}

/// Tasks that finished `done` and `dead` per `bucket` milliseconds since
/// `since`, as (bucket start, done, dead), only for buckets with any.
pub(crate) fn finished_per_bucket(
    tx: &mut dyn Tx,
    since: Millis,
    bucket: Millis,
) -> Result<Vec<(Millis, i64, i64)>> {
    tx.query(
        "SELECT (finished_at / ?2) * ?2 AS b, count(*) FILTER (WHERE state = 'done'),
                count(*) FILTER (WHERE state = 'dead')
         FROM tasks WHERE finished_at >= ?1 GROUP BY b ORDER BY b",
        args![since, bucket],
    )?
    .iter()
    .map(|r| Ok((r.int(0)?, r.int(1)?, r.int(2)?)))
    .collect()
}

/// Task counts per state.
pub(crate) type Counts = Vec<(State, i64)>;

/// Task counts per state of site `?1` on PostgreSQL. Each count walks one
/// index: queued tasks are in the claim index, the others in the state
/// index, one seek per state and site.
const COUNTS: &str = "SELECT 'queued', count(*) FROM tasks INDEXED BY tasks_claim
     WHERE state = 'queued' AND site = ?1
     UNION ALL
     SELECT state, count(*) FROM tasks INDEXED BY tasks_state
     WHERE state IN ('running', 'done', 'dead', 'cancelled') AND state <> 'queued' AND site = ?1
     GROUP BY state";

/// The same on SQLite: queued and running tasks are counted through their
/// indexes; finished ones, which pile up for the retention period, are
/// read from `task_counts`, which triggers keep (schema 10).
const COUNTS_KEPT: &str = "SELECT 'queued', count(*) FROM tasks INDEXED BY tasks_claim
     WHERE state = 'queued' AND site = ?1
     UNION ALL
     SELECT 'running', count(*) FROM tasks INDEXED BY tasks_state
     WHERE state = 'running' AND state <> 'queued' AND site = ?1
     UNION ALL
     SELECT state, n FROM task_counts WHERE site = ?1";

/// Task counts per state of `site`, the earliest due time of its queued tasks.
pub(crate) fn counts(tx: &mut dyn Tx, site: &str) -> Result<(Counts, Option<Millis>)> {
    let mut counts: Counts = State::ALL.iter().map(|s| (*s, 0)).collect();
    let sql = match tx.counts_finished() {
        true => COUNTS_KEPT,
        false => COUNTS,
    };
    for mut row in tx.query(sql, args![site])? {
        let (state, n) = (State::parse(&row.text(0)?), row.int(1)?);
        if let Some(slot) = counts.iter_mut().find(|(s, _)| Some(*s) == state) {
            slot.1 = n;
        }
    }
    let mut next_due = None;
    for mut row in tx.query(
        "SELECT endpoint FROM endpoints WHERE site = ?1",
        args![site],
    )? {
        if let Some(due) = crate::due::earliest_due(tx, site, &row.text(0)?)? {
            next_due = Some(next_due.map_or(due, |d: Millis| d.min(due)));
        }
    }
    Ok((counts, next_due))
}

#[cfg(test)]
mod tests {
    use super::State;
    use rusqlite::Connection;

    /// SQLite's plan for `sql` on the schema, parameters bound (plans with
    /// literals can differ).
    fn plan(sql: &str, params: usize) -> String {
        let conn = Connection::open_in_memory().unwrap();
        for migration in crate::store::schema::SQLITE_MIGRATIONS {
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
        let plan = plan(
            next_due_task!(
                "id, name, args, attempt, timeout, schedule, scheduled_at, started_at IS NULL"
            ),
            3,
        );
        assert!(plan.contains("USING INDEX tasks_claim"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    /// A finished state's newest tasks come from the index, not from sorting
    /// them all; queued ones come from the claim index.
    #[test]
    fn listing_a_state_walks_an_index() {
        let plan_of = |state| {
            plan(
                &super::list_sql(state),
                if state == State::Queued { 2 } else { 3 },
            )
        };
        let done = plan_of(State::Done);
        assert!(
            done.contains("USING INDEX tasks_state (state=? AND site=?)"),
            "{done}"
        );
        assert!(!done.contains("TEMP B-TREE"), "{done}");
        let queued = plan_of(State::Queued);
        assert!(
            queued.contains("USING INDEX tasks_claim (site=?)"),
            "{queued}"
        );
    }

    /// Counting never reads the table's rows in full: one index per part.
    #[test]
    fn counting_walks_the_claim_and_state_indexes() {
        let plan = plan(super::COUNTS, 1);
        assert!(plan.contains("USING INDEX tasks_claim (site=?)"), "{plan}");
        assert!(
            plan.contains("INDEX tasks_state (state=? AND site=?)"),
            "{plan}"
        );
        assert!(!plan.contains("SCAN"), "{plan}");
    }

    /// Reaping reads only running tasks, whatever the number of finished ones.
    #[test]
    fn reaping_seeks_the_running_tasks_in_the_state_index() {
        let plan = plan(super::REAP, 1);
        assert!(plan.contains("USING INDEX tasks_state (state=?)"), "{plan}");
        assert!(!plan.contains("SCAN"), "{plan}");
    }

    /// The next wake-up reads running tasks only, not every task.
    #[test]
    fn the_next_wake_reads_running_tasks_through_the_state_index() {
        let plan = plan(crate::delivery::NEXT_WAKE, 4);
        assert!(plan.contains("USING INDEX tasks_state (state=?)"), "{plan}");
        assert!(!plan.contains("SCAN tasks"), "{plan}");
    }

    /// The earliest due time seeks the claim index (once per priority)
    /// without sorting.
    #[test]
    fn the_earliest_due_time_seeks_the_claim_index() {
        let earliest = plan(crate::due::EARLIEST_BELOW, 3);
        assert!(
            earliest.contains("USING INDEX tasks_claim (site=? AND endpoint=? AND priority<?)"),
            "{earliest}"
        );
        assert!(!earliest.contains("TEMP B-TREE"), "{earliest}");
    }

    /// Choosing the endpoint for a free slot walks the due-time index in
    /// order (past the few endpoints that have a request), never sorting
    /// the due endpoints.
    #[test]
    fn the_due_endpoint_for_a_slot_walks_the_due_index_without_sorting() {
        for sql in [crate::slots::DUE_FIRST, crate::slots::DUE_FIRST_UNATTENDED] {
            let plan = plan(sql, 2);
            assert!(
                plan.contains("INDEX endpoints_due (site=? AND next_due<?)"),
                "{plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
    }

    /// Retention purge at every request's end reads only tasks old enough,
    /// not every finished task.
    #[test]
    fn the_purge_query_walks_the_finished_index() {
        let plan = plan(super::PURGE, 4);
        assert!(
            plan.contains("USING INDEX tasks_finished (finished_at<?)"),
            "{plan}"
        );
        assert!(!plan.contains("tasks_state"), "{plan}");
    }
}
