//! Engine settings: `async_engine.*` ini values, overridden per request by
//! `Engine::configure()`.

use crate::error::{Error, Result};
use std::path::PathBuf;

use crate::scalar::Scalar as SettingValue;

/// Calls macro `$then` with the names of all settings, in documentation
/// order, as identifiers: the one list that [`SETTING_NAMES`] and the
/// extension's php.ini entries are built from.
#[macro_export]
macro_rules! with_setting_names {
    ($then:ident) => {
        $then! {
            database,
            site,
            server,
            base_url,
            secret,
            max_workers,
            timeout,
            max_attempts,
            retention,
            busy_timeout,
            max_args_size,
            max_queued,
            dead_retention,
            log,
            timezone,
            hub_listen,
            hub_history,
            hub_jwt_key,
            hub_max_event_size
        }
    };
}

macro_rules! names {
    ($($name:ident),*) => {
        [$(stringify!($name)),*]
    };
}

/// The names of all settings, in documentation order.
pub const SETTING_NAMES: [&str; 19] = with_setting_names!(names);

/// The effective settings of one request.
#[derive(Clone, PartialEq)]
pub struct Settings {
    /// Path of the SQLite database, or a `postgres://` URL; `None` (unset)
    /// is refused when the database is first needed.
    pub database: Option<String>,
    /// The site whose tasks these are, when several sites share one
    /// database; `None` is the database's one site.
    pub site: Option<String>,
    /// This web server's name among several sharing one database; `None`
    /// means the machine's host name.
    pub server: Option<String>,
    /// Where self-requests go; `None` means derived from the web request.
    pub base_url: Option<String>,
    /// HMAC key; `None` means generated once and stored in the database.
    pub secret: Option<String>,
    /// Task requests in flight, per server.
    pub max_workers: u32,
    /// Default lease of a running task, in seconds.
    pub timeout: f64,
    /// Default attempts before a task is dead.
    pub max_attempts: u32,
    /// Seconds that finished tasks are kept.
    pub retention: f64,
    /// Seconds to wait for another writer's lock before giving up.
    pub busy_timeout: f64,
    /// Largest accepted size of a task's JSON-encoded args, in bytes.
    pub max_args_size: usize,
    /// Most tasks queued per endpoint; `defer()` beyond it is refused.
    pub max_queued: u64,
    /// Seconds that dead tasks are kept.
    pub dead_retention: f64,
    /// Whether failures (dead tasks, failed deliveries, storage errors met
    /// in the background) are written to PHP's error log.
    pub log: bool,
    /// IANA time zone of schedules that name none; `None` is UTC.
    pub timezone: Option<String>,
    /// Where one persistent worker of this server hosts the live-events
    /// hub (`host:port`); `None` means no hub.
    pub hub_listen: Option<std::net::SocketAddr>,
    /// Seconds that published updates are kept for replay.
    pub hub_history: f64,
    /// The HS256 key of the hub's tokens; `None` means derived from the secret.
    pub hub_jwt_key: Option<String>,
    /// Largest data of one published update, in bytes.
    pub hub_max_event_size: usize,
}

/// How one setting shows in a debug line: the keys only as set or not,
/// the database URL without its password, everything else as it is.
trait Shown {
    fn shown(&self, name: &str) -> String;
}

impl Shown for Option<String> {
    fn shown(&self, name: &str) -> String {
        match (name, self) {
            ("secret" | "hub_jwt_key", Some(_)) => "Some(***)".to_string(),
            ("database", Some(database)) => format!("Some({:?})", shown_database(database)),
            _ => format!("{self:?}"),
        }
    }
}

macro_rules! shown_as_is {
    ($($t:ty),*) => {
        $(impl Shown for $t {
            fn shown(&self, _name: &str) -> String {
                format!("{self:?}")
            }
        })*
    };
}
shown_as_is!(u32, u64, usize, f64, bool, Option<std::net::SocketAddr>);

macro_rules! debug_settings {
    ($($name:ident),*) => {
        /// Every setting (the one list of names), none of its secrets.
        impl std::fmt::Debug for Settings {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut d = f.debug_struct("Settings");
                $(d.field(
                    stringify!($name),
                    &format_args!("{}", self.$name.shown(stringify!($name))),
                );)*
                d.finish()
            }
        }
    };
}
with_setting_names!(debug_settings);

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database: None,
            site: None,
            server: None,
            base_url: None,
            secret: None,
            max_workers: 4,
            timeout: 300.0,
            max_attempts: 5,
            retention: 86400.0,
            busy_timeout: 5.0,
            max_args_size: 1024 * 1024,
            max_queued: 100_000,
            dead_retention: 30.0 * 86400.0,
            log: true,
            timezone: None,
            hub_listen: None,
            hub_history: 3600.0,
            hub_jwt_key: None,
            hub_max_event_size: 1024 * 1024,
        }
    }
}

