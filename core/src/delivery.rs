//! Where a server's slots and the task queues meet: reserving a slot for
//! the endpoint due next, its request arriving (`accept()`), never arriving
//! (abandoned), or outliving its deadline (reaped). `slots.rs` keeps the
//! slots table, `queue.rs` the tasks and endpoints.

use crate::clock::Millis;
use crate::db::{args, Tx};
use crate::due;
use crate::error::Result;
use crate::queue;
use crate::slots::{self, Reserved, SlotLock, SENT_TTL_MS};

/// Reserves a slot of the locked server, if one is free, for `site`'s
/// endpoint due earliest (at or before `now`); with none, for `busy` (an
/// endpoint whose request just ended) on the terms of [`reserve_more`].
pub(crate) fn reserve(
    tx: &mut dyn Tx,
    lock: &SlotLock<'_>,
    site: &str,
    max_workers: u32,
    busy: Option<&str>,
    now: Millis,
) -> Result<Option<Reserved>> {
    if let Some(done) = tx.reserve_in_one_trip(lock.server(), site, max_workers, busy, now)? {
        return Ok(done.map(|(slot, endpoint)| Reserved { slot, endpoint }));
    }
    if !slot_free(tx, lock, max_workers, now)? {
        return Ok(None);
    }
    if let Some(reserved) = slots::reserve_due(tx, lock, site, now)? {
        return Ok(Some(reserved));
    }
    match busy {
        Some(endpoint) => more_for(tx, lock, site, endpoint, now),
        None => Ok(None),
    }
}

/// [`due::COUNTED_QUEUED`] made only while server `?5` has a request on its
/// way to the endpoint or running at `?6` ([`slots::HAS_REQUEST`]): a task
/// counted so needs no slot, and the slot check is no statement of its own.
const COUNTED_ATTENDED: &str = due::counted_queued!(
    "
       AND EXISTS (SELECT 1 FROM slots
           WHERE site = ?1 AND endpoint = ?2 AND server = ?5 AND deadline >= ?6)"
);

/// Queues a task due now (see [`queue::insert`]) while the locked server
/// may send its request, and tells whether that server already has a
/// request on its way to the task's endpoint or running (which claims it
/// next: no slot is needed). Returns its id, whether it was created and
/// that answer (false for a task not created). On SQLite the count and the
/// check are one statement when both hold, the usual case under load.
pub(crate) fn queue_due(
    tx: &mut dyn Tx,
    lock: &SlotLock<'_>,
    id: &str,
    task: &queue::NewTask<'_>,
    max_queued: u64,
    now: Millis,
) -> Result<(String, bool, bool)> {
    let (id, created) = queue::insert_uncounted(tx, id, task, now)?;
    if !created {
        return Ok((id, false, false));
    }
    let args = args![
        task.site,
        task.endpoint,
        task.due_at,
        max_queued as i64,
        lock.server(),
        now
    ];
    if tx.in_process() && tx.execute(COUNTED_ATTENDED, args)? > 0 {
        return Ok((id, true, true));
    }
    queue::count_queued(tx, task, max_queued)?;
    let attended = slots::has_request(tx, lock, task.site, task.endpoint, now)?;
    Ok((id, true, attended))
}

/// Reserves a slot of the locked server, if one is free, for one more
/// request to `site`'s `endpoint` while it has more due tasks than
/// requests on the way to it: the requests of a queue that holds work fan
/// out to `max_workers` (see docs/architecture.md, "Fan-out of task requests").
pub(crate) fn reserve_more(
    tx: &mut dyn Tx,
    lock: &SlotLock<'_>,
    site: &str,
    max_workers: u32,
    endpoint: &str,
    now: Millis,
) -> Result<Option<Reserved>> {
    if !slot_free(tx, lock, max_workers, now)? {
        return Ok(None);
    }
    more_for(tx, lock, site, endpoint, now)
}

/// Whether the locked server holds fewer than `max_workers` slots, once
/// expired ones are reaped (only when all are held: they may be what
/// holds them).
fn slot_free(tx: &mut dyn Tx, lock: &SlotLock<'_>, max_workers: u32, now: Millis) -> Result<bool> {
    let max = i64::from(max_workers);
    let (held, expired) = slots::held(tx, lock, now)?;
    if held < max {
        return Ok(true);
    }
    if expired == 0 {
        return Ok(false);
    }
    reap(tx, now)?;
    Ok(slots::held(tx, lock, now)?.0 < max)
}

