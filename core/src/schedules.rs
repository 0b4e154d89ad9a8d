//! Recurring schedules: their rows, and the chain of occurrences each one
//! keeps — always exactly one pending occurrence, an ordinary queued task
//! naming its schedule and its own time (`scheduled_at`).
//!
//! The next occurrence is created in the transaction that claims (or skips)
//! the current one, so a worker killed mid-run loses neither; the database
//! refuses a second pending occurrence and a second task for one time.

use crate::clock::Millis;
use crate::db::{args, Row, Tx};
use crate::due::{became_queued, recompute_next_due};
use crate::error::{invalid, Result};
use crate::scalar::Scalar;
use crate::task::{check_name, State};
use crate::when::{time_zone, When};
use jiff::tz::TimeZone;

/// Longest schedule name, in bytes.
pub const MAX_SCHEDULE_NAME_LEN: usize = 200;
/// How late an occurrence may start and still count as on time; later (or
/// once the following occurrence is due too) it was missed, and `catch_up`
/// decides.
pub const CATCH_UP_GRACE_MS: Millis = 60_000;
/// The option names `schedule()` knows.
pub const OPTION_NAMES: [&str; 6] = [
    "timezone",
    "catch_up",
    "overlap",
    "priority",
    "max_attempts",
    "timeout",
];

/// What happens to occurrences missed while nothing ran (downtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Missed occurrences run once, then the schedule goes on from now.
    One,
    /// Missed occurrences are skipped.
    None,
}

impl CatchUp {
    fn as_str(self) -> &'static str {
        match self {
            CatchUp::One => "one",
            CatchUp::None => "none",
        }
    }
}

/// A schedule as `schedule()` defines it, validated.
#[derive(Debug, Clone)]
pub struct ScheduleDef {
    /// Its name, unique per site.
    pub name: String,
    /// The `when` expression as given.
    pub when: String,
    /// The parsed expression.
    pub parsed: When,
    /// IANA time zone name.
    pub timezone: String,
    /// That zone, looked up once.
    pub zone: TimeZone,
    /// Endpoint path (normalized).
    pub endpoint: String,
    /// Task name.
    pub task: String,
    /// Args as JSON text.
    pub args: String,
    /// Priority of its occurrences.
    pub priority: i64,
    /// Attempts of each occurrence.
    pub max_attempts: u32,
    /// Lease of each occurrence, ms.
    pub timeout: Millis,
    /// What to do with missed occurrences.
    pub catch_up: CatchUp,
    /// Whether an occurrence may start while the previous one runs.
    pub overlap: bool,
}

/// The options of `schedule()`, before the settings fill what is missing.
#[derive(Debug, Clone, Default)]
pub struct ScheduleOptions {
    /// `timezone`.
    pub timezone: Option<String>,
    /// `catch_up`.
    pub catch_up: Option<CatchUp>,
    /// `overlap`.
    pub overlap: bool,
    /// `priority`, `max_attempts`, `timeout`: as for `defer()`.
    pub task: crate::task::DeferOptions,
}

impl ScheduleOptions {
    /// Sets one option by name; refuses unknown names and wrong types.
    pub fn set(&mut self, name: &str, value: &Scalar) -> Result<()> {
        match name {
            "timezone" => match value {
                Scalar::Str(z) => {
                    time_zone(z)?;
                    self.timezone = Some(z.clone());
                }
                _ => return Err(invalid!("option 'timezone' must be an IANA time zone name such as UTC or Europe/Berlin, got {}", value.describe())),
            },
            "catch_up" => {
                self.catch_up = Some(match value {
                    Scalar::Str(s) if s == "one" => CatchUp::One,
                    Scalar::Str(s) if s == "none" => CatchUp::None,
                    _ => {
                        return Err(invalid!(
                            "option 'catch_up' must be 'one' (missed occurrences run once) or \
                             'none' (they are skipped), got {}",
                            value.describe()
                        ))
                    }
                })
            }
            "overlap" => match value {
                Scalar::Bool(b) => self.overlap = *b,
                _ => {
                    return Err(invalid!(
                        "option 'overlap' must be true or false, got {}",
                        value.describe()
                    ))
                }
            },
            "priority" | "max_attempts" | "timeout" => self.task.set(name, value)?,
            _ => {
                return Err(invalid!(
                    "unknown option '{}'; known options: {}",
                    name.escape_default(),
                    OPTION_NAMES.join(", ")
                ))
            }
        }
        Ok(())
    }
}

/// Checks a schedule name: 1 to 200 bytes, no control characters.
pub fn check_schedule_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(invalid!("schedule name is empty"));
    }
    if name.len() > MAX_SCHEDULE_NAME_LEN {
        return Err(invalid!(
            "schedule name is {} bytes long; the limit is {MAX_SCHEDULE_NAME_LEN}",
            name.len()
        ));
    }
    check_name(name).map_err(|e| invalid!("schedule {}", e.message().replacen("task ", "", 1)))
}

