//! What Django itself answers, outside Django REST Framework: its error pages, and a plain
//! view's 405 and `OPTIONS` (django-oauth-toolkit's token view is one).

use axum::http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Django's default content type (`DEFAULT_CHARSET` is UTF-8).
const HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");

/// Django's `ERROR_PAGE_TEMPLATE` (`django/views/defaults.py`), filled in.
pub(crate) fn error_page(title: &str, details: &str) -> String {
    format!(
        "\n<!doctype html>\n<html lang=\"en\">\n<head>\n  <title>{title}</title>\n</head>\n<body>\n  \
         <h1>{title}</h1><p>{details}</p>\n</body>\n</html>\n"
    )
}

/// Django's `page_not_found` with `DEBUG = False`: the answer to a URL that no pattern
/// matches, before any view (so before DRF) runs.
pub(crate) fn not_found() -> Response {
    let body = error_page(
        "Not Found",
        "The requested resource was not found on this server.",
    );
    let mut response = (StatusCode::NOT_FOUND, body).into_response();
    response.headers_mut().insert(CONTENT_TYPE, HTML);
    response
}

/// `View.http_method_not_allowed`: `HttpResponseNotAllowed`, an empty HTML response with
/// the view's methods in `Allow`.
pub(crate) fn method_not_allowed(allow: &'static str) -> Response {
    let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HTML);
    headers.insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// `View.options`: 200, the view's methods in `Allow`, no body.
pub(crate) fn options(allow: &'static str) -> Response {
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HTML);
    headers.insert(ALLOW, HeaderValue::from_static(allow));
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}
