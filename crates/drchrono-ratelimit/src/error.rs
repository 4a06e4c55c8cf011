//! Errors and refusals: [`ConfigError`] for a configuration that cannot work, [`NotUntil`] for
//! a request that may not go yet, [`BackendError`] for a budget that could not be consulted.

use std::cmp::Ordering;
use std::error::Error as StdError;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::{Duration, SystemTime};

use drchrono_core::BoxError;

use crate::Rule;

/// A rule set or option that cannot be used, found when building a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A rule allows zero requests: nothing could ever be sent.
    ZeroMax,
    /// A rule's window or period is zero.
    ZeroPeriod,
    /// A rule's window or period (or the safety margin) is longer than
    /// [`MAX_PERIOD`](crate::MAX_PERIOD).
    PeriodTooLong,
    /// The rule set is empty.
    NoRules,
    /// The background reserve is above 100 %.
    ReserveOutOfRange(u8),
    /// An aligned period is not longer than twice the safety margin: a request near a
    /// boundary is counted in both neighbouring periods, which must not overlap further.
    MarginTooLongForPeriod,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroMax => f.write_str("a rate-limit rule must allow at least one request"),
            Self::ZeroPeriod => {
                f.write_str("a rate-limit rule's window or period must be non-zero")
            }
            Self::PeriodTooLong => f.write_str("a rate-limit window, period or margin is too long"),
            Self::NoRules => f.write_str("a rate limiter needs at least one rule"),
            Self::ReserveOutOfRange(percent) => {
                write!(f, "background reserve of {percent} % is above 100 %")
            }
            Self::MarginTooLongForPeriod => {
                f.write_str("an aligned period must be longer than twice the safety margin")
            }
        }
    }
}

impl StdError for ConfigError {}

/// A request may not go before [`NotUntil::earliest`]: the earliest instant at which it
/// breaks no rule, given everything charged so far; [`NotUntil::rule`] tells which rule set
/// that instant, when the backend can tell.
///
/// Two refusals compare, order and hash by their earliest instants alone: the rule explains
/// the instant and is not part of it (a [`LocalLimiter`](crate::LocalLimiter) and a backend
/// that cannot name rules refuse alike).
#[derive(Debug, Clone, Copy)]
pub struct NotUntil {
    earliest: SystemTime,
    rule: Option<Rule>,
}

impl NotUntil {
    pub(crate) fn new(earliest: SystemTime, rule: Option<Rule>) -> Self {
        Self { earliest, rule }
    }

    /// The earliest instant (wall clock) at which the request breaks no rule.
    ///
    /// Exact to the nanosecond; a waiter rounds it up to tokio's 1 ms timer grid.
    pub fn earliest(&self) -> SystemTime {
        self.earliest
    }

    /// How long after `now` that is (zero when it has passed).
    pub fn wait_time_from(&self, now: SystemTime) -> Duration {
        self.earliest.duration_since(now).unwrap_or(Duration::ZERO)
    }

    /// The configured rule that set [`earliest`](Self::earliest): of the rules that refuse
    /// the request, the one that frees up last (for
    /// [`DrChronoRateLimit`](crate::DrChronoRateLimit)'s spans, its
    /// [`name`](Rule::name)).
    ///
    /// `None` when a server 429's pause holds the request at least as long as every rule
    /// does, or when the backend cannot tell: [`LocalLimiter`](crate::LocalLimiter) and
    /// [`FileRateLimitBackend`](crate::FileRateLimitBackend) always tell; the Redis backend
    /// tells only while it decides in its local fallback (the script answers with a wait
    /// alone).
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use drchrono_ratelimit::{LocalLimiter, RateLimitConfig};
    ///
    /// let config = RateLimitConfig::builder().max_per_second(1).build()?;
    /// let limiter = LocalLimiter::new(&config);
    /// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_609_420);
    /// limiter.try_acquire(now).unwrap();
    /// let refused = limiter.try_acquire(now).unwrap_err();
    /// assert_eq!(refused.rule(), Some(config.rules()[0]));
    /// assert_eq!(refused.rule().unwrap().name().to_string(), "sliding_1s");
    /// # Ok::<(), drchrono_ratelimit::ConfigError>(())
    /// ```
    pub fn rule(&self) -> Option<Rule> {
        self.rule
    }
}

impl PartialEq for NotUntil {
    fn eq(&self, other: &Self) -> bool {
        self.earliest == other.earliest
    }
}

impl Eq for NotUntil {}

impl PartialOrd for NotUntil {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for NotUntil {
    fn cmp(&self, other: &Self) -> Ordering {
        self.earliest.cmp(&other.earliest)
    }
}

impl Hash for NotUntil {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.earliest.hash(state);
    }
}

impl fmt::Display for NotUntil {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self
            .earliest
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        write!(
            f,
            "rate limited until {:.3} s after the Unix epoch",
            at.as_secs_f64()
        )
    }
}

impl StdError for NotUntil {}

/// The store behind a [`Backend`](crate::Backend) (Redis, …) could not be consulted, so the
/// budget could not be checked or charged: the request was not sent (fail closed).
///
/// [`DrChronoRateLimit`](crate::DrChronoRateLimit) hands it to the caller as
/// [`DrChronoError::Transport`](drchrono_core::DrChronoError::Transport) with
/// `not_sent: true` and this error as the source (see the service's docs).
#[derive(Debug)]
pub struct BackendError {
    backend: &'static str,
    source: BoxError,
}

impl BackendError {
    /// A failure of the backend named `backend` (`"redis"`, …), caused by `source`.
    pub fn new(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Self {
            backend,
            source: source.into(),
        }
    }

    /// The backend's name.
    pub fn backend(&self) -> &'static str {
        self.backend
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate-limit backend {} unavailable: request not sent",
            self.backend
        )
    }
}

impl StdError for BackendError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self.source.as_ref())
    }
}
