//! The background thread's own engine (database connection), shared by
//! the sender's and the hub's tasks and used on tokio's blocking pool.

use crate::engine::Engine;
use crate::settings::Settings;
use std::sync::{Arc, Mutex};

/// The background thread's engine, opened on first need.
pub(crate) type SharedEngine = Arc<Mutex<Option<Engine>>>;

/// Runs `f` with the shared engine for `settings`' database.
fn with_engine<T>(
    shared: &SharedEngine,
    settings: &Settings,
    f: impl FnOnce(&mut Engine) -> crate::Result<T>,
) -> crate::Result<T> {
    let mut guard = shared.lock().unwrap_or_else(|e| e.into_inner());
    f(Engine::reuse_or_open(&mut guard, settings)?)
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
    tokio::task::spawn_blocking(move || with_engine(&shared, &settings, |e| f(e, &settings)))
        .await
        .unwrap_or_else(|e| Err(crate::Error::Storage(format!("engine call failed: {e}"))))
}
