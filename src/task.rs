//! The `AsyncEngine\Task` class: a task claimed by this request.
#![allow(non_snake_case)] // the PHP parameter is $retryIn (docs/architecture.md, "PHP API")

use crate::convert::{json_to_array, Bytes};
use crate::errors::OrThrow;
use crate::process;
use async_engine_core::clock::now_ms;
use async_engine_core::{Claimed, Outcome};
use ext_php_rs::boxed::ZBox;
use ext_php_rs::flags::ClassFlags;
use ext_php_rs::prelude::*;
use ext_php_rs::types::ZendHashTable;

/// Longest error message `fail()` takes (it stores a clipped version).
const MAX_ERROR_INPUT: usize = 1024 * 1024;

/// A task this request claimed; its properties are read-only.
#[php_class]
#[php(name = "AsyncEngine\\Task")]
#[php(flags = ClassFlags::Final)]
pub struct Task {
    claimed: Claimed,
}

impl Task {
    /// Wraps a task the runtime claimed (and records as held) for this request.
    pub fn new(claimed: Claimed) -> Task {
        Task { claimed }
    }

    /// The claimed task.
    pub fn claimed(&self) -> &Claimed {
        &self.claimed
    }

    /// Ends the task (`Outcome::Done`, or this attempt failed) and lets it go.
    fn finish(&self, outcome: Outcome<'_>) -> async_engine_core::Result<()> {
        let settings = process::settings()?;
        process::with(|rt| rt.finish(&settings, &self.claimed, outcome, now_ms()))
    }
}

#[php_impl]
impl Task {
    /// The task id.
    #[php(getter)]
    pub fn get_id(&self) -> String {
        self.claimed.id.clone()
    }

    /// The endpoint path that runs it.
    #[php(getter)]
    pub fn get_endpoint(&self) -> String {
        self.claimed.endpoint.clone()
    }

    /// The task name given to `defer()`.
    #[php(getter)]
    pub fn get_name(&self) -> String {
        self.claimed.name.clone()
    }

    /// The args given to `defer()`.
    #[php(getter)]
    pub fn get_args(&self) -> PhpResult<ZBox<ZendHashTable>> {
        json_to_array(&self.claimed.args)
    }

    /// This attempt's number, from 1.
    #[php(getter)]
    pub fn get_attempt(&self) -> i64 {
        i64::from(self.claimed.attempt)
    }

    /// Marks the task done.
    pub fn complete(&self) -> PhpResult<()> {
        self.finish(Outcome::Done).or_throw()
    }

    /// Fails this attempt with `error`; the task retries after `retryIn`
    /// seconds (default: exponential backoff) or is dead when its attempts are spent.
    pub fn fail(&self, error: Bytes, retryIn: Option<f64>) -> PhpResult<()> {
        let error = error.text("error", MAX_ERROR_INPUT)?;
        let outcome = Outcome::Failed {
            error,
            retry_in: retryIn,
        };
        self.finish(outcome).or_throw()
    }

    /// Lengthens the lease so it ends `seconds` from now.
    pub fn extend(&self, seconds: f64) -> PhpResult<()> {
        let settings = process::settings().or_throw()?;
        let c = &self.claimed;
        process::engine(&settings, |e| e.extend(&c.id, &c.lease, seconds, now_ms())).or_throw()
    }
}
