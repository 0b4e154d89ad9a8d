//! One PHP process's engine: its database connection, its sender thread,
//! the target it learned, what the current request holds, and the one
//! policy for what to send and when to wake after each operation
//! (docs/architecture.md, "The path of a task"). The extension keeps one
//! [`Runtime`] per process ([`with`]) and only converts PHP values to and
//! from these calls.

use crate::clock::{secs_to_ms, Millis};
use crate::endpoint::parse_base_url;
use crate::engine::{Deferred, Dispatch, Engine, Next};
use crate::error::{Error, Result};
use crate::protocol::Incoming;
use crate::scalar::Scalar;
use crate::schedules::{ScheduleInfo, ScheduleOptions};
use crate::sender::Sender;
use crate::settings::Settings;
use crate::slots::SENT_TTL_MS;
use crate::target::Target;
use crate::task::{Claimed, DeferOptions, TaskSpec};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

/// What the current request holds, released when it ends.
#[derive(Debug, Default)]
pub struct RequestState {
    /// `Engine::configure()` overrides, in call order (set them with
    /// [`Runtime::configure`], which keeps the settings they give).
    pub overrides: Vec<(String, Scalar)>,
    /// The settings last worked out from the ini entries and `overrides`,
    /// with the ini change count they were read at (see
    /// [`Runtime::cached_settings`]).
    settings: Option<(u64, Arc<Settings>)>,
    /// The slot and endpoint this request accepted, if it is a task request.
    pub accepted: Option<(String, String)>,
    /// Tasks claimed by this request and not yet completed or failed: (id, lease).
    pub held: Vec<(String, String)>,
    /// Where this request's self-requests go, once worked out, with the
    /// base_url setting it was worked out for.
    pub target: Option<(Option<String>, Option<Target>)>,
    /// The request gave its slot back (its batch is over): `accept()`
    /// claims nothing more.
    pub done: bool,
    /// Tasks `serve()` claimed ahead of their turn (also in `held`).
    pub ahead: VecDeque<Claimed>,
    /// Tasks `serve()` ran, with their error (`None`: done), written with
    /// the batch's next claim or at its end.
    pub ended: Vec<(Claimed, Option<String>)>,
}

/// How a held task ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome<'a> {
    /// `complete()`.
    Done,
    /// `fail()`: the error, and the retry delay in seconds (default: backoff).
    Failed {
        /// The attempt's error.
        error: &'a str,
        /// Seconds until the retry.
        retry_in: Option<f64>,
    },
}

/// When a worker's sender next looks at its queue after an operation.
enum Wake {
    /// Keep watching the queue (poll), no particular time.
    Watch,
    /// At this time, or earlier if already asked.
    At(Millis),
    /// When the database says something is next due (a read).
    Next,
}

/// Everything the extension keeps in one PHP process.
pub struct Runtime {
    /// The [`forks`] count when this runtime was made or last reset.
    forks: u64,
    /// Whether this process serves request after request (php-fpm, mod_php,
    /// `php -S`): only then does its sender stay to wake for due work.
    persistent: bool,
    engine: Option<Engine>,
    sender: Option<Sender>,
    /// The base URL last stored for CLI scripts to use.
    learned: Option<String>,
    warned_no_target: bool,
    /// Whether this worker's sender watches its site's queue.
    armed: bool,
    /// What the current request holds.
    pub request: RequestState,
}

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

/// Forks this process went through (counted in each child).
static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_fork() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// How many forks led to this process since the runtime was first used:
/// a child sees one more than its parent. An atomic read on every call,
/// where comparing process ids took a `getpid` system call each time.
fn forks() -> u64 {
    static COUNTING: Once = Once::new();
    COUNTING.call_once(|| {
        // SAFETY: registers a child handler that only increments an atomic
        // (async-signal-safe); glibc runs it in the child of every fork().
        unsafe { libc::pthread_atfork(None, None, Some(count_fork)) };
    });
    FORKS.load(Ordering::Relaxed)
}

