//! The sender thread on its own: the requests it sends (where, with which
//! Host and signature), what it records when an endpoint does not accept,
//! and the timer that sends a delayed task's request without traffic. The
//! endpoint is a plain TCP server in a test thread.

mod common;

use async_engine_core::clock::now_ms;
use async_engine_core::endpoint::parse_base_url;
use async_engine_core::protocol::Incoming;
use async_engine_core::sender::Sender;
use async_engine_core::target::Target;
use async_engine_core::{DeferOptions, Engine, Scalar, Settings, State};
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

/// A request as the endpoint received it: its head, lowercased.
struct Received {
    head: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.head
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(|v| v.trim().to_string()))
    }

    fn incoming(&self) -> Incoming {
        let mut first = self.head.lines().next().unwrap_or("").split(' ');
        Incoming {
            method: first.next().unwrap_or("").to_uppercase(),
            uri: first.next().unwrap_or("").to_string(),
            slot: self.header("x-async-engine-slot"),
            time: self.header("x-async-engine-time"),
            signature: self.header("x-async-engine-signature"),
        }
    }
}

/// What an endpoint's answer says about the slot (the
/// `X-Async-Engine-Accepted` response header).
#[derive(Clone, Copy, PartialEq)]
enum Says {
    Nothing,
    /// This request's slot, as `serve()` does after `accept()`.
    Accepted,
    /// Another slot.
    AcceptedOther,
}

/// An endpoint on a free port: each request's head goes to the channel;
/// when `run` is given, it also accepts the request and completes its
/// task, as `serve()` would. Answers 200, saying what `says` says.
fn endpoint(run: Option<Settings>, says: Says) -> (SocketAddr, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let received = Received {
                head: String::from_utf8_lossy(&head).to_ascii_lowercase(),
            };
            if let Some(s) = &run {
                let mut e = Engine::open(s).unwrap();
                let accepted = e.accept(s, &received.incoming(), false, now_ms()).unwrap();
                let task = accepted.task.expect("a due task");
                e.complete(&task.id, &task.lease, now_ms()).unwrap();
            }
            let accepted = match says {
                Says::Nothing => String::new(),
                Says::Accepted => format!(
                    "X-Async-Engine-Accepted: {}\r\n",
                    received.header("x-async-engine-slot").unwrap_or_default()
                ),
                Says::AcceptedOther => "X-Async-Engine-Accepted: 0123456789abcdef\r\n".into(),
            };
            let _ = stream.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\n{accepted}Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            );
            if tx.send(received).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

/// Where the site's requests go: its base URL's Host, this address.
fn target(addr: SocketAddr) -> Target {
    Target {
        base: parse_base_url("http://site.example").unwrap(),
        connect_to: Some(addr),
    }
}

fn defer_now(
    e: &mut Engine,
    s: &Settings,
    endpoint: &str,
    options: &DeferOptions,
) -> async_engine_core::Deferred {
    try_defer(e, s, endpoint, "t", options, now_ms()).unwrap()
}

#[test]
fn a_request_goes_to_the_servers_own_address_with_the_sites_host_and_its_signature() {
    let dir = TempDir::new("sender_send");
    let s = settings(&dir.db());
    let (addr, requests) = endpoint(Some(s.clone()), Says::Accepted);
    let mut e = Engine::open(&s).unwrap();
    let deferred = defer_now(&mut e, &s, "/w.php", &DeferOptions::default());
    let dispatch = deferred.dispatch.clone().expect("a free slot");
    let sender = Sender::start().unwrap();
    sender.send(dispatch.clone(), &target(addr), &s);
    assert!(sender.drain(Duration::from_secs(10)), "answered");
    assert_eq!(sender.pending(), 0);
    let got = requests.recv_timeout(Duration::from_secs(1)).unwrap();
    assert!(
        got.head.starts_with("post /w.php http/1.1\r\n"),
        "{}",
        got.head
    );
    assert_eq!(got.header("host").as_deref(), Some("site.example"));
    assert_eq!(
        got.header("x-async-engine-slot"),
        Some(dispatch.slot.clone())
    );
    assert_eq!(
        got.header("x-async-engine-time"),
        Some(dispatch.time.to_string())
    );
    assert_eq!(
        got.header("x-async-engine-signature"),
        Some(dispatch.signature.clone())
    );
    // The endpoint accepted and completed it: the sender recorded no failure.
    let info = e.status(&s, &deferred.id).unwrap().unwrap();
    assert_eq!(info.state, State::Done);
    assert!(e.stats(&s, now_ms()).unwrap().failing.is_empty());
}

