//! [`RateLimitConfig`]: the rules, the safety margin and the options, built by
//! [`RateLimitConfigBuilder`].

use std::time::Duration;

use crate::{ConfigError, MAX_PERIOD, Rule};

/// Default safety margin added to each window and to each aligned boundary: 100 ms.
///
/// Why 100 ms: DrChrono (Django REST Framework) timestamps a request when it reaches the
/// server, so two requests sent exactly one window apart can arrive less than a window apart
/// when the first took longer in transit; the margin absorbs that jitter and a small skew
/// between our clock and DrChrono's (NTP keeps both within a few tens of milliseconds). It is
/// cheap: on the binding rules it costs 0.02 % of the 10-minute window and opens the hour
/// 0.1 s late. Set it to zero with
/// [`RateLimitConfigBuilder::safety_margin`] to reproduce the rules exactly.
pub const DEFAULT_SAFETY_MARGIN: Duration = Duration::from_millis(100);

/// Default share of each aligned budget that background work may not take: 10 %.
pub const DEFAULT_BACKGROUND_RESERVE_PERCENT: u8 = 10;

/// Default application key: `"default"`.
pub const DEFAULT_APPLICATION: &str = "default";

/// Everything a limiter needs: its rules, the safety margin, the background reserve, pacing
/// and the application key. Build it with [`RateLimitConfig::builder`]; the
/// [`Default`] is DrChrono's rules with the defaults below.
///
/// ```
/// use std::time::Duration;
/// use drchrono_ratelimit::RateLimitConfig;
///
/// let config = RateLimitConfig::builder()
///     .max_per_hour(2_000) // DrChrono raised this app's limit
///     .safety_margin(Duration::from_millis(50))
///     .build()?;
/// assert_eq!(config.rules().len(), 3);
/// assert_eq!(config.rules()[2].max(), 2_000);
/// # Ok::<(), drchrono_ratelimit::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    rules: Vec<Rule>,
    safety_margin: Duration,
    background_reserve_percent: u8,
    smooth_pacing: bool,
    application: String,
}

impl RateLimitConfig {
    /// A builder starting from DrChrono's rules and the defaults.
    pub fn builder() -> RateLimitConfigBuilder {
        RateLimitConfigBuilder::default()
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The safety margin added to each window and aligned boundary.
    pub fn safety_margin(&self) -> Duration {
        self.safety_margin
    }

    /// The share (percent) of each aligned budget kept from background work.
    pub fn background_reserve_percent(&self) -> u8 {
        self.background_reserve_percent
    }

    /// Whether smooth pacing is on.
    pub fn smooth_pacing(&self) -> bool {
        self.smooth_pacing
    }

    /// The application key: one budget per key (see [`RateLimiter::shared`](crate::RateLimiter::shared)).
    pub fn application(&self) -> &str {
        &self.application
    }
}

impl Default for RateLimitConfig {
    /// DrChrono's rules (9 per rolling second, 290 per rolling 600 s, 500 per clock hour),
    /// a 100 ms margin, a 10 % background reserve, no pacing, application `"default"`.
    fn default() -> Self {
        Self {
            rules: RateLimitConfigBuilder::default()
                .drchrono_rules()
                .unwrap_or_default(),
            safety_margin: DEFAULT_SAFETY_MARGIN,
            background_reserve_percent: DEFAULT_BACKGROUND_RESERVE_PERCENT,
            smooth_pacing: false,
            application: DEFAULT_APPLICATION.to_owned(),
        }
    }
}

/// Builds a [`RateLimitConfig`]; every setter states its default.
#[derive(Debug, Clone)]
#[must_use]
pub struct RateLimitConfigBuilder {
    max_per_second: u32,
    max_per_window: u32,
    window: Duration,
    max_per_hour: u32,
    hour: Duration,
    custom_rules: Option<Vec<Rule>>,
    safety_margin: Duration,
    background_reserve_percent: u8,
    smooth_pacing: bool,
    application: String,
}

impl Default for RateLimitConfigBuilder {
    fn default() -> Self {
        Self {
            max_per_second: 9,
            max_per_window: 290,
            window: Duration::from_secs(600),
            max_per_hour: 500,
            hour: Duration::from_secs(3600),
            custom_rules: None,
            safety_margin: DEFAULT_SAFETY_MARGIN,
            background_reserve_percent: DEFAULT_BACKGROUND_RESERVE_PERCENT,
            smooth_pacing: false,
            application: DEFAULT_APPLICATION.to_owned(),
        }
    }
}

impl RateLimitConfigBuilder {
    /// Most requests in any rolling second. Default 9 (DrChrono throttles at 10).
    pub fn max_per_second(mut self, max: u32) -> Self {
        self.max_per_second = max;
        self
    }

    /// Most requests in any rolling [`window`](Self::window). Default 290.
    pub fn max_per_window(mut self, max: u32) -> Self {
        self.max_per_window = max;
        self
    }

    /// The rolling window of [`max_per_window`](Self::max_per_window). Default 600 s.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Most requests per clock [`hour`](Self::hour), reset at the top of the hour. Default
    /// 500; DrChrono raises it for an application on request.
    pub fn max_per_hour(mut self, max: u32) -> Self {
        self.max_per_hour = max;
        self
    }

