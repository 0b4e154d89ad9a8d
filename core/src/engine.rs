//! The engine's operations as the PHP API calls them: each one validated,
//! then carried out in one short transaction.

use crate::clock::{secs_to_ms, Millis};
use crate::db::Tx;
use crate::delivery;
use crate::due::{self, FailingEndpoint};
use crate::endpoint::{normalize_endpoint, BaseUrl};
use crate::error::{Error, Result};
use crate::meta;
use crate::protocol::{self, Incoming};
use crate::queue::{self, NewTask};
use crate::schedules::{self, check_schedule_name, ScheduleDef, ScheduleInfo, ScheduleOptions};
use crate::settings::Settings;
use crate::slots::{self, Reserved};
use crate::store::{self, OneTripDefer, Store};
use crate::task::{
    check_args_size, check_name, Claimed, DeferOptions, State, TaskInfo, TaskSpec, MAX_SECONDS,
};
use crate::when::{time_zone, When};

/// Finished tasks purged per request end, so purging never delays a request much.
const PURGE_PER_REQUEST: u32 = 100;
/// Finished tasks purged per `kick()`.
const PURGE_PER_KICK: u32 = 10_000;

/// A signed self-request, ready to send: POST to base URL + `endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    /// Slot id (`X-Async-Engine-Slot`).
    pub slot: String,
    /// Endpoint path.
    pub endpoint: String,
    /// Signing time, Unix seconds (`X-Async-Engine-Time`).
    pub time: i64,
    /// Hex HMAC (`X-Async-Engine-Signature`).
    pub signature: String,
}

/// What `defer()` did.
#[derive(Debug, Clone, PartialEq)]
pub struct Deferred {
    /// The task's id (an existing task's, for a `unique` key in use).
    pub id: String,
    /// False when a live task with the same `unique` key was returned instead.
    pub created: bool,
    /// The self-request to send now, when the task is due and a slot was free.
    pub dispatch: Option<Dispatch>,
}

/// What `accept()` found.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The slot this request now holds (until the request ends).
    pub slot: String,
    /// The endpoint path the request was sent to.
    pub endpoint: String,
    /// The task claimed, or `None` when nothing was due.
    pub task: Option<Claimed>,
    /// When nothing was due: the slot's next use, to send.
    pub dispatch: Option<Dispatch>,
}

/// What a task request does once its tasks ended (see [`Engine::finish_batch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next<'a> {
    /// Nothing more here (other tasks are still held, or none is accepted).
    Stay,
    /// Claim the endpoint's next due tasks, up to `max`, with the
    /// request's slot (the first with its own lease, the others with a
    /// head start for their wait).
    Claim {
        /// The request's slot.
        slot: &'a str,
        /// The endpoint it accepted.
        endpoint: &'a str,
        /// Most tasks to claim.
        max: usize,
    },
    /// The request is done: free its slot and, if `send`, reserve it for
    /// the next due endpoint; if `wake`, read when this worker next has work.
    Release {
        /// The request's slot.
        slot: &'a str,
        /// Whether a request can be sent (a sender and target exist).
        send: bool,
        /// Whether to read the next wake-up time.
        wake: bool,
    },
}

/// What [`Engine::finish_batch`] did besides ending the tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct AfterTask {
    /// The tasks claimed (`Next::Claim`), in the order to run them.
    pub claimed: Vec<Claimed>,
    /// The slot's next request, to send (`Next::Release`).
    pub dispatch: Option<Dispatch>,
    /// When this worker next has work (`Next::Release` with `wake`).
    pub wake: Option<Millis>,
}

/// Server-wide figures for `stats()`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Task count per state.
    pub counts: Vec<(State, i64)>,
    /// Endpoints whose last deliveries failed (backing off).
    pub failing: Vec<FailingEndpoint>,
    /// Task requests in flight (slots held).
    pub in_flight: i64,
    /// The `max_workers` setting.
    pub max_workers: u32,
    /// Earliest due time of any queued task.
    pub next_due: Option<Millis>,
    /// How long the earliest due task has been due, if any is due now.
    pub oldest_due_age: Option<Millis>,
}

/// Tasks finished in one interval of `history()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// Start of the interval.
    pub at: Millis,
    /// Tasks that completed in it.
    pub done: i64,
    /// Tasks that died in it (failed their last attempt).
    pub dead: i64,
}