/// A slot for `endpoint` if its due tasks outnumber the requests on the way.
fn more_for(
    tx: &mut dyn Tx,
    lock: &SlotLock<'_>,
    site: &str,
    endpoint: &str,
    now: Millis,
) -> Result<Option<Reserved>> {
    let on_the_way = slots::on_the_way(tx, site, endpoint)?;
    if queue::due_count(tx, site, endpoint, on_the_way + 1, now)? <= on_the_way {
        return Ok(None);
    }
    let reserved = slots::reserve_for(tx, lock, site, endpoint.to_string(), now)?;
    Ok(Some(reserved))
}

/// Consumes a sent slot for the request that carries it (see
/// [`slots::accept`]); its endpoint's delivery failures are over.
pub(crate) fn accept(
    tx: &mut dyn Tx,
    slot: &str,
    site: &str,
    endpoint: &str,
    now: Millis,
) -> Result<()> {
    slots::accept(tx, slot, site, endpoint, now)?;
    due::delivered(tx, site, endpoint)
}

/// Gives up on a sent request that did not reach `accept()`: frees its slot
/// and backs its endpoint off (its tasks keep their attempts), with a line
/// in the error log. False when the slot is not a sent one (accepted, or
/// already freed).
pub(crate) fn abandon(tx: &mut dyn Tx, slot: &str, reason: &str, now: Millis) -> Result<bool> {
    let Some((site, endpoint)) = slots::take_sent(tx, slot)? else {
        return Ok(false);
    };
    let (failures, retry_at) = due::delivery_failed(tx, &site, &endpoint, reason, now)?;
    crate::log::emit(format!(
        "delivery to {endpoint}{} failed ({failures} in a row; tasks stay queued, next try in \
         {:.0} s): {reason}",
        if site.is_empty() {
            String::new()
        } else {
            format!(" (site {site})")
        },
        ((retry_at - now) as f64 / 1000.0).max(0.0)
    ));
    Ok(true)
}

/// Frees the locked server's slots whose holding process died on this
/// machine (see `holder.rs`): a sent one's endpoint is due again at once,
/// with no backoff (the endpoint did nothing wrong); an accepted one's
/// tasks fail as if their lease had ended, and retry. Each with a line in
/// the error log. Returns how many slots were freed.
pub(crate) fn reap_dead(tx: &mut dyn Tx, lock: &SlotLock<'_>, now: Millis) -> Result<usize> {
    let dead = slots::held_by_dead(tx, lock.server(), now)?;
    for d in &dead {
        let pid = crate::holder::pid(&d.holder);
        if d.accepted {
            let error = format!(
                "the worker running it (process {pid}) died: killed, crashed or out of memory"
            );
            let failed = queue::fail_running_under(tx, &d.slot, &error, now)?;
            slots::release(tx, &d.slot)?;
            crate::log::emit(format!(
                "the worker (process {pid}) running a request to {} died; {failed} task(s) it \
                 held failed and will retry",
                d.endpoint
            ));
        } else if let Some((site, endpoint)) = slots::take_sent(tx, &d.slot)? {
            due::recompute_next_due(tx, &site, &endpoint, 0)?;
            crate::log::emit(format!(
                "the process ({pid}) sending a request to {endpoint} died before it arrived; \
                 its slot is free and the endpoint's tasks are sent again"
            ));
        }
    }
    Ok(dead.len())
}

/// Frees slots past their deadline, any server's (a sent request that never
/// arrived counts as a failed delivery of its endpoint), and fails tasks
/// whose lease expired: a server that died leaves its work to the others.
/// Returns how many slots were freed.
pub(crate) fn reap(tx: &mut dyn Tx, now: Millis) -> Result<usize> {
    queue::reap_leases(tx, now)?;
    let expired = slots::expired(tx, now)?;
    let reaped = expired.len();
    for (slot, endpoint) in expired {
        let reason = format!(
            "the request to {endpoint} did not reach accept() within {} s (endpoint down, \
             overloaded, or not calling accept())",
            SENT_TTL_MS / 1000
        );
        if !abandon(tx, &slot, &reason, now)? {
            slots::release(tx, &slot)?;
        }
    }
    Ok(reaped)
}

