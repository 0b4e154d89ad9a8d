//! Tasks as the queue stores them: states, defer options, validation, records.

use crate::clock::{secs_to_ms, Millis};
use crate::error::{invalid, Error, Result};
use crate::scalar::Scalar;
use crate::settings::Settings;

/// Longest accepted task name, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Longest accepted `unique` key, in bytes.
pub const MAX_UNIQUE_LEN: usize = 255;
/// Deepest accepted nesting of args arrays.
pub const MAX_ARGS_DEPTH: usize = 128;
/// Longest accepted lease or delay: about ten years, in seconds.
pub const MAX_SECONDS: f64 = 315_360_000.0;
/// Longest error message kept in `last_error`, in bytes.
pub const MAX_ERROR_LEN: usize = 8192;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Waiting for its due time and a free slot.
    Queued,
    /// Claimed by a request under a lease.
    Running,
    /// Completed.
    Done,
    /// Failed `max_attempts` times; kept with its last error.
    Dead,
    /// Cancelled while queued.
    Cancelled,
}

impl State {
    /// All states, in life order.
    pub const ALL: [State; 5] = [
        State::Queued,
        State::Running,
        State::Done,
        State::Dead,
        State::Cancelled,
    ];

    /// The state's name as stored and as PHP sees it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Done => "done",
            State::Dead => "dead",
            State::Cancelled => "cancelled",
        }
    }

    /// Parses a stored state name.
    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// Checks a task name: 1 to 255 bytes, no control characters.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(invalid!("task name is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid!(
            "task name is {} bytes long; the limit is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid!(
            "task name '{}' contains a control character",
            name.escape_default()
        ));
    }
    Ok(())
}

/// Checks JSON-encoded args against the size limit.
pub fn check_args_size(json: &str, settings: &Settings) -> Result<()> {
    if json.len() > settings.max_args_size {
        return Err(invalid!(
            "args are {} bytes as JSON; the limit is {} bytes (setting max_args_size)",
            json.len(),
            settings.max_args_size
        ));
    }
    Ok(())
}

/// A task as `defer()` and `schedule()` describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSpec<'a> {
    /// The endpoint path (or a full URL on this site's base URL).
    pub endpoint: &'a str,
    /// The task name.
    pub name: &'a str,
    /// The task's arguments as JSON text.
    pub args: &'a str,
}

impl<'a> TaskSpec<'a> {
    /// A task for `endpoint`, named `name`, with `args` (JSON text).
    pub fn new(endpoint: &'a str, name: &'a str, args: &'a str) -> Self {
        TaskSpec {
            endpoint,
            name,
            args,
        }
    }
}

/// The options of `defer()`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeferOptions {
    /// Seconds from now until the task is due.
    pub delay: Option<f64>,
    /// Unix time (seconds) at which the task is due.
    pub at: Option<f64>,
    /// Higher runs first among due tasks of an endpoint.
    pub priority: i64,
    /// Attempts before the task is dead; `None` takes the setting.
    pub max_attempts: Option<u32>,
    /// Lease in seconds; `None` takes the setting.
    pub timeout: Option<f64>,
    /// While a task with this key is queued or running, defer returns its id.
    pub unique: Option<String>,
}

/// The option names `defer()` knows.
pub const OPTION_NAMES: [&str; 6] = [
    "delay",
    "at",
    "priority",
    "max_attempts",
    "timeout",
    "unique",
];

fn option_error(name: &str, expected: &str, got: &Scalar) -> Error {
    invalid!("option '{name}' must be {expected}, got {}", got.describe())
}

fn seconds_option(name: &str, value: &Scalar, positive: bool) -> Result<f64> {
    let expected = if positive {
        "a number of seconds greater than 0"
    } else {
        "a number of seconds, 0 or more"
    };
    match value.as_number() {
        Some(n) if n < 0.0 || (positive && n == 0.0) => Err(invalid!(
            "option '{name}' must not be {}, got {}",
            if n < 0.0 { "negative" } else { "0" },
            value.describe()
        )),
        Some(n) if n > MAX_SECONDS => Err(option_error(name, "at most ten years", value)),
        Some(n) => Ok(n),
        None => Err(option_error(name, expected, value)),
    }
}