/// Runs `f` on this process's runtime, created on first use (`persistent`
/// is asked then) and reset in a forked child. `f` must not call into PHP:
/// a fatal error there would skip the unlock.
pub fn with<T>(persistent: impl FnOnce() -> bool, f: impl FnOnce(&mut Runtime) -> T) -> T {
    let mut guard = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    let forks = forks();
    match guard.as_mut() {
        Some(rt) if rt.forks == forks => {}
        Some(rt) => {
            // A forked child goes on with the same request (and its
            // configure() overrides), but must not use or close the parent's
            // connection (closing could disturb the parent's locks).
            std::mem::forget(rt.engine.take());
            // Its sender thread did not survive the fork either.
            std::mem::forget(rt.sender.take());
            rt.forks = forks;
        }
        None => {
            *guard = Some(Runtime {
                forks,
                persistent: persistent(),
                engine: None,
                sender: None,
                learned: None,
                warned_no_target: false,
                armed: false,
                request: RequestState::default(),
            })
        }
    }
    let rt = guard.as_mut().expect("initialised above");
    // A commit here that finds the write-ahead log long leaves its
    // checkpoint (and the disk sync it waits for) to the runtime, which
    // hands it to the sender's thread.
    crate::store::checkpoint::leave_to_caller();
    let out = f(rt);
    if crate::store::checkpoint::take_wanted() {
        rt.checkpoint();
    }
    out
}

/// Key of the learned target in the database's meta table: the web
/// request's base URL and the server address it connects to, as
/// "origin address:port". The CLI connects to that address too, so a
/// forged Host header can at worst name the Host it sends, never where.
/// One per server (see the `server` setting): each sends to itself.
fn learned_target_key(settings: &Settings) -> String {
    match settings.site_name() {
        "" => format!("learned_target:{}", settings.server_name()),
        site => format!("learned_target:{}@{site}", settings.server_name()),
    }
}

impl Runtime {
    /// The engine for `settings`' database, opened on first use (or when
    /// the database setting changed).
    pub fn engine(&mut self, settings: &Settings) -> Result<&mut Engine> {
        Engine::reuse_or_open(&mut self.engine, settings)
    }

    /// Whether this process serves request after request.
    pub fn persistent(&self) -> bool {
        self.persistent
    }

    /// Whether the current request holds nothing that must be released and
    /// no request this process handed over is on its way.
    pub fn is_idle(&self) -> bool {
        let r = &self.request;
        r.accepted.is_none()
            && !r.done
            && r.held.is_empty()
            && r.ended.is_empty()
            && r.overrides.is_empty()
            && r.target.is_none()
            && self.sender.as_ref().is_none_or(|s| s.pending() == 0)
    }

    /// Takes the request state, leaving it empty for the next request.
    pub fn take_request(&mut self) -> RequestState {
        if let Some(sender) = &self.sender {
            sender.task_ended();
        }
        std::mem::take(&mut self.request)
    }

    /// Replaces this request's `Engine::configure()` overrides, with the
    /// settings they give (read at ini change count `ini_changes`).
    pub fn configure(
        &mut self,
        overrides: Vec<(String, Scalar)>,
        ini_changes: u64,
        settings: Arc<Settings>,
    ) {
        self.request.overrides = overrides;
        self.cache_settings(ini_changes, settings);
    }

    /// The settings worked out earlier, if the ini entries have not changed
    /// since: `ini_changes` counts their changes (PHP reports each one,
    /// `ini_set()`, per-directory values and their restoring at request
    /// end), so a `defer()` reads no ini entry while nothing changes.
    pub fn cached_settings(&self, ini_changes: u64) -> Option<Arc<Settings>> {
        match &self.request.settings {
            Some((at, settings)) if *at == ini_changes => Some(Arc::clone(settings)),
            _ => None,
        }
    }