/// When a server next has work (see `Engine::next_wake`): `now` when one of
/// `site`'s endpoints is due and `server` has a free slot; else the
/// earliest future due time of an endpoint, the first slot deadline or the
/// first lease to end, whichever comes first. One query.
pub(crate) fn next_wake(
    tx: &mut dyn Tx,
    site: &str,
    server: &str,
    max_workers: u32,
    now: Millis,
) -> Result<Option<Millis>> {
    tx.int(NEXT_WAKE, args![now, site, server, max_workers])
}

/// SQL of [`next_wake`]: `?1` now, `?2` the site, `?3` the server, `?4`
/// its `max_workers`. Running tasks come from the state index.
pub(crate) const NEXT_WAKE: &str = "SELECT min(t) FROM (
        SELECT min(next_due) AS t FROM endpoints WHERE site = ?2 AND next_due > ?1
        UNION ALL SELECT CAST(?1 AS BIGINT) WHERE EXISTS (
                SELECT 1 FROM endpoints WHERE site = ?2 AND next_due <= ?1)
            AND (SELECT count(*) FROM slots WHERE server = ?3) < ?4
        UNION ALL SELECT min(deadline) + 1 FROM slots
        UNION ALL SELECT min(lease_until) + 1 FROM tasks INDEXED BY tasks_state
            WHERE state = 'running' AND state <> 'queued'
     ) AS wakes";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Value;
    use crate::store::sqlite::SqliteStore;
    use crate::store::Store;

    /// [`COUNTED_ATTENDED`] counts exactly when [`due::COUNTED_QUEUED`]
    /// would and [`slots::HAS_REQUEST`] finds a request, and leaves the
    /// endpoint's row as the former does, for every endpoint state and
    /// slot the check must tell apart.
    #[test]
    fn counting_while_attended_is_the_count_and_the_slot_check_in_one() {
        let (dir, settings) = crate::store::sqlite::scratch("attended");
        let mut store: Box<dyn Store> = Box::new(SqliteStore::open(&settings).unwrap());
        let times = [None, Some(100i64), Some(300)];
        // (site, endpoint, server, deadline) of the one slot, if any.
        let slots = [
            None,
            Some(("", "/e", "s", 500i64)),
            Some(("", "/e", "s", 150)),
            Some(("", "/e", "other", 500)),
            Some(("", "/f", "s", 500)),
            Some(("b", "/e", "s", 500)),
        ];
        let (now, mut cases, mut attended) = (200i64, 0, 0);
        for row in times.iter().flat_map(|n| times.map(|r| (*n, r))) {
            for queued in [0i64, 5] {
                for slot in slots {
                    let mut run = |merged: bool| {
                        store
                            .write(|tx| {
                                tx.execute("DELETE FROM endpoints", args![])?;
                                tx.execute("DELETE FROM slots", args![])?;
                                tx.execute(
                                    "INSERT INTO endpoints (site, endpoint, next_due, queued, retry_at)
                                     VALUES ('', '/e', ?1, ?2, ?3)",
                                    args![row.0, queued, row.1],
                                )?;
                                if let Some((site, endpoint, server, deadline)) = slot {
                                    tx.execute(
                                        "INSERT INTO slots (id, server, site, endpoint, state, deadline, created_at)
                                         VALUES ('x', ?1, ?2, ?3, 'sent', ?4, 0)",
                                        args![server, site, endpoint, deadline],
                                    )?;
                                }
                                let counted = if merged {
                                    tx.execute(COUNTED_ATTENDED, args!["", "/e", now, 5i64, "s", now])? > 0
                                } else {
                                    tx.execute(due::COUNTED_QUEUED, args!["", "/e", now, 5i64])? > 0
                                        && tx.int(slots::HAS_REQUEST, args!["", "/e", "s", now])?.is_some()
                                };
                                let after: Vec<Value> = tx
                                    .row("SELECT next_due, queued, retry_at FROM endpoints", args![])?
                                    .map(|r| r.0)
                                    .unwrap_or_default();
                                Ok((counted, after))
                            })
                            .unwrap()
                    };
                    let merged = run(true);
                    let (counted, after) = run(false);
                    let expected = match counted {
                        true => (true, after),
                        // Not counted: the merged statement changed nothing.
                        false => {
                            let v = |x: Option<i64>| x.map_or(Value::Null, Value::Int);
                            (false, vec![v(row.0), Value::Int(queued), v(row.1)])
                        }
                    };
                    assert_eq!(
                        merged, expected,
                        "endpoint {row:?}, {queued} queued, slot {slot:?}"
                    );
                    attended += usize::from(merged.0);
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 9 * 2 * 6);
        assert!(attended > 0, "no case counted");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
