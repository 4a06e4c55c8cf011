//! [`RedisRateLimitBackend`]: one application's budget in Redis, shared by every process and
//! host, with an optional local fallback while Redis is unreachable.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use redis::RedisError;
use redis::aio::ConnectionManager;
use tokio::time::Instant;

use crate::backend::{Backend, BackendFuture};
use crate::redis_script::{LimiterScript, Op, RedisClock, micros_since_epoch};
use crate::redis_status::decode_status;
use crate::{
    BackendError, LocalLimiter, NotUntil, Priority, RateLimitConfig, RedisBackendBuilder, Rule,
    Status,
};

/// A [`Backend`] in Redis: one application's budget shared by every process and host that
/// uses the same server and [application key](RateLimitConfig::application).
///
/// Each decision is one `EVALSHA` of a Lua script that checks every rule and charges all of
/// them atomically, exactly as [`LocalLimiter`] does, on Redis's own clock (`TIME`), so
/// hosts with skewed clocks still share one budget. The script returns how long to wait,
/// which the caller adds to its own clock. A server 429's cool-down is shared the same way.
/// Keys are per application and expire once their windows have passed.
///
/// # Several instances
/// Build every process's limiter from the same [`RateLimitConfig`] (same rules, margin,
/// application key) and point it at the same Redis: they then share one budget. Rules
/// with different parameters are counted under different keys. Within a process, waiters
/// still queue first-come first-served; across processes the earliest to ask wins.
///
/// # When Redis is unreachable
/// By default the limiter **fails closed**: [`try_acquire`](Backend::try_acquire) returns a
/// [`BackendError`], the request is not sent, and the layer hands the caller
/// `DrChronoError::Transport { not_sent: true, .. }` with that source (a retry policy
/// retries it later). For [`retry_interval`](RedisBackendBuilder::retry_interval) after a
/// failure Redis is not asked again, so requests fail fast instead of each waiting for a
/// timeout.
///
/// With a [fallback](RedisBackendBuilder::fallback_percent) the process decides locally
/// instead, on a budget holding that share of each rule (give each of `N` processes at most
/// `100 / N` %, so that together they stay within the limits). Requests released by the
/// fallback are charged to Redis, as of the moment it answers again, before its next
/// decision: conservative, never a refund.
///
/// # When Redis restarts
/// The windows live in Redis: a restart without persistence forgets them, and the limiter
/// starts again from a full budget although DrChrono still counts the requests of the past
/// 10 minutes and of the current hour, so it may answer 429; the layer then pauses every
/// caller, in every process, for the time it asks. Enable `appendonly yes` to keep the
/// windows across restarts.
///
/// ```no_run
/// use drchrono_ratelimit::{DrChronoRateLimitLayer, RateLimitConfig, RateLimiter, RedisRateLimitBackend};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = RateLimitConfig::builder().application("my-drchrono-app").build()?;
/// let backend = RedisRateLimitBackend::connect("redis://127.0.0.1:6379/", &config).await?;
/// let limiter = RateLimiter::builder(config).backend(backend).build();
/// let layer = DrChronoRateLimitLayer::new(limiter);
/// # Ok(()) }
/// ```
pub struct RedisRateLimitBackend {
    pub(crate) connection: ConnectionManager,
    pub(crate) server: String,
    pub(crate) application: String,
    pub(crate) rules: Vec<Rule>,
    pub(crate) script: LimiterScript,
    pub(crate) fallback: Option<Fallback>,
    pub(crate) retry_interval: Duration,
    /// Until when Redis is not asked again (after a failure).
    pub(crate) down_until: Mutex<Option<Instant>>,
}

/// The local budget used while Redis is unreachable.
pub(crate) struct Fallback {
    pub(crate) percent: u8,
    pub(crate) limiter: LocalLimiter,
    /// Requests the fallback released that Redis has not been charged for yet.
    pub(crate) unsynced: AtomicU64,
}

impl RedisRateLimitBackend {
    /// Connects to the Redis server at `url` (`redis://[:password@]host:port[/db]`,
    /// `rediss://…`, `unix://…`) for `config`'s rules and application key, with every
    /// default of [`RedisBackendBuilder`].
    ///
    /// # Errors
    /// [`BackendError`] when the URL is invalid or the server cannot be reached.
    pub async fn connect(url: &str, config: &RateLimitConfig) -> Result<Self, BackendError> {
        Self::builder(config).connect(url).await
    }

    /// A builder for the options (fallback, key prefix, clock, timeouts), for `config`'s
    /// rules and application key.
    pub fn builder(config: &RateLimitConfig) -> RedisBackendBuilder {
        RedisBackendBuilder::new(config)
    }

    /// Requests released by the local fallback that Redis has not been charged for yet.
    pub fn unsynced(&self) -> u64 {
        self.fallback
            .as_ref()
            .map_or(0, |fallback| fallback.unsynced.load(Ordering::Acquire))
    }

    /// Whether Redis is currently skipped after a failure.
    fn skipped(&self) -> bool {
        let down_until = *self
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        down_until.is_some_and(|until| Instant::now() < until)
    }

