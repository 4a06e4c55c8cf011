//! [`DrChronoError`]: every way a DrChrono API call can fail, as data to match on.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt;
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode, Uri};

/// A boxed error from the transport or an inner service.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The field errors of a DrChrono 400 response: `{"field": ["message", …]}`.
///
/// Keys are field names (never patient values); messages are DrChrono's own text.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// Hint printed with [`DrChronoError::Forbidden`].
pub const STAFF_PERMISSIONS_HINT: &str = "Check the API user's permissions under Account > Staff \
     Permissions, and that the token was granted the endpoint's scopes (API documentation, \
     \"AUTHORIZATIONS\").";

/// Hint printed with [`DrChronoError::AppointmentConflict`].
pub const ALLOW_OVERLAPS_HINT: &str = "To schedule overlapping appointments, enable \"Allow Exam \
     Room Overlaps\" under Account Settings > General > Calendar Settings.";

/// Why a 401 was returned for an API call that carried an access token.
#[derive(Debug, Clone, PartialEq, Eq)]
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
/// endpoint URL); `tracing` events only ever log [`ErrorContext::path`].
#[derive(Debug, Clone, Default)]
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
    /// A short excerpt of the response body, with every JSON string value that is not an
    /// allow-listed key replaced by `REDACT`, and non-JSON bodies cut short.
    pub body_snippet: Option<String>,
}

impl ErrorContext {
    /// The request path without query string: safe to log.
    pub fn path(&self) -> Option<&str> {
        self.uri.as_ref().map(Uri::path)
    }
}

/// An error from a DrChrono API call, typed so that callers match on data rather than strings.
///
/// Produced by [`crate::ErrorClassifyLayer`] from error responses and transport failures,
/// and consumed by the retry, rate-limit and OAuth layers.
#[derive(Debug)]
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
}
