//! What the current web request says: `$_SERVER` values for `accept()` and
//! for the base URL of self-requests.

use async_engine_core::endpoint::{parse_base_url, BaseUrl};
use async_engine_core::protocol::{Incoming, HEADER_SIGNATURE, HEADER_SLOT, HEADER_TIME};
use async_engine_core::Settings;
use ext_php_rs::ffi::zend_is_auto_global;
use ext_php_rs::types::{ZendHashTable, ZendStr};
use ext_php_rs::zend::{ExecutorGlobals, ProcessGlobals};

/// `$_SERVER` key of a request header.
fn server_key(header: &str) -> String {
    format!("HTTP_{}", header.to_ascii_uppercase().replace('-', "_"))
}

/// Calls `f` with the request's `$_SERVER`, as the script sees it (so CLI
/// scripts and tests that set entries are heard).
fn with_server<T>(f: impl FnOnce(Option<&ZendHashTable>) -> T) -> T {
    // $_SERVER is created on first use (auto_globals_jit): make sure it exists.
    let mut name = ZendStr::new("_SERVER", false);
    // SAFETY: `name` outlives the call; the engine only reads it.
    unsafe { zend_is_auto_global(name.as_mut_ptr()) };
    let globals = ExecutorGlobals::get();
    let own = globals
        .symbol_table
        .get("_SERVER")
        .map(|z| z.indirect().unwrap_or(z).dereference())
        .and_then(|z| z.array());
    if own.is_some() {
        return f(own);
    }
    drop(globals);
    f(ProcessGlobals::get().http_server_vars())
}

fn text(server: Option<&ZendHashTable>, key: &str) -> Option<String> {
    server?
        .get(key)
        .and_then(|z| z.dereference().zend_str())
        .map(|s| String::from_utf8_lossy(s.as_bytes()).into_owned())
}

/// The request as `accept()` checks it.
pub fn incoming() -> Incoming {
    with_server(|server| Incoming {
        method: text(server, "REQUEST_METHOD").unwrap_or_default(),
        uri: text(server, "REQUEST_URI").unwrap_or_default(),
        slot: text(server, &server_key(HEADER_SLOT)),
        time: text(server, &server_key(HEADER_TIME)),
        signature: text(server, &server_key(HEADER_SIGNATURE)),
    })
}

/// The base URL: the setting, else this web request's scheme, server name
/// and port (never the client's Host header). `None` on the CLI.
pub fn base_url(settings: &Settings) -> Option<BaseUrl> {
    if let Some(url) = &settings.base_url {
        return parse_base_url(url).ok();
    }
    with_server(|server| {
        let name = text(server, "SERVER_NAME").filter(|n| !n.is_empty())?;
        let port = text(server, "SERVER_PORT").unwrap_or_default();
        let https = text(server, "HTTPS").is_some_and(|h| !h.is_empty() && h != "off");
        let scheme = if https { "https" } else { "http" };
        let host = if name.contains(':') && !name.starts_with('[') {
            format!("[{name}]")
        } else {
            name
        };
        let url = if port.is_empty() {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}:{port}")
        };
        parse_base_url(&url).ok()
    })
}
