//! The extension's exception classes and the mapping from core errors.
//!
//! They are plain PHP classes (no Rust object behind them), so they keep
//! `\Exception`'s constructor and can be thrown and extended from PHP too.

use async_engine_core::Error;
use ext_php_rs::builders::ClassBuilder;
use ext_php_rs::exception::PhpException;
use ext_php_rs::prelude::*;
use ext_php_rs::zend::ClassEntry;
use std::sync::atomic::{AtomicPtr, Ordering};

extern "C" {
    /// SPL's class entry for `\RuntimeException`, exported by the PHP binary.
    static spl_ce_RuntimeException: *mut ClassEntry;
}

/// `\RuntimeException`; SPL is built into PHP and starts before any loaded extension.
fn runtime_exception() -> &'static ClassEntry {
    // SAFETY: set during SPL's module startup and never freed before shutdown.
    unsafe { spl_ce_RuntimeException.as_ref() }.expect("SPL registers RuntimeException at startup")
}

static ENGINE_EXCEPTION: AtomicPtr<ClassEntry> = AtomicPtr::new(std::ptr::null_mut());
static INVALID_TASK: AtomicPtr<ClassEntry> = AtomicPtr::new(std::ptr::null_mut());
static REQUEST_REJECTED: AtomicPtr<ClassEntry> = AtomicPtr::new(std::ptr::null_mut());
static STORAGE_ERROR: AtomicPtr<ClassEntry> = AtomicPtr::new(std::ptr::null_mut());
static QUEUE_FULL: AtomicPtr<ClassEntry> = AtomicPtr::new(std::ptr::null_mut());

fn get(slot: &AtomicPtr<ClassEntry>) -> &'static ClassEntry {
    // SAFETY: class entries registered at module startup live until shutdown.
    unsafe { slot.load(Ordering::Acquire).as_ref() }.unwrap_or_else(runtime_exception)
}

fn engine_exception() -> &'static ClassEntry {
    get(&ENGINE_EXCEPTION)
}

/// Registers `AsyncEngine\EngineException` and its four subclasses (module startup).
pub fn register() -> ext_php_rs::error::Result<()> {
    fn class(
        name: &str,
        parent: (fn() -> &'static ClassEntry, &'static str),
        register: fn(&'static mut ClassEntry, ext_php_rs::args::ArgInfoTables),
    ) -> ext_php_rs::error::Result<()> {
        ClassBuilder::new(name)
            .extends(parent)
            .registration(register)
            .register()
    }
    class(
        "AsyncEngine\\EngineException",
        (runtime_exception, "RuntimeException"),
        |ce, _| ENGINE_EXCEPTION.store(ce, Ordering::Release),
    )?;
    let parent = (
        engine_exception as fn() -> &'static ClassEntry,
        "AsyncEngine\\EngineException",
    );
    class("AsyncEngine\\InvalidTask", parent, |ce, _| {
        INVALID_TASK.store(ce, Ordering::Release)
    })?;
    class("AsyncEngine\\RequestRejected", parent, |ce, _| {
        REQUEST_REJECTED.store(ce, Ordering::Release)
    })?;
    class("AsyncEngine\\StorageError", parent, |ce, _| {
        STORAGE_ERROR.store(ce, Ordering::Release)
    })?;
    class("AsyncEngine\\QueueFull", parent, |ce, _| {
        QUEUE_FULL.store(ce, Ordering::Release)
    })
}

/// Converts a core error to the PHP exception of its kind.
pub fn to_php(e: Error) -> PhpException {
    let class = match &e {
        Error::InvalidTask(_) => &INVALID_TASK,
        Error::Rejected(_) => &REQUEST_REJECTED,
        Error::Storage(_) => &STORAGE_ERROR,
        Error::QueueFull(_) => &QUEUE_FULL,
        Error::Usage(_) | Error::NotHeld(_) => &ENGINE_EXCEPTION,
    };
    // PHP cannot throw a message holding a NUL byte (a task or setting name
    // from user input may): it is shown escaped instead.
    PhpException::new(e.message().replace('\0', "\\0"), 0, get(class))
}

/// An `InvalidTask` exception with `message`.
pub fn invalid(message: String) -> PhpException {
    to_php(Error::InvalidTask(message))
}

/// Shorthand: run a core operation, throwing its error as a PHP exception.
pub trait OrThrow<T> {
    /// Maps the error to its PHP exception.
    fn or_throw(self) -> PhpResult<T>;
}

impl<T> OrThrow<T> for async_engine_core::Result<T> {
    fn or_throw(self) -> PhpResult<T> {
        self.map_err(to_php)
    }
}
