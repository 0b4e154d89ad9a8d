//! Per-process state: one database connection, kept across requests and
//! reopened after `fork()`, and what the current request holds.

use async_engine_core::{Engine, Scalar, Settings};
use std::sync::Mutex;

/// What the current request holds, released when it ends.
#[derive(Default)]
pub struct RequestState {
    /// `Engine::configure()` overrides, in call order.
    pub overrides: Vec<(String, Scalar)>,
    /// The slot and endpoint this request accepted, if it is a task request.
    pub accepted: Option<(String, String)>,
    /// Tasks claimed by this request and not yet completed or failed: (id, lease).
    pub held: Vec<(String, String)>,
}

/// Everything the extension keeps in one PHP process.
struct Process {
    pid: u32,
    engine: Option<Engine>,
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
            p.pid = pid;
        }
        None => {
            *guard = Some(Process {
                pid,
                engine: None,
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

/// The settings in effect for this request.
pub fn settings() -> async_engine_core::Result<Settings> {
    let overrides = request(|r| r.overrides.clone());
    crate::ini::settings(&overrides)
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
        p.request.accepted.is_none() && p.request.held.is_empty() && p.request.overrides.is_empty()
    })
}
