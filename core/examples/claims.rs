//! Claims per second one database sustains (bench/backends, "claims"):
//!
//! `claims DATABASE SECONDS TASKS CLIENTS...`
//!
//! For each number of CLIENTS: TASKS no-op tasks are queued on one
//! endpoint, then that many threads, each with its own connection and
//! standing for a web server of its own (its own `server` name, one slot),
//! take a slot the way a task request does (`accept()`) and claim and
//! complete tasks (`claim_next()`, `complete()`: the two writes a task of
//! one request costs) until the queue is empty or SECONDS have passed.
//!
//! Prints one JSON line per number of clients: tasks claimed and completed,
//! the seconds it took, and the rate.

use async_engine_core::clock::now_ms;
use async_engine_core::protocol::Incoming;
use async_engine_core::{DeferOptions, Engine, Settings, TaskSpec};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const ENDPOINT: &str = "/claims.php";

fn settings(database: &str, server: &str) -> Settings {
    Settings {
        database: Some(database.to_string()),
        secret: Some("claims-bench-secret-0123456789".into()),
        server: Some(server.into()),
        max_workers: 1,
        max_queued: u64::MAX / 2,
        ..Settings::default()
    }
}

/// Claims and completes tasks as server `server` until none is due or
/// `until`; returns how many.
fn client(database: &str, server: &str, start: &Barrier, until: Duration) -> u64 {
    let s = settings(database, server);
    let mut e = Engine::open(&s).expect("open");
    let options = DeferOptions::default();
    let task = TaskSpec::new(ENDPOINT, "noop", "[]");
    // One task of its own, sent: its request is this client's slot.
    let sent = e
        .defer(&s, None, &task, &options, true, now_ms())
        .expect("defer")
        .dispatch
        .expect("a free slot");
    start.wait();
    let began = Instant::now();
    let req = Incoming {
        method: "POST".into(),
        uri: sent.endpoint.clone(),
        slot: Some(sent.slot.clone()),
        time: Some(sent.time.to_string()),
        signature: Some(sent.signature.clone()),
    };
    let got = e.accept(&s, &req, false, now_ms()).expect("accept");
    let mut next = got.task;
    let mut done = 0;
    while let Some(t) = next {
        e.complete(&t.id, &t.lease, now_ms()).expect("complete");
        done += 1;
        if began.elapsed() >= until {
            break;
        }
        next = e
            .claim_next(&s, &got.slot, ENDPOINT, now_ms())
            .expect("claim");
    }
    done
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: claims DATABASE SECONDS TASKS CLIENTS...");
        std::process::exit(2);
    }
    let database = args[1].clone();
    let seconds: f64 = args[2].parse().expect("SECONDS");
    let tasks: u64 = args[3].parse().expect("TASKS");
    for (round, clients) in args[4..].iter().enumerate() {
        let clients: usize = clients.parse().expect("CLIENTS");
        let s = settings(&database, "claims-filler");
        let mut e = Engine::open(&s).expect("open");
        e.purge(0.0, true, now_ms()).expect("purge");
        let task = TaskSpec::new(ENDPOINT, "noop", "[]");
        for _ in 0..tasks {
            e.defer(&s, None, &task, &DeferOptions::default(), false, now_ms())
                .expect("defer");
        }
        let start = Arc::new(Barrier::new(clients + 1));
        let until = Duration::from_secs_f64(seconds);
        let threads: Vec<_> = (0..clients)
            .map(|i| {
                let (database, start) = (database.clone(), start.clone());
                std::thread::spawn(move || {
                    client(&database, &format!("claims-{round}-{i}"), &start, until)
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        let done: u64 = threads.into_iter().map(|t| t.join().expect("client")).sum();
        let took = began.elapsed().as_secs_f64();
        println!(
            "{{\"clients\":{clients},\"tasks\":{done},\"seconds\":{took:.3},\"per_second\":{:.1}}}",
            done as f64 / took
        );
    }
}
