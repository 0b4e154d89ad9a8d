//! The PostgreSQL backend's own behaviour: its errors, reconnecting,
//! several servers sharing one database, unique keys under concurrency.
//! Needs the test cluster (`ASYNC_ENGINE_TEST_PG`, set by `bin/test`): the
//! tests are ignored by a plain `cargo test` (and listed as such), and
//! `bin/test` runs them with `--include-ignored`, where a missing cluster
//! fails them rather than letting them pass untried.

mod common;

use async_engine_core::{DeferOptions, Engine, Error, Scalar, Settings, State, TaskSpec};
use common::*;

/// The admin URL of the test cluster; fails the test without one.
fn admin() -> String {
    std::env::var(PG_ENV).unwrap_or_else(|_| {
        panic!("{PG_ENV} is not set: start a cluster with tests/pg/cluster (bin/test does)")
    })
}

/// The `user:password` of the admin URL.
fn login(admin: &str) -> &str {
    &admin[admin.find("://").unwrap() + 3..admin.rfind('@').unwrap()]
}

/// A fresh database of `dir` under a session name of its own (returned
/// first), so that the test finds the engine's session in
/// `pg_stat_activity`.
fn named_session(dir: &TempDir, tag: &str) -> (String, String) {
    let name = format!("{tag}_{}", async_engine_core::id::random_hex(4));
    let url = format!("{}&application_name={name}", dir.db());
    (name, url)
}

/// `admin` with its user, password and database replaced.
fn url_as(admin: &str, user_password: &str, db: &str) -> String {
    let at = admin.rfind('@').unwrap();
    let host_end = admin[at..].find('/').unwrap() + at;
    format!("postgres://{user_password}{}/{db}", &admin[at..host_end])
}

fn open_err(s: &Settings) -> String {
    match Engine::open(s) {
        Err(Error::Storage(m)) => m,
        Err(e) => panic!("not a StorageError: {e:?}"),
        Ok(_) => panic!("opened"),
    }
}

fn server(db: &str, name: &str, max_workers: u32) -> Settings {
    Settings {
        server: Some(name.into()),
        max_workers,
        ..settings(db)
    }
}

fn tables_in(admin: &str, schema: &str) -> i64 {
    let mut c = postgres::Client::connect(admin, postgres::NoTls).unwrap();
    c.query_one(
        "SELECT count(*) FROM pg_tables WHERE schemaname = $1",
        &[&schema],
    )
    .unwrap()
    .get(0)
}

/// Each table of a database with its columns, and its index names
/// (primary keys aside), both sorted.
type Shape = (Vec<(String, Vec<String>)>, Vec<String>);

fn sqlite_shape(path: &str) -> Shape {
    let c = rusqlite::Connection::open(path).unwrap();
    let names = |sql: &str| -> Vec<String> {
        let mut stmt = c.prepare(sql).unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    };
    let tables = names(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         ORDER BY name",
    )
    .into_iter()
    .map(|t| {
        let mut columns = names(&format!("SELECT name FROM pragma_table_info('{t}')"));
        columns.sort();
        (t, columns)
    })
    .collect();
    let indexes = names(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
    );
    (tables, indexes)
}

fn pg_shape(url: &str) -> Shape {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let mut tables: Vec<(String, Vec<String>)> = Vec::new();
    for row in c
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() ORDER BY 1, 2",
            &[],
        )
        .unwrap()
    {
        let (table, column): (String, String) = (row.get(0), row.get(1));
        match tables.last_mut() {
            Some((t, columns)) if *t == table => columns.push(column),
            _ => tables.push((table, vec![column])),
        }
    }
    let indexes = c
        .query(
            "SELECT indexname::text FROM pg_indexes
             WHERE schemaname = current_schema() AND indexname NOT LIKE '%_pkey' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    (tables, indexes)
}

