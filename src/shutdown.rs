//! End of a request: tasks this request claimed but did not finish are
//! failed, and its slot is freed for the next due endpoint.

use crate::process;
use async_engine_core::clock::now_ms;
use async_engine_core::runtime::Runtime;
use ext_php_rs::zend::ProcessGlobals;
use std::time::Duration;

/// How long a CLI script waits at its end for its requests to be answered.
const CLI_DRAIN: Duration = Duration::from_secs(2);

/// Error types that end a request (E_ERROR, E_PARSE, E_CORE_ERROR,
/// E_COMPILE_ERROR, E_USER_ERROR, E_RECOVERABLE_ERROR).
const FATAL: i32 = 1 | 4 | 16 | 64 | 256 | 4096;

/// Why the request ended without finishing its task.
fn reason() -> String {
    let base = "the request ended without complete() or fail()";
    let globals = ProcessGlobals::get();
    let fatal = (globals.last_error_type & FATAL) != 0;
    // SAFETY: PG(last_error_message) is null or a live zend_string.
    let message = unsafe { globals.last_error_message.as_ref() }
        .filter(|_| fatal)
        .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned());
    let file = unsafe { globals.last_error_file.as_ref() }
        .map(|f| String::from_utf8_lossy(f.as_bytes()).into_owned())
        .unwrap_or_default();
    match message {
        Some(m) => format!(
            "{base}: fatal error: {m} in {file}:{}",
            globals.last_error_lineno
        ),
        None => format!(
            "{base} (uncaught exception, exit, or a handler that returned without finishing it)"
        ),
    }
}

/// How long a worker that exits waits for its hub to hand over.
const HUB_HANDOVER: Duration = Duration::from_millis(500);

/// Module shutdown hook (MSHUTDOWN: the process exits, e.g. a php-fpm
/// worker recycled by pm.max_requests): a hub hosted here releases its lease
/// so another worker takes over at its next poll rather than after the lease.
pub extern "C" fn module_shutdown(_ty: i32, _module_number: i32) -> i32 {
    let _ = std::panic::catch_unwind(|| process::with(|rt| rt.stop_hubs(HUB_HANDOVER)));
    0
}

/// Request shutdown hook (RSHUTDOWN). Never panics into PHP.
pub extern "C" fn request_shutdown(_ty: i32, _module_number: i32) -> i32 {
    let _ = std::panic::catch_unwind(end_request);
    0
}

fn end_request() {
    process::flush_log();
    if process::with(|rt| rt.is_idle()) {
        arm_worker(&[]);
        return;
    }
    let state = process::with(Runtime::take_request);
    let target = state.target.clone().and_then(|(_, t)| t);
    if state.accepted.is_some() || !state.held.is_empty() || !state.ended.is_empty() {
        let reason = reason();
        let Ok(settings) = crate::ini::settings(&state.overrides) else {
            return;
        };
        process::with(|rt| rt.end_request(&settings, &state, target.as_ref(), &reason, now_ms()));
    } else {
        arm_worker(&state.overrides);
    }
    if !process::with(|rt| rt.persistent()) {
        // A CLI script waits (briefly) for its requests to go out.
        process::with(|rt| rt.drain(CLI_DRAIN));
    }
    process::flush_log();
}

/// Once per persistent worker, at the end of the first request (that ran no
/// task) with a database set, in php.ini or by `Engine::configure()`: the
/// worker's sender starts watching the site's queue (see [`Runtime::arm`]).
fn arm_worker(overrides: &[(String, async_engine_core::Scalar)]) {
    if process::with(|rt| rt.armed()) {
        return;
    }
    let Ok(settings) = crate::ini::settings(overrides) else {
        return;
    };
    if settings.database.is_none() {
        return;
    }
    if let Some(target) = crate::request::target(&settings) {
        process::with(|rt| rt.arm(&settings, &target, now_ms()));
    }
}
