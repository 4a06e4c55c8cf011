//! [`DrChronoError`]: every way a DrChrono API call can fail, as data to match on.

use std::error::Error as StdError;
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode, Uri};

use crate::FieldErrors;
use crate::source::SourceCache;

/// A boxed error from the transport or an inner service.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Hint printed with [`DrChronoError::Forbidden`].
pub(crate) const STAFF_PERMISSIONS_HINT: &str = "Check the API user's permissions under Account > Staff \
     Permissions, and that the token was granted the endpoint's scopes (API documentation, \
     \"AUTHORIZATIONS\").";

/// Hint printed with [`DrChronoError::AppointmentConflict`].
pub(crate) const ALLOW_OVERLAPS_HINT: &str = "To schedule overlapping appointments, enable \"Allow Exam \
     Room Overlaps\" under Account Settings > General > Calendar Settings.";

/// Why a 401 was returned for an API call that carried an access token.
///
/// `Debug` shows the detail of [`UnauthorizedKind::Other`] through
/// [`redact_message`](crate::redact::redact_message).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnauthorizedKind {
    /// `WWW-Authenticate: Bearer error="invalid_token", error_description="The access token has expired."`
    TokenExpired,
    /// The token is unknown or revoked (refreshed, re-authorised): `"… is invalid."`.
    TokenInvalid,
    /// DRF's `{"detail": "Authentication credentials were not provided."}` with no
    /// `WWW-Authenticate` detail: the token was missing or rejected without a reason.
    CredentialsNotProvided,
    /// Any other 401, with DrChrono's detail when there was one.
    Other(Option<String>),
}

/// Where an error happened: everything a [`crate::SupportReport`] needs, and nothing that
/// identifies a patient.
///
/// The URI keeps its query string for the support report (DrChrono asks for the complete
/// endpoint URL, which the report shows with its query values redacted); `tracing` events
/// only ever log [`ErrorContext::path`], and `Debug` shows the path, not the URI, and the
/// length of the snippet and payload, not their text.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ErrorContext {
    /// The request method, when the error came from a request.
    pub method: Option<Method>,
    /// The request URI, when known.
    pub uri: Option<Uri>,
    /// The response status, when a response arrived.
    pub status: Option<StatusCode>,
    /// When the error was observed (wall clock).
    pub occurred_at: Option<SystemTime>,
    /// A short excerpt of the response body (at most
    /// 512 characters): JSON keeps its keys, allow-listed ids
    /// and DrChrono's own messages, every other value replaced by `REDACT`; HTML, empty,
    /// non-UTF-8 and truncated bodies are described instead (`<html body, 532 bytes>`).
    pub body_snippet: Option<String>,
    /// The request payload, redacted (every value `REDACT` except allow-listed ids), when the
    /// caller attached a [`crate::RequestPayload`] extension. Never the raw payload.
    pub request_payload: Option<String>,
    /// What the layers attach to an attempt's error for the layers above, by type, as
    /// `http::Extensions` carry them on a response: a [`crate::PermitWait`] from the rate
    /// limiter, say. Never shown by `Debug` or in reports.
    pub extensions: http::Extensions,
    /// What `source()` shows of a `Transport` or `Decode` error's source.
    pub(crate) source_cache: SourceCache,
}

impl ErrorContext {
    /// An empty context (all fields `None`).
    pub fn new() -> Self {
        Self::default()
    }

    /// A context that only says when: the current wall-clock time, for an error that
    /// belongs to no request (a service that could not get ready).
    pub fn now() -> Self {
        Self {
            occurred_at: Some(SystemTime::now()),
            ..Self::default()
        }
    }

    /// The context of a request: its method, URI, the current wall-clock time and, when the
    /// request carries a [`crate::RequestPayload`] extension, that payload redacted.
    pub fn from_request<B>(request: &http::Request<B>) -> Self {
        let mut context = Self {
            occurred_at: Some(SystemTime::now()),
            ..Self::default()
        };
        context.fill_request(request);
        context
    }

    /// Sets the method, URI and redacted payload of `request`.
    fn fill_request<B>(&mut self, request: &http::Request<B>) {
        self.method = Some(request.method().clone());
        self.uri = Some(request.uri().clone());
        self.request_payload = request
            .extensions()
            .get::<crate::RequestPayload>()
            .map(|payload| crate::redact::redact_payload(payload.as_bytes()));
    }

    /// The request path without query string: safe to log.
    pub fn path(&self) -> Option<&str> {
        self.uri.as_ref().map(Uri::path)
    }
}