#[test]
#[ignore = "needs the test PostgreSQL cluster: bin/test runs it"]
fn both_backends_create_the_same_tables_columns_and_indexes() {
    admin();
    let dir = TempDir::new("shape");
    Engine::open(&settings(&dir.sqlite_db())).unwrap();
    Engine::open(&settings(&dir.db())).unwrap();
    let (mut sqlite, mut pg) = (sqlite_shape(&dir.sqlite_db()), pg_shape(&dir.db()));
    // The one table a backend has alone: SQLite's triggers count finished
    // tasks for stats(); on PostgreSQL, where writers run at once, a shared
    // counter row would make every task's end wait for the others' commits.
    let sqlite_only = ["task_counts"];
    assert!(sqlite_only
        .iter()
        .all(|t| sqlite.0.iter().any(|(name, _)| name == t)));
    sqlite
        .0
        .retain(|(name, _)| !sqlite_only.contains(&name.as_str()));
    assert_eq!(sqlite.0, pg.0, "tables and columns");
    // The one index a backend has alone: several servers count their own
    // slots at once on PostgreSQL; SQLite's slots table is a few rows.
    let pg_only = ["slots_server"];
    assert!(pg_only.iter().all(|i| pg.1.contains(&i.to_string())));
    pg.1.retain(|i| !pg_only.contains(&i.as_str()));
    assert_eq!(sqlite.1, pg.1, "indexes");
    assert!(sqlite.0.len() >= 8 && sqlite.1.len() >= 10, "{sqlite:?}");
}

#[test]
#[ignore = "needs the test PostgreSQL cluster: bin/test runs it"]
fn bad_urls_unreachable_servers_and_refused_logins_are_storage_errors_naming_the_cause() {
    let admin = admin();
    let password = login(&admin).split_once(':').unwrap().1.to_string();
    let cases = [
        (
            "postgres://u@127.0.0.1:notaport/db".to_string(),
            "not a valid PostgreSQL URL",
        ),
        (
            "postgres://u:secret@127.0.0.1:1/db".to_string(),
            "cannot be reached",
        ),
        (
            url_as(&admin, "postgres:wrong", "postgres"),
            "refused the login",
        ),
        (
            url_as(&admin, "nobody_here:x", "postgres"),
            "refused the login",
        ),
        (
            url_as(&admin, &format!("postgres:{password}"), "no_such_db"),
            "does not exist",
        ),
    ];
    for (url, why) in cases {
        let m = open_err(&settings(&url));
        assert!(m.contains(why), "{url}: {m}");
        assert!(
            !m.contains("secret") && !m.contains("wrong"),
            "password shown: {m}"
        );
    }
}

#[test]
#[ignore = "needs the test PostgreSQL cluster: bin/test runs it"]
fn a_user_without_permission_gets_a_storage_error_and_nothing_is_half_created() {
    let admin = admin();
    let role = format!("limited_{}", async_engine_core::id::random_hex(4));
    let schema = format!("locked_{}", async_engine_core::id::random_hex(4));
    pg_admin(
        &admin,
        &format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}';
             CREATE SCHEMA {schema}; GRANT USAGE ON SCHEMA {schema} TO {role};"
        ),
    );
    let url = schema_url(
        &url_as(&admin, &format!("{role}:pw-{role}"), "postgres"),
        &schema,
    );
    let m = open_err(&settings(&url));
    assert!(m.contains("lack of permission"), "{m}");
    assert!(m.contains("permission denied for schema"), "{m}");
    assert_eq!(
        tables_in(&admin, &schema),
        0,
        "the schema is created whole or not at all"
    );
    pg_admin(
        &admin,
        &format!("DROP SCHEMA {schema} CASCADE; DROP ROLE {role};"),
    );
}

