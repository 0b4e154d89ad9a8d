//! Each server's slots: the task requests it has in flight, at most its
//! `max_workers`.

use crate::clock::Millis;
use crate::db::{args, Tx};
use crate::error::{Error, Result};
use crate::holder;

/// How long a sent request may take to reach its endpoint before its slot
/// is reaped and the endpoint made due again.
pub const SENT_TTL_MS: Millis = 60_000;
/// How long an accepted slot outlives the lease of the task it runs.
pub const GRACE_MS: Millis = 5_000;
/// How long a sent slot whose sending process died is left to its request,
/// which may still arrive (it was written before the process died), before
/// it is freed.
pub(crate) const DEAD_SENDER_GRACE_MS: Millis = 5_000;

/// A slot of this machine whose holding process died (see [`held_by_dead`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeadSlot {
    /// The slot id.
    pub slot: String,
    /// True: its request was accepted (its worker died running it); false:
    /// its sender died before the request arrived.
    pub accepted: bool,
    /// The endpoint it was for.
    pub endpoint: String,
    /// The holder that died (`holder.rs`).
    pub holder: String,
}

/// A slot reserved for a request to an endpoint, not yet signed or sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// The slot id, carried by the request.
    pub slot: String,
    /// The endpoint the request goes to.
    pub endpoint: String,
}

/// Proof that the transaction holds a server's slot lock (see
/// [`Tx::lock_slots`]): only then may it count that server's slots and add one.
pub(crate) struct SlotLock<'a> {
    server: &'a str,
}

/// The slots server `?1` holds, and how many are past their deadline `?2`.
pub(crate) const HELD: &str =
    "SELECT count(*), count(*) FILTER (WHERE deadline < ?2) FROM slots WHERE server = ?1";
/// Site `?2`'s endpoint due earliest, at or before `?1`, taken (PostgreSQL).
pub(crate) const DUE_FIRST: &str =
    "SELECT endpoint FROM endpoints WHERE site = ?2 AND next_due <= ?1
     ORDER BY next_due LIMIT 1 /*skip locked*/";

/// [`DUE_FIRST`] among the endpoints no request is on its way to or running
/// (any server's, see [`HAS_REQUEST`]): the due-time index is walked past
/// at most as many endpoints as there are slots.
pub(crate) const DUE_FIRST_UNATTENDED: &str =
    "SELECT endpoint FROM endpoints WHERE site = ?2 AND next_due <= ?1
         AND NOT EXISTS (SELECT 1 FROM slots
             WHERE slots.site = endpoints.site AND slots.endpoint = endpoints.endpoint)
     ORDER BY next_due LIMIT 1 /*skip locked*/";

/// A slot `?1` of server `?2` sent to site `?6`'s endpoint `?3`, deadline
/// `?4`, created `?5`, by process `?7` (see `holder.rs`).
pub(crate) const SEND_SLOT: &str =
    "INSERT INTO slots (id, server, site, endpoint, state, deadline, created_at, holder)
     VALUES (?1, ?2, ?6, ?3, 'sent', ?4, ?5, ?7)";
/// Site `?1`'s endpoint `?2` stops being due (its request is on the way).
pub(crate) const NOT_DUE: &str =
    "UPDATE endpoints SET next_due = NULL WHERE site = ?1 AND endpoint = ?2";

impl SlotLock<'_> {
    /// The server whose slots are locked.
    pub(crate) fn server(&self) -> &str {
        self.server
    }
}

/// Takes the slot lock of `server`; call it before the transaction locks
/// any endpoint's row (see [`Tx::lock_slots`]).
pub(crate) fn lock<'a>(tx: &mut dyn Tx, server: &'a str) -> Result<SlotLock<'a>> {
    tx.lock_slots(server)?;
    Ok(SlotLock { server })
}

/// Number of slots `server` holds (in flight), expired or not.
pub(crate) fn in_flight(tx: &mut dyn Tx, server: &str) -> Result<i64> {
    Ok(tx
        .int(
            "SELECT count(*) FROM slots WHERE server = ?1",
            args![server],
        )?
        .unwrap_or(0))
}

/// The slots `server` holds, and how many of them are past their deadline
/// (when all are held, those may be what holds them), in one query.
pub(crate) fn held(tx: &mut dyn Tx, lock: &SlotLock<'_>, now: Millis) -> Result<(i64, i64)> {
    count_held(tx, lock.server, now)
}

