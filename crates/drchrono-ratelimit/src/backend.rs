//! [`Backend`]: where a budget's state lives. In memory ([`LocalLimiter`](crate::LocalLimiter))
//! today; a shared store such as Redis implements the same three calls.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use crate::{NotUntil, Priority, Status};

/// A boxed future returned by a [`Backend`].
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The state of one application's budget, wherever it is kept.
///
/// Each call must be atomic over all rules: check and charge together, or charge nothing.
/// Calls are asynchronous so that a networked store fits; they cannot fail, because the
/// limiter must never be the reason a request fails: a networked backend degrades to a
/// local decision (and logs) when its store is unreachable. [`RateLimiter`](crate::RateLimiter)
/// adds the clock, the waiting and first-come first-served order on top.
pub trait Backend: fmt::Debug + Send + Sync + 'static {
    /// Admits and charges a request at `now`, or returns the earliest instant at which it
    /// breaks no rule (charging nothing).
    fn try_acquire(
        &self,
        now: SystemTime,
        priority: Priority,
    ) -> BackendFuture<'_, Result<(), NotUntil>>;

    /// Holds every request until `until` (a server 429); marks an aligned period spent when
    /// `until` reaches its end.
    fn pause_until(&self, now: SystemTime, until: SystemTime) -> BackendFuture<'_, ()>;

    /// Remaining budget per rule, next reset and earliest instants at `now`.
    fn status(&self, now: SystemTime) -> BackendFuture<'_, Status>;
}
