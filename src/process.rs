//! Per-process state: one database connection, kept across requests and
//! reopened after `fork()`, and what the current request holds.

use async_engine_core::dispatch::{Sender, Target};
use async_engine_core::{Dispatch, Engine, Scalar, Settings};
use std::sync::Mutex;
use std::time::Duration;

/// What the current request holds, released when it ends.
#[derive(Default)]
pub struct RequestState {
    /// `Engine::configure()` overrides, in call order.
    pub overrides: Vec<(String, Scalar)>,
    /// The slot and endpoint this request accepted, if it is a task request.
    pub accepted: Option<(String, String)>,
    /// Tasks claimed by this request and not yet completed or failed: (id, lease).
    pub held: Vec<(String, String)>,
    /// Where this request's self-requests go, once worked out, with the
    /// base_url setting it was worked out for.
    pub target: Option<(Option<String>, Option<Target>)>,
}

/// Everything the extension keeps in one PHP process.
struct Process {
    pid: u32,
    engine: Option<Engine>,
    sender: Option<Sender>,
    /// The base URL last stored for CLI scripts to use.
    learned: Option<String>,
    warned_no_target: bool,
    /// Whether this worker's sender watches its site's queue (armed by the
    /// end of a request, see `shutdown::arm_worker`).
    armed: bool,
    request: RequestState,
}

static PROCESS: Mutex<Option<Process>> = Mutex::new(None);

/// Runs `f` on this process's state, resetting it in a forked child.
/// `f` must not call into PHP: a fatal error there would skip the unlock.
fn with<T>(f: impl FnOnce(&mut Process) -> T) -> T {
    let mut guard = PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    match guard.as_mut() {
        Some(p) if p.pid == pid => {}
        Some(p) => {
            // A forked child goes on with the same request (and its
            // configure() overrides), but must not use or close the parent's
            // connection (closing could disturb the parent's locks).
            std::mem::forget(p.engine.take());
            // Its sender thread did not survive the fork either.
            std::mem::forget(p.sender.take());
            p.pid = pid;
        }
        None => {
            *guard = Some(Process {
                pid,
                engine: None,
                sender: None,
                learned: None,
                warned_no_target: false,
                armed: false,
                request: RequestState::default(),
            })
        }
    }
    f(guard.as_mut().expect("initialised above"))
}

/// Runs `f` on the request state.
pub fn request<T>(f: impl FnOnce(&mut RequestState) -> T) -> T {
    with(|p| f(&mut p.request))
}

/// The settings in effect for this request. Points the engine's log at
/// PHP's error log and hands it the lines the background thread left.
pub fn settings() -> async_engine_core::Result<Settings> {
    let overrides = request(|r| r.overrides.clone());
    let settings = crate::ini::settings(&overrides)?;
    async_engine_core::log::configure(crate::ini::error_log().as_deref(), settings.log);
    flush_log();
    Ok(settings)
}

/// Writes the engine's waiting log lines through PHP's `error_log()`
/// (PHP's own logger: the SAPI's log when no `error_log` file is set).
pub fn flush_log() {
    let lines = async_engine_core::log::take_pending();
    if lines.is_empty() {
        return;
    }
    if let Ok(f) = ext_php_rs::types::ZendCallable::try_from_name("error_log") {
        for line in lines {
            let _ = f.try_call(vec![&line]);
        }
    }
}

/// Runs `f` with the engine for `settings`' database, opening it on first
/// use (or when the database setting changed).
pub fn engine<T>(
    settings: &Settings,
    f: impl FnOnce(&mut Engine) -> async_engine_core::Result<T>,
) -> async_engine_core::Result<T> {
    with(|p| {
        let reusable = match p.engine.as_mut() {
            Some(e) => e.serves(settings)?,
            None => false,
        };
        if !reusable {
            p.engine = None;
            p.engine = Some(Engine::open(settings)?);
        }
        f(p.engine.as_mut().expect("opened above"))
    })
}

