//! `Debug` for [`DrChronoError`], [`ErrorContext`] and [`UnauthorizedKind`]: the data, in
//! the shape a derive would print, without a query string, a body, a payload or a value
//! quoted in one of DrChrono's messages.
//!
//! `unwrap()`, `tracing`'s `?error`, `anyhow`'s `{:?}` and test failures all print `Debug`:
//! it follows the same rule as `Display`.

use std::error::Error as StdError;
use std::fmt;

use crate::error::{DrChronoError, ErrorContext, UnauthorizedKind};
use crate::redact::redact_message;

/// One of DrChrono's messages, shown as `Debug` shows a string, through [`redact_message`].
struct Message<'a>(&'a str);

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&redact_message(self.0), f)
    }
}

/// An optional message, as `Debug` shows an `Option<String>`.
fn message(text: &Option<String>) -> Option<Message<'_>> {
    text.as_deref().map(Message)
}

/// Text that is not shown, only its length: `<redacted, 57 chars>`.
struct Length<'a>(&'a str);

impl fmt::Debug for Length<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} chars>", self.0.chars().count())
    }
}

impl fmt::Debug for UnauthorizedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TokenExpired => f.write_str("TokenExpired"),
            Self::TokenInvalid => f.write_str("TokenInvalid"),
            Self::CredentialsNotProvided => f.write_str("CredentialsNotProvided"),
            Self::Other(detail) => f.debug_tuple("Other").field(&message(detail)).finish(),
        }
    }
}

impl fmt::Debug for ErrorContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorContext")
            .field("method", &self.method)
            // The path only: the query string may name a patient.
            .field("path", &self.path())
            .field("status", &self.status)
            .field("occurred_at", &self.occurred_at)
            .field("body_snippet", &self.body_snippet.as_deref().map(Length))
            .field(
                "request_payload",
                &self.request_payload.as_deref().map(Length),
            )
            .field("extensions", &self.extensions.len())
            .finish()
    }
}