/// An error from a DrChrono API call, typed so that callers match on data rather than strings.
///
/// Produced by `drchrono-classify`'s `ErrorClassifyLayer` from error responses and transport failures,
/// and consumed by the retry, rate-limit and OAuth layers.
///
/// # What it prints
///
/// No rendering of it carries a query string, a body, a payload, a token or a value quoted in
/// one of DrChrono's messages:
///
/// - `Display`: what happened, the method and path, DrChrono's message (through
///   [`redact_message`](crate::redact::redact_message)), the data that matters (field
///   names, scopes, the overlapping id, the wait) and a hint;
/// - `Debug`: the variant and its fields, with the same redaction; the context shows its path
///   and the length of its snippet and payload;
/// - `source()`: a `Transport` or `Decode` error's source, except that a `serde_json::Error`
///   anywhere in its chain is replaced by a [`RedactedJsonError`](crate::RedactedJsonError)
///   (category, line and column). Transport errors are the transport's own: hyper's and
///   hyper-util's name a kind and at most a socket address.
///
/// The fields themselves hold what the server sent (DrChrono's messages and field errors,
/// verbatim), for the caller to act on.
#[non_exhaustive]
pub enum DrChronoError {
    /// 400: the request was invalid; DrChrono's field errors are parsed.
    BadRequest {
        /// `{"field": ["message"]}`; empty when the body had none.
        field_errors: FieldErrors,
        /// DRF's `detail` or a non-field message, when present.
        detail: Option<String>,
        /// Where it happened.
        context: Box<ErrorContext>,
    },
    /// 401 on an API call: the access token was missing, expired or revoked.
    Unauthorized {
        /// Which of the 401 cases this is.
        kind: UnauthorizedKind,
        /// Set by the OAuth layer when the request carried an older token than the current
        /// one (or a refresh has just replaced it): one replay with the current token will
        /// cure it, and the retry policy performs that replay once.
        replay_with_current_token: bool,
        /// Set by the OAuth layer when this 401 came on the current token within the minimum
        /// interval after a refresh that an earlier 401 caused: a new token evidently does not
        /// cure it (a deactivated user, a proxy that strips `Authorization`), so it is
        /// returned instead of refreshing again. Check the user's account and what sits
        /// between you and DrChrono.
        persisted_after_refresh: bool,
        /// Where it happened.
        context: Box<ErrorContext>,
    },
    /// The refresh token was rejected (`invalid_grant`): this one user must go through
    /// DrChrono's OAuth flow again. Never retried; no further refresh is attempted.
    ReauthorizationRequired {
        /// `error_description`, when the server sent one.
        description: Option<String>,
        /// Where it happened.
        context: Box<ErrorContext>,
    },
    /// The client id or secret was rejected (`invalid_client`): the whole application is
    /// misconfigured. Never retried.
    InvalidClient {
        /// `error_description`, when the server sent one.
        description: Option<String>,
        /// Where it happened.
        context: Box<ErrorContext>,
    },
    /// Another OAuth error from the token endpoint (`unsupported_grant_type`, …).
    OAuth {
        /// The OAuth `error` code.
        error: String,
        /// `error_description`, when present.
        description: Option<String>,
        /// Where it happened.
        context: Box<ErrorContext>,
    },
    /// 403: the token user lacks a permission or the token a scope.
    Forbidden {
        /// DrChrono's `detail`.
        detail: String,
        /// The scopes the endpoint requires, when known (see [`crate::required_scopes`]).
        required_scopes: Option<&'static [&'static str]>,
        /// Where it happened.
        context: Box<ErrorContext>,
    },
    /// 404.
    NotFound {
        /// DrChrono's `detail`, usually `"Not found."`.
        detail: Option<String>,
        /// Where it happened.
        context: Box<ErrorContext>,
    },
    /// 405: the endpoint does not support this method.
    MethodNotAllowed {
        /// The method that was refused.
        method: Method,
        /// DrChrono's `detail`, e.g. `Method "PATCH" not allowed.`
        detail: String,
        /// Where it happened.
        context: Box<ErrorContext>,
    },
    /// 409: the appointment overlaps another in the same exam room.
    AppointmentConflict {
        /// The id in `"Appointment overlaps with 323351400"`, when the message had one.
        overlapping_id: Option<u64>,
        /// DrChrono's message.
        detail: String,
        /// Where it happened.
        context: Box<ErrorContext>,
    },
    /// 429: a throttling rule refused the request.
    Throttled {
        /// How long the server asked to wait, from `Retry-After` (delta-seconds or HTTP-date)
        /// or else from DRF's `Expected available in N seconds.`; `None` without a hint.
        retry_after: Option<Duration>,
        /// The instant (tokio's clock) at which the wait ends: the time the response was
        /// classified plus `retry_after`. Shared by the limiter and the retry policy, so their
        /// waits overlap instead of adding up.
        available_at: Option<tokio::time::Instant>,
        /// Where it happened.
        context: Box<ErrorContext>,
    },
    /// 500, 502, 503 or 504 (and any other 5xx).
    Server {
        /// The status.
        status: StatusCode,
        /// Where it happened.
        context: Box<ErrorContext>,
    },
    /// Any other 4xx status.
    UnexpectedStatus {
        /// The status.
        status: StatusCode,
        /// Where it happened.
        context: Box<ErrorContext>,
    },
    /// The transport (or an inner service) failed.
    Transport {
        /// `true` when the request provably never reached the server (a connect error), so
        /// that any method may be retried safely.
        not_sent: bool,
        /// The underlying error.
        source: BoxError,
        /// Where it happened.
        context: Box<ErrorContext>,
    },
    /// Refused before anything was sent: the request's URL (an absolute URL, a `next` link,
    /// a redirect's `Location`) is on another origin than the configured API's, and the
    /// access token goes only to the API origin (scheme, host and port). Never retried:
    /// sending it elsewhere would hand the token to another host.
    ForeignOrigin {
        /// The refused origin, `scheme://host[:port]` (never a path or query).
        origin: String,
        /// The configured API origin.
        expected: String,
        /// Where it happened.
        context: Box<ErrorContext>,
    },
    /// A successful response whose body could not be read to the end or decoded as the
    /// type the caller asked for (a client-side `serde` failure, or a connection that broke
    /// mid-body). Not retried: the request did reach the server.
    Decode {
        /// The underlying error (`serde_json::Error`, a body error, …). Its message may quote
        /// the body: `source()` shows a `serde_json::Error` as a
        /// [`RedactedJsonError`](crate::RedactedJsonError).
        source: BoxError,
        /// Where it happened.
        context: Box<ErrorContext>,
    },
}

