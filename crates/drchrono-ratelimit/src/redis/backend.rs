//! [`RedisRateLimitBackend`]: one application's budget in Redis, shared by every process and
//! host, with an optional local fallback while Redis is unreachable.

mod fallback;

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use drchrono_core::redis::RedisConnection;
use redis::RedisError;
use tokio::time::Instant;

use super::journal::Journal;
use super::script::{LimiterScript, Op, RedisClock, micros_since_epoch};
use super::status::{Answer, decode_decision, decode_status};
use crate::backend::{Backend, BackendFuture};
use crate::{BackendError, NotUntil, Priority, RateLimitConfig, RedisBackendBuilder, Rule, Status};

pub(crate) use fallback::Fallback;

/// A [`Backend`] in Redis: one application's budget shared by every process and host that
/// uses the same server and [application key](RateLimitConfig::application).
///
/// Each decision is one `EVALSHA` of a Lua script that checks every rule and charges all of
/// them atomically, exactly as [`LocalLimiter`](crate::LocalLimiter) does, on Redis's own clock (`TIME`), so
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
/// instead, on a budget holding that share of each rule, rounded down. **The percents of
/// all processes must sum to at most 100** (each of `N` processes at most `100 / N` %):
/// then, during an outage, the processes together never exceed any rule, whatever was
/// spent before it. For that, each process remembers what every rule held at its latest
/// Redis decision; when Redis fails, it allows itself only its share of what provably
/// remained of the window and the period in progress (what they held, less what the other
/// processes may have charged since that decision, less its own uncharged releases) until
/// that window (plus margin) has passed and that period has ended; then its plain share
/// applies. The older a process's latest decision, the more the others may have spent
/// since, and the less it releases; one that never heard from Redis releases nothing until
/// the window and the period in progress are over. A rule
/// whose share rounds down to 0 (DrChrono's 9 per second below 12 %) refuses every request
/// in the fallback: requests wait until Redis answers. Requests released by the fallback
/// are charged to Redis, as of the moment it answers again, before its next decision:
/// conservative, never a refund.
///
/// The guarantee covers an outage of Redis itself. A process cut off from a Redis that
/// others still reach decides alone while they go on charging Redis, and releases made in
/// a fallback count in Redis only once their process reaches it again: around such events
/// the processes together may exceed a rule by what the fallbacks released.
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
    pub(crate) connection: RedisConnection,
    pub(crate) server: String,
    pub(crate) application: String,
    pub(crate) rules: Vec<Rule>,
    pub(crate) script: LimiterScript,
    pub(crate) fallback: Option<Fallback>,
    pub(crate) retry_interval: Duration,
    /// Until when Redis is not asked again (after a failure).
    pub(crate) down_until: Mutex<Option<Instant>>,
    /// This process's charges, re-asserted to a server that lost them.
    pub(crate) journal: Option<Journal>,
    pub(crate) failover_hold: Duration,
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
        self.fallback.as_ref().map_or(0, Fallback::unsynced)
    }

    /// Whether Redis is currently skipped after a failure.
    fn skipped(&self) -> bool {
        let down_until = *self
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        down_until.is_some_and(|until| Instant::now() < until)
    }

    /// The caller's instant at which Redis may be asked again, at least 1 ms after `now`.
    fn retry_at(&self, now: SystemTime) -> SystemTime {
        let down_until = *self
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let wait = down_until.map_or(Duration::ZERO, |until| {
            until.saturating_duration_since(Instant::now())
        });
        now + wait.max(Duration::from_millis(1))
    }

    /// Records the outcome of a call that began at `now` (the caller's clock) and `started`
    /// (tokio's). An acquire's backlog is given back before this, so that an outage begins
    /// knowing every release Redis was not charged for.
    fn mark(&self, result: &Result<impl Sized, RedisError>, now: SystemTime, started: Instant) {
        let mut down_until = self
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(_) => {
                if let Some(fallback) = &self.fallback {
                    fallback.answered();
                }
                if down_until.take().is_some() {
                    tracing::info!(application = %self.application, "rate-limit Redis is back");
                }
            }
            Err(error) => {
                if let Some(fallback) = &self.fallback {
                    // Whatever Redis charged, it charged before the failure was seen.
                    fallback.failed(now + started.elapsed());
                }
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

    /// Runs `op`, and records the outcome (a failure skips Redis for a while).
    async fn run<T: redis::FromRedisValue>(
        &self,
        op: &Op<'_>,
        now: SystemTime,
        started: Instant,
    ) -> Result<T, RedisError> {
        let mut connection = self.connection.clone();
        let result = self
            .script
            .invocation(op, now)
            .invoke_async(&mut connection)
            .await;
        self.mark(&result, now, started);
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

    /// Re-asserts the charges of this process that a server holding only `held` lost.
    async fn reassert(&self, held: u64, now: SystemTime) -> Result<(), RedisError> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let (told, instants) = journal.since(held);
        tracing::warn!(
            application = %self.application,
            server = %self.server,
            held,
            told,
            reasserted = instants.len(),
            "rate-limit Redis lost charges of this process (a failover?): re-asserting them"
        );
        let op = Op::Assert {
            journal: journal.id(),
            told,
            hold: self.failover_hold,
            instants,
        };
        self.run::<Vec<i64>>(&op, now, Instant::now())
            .await
            .map(drop)
    }

    fn unavailable(&self, error: Option<RedisError>) -> BackendError {
        match error {
            Some(error) => redis_error(error),
            None => BackendError::new("redis", RedisUnreachable),
        }
    }
}

/// The fallback's backlog taken for one decision: given back to the fallback when dropped,
/// unless the script charged it ([`charged`](Self::charged)). A decision whose reply was
/// lost after the script ran gives it back too: charged twice, the safe direction.
struct TakenBacklog<'a> {
    fallback: Option<&'a Fallback>,
    count: u64,
}

