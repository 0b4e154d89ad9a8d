//! The `AsyncEngine\Engine` class: the static API (docs/architecture.md, "PHP API"), each method
//! converting its PHP arguments and delegating to the core.
#![allow(non_snake_case)] // PHP parameter names: $olderThan

use crate::convert::{
    args_to_json, entries, json_to_array, scalar, type_name, value_to_zval, ArrayArg, Bytes,
    EmptyArray, MAX_ID_LEN,
};
use crate::errors::{invalid, to_php, OrThrow};
use crate::process;
use crate::request;
use crate::task::Task;
use async_engine_core::batch::{Batch, ServeOptions};
use async_engine_core::clock::{ms_to_secs, now_ms, Millis};
use async_engine_core::hub::tables::Update;
use async_engine_core::{Claimed, TaskSpec};
use async_engine_core::{
    DeferOptions, Error, Scalar, ScheduleInfo, ScheduleOptions, Settings, State, TaskInfo,
};
use ext_php_rs::boxed::ZBox;
use ext_php_rs::convert::{FromZval, IntoZval};
use ext_php_rs::error::php_error;
use ext_php_rs::flags::ClassFlags;
use ext_php_rs::flags::ErrorType;
use ext_php_rs::prelude::*;
use ext_php_rs::types::{ZendCallable, ZendClassObject, ZendHashTable, ZendObject, Zval};
use ext_php_rs::zend::ExecutorGlobals;
use std::sync::Arc;

/// Background and delayed tasks, run as signed requests the server sends to itself.
#[php_class]
#[php(name = "AsyncEngine\\Engine")]
#[php(flags = ClassFlags::Final)]
pub struct Engine;

/// Most records `tasks()` returns at once.
const MAX_LIST: i64 = 1000;

fn settings() -> PhpResult<Arc<Settings>> {
    process::settings().or_throw()
}

fn secs(ms: Millis) -> f64 {
    ms_to_secs(ms)
}

/// A task record as `status()` returns it.
fn info_array(t: TaskInfo) -> PhpResult<ZBox<ZendHashTable>> {
    let mut a = ZendHashTable::new();
    a.insert("id", t.id)?;
    a.insert("endpoint", t.endpoint)?;
    a.insert("task", t.name)?;
    a.insert("args", json_to_array(&t.args)?)?;
    a.insert("state", t.state.as_str())?;
    a.insert("priority", t.priority)?;
    a.insert("attempt", i64::from(t.attempt))?;
    a.insert("max_attempts", i64::from(t.max_attempts))?;
    a.insert("timeout", secs(t.timeout))?;
    a.insert("unique", t.unique)?;
    a.insert("due_at", secs(t.due_at))?;
    a.insert("created_at", secs(t.created_at))?;
    a.insert("updated_at", secs(t.updated_at))?;
    a.insert("started_at", t.started_at.map(secs))?;
    a.insert("finished_at", t.finished_at.map(secs))?;
    a.insert("lease_until", t.lease_until.map(secs))?;
    a.insert("last_error", t.last_error)?;
    a.insert("schedule", t.schedule)?;
    a.insert("scheduled_at", t.scheduled_at.map(secs))?;
    Ok(a)
}

/// A schedule's record as `schedule()` and `schedules()` return it.
fn schedule_array(s: ScheduleInfo) -> PhpResult<ZBox<ZendHashTable>> {
    let mut a = ZendHashTable::new();
    a.insert("name", s.name)?;
    a.insert("when", s.when)?;
    a.insert("timezone", s.timezone)?;
    a.insert("endpoint", s.endpoint)?;
    a.insert("task", s.task)?;
    a.insert("args", json_to_array(&s.args)?)?;
    a.insert("catch_up", s.catch_up)?;
    a.insert("overlap", s.overlap)?;
    a.insert("next_at", s.next_at.map(secs))?;
    a.insert("last_run_at", s.last_run_at.map(secs))?;
    a.insert("last_state", s.last_state.map(State::as_str))?;
    a.insert("last_error", s.last_error)?;
    a.insert("runs", s.runs)?;
    a.insert("skipped", s.skipped)?;
    a.insert("created_at", secs(s.created_at))?;
    Ok(a)
}