impl DrChronoError {
    /// The error for an OAuth error code, decided by the code and never by the status:
    /// `invalid_grant` → [`DrChronoError::ReauthorizationRequired`], `invalid_client` →
    /// [`DrChronoError::InvalidClient`], any other → [`DrChronoError::OAuth`].
    pub fn from_oauth(
        error: String,
        description: Option<String>,
        context: Box<ErrorContext>,
    ) -> Self {
        match error.as_str() {
            "invalid_grant" => Self::ReauthorizationRequired {
                description,
                context,
            },
            "invalid_client" => Self::InvalidClient {
                description,
                context,
            },
            _ => Self::OAuth {
                error,
                description,
                context,
            },
        }
    }

    /// The HTTP status of the response this error was classified from; `None` for
    /// [`DrChronoError::Transport`] (no response arrived).
    pub fn status(&self) -> Option<StatusCode> {
        let implied = match self {
            Self::BadRequest { .. } => Some(StatusCode::BAD_REQUEST),
            Self::Unauthorized { .. } => Some(StatusCode::UNAUTHORIZED),
            Self::Forbidden { .. } => Some(StatusCode::FORBIDDEN),
            Self::NotFound { .. } => Some(StatusCode::NOT_FOUND),
            Self::MethodNotAllowed { .. } => Some(StatusCode::METHOD_NOT_ALLOWED),
            Self::AppointmentConflict { .. } => Some(StatusCode::CONFLICT),
            Self::Throttled { .. } => Some(StatusCode::TOO_MANY_REQUESTS),
            Self::Server { status, .. } | Self::UnexpectedStatus { status, .. } => Some(*status),
            Self::ReauthorizationRequired { .. }
            | Self::InvalidClient { .. }
            | Self::OAuth { .. } => None,
            Self::Transport { .. } | Self::Decode { .. } | Self::ForeignOrigin { .. } => None,
        };
        self.context().status.or(implied)
    }

    /// How long the server asked to wait before the next request ([`DrChronoError::Throttled`]
    /// only).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The instant (tokio's clock) at which a throttling wait ends
    /// ([`DrChronoError::Throttled`] only).
    pub fn available_at(&self) -> Option<tokio::time::Instant> {
        match self {
            Self::Throttled { available_at, .. } => *available_at,
            _ => None,
        }
    }

