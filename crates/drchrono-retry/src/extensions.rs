//! Request extensions that tune the retry policy for one request.

use std::time::Duration;

/// Marks a request as safe to retry whatever its method: insert it into the request's
/// extensions (`request.extensions_mut().insert(Idempotent)`) for a `POST` or `PATCH` whose
/// repetition does no harm.
///
/// DrChrono has no idempotency keys: a `POST /api/appointments` that failed with a 500 may
/// still have created the appointment, and repeating it creates a second one (or a 409
/// overlap). Mark only requests whose repetition you have made harmless.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Idempotent;

/// Overrides the policy's settings for one request: insert it into the request's extensions.
/// Each unset field keeps the policy's value.
///
/// ```
/// use std::time::Duration;
/// use drchrono_retry::RetryOverride;
///
/// let mut request = http::Request::post("https://app.drchrono.com/api/patients")
///     .body(String::new())
///     .unwrap();
/// request.extensions_mut().insert(
///     RetryOverride::new()
///         .max_retries(1)
///         .retry_non_idempotent(true)
///         .deadline(Duration::from_secs(90)),
/// );
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOverride {
    pub(crate) max_retries: Option<u32>,
    pub(crate) retry_non_idempotent: Option<bool>,
    pub(crate) max_throttled_retries: Option<u32>,
    pub(crate) max_throttle_wait: Option<Duration>,
    pub(crate) deadline: Option<Option<Duration>>,
    pub(crate) replay_unauthorized: Option<bool>,
}

impl RetryOverride {
    /// An override that changes nothing until its setters are called.
    pub fn new() -> Self {
        Self::default()
    }

    /// An override that turns every retry off for this request (the 401 replay included).
    pub fn disabled() -> Self {
        Self::new()
            .max_retries(0)
            .max_throttled_retries(0)
            .replay_unauthorized(false)
    }

    /// Retries after 5xx and transport errors for this request
    /// (see [`RetryPolicyBuilder::max_retries`](crate::RetryPolicyBuilder::max_retries)).
    #[must_use]
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }

    /// Whether a `POST`/`PATCH` (or other non-idempotent method) is retried after a 5xx
    /// (see [`RetryPolicyBuilder::retry_non_idempotent`](crate::RetryPolicyBuilder::retry_non_idempotent)).
    #[must_use]
    pub fn retry_non_idempotent(mut self, retry: bool) -> Self {
        self.retry_non_idempotent = Some(retry);
        self
    }

    /// Retries after 429s for this request
    /// (see [`RetryPolicyBuilder::max_throttled_retries`](crate::RetryPolicyBuilder::max_throttled_retries)).
    #[must_use]
    pub fn max_throttled_retries(mut self, retries: u32) -> Self {
        self.max_throttled_retries = Some(retries);
        self
    }

    /// The longest 429 wait this request accepts
    /// (see [`RetryPolicyBuilder::max_throttle_wait`](crate::RetryPolicyBuilder::max_throttle_wait)).
    #[must_use]
    pub fn max_throttle_wait(mut self, wait: Duration) -> Self {
        self.max_throttle_wait = Some(wait);
        self
    }

    /// The deadline for this request, counted from its first attempt
    /// (see [`RetryPolicyBuilder::deadline`](crate::RetryPolicyBuilder::deadline)).
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(Some(deadline));
        self
    }

    /// No deadline for this request, whatever the policy's.
    #[must_use]
    pub fn no_deadline(mut self) -> Self {
        self.deadline = Some(None);
        self
    }

    /// Whether a 401 marked curable by the token layer is replayed once
    /// (see [`RetryPolicyBuilder::replay_unauthorized`](crate::RetryPolicyBuilder::replay_unauthorized)).
    #[must_use]
    pub fn replay_unauthorized(mut self, replay: bool) -> Self {
        self.replay_unauthorized = Some(replay);
        self
    }
}