#[test]
#[ignore = "needs the test PostgreSQL cluster: bin/test runs it"]
fn another_applications_tables_are_refused_and_left_alone() {
    let admin = admin();
    let dir = TempDir::new("foreign");
    let schema = dir.db().rsplit("%3D").next().unwrap().to_string();
    pg_admin(
        &admin,
        &format!("CREATE TABLE {schema}.tasks (x int); INSERT INTO {schema}.tasks VALUES (7);"),
    );
    let m = open_err(&settings(&dir.db()));
    assert!(m.contains("tables of another application (tasks)"), "{m}");
    assert_eq!(tables_in(&admin, &schema), 1);
}

#[test]
#[ignore = "needs the test PostgreSQL cluster: bin/test runs it"]
fn the_connection_is_made_again_after_the_server_closed_it() {
    let admin = admin();
    let dir = TempDir::new("reconnect");
    let (name, url) = named_session(&dir, "reconnect");
    let s = settings(&url);
    let mut e = Engine::open(&s).unwrap();
    let first = defer(&mut e, &s, "/w.php", "a", T0);
    pg_admin(
        &admin,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{name}'"
        ),
    );
    std::thread::sleep(std::time::Duration::from_millis(100));
    let second = defer(&mut e, &s, "/w.php", "b", T0);
    assert!(e.status(&Settings::default(), &first.id).unwrap().is_some());
    assert_eq!(
        e.status(&Settings::default(), &second.id)
            .unwrap()
            .unwrap()
            .name,
        "b"
    );
}

/// A session's one-trip functions are temporary: once the server closed the
/// connection, the write transaction that connects again must not call them
/// in the new session (which has none until it creates them).
#[test]
#[ignore = "needs the test PostgreSQL cluster: bin/test runs it"]
fn a_reservation_after_the_server_closed_the_connection_runs_in_the_new_session() {
    let admin = admin();
    let dir = TempDir::new("reconnect_reserve");
    let (name, url) = named_session(&dir, "reconnect_reserve");
    let s = settings(&url);
    let mut e = Engine::open(&s).unwrap();
    let later = DeferOptions {
        delay: Some(10.0),
        ..DeferOptions::default()
    };
    let task = try_defer(&mut e, &s, "/w.php", "a", &later, T0).unwrap();
    assert!(task.dispatch.is_none(), "not due yet");
    pg_admin(
        &admin,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{name}'"
        ),
    );
    std::thread::sleep(std::time::Duration::from_millis(100));
    let sent = e.kick(&s, T0 + 11_000).unwrap();
    assert_eq!(
        sent.iter().map(|d| d.endpoint.as_str()).collect::<Vec<_>>(),
        ["/w.php"],
        "the kick reserves a slot for the task now due"
    );
}

/// `url` with its host replaced by the directory of the server's Unix
/// socket, percent-encoded as a URL's host must be.
fn over_unix_socket(url: &str, admin: &str) -> String {
    let mut c = postgres::Client::connect(admin, postgres::NoTls).unwrap();
    let dirs: String = c
        .query_one("SHOW unix_socket_directories", &[])
        .unwrap()
        .get(0);
    let dir = dirs.split(',').next().unwrap().trim();
    assert!(dir.starts_with('/'), "the cluster has no socket: {dirs:?}");
    let encoded: String = dir
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let at = url.rfind('@').unwrap();
    let port_at = url[at..].find(':').unwrap() + at;
    format!("{}@{encoded}{}", &url[..at], &url[port_at..])
}

