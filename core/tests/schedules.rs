//! Recurring schedules through the engine's public operations: the chain of
//! occurrences, drift, overlap, catch-up, bad input, concurrency.

mod common;

use async_engine_core::{
    Claimed, Engine, Error, Scalar, ScheduleOptions, Settings, State, TaskSpec,
};
use common::*;

fn options(pairs: &[(&str, Scalar)]) -> ScheduleOptions {
    let mut o = ScheduleOptions::default();
    for (k, v) in pairs {
        o.set(k, v).unwrap();
    }
    o
}

fn schedule(e: &mut Engine, s: &Settings, name: &str, when: &str, o: &ScheduleOptions, now: i64) {
    e.schedule(
        s,
        None,
        name,
        when,
        &TaskSpec::new("/cron.php", "tick", "[]"),
        o,
        now,
    )
    .unwrap();
}

/// Sends what is due at `now` and claims through each request, as endpoints
/// do; the requests then end, leaving their tasks running under their leases.
fn claim_due(e: &mut Engine, s: &Settings, now: i64) -> Vec<Claimed> {
    let mut claimed = vec![];
    for d in e.kick(s, now).unwrap() {
        let accepted = e.accept(s, &received(&d), false, now).unwrap();
        e.end_request(s, Some(&accepted.slot), &[], &[], "", false, now)
            .unwrap();
        claimed.extend(accepted.task);
    }
    claimed
}

/// The tasks of a schedule in `state`.
fn occurrences(e: &mut Engine, s: &Settings, name: &str, state: State) -> Vec<i64> {
    let mut at: Vec<i64> = e
        .list(s, state, 1000)
        .unwrap()
        .into_iter()
        .filter(|t| t.schedule.as_deref() == Some(name))
        .map(|t| t.scheduled_at.unwrap())
        .collect();
    at.sort();
    at
}

