//! Queue semantics through the engine's public operations.

mod common;

use async_engine_core::{
    DeferOptions, Engine, Error, Next, Scalar, Settings, State, TaskSpec, GRACE_MS, SENT_TTL_MS,
};
use common::*;

fn opts(pairs: &[(&str, Scalar)]) -> DeferOptions {
    let mut o = DeferOptions::default();
    for (k, v) in pairs {
        o.set(k, v).unwrap();
    }
    o
}

#[test]
fn defer_stores_the_task_and_reserves_a_slot_when_due() {
    let dir = TempDir::new("defer");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    let d = e
        .defer(
            &s,
            None,
            &TaskSpec::new("/w.php", "send", r#"{"to":"a@b"}"#),
            &DeferOptions::default(),
            true,
            T0,
        )
        .unwrap();
    assert!(d.created);
    assert_eq!(d.id.len(), 26);
    let disp = d.dispatch.expect("due now with free slots: dispatched");
    assert_eq!(disp.endpoint, "/w.php");
    let info = e.status(&Settings::default(), &d.id).unwrap().unwrap();
    assert_eq!(
        (info.state, info.attempt, info.name.as_str()),
        (State::Queued, 0, "send")
    );
    assert_eq!(info.args, r#"{"to":"a@b"}"#);
    assert_eq!(info.max_attempts, 5);
    assert_eq!(info.timeout, 300_000);
    let stats = e.stats(&s, T0).unwrap();
    assert_eq!(stats.in_flight, 1);
    assert_eq!(stats.counts[0], (State::Queued, 1));
    assert_eq!(stats.next_due, Some(T0));
    assert_eq!(stats.oldest_due_age, Some(0));
    assert!(e.status(&Settings::default(), "nope").unwrap().is_none());
}

#[test]
fn slots_are_capped_by_max_workers_and_delayed_tasks_do_not_dispatch() {
    let dir = TempDir::new("cap");
    let mut s = settings(&dir.db());
    s.max_workers = 2;
    let mut e = Engine::open(&s).unwrap();
    let late = e
        .defer(
            &s,
            None,
            &TaskSpec::new("/w.php", "later", "[]"),
            &opts(&[("delay", Scalar::Int(10))]),
            true,
            T0,
        )
        .unwrap();
    assert!(late.dispatch.is_none());
    assert_eq!(
        e.status(&Settings::default(), &late.id)
            .unwrap()
            .unwrap()
            .due_at,
        T0 + 10_000
    );
    let deferred: Vec<_> = ["/a", "/b", "/c", "/d"]
        .iter()
        .map(|ep| defer(&mut e, &s, ep, "t", T0))
        .collect();
    let dispatched: Vec<bool> = deferred.iter().map(|d| d.dispatch.is_some()).collect();
    assert_eq!(dispatched, [true, true, false, false]);
    assert_eq!(e.stats(&s, T0).unwrap().in_flight, 2);
    // The sent requests never arrive: their slots expire and kick re-sends.
    let later = T0 + SENT_TTL_MS + 1;
    let again = e.kick(&s, later).unwrap();
    let endpoints: Vec<&str> = again.iter().map(|d| d.endpoint.as_str()).collect();
    assert_eq!(endpoints.len(), 2);
    assert!(
        endpoints.contains(&"/c") && endpoints.contains(&"/d"),
        "{endpoints:?}"
    );
    // The lost requests back their endpoints off; the tasks keep their attempts.
    for d in &deferred[..2] {
        let info = e.status(&s, &d.id).unwrap().unwrap();
        assert_eq!((info.state, info.attempt), (State::Queued, 0));
        assert!(info.last_error.is_none());
    }
    let failing = e.stats(&s, later).unwrap().failing;
    assert_eq!(failing.len(), 2, "{failing:?}");
    for f in &failing {
        assert_eq!(f.failures, 1);
        assert!(f.last_error.contains("did not reach accept() within 60 s"));
        assert!(f.retry_at > later, "retried after a backoff");
    }
}

#[test]
fn failed_deliveries_back_the_endpoint_off_and_never_spend_attempts() {
    let dir = TempDir::new("backoff");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    let d = defer(&mut e, &s, "/w.php", "t", T0);
    let mut slot = d.dispatch.unwrap().slot;
    let mut now = T0;
    let mut gaps = vec![];
    for _ in 0..8 {
        let (abandoned, next) = e
            .dispatch_failed(&s, &slot, "http://x/w.php answered HTTP 302", now)
            .unwrap();
        assert!(abandoned && next.is_none(), "not due again at once");
        let wake = e.next_wake(&s, now).unwrap().unwrap();
        gaps.push(wake - now);
        now = wake;
        let again = e.kick(&s, now).unwrap();
        assert_eq!(again.len(), 1, "due again when the backoff ends");
        slot = again[0].slot.clone();
    }
    assert_eq!(gaps, [1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000]);
    let info = e.status(&s, &d.id).unwrap().unwrap();
    assert_eq!((info.state, info.attempt), (State::Queued, 0));
    assert_eq!(e.stats(&s, now).unwrap().failing[0].failures, 8);
    // A task deferred meanwhile does not skip the backoff either.
    e.dispatch_failed(&s, &slot, "refused", now).unwrap();
    assert!(defer(&mut e, &s, "/w.php", "t2", now).dispatch.is_none());
    // The request that arrives ends the backoff.
    let later = now + 256_000;
    let sent = e.kick(&s, later).unwrap().remove(0);
    let acc = e.accept(&s, &received(&sent), true, later).unwrap();
    assert!(acc.task.is_some());
    assert!(e.stats(&s, later).unwrap().failing.is_empty());
}

#[test]
fn two_sites_on_one_database_never_run_each_others_tasks() {
    let dir = TempDir::new("sites");
    let mut a = settings(&dir.db());
    a.site = Some("a".into());
    let mut b = a.clone();
    b.site = Some("b".into());
    let mut e = Engine::open(&a).unwrap();
    let da = defer(&mut e, &a, "/w.php", "t", T0);
    let db = defer(&mut e, &b, "/w.php", "t", T0);
    let (sa, sb) = (da.dispatch.unwrap(), db.dispatch.unwrap());
    // Site b's request carries a's slot: refused, nothing claimed.
    let err = e.accept(&b, &received(&sa), true, T0).unwrap_err();
    assert!(matches!(err, Error::Rejected(_)), "{err}");
    let got = e
        .accept(&b, &received(&sb), true, T0)
        .unwrap()
        .task
        .unwrap();
    assert_eq!(got.id, db.id);
    assert!(
        e.status(&b, &da.id).unwrap().is_none(),
        "a's task is not b's to see"
    );
    assert!(!e.cancel(&b, &da.id, T0).unwrap());
    let got = e
        .accept(&a, &received(&sa), true, T0)
        .unwrap()
        .task
        .unwrap();
    assert_eq!(got.id, da.id);
    // Unique keys are per site.
    let unique = opts(&[("unique", Scalar::Str("k".into()))]);
    let ua = try_defer(&mut e, &a, "/w.php", "u", &unique, T0).unwrap();
    let ub = try_defer(&mut e, &b, "/w.php", "u", &unique, T0).unwrap();
    assert!(ua.created && ub.created && ua.id != ub.id);
}

#[test]
fn a_full_queue_refuses_the_next_task_and_stores_nothing() {
    let dir = TempDir::new("quota");
    let mut s = settings(&dir.db());
    s.max_queued = 3;
    let mut e = Engine::open(&s).unwrap();
    let first: Vec<_> = (0..3)
        .map(|_| defer(&mut e, &s, "/w.php", "t", T0).id)
        .collect();
    let err = try_defer(&mut e, &s, "/w.php", "t", &DeferOptions::default(), T0).unwrap_err();
    assert!(matches!(err, Error::QueueFull(_)), "{err}");
    assert!(err.message().contains("holds 3 queued tasks"), "{err}");
    assert_eq!(e.list(&s, State::Queued, 10).unwrap().len(), 3);
    // Another endpoint has a queue of its own; a claimed task makes room.
    defer(&mut e, &s, "/other.php", "t", T0);
    assert!(e.cancel(&s, &first[0], T0).unwrap());
    defer(&mut e, &s, "/w.php", "t", T0);
}

#[test]
fn dead_tasks_go_after_their_own_retention() {
    let dir = TempDir::new("deadretention");
    let mut s = settings(&dir.db());
    s.dead_retention = 10.0;
    s.retention = 1000.0;
    let mut e = Engine::open(&s).unwrap();
    let once = opts(&[("max_attempts", Scalar::Int(1))]);
    let d = try_defer(&mut e, &s, "/w.php", "t", &once, T0).unwrap();
    let acc = e
        .accept(&s, &received(&d.dispatch.unwrap()), true, T0)
        .unwrap();
    let t = acc.task.unwrap();
    e.fail(&t.id, &t.lease, "boom", None, T0).unwrap();
    e.end_request(&s, Some(&acc.slot), &[], &[], "end", true, T0)
        .unwrap();
    e.kick(&s, T0 + 9_000).unwrap();
    assert!(e.status(&s, &t.id).unwrap().is_some(), "kept 10 s");
    e.kick(&s, T0 + 10_001).unwrap();
    assert!(e.status(&s, &t.id).unwrap().is_none(), "purged after 10 s");
}

#[test]
fn accept_claims_by_priority_then_due_time_and_consumes_the_slot_once() {
    let dir = TempDir::new("accept");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    let low = e
        .defer(
            &s,
            None,
            &TaskSpec::new("/w.php", "low", "[]"),
            &DeferOptions::default(),
            true,
            T0,
        )
        .unwrap();
    let high = e
        .defer(
            &s,
            None,
            &TaskSpec::new("/w.php", "high", "[]"),
            &opts(&[("priority", Scalar::Int(5))]),
            true,
            T0 + 1,
        )
        .unwrap();
    let first = low.dispatch.expect("dispatched");
    let acc = e.accept(&s, &received(&first), true, T0 + 2).unwrap();
    let task = acc.task.expect("a task was due");
    assert_eq!(task.id, high.id, "higher priority first");
    assert_eq!(task.attempt, 1);
    let info = e.status(&Settings::default(), &high.id).unwrap().unwrap();
    assert_eq!(info.state, State::Running);
    assert_eq!(info.lease_until, Some(T0 + 2 + 300_000));
    // A replay of the same request claims nothing.
    let replay = e.accept(&s, &received(&first), true, T0 + 3).unwrap_err();
    assert!(matches!(replay, Error::Rejected(_)), "{replay}");
    assert!(replay.message().contains("already used"));
    assert_eq!(
        e.status(&Settings::default(), &low.id)
            .unwrap()
            .unwrap()
            .state,
        State::Queued
    );
    e.complete(&task.id, &task.lease, T0 + 4).unwrap();
    assert_eq!(
        e.status(&Settings::default(), &high.id)
            .unwrap()
            .unwrap()
            .state,
        State::Done
    );
    // Completing twice is refused.
    assert!(matches!(
        e.complete(&task.id, &task.lease, T0 + 5),
        Err(Error::NotHeld(_))
    ));
    // Same slot, next task of the batch.
    let next = e
        .claim_next(&Settings::default(), &acc.slot, "/w.php", T0 + 6)
        .unwrap()
        .unwrap();
    assert_eq!(next.id, low.id);
    e.complete(&next.id, &next.lease, T0 + 7).unwrap();
    assert!(e
        .claim_next(&Settings::default(), &acc.slot, "/w.php", T0 + 8)
        .unwrap()
        .is_none());
    assert!(e
        .end_request(&s, Some(&acc.slot), &[], &[], "ended", true, T0 + 9)
        .unwrap()
        .is_none());
    // `high` was left to the request on its way; when it arrived, it fanned
    // out for `low`, and that request is still in flight.
    assert!(high.dispatch.is_none());
    assert_eq!(e.stats(&s, T0 + 9).unwrap().in_flight, 1);
}

#[test]
fn forged_and_misrouted_requests_change_nothing() {
    let dir = TempDir::new("forged");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    let d = defer(&mut e, &s, "/w.php", "t", T0).dispatch.unwrap();
    let mut forged = received(&d);
    forged.signature = Some("00".repeat(32));
    let mut elsewhere = received(&d);
    elsewhere.uri = "/other.php".into();
    let mut other_key = settings(&dir.db());
    other_key.secret = Some("a-different-secret-value".into());
    for (req, st) in [(&forged, &s), (&elsewhere, &s), (&received(&d), &other_key)] {
        assert!(matches!(
            e.accept(st, req, true, T0),
            Err(Error::Rejected(_))
        ));
    }
    // The genuine request still works: nothing was consumed.
    assert!(e
        .accept(&s, &received(&d), true, T0)
        .unwrap()
        .task
        .is_some());
}

#[test]
fn failures_retry_with_backoff_then_die_and_retry_revives() {
    let dir = TempDir::new("fail");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    let id = e
        .defer(
            &s,
            None,
            &TaskSpec::new("/w.php", "flaky", "[]"),
            &opts(&[("max_attempts", Scalar::Int(3))]),
            false,
            T0,
        )
        .unwrap()
        .id;
    let mut now = T0;
    let mut dues = vec![];
    for attempt in 1..=3u32 {
        let d = e.kick(&s, now + SENT_TTL_MS + 1).unwrap();
        now += SENT_TTL_MS + 1;
        let acc = e.accept(&s, &received(&d[0]), true, now).unwrap();
        let task = acc.task.unwrap();
        assert_eq!(task.attempt, attempt);
        let state = e
            .fail(&task.id, &task.lease, &format!("boom {attempt}"), None, now)
            .unwrap();
        e.end_request(&s, Some(&acc.slot), &[], &[], "", true, now)
            .unwrap();
        let info = e.status(&Settings::default(), &id).unwrap().unwrap();
        assert_eq!(
            info.last_error.as_deref(),
            Some(format!("boom {attempt}").as_str())
        );
        if attempt < 3 {
            assert_eq!(state, State::Queued);
            dues.push(info.due_at - now);
        } else {
            assert_eq!(state, State::Dead);
            assert!(info.finished_at.is_some());
        }
    }
    assert!((1000..=1250).contains(&dues[0]), "{dues:?}");
    assert!((2000..=2500).contains(&dues[1]), "{dues:?}");
    let (requeued, _) = e.retry(&s, &id, true, now).unwrap();
    assert!(requeued);
    let info = e.status(&Settings::default(), &id).unwrap().unwrap();
    assert_eq!((info.state, info.attempt), (State::Queued, 0));
    assert!(
        !e.retry(&s, &id, true, now).unwrap().0,
        "only dead tasks are retried"
    );
}

#[test]
fn explicit_retry_in_and_unknown_tasks() {
    let dir = TempDir::new("retryin");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    let d = defer(&mut e, &s, "/w.php", "t", T0);
    let task = e
        .accept(&s, &received(&d.dispatch.unwrap()), true, T0)
        .unwrap()
        .task
        .unwrap();
    assert_eq!(
        e.fail(&task.id, &task.lease, "later", Some(30.0), T0)
            .unwrap(),
        State::Queued
    );
    assert_eq!(
        e.status(&Settings::default(), &task.id)
            .unwrap()
            .unwrap()
            .due_at,
        T0 + 30_000
    );
    assert!(matches!(
        e.fail(&task.id, &task.lease, "x", Some(-1.0), T0),
        Err(Error::InvalidTask(_))
    ));
    assert!(matches!(
        e.complete("missing", "lease", T0),
        Err(Error::NotHeld(_))
    ));
}

#[test]
fn cancel_only_queued_or_dead_and_unique_returns_the_live_task() {
    let dir = TempDir::new("cancel");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    let u = opts(&[("unique", Scalar::Str("report-7".into()))]);
    let a = e
        .defer(
            &s,
            None,
            &TaskSpec::new("/w.php", "report", "[]"),
            &u,
            true,
            T0,
        )
        .unwrap();
    let b = e
        .defer(
            &s,
            None,
            &TaskSpec::new("/w.php", "report", "[]"),
            &u,
            true,
            T0 + 1,
        )
        .unwrap();
    assert_eq!(a.id, b.id);
    assert!(!b.created && b.dispatch.is_none());
    assert!(e.cancel(&Settings::default(), &a.id, T0 + 2).unwrap());
    assert!(!e.cancel(&Settings::default(), &a.id, T0 + 3).unwrap());
    assert_eq!(
        e.status(&Settings::default(), &a.id)
            .unwrap()
            .unwrap()
            .state,
        State::Cancelled
    );
    let c = e
        .defer(
            &s,
            None,
            &TaskSpec::new("/w.php", "report", "[]"),
            &u,
            true,
            T0 + 4,
        )
        .unwrap();
    assert!(
        c.created && c.id != a.id,
        "the key is free once the task is cancelled"
    );
    // A running task cannot be cancelled; a dead one can, and then not retried.
    let d = e
        .defer(
            &s,
            None,
            &TaskSpec::new("/x.php", "x", "[]"),
            &opts(&[("max_attempts", Scalar::Int(1))]),
            true,
            T0 + 5,
        )
        .unwrap();
    let acc = e
        .accept(&s, &received(&d.dispatch.unwrap()), true, T0 + 6)
        .unwrap();
    let t = acc.task.unwrap();
    assert!(
        !e.cancel(&Settings::default(), &t.id, T0 + 7).unwrap(),
        "running"
    );
    assert_eq!(
        e.fail(&t.id, &t.lease, "gone", None, T0 + 8).unwrap(),
        State::Dead
    );
    assert!(
        e.cancel(&Settings::default(), &t.id, T0 + 9).unwrap(),
        "dead"
    );
    let info = e.status(&Settings::default(), &t.id).unwrap().unwrap();
    assert_eq!(
        (info.state, info.finished_at),
        (State::Cancelled, Some(T0 + 9))
    );
    assert_eq!(
        info.last_error.as_deref(),
        Some("gone"),
        "the error is kept"
    );
    assert!(!e.retry(&s, &t.id, true, T0 + 10).unwrap().0);
}

#[test]
fn expired_leases_are_reaped_and_retried() {
    let dir = TempDir::new("lease");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    let d = e
        .defer(
            &s,
            None,
            &TaskSpec::new("/w.php", "slow", "[]"),
            &opts(&[("timeout", Scalar::Int(10))]),
            true,
            T0,
        )
        .unwrap();
    let acc = e
        .accept(&s, &received(&d.dispatch.unwrap()), true, T0)
        .unwrap();
    let task = acc.task.unwrap();
    e.extend(&task.id, &task.lease, 20.0, T0 + 5_000).unwrap();
    assert_eq!(
        e.status(&Settings::default(), &task.id)
            .unwrap()
            .unwrap()
            .lease_until,
        Some(T0 + 25_000)
    );
    assert!(
        e.kick(&s, T0 + 24_000).unwrap().is_empty(),
        "lease still held"
    );
    // The worker died (kill -9): nothing calls complete or end_request.
    let resent = e.kick(&s, T0 + 25_001 + GRACE_MS).unwrap();
    let info = e.status(&Settings::default(), &task.id).unwrap().unwrap();
    assert_eq!(info.state, State::Queued);
    assert!(info.last_error.unwrap().contains("lease expired"));
    assert_eq!(
        e.stats(&s, T0 + 25_001 + GRACE_MS).unwrap().in_flight as usize,
        resent.len()
    );
    // The old holder can no longer complete it.
    assert!(matches!(
        e.complete(&task.id, &task.lease, T0 + 30_000),
        Err(Error::NotHeld(_))
    ));
    assert!(matches!(
        e.extend(&task.id, &task.lease, 5.0, T0),
        Err(Error::NotHeld(_))
    ));
}

/// A process id no process has: one that ran and exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// Makes every slot look held by process `pid` of this machine: the holder
/// this process wrote, with its process id swapped.
fn hold_slots_by(db: &str, pid: u32) {
    for holder in texts(db, "SELECT holder FROM slots") {
        let machine = holder.rsplit_once('/').unwrap().0;
        execute(
            db,
            &format!("UPDATE slots SET holder = '{machine}/{pid}' WHERE holder = '{holder}'"),
        );
    }
}

#[test]
fn a_slot_whose_process_died_is_freed_at_once_not_at_its_deadline() {
    let dir = TempDir::new("deadholder");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    // A worker accepted a request and runs a task with a five-minute lease.
    let d = try_defer(
        &mut e,
        &s,
        "/w.php",
        "slow",
        &opts(&[("timeout", Scalar::Int(300))]),
        T0,
    )
    .unwrap();
    let task = e
        .accept(&s, &received(&d.dispatch.unwrap()), true, T0)
        .unwrap()
        .task
        .unwrap();
    // Another request is on its way to another endpoint.
    let sent = defer(&mut e, &s, "/v.php", "x", T0 + 10);
    assert!(sent.dispatch.is_some());
    let holders = texts(&dir.db(), "SELECT holder FROM slots");
    assert_eq!(holders.len(), 2);
    assert!(holders
        .iter()
        .all(|h| h.ends_with(&format!("/{}", std::process::id()))));
    // Held by this (live) process: nothing to do before the deadlines.
    assert!(e.next_wake(&s, T0 + 1_000).unwrap() > Some(T0 + 1_000));
    assert!(e.kick(&s, T0 + 1_000).unwrap().is_empty());

    // Both processes die (kill -9): the worker's slot is freed at the next
    // look, its task failed and retried; the sender's after a grace its
    // request may still arrive in.
    hold_slots_by(&dir.db(), dead_pid());
    assert_eq!(e.next_wake(&s, T0 + 1_000).unwrap(), Some(T0 + 1_000));
    assert!(
        e.kick(&s, T0 + 1_000).unwrap().is_empty(),
        "nothing due yet"
    );
    let info = e.status(&Settings::default(), &task.id).unwrap().unwrap();
    assert_eq!((info.state, info.attempt), (State::Queued, 1));
    assert!(
        info.last_error.as_deref().unwrap().contains("died"),
        "{info:?}"
    );
    assert_eq!(
        e.stats(&s, T0 + 1_000).unwrap().in_flight,
        1,
        "the sent slot waits"
    );
    assert!(e.next_wake(&s, T0 + 1_000).unwrap() > Some(T0 + 1_000));

    let at = T0 + 10 + 5_000;
    assert_eq!(e.next_wake(&s, at).unwrap(), Some(at));
    let resent = e.kick(&s, at).unwrap();
    // /v.php is due again with no delivery backoff, and sent at once (with
    // the retry of /w.php's task, whose backoff has passed).
    assert!(resent.iter().any(|d| d.endpoint == "/v.php"), "{resent:?}");
    let stats = e.stats(&s, at).unwrap();
    assert!(stats.failing.is_empty(), "{:?}", stats.failing);
    assert_eq!(
        stats.in_flight as usize,
        resent.len(),
        "the new requests' slots"
    );
    // The dead worker's lease no longer holds the task.
    assert!(matches!(
        e.complete(&task.id, &task.lease, at),
        Err(Error::NotHeld(_))
    ));
}

#[test]
fn a_request_ending_without_complete_fails_its_tasks_and_passes_its_slot_on() {
    let dir = TempDir::new("end");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    let first = defer(&mut e, &s, "/a.php", "t", T0);
    let mut s1 = s.clone();
    s1.max_workers = 1;
    let second = defer(&mut e, &s1, "/b.php", "t", T0);
    assert!(second.dispatch.is_none(), "one worker, busy");
    let acc = e
        .accept(&s1, &received(&first.dispatch.unwrap()), true, T0)
        .unwrap();
    let task = acc.task.unwrap();
    let next = e
        .end_request(
            &s1,
            Some(&acc.slot),
            &[(task.id.clone(), task.lease.clone())],
            &[],
            "request ended: exit",
            true,
            T0 + 1,
        )
        .unwrap()
        .expect("the freed slot goes to the next due endpoint");
    assert_eq!(next.endpoint, "/b.php");
    let info = e.status(&Settings::default(), &task.id).unwrap().unwrap();
    assert_eq!(info.state, State::Queued);
    assert_eq!(info.last_error.as_deref(), Some("request ended: exit"));
}

#[test]
fn finished_tasks_are_purged_after_retention_but_dead_ones_are_kept() {
    let dir = TempDir::new("purge");
    let mut s = settings(&dir.db());
    s.retention = 10.0;
    let mut e = Engine::open(&s).unwrap();
    let done = defer(&mut e, &s, "/w.php", "t", T0);
    let acc = e
        .accept(&s, &received(&done.dispatch.unwrap()), true, T0)
        .unwrap();
    let t = acc.task.unwrap();
    e.complete(&t.id, &t.lease, T0).unwrap();
    let dead = e
        .defer(
            &s,
            None,
            &TaskSpec::new("/w.php", "d", "[]"),
            &opts(&[("max_attempts", Scalar::Int(1))]),
            true,
            T0,
        )
        .unwrap();
    let t2 = e
        .claim_next(&Settings::default(), &acc.slot, "/w.php", T0)
        .unwrap()
        .unwrap();
    assert_eq!(
        e.fail(&t2.id, &t2.lease, "x", None, T0).unwrap(),
        State::Dead
    );
    e.end_request(&s, Some(&acc.slot), &[], &[], "", true, T0)
        .unwrap();
    e.kick(&s, T0 + 9_000).unwrap();
    assert!(
        e.status(&Settings::default(), &done.id).unwrap().is_some(),
        "kept within retention"
    );
    e.kick(&s, T0 + 10_001).unwrap();
    assert!(
        e.status(&Settings::default(), &done.id).unwrap().is_none(),
        "purged after retention"
    );
    assert_eq!(
        e.status(&Settings::default(), &dead.id)
            .unwrap()
            .unwrap()
            .state,
        State::Dead
    );
    assert_eq!(
        e.list(&Settings::default(), State::Dead, 10).unwrap().len(),
        1
    );
    assert_eq!(e.purge(0.0, true, T0 + 10_001).unwrap(), 1);
    assert!(e.status(&Settings::default(), &dead.id).unwrap().is_none());
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let dir = TempDir::new("bad");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    let huge = format!("[\"{}\"]", "x".repeat(s.max_args_size));
    let cases: Vec<(&str, &str, &str, &str)> = vec![
        ("https://evil.example/x", "t", "[]", "another origin"),
        ("w.php", "t", "[]", "not a path"),
        ("", "t", "[]", "empty"),
        ("/w.php", "", "[]", "name is empty"),
        ("/w.php", "t", &huge, "limit is 1048576"),
    ];
    for (endpoint, name, args, why) in cases {
        let err = e
            .defer(
                &s,
                None,
                &TaskSpec::new(endpoint, name, args),
                &DeferOptions::default(),
                true,
                T0,
            )
            .unwrap_err();
        assert!(matches!(err, Error::InvalidTask(_)), "{err}");
        assert!(err.message().contains(why), "{err}");
    }
    let stats = e.stats(&s, T0).unwrap();
    assert!(stats.counts.iter().all(|(_, n)| *n == 0));
    assert_eq!(stats.in_flight, 0);
}

#[test]
fn history_counts_finished_tasks_per_interval_with_idle_intervals_as_zero() {
    let dir = TempDir::new("history");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    let mut sent = vec![];
    for name in ["a", "b", "c"] {
        let o = opts(&[("max_attempts", Scalar::Int(1))]);
        let d = e
            .defer(&s, None, &TaskSpec::new("/w.php", name, "[]"), &o, true, T0)
            .unwrap();
        sent.extend(d.dispatch);
    }
    // a done at T0 + 1 s, b done at T0 + 21 s, c dead at T0 + 21.5 s, each
    // in a request of its own: the first, then those it fans out to.
    for (i, at) in [1_000, 21_000, 21_500].into_iter().enumerate() {
        let d = sent.pop().expect("a request");
        let acc = e.accept(&s, &received(&d), true, T0 + at).unwrap();
        sent.extend(acc.dispatch);
        let t = acc.task.unwrap();
        if i < 2 {
            e.complete(&t.id, &t.lease, T0 + at).unwrap();
        } else {
            e.fail(&t.id, &t.lease, "x", None, T0 + at).unwrap();
        }
    }
    let now = T0 + 25_000;
    let h = e.history(30.0, 10.0, now).unwrap();
    assert_eq!(h.len(), 3, "{h:?}");
    assert_eq!(h[2].at, now - now % 10_000, "last interval holds now");
    assert!(h.windows(2).all(|w| w[1].at - w[0].at == 10_000));
    let total: Vec<(i64, i64)> = h.iter().map(|f| (f.done, f.dead)).collect();
    let sum = total.iter().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert_eq!(sum, (2, 1), "{h:?}");
    let with_c = h.iter().find(|f| f.dead == 1).unwrap();
    assert!(with_c.at <= T0 + 21_500 && T0 + 21_500 < with_c.at + 10_000);
    // Nothing finished later: the intervals exist with zeros.
    let later = e.history(10.0, 1.0, T0 + 100_000).unwrap();
    assert_eq!(later.len(), 10);
    assert!(later.iter().all(|f| f.done == 0 && f.dead == 0));
    for (secs, bucket) in [(0.0, 1.0), (10.0, 0.0), (2000.0, 1.0), (f64::NAN, 1.0)] {
        let err = e.history(secs, bucket, now).unwrap_err();
        assert!(
            matches!(err, Error::InvalidTask(_)),
            "{secs}/{bucket}: {err}"
        );
    }
}

#[test]
fn a_batch_writes_what_it_ran_and_claims_ahead_in_one_write_then_hands_its_slot_over() {
    let dir = TempDir::new("finish");
    let mut s = settings(&dir.db());
    s.max_workers = 1;
    let mut e = Engine::open(&s).unwrap();
    let first = defer(&mut e, &s, "/w.php", "a", T0);
    let d = first.dispatch.expect("a free slot");
    for (i, name) in ["b", "c", "d"].into_iter().enumerate() {
        defer(&mut e, &s, "/w.php", name, T0 + 1 + i as i64);
    }
    defer(&mut e, &s, "/other.php", "x", T0 + 5);
    let accepted = e.accept(&s, &received(&d), true, T0 + 6).unwrap();
    let a = accepted.task.expect("a is due");
    let claim = Next::Claim {
        slot: &accepted.slot,
        endpoint: &accepted.endpoint,
        max: 2,
    };
    let ran = [(a.clone(), None)];
    let after = e.finish_batch(&s, &ran, claim, T0 + 7).unwrap();
    let names: Vec<&str> = after.claimed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!((names, after.dispatch), (vec!["b", "c"], None));
    let (b, c) = (&after.claimed[0], &after.claimed[1]);
    assert_eq!(b.lease_until, T0 + 7 + b.timeout, "the first runs now");
    assert_eq!(c.lease_until, T0 + 7 + c.timeout + 1000, "the second waits");
    assert_eq!(e.status(&s, &a.id).unwrap().unwrap().state, State::Done);
    // The batch ends: b done, c failed, a (no longer held) passed by; the
    // slot goes to the endpoint due next (d's) in the same write.
    let release = Next::Release {
        slot: &accepted.slot,
        send: true,
        wake: true,
    };
    let ran = [
        (b.clone(), None),
        (c.clone(), Some("boom".to_string())),
        (a.clone(), None),
    ];
    let after = e.finish_batch(&s, &ran, release, T0 + 8).unwrap();
    assert!(after.claimed.is_empty());
    let next = after.dispatch.expect("the slot handed over");
    assert_eq!(next.endpoint, "/w.php");
    assert_eq!(
        after.wake,
        Some(T0 + 8 + SENT_TTL_MS + 1),
        "the new slot's deadline"
    );
    assert_eq!(e.status(&s, &b.id).unwrap().unwrap().state, State::Done);
    let info = e.status(&s, &c.id).unwrap().unwrap();
    assert_eq!(
        (info.state, info.last_error.as_deref()),
        (State::Queued, Some("boom"))
    );
    assert_eq!(e.stats(&s, T0 + 8).unwrap().in_flight, 1, "one slot, sent");
    // Ending one task is strict: a task no longer held is an error, and a
    // bad retry delay changes nothing.
    let again = e.complete(&b.id, &b.lease, T0 + 9);
    assert!(matches!(again, Err(Error::NotHeld(_))), "{again:?}");
    assert!(matches!(
        e.fail(&b.id, &b.lease, "x", Some(-1.0), T0 + 9),
        Err(Error::InvalidTask(_))
    ));
}

/// The earliest due time is found across priorities (the claim index holds
/// them priority first), and moves on when the earliest task leaves.
#[test]
fn the_next_due_time_is_the_earliest_task_of_any_priority() {
    let dir = TempDir::new("earliest");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    let mut ids = Vec::new();
    for (priority, delay) in [(5, 30), (0, 10), (-3, 20), (5, 40)] {
        let o = opts(&[
            ("priority", Scalar::Int(priority)),
            ("delay", Scalar::Int(delay)),
        ]);
        ids.push(try_defer(&mut e, &s, "/w.php", "t", &o, T0).unwrap().id);
    }
    assert_eq!(e.stats(&s, T0).unwrap().next_due, Some(T0 + 10_000));
    assert!(e.cancel(&s, &ids[1], T0).unwrap());
    assert_eq!(e.stats(&s, T0).unwrap().next_due, Some(T0 + 20_000));
    assert!(e.cancel(&s, &ids[2], T0).unwrap());
    assert_eq!(e.stats(&s, T0).unwrap().next_due, Some(T0 + 30_000));
    let listed: Vec<String> = e
        .list(&s, State::Queued, 10)
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, [ids[3].clone(), ids[0].clone()], "newest first");
    assert_eq!(e.stats(&s, T0).unwrap().counts[0], (State::Queued, 2));
}

/// A request that dies in the middle of a batch fails the task it was
/// running; the tasks it claimed ahead and never started go back to the
/// queue with their attempts unspent, and its slot goes on to them.
#[test]
fn tasks_claimed_ahead_and_never_started_go_back_unharmed_when_the_request_dies() {
    let dir = TempDir::new("giveback");
    let mut s = settings(&dir.db());
    s.max_workers = 1;
    let mut e = Engine::open(&s).unwrap();
    let first = defer(&mut e, &s, "/w.php", "a", T0);
    for name in ["b", "c"] {
        defer(&mut e, &s, "/w.php", name, T0 + 1);
    }
    let accepted = e
        .accept(&s, &received(&first.dispatch.unwrap()), true, T0 + 2)
        .unwrap();
    let a = accepted.task.expect("a is due");
    let claim = Next::Claim {
        slot: &accepted.slot,
        endpoint: &accepted.endpoint,
        max: 2,
    };
    let after = e.finish_batch(&s, &[(a, None)], claim, T0 + 3).unwrap();
    let (b, c) = (after.claimed[0].clone(), after.claimed[1].clone());
    assert_eq!((b.attempt, c.attempt), (1, 1));
    // b runs and its request dies (a fatal error); c never started.
    let held = [
        (b.id.clone(), b.lease.clone()),
        (c.id.clone(), c.lease.clone()),
    ];
    let next = e
        .end_request(
            &s,
            Some(&accepted.slot),
            &held,
            std::slice::from_ref(&c),
            "request ended: fatal error",
            true,
            T0 + 4,
        )
        .unwrap()
        .expect("the slot goes on to the queue that still has work");
    assert_eq!(next.endpoint, "/w.php");
    let b_now = e.status(&s, &b.id).unwrap().unwrap();
    assert_eq!(
        (b_now.state, b_now.attempt, b_now.last_error.as_deref()),
        (State::Queued, 1, Some("request ended: fatal error"))
    );
    let c_now = e.status(&s, &c.id).unwrap().unwrap();
    assert_eq!(
        (c_now.state, c_now.attempt, c_now.last_error, c_now.due_at),
        (State::Queued, 0, None, T0 + 1)
    );
    let stats = e.stats(&s, T0 + 4).unwrap();
    assert_eq!(stats.counts[0], (State::Queued, 2));
    assert_eq!(stats.next_due, Some(T0 + 1), "c is due again at once");
    // c's old lease holds nothing any more.
    assert!(matches!(
        e.complete(&c.id, &c.lease, T0 + 5),
        Err(Error::NotHeld(_))
    ));
}

#[test]
fn a_queue_with_due_work_fans_out_to_max_workers_requests_and_no_further() {
    let dir = TempDir::new("fanout");
    let mut s = settings(&dir.db());
    s.max_workers = 3;
    let mut e = Engine::open(&s).unwrap();
    let spec = |name| TaskSpec::new("/w.php", name, "[]");
    for name in ["t1", "t2", "t3", "t4", "t5"] {
        let queued = e.defer(&s, None, &spec(name), &DeferOptions::default(), false, T0);
        assert!(queued.unwrap().dispatch.is_none(), "nothing sent yet");
    }
    // The cron entry sends one request; the endpoint stops being due.
    let sent = e.kick(&s, T0 + 1).unwrap();
    assert_eq!(sent.len(), 1);
    // Each request that finds more due tasks than requests on the way
    // sends one more as it claims its task, until the slots are all held.
    let a = e.accept(&s, &received(&sent[0]), true, T0 + 2).unwrap();
    let b = e
        .accept(
            &s,
            &received(a.dispatch.as_ref().expect("t2..t5 wait")),
            true,
            T0 + 3,
        )
        .unwrap();
    let c = e
        .accept(
            &s,
            &received(b.dispatch.as_ref().expect("t3..t5 wait")),
            true,
            T0 + 4,
        )
        .unwrap();
    assert!(c.dispatch.is_none(), "three slots, all held");
    let names: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|r| r.task.as_ref().unwrap().name.clone())
        .collect();
    assert_eq!(names, ["t1", "t2", "t3"]);
    let end = |e: &mut Engine, r: &async_engine_core::Accepted, now| {
        let release = Next::Release {
            slot: &r.slot,
            send: true,
            wake: false,
        };
        let ran = [(r.task.clone().unwrap(), None)];
        e.finish_batch(&s, &ran, release, now).unwrap().dispatch
    };
    // a's slot goes to the endpoint, due again since c claimed (t4, t5).
    let d = end(&mut e, &a, T0 + 5).expect("handed over");
    // d's request, on the way, hides the endpoint; b's slot goes to it
    // all the same, since two tasks are due and one request is coming.
    let f = end(&mut e, &b, T0 + 6).expect("one more for the busy endpoint");
    assert_eq!(
        (d.endpoint.as_str(), f.endpoint.as_str()),
        ("/w.php", "/w.php")
    );
    // Two requests on the way for two due tasks: c's slot is freed.
    assert!(
        end(&mut e, &c, T0 + 7).is_none(),
        "no request without a task"
    );
    assert_eq!(e.stats(&s, T0 + 7).unwrap().in_flight, 2);
}

