//! Time as the engine counts it: milliseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The current wall-clock time in milliseconds.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// Converts seconds (as PHP passes them) to milliseconds, rounding to nearest.
pub fn secs_to_ms(secs: f64) -> Millis {
    (secs * 1000.0).round() as Millis
}

/// Converts milliseconds to seconds, as PHP reads them.
pub fn ms_to_secs(ms: Millis) -> f64 {
    ms as f64 / 1000.0
}
