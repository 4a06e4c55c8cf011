//! DrChrono's page sizes: [`with_page_size`].

/// The largest page DrChrono serves on most list endpoints, and its default: 250.
const DEFAULT_CAP: u32 = 250;
/// The largest page of `/api/appointments`: 20.
const APPOINTMENTS_CAP: u32 = 20;
/// The largest page of a list asked for with `verbose=true`: 50.
const VERBOSE_CAP: u32 = 50;

/// `path` (a relative path or an absolute URL, with or without a query) asking for pages
/// of `page_size` items, or of the endpoint's largest page if that is smaller: 20 on
/// `/api/appointments`, 50 for a `verbose=true` list, 250 elsewhere (DrChrono's documented
/// caps; a larger `page_size` is served as the cap anyway, so asking for more only hides
/// how many requests a listing takes). Any `page_size` already in the query is replaced; a
/// `page_size` of 0 asks for 1.
///
/// ```
/// use drchrono_tower::with_page_size;
///
/// assert_eq!(with_page_size("/api/patients", 1000), "/api/patients?page_size=250");
/// assert_eq!(
///     with_page_size("/api/appointments?date=2026-01-05&page_size=5", 100),
///     "/api/appointments?date=2026-01-05&page_size=20"
/// );
/// assert_eq!(
///     with_page_size("/api/patients?verbose=true", 100),
///     "/api/patients?verbose=true&page_size=50"
/// );
/// ```
pub fn with_page_size(path: &str, page_size: u32) -> String {
    let (base, query) = path.split_once('?').unwrap_or((path, ""));
    let params: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some("page_size"))
        .collect();
    let verbose = params
        .iter()
        .any(|pair| pair.eq_ignore_ascii_case("verbose=true"));
    let cap = [
        Some(DEFAULT_CAP),
        is_appointments(base).then_some(APPOINTMENTS_CAP),
        verbose.then_some(VERBOSE_CAP),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(DEFAULT_CAP);
    let size = page_size.clamp(1, cap);
    let mut out = String::with_capacity(path.len() + 16);
    out.push_str(base);
    out.push('?');
    for pair in params {
        out.push_str(pair);
        out.push('&');
    }
    out.push_str("page_size=");
    out.push_str(&size.to_string());
    out
}

/// Whether `base` (a path, or an absolute URL without its query) is the appointments list.
fn is_appointments(base: &str) -> bool {
    let path = match base.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |at| &rest[at..]),
        None => base,
    };
    path.trim_end_matches('/') == "/api/appointments"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_by_endpoint_and_verbosity() {
        assert_eq!(
            with_page_size("/api/patients", 10),
            "/api/patients?page_size=10"
        );
        assert_eq!(
            with_page_size("/api/patients", 0),
            "/api/patients?page_size=1"
        );
        assert_eq!(
            with_page_size(
                "https://app.drchrono.com/api/appointments/?verbose=true",
                500
            ),
            "https://app.drchrono.com/api/appointments/?verbose=true&page_size=20"
        );
        assert_eq!(
            with_page_size("https://app.drchrono.com/api/patients?page_size=9&x=1", 40),
            "https://app.drchrono.com/api/patients?x=1&page_size=40"
        );
        // A detail path is not the appointments list.
        assert_eq!(
            with_page_size("/api/appointments/7", 100),
            "/api/appointments/7?page_size=100"
        );
    }
}

/// [`DrChronoClient::pages`](crate::DrChronoClient::pages) met a `next` link to a page it
/// had already read: the server's pagination loops (a `next` pointing at its own page, or a
/// cycle). The listing ends with this error, inside [`DrChronoError::Decode`](crate::DrChronoError::Decode), instead of reading the same pages for ever on the
/// application's budget. Carries the page's path, never its query.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepeatedPage {
    /// The repeated page's path, without its query.
    pub path: String,
}

impl std::fmt::Display for RepeatedPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the `next` link leads back to a page already read (`{}`): the listing loops",
            self.path
        )
    }
}

impl std::error::Error for RepeatedPage {}

/// What identifies a page within the API origin: its path and query (an absolute `next`
/// link and the relative path of the same page compare equal; the origin is pinned).
pub(crate) fn page_key(link: &str) -> String {
    link.parse::<http::Uri>()
        .ok()
        .and_then(|uri| uri.path_and_query().map(|pq| pq.as_str().to_owned()))
        .unwrap_or_else(|| link.to_owned())
}
