//! `Display` and `std::error::Error` for [`DrChronoError`]: DrChrono's message plus a hint,
//! never a body, a payload, a query string or a value quoted in a message.

use std::error::Error as StdError;
use std::fmt;

use crate::error::{ALLOW_OVERLAPS_HINT, DrChronoError, STAFF_PERMISSIONS_HINT, UnauthorizedKind};
use crate::redact::redact_message;

/// Hint printed with [`DrChronoError::Unauthorized`].
pub(crate) const UNAUTHORIZED_HINT: &str = "Access tokens expire after 48 hours and are revoked when \
     the token is refreshed or the user authorizes again: refresh once (a single job) and \
     replay with the current token.";

/// Hint printed with a [`DrChronoError::Unauthorized`] that persisted after a refresh.
pub(crate) const PERSISTENT_UNAUTHORIZED_HINT: &str = "The 401 persisted with a token refreshed a \
     moment ago, so refreshing again would not cure it: check that the user is still active \
     and that no proxy strips the Authorization header.";

/// Hint printed with [`DrChronoError::ReauthorizationRequired`].
pub(crate) const REAUTHORIZE_HINT: &str = "The refresh token is no longer valid (revoked, or the user \
     went through OAuth again): this user must authorize the application again.";

/// Hint printed with [`DrChronoError::InvalidClient`].
pub(crate) const INVALID_CLIENT_HINT: &str = "Check the application's client id and secret under \
     Account > API.";

/// Hint printed with [`DrChronoError::Throttled`].
pub(crate) const THROTTLED_HINT: &str = "Wait until the throttle resets and spread requests over \
     time (at most 9 per second, 290 per 10 minutes, 500 per clock hour by default).";

/// Hint printed with [`DrChronoError::Server`].
pub(crate) const SERVER_HINT: &str = "Retry 2 or 3 times with a 25-30 s exponential backoff and \
     jitter; if it persists, report it to api@drchrono.com (see SupportReport).";

/// Hint printed with [`DrChronoError::MethodNotAllowed`].
pub(crate) const METHOD_HINT: &str = "Check the endpoint's supported methods in DrChrono's API \
     documentation.";

impl DrChronoError {
    /// DrChrono's own message for this error (`detail`, `error_description`, the 409 text, …),
    /// when the response carried one, verbatim.
    ///
    /// DrChrono's text, but Django REST Framework's messages may quote a submitted value
    /// (`Invalid pk "123" - object does not exist.`): to show or log it, pass it through
    /// [`redact_message`](crate::redact::redact_message), as `Display`, `Debug` and
    /// [`crate::SupportReport`] do.
    pub fn message(&self) -> Option<&str> {
        match self {
            Self::BadRequest { detail, .. }
            | Self::NotFound { detail, .. }
            | Self::ReauthorizationRequired {
                description: detail,
                ..
            }
            | Self::InvalidClient {
                description: detail,
                ..
            } => detail.as_deref(),
            Self::OAuth {
                error, description, ..
            } => Some(description.as_deref().unwrap_or(error)),
            Self::Unauthorized { kind, .. } => match kind {
                UnauthorizedKind::TokenExpired => Some("The access token has expired."),
                UnauthorizedKind::TokenInvalid => Some("The access token is invalid."),
                UnauthorizedKind::CredentialsNotProvided => {
                    Some("Authentication credentials were not provided.")
                }
                UnauthorizedKind::Other(detail) => detail.as_deref(),
            },
            Self::Forbidden { detail, .. }
            | Self::MethodNotAllowed { detail, .. }
            | Self::AppointmentConflict { detail, .. } => {
                Some(detail.as_str()).filter(|d| !d.is_empty())
            }
            Self::Throttled { .. }
            | Self::Server { .. }
            | Self::UnexpectedStatus { .. }
            | Self::Transport { .. }
            | Self::ForeignOrigin { .. }
            | Self::Decode { .. } => None,
        }
    }