    /// Keeps `settings`, read at ini change count `ini_changes`, for
    /// [`Runtime::cached_settings`].
    pub fn cache_settings(&mut self, ini_changes: u64, settings: Arc<Settings>) {
        self.request.settings = Some((ini_changes, settings));
    }

    /// The target this request already worked out for these settings.
    pub fn cached_target(&self, settings: &Settings) -> Option<Option<Target>> {
        match &self.request.target {
            Some((setting, t)) if *setting == settings.base_url => Some(t.clone()),
            _ => None,
        }
    }

    /// Where this request's self-requests go: `from_request` (worked out
    /// from the web server's own values), else, in a CLI script, the one
    /// the last verified web request stored. Kept for the request.
    pub fn target(&mut self, settings: &Settings, from_request: Option<Target>) -> Option<Target> {
        let target = from_request.or_else(|| {
            let learned = self
                .engine(settings)
                .and_then(|e| e.meta(&learned_target_key(settings)))
                .ok()
                .flatten()?;
            let (url, addr) = learned.split_once(' ')?;
            Some(Target {
                base: parse_base_url(url).ok()?,
                connect_to: Some(addr.parse().ok()?),
            })
        });
        self.request.target = Some((settings.base_url.clone(), target.clone()));
        target
    }

    /// Stores where this request's self-requests go, for CLI scripts: call
    /// it only once a signed request was verified, so the web server's
    /// values proved to reach this site (no unsigned request can move the
    /// CLI's target). Only a target worked out from the web request is stored.
    fn learn(&mut self, settings: &Settings, target: &Target) {
        let Some(addr) = target.connect_to else {
            return;
        };
        let learned = format!("{} {addr}", target.base.origin());
        if self.learned.as_deref() == Some(learned.as_str()) {
            return;
        }
        let key = learned_target_key(settings);
        if self
            .engine(settings)
            .and_then(|e| e.set_meta(&key, &learned))
            .is_ok()
        {
            self.learned = Some(learned);
        }
    }

    /// True the first time in this process: whether to warn that a task
    /// cannot be sent for lack of a base URL.
    pub fn first_no_target_warning(&mut self) -> bool {
        !std::mem::replace(&mut self.warned_no_target, true)
    }

    /// Queues a task, sends its request when it is due and a slot is free,
    /// and sets this worker's wake-up for it.
    pub fn defer(
        &mut self,
        settings: &Settings,
        target: Option<&Target>,
        task: &TaskSpec<'_>,
        options: &DeferOptions,
        now: Millis,
    ) -> Result<Deferred> {
        let deferred = self.engine(settings)?.defer(
            settings,
            target.map(|t| &t.base),
            task,
            options,
            target.is_some(),
            now,
        )?;
        if let (Some(t), true) = (target, deferred.created) {
            let due = options.due_at(now);
            let wake = match &deferred.dispatch {
                // Check back when the task's lease (or the request's slot)
                // could first expire: a worker killed while running it is
                // reaped then, without traffic.
                Some(_) => {
                    let lease = secs_to_ms(options.timeout.unwrap_or(settings.timeout));
                    Wake::At(now + lease.min(SENT_TTL_MS) + 1)
                }
                None if due > now => Wake::At(due),
                None => Wake::Watch,
            };
            self.send(settings, t, deferred.dispatch.clone());
            self.wake(settings, t, wake, now);
        }
        Ok(deferred)
    }

    /// Creates or updates a schedule; this worker keeps a timer for its
    /// next occurrence (and polls for later ones).
    #[allow(clippy::too_many_arguments)]
    pub fn schedule(
        &mut self,
        settings: &Settings,
        target: Option<&Target>,
        name: &str,
        when: &str,
        task: &TaskSpec<'_>,
        options: &ScheduleOptions,
        now: Millis,
    ) -> Result<ScheduleInfo> {
        let info = self.engine(settings)?.schedule(
            settings,
            target.map(|t| &t.base),
            name,
            when,
            task,
            options,
            now,
        )?;
        if let Some(t) = target {
            let wake = info.next_at.map_or(Wake::Watch, Wake::At);
            self.wake(settings, t, wake, now);
        }
        Ok(info)
    }