fn usage(name: &str, expected: &str, got: &SettingValue) -> Error {
    Error::Usage(format!(
        "setting '{name}' must be {expected}, got {}",
        got.describe()
    ))
}

fn number(name: &str, value: &SettingValue, expected: &str) -> Result<f64> {
    match value {
        SettingValue::Int(i) => Ok(*i as f64),
        SettingValue::Float(f) if f.is_finite() => Ok(*f),
        SettingValue::Str(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .ok_or_else(|| usage(name, expected, value)),
        _ => Err(usage(name, expected, value)),
    }
}

fn whole(name: &str, value: &SettingValue, min: i64, max: i64) -> Result<i64> {
    let expected = format!("an integer from {min} to {max}");
    let n = match value {
        SettingValue::Int(i) => *i,
        SettingValue::Str(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| usage(name, &expected, value))?,
        _ => return Err(usage(name, &expected, value)),
    };
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(usage(name, &expected, value))
    }
}

fn seconds(name: &str, value: &SettingValue, min: f64) -> Result<f64> {
    let expected = if min > 0.0 {
        "a number of seconds greater than 0"
    } else {
        "a number of seconds, 0 or more"
    };
    let n = number(name, value, expected)?;
    if n < min || (min > 0.0 && n <= 0.0) {
        return Err(usage(name, expected, value));
    }
    Ok(n)
}

fn text(name: &str, value: &SettingValue) -> Result<Option<String>> {
    match value {
        SettingValue::Null => Ok(None),
        SettingValue::Str(s) if s.is_empty() => Ok(None),
        SettingValue::Str(s) => Ok(Some(s.clone())),
        _ => Err(usage(name, "a string", value)),
    }
}

/// A key setting (`secret`, `hub_jwt_key`): 16 characters or more, or
/// empty for none. The value is never shown, not even a wrong one.
fn key(name: &str, value: &SettingValue) -> Result<Option<String>> {
    match value {
        SettingValue::Null => Ok(None),
        SettingValue::Str(s) if s.is_empty() => Ok(None),
        SettingValue::Str(s) if s.len() < 16 => Err(Error::Usage(format!(
            "setting '{name}' must be at least 16 characters long, got {} (the value is not shown)",
            s.len()
        ))),
        SettingValue::Str(s) => Ok(Some(s.clone())),
        _ => Err(Error::Usage(format!(
            "setting '{name}' must be a string (the value is not shown)"
        ))),
    }
}

