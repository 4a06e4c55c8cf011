//! [`classify_response`]: DrChrono's error responses as typed errors, as a pure function.

use std::time::SystemTime;

use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;

use crate::error::{DrChronoError, ErrorContext, UnauthorizedKind};
use crate::{parse, redact, required_scopes};

/// DRF's detail for a request without (valid) credentials.
const NOT_PROVIDED: &str = "credentials were not provided";

/// Classifies an error response whose body has been read (up to the read limit).
///
/// Returns `None` for a status below 400. `truncated` says the body was cut at the read
/// limit; `context` carries the request's method and URI (for 403 scopes and 405) and
/// `occurred_at` (the reference for an HTTP-date `Retry-After` when the response has no
/// `Date` header; now when unset). The status and a redacted body snippet are filled in.
///
/// The rules, in order:
/// - 400/401 whose body is an OAuth error: `invalid_grant` →
///   [`DrChronoError::ReauthorizationRequired`], `invalid_client` →
///   [`DrChronoError::InvalidClient`], any other code → [`DrChronoError::OAuth`];
/// - 400 → `BadRequest` (field errors parsed); 401 → `Unauthorized` (kind from
///   `WWW-Authenticate`, else DRF's detail); 403 → `Forbidden` (required scopes filled);
///   404 → `NotFound`; 405 → `MethodNotAllowed`; 409 → `AppointmentConflict`;
///   429 → `Throttled` (`Retry-After`, else the body's `Expected available in N seconds.`);
///   5xx → `Server`; any other → `UnexpectedStatus`.
///
/// HTML, empty, non-UTF-8 and truncated bodies classify by status alone.
///
/// This function emits no `tracing` event; `drchrono-classify`'s `ErrorClassify` does, once per
/// error.
///
/// ```
/// use drchrono_core::{DrChronoError, ErrorContext, classify_response};
/// use http::{HeaderMap, StatusCode};
///
/// let body = br#"{"error": "Appointment overlaps with 323351400"}"#;
/// let error = classify_response(
///     StatusCode::CONFLICT, &HeaderMap::new(), body, false, ErrorContext::new(),
/// );
/// assert!(matches!(
///     error,
///     Some(DrChronoError::AppointmentConflict { overlapping_id: Some(323351400), .. })
/// ));
/// ```
pub fn classify_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    truncated: bool,
    mut context: ErrorContext,
) -> Option<DrChronoError> {
    if status.as_u16() < 400 {
        return None;
    }
    let json = serde_json::from_slice::<Value>(body).ok();
    context.status = Some(status);
    context.body_snippet = Some(match &json {
        Some(value) => redact::error_snippet(value, status == StatusCode::BAD_REQUEST),
        None => {
            let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
            redact::describe(body, content_type, truncated, "body")
        }
    });
    let text = |key: &str| {
        json.as_ref()
            .and_then(|value| value.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let detail = text("detail");

    if matches!(status.as_u16(), 400 | 401)
        && let Some(oauth) = json.as_ref().and_then(parse::oauth_error_in)
    {
        return Some(DrChronoError::from_oauth(
            oauth.error,
            oauth.description,
            Box::new(context),
        ));
    }

    Some(match status.as_u16() {
        400 => DrChronoError::BadRequest {
            field_errors: json
                .as_ref()
                .and_then(parse::field_errors_in)
                .unwrap_or_default(),
            detail: detail.or_else(|| text("error")),
            context: Box::new(context),
        },
        401 => DrChronoError::Unauthorized {
            kind: unauthorized_kind(headers, detail),
            replay_with_current_token: false,
            persisted_after_refresh: false,
            context: Box::new(context),
        },
        403 => DrChronoError::Forbidden {
            detail: detail.or_else(|| text("error")).unwrap_or_default(),
            required_scopes: context
                .method
                .as_ref()
                .zip(context.uri.as_ref())
                .and_then(|(method, uri)| required_scopes(method, uri.path())),
            context: Box::new(context),
        },
        404 => DrChronoError::NotFound {
            detail,
            context: Box::new(context),
        },
        405 => {
            let detail = detail.unwrap_or_default();
            DrChronoError::MethodNotAllowed {
                method: context
                    .method
                    .clone()
                    .or_else(|| method_in_detail(&detail))
                    .unwrap_or_else(unknown_method),
                detail,
                context: Box::new(context),
            }
        }
        409 => {
            let detail = text("error").or(detail).unwrap_or_default();
            DrChronoError::AppointmentConflict {
                overlapping_id: parse::overlapping_appointment_id(&detail),
                detail,
                context: Box::new(context),
            }
        }
        429 => {
            let now = context.occurred_at.unwrap_or_else(SystemTime::now);
            let retry_after = parse::retry_after(headers, now)
                .or_else(|| detail.as_deref().and_then(parse::throttle_wait));
            DrChronoError::Throttled {
                retry_after,
                available_at: retry_after
                    .and_then(|wait| tokio::time::Instant::now().checked_add(wait)),
                context: Box::new(context),
            }
        }
        500..=599 => DrChronoError::Server {
            status,
            context: Box::new(context),
        },
        _ => DrChronoError::UnexpectedStatus {
            status,
            context: Box::new(context),
        },
    })
}

/// The kind of a 401: `WWW-Authenticate`'s Bearer challenge first, then DRF's detail.
fn unauthorized_kind(headers: &HeaderMap, detail: Option<String>) -> UnauthorizedKind {
    let challenges = headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(parse::bearer_challenge);
    for challenge in challenges {
        if let Some(description) = &challenge.description {
            let description = description.to_ascii_lowercase();
            if description.contains("expired") {
                return UnauthorizedKind::TokenExpired;
            }
            if description.contains("invalid") || description.contains("revoked") {
                return UnauthorizedKind::TokenInvalid;
            }
        }
        if challenge.error.as_deref() == Some("invalid_token") {
            return UnauthorizedKind::TokenInvalid;
        }
    }
    match detail {
        Some(detail) if detail.to_ascii_lowercase().contains(NOT_PROVIDED) => {
            UnauthorizedKind::CredentialsNotProvided
        }
        other => UnauthorizedKind::Other(other),
    }
}

/// The method in DRF's `Method "PATCH" not allowed.`
fn method_in_detail(detail: &str) -> Option<Method> {
    let (_, rest) = detail.split_once("Method \"")?;
    let (name, _) = rest.split_once('"')?;
    Method::from_bytes(name.as_bytes()).ok()
}

/// The method of a 405 that came with neither a request method nor a detail.
fn unknown_method() -> Method {
    Method::from_bytes(b"UNKNOWN").unwrap_or_default()
}

#[cfg(test)]
mod tests;
