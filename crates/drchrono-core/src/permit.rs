//! [`PermitWait`] and [`ResendCount`]: what the rate limiter and the retry policy tell the layers around them about an attempt.

/// How long an attempt waited for the rate limiter's permit before it was sent.
///
/// `drchrono-ratelimit`'s layer attaches it to the outcome of every attempt that had to
/// wait: as an extension of the response, or of a [`crate::DrChronoError`]'s context
/// ([`ErrorContext::extensions`](crate::ErrorContext::extensions)).
/// `drchrono-retry`'s policy leaves these waits out of its deadline: a request queued
/// behind DrChrono's hourly budget is waiting its turn, not stuck.
///
/// ```
/// use std::time::Duration;
/// use drchrono_core::PermitWait;
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

    /// The wait an error carries, if its attempt waited.
    ///
    /// ```
    /// use std::time::Duration;
    /// use drchrono_core::{DrChronoError, ErrorContext, PermitWait};
    ///
    /// let mut context = ErrorContext::new();
    /// context.extensions.insert(PermitWait(Duration::from_secs(3)));
    /// let error = DrChronoError::Server {
    ///     status: http::StatusCode::BAD_GATEWAY,
    ///     context: Box::new(context),
    /// };
    /// assert_eq!(PermitWait::of_error(&error), Some(Duration::from_secs(3)));
    /// ```
    pub fn of_error(error: &crate::DrChronoError) -> Option<std::time::Duration> {
        error.context().extensions.get::<Self>().map(|wait| wait.0)
    }
}

/// How many times a request was sent before this attempt: 0 for the first, 1 for the first
/// resend, and so on (OpenTelemetry's `http.request.resend_count`).
///
/// `drchrono-retry`'s policy sets it on the request it sends again; a request without it is
/// a first attempt. `drchrono-tower` names each attempt's span with it.
///
/// ```
/// use drchrono_core::ResendCount;
///
/// let mut request = http::Request::new(());
/// assert_eq!(ResendCount::of(&request), 0);
/// request.extensions_mut().insert(ResendCount(2));
/// assert_eq!(ResendCount::of(&request), 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResendCount(pub u32);

impl ResendCount {
    /// The resend count a request carries: 0 when it carries none.
    #[inline]
    pub fn of<B>(request: &http::Request<B>) -> u32 {
        request
            .extensions()
            .get::<Self>()
            .map_or(0, |count| count.0)
    }
}