/// Takes the request state, leaving it empty for the next request.
pub fn take_request() -> RequestState {
    with(|p| std::mem::take(&mut p.request))
}

/// Whether the current request holds anything that must be released.
pub fn request_is_idle() -> bool {
    with(|p| {
        p.request.accepted.is_none()
            && p.request.held.is_empty()
            && p.request.overrides.is_empty()
            && p.request.target.is_none()
            && p.sender.as_ref().is_none_or(|s| s.pending() == 0)
    })
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

/// Where this request's self-requests go (see [`crate::request::target`]);
/// a CLI script without a configured base URL uses the one stored by the
/// last signed request that arrived through the web server.
pub fn target(settings: &Settings) -> Option<Target> {
    let cached = request(|r| r.target.clone());
    if let Some((setting, t)) = cached {
        if setting == settings.base_url {
            return t;
        }
    }
    let target = crate::request::target(settings).or_else(|| {
        engine(settings, |e| e.meta(&learned_target_key(settings)))
            .ok()
            .flatten()
            .and_then(|learned| {
                let (url, addr) = learned.split_once(' ')?;
                Some(Target {
                    base: async_engine_core::endpoint::parse_base_url(url).ok()?,
                    connect_to: Some(addr.parse().ok()?),
                })
            })
    });
    request(|r| r.target = Some((settings.base_url.clone(), target.clone())));
    target
}

/// Stores where this request's self-requests go, for CLI scripts: called
/// only once a signed request was verified, so the web server's values
/// proved to reach this site (no unsigned request can move the CLI's
/// target). Only a target worked out from the web request is stored.
pub fn learn(settings: &Settings, target: &Target) {
    let Some(addr) = target.connect_to else {
        return;
    };
    let learned = format!("{} {addr}", target.base.origin());
    if with(|p| p.learned.as_deref() == Some(learned.as_str())) {
        return;
    }
    if engine(settings, |e| {
        e.set_meta(&learned_target_key(settings), &learned)
    })
    .is_ok()
    {
        with(|p| p.learned = Some(learned));
    }
}

/// Hands signed requests to this process's sender (started on first use).
pub fn send(settings: &Settings, target: &Target, dispatches: impl IntoIterator<Item = Dispatch>) {
    with(|p| {
        for d in dispatches {
            if p.sender.is_none() {
                // Without a sender the slot expires and its task is retried.
                p.sender = Sender::start().ok();
            }
            if let Some(sender) = &p.sender {
                sender.send(d, target, settings);
            }
        }
    })
}

/// Asks this process's sender to watch this queue and to dispatch what is
/// due at `at`, if given (persistent web workers only: a CLI script does
/// not stay to wait).
pub fn wake_at(settings: &Settings, target: &Target, at: Option<i64>) {
    if !crate::request::persistent_sapi() {
        return;
    }
    with(|p| {
        if p.sender.is_none() {
            p.sender = Sender::start().ok();
        }
        if let Some(sender) = &p.sender {
            sender.wake_at(at, target, settings);
        }
    })
}

/// Hands the live-events hubs this process hosts over to other workers:
/// stops them and releases their leases (at most `limit`; module shutdown).
pub fn stop_hubs(limit: Duration) {
    with(|p| {
        if let Some(sender) = &p.sender {
            sender.stop_hubs(limit);
        }
    })
}

/// Waits (at most `limit`) until the requests this process handed over are
/// answered or failed.
pub fn drain(limit: Duration) {
    with(|p| {
        if let Some(sender) = &p.sender {
            sender.drain(limit);
        }
    })
}

/// Whether this worker already watches its site's queue.
pub fn armed() -> bool {
    with(|p| p.armed)
}

/// Records that this worker watches its site's queue.
pub fn set_armed() {
    with(|p| p.armed = true)
}

/// True the first time in this process: whether to warn that a task cannot
/// be sent for lack of a base URL.
pub fn first_no_target_warning() -> bool {
    with(|p| !std::mem::replace(&mut p.warned_no_target, true))
}
