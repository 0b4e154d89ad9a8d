//! The `async_engine` PHP extension: a thin binding of the engine in
//! `async-engine-core` to PHP classes, ini settings and request hooks.

mod api;
mod convert;
mod errors;
mod ini;
mod process;
mod request;
mod shutdown;
mod task;

use ext_php_rs::prelude::*;
use ext_php_rs::zend::ModuleEntry;
use ext_php_rs::{info_table_end, info_table_row, info_table_start};

/// Registers the ini settings (module startup; opens nothing).
pub fn startup(_ty: i32, module_number: i32) -> i32 {
    ini::register(module_number);
    match errors::register() {
        Ok(()) => 0,
        Err(_) => -1,
    }
}

/// The extension's section of `phpinfo()`.
pub extern "C" fn module_info(_module: *mut ModuleEntry) {
    info_table_start!();
    info_table_row!("async_engine support", "enabled");
    info_table_row!("version", env!("CARGO_PKG_VERSION"));
    info_table_row!(
        "SQLite schema version",
        async_engine_core::store::SQLITE_SCHEMA_VERSION
            .to_string()
            .as_str()
    );
    info_table_row!(
        "PostgreSQL schema version",
        async_engine_core::store::PG_SCHEMA_VERSION
            .to_string()
            .as_str()
    );
    info_table_end!();
}

/// The module entry PHP loads.
#[php_module]
#[php(startup = "startup")]
pub fn get_module(module: ModuleBuilder) -> ModuleBuilder {
    module
        .name("async_engine")
        .class::<task::Task>()
        .class::<api::Engine>()
        .request_shutdown_function(shutdown::request_shutdown)
        .shutdown_function(shutdown::module_shutdown)
        .info_function(module_info)
}