    /// Whether the error is transient: a 5xx ([`DrChronoError::Server`]), a 429
    /// ([`DrChronoError::Throttled`]) or a [`DrChronoError::Transport`] failure.
    ///
    /// Every other 4xx is `false`, including a 401 marked `replay_with_current_token`: that one
    /// replay is the retry policy's own decision. Whether a non-idempotent request may be
    /// retried is also the policy's decision (see [`DrChronoError::is_not_sent`]).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Server { .. } | Self::Throttled { .. } | Self::Transport { .. }
        )
    }

    /// `true` for a [`DrChronoError::Transport`] error whose request provably never reached
    /// the server (a connect error), so that any method may be retried.
    pub fn is_not_sent(&self) -> bool {
        matches!(self, Self::Transport { not_sent: true, .. })
    }

    /// Where the error happened.
    pub fn context(&self) -> &ErrorContext {
        match self {
            Self::BadRequest { context, .. }
            | Self::Unauthorized { context, .. }
            | Self::ReauthorizationRequired { context, .. }
            | Self::InvalidClient { context, .. }
            | Self::OAuth { context, .. }
            | Self::Forbidden { context, .. }
            | Self::NotFound { context, .. }
            | Self::MethodNotAllowed { context, .. }
            | Self::AppointmentConflict { context, .. }
            | Self::Throttled { context, .. }
            | Self::Server { context, .. }
            | Self::UnexpectedStatus { context, .. }
            | Self::Transport { context, .. }
            | Self::ForeignOrigin { context, .. }
            | Self::Decode { context, .. } => context,
        }
    }

    /// Where the error happened, mutably (layers above may fill in what they know).
    pub fn context_mut(&mut self) -> &mut ErrorContext {
        match self {
            Self::BadRequest { context, .. }
            | Self::Unauthorized { context, .. }
            | Self::ReauthorizationRequired { context, .. }
            | Self::InvalidClient { context, .. }
            | Self::OAuth { context, .. }
            | Self::Forbidden { context, .. }
            | Self::NotFound { context, .. }
            | Self::MethodNotAllowed { context, .. }
            | Self::AppointmentConflict { context, .. }
            | Self::Throttled { context, .. }
            | Self::Server { context, .. }
            | Self::UnexpectedStatus { context, .. }
            | Self::Transport { context, .. }
            | Self::ForeignOrigin { context, .. }
            | Self::Decode { context, .. } => context,
        }
    }

    /// A stable, PHI-free name of the variant (`"bad_request"`, `"throttled"`, …), as logged
    /// in the `kind` field of `tracing` events and in [`crate::SupportReport`].
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } => "bad_request",
            Self::Unauthorized { .. } => "unauthorized",
            Self::ReauthorizationRequired { .. } => "reauthorization_required",
            Self::InvalidClient { .. } => "invalid_client",
            Self::OAuth { .. } => "oauth",
            Self::Forbidden { .. } => "forbidden",
            Self::NotFound { .. } => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::AppointmentConflict { .. } => "appointment_conflict",
            Self::Throttled { .. } => "throttled",
            Self::Server { .. } => "server",
            Self::UnexpectedStatus { .. } => "unexpected_status",
            Self::Transport { .. } => "transport",
            Self::Decode { .. } => "decode",
            Self::ForeignOrigin { .. } => "foreign_origin",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        let mut error = DrChronoError::InvalidClient {
            description: None,
            context: Box::default(),
        };
        assert_eq!(error.status(), None);
        error.context_mut().status = Some(StatusCode::UNAUTHORIZED);
        assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(error.kind_name(), "invalid_client");
        assert!(!error.is_retryable());
        assert_eq!((error.retry_after(), error.available_at()), (None, None));

        let forbidden = DrChronoError::Forbidden {
            detail: String::new(),
            required_scopes: None,
            context: Box::default(),
        };
        assert_eq!(forbidden.status(), Some(StatusCode::FORBIDDEN));
        assert_eq!(forbidden.message(), None);

        let request = http::Request::get("https://app.drchrono.com/api/patients/3?q=Jane")
            .extension(crate::RequestPayload(bytes::Bytes::from_static(
                br#"{"last_name":"Doe"}"#,
            )))
            .body(())
            .unwrap();
        let context = ErrorContext::from_request(&request);
        assert_eq!(context.path(), Some("/api/patients/3"));
        assert_eq!(context.method, Some(Method::GET));
        assert_eq!(
            context.request_payload.as_deref(),
            Some(r#"{"last_name":"REDACT"}"#)
        );
        assert!(context.occurred_at.is_some());
    }
}