#[test]
fn a_task_for_an_endpoint_with_a_request_on_its_way_or_running_is_left_to_that_request() {
    let dir = TempDir::new("has_request");
    let s = Settings {
        max_workers: 4,
        ..settings(&dir.db())
    };
    let mut e = Engine::open(&s).unwrap();
    let first = defer(&mut e, &s, "/w.php", "first", T0);
    // Three slots are free, but a request to /w.php is on its way.
    let second = defer(&mut e, &s, "/w.php", "second", T0 + 1);
    assert!(second.dispatch.is_none());
    assert_eq!(e.stats(&s, T0 + 1).unwrap().in_flight, 1);
    let acc = e
        .accept(&s, &received(&first.dispatch.unwrap()), true, T0 + 2)
        .unwrap();
    assert_eq!(acc.task.map(|t| t.id), Some(first.id));
    // Its request claims the first task and fans out for the second.
    assert_eq!(acc.dispatch.map(|d| d.endpoint).as_deref(), Some("/w.php"));
    // While it runs, the next tasks are left to it (both ways a defer()
    // is written, with and without a unique key).
    let next = defer(&mut e, &s, "/w.php", "next", T0 + 3);
    let unique = opts(&[("unique", Scalar::Str("u".into()))]);
    let keyed = try_defer(&mut e, &s, "/w.php", "keyed", &unique, T0 + 4).unwrap();
    assert!(next.dispatch.is_none() && keyed.dispatch.is_none());
    assert_eq!(e.stats(&s, T0 + 4).unwrap().in_flight, 2);
    // Another endpoint's task gets a request of its own.
    let other = defer(&mut e, &s, "/other.php", "other", T0 + 5);
    assert_eq!(
        other.dispatch.map(|d| d.endpoint).as_deref(),
        Some("/other.php")
    );
    let claimed = e.claim_next(&s, &acc.slot, "/w.php", T0 + 6).unwrap();
    assert_eq!(claimed.map(|t| t.id), Some(second.id));
    // The workers' poll (and the hand-off timer of a task that runs long)
    // still sends a request for the endpoint's due tasks to a free slot:
    // the running request may be busy for long, or its worker killed.
    let kicked = e.kick(&s, T0 + 7).unwrap();
    let endpoints: Vec<&str> = kicked.iter().map(|d| d.endpoint.as_str()).collect();
    assert_eq!(endpoints, ["/w.php"]);
}

