//! Where a web request's self-requests go, worked out only from what the
//! web server itself vouches for: never from a `Host` or `X-Forwarded-*`
//! header a client chose (docs/architecture.md, "Where requests go").

use crate::endpoint::{parse_base_url, BaseUrl};
use std::net::{IpAddr, SocketAddr};

/// Where self-requests go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The site's base URL: scheme, host (for the Host header and TLS) and port.
    pub base: BaseUrl,
    /// The address to connect to instead of resolving the host: this
    /// server's own address, so a forged Host header cannot send signed
    /// requests elsewhere. `None` for a configured base URL.
    pub connect_to: Option<SocketAddr>,
}

/// The web server's own variables of one request (`$_SERVER` as the SAPI
/// filled it, before any script could change it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerVars {
    /// The SAPI's name: `fpm-fcgi`, `apache2handler`, `cli-server`, ...
    pub sapi: String,
    /// `SERVER_NAME`.
    pub server_name: Option<String>,
    /// `SERVER_ADDR` (the local address of the connection).
    pub server_addr: Option<String>,
    /// `SERVER_PORT`.
    pub server_port: Option<String>,
    /// `REMOTE_PORT` (the client's port of the connection).
    pub remote_port: Option<String>,
    /// `HTTPS`.
    pub https: Option<String>,
}

fn ip(v: Option<&str>) -> Option<IpAddr> {
    v.and_then(|a| a.trim_matches(['[', ']']).parse::<IpAddr>().ok())
}

/// Where this request's self-requests go: the scheme, a host name the
/// server's configuration gave, and the address and port the request
/// arrived on.
///
/// - `cli-server` (`php -S`): `SERVER_NAME` and `SERVER_PORT` are its bind
///   address, set by PHP itself.
/// - `apache2handler` (mod_php): with Apache's default `UseCanonicalName
///   Off` both `SERVER_NAME` and `SERVER_PORT` come from the `Host` header,
///   so neither is used: the port is read from the connection's own socket
///   (`local_port`) and the host is the local address.
/// - FastCGI and the rest (php-fpm behind nginx): `SERVER_ADDR`,
///   `SERVER_PORT` and `SERVER_NAME` are the web server's (nginx passes
///   `$server_addr`, `$server_port`, `$server_name`).
///
/// `None` when the values are missing or unusable.
pub fn derive(
    vars: &ServerVars,
    local_port: impl FnOnce(IpAddr, u16) -> Option<u16>,
) -> Option<Target> {
    let https = vars
        .https
        .as_deref()
        .is_some_and(|h| !h.is_empty() && !h.eq_ignore_ascii_case("off"));
    let scheme = if https { "https" } else { "http" };
    // SERVER_NAME is a configured name (nginx's "_" and the like are no host name).
    let name = vars
        .server_name
        .clone()
        .filter(|n| !n.is_empty() && n != "_");
    let (addr, port, host) = match vars.sapi.as_str() {
        "apache2handler" => {
            let addr = ip(vars.server_addr.as_deref())?;
            let remote: u16 = vars.remote_port.as_deref()?.parse().ok()?;
            let port = local_port(addr, remote)?;
            (addr, port, None)
        }
        // php -S (no SERVER_ADDR: its bind address is SERVER_NAME), FastCGI.
        _ => {
            let port: u16 = vars.server_port.as_deref()?.parse().ok()?;
            let addr = ip(vars.server_addr.as_deref()).or_else(|| ip(name.as_deref()))?;
            (addr, port, name)
        }
    };
    let connect_to = SocketAddr::new(addr, port);
    let host = host.unwrap_or_else(|| addr.to_string());
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let base = parse_base_url(&format!("{scheme}://{host}:{port}"))
        .or_else(|_| parse_base_url(&format!("{scheme}://{connect_to}")))
        .ok()?;
    Some(Target {
        base,
        connect_to: Some(connect_to),
    })
}

