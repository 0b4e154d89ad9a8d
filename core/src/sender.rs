//! Sending signed self-requests without blocking the page: one background
//! thread per process runs a tokio runtime with reqwest clients, delivers
//! each request, records failed deliveries, keeps a timer for the
//! earliest future due time, and hands the tasks deferred for the endpoint
//! this worker's request runs to free slots when its task runs long.

use crate::clock::{now_ms, Millis};
use crate::engine::Dispatch;
use crate::protocol::{HEADER_ACCEPTED, HEADER_SIGNATURE, HEADER_SLOT, HEADER_TIME};
use crate::settings::Settings;
use crate::shared_engine::{engine_call, SharedEngine};
use crate::target::Target;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long the sender waits for a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the sender waits for an answer; a task still running by then
/// has long accepted its slot, so giving up changes nothing.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Shortest pause between two timer runs, in milliseconds.
const MIN_WAKE_MS: Millis = 50;

/// Most HTTP clients (one per target) a sender keeps; more are dropped.
const MAX_CLIENTS: usize = 16;
/// Most timers (one per queue and target) a sender keeps.
const MAX_WAKES: usize = 64;

enum Command {
    Send(Dispatch, Target, Settings),
    /// Watch this queue (see [`POLL`]), and wake at the time if one is given.
    WakeAt(Option<Millis>, Target, Settings),
    /// Stop the hubs this process hosts and release their leases, then answer.
    StopHubs(std::sync::mpsc::Sender<()>),
    /// Keep the hand-off timer for this worker's running task (see
    /// [`Sender::task_started`]).
    Running(Target, Settings),
    /// Run the checkpoint a request's commit left (see [`Sender::checkpoint`]).
    Checkpoint(Settings),
}

/// How long a task of this worker's request may run before the tasks
/// deferred meanwhile go to free slots. `defer()` sends no request for an
/// endpoint that has one on its way or running (that request claims the
/// new task when its current one ends), so while a task runs longer than
/// this, the sender checks this often whether work is due with a slot
/// free, and sends it (docs/architecture.md, "Hand-off to a running
/// request").
pub const HANDOFF_MS: Millis = 10;

/// When the task this worker's request runs was handed out.
#[derive(Default)]
struct Running {
    /// Milliseconds since the epoch; 0 while no task runs.
    since: AtomicI64,
    /// Whether the thread keeps the hand-off timer (it drops it once no
    /// task runs).
    timed: AtomicBool,
}

/// How often a persistent worker's sender reads when its queues are next
/// due: work deferred elsewhere (a CLI script, another worker) gets a
/// timer here within this time, without traffic or cron.
pub const POLL: Duration = Duration::from_millis(500);

/// One process's sender. Create it in the process that sends (after any
/// fork): its thread does not survive `fork()`.
pub struct Sender {
    commands: mpsc::UnboundedSender<Command>,
    pending: Arc<AtomicUsize>,
    /// The queues the thread was asked to watch (the caller's copy, so a
    /// defer on a busy worker need not hand them over again).
    watched: Mutex<Vec<WakeKey>>,
    /// The task this worker's request runs, shared with the thread.
    running: Arc<Running>,
    /// A checkpoint was handed to the thread and has not run yet.
    checkpointing: Arc<AtomicBool>,
}