/// `stats()` counts finished tasks from counters the database keeps on
/// SQLite (schema 10); through every way a task moves — claim, complete,
/// fail, death, cancel, retry, reaping, a request's end, purge — on two
/// sites, its counts stay those of the tasks listed per state.
#[test]
fn stats_counts_stay_those_of_the_tasks_through_every_transition() {
    let dir = TempDir::new("counts");
    let sites: Vec<Settings> = ["a", "b"]
        .iter()
        .map(|site| Settings {
            site: Some(site.to_string()),
            max_workers: 2,
            retention: 3600.0,
            ..settings(&dir.db())
        })
        .collect();
    let mut e = Engine::open(&sites[0]).unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut now = T0;
    let mut ids: Vec<(usize, String)> = vec![];
    let mut sent: Vec<(usize, async_engine_core::Dispatch)> = vec![];
    // (site, slot, id, lease) of each task a request holds.
    let mut held: Vec<(usize, String, String, String)> = vec![];
    let mut moves = [0usize; 9];
    // The most done, dead and cancelled tasks a site held at once.
    let mut most = [0i64; 3];
    for _ in 0..600 {
        now += 1 + next(900) as i64;
        let site = next(2);
        let s = &sites[site];
        let op = next(9);
        moves[op] += 1;
        match op {
            0 | 1 => {
                let o = opts(&[
                    ("max_attempts", Scalar::Int(1 + next(2) as i64)),
                    ("timeout", Scalar::Int(30)),
                ]);
                let d = try_defer(&mut e, s, "/w.php", "t", &o, now).unwrap();
                ids.push((site, d.id));
                sent.extend(d.dispatch.map(|d| (site, d)));
            }
            2 if !sent.is_empty() => {
                let (site, d) = sent.swap_remove(next(sent.len()));
                if let Ok(acc) = e.accept(&sites[site], &received(&d), true, now) {
                    sent.extend(acc.dispatch.map(|d| (site, d)));
                    if let Some(t) = acc.task {
                        held.push((site, acc.slot, t.id, t.lease));
                    }
                }
            }
            3 | 4 if !held.is_empty() => {
                let (site, slot, id, lease) = held.swap_remove(next(held.len()));
                let ended = match op {
                    3 => e.complete(&id, &lease, now).map(drop),
                    _ => e.fail(&id, &lease, "boom", None, now).map(drop),
                };
                assert!(matches!(ended, Ok(()) | Err(Error::NotHeld(_))));
                let d = e
                    .end_request(&sites[site], Some(&slot), &[], &[], "", true, now)
                    .unwrap();
                sent.extend(d.map(|d| (site, d)));
            }
            5 if !ids.is_empty() => {
                let (site, id) = &ids[next(ids.len())];
                e.cancel(&sites[*site], id, now).unwrap();
            }
            6 if !ids.is_empty() => {
                let (site, id) = &ids[next(ids.len())];
                let (_, d) = e.retry(&sites[*site], id, true, now).unwrap();
                sent.extend(d.map(|d| (*site, d)));
            }
            7 => {
                // Time passes; every other time, the leases held expire
                // (their holders died).
                now += match next(2) {
                    0 => 1_000,
                    _ => 30_000 + GRACE_MS,
                };
                let kicked = e.kick(s, now).unwrap();
                sent.extend(kicked.into_iter().map(|d| (site, d)));
            }
            8 if !held.is_empty() => {
                // A request ends without ending its task: it fails.
                let (site, slot, id, lease) = held.swap_remove(next(held.len()));
                let d = e
                    .end_request(
                        &sites[site],
                        Some(&slot),
                        &[(id, lease)],
                        &[],
                        "died",
                        true,
                        now,
                    )
                    .unwrap();
                sent.extend(d.map(|d| (site, d)));
            }
            _ => {
                e.purge(next(1800) as f64, next(2) == 0, now).unwrap();
            }
        }
        for s in &sites {
            let counts = e.stats(s, now).unwrap().counts;
            for (state, n) in counts {
                let listed = e.list(s, state, 100_000).unwrap().len() as i64;
                assert_eq!(n, listed, "{state:?} on site {:?}", s.site);
                if let Some(i) = [State::Done, State::Dead, State::Cancelled]
                    .iter()
                    .position(|f| *f == state)
                {
                    most[i] = most[i].max(n);
                }
            }
        }
    }
    assert!(moves.iter().all(|m| *m > 20), "{moves:?}");
    assert!(
        most.iter().all(|n| *n >= 3),
        "most finished at once: {most:?}"
    );
}