#[test]
#[ignore = "needs the test PostgreSQL cluster: bin/test runs it"]
fn a_url_naming_the_unix_socket_directory_connects_through_it() {
    let admin = admin();
    let dir = TempDir::new("socket");
    let (name, url) = named_session(&dir, "socket");
    let url = over_unix_socket(&url, &admin);
    assert!(url.contains("@%2F"), "{url}");
    let s = settings(&url);
    let mut e = Engine::open(&s).unwrap();
    let task = defer(&mut e, &s, "/u.php", "a", T0);
    assert_eq!(
        e.status(&Settings::default(), &task.id)
            .unwrap()
            .unwrap()
            .name,
        "a"
    );
    // A session over the socket has no client address.
    let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
    let rows = c
        .query(
            "SELECT client_addr IS NULL FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .unwrap();
    assert_eq!(rows.len(), 1, "one session of the engine");
    assert!(rows[0].get::<_, bool>(0), "the engine connected over TCP");

    // A directory with no server in it: a StorageError naming the path.
    let nowhere = url.replace("@%2F", "@%2Fno-such-dir%2F");
    let m = open_err(&settings(&nowhere));
    assert!(
        m.contains("cannot be reached") && m.contains("/no-such-dir/"),
        "{m}"
    );
    let password = login(&admin).split_once(':').unwrap().1;
    assert!(!m.contains(password), "password shown: {m}");
}

#[test]
#[ignore = "needs the test PostgreSQL cluster: bin/test runs it"]
fn each_server_has_its_own_slots_and_takes_over_another_servers_expired_leases() {
    admin();
    let dir = TempDir::new("servers");
    let (a, b) = (server(&dir.db(), "a", 1), server(&dir.db(), "b", 1));
    let (mut ea, mut eb) = (Engine::open(&a).unwrap(), Engine::open(&b).unwrap());
    let short = {
        let mut o = DeferOptions::default();
        o.set("timeout", &Scalar::Int(1)).unwrap();
        o
    };
    // max_workers is per server: one request in flight on each.
    let on_a = ea
        .defer(
            &a,
            None,
            &TaskSpec::new("/w.php", "t", "[]"),
            &short,
            true,
            T0,
        )
        .unwrap();
    let on_b = eb
        .defer(
            &b,
            None,
            &TaskSpec::new("/w.php", "t", "[]"),
            &short,
            true,
            T0,
        )
        .unwrap();
    assert!(on_a.dispatch.is_some() && on_b.dispatch.is_some());
    assert!(
        defer(&mut ea, &a, "/w.php", "t", T0).dispatch.is_none(),
        "a is full"
    );
    assert_eq!(ea.stats(&a, T0).unwrap().in_flight, 1);
    // Server a runs a task deferred on either, then dies holding it.
    let got = ea
        .accept(&a, &received(&on_a.dispatch.unwrap()), false, T0)
        .unwrap();
    let held = got.task.expect("a claimed a task");
    // Its lease (1 s) expires; b's kick reaps it and sends it again from b.
    let later = T0 + 1_500;
    let sent = eb.kick(&b, later).unwrap();
    let info = eb.status(&Settings::default(), &held.id).unwrap().unwrap();
    assert_eq!((info.state, info.attempt), (State::Queued, 1));
    let retry_at = info.due_at;
    assert!(info.last_error.unwrap().contains("lease expired"));
    assert!(
        sent.is_empty(),
        "b's one slot is still held by its own request"
    );
    let got_b = eb
        .accept(&b, &received(&on_b.dispatch.unwrap()), false, later)
        .unwrap();
    let mut ran = vec![got_b.task.unwrap().id];
    while let Some(t) = eb
        .claim_next(&Settings::default(), &got_b.slot, "/w.php", retry_at)
        .unwrap()
    {
        eb.complete(&t.id, &t.lease, retry_at).unwrap();
        ran.push(t.id);
    }
    assert!(ran.contains(&held.id), "b ran the task a held when it died");
    assert_eq!(ran.len(), 3);
    // a's dead request no longer counts against a once its slot is reaped.
    let much_later = retry_at + 70_000;
    eb.kick(&b, much_later).unwrap();
    assert_eq!(ea.stats(&a, much_later).unwrap().in_flight, 0);
}

#[test]
#[ignore = "needs the test PostgreSQL cluster: bin/test runs it"]
fn a_unique_key_is_held_by_one_task_however_many_processes_defer_it_at_once() {
    admin();
    let dir = TempDir::new("unique");
    let db = dir.db();
    Engine::open(&settings(&db)).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let db = db.clone();
            std::thread::spawn(move || {
                let s = server(&db, &format!("s{i}"), 4);
                let mut e = Engine::open(&s).unwrap();
                let mut o = DeferOptions::default();
                o.set("unique", &Scalar::Str("report".into())).unwrap();
                let d = e
                    .defer(&s, None, &TaskSpec::new("/w.php", "t", "[]"), &o, true, T0)
                    .unwrap();
                (d.id, d.created)
            })
        })
        .collect();
    let results: Vec<(String, bool)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|(_, c)| *c).count(), 1, "{results:?}");
    assert!(results.iter().all(|(id, _)| *id == results[0].0));
}

