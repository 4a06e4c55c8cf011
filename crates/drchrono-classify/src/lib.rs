//! DrChrono API error responses as typed [`DrChronoError`](drchrono_core::DrChronoError)s, read once, directly above the transport.
//!
//! [`ErrorClassifyLayer`] sits directly above the HTTP transport. Successful responses pass
//! through untouched and still streaming; an error response (status >= 400) has its body read
//! up to a limit (64 KiB by default) and parsed **once** into a [`DrChronoError`](drchrono_core::DrChronoError) that the
//! retry, rate-limit and OAuth layers above match on: `Throttled { retry_after, available_at }`,
//! `Unauthorized { kind, .. }`, `ReauthorizationRequired`, `AppointmentConflict {
//! overlapping_id }`, `Server { status }`, `Transport { not_sent }`, …
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use drchrono_classify::ErrorClassifyLayer;
//! use drchrono_core::{DrChronoError, SupportReport};
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
//! - [`ErrorClassifyLayer`] / [`ErrorClassify`]: the middleware; its rules are
//!   [`drchrono_core::classify_response`], a pure function.
//! - The errors it makes, and everything about them (parsers, redaction, support reports), are
//!   in [`drchrono_core`]: [`DrChronoError`](drchrono_core::DrChronoError) with
//!   [`ErrorContext`](drchrono_core::ErrorContext).
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
//! The classifier's log events and the errors it makes hold no query string, body, payload
//! or token: see [`drchrono_core`]. `tests/phi.rs` checks this for generated patient values
//! in every place they can arrive.

mod future;
mod layer;
mod service;
mod trace;

pub use future::ResponseFuture;
pub use layer::{DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT, ErrorClassifyLayer};
pub use service::ErrorClassify;