impl Sender {
    /// Starts the background thread and its runtime.
    pub fn start() -> std::io::Result<Sender> {
        let (commands, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        // One blocking thread: every database call waits for the one shared
        // engine anyway, and tokio's default of up to 512 threads spawned one
        // per call waiting there when a burst of hub subscribers arrived.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(1)
            .thread_name("async-engine-db")
            .enable_all()
            .build()?;
        let counter = pending.clone();
        let running = Arc::new(Running::default());
        let checkpointing = Arc::new(AtomicBool::new(false));
        std::thread::Builder::new()
            .name("async-engine".into())
            .spawn({
                let commands = commands.clone();
                let shared = Shared {
                    running: running.clone(),
                    checkpointing: checkpointing.clone(),
                };
                move || runtime.block_on(run(rx, commands, counter, shared))
            })?;
        Ok(Sender {
            commands,
            pending,
            watched: Mutex::default(),
            running,
            checkpointing,
        })
    }

    /// Has the thread run the write-ahead log checkpoint that a commit of
    /// this process's request left (see `store/checkpoint.rs`) on its own
    /// connection to `settings`' database; returns at once. While one is
    /// pending, asking again does nothing. False when the thread is gone:
    /// the caller runs it itself.
    pub fn checkpoint(&self, settings: &Settings) -> bool {
        if self.checkpointing.swap(true, Ordering::SeqCst) {
            return true;
        }
        let handed = self
            .commands
            .send(Command::Checkpoint(settings.clone()))
            .is_ok();
        if !handed {
            self.checkpointing.store(false, Ordering::SeqCst);
        }
        handed
    }

    /// Says that this worker's request just handed a task of `target`'s
    /// queue to the endpoint's code, at `now`. Until [`Sender::task_ended`],
    /// once it has run [`HANDOFF_MS`], the thread sends what is due to free
    /// slots every [`HANDOFF_MS`]. Two atomic writes; a message only when
    /// the thread dropped its timer.
    pub fn task_started(&self, now: Millis, target: &Target, settings: &Settings) {
        self.running.since.store(now, Ordering::SeqCst);
        if !self.running.timed.swap(true, Ordering::SeqCst) {
            let command = Command::Running(target.clone(), settings.clone());
            let _ = self.commands.send(command);
        }
    }

    /// Says that this worker's request runs no task (it is claiming the
    /// next, or is over).
    pub fn task_ended(&self) {
        self.running.since.store(0, Ordering::SeqCst);
    }

    /// Hands a signed request to the background thread; returns at once.
    pub fn send(&self, dispatch: Dispatch, target: &Target, settings: &Settings) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        let command = Command::Send(dispatch, target.clone(), settings.clone());
        if self.commands.send(command).is_err() {
            // The thread is gone: the slot expires and its task is retried.
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Asks the background thread to watch this queue from now on (it polls
    /// when the queue is next due, see [`POLL`]) and to dispatch what is due
    /// at `at`, if given (the earliest wake-up asked for wins).
    pub fn wake_at(&self, at: Option<Millis>, target: &Target, settings: &Settings) {
        if at.is_none() {
            let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
            if watched.iter().any(|key| is_key(key, target, settings)) {
                return; // watched already; nothing to wake for
            }
            if watched.len() < MAX_WAKES {
                watched.push(wake_key(target, settings));
            }
        }
        let _ = self
            .commands
            .send(Command::WakeAt(at, target.clone(), settings.clone()));
    }

    /// Stops the live-events hubs this process hosts and releases their
    /// leases, so another worker takes over at its next poll; waits at most
    /// `limit` (the process is about to exit).
    pub fn stop_hubs(&self, limit: Duration) {
        let (done, wait) = std::sync::mpsc::channel();
        if self.commands.send(Command::StopHubs(done)).is_ok() {
            let _ = wait.recv_timeout(limit);
        }
    }

    /// Requests handed over and not yet answered or failed.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Waits until every request handed over was answered or failed, at
    /// most `limit`; true if none is left.
    pub fn drain(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.pending() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }
}

fn client_for(
    clients: &mut HashMap<Target, reqwest::Client>,
    target: &Target,
) -> Option<reqwest::Client> {
    if let Some(c) = clients.get(target) {
        return Some(c.clone());
    }
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(ANSWER_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(30))
        // The system's root certificates take memory in every worker: only
        // an https target needs them.
        .tls_built_in_root_certs(target.base.scheme == "https");
    if let Some(addr) = target.connect_to {
        let host = target
            .base
            .host
            .trim_start_matches('[')
            .trim_end_matches(']');
        builder = builder.resolve(host, addr);
    }
    let client = builder.build().ok()?;
    if clients.len() >= MAX_CLIENTS {
        // Targets come from settings and the web server's own values, so
        // there are few; should there be more, start over rather than grow.
        clients.clear();
    }
    clients.insert(target.clone(), client.clone());
    Some(client)
}

/// One timer per queue this process serves: a process may send for several
/// sites or databases, and one's wake-up must not displace another's.
type WakeKey = (Target, Option<String>, Option<String>);

/// The queue `settings` name, sent to `target`: its database and site.
fn wake_key(target: &Target, settings: &Settings) -> WakeKey {
    (
        target.clone(),
        settings.database.clone(),
        settings.site.clone(),
    )
}

/// Whether `key` is the queue of `target` and `settings` (no copies made).
fn is_key(key: &WakeKey, target: &Target, settings: &Settings) -> bool {
    key.0 == *target && key.1 == settings.database && key.2 == settings.site
}

/// What the thread shares with the [`Sender`] beside its channel.
struct Shared {
    /// The task this worker's request runs.
    running: Arc<Running>,
    /// A checkpoint was asked for and has not run yet.
    checkpointing: Arc<AtomicBool>,
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Command>,
    commands: mpsc::UnboundedSender<Command>,
    pending: Arc<AtomicUsize>,
    shared: Shared,
) {
    let Shared {
        running,
        checkpointing,
    } = shared;
    let mut clients = HashMap::new();
    let engine: SharedEngine = Arc::default();
    let mut wakes: HashMap<WakeKey, (Millis, Settings)> = HashMap::new();
    let mut watched: HashMap<WakeKey, Settings> = HashMap::new();
    let mut hosting = crate::hub::host::Hosting::default();
    // The hand-off timer: when to look at the running task, and its queue.
    let mut handoff: Option<(Millis, Target, Settings)> = None;
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let until = |at: Millis| Duration::from_millis((at - now_ms()).max(0) as u64);
        let sleep = wakes.values().map(|(at, _)| *at).min().map(until);
        let handoff_sleep = handoff.as_ref().map(|(at, ..)| until(*at));
        tokio::select! {
            command = rx.recv() => match command {
                None => break,
                Some(Command::Send(dispatch, target, settings)) => {
                    match client_for(&mut clients, &target) {
                        Some(client) => {
                            tokio::spawn(deliver(client, dispatch, target, settings, engine.clone(), pending.clone(), commands.clone()));
                        }
                        None => {
                            pending.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                }
                Some(Command::StopHubs(done)) => {
                    hosting.stop_all(&engine).await;
                    let _ = done.send(());
                }
                Some(Command::Running(target, settings)) => {
                    let since = running.since.load(Ordering::SeqCst);
                    handoff = Some((since + HANDOFF_MS, target, settings));
                }
                Some(Command::Checkpoint(settings)) => {
                    let (engine, done) = (engine.clone(), checkpointing.clone());
                    tokio::spawn(async move {
                        if let Err(e) = engine_call(&engine, &settings, |e, _| e.checkpoint()).await {
                            crate::log::emit(format!("the background checkpoint failed: {e}"));
                        }
                        done.store(false, Ordering::SeqCst);
                    });
                }
                Some(Command::WakeAt(at, target, settings)) => {
                    let key = wake_key(&target, &settings);
                    if watched.len() < MAX_WAKES || watched.contains_key(&key) {
                        watched.insert(key.clone(), settings.clone());
                    }
                    if let Some(at) = at {
                        set_wake(&mut wakes, key, at, settings);
                    }
                }
            },
            _ = poll.tick(), if !watched.is_empty() => {
                let now = now_ms();
                for (key, settings) in watched.clone() {
                    hosting.tick(&settings, &engine).await;
                    let next = engine_call(&engine, &settings, move |e, s| e.next_wake(s, now)).await;
                    match next {
                        Ok(Some(at)) => set_wake(&mut wakes, key, at.max(now), settings),
                        Ok(None) => {}
                        Err(e) => crate::log::emit(format!("the background sender could not read the queue: {e}")),
                    }
                }
            }
            _ = tokio::time::sleep(handoff_sleep.unwrap_or(Duration::MAX)), if handoff_sleep.is_some() => {
                let Some((_, target, settings)) = handoff.take() else { continue };
                let now = now_ms();
                handoff = match look_at_running(&running, now) {
                    Look::Drop => None,
                    Look::At(at) => Some((at, target, settings)),
                    Look::HandOff => {
                        // Due work and a free slot: the timer below sends it.
                        let next = engine_call(&engine, &settings, move |e, s| e.next_wake(s, now)).await;
                        if matches!(next, Ok(Some(at)) if at <= now) {
                            set_wake(&mut wakes, wake_key(&target, &settings), now, settings.clone());
                        }
                        Some((now + HANDOFF_MS, target, settings))
                    }
                };
            }
            _ = tokio::time::sleep(sleep.unwrap_or(Duration::MAX)), if sleep.is_some() => {
                let now = now_ms();
                let due: Vec<WakeKey> = wakes
                    .iter()
                    .filter(|(_, (at, _))| *at <= now)
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in due {
                    let Some((_, settings)) = wakes.remove(&key) else { continue };
                    let target = key.0.clone();
                    let work = engine_call(&engine, &settings, move |e, s| Ok((e.kick(s, now)?, e.next_wake(s, now)?))).await;
                    let (dispatches, next) = match work {
                        Ok(work) => work,
                        Err(e) => {
                            crate::log::emit(format!("the background sender could not dispatch due tasks: {e}"));
                            continue;
                        }
                    };
                    if let Some(client) = client_for(&mut clients, &target) {
                        for d in dispatches {
                            pending.fetch_add(1, Ordering::SeqCst);
                            tokio::spawn(deliver(client.clone(), d, target.clone(), settings.clone(), engine.clone(), pending.clone(), commands.clone()));
                        }
                    }
                    if let Some(next) = next {
                        // Never spin on a deadline that could not be reaped.
                        wakes.insert(key, (next.max(now + MIN_WAKE_MS), settings));
                    }
                }
            }
        }
    }
}

/// What the hand-off timer does next.
#[derive(Debug, PartialEq)]
enum Look {
    /// No task runs: drop the timer.
    Drop,
    /// Look again at this time (when the running task will have run
    /// [`HANDOFF_MS`]).
    At(Millis),
    /// The task has run [`HANDOFF_MS`] or longer: send what is due.
    HandOff,
}

/// Looks at this worker's running task at `now`. When none runs, the timer
/// is dropped, unless a task started meanwhile and found it still kept.
fn look_at_running(running: &Running, now: Millis) -> Look {
    let since = running.since.load(Ordering::SeqCst);
    if since == 0 {
        running.timed.store(false, Ordering::SeqCst);
        let since = running.since.load(Ordering::SeqCst);
        if since == 0 || running.timed.swap(true, Ordering::SeqCst) {
            return Look::Drop;
        }
        return Look::At(since + HANDOFF_MS);
    }
    if now - since < HANDOFF_MS {
        Look::At(since + HANDOFF_MS)
    } else {
        Look::HandOff
    }
}

/// Sets the timer of a queue to `at` unless it is already set earlier.
fn set_wake(
    wakes: &mut HashMap<WakeKey, (Millis, Settings)>,
    key: WakeKey,
    at: Millis,
    settings: Settings,
) {
    if wakes.get(&key).is_none_or(|(w, _)| at < *w) {
        wakes.insert(key, (at, settings));
        bound_wakes(wakes);
    }
}

/// Keeps at most [`MAX_WAKES`] timers: the latest go (a kick or the next
/// request brings them back).
fn bound_wakes(wakes: &mut HashMap<WakeKey, (Millis, Settings)>) {
    while wakes.len() > MAX_WAKES {
        let latest = wakes
            .iter()
            .max_by_key(|(_, (at, _))| *at)
            .map(|(key, _)| key.clone());
        match latest {
            Some(key) => wakes.remove(&key),
            None => break,
        };
    }
}

/// Delivers a request; when it did not reach `accept()`, records the failed
/// delivery and delivers whatever the freed slot goes to next. When the
/// request failed after `accept()` (its worker was killed: the server
/// answers 502), this sender wakes when that task's lease ends, to reap and
/// retry it, rather than leave it to the next request or cron.
async fn deliver(
    client: reqwest::Client,
    mut dispatch: Dispatch,
    target: Target,
    settings: Settings,
    engine: SharedEngine,
    pending: Arc<AtomicUsize>,
    commands: mpsc::UnboundedSender<Command>,
) {
    loop {
        let Answer {
            reason,
            answered,
            accepted,
        } = post(&client, &dispatch, &target).await;
        if accepted {
            // The endpoint said it accepted the slot (the usual case).
            break;
        }
        // A no-op when the endpoint accepted the slot without saying so.
        let now = now_ms();
        let slot = dispatch.slot.clone();
        let failed = engine_call(&engine, &settings, move |e, settings| {
            let (abandoned, next) = e.dispatch_failed(settings, &slot, &reason, now)?;
            // A failed task retries after its backoff, a dead worker's task
            // after its lease: be there.
            let wake = if abandoned || !answered {
                e.next_wake(settings, now)?
            } else {
                None
            };
            Ok((next, wake))
        })
        .await;
        let (next, wake) = match failed {
            Ok(outcome) => outcome,
            Err(e) => {
                crate::log::emit(format!(
                    "could not record the outcome of the request to {}: {e}",
                    dispatch.endpoint
                ));
                break;
            }
        };
        if let Some(at) = wake {
            let _ = commands.send(Command::WakeAt(Some(at), target.clone(), settings.clone()));
        }
        match next {
            Some(d) => dispatch = d,
            None => break,
        }
    }
    pending.fetch_sub(1, Ordering::SeqCst);
}

/// How a request went.
struct Answer {
    /// What to record should it turn out that the slot was never accepted.
    reason: String,
    /// Whether the server answered with a success status.
    answered: bool,
    /// Whether the answer named this slot as accepted ([`HEADER_ACCEPTED`]).
    accepted: bool,
}

/// Sends one request and says how it went.
async fn post(client: &reqwest::Client, d: &Dispatch, target: &Target) -> Answer {
    let url = format!("{}{}", target.base.origin(), d.endpoint);
    let answer = client
        .post(&url)
        .header(HEADER_SLOT, &d.slot)
        .header(HEADER_TIME, d.time.to_string())
        .header(HEADER_SIGNATURE, &d.signature)
        .header("Cache-Control", "no-store")
        .header("Content-Length", "0")
        .send()
        .await;
    match answer {
        Ok(r) if r.status().is_success() => Answer {
            reason: format!(
                "{url} answered HTTP {} without calling accept()",
                r.status().as_u16()
            ),
            answered: true,
            accepted: r
                .headers()
                .get(HEADER_ACCEPTED)
                .is_some_and(|v| v.as_bytes() == d.slot.as_bytes()),
        },
        Ok(r) => Answer {
            reason: format!("{url} answered HTTP {}", r.status().as_u16()),
            answered: false,
            accepted: false,
        },
        Err(e) => {
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "could not connect"
            } else {
                "failed"
            };
            let mut cause = String::new();
            let mut source: Option<&dyn std::error::Error> = Some(&e);
            while let Some(s) = source {
                cause = s.to_string();
                source = s.source();
            }
            Answer {
                reason: format!("request to {url} {what}: {cause}"),
                answered: false,
                accepted: false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(since: Millis, timed: bool) -> Running {
        Running {
            since: AtomicI64::new(since),
            timed: AtomicBool::new(timed),
        }
    }

    #[test]
    fn a_task_gets_its_hand_off_time_to_finish_first() {
        let r = running(1_000, true);
        assert_eq!(look_at_running(&r, 1_004), Look::At(1_000 + HANDOFF_MS));
        assert_eq!(look_at_running(&r, 1_000 + HANDOFF_MS), Look::HandOff);
        assert!(r.timed.load(Ordering::SeqCst), "the timer is kept");
    }

    #[test]
    fn the_timer_is_dropped_once_no_task_runs_so_the_next_task_sets_it_again() {
        let r = running(0, true);
        assert_eq!(look_at_running(&r, 5_000), Look::Drop);
        assert!(
            !r.timed.load(Ordering::SeqCst),
            "the next task_started() says so"
        );
    }
}
