//! PostgreSQL's functions of one round trip: PL/pgSQL functions in the
//! session's temporary schema that run what a transaction of separate
//! statements would, taken from the same SQL constants, so the logic is
//! written once. On a server on the same machine each statement is a round
//! trip of about 0.05–0.1 ms. See docs/architecture.md, "PostgreSQL".
//!
//! - `async_engine_reserve` reserves a slot as `delivery::reserve` does
//!   (five to eight statements), inside the transaction that holds the
//!   server's slot lock, so the lock is held for fewer round trips. It
//!   reports expired slots to reap instead of reaping them; the caller then
//!   runs the statements, which do.
//! - `async_engine_recompute` is `due::recompute_next_due`: the endpoint's
//!   row locked, its earliest due task sought once per priority and the row
//!   updated, in one call instead of three to five round trips, so a claim
//!   holds that row (which every claim of the endpoint's tasks takes) for
//!   this call and the commit only.
//! - `async_engine_defer` is `defer()` for a task without a unique key: the
//!   slot lock, the insert, the count and the reservation in one autocommit
//!   call (a transaction of separate statements costs at least six round
//!   trips). It raises [`REAP_FIRST`] when every slot is held and some are
//!   past their deadline, and [`QUEUE_FULL`] when the endpoint's queue is
//!   full; either way nothing is stored.

use crate::db::Param;
use crate::due::{BECAME_QUEUED, EARLIEST_BELOW, SET_NEXT_DUE};
use crate::queue::{DUE_COUNT, INSERT_TASK};
use crate::slots::{
    DUE_FIRST, DUE_FIRST_UNATTENDED, HAS_REQUEST, HELD, NOT_DUE, ON_THE_WAY, SEND_SLOT, SENT_TTL_MS,
};
use crate::store::pg::{translate, LOCK_ENDPOINT};
use crate::store::OneTripDefer;

/// SQLSTATE the defer function raises when the endpoint's queue is full.
pub(super) const QUEUE_FULL: &str = "AE001";
/// SQLSTATE the defer function raises when expired slots must be reaped first.
pub(super) const REAP_FIRST: &str = "AE002";

/// The defer call, in the shared dialect; its parameters come from [`params`].
pub(super) const CALL: &str = "SELECT pg_temp.async_engine_defer(?1, ?2, ?3, ?4, ?5, ?6, ?7, \
                               ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";

/// The reserve call: site, server, max_workers, the endpoint whose request
/// just ended (or NULL), the new slot's id, its deadline, now, its holder
/// (`holder.rs`). Its row: whether expired slots must be reaped first, and
/// the endpoint reserved (or NULL).
pub(super) const RESERVE: &str =
    "SELECT o_reap, o_endpoint FROM pg_temp.async_engine_reserve(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// The recompute call: site, endpoint, the change to its queued count.
pub(super) const RECOMPUTE: &str = "SELECT pg_temp.async_engine_recompute(?1, ?2, ?3)";

/// The defer function's parameters, in order, with their types.
const PARAMS: [(&str, &str); 17] = [
    ("p_id", "text"),
    ("p_site", "text"),
    ("p_endpoint", "text"),
    ("p_name", "text"),
    ("p_args", "text"),
    ("p_priority", "bigint"),
    ("p_due", "bigint"),
    ("p_attempts", "bigint"),
    ("p_timeout", "bigint"),
    ("p_now", "bigint"),
    ("p_max_queued", "bigint"),
    ("p_lock", "bigint"),
    ("p_server", "text"),
    ("p_max_workers", "bigint"),
    ("p_slot", "text"),
    ("p_deadline", "bigint"),
    ("p_holder", "text"),
];

