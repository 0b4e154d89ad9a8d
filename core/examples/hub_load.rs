//! Load for the live-events hub benchmark (bench/run, "live-events hub"):
//!
//! `hub_load ADDR DATABASE IDLE SUBSCRIBERS EVENTS`
//!
//! 1. opens IDLE subscriptions that receive nothing, prints `idle_ready
//!    {json}` once the hub answered each, and waits for a line on stdin (the
//!    caller reads the host's memory meanwhile);
//! 2. latency: SUBSCRIBERS subscribe to one topic; EVENTS updates are
//!    published 10 ms apart through `Engine::publish`, each carrying its
//!    publication time; every delivery's delay is recorded;
//! 3. fan-out: EVENTS more updates are published back to back, and the time
//!    until every subscriber has all of them is measured.
//!
//! Prints one JSON line of results.

use async_engine_core::clock::now_ms;
use async_engine_core::hub::tables::Update;
use async_engine_core::{Engine, Settings};
use std::io::BufRead;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

fn micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Subscribes to `topic`; returns the reader once the hub's first comment came.
async fn subscribe(addr: SocketAddr, topic: &str) -> std::io::Result<BufReader<TcpStream>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET /.well-known/mercure?topic={topic} HTTP/1.1\r\nHost: hub\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::other("closed before the first comment"));
        }
        if line.starts_with(':') {
            return Ok(r);
        }
    }
}

/// Reads `data:` lines (publication times) and reports each delay in µs.
async fn listen(mut r: BufReader<TcpStream>, out: mpsc::UnboundedSender<i64>) {
    let mut line = String::new();
    while let Ok(n) = r.read_line(&mut line).await {
        if n == 0 {
            return;
        }
        if let Some(v) = line.trim_end().strip_prefix("data: ") {
            if let Ok(sent) = v.parse::<i64>() {
                let _ = out.send(micros() - sent);
            }
        }
        line.clear();
    }
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let addr: SocketAddr = a[1].parse().expect("ADDR");
    let (idle, subs, events): (usize, usize, usize) = (
        a[3].parse().unwrap(),
        a[4].parse().unwrap(),
        a[5].parse().unwrap(),
    );
    let settings = Settings {
        database: Some(a[2].clone()),
        hub_listen: Some(addr),
        ..Settings::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // 1. Idle connections.
        let start = Instant::now();
        let mut held = Vec::with_capacity(idle);
        let mut failed = 0;
        for chunk in (0..idle).collect::<Vec<_>>().chunks(200) {
            let opened = futures_join(chunk.iter().map(|_| subscribe(addr, "idle"))).await;
            for o in opened {
                match o {
                    Ok(r) => held.push(r),
                    Err(_) => failed += 1,
                }
            }
        }
        println!(
            "idle_ready {{\"opened\":{},\"failed\":{failed},\"seconds\":{:.3}}}",
            held.len(),
            start.elapsed().as_secs_f64()
        );
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)
        })
        .await;
        drop(held);

        // 2. Latency at `subs` subscribers.
        let (tx, mut rx) = mpsc::unbounded_channel();
        for r in futures_join((0..subs).map(|_| subscribe(addr, "bench"))).await {
            tokio::spawn(listen(r.expect("subscribe"), tx.clone()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut engine = Engine::open(&settings).expect("database");
        let publish = |e: &mut Engine| {
            let update = Update { topics: vec!["bench".into()], data: micros().to_string(), ..Update::default() };
            e.publish(&settings, &update, now_ms()).expect("publish");
        };
        for _ in 0..events {
            publish(&mut engine);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut delays = Vec::with_capacity(subs * events);
        let deadline = Instant::now() + Duration::from_secs(30);
        while delays.len() < subs * events && Instant::now() < deadline {
            if let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                delays.push(d);
            }
        }
        delays.sort_unstable();
        let latency_received = delays.len();

        // 3. Fan-out: `events` back to back.
        let start = Instant::now();
        for _ in 0..events {
            publish(&mut engine);
            tokio::task::yield_now().await;
        }
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while got < subs * events && Instant::now() < deadline {
            if let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                got += 1;
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "{{\"idle_failed\":{failed},\"subscribers\":{subs},\"events\":{events},\"latency_received\":{latency_received},\
             \"p50_ms\":{:.2},\"p99_ms\":{:.2},\"fanout_delivered\":{got},\"fanout_seconds\":{seconds:.3},\
             \"fanout_per_s\":{:.0}}}",
            percentile(&delays, 0.5),
            percentile(&delays, 0.99),
            got as f64 / seconds
        );
    });
}

/// Runs futures concurrently and returns their outputs in order.
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let set: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(set.len());
    for h in set {
        out.push(h.await.expect("task"));
    }
    out
}
