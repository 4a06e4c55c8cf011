//! [`RetryPolicyBuilder`]: every number of the retry policy, with DrChrono's values as
//! defaults.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tower::retry::budget::Budget;

use crate::policy::{Config, PolicyBudget, RequestState, Shared};
use crate::stats::Counters;
use crate::{Backoff, ConfigError, RetryBudget, RetryPolicy};

/// Builds a [`RetryPolicy`]; start from [`RetryPolicy::builder`]. Every setting documents
/// its default, which is what [`RetryPolicy::new`] uses.
///
/// ```
/// use std::time::Duration;
/// use drchrono_retry::{RetryBudget, RetryPolicy};
///
/// let policy = RetryPolicy::builder()
///     .max_retries(2)
///     .first_delay(Duration::from_secs(25), Duration::from_secs(30))
///     .max_delay(Duration::from_secs(90))
///     .max_throttle_wait(Duration::from_secs(61 * 60)) // ride out the hourly reset
///     .deadline(Some(Duration::from_secs(65 * 60)))
///     .budget(RetryBudget::new(Duration::from_secs(600), 0.1, 5).unwrap())
///     .seed(7)
///     .build()
///     .unwrap();
/// # let _ = policy;
/// ```
#[must_use]
pub struct RetryPolicyBuilder {
    max_retries: u32,
    first_delay: (Duration, Duration),
    multiplier: f64,
    max_delay: Duration,
    retry_non_idempotent: bool,
    retry_unclassified: bool,
    max_throttled_retries: u32,
    max_throttle_wait: Duration,
    default_throttle_wait: Duration,
    deadline: Option<Duration>,
    replay_unauthorized: bool,
    budget: Option<PolicyBudget>,
    seed: Option<u64>,
    wall_clock: fn() -> SystemTime,
}

impl RetryPolicy {
    /// The policy with every default (see [`RetryPolicyBuilder`]).
    pub fn new() -> Self {
        Self::builder().finish(Backoff::default())
    }

    /// A builder starting from the defaults.
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder::new()
    }
}

impl RetryPolicyBuilder {
    fn new() -> Self {
        Self {
            max_retries: RetryPolicy::DEFAULT_MAX_RETRIES,
            first_delay: (Backoff::DEFAULT_MIN, Backoff::DEFAULT_MAX),
            multiplier: Backoff::DEFAULT_MULTIPLIER,
            max_delay: Backoff::DEFAULT_CAP,
            retry_non_idempotent: false,
            retry_unclassified: false,
            max_throttled_retries: RetryPolicy::DEFAULT_MAX_THROTTLED_RETRIES,
            max_throttle_wait: RetryPolicy::DEFAULT_MAX_THROTTLE_WAIT,
            default_throttle_wait: RetryPolicy::DEFAULT_THROTTLE_WAIT,
            deadline: RetryPolicy::DEFAULT_DEADLINE,
            replay_unauthorized: true,
            budget: None,
            seed: None,
            wall_clock: SystemTime::now,
        }
    }

    /// Retries after a 500/502/503/504 or a transport error, per request. Default: **3**
    /// (DrChrono: "retry 2 or 3 more times").
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Bounds of the first 5xx delay, drawn uniformly between them. Default: **25 s to 30 s**
    /// (DrChrono: "a 25-30 second retry logic").
    pub fn first_delay(mut self, min: Duration, max: Duration) -> Self {
        self.first_delay = (min, max);
        self
    }

    /// Growth of the delay bounds from one retry to the next. Default: **2** (retry `n`
    /// waits within `[25·2^(n-1), 30·2^(n-1)]` s). Must be finite and at least 1.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The longest single 5xx delay. Default: **120 s** (the third default retry waits
    /// 100-120 s).
    pub fn max_delay(mut self, cap: Duration) -> Self {
        self.max_delay = cap;
        self
    }

    /// Whether `POST`, `PATCH` and other non-idempotent methods are retried after a 5xx or
    /// a transport error that may have reached the server. Default: **`false`**: a `POST`
    /// that got a 500 may have succeeded, and DrChrono has no idempotency keys, so a retry
    /// can duplicate an appointment. Per request: [`crate::Idempotent`] or
    /// [`crate::RetryOverride::retry_non_idempotent`]. Requests that provably never left
    /// (connect errors) and 429s are retried whatever the method.
    pub fn retry_non_idempotent(mut self, retry: bool) -> Self {
        self.retry_non_idempotent = retry;
        self
    }

    /// Whether errors that are not a [`drchrono_core::DrChronoError`] (nor one boxed in
    /// a `BoxError`) are retried like a transport error that may have reached the server.
    /// Default: **`false`**: without `ErrorClassifyLayer` the policy cannot tell a connect
    /// error from a malformed request, and retrying the latter only wastes minutes.
    pub fn retry_unclassified_errors(mut self, retry: bool) -> Self {
        self.retry_unclassified = retry;
        self
    }

    /// Retries after 429s, per request, counted apart from 5xx retries. Default: **5**.
    /// With the deadline, this is what bounds 429 retries: they do not draw from the
    /// [`budget`](Self::budget).
    pub fn max_throttled_retries(mut self, retries: u32) -> Self {
        self.max_throttled_retries = retries;
        self
    }

    /// The longest 429 wait the policy sleeps through; a longer hint fails the request at
    /// once with its `Throttled` error (which carries the instant it clears). Default:
    /// **15 min**: covers DrChrono's per-second and 10-minute rules. The hourly limit resets
    /// at the top of the hour, up to 60 min away: batch jobs that would rather wait set
    /// this above 60 min (and raise [`RetryPolicyBuilder::deadline`]).
    pub fn max_throttle_wait(mut self, wait: Duration) -> Self {
        self.max_throttle_wait = wait;
        self
    }