/// Whether the slot lock of `server` is worth taking to add a slot: on
/// SQLite always (the write transaction already keeps other writers out);
/// on PostgreSQL, where the lock is held for every round trip until the
/// commit, only while `server` holds fewer than `max_workers` slots or
/// some past their deadline. Read without the lock, so a slot freed
/// meanwhile is missed; the transaction that freed it hands it on.
pub(crate) fn worth_locking(
    tx: &mut dyn Tx,
    server: &str,
    max_workers: u32,
    now: Millis,
) -> Result<bool> {
    if tx.in_process() {
        return Ok(true);
    }
    let (held, expired) = count_held(tx, server, now)?;
    Ok(held < i64::from(max_workers) || expired > 0)
}

/// [`HELD`] for `server`, with or without its slot lock.
fn count_held(tx: &mut dyn Tx, server: &str, now: Millis) -> Result<(i64, i64)> {
    Ok(tx
        .row(HELD, args![server, now])?
        .map(|r| Ok::<_, Error>((r.int(0)?, r.int(1)?)))
        .transpose()?
        .unwrap_or((0, 0)))
}

/// Reserves a slot of the locked server (the caller checked that one is
/// free) for `site`'s endpoint due earliest (at or before `now`), if any,
/// one with no request on its way or running first;
/// the endpoint stops being due until its request arrives. An endpoint
/// another transaction is changing is passed by.
pub(crate) fn reserve_due(
    tx: &mut dyn Tx,
    lock: &SlotLock<'_>,
    site: &str,
    now: Millis,
) -> Result<Option<Reserved>> {
    let endpoint = match tx.text(DUE_FIRST_UNATTENDED, args![now, site])? {
        Some(endpoint) => Some(endpoint),
        None => tx.text(DUE_FIRST, args![now, site])?,
    };
    match endpoint {
        Some(endpoint) => Ok(Some(reserve_for(tx, lock, site, endpoint, now)?)),
        None => Ok(None),
    }
}

/// Reserves a slot of the locked server (the caller checked that one is
/// free) for `site`'s `endpoint`, which stops being due until its request
/// arrives.
pub(crate) fn reserve_for(
    tx: &mut dyn Tx,
    lock: &SlotLock<'_>,
    site: &str,
    endpoint: String,
    now: Millis,
) -> Result<Reserved> {
    let slot = crate::id::random_hex(16);
    let holder = holder::this_process();
    tx.execute(
        SEND_SLOT,
        args![
            &slot,
            lock.server,
            &endpoint,
            now + SENT_TTL_MS,
            now,
            site,
            holder.as_deref()
        ],
    )?;
    tx.execute(NOT_DUE, args![site, &endpoint])?;
    Ok(Reserved { slot, endpoint })
}

/// How many requests to `site`'s `endpoint` are on the way (sent, not yet
/// accepted), any server's.
pub(crate) fn on_the_way(tx: &mut dyn Tx, site: &str, endpoint: &str) -> Result<i64> {
    Ok(tx.int(ON_THE_WAY, args![site, endpoint])?.unwrap_or(0))
}

/// How many requests to site `?1`'s endpoint `?2` are on the way.
pub(crate) const ON_THE_WAY: &str =
    "SELECT count(*) FROM slots WHERE site = ?1 AND endpoint = ?2 AND state = 'sent'";

/// Server `?3` has a request to site `?1`'s endpoint `?2` on its way (a
/// sent slot) or running (an accepted one), not past its deadline `?4`: it
/// claims the endpoint's next task when its current one ends.
pub(crate) const HAS_REQUEST: &str = "SELECT 1 FROM slots
     WHERE site = ?1 AND endpoint = ?2 AND server = ?3 AND deadline >= ?4 LIMIT 1";

/// Whether the locked server has a request to `site`'s `endpoint` on its
/// way or running (see [`HAS_REQUEST`]).
pub(crate) fn has_request(
    tx: &mut dyn Tx,
    lock: &SlotLock<'_>,
    site: &str,
    endpoint: &str,
    now: Millis,
) -> Result<bool> {
    let found = tx.int(HAS_REQUEST, args![site, endpoint, lock.server, now])?;
    Ok(found.is_some())
}