impl Settings {
    /// Sets one setting by name; `Null` (or an empty ini string) restores its default.
    /// The settings are unchanged when the name or value is refused.
    pub fn set(&mut self, name: &str, value: &SettingValue) -> Result<()> {
        let empty = matches!(value, SettingValue::Null)
            || matches!(value, SettingValue::Str(s) if s.trim().is_empty());
        let defaults = Settings::default();
        match name {
            "database" => {
                let database = text(name, value)?;
                if database
                    .as_ref()
                    .is_some_and(|d| d.len() > 4096 || d.contains('\0'))
                {
                    return Err(Error::Usage(format!(
                        "setting 'database' must be a path or URL of at most 4096 bytes \
                         without NUL bytes, got {}",
                        shown_database(database.as_deref().unwrap_or_default())
                    )));
                }
                self.database = database;
            }
            "site" | "server" => {
                let given = text(name, value)?;
                if given.as_ref().is_some_and(|s| s.len() > 255) {
                    return Err(usage(name, "at most 255 bytes long", value));
                }
                if name == "site" {
                    self.site = given;
                } else {
                    self.server = given;
                }
            }
            "timezone" => {
                let zone = text(name, value)?;
                if let Some(z) = &zone {
                    crate::when::time_zone(z).map_err(|e| {
                        Error::Usage(format!("setting 'timezone': {}", e.message()))
                    })?;
                }
                self.timezone = zone;
            }
            "hub_listen" => {
                let listen = text(name, value)?;
                self.hub_listen = match listen {
                    None => None,
                    Some(l) => Some(l.trim().parse().map_err(|_| {
                        usage(name, "an address and port such as 127.0.0.1:3000", value)
                    })?),
                };
            }
            "hub_jwt_key" => self.hub_jwt_key = key(name, value)?,
            "base_url" => {
                let url = text(name, value)?;
                if let Some(u) = &url {
                    crate::endpoint::parse_base_url(u)?;
                }
                self.base_url = url.map(|u| u.trim_end_matches('/').to_string());
            }
            "secret" => self.secret = key(name, value)?,
            "log" => {
                self.log = match value {
                    SettingValue::Null => defaults.log,
                    SettingValue::Bool(b) => *b,
                    SettingValue::Int(i @ (0 | 1)) => *i == 1,
                    SettingValue::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
                        "" => defaults.log,
                        "1" | "on" | "true" | "yes" => true,
                        "0" | "off" | "false" | "no" => false,
                        _ => return Err(usage(name, "on or off", value)),
                    },
                    _ => return Err(usage(name, "on or off", value)),
                }
            }
            _ if empty && SETTING_NAMES.contains(&name) => {
                // Numeric settings: empty means default.
                match name {
                    "max_workers" => self.max_workers = defaults.max_workers,
                    "timeout" => self.timeout = defaults.timeout,
                    "max_attempts" => self.max_attempts = defaults.max_attempts,
                    "retention" => self.retention = defaults.retention,
                    "busy_timeout" => self.busy_timeout = defaults.busy_timeout,
                    "max_queued" => self.max_queued = defaults.max_queued,
                    "dead_retention" => self.dead_retention = defaults.dead_retention,
                    "hub_history" => self.hub_history = defaults.hub_history,
                    "hub_max_event_size" => self.hub_max_event_size = defaults.hub_max_event_size,
                    _ => self.max_args_size = defaults.max_args_size,
                }
            }
            "max_workers" => self.max_workers = whole(name, value, 1, 1024)? as u32,
            "timeout" => self.timeout = seconds(name, value, f64::MIN_POSITIVE)?,
            "max_attempts" => self.max_attempts = whole(name, value, 1, 1000)? as u32,
            "retention" => self.retention = seconds(name, value, 0.0)?,
            "busy_timeout" => self.busy_timeout = seconds(name, value, 0.0)?,
            "max_args_size" => {
                self.max_args_size = whole(name, value, 2, 64 * 1024 * 1024)? as usize
            }
            "max_queued" => self.max_queued = whole(name, value, 1, 1_000_000_000)? as u64,
            "dead_retention" => self.dead_retention = seconds(name, value, 0.0)?,
            "hub_history" => self.hub_history = seconds(name, value, 0.0)?,
            "hub_max_event_size" => {
                self.hub_max_event_size = whole(name, value, 1, 64 * 1024 * 1024)? as usize
            }
            _ => {
                return Err(Error::Usage(format!(
                    "unknown setting '{name}'; known settings: {}",
                    SETTING_NAMES.join(", ")
                )))
            }
        }
        Ok(())
    }

    /// This server's name: the `server` setting, else the host name.
    pub fn server_name(&self) -> &str {
        static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        self.server.as_deref().unwrap_or_else(|| {
            HOST.get_or_init(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .or_else(|_| std::fs::read_to_string("/etc/hostname"))
                    .map(|h| h.trim().to_string())
                    .ok()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "localhost".into())
            })
        })
    }

    /// The time zone of schedules that name none: the `timezone` setting, else UTC.
    pub fn timezone_name(&self) -> &str {
        self.timezone.as_deref().unwrap_or("UTC")
    }

    /// This site's name (see the `site` setting): empty for the database's
    /// one site.
    pub fn site_name(&self) -> &str {
        self.site.as_deref().unwrap_or("")
    }

    /// The database setting, or a StorageError saying what to set. There is
    /// no default: a file in the system temp dir would be readable by other
    /// users, private to one service under systemd's PrivateTmp, and lost
    /// with it (docs/architecture.md, "Where the database lives").
    pub fn database(&self) -> Result<&str> {
        self.database.as_deref().ok_or_else(|| {
            Error::Storage(
                "no database is set: set async_engine.database (php.ini, the pool's \
                 php_admin_value, or Engine::configure()) to a file path in a directory of the \
                 site's own that the web server's PHP and its CLI scripts can both write, such \
                 as /var/lib/async-engine/example.sqlite (not the system temp dir), or to a \
                 postgres:// URL"
                    .into(),
            )
        })
    }

    /// The SQLite database path in effect (see [`Settings::database`]).
    pub fn database_path(&self) -> Result<PathBuf> {
        self.database().map(PathBuf::from)
    }
}

