//! Mapping a [`DrChronoError`] to the HTTP answer a service gives its own callers.
//!
//! The answer is a small JSON object `{"error": "<generic message>", "kind": "<variant>"}`:
//! never DrChrono's body (it may echo patient data), never a token, never the upstream URL
//! (its query string may hold a patient's name). `kind` is
//! [`DrChronoError::kind_name`], stable and PHI-free.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header::RETRY_AFTER};
use axum::response::{IntoResponse, Response};
use drchrono_tower::DrChronoError;
use drchrono_tower::retry::RetryPolicy;
use serde_json::json;

/// How a handler answers when DrChrono failed, after the retries the policy allowed:
///
/// | DrChrono error | answer |
/// |---|---|
/// | `NotFound` (404) | 404 |
/// | `BadRequest` (400) | 400 with the names of the invalid fields (never their values) |
/// | `AppointmentConflict` (409) | 409 with the overlapping appointment's id |
/// | `Forbidden` (403) | 403: the API user lacks a permission or scope |
/// | `Throttled` (429) | 503 with `Retry-After` (the server's hint; 60 s without one) |
/// | `ReauthorizationRequired` | 503 without `Retry-After`: an administrator must authorise again |
/// | `InvalidClient` | 500: the application's credentials are wrong |
/// | `Server` (5xx), `Transport`, `Decode`, `Unauthorized`, `MethodNotAllowed`, other | 502 |
///
/// Every answer also gets a `tracing` event (`debug` for a 404, `warn` otherwise) with the
/// kind and the upstream status only.
pub fn error_response(error: &DrChronoError) -> Response {
    let kind = error.kind_name();
    let upstream_status = error.status().map(|s| s.as_u16());
    if matches!(error, DrChronoError::NotFound { .. }) {
        tracing::debug!(kind, upstream_status, "DrChrono call failed");
    } else {
        tracing::warn!(kind, upstream_status, "DrChrono call failed");
    }
    let (status, message) = match error {
        DrChronoError::NotFound { .. } => (StatusCode::NOT_FOUND, "not found"),
        DrChronoError::BadRequest { field_errors, .. } => {
            let fields: Vec<&str> = field_errors.keys().map(String::as_str).collect();
            let body = json!({
                "error": "DrChrono rejected the request",
                "kind": kind,
                "fields": fields,
            });
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
        DrChronoError::AppointmentConflict { overlapping_id, .. } => {
            let body = json!({
                "error": "the appointment overlaps another in the same exam room",
                "kind": kind,
                "overlapping_id": overlapping_id,
            });
            return (StatusCode::CONFLICT, Json(body)).into_response();
        }
        DrChronoError::Forbidden { .. } => (
            StatusCode::FORBIDDEN,
            "the DrChrono API user may not access this resource",
        ),
        DrChronoError::Throttled { .. } => {
            let wait = throttle_wait(error);
            return unavailable(kind, "DrChrono is throttling this application", Some(wait));
        }
        DrChronoError::ReauthorizationRequired { .. } => {
            return unavailable(
                kind,
                "the DrChrono authorisation must be renewed by an administrator",
                None,
            );
        }
        DrChronoError::InvalidClient { .. } => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the DrChrono application is misconfigured",
        ),
        _ => (StatusCode::BAD_GATEWAY, "DrChrono could not answer"),
    };
    (status, Json(json!({ "error": message, "kind": kind }))).into_response()
}

/// A 503 with a generic message and, when known, `Retry-After` in whole seconds (at least 1).
pub fn unavailable(kind: &str, message: &str, retry_after: Option<Duration>) -> Response {
    let body = Json(json!({ "error": message, "kind": kind }));
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    if let Some(wait) = retry_after {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(whole_seconds(wait)));
    }
    response
}

/// The wait a 429 asked for: until `available_at`, else `retry_after`, else the retry
/// policy's default for a hint-less 429 (60 s).
fn throttle_wait(error: &DrChronoError) -> Duration {
    if let Some(at) = error.available_at() {
        return at.saturating_duration_since(tokio::time::Instant::now());
    }
    error
        .retry_after()
        .unwrap_or(RetryPolicy::DEFAULT_THROTTLE_WAIT)
}

/// `wait` rounded up to whole seconds, at least 1 (a `Retry-After: 0` invites a hot loop).
pub fn whole_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}
