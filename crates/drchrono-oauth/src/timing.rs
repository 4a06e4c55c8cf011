//! [`RefreshTiming`]: when a token is refreshed before it expires.

use std::time::Duration;

/// The largest [`RefreshTiming::percent_of_lifetime`].
const MAX_PERCENT_OF_LIFETIME: u32 = 50;

/// The shortest [`RefreshTiming::retry_interval`].
const MIN_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// When the layer refreshes proactively: `min(max_margin, percent_of_lifetime % of the
/// token's lifetime)` before expiry, so that no request is sent with a token about to
/// expire. DrChrono's tokens live 48 h, so the margin is 5 minutes by default; it is never
/// more than half the lifetime, and failed refreshes are at least a second apart, whatever
/// the settings, so that no setting makes every request refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshTiming {
    max_margin: Duration,
    percent_of_lifetime: u32,
    assumed_lifetime: Duration,
    retry_interval: Duration,
    expiry_skew: Duration,
    unauthorized_refresh_interval: Duration,
    store_recheck_interval: Duration,
}

impl Default for RefreshTiming {
    fn default() -> Self {
        Self {
            max_margin: Duration::from_secs(5 * 60),
            percent_of_lifetime: 10,
            assumed_lifetime: Duration::from_secs(48 * 60 * 60),
            retry_interval: Duration::from_secs(30),
            expiry_skew: Duration::from_secs(1),
            unauthorized_refresh_interval: Duration::from_secs(60),
            store_recheck_interval: Duration::from_secs(5),
        }
    }
}

impl RefreshTiming {
    /// The defaults: 5 min, 10 % of the lifetime, 48 h assumed lifetime, 30 s retry
    /// interval, 1 s expiry skew, 60 s between refreshes caused by a 401, 5 s between
    /// re-reads of the store while re-authorisation is required.
    pub fn new() -> Self {
        Self::default()
    }

    /// The largest margin before expiry. Default: 5 minutes. `Duration::ZERO` turns
    /// proactive refresh off (tokens are then refreshed on expiry or on a 401).
    #[must_use]
    pub fn max_margin(mut self, margin: Duration) -> Self {
        self.max_margin = margin;
        self
    }

    /// The margin as a share of the token's lifetime, in percent. Default: 10.
    ///
    /// Capped at 50: a token is sent for at least half its lifetime. A margin of the whole
    /// lifetime would make each new token due for refresh the moment it arrives, and every
    /// request would rotate the pair at DrChrono.
    #[must_use]
    pub fn percent_of_lifetime(mut self, percent: u32) -> Self {
        self.percent_of_lifetime = percent.min(MAX_PERCENT_OF_LIFETIME);
        self
    }

    /// The lifetime assumed for a pair whose issue time is unknown (a
    /// [`TokenSet`](crate::TokenSet) without `issued_at`). Default: 48 h, DrChrono's.
    #[must_use]
    pub fn assumed_lifetime(mut self, lifetime: Duration) -> Self {
        self.assumed_lifetime = lifetime;
        self
    }