/// A `string|list<string>` of topics as a list, or an `InvalidTask` naming `call`.
fn topic_list(topics: &Zval, call: &str) -> PhpResult<Vec<String>> {
    let bad = |got: &Zval| {
        invalid(format!(
            "the topics of {call} must be a string or a list of strings, got {}",
            type_name(got)
        ))
    };
    let text = |z: &Zval| -> PhpResult<String> {
        let bytes = Bytes::from_zval(z).ok_or_else(|| bad(z))?;
        Ok(bytes
            .text("a topic", async_engine_core::hub::tables::MAX_TOPIC_LEN)?
            .to_string())
    };
    if topics.is_string() {
        return Ok(vec![text(topics)?]);
    }
    let table = topics.array().ok_or_else(|| bad(topics))?;
    entries(table).map(|(_, v)| text(v)).collect()
}

/// Claims the next task for this request: through the signed request on the
/// first call, then from the same slot for the rest of the batch.
fn accept_next() -> PhpResult<Option<Task>> {
    let settings = settings()?;
    // Only a request that has not accepted yet (nor handed its slot over)
    // has a signature to read; PHP's values are read before the runtime is
    // entered.
    let first = process::with(|rt| rt.request.accepted.is_none() && !rt.request.done);
    let (incoming, target) = match first {
        true => (Some(request::incoming()), process::target(&settings)),
        false => (None, None),
    };
    let slot = incoming.as_ref().and_then(|i| i.slot.clone());
    let (claimed, accepted_now) = process::with(|rt| {
        rt.accept(
            &settings,
            || incoming.unwrap_or_default(),
            target.as_ref(),
            now_ms(),
        )
    })
    .or_throw()?;
    if accepted_now {
        // The task keeps running if the sender hangs up.
        ignore_user_abort();
        if let Some(slot) = slot {
            request::say_accepted(&slot);
        }
    }
    Ok(claimed.map(Task::new))
}

/// `serve()`'s next task, given how the one it ran ended (see
/// [`async_engine_core::runtime::Runtime::serve_next`]).
fn serve_next(ran: Option<(Claimed, Option<String>)>, batch: &Batch) -> PhpResult<Option<Task>> {
    let settings = settings()?;
    let next = process::with(|rt| rt.serve_next(&settings, ran, batch.ahead(), now_ms()));
    Ok(next.or_throw()?.map(Task::new))
}

/// `ignore_user_abort(true)`: a task request runs to its end even when the
/// sender stops waiting for the answer.
fn ignore_user_abort() {
    if let Ok(f) = ZendCallable::try_from_name("ignore_user_abort") {
        let _ = f.try_call(vec![&true]);
    }
}

/// A warning, once per process, that tasks cannot be sent from here.
fn warn_no_target() {
    if !process::with(|rt| rt.first_no_target_warning()) {
        return;
    }
    let message = if request::persistent_sapi() {
        "async_engine: tasks are queued but cannot be sent: the web server's own address could \
         not be worked out from this request (see README, Deploying). Set async_engine.base_url."
    } else {
        "async_engine: tasks are queued but cannot be sent: no base URL is known in this CLI \
         process. Set async_engine.base_url (or let a task request run through the web server \
         first), or run Engine::kick() where it is known."
    };
    php_error(&ErrorType::Warning, message);
}

/// Whether the pending exception is PHP's own way of ending the request (`exit`).
fn exiting() -> bool {
    matches!(
        ExecutorGlobals::pending_exception_class().as_deref(),
        Some("UnwindExit") | Some("GracefulExit")
    )
}

/// Takes the pending exception and describes it: "Class: message in file:line".
fn take_exception_message() -> String {
    let Some(e) = ExecutorGlobals::take_exception() else {
        return "the handler failed".into();
    };
    describe_exception(&e)
}