/// Most intervals `history()` returns.
pub const MAX_HISTORY_BUCKETS: i64 = 1000;

/// One process's handle on the engine: the database connection and what it caches.
pub struct Engine {
    store: Box<dyn Store>,
    /// The HMAC secret stored in the database, once read.
    secret: Option<Vec<u8>>,
}

impl Engine {
    /// Opens the database the settings name.
    pub fn open(settings: &Settings) -> Result<Engine> {
        Ok(Engine {
            store: store::open(settings)?,
            secret: None,
        })
    }

    /// Whether this handle uses the database the settings name; applies a
    /// changed busy timeout. A StorageError when that file was replaced or
    /// deleted since it was opened.
    pub fn serves(&mut self, settings: &Settings) -> Result<bool> {
        if !self.store.serves(settings) {
            return Ok(false);
        }
        self.store.check()?;
        self.store.set_busy_timeout(settings.busy_timeout)?;
        Ok(true)
    }

    /// The engine in `slot` when it serves `settings`' database, else one
    /// newly opened there (the old connection closed first): a process keeps
    /// one connection and reopens only when the database setting changes.
    pub fn reuse_or_open<'a>(
        slot: &'a mut Option<Engine>,
        settings: &Settings,
    ) -> Result<&'a mut Engine> {
        let reusable = match slot.as_mut() {
            Some(e) => e.serves(settings)?,
            None => false,
        };
        if !reusable {
            *slot = None;
            *slot = Some(Engine::open(settings)?);
        }
        Ok(slot.as_mut().expect("opened above"))
    }

    /// The database connection, for the modules that keep their own
    /// tables (the hub).
    pub(crate) fn store(&mut self) -> &mut (dyn Store + 'static) {
        self.store.as_mut()
    }

    /// The HMAC secret: `configured` if given, else the one stored in the
    /// database, generated and stored on first use.
    pub(crate) fn secret(&mut self, configured: Option<&str>) -> Result<Vec<u8>> {
        if let Some(s) = configured {
            return Ok(s.as_bytes().to_vec());
        }
        if let Some(s) = &self.secret {
            return Ok(s.clone());
        }
        let fresh = crate::id::random_hex(32);
        let secret = self
            .store
            .write(|tx| meta::get_or_store(tx, "secret", &fresh))?;
        let secret = secret.unwrap_or(fresh).into_bytes();
        self.secret = Some(secret.clone());
        Ok(secret)
    }

    fn sign(
        &mut self,
        settings: &Settings,
        r: Option<Reserved>,
        now: Millis,
    ) -> Result<Option<Dispatch>> {
        let Some(r) = r else { return Ok(None) };
        let secret = self.secret(settings.secret.as_deref())?;
        let time = now.div_euclid(1000);
        let signature = protocol::sign(&secret, &r.slot, &r.endpoint, time);
        Ok(Some(Dispatch {
            slot: r.slot,
            endpoint: r.endpoint,
            time,
            signature,
        }))
    }

    /// Queues a task. `args` is its JSON text. When it is due now, a slot is
    /// free, `send` (a sender and a base URL exist) and this server has no
    /// request to its endpoint on its way or running already (that one claims it next; see
    /// docs/architecture.md, "Hand-off to a running request"), reserves the
    /// slot and returns the request to send.
    pub fn defer(
        &mut self,
        settings: &Settings,
        base: Option<&BaseUrl>,
        task: &TaskSpec<'_>,
        options: &DeferOptions,
        send: bool,
        now: Millis,
    ) -> Result<Deferred> {
        let TaskSpec {
            endpoint,
            name,
            args,
        } = *task;
        let endpoint = normalize_endpoint(endpoint, base)?;
        check_name(name)?;
        check_args_size(args, settings)?;
        let id = crate::id::new_task_id(now);
        let site = settings.site_name();
        let task = NewTask {
            site,
            endpoint: &endpoint,
            name,
            args,
            priority: options.priority,
            due_at: options.due_at(now),
            max_attempts: options.max_attempts.unwrap_or(settings.max_attempts),
            timeout: secs_to_ms(options.timeout.unwrap_or(settings.timeout)),
            unique: options.unique.as_deref(),
        };
        let server = settings.server_name();
        let due = send && task.due_at <= now;
        let one_trip = match task.unique {
            Some(_) => None,
            None => self.store.defer_in_one_trip(&OneTripDefer {
                id: &id,
                task: &task,
                max_queued: settings.max_queued,
                now,
                reserve: due.then_some((server, settings.max_workers)),
            })?,
        };
        let (id, created, reserved) = if let Some(reserved) = one_trip {
            (id, true, reserved)
        } else {
            self.store.write(|tx| {
                let Some(lock) = due.then(|| slots::lock(tx, server)).transpose()? else {
                    let (id, created) = queue::insert(tx, &id, &task, settings.max_queued, now)?;
                    return Ok((id, created, None));
                };
                let (id, created, attended) =
                    delivery::queue_due(tx, &lock, &id, &task, settings.max_queued, now)?;
                let reserved = match created && !attended {
                    true => reserve(tx, Some(&lock), settings, None, now)?,
                    false => None,
                };
                Ok((id, created, reserved))
            })?
        };
        let dispatch = self.sign(settings, reserved, now)?;
        Ok(Deferred {
            id,
            created,
            dispatch,
        })
    }

    /// Creates or updates (by name) a recurring schedule and returns its
    /// record. Idempotent: an unchanged definition writes nothing. `args` is
    /// the JSON text each occurrence gets.
    #[allow(clippy::too_many_arguments)]
    pub fn schedule(
        &mut self,
        settings: &Settings,
        base: Option<&BaseUrl>,
        name: &str,
        when: &str,
        spec: &TaskSpec<'_>,
        options: &ScheduleOptions,
        now: Millis,
    ) -> Result<ScheduleInfo> {
        let TaskSpec {
            endpoint,
            name: task,
            args,
        } = *spec;
        check_schedule_name(name)?;
        let parsed = When::parse(when)?;
        let endpoint = normalize_endpoint(endpoint, base)?;
        check_name(task)?;
        check_args_size(args, settings)?;
        let timezone = options
            .timezone
            .clone()
            .unwrap_or_else(|| settings.timezone_name().to_string());
        let zone = time_zone(&timezone)?;
        if parsed.next_after(&zone, now, now).is_none() {
            return Err(Error::InvalidTask(format!(
                "schedule '{when}' never matches (within the next 30 years)"
            )));
        }
        let def = ScheduleDef {
            name: name.to_string(),
            when: when.to_string(),
            parsed,
            timezone,
            zone,
            endpoint,
            task: task.to_string(),
            args: args.to_string(),
            priority: options.task.priority,
            max_attempts: options.task.max_attempts.unwrap_or(settings.max_attempts),
            timeout: secs_to_ms(options.task.timeout.unwrap_or(settings.timeout)),
            catch_up: options.catch_up.unwrap_or(schedules::CatchUp::One),
            overlap: options.overlap,
        };
        let site = settings.site_name();
        // Called on every request or deploy: an unchanged schedule is only read.
        if let Some(info) = self.store.read(|tx| schedules::unchanged(tx, site, &def))? {
            return Ok(info);
        }
        self.store.write(|tx| {
            schedules::upsert(tx, site, &def, now)?;
            schedules::get(tx, site, name)?
                .ok_or_else(|| Error::Storage(format!("schedule '{name}' vanished")))
        })
    }

    /// Deletes a schedule of this site and its pending occurrence (a running
    /// one finishes); false when there is none of that name.
    pub fn unschedule(&mut self, settings: &Settings, name: &str) -> Result<bool> {
        check_schedule_name(name)?;
        self.store
            .write(|tx| schedules::remove(tx, settings.site_name(), name))
    }

    /// This site's schedules, by name.
    pub fn schedules(&mut self, settings: &Settings) -> Result<Vec<ScheduleInfo>> {
        self.store
            .read(|tx| schedules::list(tx, settings.site_name()))
    }

    /// Verifies a self-request, consumes its slot once and claims the
    /// endpoint's next due task. A rejected request changes nothing. When
    /// nothing is due the slot is freed, and handed on if `send`.
    pub fn accept(
        &mut self,
        settings: &Settings,
        req: &Incoming,
        send: bool,
        now: Millis,
    ) -> Result<Accepted> {
        let secret = self.secret(settings.secret.as_deref())?;
        let slot = protocol::verify(&secret, req, now.div_euclid(1000))?;
        let endpoint = req.uri.clone();
        let server = settings.server_name();
        let site = settings.site_name();
        let (task, reserved) = self.store.write(|tx| {
            let lock = (send && slots::worth_locking(tx, server, settings.max_workers, now)?)
                .then(|| slots::lock(tx, server))
                .transpose()?;
            delivery::accept(tx, &slot, site, &endpoint, now)?;
            match queue::claim(tx, site, &endpoint, &slot, 1, 0, now)?.pop() {
                Some(task) => {
                    let more = match &lock {
                        Some(lock) => delivery::reserve_more(
                            tx,
                            lock,
                            site,
                            settings.max_workers,
                            &endpoint,
                            now,
                        )?,
                        None => None,
                    };
                    Ok((Some(task), more))
                }
                None => {
                    slots::release(tx, &slot)?;
                    Ok((None, reserve(tx, lock.as_ref(), settings, None, now)?))
                }
            }
        })?;
        let dispatch = self.sign(settings, reserved, now)?;
        Ok(Accepted {
            slot,
            endpoint,
            task,
            dispatch,
        })
    }

    /// Claims the endpoint's next due task for a request that already holds
    /// `slot` (a batch in `serve()`).
    pub fn claim_next(
        &mut self,
        settings: &Settings,
        slot: &str,
        endpoint: &str,
        now: Millis,
    ) -> Result<Option<Claimed>> {
        let site = settings.site_name();
        self.store
            .write(|tx| Ok(claim_with_slot(tx, site, slot, endpoint, 1, now)?.pop()))
    }

    /// `serve()`'s one write per group of tasks: ends the tasks it ran
    /// (`None`: done, else the error) and does what the request does next
    /// (see [`Next`]), in one transaction. A task no longer held (reaped
    /// while its handler ran) is passed by: the run that took it over
    /// decides how it ends.
    pub fn finish_batch(
        &mut self,
        settings: &Settings,
        ended: &[(Claimed, Option<String>)],
        next: Next<'_>,
        now: Millis,
    ) -> Result<AfterTask> {
        let (server, site) = (settings.server_name(), settings.site_name());
        let handing_on = matches!(next, Next::Release { send: true, .. });
        // A failed task may be counted on its endpoint again, which locks
        // the endpoint's row: then the slot lock comes first, as in every
        // transaction that counts. Otherwise it comes after the tasks are
        // ended, the slot freed and old tasks purged, which lock only those
        // rows: on PostgreSQL it is then held for the reservation's one
        // call, the wake-up read and the commit (see docs/architecture.md,
        // "PostgreSQL").
        let failed = ended.iter().any(|(_, error)| error.is_some());
        let (claimed, reserved, wake) = self.store.write(|tx| {
            let mut lock = (handing_on && failed)
                .then(|| slots::lock(tx, server))
                .transpose()?;
            end_tasks(tx, ended, now)?;
            match next {
                Next::Stay => Ok((vec![], None, None)),
                Next::Claim {
                    slot,
                    endpoint,
                    max,
                } => Ok((
                    claim_with_slot(tx, site, slot, endpoint, max, now)?,
                    None,
                    None,
                )),
                Next::Release { slot, wake, .. } => {
                    let served = slots::release(tx, slot)?;
                    purge_expired(tx, settings, now, PURGE_PER_REQUEST)?;
                    if handing_on && lock.is_none() {
                        lock = Some(slots::lock(tx, server)?);
                    }
                    let reserved = reserve(tx, lock.as_ref(), settings, served.as_deref(), now)?;
                    let wake = match wake {
                        true => delivery::next_wake(tx, site, server, settings.max_workers, now)?,
                        false => None,
                    };
                    Ok((vec![], reserved, wake))
                }
            }
        })?;
        Ok(AfterTask {
            claimed,
            dispatch: self.sign(settings, reserved, now)?,
            wake,
        })
    }

    /// Marks a task held under `lease` as done.
    pub fn complete(&mut self, id: &str, lease: &str, now: Millis) -> Result<()> {
        self.store.write(|tx| queue::complete(tx, id, lease, now))
    }

    /// Fails a task held under `lease`; it retries after `retry_in` seconds
    /// (default: backoff) or is dead when its attempts are spent.
    pub fn fail(
        &mut self,
        id: &str,
        lease: &str,
        error: &str,
        retry_in: Option<f64>,
        now: Millis,
    ) -> Result<State> {
        let retry_in = retry_in
            .map(|s| check_seconds("retryIn", s, false))
            .transpose()?;
        self.store
            .write(|tx| queue::fail(tx, id, Some(lease), error, retry_in, now))
    }

    /// Lengthens the lease of a task held under `lease` to `seconds` from now.
    pub fn extend(&mut self, id: &str, lease: &str, seconds: f64, now: Millis) -> Result<()> {
        let ms = check_seconds("seconds", seconds, true)?;
        self.store.write(|tx| queue::extend(tx, id, lease, ms, now))
    }

    /// Ends a request: fails the tasks it still holds with `reason`, but
    /// puts those of them it never started (`unstarted`: claimed ahead by
    /// `serve()`) back in the queue with their attempt unspent; frees its
    /// slot and, if `send`, hands the slot to the next due endpoint.
    #[allow(clippy::too_many_arguments)]
    pub fn end_request(
        &mut self,
        settings: &Settings,
        slot: Option<&str>,
        held: &[(String, String)],
        unstarted: &[Claimed],
        reason: &str,
        send: bool,
        now: Millis,
    ) -> Result<Option<Dispatch>> {
        let server = settings.server_name();
        let site = settings.site_name();
        let reserved = self.store.write(|tx| {
            let lock = (send && slot.is_some())
                .then(|| slots::lock(tx, server))
                .transpose()?;
            // Given back first: they are then no longer running, and the
            // loop below passes them by.
            for task in unstarted {
                queue::give_back(tx, site, task, now)?;
            }
            for (id, lease) in held {
                if queue::holds(tx, id, lease)? {
                    queue::fail(tx, id, Some(lease), reason, None, now)?;
                }
            }
            let Some(slot) = slot else { return Ok(None) };
            let served = slots::release(tx, slot)?;
            purge_expired(tx, settings, now, PURGE_PER_REQUEST)?;
            reserve(tx, lock.as_ref(), settings, served.as_deref(), now)
        })?;
        self.sign(settings, reserved, now)
    }

    /// The cron entry: reaps expired leases and slots, purges old finished
    /// tasks, and reserves a slot for every due endpoint while slots are free.
    pub fn kick(&mut self, settings: &Settings, now: Millis) -> Result<Vec<Dispatch>> {
        let server = settings.server_name();
        let site = settings.site_name();
        let reserved = self.store.write(|tx| {
            let lock = slots::lock(tx, server)?;
            delivery::reap(tx, now)?;
            delivery::reap_dead(tx, &lock, now)?;
            purge_expired(tx, settings, now, PURGE_PER_KICK)?;
            let mut out = vec![];
            while let Some(r) = delivery::reserve(tx, &lock, site, settings.max_workers, None, now)?
            {
                out.push(r);
            }
            Ok(out)
        })?;
        reserved
            .into_iter()
            .map(|r| {
                self.sign(settings, Some(r), now)
                    .map(|d| d.expect("reserved"))
            })
            .collect()
    }

    /// Records what became of a sent request whose slot was never accepted
    /// (connection refused, timeout, an HTTP answer without `accept()`): the
    /// slot is freed, the endpoint backs off with `reason` (its tasks keep
    /// their attempts), and the slot goes to whatever is due next. Nothing
    /// happens (false) when the endpoint already accepted the slot.
    pub fn dispatch_failed(
        &mut self,
        settings: &Settings,
        slot: &str,
        reason: &str,
        now: Millis,
    ) -> Result<(bool, Option<Dispatch>)> {
        // Usually the endpoint accepted the slot: a read tells, no write needed.
        if !self.store.read(|tx| slots::is_sent(tx, slot))? {
            return Ok((false, None));
        }
        let server = settings.server_name();
        let (abandoned, reserved) = self.store.write(|tx| {
            let lock = slots::lock(tx, server)?;
            if !delivery::abandon(tx, slot, reason, now)? {
                return Ok((false, None));
            }
            Ok((true, reserve(tx, Some(&lock), settings, None, now)?))
        })?;
        Ok((abandoned, self.sign(settings, reserved, now)?))
    }

    /// Runs the write-ahead log checkpoint a commit of another thread left
    /// to its caller (see `store/checkpoint.rs`): the background thread's
    /// part, so that a PHP request never waits for the log's sync.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.store.checkpoint()
    }

    /// When `kick()` next has work: now when an endpoint is due and this
    /// server has a free slot (work that became due between two polls with
    /// no request to send it), or when a process holding one of this
    /// server's slots died (see docs/architecture.md, "Dead workers"); else
    /// the earliest future due time of an endpoint, or the first slot
    /// deadline or lease to expire (so that a killed worker's task is
    /// retried without waiting for traffic).
    pub fn next_wake(&mut self, settings: &Settings, now: Millis) -> Result<Option<Millis>> {
        let (site, server) = (settings.site_name(), settings.server_name());
        self.store.read(|tx| {
            if !slots::held_by_dead(tx, server, now)?.is_empty() {
                return Ok(Some(now));
            }
            delivery::next_wake(tx, site, server, settings.max_workers, now)
        })
    }

    /// A value kept in the database's `meta` table (such as the base URL
    /// learned from web requests, for the CLI).
    pub fn meta(&mut self, key: &str) -> Result<Option<String>> {
        self.store.read(|tx| meta::get(tx, key))
    }

    /// Stores a value in the `meta` table.
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.store.write(|tx| meta::set(tx, key, value))
    }

    /// A task's record (this site's tasks only).
    pub fn status(&mut self, settings: &Settings, id: &str) -> Result<Option<TaskInfo>> {
        self.store
            .read(|tx| queue::status(tx, settings.site_name(), id))
    }

    /// This site's tasks in `state`, newest first.
    pub fn list(&mut self, settings: &Settings, state: State, limit: u32) -> Result<Vec<TaskInfo>> {
        self.store
            .read(|tx| queue::list(tx, settings.site_name(), state, limit))
    }

    /// Cancels a queued or dead task of this site; false if it is neither.
    pub fn cancel(&mut self, settings: &Settings, id: &str, now: Millis) -> Result<bool> {
        self.store
            .write(|tx| queue::cancel(tx, settings.site_name(), id, now))
    }

    /// Requeues a dead task with fresh attempts; false if it is not dead.
    /// Returns the request to send when a slot was free.
    pub fn retry(
        &mut self,
        settings: &Settings,
        id: &str,
        send: bool,
        now: Millis,
    ) -> Result<(bool, Option<Dispatch>)> {
        let server = settings.server_name();
        let (requeued, reserved) = self.store.write(|tx| {
            let lock = send.then(|| slots::lock(tx, server)).transpose()?;
            if queue::retry(tx, settings.site_name(), id, now)?.is_none() {
                return Ok((false, None));
            }
            Ok((true, reserve(tx, lock.as_ref(), settings, None, now)?))
        })?;
        Ok((requeued, self.sign(settings, reserved, now)?))
    }

    /// Deletes finished tasks older than `older_than` seconds (dead ones too
    /// when `dead`); returns how many.
    pub fn purge(&mut self, older_than: f64, dead: bool, now: Millis) -> Result<usize> {
        let before = now - check_seconds("olderThan", older_than, false)?;
        let dead_before = if dead { before } else { Millis::MIN };
        self.store
            .write(|tx| queue::purge(tx, before, dead_before, u32::MAX))
    }

    /// Tasks finished done and dead per `bucket` seconds over the last
    /// `seconds`, oldest first, every interval present (zero when idle). The
    /// intervals are aligned to multiples of `bucket`; the last one holds `now`.
    pub fn history(&mut self, seconds: f64, bucket: f64, now: Millis) -> Result<Vec<Finished>> {
        let span = check_seconds("seconds", seconds, true)?;
        let width = check_seconds("bucket", bucket, true)?;
        if width == 0 || span / width > MAX_HISTORY_BUCKETS {
            return Err(Error::InvalidTask(format!(
                "seconds / bucket must be at most {MAX_HISTORY_BUCKETS} intervals of at least \
                 1 ms, got {seconds} / {bucket}"
            )));
        }
        let last = now.div_euclid(width) * width;
        let first = last - (span - 1).div_euclid(width) * width;
        let rows = self
            .store
            .read(|tx| queue::finished_per_bucket(tx, first, width))?;
        let mut out: Vec<Finished> = (0..=(last - first) / width)
            .map(|i| Finished {
                at: first + i * width,
                done: 0,
                dead: 0,
            })
            .collect();
        for (at, done, dead) in rows {
            if let Some(f) = out.get_mut(((at - first) / width) as usize) {
                f.done = done;
                f.dead = dead;
            }
        }
        Ok(out)
    }

    /// This site's counts per state, endpoints whose deliveries fail, this
    /// server's slots in flight, next due time, age of the oldest due task.
    pub fn stats(&mut self, settings: &Settings, now: Millis) -> Result<Stats> {
        let server = settings.server_name();
        let site = settings.site_name();
        let (counts, next_due, in_flight, failing) = self.store.read(|tx| {
            let (counts, next_due) = queue::counts(tx, site)?;
            let failing = due::failing_endpoints(tx, site)?;
            Ok((counts, next_due, slots::in_flight(tx, server)?, failing))
        })?;
        Ok(Stats {
            counts,
            failing,
            in_flight,
            max_workers: settings.max_workers,
            next_due,
            oldest_due_age: next_due.filter(|d| *d <= now).map(|d| now - d),
        })
    }
}

