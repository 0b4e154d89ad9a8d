//! `defer()` in one round trip on PostgreSQL: a PL/pgSQL function in the
//! session's temporary schema runs the statements `queue::insert` and
//! `delivery::reserve` run, taken from the same SQL constants, so the logic
//! is written once. A transaction of separate statements costs six round
//! trips (BEGIN, the slot lock, the insert, the count, the slot count,
//! COMMIT); on a local server each is about 0.1 ms. See
//! docs/architecture.md, "PostgreSQL".
//!
//! The function covers the common case: a task without a unique key. It
//! raises [`REAP_FIRST`] when every slot is held and some are past their
//! deadline (reaping them is the transaction's work), and [`QUEUE_FULL`]
//! when the endpoint's queue is full; either way nothing is stored.

use crate::db::Param;
use crate::due::BECAME_QUEUED;
use crate::queue::INSERT_TASK;
use crate::slots::{
    DUE_FIRST, DUE_FIRST_UNATTENDED, HAS_REQUEST, HELD, NOT_DUE, SEND_SLOT, SENT_TTL_MS,
};
use crate::store::pg::translate;
use crate::store::OneTripDefer;

/// SQLSTATE the function raises when the endpoint's queue is full.
pub(super) const QUEUE_FULL: &str = "AE001";
/// SQLSTATE the function raises when expired slots must be reaped first.
pub(super) const REAP_FIRST: &str = "AE002";

/// The call, in the shared dialect; its parameters come from [`params`].
pub(super) const CALL: &str = "SELECT pg_temp.async_engine_defer(?1, ?2, ?3, ?4, ?5, ?6, ?7, \
                               ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";

/// The function's parameters, in order, with their types.
const PARAMS: [(&str, &str); 16] = [
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
];

/// The parameters of [`CALL`]: `lock` is the server's slot lock key and
/// `slot` the new slot's id, both given when a slot is to be reserved.
pub(super) fn params<'a>(
    d: &'a OneTripDefer<'a>,
    lock: Option<i64>,
    slot: Option<&'a str>,
) -> [Param<'a>; 16] {
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
    ]
}

/// `CREATE FUNCTION` for the session: returns the endpoint a slot was
/// reserved for, or NULL when none was (not due now, no slot free, no
/// endpoint due).
pub(super) fn create_function() -> String {
    let declared: Vec<String> = PARAMS.iter().map(|(n, t)| format!("{n} {t}")).collect();
    format!(
        "CREATE OR REPLACE FUNCTION pg_temp.async_engine_defer({params}) RETURNS text
         LANGUAGE plpgsql AS $body$
         DECLARE v_held bigint; v_expired bigint; v_endpoint text; v_counted bigint;
         BEGIN
             IF p_lock IS NOT NULL THEN PERFORM pg_advisory_xact_lock(p_lock); END IF;
             {insert};
             {counted};
             GET DIAGNOSTICS v_counted = ROW_COUNT;
             IF v_counted = 0 THEN
                 RAISE EXCEPTION 'queue full' USING ERRCODE = '{QUEUE_FULL}';
             END IF;
             IF p_lock IS NULL OR EXISTS ({has_request}) THEN RETURN NULL; END IF;
             SELECT h.* INTO v_held, v_expired FROM ({held}) h;
             IF v_held >= p_max_workers THEN
                 IF v_expired > 0 THEN
                     RAISE EXCEPTION 'slots to reap' USING ERRCODE = '{REAP_FIRST}';
                 END IF;
                 RETURN NULL;
             END IF;
             SELECT e.endpoint INTO v_endpoint FROM ({due_first_unattended}) e;
             IF v_endpoint IS NULL THEN
                 SELECT e.endpoint INTO v_endpoint FROM ({due_first}) e;
             END IF;
             IF v_endpoint IS NULL THEN RETURN NULL; END IF;
             {send};
             {not_due};
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
        held = bind(HELD, &["p_server", "p_now"]),
        due_first_unattended = bind(DUE_FIRST_UNATTENDED, &["p_now", "p_site"]),
        due_first = bind(DUE_FIRST, &["p_now", "p_site"]),
        send = bind(
            SEND_SLOT,
            &[
                "p_slot",
                "p_server",
                "v_endpoint",
                "p_deadline",
                "p_now",
                "p_site"
            ]
        ),
        not_due = bind(NOT_DUE, &["p_site", "v_endpoint"]),
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
    fn the_function_binds_every_statement() {
        let f = create_function();
        assert!(!f.contains('?'), "{f}");
        assert!(f.contains("FOR UPDATE SKIP LOCKED"), "{f}");
        assert_eq!(f.matches("$body$").count(), 2, "{f}");
    }
}