#[test]
fn a_schedule_keeps_exactly_one_pending_occurrence_and_is_idempotent() {
    let dir = TempDir::new("sched_one");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    let o = ScheduleOptions::default();
    let report = |e: &mut Engine, when: &str, args: &str, now: i64| {
        e.schedule(
            &s,
            None,
            "report",
            when,
            &TaskSpec::new("/cron.php", "report", args),
            &o,
            now,
        )
        .unwrap()
    };
    let first = report(&mut e, "*/5 * * * *", r#"{"a":1}"#, T0 + 1_234);
    // T0 is 2023-11-14 22:13:20 UTC: the next multiple of 5 minutes is 22:15:00.
    assert_eq!(first.next_at, Some(T0 + 100_000));
    assert_eq!(
        (first.runs, first.skipped, first.timezone.as_str()),
        (0, 0, "UTC")
    );
    assert_eq!(
        occurrences(&mut e, &s, "report", State::Queued),
        [T0 + 100_000]
    );
    // The same definition again (every request, every deploy): nothing changes.
    for i in 0..5 {
        assert_eq!(
            report(&mut e, "*/5 * * * *", r#"{"a":1}"#, T0 + 2_000 + i),
            first
        );
    }
    assert_eq!(
        occurrences(&mut e, &s, "report", State::Queued),
        [T0 + 100_000]
    );
    // New args keep the occurrence's time; a new expression re-times it.
    report(&mut e, "*/5 * * * *", r#"{"a":2}"#, T0 + 3_000);
    let pending = e.list(&s, State::Queued, 10).unwrap();
    assert_eq!(
        (
            pending.len(),
            pending[0].args.as_str(),
            pending[0].scheduled_at
        ),
        (1, r#"{"a":2}"#, Some(T0 + 100_000))
    );
    let retimed = report(&mut e, "0 * * * *", r#"{"a":2}"#, T0 + 4_000);
    assert_eq!(retimed.next_at, Some(T0 + 2_800_000)); // 23:00:00
    assert_eq!(
        occurrences(&mut e, &s, "report", State::Queued),
        [T0 + 2_800_000]
    );
    assert_eq!(e.stats(&s, T0).unwrap().counts[0], (State::Queued, 1));

    assert!(e.unschedule(&s, "report").unwrap());
    assert!(!e.unschedule(&s, "report").unwrap());
    assert!(e.schedules(&s).unwrap().is_empty());
    assert_eq!(e.stats(&s, T0).unwrap().counts[0], (State::Queued, 0));
}

#[test]
fn occurrences_never_drift_whatever_each_run_takes() {
    let dir = TempDir::new("sched_drift");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    schedule(
        &mut e,
        &s,
        "tick",
        "@every 1s",
        &ScheduleOptions::default(),
        T0 + 400,
    );
    let mut started = vec![];
    let mut now = T0 + 1_000;
    for i in 0..20 {
        let claimed = claim_due(&mut e, &s, now);
        assert_eq!(claimed.len(), 1, "occurrence {i}");
        let info = e.status(&s, &claimed[0].id).unwrap().unwrap();
        started.push(info.scheduled_at.unwrap());
        // Each run takes 0.3 to 0.9 s, and starts 0 to 90 ms late.
        e.complete(
            &claimed[0].id,
            &claimed[0].lease,
            now + 300 + (i * 31) % 600,
        )
        .unwrap();
        now = T0 + (i + 2) * 1_000 + (i * 7) % 90;
    }
    let expected: Vec<i64> = (1..=20).map(|k| T0 + k * 1_000).collect();
    assert_eq!(
        started, expected,
        "every scheduled_at a whole multiple of the period"
    );
    let info = &e.schedules(&s).unwrap()[0];
    assert_eq!(
        (info.runs, info.skipped, info.last_state),
        (20, 0, Some(State::Done))
    );
    assert_eq!(info.next_at, Some(T0 + 21_000));
}

#[test]
fn a_run_killed_mid_way_is_retried_and_the_next_occurrence_is_already_queued() {
    let dir = TempDir::new("sched_kill");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    let o = options(&[
        ("timeout", Scalar::Int(10)),
        ("overlap", Scalar::Bool(true)),
    ]);
    schedule(&mut e, &s, "job", "* * * * *", &o, T0);
    let at = T0 + 40_000; // 22:14:00
    let claimed = claim_due(&mut e, &s, at);
    assert_eq!(claimed.len(), 1);
    // The worker dies here: no complete(). The next occurrence exists already.
    assert_eq!(occurrences(&mut e, &s, "job", State::Queued), [at + 60_000]);
    assert_eq!(occurrences(&mut e, &s, "job", State::Running), [at]);
    // Its lease expires: reaped and retried, without a second "next".
    let retried = claim_due(&mut e, &s, at + 11_000);
    assert!(retried.is_empty(), "retry waits for its backoff");
    assert_eq!(
        occurrences(&mut e, &s, "job", State::Queued),
        [at, at + 60_000]
    );
    let again = claim_due(&mut e, &s, at + 50_000);
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].id.as_str(), again[0].attempt),
        (claimed[0].id.as_str(), 2)
    );
    e.complete(&again[0].id, &again[0].lease, at + 51_000)
        .unwrap();
    assert_eq!(occurrences(&mut e, &s, "job", State::Queued), [at + 60_000]);
    assert_eq!(e.schedules(&s).unwrap()[0].runs, 1);
}

#[test]
fn an_occurrence_due_while_the_previous_run_runs_is_skipped_and_recorded() {
    let dir = TempDir::new("sched_overlap");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    schedule(
        &mut e,
        &s,
        "slow",
        "@every 10s",
        &ScheduleOptions::default(),
        T0,
    );
    let first = claim_due(&mut e, &s, T0 + 10_000);
    assert_eq!(first.len(), 1);
    // Still running at the next occurrence: skipped, and the one after is queued.
    assert!(claim_due(&mut e, &s, T0 + 20_000).is_empty());
    assert_eq!(
        occurrences(&mut e, &s, "slow", State::Cancelled),
        [T0 + 20_000]
    );
    let skipped = e.list(&s, State::Cancelled, 1).unwrap().remove(0);
    assert!(skipped.last_error.unwrap().contains(&format!(
        "the previous run (task {}) was still running",
        first[0].id
    )));
    assert_eq!(
        occurrences(&mut e, &s, "slow", State::Queued),
        [T0 + 30_000]
    );
    e.complete(&first[0].id, &first[0].lease, T0 + 25_000)
        .unwrap();
    assert_eq!(claim_due(&mut e, &s, T0 + 30_000).len(), 1);
    let info = &e.schedules(&s).unwrap()[0];
    assert_eq!((info.runs, info.skipped), (2, 1));

    // With overlap, a run starts while the previous one still runs.
    let o = options(&[("overlap", Scalar::Bool(true))]);
    e.schedule(
        &s,
        None,
        "parallel",
        "@every 10s",
        &TaskSpec::new("/p.php", "t", "[]"),
        &o,
        T0 + 30_500,
    )
    .unwrap();
    for at in [T0 + 40_000, T0 + 50_000] {
        let claimed = claim_due(&mut e, &s, at);
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].endpoint, "/p.php");
    }
    assert_eq!(
        occurrences(&mut e, &s, "parallel", State::Running),
        [T0 + 40_000, T0 + 50_000]
    );
}

