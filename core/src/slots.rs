//! Server-wide slots: the task requests in flight, at most `max_workers`.

use crate::clock::Millis;
use crate::error::{Error, Result};
use rusqlite::{params, OptionalExtension, Transaction};

/// How long a sent request may take to reach its endpoint before its slot
/// is reaped and the endpoint made due again.
pub const SENT_TTL_MS: Millis = 60_000;
/// How long an accepted slot outlives the lease of the task it runs.
pub const GRACE_MS: Millis = 5_000;

/// A slot reserved for a request to an endpoint, not yet signed or sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// The slot id, carried by the request.
    pub slot: String,
    /// The endpoint the request goes to.
    pub endpoint: String,
}

/// Number of slots held (in flight), expired or not.
pub(crate) fn in_flight(tx: &Transaction<'_>) -> Result<i64> {
    Ok(tx
        .prepare_cached("SELECT count(*) FROM slots")?
        .query_row([], |r| r.get(0))?)
}

/// Reserves a slot for the endpoint due earliest (at or before `now`), if a
/// slot is free; the endpoint stops being due until its request arrives.
pub(crate) fn reserve(
    tx: &Transaction<'_>,
    max_workers: u32,
    now: Millis,
) -> Result<Option<Reserved>> {
    let max = i64::from(max_workers);
    if in_flight(tx)? >= max {
        // Full: expired slots may be what holds them.
        let expired: bool = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM slots WHERE deadline < ?1)")?
            .query_row([now], |r| r.get(0))?;
        if !expired {
            return Ok(None);
        }
        reap(tx, now)?;
        if in_flight(tx)? >= max {
            return Ok(None);
        }
    }
    let endpoint: Option<String> = tx
        .prepare_cached(
            "SELECT endpoint FROM endpoints WHERE next_due <= ?1 ORDER BY next_due LIMIT 1",
        )?
        .query_row([now], |r| r.get(0))
        .optional()?;
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    let slot = crate::id::random_hex(16);
    tx.prepare_cached(
        "INSERT INTO slots (id, endpoint, state, deadline, created_at) VALUES (?1, ?2, 'sent', ?3, ?4)",
    )?
    .execute(params![slot, endpoint, now + SENT_TTL_MS, now])?;
    tx.prepare_cached("UPDATE endpoints SET next_due = NULL WHERE endpoint = ?1")?
        .execute([&endpoint])?;
    Ok(Some(Reserved { slot, endpoint }))
}

/// Consumes a sent slot for the request that carries it: it becomes
/// accepted, once. A replayed, reaped or foreign slot is rejected.
pub(crate) fn accept(tx: &Transaction<'_>, slot: &str, endpoint: &str, now: Millis) -> Result<()> {
    let n = tx
        .prepare_cached(
            "UPDATE slots SET state = 'accepted', deadline = ?3
             WHERE id = ?1 AND endpoint = ?2 AND state = 'sent' AND deadline >= ?4",
        )?
        .execute(params![slot, endpoint, now + GRACE_MS, now])?;
    if n == 0 {
        return Err(Error::Rejected(format!(
            "not a genuine self-request: slot {slot} for {endpoint} is unknown, expired or \
             already used (a replayed request)"
        )));
    }
    Ok(())
}

/// Keeps an accepted slot held until `until` plus the grace period.
pub(crate) fn hold_until(tx: &Transaction<'_>, slot: &str, until: Millis) -> Result<()> {
    tx.prepare_cached("UPDATE slots SET deadline = max(deadline, ?2) WHERE id = ?1")?
        .execute(params![slot, until + GRACE_MS])?;
    Ok(())
}

/// Frees an accepted slot (sent ones are given up with [`abandon`]).
pub(crate) fn release(tx: &Transaction<'_>, slot: &str) -> Result<()> {
    tx.prepare_cached("DELETE FROM slots WHERE id = ?1")?
        .execute([slot])?;
    Ok(())
}

/// Gives up on a sent request that did not reach `accept()`: frees its slot
/// and records the failed delivery on its endpoint's next due task. False
/// when the slot is not a sent one (accepted, or already freed).
pub(crate) fn abandon(tx: &Transaction<'_>, slot: &str, reason: &str, now: Millis) -> Result<bool> {
    let endpoint: Option<String> = tx
        .prepare_cached("DELETE FROM slots WHERE id = ?1 AND state = 'sent' RETURNING endpoint")?
        .query_row([slot], |r| r.get(0))
        .optional()?;
    let Some(endpoint) = endpoint else {
        return Ok(false);
    };
    crate::queue::fail_delivery(tx, &endpoint, reason, now)?;
    crate::queue::recompute_next_due(tx, &endpoint)?;
    Ok(true)
}

/// Frees slots past their deadline (a sent request that never arrived counts
/// as a failed attempt of its endpoint's next task) and fails tasks whose
/// lease expired; returns how many slots were freed.
pub(crate) fn reap(tx: &Transaction<'_>, now: Millis) -> Result<usize> {
    crate::queue::reap_leases(tx, now)?;
    let expired: Vec<(String, String)> = tx
        .prepare_cached("SELECT id, endpoint FROM slots WHERE deadline < ?1")?
        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (slot, endpoint) in &expired {
        let reason = format!(
            "the request to {endpoint} did not reach accept() within {} s (endpoint down, \
             overloaded, or not calling accept())",
            SENT_TTL_MS / 1000
        );
        if !abandon(tx, slot, &reason, now)? {
            release(tx, slot)?;
        }
    }
    Ok(expired.len())
}