impl fmt::Debug for DrChronoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s;
        match self {
            Self::BadRequest {
                field_errors,
                detail,
                ..
            } => {
                s = f.debug_struct("BadRequest");
                s.field("field_errors", field_errors)
                    .field("detail", &message(detail));
            }
            Self::Unauthorized {
                kind,
                replay_with_current_token,
                persisted_after_refresh,
                ..
            } => {
                s = f.debug_struct("Unauthorized");
                s.field("kind", kind)
                    .field("replay_with_current_token", replay_with_current_token)
                    .field("persisted_after_refresh", persisted_after_refresh);
            }
            Self::ReauthorizationRequired { description, .. } => {
                s = f.debug_struct("ReauthorizationRequired");
                s.field("description", &message(description));
            }
            Self::InvalidClient { description, .. } => {
                s = f.debug_struct("InvalidClient");
                s.field("description", &message(description));
            }
            Self::OAuth {
                error, description, ..
            } => {
                s = f.debug_struct("OAuth");
                s.field("error", &Message(error))
                    .field("description", &message(description));
            }
            Self::Forbidden {
                detail,
                required_scopes,
                ..
            } => {
                s = f.debug_struct("Forbidden");
                s.field("detail", &Message(detail))
                    .field("required_scopes", required_scopes);
            }
            Self::NotFound { detail, .. } => {
                s = f.debug_struct("NotFound");
                s.field("detail", &message(detail));
            }
            Self::MethodNotAllowed { method, detail, .. } => {
                s = f.debug_struct("MethodNotAllowed");
                s.field("method", method).field("detail", &Message(detail));
            }
            Self::AppointmentConflict {
                overlapping_id,
                detail,
                ..
            } => {
                s = f.debug_struct("AppointmentConflict");
                s.field("overlapping_id", overlapping_id)
                    .field("detail", &Message(detail));
            }
            Self::Throttled {
                retry_after,
                available_at,
                ..
            } => {
                s = f.debug_struct("Throttled");
                s.field("retry_after", retry_after)
                    .field("available_at", available_at);
            }
            Self::Server { status, .. } => {
                s = f.debug_struct("Server");
                s.field("status", status);
            }
            Self::UnexpectedStatus { status, .. } => {
                s = f.debug_struct("UnexpectedStatus");
                s.field("status", status);
            }
            Self::Transport { not_sent, .. } => {
                s = f.debug_struct("Transport");
                s.field("not_sent", not_sent)
                    .field("source", &self.source());
            }
            Self::Decode { .. } => {
                s = f.debug_struct("Decode");
                s.field("source", &self.source());
            }
            Self::ForeignOrigin {
                origin, expected, ..
            } => {
                s = f.debug_struct("ForeignOrigin");
                s.field("origin", origin).field("expected", expected);
            }
        }
        s.field("context", self.context()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Method, StatusCode};

    use super::*;
    use crate::FieldErrors;

    fn context() -> Box<ErrorContext> {
        let mut context = ErrorContext::new();
        context.method = Some(Method::GET);
        context.uri = Some(
            "https://app.drchrono.com/api/patients?first_name=Jane&date_of_birth=1970-01-01"
                .parse()
                .unwrap(),
        );
        context.status = Some(StatusCode::NOT_FOUND);
        context.body_snippet = Some(r#"{"detail":"Not found."}"#.into());
        context.request_payload = Some(r#"{"first_name":"REDACT"}"#.into());
        Box::new(context)
    }

    #[test]
    fn a_404_on_a_phi_query_prints_its_path_only() {
        let error = DrChronoError::NotFound {
            detail: Some("No Patient matches \"Jane Doe\".".into()),
            context: context(),
        };
        let debug = format!("{error:?}");
        assert_eq!(
            debug,
            "NotFound { detail: Some(\"No Patient matches \\\"REDACT\\\".\"), context: \
             ErrorContext { method: Some(GET), path: Some(\"/api/patients\"), status: \
             Some(404), occurred_at: None, body_snippet: Some(<redacted, 23 chars>), \
             request_payload: Some(<redacted, 23 chars>), extensions: 0 } }"
        );
        let pretty = format!("{error:#?}");
        for phi in ["Jane", "1970-01-01", "first_name="] {
            assert!(
                !debug.contains(phi) && !pretty.contains(phi),
                "{phi}: {pretty}"
            );
        }
    }

    #[test]
    fn every_variant_redacts_its_messages() {
        let quoted = || "\"Jane Doe\" is not a valid choice.".to_owned();
        let errors = [
            DrChronoError::BadRequest {
                field_errors: FieldErrors::from([("gender".to_owned(), vec![quoted()])]),
                detail: Some(quoted()),
                context: context(),
            },
            DrChronoError::Unauthorized {
                kind: UnauthorizedKind::Other(Some(quoted())),
                replay_with_current_token: true,
                persisted_after_refresh: false,
                context: context(),
            },
            DrChronoError::ReauthorizationRequired {
                description: Some(quoted()),
                context: context(),
            },
            DrChronoError::InvalidClient {
                description: Some(quoted()),
                context: context(),
            },
            DrChronoError::OAuth {
                error: "invalid_request".into(),
                description: Some(quoted()),
                context: context(),
            },
            DrChronoError::Forbidden {
                detail: quoted(),
                required_scopes: Some(&["patients:read"]),
                context: context(),
            },
            DrChronoError::MethodNotAllowed {
                method: Method::PATCH,
                detail: quoted(),
                context: context(),
            },
            DrChronoError::AppointmentConflict {
                overlapping_id: Some(7),
                detail: quoted(),
                context: context(),
            },
            DrChronoError::Throttled {
                retry_after: Some(Duration::from_secs(3)),
                available_at: None,
                context: context(),
            },
            DrChronoError::Transport {
                not_sent: true,
                source: "connection refused".into(),
                context: context(),
            },
        ];
        for error in errors {
            let debug = format!("{error:?}");
            assert!(!debug.contains("Jane"), "{debug}");
            assert!(debug.starts_with(variant(&error)), "{debug}");
            assert!(debug.contains("path: Some(\"/api/patients\")"), "{debug}");
        }
    }

    fn variant(error: &DrChronoError) -> &'static str {
        match error.kind_name() {
            "bad_request" => "BadRequest {",
            "unauthorized" => "Unauthorized { kind: Other(Some(\"\\\"REDACT\\\"",
            "reauthorization_required" => "ReauthorizationRequired {",
            "invalid_client" => "InvalidClient {",
            "oauth" => "OAuth { error: \"invalid_request\"",
            "forbidden" => "Forbidden {",
            "method_not_allowed" => "MethodNotAllowed { method: PATCH",
            "appointment_conflict" => "AppointmentConflict { overlapping_id: Some(7)",
            "throttled" => "Throttled { retry_after: Some(3s)",
            "transport" => "Transport { not_sent: true, source: Some(\"connection refused\")",
            other => panic!("{other}"),
        }
    }
}