/// How many one-trip defer functions the sessions connected to the
/// database of `url` hold (each database has its own catalog).
fn one_trip_functions(url: &str) -> i64 {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.query_one(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE p.proname = 'async_engine_defer' AND n.nspname LIKE 'pg_temp%'",
        &[],
    )
    .unwrap()
    .get(0)
}

/// Waits (at most 10 s) until no session on the database of `url` holds
/// the function: a backend drops its temporary objects as it exits, a
/// moment after its client has closed the connection.
fn until_no_one_trip_functions(url: &str) -> i64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n = one_trip_functions(url);
        if n == 0 || std::time::Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Reserves, finds every slot held, reaps expired slots, refuses a full
/// queue: what a defer() must do, whichever way it reaches the database.
fn defer_reserves_reaps_and_refuses(s: &Settings) {
    let mut e = Engine::open(s).unwrap();
    let first = defer(&mut e, s, "/w.php", "a", T0);
    assert!(first.dispatch.is_some(), "a slot was free");
    let second = defer(&mut e, s, "/w.php", "b", T0);
    assert!(second.dispatch.is_none(), "the one slot is held");
    // The first request never arrived; once its slot outlives its deadline
    // the next defer() reaps it (and the endpoint backs off, so nothing is
    // sent yet).
    let later = T0 + async_engine_core::SENT_TTL_MS + 1_000;
    assert_eq!(e.stats(s, later).unwrap().in_flight, 1);
    defer(&mut e, s, "/w.php", "c", later);
    assert_eq!(
        e.stats(s, later).unwrap().in_flight,
        0,
        "the expired slot was reaped"
    );
    let full = try_defer(&mut e, s, "/w.php", "d", &DeferOptions::default(), later);
    assert!(matches!(full, Err(Error::QueueFull(_))), "{full:?}");
    let counts = e.stats(s, later).unwrap().counts;
    assert!(
        counts.contains(&(State::Queued, 3)),
        "the refused task was not stored: {counts:?}"
    );
}