/// Consumes a sent slot for the request that carries it: it becomes
/// accepted, once. A replayed, reaped or foreign slot (another site's) is
/// rejected.
pub(crate) fn accept(
    tx: &mut dyn Tx,
    slot: &str,
    site: &str,
    endpoint: &str,
    now: Millis,
) -> Result<()> {
    let holder = holder::this_process();
    let n = tx.execute(
        "UPDATE slots SET state = 'accepted', deadline = ?3, holder = ?6
         WHERE id = ?1 AND endpoint = ?2 AND state = 'sent' AND deadline >= ?4 AND site = ?5",
        args![slot, endpoint, now + GRACE_MS, now, site, holder.as_deref()],
    )?;
    if n == 0 {
        return Err(Error::Rejected(format!(
            "not a genuine self-request: slot {slot} for {endpoint} is unknown, expired, \
             another site's, or already used (a replayed request), or was freed because \
             the process sending it ended at least {} s before it arrived",
            DEAD_SENDER_GRACE_MS / 1000
        )));
    }
    Ok(())
}

/// Whether `slot` is accepted (its request is running tasks).
pub(crate) fn is_accepted(tx: &mut dyn Tx, slot: &str) -> Result<bool> {
    in_state(tx, slot, "accepted")
}

/// Whether `slot` is sent and not yet accepted (its request is on its way,
/// or never arrived).
pub(crate) fn is_sent(tx: &mut dyn Tx, slot: &str) -> Result<bool> {
    in_state(tx, slot, "sent")
}

/// Whether `slot` exists in `state` (one primary-key lookup).
fn in_state(tx: &mut dyn Tx, slot: &str, state: &str) -> Result<bool> {
    Ok(tx.int(
        "SELECT count(*) FROM slots WHERE id = ?1 AND state = ?2",
        args![slot, state],
    )? > Some(0))
}

/// Keeps an accepted slot held until `until` plus the grace period.
pub(crate) fn hold_until(tx: &mut dyn Tx, slot: &str, until: Millis) -> Result<()> {
    tx.execute(
        "UPDATE slots SET deadline = CASE WHEN deadline > ?2 THEN deadline ELSE ?2 END
         WHERE id = ?1",
        args![slot, until + GRACE_MS],
    )?;
    Ok(())
}

/// Frees an accepted slot (sent ones are given up with [`abandon`]) and
/// returns the endpoint it served (`None`: no such slot).
pub(crate) fn release(tx: &mut dyn Tx, slot: &str) -> Result<Option<String>> {
    tx.text(
        "DELETE FROM slots WHERE id = ?1 RETURNING endpoint",
        args![slot],
    )
}

/// Frees a sent slot (its request never reached `accept()`) and returns its
/// site and endpoint; `None` when the slot is not a sent one (accepted, or
/// already freed).
pub(crate) fn take_sent(tx: &mut dyn Tx, slot: &str) -> Result<Option<(String, String)>> {
    tx.row(
        "DELETE FROM slots WHERE id = ?1 AND state = 'sent' RETURNING site, endpoint",
        args![slot],
    )?
    .map(|mut row| Ok((row.text(0)?, row.text(1)?)))
    .transpose()
}

/// `server`'s slots whose holder died on this machine: accepted ones, and
/// sent ones created [`DEAD_SENDER_GRACE_MS`] or more before `now`. One
/// read of at most `max_workers` rows and a `kill(pid, 0)` per holder.
pub(crate) fn held_by_dead(tx: &mut dyn Tx, server: &str, now: Millis) -> Result<Vec<DeadSlot>> {
    let mut dead = vec![];
    for mut row in tx.query(
        "SELECT id, state, endpoint, holder, created_at FROM slots
         WHERE server = ?1 AND holder IS NOT NULL",
        args![server],
    )? {
        let holder = row.text(3)?;
        let accepted = row.text(1)? == "accepted";
        if (accepted || row.int(4)? <= now - DEAD_SENDER_GRACE_MS) && holder::is_dead(&holder) {
            dead.push(DeadSlot {
                slot: row.text(0)?,
                accepted,
                endpoint: row.text(2)?,
                holder,
            });
        }
    }
    Ok(dead)
}

/// Up to 1000 slots past their deadline, any server's: (slot, endpoint).
/// Slots another server is reaping right now are passed by.
pub(crate) fn expired(tx: &mut dyn Tx, now: Millis) -> Result<Vec<(String, String)>> {
    tx.query(
        "SELECT id, endpoint FROM slots WHERE deadline < ?1 LIMIT 1000 /*skip locked*/",
        args![now],
    )?
    .into_iter()
    .map(|mut row| Ok((row.text(0)?, row.text(1)?)))
    .collect()
}