/// The parameters of [`CALL`]: `lock` is the server's slot lock key and
/// `slot` the new slot's id, both given when a slot is to be reserved;
/// `holder` this process (`holder.rs`).
pub(super) fn params<'a>(
    d: &'a OneTripDefer<'a>,
    lock: Option<i64>,
    slot: Option<&'a str>,
    holder: Option<&'a str>,
) -> [Param<'a>; 17] {
    let t = d.task;
    [
        Param::Text(d.id),
        Param::Text(t.site),
        Param::Text(t.endpoint),
        Param::Text(t.name),
        Param::Text(t.args),
        Param::Int(t.priority),
        Param::Int(t.due_at),
        Param::Int(i64::from(t.max_attempts)),
        Param::Int(t.timeout),
        Param::Int(d.now),
        Param::Int(i64::try_from(d.max_queued).unwrap_or(i64::MAX)),
        lock.map_or(Param::Null, Param::Int),
        d.reserve
            .map_or(Param::Null, |(server, _)| Param::Text(server)),
        d.reserve
            .map_or(Param::Null, |(_, max)| Param::Int(i64::from(max))),
        slot.map_or(Param::Null, Param::Text),
        Param::Int(d.now + SENT_TTL_MS),
        holder.map_or(Param::Null, Param::Text),
    ]
}

/// `CREATE FUNCTION` of the functions for the session, the reserve
/// function before the defer function, which calls it.
pub(super) fn create_functions() -> String {
    format!(
        "{};\n{};\n{}",
        create_recompute(),
        create_reserve(),
        create_defer()
    )
}

/// The recompute function: as `due::recompute_next_due`, whose statements
/// it binds.
fn create_recompute() -> String {
    format!(
        "CREATE OR REPLACE FUNCTION pg_temp.async_engine_recompute(p_site text, p_endpoint text,
             p_delta bigint) RETURNS void
         LANGUAGE plpgsql AS $body$
         DECLARE v_earliest bigint; v_below bigint := {max}; v_priority bigint; v_due bigint;
         BEGIN
             PERFORM l.* FROM ({lock}) l;
             LOOP
                 SELECT e.priority, e.due_at INTO v_priority, v_due FROM ({earliest}) e;
                 EXIT WHEN NOT FOUND;
                 v_earliest := LEAST(v_earliest, v_due);
                 v_below := v_priority;
             END LOOP;
             {set};
         END $body$",
        max = i64::MAX,
        lock = bind(LOCK_ENDPOINT, &["p_site", "p_endpoint"]),
        earliest = bind(EARLIEST_BELOW, &["p_site", "p_endpoint", "v_below"]),
        set = bind(
            SET_NEXT_DUE,
            &["p_site", "p_endpoint", "v_earliest", "p_delta"]
        ),
    )
}

/// The reserve function: with a slot of `p_server` free, reserves it for
/// the site's endpoint due earliest (one with no request on its way or
/// running first) or, with none, for `p_busy` while its due tasks outnumber
/// the requests on their way to it; that endpoint stops being due.
fn create_reserve() -> String {
    format!(
        "CREATE OR REPLACE FUNCTION pg_temp.async_engine_reserve(p_site text, p_server text,
             p_max_workers bigint, p_busy text, p_slot text, p_deadline bigint, p_now bigint,
             p_holder text, OUT o_reap boolean, OUT o_endpoint text)
         LANGUAGE plpgsql AS $body$
         DECLARE v_held bigint; v_expired bigint; v_on_the_way bigint; v_due bigint;
         BEGIN
             o_reap := false;
             SELECT h.* INTO v_held, v_expired FROM ({held}) h;
             IF v_held >= p_max_workers THEN
                 o_reap := v_expired > 0;
                 RETURN;
             END IF;
             SELECT e.endpoint INTO o_endpoint FROM ({due_first_unattended}) e;
             IF o_endpoint IS NULL THEN
                 SELECT e.endpoint INTO o_endpoint FROM ({due_first}) e;
             END IF;
             IF o_endpoint IS NULL AND p_busy IS NOT NULL THEN
                 SELECT w.* INTO v_on_the_way FROM ({on_the_way}) w;
                 SELECT d.* INTO v_due FROM ({due_count}) d;
                 IF v_due > v_on_the_way THEN o_endpoint := p_busy; END IF;
             END IF;
             IF o_endpoint IS NULL THEN RETURN; END IF;
             {send};
             {not_due};
         END $body$",
        held = bind(HELD, &["p_server", "p_now"]),
        due_first_unattended = bind(DUE_FIRST_UNATTENDED, &["p_now", "p_site"]),
        due_first = bind(DUE_FIRST, &["p_now", "p_site"]),
        on_the_way = bind(ON_THE_WAY, &["p_site", "p_busy"]),
        due_count = bind(
            DUE_COUNT,
            &["p_site", "p_busy", "p_now", "(v_on_the_way + 1)"]
        ),
        send = bind(
            SEND_SLOT,
            &[
                "p_slot",
                "p_server",
                "o_endpoint",
                "p_deadline",
                "p_now",
                "p_site",
                "p_holder"
            ]
        ),
        not_due = bind(NOT_DUE, &["p_site", "o_endpoint"]),
    )
}