/// Where each request of a run of defers, accepts and request ends goes,
/// on two slots: the earliest due endpoint with no request first, a request
/// that fans out, a full server, an endpoint served again while a request
/// to it is on its way (`delivery::reserve`'s busy endpoint), expired slots
/// reaped. The same on every backend and either way of reaching
/// PostgreSQL (one-trip functions or statements).
fn hand_over_trace(s: &Settings) -> Vec<String> {
    let mut e = Engine::open(s).unwrap();
    let mut trace = vec![];
    let to = |d: &Option<async_engine_core::Dispatch>| {
        d.as_ref().map_or("-".to_string(), |d| d.endpoint.clone())
    };
    let t = T0;
    let deferred = |e: &mut Engine, endpoint: &str, now: i64, trace: &mut Vec<String>| {
        let d = defer(e, s, endpoint, "t", now).dispatch;
        trace.push(format!("defer {endpoint}: {}", to(&d)));
        d
    };
    // Runs the request `d` carries: accepts it (its fan-out noted), ends
    // its task and the request; returns the fan-out and the hand-over.
    let run =
        |e: &mut Engine, d: async_engine_core::Dispatch, now: i64, trace: &mut Vec<String>| {
            let got = e.accept(s, &received(&d), true, now).unwrap();
            let task = got.task.expect("a task for the request");
            let more = got.dispatch;
            e.complete(&task.id, &task.lease, now).unwrap();
            let next = e
                .end_request(s, Some(&got.slot), &[], &[], "ended", true, now)
                .unwrap();
            trace.push(format!(
                "run {}: more {}, next {}",
                d.endpoint,
                to(&more),
                to(&next)
            ));
            (more, next)
        };
    let a1 = deferred(&mut e, "/a.php", t, &mut trace).unwrap();
    deferred(&mut e, "/a.php", t, &mut trace);
    deferred(&mut e, "/a.php", t, &mut trace);
    let b1 = deferred(&mut e, "/b.php", t, &mut trace).unwrap();
    deferred(&mut e, "/c.php", t - 5, &mut trace);
    let (_, c1) = run(&mut e, a1, t, &mut trace);
    let (_, a2) = run(&mut e, b1, t, &mut trace);
    run(&mut e, c1.unwrap(), t, &mut trace);
    deferred(&mut e, "/a.php", t, &mut trace);
    deferred(&mut e, "/a.php", t, &mut trace);
    // A request to /a fans out, then ends while the one it sent is on its
    // way: /a is not due, but holds more due tasks than requests coming.
    let a2 = a2.unwrap();
    let got = e.accept(s, &received(&a2), true, t).unwrap();
    let task = got.task.unwrap();
    trace.push(format!("accept /a.php: more {}", to(&got.dispatch)));
    e.complete(&task.id, &task.lease, t).unwrap();
    let next = e
        .end_request(s, Some(&got.slot), &[], &[], "ended", true, t)
        .unwrap();
    trace.push(format!("end /a.php: next {}", to(&next)));
    // Both slots' requests never arrive; past their deadline, a defer
    // reaps them (/a backs off) and sends its own.
    let later = t + async_engine_core::SENT_TTL_MS + 1_000;
    deferred(&mut e, "/d.php", later, &mut trace);
    trace
}

#[test]
#[ignore = "needs the test PostgreSQL cluster: bin/test runs it"]
fn hand_overs_go_where_the_statements_send_them_with_or_without_the_one_trip_functions() {
    let admin = admin();
    let dir = TempDir::new("handover");
    let two = |db: &str| Settings {
        max_workers: 2,
        ..settings(db)
    };
    let reference = hand_over_trace(&two(&dir.sqlite_db()));
    assert_eq!(
        reference[5..],
        [
            "run /a.php: more -, next /c.php",
            "run /b.php: more -, next /a.php",
            "run /c.php: more -, next -",
            "defer /a.php: -",
            "defer /a.php: -",
            "accept /a.php: more /a.php",
            "end /a.php: next /a.php",
            "defer /d.php: /d.php",
        ],
        "{reference:?}"
    );
    alike_with_or_without_the_one_trip_functions(&admin, &reference, |db| {
        hand_over_trace(&two(db))
    });
}

/// Runs `trace` on a fresh database of the cluster `admin` names, where the
/// engine's session creates its one-trip functions, and on one whose user
/// may not create them (the statements serve), and finds `reference` both
/// times.
fn alike_with_or_without_the_one_trip_functions<T: PartialEq + std::fmt::Debug>(
    admin: &str,
    reference: &T,
    trace: impl Fn(&str) -> T,
) {
    let own = format!("onetrip_{}", async_engine_core::id::random_hex(4));
    pg_admin(admin, &format!("CREATE DATABASE {own}"));
    let own_url = url_as(admin, login(admin), &own);
    assert_eq!(&trace(&own_url), reference, "one-trip functions");
    pg_admin(admin, &format!("DROP DATABASE {own} WITH (FORCE)"));
    let (limited, drop) = without_temp_right(admin);
    assert_eq!(&trace(&limited), reference, "statements");
    drop();
}