/// A schedule's record, as `schedules()` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleInfo {
    /// Its name.
    pub name: String,
    /// Its `when` expression.
    pub when: String,
    /// Its time zone.
    pub timezone: String,
    /// Endpoint path.
    pub endpoint: String,
    /// Task name.
    pub task: String,
    /// Args as JSON text.
    pub args: String,
    /// `one` or `none`.
    pub catch_up: &'static str,
    /// Whether runs may overlap.
    pub overlap: bool,
    /// Its pending occurrence's time (None: it never matches again).
    pub next_at: Option<Millis>,
    /// When its latest run started.
    pub last_run_at: Option<Millis>,
    /// The state of its latest run's task (None once purged, or before any run).
    pub last_state: Option<State>,
    /// That task's last error.
    pub last_error: Option<String>,
    /// Occurrences started.
    pub runs: i64,
    /// Occurrences skipped (overlap, or missed with `catch_up` none).
    pub skipped: i64,
    /// When it was created.
    pub created_at: Millis,
}

const INFO_SQL: &str = "SELECT s.name, s.spec, s.timezone, s.endpoint, s.task, s.args, s.catch_up,
        s.overlap, s.next_at, s.last_run_at, l.state, l.last_error, s.runs, s.skipped, s.created_at
    FROM schedules s LEFT JOIN tasks l ON l.id = (
        SELECT id FROM tasks t WHERE t.site = s.site AND t.schedule = s.name
            AND t.started_at IS NOT NULL ORDER BY t.scheduled_at DESC LIMIT 1)
    WHERE s.site = ?1";

fn info_from_row(mut r: Row) -> Result<ScheduleInfo> {
    Ok(ScheduleInfo {
        name: r.text(0)?,
        when: r.text(1)?,
        timezone: r.text(2)?,
        endpoint: r.text(3)?,
        task: r.text(4)?,
        args: r.text(5)?,
        catch_up: if r.text(6)? == "none" { "none" } else { "one" },
        overlap: r.int(7)? != 0,
        next_at: r.opt_int(8)?,
        last_run_at: r.opt_int(9)?,
        last_state: r.opt_text(10)?.as_deref().and_then(State::parse),
        last_error: r.opt_text(11)?,
        runs: r.int(12)?,
        skipped: r.int(13)?,
        created_at: r.int(14)?,
    })
}

/// The schedules of `site`, by name.
pub(crate) fn list(tx: &mut dyn Tx, site: &str) -> Result<Vec<ScheduleInfo>> {
    tx.query(&format!("{INFO_SQL} ORDER BY s.name"), args![site])?
        .into_iter()
        .map(info_from_row)
        .collect()
}

/// One schedule of `site`.
pub(crate) fn get(tx: &mut dyn Tx, site: &str, name: &str) -> Result<Option<ScheduleInfo>> {
    tx.row(&format!("{INFO_SQL} AND s.name = ?2"), args![site, name])?
        .map(info_from_row)
        .transpose()
}

/// The stored definition of a schedule, as compared with a new one.
struct Stored {
    spec: String,
    timezone: String,
    endpoint: String,
    task: String,
    args: String,
    priority: i64,
    max_attempts: i64,
    timeout: Millis,
    catch_up: String,
    overlap: bool,
    phase: Millis,
}

fn stored(tx: &mut dyn Tx, site: &str, name: &str) -> Result<Option<Stored>> {
    let Some(mut r) = tx.row(
        "SELECT spec, timezone, endpoint, task, args, priority, max_attempts, timeout, catch_up,
                overlap, phase
         FROM schedules WHERE site = ?1 AND name = ?2",
        args![site, name],
    )?
    else {
        return Ok(None);
    };
    Ok(Some(Stored {
        spec: r.text(0)?,
        timezone: r.text(1)?,
        endpoint: r.text(2)?,
        task: r.text(3)?,
        args: r.text(4)?,
        priority: r.int(5)?,
        max_attempts: r.int(6)?,
        timeout: r.int(7)?,
        catch_up: r.text(8)?,
        overlap: r.int(9)? != 0,
        phase: r.int(10)?,
    }))
}

impl Stored {
    /// The first occurrence after `after`. A stored expression or time zone
    /// this machine cannot read (a time zone missing from its tz database)
    /// is logged and ends the chain, instead of failing the claim and with
    /// it every task of the endpoint.
    fn next_after(&self, name: &str, after: Millis) -> Option<Millis> {
        let next = When::parse(&self.spec)
            .and_then(|w| Ok(w.next_after(&time_zone(&self.timezone)?, self.phase, after)));
        next.unwrap_or_else(|e| {
            crate::log::emit(format!(
                "schedule '{name}' stops: {}; schedule() it again to resume",
                e.message()
            ));
            None
        })
    }