/// The defer function: returns the endpoint a slot was reserved for, or
/// NULL when none was (not due now, a request already on its way or
/// running, no slot free, no endpoint due).
fn create_defer() -> String {
    let declared: Vec<String> = PARAMS.iter().map(|(n, t)| format!("{n} {t}")).collect();
    format!(
        "CREATE OR REPLACE FUNCTION pg_temp.async_engine_defer({params}) RETURNS text
         LANGUAGE plpgsql AS $body$
         DECLARE v_counted bigint; v_reap boolean; v_endpoint text;
         BEGIN
             IF p_lock IS NOT NULL THEN PERFORM pg_advisory_xact_lock(p_lock); END IF;
             {insert};
             {counted};
             GET DIAGNOSTICS v_counted = ROW_COUNT;
             IF v_counted = 0 THEN
                 RAISE EXCEPTION 'queue full' USING ERRCODE = '{QUEUE_FULL}';
             END IF;
             IF p_lock IS NULL OR EXISTS ({has_request}) THEN RETURN NULL; END IF;
             SELECT r.o_reap, r.o_endpoint INTO v_reap, v_endpoint
                 FROM pg_temp.async_engine_reserve(p_site, p_server, p_max_workers, NULL,
                     p_slot, p_deadline, p_now, p_holder) r;
             IF v_reap THEN
                 RAISE EXCEPTION 'slots to reap' USING ERRCODE = '{REAP_FIRST}';
             END IF;
             RETURN v_endpoint;
         END $body$",
        params = declared.join(", "),
        insert = bind(
            INSERT_TASK,
            &[
                "p_id",
                "p_endpoint",
                "p_name",
                "p_args",
                "p_priority",
                "p_due",
                "p_attempts",
                "p_timeout",
                "NULL",
                "p_now",
                "p_site",
            ]
        ),
        counted = bind(
            BECAME_QUEUED,
            &["p_site", "p_endpoint", "p_due", "p_max_queued"]
        ),
        has_request = bind(HAS_REQUEST, &["p_site", "p_endpoint", "p_server", "p_now"]),
    )
}

/// A statement of the shared dialect with its parameters `?N` replaced by
/// `names[N - 1]` (the function's parameters and variables).
fn bind(sql: &str, names: &[&str]) -> String {
    let sql = translate(sql);
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let mut n = 0usize;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            n = n * 10 + d as usize;
            chars.next();
        }
        out.push_str(names[n - 1]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_bound_by_number() {
        assert_eq!(
            bind(
                "SELECT ?10, ?1 FROM t WHERE a = ?2",
                &["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
            ),
            "SELECT j, a FROM t WHERE a = b"
        );
    }

    #[test]
    fn the_functions_bind_every_statement() {
        let f = create_functions();
        assert!(!f.contains('?'), "{f}");
        assert!(!f.contains("INDEXED BY"), "{f}");
        assert!(f.contains("FOR UPDATE SKIP LOCKED"), "{f}");
        assert_eq!(f.matches("$body$").count(), 6, "{f}");
    }
}