/// An endpoint's next due time and queued count after each step that
/// recomputes them: tasks of several priorities deferred, cancelled one by
/// one, claimed by a request.
fn next_due_trace(s: &Settings) -> Vec<(Option<i64>, i64)> {
    let mut e = Engine::open(s).unwrap();
    let mut trace = Vec::new();
    let mut ids = Vec::new();
    for (priority, delay) in [(5, 30), (0, 10), (-3, 20), (5, 40), (0, 0), (-3, 0)] {
        let mut o = DeferOptions::default();
        o.set("priority", &Scalar::Int(priority)).unwrap();
        o.set("delay", &Scalar::Int(delay)).unwrap();
        let d = e
            .defer(s, None, &TaskSpec::new("/n.php", "t", "[]"), &o, false, T0)
            .unwrap();
        ids.push(d.id);
    }
    let db = s.database.clone().unwrap();
    let mut look = || trace.push(endpoint_row(&db, "/n.php"));
    look();
    for id in &ids[1..3] {
        assert!(e.cancel(s, id, T0).unwrap());
        look();
    }
    let request = e.kick(s, T0).unwrap().pop().expect("a request for /n.php");
    let got = e.accept(s, &received(&request), false, T0).unwrap();
    assert_eq!(
        got.task.unwrap().id,
        ids[4],
        "the due task of the highest priority"
    );
    look();
    let next = e.claim_next(s, &got.slot, "/n.php", T0).unwrap().unwrap();
    assert_eq!(next.id, ids[5]);
    look();
    assert!(e.claim_next(s, &got.slot, "/n.php", T0).unwrap().is_none());
    look();
    trace
}

/// An endpoint's row as the engine keeps it: next due time, queued count.
fn endpoint_row(db: &str, endpoint: &str) -> (Option<i64>, i64) {
    const SQL: &str = "SELECT next_due, queued FROM endpoints WHERE site = '' AND endpoint = ";
    if db.starts_with("postgres://") {
        let mut c = postgres::Client::connect(db, postgres::NoTls).unwrap();
        let row = c.query_one(&format!("{SQL}$1"), &[&endpoint]).unwrap();
        (row.get(0), row.get(1))
    } else {
        let c = rusqlite::Connection::open(db).unwrap();
        c.query_row(&format!("{SQL}?1"), [endpoint], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap()
    }
}

#[test]
#[ignore = "needs the test PostgreSQL cluster: bin/test runs it"]
fn next_due_times_are_recomputed_alike_with_or_without_the_one_trip_functions() {
    let admin = admin();
    let dir = TempDir::new("nextdue");
    let reference = next_due_trace(&settings(&dir.sqlite_db()));
    let s = |ms: i64| Some(T0 + ms);
    assert_eq!(
        reference,
        [
            (s(0), 6),
            (s(0), 5),
            (s(0), 4),
            (s(0), 3),
            (s(30_000), 2),
            (s(30_000), 2)
        ],
        "{reference:?}"
    );
    alike_with_or_without_the_one_trip_functions(&admin, &reference, |db| {
        next_due_trace(&settings(db))
    });
}

/// A fresh database of the cluster `admin` names, and a user who may not
/// create temporary objects in it: its URL, and what removes both.
fn without_temp_right(admin: &str) -> (String, impl FnOnce() + '_) {
    let db = format!("notemp_{}", async_engine_core::id::random_hex(4));
    let role = format!("notemp_{}", async_engine_core::id::random_hex(4));
    pg_admin(admin, &format!("CREATE DATABASE {db}"));
    pg_admin(
        admin,
        &format!(
            "REVOKE TEMPORARY ON DATABASE {db} FROM PUBLIC;
             CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}';"
        ),
    );
    pg_admin(
        &url_as(admin, login(admin), &db),
        &format!("GRANT ALL ON SCHEMA public TO {role};"),
    );
    let url = url_as(admin, &format!("{role}:pw-{role}"), &db);
    (url, move || {
        pg_admin(admin, &format!("DROP DATABASE {db} WITH (FORCE)"));
        pg_admin(admin, &format!("DROP ROLE {role}"));
    })
}

