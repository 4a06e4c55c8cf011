//! The shared vocabulary of the drchrono-tower layers: [`DrChronoError`], the parsers of
//! DrChrono's messages, PHI redaction and the support report DrChrono asks for.
//!
//! Nothing here is middleware. `drchrono-classify` turns error responses into
//! [`DrChronoError`]s; the retry, rate-limit and OAuth layers match on them through
//! [`LayerError`]; applications display them, log them and send [`SupportReport`]s. The
//! types here name no layer: a type that two layers exchange (a request's [`PermitWait`])
//! travels in `http::Extensions`, on the response or on the error's [`ErrorContext`].
//!
//! ```
//! use drchrono_core::{DrChronoError, ErrorContext, SupportReport};
//! use http::StatusCode;
//!
//! let error = DrChronoError::Server {
//!     status: StatusCode::BAD_GATEWAY,
//!     context: Box::new(ErrorContext::new()),
//! };
//! assert!(error.is_retryable());
//! assert_eq!(error.kind_name(), "server");
//! // Display is DrChrono's message plus a hint, never a body or a payload.
//! assert!(error.to_string().contains("502"));
//! // The e-mail DrChrono asks for about persistent 5xx errors, with patient data redacted.
//! let report = SupportReport::from(&error).application("Acme Scheduler").to_string();
//! assert!(report.contains("Acme Scheduler"));
//! ```
//!
//! # What is where
//!
//! - [`DrChronoError`] with [`ErrorContext`]: the typed error every layer shares;
//!   [`LayerError`]: how a service's error type holds one; [`classify_response`]: DrChrono's
//!   error responses as [`DrChronoError`]s, a pure function (`drchrono-classify` is the layer
//!   that calls it).
//! - [`parse`]: `Retry-After`, DRF's throttle message, the 409 id, field errors, OAuth errors,
//!   `WWW-Authenticate`.
//! - [`is_connect_error`] and [`ConnectError`]: whether a transport failure proves the
//!   request was never sent.
//! - [`required_scopes`]: the OAuth scopes of DrChrono's main endpoints, for 403s.
//! - [`redact`] and [`RequestPayload`]: payloads and bodies with every patient value replaced
//!   by `REDACT`.
//! - [`PermitWait`]: how long an attempt waited for the rate limiter, which the retry
//!   policy's deadline leaves out.
//! - [`SupportReport`]: the report DrChrono asks for about 5xx errors and erratic 401s.
//! - [`CallAt`]: a service called with the instant its caller has just read, so that the
//!   layers of one stack read tokio's clock once per attempt.
//!
//! # What is never printed
//!
//! No query string, body, payload, token or value quoted in one of DrChrono's messages
//! reaches `Display` or `Debug` of any type of this crate, the `source()` chain of a
//! [`DrChronoError`] (a `serde_json::Error` is shown as a [`RedactedJsonError`]), or a
//! [`SupportReport`] (whose URL keeps only ids, dates and flags of the query, and whose
//! payload, body and field errors are redacted). `drchrono-classify`'s `tests/phi.rs` checks
//! this for generated patient values in every place they can arrive.

mod call_at;
mod classify;
mod debug;
mod display;
mod error;
mod fields;
mod layer_error;
pub mod parse;
mod payload;
mod permit;
#[cfg(test)]
mod proptests;
pub mod redact;
#[cfg(feature = "redis")]
pub mod redis;
mod report;
mod scopes;
mod source;
mod transport;
mod uri_text;

pub use call_at::CallAt;
pub use classify::classify_response;
pub use error::{BoxError, DrChronoError, ErrorContext, UnauthorizedKind};
pub use fields::FieldErrors;
pub use layer_error::LayerError;
pub use payload::RequestPayload;
pub use permit::{PermitWait, ResendCount};
pub use report::{SUPPORT_EMAIL, SupportReport};
pub use scopes::required_scopes;
pub use source::RedactedJsonError;
pub use transport::{ConnectError, NotSentPredicate, is_connect_error};
pub use uri_text::UriText;
