//! The engine's error type; the binding maps each kind to a PHP exception class.

use std::fmt;

/// What went wrong, by the PHP exception class it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Bad endpoint, task name, args or options (`InvalidTask`).
    InvalidTask(String),
    /// A request that is not a genuine self-request (`RequestRejected`).
    Rejected(String),
    /// Database missing, unwritable, corrupt or locked too long (`StorageError`).
    Storage(String),
    /// The endpoint's queue holds `max_queued` tasks already (`QueueFull`).
    QueueFull(String),
    /// Misuse of the API that is none of the above (`EngineException`).
    Usage(String),
    /// A task finished or failed by a request that no longer holds it: its
    /// lease expired and it was reaped, or it was already finished
    /// (`EngineException`).
    NotHeld(String),
}

/// Shorthand for results of engine operations.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The human-readable message, without the kind.
    pub fn message(&self) -> &str {
        match self {
            Error::InvalidTask(m)
            | Error::Rejected(m)
            | Error::Storage(m)
            | Error::QueueFull(m)
            | Error::Usage(m)
            | Error::NotHeld(m) => m,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

/// Builds an `InvalidTask` error from a format string.
macro_rules! invalid {
    ($($arg:tt)*) => { $crate::error::Error::InvalidTask(format!($($arg)*)) };
}
pub(crate) use invalid;