    /// The wait after a 429 that carried no hint (no `Retry-After`, no
    /// `Expected available in N seconds.`). Default: **60 s**.
    pub fn default_throttle_wait(mut self, wait: Duration) -> Self {
        self.default_throttle_wait = wait;
        self
    }

    /// The longest a request may take, counted from its first attempt: a wait that would
    /// end later is not started (nor, once it has passed, the immediate 401 replay), and the
    /// last error is returned. `None`: no deadline.
    /// Default: **30 min** (the default 5xx schedule takes at most 3.5 min; a 429 wait at
    /// most 15 min).
    ///
    /// Time an attempt spent waiting for the rate limiter's permit does not count (the
    /// limiter reports it as [`PermitWait`](drchrono_core::PermitWait)): a request queued
    /// for an hour behind DrChrono's hourly budget still gets its retries.
    pub fn deadline(mut self, deadline: Option<Duration>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Whether a 401 that the token layer marked `replay_with_current_token` is replayed
    /// once, at once. Default: **`true`**.
    pub fn replay_unauthorized(mut self, replay: bool) -> Self {
        self.replay_unauthorized = replay;
        self
    }

    /// The retry budget, shared by every clone of the policy. Default:
    /// [`RetryBudget::default`] (20 % of first attempts plus 10 retries per 10 minutes).
    /// Another [`Budget`] (tower's `TpsBudget`, say) goes in
    /// [`custom_budget`](Self::custom_budget).
    ///
    /// Each request deposits once, at its first attempt; each retry after a 5xx or a
    /// transport error withdraws once. Retries after a 429 do not draw from it (they are
    /// bounded by [`max_throttled_retries`](Self::max_throttled_retries),
    /// [`max_throttle_wait`](Self::max_throttle_wait) and the
    /// [`deadline`](Self::deadline)), nor does the 401 replay.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(PolicyBudget::Own(budget));
        self
    }

    /// Any other [`Budget`] in place of a [`RetryBudget`], drawn on as
    /// [`budget`](Self::budget) describes.
    ///
    /// ```
    /// use std::time::Duration;
    /// use drchrono_retry::RetryPolicy;
    /// use tower::retry::budget::TpsBudget;
    ///
    /// let policy = RetryPolicy::builder()
    ///     .custom_budget(TpsBudget::new(Duration::from_secs(10), 0, 0.5))
    ///     .build()
    ///     .unwrap();
    /// # let _ = policy;
    /// ```
    pub fn custom_budget(mut self, budget: impl Budget + Send + Sync + 'static) -> Self {
        self.budget = Some(PolicyBudget::Other(Arc::new(budget)));
        self
    }

    /// The same budget as another policy (or a budget shared with other code).
    pub fn shared_budget(mut self, budget: Arc<dyn Budget + Send + Sync>) -> Self {
        self.budget = Some(PolicyBudget::Other(budget));
        self
    }

    /// Seeds the jitter RNG (a `StdRng` shared by the policy's clones) so that schedules
    /// are reproducible in tests. Default: seeded from the operating system.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The wall clock used to read a `Retry-After` HTTP-date on a raw 429 response.
    /// Default: [`SystemTime::now`]. (Waits themselves run on tokio's clock.)
    pub fn wall_clock(mut self, now: fn() -> SystemTime) -> Self {
        self.wall_clock = now;
        self
    }

    /// The policy.
    ///
    /// # Errors
    /// [`ConfigError::DelayRange`] when the first delay's bounds are reversed;
    /// [`ConfigError::Multiplier`] when the multiplier is below 1 or not finite.
    pub fn build(self) -> Result<RetryPolicy, ConfigError> {
        let (min, max) = self.first_delay;
        let backoff = Backoff::new(min, max, self.multiplier, self.max_delay)?;
        Ok(self.finish(backoff))
    }

    /// The policy with an already validated schedule.
    pub(crate) fn finish(self, backoff: Backoff) -> RetryPolicy {
        let rng = match self.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        RetryPolicy {
            shared: Arc::new(Shared {
                config: Config {
                    max_retries: self.max_retries,
                    backoff,
                    retry_non_idempotent: self.retry_non_idempotent,
                    retry_unclassified: self.retry_unclassified,
                    max_throttled_retries: self.max_throttled_retries,
                    max_throttle_wait: self.max_throttle_wait,
                    default_throttle_wait: self.default_throttle_wait,
                    deadline: self.deadline,
                    replay_unauthorized: self.replay_unauthorized,
                    wall_clock: self.wall_clock,
                },
                budget: self
                    .budget
                    .unwrap_or_else(|| PolicyBudget::Own(RetryBudget::default())),
                rng: Mutex::new(rng),
                counters: Counters::default(),
            }),
            state: RequestState::default(),
        }
    }
}

impl fmt::Debug for RetryPolicyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicyBuilder")
            .field("max_retries", &self.max_retries)
            .field("first_delay", &self.first_delay)
            .field("multiplier", &self.multiplier)
            .field("max_delay", &self.max_delay)
            .field("retry_non_idempotent", &self.retry_non_idempotent)
            .field("retry_unclassified", &self.retry_unclassified)
            .field("max_throttled_retries", &self.max_throttled_retries)
            .field("max_throttle_wait", &self.max_throttle_wait)
            .field("default_throttle_wait", &self.default_throttle_wait)
            .field("deadline", &self.deadline)
            .field("replay_unauthorized", &self.replay_unauthorized)
            .field("custom_budget", &self.budget.is_some())
            .field("seed", &self.seed)
            .finish()
    }
}