    fn mark(&self, result: &Result<impl Sized, RedisError>) {
        let mut down_until = self
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(_) => {
                if down_until.take().is_some() {
                    tracing::info!(application = %self.application, "rate-limit Redis is back");
                }
            }
            Err(error) => {
                if down_until.is_none() {
                    tracing::warn!(
                        application = %self.application,
                        server = %self.server,
                        error = %error,
                        fallback = self.fallback.is_some(),
                        "rate-limit Redis unreachable"
                    );
                }
                *down_until = Some(Instant::now() + self.retry_interval);
            }
        }
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        op: &Op,
        now: SystemTime,
    ) -> Result<T, RedisError> {
        let mut connection = self.connection.clone();
        let result = self
            .script
            .invocation(op, now)
            .invoke_async(&mut connection)
            .await;
        self.mark(&result);
        result
    }

    /// The caller's instant `wait` µs after the script's clock reading, for a call that
    /// began at `now` (the caller's clock) and `started` (tokio's).
    fn local_instant(&self, now: SystemTime, started: Instant, wait: i64) -> SystemTime {
        let wait = Duration::from_micros(u64::try_from(wait).unwrap_or(0));
        match self.script.clock() {
            // The script read the caller's `now`, to the microsecond.
            RedisClock::Caller => {
                SystemTime::UNIX_EPOCH + Duration::from_micros(micros_since_epoch(now)) + wait
            }
            // Redis read its clock during the round trip: counting the wait from the answer
            // is never early.
            _ => now + started.elapsed() + wait,
        }
    }

    fn unavailable(&self, error: Option<RedisError>) -> BackendError {
        match error {
            Some(error) => redis_error(error),
            None => BackendError::new("redis", RedisUnreachable),
        }
    }
}

impl Backend for RedisRateLimitBackend {
    fn try_acquire(
        &self,
        now: SystemTime,
        priority: Priority,
    ) -> BackendFuture<'_, Result<Result<(), NotUntil>, BackendError>> {
        Box::pin(async move {
            let mut failure = None;
            if !self.skipped() {
                let backlog = self
                    .fallback
                    .as_ref()
                    .map_or(0, |fallback| fallback.unsynced.swap(0, Ordering::AcqRel));
                let started = Instant::now();
                match self
                    .run::<(u8, i64)>(&Op::Acquire { priority, backlog }, now)
                    .await
                {
                    Ok((1, _)) => return Ok(Ok(())),
                    Ok((_, wait)) => {
                        return Ok(Err(NotUntil::new(self.local_instant(now, started, wait))));
                    }
                    Err(error) => {
                        if let Some(fallback) = &self.fallback {
                            fallback.unsynced.fetch_add(backlog, Ordering::AcqRel);
                        }
                        failure = Some(error);
                    }
                }
            }
            match &self.fallback {
                Some(fallback) => {
                    let decision = fallback.limiter.try_acquire_with(now, priority);
                    if decision.is_ok() {
                        fallback.unsynced.fetch_add(1, Ordering::AcqRel);
                    }
                    Ok(decision)
                }
                None => Err(self.unavailable(failure)),
            }
        })
    }

    fn pause_until(
        &self,
        now: SystemTime,
        until: SystemTime,
    ) -> BackendFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            // The fallback honours the pause too, in case Redis goes away before it ends.
            if let Some(fallback) = &self.fallback {
                fallback.limiter.pause_until(now, until);
            }
            if self.skipped() {
                return Err(self.unavailable(None));
            }
            let wait = until.duration_since(now).unwrap_or(Duration::ZERO);
            self.run::<(u8, i64)>(&Op::Pause { wait }, now)
                .await
                .map(drop)
                .map_err(|error| self.unavailable(Some(error)))
        })
    }

    fn status(&self, now: SystemTime) -> BackendFuture<'_, Result<Status, BackendError>> {
        Box::pin(async move {
            if self.skipped() {
                return Err(self.unavailable(None));
            }
            let started = Instant::now();
            let reply: Vec<i64> = self
                .run(&Op::Status, now)
                .await
                .map_err(|error| self.unavailable(Some(error)))?;
            decode_status(&reply, &self.rules, |offset| {
                self.local_instant(now, started, offset)
            })
            .ok_or_else(|| BackendError::new("redis", "malformed status reply"))
        })
    }
}

impl fmt::Debug for RedisRateLimitBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimitBackend")
            .field("server", &self.server)
            .field("application", &self.application)
            .field("clock", &self.script.clock())
            .field(
                "fallback_percent",
                &self.fallback.as_ref().map(|fallback| fallback.percent),
            )
            .field("retry_interval", &self.retry_interval)
            .finish_non_exhaustive()
    }
}

/// Redis was not asked: it failed less than a retry interval ago.
#[derive(Debug)]
struct RedisUnreachable;

impl fmt::Display for RedisUnreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redis failed moments ago; not asked again yet")
    }
}

impl std::error::Error for RedisUnreachable {}

/// A Redis failure as a [`BackendError`].
pub(crate) fn redis_error(error: RedisError) -> BackendError {
    BackendError::new("redis", error)
}