    /// Claims the next task for this request: through the signed request
    /// (`incoming`, read only then) on the first call, then from the same
    /// slot for the rest of the batch. The second value is true on the
    /// first call (the request just became a task request).
    pub fn accept(
        &mut self,
        settings: &Settings,
        incoming: impl FnOnce() -> Incoming,
        target: Option<&Target>,
        now: Millis,
    ) -> Result<(Option<Claimed>, bool)> {
        if self.request.done {
            return Ok((None, false));
        }
        let (claimed, first) = match self.request.accepted.clone() {
            Some((slot, endpoint)) => {
                let claimed = self
                    .engine(settings)?
                    .claim_next(settings, &slot, &endpoint, now)?;
                (claimed, false)
            }
            None => {
                let accepted =
                    self.engine(settings)?
                        .accept(settings, &incoming(), target.is_some(), now)?;
                if let Some(t) = target {
                    self.learn(settings, t);
                    self.send(settings, t, accepted.dispatch);
                }
                if accepted.task.is_some() {
                    self.request.accepted = Some((accepted.slot, accepted.endpoint));
                }
                (accepted.task, true)
            }
        };
        if let Some(task) = &claimed {
            self.hold(task);
        }
        self.running(settings, claimed.is_some(), now);
        Ok((claimed, first))
    }

    /// Tells this worker's sender whether a task of this request runs now
    /// (`task`: one was just handed out), so the tasks deferred meanwhile
    /// for its endpoint do not wait for a long one (see
    /// [`Sender::task_started`]).
    fn running(&mut self, settings: &Settings, task: bool, now: Millis) {
        if !self.persistent {
            return;
        }
        if !task {
            if let Some(sender) = &self.sender {
                sender.task_ended();
            }
            return;
        }
        self.sender(); // started if need be; read below beside the target
        if let (Some(sender), Some((_, Some(target)))) = (&self.sender, &self.request.target) {
            sender.task_started(now, target, settings);
        }
    }

    /// Records that this request holds `task`.
    fn hold(&mut self, task: &Claimed) {
        self.request
            .held
            .push((task.id.clone(), task.lease.clone()));
    }

    /// Whether this request still holds task `id`.
    pub fn holds(&self, id: &str) -> bool {
        self.request.held.iter().any(|(held, _)| held == id)
    }

    /// Lets task `id` go (finished, or lost to another request).
    pub fn release(&mut self, id: &str) {
        self.request.held.retain(|(held, _)| held != id);
    }

    /// Completes a held task or fails this attempt (`complete()` and
    /// `fail()` called by the endpoint's code), and lets it go.
    pub fn finish(
        &mut self,
        settings: &Settings,
        task: &Claimed,
        outcome: Outcome<'_>,
        now: Millis,
    ) -> Result<()> {
        let engine = self.engine(settings)?;
        match outcome {
            Outcome::Done => engine.complete(&task.id, &task.lease, now)?,
            Outcome::Failed { error, retry_in } => {
                engine.fail(&task.id, &task.lease, error, retry_in, now)?;
            }
        }
        self.release(&task.id);
        Ok(())
    }

    /// `serve()`'s next task: records how the one it ran ended (`ran`:
    /// the task and its error, `None` when done) and hands out the next one
    /// claimed ahead; when none is left, writes what ended and claims up to
    /// `more` tasks in one transaction, or, with `more` 0 (the batch is
    /// over), hands the slot to the next due endpoint in that transaction
    /// and sends its request at once.
    pub fn serve_next(
        &mut self,
        settings: &Settings,
        ran: Option<(Claimed, Option<String>)>,
        more: usize,
        now: Millis,
    ) -> Result<Option<Claimed>> {
        let next = self.next_to_serve(settings, ran, more, now);
        self.running(settings, matches!(next, Ok(Some(_))), now);
        next
    }