    /// What to do about this error, when DrChrono's guidance names a remedy.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Forbidden { .. } => Some(STAFF_PERMISSIONS_HINT),
            Self::AppointmentConflict { .. } => Some(ALLOW_OVERLAPS_HINT),
            Self::Unauthorized {
                persisted_after_refresh: true,
                ..
            } => Some(PERSISTENT_UNAUTHORIZED_HINT),
            Self::Unauthorized { .. } => Some(UNAUTHORIZED_HINT),
            Self::ReauthorizationRequired { .. } => Some(REAUTHORIZE_HINT),
            Self::InvalidClient { .. } => Some(INVALID_CLIENT_HINT),
            Self::Throttled { .. } => Some(THROTTLED_HINT),
            Self::Server { .. } => Some(SERVER_HINT),
            Self::MethodNotAllowed { .. } => Some(METHOD_HINT),
            _ => None,
        }
    }
}

impl fmt::Display for DrChronoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // What happened, where, DrChrono's message, the data that matters, the remedy.
        match self {
            Self::BadRequest { .. } => {
                f.write_str("DrChrono rejected the request as invalid (400 Bad Request)")?;
            }
            Self::Unauthorized { .. } => {
                f.write_str("DrChrono refused the access token (401 Unauthorized)")?;
            }
            Self::ReauthorizationRequired { .. } => {
                f.write_str("the refresh token was rejected (invalid_grant)")?;
            }
            Self::InvalidClient { .. } => {
                f.write_str("the client id or secret was rejected (invalid_client)")?;
            }
            Self::OAuth { error, .. } => write!(f, "OAuth error `{error}`")?,
            Self::Forbidden { .. } => f.write_str("permission denied (403 Forbidden)")?,
            Self::NotFound { .. } => f.write_str("not found (404 Not Found)")?,
            Self::MethodNotAllowed { method, .. } => {
                write!(f, "method {method} not allowed (405 Method Not Allowed)")?;
            }
            Self::AppointmentConflict { .. } => {
                f.write_str(
                    "the appointment overlaps another in the same exam room (409 Conflict)",
                )?;
            }
            Self::Throttled { .. } => {
                f.write_str("throttled by DrChrono (429 Too Many Requests)")?;
            }
            Self::Server { status, .. } => write!(f, "DrChrono server error ({status})")?,
            Self::UnexpectedStatus { status, .. } => {
                write!(f, "unexpected DrChrono response ({status})")?;
            }
            Self::Transport { not_sent, .. } => {
                f.write_str(if *not_sent {
                    "transport error (the request was not sent)"
                } else {
                    "transport error (the request may have reached the server)"
                })?;
            }
            // The source (often a serde error) may quote response values: not printed here.
            Self::Decode { .. } => f.write_str("the response body could not be read or decoded")?,
            Self::ForeignOrigin {
                origin, expected, ..
            } => write!(
                f,
                "refused to send a request to {origin} (nothing was sent): the access token goes \
                 only to the configured API origin {expected}"
            )?,
        }
        let context = self.context();
        if let (Some(method), Some(path)) = (&context.method, context.path()) {
            write!(f, " on {method} {path}")?;
        }
        match self.message() {
            Some(message) => {
                let message = redact_message(message);
                write!(f, ": {message}")?;
                if !message.ends_with(['.', '!', '?']) {
                    f.write_str(".")?;
                }
            }
            None => f.write_str(".")?,
        }
        match self {
            Self::BadRequest { field_errors, .. } if !field_errors.is_empty() => {
                f.write_str(" Invalid fields: ")?;
                for (i, field) in field_errors.keys().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(field)?;
                }
                f.write_str(".")?;
            }
            Self::Forbidden {
                required_scopes: Some(scopes),
                ..
            } => write!(
                f,
                " The endpoint requires the scopes `{}`.",
                scopes.join(" ")
            )?,
            Self::AppointmentConflict {
                overlapping_id: Some(id),
                ..
            } => write!(f, " Overlapping appointment: {id}.")?,
            Self::Throttled {
                retry_after: Some(wait),
                ..
            } => {
                if wait.subsec_nanos() == 0 {
                    write!(f, " Retry after {} s.", wait.as_secs())?;
                } else {
                    write!(f, " Retry after {:.3} s.", wait.as_secs_f64())?;
                }
            }
            _ => {}
        }
        if let Some(hint) = self.hint() {
            write!(f, " {hint}")?;
        }
        Ok(())
    }
}

