//! The `async_engine.*` php.ini settings.

use async_engine_core::settings::SETTING_NAMES;
use async_engine_core::{Scalar, Settings};
use ext_php_rs::ffi::{zend_ini_entry, zend_string};
use ext_php_rs::flags::IniEntryPermission;
use ext_php_rs::zend::{ExecutorGlobals, IniEntryDef, IniEntryDefs};
use std::ffi::{c_int, c_void, CStr};
use std::sync::atomic::{AtomicU64, Ordering};

/// `async_engine.<name>` as a C string, at compile time.
const fn ini_name(name_nul: &'static str) -> &'static CStr {
    match CStr::from_bytes_with_nul(name_nul.as_bytes()) {
        Ok(name) => name,
        Err(_) => panic!("a setting name holds a NUL byte"),
    }
}

/// How many times PHP has set one of the entries: at startup, by
/// `ini_set()` or `ini_restore()`, per-directory values (`.user.ini`,
/// `php_value`), and their restoring at request end.
static CHANGES: AtomicU64 = AtomicU64::new(0);

/// The entries' `on_modify` handler: counts the change and accepts the
/// value (settings are checked when they are read, with a clear error).
unsafe extern "C" fn count_change(
    _entry: *mut zend_ini_entry,
    _value: *mut zend_string,
    _arg1: *mut c_void,
    _arg2: *mut c_void,
    _arg3: *mut c_void,
    _stage: c_int,
) -> c_int {
    CHANGES.fetch_add(1, Ordering::Relaxed);
    0 // SUCCESS
}

/// The number of changes PHP has made to the entries so far: settings read
/// at one count hold until it moves.
pub fn changes() -> u64 {
    CHANGES.load(Ordering::Relaxed)
}

/// An entry whose changes are counted.
const fn entry(name: &'static CStr) -> IniEntryDef {
    let mut def = IniEntryDef::new(name, c"", IniEntryPermission::All);
    def.on_modify = Some(count_change);
    def
}

macro_rules! ini_entries {
    ($($name:ident),*) => {
        IniEntryDefs::new([
            $(entry(ini_name(concat!("async_engine.", stringify!($name), "\0"))),)*
            IniEntryDef::end(),
        ])
    };
}

/// One entry per setting, all empty: an empty value means the built-in default.
static INI_ENTRIES: IniEntryDefs<{ SETTING_NAMES.len() + 1 }> =
    async_engine_core::with_setting_names!(ini_entries);

/// Registers the ini entries (module startup).
pub fn register(module_number: i32) {
    IniEntryDef::register(INI_ENTRIES.as_slice(), module_number);
}

/// The current value of ini setting `name`, if set and not empty.
fn ini_value(globals: &ExecutorGlobals, name: &str) -> Option<String> {
    // SAFETY: EG(ini_directives) is valid while a request runs; entries are
    // zend_ini_entry pointers owned by the table.
    let table = unsafe { globals.ini_directives.as_ref() }?;
    let zval = table.get(name)?;
    let entry = unsafe { zval.ptr::<zend_ini_entry>().and_then(|e| e.as_ref()) }?;
    let value = unsafe { entry.value.as_ref() }?;
    let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
    (!text.is_empty()).then_some(text)
}

/// The settings in effect: ini values, then `overrides` from `Engine::configure()`.
pub fn settings(overrides: &[(String, Scalar)]) -> async_engine_core::Result<Settings> {
    let mut settings = Settings::default();
    {
        let globals = ExecutorGlobals::get();
        for name in SETTING_NAMES {
            if let Some(value) = ini_value(&globals, &format!("async_engine.{name}")) {
                settings.set(name, &Scalar::Str(value)).map_err(|e| {
                    async_engine_core::Error::Usage(format!("php.ini async_engine.{name}: {e}"))
                })?;
            }
        }
    }
    for (name, value) in overrides {
        settings.set(name, value)?;
    }
    Ok(settings)
}

/// PHP's own `error_log` setting (where PHP writes its log), if set.
pub fn error_log() -> Option<String> {
    ini_value(&ExecutorGlobals::get(), "error_log")
}