    /// [`Runtime::serve_next`] but for telling the sender.
    fn next_to_serve(
        &mut self,
        settings: &Settings,
        ran: Option<(Claimed, Option<String>)>,
        more: usize,
        now: Millis,
    ) -> Result<Option<Claimed>> {
        if let Some((task, error)) = ran {
            self.release(&task.id);
            self.request.ended.push((task, error));
        }
        if let Some(task) = self.next_ahead(settings, now)? {
            return Ok(Some(task));
        }
        let accepted = self.request.accepted.clone();
        let target = self.request.target.clone().and_then(|(_, t)| t);
        let next = match &accepted {
            Some((slot, endpoint)) if more > 0 => Next::Claim {
                slot,
                endpoint,
                max: more,
            },
            Some((slot, _)) if self.request.held.is_empty() => Next::Release {
                slot,
                send: target.is_some(),
                wake: self.persistent && target.is_some(),
            },
            _ => Next::Stay,
        };
        if self.request.ended.is_empty() && next == Next::Stay {
            return Ok(None);
        }
        let ended = std::mem::take(&mut self.request.ended);
        let written = self
            .engine(settings)
            .and_then(|e| e.finish_batch(settings, &ended, next, now));
        let after = match written {
            Ok(after) => after,
            Err(e) => {
                // Kept for the request's end, which writes them again.
                self.request.ended = ended;
                return Err(e);
            }
        };
        if let Next::Release { .. } = next {
            self.request.accepted = None;
            self.request.done = true;
            if let Some(t) = &target {
                self.send(settings, t, after.dispatch);
                self.wake(settings, t, after.wake.map_or(Wake::Watch, Wake::At), now);
            }
        }
        for task in after.claimed {
            self.hold(&task);
            self.request.ahead.push_back(task);
        }
        self.next_ahead(settings, now)
    }

    /// The next task claimed ahead. One that waited past its head start gets
    /// its lease renewed, so it runs with its whole timeout; one lost
    /// meanwhile (reaped) is let go.
    fn next_ahead(&mut self, settings: &Settings, now: Millis) -> Result<Option<Claimed>> {
        while let Some(task) = self.request.ahead.pop_front() {
            if task.lease_until - now >= task.timeout {
                return Ok(Some(task));
            }
            let seconds = crate::clock::ms_to_secs(task.timeout);
            match self
                .engine(settings)?
                .extend(&task.id, &task.lease, seconds, now)
            {
                Ok(()) => {
                    return Ok(Some(Claimed {
                        lease_until: now + task.timeout,
                        ..task
                    }))
                }
                Err(Error::NotHeld(_)) => self.release(&task.id),
                Err(e) => {
                    self.request.ahead.push_front(task);
                    return Err(e);
                }
            }
        }
        Ok(None)
    }

    /// The cron entry: reaps, purges and sends whatever is due; returns how
    /// many requests it sent.
    pub fn kick(&mut self, settings: &Settings, target: &Target, now: Millis) -> Result<usize> {
        let dispatches = self.engine(settings)?.kick(settings, now)?;
        let sent = dispatches.len();
        self.send(settings, target, dispatches);
        self.wake(settings, target, Wake::Next, now);
        Ok(sent)
    }

    /// Puts a dead task back in the queue (sending its request when a slot
    /// is free); false if it is not dead.
    pub fn retry(
        &mut self,
        settings: &Settings,
        target: Option<&Target>,
        id: &str,
        now: Millis,
    ) -> Result<bool> {
        let (requeued, dispatch) =
            self.engine(settings)?
                .retry(settings, id, target.is_some(), now)?;
        if let Some(t) = target {
            self.send(settings, t, dispatch);
        }
        Ok(requeued)
    }

