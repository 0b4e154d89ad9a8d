//! This process's one engine (database connection), shared by the PHP
//! thread (the runtime) and the background thread (the sender's tasks, on
//! tokio's blocking pool): one connection per process, whichever thread
//! needs it (see docs/architecture.md, "Parts").

use crate::engine::Engine;
use crate::settings::Settings;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};

/// The process's engine, opened on first need by either thread.
pub type SharedEngine = Arc<Mutex<Option<Engine>>>;

/// The engine, held by one thread for one call.
pub struct EngineGuard<'a>(MutexGuard<'a, Option<Engine>>);

impl Deref for EngineGuard<'_> {
    type Target = Engine;

    fn deref(&self) -> &Engine {
        self.0.as_ref().expect("opened by lock()")
    }
}

impl DerefMut for EngineGuard<'_> {
    fn deref_mut(&mut self) -> &mut Engine {
        self.0.as_mut().expect("opened by lock()")
    }
}

/// Locks the shared engine for `settings`' database, opening it (or
/// reopening it elsewhere) first when needed.
pub(crate) fn lock<'a>(
    shared: &'a SharedEngine,
    settings: &Settings,
) -> crate::Result<EngineGuard<'a>> {
    let mut guard = shared.lock().unwrap_or_else(|e| e.into_inner());
    Engine::reuse_or_open(&mut guard, settings)?;
    Ok(EngineGuard(guard))
}

/// Runs `f` with the shared engine on tokio's blocking pool: a database
/// call blocks (and the PostgreSQL client runs a runtime of its own, which
/// cannot start inside this one).
pub(crate) async fn engine_call<T: Send + 'static>(
    shared: &SharedEngine,
    settings: &Settings,
    f: impl FnOnce(&mut Engine, &Settings) -> crate::Result<T> + Send + 'static,
) -> crate::Result<T> {
    let (shared, settings) = (shared.clone(), settings.clone());
    tokio::task::spawn_blocking(move || {
        lock(&shared, &settings).and_then(|mut e| f(&mut e, &settings))
    })
    .await
    .unwrap_or_else(|e| Err(crate::Error::Storage(format!("engine call failed: {e}"))))
}
