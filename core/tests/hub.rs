//! The live-events hub through its real path: senders (one per "worker")
//! host it under a lease; raw HTTP clients subscribe, replay, publish and
//! are refused; a dropped host is replaced.

mod common;

use async_engine_core::clock::now_ms;
use async_engine_core::endpoint::parse_base_url;
use async_engine_core::hub::jwt::{self, Claims};
use async_engine_core::hub::tables::Update;
use async_engine_core::sender::Sender;
use async_engine_core::target::Target;
use async_engine_core::{Engine, Error, Settings};
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn hub_settings(db: &str, listen: SocketAddr) -> Settings {
    let mut s = settings(db);
    s.hub_listen = Some(listen);
    s
}

/// A sender that hosts the hub when it holds the lease, as a worker's does.
fn worker(s: &Settings) -> Sender {
    let sender = Sender::start().unwrap();
    let target = Target {
        base: parse_base_url("http://127.0.0.1:9").unwrap(),
        connect_to: None,
    };
    sender.wake_at(None, &target, s);
    sender
}

fn wait_listening(addr: SocketAddr, limit: Duration) -> Duration {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(start.elapsed() < limit, "no hub listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// Sends a request; returns the connection with the response head read:
/// (status, lowercased head, reader for the body).
fn request(addr: SocketAddr, head: &str, body: &str) -> (u16, String, BufReader<TcpStream>) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        c,
        "{head}\r\nHost: hub\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(c);
    let mut headers = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        headers.push_str(&line.to_ascii_lowercase());
    }
    let status = headers[9..12].parse().unwrap();
    (status, headers, r)
}

fn subscribe(addr: SocketAddr, query: &str, extra: &str) -> BufReader<TcpStream> {
    let head = format!("GET /.well-known/mercure?{query} HTTP/1.1{extra}");
    let (status, head, r) = request(addr, &head, "");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    r
}

