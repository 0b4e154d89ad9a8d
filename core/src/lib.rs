//! The engine behind async-engine, free of PHP types so `cargo test` covers it.
//!
//! Two levels of state live in one database (SQLite, or PostgreSQL when
//! several servers share the work): each server's slots (task requests in
//! flight) and endpoint due times, and per-endpoint task queues. [`Engine`]
//! carries out each operation of the PHP API in one short transaction.

pub mod batch;
pub mod clock;
pub mod db;
mod delivery;
mod due;
pub mod endpoint;
pub mod engine;
pub mod error;
mod holder;
pub mod hub;
pub mod id;
pub mod log;
mod meta;
pub mod protocol;
mod queue;
pub mod retry;
pub mod runtime;
pub mod scalar;
pub mod schedules;
pub mod sender;
pub mod settings;
mod shared_engine;
mod slots;
pub mod store;
pub mod target;
pub mod task;
pub mod when;

pub use engine::{
    Accepted, AfterTask, Deferred, Dispatch, Engine, Finished, Next, Stats, MAX_HISTORY_BUCKETS,
};
pub use error::{Error, Result};
pub use runtime::Outcome;
pub use scalar::Scalar;
pub use schedules::{ScheduleInfo, ScheduleOptions};
pub use settings::Settings;
pub use slots::{GRACE_MS, SENT_TTL_MS};
pub use store::sqlite::busy_naps;
pub use task::{Claimed, DeferOptions, State, TaskInfo, TaskSpec};
