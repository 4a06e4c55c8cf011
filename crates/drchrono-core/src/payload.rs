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
/// use drchrono_core::RequestPayload;
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