fn describe_exception(e: &ZendObject) -> String {
    let call = |m: &str| e.try_call_method(m, vec![]).ok();
    let class = e.get_class_name().unwrap_or_else(|_| "Exception".into());
    let message = call("getMessage")
        .and_then(|z| z.string())
        .unwrap_or_default();
    let file = call("getFile").and_then(|z| z.string()).unwrap_or_default();
    let line = call("getLine").and_then(|z| z.long()).unwrap_or_default();
    format!("{class}: {message} in {file}:{line}")
}

#[php_impl]
impl Engine {
    /// Queues a task for `$endpoint` (a path on this site) and returns its id.
    /// Options: delay, at, priority, max_attempts, timeout, unique.
    #[php(defaults(args = EmptyArray, options = EmptyArray))]
    pub fn defer(
        endpoint: Bytes,
        task: Bytes,
        args: ArrayArg,
        options: ArrayArg,
    ) -> PhpResult<String> {
        let endpoint = endpoint.utf8("endpoint")?;
        let name = task.utf8("task name")?;
        let mut opts = DeferOptions::default();
        for (key, value) in options.iter() {
            opts.set(&key.name(), &scalar(value)).or_throw()?;
        }
        let json = args_to_json(&args)?;
        let settings = settings()?;
        let target = process::target(&settings);
        let task = TaskSpec::new(endpoint, name, &json);
        let deferred =
            process::with(|rt| rt.defer(&settings, target.as_ref(), &task, &opts, now_ms()))
                .or_throw()?;
        if target.is_none() {
            warn_no_target();
        }
        Ok(deferred.id)
    }

    /// Creates or updates (by `$name`; safe to call on every request) a
    /// recurring schedule whose occurrences are tasks for `$endpoint`;
    /// returns its record. `$when`: a cron expression (5 fields, or 6 with
    /// seconds first), `@hourly` … `@yearly`, or `@every <duration>`.
    /// Options: timezone, catch_up, overlap, priority, max_attempts, timeout.
    #[php(defaults(args = EmptyArray, options = EmptyArray))]
    pub fn schedule(
        name: Bytes,
        when: Bytes,
        endpoint: Bytes,
        task: Bytes,
        args: ArrayArg,
        options: ArrayArg,
    ) -> PhpResult<ZBox<ZendHashTable>> {
        let name = name.utf8("schedule name")?;
        let when = when.utf8("when")?;
        let endpoint = endpoint.utf8("endpoint")?;
        let task = task.utf8("task name")?;
        let mut opts = ScheduleOptions::default();
        for (key, value) in options.iter() {
            opts.set(&key.name(), &scalar(value)).or_throw()?;
        }
        let json = args_to_json(&args)?;
        let settings = settings()?;
        let target = process::target(&settings);
        let spec = TaskSpec::new(endpoint, task, &json);
        let info = process::with(|rt| {
            rt.schedule(
                &settings,
                target.as_ref(),
                name,
                when,
                &spec,
                &opts,
                now_ms(),
            )
        })
        .or_throw()?;
        schedule_array(info)
    }

    /// Deletes a schedule and its pending occurrence (a running one
    /// finishes); false when there is no schedule of that name.
    pub fn unschedule(name: Bytes) -> PhpResult<bool> {
        let name = name.utf8("schedule name")?;
        let settings = settings()?;
        process::engine(&settings, |e| e.unschedule(&settings, name)).or_throw()
    }

    /// This site's schedules, by name, with their next and last runs.
    pub fn schedules() -> PhpResult<ZBox<ZendHashTable>> {
        let settings = settings()?;
        let list = process::engine(&settings, |e| e.schedules(&settings)).or_throw()?;
        let mut out = ZendHashTable::new();
        for s in list {
            out.push(schedule_array(s)?)?;
        }
        Ok(out)
    }