#[test]
fn after_downtime_catch_up_one_runs_once_and_none_skips() {
    let dir = TempDir::new("sched_catchup");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    schedule(
        &mut e,
        &s,
        "one",
        "@every 60s",
        &ScheduleOptions::default(),
        T0,
    );
    let o = options(&[("catch_up", Scalar::Str("none".into()))]);
    e.schedule(
        &s,
        None,
        "none",
        "@every 60s",
        &TaskSpec::new("/other.php", "tick", "[]"),
        &o,
        T0,
    )
    .unwrap();
    // The server was down for an hour: the first request after it.
    let back = T0 + 3_600_000 + 500;
    let claimed = claim_due(&mut e, &s, back);
    assert_eq!(claimed.len(), 1, "one missed occurrence runs, once");
    assert_eq!(
        e.status(&s, &claimed[0].id)
            .unwrap()
            .unwrap()
            .schedule
            .as_deref(),
        Some("one")
    );
    assert_eq!(
        occurrences(&mut e, &s, "one", State::Queued),
        [T0 + 3_660_000]
    );
    assert_eq!(
        occurrences(&mut e, &s, "none", State::Cancelled),
        [T0 + 60_000]
    );
    assert_eq!(
        occurrences(&mut e, &s, "none", State::Queued),
        [T0 + 3_660_000]
    );
    let none = e
        .schedules(&s)
        .unwrap()
        .into_iter()
        .find(|i| i.name == "none")
        .unwrap();
    assert_eq!((none.runs, none.skipped), (0, 1));
    // A little late (within the grace, before the next) still runs.
    assert_eq!(claim_due(&mut e, &s, T0 + 3_660_000 + 20_000).len(), 1);
}

#[test]
fn cancelling_the_pending_occurrence_skips_it_and_the_schedule_goes_on() {
    let dir = TempDir::new("sched_cancel");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    schedule(
        &mut e,
        &s,
        "c",
        "@every 10s",
        &ScheduleOptions::default(),
        T0,
    );
    let pending = e.list(&s, State::Queued, 1).unwrap().remove(0);
    assert!(e.cancel(&s, &pending.id, T0 + 1_000).unwrap());
    assert_eq!(occurrences(&mut e, &s, "c", State::Queued), [T0 + 20_000]);
    assert_eq!(e.schedules(&s).unwrap()[0].skipped, 1);
}

#[test]
fn bad_schedules_are_refused_and_store_nothing() {
    let dir = TempDir::new("sched_bad");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    let o = ScheduleOptions::default();
    let long = "n".repeat(201);
    for (name, when, why) in [
        ("x", "* * * *", "5 fields"),
        ("x", "60 * * * *", "minute 60 is out of range"),
        ("x", "@every 0s", "no time at all"),
        ("x", "0 0 30 2 *", "never matches"),
        ("", "@hourly", "schedule name is empty"),
        (long.as_str(), "@hourly", "the limit is 200"),
    ] {
        match e.schedule(
            &s,
            None,
            name,
            when,
            &TaskSpec::new("/cron.php", "t", "[]"),
            &o,
            T0,
        ) {
            Err(Error::InvalidTask(m)) => assert!(m.contains(why), "{when}: {m}"),
            other => panic!("{when}: {other:?}"),
        }
    }
    let mut o = ScheduleOptions::default();
    for (k, v, why) in [
        (
            "timezone",
            Scalar::Str("Mars/Olympus".into()),
            "'Mars/Olympus' is not a known IANA",
        ),
        (
            "catch_up",
            Scalar::Str("all".into()),
            "option 'catch_up' must be 'one'",
        ),
        (
            "overlap",
            Scalar::Int(1),
            "option 'overlap' must be true or false",
        ),
        ("every", Scalar::Int(1), "unknown option 'every'"),
        ("max_attempts", Scalar::Int(0), "1 to 1000"),
    ] {
        let m = o.set(k, &v).unwrap_err().message().to_string();
        assert!(m.contains(why), "{k}: {m}");
    }
    match e.schedule(
        &s,
        None,
        "x",
        "@hourly",
        &TaskSpec::new("no-slash", "t", "[]"),
        &o,
        T0,
    ) {
        Err(Error::InvalidTask(_)) => {}
        other => panic!("{other:?}"),
    }
    assert!(e.schedules(&s).unwrap().is_empty());
    assert_eq!(e.stats(&s, T0).unwrap().counts[0], (State::Queued, 0));
}

