//! [`RequestPayload`]: the request body a caller attaches so that reports can show it
//! redacted.

use bytes::Bytes;

/// The payload of a request, attached by the caller as a request extension so that an
/// [`crate::ErrorContext`] (and so a [`crate::SupportReport`]) can show it **redacted**.
///
/// The layer never stores these raw bytes in an error: only
/// [`crate::redact::redact_payload`]'s output, computed when an error occurs. Cloning is a
/// reference-count increment.
///
/// ```
/// use bytes::Bytes;
/// use drchrono_classify::RequestPayload;
///
/// let body = Bytes::from_static(br#"{"patient": 7, "notes": "private"}"#);
/// let request = http::Request::post("https://app.drchrono.com/api/appointments")
///     .extension(RequestPayload(body.clone()))
///     .body(body)
///     .unwrap();
/// assert!(request.extensions().get::<RequestPayload>().is_some());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RequestPayload(pub Bytes);

impl RequestPayload {
    /// The raw bytes (handle with care: they may contain PHI).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<Bytes> for RequestPayload {
    fn from(bytes: Bytes) -> Self {
        Self(bytes)
    }
}

impl std::fmt::Debug for RequestPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestPayload(<{} bytes>)", self.0.len())
    }
}

/// How long an attempt waited for the rate limiter's permit before it was sent.
///
/// `drchrono-ratelimit`'s layer attaches it to the outcome of every attempt that had to
/// wait: as an extension of the response, or as
/// [`ErrorContext::permit_wait`](crate::ErrorContext::permit_wait) of a [`crate::DrChronoError`].
/// `drchrono-retry`'s policy leaves these waits out of its deadline: a request queued
/// behind DrChrono's hourly budget is waiting its turn, not stuck.
///
/// ```
/// use std::time::Duration;
/// use drchrono_classify::PermitWait;
///
/// let mut response = http::Response::new(());
/// response.extensions_mut().insert(PermitWait(Duration::from_secs(40 * 60)));
/// assert_eq!(PermitWait::of_response(&response), Some(Duration::from_secs(2400)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermitWait(pub std::time::Duration);

impl PermitWait {
    /// The wait a response carries, if its attempt waited.
    pub fn of_response<B>(response: &http::Response<B>) -> Option<std::time::Duration> {
        response.extensions().get::<Self>().map(|wait| wait.0)
    }
}