    /// After a proactive refresh failed transiently while the current token is still
    /// valid, requests keep using it and the next refresh is tried this much later.
    /// Likewise after a grant whose token lives no longer than the
    /// [`expiry_skew`](Self::expiry_skew): that token is never sent, and requests fail
    /// (with no refresh) for this long before the next refresh is tried. Default: 30 s.
    ///
    /// At least 1 s (a shorter interval is taken as 1 s): with none, every request would
    /// try a refresh while the token endpoint fails, or rotate the pair again after a grant
    /// within the skew.
    #[must_use]
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval.max(MIN_RETRY_INTERVAL);
        self
    }

    /// How long before its expiry an access token stops being sent. Default: 1 s.
    ///
    /// The layer dates a token's expiry from when the grant reached it, a little after
    /// DrChrono issued it, and a request reaches DrChrono a little after it leaves: a token
    /// this close to its expiry is treated as expired (never attached; the request waits
    /// for the refresh instead), and a proactive refresh is due no later than this before
    /// expiry, whatever [`max_margin`](Self::max_margin) says. A grant that lives no longer
    /// than the skew is kept (it rotated the pair) but its token is never sent; see
    /// [`retry_interval`](Self::retry_interval).
    #[must_use]
    pub fn expiry_skew(mut self, skew: Duration) -> Self {
        self.expiry_skew = skew;
        self
    }

    /// The configured expiry skew.
    pub(crate) fn skew(&self) -> Duration {
        self.expiry_skew
    }

    /// The least time between two refreshes caused by a 401 on the current token.
    /// Default: 60 s.
    ///
    /// A 401 that a new token does not cure (a deactivated user, a proxy that strips
    /// `Authorization`) must not rotate the token family on every request. So a 401 on the
    /// current token causes at most one refresh per token generation, and none within this
    /// interval of the last one: the 401 is then returned with `replay_with_current_token:
    /// false` (after the store was re-read, in case another process rotated the pair).
    /// Proactive refreshes, [`TokenManager::refresh_now`](crate::TokenManager::refresh_now)
    /// and a 401 on an older token (replayed with the current one) are not limited.
    #[must_use]
    pub fn unauthorized_refresh_interval(mut self, interval: Duration) -> Self {
        self.unauthorized_refresh_interval = interval;
        self
    }

    /// While the family needs re-authorisation (`invalid_grant`, `invalid_client`, no
    /// tokens), or refreshes are held after a grant within the expiry skew, how often a
    /// request re-reads the store for a newer pair that another process saved (a
    /// re-authorisation done elsewhere, a rotation that raced ours). A newer pair is adopted
    /// and requests resume; in between, requests fail at once with the typed error, with no
    /// store read. Default: 5 s.
    #[must_use]
    pub fn store_recheck_interval(mut self, interval: Duration) -> Self {
        self.store_recheck_interval = interval;
        self
    }

    pub(crate) fn min_unauthorized_refresh_interval(&self) -> Duration {
        self.unauthorized_refresh_interval
    }

    pub(crate) fn recheck_interval(&self) -> Duration {
        self.store_recheck_interval
    }

    /// The margin for a token of the given lifetime (the assumed lifetime when `None`).
    pub(crate) fn margin_for(&self, lifetime: Option<Duration>) -> Duration {
        let lifetime = lifetime.unwrap_or(self.assumed_lifetime);
        let share = lifetime.saturating_mul(self.percent_of_lifetime) / 100;
        share.min(self.max_margin)
    }

    /// The configured assumed lifetime.
    pub(crate) fn lifetime_when_unknown(&self) -> Duration {
        self.assumed_lifetime
    }

    /// The configured retry interval.
    pub(crate) fn retry_after_failure(&self) -> Duration {
        self.retry_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_is_the_smaller_of_five_minutes_and_ten_percent() {
        let timing = RefreshTiming::new();
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(timing.margin_for(secs(172_800)), Duration::from_secs(300));
        assert_eq!(timing.margin_for(secs(600)), Duration::from_secs(60));
        assert_eq!(timing.margin_for(secs(60)), Duration::from_secs(6));
        assert_eq!(timing.margin_for(None), Duration::from_secs(300));
        let custom = timing
            .max_margin(Duration::from_secs(1))
            .percent_of_lifetime(500);
        assert_eq!(custom.margin_for(secs(60)), Duration::from_secs(1));
        let off = timing.max_margin(Duration::ZERO);
        assert_eq!(off.margin_for(secs(60)), Duration::ZERO);
    }

    #[test]
    fn the_margin_is_at_most_half_the_lifetime() {
        let whole = RefreshTiming::new()
            .max_margin(Duration::from_secs(3600))
            .percent_of_lifetime(100);
        assert_eq!(
            whole.margin_for(Some(Duration::from_secs(600))),
            Duration::from_secs(300)
        );
        let half = whole.percent_of_lifetime(50);
        assert_eq!(half, whole);
        let less = whole.percent_of_lifetime(49);
        assert_eq!(
            less.margin_for(Some(Duration::from_secs(600))),
            Duration::from_secs(294)
        );
    }

    #[test]
    fn the_retry_interval_is_at_least_a_second() {
        let second = Duration::from_secs(1);
        for asked in [Duration::ZERO, Duration::from_millis(999), second] {
            let timing = RefreshTiming::new().retry_interval(asked);
            assert_eq!(timing.retry_after_failure(), second, "{asked:?}");
        }
        let longer = RefreshTiming::new().retry_interval(Duration::from_millis(1001));
        assert_eq!(longer.retry_after_failure(), Duration::from_millis(1001));
    }
}