#[test]
fn an_answer_without_accept_or_no_answer_backs_the_endpoint_off_and_keeps_the_task() {
    let dir = TempDir::new("sender_fail");
    let s = settings(&dir.db());
    let (addr, requests) = endpoint(None, Says::Nothing);
    let (other, _) = endpoint(None, Says::AcceptedOther);
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut e = Engine::open(&s).unwrap();
    let sender = Sender::start().unwrap();
    for (endpoint, to, why) in [
        ("/w.php", addr, "answered HTTP 200 without calling accept()"),
        // Saying another slot was accepted says nothing about this one.
        (
            "/u.php",
            other,
            "answered HTTP 200 without calling accept()",
        ),
        ("/v.php", closed, "could not connect"),
    ] {
        let deferred = defer_now(&mut e, &s, endpoint, &DeferOptions::default());
        let dispatch = deferred.dispatch.expect("a free slot");
        sender.send(dispatch, &target(to), &s);
        assert!(sender.drain(Duration::from_secs(10)), "answered or failed");
        let failing = e.stats(&s, now_ms()).unwrap().failing;
        let f = failing.iter().find(|f| f.endpoint == endpoint);
        assert!(
            f.is_some_and(|f| f.last_error.contains(why) && f.failures == 1),
            "{failing:?}"
        );
        let info = e.status(&s, &deferred.id).unwrap().unwrap();
        assert_eq!(
            (info.state, info.attempt),
            (State::Queued, 0),
            "no attempt spent"
        );
        assert_eq!(
            e.stats(&s, now_ms()).unwrap().in_flight,
            0,
            "the slot is free"
        );
    }
    assert!(requests.recv_timeout(Duration::from_secs(1)).is_ok());
}

#[test]
fn an_endpoint_that_says_it_accepted_the_slot_is_not_checked() {
    // The header spares the sender a read of the slot: it takes the answer
    // at its word, so an endpoint that says so without accepting (no engine
    // sends that) leaves the slot taken until its deadline, as a request
    // lost on the way would.
    let dir = TempDir::new("sender_said");
    let s = settings(&dir.db());
    let (addr, requests) = endpoint(None, Says::Accepted);
    let mut e = Engine::open(&s).unwrap();
    let deferred = defer_now(&mut e, &s, "/w.php", &DeferOptions::default());
    let sender = Sender::start().unwrap();
    sender.send(deferred.dispatch.expect("a free slot"), &target(addr), &s);
    assert!(sender.drain(Duration::from_secs(10)), "answered");
    assert!(requests.recv_timeout(Duration::from_secs(1)).is_ok());
    let stats = e.stats(&s, now_ms()).unwrap();
    assert!(stats.failing.is_empty(), "{:?}", stats.failing);
    assert_eq!(stats.in_flight, 1, "the slot was not read back");
}

#[test]
fn a_timer_sends_a_delayed_tasks_request_when_it_is_due_without_traffic() {
    let dir = TempDir::new("sender_wake");
    let s = settings(&dir.db());
    let (addr, requests) = endpoint(Some(s.clone()), Says::Accepted);
    let mut e = Engine::open(&s).unwrap();
    let mut options = DeferOptions::default();
    options.set("delay", &Scalar::Float(0.3)).unwrap();
    let deferred = defer_now(&mut e, &s, "/w.php", &options);
    assert!(deferred.dispatch.is_none(), "not due yet");
    let due = e.status(&s, &deferred.id).unwrap().unwrap().due_at;
    let sender = Sender::start().unwrap();
    sender.wake_at(Some(due), &target(addr), &s);
    let got = requests
        .recv_timeout(Duration::from_secs(5))
        .expect("the timer sent the request");
    assert!(now_ms() >= due, "not before the task was due");
    assert!(got.head.starts_with("post /w.php "), "{}", got.head);
    assert!(sender.drain(Duration::from_secs(10)));
    let info = e.status(&s, &deferred.id).unwrap().unwrap();
    assert_eq!(info.state, State::Done);
}

#[test]
fn a_task_deferred_while_the_running_request_runs_a_long_one_goes_to_a_free_slot() {
    let dir = TempDir::new("sender_handoff");
    let s = settings(&dir.db());
    let (addr, requests) = endpoint(Some(s.clone()), Says::Accepted);
    let mut e = Engine::open(&s).unwrap();
    // This worker's request accepted the first task and runs it (long).
    let first = defer_now(&mut e, &s, "/w.php", &DeferOptions::default());
    let accepted = e
        .accept(&s, &received(&first.dispatch.unwrap()), true, now_ms())
        .unwrap();
    assert!(accepted.task.is_some());
    let sender = Sender::start().unwrap();
    sender.task_started(now_ms(), &target(addr), &s);
    // A request runs /w.php's tasks, so defer() sends nothing for the next.
    let next = defer_now(&mut e, &s, "/w.php", &DeferOptions::default());
    assert!(next.dispatch.is_none());
    // The sender watches no queue (no poll): only the hand-off sends it.
    let got = requests
        .recv_timeout(Duration::from_secs(5))
        .expect("the hand-off sent a request for the waiting task");
    assert!(got.head.starts_with("post /w.php "), "{}", got.head);
    assert!(sender.drain(Duration::from_secs(10)));
    let info = e.status(&s, &next.id).unwrap().unwrap();
    assert_eq!(info.state, State::Done);
}