    /// Publishes an update on this site's live-events hub (one insert and
    /// a nudge; never waits for the hub) and returns its id. Options:
    /// private, type, retry, id.
    #[php(defaults(options = EmptyArray))]
    pub fn publish(topics: &Zval, data: Bytes, options: ArrayArg) -> PhpResult<String> {
        let mut update = Update {
            topics: topic_list(topics, "publish()")?,
            data: data.utf8("data")?.to_string(),
            ..Update::default()
        };
        for (key, value) in options.iter() {
            let name = key.name();
            match (name.as_str(), scalar(value)) {
                ("private", Scalar::Bool(b)) => update.private = b,
                ("type", Scalar::Str(t)) => update.kind = Some(t),
                ("id", Scalar::Str(t)) => update.id = Some(t),
                ("retry", Scalar::Int(ms)) if ms >= 0 => update.retry = Some(ms),
                ("private", v) | ("type", v) | ("id", v) | ("retry", v) => {
                    let expected = match name.as_str() {
                        "private" => "a bool",
                        "retry" => "an integer number of milliseconds, 0 or more",
                        _ => "a string",
                    };
                    return Err(invalid(format!(
                        "option '{name}' of publish() must be {expected}, got {}",
                        v.describe()
                    )));
                }
                _ => {
                    return Err(invalid(format!(
                        "unknown option '{name}' for publish(); known options: private, type, retry, id"
                    )))
                }
            }
        }
        let settings = settings()?;
        process::engine(&settings, |e| e.publish(&settings, &update, now_ms())).or_throw()
    }

    /// A token (JWT) that lets a browser receive the private updates of
    /// `$topics` (selectors) for `$ttl` seconds; `$payload` is what other
    /// subscribers see of it (presence).
    #[php(defaults(ttl = 3600, payload = EmptyArray))]
    #[php(name = "subscriberToken")]
    pub fn subscriber_token(topics: &Zval, ttl: i64, payload: ArrayArg) -> PhpResult<String> {
        let topics = topic_list(topics, "subscriberToken()")?;
        let payload = match payload.0 {
            Some(a) if !a.is_empty() => {
                serde_json::from_str(&args_to_json(&payload)?).unwrap_or(serde_json::Value::Null)
            }
            _ => serde_json::Value::Null,
        };
        let settings = settings()?;
        process::engine(&settings, |e| {
            e.subscriber_token(&settings, &topics, payload.clone(), ttl, now_ms())
        })
        .or_throw()
    }

    /// Who is subscribed to `$topic` on this site's hub now: subscriber,
    /// topic, payload (what their token carried), since.
    pub fn subscribers(topic: Bytes) -> PhpResult<ZBox<ZendHashTable>> {
        let topic = topic.utf8("topic")?;
        let settings = settings()?;
        let list =
            process::engine(&settings, |e| e.subscribers(&settings, topic, now_ms())).or_throw()?;
        let mut out = ZendHashTable::new();
        for s in list {
            let mut a = ZendHashTable::new();
            a.insert("subscriber", s.subscriber)?;
            a.insert("topic", s.topic)?;
            a.insert("payload", value_to_zval(s.payload)?)?;
            a.insert("since", secs(s.since))?;
            out.push(a)?;
        }
        Ok(out)
    }

    /// In an endpoint: verifies the signed self-request and claims this
    /// endpoint's next due task; later calls in the same request claim the
    /// next one. `null` when nothing is due.
    pub fn accept() -> PhpResult<Option<Task>> {
        accept_next()
    }

