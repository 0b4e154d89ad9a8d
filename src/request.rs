//! What the current web request says: `$_SERVER` values for `accept()` and
//! for the base URL of self-requests.

use async_engine_core::dispatch::Target;
use async_engine_core::endpoint::parse_base_url;
use async_engine_core::protocol::{Incoming, HEADER_SIGNATURE, HEADER_SLOT, HEADER_TIME};
use async_engine_core::Settings;
use ext_php_rs::ffi::zend_is_auto_global;
use ext_php_rs::types::{ZendHashTable, ZendStr};
use ext_php_rs::zend::{ExecutorGlobals, ProcessGlobals, SapiModule};
use std::net::{IpAddr, SocketAddr};

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

/// Where this request's self-requests go: the configured base URL, else the
/// web request's scheme, server name and port, connecting to the server's
/// own address (`SERVER_ADDR`), never to a host the client's Host header
/// named. `None` outside a web request when no base URL is configured.
pub fn target(settings: &Settings) -> Option<Target> {
    if let Some(url) = &settings.base_url {
        return parse_base_url(url).ok().map(|base| Target {
            base,
            connect_to: None,
        });
    }
    with_server(|server| {
        let port: u16 = text(server, "SERVER_PORT")?.parse().ok()?;
        let https = text(server, "HTTPS").is_some_and(|h| !h.is_empty() && h != "off");
        let scheme = if https { "https" } else { "http" };
        let ip =
            |v: Option<String>| v.and_then(|a| a.trim_matches(['[', ']']).parse::<IpAddr>().ok());
        // SERVER_NAME is the server's configured name (nginx "_" and the
        // like are no host name); php -S gives its bind address there and
        // no SERVER_ADDR.
        let name = text(server, "SERVER_NAME").filter(|n| !n.is_empty() && n != "_");
        let addr = ip(text(server, "SERVER_ADDR")).or_else(|| ip(name.clone()))?;
        let host = name.unwrap_or_else(|| addr.to_string());
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        let base = parse_base_url(&format!("{scheme}://{host}:{port}"))
            .or_else(|_| parse_base_url(&format!("{scheme}://{}", SocketAddr::new(addr, port))))
            .ok()?;
        Some(Target {
            base,
            connect_to: Some(SocketAddr::new(addr, port)),
        })
    })
}

/// Whether this process serves web requests and outlives them (php-fpm,
/// mod_php, `php -S`), rather than running one CLI script. Read from the
/// SAPI module itself: at request shutdown the PHP_SAPI constant may already
/// be gone, which made CLI scripts skip waiting for their requests.
pub fn persistent_sapi() -> bool {
    let module = SapiModule::get();
    // SAFETY: the SAPI's name is a static C string set before any request.
    let name = unsafe { module.name.as_ref() }
        .map(|n| unsafe { std::ffi::CStr::from_ptr(n) }.to_bytes().to_vec())
        .unwrap_or_default();
    !matches!(name.as_slice(), b"cli" | b"phpdbg" | b"embed")
}
