//! The handle on this process's runtime (`async_engine_core::runtime`),
//! with what it needs from PHP: the settings in effect, this request's
//! target, and PHP's error log.

use async_engine_core::runtime::{self, Runtime};
use async_engine_core::target::Target;
use async_engine_core::{Engine, Settings};
use std::sync::Arc;

/// Runs `f` on this process's runtime. `f` must not call into PHP.
pub fn with<T>(f: impl FnOnce(&mut Runtime) -> T) -> T {
    runtime::with(crate::request::persistent_sapi, f)
}

/// Runs `f` with the engine for `settings`' database.
pub fn engine<T>(
    settings: &Settings,
    f: impl FnOnce(&mut Engine) -> async_engine_core::Result<T>,
) -> async_engine_core::Result<T> {
    with(|rt| f(rt.engine(settings)?))
}

/// The settings in effect for this request. Points the engine's log at
/// PHP's error log and hands it the lines the background thread left.
/// Read from the ini entries only when they changed since the last call
/// (or `Engine::configure()` was called).
pub fn settings() -> async_engine_core::Result<Arc<Settings>> {
    let changes = crate::ini::changes();
    let settings = match with(|rt| rt.cached_settings(changes)) {
        Some(settings) => settings,
        None => {
            let overrides = with(|rt| rt.request.overrides.clone());
            let settings = Arc::new(crate::ini::settings(&overrides)?);
            with(|rt| rt.cache_settings(changes, Arc::clone(&settings)));
            settings
        }
    };
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

/// Where this request's self-requests go (see [`crate::request::target`]
/// and [`Runtime::target`]), worked out once per request.
pub fn target(settings: &Settings) -> Option<Target> {
    if let Some(cached) = with(|rt| rt.cached_target(settings)) {
        return cached;
    }
    let from_request = crate::request::target(settings);
    with(|rt| rt.target(settings, from_request))
}