/// A database setting as messages show it: a URL's password (in its user
/// part or a `password=` parameter) replaced by `***`.
pub fn shown_database(database: &str) -> String {
    let mut shown = database.to_string();
    if let (Some(s), Some(at)) = (shown.find("://"), shown.rfind('@')) {
        if at > s {
            if let Some(colon) = shown[s + 3..at].find(':') {
                shown.replace_range(s + 3 + colon + 1..at, "***");
            }
        }
    }
    if let Some(q) = shown.find('?') {
        let (head, query) = shown.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect();
        shown = format!("{head}{}", query.join("&"));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ini_strings_and_typed_values() {
        let mut s = Settings::default();
        s.set("max_workers", &SettingValue::Str("8".into()))
            .unwrap();
        s.set("timeout", &SettingValue::Float(2.5)).unwrap();
        s.set("retention", &SettingValue::Int(0)).unwrap();
        s.set(
            "base_url",
            &SettingValue::Str("http://127.0.0.1:8080/".into()),
        )
        .unwrap();
        assert_eq!(s.max_workers, 8);
        assert_eq!(s.timeout, 2.5);
        assert_eq!(s.retention, 0.0);
        assert_eq!(s.base_url.as_deref(), Some("http://127.0.0.1:8080"));
        s.set("max_workers", &SettingValue::Str(String::new()))
            .unwrap();
        assert_eq!(s.max_workers, 4);
    }

    #[test]
    fn refuses_bad_values_without_changing_anything() {
        let mut s = Settings::default();
        let before = s.clone();
        for (name, value) in [
            ("max_workers", SettingValue::Int(0)),
            ("max_workers", SettingValue::Str("many".into())),
            ("timeout", SettingValue::Float(-1.0)),
            ("timeout", SettingValue::Int(0)),
            ("timeout", SettingValue::Float(f64::NAN)),
            ("secret", SettingValue::Str("short".into())),
            ("max_queued", SettingValue::Int(0)),
            ("log", SettingValue::Str("maybe".into())),
            ("base_url", SettingValue::Str("ftp://x".into())),
            ("bogus", SettingValue::Int(1)),
            ("database", SettingValue::Int(1)),
            ("timezone", SettingValue::Str("Mars/Olympus".into())),
        ] {
            let err = s.set(name, &value).unwrap_err();
            assert!(matches!(err, Error::Usage(_)), "{name}: {err}");
            assert!(err.message().contains(name), "{err}");
        }
        assert_eq!(s, before);
    }

    #[test]
    fn secrets_and_passwords_are_never_shown() {
        let mut s = Settings::default();
        for value in [
            SettingValue::Str("hunter2hunter".into()),
            SettingValue::Int(12345),
        ] {
            let err = s.set("secret", &value).unwrap_err();
            assert!(!err.message().contains("hunter2") && !err.message().contains("12345"));
        }
        let mut keyed = Settings::default();
        keyed
            .set("secret", &SettingValue::Str("hunter2hunter2hunter2".into()))
            .unwrap();
        keyed
            .set(
                "hub_jwt_key",
                &SettingValue::Str("jwtkey-jwtkey-jwtkey".into()),
            )
            .unwrap();
        keyed
            .set(
                "database",
                &SettingValue::Str("postgres://u:pw1@h/db".into()),
            )
            .unwrap();
        let debug = format!("{keyed:?}");
        for secret in ["hunter2", "jwtkey", "pw1"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(debug.contains("postgres://u:***@h/db"), "{debug}");
        assert!(
            debug.contains("secret: Some(***)") && debug.contains("max_workers: 4"),
            "{debug}"
        );
        for (url, hidden) in [
            ("postgres://u:pw1@h/db", "postgres://u:***@h/db"),
            ("postgress://u:pw1@h:5/db", "postgress://u:***@h:5/db"),
            (
                "postgres://u@h/db?password=pw1&sslmode=off",
                "postgres://u@h/db?password=***&sslmode=off",
            ),
            ("/var/lib/a.sqlite", "/var/lib/a.sqlite"),
        ] {
            assert_eq!(shown_database(url), hidden);
        }
        assert!(Settings::default()
            .database()
            .unwrap_err()
            .message()
            .contains("async_engine.database"));
    }
}
