//! Failures worth a line in PHP's error log: dead tasks, failed deliveries,
//! storage errors met in the background. Lines are written straight to the
//! `error_log` file when PHP has one (the sender thread cannot call into
//! PHP), else kept until the PHP thread hands them to PHP's own logger.

use crate::clock::{now_ms, Millis};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Most lines kept for the PHP thread; older ones give way.
const MAX_PENDING: usize = 200;

/// A line the same as the last one is written again only after this long
/// (a background error met at every poll would otherwise fill the log).
const REPEAT_AFTER_MS: Millis = 60_000;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Whether lines wait for the PHP thread (so it need not lock to find out).
static PENDING: AtomicBool = AtomicBool::new(false);

struct Sink {
    /// PHP's `error_log` file, when it is one.
    file: Option<PathBuf>,
    /// Lines waiting for the PHP thread (no file).
    pending: Vec<String>,
    /// The last line logged, and when.
    last: Option<(String, Millis)>,
}

static SINK: Mutex<Sink> = Mutex::new(Sink {
    file: None,
    pending: Vec::new(),
    last: None,
});

fn sink() -> std::sync::MutexGuard<'static, Sink> {
    SINK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where lines go from now on: PHP's `error_log` setting when it names a
/// file (not `syslog`, not empty), and whether to log at all (`log` setting).
pub fn configure(error_log: Option<&str>, enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
    let file = error_log.filter(|f| !f.is_empty() && *f != "syslog");
    let mut s = sink();
    if s.file.as_deref().map(|p| p.as_os_str().as_encoded_bytes()) != file.map(str::as_bytes) {
        s.file = file.map(PathBuf::from);
    }
}

/// Logs one line, prefixed `async_engine: `.
pub fn emit(line: impl AsRef<str>) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    // One line: a message's own line breaks are shown escaped.
    let line = format!(
        "async_engine: {}",
        line.as_ref().replace('\n', "\\n").replace('\r', "\\r")
    );
    let now = now_ms();
    let mut s = sink();
    if s.last
        .as_ref()
        .is_some_and(|(last, at)| *last == line && now - at < REPEAT_AFTER_MS)
    {
        return;
    }
    s.last = Some((line.clone(), now));
    if let Some(file) = &s.file {
        let written = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(file)
            .and_then(|mut f| writeln!(f, "[{}] {line}", php_time(now)));
        if written.is_ok() {
            return;
        }
    }
    if s.pending.len() >= MAX_PENDING {
        s.pending.remove(0);
    }
    s.pending.push(line);
    PENDING.store(true, Ordering::Release);
}

/// Takes the lines waiting for PHP's logger.
pub fn take_pending() -> Vec<String> {
    if !PENDING.swap(false, Ordering::Acquire) {
        return Vec::new();
    }
    std::mem::take(&mut sink().pending)
}

/// `01-Dec-2026 13:46:28 UTC`, as PHP stamps its error log lines.
fn php_time(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{day:02}-{}-{year} {:02}:{:02}:{:02} UTC",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_like_php() {
        assert_eq!(php_time(0), "01-Jan-1970 00:00:00 UTC");
        assert_eq!(php_time(1_796_132_788_000), "01-Dec-2026 13:46:28 UTC");
        assert_eq!(php_time(951_782_400_000), "29-Feb-2000 00:00:00 UTC");
    }
}