    /// Accepts and runs tasks through `$handlers` (task name => callable(array
    /// $args, Task $task)) until none is due or the batch is spent; returns
    /// how many ran. Options: batch_time (seconds, 5), max_tasks (100).
    #[php(defaults(options = EmptyArray))]
    pub fn serve(handlers: &ZendHashTable, options: ArrayArg) -> PhpResult<i64> {
        let mut serve = ServeOptions::default();
        for (key, value) in options.iter() {
            serve.set(&key.name(), &scalar(value)).or_throw()?;
        }
        for (key, handler) in entries(handlers) {
            if !handler.is_callable() {
                return Err(invalid(format!(
                    "handler for task '{}' is {}, not a callable",
                    key.name(),
                    type_name(handler)
                )));
            }
        }
        let mut batch = Batch::start(&serve);
        let mut next = match batch.wants_more() {
            true => accept_next()?,
            false => None,
        };
        while let Some(task) = next {
            batch.ran_one();
            let (id, name, args_json) = {
                let c = task.claimed();
                (c.id.clone(), c.name.clone(), c.args.clone())
            };
            let Some(handler) = handlers.get(name.as_str()) else {
                let known: Vec<String> = entries(handlers).map(|(k, _)| k.name()).collect();
                let error = format!(
                    "no handler for task '{name}' at {} (handlers: {})",
                    task.claimed().endpoint,
                    known.join(", ")
                );
                next = serve_next(Some((task.claimed().clone(), Some(error))), &batch)?;
                continue;
            };
            let args = json_to_array(&args_json)?.into_zval(false)?;
            let task_obj: Zval = ZendClassObject::new(task).into_zval(false)?;
            let callable = ZendCallable::new(handler).map_err(|e| invalid(e.to_string()))?;
            let result = callable.try_call(vec![&args, &task_obj]);
            if result.is_err() && exiting() {
                // exit() in a handler: the request ends now; its shutdown
                // fails the task if the handler did not finish it.
                return Ok(batch.ran());
            }
            let failure = result.err().map(|_| take_exception_message());
            // Unless the handler finished the task itself.
            let ran = task_obj
                .object()
                .and_then(ZendClassObject::<Task>::from_zend_obj)
                .filter(|_| process::with(|rt| rt.holds(&id)))
                .map(|obj| (obj.claimed().clone(), failure));
            next = serve_next(ran, &batch)?;
        }
        Ok(batch.ran())
    }

    /// The cron entry point: reaps expired leases and slots, purges old
    /// finished tasks, dispatches whatever is due. Returns the dispatches.
    pub fn kick() -> PhpResult<i64> {
        let settings = settings()?;
        let Some(target) = process::target(&settings) else {
            return Err(to_php(Error::Usage(
                "kick() cannot send tasks: no base URL is known in this CLI process; set \
                 async_engine.base_url (e.g. https://example.com), or let a task request run through \
                 the web server first"
                    .into(),
            )));
        };
        let sent = process::with(|rt| rt.kick(&settings, &target, now_ms())).or_throw()?;
        Ok(sent as i64)
    }

    /// A task's record, or `null` for an unknown (or purged) id.
    pub fn status(id: Bytes) -> PhpResult<Option<ZBox<ZendHashTable>>> {
        let id = id.text("id", MAX_ID_LEN)?;
        let settings = settings()?;
        let info = process::engine(&settings, |e| e.status(&settings, id)).or_throw()?;
        info.map(info_array).transpose()
    }

    /// Cancels a queued task or gives up on a dead one; false if it is neither.
    pub fn cancel(id: Bytes) -> PhpResult<bool> {
        let id = id.text("id", MAX_ID_LEN)?;
        let settings = settings()?;
        process::engine(&settings, |e| e.cancel(&settings, id, now_ms())).or_throw()
    }

    /// Puts a dead task back in the queue with fresh attempts; false if it is not dead.
    pub fn retry(id: Bytes) -> PhpResult<bool> {
        let id = id.text("id", MAX_ID_LEN)?;
        let settings = settings()?;
        let target = process::target(&settings);
        let requeued =
            process::with(|rt| rt.retry(&settings, target.as_ref(), id, now_ms())).or_throw()?;
        Ok(requeued)
    }

    /// Tasks in `$state` (queued, running, done, dead, cancelled), newest
    /// first, at most `$limit` (1 to 1000) records as `status()` gives them.
    #[php(defaults(limit = 100))]
    pub fn tasks(state: Bytes, limit: i64) -> PhpResult<ZBox<ZendHashTable>> {
        let state = state.text("state", 64)?;
        let Some(parsed) = State::parse(state) else {
            return Err(invalid(format!(
                "state must be one of queued, running, done, dead, cancelled; got \"{}\"",
                state.escape_debug()
            )));
        };
        if !(1..=MAX_LIST).contains(&limit) {
            return Err(invalid(format!(
                "limit must be between 1 and {MAX_LIST}, got {limit}"
            )));
        }
        let settings = settings()?;
        let found =
            process::engine(&settings, |e| e.list(&settings, parsed, limit as u32)).or_throw()?;
        let mut a = ZendHashTable::new();
        for t in found {
            a.push(info_array(t)?)?;
        }
        Ok(a)
    }