impl TakenBacklog<'_> {
    fn charged(mut self) {
        self.count = 0;
    }
}

impl Drop for TakenBacklog<'_> {
    fn drop(&mut self) {
        if let (Some(fallback), 1..) = (self.fallback, self.count) {
            fallback.restore_backlog(self.count);
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
            // A decision, or a re-assertion of charges a failover lost and then a decision.
            let mut resyncs = 0;
            while failure.is_none() && !self.skipped() {
                let backlog = self.fallback.as_ref().map_or(0, Fallback::take_backlog);
                // Given back unless the script charged it: on an error, a resync, or when
                // the caller drops this decision midway (a timeout above the limiter).
                let taken = TakenBacklog {
                    fallback: self.fallback.as_ref(),
                    count: backlog,
                };
                let started = Instant::now();
                let journal = self.journal.as_ref().map(|j| (j.id(), j.told()));
                let op = Op::Acquire {
                    priority,
                    backlog,
                    journal,
                };
                let reply = match self.run::<Vec<i64>>(&op, now, started).await {
                    Ok(reply) => reply,
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                };
                let answer = decode_decision(&reply, self.rules.len())
                    .ok_or_else(|| BackendError::new("redis", "malformed acquire reply"))?;
                let decision = match answer {
                    Answer::Decided(decision) => decision,
                    Answer::Resync { held } => {
                        // Nothing was charged, the backlog included.
                        drop(taken);
                        resyncs += 1;
                        if resyncs > 2 {
                            return Err(BackendError::new(
                                "redis",
                                "lost charges could not be re-asserted",
                            ));
                        }
                        if let Err(error) = self.reassert(held, now).await {
                            failure = Some(error);
                        }
                        continue;
                    }
                };
                // The script ran: the backlog is charged, whatever the reply says.
                taken.charged();
                if let Some(journal) = &self.journal {
                    journal.record(
                        backlog + u64::from(decision.admitted),
                        decision.now,
                        decision.held,
                    );
                }
                if let Some(fallback) = &self.fallback {
                    fallback.learned(now, decision.used);
                }
                return Ok(if decision.admitted {
                    Ok(())
                } else {
                    // The script answers with a wait alone: no rule named.
                    Err(NotUntil::new(
                        self.local_instant(now, started, decision.wait),
                        None,
                    ))
                });
            }
            match &self.fallback {
                Some(fallback) => Ok(fallback.try_acquire(now, priority, self.retry_at(now))),
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
                fallback.pause_until(now, until);
            }
            if self.skipped() {
                return Err(self.unavailable(None));
            }
            let wait = until.duration_since(now).unwrap_or(Duration::ZERO);
            self.run::<(u8, i64)>(&Op::Pause { wait }, now, Instant::now())
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
                .run(&Op::Status, now, started)
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
                &self.fallback.as_ref().map(Fallback::percent),
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
