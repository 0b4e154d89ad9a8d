//! Many threads and processes claiming from one database: each task once.

mod common;

use async_engine_core::clock::now_ms;
use async_engine_core::{DeferOptions, Engine, Settings, State, TaskSpec};
use common::*;
use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

const TASKS: usize = 600;
const ENDPOINTS: usize = 8;
const THREADS: usize = 8;
const PROCESSES: usize = 4;
const CHILD_ENV: &str = "ASYNC_ENGINE_TEST_CHILD_DB";

fn worker_settings(db: &str) -> Settings {
    let mut s = settings(db);
    s.max_workers = 64;
    s.busy_timeout = 20.0;
    s
}

/// Runs the dispatch loop as the web server would, until the queue is empty;
/// returns the ids this worker claimed.
fn work(db: &str) -> Vec<String> {
    let s = worker_settings(db);
    let mut e = Engine::open(&s).unwrap();
    let mut claimed = vec![];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "queue did not drain");
        let mut pending = e.kick(&s, now_ms()).unwrap();
        while let Some(d) = pending.pop() {
            let acc = e.accept(&s, &received(&d), true, now_ms()).unwrap();
            let mut next = acc.task;
            while let Some(task) = next {
                claimed.push(task.id.clone());
                e.complete(&task.id, &task.lease, now_ms()).unwrap();
                next = e
                    .claim_next(&Settings::default(), &acc.slot, &acc.endpoint, now_ms())
                    .unwrap();
            }
            pending.extend(acc.dispatch);
            pending.extend(
                e.end_request(&s, Some(&acc.slot), &[], &[], "", true, now_ms())
                    .unwrap(),
            );
        }
        let stats = e.stats(&s, now_ms()).unwrap();
        let left: i64 = stats
            .counts
            .iter()
            .filter(|(st, _)| matches!(st, State::Queued | State::Running))
            .map(|(_, n)| n)
            .sum();
        if left == 0 {
            return claimed;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// In a child process (started by the test below), works and prints its claims.
#[test]
fn child_worker() {
    if let Ok(db) = std::env::var(CHILD_ENV) {
        for id in work(&db) {
            println!("CLAIMED {id}");
        }
    }
}

#[test]
fn threads_and_processes_claim_every_task_exactly_once() {
    let dir = TempDir::new("concurrency");
    let db = dir.db();
    let s = worker_settings(&db);
    let mut e = Engine::open(&s).unwrap();
    // Queue everything before any worker starts, with no slot taken.
    let mut queued = s.clone();
    queued.max_workers = 1;
    let opts = DeferOptions {
        delay: Some(0.5),
        ..DeferOptions::default()
    };
    let mut ids = vec![];
    for i in 0..TASKS {
        let endpoint = format!("/endpoint-{}.php", i % ENDPOINTS);
        ids.push(
            e.defer(
                &queued,
                None,
                &TaskSpec::new(&endpoint, "t", "[]"),
                &opts,
                true,
                now_ms(),
            )
            .unwrap()
            .id,
        );
    }
    std::thread::sleep(Duration::from_millis(600));
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", "child_worker", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, &db)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || work(&db))
        })
        .collect();
    let mut claims: HashMap<String, usize> = HashMap::new();
    let mut by_process = 0;
    for t in threads {
        for id in t.join().unwrap() {
            *claims.entry(id).or_default() += 1;
        }
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            // The harness may print "test child_worker ... " before the first line.
            if let Some(at) = line.find("CLAIMED ") {
                let id = line[at + 8..].split_whitespace().next().unwrap_or_default();
                *claims.entry(id.to_string()).or_default() += 1;
                by_process += 1;
            }
        }
    }
    let twice: Vec<_> = claims.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "claimed more than once: {twice:?}");
    assert_eq!(claims.len(), TASKS, "every task claimed");
    for id in &ids {
        assert_eq!(
            e.status(&Settings::default(), id).unwrap().unwrap().state,
            State::Done
        );
    }
    eprintln!("claims by child processes: {by_process} of {TASKS}");
}
