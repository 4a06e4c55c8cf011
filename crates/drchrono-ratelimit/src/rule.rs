//! [`Rule`]: one throttling rule, sliding or aligned to the clock.

use std::fmt;
use std::time::Duration;

use crate::ConfigError;

/// The longest window, period or safety margin a rule accepts: 100 years.
///
/// Keeps every instant the limiter computes inside its nanosecond arithmetic.
pub const MAX_PERIOD: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How a [`Rule`] counts requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RuleKind {
    /// A rolling window: at most `max` requests in any window of this length, wherever it
    /// starts (Django REST Framework's `SimpleRateThrottle`, a sliding log).
    Sliding,
    /// A period aligned to multiples of its length since the Unix epoch: at most `max`
    /// requests from one boundary to the next. A period of 3600 s starts at the UTC top of
    /// every hour.
    Aligned,
}

/// One throttling rule: at most [`Rule::max`] requests per [`Rule::period`], counted as
/// [`RuleKind`] says.
///
/// ```
/// use std::time::Duration;
/// use drchrono_ratelimit::{Rule, RuleKind};
///
/// let second = Rule::sliding(9, Duration::from_secs(1))?;
/// let hour = Rule::aligned(500, Duration::from_secs(3600))?;
/// assert_eq!(second.kind(), RuleKind::Sliding);
/// assert_eq!((hour.max(), hour.period()), (500, Duration::from_secs(3600)));
/// assert!(Rule::sliding(0, Duration::from_secs(1)).is_err());
/// # Ok::<(), drchrono_ratelimit::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    kind: RuleKind,
    max: u32,
    period: Duration,
}

impl Rule {
    /// At most `max` requests in any rolling `window`: a request at `t` is admitted iff fewer
    /// than `max` requests were charged in `(t - window, t]`.
    ///
    /// # Errors
    /// [`ConfigError::ZeroMax`], [`ConfigError::ZeroPeriod`] or
    /// [`ConfigError::PeriodTooLong`] (beyond [`MAX_PERIOD`]).
    pub fn sliding(max: u32, window: Duration) -> Result<Self, ConfigError> {
        Self::new(RuleKind::Sliding, max, window)
    }

    /// At most `max` requests per `period`, counted from one multiple of `period` since the
    /// Unix epoch to the next (`3600 s` = the UTC clock hour); the count resets at each
    /// boundary.
    ///
    /// # Errors
    /// [`ConfigError::ZeroMax`], [`ConfigError::ZeroPeriod`] or
    /// [`ConfigError::PeriodTooLong`] (beyond [`MAX_PERIOD`]).
    pub fn aligned(max: u32, period: Duration) -> Result<Self, ConfigError> {
        Self::new(RuleKind::Aligned, max, period)
    }

    fn new(kind: RuleKind, max: u32, period: Duration) -> Result<Self, ConfigError> {
        if max == 0 {
            return Err(ConfigError::ZeroMax);
        }
        if period.is_zero() {
            return Err(ConfigError::ZeroPeriod);
        }
        if period > MAX_PERIOD {
            return Err(ConfigError::PeriodTooLong);
        }
        Ok(Self { kind, max, period })
    }

    /// Sliding or aligned.
    pub fn kind(&self) -> RuleKind {
        self.kind
    }

    /// The most requests the rule allows per window or period.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// The window (sliding) or period (aligned) length, without the safety margin.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// A short, stable name for telemetry (the `drchrono.rate_limit.rule` field of
    /// [`DrChronoRateLimit`](crate::DrChronoRateLimit)'s `rate_limit.wait` span), derived
    /// from the kind and the period alone: `sliding_` or `aligned_`, then the period in
    /// whole seconds (`1s`), else whole milliseconds (`1500ms`), else nanoseconds.
    /// DrChrono's three rules read `sliding_1s`, `sliding_600s` and `aligned_3600s`.
    ///
    /// The maximum is not part of it: raising the hourly maximum keeps the name, and only
    /// rules of the same kind and period share one. Formatting it allocates nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use drchrono_ratelimit::{RateLimitConfig, Rule};
    ///
    /// let names: Vec<String> = RateLimitConfig::default()
    ///     .rules()
    ///     .iter()
    ///     .map(|rule| rule.name().to_string())
    ///     .collect();
    /// assert_eq!(names, ["sliding_1s", "sliding_600s", "aligned_3600s"]);
    /// let rule = Rule::sliding(5, Duration::from_millis(1500))?;
    /// assert_eq!(rule.name().to_string(), "sliding_1500ms");
    /// # Ok::<(), drchrono_ratelimit::ConfigError>(())
    /// ```
    pub fn name(&self) -> impl fmt::Display + fmt::Debug + Copy + Send + Sync + use<> {
        RuleName {
            kind: self.kind,
            period: self.period,
        }
    }
}

/// [`Rule::name`].
#[derive(Clone, Copy)]
struct RuleName {
    kind: RuleKind,
    period: Duration,
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            RuleKind::Sliding => "sliding",
            RuleKind::Aligned => "aligned",
        };
        let period = self.period;
        if period.subsec_nanos() == 0 {
            write!(f, "{kind}_{}s", period.as_secs())
        } else if period.subsec_nanos().is_multiple_of(1_000_000) {
            write!(f, "{kind}_{}ms", period.as_millis())
        } else {
            write!(f, "{kind}_{}ns", period.as_nanos())
        }
    }
}

/// As its [`Display`](fmt::Display): `sliding_1s`.
impl fmt::Debug for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            RuleKind::Sliding => "rolling",
            RuleKind::Aligned => "aligned",
        };
        write!(f, "{} per {kind} {:?}", self.max, self.period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_use_the_coarsest_whole_unit() {
        let name = |rule: Result<Rule, ConfigError>| rule.unwrap().name().to_string();
        assert_eq!(
            name(Rule::aligned(1, Duration::from_secs(60))),
            "aligned_60s"
        );
        assert_eq!(
            name(Rule::sliding(1, Duration::from_millis(250))),
            "sliding_250ms"
        );
        assert_eq!(
            name(Rule::sliding(1, Duration::new(2, 5))),
            "sliding_2000000005ns"
        );
        let name = Rule::sliding(9, Duration::from_secs(1)).unwrap().name();
        assert_eq!(format!("{name:?}"), "sliding_1s");
    }
}
