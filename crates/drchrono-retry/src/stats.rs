//! [`RetryStats`]: counters shared by every clone of a policy.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a [`RetryPolicy`](crate::RetryPolicy) and its clones have done so far: a snapshot
/// from [`RetryPolicy::stats`](crate::RetryPolicy::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryStats {
    /// Requests seen (first attempts).
    pub requests: u64,
    /// Retries scheduled, of every kind (the sum of the four below).
    pub retries: u64,
    /// Retries after a 500, 502, 503 or 504.
    pub server_error_retries: u64,
    /// Retries after a transport error.
    pub transport_retries: u64,
    /// Retries after a 429 (never drawn from the retry budget).
    pub throttled_retries: u64,
    /// Immediate replays of a 401 that the token layer marked as cured by the current token.
    pub unauthorized_replays: u64,
    /// Retries after a 5xx or a transport error refused because the retry budget was
    /// exhausted (429 retries and the 401 replay do not draw from it).
    pub budget_exhausted: u64,
    /// Requests that ended in a retryable failure the policy did not (or no longer) retry:
    /// out of retries, over the deadline, over the maximum 429 wait, over budget, or a
    /// non-idempotent method. DrChrono asks that persistent 5xx failures be reported.
    pub gave_up: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) server_error_retries: AtomicU64,
    pub(crate) transport_retries: AtomicU64,
    pub(crate) throttled_retries: AtomicU64,
    pub(crate) unauthorized_replays: AtomicU64,
    pub(crate) budget_exhausted: AtomicU64,
    pub(crate) gave_up: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RetryStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let server_error_retries = get(&self.server_error_retries);
        let transport_retries = get(&self.transport_retries);
        let throttled_retries = get(&self.throttled_retries);
        let unauthorized_replays = get(&self.unauthorized_replays);
        RetryStats {
            requests: get(&self.requests),
            retries: server_error_retries
                + transport_retries
                + throttled_retries
                + unauthorized_replays,
            server_error_retries,
            transport_retries,
            throttled_retries,
            unauthorized_replays,
            budget_exhausted: get(&self.budget_exhausted),
            gave_up: get(&self.gave_up),
        }
    }
}