/// How much longer than its timeout the lease of a task claimed ahead of
/// its turn in a batch runs (it waits for the tasks claimed before it).
const CLAIM_HEAD_START_MS: Millis = 1_000;

/// Claims up to `max` of the endpoint's due tasks for the request holding
/// `slot`, if that slot is still its accepted one (see [`queue::claim`]).
fn claim_with_slot(
    tx: &mut dyn Tx,
    site: &str,
    slot: &str,
    endpoint: &str,
    max: usize,
    now: Millis,
) -> Result<Vec<Claimed>> {
    if !slots::is_accepted(tx, slot)? {
        return Ok(vec![]);
    }
    queue::claim(tx, site, endpoint, slot, max, CLAIM_HEAD_START_MS, now)
}

/// Ends the tasks a batch ran (`None`: done, else the error), passing by
/// those no longer held.
fn end_tasks(tx: &mut dyn Tx, ended: &[(Claimed, Option<String>)], now: Millis) -> Result<()> {
    for (task, error) in ended {
        let (id, lease) = (&task.id, &task.lease);
        let ended = match error {
            None => queue::complete(tx, id, lease, now),
            Some(error) => queue::fail(tx, id, Some(lease), error, None, now).map(drop),
        };
        match ended {
            Err(Error::NotHeld(_)) => {}
            other => other?,
        }
    }
    Ok(())
}