impl DeferOptions {
    /// Sets one option by name; refuses unknown names and wrong types.
    pub fn set(&mut self, name: &str, value: &Scalar) -> Result<()> {
        match name {
            "delay" => self.delay = Some(seconds_option(name, value, false)?),
            "at" => match value.as_number() {
                Some(t) if (0.0..1e12).contains(&t) => self.at = Some(t),
                _ => return Err(option_error(name, "a Unix time in seconds", value)),
            },
            "priority" => match value {
                Scalar::Int(p) if p.unsigned_abs() <= 1_000_000_000 => self.priority = *p,
                _ => return Err(option_error(name, "an integer (higher runs first)", value)),
            },
            "max_attempts" => match value {
                Scalar::Int(n) if (1..=1000).contains(n) => self.max_attempts = Some(*n as u32),
                _ => return Err(option_error(name, "an integer from 1 to 1000", value)),
            },
            "timeout" => self.timeout = Some(seconds_option(name, value, true)?),
            "unique" => match value {
                Scalar::Str(s) if !s.is_empty() && s.len() <= MAX_UNIQUE_LEN => {
                    self.unique = Some(s.clone())
                }
                _ => {
                    return Err(option_error(
                        name,
                        "a non-empty string of at most 255 bytes",
                        value,
                    ))
                }
            },
            _ => {
                return Err(invalid!(
                    "unknown option '{}'; known options: {}",
                    name.escape_default(),
                    OPTION_NAMES.join(", ")
                ))
            }
        }
        if self.delay.is_some() && self.at.is_some() {
            return Err(invalid!(
                "give either option 'delay' or option 'at', not both"
            ));
        }
        Ok(())
    }

    /// When the task is due, given the current time.
    pub fn due_at(&self, now: Millis) -> Millis {
        match (self.delay, self.at) {
            (Some(d), _) => now + secs_to_ms(d),
            (_, Some(at)) => secs_to_ms(at),
            _ => now,
        }
    }
}

/// A task's full record, as `status()` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInfo {
    /// The task id.
    pub id: String,
    /// The endpoint path that runs it.
    pub endpoint: String,
    /// The task name.
    pub name: String,
    /// Args as JSON text.
    pub args: String,
    /// Current state.
    pub state: State,
    /// Priority (higher first).
    pub priority: i64,
    /// Attempts started so far.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Lease length in milliseconds.
    pub timeout: Millis,
    /// `unique` key, if any.
    pub unique: Option<String>,
    /// When it is (or was) due.
    pub due_at: Millis,
    /// When it was deferred.
    pub created_at: Millis,
    /// When it last changed.
    pub updated_at: Millis,
    /// When its latest attempt started.
    pub started_at: Option<Millis>,
    /// When it finished (done, dead, cancelled).
    pub finished_at: Option<Millis>,
    /// When the lease of a running task ends.
    pub lease_until: Option<Millis>,
    /// The error of its latest failed attempt (or why it was skipped).
    pub last_error: Option<String>,
    /// The schedule whose occurrence it is, if any.
    pub schedule: Option<String>,
    /// That occurrence's own time.
    pub scheduled_at: Option<Millis>,
}

/// A task claimed under a lease by the current request.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The task id.
    pub id: String,
    /// The endpoint path.
    pub endpoint: String,
    /// The task name.
    pub name: String,
    /// Args as JSON text.
    pub args: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// The token that proves this request holds the lease.
    pub lease: String,
    /// The task's timeout (its lease when it starts), in ms.
    pub timeout: Millis,
    /// When the lease ends, in Unix ms.
    pub lease_until: Millis,
}

/// Cuts an error message to `MAX_ERROR_LEN` bytes on a character boundary.
pub fn clip_error(message: &str) -> String {
    if message.len() <= MAX_ERROR_LEN {
        return message.to_string();
    }
    let mut end = MAX_ERROR_LEN;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("send-email").is_ok());
        assert!(check_name("").unwrap_err().message().contains("empty"));
        assert!(check_name(&"x".repeat(256))
            .unwrap_err()
            .message()
            .contains("limit"));
        assert!(check_name("a\0b")
            .unwrap_err()
            .message()
            .contains("control"));
    }

    #[test]
    fn options_are_typed_and_known() {
        let mut o = DeferOptions::default();
        o.set("delay", &Scalar::Float(1.5)).unwrap();
        o.set("priority", &Scalar::Int(-3)).unwrap();
        o.set("max_attempts", &Scalar::Int(2)).unwrap();
        o.set("timeout", &Scalar::Int(30)).unwrap();
        o.set("unique", &Scalar::Str("k".into())).unwrap();
        assert_eq!(o.due_at(1000), 2500);
        let cases = [
            ("delay", Scalar::Int(-1), "negative"),
            ("delay", Scalar::Str("5".into()), "number of seconds"),
            ("delay", Scalar::Float(f64::INFINITY), "number of seconds"),
            ("at", Scalar::Int(5), "not both"),
            ("priority", Scalar::Float(1.0), "integer"),
            ("max_attempts", Scalar::Int(0), "1 to 1000"),
            ("timeout", Scalar::Int(0), "must not be 0"),
            ("unique", Scalar::Str(String::new()), "non-empty"),
            ("unique", Scalar::Other("array".into()), "got array"),
            ("retries", Scalar::Int(1), "unknown option 'retries'"),
        ];
        for (name, value, why) in cases {
            let err = o.clone().set(name, &value).unwrap_err();
            assert!(err.message().contains(why), "{name}: {err}");
            assert!(err.message().contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn clips_long_errors_on_char_boundaries() {
        let long = "é".repeat(MAX_ERROR_LEN);
        let clipped = clip_error(&long);
        assert!(clipped.len() <= MAX_ERROR_LEN + 3);
        assert_eq!(clip_error("short"), "short");
    }
}
