//! [`DrChronoRateLimitLayer`].

use tower::Layer;

use crate::{DrChronoRateLimit, RateLimitConfig, RateLimiter};

/// Applies [`DrChronoRateLimit`]: every request waits (in its response future) until it
/// breaks none of the application's throttling rules, and a server 429 pauses every caller.
///
/// Every service the layer makes, and all their clones, share the layer's one
/// [`RateLimiter`]. The [`Default`] is DrChrono's rules with the default options, in a
/// fresh budget.
#[derive(Debug, Clone)]
pub struct DrChronoRateLimitLayer {
    limiter: RateLimiter,
}

impl DrChronoRateLimitLayer {
    /// A layer drawing on `limiter`'s budget.
    pub fn new(limiter: RateLimiter) -> Self {
        Self { limiter }
    }

    /// A layer with a fresh in-memory budget for `config` (see [`RateLimiter::new`]).
    pub fn from_config(config: RateLimitConfig) -> Self {
        Self::new(RateLimiter::new(config))
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }
}

impl Default for DrChronoRateLimitLayer {
    fn default() -> Self {
        Self::from_config(RateLimitConfig::default())
    }
}

impl<S> Layer<S> for DrChronoRateLimitLayer {
    type Service = DrChronoRateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DrChronoRateLimit::new(inner, self.limiter.clone())
    }
}