/// Reads `n` events (id, data) from a chunked event stream.
fn events(r: &mut BufReader<TcpStream>, n: usize) -> Vec<(String, String)> {
    let mut out = vec![];
    let (mut id, mut data) = (String::new(), Vec::<String>::new());
    while out.len() < n {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 {
            panic!("the stream ended after {out:?}");
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(v) = line.strip_prefix("id: ") {
            id = v.into();
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push(v.into());
        } else if line.is_empty() && !id.is_empty() {
            out.push((std::mem::take(&mut id), data.join("\n")));
            data.clear();
        }
    }
    out
}

fn publish(e: &mut Engine, s: &Settings, topic: &str, data: &str, private: bool) -> String {
    let update = Update {
        topics: vec![topic.into()],
        data: data.into(),
        private,
        ..Update::default()
    };
    e.publish(s, &update, now_ms()).unwrap()
}

fn token(e: &mut Engine, s: &Settings, subscribe: &[&str], publish: &[&str]) -> String {
    let claims = Claims {
        subscribe: subscribe.iter().map(|t| t.to_string()).collect(),
        publish: publish.iter().map(|t| t.to_string()).collect(),
        payload: serde_json::json!({"name": "Ada"}),
    };
    jwt::sign(&e.hub_key(s).unwrap(), &claims, 4_000_000_000)
}

#[test]
fn bad_updates_and_tokens_are_refused_and_store_nothing() {
    let dir = TempDir::new("hub_bad");
    let s = settings(&dir.db());
    let mut e = Engine::open(&s).unwrap();
    let cases: Vec<(Update, &str)> = vec![
        (Update::default(), "at least one topic"),
        (
            Update {
                topics: vec![String::new()],
                ..Update::default()
            },
            "a topic must be 1 to 2048 bytes",
        ),
        (
            Update {
                topics: vec!["t".into()],
                id: Some("a\nb".into()),
                ..Update::default()
            },
            "option 'id' must be 1 to 255 bytes on one line",
        ),
        (
            Update {
                topics: vec!["t".into()],
                data: "x".repeat(s.max_args_size + 1),
                ..Update::default()
            },
            "data is at most 1048576 bytes (hub_max_event_size)",
        ),
    ];
    for (update, message) in cases {
        match e.publish(&s, &update, T0) {
            Err(Error::InvalidTask(m)) => assert!(m.contains(message), "{m}"),
            other => panic!("{update:?} gave {other:?}"),
        }
    }
    let id = publish(&mut e, &s, "t", "one", false);
    let again = Update {
        topics: vec!["t".into()],
        id: Some(id.clone()),
        ..Update::default()
    };
    assert!(
        matches!(e.publish(&s, &again, T0), Err(Error::InvalidTask(m)) if m.contains("published already"))
    );
    match e.subscriber_token(&s, &["t".into()], serde_json::Value::Null, 0, T0) {
        Err(Error::InvalidTask(m)) => assert!(m.contains("ttl"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A token verifies with the key derived from the secret, and only with it.
    let t = e
        .subscriber_token(&s, &["t".into()], serde_json::Value::Null, 60, T0)
        .unwrap();
    assert!(jwt::verify(&e.hub_key(&s).unwrap(), &t, T0 / 1000 + 59).is_ok());
    assert_eq!(
        jwt::verify(&e.hub_key(&s).unwrap(), &t, T0 / 1000 + 60),
        Err("the token has expired")
    );
    let other = Settings {
        secret: Some("another-secret-0123456789".into()),
        ..s.clone()
    };
    assert!(jwt::verify(&e.hub_key(&other).unwrap(), &t, T0 / 1000).is_err());
}

#[test]
fn a_hosted_hub_delivers_replays_filters_private_updates_and_refuses_bad_tokens() {
    let dir = TempDir::new("hub_serve");
    let listen = free_addr();
    let s = hub_settings(&dir.db(), listen);
    let mut e = Engine::open(&s).unwrap();
    let first = publish(&mut e, &s, "books/1", "before anyone listened", false);
    let w = worker(&s);
    wait_listening(listen, Duration::from_secs(5));

    let anon = subscribe(listen, "topic=books/{id}", "");
    let tok = token(&mut e, &s, &["books/1"], &[]);
    let authed = subscribe(
        listen,
        "topic=books/1",
        &format!("\r\nAuthorization: Bearer {tok}"),
    );
    let cookie = subscribe(
        listen,
        "topic=books/1",
        &format!("\r\nCookie: a=b; mercureAuthorization={tok}"),
    );
    let replay = subscribe(
        listen,
        "topic=books/1",
        &format!("\r\nLast-Event-ID: {first}"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let public = publish(&mut e, &s, "books/1", "line one\nline two", false);
    let private = publish(&mut e, &s, "books/1", "secret", true);
    let last = publish(&mut e, &s, "books/2", "other book", false);

    let (mut anon, mut authed, mut cookie, mut replay) = (anon, authed, cookie, replay);
    assert_eq!(
        events(&mut anon, 2),
        vec![
            (public.clone(), "line one\nline two".into()),
            (last.clone(), "other book".into())
        ],
        "anonymous: public updates of every matching topic, no private one"
    );
    let both = vec![
        (public.clone(), "line one\nline two".into()),
        (private.clone(), "secret".into()),
    ];
    assert_eq!(events(&mut authed, 2), both);
    assert_eq!(events(&mut cookie, 2), both);
    assert_eq!(
        events(&mut replay, 1),
        vec![(public.clone(), "line one\nline two".to_string())]
    );

    // Presence: the token's payload, per subscriber and topic.
    let subs = e.subscribers(&s, "books/1", now_ms()).unwrap();
    assert_eq!(subs.len(), 3, "{subs:?}");
    assert!(subs.iter().filter(|x| x.payload["name"] == "Ada").count() == 2);

    // Refusals.
    let forged = format!("{}x", &tok[..tok.len() - 1]);
    for (head, status) in [
        (
            format!("GET /.well-known/mercure?topic=a HTTP/1.1\r\nAuthorization: Bearer {forged}"),
            401,
        ),
        ("GET /.well-known/mercure HTTP/1.1".to_string(), 400),
        ("POST /.well-known/mercure HTTP/1.1".to_string(), 401),
        (
            format!("POST /.well-known/mercure HTTP/1.1\r\nAuthorization: Bearer {tok}"),
            403,
        ),
        (
            "GET /.well-known/mercure/subscriptions HTTP/1.1".to_string(),
            401,
        ),
        ("GET /elsewhere HTTP/1.1".to_string(), 404),
    ] {
        let body = if head.starts_with("POST") {
            "topic=books%2F1&data=x"
        } else {
            ""
        };
        let (got, h, _) = request(listen, &head, body);
        assert_eq!(got, status, "{head}: {h}");
    }

    // Publishing over HTTP with a publisher token.
    let publisher = token(&mut e, &s, &[], &["books/{id}"]);
    let (status, _, mut r) = request(
        listen,
        &format!("POST /.well-known/mercure HTTP/1.1\r\nAuthorization: Bearer {publisher}\r\nContent-Type: application/x-www-form-urlencoded"),
        "topic=books%2F3&data=from+http&type=change&private=on",
    );
    assert_eq!(status, 200);
    let mut id = vec![0u8; 45];
    r.read_exact(&mut id).unwrap();
    let id = String::from_utf8(id).unwrap();
    assert!(id.starts_with("urn:uuid:"), "{id}");
    let anyone = token(&mut e, &s, &["*"], &[]);
    let mut all = subscribe(
        listen,
        "topic=*",
        &format!("\r\nAuthorization: Bearer {anyone}\r\nLast-Event-ID: {last}"),
    );
    assert_eq!(events(&mut all, 1), vec![(id, "from http".to_string())]);

    // The subscriptions API lists the subscribers, with their payload.
    let (status, _, mut r) = request(
        listen,
        &format!("GET /.well-known/mercure/subscriptions/books%2F1 HTTP/1.1\r\nAuthorization: Bearer {anyone}"),
        "",
    );
    assert_eq!(status, 200);
    let mut body = String::new();
    let _ = r
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(300)));
    let _ = r.read_to_string(&mut body);
    assert!(body.contains(r#""type":"Subscriptions""#), "{body}");
    assert_eq!(
        body.matches(r#""type":"Subscription""#).count(),
        3,
        "{body}"
    );
    // As a worker does when it exits: the hub stops and its lease is released.
    w.stop_hubs(Duration::from_secs(2));
    assert!(
        TcpStream::connect(listen).is_err(),
        "the hub stopped listening"
    );
    // The worker goes on polling until it exits, and takes no lease again.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        TcpStream::connect(listen).is_err(),
        "the stopped worker hosts the hub again"
    );
}

#[test]
fn a_worker_that_found_the_port_taken_listens_within_seconds_once_it_is_free() {
    let dir = TempDir::new("hub_port_taken");
    let listen = free_addr();
    let squatter = TcpListener::bind(listen).unwrap();
    let s = hub_settings(&dir.db(), listen);
    let mut e = Engine::open(&s).unwrap();
    let _w = worker(&s);
    let start = Instant::now();
    let mut failure_saying = |text: &str| loop {
        let status = e.hub_status(&s, now_ms()).unwrap().unwrap();
        match status.listen_error {
            Some(why) if why.contains(text) => return why,
            why => assert!(start.elapsed() < Duration::from_secs(10), "{why:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    failure_saying("it tries again in 1 s");
    // Still taken at its next try, the worker waits twice as long.
    let why = failure_saying("it tries again in 2 s");
    drop(squatter);
    let took = wait_listening(listen, Duration::from_secs(5));
    eprintln!(
        "[hub] after \"{why}\", the worker listened {:.0} ms after the port was freed",
        took.as_secs_f64() * 1000.0
    );
    // The failure is cleared once the hub has started (just after it listens).
    let status = loop {
        let status = e.hub_status(&s, now_ms()).unwrap().unwrap();
        if status.listen_error.is_none() || start.elapsed() > Duration::from_secs(15) {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.listen_error, None);
    assert_eq!(status.host_pid, Some(std::process::id()));
}

/// Set in a child process of this test binary: the database and address
/// of a hub whose worker the parent kills.
const WORKER_ENV: &str = "ASYNC_ENGINE_TEST_HUB_WORKER";

/// Not a test on its own: the body of a worker process the failover test
/// starts (and kills with SIGKILL).
#[test]
#[ignore]
fn worker_process() {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        return;
    };
    let (listen, db) = spec.split_once(' ').unwrap();
    let _w = worker(&hub_settings(db, listen.parse().unwrap()));
    std::thread::sleep(Duration::from_secs(60));
}

fn spawn_worker(db: &str, listen: SocketAddr) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["worker_process", "--exact", "--ignored", "--quiet"])
        .env(WORKER_ENV, format!("{listen} {db}"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn when_the_host_is_killed_another_worker_hosts_within_the_lease_and_nothing_is_missed() {
    let dir = TempDir::new("hub_failover");
    let listen = free_addr();
    let s = hub_settings(&dir.db(), listen);
    let mut e = Engine::open(&s).unwrap();
    let mut a = spawn_worker(&dir.db(), listen);
    wait_listening(listen, Duration::from_secs(10));
    let mut b = spawn_worker(&dir.db(), listen);
    let mut sub = subscribe(listen, "topic=feed", "");
    std::thread::sleep(Duration::from_millis(300));
    let mut ids = vec![publish(&mut e, &s, "feed", "0", false)];
    let got = events(&mut sub, 1);
    assert_eq!(got[0].0, ids[0]);

    a.kill().unwrap(); // SIGKILL
    a.wait().unwrap();
    let mut rest = String::new();
    assert!(
        sub.read_to_string(&mut rest).is_ok(),
        "the connection ended with its host"
    );
    for i in 1..=5 {
        ids.push(publish(&mut e, &s, "feed", &i.to_string(), false));
    }
    let took = wait_listening(listen, Duration::from_secs(5));
    eprintln!(
        "[hub] the second worker listened {:.0} ms after the first was killed",
        took.as_secs_f64() * 1000.0
    );
    let mut sub = subscribe(
        listen,
        "topic=feed",
        &format!("\r\nLast-Event-ID: {}", got[0].0),
    );
    let replayed: Vec<String> = events(&mut sub, 5).into_iter().map(|(id, _)| id).collect();
    assert_eq!(replayed, ids[1..].to_vec());
    b.kill().unwrap();
    b.wait().unwrap();
}