#[test]
#[ignore = "needs the test PostgreSQL cluster: bin/test runs it"]
fn defer_takes_one_round_trip_and_falls_back_to_a_transaction_without_the_temp_right() {
    let admin = admin();
    let login = login(&admin);
    // A database of its own, so that no other test's sessions (they run
    // in parallel) hold a function in its catalog.
    let own = format!("onetrip_{}", async_engine_core::id::random_hex(4));
    pg_admin(&admin, &format!("CREATE DATABASE {own}"));
    let own_url = url_as(&admin, login, &own);
    let s = Settings {
        max_workers: 1,
        max_queued: 3,
        ..settings(&own_url)
    };
    defer_reserves_reaps_and_refuses(&s);
    assert_eq!(
        until_no_one_trip_functions(&own_url),
        0,
        "the session's function went with it"
    );
    {
        let mut e = Engine::open(&s).unwrap();
        defer(&mut e, &s, "/v.php", "x", T0);
        assert_eq!(
            one_trip_functions(&own_url),
            1,
            "the engine's session made it"
        );
    }
    pg_admin(&admin, &format!("DROP DATABASE {own} WITH (FORCE)"));

    // A database where the engine's user may not create temporary objects.
    let (limited, drop) = without_temp_right(&admin);
    let limited = Settings {
        max_workers: 1,
        max_queued: 3,
        ..settings(&limited)
    };
    defer_reserves_reaps_and_refuses(&limited);
    drop();
}

/// The advisory lock key of `server`'s slots, as the engine computes it
/// (FNV-1a of "async-engine slots\0" and the name).
fn slot_lock_key(server: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"async-engine slots\0".iter().chain(server.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

#[test]
#[ignore = "needs the test PostgreSQL cluster: bin/test runs it"]
fn a_request_accepted_while_every_slot_is_held_does_not_wait_for_the_slot_lock() {
    admin();
    let dir = TempDir::new("slotlock");
    let s = Settings {
        busy_timeout: 0.3,
        ..server(&dir.db(), "lockless", 2)
    };
    let mut e = Engine::open(&s).unwrap();
    let to_a = defer(&mut e, &s, "/a.php", "t", T0).dispatch.unwrap();
    let to_b = defer(&mut e, &s, "/b.php", "t", T0).dispatch.unwrap();
    defer(&mut e, &s, "/a.php", "t", T0);
    // Another session holds the server's slot lock, as a long transaction
    // of another worker would.
    let mut other = postgres::Client::connect(&dir.db(), postgres::NoTls).unwrap();
    let key = slot_lock_key("lockless");
    other
        .execute("SELECT pg_advisory_lock($1)", &[&key])
        .unwrap();
    // Both slots are held: the request claims without the lock, as no slot
    // could be added.
    let got = e.accept(&s, &received(&to_a), true, T0).unwrap();
    let task = got.task.expect("a task of /a.php");
    assert!(got.dispatch.is_none(), "no slot to add");
    // With a slot free, a request may add one: it waits for the lock.
    other
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .unwrap();
    e.complete(&task.id, &task.lease, T0).unwrap();
    e.end_request(&s, Some(&got.slot), &[], &[], "ended", false, T0)
        .unwrap();
    other
        .execute("SELECT pg_advisory_lock($1)", &[&key])
        .unwrap();
    let waited = e.accept(&s, &received(&to_b), true, T0);
    assert!(
        matches!(&waited, Err(Error::Storage(m)) if m.contains("busy") || m.contains("lock")),
        "{waited:?}"
    );
}