    /// Deletes done and cancelled tasks that finished more than `$olderThan`
    /// seconds ago, and dead ones too when `$dead`; returns how many.
    #[php(defaults(olderThan = 0.0, dead = false))]
    pub fn purge(olderThan: f64, dead: bool) -> PhpResult<i64> {
        let settings = settings()?;
        let n = process::engine(&settings, |e| e.purge(olderThan, dead, now_ms())).or_throw()?;
        Ok(n as i64)
    }

    /// Tasks finished per `$bucket` seconds over the last `$seconds`, oldest
    /// first: a list of `['at' => float, 'done' => int, 'dead' => int]`.
    #[php(defaults(seconds = 300.0, bucket = 10.0))]
    pub fn history(seconds: f64, bucket: f64) -> PhpResult<ZBox<ZendHashTable>> {
        let settings = settings()?;
        let found =
            process::engine(&settings, |e| e.history(seconds, bucket, now_ms())).or_throw()?;
        let mut a = ZendHashTable::new();
        for f in found {
            let mut row = ZendHashTable::new();
            row.insert("at", secs(f.at))?;
            row.insert("done", f.done)?;
            row.insert("dead", f.dead)?;
            a.push(row)?;
        }
        Ok(a)
    }

    /// Task counts per state, in_flight, max_workers, next_due, oldest_due_age,
    /// busy_naps (this process's waits for another writer's lock) and
    /// failing_endpoints (deliveries failing, backing off).
    pub fn stats() -> PhpResult<ZBox<ZendHashTable>> {
        let settings = settings()?;
        let now = now_ms();
        let stats = process::engine(&settings, |e| e.stats(&settings, now)).or_throw()?;
        let mut a = ZendHashTable::new();
        for (state, n) in stats.counts {
            a.insert(state.as_str(), n)?;
        }
        a.insert("in_flight", stats.in_flight)?;
        a.insert("max_workers", i64::from(stats.max_workers))?;
        a.insert("next_due", stats.next_due.map(secs))?;
        a.insert("oldest_due_age", stats.oldest_due_age.map(secs))?;
        a.insert("busy_naps", async_engine_core::busy_naps() as i64)?;
        let mut failing = ZendHashTable::new();
        for f in stats.failing {
            let mut row = ZendHashTable::new();
            row.insert("endpoint", f.endpoint)?;
            row.insert("failures", f.failures)?;
            row.insert("last_error", f.last_error)?;
            row.insert("retry_at", secs(f.retry_at))?;
            failing.push(row)?;
        }
        a.insert("failing_endpoints", failing)?;
        let hub = process::engine(&settings, |e| e.hub_status(&settings, now)).or_throw()?;
        match hub {
            Some(h) => {
                let mut row = ZendHashTable::new();
                row.insert("listen", h.listen.to_string())?;
                row.insert("host_pid", h.host_pid.map(i64::from))?;
                row.insert("listen_error", h.listen_error)?;
                row.insert("subscriptions", h.subscriptions)?;
                row.insert("updates_kept", h.updates_kept)?;
                a.insert("hub", row)?;
            }
            None => a.insert("hub", ())?,
        }
        Ok(a)
    }

    /// Overrides `async_engine.*` ini settings for the rest of this request.
    pub fn configure(settings: &ZendHashTable) -> PhpResult<()> {
        let mut overrides = process::with(|rt| rt.request.overrides.clone());
        for (key, value) in entries(settings) {
            overrides.push((key.name(), scalar(value)));
        }
        // Refuse the whole call if any value is bad: nothing changes.
        let changes = crate::ini::changes();
        let settings = Arc::new(crate::ini::settings(&overrides).or_throw()?);
        process::with(|rt| rt.configure(overrides, changes, settings));
        Ok(())
    }
}
