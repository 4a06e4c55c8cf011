//! [`RefreshBackoff`]: how the token endpoint client retries transient failures.

use std::time::Duration;

/// Retries of one refresh against transient failures: 5xx, 408/429, timeouts, connection
/// errors. Delays double from `base_delay` up to `max_delay`; a `Retry-After` longer than
/// the computed delay is honoured (up to `max_delay`).
///
/// There is no jitter: exactly one refresh runs per token family (single-flight, plus the
/// [`RefreshLease`](crate::RefreshLease) across processes), so there is no herd of clients
/// to spread out. The delays are shorter than DrChrono's 25–30 s advice for API calls
/// because callers wait on the refresh; a failed refresh is retried again by the next
/// request (and by the retry layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshBackoff {
    max_retries: u32,
    base_delay: Duration,
    max_delay: Duration,
}

impl Default for RefreshBackoff {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RefreshBackoff {
    /// The defaults: 3 retries (4 attempts), 1 s base delay, 30 s cap.
    pub fn new() -> Self {
        Self::default()
    }

    /// No retries at all.
    pub fn none() -> Self {
        Self::default().max_retries(0)
    }

    /// Retries after the first attempt. Default: 3.
    #[must_use]
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// The delay before the first retry; each further retry doubles it. Default: 1 s.
    #[must_use]
    pub fn base_delay(mut self, delay: Duration) -> Self {
        self.base_delay = delay;
        self
    }

    /// The longest delay between two attempts. Default: 30 s.
    #[must_use]
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// The configured number of retries.
    pub(crate) fn retries(&self) -> u32 {
        self.max_retries
    }

    /// The delay before retry number `retry` (0-based), given the server's `Retry-After`.
    pub(crate) fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        let computed = self.base_delay.saturating_mul(factor);
        computed
            .max(retry_after.unwrap_or(Duration::ZERO))
            .min(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps() {
        let backoff = RefreshBackoff::new();
        let secs = |retry| backoff.delay(retry, None).as_secs();
        assert_eq!([secs(0), secs(1), secs(2), secs(3)], [1, 2, 4, 8]);
        assert_eq!(secs(5), 30);
        assert_eq!(secs(u32::MAX), 30);
    }

    #[test]
    fn honours_a_longer_retry_after_up_to_the_cap() {
        let backoff = RefreshBackoff::new();
        let after = |secs| Some(Duration::from_secs(secs));
        assert_eq!(backoff.delay(0, after(7)), Duration::from_secs(7));
        assert_eq!(backoff.delay(2, after(1)), Duration::from_secs(4));
        assert_eq!(backoff.delay(0, after(600)), Duration::from_secs(30));
        assert_eq!(RefreshBackoff::none().retries(), 0);
    }
}
