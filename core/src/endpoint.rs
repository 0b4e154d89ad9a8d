//! Endpoints (paths on this site that run tasks) and the base URL they hang off.

use crate::error::{invalid, Error, Result};

/// Longest accepted endpoint, in bytes.
pub const MAX_ENDPOINT_LEN: usize = 2048;

/// A base URL split into its parts: `scheme://host[:port]`, no path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BaseUrl {
    /// `http` or `https`, lowercase.
    pub scheme: String,
    /// Host name or address, lowercase, IPv6 in brackets.
    pub host: String,
    /// The port, explicit or the scheme's default.
    pub port: u16,
}

impl BaseUrl {
    /// `scheme://host:port` with the default port left out.
    pub fn origin(&self) -> String {
        let default = if self.scheme == "https" { 443 } else { 80 };
        if self.port == default {
            format!("{}://{}", self.scheme, self.host)
        } else {
            format!("{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// Splits `scheme://authority` off `url`; returns (scheme, authority, rest).
fn split_absolute(url: &str) -> Option<(String, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some((
        scheme.to_ascii_lowercase(),
        &rest[..authority_end],
        &rest[authority_end..],
    ))
}

fn parse_authority(scheme: &str, authority: &str) -> Option<(String, u16)> {
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let default = if scheme == "https" { 443 } else { 80 };
    let (host, port) = if let Some(end) = authority.strip_prefix('[').and_then(|a| a.find(']')) {
        let host = &authority[..end + 2];
        match &authority[end + 2..] {
            "" => (host, default),
            p => (host, p.strip_prefix(':')?.parse().ok()?),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (authority, default),
        }
    };
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_[]:".contains(&b));
    valid.then(|| (host.to_ascii_lowercase(), port))
}

/// Parses a base URL: `http(s)://host[:port]`, optionally with a trailing `/`.
pub fn parse_base_url(url: &str) -> Result<BaseUrl> {
    let bad = |why: &str| {
        Error::Usage(format!(
            "setting 'base_url' must be like 'https://example.com' or 'http://127.0.0.1:8080' \
             ({why}), got '{url}'"
        ))
    };
    let (scheme, authority, rest) = split_absolute(url).ok_or_else(|| bad("no scheme"))?;
    if scheme != "http" && scheme != "https" {
        return Err(bad("scheme must be http or https"));
    }
    if !rest.is_empty() && rest != "/" {
        return Err(bad(
            "no path, query or fragment: endpoints are paths from the site root",
        ));
    }
    let (host, port) =
        parse_authority(&scheme, authority).ok_or_else(|| bad("bad host or port"))?;
    Ok(BaseUrl { scheme, host, port })
}

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%?".contains(&b)
}

/// Checks an endpoint and returns it as a path from the site root.
///
/// An absolute URL is accepted only when its origin is `base` (then its path
/// is kept); anything else that is not a plain path is refused.
pub fn normalize_endpoint(endpoint: &str, base: Option<&BaseUrl>) -> Result<String> {
    if endpoint.is_empty() {
        return Err(invalid!(
            "endpoint is empty; use a path on this site such as '/worker.php'"
        ));
    }
    if endpoint.len() > MAX_ENDPOINT_LEN {
        return Err(invalid!(
            "endpoint is {} bytes long; the limit is {MAX_ENDPOINT_LEN}",
            endpoint.len()
        ));
    }
    let lower = endpoint.to_ascii_lowercase();
    let path = if lower.starts_with("//") || lower.contains("://") {
        let other = || {
            invalid!(
                "endpoint '{endpoint}' is an absolute URL to another origin{}; \
                 tasks only run on this site: use a path such as '/worker.php'",
                base.map(|b| format!(" (this site is {})", b.origin()))
                    .unwrap_or_default()
            )
        };
        let (scheme, authority, rest) = split_absolute(endpoint).ok_or_else(other)?;
        let (host, port) = parse_authority(&scheme, authority).ok_or_else(other)?;
        match base {
            Some(b) if b.scheme == scheme && b.host == host && b.port == port => {
                if rest.is_empty() {
                    "/"
                } else {
                    rest
                }
            }
            _ => return Err(other()),
        }
    } else {
        endpoint
    };
    if !path.starts_with('/') {
        return Err(invalid!(
            "endpoint '{endpoint}' is not a path; use a path on this site such as '/worker.php'"
        ));
    }
    let bytes = path.as_bytes();
    if let Some(pos) = bytes.iter().position(|b| !is_path_byte(*b)) {
        let shown: String = path[pos..]
            .chars()
            .next()
            .map(|c| c.escape_default().to_string())
            .unwrap_or_default();
        return Err(invalid!(
            "endpoint '{}' contains '{shown}', which is not allowed in a URL path (percent-encode it)",
            endpoint.escape_default()
        ));
    }
    for (i, _) in path.match_indices('%') {
        let ok = bytes.len() > i + 2
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit();
        if !ok {
            return Err(invalid!(
                "endpoint '{endpoint}' has a '%' that is not followed by two hex digits"
            ));
        }
    }
    let only_path = path.split('?').next().unwrap_or(path);
    if only_path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(invalid!(
            "endpoint '{endpoint}' contains a '.' or '..' segment; give the path as served"
        ));
    }
    Ok(path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> BaseUrl {
        parse_base_url("https://Example.com/").unwrap()
    }

    #[test]
    fn plain_paths_pass_unchanged() {
        for p in ["/worker.php", "/_async/run", "/a/b?queue=x&y=%20", "/"] {
            assert_eq!(normalize_endpoint(p, None).unwrap(), p);
        }
    }

    #[test]
    fn same_origin_urls_become_paths() {
        let b = base();
        assert_eq!(
            normalize_endpoint("https://example.com:443/w.php", Some(&b)).unwrap(),
            "/w.php"
        );
        assert_eq!(
            normalize_endpoint("HTTPS://EXAMPLE.COM", Some(&b)).unwrap(),
            "/"
        );
    }

    #[test]
    fn refuses_everything_else_with_a_reason() {
        let b = base();
        let cases = [
            ("", "empty"),
            ("worker.php", "not a path"),
            ("https://evil.com/x", "another origin"),
            ("http://example.com/x", "another origin"),
            ("https://example.com:8443/x", "another origin"),
            ("//evil.com/x", "another origin"),
            ("javascript://x", "another origin"),
            ("/a b", "not allowed"),
            ("/a#frag", "not allowed"),
            ("/a\nb", "not allowed"),
            ("/é", "not allowed"),
            ("/a%2", "hex digits"),
            ("/a/../b", "segment"),
        ];
        for (endpoint, why) in cases {
            let err = normalize_endpoint(endpoint, Some(&b)).unwrap_err();
            assert!(matches!(err, Error::InvalidTask(_)));
            assert!(err.message().contains(why), "{endpoint:?}: {err}");
        }
        let long = format!("/{}", "a".repeat(MAX_ENDPOINT_LEN));
        assert!(normalize_endpoint(&long, None)
            .unwrap_err()
            .message()
            .contains("limit"));
        assert!(normalize_endpoint("https://example.com/x", None).is_err());
    }

    #[test]
    fn base_urls() {
        let b = parse_base_url("http://127.0.0.1:8080").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("127.0.0.1", 8080));
        assert_eq!(b.origin(), "http://127.0.0.1:8080");
        let v6 = parse_base_url("http://[::1]:81/").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", 81));
        assert_eq!(base().origin(), "https://example.com");
        for bad in [
            "example.com",
            "ftp://x",
            "http://",
            "http://x/app",
            "http://u@x",
            "http://x:port",
        ] {
            assert!(parse_base_url(bad).is_err(), "{bad}");
        }
    }
}
