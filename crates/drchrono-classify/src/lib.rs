//! DrChrono API error responses as typed [`DrChronoError`]s, and PHI-safe support reports.
//!
//! [`ErrorClassifyLayer`] sits directly above the HTTP transport. Successful responses pass
//! through untouched and still streaming; an error response (status >= 400) has its body read
//! up to a limit (64 KiB by default) and parsed **once** into a [`DrChronoError`] that the
//! retry, rate-limit and OAuth layers above match on: `Throttled { retry_after, available_at }`,
//! `Unauthorized { kind, .. }`, `ReauthorizationRequired`, `AppointmentConflict {
//! overlapping_id }`, `Server { status }`, `Transport { not_sent }`, …
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use drchrono_classify::{DrChronoError, ErrorClassifyLayer, SupportReport};
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Any transport will do; this one answers as DrChrono does when appointments overlap.
//! let transport = service_fn(|_request: Request<Full<Bytes>>| async {
//!     let body = br#"{"error": "Appointment overlaps with 323351400"}"#;
//!     Ok::<_, std::io::Error>(
//!         Response::builder()
//!             .status(StatusCode::CONFLICT)
//!             .body(Full::new(Bytes::from_static(body)))
//!             .unwrap(),
//!     )
//! });
//! let client = ErrorClassifyLayer::new().layer(transport);
//!
//! let request = Request::post("https://app.drchrono.com/api/appointments")
//!     .body(Full::default())
//!     .unwrap();
//! let error = client.oneshot(request).await.unwrap_err();
//! assert!(matches!(
//!     error,
//!     DrChronoError::AppointmentConflict { overlapping_id: Some(323351400), .. }
//! ));
//! // Display is DrChrono's message plus a hint, and never a body or a payload.
//! println!("{error}");
//! // The e-mail DrChrono asks for, with patient data redacted.
//! println!("{}", SupportReport::from(&error).application("Acme Scheduler"));
//! # }
//! ```
//!
//! # What is where
//!
//! - [`ErrorClassifyLayer`] / [`ErrorClassify`]: the middleware; [`classify_response`]: its
//!   rules as a pure function; [`is_connect_error`]: the default "request was not sent" test.
//! - [`DrChronoError`] with [`ErrorContext`]: the typed error every layer shares.
//! - [`parse`]: `Retry-After`, DRF's throttle message, the 409 id, field errors, OAuth errors,
//!   `WWW-Authenticate`.
//! - [`required_scopes`]: the OAuth scopes of DrChrono's main endpoints, for 403s.
//! - [`redact`] and [`RequestPayload`]: payloads and bodies with every patient value replaced
//!   by `REDACT`.
//! - [`PermitWait`]: how long an attempt waited for the rate limiter, which the retry
//!   policy's deadline leaves out.
//! - [`SupportReport`]: the report DrChrono asks for about 5xx errors and erratic 401s.
//!
//! # Logging
//!
//! Each error is logged as exactly one `tracing` event with the fields `status`, `method`,
//! `path` (never the query string), `kind`, `retry_after_ms` and `not_sent`: 5xx and
//! transport failures at `WARN`, `invalid_client` at `ERROR`, 429, 401, 403 and OAuth errors
//! at `INFO`, other 4xx at `DEBUG`. Bodies, payloads, tokens and query strings are never
//! logged.
//!
//! # What is never printed
//!
//! No query string, body, payload, token or value quoted in one of DrChrono's messages
//! reaches `Display` or `Debug` of any type of this crate, the `source()` chain of a
//! [`DrChronoError`] (a `serde_json::Error` is shown as a [`RedactedJsonError`]), its log
//! event, or a [`SupportReport`] (whose URL keeps only ids, dates and flags of the query, and
//! whose payload, body and field errors are redacted). `tests/phi.rs` checks this for
//! generated patient values in every place they can arrive.

mod classify;
mod debug;
mod display;
mod error;
mod fields;
mod future;
mod layer;
mod layer_error;
pub mod parse;
mod payload;
mod permit;
pub mod redact;
mod report;
mod scopes;
mod service;
mod source;
mod trace;
mod transport;

pub use classify::classify_response;
pub use display::{
    INVALID_CLIENT_HINT, METHOD_HINT, PERSISTENT_UNAUTHORIZED_HINT, REAUTHORIZE_HINT, SERVER_HINT,
    THROTTLED_HINT, UNAUTHORIZED_HINT,
};
pub use error::{
    ALLOW_OVERLAPS_HINT, BoxError, DrChronoError, ErrorContext, STAFF_PERMISSIONS_HINT,
    UnauthorizedKind,
};
pub use fields::FieldErrors;
pub use future::ResponseFuture;
pub use layer::{DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT, ErrorClassifyLayer};
pub use layer_error::LayerError;
pub use payload::RequestPayload;
pub use permit::PermitWait;
pub use report::{CRATE_VERSION, RUST_VERSION, SUPPORT_EMAIL, SupportReport};
pub use scopes::required_scopes;
pub use service::ErrorClassify;
pub use source::RedactedJsonError;
pub use transport::{ConnectError, NotSentPredicate, is_connect_error};
