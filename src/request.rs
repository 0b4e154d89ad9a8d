//! What the current web request says: `$_SERVER` values for `accept()` and
//! for the base URL of self-requests.

use async_engine_core::endpoint::parse_base_url;
use async_engine_core::protocol::{
    Incoming, HEADER_ACCEPTED, HEADER_SIGNATURE, HEADER_SLOT, HEADER_TIME,
};
use async_engine_core::target::Target;
use async_engine_core::target::{derive, local_port_of_connection, ServerVars};
use async_engine_core::Settings;
use ext_php_rs::ffi::zend_is_auto_global;
use ext_php_rs::types::{ZendHashTable, ZendStr};
use ext_php_rs::zend::{set_header, ExecutorGlobals, ProcessGlobals, SapiGlobals, SapiModule};

/// `$_SERVER` key of a request header.
fn server_key(header: &str) -> String {
    format!("HTTP_{}", header.to_ascii_uppercase().replace('-', "_"))
}

/// Makes sure `$_SERVER` exists: it is created on first use
/// (auto_globals_jit), and a script that never names it has none yet.
fn create_server_vars() {
    let mut name = ZendStr::new("_SERVER", false);
    // SAFETY: `name` outlives the call; the engine only reads it.
    unsafe { zend_is_auto_global(name.as_mut_ptr()) };
}

/// Calls `f` with the request's `$_SERVER`, as the script sees it (so CLI
/// scripts and tests that set entries are heard).
fn with_server<T>(f: impl FnOnce(Option<&ZendHashTable>) -> T) -> T {
    create_server_vars();
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

/// Tells the sender of this task request, in a response header, that it
/// accepted `slot` (verified, so the value is the engine's own), unless
/// output has started: the sender then reads the slot back instead.
pub fn say_accepted(slot: &str) {
    if SapiGlobals::get().headers_sent == 0 {
        let _ = set_header(&format!("{HEADER_ACCEPTED}: {slot}"));
    }
}

/// Where this request's self-requests go: the configured base URL, else
/// what the web server's own variables say (see
/// [`async_engine_core::target::derive`]), read as the SAPI set them, so a
/// script that copies `X-Forwarded-*` into `$_SERVER` changes nothing.
/// `None` outside a web request when no base URL is configured.
pub fn target(settings: &Settings) -> Option<Target> {
    if let Some(url) = &settings.base_url {
        return parse_base_url(url).ok().map(|base| Target {
            base,
            connect_to: None,
        });
    }
    create_server_vars();
    let vars = {
        let globals = ProcessGlobals::get();
        let server = globals.http_server_vars();
        ServerVars {
            sapi: sapi_name(),
            server_name: text(server, "SERVER_NAME"),
            server_addr: text(server, "SERVER_ADDR"),
            server_port: text(server, "SERVER_PORT"),
            remote_port: text(server, "REMOTE_PORT"),
            https: text(server, "HTTPS"),
        }
    };
    if vars.sapi == "cli" {
        return None;
    }
    derive(&vars, local_port_of_connection)
}

/// The SAPI module's name (`cli`, `fpm-fcgi`, `apache2handler`, ...).
fn sapi_name() -> String {
    let module = SapiModule::get();
    // SAFETY: the SAPI's name is a static C string set before any request.
    unsafe { module.name.as_ref() }
        .map(|n| {
            unsafe { std::ffi::CStr::from_ptr(n) }
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_default()
}

/// Whether this process serves web requests and outlives them (php-fpm,
/// mod_php, `php -S`), rather than running one CLI script. Read from the
/// SAPI module itself: at request shutdown the PHP_SAPI constant may already
/// be gone, which made CLI scripts skip waiting for their requests.
pub fn persistent_sapi() -> bool {
    !matches!(sapi_name().as_str(), "cli" | "phpdbg" | "embed")
}
