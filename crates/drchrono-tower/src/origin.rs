//! Origin pinning: the access token goes only to the configured API origin (scheme, host,
//! port).

use std::fmt;
use std::net::IpAddr;

use http::Uri;
use http::uri::{PathAndQuery, Scheme};

/// A URL outside the configured API origin: the refused origin, never a path or query.
///
/// [`DrChronoClient`](crate::DrChronoClient) attaches the access token to every request it
/// sends, so it sends only to the scheme, host and port of its base URL; the client turns
/// this into [`DrChronoError::ForeignOrigin`](crate::DrChronoError::ForeignOrigin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) origin: String,
    pub(crate) expected: String,
}

/// The configured API origin.
#[derive(Debug, Clone)]
pub(crate) struct ApiOrigin {
    scheme: Scheme,
    authority: http::uri::Authority,
    host: String,
    port: u16,
    default_port: bool,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        s if s.eq_ignore_ascii_case("https") => Some(443),
        s if s.eq_ignore_ascii_case("http") => Some(80),
        _ => None,
    }
}

fn is_http(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
}

/// `scheme://host[:port]` of `uri`, without user information, path or query.
fn origin_of(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("");
    let host = uri.host().unwrap_or("");
    match uri.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

impl ApiOrigin {
    /// The origin of `base`, an absolute `http` or `https` URL (checked by the builder).
    pub(crate) fn new(base: &Uri) -> Self {
        let scheme = base.scheme().cloned().unwrap_or(Scheme::HTTPS);
        let explicit = base.port_u16();
        let default = default_port(scheme.as_str()).unwrap_or(443);
        Self {
            authority: base
                .authority()
                .cloned()
                .unwrap_or_else(|| http::uri::Authority::from_static("app.drchrono.com")),
            host: base.host().unwrap_or("").to_ascii_lowercase(),
            port: explicit.unwrap_or(default),
            default_port: explicit.is_none_or(|p| p == default),
            scheme,
        }
    }

    /// `uri` if it is on the API origin; rewritten to the configured scheme and authority if
    /// it differs only by `http` against `https` on the same host, on the default ports or
    /// on the configured port; otherwise refused.
    pub(crate) fn pin(&self, uri: Uri) -> Result<Uri, Refused> {
        let scheme = uri.scheme_str().unwrap_or("");
        let same_host = uri
            .host()
            .is_some_and(|host| host.eq_ignore_ascii_case(&self.host));
        if same_host && is_http(scheme) {
            let explicit = uri.port_u16();
            let port = explicit.or_else(|| default_port(scheme));
            if scheme.eq_ignore_ascii_case(self.scheme.as_str()) {
                if port == Some(self.port) {
                    // User information (`https://user:secret@host/`) is dropped: the
                    // configured authority has none.
                    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
                        return Ok(self.rewrite(&uri));
                    }
                    return Ok(uri);
                }
            } else {
                let on_default = explicit.is_none_or(|p| Some(p) == default_port(scheme));
                if (on_default && self.default_port) || explicit == Some(self.port) {
                    return Ok(self.rewrite(&uri));
                }
            }
        }
        Err(Refused {
            origin: origin_of(&uri),
            expected: self.to_string(),
        })
    }

    /// `uri`'s path and query on the API origin.
    fn rewrite(&self, uri: &Uri) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(
            uri.path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).expect("scheme, authority and path of valid URIs")
    }
}

impl fmt::Display for ApiOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.default_port {
            write!(f, "{}://{}", self.scheme, self.host)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// Whether `host` (as in a URI: IPv6 in brackets) names the loopback interface:
/// `localhost`, 127.0.0.0/8 or `::1` (also IPv4-mapped).
pub(crate) fn is_loopback(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(base: &str) -> ApiOrigin {
        ApiOrigin::new(&base.parse().unwrap())
    }

    fn pin(base: &str, uri: &str) -> Result<String, String> {
        origin(base)
            .pin(uri.parse().unwrap())
            .map(|u| u.to_string())
            .map_err(|e| e.origin)
    }

    #[test]
    fn the_same_origin_passes_untouched() {
        let base = "https://app.drchrono.com";
        for uri in [
            "https://app.drchrono.com/api/patients?page=2",
            "https://APP.drchrono.com/api/patients",
            "https://app.drchrono.com:443/api/patients",
        ] {
            assert_eq!(pin(base, uri), Ok(uri.to_owned()), "{uri}");
        }
        assert_eq!(
            pin("http://127.0.0.1:8080", "http://127.0.0.1:8080/api/x"),
            Ok("http://127.0.0.1:8080/api/x".to_owned())
        );
    }

    #[test]
    fn user_information_on_the_same_origin_is_dropped() {
        assert_eq!(
            pin(
                "https://app.drchrono.com",
                "https://user:secret@app.drchrono.com/api/x?a=1"
            ),
            Ok("https://app.drchrono.com/api/x?a=1".to_owned())
        );
        // On another host it is refused, the user information not shown.
        assert_eq!(
            pin(
                "https://app.drchrono.com",
                "https://app.drchrono.com@evil.example/"
            ),
            Err("https://evil.example".to_owned())
        );
    }

    #[test]
    fn http_on_the_same_host_is_upgraded_to_the_configured_scheme() {
        let base = "https://app.drchrono.com";
        for uri in [
            "http://app.drchrono.com/api/patients?cursor=5&page_size=5",
            "http://app.drchrono.com:80/api/patients?cursor=5&page_size=5",
            "http://app.drchrono.com:443/api/patients?cursor=5&page_size=5",
        ] {
            assert_eq!(
                pin(base, uri),
                Ok("https://app.drchrono.com/api/patients?cursor=5&page_size=5".to_owned()),
                "{uri}"
            );
        }
        assert_eq!(
            pin("https://api.test:8443", "http://api.test:8443/x"),
            Ok("https://api.test:8443/x".to_owned())
        );
    }

    #[test]
    fn other_origins_are_refused_without_their_path_or_query() {
        let base = "https://app.drchrono.com";
        for (uri, refused) in [
            (
                "http://evil.example/api/patients?cursor=5",
                "http://evil.example",
            ),
            ("https://evil.example/api", "https://evil.example"),
            (
                "https://app.drchrono.com.evil.example/",
                "https://app.drchrono.com.evil.example",
            ),
            (
                "https://app.drchrono.com:8443/api",
                "https://app.drchrono.com:8443",
            ),
            (
                "http://app.drchrono.com:8080/api",
                "http://app.drchrono.com:8080",
            ),
            (
                "https://user:pw@evil.example/?q=Jane",
                "https://evil.example",
            ),
            ("ftp://app.drchrono.com/api", "ftp://app.drchrono.com"),
        ] {
            assert_eq!(pin(base, uri), Err(refused.to_owned()), "{uri}");
        }
        let error = origin(base)
            .pin(
                "http://evil.example/api/patients?first_name=Jane"
                    .parse()
                    .unwrap(),
            )
            .unwrap_err();
        let text = format!("{error:?}");
        assert!(!text.contains("Jane") && !text.contains("/api"), "{text}");
        assert_eq!(error.origin, "http://evil.example");
        assert_eq!(error.expected, "https://app.drchrono.com");
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST",
            "localhost.",
            "127.0.0.1",
            "127.8.9.1",
            "[::1]",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "app.drchrono.com",
            "10.0.0.1",
            "localhost.evil.example",
            "[::2]",
            "128.0.0.1",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
