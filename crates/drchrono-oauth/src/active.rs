//! The installed pair, with its bearer header and deadlines on tokio's clock.

use std::fmt;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use secrecy::ExposeSecret;
use tokio::time::Instant;

use crate::refresh::later;

use crate::{RefreshTiming, TokenSet};

/// What a request needs from the installed pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// A token not due for proactive refresh.
    Fresh,
    /// A token newer than this generation (the request with it got a 401, or a refresh was
    /// forced), still unexpired.
    Newer(u64),
    /// A token newer than the one installed once loaded (a forced refresh before anything
    /// was loaded). Resolved to `Newer` before use.
    Rotate,
}

/// An installed pair. Deadlines use tokio's clock (paused-time tests work); the persisted
/// expiry is wall time.
pub(crate) struct Active {
    pub(crate) tokens: TokenSet,
    /// `Authorization: Bearer …`, marked sensitive; `None` without a usable access token.
    pub(crate) header: Option<HeaderValue>,
    pub(crate) refresh_at: Instant,
    /// The last instant the token is sent: its expiry less the configured skew
    /// ([`RefreshTiming::expiry_skew`]).
    pub(crate) expires_at: Instant,
}

impl Active {
    /// Installs `tokens` now. `lifetime` overrides the lifetime derived from the pair
    /// (a fresh grant's `expires_in`).
    pub(crate) fn new(
        tokens: TokenSet,
        timing: &RefreshTiming,
        lifetime: Option<Duration>,
    ) -> Self {
        let now = Instant::now();
        let remaining = match lifetime {
            Some(lifetime) => lifetime,
            None => tokens
                .expires_at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
        };
        let margin = timing.margin_for(lifetime.or_else(|| tokens.lifetime()));
        let header = bearer_header(&tokens);
        let sendable = remaining.saturating_sub(timing.skew());
        Self {
            tokens,
            header,
            refresh_at: later(now, remaining.saturating_sub(margin).min(sendable)),
            expires_at: later(now, sendable),
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.tokens.generation
    }

    pub(crate) fn usable(&self, need: Need, now: Instant) -> bool {
        self.header.is_some()
            && match need {
                Need::Fresh => now < self.refresh_at,
                Need::Newer(generation) => self.generation() > generation && now < self.expires_at,
                Need::Rotate => false,
            }
    }

    /// The same pair, next due for refresh at `refresh_at` (after a failed proactive
    /// refresh while the token is still valid).
    pub(crate) fn postponed(&self, refresh_at: Instant) -> Self {
        Self {
            tokens: self.tokens.clone(),
            header: self.header.clone(),
            refresh_at: refresh_at.min(self.expires_at),
            expires_at: self.expires_at,
        }
    }
}

impl fmt::Debug for Active {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Active")
            .field("generation", &self.tokens.generation)
            .field("has_access_token", &self.header.is_some())
            .finish_non_exhaustive()
    }
}

fn bearer_header(tokens: &TokenSet) -> Option<HeaderValue> {
    if !tokens.has_access_token() {
        return None;
    }
    let token = tokens.access_token.expose_secret();
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        tracing::warn!(
            generation = tokens.generation,
            "stored access token is not a valid header value; refreshing instead"
        );
        return None;
    }
    let mut header = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    header.set_sensitive(true);
    Some(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_margin_on_tokios_clock() {
        let tokens = TokenSet::new("AT", "RT", SystemTime::now()).with_generation(3);
        let active = Active::new(
            tokens,
            &RefreshTiming::new().expiry_skew(Duration::ZERO),
            Some(Duration::from_secs(600)),
        );
        let start = Instant::now();
        assert_eq!(active.refresh_at - start, Duration::from_secs(540));
        assert_eq!(active.expires_at - start, Duration::from_secs(600));
        assert!(active.header.as_ref().unwrap().is_sensitive());
        assert!(active.usable(Need::Fresh, start));
        assert!(!active.usable(Need::Fresh, start + Duration::from_secs(540)));
        assert!(active.usable(Need::Newer(2), start + Duration::from_secs(599)));
        assert!(!active.usable(Need::Newer(3), start));
        assert!(!active.usable(Need::Newer(2), start + Duration::from_secs(600)));
        let later = active.postponed(start + Duration::from_secs(9_999));
        assert_eq!(later.refresh_at, later.expires_at);
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_within_the_skew_of_its_expiry_is_never_sent() {
        let tokens = TokenSet::new("AT", "RT", SystemTime::now()).with_generation(3);
        let timing = RefreshTiming::new().expiry_skew(Duration::from_secs(2));
        // 6 s tokens: 10 % margin (0.6 s) is less than the skew, so the skew decides both.
        let active = Active::new(tokens, &timing, Some(Duration::from_secs(6)));
        let start = Instant::now();
        assert_eq!(active.expires_at - start, Duration::from_secs(4));
        assert_eq!(active.refresh_at - start, Duration::from_secs(4));
        assert!(active.usable(Need::Newer(2), start + Duration::from_millis(3_999)));
        assert!(!active.usable(Need::Newer(2), start + Duration::from_secs(4)));
        assert!(!active.usable(Need::Fresh, start + Duration::from_secs(4)));
        // The default skew is 1 s.
        let tokens = TokenSet::new("AT", "RT", SystemTime::now()).with_generation(3);
        let active = Active::new(
            tokens,
            &RefreshTiming::new(),
            Some(Duration::from_secs(600)),
        );
        assert_eq!(active.expires_at - start, Duration::from_secs(599));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_token_alone_is_never_usable() {
        let active = Active::new(
            TokenSet::from_refresh_token("RT"),
            &RefreshTiming::new(),
            None,
        );
        assert!(active.header.is_none());
        assert!(!active.usable(Need::Fresh, Instant::now()));
        let bad = TokenSet::new("a b", "RT", SystemTime::now() + Duration::from_secs(999));
        assert!(
            Active::new(bad, &RefreshTiming::new(), None)
                .header
                .is_none()
        );
    }
}
