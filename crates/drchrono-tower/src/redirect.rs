//! Redirects: followed on the API origin, returned to the caller anywhere else.

use bytes::Bytes;
use drchrono_core::RequestPayload;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION, TRANSFER_ENCODING};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;

use crate::origin::ApiOrigin;

/// How many redirects one request follows by default: 5.
pub(crate) const DEFAULT_MAX_REDIRECTS: usize = 5;

/// A copy of `request` to send again (the body is reference-counted bytes).
pub(crate) fn copy(request: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut copy = Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    copy
}

/// The request that follows `response`, an answer to `previous`; `None` when it is not
/// followed: not a redirect, no usable `Location`, or a `Location` outside the API origin
/// (a cross-origin redirect is returned to the caller, never followed with the token).
///
/// 301, 302, 307 and 308 are replayed with the same method, headers and body: DrChrono
/// documents replaying a 302, and `307`/`308` require it (browsers turn a redirected `POST`
/// into a `GET` after a 301 or 302; an API client that did so would lose the payload).
/// A 303 ("See Other") becomes a `GET` without a body (a `HEAD` stays a `HEAD`).
pub(crate) fn follow(
    origin: &ApiOrigin,
    mut previous: Request<Full<Bytes>>,
    response: &Response<Bytes>,
) -> Option<Request<Full<Bytes>>> {
    let status = response.status();
    let see_other = match status {
        StatusCode::MOVED_PERMANENTLY
        | StatusCode::FOUND
        | StatusCode::TEMPORARY_REDIRECT
        | StatusCode::PERMANENT_REDIRECT => false,
        StatusCode::SEE_OTHER => true,
        _ => return None,
    };
    let location = response.headers().get(LOCATION)?.to_str().ok()?;
    let target = resolve(previous.uri(), location)?;
    let target = match origin.pin(target) {
        Ok(target) => target,
        Err(refused) => {
            tracing::debug!(
                status = status.as_u16(),
                origin = %refused.origin,
                "cross-origin redirect returned unfollowed",
            );
            return None;
        }
    };
    *previous.uri_mut() = target;
    if see_other {
        if previous.method() != Method::HEAD {
            *previous.method_mut() = Method::GET;
        }
        *previous.body_mut() = Full::new(Bytes::new());
        let headers = previous.headers_mut();
        headers.remove(CONTENT_TYPE);
        headers.remove(CONTENT_LENGTH);
        headers.remove(TRANSFER_ENCODING);
        previous.extensions_mut().remove::<RequestPayload>();
    }
    Some(previous)
}

/// `location` resolved against `base` (RFC 3986 §5.2, without dot-segment removal, which
/// the server does).
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    if has_scheme(location) {
        let target: Uri = location.parse().ok()?;
        return target.scheme().is_some().then_some(target);
    }
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    let joined = if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else if location.starts_with('?') {
        format!("{scheme}://{authority}{}{location}", base.path())
    } else {
        let path = base.path();
        let directory = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let directory = if directory.is_empty() { "/" } else { directory };
        format!("{scheme}://{authority}{directory}{location}")
    };
    joined.parse().ok()
}

/// Whether `reference` starts with `scheme ":"` (RFC 3986 §3.1).
fn has_scheme(reference: &str) -> bool {
    let Some((scheme, _)) = reference.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> ApiOrigin {
        ApiOrigin::new(&"https://app.drchrono.com".parse().unwrap())
    }

    fn redirect(status: u16, location: &str) -> Response<Bytes> {
        Response::builder()
            .status(status)
            .header(LOCATION, location)
            .body(Bytes::new())
            .unwrap()
    }

    fn post() -> Request<Full<Bytes>> {
        Request::post("https://app.drchrono.com/api/appointments")
            .header(CONTENT_TYPE, "application/json")
            .extension(RequestPayload(Bytes::from_static(b"{}")))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap()
    }

    #[test]
    fn locations_resolve_against_the_request() {
        let base: Uri = "https://app.drchrono.com/api/patients/7?x=1"
            .parse()
            .unwrap();
        for (location, expected) in [
            (
                "/api/v2/patients/7",
                "https://app.drchrono.com/api/v2/patients/7",
            ),
            ("8", "https://app.drchrono.com/api/patients/8"),
            ("?x=2", "https://app.drchrono.com/api/patients/7?x=2"),
            (
                "/next?to=http://x",
                "https://app.drchrono.com/next?to=http://x",
            ),
            ("//other.example/a", "https://other.example/a"),
            ("http://other.example/b", "http://other.example/b"),
        ] {
            assert_eq!(
                resolve(&base, location).unwrap().to_string(),
                expected,
                "{location}"
            );
        }
    }

    #[test]
    fn methods_and_bodies_by_status() {
        for status in [301, 302, 307, 308] {
            let next = follow(&origin(), post(), &redirect(status, "/api/appointments/")).unwrap();
            assert_eq!(next.method(), Method::POST, "{status}");
            assert_eq!(next.uri(), "https://app.drchrono.com/api/appointments/");
            assert!(next.headers().contains_key(CONTENT_TYPE));
            assert!(next.extensions().get::<RequestPayload>().is_some());
        }
        let next = follow(&origin(), post(), &redirect(303, "/api/appointments/9")).unwrap();
        assert_eq!(next.method(), Method::GET);
        assert!(!next.headers().contains_key(CONTENT_TYPE));
        assert!(next.extensions().get::<RequestPayload>().is_none());
    }

    #[test]
    fn only_same_origin_redirects_are_followed() {
        assert!(follow(&origin(), post(), &redirect(302, "https://evil.example/x")).is_none());
        assert!(follow(&origin(), post(), &redirect(307, "//evil.example/x")).is_none());
        assert!(follow(&origin(), post(), &redirect(200, "/x")).is_none());
        assert!(follow(&origin(), post(), &redirect(304, "/x")).is_none());
        let upgraded = follow(
            &origin(),
            post(),
            &redirect(302, "http://app.drchrono.com/x"),
        );
        assert_eq!(upgraded.unwrap().uri(), "https://app.drchrono.com/x");
    }
}