    fn same_as(&self, d: &ScheduleDef) -> bool {
        self.same_timing(d)
            && self.endpoint == d.endpoint
            && self.task == d.task
            && self.args == d.args
            && self.priority == d.priority
            && self.max_attempts == i64::from(d.max_attempts)
            && self.timeout == d.timeout
            && self.catch_up == d.catch_up.as_str()
            && self.overlap == d.overlap
    }

    fn same_timing(&self, d: &ScheduleDef) -> bool {
        self.spec == d.when && self.timezone == d.timezone
    }
}

/// The schedule's record when it exists with exactly this definition.
pub(crate) fn unchanged(
    tx: &mut dyn Tx,
    site: &str,
    d: &ScheduleDef,
) -> Result<Option<ScheduleInfo>> {
    match stored(tx, site, &d.name)? {
        Some(s) if s.same_as(d) => get(tx, site, &d.name),
        _ => Ok(None),
    }
}

/// Creates or updates a schedule (idempotent: an unchanged definition
/// writes nothing). A new or re-timed schedule's first occurrence is the
/// first match after `now`; otherwise the pending occurrence keeps its time
/// and takes the new definition.
pub(crate) fn upsert(tx: &mut dyn Tx, site: &str, d: &ScheduleDef, now: Millis) -> Result<()> {
    let new_phase = now - now.rem_euclid(1000);
    let existing = match stored(tx, site, &d.name)? {
        Some(s) => Some(s),
        None => {
            let inserted = write_definition(tx, site, d, new_phase, now, INSERT_DEFINITION)?;
            if inserted > 0 {
                let next = d.parsed.next_after(&d.zone, new_phase, now);
                return set_pending(tx, site, &d.name, next, now);
            }
            // Another process created it meanwhile (PostgreSQL): compare with theirs.
            stored(tx, site, &d.name)?
        }
    };
    let Some(old) = existing else {
        return Ok(());
    };
    if old.same_as(d) {
        return Ok(());
    }
    let phase = if old.same_timing(d) {
        old.phase
    } else {
        new_phase
    };
    write_definition(tx, site, d, phase, now, UPDATE_DEFINITION)?;
    let pending_at = drop_pending(tx, site, &d.name)?;
    let next = match pending_at {
        Some(at) if old.same_timing(d) => Some(at),
        _ => d.parsed.next_after(&d.zone, phase, now),
    };
    set_pending(tx, site, &d.name, next, now)
}

/// Stores a new schedule's definition (nothing when the name is taken).
const INSERT_DEFINITION: &str = "INSERT INTO schedules (site, name, spec, timezone, endpoint, task,
        args, priority, max_attempts, timeout, catch_up, overlap, phase, created_at, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)
    ON CONFLICT (site, name) DO NOTHING";

/// Replaces an existing schedule's definition.
const UPDATE_DEFINITION: &str = "UPDATE schedules SET spec = ?3, timezone = ?4, endpoint = ?5,
        task = ?6, args = ?7, priority = ?8, max_attempts = ?9, timeout = ?10, catch_up = ?11,
        overlap = ?12, phase = ?13, updated_at = ?14
    WHERE site = ?1 AND name = ?2";

/// Runs `sql` (one of the two above) with the definition's values; returns rows changed.
fn write_definition(
    tx: &mut dyn Tx,
    site: &str,
    d: &ScheduleDef,
    phase: Millis,
    now: Millis,
    sql: &str,
) -> Result<usize> {
    tx.execute(
        sql,
        args![
            site,
            &d.name,
            &d.when,
            &d.timezone,
            &d.endpoint,
            &d.task,
            &d.args,
            d.priority,
            d.max_attempts,
            d.timeout,
            d.catch_up.as_str(),
            i64::from(d.overlap),
            phase,
            now
        ],
    )
}

/// Deletes a schedule's pending occurrence, if any; returns its time.
fn drop_pending(tx: &mut dyn Tx, site: &str, name: &str) -> Result<Option<Millis>> {
    let Some(mut row) = tx.row(
        "DELETE FROM tasks WHERE site = ?1 AND schedule = ?2 AND state = 'queued'
             AND started_at IS NULL
         RETURNING endpoint, scheduled_at",
        args![site, name],
    )?
    else {
        return Ok(None);
    };
    let (endpoint, at) = (row.text(0)?, row.int(1)?);
    recompute_next_due(tx, site, &endpoint, -1)?;
    Ok(Some(at))
}