/// Reserves a slot when the transaction took the slot lock (it means to
/// hand the slot on); `busy` is the endpoint this request serves or served
/// (see [`delivery::reserve`]).
fn reserve(
    tx: &mut dyn Tx,
    lock: Option<&slots::SlotLock<'_>>,
    settings: &Settings,
    busy: Option<&str>,
    now: Millis,
) -> Result<Option<Reserved>> {
    match lock {
        Some(lock) => {
            let site = settings.site_name();
            delivery::reserve(tx, lock, site, settings.max_workers, busy, now)
        }
        None => Ok(None),
    }
}

/// Deletes up to `limit` finished tasks past their retention: done and
/// cancelled ones after `retention`, dead ones after `dead_retention`.
fn purge_expired(tx: &mut dyn Tx, settings: &Settings, now: Millis, limit: u32) -> Result<usize> {
    queue::purge(
        tx,
        now - secs_to_ms(settings.retention),
        now - secs_to_ms(settings.dead_retention),
        limit,
    )
}

/// Checks a duration argument in seconds and converts it to milliseconds.
fn check_seconds(name: &str, seconds: f64, positive: bool) -> Result<Millis> {
    if !seconds.is_finite()
        || seconds < 0.0
        || (positive && seconds == 0.0)
        || seconds > MAX_SECONDS
    {
        return Err(Error::InvalidTask(format!(
            "{name} must be a number of seconds {} and at most ten years, got {seconds}",
            if positive {
                "greater than 0"
            } else {
                "0 or more"
            }
        )));
    }
    Ok(secs_to_ms(seconds))
}