    /// The aligned period of [`max_per_hour`](Self::max_per_hour). Default 3600 s (the UTC
    /// hour; shorter periods are for tests).
    pub fn hour(mut self, hour: Duration) -> Self {
        self.hour = hour;
        self
    }

    /// Replaces DrChrono's three rules with `rules` (the five settings above are then
    /// ignored). Default: DrChrono's rules.
    pub fn rules(mut self, rules: impl IntoIterator<Item = Rule>) -> Self {
        self.custom_rules = Some(rules.into_iter().collect());
        self
    }

    /// Added to every sliding window and to every aligned boundary. Default
    /// [`DEFAULT_SAFETY_MARGIN`] (100 ms); zero reproduces the rules exactly.
    pub fn safety_margin(mut self, margin: Duration) -> Self {
        self.safety_margin = margin;
        self
    }

    /// Percent of each aligned budget that [`Priority::Background`](crate::Priority) work
    /// may not take (rounded up to whole requests, leaving background at least one).
    /// Default 10; at most 100.
    pub fn background_reserve_percent(mut self, percent: u8) -> Self {
        self.background_reserve_percent = percent;
        self
    }

    /// Spread the remaining budget of each aligned period evenly over the rest of the period
    /// instead of sending it in bursts. Default off.
    pub fn smooth_pacing(mut self, on: bool) -> Self {
        self.smooth_pacing = on;
        self
    }

    /// The application key; one budget per key. Default `"default"`.
    pub fn application(mut self, key: impl Into<String>) -> Self {
        self.application = key.into();
        self
    }

    fn drchrono_rules(&self) -> Result<Vec<Rule>, ConfigError> {
        Ok(vec![
            Rule::sliding(self.max_per_second, Duration::from_secs(1))?,
            Rule::sliding(self.max_per_window, self.window)?,
            Rule::aligned(self.max_per_hour, self.hour)?,
        ])
    }

    /// The configuration.
    ///
    /// # Errors
    /// A rule that allows nothing or has a zero or too long period, an empty rule set, a
    /// margin beyond [`MAX_PERIOD`], an aligned period not longer than twice the margin, or
    /// a reserve above 100 %.
    pub fn build(self) -> Result<RateLimitConfig, ConfigError> {
        let rules = match self.custom_rules {
            Some(ref rules) => rules.clone(),
            None => self.drchrono_rules()?,
        };
        if rules.is_empty() {
            return Err(ConfigError::NoRules);
        }
        if self.safety_margin > MAX_PERIOD {
            return Err(ConfigError::PeriodTooLong);
        }
        if rules.iter().any(|r| {
            r.kind() == crate::RuleKind::Aligned
                && r.period() <= self.safety_margin.saturating_mul(2)
        }) {
            return Err(ConfigError::MarginTooLongForPeriod);
        }
        if self.background_reserve_percent > 100 {
            return Err(ConfigError::ReserveOutOfRange(
                self.background_reserve_percent,
            ));
        }
        Ok(RateLimitConfig {
            rules,
            safety_margin: self.safety_margin,
            background_reserve_percent: self.background_reserve_percent,
            smooth_pacing: self.smooth_pacing,
            application: self.application,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_periods_must_outlast_twice_the_margin() {
        let too_long = RateLimitConfig::builder()
            .hour(Duration::from_secs(2))
            .safety_margin(Duration::from_secs(1))
            .build();
        assert_eq!(too_long.err(), Some(ConfigError::MarginTooLongForPeriod));
        let fine = RateLimitConfig::builder()
            .hour(Duration::from_secs(2))
            .safety_margin(Duration::from_millis(999))
            .build();
        assert!(fine.is_ok());
    }
    use crate::RuleKind;

    #[test]
    fn default_is_drchrono() {
        let config = RateLimitConfig::default();
        let rules: Vec<_> = config
            .rules()
            .iter()
            .map(|r| (r.kind(), r.max(), r.period()))
            .collect();
        assert_eq!(
            rules,
            [
                (RuleKind::Sliding, 9, Duration::from_secs(1)),
                (RuleKind::Sliding, 290, Duration::from_secs(600)),
                (RuleKind::Aligned, 500, Duration::from_secs(3600)),
            ]
        );
        assert_eq!(config.safety_margin(), Duration::from_millis(100));
        assert_eq!(config.background_reserve_percent(), 10);
        assert!(!config.smooth_pacing());
        assert_eq!(config, RateLimitConfig::builder().build().unwrap());
    }

    #[test]
    fn rejects_bad_settings() {
        let b = RateLimitConfig::builder;
        assert_eq!(b().max_per_hour(0).build(), Err(ConfigError::ZeroMax));
        assert_eq!(
            b().window(Duration::ZERO).build(),
            Err(ConfigError::ZeroPeriod)
        );
        assert_eq!(b().rules([]).build(), Err(ConfigError::NoRules));
        assert_eq!(
            b().background_reserve_percent(101).build(),
            Err(ConfigError::ReserveOutOfRange(101))
        );
        assert_eq!(
            b().safety_margin(MAX_PERIOD + Duration::from_secs(1))
                .build(),
            Err(ConfigError::PeriodTooLong)
        );
    }
}