impl StdError for DrChronoError {
    /// The source of a `Transport` or `Decode` error; a `serde_json::Error` anywhere in its
    /// chain (whose message quotes the values it could not decode) is shown as a
    /// [`RedactedJsonError`](crate::RedactedJsonError) in place of the whole chain.
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Transport {
                source, context, ..
            }
            | Self::Decode { source, context } => context
                .source_cache
                .visible(&**source as &(dyn StdError + 'static)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Method, StatusCode};

    use super::*;
    use crate::ErrorContext;

    fn context() -> Box<ErrorContext> {
        let mut context = ErrorContext::new();
        context.method = Some(Method::POST);
        context.uri = Some(
            "https://app.drchrono.com/api/appointments?name=Jane"
                .parse()
                .unwrap(),
        );
        Box::new(context)
    }

    #[test]
    fn messages_and_hints() {
        let forbidden = DrChronoError::Forbidden {
            detail: "You do not have permission to perform this action.".into(),
            required_scopes: Some(&["calendar:write"]),
            context: context(),
        };
        assert_eq!(
            forbidden.to_string(),
            format!(
                "permission denied (403 Forbidden) on POST /api/appointments: You do not have \
                 permission to perform this action. The endpoint requires the scopes \
                 `calendar:write`. {STAFF_PERMISSIONS_HINT}"
            )
        );
        let throttled = DrChronoError::Throttled {
            retry_after: Some(Duration::from_secs(3)),
            available_at: None,
            context: context(),
        };
        assert!(throttled.to_string().contains(". Retry after 3 s. "));
        let throttled = DrChronoError::Throttled {
            retry_after: Some(Duration::from_millis(1500)),
            available_at: None,
            context: Box::default(),
        };
        assert!(
            throttled
                .to_string()
                .starts_with("throttled by DrChrono (429 Too Many Requests). Retry after 1.500 s.")
        );
        let mut field_errors = crate::FieldErrors::new();
        field_errors.insert("first_name".into(), vec!["\"Jane\" is too long.".into()]);
        let bad = DrChronoError::BadRequest {
            field_errors,
            detail: None,
            context: context(),
        };
        let text = bad.to_string();
        assert!(text.ends_with("Invalid fields: first_name."), "{text}");
        assert!(!text.contains("Jane"), "{text}");
        let conflict = DrChronoError::AppointmentConflict {
            overlapping_id: Some(7),
            detail: "Appointment overlaps with 7".into(),
            context: Box::default(),
        };
        let text = conflict.to_string();
        assert!(text.contains(": Appointment overlaps with 7. Overlapping appointment: 7. "));
        assert!(text.ends_with(ALLOW_OVERLAPS_HINT));
        let server = DrChronoError::Server {
            status: StatusCode::BAD_GATEWAY,
            context: Box::default(),
        };
        assert_eq!(
            server.to_string(),
            format!("DrChrono server error (502 Bad Gateway). {SERVER_HINT}")
        );
    }

    #[test]
    fn transport_source() {
        let error = DrChronoError::Transport {
            not_sent: false,
            source: "reset by peer".into(),
            context: Box::default(),
        };
        assert_eq!(
            error.to_string(),
            "transport error (the request may have reached the server)."
        );
        assert_eq!(error.source().unwrap().to_string(), "reset by peer");
        assert!(!error.is_not_sent());
        let not_found = DrChronoError::NotFound {
            detail: None,
            context: Box::default(),
        };
        assert!(not_found.source().is_none());
    }
}
