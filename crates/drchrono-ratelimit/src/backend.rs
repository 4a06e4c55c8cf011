//! [`Backend`]: where a budget's state lives. In memory ([`LocalLimiter`](crate::LocalLimiter)),
//! or in a shared store (`RedisRateLimitBackend` with the `redis` feature).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use crate::{BackendError, NotUntil, Priority, Status};

/// A boxed future returned by a [`Backend`].
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The state of one application's budget, wherever it is kept.
///
/// Each call must be atomic over all rules: check and charge together, or charge nothing.
/// Calls are asynchronous so that a networked store fits. A networked store can be
/// unreachable: the call then fails with a [`BackendError`] and the request is not sent
/// (fail closed), unless the backend decides locally instead (a fallback it documents).
/// [`LocalLimiter`](crate::LocalLimiter) never fails. [`RateLimiter`](crate::RateLimiter)
/// adds the clock, the waiting and first-come first-served order on top.
///
/// Instants are the caller's wall clock ([`Clock`](crate::Clock)): a backend that decides on
/// another clock (Redis's `TIME`) converts the waits it computes into instants of the
/// caller's clock (`now` plus the wait).
pub trait Backend: fmt::Debug + Send + Sync + 'static {
    /// Admits and charges a request at `now` (`Ok(Ok(()))`), or returns the earliest instant
    /// at which it breaks no rule, charging nothing (`Ok(Err(_))`).
    ///
    /// # Errors
    /// [`BackendError`] when the budget could not be consulted; nothing may be sent.
    fn try_acquire(
        &self,
        now: SystemTime,
        priority: Priority,
    ) -> BackendFuture<'_, Result<Result<(), NotUntil>, BackendError>>;

    /// Decides at once when the backend can without waiting (its state is in this process):
    /// `Some` with what [`try_acquire`](Backend::try_acquire) would return, charged the same
    /// way; `None` when only the asynchronous call can decide (a networked store).
    ///
    /// [`RateLimiter`](crate::RateLimiter) asks it first when no request is waiting ahead,
    /// so that an admitted request costs no allocation and no task switch; a refusal, an
    /// error or `None` sends the request to the queue, which calls
    /// [`try_acquire`](Backend::try_acquire). Default: `None`.
    /// [`LocalLimiter`](crate::LocalLimiter) always decides.
    fn try_acquire_now(
        &self,
        now: SystemTime,
        priority: Priority,
    ) -> Option<Result<Result<(), NotUntil>, BackendError>> {
        let _ = (now, priority);
        None
    }

    /// Holds every request until `until` (a server 429); marks an aligned period spent when
    /// `until` reaches its end.
    ///
    /// # Errors
    /// [`BackendError`] when the pause could not be recorded.
    fn pause_until(
        &self,
        now: SystemTime,
        until: SystemTime,
    ) -> BackendFuture<'_, Result<(), BackendError>>;

    /// Remaining budget per rule, next reset and earliest instants at `now`.
    ///
    /// # Errors
    /// [`BackendError`] when the budget could not be read.
    fn status(&self, now: SystemTime) -> BackendFuture<'_, Result<Status, BackendError>>;
}