/// The local port of this process's connection from `peer_port` that
/// arrived on `local_ip`: the socket is found among the process's open
/// file descriptors (mod_php serves the connection in this very process).
pub fn local_port_of_connection(local_ip: IpAddr, peer_port: u16) -> Option<u16> {
    let mut found = None;
    for entry in std::fs::read_dir("/proc/self/fd").ok()? {
        let Some(fd) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<i32>().ok())
        else {
            continue;
        };
        let (Some(local), Some(peer)) = (socket_addr(fd, false), socket_addr(fd, true)) else {
            continue;
        };
        if peer.port() == peer_port && same_ip(local.ip(), local_ip) {
            if found.is_some_and(|p| p != local.port()) {
                return None; // two candidates: trust neither
            }
            found = Some(local.port());
        }
    }
    found
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    canonical(a) == canonical(b)
}

/// The local (or, with `peer`, the remote) address of socket `fd`, if it
/// is a TCP/IP socket.
fn socket_addr(fd: i32, peer: bool) -> Option<SocketAddr> {
    // SAFETY: a zeroed sockaddr_storage is a valid buffer of the length given.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let ptr = &mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr;
    // SAFETY: ptr and len describe the buffer above; a bad fd only fails.
    let rc = unsafe {
        if peer {
            libc::getpeername(fd, ptr, &mut len)
        } else {
            libc::getsockname(fd, ptr, &mut len)
        }
    };
    if rc != 0 {
        return None;
    }
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the buffer holds a sockaddr_in.
            let a = unsafe { &*(ptr as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the buffer holds a sockaddr_in6.
            let a = unsafe { &*(ptr as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be(a.sin6_port)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn vars(sapi: &str) -> ServerVars {
        ServerVars {
            sapi: sapi.into(),
            server_name: Some("evil.example".into()),
            server_addr: Some("127.0.0.1".into()),
            server_port: Some("1".into()),
            remote_port: Some("40000".into()),
            https: None,
        }
    }

    #[test]
    fn mod_php_takes_the_port_from_the_socket_and_no_name_from_the_request() {
        let t = derive(&vars("apache2handler"), |_, remote| {
            assert_eq!(remote, 40000);
            Some(8080)
        })
        .unwrap();
        assert_eq!(t.base.origin(), "http://127.0.0.1:8080");
        assert_eq!(t.connect_to, Some("127.0.0.1:8080".parse().unwrap()));
        assert!(derive(&vars("apache2handler"), |_, _| None).is_none());
    }

    #[test]
    fn fastcgi_and_php_s_use_the_servers_own_values() {
        let mut v = vars("fpm-fcgi");
        v.server_name = Some("shop.example".into());
        v.server_port = Some("8443".into());
        v.https = Some("on".into());
        let t = derive(&v, |_, _| unreachable!()).unwrap();
        assert_eq!(t.base.origin(), "https://shop.example:8443");
        assert_eq!(t.connect_to, Some("127.0.0.1:8443".parse().unwrap()));
        let php_s = ServerVars {
            sapi: "cli-server".into(),
            server_name: Some("127.0.0.1".into()),
            server_port: Some("9000".into()),
            ..ServerVars::default()
        };
        assert_eq!(
            derive(&php_s, |_, _| None).unwrap().base.origin(),
            "http://127.0.0.1:9000"
        );
        assert!(derive(&ServerVars::default(), |_, _| None).is_none());
    }

    #[test]
    fn finds_the_local_port_of_an_open_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server_side, peer) = listener.accept().unwrap();
        assert_eq!(peer.port(), client.local_addr().unwrap().port());
        // This process holds both ends: the accepted socket's peer is the client.
        assert_eq!(
            local_port_of_connection("127.0.0.1".parse().unwrap(), peer.port()),
            Some(port)
        );
        assert_eq!(
            local_port_of_connection("127.0.0.1".parse().unwrap(), 1),
            None
        );
    }
}