    /// Ends a task request (`state`, taken from this runtime): fails the
    /// tasks it still holds with `reason` (those `serve()` claimed ahead and
    /// never started go back to the queue unharmed), frees its slot, sends the next
    /// due request and sets this worker's wake-up. A failure leaves the
    /// tasks to lease expiry, which retries them.
    pub fn end_request(
        &mut self,
        settings: &Settings,
        state: &RequestState,
        target: Option<&Target>,
        reason: &str,
        now: Millis,
    ) {
        let slot = state.accepted.as_ref().map(|(s, _)| s.as_str());
        if !state.ended.is_empty() {
            // What serve() ran before the request ended early (exit, a fatal
            // error): lost if this fails, so those tasks run again.
            let _ = self
                .engine(settings)
                .and_then(|e| e.finish_batch(settings, &state.ended, Next::Stay, now));
        }
        let unstarted: Vec<Claimed> = state.ahead.iter().cloned().collect();
        let ended = self.engine(settings).and_then(|e| {
            let send = target.is_some();
            e.end_request(settings, slot, &state.held, &unstarted, reason, send, now)
        });
        if let (Ok(next), Some(t)) = (ended, target) {
            self.send(settings, t, next);
            self.wake(settings, t, Wake::Next, now);
        }
    }

    /// Once per persistent worker: its sender watches the site's queue
    /// from then on (one small read every 0.5 s), so delayed tasks and
    /// schedules start on time with no traffic and no cron even when no page
    /// of this worker deferred anything.
    pub fn arm(&mut self, settings: &Settings, target: &Target, now: Millis) {
        if self.persistent && !self.armed {
            self.wake(settings, target, Wake::Watch, now);
            self.armed = true;
        }
    }

    /// Whether this worker's sender already watches its site's queue (or
    /// this process is not a persistent worker, which never does).
    pub fn armed(&self) -> bool {
        self.armed || !self.persistent
    }

    /// Hands the live-events hubs this process hosts over to other workers:
    /// stops them and releases their leases (at most `limit`).
    pub fn stop_hubs(&self, limit: Duration) {
        if let Some(sender) = &self.sender {
            sender.stop_hubs(limit);
        }
    }

    /// Waits (at most `limit`) until the requests this process handed over
    /// are answered or failed.
    pub fn drain(&self, limit: Duration) {
        if let Some(sender) = &self.sender {
            sender.drain(limit);
        }
    }

    /// Runs the checkpoint a commit of this request left: on the sender's
    /// thread when this process has one (the request goes on at once),
    /// else here.
    fn checkpoint(&mut self) {
        let handed = match (&self.sender, &self.request.settings) {
            (Some(sender), Some((_, settings))) => sender.checkpoint(settings),
            _ => false,
        };
        if handed {
            return;
        }
        if let Some(Err(e)) = self.engine.as_mut().map(Engine::checkpoint) {
            crate::log::emit(format!("the checkpoint failed: {e}"));
        }
    }

    /// This process's sender, started on first use (without one, a slot
    /// expires and its task is retried).
    fn sender(&mut self) -> Option<&Sender> {
        if self.sender.is_none() {
            self.sender = Sender::start().ok();
        }
        self.sender.as_ref()
    }

    /// Hands signed requests to the sender.
    fn send(
        &mut self,
        settings: &Settings,
        target: &Target,
        dispatches: impl IntoIterator<Item = Dispatch>,
    ) {
        for d in dispatches {
            if let Some(sender) = self.sender() {
                sender.send(d, target, settings);
            }
        }
    }

    /// Sets when the sender next looks at this queue; persistent workers
    /// only (a CLI script does not stay to wait).
    fn wake(&mut self, settings: &Settings, target: &Target, wake: Wake, now: Millis) {
        if !self.persistent {
            return;
        }
        let at = match wake {
            Wake::Watch => None,
            Wake::At(at) => Some(at),
            Wake::Next => match self
                .engine(settings)
                .and_then(|e| e.next_wake(settings, now))
            {
                Ok(at) => at,
                Err(_) => return,
            },
        };
        if let Some(sender) = self.sender() {
            sender.wake_at(at, target, settings);
        }
    }
}