/// Deletes a schedule and its pending occurrence (a running one finishes);
/// false when there is no such schedule.
pub(crate) fn remove(tx: &mut dyn Tx, site: &str, name: &str) -> Result<bool> {
    let removed = tx.execute(
        "DELETE FROM schedules WHERE site = ?1 AND name = ?2",
        args![site, name],
    )?;
    drop_pending(tx, site, name)?;
    Ok(removed > 0)
}

/// Queues the schedule's occurrence at `at` (from its stored definition)
/// and records it as the schedule's next; `None` records that it never
/// matches again. A time that already has its task moves on to the next.
fn set_pending(
    tx: &mut dyn Tx,
    site: &str,
    name: &str,
    mut at: Option<Millis>,
    now: Millis,
) -> Result<()> {
    for _ in 0..3 {
        let Some(t) = at else { break };
        let id = crate::id::new_task_id(now);
        let row = tx.row(
            "INSERT INTO tasks (id, site, endpoint, name, args, state, priority, due_at,
                                max_attempts, timeout, schedule, scheduled_at, created_at, updated_at)
             SELECT ?1, site, endpoint, task, args, 'queued', priority, ?3, max_attempts, timeout,
                    name, ?3, ?4, ?4
             FROM schedules WHERE site = ?5 AND name = ?2
             ON CONFLICT DO NOTHING RETURNING endpoint",
            args![&id, name, t, now, site],
        )?;
        if let Some(mut row) = row {
            became_queued(tx, site, &row.text(0)?, t, i64::MAX)?;
            break;
        }
        // Taken already (a task for that exact time exists): the next one.
        let Some(s) = stored(tx, site, name)? else {
            return Ok(());
        };
        at = s.next_after(name, t);
    }
    tx.execute(
        "UPDATE schedules SET next_at = ?3 WHERE site = ?1 AND name = ?2",
        args![site, name, at],
    )?;
    Ok(())
}

/// What becomes of an occurrence that is about to start.
pub(crate) struct Decision {
    /// Why it is skipped instead of run.
    pub skip: Option<String>,
    /// The occurrence to queue next.
    next: Option<Millis>,
}

/// Decides about the pending occurrence `id` of schedule `name`, due at
/// `at`, now being claimed: run or skip, and the next occurrence. None when
/// the schedule is gone (the occurrence then runs as a plain task).
pub(crate) fn decide(
    tx: &mut dyn Tx,
    site: &str,
    name: &str,
    id: &str,
    at: Millis,
    now: Millis,
) -> Result<Option<Decision>> {
    let Some(s) = stored(tx, site, name)? else {
        return Ok(None);
    };
    let following = s.next_after(name, at);
    let missed = following.is_some_and(|f| f <= now) || now - at > CATCH_UP_GRACE_MS;
    let next = if missed {
        s.next_after(name, now)
    } else {
        following
    };
    let skip = if missed && s.catch_up == "none" {
        Some(format!(
            "skipped: this occurrence was missed ({} s late; catch_up is 'none')",
            (now - at) / 1000
        ))
    } else if !s.overlap {
        tx.text(
            "SELECT id FROM tasks WHERE site = ?1 AND schedule = ?2 AND state = 'running'
                 AND id <> ?3 LIMIT 1",
            args![site, name, id],
        )?
        .map(|running| {
            format!(
                "skipped: the previous run (task {running}) was still running (overlap is false)"
            )
        })
    } else {
        None
    };
    Ok(Some(Decision { skip, next }))
}

/// Carries out a decision once the occurrence has left the pending state
/// (claimed, or cancelled as skipped): counts it and queues the next.
pub(crate) fn advance(
    tx: &mut dyn Tx,
    site: &str,
    name: &str,
    d: &Decision,
    now: Millis,
) -> Result<()> {
    let ran = d.skip.is_none();
    tx.execute(
        "UPDATE schedules SET runs = runs + ?3, skipped = skipped + ?4,
             last_run_at = CASE WHEN ?3 = 1 THEN ?5 ELSE last_run_at END
         WHERE site = ?1 AND name = ?2",
        args![site, name, i64::from(ran), i64::from(!ran), now],
    )?;
    set_pending(tx, site, name, d.next, now)
}

/// After a pending occurrence was cancelled by hand: the schedule goes on
/// with the first occurrence after it and after now, counting it skipped.
pub(crate) fn cancelled(
    tx: &mut dyn Tx,
    site: &str,
    name: &str,
    at: Millis,
    now: Millis,
) -> Result<()> {
    let Some(s) = stored(tx, site, name)? else {
        return Ok(());
    };
    let next = s.next_after(name, at.max(now));
    let d = Decision {
        skip: Some("cancelled".into()),
        next,
    };
    advance(tx, site, name, &d, now)
}
