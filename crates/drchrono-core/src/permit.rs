//! [`PermitWait`]: how long an attempt waited for the rate limiter, for the retry policy.

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
}