#[test]
fn schedules_use_the_timezone_setting_or_option() {
    let dir = TempDir::new("sched_tz");
    let mut s = settings(&dir.db());
    s.set("timezone", &Scalar::Str("Asia/Kolkata".into()))
        .unwrap();
    let mut e = Engine::open(&s).unwrap();
    // 22:13:20 UTC is 03:43:20 in Kolkata (+05:30): the next 04:00 there is 22:30 UTC.
    let info = e
        .schedule(
            &s,
            None,
            "ist",
            "0 4 * * *",
            &TaskSpec::new("/c.php", "t", "[]"),
            &ScheduleOptions::default(),
            T0,
        )
        .unwrap();
    assert_eq!(
        (info.timezone.as_str(), info.next_at),
        ("Asia/Kolkata", Some(T0 + 1_000_000))
    );
    let o = options(&[("timezone", Scalar::Str("UTC".into()))]);
    let info = e
        .schedule(
            &s,
            None,
            "utc",
            "0 4 * * *",
            &TaskSpec::new("/c.php", "t", "[]"),
            &o,
            T0,
        )
        .unwrap();
    assert_eq!(info.next_at, Some(T0 + 1_000_000 + 19_800_000));
}

#[test]
fn concurrent_schedule_calls_leave_one_schedule_and_one_pending_occurrence() {
    let dir = TempDir::new("sched_concurrent");
    let s = settings(&dir.db());
    Engine::open(&s).unwrap().schedules(&s).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut e = Engine::open(&s).unwrap();
                for j in 0..20 {
                    schedule(
                        &mut e,
                        &s,
                        "same",
                        "* * * * * *",
                        &ScheduleOptions::default(),
                        T0 + i * 10 + j,
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut e = Engine::open(&s).unwrap();
    assert_eq!(e.schedules(&s).unwrap().len(), 1);
    assert_eq!(occurrences(&mut e, &s, "same", State::Queued).len(), 1);
}

#[test]
fn a_stored_schedule_this_machine_cannot_read_ends_its_chain_but_blocks_nothing() {
    if std::env::var(PG_ENV).is_ok() {
        return; // the schedule is damaged through SQLite's file
    }
    let dir = TempDir::new("sched_damaged");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    schedule(
        &mut e,
        &s,
        "tz",
        "@every 10s",
        &ScheduleOptions::default(),
        T0,
    );
    e.defer(
        &s,
        None,
        &TaskSpec::new("/cron.php", "plain", "[]"),
        &Default::default(),
        false,
        T0,
    )
    .unwrap();
    // As if created where this time zone exists, and run where it does not.
    rusqlite::Connection::open(dir.sqlite_db())
        .unwrap()
        .execute("UPDATE schedules SET timezone = 'Nowhere/Gone'", [])
        .unwrap();
    let claimed = claim_due(&mut e, &s, T0 + 10_000);
    assert_eq!(claimed.len(), 1, "one request claims one task");
    let again = claim_due(&mut e, &s, T0 + 10_000);
    assert_eq!(
        claimed.len() + again.len(),
        2,
        "the occurrence and the plain task both ran"
    );
    assert_eq!(e.schedules(&s).unwrap()[0].next_at, None, "the chain ended");
}
